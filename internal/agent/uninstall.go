package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/agent/antispoof"
	"weft.dev/weft/internal/agent/hostport"
	"weft.dev/weft/internal/agent/masq"
	"weft.dev/weft/internal/agent/nodedns"
	"weft.dev/weft/internal/cni"
	"weft.dev/weft/internal/netlinkdump"
	"weft.dev/weft/internal/netpol"
	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/routing"
)

// UninstallConfig names where weft put its files on a node (the agent's
// flags of the same names).
type UninstallConfig struct {
	CNIConfDir     string
	CNIRuntimePath string
	CNIDataDir     string
	CNIBinDir      string // weft-cni is removed from here
}

// Uninstall removes what the agent and weft-cni made on this node: its
// nftables tables, the VXLAN device and the pods' host veths, routes
// of weft's protocol, the node-local DNS address, and weft's files. Run it
// once the agent is stopped; pods still on the node lose their network.
// Sysctls keep their values (other software may rely on forwarding).
func Uninstall(ctx context.Context, cfg UninstallConfig, log *slog.Logger) error {
	return errors.Join(
		removeTables(ctx, log),
		removeRoutes(log),
		removeLinks(log),
		removeNodeLocalDNSAddress(log),
		removeFiles(cfg, log),
	)
}

// AgentTables names every nftables table the agent writes (all inet).
func AgentTables() []string {
	return []string{proxy.TableName, proxy.TableName6, masq.TableName, nodedns.TableName,
		antispoof.TableName, hostport.TableName, netpol.TableName}
}

// removeTables deletes the agent's tables; other tables, weft- named or
// not, are someone else's.
func removeTables(ctx context.Context, log *slog.Logger) error {
	var errs []error
	for _, name := range AgentTables() {
		nft, err := knftables.New(knftables.InetFamily, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, err := nft.List(ctx, "chains"); knftables.IsNotFound(err) {
			continue
		}
		tx := nft.NewTransaction()
		tx.Delete(&knftables.Table{})
		if err := nft.Run(ctx, tx); err != nil {
			errs = append(errs, fmt.Errorf("delete table %s: %w", name, err))
			continue
		}
		log.Info("removed nftables table", "name", name)
	}
	return errors.Join(errs...)
}

// removeRoutes deletes the routes weft's backends wrote, in every table.
func removeRoutes(log *slog.Logger) error {
	filter := &netlink.Route{Protocol: routing.RouteProtocol, Table: 0}
	routes, err := netlinkdump.Retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	for _, r := range routes {
		if err := netlink.RouteDel(&r); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", r.Dst, err))
			continue
		}
		log.Info("removed route", "dst", r.Dst, "via", r.Gw)
	}
	return errors.Join(errs...)
}

// removeLinks deletes the VXLAN device and every host veth weft-cni made
// (their routes to pods go with them).
func removeLinks(log *slog.Logger) error {
	links, err := netlinkdump.Retry(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		ours := name == VXLANDevice || (l.Type() == "veth" && strings.HasPrefix(name, cni.HostVethPrefix))
		if !ours {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", name, err))
			continue
		}
		log.Info("removed link", "name", name)
	}
	return errors.Join(errs...)
}

// removeLinkLocalOnLo deletes the node-local DNS cache's address (a
// link-local address on lo is put there by no one else) and returns what
// it removed.
func removeLinkLocalOnLo() ([]netlink.Addr, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	addrs, err := netlinkdump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(lo, netlink.FAMILY_V4) })
	if err != nil {
		return nil, err
	}
	_, linkLocal, _ := net.ParseCIDR("169.254.0.0/16")
	var removed []netlink.Addr
	for _, a := range addrs {
		if !linkLocal.Contains(a.IP) {
			continue
		}
		if err := netlink.AddrDel(lo, &a); err != nil {
			return removed, fmt.Errorf("remove %s from lo: %w", a.IP, err)
		}
		removed = append(removed, a)
	}
	return removed, nil
}

func removeNodeLocalDNSAddress(log *slog.Logger) error {
	removed, err := removeLinkLocalOnLo()
	for _, a := range removed {
		log.Info("removed address", "addr", a.IPNet, "link", "lo")
	}
	return err
}

// removeFiles deletes the conflist, weft-cni, its runtime config, the
// policy socket, the IPAM store, and the directories weft made for them
// when they are left empty.
func removeFiles(cfg UninstallConfig, log *slog.Logger) error {
	runDir := filepath.Dir(cfg.CNIRuntimePath)
	var errs []error
	remove := func(path string, all bool) {
		if path == "" || path == "." {
			return
		}
		var err error
		if all {
			err = os.RemoveAll(path)
		} else {
			err = os.Remove(path)
		}
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			errs = append(errs, err)
		default:
			log.Info("removed", "path", path)
		}
	}
	remove(filepath.Join(cfg.CNIConfDir, ConflistName), false)
	if cfg.CNIBinDir != "" {
		remove(filepath.Join(cfg.CNIBinDir, "weft-cni"), false)
	}
	remove(cfg.CNIRuntimePath, false)
	remove(filepath.Join(runDir, PolicySocketName), false)
	if cfg.CNIDataDir != "" {
		// Only weft-cni's store of the weft network: the flag may name a
		// directory others use too.
		remove(filepath.Join(cfg.CNIDataDir, CNINetworkName), true)
	}
	// The directories, if nothing else is in them: the data dir, and the
	// run and data dirs' parents named weft (the defaults).
	for _, dir := range []string{cfg.CNIDataDir, runDir, filepath.Dir(cfg.CNIDataDir)} {
		if dir == cfg.CNIDataDir || filepath.Base(dir) == "weft" {
			if err := os.Remove(dir); err == nil {
				log.Info("removed", "path", dir)
			}
		}
	}
	return errors.Join(errs...)
}
