package bgp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"

	"weft.dev/weft/internal/netlinkdump"
	"weft.dev/weft/internal/routing"
)

// Kernel installs learned routes with weft's route protocol, so they are
// told apart from the node's own (connected, default) routes and found
// again after a restart.
type Kernel struct {
	h *netlink.Handle
}

// NewKernel opens a netlink socket in the caller's network namespace.
func NewKernel() (*Kernel, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, err
	}
	return &Kernel{h: h}, nil
}

// Close releases the socket.
func (k *Kernel) Close() { k.h.Close() }

// Replace installs (or moves) the route to dst via nexthop. A next hop
// that is not on a connected network (an iBGP peer in another rack) is
// resolved through the kernel's own route to it, as a router resolves a
// recursive next hop.
func (k *Kernel) Replace(dst netip.Prefix, nexthop netip.Addr) error {
	gw, link, err := k.resolve(nexthop)
	if err != nil {
		return err
	}
	r := &netlink.Route{Dst: prefixNet(dst), Gw: gw, LinkIndex: link, Protocol: routing.RouteProtocol}
	if err := k.h.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s via %s: %w", dst, gw, err)
	}
	return nil
}

func (k *Kernel) resolve(nexthop netip.Addr) (net.IP, int, error) {
	rs, err := k.h.RouteGet(nexthop.AsSlice())
	if err != nil || len(rs) == 0 {
		return nil, 0, fmt.Errorf("next hop %s unreachable: %v", nexthop, err)
	}
	r := rs[0]
	if r.Gw != nil && !r.Gw.IsUnspecified() {
		return r.Gw, r.LinkIndex, nil
	}
	return nexthop.AsSlice(), r.LinkIndex, nil
}

// Delete removes weft's route to dst; a missing route is not an error.
func (k *Kernel) Delete(dst netip.Prefix) error {
	err := k.h.RouteDel(&netlink.Route{Dst: prefixNet(dst), Protocol: routing.RouteProtocol})
	if err != nil && !errors.Is(err, syscall.ESRCH) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("delete route %s: %w", dst, err)
	}
	return nil
}

// List returns the destinations of weft's routes.
func (k *Kernel) List() ([]netip.Prefix, error) {
	rs, err := netlinkdump.Retry(func() ([]netlink.Route, error) {
		return k.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: routing.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		a, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), ones))
	}
	return out, nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
