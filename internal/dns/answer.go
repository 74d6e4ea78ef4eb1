package dns

import (
	"net"
	"strings"

	"github.com/miekg/dns"
)

// Result is the snapshot's answer to one question.
type Result struct {
	Rcode  int
	Answer []dns.RR
	Ns     []dns.RR
	Extra  []dns.RR
	// Chase is set when the answer ends in a CNAME (ExternalName): the
	// caller resolves the target and appends its records, as clients expect
	// addresses, not only the alias.
	Chase string
	// Static: the answer depends on the snapshot alone (a name of its
	// own, no pod looked up at query time, no alias to chase), so the
	// same question gets the same answer while the snapshot stands.
	Static bool
}

// Resolve answers q from the snapshot. ours is false when the name is not
// ours to answer (outside the zone, or a reverse name we hold no record
// for): the caller forwards it.
func (s *Snapshot) Resolve(q dns.Question) (res Result, ours bool) {
	name := strings.ToLower(q.Name)
	r, found := s.names[name]
	res.Static = found
	if !found {
		r, found = s.podName(name)
	}
	if !s.InZone(name) {
		if !found || !strings.HasSuffix(name, ".arpa.") {
			return Result{}, false
		}
	}
	if !found {
		// No such name, unless a pod takes it (pod names are looked up
		// at query time).
		return Result{Rcode: dns.RcodeNameError, Ns: []dns.RR{s.soaRR()}, Static: !s.podSpace(name)}, true
	}
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: s.ttl}
	}
	if r.cname != "" {
		res.Answer = []dns.RR{&dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: r.cname}}
		if q.Qtype != dns.TypeCNAME {
			res.Chase, res.Static = r.cname, false
		}
		return res, true
	}
	want := func(t uint16) bool { return q.Qtype == t || q.Qtype == dns.TypeANY }
	if want(dns.TypeA) {
		for _, ip := range r.a {
			res.Answer = append(res.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: ip})
		}
	}
	if want(dns.TypeAAAA) {
		for _, ip := range r.aaaa {
			res.Answer = append(res.Answer, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip})
		}
	}
	if want(dns.TypeSRV) {
		for _, t := range r.srv {
			res.Answer = append(res.Answer, &dns.SRV{Hdr: hdr(dns.TypeSRV), Priority: t.priority, Weight: t.weight, Port: t.port, Target: t.target})
			res.Extra = append(res.Extra, s.addresses(t.target)...)
		}
	}
	if want(dns.TypePTR) {
		for _, t := range r.ptr {
			res.Answer = append(res.Answer, &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: t})
		}
	}
	if want(dns.TypeTXT) && len(r.txt) > 0 {
		res.Answer = append(res.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: r.txt})
	}
	if name == s.zone {
		if want(dns.TypeSOA) {
			soa := s.soaRR()
			soa.Header().Name = q.Name
			res.Answer = append(res.Answer, soa)
		}
		if want(dns.TypeNS) {
			res.Answer = append(res.Answer, &dns.NS{Hdr: hdr(dns.TypeNS), Ns: s.soa.Ns})
			res.Extra = append(res.Extra, s.addresses(s.soa.Ns)...)
		}
	}
	if len(res.Answer) == 0 {
		// The name exists without records of this type: NOERROR, no data.
		res.Ns = []dns.RR{s.soaRR()}
	}
	return res, true
}

// addresses returns A/AAAA records of a name we own, for additional sections.
func (s *Snapshot) addresses(name string) []dns.RR {
	r, ok := s.names[strings.ToLower(name)]
	if !ok {
		return nil
	}
	var out []dns.RR
	for _, ip := range r.a {
		out = append(out, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: s.ttl}, A: ip})
	}
	for _, ip := range r.aaaa {
		out = append(out, &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: s.ttl}, AAAA: net.IP(ip)})
	}
	return out
}

func (s *Snapshot) soaRR() dns.RR { return dns.Copy(s.soa) }
