package agent

import (
	"net"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
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
