package testserver

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// ScanResult lists the addresses that answered a TCP connection attempt.
type ScanResult struct {
	Rounds  int      `json:"rounds"`
	Reached []string `json:"reached"`
}

// Scan connects to port on every address of cidr, round after round, for
// dur: a prober that reaches a pod from the moment its address exists,
// whatever address that turns out to be.
func Scan(cidr string, port int, dur, timeout time.Duration) (ScanResult, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return ScanResult{}, err
	}
	if p.Addr().BitLen()-p.Bits() > 12 {
		return ScanResult{}, fmt.Errorf("%s: at most 4096 addresses", cidr)
	}
	var addrs []netip.Addr
	for a := p.Masked().Addr(); p.Contains(a); a = a.Next() {
		addrs = append(addrs, a)
	}
	var mu sync.Mutex
	reached := map[string]bool{}
	res := ScanResult{}
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		res.Rounds++
		work := make(chan netip.Addr)
		var wg sync.WaitGroup
		for w := 0; w < min(len(addrs), 256); w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for a := range work {
					c, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, uint16(port)).String(), timeout)
					if err == nil {
						c.Close()
					}
					// A refused connection reached the address too: its
					// kernel answered before any server listened.
					if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
						mu.Lock()
						reached[a.String()] = true
						mu.Unlock()
					}
				}
			}()
		}
		for _, a := range addrs {
			work <- a
		}
		close(work)
		wg.Wait()
	}
	for a := range reached {
		res.Reached = append(res.Reached, a)
	}
	return res, nil
}

// HoldResult says how long one TCP connection kept echoing.
type HoldResult struct {
	Echoes int    `json:"echoes"`
	Cut    bool   `json:"cut"`
	After  string `json:"after,omitempty"` // when the first echo failed
}

// Hold opens one TCP connection to an echo server and sends a line every
// interval for dur, reporting whether and when an echo stopped coming.
func Hold(addr string, dur, every time.Duration) (HoldResult, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return HoldResult{}, err
	}
	defer c.Close()
	r := bufio.NewReader(c)
	start := time.Now()
	var res HoldResult
	for time.Since(start) < dur {
		_ = c.SetDeadline(time.Now().Add(every + 500*time.Millisecond))
		if _, err := fmt.Fprintf(c, "ping %d\n", res.Echoes); err == nil {
			_, err = r.ReadString('\n')
			if err == nil {
				res.Echoes++
				time.Sleep(every)
				continue
			}
		}
		res.Cut, res.After = true, time.Since(start).Round(time.Millisecond).String()
		return res, nil
	}
	return res, nil
}

// WatchResult is when a connection attempt first had the state watched for.
type WatchResult struct {
	At    int64 `json:"at"` // Unix nanoseconds: when that attempt began
	Tries int   `json:"tries"`
}

// Watch connects to addr every interval until an attempt succeeds (want
// open) or fails (want blocked), for at most dur. A blocked attempt is one
// that does not connect within timeout.
func Watch(addr string, wantOpen bool, dur, every, timeout time.Duration) (WatchResult, error) {
	end := time.Now().Add(dur)
	var res WatchResult
	for time.Now().Before(end) {
		res.Tries++
		start := time.Now()
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			c.Close()
		}
		if (err == nil) == wantOpen {
			res.At = start.UnixNano()
			return res, nil
		}
		time.Sleep(every)
	}
	return res, fmt.Errorf("%s not %s after %d tries in %s", addr, map[bool]string{true: "open", false: "blocked"}[wantOpen], res.Tries, dur)
}
