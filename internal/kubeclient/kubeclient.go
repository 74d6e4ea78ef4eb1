// Package kubeclient makes the API client every weft component uses.
package kubeclient

import (
	"context"
	"net"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	npaclient "sigs.k8s.io/network-policy-api/pkg/client/clientset/versioned"
)

// New returns a client from kubeconfig (empty: in-cluster) that waits out
// an API server restart instead of failing (see DialPatiently).
func New(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// NewDynamic returns a dynamic client (for weft's own resources) made as
// New makes its client.
func NewDynamic(kubeconfig string) (dynamic.Interface, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return dynamic.NewForConfig(cfg)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 50, 100
	cfg.Dial = DialPatiently(500 * time.Millisecond)
	return cfg, nil
}

// DialPatiently returns a dial function that, while the API server cannot
// be reached (restarting, or a control-plane outage), tries again every
// retry until the request's context ends, instead of failing at once.
// client-go's informers back off for up to a minute after failed lists, so
// failing dials would leave the datapath that long behind once the API
// server is back; a waiting dial goes through the moment it returns.
func DialPatiently(retry time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		for {
			c, err := d.DialContext(ctx, network, addr)
			if err == nil || ctx.Err() != nil {
				return c, err
			}
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(retry):
			}
		}
	}
}

// NewPolicyAPI returns a client of sigs.k8s.io/network-policy-api's
// resources (ClusterNetworkPolicy).
func NewPolicyAPI(kubeconfig string) (npaclient.Interface, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return npaclient.NewForConfig(cfg)
}

// NewGatewayAPI returns a client of sigs.k8s.io/gateway-api's resources.
func NewGatewayAPI(kubeconfig string) (gwclient.Interface, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	return gwclient.NewForConfig(cfg)
}
