package main

import (
	"fmt"
	"net"
	"sync"
	"time"

	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/miekg/dns"
)

// checker asks a server every name in turn for as long as a load run lasts
// and checks each answer against the Service's ClusterIP: dnsperf counts
// rcodes but never looks at the records, so a server answering fast with a
// wrong or empty record would otherwise count as fast.
type checker struct {
	server string
	netns  string            // the server's network namespace: the host has no route into the lab
	want   map[string]net.IP // FQDN → ClusterIP
	names  []string

	mu             sync.Mutex
	checked, wrong int
	firstWrong     string
	dialErr        error
}

func newChecker(netns, server string, want map[string]net.IP) *checker {
	c := &checker{server: server, netns: netns, want: want}
	for n := range want {
		c.names = append(c.names, n)
	}
	return c
}

// during runs load and checks answers until load returns.
func (c *checker) during(load func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	conn, err := c.dial()
	if err != nil {
		c.mu.Lock()
		c.dialErr = err
		c.mu.Unlock()
		load()
		return
	}
	defer conn.Close()
	go func() {
		defer close(done)
		// 500 checks a second: every name several times per run, at a
		// load too small to take from either server's figures.
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			name := c.names[i%len(c.names)]
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			_ = conn.SetDeadline(time.Now().Add(time.Second))
			if err := conn.WriteMsg(m); err != nil {
				continue
			}
			r, err := conn.ReadMsg()
			if err != nil || r.Id != m.Id {
				continue // a lost query under load is not a wrong answer; dnsperf counts those
			}
			c.record(name, verdict(r, c.want[name]))
		}
	}()
	load()
	close(stop)
	<-done
}

// dial opens a UDP socket inside the server's namespace; it stays there.
func (c *checker) dial() (*dns.Conn, error) {
	target, err := cnins.GetNS(c.netns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	var conn net.Conn
	err = target.Do(func(cnins.NetNS) error {
		conn, err = net.Dial("udp", c.server)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &dns.Conn{Conn: conn}, nil
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
	case c.dialErr != nil:
		return fmt.Errorf("%s: checker: %v", c.server, c.dialErr)
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
