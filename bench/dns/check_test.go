package main

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

func TestVerdictRefusesWrongAnswers(t *testing.T) {
	want := net.ParseIP("10.96.0.12")
	answer := func(rcode int, ips ...string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("svc-1.bench-dns.svc.cluster.local.", dns.TypeA)
		m.Rcode = rcode
		for _, ip := range ips {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: m.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(ip)})
		}
		return m
	}
	if v := verdict(answer(dns.RcodeSuccess, "10.96.0.12"), want); v != "" {
		t.Errorf("right answer refused: %s", v)
	}
	for name, m := range map[string]*dns.Msg{
		"SERVFAIL":    answer(dns.RcodeServerFailure),
		"NXDOMAIN":    answer(dns.RcodeNameError),
		"empty":       answer(dns.RcodeSuccess),
		"other IP":    answer(dns.RcodeSuccess, "10.96.0.13"),
		"two records": answer(dns.RcodeSuccess, "10.96.0.12", "10.96.0.13"),
	} {
		if verdict(m, want) == "" {
			t.Errorf("%s accepted", name)
		}
	}
}

func TestCorrectQPSCountsOnlyNoerror(t *testing.T) {
	out := []byte(`Statistics:

  Queries sent:         1000000
  Queries completed:    1000000 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 600000 (60.00%), SERVFAIL 400000 (40.00%)
  Average packet size:  request 48, response 102
  Run time (s):         10.000000
  Queries per second:   100000.000000
`)
	if f := correctQPS(out, nil); !f.OK() || f.Value != 60000 {
		t.Errorf("got %+v, want 60000", f)
	}
	servfail := []byte("  Response codes:       SERVFAIL 1000000 (100.00%)\n  Run time (s):         10.000000\n  Queries per second:   100000.000000\n")
	if f := correctQPS(servfail, nil); f.OK() {
		t.Errorf("all SERVFAIL gave %+v", f)
	}
}
