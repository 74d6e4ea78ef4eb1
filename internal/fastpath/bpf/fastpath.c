// The pod-to-pod fast path: TCP and UDP between pod addresses that
// no connection tracking entry, policy or NAT needs is forwarded by tc
// programs, past the node's netfilter hooks and the receiving veth's
// backlog. Everything else returns TC_ACT_OK and takes the kernel's path.
// Built by `make bpf` (clang); the object is committed beside it.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define MAX_CIDRS 4

// A local pod address's endpoint. judged: some policy selects the pod (in
// either direction: both directions of a flow must take the same path on
// a node, or conntrack would see a reply without its request), so its new
// flows take the kernel's path.
struct endpoint {
	__u32 ifindex; // the host side of the pod's veth
	__u8 judged;
	__u8 pad[3];
};

struct config {
	__be32 addr[MAX_CIDRS]; // the cluster's IPv4 pod CIDRs
	__be32 mask[MAX_CIDRS];
	__u32 spare;            // 1: flows begun on the fast path stay on it once judged (see admit)
	__be32 addr6[MAX_CIDRS][4]; // the cluster's IPv6 pod CIDRs
	__be32 mask6[MAX_CIDRS][4];
};

// A flow, its two ends in a fixed order, so both directions find it.
struct flow {
	__be32 lo, hi;
	__be16 lo_port, hi_port;
	__u8 proto;
	__u8 pad[3];
};

// Counters, per CPU (stats map index).
enum {
	FWD_EGRESS,   // sent by a local pod, forwarded here
	FWD_INGRESS,  // to a local pod, put straight into it
	PASS_TRACKED, // conntrack knows the flow (NAT, or begun on the kernel's path) or holds its reply tuple (see held)
	PASS_JUDGED,  // a policy selects the local pod
	PASS_ROUTE,   // no route, neighbour or device the fast path can use
	PASS_OTHER,   // not ours: no pod address, other protocols, fragments, spoofed source
	FWD_ENCAP,    // of FWD_EGRESS: wrapped in VXLAN here and sent on the underlay
	FWD_DECAP,    // of FWD_INGRESS: arrived in VXLAN on the underlay, unwrapped here
	FWD_LOCAL,    // of FWD_EGRESS (and FWD_INGRESS): to a pod on this node
	FWD_STAMPED,  // of both: a flow conntrack tracks, judged by the policies in force (see stamped)
	NSTATS,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __be32);
	__type(value, struct endpoint);
} endpoints SEC(".maps");

// An IPv6 address, as a map key.
struct addr6 {
	__be32 a[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct addr6);
	__type(value, struct endpoint);
} endpoints6 SEC(".maps");

// Who sent a flow's first packet here: the side conntrack would call the
// original direction.
struct initiator {
	__be32 addr;
	__be16 port;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow);
	__type(value, struct initiator);
} flows SEC(".maps");

// The same for IPv6 flows.
struct flow6 {
	struct addr6 lo, hi;
	__be16 lo_port, hi_port;
	__u8 proto;
	__u8 pad[3];
};

struct initiator6 {
	struct addr6 addr;
	__be16 port;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow6);
	__type(value, struct initiator6);
} flows6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

// The node's VXLAN device, whose frames the programs build and unwrap
// themselves (local 0: none, or not IPv4).
struct tunnel {
	__u32 ifindex;  // the VXLAN device
	__u32 underlay; // the link its frames leave and arrive on
	__be32 local;   // the node's address, the frames' source
	__be32 vni;     // in the VXLAN header's layout: VNI << 8
	__be16 port;    // UDP destination port
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel);
} tunnels SEC(".maps");

// The VXLAN device's forwarding entries: a peer device's MAC (6 bytes,
// zero padded) to its node's address.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __be32);
} vteps SEC(".maps");

// The same nodes by address: the only sources whose VXLAN is unwrapped.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __be32);
	__type(value, __u8);
} vtep_addrs SEC(".maps");

// What the agent says of the flows conntrack tracks (see stamped).
struct stamp {
	__u32 gen;         // the policy table's generation; 0: carry none
	__u32 tcp_timeout; // ms an established TCP flow's entry is kept; 0: carry no TCP
	__u32 udp_timeout; // ms a UDP stream's entry is kept; 0: carry no UDP
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stamp);
} stamps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NSTATS);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

// The kernel's conntrack lookup (kfunc) and its options.
struct bpf_ct_opts___local {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id;
	__u8 ct_zone_dir;
	__u8 reserved[3];
} __attribute__((preserve_access_index));

// The fields of the kernel's conntrack entry read here (CO-RE: their
// offsets come from the kernel's BTF).
struct ip_ct_tcp {
	__u8 state;
} __attribute__((preserve_access_index));

union nf_conntrack_proto {
	struct ip_ct_tcp tcp;
} __attribute__((preserve_access_index));

struct nf_conn {
	unsigned long status;
	__u32 mark;
	union nf_conntrack_proto proto;
} __attribute__((preserve_access_index));

#define IPS_ASSURED (1 << 2)
#define IPS_NAT_MASK ((1 << 4) | (1 << 5))
#define TCP_CONNTRACK_ESTABLISHED 3
// The policy generation's bits of the conntrack mark (internal/netpol's
// GenMask: all but the domain bit).
#define GEN_MASK (~(__u32)0x00100000)

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple__sz,
					 struct bpf_ct_opts___local *opts, __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;
extern int bpf_ct_change_timeout(struct nf_conn *nfct, __u32 timeout) __ksym;

static __always_inline int count(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &what);
	if (n)
		*n += 1;
	return TC_ACT_OK;
}

static __always_inline int in_cluster(struct config *cfg, __be32 a)
{
#pragma unroll
	for (int i = 0; i < MAX_CIDRS; i++)
		if (cfg->mask[i] && (a & cfg->mask[i]) == cfg->addr[i])
			return 1;
	return 0;
}

// A packet's parsed IPv4 and transport header fields.
struct pkt {
	struct iphdr *ip;
	__be16 sport, dport;
	__u8 syn; // a TCP SYN without ACK: a new connection
	__u8 ctl; // a TCP SYN, FIN or RST: conntrack must see it
};

// parse_ports reads a TCP or UDP header at l4: its ports, whether it is
// a SYN without ACK (a new connection) and whether it changes a TCP
// connection's state (SYN, FIN, RST); 0 for other protocols.
static __always_inline int parse_ports(void *l4, void *end, __u8 proto, __be16 *sport, __be16 *dport, __u8 *syn, __u8 *ctl)
{
	*syn = 0;
	*ctl = 0;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			return 0;
		*sport = th->source;
		*dport = th->dest;
		*syn = th->syn && !th->ack;
		*ctl = th->syn || th->fin || th->rst;
		return 1;
	}
	if (proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end)
			return 0;
		*sport = uh->source;
		*dport = uh->dest;
		return 1;
	}
	return 0;
}

// parse reads the Ethernet frame at off (0, or VXLAN_HLEN: the frame a
// VXLAN packet carries).
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p, __u32 off)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data + off;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return 0;
	p->ip = ip;
	return parse_ports(ip + 1, end, ip->protocol, &p->sport, &p->dport, &p->syn, &p->ctl);
}

// What conntrack knows of a packet's flow.
enum { UNTRACKED, TRACKED, STAMPED };

// stamped says whether a flow conntrack tracks may be carried anyway: its
// entry is established, without NAT, and stamped with the generation of
// the policy table in force, which lets through only flows that table's
// policies allow (docs/netpol.md). A packet changing TCP state (SYN, FIN,
// RST) goes to conntrack, so the entry follows the connection's end. A
// carried packet keeps the entry alive as conntrack's own would. The
// agent sets tcp_timeout only while conntrack is liberal: after a policy
// change the flow's next packets come to conntrack with sequence numbers
// it has not seen, which a strict window check would call invalid.
static __always_inline int stamped(struct nf_conn *ct, __u8 proto, __u8 ctl)
{
	__u32 zero = 0;
	struct stamp *s = bpf_map_lookup_elem(&stamps, &zero);
	if (!s || !s->gen || ctl || (ct->mark & GEN_MASK) != s->gen)
		return TRACKED;
	unsigned long status = ct->status;
	if (!(status & IPS_ASSURED) || (status & IPS_NAT_MASK))
		return TRACKED;
	__u32 ms = s->udp_timeout;
	if (proto == IPPROTO_TCP) {
		if (ct->proto.tcp.state != TCP_CONNTRACK_ESTABLISHED)
			return TRACKED;
		ms = s->tcp_timeout;
	}
	if (!ms)
		return TRACKED;
	bpf_ct_change_timeout(ct, ms);
	return STAMPED;
}

// ct_lookup4 finds the conntrack entry holding a tuple (either direction).
static __always_inline struct nf_conn *ct_lookup4(struct __sk_buff *skb, __be32 s, __be32 d, __be16 sport, __be16 dport, __u8 proto)
{
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = s;
	t.ipv4.daddr = d;
	t.ipv4.sport = sport;
	t.ipv4.dport = dport;
	struct bpf_ct_opts___local opts = {.netns_id = -1, .l4proto = proto};
	return bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
}

// held says whether an entry conntrack has (found by the reverse tuple)
// would take the replies of a flow it does not know: a pod's connection
// to a Service (or a hostPort) leaves an entry whose reply tuple is the
// endpoint back to the pod's port, and a later direct flow from that
// port to that endpoint, which the pod's kernel allows, has replies of
// that tuple. Carried, its replies would be un-NATed into the old
// socket; on the kernel's path conntrack gives it another source port.
// Checked where a flow may begin: a TCP SYN, any UDP packet.
static __always_inline int held(struct nf_conn *ct)
{
	if (!ct)
		return UNTRACKED;
	bpf_ct_release(ct);
	return TRACKED;
}

static __always_inline int tracked(struct __sk_buff *skb, struct pkt *p)
{
	__u8 proto = p->ip->protocol;
	struct nf_conn *ct = ct_lookup4(skb, p->ip->saddr, p->ip->daddr, p->sport, p->dport, proto);
	if (!ct) {
		if (proto == IPPROTO_TCP && !p->syn)
			return UNTRACKED;
		return held(ct_lookup4(skb, p->ip->daddr, p->ip->saddr, p->dport, p->sport, proto));
	}
	int v = stamped(ct, proto, p->ctl);
	bpf_ct_release(ct);
	return v;
}

static __always_inline void flow_of(struct pkt *p, struct flow *f)
{
	__be32 s = p->ip->saddr, d = p->ip->daddr;
	int swap = s > d || (s == d && p->sport > p->dport);
	f->lo = swap ? d : s;
	f->hi = swap ? s : d;
	f->lo_port = swap ? p->dport : p->sport;
	f->hi_port = swap ? p->sport : p->dport;
	f->proto = p->ip->protocol;
}

// admit says whether a flow of a local endpoint may take the fast path.
// Always when no policy judges the endpoint (the flow is remembered, with
// its initiator). When one does: never a new connection (a SYN) or a flow
// not begun here; with spare, every packet of a flow begun here; without,
// only the responder's, while the initiator's go to the kernel's path.
// There conntrack picks the flow up from the initiator's packet, so it is
// judged as a connection of the initiator's (a new deny cuts it) and the
// responder's packets are its replies, as if the flow had always been on
// the kernel's path. Letting the responder's packet reach conntrack first
// would make the initiator's packets replies, never judged.
static __always_inline int admit(struct config *cfg, struct pkt *p, int judged)
{
	struct flow f = {};
	flow_of(p, &f);
	struct initiator *in = bpf_map_lookup_elem(&flows, &f);
	if (!judged) {
		if (p->syn || !in) {
			struct initiator v = {.addr = p->ip->saddr, .port = p->sport};
			bpf_map_update_elem(&flows, &f, &v, BPF_ANY);
		}
		return 1;
	}
	if (p->syn || !in)
		return 0;
	if (cfg->spare)
		return 1;
	return in->addr != p->ip->saddr || in->port != p->sport;
}

// lookup finds the next hop as the kernel's forwarding would: 1 with
// its MAC addresses, 2 when the neighbour is not resolved yet (forward
// then asks the kernel to resolve it: a flow's packets must not fall back
// to the kernel's path halfway, where conntrack would call a reply
// without its request invalid), 0 when forwarding would not send it.
static __always_inline int lookup(struct __sk_buff *skb, struct pkt *p, struct bpf_fib_lookup *fib)
{
	struct iphdr *ip = p->ip;
	if (ip->ttl <= 1)
		return 0;
	fib->family = AF_INET;
	fib->tos = ip->tos;
	fib->l4_protocol = ip->protocol;
	// A GSO packet is longer than the MTU until segmented; others are checked.
	fib->tot_len = skb->gso_size ? 0 : bpf_ntohs(ip->tot_len);
	fib->ipv4_src = ip->saddr;
	fib->ipv4_dst = ip->daddr;
	fib->ifindex = skb->ingress_ifindex;
	switch (bpf_fib_lookup(skb, fib, sizeof(*fib), 0)) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		return 1;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return 2;
	}
	return 0;
}

// dec_ttl decrements the TTL of the IPv4 header after the first Ethernet
// header. p's pointers are invalid afterwards.
static __always_inline int dec_ttl(struct __sk_buff *skb, struct pkt *p)
{
	struct iphdr *ip = p->ip;
	__u16 old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	__u16 new = *(__u16 *)&ip->ttl;
	return bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2);
}

// forward decrements the TTL and sends the packet to the next hop: with
// the looked-up MAC addresses to out, into the pod's namespace when peer,
// or through the kernel's neighbour resolution (found == 2).
static __always_inline int forward(struct __sk_buff *skb, struct pkt *p, struct bpf_fib_lookup *fib, int found, int peer)
{
	if (dec_ttl(skb, p))
		return TC_ACT_SHOT;
	if (found == 2) {
		struct bpf_redir_neigh nh = {.nh_family = AF_INET, .ipv4_nh = fib->ipv4_dst};
		return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return peer ? bpf_redirect_peer(fib->ifindex, 0) : bpf_redirect(fib->ifindex, 0);
}

// The headers a VXLAN packet adds before the pod's IPv4 header: outer
// IPv4, UDP, VXLAN and the inner Ethernet header (the outer Ethernet
// header is the pod's frame's own, rewritten).
struct vxlan_hdrs {
	struct iphdr ip;
	struct udphdr udp;
	__be32 flags, vni;
	struct ethhdr inner;
} __attribute__((packed));

#define VXLAN_HLEN sizeof(struct vxlan_hdrs)
#define VXLAN_FLAG_VNI bpf_htonl(0x08000000)

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u32 c = sum;
	c = (c & 0xffff) + (c >> 16);
	c = (c & 0xffff) + (c >> 16);
	return ~c;
}

// tunnel_peer is the node to send a packet to in VXLAN when the FIB
// routed it to the VXLAN device and the programs know the peer device
// (fib->dmac); 0 when the kernel's device is to send it.
static __always_inline __be32 tunnel_peer(struct __sk_buff *skb, struct bpf_fib_lookup *fib, int found, struct tunnel **tun)
{
	__u32 zero = 0;
	*tun = bpf_map_lookup_elem(&tunnels, &zero);
	if (!*tun || !(*tun)->local || fib->ifindex != (*tun)->ifindex || found != 1)
		return 0;
	__u64 mac = 0;
	__builtin_memcpy(&mac, fib->dmac, ETH_ALEN);
	__be32 *peer = bpf_map_lookup_elem(&vteps, &mac);
	if (!peer || skb->len + VXLAN_HLEN - ETH_HLEN > 0xffff)
		return 0;
	return *peer;
}

// encap sends a pod's packet to the peer node in VXLAN as the kernel's
// device would (source port from the inner flow's hash, TTL 64, no DF, no
// UDP checksum, the pod's segments kept: GSO segments it with the outer
// headers), but without the node's output hooks, routing and the
// device's transmit path.
static __always_inline int encap(struct __sk_buff *skb, struct pkt *p, struct bpf_fib_lookup *fib, struct tunnel *tun, __be32 peer)
{
	__u32 len = skb->len; // the pod's frame
	struct iphdr ip = {};
	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(len + VXLAN_HLEN - ETH_HLEN);
	ip.id = bpf_get_prandom_u32();
	ip.ttl = 64;
	ip.protocol = IPPROTO_UDP;
	ip.saddr = tun->local;
	ip.daddr = peer;
	ip.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0));
	struct vxlan_hdrs h = {.ip = ip};
	__u32 hash = bpf_get_hash_recalc(skb);
	h.udp.source = bpf_htons(32768 + (((__u64)hash * 28232) >> 32));
	h.udp.dest = tun->port;
	h.udp.len = bpf_htons(len + VXLAN_HLEN - ETH_HLEN - sizeof(struct iphdr));
	h.flags = VXLAN_FLAG_VNI;
	h.vni = tun->vni;
	__builtin_memcpy(h.inner.h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(h.inner.h_source, fib->smac, ETH_ALEN);
	h.inner.h_proto = bpf_htons(ETH_P_IP);
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP |
		      BPF_F_ADJ_ROOM_ENCAP_L2_ETH | BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN);
	if (dec_ttl(skb, p) || bpf_skb_adjust_room(skb, VXLAN_HLEN, BPF_ADJ_ROOM_MAC, flags) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0))
		return TC_ACT_SHOT;
	count(FWD_ENCAP);
	return bpf_redirect_neigh(tun->underlay, 0, 0, 0);
}

// IPv6: the same conditions and forwarding as for IPv4, on an IPv6
// header without extension headers. VXLAN carrying IPv6 is left to the
// kernel's device, which the FIB names and the packet is sent to.

struct pkt6 {
	struct ipv6hdr *ip;
	__be16 sport, dport;
	__u8 proto;
	__u8 syn;
	__u8 ctl;
};

static __always_inline int parse6(struct __sk_buff *skb, struct pkt6 *p)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return 0;
	struct ipv6hdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return 0;
	p->ip = ip;
	p->proto = ip->nexthdr;
	return parse_ports(ip + 1, end, ip->nexthdr, &p->sport, &p->dport, &p->syn, &p->ctl);
}

static __always_inline int in_cluster6(struct config *cfg, const struct in6_addr *a)
{
#pragma unroll
	for (int i = 0; i < MAX_CIDRS; i++) {
		__be32 *m = cfg->mask6[i], *n = cfg->addr6[i];
		if (m[0] && (a->in6_u.u6_addr32[0] & m[0]) == n[0] && (a->in6_u.u6_addr32[1] & m[1]) == n[1] &&
		    (a->in6_u.u6_addr32[2] & m[2]) == n[2] && (a->in6_u.u6_addr32[3] & m[3]) == n[3])
			return 1;
	}
	return 0;
}

static __always_inline struct addr6 key6(const struct in6_addr *a)
{
	struct addr6 k;
	__builtin_memcpy(k.a, a->in6_u.u6_addr32, sizeof(k.a));
	return k;
}

static __always_inline struct nf_conn *ct_lookup6(struct __sk_buff *skb, const struct in6_addr *s, const struct in6_addr *d, __be16 sport, __be16 dport, __u8 proto)
{
	struct bpf_sock_tuple t = {};
	__builtin_memcpy(t.ipv6.saddr, s->in6_u.u6_addr32, 16);
	__builtin_memcpy(t.ipv6.daddr, d->in6_u.u6_addr32, 16);
	t.ipv6.sport = sport;
	t.ipv6.dport = dport;
	struct bpf_ct_opts___local opts = {.netns_id = -1, .l4proto = proto};
	return bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv6), &opts, sizeof(opts));
}

// tracked6 is tracked's IPv6 form (held included).
static __always_inline int tracked6(struct __sk_buff *skb, struct pkt6 *p)
{
	struct nf_conn *ct = ct_lookup6(skb, &p->ip->saddr, &p->ip->daddr, p->sport, p->dport, p->proto);
	if (!ct) {
		if (p->proto == IPPROTO_TCP && !p->syn)
			return UNTRACKED;
		return held(ct_lookup6(skb, &p->ip->daddr, &p->ip->saddr, p->dport, p->sport, p->proto));
	}
	int v = stamped(ct, p->proto, p->ctl);
	bpf_ct_release(ct);
	return v;
}

// before6 orders two addresses (any fixed order does: both directions of
// a flow must find one key).
static __always_inline int before6(const struct addr6 *x, const struct addr6 *y)
{
#pragma unroll
	for (int i = 0; i < 4; i++)
		if (x->a[i] != y->a[i])
			return x->a[i] < y->a[i];
	return 0;
}

// admit6 is admit for IPv6.
static __always_inline int admit6(struct config *cfg, struct pkt6 *p, int judged)
{
	struct addr6 s = key6(&p->ip->saddr), d = key6(&p->ip->daddr);
	int swap = before6(&d, &s) || (!before6(&s, &d) && p->sport > p->dport);
	struct flow6 f = {};
	f.lo = swap ? d : s;
	f.hi = swap ? s : d;
	f.lo_port = swap ? p->dport : p->sport;
	f.hi_port = swap ? p->sport : p->dport;
	f.proto = p->proto;
	struct initiator6 *in = bpf_map_lookup_elem(&flows6, &f);
	if (!judged) {
		if (p->syn || !in) {
			struct initiator6 v = {.addr = s, .port = p->sport};
			bpf_map_update_elem(&flows6, &f, &v, BPF_ANY);
		}
		return 1;
	}
	if (p->syn || !in)
		return 0;
	if (cfg->spare)
		return 1;
	return before6(&in->addr, &s) || before6(&s, &in->addr) || in->port != p->sport;
}

static __always_inline int lookup6(struct __sk_buff *skb, struct pkt6 *p, struct bpf_fib_lookup *fib)
{
	struct ipv6hdr *ip = p->ip;
	if (ip->hop_limit <= 1)
		return 0;
	fib->family = AF_INET6;
	fib->flowinfo = *(__be32 *)ip & bpf_htonl(0x0fffffff);
	fib->l4_protocol = ip->nexthdr;
	fib->tot_len = skb->gso_size ? 0 : bpf_ntohs(ip->payload_len) + sizeof(*ip);
	__builtin_memcpy(fib->ipv6_src, ip->saddr.in6_u.u6_addr32, 16);
	__builtin_memcpy(fib->ipv6_dst, ip->daddr.in6_u.u6_addr32, 16);
	fib->ifindex = skb->ingress_ifindex;
	switch (bpf_fib_lookup(skb, fib, sizeof(*fib), 0)) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		return 1;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return 2;
	}
	return 0;
}

// forward6 is forward for IPv6 (a hop limit has no checksum).
static __always_inline int forward6(struct __sk_buff *skb, struct pkt6 *p, struct bpf_fib_lookup *fib, int found, int peer)
{
	p->ip->hop_limit--;
	if (found == 2) {
		struct bpf_redir_neigh nh = {.nh_family = AF_INET6};
		__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, 16);
		return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return peer ? bpf_redirect_peer(fib->ifindex, 0) : bpf_redirect(fib->ifindex, 0);
}

// pod_packet6: a TCP or UDP packet between two addresses of the pod CIDRs.
static __always_inline int pod_packet6(struct __sk_buff *skb, struct config *cfg, struct pkt6 *p)
{
	return parse6(skb, p) && in_cluster6(cfg, &p->ip->saddr) && in_cluster6(cfg, &p->ip->daddr);
}

static __always_inline int from_pod6(struct __sk_buff *skb, struct config *cfg)
{
	struct pkt6 p;
	if (!pod_packet6(skb, cfg, &p))
		return count(PASS_OTHER);
	struct addr6 s = key6(&p.ip->saddr), d = key6(&p.ip->daddr);
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints6, &s);
	if (!ep || ep->ifindex != skb->ingress_ifindex)
		return count(PASS_OTHER);
	struct endpoint *local = bpf_map_lookup_elem(&endpoints6, &d);
	__u32 local_if = local ? local->ifindex : 0;
	int judged = ep->judged || (local && local->judged);
	int ct = tracked6(skb, &p);
	if (ct == TRACKED)
		return count(PASS_TRACKED);
	if (ct == UNTRACKED && !admit6(cfg, &p, judged))
		return count(PASS_JUDGED);
	struct bpf_fib_lookup fib = {};
	int found = lookup6(skb, &p, &fib);
	if (!found || (local_if && fib.ifindex != local_if))
		return count(PASS_ROUTE);
	count(FWD_EGRESS);
	if (ct == STAMPED)
		count(FWD_STAMPED);
	if (local_if) {
		count(FWD_INGRESS);
		count(FWD_LOCAL);
	}
	return forward6(skb, &p, &fib, found, local_if != 0);
}

static __always_inline int to_pod6(struct __sk_buff *skb, struct config *cfg)
{
	struct pkt6 p;
	if (!pod_packet6(skb, cfg, &p))
		return count(PASS_OTHER);
	struct addr6 s = key6(&p.ip->saddr), d = key6(&p.ip->daddr);
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints6, &d);
	if (!ep || bpf_map_lookup_elem(&endpoints6, &s))
		return count(PASS_OTHER);
	__u32 ifindex = ep->ifindex;
	int ct = tracked6(skb, &p);
	if (ct == TRACKED)
		return count(PASS_TRACKED);
	if (ct == UNTRACKED && !admit6(cfg, &p, ep->judged))
		return count(PASS_JUDGED);
	struct bpf_fib_lookup fib = {};
	int found = lookup6(skb, &p, &fib);
	if (!found || fib.ifindex != ifindex)
		return count(PASS_ROUTE);
	count(FWD_INGRESS);
	if (ct == STAMPED)
		count(FWD_STAMPED);
	return forward6(skb, &p, &fib, found, 1);
}

// from_pod runs on a pod veth's host side, for what the pod sends.
SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	if (cfg && skb->protocol == bpf_htons(ETH_P_IPV6))
		return from_pod6(skb, cfg);
	struct pkt p;
	if (!cfg || !parse(skb, &p, 0))
		return count(PASS_OTHER);
	__be32 s = p.ip->saddr, d = p.ip->daddr;
	if (!in_cluster(cfg, s) || !in_cluster(cfg, d))
		return count(PASS_OTHER);
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &s);
	// A source not the pod's own: antispoof judges it.
	if (!ep || ep->ifindex != skb->ingress_ifindex)
		return count(PASS_OTHER);
	// A pod on this node: its conditions are checked here too (a policy
	// selecting either pod judges the flow), and the packet goes straight
	// into it.
	struct endpoint *local = bpf_map_lookup_elem(&endpoints, &d);
	__u32 local_if = local ? local->ifindex : 0;
	int judged = ep->judged || (local && local->judged);
	int ct = tracked(skb, &p);
	if (ct == TRACKED)
		return count(PASS_TRACKED);
	if (ct == UNTRACKED && !admit(cfg, &p, judged))
		return count(PASS_JUDGED);
	struct bpf_fib_lookup fib = {};
	int found = lookup(skb, &p, &fib);
	if (!found || (local_if && fib.ifindex != local_if))
		return count(PASS_ROUTE);
	count(FWD_EGRESS);
	if (ct == STAMPED)
		count(FWD_STAMPED);
	if (local_if) {
		count(FWD_INGRESS);
		count(FWD_LOCAL);
		return forward(skb, &p, &fib, found, 1);
	}
	struct tunnel *tun;
	__be32 peer = tunnel_peer(skb, &fib, found, &tun);
	if (peer && tun)
		return encap(skb, &p, &fib, tun, peer);
	return forward(skb, &p, &fib, found, 0);
}

// arriving decides for a packet to a local pod: 0 with the next hop in
// fib (and found) to forward it, else the counter to pass it with.
static __always_inline int arriving(struct __sk_buff *skb, struct config *cfg, struct pkt *p, struct bpf_fib_lookup *fib, int *found)
{
	__be32 s = p->ip->saddr, d = p->ip->daddr;
	if (!in_cluster(cfg, s) || !in_cluster(cfg, d))
		return PASS_OTHER;
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &d);
	if (!ep || bpf_map_lookup_elem(&endpoints, &s))
		return PASS_OTHER;
	__u32 ifindex = ep->ifindex;
	int ct = tracked(skb, p);
	if (ct == TRACKED)
		return PASS_TRACKED;
	if (ct == UNTRACKED && !admit(cfg, p, ep->judged))
		return PASS_JUDGED;
	*found = lookup(skb, p, fib);
	if (!*found || fib->ifindex != ifindex)
		return PASS_ROUTE;
	if (ct == STAMPED)
		count(FWD_STAMPED);
	return 0;
}

// decap unwraps VXLAN that a node sent to this node for a local pod and
// puts the inner packet into the pod, when the pod's packet may take the
// fast path; the kernel's VXLAN device receives everything else (-1),
// and there to_pod judges it again. As the node's antispoof table does,
// only VXLAN from nodes counts.
static __always_inline long decap(struct __sk_buff *skb, struct config *cfg)
{
	__u32 zero = 0;
	struct tunnel *tun = bpf_map_lookup_elem(&tunnels, &zero);
	if (!tun || !tun->local || skb->ifindex != tun->underlay)
		return -1;
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct vxlan_hdrs *h = (void *)(eth + 1);
	if ((void *)(h + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	if (h->ip.version != 4 || h->ip.ihl != 5 || h->ip.protocol != IPPROTO_UDP || (h->ip.frag_off & bpf_htons(0x3fff)) ||
	    h->ip.daddr != tun->local || h->udp.dest != tun->port)
		return -1;
	if (!(h->flags & VXLAN_FLAG_VNI) || (h->vni & bpf_htonl(0xffffff00)) != tun->vni ||
	    h->inner.h_proto != bpf_htons(ETH_P_IP))
		return -1;
	__be32 src = h->ip.saddr;
	if (!bpf_map_lookup_elem(&vtep_addrs, &src))
		return -1;
	struct pkt p;
	struct bpf_fib_lookup fib = {};
	int found = 0;
	if (!parse(skb, &p, VXLAN_HLEN) || arriving(skb, cfg, &p, &fib, &found))
		return -1;
	if (bpf_skb_adjust_room(skb, -(int)VXLAN_HLEN, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO) || !parse(skb, &p, 0))
		return TC_ACT_SHOT;
	count(FWD_INGRESS);
	count(FWD_DECAP);
	return forward(skb, &p, &fib, found, 1);
}

// to_pod runs on the node's uplink and tunnel devices, for what arrives.
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	if (!cfg)
		return count(PASS_OTHER);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return to_pod6(skb, cfg);
	long v = decap(skb, cfg);
	if (v >= 0)
		return v;
	struct pkt p;
	if (!parse(skb, &p, 0))
		return count(PASS_OTHER);
	struct bpf_fib_lookup fib = {};
	int found = 0;
	int pass = arriving(skb, cfg, &p, &fib, &found);
	if (pass)
		return count(pass);
	count(FWD_INGRESS);
	return forward(skb, &p, &fib, found, 1);
}

char _license[] SEC("license") = "Dual BSD/GPL";
