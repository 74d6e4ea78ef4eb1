package netpol

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"sigs.k8s.io/knftables"
	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

func answer(q string, rrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(q, dns.TypeA)
	m.Response = true
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	return m
}

func TestMatchesPattern(t *testing.T) {
	for _, c := range []struct {
		name, pattern string
		want          bool
	}{
		{"api.example.com.", "api.example.com", true},
		{"API.Example.com", "api.example.com", true},
		{"www.api.example.com", "api.example.com", false},
		{"example.com", "*.example.com", false},
		{"a.example.com", "*.example.com", true},
		{"a.b.example.com.", "*.example.com", true},
		{"aexample.com", "*.example.com", false},
	} {
		if got := matchesPattern(c.name, c.pattern); got != c.want {
			t.Errorf("%q ~ %q = %v, want %v", c.name, c.pattern, got, c.want)
		}
	}
	for _, bad := range []string{"", "*.", "a.*.com", "a..com", "**.com"} {
		if _, ok := normalizePattern(bad); ok {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

// Addresses count under the question name and every CNAME on the way,
// with the least TTL of the chain; failures and non-answers teach nothing.
func TestAnsweredAddresses(t *testing.T) {
	m := answer("api.example.com.",
		"api.example.com. 300 IN CNAME edge.cdn.net.",
		"edge.cdn.net. 20 IN A 203.0.113.20",
		"edge.cdn.net. 20 IN AAAA 2001:db8::20")
	got := map[string]time.Duration{}
	for _, a := range answeredAddresses(m) {
		got[a.name+" "+a.addr.String()] = a.ttl
	}
	want := map[string]time.Duration{"api.example.com 203.0.113.20": 20 * time.Second, "edge.cdn.net 203.0.113.20": 20 * time.Second,
		"api.example.com 2001:db8::20": 20 * time.Second, "edge.cdn.net 2001:db8::20": 20 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: ttl %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	nx := answer("api.example.com.", "api.example.com. 300 IN A 203.0.113.20")
	nx.Rcode = dns.RcodeNameError
	query := answer("api.example.com.", "api.example.com. 300 IN A 203.0.113.20")
	query.Response = false
	if len(answeredAddresses(nx)) != 0 || len(answeredAddresses(query)) != 0 {
		t.Error("a failed answer or a query taught addresses")
	}
}

// domainPolicy lets the default namespace reach api.example.com and
// *.example.org; a baseline Deny closes all other egress.
func domainPolicies() []*cnp.ClusterNetworkPolicy {
	return []*cnp.ClusterNetworkPolicy{
		clusterPolicy("api", cnp.AdminTier, 1, "default", nil, []cnp.ClusterNetworkPolicyEgressRule{{Action: accept,
			To: []cnp.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnp.DomainName{"api.example.com", "*.example.org"}}}}}),
		clusterPolicy("wall", cnp.BaselineTier, 1, "default", nil, []cnp.ClusterNetworkPolicyEgressRule{{Action: deny,
			To: []cnp.ClusterNetworkPolicyEgressPeer{{Networks: []cnp.CIDR{"0.0.0.0/0"}}}}}),
	}
}

func setElems(t *testing.T, nft *knftables.Fake, set string) []string {
	t.Helper()
	elems, err := nft.ListElements(context.Background(), "set", set)
	if err != nil {
		t.Fatalf("set %s: %v", set, err)
	}
	var out []string
	for _, e := range elems {
		out = append(out, strings.Join(e.Key, " . "))
	}
	slices.Sort(out)
	return out
}

// The learner puts answered addresses of watched names into the sets,
// drops them after their TTL, keeps them across a whole-table rewrite and
// gives a set created later the addresses still valid.
func TestDomainLearnerFollowsAnswers(t *testing.T) {
	ctx := context.Background()
	nft := knftables.NewFake(knftables.InetFamily, TableName)
	l := NewDomainLearner(nft)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	in := testInput()
	in.ClusterPolicies = domainPolicies()
	rs := Compile(in)
	if len(rs.Domains) != 2 {
		t.Fatalf("domain sets %v, want one per family", rs.Domains)
	}
	set4 := ""
	for name, s := range rs.Domains {
		if s.Family == "ip" {
			set4 = name
		}
	}
	write := func(rs, old *Ruleset) {
		t.Helper()
		tx := nft.NewTransaction()
		if old == nil || !WriteDiff(tx, old, rs) {
			tx = nft.NewTransaction()
			Write(tx, rs)
		}
		if err := l.Apply(ctx, tx, rs, old); err != nil {
			t.Fatal(err)
		}
	}
	write(rs, nil)
	l.Observe(ctx, answer("api.example.com.", "api.example.com. 30 IN A 203.0.113.20"))
	l.Observe(ctx, answer("www.example.org.", "www.example.org. 0 IN A 203.0.113.30"))
	l.Observe(ctx, answer("evil.example.net.", "evil.example.net. 30 IN A 203.0.113.66"))
	if got := setElems(t, nft, set4); !slices.Equal(got, []string{"203.0.113.20", "203.0.113.30"}) {
		t.Fatalf("set after answers: %v", got)
	}
	write(rs, nil) // a whole rewrite keeps them
	if got := setElems(t, nft, set4); len(got) != 2 {
		t.Fatalf("set after a full write: %v", got)
	}
	now = now.Add(10 * time.Second) // past the TTL-0 answer's floor (5 s)
	l.mu.Lock()
	l.expire()
	_ = l.reconcile(ctx)
	l.mu.Unlock()
	if got := setElems(t, nft, set4); !slices.Equal(got, []string{"203.0.113.20"}) {
		t.Fatalf("set after 10 s: %v", got)
	}
	// A new policy for a name already answered: its set starts with it.
	in.ClusterPolicies = append(in.ClusterPolicies, clusterPolicy("api-only", cnp.AdminTier, 2, "default", nil,
		[]cnp.ClusterNetworkPolicyEgressRule{{Action: accept, To: []cnp.ClusterNetworkPolicyEgressPeer{{DomainNames: []cnp.DomainName{"API.example.com."}}}}}))
	rs2 := Compile(in)
	write(rs2, rs)
	for name, s := range rs2.Domains {
		if s.Family == "ip" && name != set4 {
			if got := setElems(t, nft, name); !slices.Equal(got, []string{"203.0.113.20"}) {
				t.Errorf("new set %s: %v", name, got)
			}
		}
	}
	now = now.Add(time.Minute)
	l.mu.Lock()
	l.expire()
	_ = l.reconcile(ctx)
	l.mu.Unlock()
	if got := setElems(t, nft, set4); len(got) != 0 {
		t.Errorf("set after the TTL: %v", got)
	}
}

// With a learned address in the set, the pod reaches it and nothing else;
// another namespace is not the subject.
func TestDomainRuleJudgesByLearnedAddresses(t *testing.T) {
	in := testInput()
	in.ClusterPolicies = domainPolicies()
	rs := Compile(in)
	for name, s := range rs.Domains {
		if s.Family == "ip" {
			rs.Sets[name].Elems = [][]string{{"203.0.113.20"}}
		}
	}
	tr := tracer{t: t, rs: rs}
	for _, c := range []struct {
		p    packet
		want bool
	}{
		{tcpTo(ipA, "203.0.113.20", 443), true},
		{tcpTo(ipA, "203.0.113.66", 443), false},
		{tcpTo(ipY, "203.0.113.66", 443), true}, // other/y: no policy
	} {
		if got := tr.trace(c.p).accept; got != c.want {
			t.Errorf("%s → %s: allowed=%v, want %v", c.p.src, c.p.dst, got, c.want)
		}
	}
	var marked bool
	for _, ch := range rs.Chains {
		for _, r := range ch.Rules {
			if r.MarkDomain && strings.Contains(r.Text(), "ct mark set") {
				marked = true
			}
		}
	}
	if !marked {
		t.Error("no domain rule marks the connections it accepts")
	}
}
