// Package peers creates peer Node objects for benchmarks.
package peers

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/routing"
)

// Create makes n Node objects named bench-peer-NNNN with what a weft peer
// publishes (InternalIP, a /27 podCIDR, VTEP annotations) and nothing behind
// them: API objects for benchmarks at cluster scale.
func Create(ctx context.Context, client kubernetes.Interface, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			// /27s from 10.244.128.0/17, clear of the lab nodes' /24s.
			cidr := fmt.Sprintf("10.244.%d.%d/27", 128+i/8, i%8*32)
			vtep := fmt.Sprintf("10.244.%d.%d", 128+i/8, i%8*32)
			nd := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-peer-%04d", i),
				Annotations: map[string]string{routing.AnnotationVTEPMAC: fmt.Sprintf("02:bb:00:00:%02x:%02x", i>>8, i&0xff), routing.AnnotationVTEPIP: vtep}},
				Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}}}
			if _, err := client.CoreV1().Nodes().Create(ctx, nd, metav1.CreateOptions{}); err != nil {
				errs <- err
				return
			}
			// Underlay addresses no namespace has: nothing is ever sent
			// there. A patch, as controllers edit new Nodes at once.
			patch := fmt.Sprintf(`{"status":{"addresses":[{"type":"InternalIP","address":"198.18.%d.%d"}]}}`, 10+i/250, 1+i%250)
			if _, err := client.CoreV1().Nodes().Patch(ctx, nd.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
