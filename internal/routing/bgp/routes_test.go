package bgp

import (
	"io"
	"log/slog"
	"net/netip"
	"testing"
)

type fakeKernel struct {
	routes map[netip.Prefix]netip.Addr
	writes int
}

func (k *fakeKernel) Replace(p netip.Prefix, nh netip.Addr) error {
	k.routes[p] = nh
	k.writes++
	return nil
}
func (k *fakeKernel) Delete(p netip.Prefix) error { delete(k.routes, p); k.writes++; return nil }
func (k *fakeKernel) List() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for p := range k.routes {
		out = append(out, p)
	}
	return out, nil
}

var (
	pfxA = netip.MustParsePrefix("10.244.2.0/24")
	pfxB = netip.MustParsePrefix("10.244.3.0/24")
	own  = netip.MustParsePrefix("10.244.1.0/24")
	nh1  = netip.MustParseAddr("198.18.1.12")
	nh2  = netip.MustParseAddr("198.18.1.1")
)

// Learned routes go in, move with their next hop, leave when withdrawn;
// a route over the node's own pod CIDR never goes in; routes found at
// start (a restart) stay while keepStale, then go if nobody announced
// them again.
func TestRouteTableApply(t *testing.T) {
	tbl := NewRouteTable(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	k := &fakeKernel{routes: map[netip.Prefix]netip.Addr{pfxB: {}}}
	have := map[netip.Prefix]netip.Addr{pfxB: {}} // as Run finds a stale route
	reserved := []netip.Prefix{own}

	tbl.apply(k, have, map[netip.Prefix]netip.Addr{pfxA: nh1, own: nh2}, reserved, true)
	if k.routes[pfxA] != nh1 || len(k.routes) != 2 {
		t.Fatalf("after first pass: %v", k.routes)
	}
	if _, ok := k.routes[own]; ok {
		t.Fatal("a peer's route over the node's own pod CIDR was installed")
	}
	// Idle pass: no writes.
	w := k.writes
	tbl.apply(k, have, map[netip.Prefix]netip.Addr{pfxA: nh1}, reserved, true)
	if k.writes != w {
		t.Errorf("an unchanged table wrote %d times", k.writes-w)
	}
	// Next hop moves; the stale route is swept once keepStale ends.
	tbl.apply(k, have, map[netip.Prefix]netip.Addr{pfxA: nh2}, reserved, false)
	if k.routes[pfxA] != nh2 {
		t.Errorf("next hop not moved: %v", k.routes)
	}
	if _, ok := k.routes[pfxB]; ok {
		t.Error("stale route kept after the resync")
	}
	// Withdrawn.
	tbl.apply(k, have, map[netip.Prefix]netip.Addr{}, reserved, false)
	if len(k.routes) != 0 {
		t.Errorf("withdrawn routes left: %v", k.routes)
	}
}

// A route the kernel lost (its link went down) is installed again.
func TestRouteTableRepairsLostRoutes(t *testing.T) {
	tbl := NewRouteTable(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	k := &fakeKernel{routes: map[netip.Prefix]netip.Addr{}}
	have := map[netip.Prefix]netip.Addr{}
	want := map[netip.Prefix]netip.Addr{pfxA: nh1}
	tbl.apply(k, have, want, nil, false)
	delete(k.routes, pfxA) // the kernel dropped it
	forgetMissing(k, have)
	tbl.apply(k, have, map[netip.Prefix]netip.Addr{pfxA: nh1}, nil, false)
	if k.routes[pfxA] != nh1 {
		t.Fatalf("lost route not installed again: %v", k.routes)
	}
}
