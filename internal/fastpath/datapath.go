// Package fastpath is the pod-to-pod fast path: tc programs (bpf/fastpath.c)
// that forward TCP and UDP between pod addresses past the node's
// netfilter hooks when nothing there needs the packet: no conntrack entry
// (so no NAT and no flow begun on the kernel's path), no policy selecting
// the local pod for a new flow. Datapath loads and attaches the programs
// and writes their maps; Controller keeps them in step with the node.
package fastpath

import (
	"bytes"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

//go:generate clang -O2 -g -Wall -target bpf -I/usr/include/x86_64-linux-gnu -c bpf/fastpath.c -o bpf/fastpath.o

//go:embed bpf/fastpath.o
var object []byte

// MaxCIDRs is how many cluster pod CIDRs the programs compare with.
const MaxCIDRs = 4

// Endpoint is a local pod address: the host side of its veth, and whether
// a policy selects the pod (either direction: see bpf/fastpath.c).
type Endpoint struct {
	IfIndex uint32
	Judged  bool
}

// Stat indexes the programs' counters.
type Stat int

const (
	FwdEgress Stat = iota
	FwdIngress
	PassTracked
	PassJudged
	PassRoute
	PassOther
	FwdEncap
	FwdDecap
	FwdLocal
	FwdStamped
	nstats
)

// StatNames name the counters (metrics labels).
var StatNames = [nstats]string{"forwarded_egress", "forwarded_ingress", "passed_tracked", "passed_judged", "passed_route", "passed_other",
	"forwarded_egress_encapsulated", "forwarded_ingress_decapsulated", "forwarded_local", "forwarded_stamped"}

// The maps' value layouts, as in bpf/fastpath.c.
type endpointValue struct {
	IfIndex uint32
	Judged  uint8
	_       [3]uint8
}

type configValue struct {
	Addr  [MaxCIDRs][4]byte
	Mask  [MaxCIDRs][4]byte
	Spare uint32
	Addr6 [MaxCIDRs][16]byte
	Mask6 [MaxCIDRs][16]byte
}

// Tunnel is the node's VXLAN device, whose frames the programs build and
// unwrap themselves for the pod packets they forward. The zero Tunnel
// leaves VXLAN to the kernel's device.
type Tunnel struct {
	IfIndex  int        // the VXLAN device
	Underlay int        // the link its frames leave and arrive on
	Local    netip.Addr // IPv4: the node's address, the frames' source
	VNI      uint32
	Port     uint16
	// Peers are the device's forwarding entries: a peer device's MAC to
	// its node's address.
	Peers map[[6]byte]netip.Addr
}

type tunnelValue struct {
	IfIndex  uint32
	Underlay uint32
	Local    [4]byte
	VNI      [4]byte // VNI << 8, big endian
	Port     [2]byte
	_        [2]byte
}

// Datapath is the loaded programs and maps of one network namespace.
type Datapath struct {
	coll *ebpf.Collection
	mu   sync.Mutex
	// links by ifindex: each device has one program on its ingress.
	links map[int]link.Link
}

// Load loads the programs for the cluster's pod CIDRs (up to MaxCIDRs
// of each family). spare keeps flows begun on the fast path on it after a
// policy comes to select their pod (as conntrack's established state
// spares them on the kernel's path).
func Load(cidrs []netip.Prefix, spare bool) (*Datapath, error) {
	var cfg configValue
	n4, n6 := 0, 0
	for _, p := range cidrs {
		p = p.Masked()
		switch {
		case p.Addr().Is4() && n4 < MaxCIDRs:
			cfg.Addr[n4], cfg.Mask[n4] = p.Addr().As4(), [4]byte(maskOf(p.Bits(), 4))
			n4++
		case p.Addr().Is6() && n6 < MaxCIDRs:
			cfg.Addr6[n6], cfg.Mask6[n6] = p.Addr().As16(), [16]byte(maskOf(p.Bits(), 16))
			n6++
		default:
			return nil, fmt.Errorf("fast path: more than %d pod CIDRs of a family", MaxCIDRs)
		}
	}
	if n4+n6 == 0 {
		return nil, errors.New("fast path: no pod CIDR")
	}
	if spare {
		cfg.Spare = 1
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		return nil, fmt.Errorf("fast path: %w", err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("fast path: loading the programs: %w", err)
	}
	if err := coll.Maps["settings"].Put(uint32(0), cfg); err != nil {
		coll.Close()
		return nil, fmt.Errorf("fast path: settings: %w", err)
	}
	return &Datapath{coll: coll, links: map[int]link.Link{}}, nil
}

func maskOf(bits, size int) []byte {
	m := make([]byte, size)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// AttachPod puts from_pod on the ingress of a pod veth's host side.
func (d *Datapath) AttachPod(ifindex int) error { return d.attach(ifindex, "from_pod") }

// AttachUplink puts to_pod on the ingress of a device pod traffic from
// other nodes arrives on (the underlay link, the VXLAN device).
func (d *Datapath) AttachUplink(ifindex int) error { return d.attach(ifindex, "to_pod") }

func (d *Datapath) attach(ifindex int, prog string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.links[ifindex]; ok {
		return nil
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: d.coll.Programs[prog], Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("fast path: attaching %s to ifindex %d: %w", prog, ifindex, err)
	}
	d.links[ifindex] = l
	return nil
}

// attached lists the devices with a program.
func (d *Datapath) attached() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []int
	for i := range d.links {
		out = append(out, i)
	}
	return out
}

// Detach removes the program of a device (gone devices lose theirs).
func (d *Datapath) Detach(ifindex int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.links[ifindex]; ok {
		l.Close()
		delete(d.links, ifindex)
	}
}

// SetEndpoints makes the endpoints maps (one per family) hold exactly eps.
func (d *Datapath) SetEndpoints(eps map[netip.Addr]Endpoint) error {
	want4, want6 := map[[4]byte]endpointValue{}, map[[16]byte]endpointValue{}
	for a, ep := range eps {
		v := endpointValue{IfIndex: ep.IfIndex}
		if ep.Judged {
			v.Judged = 1
		}
		if a.Is4() {
			want4[a.As4()] = v
		} else {
			want6[a.As16()] = v
		}
	}
	if err := syncMap(d.coll.Maps["endpoints"], want4); err != nil {
		return fmt.Errorf("fast path: endpoints: %w", err)
	}
	if err := syncMap(d.coll.Maps["endpoints6"], want6); err != nil {
		return fmt.Errorf("fast path: IPv6 endpoints: %w", err)
	}
	return nil
}

// SetTunnel writes the VXLAN device and its peers (IPv4 only).
func (d *Datapath) SetTunnel(t Tunnel) error {
	var v tunnelValue
	peers := map[uint64][4]byte{}
	if t.Local.Is4() {
		v = tunnelValue{IfIndex: uint32(t.IfIndex), Underlay: uint32(t.Underlay), Local: t.Local.As4()}
		binary.BigEndian.PutUint32(v.VNI[:], t.VNI<<8)
		binary.BigEndian.PutUint16(v.Port[:], t.Port)
		for mac, a := range t.Peers {
			if a.Is4() {
				var k [8]byte
				copy(k[:], mac[:])
				peers[binary.NativeEndian.Uint64(k[:])] = a.As4()
			}
		}
	}
	addrs := map[[4]byte]uint8{}
	for _, a := range peers {
		addrs[a] = 1
	}
	// Peers first, the device last: a half-written map only sends a
	// packet the kernel's way.
	if err := syncMap(d.coll.Maps["vteps"], peers); err != nil {
		return fmt.Errorf("fast path: tunnel peers: %w", err)
	}
	if err := syncMap(d.coll.Maps["vtep_addrs"], addrs); err != nil {
		return fmt.Errorf("fast path: tunnel peers: %w", err)
	}
	if err := d.coll.Maps["tunnels"].Put(uint32(0), v); err != nil {
		return fmt.Errorf("fast path: tunnel: %w", err)
	}
	return nil
}

// Stamp is what the programs may carry of the flows conntrack tracks:
// an established flow without NAT whose conntrack mark holds Gen, the
// generation of the policy table in force (0: none), refreshing its
// entry's timeout to TCPTimeout or UDPTimeout (0: no flow of that
// protocol is carried).
type Stamp struct {
	Gen        uint32
	TCPTimeout time.Duration
	UDPTimeout time.Duration
}

type stampValue struct {
	Gen, TCPTimeout, UDPTimeout, _ uint32
}

// SetStamp writes s for the programs' next packets.
func (d *Datapath) SetStamp(s Stamp) error {
	v := stampValue{Gen: s.Gen, TCPTimeout: uint32(s.TCPTimeout.Milliseconds()), UDPTimeout: uint32(s.UDPTimeout.Milliseconds())}
	if err := d.coll.Maps["stamps"].Put(uint32(0), v); err != nil {
		return fmt.Errorf("fast path: stamp: %w", err)
	}
	return nil
}

// syncMap makes a hash map hold exactly want.
func syncMap[K, V comparable](m *ebpf.Map, want map[K]V) error {
	want = maps.Clone(want)
	var stale []K
	var k K
	var v V
	it := m.Iterate()
	for it.Next(&k, &v) {
		if w, ok := want[k]; !ok {
			stale = append(stale, k)
		} else if w == v {
			delete(want, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	for k, v := range want {
		if err := m.Put(k, v); err != nil {
			return err
		}
	}
	return nil
}

// Stats sums the programs' counters over CPUs.
func (d *Datapath) Stats() ([nstats]uint64, error) {
	var out [nstats]uint64
	for i := range out {
		var per []uint64
		if err := d.coll.Maps["stats"].Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("fast path: stats: %w", err)
		}
		for _, n := range per {
			out[i] += n
		}
	}
	return out, nil
}

// Close detaches every program and frees the maps.
func (d *Datapath) Close() {
	d.mu.Lock()
	for i, l := range d.links {
		l.Close()
		delete(d.links, i)
	}
	d.mu.Unlock()
	d.coll.Close()
}
