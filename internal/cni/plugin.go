package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"weft.dev/weft/internal/cni/ipam"
	"weft.dev/weft/internal/netlinkdump"
)

// HostVethPrefix names every host-side veth weft creates, so GC and lab
// cleanup can find them.
const HostVethPrefix = "weft"

// Gateways are link-local: the pod's default route points at them and a
// static neighbour entry maps them to the host veth, so no ARP and no
// per-node gateway address is needed.
var (
	GatewayV4 = net.IPv4(169, 254, 1, 1).To4()
	GatewayV6 = net.ParseIP("fe80::1")
)

// HostVethName derives a stable, unique host interface name (≤15 chars).
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:11]
}

func gatewayFor(addr net.IP) net.IP {
	if addr.To4() != nil {
		return GatewayV4
	}
	return GatewayV6
}

func hostMask(addr net.IP) net.IPMask {
	if addr.To4() != nil {
		return net.CIDRMask(32, 32)
	}
	return net.CIDRMask(128, 128)
}

// podAddr is a host-length address; IPv6 ones skip duplicate address
// detection (IPAM hands each out once, and DAD would keep a new pod's
// address unusable for a second or more after ADD returned).
func podAddr(addr net.IP) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: addr, Mask: hostMask(addr)}}
	if addr.To4() == nil {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func defaultDst(addr net.IP) *net.IPNet {
	if addr.To4() != nil {
		return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// Add sets up one pod interface. On any failure it undoes what it did.
func Add(args *skel.CmdArgs) error {
	conf, cerr := ParseNetConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	rc, ranges, err := LoadRuntimeConfig(conf.RuntimeConfigPath)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, "node network not configured yet: the weft agent has not written its runtime config", err.Error())
	}
	mtu := rc.MTU
	if conf.MTU > 0 {
		mtu = conf.MTU
	}
	if mtu == 0 {
		mtu = 1500
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("network namespace %q: %v", args.Netns, err), "")
	}
	defer netns.Close()

	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM store", err.Error())
	}
	owner := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	ips, err := store.Allocate(owner, ranges)
	if err != nil {
		if errors.Is(err, ipam.ErrExhausted) {
			return types.NewError(ErrPoolExhausted, "pod address pool exhausted: "+err.Error(), "free addresses by deleting pods, or give the node a larger podCIDR")
		}
		return types.NewError(types.ErrIOFailure, "allocate pod address", err.Error())
	}

	// The interface comes up only once policy judges the pod's addresses.
	if err := waitForPolicy(rc.PolicySocket, args.Args, ips); err != nil {
		_, _ = store.Release(owner)
		return types.NewError(types.ErrTryAgainLater, "network policy for the pod is not in place yet", err.Error())
	}
	hostName := HostVethName(args.ContainerID, args.IfName)
	result, err := setupVeth(netns, args.IfName, hostName, mtu, ips)
	if err != nil {
		_ = ip.DelLinkByName(hostName)
		_, _ = store.Release(owner)
		return types.NewError(types.ErrInternal, "set up pod interface", err.Error())
	}
	result.CNIVersion = conf.CNIVersion
	return types.PrintResult(result, conf.CNIVersion)
}

func setupVeth(netns ns.NetNS, ifName, hostName string, mtu int, ips []net.IP) (*current.Result, error) {
	// A killed earlier ADD for the same attachment may have left the host end.
	if l, err := netlink.LinkByName(hostName); err == nil {
		_ = netlink.LinkDel(l)
	}
	hostNS, err := ns.GetCurrentNS()
	if err != nil {
		return nil, err
	}
	defer hostNS.Close()

	var hostIf, contIf net.Interface
	err = netns.Do(func(ns.NetNS) error {
		h, c, err := ip.SetupVethWithName(ifName, hostName, mtu, "", hostNS)
		if err != nil {
			return err
		}
		hostIf, contIf = h, c
		link, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set %s up: %w", ifName, err)
		}
		hostMAC := hostIf.HardwareAddr
		for _, addr := range ips {
			if err := netlink.AddrAdd(link, podAddr(addr)); err != nil {
				return fmt.Errorf("add %s to %s: %w", addr, ifName, err)
			}
			gw := gatewayFor(addr)
			if addr.To4() != nil {
				if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: gw, Mask: hostMask(gw)}, Scope: netlink.SCOPE_LINK}); err != nil {
					return fmt.Errorf("gateway route: %w", err)
				}
			}
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: defaultDst(addr), Gw: gw}); err != nil {
				return fmt.Errorf("default route via %s: %w", gw, err)
			}
			if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: link.Attrs().Index, IP: gw, HardwareAddr: hostMAC, State: netlink.NUD_PERMANENT}); err != nil {
				return fmt.Errorf("gateway neighbour: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return nil, err
	}
	for _, addr := range ips {
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Dst: &net.IPNet{IP: addr, Mask: hostMask(addr)}, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteReplace(r); err != nil {
			return nil, fmt.Errorf("host route to %s: %w", addr, err)
		}
	}
	// Answer the pod's gateway on the host veth for IPv6 (fe80::1 lives there).
	for _, addr := range ips {
		if addr.To4() == nil {
			_ = netlink.AddrAdd(host, podAddr(GatewayV6))
			break
		}
	}

	res := &current.Result{
		Interfaces: []*current.Interface{
			{Name: hostIf.Name, Mac: hostIf.HardwareAddr.String()},
			{Name: contIf.Name, Mac: contIf.HardwareAddr.String(), Sandbox: netns.Path(), Mtu: mtu},
		},
	}
	idx := 1
	for _, addr := range ips {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: &idx, Address: net.IPNet{IP: addr, Mask: hostMask(addr)}, Gateway: gatewayFor(addr)})
		res.Routes = append(res.Routes, &types.Route{Dst: *defaultDst(addr), GW: gatewayFor(addr)})
	}
	return res, nil
}

// Del removes the pod interface and frees its addresses. It succeeds when
// there is nothing left to remove, also when the netns is already gone.
func Del(args *skel.CmdArgs) error {
	conf, cerr := ParseNetConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM store", err.Error())
	}
	if _, err := store.Release(ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}); err != nil {
		return types.NewError(types.ErrIOFailure, "release pod address", err.Error())
	}
	// Deleting the host end removes the pair and its routes, wherever the
	// container end lives.
	if l, err := netlink.LinkByName(HostVethName(args.ContainerID, args.IfName)); err == nil {
		// The kernel may be removing the pair already (netns just deleted).
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, syscall.ENODEV) {
			return types.NewError(types.ErrIOFailure, "delete host veth", err.Error())
		}
	}
	if args.Netns != "" {
		if netns, err := ns.GetNS(args.Netns); err == nil {
			defer netns.Close()
			_ = netns.Do(func(ns.NetNS) error {
				err := ip.DelLinkByName(args.IfName)
				if err != nil && !errors.Is(err, ip.ErrLinkNotFound) {
					return err
				}
				return nil
			})
		}
	}
	return nil
}

// Check verifies that what ADD set up is still in place.
func Check(args *skel.CmdArgs) error {
	conf, cerr := ParseNetConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if conf.RawPrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "")
	}
	if err := ParsePrevResult(&conf.PluginConf); err != nil {
		return types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "convert prevResult", err.Error())
	}
	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM store", err.Error())
	}
	owner := ipam.Attachment{ContainerID: args.ContainerID, IfName: args.IfName}
	owned, err := store.Owned(owner)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "read IPAM store", err.Error())
	}
	hostName := HostVethName(args.ContainerID, args.IfName)
	host, err := netlink.LinkByName(hostName)
	if err != nil {
		return fmt.Errorf("host veth %s missing: %w", hostName, err)
	}
	if host.Attrs().OperState != netlink.OperUp && host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host veth %s is down", hostName)
	}
	for _, ipc := range prev.IPs {
		if !containsIP(owned, ipc.Address.IP) {
			return fmt.Errorf("address %s is not recorded for %s/%s in the IPAM store", ipc.Address.IP, args.ContainerID, args.IfName)
		}
		routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{LinkIndex: host.Attrs().Index}, netlink.RT_FILTER_OIF)
		if err != nil {
			return err
		}
		if !hasRouteTo(routes, ipc.Address.IP) {
			return fmt.Errorf("host route to %s via %s missing", ipc.Address.IP, hostName)
		}
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("network namespace %q: %v", args.Netns, err), "")
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("pod interface %s missing: %w", args.IfName, err)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, ipc := range prev.IPs {
			found := false
			for _, a := range addrs {
				if a.IP.Equal(ipc.Address.IP) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("pod interface %s lost address %s", args.IfName, ipc.Address.IP)
			}
			routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
			if err != nil {
				return err
			}
			hasDefault := false
			for _, r := range routes {
				if (r.Dst == nil || isDefault(r.Dst)) && r.Gw.Equal(gatewayFor(ipc.Address.IP)) {
					hasDefault = true
				}
			}
			if !hasDefault {
				return fmt.Errorf("pod default route via %s missing", gatewayFor(ipc.Address.IP))
			}
		}
		return nil
	})
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

func hasRouteTo(routes []netlink.Route, addr net.IP) bool {
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.Equal(addr) {
			ones, bits := r.Dst.Mask.Size()
			if ones == bits {
				return true
			}
		}
	}
	return false
}

func containsIP(list []net.IP, addr net.IP) bool {
	for _, x := range list {
		if x.Equal(addr) {
			return true
		}
	}
	return false
}

// GC frees addresses and host veths of attachments the runtime no longer has.
func GC(args *skel.CmdArgs) error {
	conf, cerr := ParseNetConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	store, err := ipam.Open(conf.DataDir, conf.Name)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "open IPAM store", err.Error())
	}
	valid := conf.ValidAttachments()
	var keep []ipam.Attachment
	keepLinks := map[string]bool{}
	for _, a := range valid {
		keep = append(keep, ipam.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
		keepLinks[HostVethName(a.ContainerID, a.IfName)] = true
	}
	// Which host veths belong to this network: those whose pod holds an
	// address in this store (or held one and is now being collected).
	held, err := store.List()
	if err != nil {
		return types.NewError(types.ErrIOFailure, "read IPAM store", err.Error())
	}
	mine := map[string]bool{}
	for _, owner := range held {
		if owner.ContainerID != "" {
			mine[HostVethName(owner.ContainerID, owner.IfName)] = true
		}
	}
	if _, err := store.GC(keep); err != nil {
		return types.NewError(types.ErrIOFailure, "collect pod addresses", err.Error())
	}
	links, err := netlinkdump.Retry(netlink.LinkList)
	if err != nil {
		return types.NewError(types.ErrIOFailure, "list links", err.Error())
	}
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() == "veth" && strings.HasPrefix(name, HostVethPrefix) && mine[name] && !keepLinks[name] {
			_ = netlink.LinkDel(l)
		}
	}
	return nil
}

// Status reports whether ADD can succeed: the agent must have written the
// node's runtime config.
func Status(args *skel.CmdArgs) error {
	conf, cerr := ParseNetConf(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if _, _, err := LoadRuntimeConfig(conf.RuntimeConfigPath); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return types.NewError(types.ErrPluginNotAvailable, "weft agent has not configured this node yet", err.Error())
		}
		return types.NewError(types.ErrPluginNotAvailable, "weft runtime config is invalid", err.Error())
	}
	return nil
}
