package routing

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"weft.dev/weft/internal/netlinkdump"
)

// RouteProtocol marks the routes weft owns (like "proto bird" for BIRD),
// so a restarted agent finds its routes without a state file and never
// touches anyone else's.
const RouteProtocol netlink.RouteProtocol = 77

// VXLANConfig describes the node's VXLAN device.
type VXLANConfig struct {
	Name     string
	VNI      int
	Port     int
	LocalIP  net.IP
	MTU      int
	MAC      net.HardwareAddr
	VTEPIP   net.IP // inner address, /32 on the device
	VTEPIP6  net.IP // inner IPv6 address (/128) when the node has an IPv6 pod CIDR
	Underlay int    // underlay link index
}

// Datapath applies plans to the kernel. The controller depends on this
// interface only, so it can be tested with a fake.
type Datapath interface {
	EnsureVXLAN(cfg VXLANConfig) error
	ApplyPeer(prev, next PeerPlan) error
	Reconcile(plans []PeerPlan) (int, error)
}

// Netlink is the kernel Datapath.
type Netlink struct {
	vxlanName     string
	underlayIndex int
	writes        atomic.Int64
	// vxIndex caches the VXLAN device's ifindex (0: look it up): a lookup
	// per entry cost more than the entry itself with a thousand peers.
	// EnsureVXLAN and a write that finds no device forget it.
	vxIndex atomic.Int32
	// h keeps one netlink socket for every request instead of opening
	// one per request (the package functions do): a third of the cost of
	// a write at a thousand peers.
	h *netlink.Handle
}

// Writes counts the netlink writes (adds, replaces, deletes) so far: an
// idle reconcile must not add to it.
func (n *Netlink) Writes() int64 { return n.writes.Load() }

func (n *Netlink) write(err error) error {
	n.writes.Add(1)
	if errors.Is(err, syscall.ENODEV) {
		n.vxIndex.Store(0)
	}
	return err
}

// NewNetlink returns a writer using the underlay link for direct routes.
// Its socket belongs to the network namespace of the caller.
func NewNetlink(vxlanName string, underlayIndex int) *Netlink {
	h, err := netlink.NewHandle()
	if err != nil {
		h = &netlink.Handle{} // a socket per request: slower, same results
	}
	return &Netlink{vxlanName: vxlanName, underlayIndex: underlayIndex, h: h}
}

// Close releases the socket.
func (n *Netlink) Close() { n.h.Close() }

// Underlay finds the interface holding ip: its index, MTU and subnet.
func Underlay(ip net.IP) (int, int, *net.IPNet, error) {
	links, err := netlinkdump.Retry(netlink.LinkList)
	if err != nil {
		return 0, 0, nil, err
	}
	for _, l := range links {
		addrs, _ := netlinkdump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_ALL) })
		for _, a := range addrs {
			if a.IP.Equal(ip) {
				return l.Attrs().Index, l.Attrs().MTU, &net.IPNet{IP: a.IP.Mask(a.Mask), Mask: a.Mask}, nil
			}
		}
	}
	return 0, 0, nil, fmt.Errorf("no interface holds %s", ip)
}

// EnsureVXLAN creates the device, or keeps an existing one that matches
// (an agent restart must not disturb traffic); a mismatching one is
// replaced.
func (n *Netlink) EnsureVXLAN(cfg VXLANConfig) error {
	n.vxIndex.Store(0)
	if l, err := netlink.LinkByName(cfg.Name); err == nil {
		vx, ok := l.(*netlink.Vxlan)
		if ok && vx.VxlanId == cfg.VNI && vx.Port == cfg.Port && vx.SrcAddr.Equal(cfg.LocalIP) && !vx.Learning &&
			vx.Attrs().HardwareAddr.String() == cfg.MAC.String() {
			if vx.Attrs().MTU != cfg.MTU {
				if err := netlink.LinkSetMTU(l, cfg.MTU); err != nil {
					return err
				}
			}
			return n.ensureVXLANUp(l, cfg)
		}
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("replace %s: %w", cfg.Name, err)
		}
	}
	vx := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: cfg.Name, MTU: cfg.MTU, HardwareAddr: cfg.MAC},
		VxlanId:      cfg.VNI,
		Port:         cfg.Port,
		SrcAddr:      cfg.LocalIP,
		VtepDevIndex: cfg.Underlay,
		Learning:     false,
	}
	if err := netlink.LinkAdd(vx); err != nil {
		return fmt.Errorf("create %s: %w", cfg.Name, err)
	}
	l, err := netlink.LinkByName(cfg.Name)
	if err != nil {
		return err
	}
	return n.ensureVXLANUp(l, cfg)
}

func (n *Netlink) ensureVXLANUp(l netlink.Link, cfg VXLANConfig) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: cfg.VTEPIP, Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", cfg.VTEPIP, cfg.Name, err)
	}
	if cfg.VTEPIP6 != nil {
		// No duplicate address detection: the address is ours by
		// construction, and DAD would hold it (and IPv6 pods) back.
		addr6 := &netlink.Addr{IPNet: &net.IPNet{IP: cfg.VTEPIP6, Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrReplace(l, addr6); err != nil {
			return fmt.Errorf("address %s on %s: %w", cfg.VTEPIP6, cfg.Name, err)
		}
	}
	// A node that got a new podCIDR has a new VTEP address: drop the old
	// (IPv6 link-local addresses stay).
	addrs, _ := netlinkdump.Retry(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_ALL) })
	for _, a := range addrs {
		if !a.IP.Equal(cfg.VTEPIP) && !a.IP.Equal(cfg.VTEPIP6) && !a.IP.IsLinkLocalUnicast() {
			_ = netlink.AddrDel(l, &a)
		}
	}
	return netlink.LinkSetUp(l)
}

func (n *Netlink) vxlanIndex() (int, error) {
	if i := n.vxIndex.Load(); i > 0 {
		return int(i), nil
	}
	l, err := n.h.LinkByName(n.vxlanName)
	if err != nil {
		return 0, err
	}
	n.vxIndex.Store(int32(l.Attrs().Index))
	return l.Attrs().Index, nil
}

func (n *Netlink) route(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{Dst: r.Dst, Gw: r.Via, Protocol: RouteProtocol, LinkIndex: n.underlayIndex}
	if r.OverVXLAN {
		idx, err := n.vxlanIndex()
		if err != nil {
			return nil, err
		}
		nr.LinkIndex = idx
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr, nil
}

func fdbEntry(idx int, p PeerPlan) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, HardwareAddr: p.VTEPMAC, IP: p.FDBDst}
}

func neighEntry(idx int, p PeerPlan) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: p.VTEPIP, HardwareAddr: p.VTEPMAC}
}

func neighEntry6(idx int, p PeerPlan) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V6, State: netlink.NUD_PERMANENT,
		IP: p.VTEPIP6, HardwareAddr: p.VTEPMAC}
}

// ApplyPeer makes next true and removes what prev had that next lacks.
func (n *Netlink) ApplyPeer(prev, next PeerPlan) error {
	// VXLAN entries first so a new route never points at an unknown VTEP.
	if next.VTEPMAC != nil {
		idx, err := n.vxlanIndex()
		if err != nil {
			return err
		}
		if err := n.write(n.h.NeighSet(fdbEntry(idx, next))); err != nil {
			return fmt.Errorf("fdb %s → %s: %w", next.VTEPMAC, next.FDBDst, err)
		}
		if err := n.write(n.h.NeighSet(neighEntry(idx, next))); err != nil {
			return fmt.Errorf("neighbour %s: %w", next.VTEPIP, err)
		}
		if next.VTEPIP6 != nil {
			if err := n.write(n.h.NeighSet(neighEntry6(idx, next))); err != nil {
				return fmt.Errorf("neighbour %s: %w", next.VTEPIP6, err)
			}
		}
	}
	for _, r := range next.Routes {
		nr, err := n.route(r)
		if err != nil {
			return err
		}
		if err := n.write(n.h.RouteReplace(nr)); err != nil {
			return fmt.Errorf("route %s via %s: %w", r.Dst, r.Via, err)
		}
	}
	for _, r := range prev.Routes {
		if !hasRoute(next.Routes, r) {
			if nr, err := n.route(r); err == nil {
				if err := n.write(n.h.RouteDel(nr)); err != nil && !notFound(err) {
					return fmt.Errorf("delete route %s: %w", r.Dst, err)
				}
			}
		}
	}
	if prev.VTEPMAC != nil && (next.VTEPMAC == nil || prev.VTEPMAC.String() != next.VTEPMAC.String() ||
		!prev.FDBDst.Equal(next.FDBDst) || !prev.VTEPIP.Equal(next.VTEPIP)) {
		if idx, err := n.vxlanIndex(); err == nil {
			if next.VTEPMAC == nil || prev.VTEPMAC.String() != next.VTEPMAC.String() || !prev.FDBDst.Equal(next.FDBDst) {
				if err := n.write(n.h.NeighDel(fdbEntry(idx, prev))); err != nil && !notFound(err) {
					return fmt.Errorf("delete fdb %s: %w", prev.VTEPMAC, err)
				}
			}
			if next.VTEPIP == nil || !prev.VTEPIP.Equal(next.VTEPIP) {
				if err := n.write(n.h.NeighDel(neighEntry(idx, prev))); err != nil && !notFound(err) {
					return fmt.Errorf("delete neighbour %s: %w", prev.VTEPIP, err)
				}
			}
		}
	}
	if prev.VTEPIP6 != nil && (next.VTEPIP6 == nil || !prev.VTEPIP6.Equal(next.VTEPIP6)) {
		if idx, err := n.vxlanIndex(); err == nil {
			if err := n.write(n.h.NeighDel(neighEntry6(idx, prev))); err != nil && !notFound(err) {
				return fmt.Errorf("delete neighbour %s: %w", prev.VTEPIP6, err)
			}
		}
	}
	return nil
}

func hasRoute(list []Route, r Route) bool {
	for _, x := range list {
		if x.Dst.String() == r.Dst.String() && x.Via.Equal(r.Via) && x.OverVXLAN == r.OverVXLAN {
			return true
		}
	}
	return false
}

func notFound(err error) bool {
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV)
}

// Reconcile makes the kernel match plans exactly: it re-adds anything
// missing or wrong (drift repair) and removes weft-owned entries no plan
// wants (peers that left while the agent was down). It writes only what
// differs, so an idle node does no netlink writes, and a peer that fails
// does not stop the others: their errors are joined. It returns how many
// entries it removed plus how many peers it repaired.
func (n *Netlink) Reconcile(plans []PeerPlan) (int, error) {
	want := wantedEntries(plans)
	have, changed, err := n.pruneRoutes(want)
	if err != nil {
		return 0, err
	}
	idx, vxErr := n.vxlanIndex()
	haveFDB, haveNeigh := map[string]bool{}, map[string]bool{}
	if vxErr == nil {
		changed += n.pruneNeighbours(idx, want, haveFDB, haveNeigh)
	}
	var errs []error
	for _, p := range plans {
		if n.inPlace(p, have, haveFDB, haveNeigh) {
			continue
		}
		changed++
		if err := n.ApplyPeer(PeerPlan{}, p); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p.Peer, err))
		}
	}
	return changed, errors.Join(errs...)
}

// wanted is what plans need, keyed as the kernel lists it.
type wanted struct{ routes, fdb, neigh map[string]bool }

func fdbKey(mac net.HardwareAddr, dst net.IP) string  { return mac.String() + "@" + dst.String() }
func neighKey(ip net.IP, mac net.HardwareAddr) string { return ip.String() + "@" + mac.String() }

func wantedEntries(plans []PeerPlan) wanted {
	w := wanted{routes: map[string]bool{}, fdb: map[string]bool{}, neigh: map[string]bool{}}
	for _, p := range plans {
		for _, r := range p.Routes {
			w.routes[r.Dst.String()] = true
		}
		if p.VTEPMAC != nil {
			w.fdb[fdbKey(p.VTEPMAC, p.FDBDst)] = true
			w.neigh[neighKey(p.VTEPIP, p.VTEPMAC)] = true
			if p.VTEPIP6 != nil {
				w.neigh[neighKey(p.VTEPIP6, p.VTEPMAC)] = true
			}
		}
	}
	return w
}

// pruneRoutes removes weft's routes no plan wants and returns the rest by
// destination.
func (n *Netlink) pruneRoutes(w wanted) (map[string]netlink.Route, int, error) {
	routes, err := netlinkdump.Retry(func() ([]netlink.Route, error) {
		return n.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, 0, err
	}
	changed := 0
	have := map[string]netlink.Route{}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if !w.routes[r.Dst.String()] {
			if err := n.write(n.h.RouteDel(&r)); err == nil {
				changed++
			}
			continue
		}
		have[r.Dst.String()] = r
	}
	return have, changed, nil
}

// pruneNeighbours removes permanent FDB and neighbour entries on the VXLAN
// device no plan wants, and records the ones it keeps.
func (n *Netlink) pruneNeighbours(idx int, w wanted, haveFDB, haveNeigh map[string]bool) int {
	changed := 0
	fdb, _ := netlinkdump.Retry(func() ([]netlink.Neigh, error) { return n.h.NeighList(idx, unix.AF_BRIDGE) })
	for _, e := range fdb {
		if e.State&netlink.NUD_PERMANENT == 0 || e.IP == nil {
			continue
		}
		k := fdbKey(e.HardwareAddr, e.IP)
		if !w.fdb[k] {
			if err := n.write(n.h.NeighDel(&e)); err == nil {
				changed++
			}
			continue
		}
		haveFDB[k] = true
	}
	neighs, _ := netlinkdump.Retry(func() ([]netlink.Neigh, error) { return n.h.NeighList(idx, netlink.FAMILY_V4) })
	neighs6, _ := netlinkdump.Retry(func() ([]netlink.Neigh, error) { return n.h.NeighList(idx, netlink.FAMILY_V6) })
	for _, e := range append(neighs, neighs6...) {
		if e.State&netlink.NUD_PERMANENT == 0 {
			continue
		}
		k := neighKey(e.IP, e.HardwareAddr)
		if !w.neigh[k] {
			if err := n.write(n.h.NeighDel(&e)); err == nil {
				changed++
			}
			continue
		}
		haveNeigh[k] = true
	}
	return changed
}

// inPlace reports whether every entry of p is in the kernel as p wants it.
func (n *Netlink) inPlace(p PeerPlan, have map[string]netlink.Route, haveFDB, haveNeigh map[string]bool) bool {
	for _, r := range p.Routes {
		cur, ok := have[r.Dst.String()]
		want, err := n.route(r)
		if err != nil || !ok || !cur.Gw.Equal(want.Gw) || cur.LinkIndex != want.LinkIndex {
			return false
		}
	}
	if p.VTEPMAC == nil {
		return true
	}
	return haveFDB[fdbKey(p.VTEPMAC, p.FDBDst)] && haveNeigh[neighKey(p.VTEPIP, p.VTEPMAC)] &&
		(p.VTEPIP6 == nil || haveNeigh[neighKey(p.VTEPIP6, p.VTEPMAC)])
}
