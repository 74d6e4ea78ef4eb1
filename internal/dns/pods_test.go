package dns

import (
	"net"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// Pod names follow the pod informer's index at query time: a pod that
// gets its IP, finishes or goes away changes the answer without a new
// snapshot.
func TestPodNamesFollowTheIndexWithoutRebuild(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, PodIndexers())
	snap := NewSnapshot(Config{Zone: "cluster.local", TTL: 30}, nil, nil, PodIndex{Indexer: idx})
	ask := func(name string) int {
		res, ours := snap.Resolve(dns.Question{Name: name, Qtype: dns.TypeA, Qclass: dns.ClassINET})
		if !ours {
			t.Fatalf("%s: not ours", name)
		}
		return res.Rcode
	}
	const v4, v6, ns = "10-244-1-7.web.pod.cluster.local.", "fd00-10-244-1--7.web.pod.cluster.local.", "web.pod.cluster.local."
	if ask(v4) != dns.RcodeNameError || ask(ns) != dns.RcodeNameError {
		t.Fatal("names exist before the pod")
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	_ = idx.Add(pod)
	if ask(ns) != dns.RcodeNameError {
		t.Fatal("a pod without an IP made its namespace exist")
	}
	running := pod.DeepCopy()
	running.Status.Phase = corev1.PodRunning
	running.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.7"}, {IP: "fd00:10:244:1::7"}}
	_ = idx.Update(running)
	for _, name := range []string{v4, v6, ns} {
		if rc := ask(name); rc != dns.RcodeSuccess {
			t.Errorf("%s: rcode %d once the pod runs", name, rc)
		}
	}
	res, _ := snap.Resolve(dns.Question{Name: v6, Qtype: dns.TypeAAAA, Qclass: dns.ClassINET})
	if len(res.Answer) != 1 || !res.Answer[0].(*dns.AAAA).AAAA.Equal(net.ParseIP("fd00:10:244:1::7")) {
		t.Errorf("AAAA: %v", res.Answer)
	}
	done := running.DeepCopy()
	done.Status.Phase = corev1.PodSucceeded
	_ = idx.Update(done)
	if ask(v4) != dns.RcodeNameError || ask(ns) != dns.RcodeNameError {
		t.Error("a finished pod still has names")
	}
}
