package proxy

import (
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/testutil"
)

// policyTopo adds to newTopo a second server (10.244.1.3, "on another
// node") and an outside client 203.0.113.7.
func policyTopo(t *testing.T) (topo, ns.NetNS, ns.NetNS) {
	tp := newTopo(t)
	server2, outside := testutil.NewNetNS(t), testutil.NewNetNS(t)
	n, s2, o := filepath.Base(tp.node.Path()), filepath.Base(server2.Path()), filepath.Base(outside.Path())
	for _, cmd := range [][]string{
		{"ip", "-n", n, "link", "add", "vs2", "type", "veth", "peer", "name", "eth0", "netns", s2},
		{"ip", "-n", n, "link", "add", "vo", "type", "veth", "peer", "name", "eth0", "netns", o},
		{"ip", "-n", n, "link", "set", "vs2", "up"},
		{"ip", "-n", n, "link", "set", "vo", "up"},
		{"ip", "-n", n, "route", "add", "10.244.1.3/32", "dev", "vs2"},
		{"ip", "-n", n, "addr", "add", "203.0.113.1/24", "dev", "vo"},
		{"ip", "-n", s2, "addr", "add", "10.244.1.3/32", "dev", "eth0"},
		{"ip", "-n", s2, "link", "set", "eth0", "up"},
		{"ip", "-n", s2, "route", "add", "10.244.1.1", "dev", "eth0"},
		{"ip", "-n", s2, "route", "add", "default", "via", "10.244.1.1"},
		{"ip", "-n", o, "addr", "add", "203.0.113.7/24", "dev", "eth0"},
		{"ip", "-n", o, "link", "set", "eth0", "up"},
		{"ip", "-n", o, "route", "add", "default", "via", "203.0.113.1"},
	} {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", cmd, err, out)
		}
	}
	return tp, server2, outside
}

func twoEndpointSlice(svc string) *discoveryv1.EndpointSlice {
	s := slice(svc, "10.244.1.2", 8080, true)
	s.Endpoints[0].NodeName = ptr.To("n1")
	s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.1.3"}, NodeName: ptr.To("n2"),
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	return s
}

// backendOf returns which server answered: the servers reply with the
// client address they saw, so each listens on its own IP and we ask who.
func whoAnswers(t *testing.T, from ns.NetNS, addr string) string {
	t.Helper()
	var local string
	err := from.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 64)
		n, err := c.Read(b)
		local = strings.TrimSpace(string(b[:n]))
		return err
	})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return local
}

// serveName answers every connection with name (if any) and the client address.
func serveName(t *testing.T, n ns.NetNS, addr, name string) {
	var ln net.Listener
	if err := n.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			if name != "" {
				host = name + " " + host
			}
			io.WriteString(c, host+"\n")
			c.Close()
		}
	}()
}

func TestPrivilegedSessionAffinity(t *testing.T) {
	tp, server2, _ := policyTopo(t)
	serveName(t, tp.server, "10.244.1.2:8080", "A")
	serveName(t, server2, "10.244.1.3:8080", "B")
	svc := service("sticky", "10.96.0.60", 80, 0)
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	svc.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
	h := startProxy(t, tp, svc, twoEndpointSlice("sticky"))
	first := whoAnswers(t, tp.client, "10.96.0.60:80")
	for i := 0; i < 15; i++ {
		if i == 7 {
			h.sync() // a resync keeps the affinity state
		}
		if got := whoAnswers(t, tp.client, "10.96.0.60:80"); got != first {
			t.Fatalf("connection %d went to %q, first went to %q", i, got, first)
		}
	}
}

func TestPrivilegedExternalTrafficPolicyLocal(t *testing.T) {
	tp, server2, outside := policyTopo(t)
	serveName(t, tp.server, "10.244.1.2:8080", "A")
	serveName(t, server2, "10.244.1.3:8080", "B")
	svc := service("local", "10.96.0.61", 80, 30061)
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	startProxy(t, tp, svc, twoEndpointSlice("local"))
	// From outside: only the endpoint on this node (n1 = A), with the
	// client's own address.
	for i := 0; i < 10; i++ {
		if got := whoAnswers(t, outside, "198.18.100.1:30061"); got != "A 203.0.113.7" {
			t.Fatalf("NodePort with externalTrafficPolicy Local: %q, want A with the client IP kept", got)
		}
	}
	// Internal traffic still uses every endpoint.
	seen := map[string]bool{}
	for i := 0; i < 30 && len(seen) < 2; i++ {
		seen[whoAnswers(t, tp.client, "10.96.0.61:80")[:1]] = true
	}
	if len(seen) != 2 {
		t.Fatalf("ClusterIP reached only %v", seen)
	}
}

func TestPrivilegedServiceRange(t *testing.T) {
	tp, _, _ := policyTopo(t)
	serve(t, tp.server, "10.244.1.2:8080")
	startProxy(t, tp, service("web", "10.96.0.50", 80, 0), slice("web", "10.244.1.2", 8080, true))
	// A ClusterIP on a port it does not serve: refused.
	if _, err := dial(tp.client, "10.96.0.50:81"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("unknown port of a ClusterIP: %v, want refused", err)
	}
	// An unallocated IP in the service range: dropped (times out).
	if _, err := dial(tp.client, "10.96.0.99:80"); err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("unallocated service IP: %v, want a timeout", err)
	}
}
