package proxy

import (
	"bytes"
	"testing"

	"github.com/google/nftables/expr"
)

// The kernel's encoding of concatenations: every field padded to 4 bytes;
// a single field is not padded.
func TestEncodeConcat(t *testing.T) {
	for _, c := range []struct {
		types, vals []string
		want        []byte
	}{
		{[]string{"ipv4_addr"}, []string{"10.96.0.1"}, []byte{10, 96, 0, 1}},
		{[]string{"inet_service"}, []string{"53"}, []byte{0, 53}},
		{[]string{"ipv4_addr", "inet_proto", "inet_service"}, []string{"10.96.0.1", "udp", "53"},
			[]byte{10, 96, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0}},
		{[]string{"inet_proto", "inet_service"}, []string{"sctp", "30080"}, []byte{132, 0, 0, 0, 0x75, 0x80, 0, 0}},
		{[]string{"ipv4_addr", "inet_service"}, []string{"10.244.1.2", "8080"}, []byte{10, 244, 1, 2, 0x1f, 0x90, 0, 0}},
		{[]string{"ipv6_addr", "inet_proto", "inet_service"}, []string{"fd00:96::a", "tcp", "80"},
			[]byte{0xfd, 0, 0, 0x96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa, 6, 0, 0, 0, 0, 80, 0, 0}},
	} {
		got, err := encodeConcat(c.types, c.vals)
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%v %v: %v %v, want %v", c.types, c.vals, got, err, c.want)
		}
	}
	for _, c := range []struct{ types, vals []string }{
		{[]string{"ipv4_addr"}, []string{"fd00::1"}},
		{[]string{"ipv4_addr"}, []string{"nonsense"}},
		{[]string{"ipv6_addr"}, []string{"10.0.0.1"}},
		{[]string{"ipv6_addr"}, []string{"fd00::zz"}},
		{[]string{"inet_service"}, []string{"70000"}},
		{[]string{"inet_proto"}, []string{"icmpx"}},
		{[]string{"ipv4_addr", "inet_service"}, []string{"10.0.0.1"}},
		{[]string{"ether_addr"}, []string{"00:11:22:33:44:55"}},
	} {
		if _, err := encodeConcat(c.types, c.vals); err == nil {
			t.Errorf("%v %v: no error", c.types, c.vals)
		}
	}
}

func TestEncodeVerdict(t *testing.T) {
	v, err := encodeVerdict([]string{"goto dnat-ip-3"})
	if err != nil || v.Kind != expr.VerdictGoto || v.Chain != "dnat-ip-3" {
		t.Fatalf("goto: %+v %v", v, err)
	}
	if v, err := encodeVerdict([]string{"drop"}); err != nil || v.Kind != expr.VerdictDrop || v.Chain != "" {
		t.Fatalf("drop: %+v %v", v, err)
	}
	for _, bad := range [][]string{{}, {"goto"}, {"drop x"}, {"continue"}, {"jump a b"}} {
		if _, err := encodeVerdict(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
