package kubelet

import (
	"context"
	"log/slog"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A Node registered by someone else (the lab registers the control plane
// with kubeadm's role label and taint) keeps what it has and gains the
// lab node's own labels.
func TestRegisterNodeMergesLabelsIntoExistingNode(t *testing.T) {
	existing := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "cp", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "node-role.kubernetes.io/control-plane", Effect: corev1.TaintEffectNoSchedule}}},
	}
	client := fake.NewClientset(existing)
	k := New(Config{NodeName: "cp", NodeIP: net.ParseIP("198.18.1.10"), Labels: map[string]string{"topology.kubernetes.io/zone": "rack-a"}},
		client, slog.New(slog.DiscardHandler))
	if err := k.registerNode(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := client.CoreV1().Nodes().Get(context.Background(), "cp", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"node-role.kubernetes.io/control-plane": "", "topology.kubernetes.io/zone": "rack-a", "kubernetes.io/hostname": "cp"} {
		if v, ok := got.Labels[key]; !ok || v != want {
			t.Errorf("label %s = %q (present %v), want %q", key, v, ok, want)
		}
	}
	if len(got.Spec.Taints) != 1 {
		t.Errorf("taints %v, want the registrar's one", got.Spec.Taints)
	}
	if len(got.Status.Addresses) == 0 || got.Status.Addresses[0].Address != "198.18.1.10" {
		t.Errorf("status not written: %+v", got.Status.Addresses)
	}
}
