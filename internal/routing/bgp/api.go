// Package bgp is the agent's BGP backend: GoBGP in process speaks to the
// other nodes (full mesh or route reflectors) and to external routers,
// announces this node's pod CIDRs and service addresses, and installs the
// routes it learns with netlink. The planning (who to peer with, what to
// announce, which learned routes to install) is pure and lives in plan.go
// and announce.go; speaker.go drives GoBGP and kernel.go writes routes.
package bgp

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The API group of weft's BGP resources (CRDs in internal/manifests).
const (
	Group   = "bgp.weft.dev"
	Version = "v1alpha1"
)

// Resources of the group.
var (
	ConfigurationResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "bgpconfigurations"}
	PeerResource          = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "bgppeers"}
)

// DefaultConfigurationName is the one BGPConfiguration the agents read.
const DefaultConfigurationName = "default"

// Defaults used when no BGPConfiguration exists or a field is unset.
const (
	DefaultASN                 = 64512
	DefaultGracefulRestartTime = 120 // seconds a peer keeps our routes while we restart
	DefaultHoldTime            = 90
	DefaultKeepalive           = 30
)

// Configuration is the spec of the cluster's BGPConfiguration "default".
type Configuration struct {
	// ASN of every node (one private AS for the cluster, as Calico does).
	ASN uint32 `json:"asn,omitempty"`
	// NodeToNodeMesh: every node peers with every other (default true).
	// Ignored when RouteReflectorSelector is set.
	NodeToNodeMesh *bool `json:"nodeToNodeMesh,omitempty"`
	// RouteReflectorSelector chooses the nodes that act as route
	// reflectors: they peer with every node, the others only with them.
	RouteReflectorSelector *metav1.LabelSelector `json:"routeReflectorSelector,omitempty"`
	// NodeBFD turns on BFD between nodes (mesh and reflector sessions).
	NodeBFD *BFD `json:"nodeBFD,omitempty"`
	// GracefulRestartSeconds is how long peers keep this node's routes
	// while its agent restarts (RFC 4724); 0 means the default.
	GracefulRestartSeconds uint32 `json:"gracefulRestartSeconds,omitempty"`
	// AnnounceClusterIPs adds the Services' cluster IPs to what each node
	// announces.
	AnnounceClusterIPs bool `json:"announceClusterIPs,omitempty"`
	// ServiceExternalIPs and ServiceLoadBalancerIPs are the CIDRs whose
	// service addresses are announced; an address outside them is not.
	ServiceExternalIPs     []string `json:"serviceExternalIPs,omitempty"`
	ServiceLoadBalancerIPs []string `json:"serviceLoadBalancerIPs,omitempty"`
}

// ServiceAddresses returns the ranges of service addresses to announce;
// invalid CIDRs were refused by Validate.
func (c Configuration) ServiceAddresses() ServiceAddresses {
	parse := func(in []string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range in {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked())
			}
		}
		return out
	}
	return ServiceAddresses{ExternalIPs: parse(c.ServiceExternalIPs), LoadBalancerIPs: parse(c.ServiceLoadBalancerIPs), AnnounceCluster: c.AnnounceClusterIPs}
}

// BFD tunes bidirectional forwarding detection (RFC 5880) for sessions.
type BFD struct {
	// Interval between packets sent and expected, in milliseconds.
	IntervalMs uint32 `json:"intervalMs,omitempty"`
	// Multiplier: missed packets before the session is down.
	Multiplier uint32 `json:"multiplier,omitempty"`
}

// PeerSpec is an external BGP peer (a top-of-rack router, say) for the
// nodes its selector matches.
type PeerSpec struct {
	PeerAddress  string                `json:"peerAddress"`
	PeerASN      uint32                `json:"peerASN"`
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	// PasswordSecretRef names a key of a Secret in weft's namespace that
	// holds the TCP MD5 password of the session.
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
	HoldTimeSeconds   uint32        `json:"holdTimeSeconds,omitempty"`
	KeepaliveSeconds  uint32        `json:"keepaliveSeconds,omitempty"`
	BFD               *BFD          `json:"bfd,omitempty"`
}

// SecretKeyRef points at one key of a Secret in weft's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// Peer is a BGPPeer object as the agent reads it.
type Peer struct {
	Name string
	Spec PeerSpec
}

// DecodeConfiguration reads a BGPConfiguration object's spec.
func DecodeConfiguration(u *unstructured.Unstructured) (Configuration, error) {
	var c Configuration
	spec, _, _ := unstructured.NestedMap(u.Object, "spec")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &c); err != nil {
		return Configuration{}, fmt.Errorf("BGPConfiguration %s: %w", u.GetName(), err)
	}
	return c, nil
}

// DecodePeer reads a BGPPeer object.
func DecodePeer(u *unstructured.Unstructured) (Peer, error) {
	p := Peer{Name: u.GetName()}
	spec, _, _ := unstructured.NestedMap(u.Object, "spec")
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(spec, &p.Spec); err != nil {
		return p, fmt.Errorf("BGPPeer %s: %w", u.GetName(), err)
	}
	return p, nil
}

// Validate says what is wrong with a peer, or nil. Reserved ASNs and
// addresses that no router can have are refused.
func (s PeerSpec) Validate() error {
	a, err := netip.ParseAddr(s.PeerAddress)
	if err != nil {
		return fmt.Errorf("peerAddress %q is not an IP address", s.PeerAddress)
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
		return fmt.Errorf("peerAddress %s cannot be a BGP peer", a)
	}
	if err := validASN(s.PeerASN); err != nil {
		return fmt.Errorf("peerASN: %w", err)
	}
	if s.NodeSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(s.NodeSelector); err != nil {
			return fmt.Errorf("nodeSelector: %w", err)
		}
	}
	if s.HoldTimeSeconds != 0 && s.HoldTimeSeconds < 3 {
		return fmt.Errorf("holdTimeSeconds %d: 0 (default) or at least 3 (RFC 4271)", s.HoldTimeSeconds)
	}
	if s.KeepaliveSeconds != 0 && s.HoldTimeSeconds != 0 && s.KeepaliveSeconds*3 > s.HoldTimeSeconds {
		return fmt.Errorf("keepaliveSeconds %d: at most a third of holdTimeSeconds %d", s.KeepaliveSeconds, s.HoldTimeSeconds)
	}
	if s.PasswordSecretRef != nil && (s.PasswordSecretRef.Name == "" || s.PasswordSecretRef.Key == "") {
		return fmt.Errorf("passwordSecretRef needs name and key")
	}
	return s.BFD.validate()
}

// Validate says what is wrong with the cluster configuration, or nil.
func (c Configuration) Validate() error {
	if c.ASN != 0 {
		if err := validASN(c.ASN); err != nil {
			return fmt.Errorf("asn: %w", err)
		}
	}
	if c.RouteReflectorSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(c.RouteReflectorSelector); err != nil {
			return fmt.Errorf("routeReflectorSelector: %w", err)
		}
	}
	for _, list := range [][]string{c.ServiceExternalIPs, c.ServiceLoadBalancerIPs} {
		for _, cidr := range list {
			p, err := netip.ParsePrefix(cidr)
			if err != nil {
				return fmt.Errorf("service address range %q is not a CIDR", cidr)
			}
			if p.Bits() == 0 {
				return fmt.Errorf("service address range %s would announce every address", cidr)
			}
		}
	}
	return c.NodeBFD.validate()
}

func (b *BFD) validate() error {
	if b == nil {
		return nil
	}
	if b.IntervalMs != 0 && (b.IntervalMs < 10 || b.IntervalMs > 60000) {
		return fmt.Errorf("bfd.intervalMs %d: between 10 and 60000", b.IntervalMs)
	}
	if b.Multiplier > 255 {
		return fmt.Errorf("bfd.multiplier %d: at most 255", b.Multiplier)
	}
	return nil
}

// validASN refuses AS 0 and AS_TRANS (RFC 6793), which no speaker may use.
func validASN(asn uint32) error {
	if asn == 0 || asn == 23456 {
		return fmt.Errorf("%d is reserved", asn)
	}
	return nil
}

// selects reports whether a selector (nil: everything) matches labels.
func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	if sel == nil {
		return true
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(labels.Set(l))
}
