package dns

import (
	"net"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// PodLookup answers pod names at query time, so that pods coming, going
// and changing phase never rebuild the zone: <dashed-ip>.<ns>.pod.<zone>
// exists while a pod of ns that is not finished holds the IP, and
// <ns>.pod.<zone> (an empty non-terminal) while any does.
type PodLookup interface {
	HasPodIP(namespace string, ip net.IP) bool
	HasPods(namespace string) bool
}

// Index names of the pod informer that PodIndex reads.
const (
	podIPIndex        = "weft-dns-pod-ip"        // namespace/ip of live pods
	podNamespaceIndex = "weft-dns-pod-namespace" // namespace of live pods with an IP
)

// PodIndexers are the indexes NewPodIndex needs on the pod informer.
func PodIndexers() cache.Indexers {
	return cache.Indexers{
		podIPIndex: func(obj any) ([]string, error) {
			p, ok := obj.(*corev1.Pod)
			if !ok {
				return nil, nil
			}
			var keys []string
			for _, ip := range livePodIPs(p) {
				keys = append(keys, p.Namespace+"/"+ip.String())
			}
			return keys, nil
		},
		podNamespaceIndex: func(obj any) ([]string, error) {
			if p, ok := obj.(*corev1.Pod); ok && len(livePodIPs(p)) > 0 {
				return []string{p.Namespace}, nil
			}
			return nil, nil
		},
	}
}

// livePodIPs are the IPs a pod's records publish: none once it finished.
func livePodIPs(p *corev1.Pod) []net.IP {
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return nil
	}
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	var out []net.IP
	for _, pi := range ips {
		if ip := net.ParseIP(pi.IP); ip != nil {
			out = append(out, ip)
		}
	}
	return out
}

// PodIndex is a PodLookup over an informer's indexer (see PodIndexers).
type PodIndex struct{ Indexer cache.Indexer }

func (x PodIndex) HasPodIP(namespace string, ip net.IP) bool {
	objs, err := x.Indexer.ByIndex(podIPIndex, namespace+"/"+ip.String())
	return err == nil && len(objs) > 0
}

func (x PodIndex) HasPods(namespace string) bool {
	keys, err := x.Indexer.IndexKeys(podNamespaceIndex, namespace)
	return err == nil && len(keys) > 0
}

// podList is a PodLookup over a fixed list (tests, and callers without an
// informer).
type podList map[string]bool

func newPodList(pods []*corev1.Pod) podList {
	l := podList{}
	for _, p := range pods {
		for _, ip := range livePodIPs(p) {
			l[p.Namespace+"/"+ip.String()] = true
			l[p.Namespace] = true
		}
	}
	return l
}

func (l podList) HasPodIP(namespace string, ip net.IP) bool { return l[namespace+"/"+ip.String()] }
func (l podList) HasPods(namespace string) bool             { return l[namespace] }

// podName says whether name (lower case, under pod.<zone>) exists and, for
// a pod address name, its address record.
// podSpace: name is under pod.<zone>, where pods come and go without a
// new snapshot.
func (s *Snapshot) podSpace(name string) bool {
	return strings.HasSuffix(name, ".pod."+s.zone)
}

func (s *Snapshot) podName(name string) (*rrset, bool) {
	if s.pods == nil {
		return nil, false
	}
	rest, ok := strings.CutSuffix(name, ".pod."+s.zone)
	if !ok || rest == "" {
		return nil, false
	}
	label, ns, hasIP := strings.Cut(rest, ".")
	if !hasIP {
		return &rrset{}, s.pods.HasPods(label)
	}
	if strings.Contains(ns, ".") {
		return nil, false
	}
	ip := undashed(label)
	if ip == nil || dashed(ip) != label || !s.pods.HasPodIP(ns, ip) {
		return nil, false
	}
	r := &rrset{}
	s.addIP(r, ip)
	return r, true
}

// undashed reads the address of a pod name's first label ("10-244-1-5",
// "fd00-10-244--5"); nil if it is none.
func undashed(label string) net.IP {
	if strings.Count(label, "-") == 3 {
		if ip := net.ParseIP(strings.ReplaceAll(label, "-", ".")); ip != nil && ip.To4() != nil {
			return ip
		}
	}
	return net.ParseIP(strings.ReplaceAll(label, "-", ":"))
}
