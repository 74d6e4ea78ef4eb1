package dns

import (
	"context"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func service(ns, name, clusterIP string, ports ...corev1.ServicePort) *corev1.Service {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: clusterIP, Ports: ports}}
	if clusterIP != corev1.ClusterIPNone && clusterIP != "" {
		s.Spec.ClusterIPs = []string{clusterIP}
	}
	return s
}

type ep struct {
	ip, hostname string
	ready        bool
}

func slice(ns, svc string, port *discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-x",
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}}, AddressType: discoveryv1.AddressTypeIPv4}
	if port != nil {
		es.Ports = []discoveryv1.EndpointPort{*port}
	}
	for _, e := range eps {
		x := discoveryv1.Endpoint{Addresses: []string{e.ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready)}}
		if e.hostname != "" {
			x.Hostname = ptr.To(e.hostname)
		}
		es.Endpoints = append(es.Endpoints, x)
	}
	return es
}

// fakeUpstream is a resolver on loopback answering from a table.
type fakeUpstream struct {
	addr    string
	queries atomic.Int32
	conns   atomic.Int32 // TCP connections accepted
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startUpstream(t *testing.T, answer func(q dns.Question, m *dns.Msg)) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		f.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		answer(r.Question[0], m)
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(o.UDPSize(), false)
		}
		if w.LocalAddr().Network() == "udp" {
			size := dns.MinMsgSize
			if o := r.IsEdns0(); o != nil {
				size = int(o.UDPSize())
			}
			m.Truncate(size)
		}
		_ = w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	l = countingListener{Listener: l, n: &f.conns}
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: l, Handler: h}} {
		go func() { _ = s.ActivateAndServe() }()
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	f.addr = pc.LocalAddr().String()
	return f
}

func outsideAnswers(q dns.Question, m *dns.Msg) {
	switch strings.ToLower(q.Name) {
	case "www.example.org.":
		if q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP("203.0.113.10").To4()})
		}
	case "big.example.org.":
		for i := 0; i < 40; i++ {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{strings.Repeat("x", 60)}})
		}
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.org.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60}, Ns: "ns.example.org.", Mbox: "h.example.org.", Minttl: 30}}
	}
}

func testObjects() ([]*corev1.Service, []*discoveryv1.EndpointSlice, []*corev1.Pod) {
	svcs := []*corev1.Service{
		service("default", "kubernetes", "10.96.0.1", corev1.ServicePort{Name: "https", Protocol: corev1.ProtocolTCP, Port: 443}),
		service("web", "front", "10.96.5.5", corev1.ServicePort{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}, corev1.ServicePort{Protocol: corev1.ProtocolUDP, Port: 53}),
		service("web", "db", corev1.ClusterIPNone, corev1.ServicePort{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}),
		service("web", "warm", corev1.ClusterIPNone),
		{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "www.example.org"}},
	}
	svcs[3].Spec.PublishNotReadyAddresses = true
	pg := &discoveryv1.EndpointPort{Name: ptr.To("pg"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](5432)}
	slices := []*discoveryv1.EndpointSlice{
		slice("web", "db", pg, ep{"10.244.1.5", "db-0", true}, ep{"10.244.2.6", "", true}, ep{"10.244.3.7", "db-2", false}),
		slice("web", "warm", nil, ep{"10.244.1.9", "", false}),
		slice("web", "front", nil, ep{"10.244.1.20", "", true}), // not headless: not published
	}
	pods := []*corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.20", PodIPs: []corev1.PodIP{{IP: "10.244.1.20"}}}}}
	return svcs, slices, pods
}

func testHandler(t *testing.T) (*Handler, *fakeUpstream) {
	up := startUpstream(t, outsideAnswers)
	svcs, slices, pods := testObjects()
	h := &Handler{Zone: "cluster.local", Forward: &Forwarder{Upstreams: []string{up.addr}}, Cache: NewCache(1<<20, 0), Server: "test"}
	h.SetSnapshot(NewSnapshot(Config{Zone: "cluster.local", TTL: 30, NameserverIP: net.ParseIP("10.96.0.10")}, svcs, slices, newPodList(pods)))
	return h, up
}

func query(t *testing.T, h *Handler, name string, qtype uint16) *dns.Msg {
	t.Helper()
	req := new(dns.Msg)
	req.SetQuestion(name, qtype)
	return h.Respond(context.Background(), req, false)
}

// rdata renders the answer section as sorted "TYPE value" strings.
func rdata(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		s := rr.String()
		f := strings.Fields(s)
		out = append(out, strings.Join(f[3:], " "))
	}
	sort.Strings(out)
	return out
}

func TestSpecRecords(t *testing.T) {
	h, _ := testHandler(t)
	cases := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string
		extra  []string
		soa    bool // SOA expected in the authority section
	}{
		// 2.3.1 / 2.4.1: A records of ClusterIP services; names are case-insensitive.
		{"kubernetes.default.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.1"}, nil, false},
		{"KUBERNETES.Default.SVC.Cluster.Local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.96.0.1"}, nil, false},
		{"front.web.svc.cluster.local.", dns.TypeAAAA, dns.RcodeSuccess, nil, nil, true}, // exists, no IPv6: no data
		{"nope.web.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
		{"web.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, nil, nil, true}, // empty non-terminal
		{"svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, nil, nil, true},
		// SRV for named ports, ClusterIP (target = service) and headless (target = endpoint).
		{"_http._tcp.front.web.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 0 100 80 front.web.svc.cluster.local."}, []string{"A 10.96.5.5"}, false},
		{"_https._tcp.kubernetes.default.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess, []string{"SRV 0 100 443 kubernetes.default.svc.cluster.local."}, []string{"A 10.96.0.1"}, false},
		{"_pg._tcp.db.web.svc.cluster.local.", dns.TypeSRV, dns.RcodeSuccess,
			[]string{"SRV 0 50 5432 10-244-2-6.db.web.svc.cluster.local.", "SRV 0 50 5432 db-0.db.web.svc.cluster.local."}, []string{"A 10.244.1.5", "A 10.244.2.6"}, false},
		{"_pg._udp.db.web.svc.cluster.local.", dns.TypeSRV, dns.RcodeNameError, nil, nil, true},
		// Headless: ready endpoints only, unless publishNotReadyAddresses.
		{"db.web.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.5", "A 10.244.2.6"}, nil, false},
		{"db-0.db.web.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.5"}, nil, false},
		{"10-244-2-6.db.web.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.2.6"}, nil, false},
		{"db-2.db.web.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
		{"warm.web.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.9"}, nil, false},
		// PTR: service IPs and headless endpoints.
		{"1.0.96.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"PTR kubernetes.default.svc.cluster.local."}, nil, false},
		{"5.1.244.10.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"PTR db-0.db.web.svc.cluster.local."}, nil, false},
		// ExternalName: CNAME, chased to the upstream's address.
		{"ext.web.svc.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 203.0.113.10", "CNAME www.example.org."}, nil, false},
		{"ext.web.svc.cluster.local.", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME www.example.org."}, nil, false},
		// Schema version.
		{"dns-version.cluster.local.", dns.TypeTXT, dns.RcodeSuccess, []string{`TXT "1.1.0"`}, nil, false},
		// Pod records exist only for real pods.
		{"10-244-1-20.web.pod.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.20"}, nil, false},
		{"10-244-1-21.web.pod.cluster.local.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
		{"10-244-1-20.other.pod.cluster.local.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
		{"10-244-1-20.WEB.pod.cluster.local.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.244.1.20"}, nil, false},
		{"010-244-1-20.web.pod.cluster.local.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
		{"x.10-244-1-20.web.pod.cluster.local.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
		{"web.pod.cluster.local.", dns.TypeA, dns.RcodeSuccess, nil, nil, true}, // exists, no records
		{"other.pod.cluster.local.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
		// Apex.
		{"cluster.local.", dns.TypeSOA, dns.RcodeSuccess, []string{"SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"}, nil, false},
		{"cluster.local.", dns.TypeNS, dns.RcodeSuccess, []string{"NS ns.dns.cluster.local."}, []string{"A 10.96.0.10"}, false},
		// A search-path miss is answered here, never forwarded.
		{"www.example.org.web.svc.cluster.local.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
		// Outside names are forwarded.
		{"www.example.org.", dns.TypeA, dns.RcodeSuccess, []string{"A 203.0.113.10"}, nil, false},
		{"missing.example.org.", dns.TypeA, dns.RcodeNameError, nil, nil, true},
	}
	for _, c := range cases {
		m := query(t, h, c.name, c.qtype)
		if m.Rcode != c.rcode {
			t.Errorf("%s %s: rcode %s, want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
			continue
		}
		if got := rdata(m.Answer); strings.Join(got, "|") != strings.Join(c.answer, "|") {
			t.Errorf("%s %s: answer %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.answer)
		}
		if c.extra != nil {
			if got := rdata(m.Extra); strings.Join(got, "|") != strings.Join(c.extra, "|") {
				t.Errorf("%s: extra %q, want %q", c.name, got, c.extra)
			}
		}
		hasSOA := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA
		if c.soa != hasSOA {
			t.Errorf("%s: SOA in authority %v, want %v (%v)", c.name, hasSOA, c.soa, m.Ns)
		}
		if m.Question[0].Name != c.name {
			t.Errorf("question not echoed as asked: %s", m.Question[0].Name)
		}
		for _, rr := range m.Answer {
			if rr.Header().Rrtype != dns.TypeCNAME && strings.HasSuffix(c.name, "cluster.local.") && strings.HasPrefix(c.name, "ext.") {
				continue // chased records carry the target's name
			}
			if rr.Header().Name != c.name {
				t.Errorf("%s: owner %s does not keep the asker's case", c.name, rr.Header().Name)
			}
		}
	}
}

func TestAuthoritativeAndTTL(t *testing.T) {
	h, _ := testHandler(t)
	m := query(t, h, "front.web.svc.cluster.local.", dns.TypeA)
	if !m.Authoritative || !m.RecursionAvailable || m.Answer[0].Header().Ttl != 30 {
		t.Fatalf("aa=%v ra=%v ttl=%d", m.Authoritative, m.RecursionAvailable, m.Answer[0].Header().Ttl)
	}
	if m = query(t, h, "www.example.org.", dns.TypeA); m.Authoritative {
		t.Fatal("forwarded answer marked authoritative")
	}
}

func TestServfailBeforeFirstSync(t *testing.T) {
	up := startUpstream(t, outsideAnswers)
	h := &Handler{Zone: "cluster.local", Forward: &Forwarder{Upstreams: []string{up.addr}}}
	if m := query(t, h, "kubernetes.default.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s before sync", dns.RcodeToString[m.Rcode])
	}
	if h.Synced() {
		t.Fatal("Synced before a snapshot")
	}
	if m := query(t, h, "www.example.org.", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("outside names must still resolve before sync: %s", dns.RcodeToString[m.Rcode])
	}
}

func TestForwardCacheAndNegativeCache(t *testing.T) {
	h, up := testHandler(t)
	for i := 0; i < 3; i++ {
		query(t, h, "www.example.org.", dns.TypeA)
		query(t, h, "WWW.example.org.", dns.TypeA) // same cache entry
		query(t, h, "missing.example.org.", dns.TypeA)
	}
	if n := up.queries.Load(); n != 2 {
		t.Fatalf("upstream saw %d queries, want 2 (one positive, one negative, the rest cached)", n)
	}
}

func TestTruncationAndEDNS(t *testing.T) {
	h, _ := testHandler(t)
	// No EDNS: 512 bytes; the 40 TXT records do not fit.
	m := query(t, h, "big.example.org.", dns.TypeTXT)
	if !m.Truncated || m.Len() > dns.MinMsgSize {
		t.Fatalf("plain UDP: tc=%v len=%d", m.Truncated, m.Len())
	}
	// EDNS0 with 4096: capped at 1232 bytes (an amplifier otherwise), our
	// OPT in the reply.
	req := new(dns.Msg)
	req.SetQuestion("big.example.org.", dns.TypeTXT)
	req.SetEdns0(4096, false)
	m = h.Respond(context.Background(), req, false)
	if !m.Truncated || m.Len() > DefaultMaxUDPSize || m.IsEdns0() == nil || m.IsEdns0().UDPSize() != DefaultMaxUDPSize {
		t.Fatalf("EDNS 4096: tc=%v len=%d opt=%v", m.Truncated, m.Len(), m.IsEdns0())
	}
	// A server configured for bigger replies gives what the client offers.
	h.MaxUDPSize = 4096
	m = h.Respond(context.Background(), req, false)
	if m.Truncated || len(m.Answer) != 40 {
		t.Fatalf("EDNS 4096 with MaxUDPSize 4096: tc=%v answers=%d", m.Truncated, len(m.Answer))
	}
	h.MaxUDPSize = 0
	// TCP: everything.
	req = new(dns.Msg)
	req.SetQuestion("big.example.org.", dns.TypeTXT)
	if m = h.Respond(context.Background(), req, true); m.Truncated || len(m.Answer) != 40 {
		t.Fatalf("TCP: tc=%v answers=%d", m.Truncated, len(m.Answer))
	}
}

func TestMalformedRequests(t *testing.T) {
	h, _ := testHandler(t)
	req := new(dns.Msg)
	req.SetQuestion("a.cluster.local.", dns.TypeA)
	req.Opcode = dns.OpcodeUpdate
	if m := h.Respond(context.Background(), req, false); m.Rcode != dns.RcodeNotImplemented {
		t.Errorf("UPDATE: %s", dns.RcodeToString[m.Rcode])
	}
	req = new(dns.Msg)
	req.SetQuestion("a.cluster.local.", dns.TypeA)
	req.Question = append(req.Question, req.Question[0])
	if m := h.Respond(context.Background(), req, false); m.Rcode != dns.RcodeFormatError {
		t.Errorf("two questions: %s", dns.RcodeToString[m.Rcode])
	}
	req = new(dns.Msg)
	req.SetQuestion("a.cluster.local.", dns.TypeA)
	req.SetEdns0(1232, false)
	req.IsEdns0().SetVersion(1)
	m := h.Respond(context.Background(), req, false)
	if b, err := m.Pack(); err != nil {
		t.Fatal(err)
	} else if err := m.Unpack(b); err != nil || m.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: %s %v", dns.RcodeToString[m.Rcode], err)
	}
	req = new(dns.Msg)
	req.SetQuestion("version.bind.", dns.TypeTXT)
	req.Question[0].Qclass = dns.ClassCHAOS
	if m := h.Respond(context.Background(), req, false); m.Rcode != dns.RcodeRefused {
		t.Errorf("CHAOS: %s", dns.RcodeToString[m.Rcode])
	}
}

func TestStaleServedWhenUpstreamDown(t *testing.T) {
	up := startUpstream(t, outsideAnswers)
	h := &Handler{Forward: &Forwarder{Upstreams: []string{up.addr}, TCPOnly: true}, Cache: NewCache(1<<20, 0)}
	h.Cache.Stale = 1 << 62
	now := new(time_)
	h.Cache.Now = now.get
	if m := query(t, h, "www.example.org.", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Fatal(dns.RcodeToString[m.Rcode])
	}
	h.Forward.Upstreams = []string{"127.0.0.1:1"} // nothing listens there
	now.add(3600)                                 // far past the 60 s TTL
	m := query(t, h, "www.example.org.", dns.TypeA)
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].Header().Ttl != 30 {
		t.Fatalf("stale answer: %v", m)
	}
	if m := query(t, h, "other.example.org.", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("uncached name with upstream down: %s", dns.RcodeToString[m.Rcode])
	}
}
