package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"weft.dev/weft/internal/lab/container"
)

// writePodFiles writes resolv.conf, hosts and hostname (they need the pod IPs).
func (k *Kubelet) writePodFiles(ctx context.Context, pod *corev1.Pod, pr *podRuntime) error {
	if err := os.WriteFile(filepath.Join(pr.dir, "resolv.conf"), []byte(k.resolvConf(pod)), 0o644); err != nil {
		return err
	}
	hostname := podHostname(pod)
	fqdn := ""
	if pod.Spec.Subdomain != "" {
		fqdn = fmt.Sprintf("%s.%s.%s.svc.%s", hostname, pod.Spec.Subdomain, pod.Namespace, k.cfg.ClusterDomain)
	}
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	for _, ip := range pr.ips {
		if fqdn != "" {
			fmt.Fprintf(&hosts, "%s\t%s\t%s\n", ip, fqdn, hostname)
		} else {
			fmt.Fprintf(&hosts, "%s\t%s\n", ip, hostname)
		}
	}
	for _, ha := range pod.Spec.HostAliases {
		fmt.Fprintf(&hosts, "%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
	}
	if err := os.WriteFile(filepath.Join(pr.dir, "hosts"), []byte(hosts.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pr.dir, "hostname"), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	return nil
}

func podHostname(pod *corev1.Pod) string {
	if pod.Spec.Hostname != "" {
		return pod.Spec.Hostname
	}
	if len(pod.Name) > 63 {
		return strings.TrimRight(pod.Name[:63], "-.")
	}
	return pod.Name
}

// resolvConf follows the pod's dnsPolicy, as the kubelet does.
func (k *Kubelet) resolvConf(pod *corev1.Pod) string {
	policy := pod.Spec.DNSPolicy
	if policy == "" {
		policy = corev1.DNSClusterFirst
	}
	var servers, searches, options []string
	clusterSearch := []string{pod.Namespace + ".svc." + k.cfg.ClusterDomain, "svc." + k.cfg.ClusterDomain, k.cfg.ClusterDomain}
	switch {
	case policy == corev1.DNSNone:
	case policy == corev1.DNSDefault || (policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork):
		servers = hostNameservers()
	default: // ClusterFirst, ClusterFirstWithHostNet
		servers = []string{k.cfg.ClusterDNS}
		searches = clusterSearch
		options = []string{"ndots:5"}
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		servers = append(servers, dc.Nameservers...)
		searches = append(searches, dc.Searches...)
		for _, o := range dc.Options {
			if o.Value != nil {
				options = mergeOption(options, o.Name+":"+*o.Value)
			} else {
				options = mergeOption(options, o.Name)
			}
		}
	}
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.String()
}

func mergeOption(opts []string, o string) []string {
	name := strings.SplitN(o, ":", 2)[0]
	for i, x := range opts {
		if strings.SplitN(x, ":", 2)[0] == name {
			opts[i] = o
			return opts
		}
	}
	return append(opts, o)
}

// hostNameservers are the lab's "node" resolvers: the outside namespace's
// DNS server, never the machine's own.
func hostNameservers() []string { return []string{"203.0.113.10"} }

func (k *Kubelet) volumeDir(pr *podRuntime, name string) string {
	return filepath.Join(pr.dir, "volumes", name)
}

func (k *Kubelet) writeVolume(ctx context.Context, pod *corev1.Pod, pr *podRuntime, v corev1.Volume) error {
	dir := k.volumeDir(pr, v.Name)
	switch {
	case v.EmptyDir != nil:
		return os.MkdirAll(dir, 0o777)
	case v.HostPath != nil:
		return k.prepareHostPath(v.HostPath)
	case v.ConfigMap != nil:
		cm, err := k.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			if ptr.Deref(v.ConfigMap.Optional, false) {
				return os.MkdirAll(dir, 0o755)
			}
			return err
		}
		data := map[string][]byte{}
		for key, val := range cm.Data {
			data[key] = []byte(val)
		}
		for key, val := range cm.BinaryData {
			data[key] = val
		}
		return writeKeys(dir, data, v.ConfigMap.Items, v.ConfigMap.DefaultMode)
	case v.Secret != nil:
		s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
		if err != nil {
			if ptr.Deref(v.Secret.Optional, false) {
				return os.MkdirAll(dir, 0o755)
			}
			return err
		}
		return writeKeys(dir, s.Data, v.Secret.Items, v.Secret.DefaultMode)
	case v.DownwardAPI != nil:
		return k.writeDownward(pod, pr, dir, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
	case v.Projected != nil:
		return k.writeProjected(ctx, pod, pr, dir, v.Projected)
	default:
		return fmt.Errorf("volume type not supported by the lab node")
	}
}

func fileMode(m *int32, def os.FileMode) os.FileMode {
	if m != nil {
		return os.FileMode(*m)
	}
	return def
}

func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, mode *int32) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for key := range data {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		for _, key := range keys {
			items = append(items, corev1.KeyToPath{Key: key, Path: key})
		}
	}
	for _, it := range items {
		val, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("key %q not found", it.Key)
		}
		p := filepath.Join(dir, filepath.Clean("/"+it.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, val, fileMode(it.Mode, fileMode(mode, 0o644))); err != nil {
			return err
		}
	}
	return nil
}

func (k *Kubelet) writeDownward(pod *corev1.Pod, pr *podRuntime, dir string, items []corev1.DownwardAPIVolumeFile, mode *int32) error {
	data := map[string][]byte{}
	var paths []corev1.KeyToPath
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = k.fieldValue(pod, pr, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			val = resourceValue(pod, it.ResourceFieldRef)
		}
		if err != nil {
			return err
		}
		data[it.Path] = []byte(val)
		paths = append(paths, corev1.KeyToPath{Key: it.Path, Path: it.Path, Mode: it.Mode})
	}
	return writeKeys(dir, data, paths, mode)
}

func (k *Kubelet) writeProjected(ctx context.Context, pod *corev1.Pod, pr *podRuntime, dir string, p *corev1.ProjectedVolumeSource) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, src := range p.Sources {
		switch {
		case src.ConfigMap != nil:
			cm, err := k.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, src.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				if ptr.Deref(src.ConfigMap.Optional, false) {
					continue
				}
				return err
			}
			data := map[string][]byte{}
			for key, val := range cm.Data {
				data[key] = []byte(val)
			}
			if err := writeKeys(dir, data, src.ConfigMap.Items, p.DefaultMode); err != nil {
				return err
			}
		case src.Secret != nil:
			s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, src.Secret.Name, metav1.GetOptions{})
			if err != nil {
				if ptr.Deref(src.Secret.Optional, false) {
					continue
				}
				return err
			}
			if err := writeKeys(dir, s.Data, src.Secret.Items, p.DefaultMode); err != nil {
				return err
			}
		case src.DownwardAPI != nil:
			if err := k.writeDownward(pod, pr, dir, src.DownwardAPI.Items, p.DefaultMode); err != nil {
				return err
			}
		case src.ServiceAccountToken != nil:
			sa := pod.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
				Audiences:         nonEmpty(src.ServiceAccountToken.Audience),
				ExpirationSeconds: src.ServiceAccountToken.ExpirationSeconds,
				BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
			}}
			tok, err := k.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("service account token: %w", err)
			}
			if err := os.WriteFile(filepath.Join(dir, src.ServiceAccountToken.Path), []byte(tok.Status.Token), fileMode(p.DefaultMode, 0o644)); err != nil {
				return err
			}
		}
	}
	return nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// prepareContainer writes the runner spec: pod netns, hostname, the pod's
// DNS files and the container's volume mounts.
func (k *Kubelet) prepareContainer(ctx context.Context, pod *corev1.Pod, pr *podRuntime, cr *containerRuntime) error {
	hostname := podHostname(pod)
	if pod.Spec.HostNetwork {
		hostname = k.cfg.NodeName // as the kubelet: the node's UTS namespace
	}
	spec := &container.Spec{
		NetNS:    "/run/netns/" + pr.netnsName,
		Hostname: hostname,
		WorkDir:  cr.spec.WorkingDir,
		Scratch:  filepath.Join(pr.dir, "scratch", cr.name),
		Mounts: []container.Mount{
			{Source: filepath.Join(pr.dir, "resolv.conf"), Target: "/etc/resolv.conf", ReadOnly: true},
			{Source: filepath.Join(pr.dir, "hosts"), Target: "/etc/hosts", ReadOnly: true},
			{Source: filepath.Join(pr.dir, "hostname"), Target: "/etc/hostname", ReadOnly: true},
		},
	}
	img, err := k.image(cr.spec.Image)
	if err != nil {
		return err
	}
	if img != nil {
		spec.RootFS = img.Root
		if spec.WorkDir == "" {
			spec.WorkDir = img.WorkingDir
		}
	}
	if imageKind(cr.spec.Image) == "agnhost" && k.cfg.AgnhostBinary != "" {
		spec.Mounts = append(spec.Mounts, container.Mount{Source: k.cfg.AgnhostBinary, Target: "/agnhost", ReadOnly: true})
		// The image also carries CoreDNS and porter's TLS pair at the root;
		// the control plane build puts them beside the binary.
		if src := filepath.Join(filepath.Dir(k.cfg.AgnhostBinary), "coredns"); fileExists(src) {
			spec.Mounts = append(spec.Mounts, container.Mount{Source: src, Target: "/coredns", ReadOnly: true})
		}
		for _, f := range []string{"localhost.crt", "localhost.key"} {
			src := filepath.Join(filepath.Dir(k.cfg.AgnhostBinary), "agnhost-"+f)
			if _, err := os.Stat(src); err == nil {
				spec.Mounts = append(spec.Mounts, container.Mount{Source: src, Target: "/" + f, ReadOnly: true})
			}
		}
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	for _, vm := range cr.spec.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			return fmt.Errorf("volumeMount %q names no volume", vm.Name)
		}
		src := k.volumeDir(pr, vm.Name)
		if v.HostPath != nil {
			src = k.hostPath(v.HostPath.Path)
		}
		if vm.SubPath != "" {
			src = filepath.Join(src, filepath.Clean("/"+vm.SubPath))
		}
		spec.Mounts = append(spec.Mounts, container.Mount{Source: src, Target: vm.MountPath, ReadOnly: vm.ReadOnly})
	}
	return spec.Save(cr.specPath)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// hostPath is where a hostPath volume's path lives on this node.
func (k *Kubelet) hostPath(p string) string {
	if k.cfg.HostRoot == "" {
		return p
	}
	return filepath.Join(k.cfg.HostRoot, filepath.Clean("/"+p))
}

// prepareHostPath checks or creates a hostPath volume's path by its type.
func (k *Kubelet) prepareHostPath(v *corev1.HostPathVolumeSource) error {
	p := k.hostPath(v.Path)
	t := corev1.HostPathUnset
	if v.Type != nil {
		t = *v.Type
	}
	switch t {
	case corev1.HostPathDirectoryOrCreate:
		return os.MkdirAll(p, 0o755)
	case corev1.HostPathFileOrCreate:
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		return f.Close()
	case corev1.HostPathDirectory:
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			return fmt.Errorf("hostPath %s: not a directory on this node", v.Path)
		}
	}
	return nil
}
