package kubelet

import "testing"

func TestImageKind(t *testing.T) {
	for image, want := range map[string]string{
		"registry.k8s.io/e2e-test-images/agnhost:2.53": "agnhost",
		"agnhost": "agnhost",
		"registry.k8s.io/coredns/coredns:v1.12.2":                    "coredns",
		"registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2":        "echo-basic",
		"registry.k8s.io/e2e-test-images/regression-issue-74839:1.2": "regression-issue-74839",
		"registry.k8s.io/pause:3.10":                                 "pause",
		"busybox:1.36":                                               "other",
		"example.com/agnhost-like:1":                                 "other",
		"localhost:5000/agnhost@sha256:abc":                          "agnhost",
	} {
		if got := imageKind(image); got != want {
			t.Errorf("%s: %s, want %s", image, got, want)
		}
	}
}

func TestExpandVars(t *testing.T) {
	env := map[string]string{"A": "1", "B": "two"}
	for in, want := range map[string]string{
		"$(A)-$(B)": "1-two",
		"$$(A)":     "$(A)",
		"$(C)":      "$(C)",
		"plain":     "plain",
	} {
		if got := expandVars(in, env); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
