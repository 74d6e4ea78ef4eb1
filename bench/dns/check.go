package main

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// checker asks a server every name in turn for as long as a load run lasts
// and checks each answer against the Service's ClusterIP: dnsperf counts
// rcodes but never looks at the records, so a server answering fast with a
// wrong or empty record would otherwise count as fast.
type checker struct {
	server string
	want   map[string]net.IP // FQDN → ClusterIP
	names  []string

	mu             sync.Mutex
	checked, wrong int
	firstWrong     string
}

func newChecker(server string, want map[string]net.IP) *checker {
	c := &checker{server: server, want: want}
	for n := range want {
		c.names = append(c.names, n)
	}
	return c
}

// during runs load and checks answers until load returns.
func (c *checker) during(load func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl := &dns.Client{Net: "udp", Timeout: time.Second}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := c.names[i%len(c.names)]
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			r, _, err := cl.Exchange(m, c.server)
			if err != nil {
				continue // a lost query under load is not a wrong answer; dnsperf counts those
			}
			c.record(name, verdict(r, c.want[name]))
		}
	}()
	load()
	close(stop)
	<-done
}

func (c *checker) record(name, problem string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checked++
	if problem != "" {
		c.wrong++
		if c.firstWrong == "" {
			c.firstWrong = name + ": " + problem
		}
	}
}

// err says whether every checked answer was right, and that some were.
func (c *checker) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.checked == 0:
		return fmt.Errorf("%s: no answer could be checked", c.server)
	case c.wrong > 0:
		return fmt.Errorf("%s: %d of %d checked answers wrong (first: %s)", c.server, c.wrong, c.checked, c.firstWrong)
	}
	return nil
}

// verdict is "" for a right answer: NOERROR with exactly the one A record
// of the Service's ClusterIP.
func verdict(r *dns.Msg, want net.IP) string {
	if r.Rcode != dns.RcodeSuccess {
		return "rcode " + dns.RcodeToString[r.Rcode]
	}
	var got []net.IP
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			got = append(got, a.A)
		}
	}
	if len(got) != 1 || !got[0].Equal(want) {
		return fmt.Sprintf("A records %v, want %v", got, want)
	}
	return ""
}
