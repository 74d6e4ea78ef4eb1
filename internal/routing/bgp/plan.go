package bgp

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Node is what the planner needs of a Node object.
type Node struct {
	Name     string
	IP, IP6  netip.Addr // InternalIPs; IP6 only on dual-stack underlays
	Labels   map[string]string
	PodCIDRs []netip.Prefix
}

// NodeFromObject reads a Node object.
func NodeFromObject(n *corev1.Node) Node {
	out := Node{Name: n.Name, Labels: n.Labels}
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		switch {
		case err != nil:
		case ip.Is4() && !out.IP.IsValid():
			out.IP = ip
		case ip.Is6() && !out.IP6.IsValid():
			out.IP6 = ip
		}
	}
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out.PodCIDRs = append(out.PodCIDRs, p.Masked())
		}
	}
	return out
}

// Neighbor kinds.
const (
	KindMesh      = "mesh"      // another node, full mesh
	KindReflector = "reflector" // a route reflector this node is a client of
	KindClient    = "client"    // a node this reflector serves
	KindExternal  = "external"  // a BGPPeer
)

// Neighbor is one BGP session this node wants.
type Neighbor struct {
	Address   netip.Addr
	ASN       uint32
	Name      string // node name, or the BGPPeer's name
	Kind      string
	Password  string
	HoldTime  uint32
	Keepalive uint32
	BFD       *BFD
	// RRClient: this node reflects routes to the neighbor.
	RRClient bool
}

// Key identifies a neighbor's settings: a change means the session is
// updated.
func (n Neighbor) Key() string {
	bfd := "-"
	if n.BFD != nil {
		bfd = fmt.Sprintf("%d/%d", n.BFD.IntervalMs, n.BFD.Multiplier)
	}
	return fmt.Sprintf("%s|%d|%s|%s|%x|%d|%d|%s|%t", n.Address, n.ASN, n.Name, n.Kind, n.Password, n.HoldTime, n.Keepalive, bfd, n.RRClient)
}

// Problem is a BGPPeer (or the configuration) this node cannot use.
type Problem struct {
	Peer string // "" for the BGPConfiguration
	Err  error
}

// Inputs are everything the neighbor plan is made from.
type Inputs struct {
	Local  Node
	Nodes  []Node // every node, the local one included or not
	Config Configuration
	Peers  []Peer
	// Passwords holds the resolved password of each BGPPeer that names a
	// Secret; a peer whose password is missing is a Problem.
	Passwords map[string]string
}

// ASN is the cluster's AS number.
func (c Configuration) ClusterASN() uint32 {
	if c.ASN == 0 {
		return DefaultASN
	}
	return c.ASN
}

// Mesh reports whether nodes peer with every other node.
func (c Configuration) Mesh() bool {
	return c.RouteReflectorSelector == nil && (c.NodeToNodeMesh == nil || *c.NodeToNodeMesh)
}

// PlanNeighbors returns the sessions this node wants, keyed by address,
// and the peers it had to leave out with why. A bad BGPPeer never keeps
// the others from being planned.
func PlanNeighbors(in Inputs) (map[netip.Addr]Neighbor, []Problem) {
	out := map[netip.Addr]Neighbor{}
	var problems []Problem
	cfg := in.Config
	if err := cfg.Validate(); err != nil {
		problems = append(problems, Problem{Err: err})
		cfg = Configuration{}
	}
	nodeIPs := map[netip.Addr]string{}
	for _, n := range in.Nodes {
		for _, ip := range []netip.Addr{n.IP, n.IP6} {
			if ip.IsValid() {
				nodeIPs[ip] = n.Name
			}
		}
	}
	asn := cfg.ClusterASN()
	localRR := cfg.RouteReflectorSelector != nil && selects(cfg.RouteReflectorSelector, in.Local.Labels)
	for _, n := range in.Nodes {
		if n.Name == in.Local.Name {
			continue
		}
		kind := ""
		switch {
		case cfg.Mesh():
			kind = KindMesh
		case cfg.RouteReflectorSelector == nil:
			// Mesh off and no reflectors: external peers only.
		case localRR && selects(cfg.RouteReflectorSelector, n.Labels):
			kind = KindMesh // reflectors peer with each other as plain iBGP
		case localRR:
			kind = KindClient
		case selects(cfg.RouteReflectorSelector, n.Labels):
			kind = KindReflector
		}
		if kind == "" {
			continue
		}
		for _, pair := range [][2]netip.Addr{{in.Local.IP, n.IP}, {in.Local.IP6, n.IP6}} {
			if pair[0].IsValid() && pair[1].IsValid() {
				out[pair[1]] = Neighbor{Address: pair[1], ASN: asn, Name: n.Name, Kind: kind,
					BFD: cfg.NodeBFD, RRClient: kind == KindClient}
			}
		}
	}
	peers := append([]Peer(nil), in.Peers...)
	sort.Slice(peers, func(i, j int) bool { return peers[i].Name < peers[j].Name })
	for _, p := range peers {
		if !selects(p.Spec.NodeSelector, in.Local.Labels) && p.Spec.Validate() == nil {
			continue
		}
		nb, err := externalNeighbor(in, p, nodeIPs)
		if err == nil {
			if prev, taken := out[nb.Address]; taken {
				err = fmt.Errorf("peerAddress %s is already a session of this node (%s %s)", nb.Address, prev.Kind, prev.Name)
			}
		}
		if err != nil {
			problems = append(problems, Problem{Peer: p.Name, Err: err})
			continue
		}
		out[nb.Address] = nb
	}
	return out, problems
}

func externalNeighbor(in Inputs, p Peer, nodeIPs map[netip.Addr]string) (Neighbor, error) {
	s := p.Spec
	if err := s.Validate(); err != nil {
		return Neighbor{}, err
	}
	addr := netip.MustParseAddr(s.PeerAddress).Unmap()
	if node, ok := nodeIPs[addr]; ok {
		return Neighbor{}, fmt.Errorf("peerAddress %s is node %s: nodes peer through the mesh or route reflectors", addr, node)
	}
	if (addr.Is4() && !in.Local.IP.IsValid()) || (addr.Is6() && !in.Local.IP6.IsValid()) {
		return Neighbor{}, fmt.Errorf("peerAddress %s: node %s has no address of that family", addr, in.Local.Name)
	}
	nb := Neighbor{Address: addr, ASN: s.PeerASN, Name: p.Name, Kind: KindExternal,
		HoldTime: s.HoldTimeSeconds, Keepalive: s.KeepaliveSeconds, BFD: s.BFD}
	if ref := s.PasswordSecretRef; ref != nil {
		pw, ok := in.Passwords[p.Name]
		if !ok {
			return Neighbor{}, fmt.Errorf("password: key %q of Secret %q not found", ref.Key, ref.Name)
		}
		if len(pw) == 0 || len(pw) > 80 || strings.ContainsAny(pw, "\x00") {
			return Neighbor{}, fmt.Errorf("password: key %q of Secret %q must hold 1 to 80 bytes (TCP MD5)", ref.Key, ref.Name)
		}
		nb.Password = pw
	}
	return nb, nil
}
