package testserver

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// OutsideZone is the zone the test DNS server answers for: the lab's
// stand-in for the internet's names (the outside namespace is the cluster
// DNS's upstream).
const OutsideZone = "outside.test."

// dnsHandler answers a fixed zone: www (A 203.0.113.10 by default: the
// outside namespace), alias (CNAME www), big (TXT records too large for
// 512-byte UDP, to exercise truncation and TCP fallback); other names
// NXDOMAIN with the SOA, names outside the zone REFUSED. Names in
// recordsFile are answered from it.
func dnsHandler(wwwIP net.IP, recordsFile string) dns.HandlerFunc {
	soa := &dns.SOA{Hdr: dns.RR_Header{Name: OutsideZone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + OutsideZone, Mbox: "hostmaster." + OutsideZone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 30}
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		if len(r.Question) != 1 {
			m.SetRcodeFormatError(r)
			_ = w.WriteMsg(m)
			return
		}
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		hdr := func(t uint16) dns.RR_Header {
			return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
		}
		fileTTL, fileIPs := fileRecords(recordsFile, name)
		switch {
		case !strings.HasSuffix(name, "."+OutsideZone) && name != OutsideZone:
			m.Rcode = dns.RcodeRefused
			m.Authoritative = false
		case fileIPs != nil:
			for _, ip := range fileIPs {
				if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
					m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: fileTTL}, A: ip})
				}
			}
		case name == "www."+OutsideZone:
			if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: wwwIP.To4()})
			}
		case name == "alias."+OutsideZone:
			m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: "www." + OutsideZone})
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "www." + OutsideZone, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: wwwIP.To4()})
			}
		case name == "big."+OutsideZone:
			if q.Qtype == dns.TypeTXT || q.Qtype == dns.TypeANY {
				for i := 0; i < 30; i++ {
					m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: []string{fmt.Sprintf("%02d-%s", i, strings.Repeat("x", 60))}})
				}
			}
		case name == OutsideZone && q.Qtype == dns.TypeSOA:
			m.Answer = append(m.Answer, soa)
		default:
			m.Rcode = dns.RcodeNameError
		}
		if len(m.Answer) == 0 && m.Rcode != dns.RcodeRefused {
			m.Ns = append(m.Ns, soa)
		}
		size := dns.MinMsgSize
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(1232, false)
			size = max(size, int(o.UDPSize()))
		}
		if w.LocalAddr().Network() == "udp" {
			m.Truncate(size)
		}
		_ = w.WriteMsg(m)
	}
}

// fileRecords looks name up in the records file: lines of
// "name ttl address..." (IPv4); nil when the file or the name is not there.
func fileRecords(file, name string) (uint32, []net.IP) {
	if file == "" {
		return 0, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !strings.EqualFold(dns.Fqdn(f[0]), name) {
			continue
		}
		ttl, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			continue
		}
		var ips []net.IP
		for _, a := range f[2:] {
			if ip := net.ParseIP(a).To4(); ip != nil {
				ips = append(ips, ip)
			}
		}
		return uint32(ttl), ips
	}
	return 0, nil
}
