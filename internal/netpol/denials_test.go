package netpol

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestParsePacketRejectsMalformed(t *testing.T) {
	for _, b := range [][]byte{nil, {0x45}, {0x4f, 0, 0, 0}, make([]byte, 19), {0x60, 1, 2}, {0x30, 0, 0, 0}} {
		var d Denied
		if parsePacket(b, &d) {
			t.Errorf("% x parsed as %+v", b, d)
		}
	}
	// An IPv4 header with IHL 5 and the first bytes of TCP.
	pkt := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 244, 2, 10, 10, 244, 1, 10, 0x9c, 0x40, 0x1f, 0x90}
	var d Denied
	if !parsePacket(pkt, &d) || d.Proto != "tcp" || d.Src.String() != "10.244.2.10:40000" || d.Dst.String() != "10.244.1.10:8080" {
		t.Fatalf("parsed %+v", d)
	}
}

// One line a second per pod after a burst of five; the lines after say
// how many were left out.
func TestDenialLinesAreRateLimitedPerPod(t *testing.T) {
	var buf bytes.Buffer
	d := newDenials(slog.New(slog.NewTextHandler(&buf, nil)))
	a, c := netip.MustParseAddr(ipA), netip.MustParseAddr(ipC)
	v := view{pods: map[netip.Addr]string{a: "default/a", c: "default/c"},
		judged: map[netip.Addr]judgedBy{a: {ingress: []string{"default/deny"}}}}
	for i := 0; i < 50; i++ {
		d.report(v, Denied{Direction: "ingress", Proto: "tcp", Src: netip.AddrPortFrom(c, 40000), Dst: netip.AddrPortFrom(a, 80)})
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 5 || len(lines) > 6 {
		t.Fatalf("%d lines for 50 denials in a burst:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{"direction=ingress", "srcPod=default/c", "dstPod=default/a", "policies=[default/deny]", "dst=10.244.1.10:80"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("line lacks %q: %s", want, lines[0])
		}
	}
}

// A cluster policy's denial says its tier and policy, in the line and in
// the metric's labels.
func TestDenialLineNamesTheClusterPolicy(t *testing.T) {
	var buf bytes.Buffer
	d := newDenials(slog.New(slog.NewTextHandler(&buf, nil)))
	a, c := netip.MustParseAddr(ipA), netip.MustParseAddr(ipC)
	v := view{pods: map[netip.Addr]string{a: "default/a", c: "default/c"}, judged: map[netip.Addr]judgedBy{}}
	dir, tier, pol := splitPrefix(DenyLogPrefix("egress", "admin", "no-metadata"))
	d.report(v, Denied{Direction: dir, Tier: tier, Policy: pol, Proto: "tcp", Src: netip.AddrPortFrom(a, 40000), Dst: netip.AddrPortFrom(c, 80)})
	for _, want := range []string{"denied by ClusterNetworkPolicy", "direction=egress", "tier=admin", "policy=no-metadata", "srcPod=default/a"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("line lacks %q: %s", want, buf.String())
		}
	}
	if n := testutil.ToFloat64(d.counter.WithLabelValues("default", "egress", "admin", "no-metadata")); n != 1 {
		t.Errorf("metric for admin/no-metadata = %v, want 1", n)
	}
}
