package kubelet

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"weft.dev/weft/internal/lab/image"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"context"
)

// containerCommand returns argv and environment. With no command the
// container runs `weft testserver` (images are not pulled in the lab).
func (k *Kubelet) containerCommand(pod *corev1.Pod, pr *podRuntime, c corev1.Container) ([]string, []string, error) {
	envMap, order, err := k.containerEnv(pod, pr, c)
	if err != nil {
		return nil, nil, err
	}
	expand := func(s string) string { return expandVars(s, envMap) }
	img, err := k.image(c.Image)
	if err != nil {
		return nil, nil, err
	}
	var argv []string
	if img != nil {
		// As a runtime: command replaces the entrypoint, args the cmd.
		if len(c.Command) == 0 {
			argv = append(argv, img.Entrypoint...)
			if len(c.Args) == 0 {
				argv = append(argv, img.Cmd...)
			}
		}
	} else if len(c.Command) == 0 {
		// Images are not pulled: their entrypoint is mapped to a program.
		switch imageKind(c.Image) {
		case "agnhost":
			if k.cfg.AgnhostBinary == "" {
				return nil, nil, fmt.Errorf("image %s needs agnhost, which this lab node was not given", c.Image)
			}
			argv = []string{k.cfg.AgnhostBinary}
			if len(c.Args) == 0 {
				argv = append(argv, "pause") // the image's CMD
			}
		case "pause":
			argv = []string{"sleep", "infinity"}
		case regressionImage:
			// Built with agnhost from the same k8s module, beside it.
			if k.cfg.AgnhostBinary == "" {
				return nil, nil, fmt.Errorf("image %s is built with agnhost, which this lab node was not given", c.Image)
			}
			argv = []string{filepath.Join(filepath.Dir(k.cfg.AgnhostBinary), regressionImage)}
		case "weft":
			argv = []string{k.cfg.WeftBinary}
		case "coredns":
			// The control-plane build puts CoreDNS beside agnhost (agnhost's
			// image carries it too).
			bin := filepath.Join(filepath.Dir(k.cfg.AgnhostBinary), "coredns")
			if k.cfg.AgnhostBinary == "" || !fileExists(bin) {
				return nil, nil, fmt.Errorf("image %s needs CoreDNS beside agnhost, which this lab node was not given", c.Image)
			}
			argv = []string{bin}
		case echoBasicImage:
			// The Gateway API conformance suite's backend, built from its
			// module beside weft (make gateway-conformance).
			bin := filepath.Join(filepath.Dir(k.cfg.WeftBinary), echoBasicImage)
			if !fileExists(bin) {
				return nil, nil, fmt.Errorf("image %s needs %s, which is not built (make gateway-conformance builds it)", c.Image, bin)
			}
			argv = []string{bin}
		default:
			argv = []string{k.cfg.WeftBinary, "testserver"}
		}
	}
	for _, a := range c.Command {
		argv = append(argv, expand(a))
	}
	for _, a := range c.Args {
		argv = append(argv, expand(a))
	}
	env := make([]string, 0, len(order))
	for _, name := range order {
		env = append(env, name+"="+envMap[name])
	}
	return argv, env, nil
}

func (k *Kubelet) containerEnv(pod *corev1.Pod, pr *podRuntime, c corev1.Container) (map[string]string, []string, error) {
	env := map[string]string{}
	var order []string
	set := func(name, val string) {
		if _, ok := env[name]; !ok {
			order = append(order, name)
		}
		env[name] = val
	}
	set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if img, err := k.image(c.Image); err != nil {
		return nil, nil, err
	} else if img != nil {
		for _, kv := range img.Env {
			if name, val, ok := strings.Cut(kv, "="); ok {
				set(name, val)
			}
		}
	}
	set("HOSTNAME", podHostname(pod))
	set("HOME", "/root")
	set("POD_NAME", pod.Name) // the testserver's /hostname
	set("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	set("KUBERNETES_SERVICE_PORT", "443")
	set("KUBERNETES_SERVICE_PORT_HTTPS", "443")
	ctx := context.Background()
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := k.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ef.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional {
					continue
				}
				return nil, nil, err
			}
			for key, v := range cm.Data {
				set(ef.Prefix+key, v)
			}
		case ef.SecretRef != nil:
			s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ef.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if ef.SecretRef.Optional != nil && *ef.SecretRef.Optional {
					continue
				}
				return nil, nil, err
			}
			for key, v := range s.Data {
				set(ef.Prefix+key, string(v))
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			set(e.Name, expandVars(e.Value, env))
		case e.ValueFrom.FieldRef != nil:
			v, err := k.fieldValue(pod, pr, e.ValueFrom.FieldRef.FieldPath)
			if err != nil {
				return nil, nil, err
			}
			set(e.Name, v)
		case e.ValueFrom.ResourceFieldRef != nil:
			set(e.Name, resourceValue(pod, e.ValueFrom.ResourceFieldRef))
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, err := k.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				return nil, nil, err
			}
			v, ok := cm.Data[ref.Key]
			if !ok && !(ref.Optional != nil && *ref.Optional) {
				return nil, nil, fmt.Errorf("configmap %s has no key %s", ref.Name, ref.Key)
			}
			set(e.Name, v)
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, err := k.client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				return nil, nil, err
			}
			v, ok := s.Data[ref.Key]
			if !ok && !(ref.Optional != nil && *ref.Optional) {
				return nil, nil, fmt.Errorf("secret %s has no key %s", ref.Name, ref.Key)
			}
			set(e.Name, string(v))
		}
	}
	return env, order, nil
}

var fieldKeyRE = regexp.MustCompile(`^metadata\.(labels|annotations)\['(.+)'\]$`)

// fieldValue resolves a downward API fieldRef.
func (k *Kubelet) fieldValue(pod *corev1.Pod, pr *podRuntime, path string) (string, error) {
	ips := make([]string, 0, len(pr.ips))
	for _, ip := range pr.ips {
		ips = append(ips, ip.String())
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		if len(ips) > 0 {
			return ips[0], nil
		}
		return "", nil
	case "status.podIPs":
		return strings.Join(ips, ","), nil
	case "status.hostIP", "status.hostIPs":
		return k.cfg.NodeIP.String(), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	}
	if m := fieldKeyRE.FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return pod.Labels[m[2]], nil
		}
		return pod.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported", path)
}

func formatMap(m map[string]string) string {
	var lines []string
	for k, v := range m {
		lines = append(lines, fmt.Sprintf("%s=%q", k, v))
	}
	return strings.Join(lines, "\n")
}

// resourceValue answers resourceFieldRef with the container's limit, or
// the node's allocatable when there is none (as the kubelet does).
func resourceValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector) string {
	for _, c := range pod.Spec.Containers {
		if ref.ContainerName != "" && c.Name != ref.ContainerName {
			continue
		}
		switch ref.Resource {
		case "limits.cpu", "requests.cpu":
			if q, ok := c.Resources.Limits["cpu"]; ok {
				return fmt.Sprint(q.MilliValue() / 1000)
			}
			return "8"
		case "limits.memory", "requests.memory":
			if q, ok := c.Resources.Limits["memory"]; ok {
				return fmt.Sprint(q.Value())
			}
			return fmt.Sprint(int64(16) << 30)
		}
	}
	return ""
}

var varRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)

// expandVars implements Kubernetes $(VAR) expansion: $$ escapes, unknown
// references stay as written.
func expandVars(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(m string) string {
		if m == "$$" {
			return "$"
		}
		name := m[2 : len(m)-1]
		if v, ok := env[name]; ok {
			return v
		}
		return m
	})
}

// regressionImage is the upstream test image of kubernetes issue 74839 (a
// server that answers with out-of-window TCP packets), used by the
// conntrack spec of the upstream suite.
const regressionImage = "regression-issue-74839"

// echoBasicImage is the Gateway API conformance suite's echo server.
const echoBasicImage = "echo-basic"

// imageKind classifies an image by name for the lab's image-to-program
// mapping: agnhost, pause, weft (runs bin/weft with the container's args),
// or anything else.
func imageKind(image string) string {
	name := image
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	if i := strings.IndexAny(name, ":@"); i >= 0 {
		name = name[:i]
	}
	switch name {
	case "agnhost":
		return "agnhost"
	case "pause":
		return "pause"
	case regressionImage:
		return regressionImage
	case "weft":
		return "weft"
	case echoBasicImage:
		return echoBasicImage
	case "coredns":
		return "coredns"
	}
	return "other"
}

// image returns the loaded image a container runs from, or nil for images
// the lab maps to programs on the host.
func (k *Kubelet) image(ref string) (*image.Image, error) {
	if k.cfg.Images == "" {
		return nil, nil
	}
	t, err := image.LoadTable(k.cfg.Images)
	if err != nil {
		return nil, fmt.Errorf("image table: %w", err)
	}
	return t[ref], nil
}
