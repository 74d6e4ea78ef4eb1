// The pod-to-pod fast path: IPv4 TCP and UDP between pod addresses that
// no connection tracking entry, policy or NAT needs is forwarded by tc
// programs, past the node's netfilter hooks and the receiving veth's
// backlog. Everything else returns TC_ACT_OK and takes the kernel's path.
// Built by `make bpf` (clang); the object is committed beside it.

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
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
	PASS_TRACKED, // conntrack knows the flow (NAT, or begun on the kernel's path)
	PASS_JUDGED,  // a policy selects the local pod
	PASS_ROUTE,   // no route, neighbour or device the fast path can use
	PASS_OTHER,   // not ours: no pod address, other protocols, fragments, spoofed source
	NSTATS,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __be32);
	__type(value, struct endpoint);
} endpoints SEC(".maps");

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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

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

struct nf_conn {
	int _opaque; // the kernel's; only passed back to bpf_ct_release
};
extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple__sz,
					 struct bpf_ct_opts___local *opts, __u32 opts__sz) __ksym;
extern void bpf_ct_release(struct nf_conn *ct) __ksym;

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
};

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || (ip->frag_off & bpf_htons(0x3fff)))
		return 0;
	p->ip = ip;
	p->syn = 0;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = (void *)(ip + 1);
		if ((void *)(th + 1) > end)
			return 0;
		p->sport = th->source;
		p->dport = th->dest;
		p->syn = th->syn && !th->ack;
		return 1;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = (void *)(ip + 1);
		if ((void *)(uh + 1) > end)
			return 0;
		p->sport = uh->source;
		p->dport = uh->dest;
		return 1;
	}
	return 0;
}

static __always_inline int tracked(struct __sk_buff *skb, struct pkt *p)
{
	struct bpf_sock_tuple t = {};
	t.ipv4.saddr = p->ip->saddr;
	t.ipv4.daddr = p->ip->daddr;
	t.ipv4.sport = p->sport;
	t.ipv4.dport = p->dport;
	struct bpf_ct_opts___local opts = {.netns_id = -1, .l4proto = p->ip->protocol};
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, &t, sizeof(t.ipv4), &opts, sizeof(opts));
	if (!ct)
		return 0;
	bpf_ct_release(ct);
	return 1;
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

// forward decrements the TTL and sends the packet to the next hop: with
// the looked-up MAC addresses to out, into the pod's namespace when peer,
// or through the kernel's neighbour resolution (found == 2).
static __always_inline int forward(struct __sk_buff *skb, struct pkt *p, struct bpf_fib_lookup *fib, int found, int peer)
{
	struct iphdr *ip = p->ip;
	__u16 old = *(__u16 *)&ip->ttl;
	ip->ttl--;
	__u16 new = *(__u16 *)&ip->ttl;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2))
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

// from_pod runs on a pod veth's host side, for what the pod sends.
SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	struct pkt p;
	if (!cfg || !parse(skb, &p))
		return count(PASS_OTHER);
	__be32 s = p.ip->saddr, d = p.ip->daddr;
	if (!in_cluster(cfg, s) || !in_cluster(cfg, d))
		return count(PASS_OTHER);
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &s);
	// A source not the pod's own (antispoof judges it), or a local peer.
	if (!ep || ep->ifindex != skb->ingress_ifindex || bpf_map_lookup_elem(&endpoints, &d))
		return count(PASS_OTHER);
	if (tracked(skb, &p))
		return count(PASS_TRACKED);
	if (!admit(cfg, &p, ep->judged))
		return count(PASS_JUDGED);
	struct bpf_fib_lookup fib = {};
	int found = lookup(skb, &p, &fib);
	if (!found)
		return count(PASS_ROUTE);
	count(FWD_EGRESS);
	return forward(skb, &p, &fib, found, 0);
}

// to_pod runs on the node's uplink and tunnel devices, for what arrives.
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	struct pkt p;
	if (!cfg || !parse(skb, &p))
		return count(PASS_OTHER);
	__be32 s = p.ip->saddr, d = p.ip->daddr;
	if (!in_cluster(cfg, s) || !in_cluster(cfg, d))
		return count(PASS_OTHER);
	struct endpoint *ep = bpf_map_lookup_elem(&endpoints, &d);
	if (!ep || bpf_map_lookup_elem(&endpoints, &s))
		return count(PASS_OTHER);
	__u32 ifindex = ep->ifindex;
	if (tracked(skb, &p))
		return count(PASS_TRACKED);
	if (!admit(cfg, &p, ep->judged))
		return count(PASS_JUDGED);
	struct bpf_fib_lookup fib = {};
	int found = lookup(skb, &p, &fib);
	if (!found || fib.ifindex != ifindex)
		return count(PASS_ROUTE);
	count(FWD_INGRESS);
	return forward(skb, &p, &fib, found, 1);
}

char _license[] SEC("license") = "Dual BSD/GPL";
