package testserver

import (
	"fmt"
	"io"
	"net"
	"sort"
	"time"
)

// RRResult summarises a TCP request/response run.
type RRResult struct {
	Count int           `json:"count"`
	P50   time.Duration `json:"p50"`
	P99   time.Duration `json:"p99"`
	Mean  time.Duration `json:"mean"`
}

// TCPRR sends count small requests, one at a time, over one connection to
// a TCP echo server and times each round trip (like netperf TCP_RR).
func TCPRR(addr string, count, size int) (RRResult, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return RRResult{}, err
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	req := make([]byte, size)
	resp := make([]byte, size)
	lat := make([]time.Duration, 0, count)
	var total time.Duration
	for i := 0; i < count; i++ {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		if _, err := c.Write(req); err != nil {
			return RRResult{}, err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return RRResult{}, err
		}
		d := time.Since(start)
		lat = append(lat, d)
		total += d
	}
	if count == 0 {
		return RRResult{}, fmt.Errorf("count must be > 0")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return RRResult{Count: count, P50: lat[count/2], P99: lat[(count*99)/100], Mean: total / time.Duration(count)}, nil
}
