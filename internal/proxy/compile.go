package proxy

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/nftcomment"
)

// TableName is the proxy's own nftables table (IPv4); TableName6 the
// IPv6 one. As kube-proxy does, a dual-stack node runs one proxy per
// family, each with its own table.
const (
	TableName  = "weft-proxy"
	TableName6 = "weft-proxy6"
)

// TableFor names the table of a family.
func TableFor(f corev1.IPFamily) string {
	if f == corev1.IPv6Protocol {
		return TableName6
	}
	return TableName
}

// masqueradeMark marks connections to masquerade in postrouting.
const masqueradeMark = "0x4000"

// Config is what the compiler needs besides the services.
type Config struct {
	// ClusterCIDRs: traffic from elsewhere to a ClusterIP is masqueraded so
	// replies come back through this node.
	ClusterCIDRs []*net.IPNet
	// ServiceCIDRs: traffic to an IP in them that no Service holds is dropped.
	ServiceCIDRs []*net.IPNet
	// NodeName selects local endpoints for the Local traffic policies.
	NodeName string
	// Zone is this node's topology.kubernetes.io/zone, for hints.
	Zone string
	// Family: the address family this proxy serves (IPv4 when empty);
	// addresses of the other family in its inputs are ignored.
	Family corev1.IPFamily
	// TCPBeLiberal: conntrack runs in liberal mode (nf_conntrack_tcp_be_liberal,
	// see Conntrack.Sysctls), so out-of-window packets stay part of their
	// connection and are un-NATed. Otherwise forwarded packets that conntrack
	// calls invalid are dropped: not being NATed, they would reach a client
	// with a pod's address instead of the service's and reset its connection
	// (kubernetes issue 74839).
	TCPBeLiberal bool
	// NodeIPs: this node's own addresses (its InternalIPs). The node
	// reaching an externalTrafficPolicy Local service from one of them
	// keeps that source: every node routes replies to it. Other local
	// sources (a load-balancer IP held by the node, say) are masqueraded.
	NodeIPs []net.IP
	// NodePortAddresses: where NodePorts are served (kube-proxy's
	// --nodeport-addresses). Empty: on the node's own addresses (NodeIPs),
	// kube-proxy's nftables default ("primary"); otherwise on the node's
	// local addresses inside these CIDRs (0.0.0.0/0 or ::/0: all of
	// them). Never on loopback.
	NodePortAddresses []*net.IPNet
	// ExternalIPCIDRs, when set, is where externalIPs must lie
	// (--external-ip-cidrs); others are refused.
	ExternalIPCIDRs []*net.IPNet
}

// ParseNodePortAddresses reads --nodeport-addresses as kube-proxy does:
// "primary" alone (or nothing) means the node's own addresses (nil);
// otherwise CIDRs.
func ParseNodePortAddresses(in []string) ([]*net.IPNet, error) {
	if len(in) == 1 && in[0] == "primary" {
		return nil, nil
	}
	var out []*net.IPNet
	for _, s := range in {
		if s == "primary" {
			return nil, fmt.Errorf(`"primary" cannot be combined with CIDRs`)
		}
		_, n, err := net.ParseCIDR(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// nodePortMatch is the match for packets to a NodePort address, or "" when
// this family serves no NodePorts (--nodeport-addresses of the other
// family only).
func (c Config) nodePortMatch() string {
	f := c.fam()
	allLocal := knftables.Concat("fib daddr type local", f.ip, "daddr !=", f.loopback)
	if len(c.NodePortAddresses) > 0 {
		var cidrs []string
		for _, n := range c.NodePortAddresses {
			if _, ok := ofFamily(c.Family, n.IP); !ok {
				continue
			}
			if ones, _ := n.Mask.Size(); ones == 0 {
				return allLocal
			}
			cidrs = append(cidrs, n.String())
		}
		if len(cidrs) == 0 {
			return ""
		}
		return knftables.Concat(allLocal, f.ip, "daddr { "+strings.Join(cidrs, " , ")+" }")
	}
	if ips := c.nodeIPs(); len(ips) > 0 {
		return knftables.Concat(f.ip, "daddr { "+strings.Join(ips, " , ")+" }")
	}
	for _, ip := range c.NodeIPs {
		if ip != nil {
			// The node has addresses, none of this family: no primary
			// address, no NodePorts (kube-proxy likewise).
			return ""
		}
	}
	// The node's addresses are not known (yet): every local one.
	return allLocal
}

// family holds the nft spellings of one address family.
type family struct {
	ip       string // payload protocol: ip or ip6
	addr     string // set type: ipv4_addr or ipv6_addr
	loopback string // excluded from NodePorts
}

func (c Config) fam() family {
	if c.Family == corev1.IPv6Protocol {
		return family{ip: "ip6", addr: "ipv6_addr", loopback: "::1"}
	}
	return family{ip: "ip", addr: "ipv4_addr", loopback: "127.0.0.0/8"}
}

// ofFamily reports whether ip belongs to family f (IPv4 when empty) and
// returns it in its canonical length.
func ofFamily(f corev1.IPFamily, ip net.IP) (net.IP, bool) {
	if ip == nil {
		return nil, false
	}
	if v4 := ip.To4(); v4 != nil {
		return v4, f != corev1.IPv6Protocol
	}
	return ip.To16(), f == corev1.IPv6Protocol
}

// nodeIPs returns the node's addresses of the proxy's family as strings.
func (c Config) nodeIPs() []string {
	var out []string
	for _, ip := range c.NodeIPs {
		if v, ok := ofFamily(c.Family, ip); ok {
			out = append(out, v.String())
		}
	}
	return out
}

// clusterCIDRs returns the cluster CIDRs of the proxy's family as strings.
func (c Config) clusterCIDRs() []string {
	var out []string
	for _, n := range c.ClusterCIDRs {
		if _, ok := ofFamily(c.Family, n.IP); ok {
			out = append(out, n.String())
		}
	}
	return out
}

// chainName builds a readable, unique, bounded chain name.
func chainName(prefix, key string) string {
	sum := sha256.Sum256([]byte(key))
	h := strings.ToLower(base32.StdEncoding.EncodeToString(sum[:5]))
	name := prefix + "-" + h + "-" + key
	if len(name) > 200 {
		name = name[:200]
	}
	return name
}

func svcChain(sp ServicePort) string { return chainName("svc", sp.Key()) }
func extChain(sp ServicePort) string { return chainName("ext", sp.Key()) }
func fwChain(sp ServicePort) string  { return chainName("fw", sp.Key()) }
func epChain(sp ServicePort, e Endpoint) string {
	return chainName("ep", sp.Key()+"/"+nameSafe(e.String()))
}

func affinitySet(sp ServicePort, e Endpoint) string {
	return chainName("aff", sp.Key()+"/"+nameSafe(e.String()))
}

// nameSafe writes an endpoint for an nft name, which takes no ':' or
// brackets: ip__port (IPv6 colons doubled likewise).
var nameSafe = strings.NewReplacer(":", "__", "[", "", "]", "").Replace

// Compile turns services into the whole table's ruleset (pure): the fixed
// part, then each service port with the shared chains it needs, external
// addresses several Services ask for going to the oldest.
func Compile(cfg Config, services []ServicePort) *Ruleset {
	st := newTableState(cfg)
	all := map[string][]ServicePort{}
	for _, sp := range services {
		k := sp.Namespace + "/" + sp.Name
		all[k] = append(all[k], sp)
	}
	return st.setAll(all)
}

// compileService is the part of the table one Service owns (its ports'
// map elements, chains and sets, and its entries in the shared sets
// cluster-ips and hairpin-pairs); shared chains and maps it needs are
// written to sd's ruleset. Partial syncs recompile only changed Services.
func compileService(cfg Config, ports []ServicePort, sd *sharedDispatch) *Ruleset {
	m := newRuleset()
	for _, sp := range ports {
		buildServicePort(m, cfg, sp, sd)
	}
	return m
}

// sharedSets hold elements several services may contribute.
var sharedSets = map[string]bool{"cluster-ips": true, "hairpin-pairs": true}

// compileBase is the fixed part of the table: hooks, dispatch maps and
// the global rules.
func compileBase(cfg Config) *Ruleset {
	tx := newRuleset()
	chain := func(c *knftables.Chain) { tx.Add(c) }
	f := cfg.fam()

	tx.Add(&knftables.Map{Name: "service-ips", Type: f.addr + " . inet_proto . inet_service : verdict",
		Comment: knftables.PtrTo("ClusterIP, external and load-balancer IPs with endpoints")})
	tx.Add(&knftables.Map{Name: "service-nodeports", Type: "inet_proto . inet_service : verdict",
		Comment: knftables.PtrTo("NodePorts with endpoints")})
	tx.Add(&knftables.Map{Name: "no-endpoint-services", Type: f.addr + " . inet_proto . inet_service : verdict",
		Comment: knftables.PtrTo("service IPs and ports without endpoints: rejected at once")})
	tx.Add(&knftables.Map{Name: "no-endpoint-nodeports", Type: "inet_proto . inet_service : verdict"})
	// Endpoint picks of plain services live in per-bucket maps created on
	// first use (see sharedDispatch).
	chain(&knftables.Chain{Name: "no-local-endpoints"})
	tx.Add(&knftables.Rule{Chain: "no-local-endpoints", Rule: "drop", Comment: knftables.PtrTo("no local endpoints")})
	tx.Add(&knftables.Set{Name: "cluster-ips", Type: f.addr, Comment: knftables.PtrTo("allocated ClusterIPs")})
	tx.Add(&knftables.Set{Name: "hairpin-pairs", Type: f.addr + " . " + f.addr, Comment: knftables.PtrTo("endpoint . endpoint: a pod reaching itself through a service")})

	// Hooks.
	chain(&knftables.Chain{Name: "nat-prerouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PreroutingHook), Priority: knftables.PtrTo(knftables.DNATPriority)})
	chain(&knftables.Chain{Name: "nat-output", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.OutputHook), Priority: knftables.PtrTo(knftables.DNATPriority)})
	chain(&knftables.Chain{Name: "nat-postrouting", Type: knftables.PtrTo(knftables.NATType),
		Hook: knftables.PtrTo(knftables.PostroutingHook), Priority: knftables.PtrTo(knftables.SNATPriority)})
	for _, h := range []struct {
		name string
		hook knftables.BaseChainHook
	}{{"filter-input", knftables.InputHook}, {"filter-forward", knftables.ForwardHook}, {"filter-output", knftables.OutputHook}} {
		chain(&knftables.Chain{Name: h.name, Type: knftables.PtrTo(knftables.FilterType), Hook: knftables.PtrTo(h.hook),
			Priority: knftables.PtrTo(knftables.BaseChainPriority("filter - 10"))})
	}
	chain(&knftables.Chain{Name: "services"})
	chain(&knftables.Chain{Name: "nodeports"})
	chain(&knftables.Chain{Name: "reject-chain", Comment: knftables.PtrTo("services without endpoints")})
	chain(&knftables.Chain{Name: "mark-for-masquerade"})
	chain(&knftables.Chain{Name: "masquerading"})
	chain(&knftables.Chain{Name: "no-endpoints"})

	tx.Add(&knftables.Rule{Chain: "nat-prerouting", Rule: "jump services"})
	tx.Add(&knftables.Rule{Chain: "nat-output", Rule: "jump services"})
	tx.Add(&knftables.Rule{Chain: "nat-postrouting", Rule: "jump masquerading"})
	tx.Add(&knftables.Rule{Chain: "services", Rule: f.ip + " daddr . meta l4proto . th dport vmap @service-ips"})
	nodePorts := cfg.nodePortMatch()
	if nodePorts != "" {
		tx.Add(&knftables.Rule{Chain: "services", Rule: knftables.Concat(nodePorts, "jump nodeports")})
	}
	tx.Add(&knftables.Rule{Chain: "nodeports", Rule: "meta l4proto . th dport vmap @service-nodeports"})
	// One rule per filter hook, so a packet of an established flow pays a
	// single conntrack-state lookup here. What is still addressed to a
	// service IP after the NAT hooks was not DNATed: a ClusterIP on a port
	// it does not serve is refused, an unallocated IP in the service range
	// dropped.
	chain(&knftables.Chain{Name: "new-connections"})
	chain(&knftables.Chain{Name: "service-range"})
	tx.Add(&knftables.Rule{Chain: "new-connections", Rule: "jump no-endpoints"})
	tx.Add(&knftables.Rule{Chain: "new-connections", Rule: "jump service-range"})
	if cfg.TCPBeLiberal {
		tx.Add(&knftables.Rule{Chain: "filter-forward", Rule: "ct state new jump new-connections"})
	} else {
		tx.Add(&knftables.Rule{Chain: "filter-forward", Rule: "ct state vmap { invalid : drop, new : jump new-connections }",
			Comment: knftables.PtrTo("invalid: not NATed, would reach a client from an endpoint's address")})
	}
	tx.Add(&knftables.Rule{Chain: "filter-input", Rule: "ct state new jump no-endpoints"})
	tx.Add(&knftables.Rule{Chain: "filter-output", Rule: "ct state new jump new-connections"})
	tx.Add(&knftables.Rule{Chain: "service-range", Rule: f.ip + " daddr @cluster-ips reject"})
	for _, c := range cfg.ServiceCIDRs {
		if _, ok := ofFamily(cfg.Family, c.IP); ok {
			tx.Add(&knftables.Rule{Chain: "service-range", Rule: knftables.Concat(f.ip, "daddr", c, "drop")})
		}
	}
	tx.Add(&knftables.Rule{Chain: "no-endpoints", Rule: f.ip + " daddr . meta l4proto . th dport vmap @no-endpoint-services"})
	if nodePorts != "" {
		tx.Add(&knftables.Rule{Chain: "no-endpoints", Rule: knftables.Concat(nodePorts, "meta l4proto . th dport vmap @no-endpoint-nodeports")})
	}
	// TCP gets a reset: an ICMPv6 error that arrives while connect() still
	// holds the socket is only a soft error, so the client waited for its
	// SYN retransmit (1 s) before it saw "refused".
	tx.Add(&knftables.Rule{Chain: "reject-chain", Rule: "meta l4proto tcp reject with tcp reset"})
	tx.Add(&knftables.Rule{Chain: "reject-chain", Rule: "reject"})
	tx.Add(&knftables.Rule{Chain: "mark-for-masquerade", Rule: "mark set mark or " + masqueradeMark})
	// Two global rules instead of two rules per endpoint and service:
	// hairpin (a pod DNATed to itself) and clients outside the pod network
	// reaching a ClusterIP (their replies must come back through here).
	tx.Add(&knftables.Rule{Chain: "masquerading", Rule: knftables.Concat("ct status dnat", f.ip, "saddr .", f.ip, "daddr @hairpin-pairs masquerade fully-random")})
	if cidrList := cfg.clusterCIDRs(); len(cidrList) > 0 {
		tx.Add(&knftables.Rule{Chain: "masquerading", Rule: fmt.Sprintf("ct status dnat ct original %s daddr @cluster-ips %s saddr != { %s } masquerade fully-random", f.ip, f.ip, strings.Join(cidrList, " , "))})
	}
	tx.Add(&knftables.Rule{Chain: "masquerading", Rule: "mark and " + masqueradeMark + " == 0 return"})
	tx.Add(&knftables.Rule{Chain: "masquerading", Rule: "mark set mark xor " + masqueradeMark})
	tx.Add(&knftables.Rule{Chain: "masquerading", Rule: "masquerade fully-random"})

	return tx
}

// buildServicePort writes one service port and its shared-set entries.
func buildServicePort(tx *Ruleset, cfg Config, sp ServicePort, sd *sharedDispatch) {
	for _, ip := range sp.ClusterIPs {
		tx.Add(&knftables.Element{Set: "cluster-ips", Key: []string{ip.String()}})
	}
	buildService(tx, cfg, sp, func(c *knftables.Chain) { tx.Add(c) }, sd)
	for _, e := range sp.AllEndpoints {
		// Only a pod on this node can hairpin through this node.
		if e.NodeName == cfg.NodeName {
			tx.Add(&knftables.Element{Set: "hairpin-pairs", Key: []string{e.IP.String(), e.IP.String()}})
		}
	}
}

// buildService writes one service port: its entries in the dispatch maps,
// the internal chain (svc-), the external chain (ext-) and the endpoint
// chains (ep-).
func buildService(tx *Ruleset, cfg Config, sp ServicePort, chain func(*knftables.Chain), sd *sharedDispatch) {
	cidrs := cfg.clusterCIDRs()
	f := cfg.fam()
	proto := lower(sp.Protocol)
	port := fmt.Sprint(sp.Port)
	closeBy := sp.TopologyEndpoints(cfg.NodeName, cfg.Zone)
	internal := closeBy
	if sp.InternalLocal {
		internal = sp.LocalEndpoints(cfg.NodeName)
	}
	external := closeBy
	if sp.ExternalLocal {
		external = sp.LocalEndpoints(cfg.NodeName)
	}
	hasExternal := len(sp.ExternalIPs) > 0 || sp.NodePort > 0
	if len(sp.Endpoints) == 0 {
		// No endpoint anywhere: refuse at once.
		for _, ip := range append(append([]net.IP{}, sp.ClusterIPs...), sp.ExternalIPs...) {
			tx.Add(&knftables.Element{Map: "no-endpoint-services", Key: []string{ip.String(), proto, port}, Value: []string{"goto reject-chain"}})
		}
		if sp.NodePort > 0 {
			tx.Add(&knftables.Element{Map: "no-endpoint-nodeports", Key: []string{proto, fmt.Sprint(sp.NodePort)}, Value: []string{"goto reject-chain"}})
		}
		return
	}
	if sp.AffinitySeconds == 0 && len(sp.SourceRanges) == 0 && !sp.ExternalLocal {
		buildPlainService(tx, sp, internal, external, sd)
		return
	}
	// Endpoint chains exist only for session affinity (they record the
	// client); otherwise one DNAT rule per service picks the endpoint.
	if sp.AffinitySeconds > 0 {
		for _, e := range sp.Endpoints {
			buildEndpoint(tx, f, sp, e, chain)
		}
		for _, e := range sp.AllEndpoints {
			if (sp.InternalLocal || sp.ExternalLocal) && e.NodeName == cfg.NodeName && !containsEndpoint(sp.Endpoints, e) {
				buildEndpoint(tx, f, sp, e, chain)
			}
		}
	}

	svc := svcChain(sp)
	chain(&knftables.Chain{Name: svc, Comment: nftcomment.Bounded(sp.Key())})
	for _, ip := range sp.ClusterIPs {
		tx.Add(&knftables.Element{Map: "service-ips", Key: []string{ip.String(), proto, port}, Value: []string{"goto " + svc}})
	}
	dispatch(tx, f, svc, sp, internal)

	if !hasExternal {
		return
	}
	ext := extChain(sp)
	chain(&knftables.Chain{Name: ext, Comment: nftcomment.Bounded("external traffic to " + sp.Key())})
	// loadBalancerSourceRanges: traffic to a LoadBalancer IP passes a
	// firewall chain first, dropping every other source, pods and the
	// node included (as kube-proxy does).
	fw := ""
	if len(sp.SourceRanges) > 0 && len(sp.LoadBalancerIPs) > 0 {
		fw = fwChain(sp)
		chain(&knftables.Chain{Name: fw, Comment: nftcomment.Bounded("loadBalancerSourceRanges of " + sp.Key())})
		var sources []string
		fromNode := false
		for _, r := range sp.SourceRanges {
			sources = append(sources, r.String())
			for _, ip := range cfg.NodeIPs {
				// Contains is false for an address of the other family.
				fromNode = fromNode || r.Contains(ip)
			}
		}
		if fromNode {
			// A node that holds the load-balancer IP itself reaches it
			// from that IP.
			for _, ip := range sp.LoadBalancerIPs {
				sources = append(sources, ip.String())
			}
		}
		tx.Add(&knftables.Rule{Chain: fw, Rule: fmt.Sprintf("%s saddr != { %s } drop", f.ip, strings.Join(sources, " , "))})
		tx.Add(&knftables.Rule{Chain: fw, Rule: "goto " + ext})
	}
	if sp.ExternalLocal {
		// Pods and the node itself reaching the external address are
		// treated as internal traffic; the rest keeps its source IP and
		// only goes to endpoints on this node.
		for _, c := range cidrs {
			tx.Add(&knftables.Rule{Chain: ext, Rule: knftables.Concat(f.ip, "saddr", c, "goto", svc)})
		}
		// Masquerading the node's own address would hand the endpoint
		// the address of the device towards it (a VXLAN device's, say)
		// instead of the node's: keep it.
		masqLocal := "fib saddr type local jump mark-for-masquerade"
		if ips := cfg.nodeIPs(); len(ips) > 0 {
			masqLocal = fmt.Sprintf("fib saddr type local %s saddr != { %s } jump mark-for-masquerade", f.ip, strings.Join(ips, " , "))
		}
		tx.Add(&knftables.Rule{Chain: ext, Rule: masqLocal})
		tx.Add(&knftables.Rule{Chain: ext, Rule: "fib saddr type local goto " + svc})
		if len(external) == 0 {
			tx.Add(&knftables.Rule{Chain: ext, Rule: "drop", Comment: knftables.PtrTo("no local endpoints")})
		} else {
			dispatch(tx, f, ext, sp, external)
		}
	} else {
		tx.Add(&knftables.Rule{Chain: ext, Rule: "jump mark-for-masquerade"})
		tx.Add(&knftables.Rule{Chain: ext, Rule: "goto " + svc})
	}
	for _, ip := range sp.ExternalIPs {
		target := ext
		if fw != "" && slices.ContainsFunc(sp.LoadBalancerIPs, ip.Equal) {
			target = fw
		}
		tx.Add(&knftables.Element{Map: "service-ips", Key: []string{ip.String(), proto, port}, Value: []string{"goto " + target}})
	}
	if sp.NodePort > 0 {
		tx.Add(&knftables.Element{Map: "service-nodeports", Key: []string{proto, fmt.Sprint(sp.NodePort)}, Value: []string{"goto " + ext}})
	}
}

func containsEndpoint(list []Endpoint, e Endpoint) bool {
	for _, x := range list {
		if x.String() == e.String() {
			return true
		}
	}
	return false
}

func buildEndpoint(tx *Ruleset, f family, sp ServicePort, e Endpoint, chain func(*knftables.Chain)) {
	ep := epChain(sp, e)
	chain(&knftables.Chain{Name: ep, Comment: nftcomment.Bounded(sp.Key() + " -> " + e.String())})
	if sp.AffinitySeconds > 0 {
		set := affinitySet(sp, e)
		timeout := time.Duration(sp.AffinitySeconds) * time.Second
		tx.Add(&knftables.Set{Name: set, Type: f.addr, Flags: []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag}, Timeout: &timeout})
		tx.Add(&knftables.Rule{Chain: ep, Rule: fmt.Sprintf("update @%s { %s saddr }", set, f.ip)})
	}
	tx.Add(&knftables.Rule{Chain: ep, Rule: knftables.Concat("meta l4proto", lower(sp.Protocol), "dnat", f.ip, "to", e.String())})
}

// dispatch sends a connection to one of eps: back to the endpoint a
// client used before (session affinity), else a random one.
func dispatch(tx *Ruleset, f family, chainName string, sp ServicePort, eps []Endpoint) {
	if len(eps) == 0 {
		tx.Add(&knftables.Rule{Chain: chainName, Rule: "drop", Comment: knftables.PtrTo("no local endpoints")})
		return
	}
	if sp.AffinitySeconds == 0 {
		var m []string
		for i, e := range eps {
			m = append(m, fmt.Sprintf("%d : %s . %d", i, e.IP, e.Port))
		}
		tx.Add(&knftables.Rule{Chain: chainName, Rule: fmt.Sprintf("meta l4proto %s dnat %s addr . port to numgen random mod %d map { %s }",
			lower(sp.Protocol), f.ip, len(eps), strings.Join(m, " , "))})
		return
	}
	for _, e := range eps {
		tx.Add(&knftables.Rule{Chain: chainName, Rule: fmt.Sprintf("%s saddr @%s goto %s", f.ip, affinitySet(sp, e), epChain(sp, e))})
	}
	var vmap []string
	for i, e := range eps {
		vmap = append(vmap, fmt.Sprintf("%d : goto %s", i, epChain(sp, e)))
	}
	// Spaces around the commas keep knftables' Fake parser happy.
	tx.Add(&knftables.Rule{Chain: chainName, Rule: fmt.Sprintf("numgen random mod %d vmap { %s }", len(eps), strings.Join(vmap, " , "))})
}

// sharedDispatch creates the shared chains and maps on first use. Per
// endpoint count N, dnat-ip-N and dnat-np-N pick a bucket with
// `numgen random mod N` and go to pick-ip-<i> / pick-np-<i>, which DNAT
// through the bucket's map service-endpoints-<i> / nodeport-endpoints-<i>
// (entry point → endpoint). ext-ip-N and ext-np-N first mark external
// traffic for masquerade (externalTrafficPolicy Cluster).
//
// Why per-bucket maps rather than one map keyed by "... . numgen random
// mod N": such a map needs a typeof declaration, and nft 1.0.6 cannot
// re-read `ip daddr . th dport` data from the kernel, so every later
// transaction adding a rule that uses the map failed ("conflicting
// protocols specified: ip vs. th"). Plain `type` maps have no such
// problem and still cost one lookup per packet.
type sharedDispatch struct {
	f       family
	tx      *Ruleset // where shared chains and maps are written
	created *Ruleset // if set, also gets what is created from now on
	done    map[string]bool
}

func (d *sharedDispatch) add(obj knftables.Object) {
	d.tx.Add(obj)
	if d.created != nil {
		d.created.Add(obj)
	}
}

func newSharedDispatch(cfg Config, tx *Ruleset) *sharedDispatch {
	return &sharedDispatch{f: cfg.fam(), tx: tx, done: map[string]bool{}}
}

// entry is how traffic reaches a shared DNAT chain: to a service IP (its
// bucket maps are keyed by address, protocol and port) or to a NodePort
// (keyed by protocol and port).
type entry int

const (
	viaServiceIP entry = iota
	viaNodePort
)

func (e entry) suffix() string {
	if e == viaNodePort {
		return "np"
	}
	return "ip"
}

// dnatChain is dnat-<ip|np>-N: one of N buckets at random.
func (d *sharedDispatch) dnatChain(e entry, n int) string {
	name := fmt.Sprintf("dnat-%s-%d", e.suffix(), n)
	if d.once(name) {
		var vmap []string
		for i := 0; i < n; i++ {
			vmap = append(vmap, fmt.Sprintf("%d : goto %s", i, d.pickChain(e, i)))
		}
		d.add(&knftables.Chain{Name: name})
		d.add(&knftables.Rule{Chain: name, Rule: fmt.Sprintf("numgen random mod %d vmap { %s }", n, strings.Join(vmap, " , "))})
	}
	return name
}

// pickChain is pick-<ip|np>-i: DNAT to what bucket i's map holds for the
// packet's entry point.
func (d *sharedDispatch) pickChain(e entry, i int) string {
	name := fmt.Sprintf("pick-%s-%d", e.suffix(), i)
	if d.once(name) {
		key := d.f.ip + " daddr . meta l4proto . th dport"
		if e == viaNodePort {
			key = "meta l4proto . th dport"
		}
		d.add(&knftables.Chain{Name: name})
		d.add(&knftables.Rule{Chain: name, Rule: knftables.Concat("dnat", d.f.ip, "addr . port to", key, "map @"+d.bucketMap(e, i))})
	}
	return name
}

// externalChain is ext-<ip|np>-N: external traffic (externalTrafficPolicy
// Cluster) is marked for masquerade, then dispatched like internal.
func (d *sharedDispatch) externalChain(e entry, n int) string {
	name := fmt.Sprintf("ext-%s-%d", e.suffix(), n)
	if d.once(name) {
		target := d.dnatChain(e, n)
		d.add(&knftables.Chain{Name: name})
		d.add(&knftables.Rule{Chain: name, Rule: "jump mark-for-masquerade"})
		d.add(&knftables.Rule{Chain: name, Rule: "goto " + target})
	}
	return name
}

// once reports whether name is created for the first time.
func (d *sharedDispatch) once(name string) bool {
	if d.done[name] {
		return false
	}
	d.done[name] = true
	return true
}

// bucketMap is the endpoint map of bucket i: service-endpoints-<i> or
// nodeport-endpoints-<i>.
func (d *sharedDispatch) bucketMap(e entry, i int) string {
	if e == viaNodePort {
		name := fmt.Sprintf("nodeport-endpoints-%d", i)
		if d.once(name) {
			d.add(&knftables.Map{Name: name, Type: "inet_proto . inet_service : " + d.f.addr + " . inet_service",
				Comment: knftables.PtrTo(fmt.Sprintf("protocol . node port : endpoint of bucket %d", i))})
		}
		return name
	}
	name := fmt.Sprintf("service-endpoints-%d", i)
	if d.once(name) {
		d.add(&knftables.Map{Name: name, Type: d.f.addr + " . inet_proto . inet_service : " + d.f.addr + " . inet_service",
			Comment: knftables.PtrTo(fmt.Sprintf("service IP . protocol . port : endpoint of bucket %d", i))})
	}
	return name
}

// buildPlainService writes a service port without session affinity,
// source ranges or externalTrafficPolicy Local as map elements only: each
// entry point (cluster IP, external IP, node port) maps to a shared DNAT
// chain for its endpoint count, and its buckets to the endpoints.
func buildPlainService(tx *Ruleset, sp ServicePort, internal, external []Endpoint, sd *sharedDispatch) {
	proto := lower(sp.Protocol)
	port := fmt.Sprint(sp.Port)
	add := func(ip string, eps []Endpoint, external bool) {
		verdict := "goto no-local-endpoints"
		switch {
		case len(eps) > 0 && external:
			verdict = "goto " + sd.externalChain(viaServiceIP, len(eps))
		case len(eps) > 0:
			verdict = "goto " + sd.dnatChain(viaServiceIP, len(eps))
		}
		tx.Add(&knftables.Element{Map: "service-ips", Key: []string{ip, proto, port}, Value: []string{verdict}})
		for i, e := range eps {
			tx.Add(&knftables.Element{Map: sd.bucketMap(viaServiceIP, i), Key: []string{ip, proto, port},
				Value: []string{e.IP.String(), fmt.Sprint(e.Port)}})
		}
	}
	for _, ip := range sp.ClusterIPs {
		add(ip.String(), internal, false)
	}
	for _, ip := range sp.ExternalIPs {
		add(ip.String(), external, true)
	}
	if sp.NodePort > 0 {
		np := fmt.Sprint(sp.NodePort)
		verdict := "goto no-local-endpoints"
		if len(external) > 0 {
			verdict = "goto " + sd.externalChain(viaNodePort, len(external))
		}
		tx.Add(&knftables.Element{Map: "service-nodeports", Key: []string{proto, np}, Value: []string{verdict}})
		for i, e := range external {
			tx.Add(&knftables.Element{Map: sd.bucketMap(viaNodePort, i), Key: []string{proto, np},
				Value: []string{e.IP.String(), fmt.Sprint(e.Port)}})
		}
	}
}
