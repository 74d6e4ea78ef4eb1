package fastpath

import (
	"errors"
	"testing"
	"time"
)

// TCP is carried only while conntrack is liberal; each protocol keeps
// conntrack's own timeout; generation 0 or unreadable settings carry nothing.
func TestStampOf(t *testing.T) {
	node := func(liberal string) func(string) (string, error) {
		return func(name string) (string, error) {
			v, ok := map[string]string{"nf_conntrack_tcp_be_liberal": liberal, "nf_conntrack_tcp_timeout_established": "86400",
				"nf_conntrack_udp_timeout_stream": "120"}[name]
			if !ok || v == "" {
				return "", errors.New("no such file")
			}
			return v, nil
		}
	}
	for _, c := range []struct {
		name    string
		gen     uint32
		liberal string
		want    Stamp
	}{
		{"liberal", 7, "1", Stamp{Gen: 7, TCPTimeout: 24 * time.Hour, UDPTimeout: 2 * time.Minute}},
		{"strict", 7, "0", Stamp{Gen: 7, UDPTimeout: 2 * time.Minute}},
		{"conntrack not loaded", 7, "", Stamp{Gen: 7, UDPTimeout: 2 * time.Minute}},
		{"no table", 0, "1", Stamp{}},
	} {
		if got := StampOf(c.gen, node(c.liberal)); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
	if got := StampOf(7, func(string) (string, error) { return "", errors.New("no") }); got != (Stamp{Gen: 7}) {
		t.Errorf("unreadable settings: %+v", got)
	}
}
