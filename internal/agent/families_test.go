package agent

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestServiceFamilies(t *testing.T) {
	cidr := func(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }
	for _, c := range []struct {
		in   []*net.IPNet
		want []corev1.IPFamily
	}{
		{nil, []corev1.IPFamily{corev1.IPv4Protocol}},
		{[]*net.IPNet{cidr("10.96.0.0/16")}, []corev1.IPFamily{corev1.IPv4Protocol}},
		{[]*net.IPNet{cidr("fd00:10:96::/112")}, []corev1.IPFamily{corev1.IPv6Protocol}},
		{[]*net.IPNet{cidr("fd00:10:96::/112"), cidr("10.96.0.0/16"), cidr("fd00:11::/112")},
			[]corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}},
	} {
		if got := serviceFamilies(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v: %v, want %v", c.in, got, c.want)
		}
	}
}

// Pod to node is never masqueraded: both InternalIPs of a dual-stack
// node are exempt, not only the first.
func TestNodeAddressesBothFamilies(t *testing.T) {
	n := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: "198.18.1.11"},
		{Type: corev1.NodeInternalIP, Address: "fd00:198:18:1::11"},
		{Type: corev1.NodeHostName, Address: "weft-node-1"}}}}
	v4only := &corev1.Node{Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "198.18.1.12"}}}}
	got := fmt.Sprint(nodeAddresses([]*corev1.Node{n, v4only}))
	if want := "[198.18.1.11/32 fd00:198:18:1::11/128 198.18.1.12/32]"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestPodAddressesInCIDRs(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Spec: corev1.NodeSpec{PodCIDRs: []string{"10.244.5.0/24", "fd00:10:244:5::/64"}}}
	ok := []netip.Addr{netip.MustParseAddr("10.244.5.7"), netip.MustParseAddr("fd00:10:244:5::7")}
	if err := podAddressesInCIDRs(ok, node); err != nil {
		t.Errorf("in CIDRs: %v", err)
	}
	// From the podCIDR the node had before it was registered again.
	if err := podAddressesInCIDRs([]netip.Addr{netip.MustParseAddr("10.244.4.11")}, node); err == nil {
		t.Error("a stale address was accepted")
	}
	if err := podAddressesInCIDRs(ok, &corev1.Node{}); err != nil {
		t.Errorf("no podCIDR yet must not block: %v", err)
	}
}
