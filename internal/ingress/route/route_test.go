package route

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type ipath struct {
	p    string
	kind networkingv1.PathType
}

func ingress(name string, created int, host string, paths ...ipath) *networkingv1.Ingress {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
		CreationTimestamp: metav1.NewTime(time.Unix(int64(created), 0))}}
	rule := networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{}}}
	for _, p := range paths {
		kind := p.kind
		rule.HTTP.Paths = append(rule.HTTP.Paths, networkingv1.HTTPIngressPath{Path: p.p, PathType: &kind,
			Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
				Name: svcName(p), Port: networkingv1.ServiceBackendPort{Number: 80}}}})
	}
	ing.Spec.Rules = []networkingv1.IngressRule{rule}
	return ing
}

// svcName names each path's backend after its kind and path, so a test
// can tell which route served.
func svcName(p ipath) string {
	n := strings.ToLower(string(p.kind)) + strings.ReplaceAll(strings.Trim(p.p, "/"), "/", "-")
	return strings.TrimSuffix(n, "-")
}

const (
	ex = networkingv1.PathTypeExact
	pf = networkingv1.PathTypePrefix
	is = networkingv1.PathTypeImplementationSpecific
)

// Every example of the path-matching table of the Kubernetes Ingress
// documentation, one row each: the Ingress's paths, the request path, and
// which path serves it ("" for none).
func TestIngressDocsPathMatchingTable(t *testing.T) {
	for _, tc := range []struct {
		paths []ipath
		req   string
		want  string
	}{
		{[]ipath{{"/", pf}}, "/anything/at/all", "prefix"},
		{[]ipath{{"/foo", ex}}, "/foo", "exactfoo"},
		{[]ipath{{"/foo", ex}}, "/bar", ""},
		{[]ipath{{"/foo", ex}}, "/foo/", ""},
		{[]ipath{{"/foo/", ex}}, "/foo", ""},
		{[]ipath{{"/foo", pf}}, "/foo", "prefixfoo"},
		{[]ipath{{"/foo", pf}}, "/foo/", "prefixfoo"},
		{[]ipath{{"/foo/", pf}}, "/foo", "prefixfoo"},
		{[]ipath{{"/foo/", pf}}, "/foo/", "prefixfoo"},
		{[]ipath{{"/aaa/bb", pf}}, "/aaa/bbb", ""},
		{[]ipath{{"/aaa/bbb", pf}}, "/aaa/bbb", "prefixaaa-bbb"},
		{[]ipath{{"/aaa/bbb/", pf}}, "/aaa/bbb", "prefixaaa-bbb"},
		{[]ipath{{"/aaa/bbb", pf}}, "/aaa/bbb/", "prefixaaa-bbb"},
		{[]ipath{{"/aaa/bbb", pf}}, "/aaa/bbb/ccc", "prefixaaa-bbb"},
		{[]ipath{{"/aaa/bbb", pf}}, "/aaa/bbbxyz", ""},
		{[]ipath{{"/", pf}, {"/aaa", pf}}, "/aaa/ccc", "prefixaaa"},
		{[]ipath{{"/", pf}, {"/aaa", pf}, {"/aaa/bbb", pf}}, "/aaa/bbb", "prefixaaa-bbb"},
		{[]ipath{{"/", pf}, {"/aaa", pf}, {"/aaa/bbb", pf}}, "/ccc", "prefix"},
		{[]ipath{{"/aaa", pf}}, "/ccc", ""},
		{[]ipath{{"/foo", pf}, {"/foo", ex}}, "/foo", "exactfoo"},
	} {
		tab, _, probs := FromIngresses([]*networkingv1.Ingress{ingress("a", 1, "", tc.paths...)}, Options{})
		if len(probs) > 0 {
			t.Fatalf("%v: %v", tc.paths, probs)
		}
		r, ok := tab.Match("example.com", tc.req)
		got := ""
		if ok {
			got = r.Backend.Service
		}
		if got != tc.want {
			t.Errorf("paths %v, request %s: served by %q, want %q", tc.paths, tc.req, got, tc.want)
		}
	}
}

// Host rules as the documentation describes them: exact names, and a
// wildcard that covers exactly one label; a named host before a wildcard
// before the rules without a host.
func TestIngressHostRules(t *testing.T) {
	tab, _, probs := FromIngresses([]*networkingv1.Ingress{
		ingress("exact", 1, "foo.bar.com", ipath{"/exact-host", pf}),
		ingress("wild", 2, "*.foo.com", ipath{"/wild", pf}),
		ingress("wild-bar", 3, "*.bar.com", ipath{"/wild-bar", pf}),
		ingress("any", 4, "", ipath{"/any", pf}),
	}, Options{})
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	for _, tc := range []struct{ host, want string }{
		{"foo.bar.com", "prefixexact-host"},
		{"FOO.bar.com:8080", "prefixexact-host"},
		{"foo.bar.com.", "prefixexact-host"},
		{"bar.foo.com", "prefixwild"},
		{"baz.bar.foo.com", "prefixany"}, // the wildcard covers one label only
		{"foo.com", "prefixany"},
		{"other.bar.com", "prefixwild-bar"},
		{"example.org", "prefixany"},
		{"[2001:db8::1]:80", "prefixany"},
	} {
		// Each host's own path: the request path is the wanted route's.
		want := strings.TrimPrefix(tc.want, "prefix")
		r, ok := tab.Match(tc.host, "/"+want)
		if !ok || r.Backend.Service != tc.want {
			t.Errorf("host %s: served by %v, want %s", tc.host, r, tc.want)
		}
	}
	// A host that has rules but no matching path does not fall back to
	// the rules without a host.
	if r, ok := tab.Match("foo.bar.com", "/any"); ok {
		t.Errorf("foo.bar.com /any served by %s, want no route", r.Backend.Service)
	}
}

func TestImplementationSpecificIsPrefixAndCleanedPathsMatch(t *testing.T) {
	tab, _, _ := FromIngresses([]*networkingv1.Ingress{ingress("a", 1, "", ipath{"/public", is}, ipath{"/admin", ex})}, Options{})
	for _, tc := range []struct{ req, want string }{
		{"/public/x", "implementationspecificpublic"},
		{"/public/../admin", "exactadmin"},
		{"//admin", "exactadmin"},
		{"/public/./x", "implementationspecificpublic"},
		{"/x/../../public", "implementationspecificpublic"},
	} {
		r, ok := tab.Match("h", tc.req)
		if !ok || r.Backend.Service != tc.want {
			t.Errorf("%s: %v, want %s", tc.req, r, tc.want)
		}
	}
}

// A bad rule or path is reported and skipped; the rest of the Ingress and
// every other Ingress keep routing; the older Ingress keeps a contested path.
func TestInvalidPartsAreReportedAndSkipped(t *testing.T) {
	bad := ingress("bad", 2, "ok.example.com", ipath{"/good", pf}, ipath{"/a/../b", pf}, ipath{"no-slash", ex}, ipath{"/sp ace", pf})
	bad.Spec.Rules = append(bad.Spec.Rules, networkingv1.IngressRule{Host: "bad_host!"})
	bad.Spec.Rules[0].HTTP.Paths = append(bad.Spec.Rules[0].HTTP.Paths, networkingv1.HTTPIngressPath{Path: "/res", PathType: ptrTo(pf),
		Backend: networkingv1.IngressBackend{Resource: &corev1TypedRef}})
	old := ingress("old", 1, "ok.example.com", ipath{"/contested", pf})
	newer := ingress("newer", 3, "ok.example.com", ipath{"/contested", pf})
	newer.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name = "newer-svc"
	tab, _, probs := FromIngresses([]*networkingv1.Ingress{newer, bad, old}, Options{})
	if len(probs) != 6 {
		t.Errorf("%d problems, want 6 (3 paths, a resource backend, a host, a contested path): %v", len(probs), probs)
	}
	for _, p := range probs {
		if p.Ingress != "ns/bad" && !(p.Ingress == "ns/newer" && strings.Contains(p.Message, "ns/old")) {
			t.Errorf("problem blamed on the wrong Ingress: %+v", p)
		}
	}
	if r, ok := tab.Match("ok.example.com", "/good"); !ok || r.Source != "ns/bad" {
		t.Errorf("the valid path of the bad Ingress: %v", r)
	}
	if r, ok := tab.Match("ok.example.com", "/contested"); !ok || r.Source != "ns/old" {
		t.Errorf("contested path: served by %v, want the older Ingress", r)
	}
}

var corev1TypedRef = corev1.TypedLocalObjectReference{Kind: "StorageBucket", Name: "assets"}

func ptrTo[T any](v T) *T { return &v }

// Regex hosts (use-regex, rewrite-target): Prefix and
// ImplementationSpecific paths are regular expressions matched
// case-insensitively from the start, longest path first; Exact paths stay
// exact; other hosts are untouched; a path Go cannot compile is reported
// and skipped.
func TestRegexHosts(t *testing.T) {
	mk := func(p string, k networkingv1.PathType, svc string) networkingv1.HTTPIngressPath {
		return networkingv1.HTTPIngressPath{Path: p, PathType: &k, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
			Name: svc, Port: networkingv1.ServiceBackendPort{Number: 80}}}}
	}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "re"}, Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{
		{Host: "re.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{
			mk("/api(/|$)(.*)", pf, "api"), mk("/api/v[0-9]+/users", is, "users"), mk("/exact.html", ex, "exact"),
			mk("/(?=look)", pf, "lookahead"), mk("/", pf, "root")}}}},
		{Host: "plain.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{
			mk("/api.v1", pf, "plain")}}}}}}}
	tab, _, probs := FromIngresses([]*networkingv1.Ingress{ing}, Options{RegexHosts: map[string]bool{"re.example.com": true}})
	if len(probs) != 1 || !strings.Contains(probs[0].Message, "(?=look)") {
		t.Errorf("problems %+v, want one for the look-ahead", probs)
	}
	for _, c := range []struct{ host, path, want string }{
		{"re.example.com", "/api/v2/users", "users"}, // the longer regex first
		{"re.example.com", "/API/V2/Users/x", "users"},
		{"re.example.com", "/api/x", "api"},
		{"re.example.com", "/api", "api"},
		{"re.example.com", "/apix", "root"}, // (/|$) after api
		{"re.example.com", "/exact.html", "exact"},
		{"re.example.com", "/x/api/y", "root"}, // anchored at the start
		{"plain.example.com", "/api.v1/x", "plain"},
		{"plain.example.com", "/apixv1", ""}, // not a regex on this host
	} {
		got := ""
		if r, ok := tab.Match(c.host, c.path); ok {
			got = r.Backend.Service
		}
		if got != c.want {
			t.Errorf("%s%s: %q, want %q", c.host, c.path, got, c.want)
		}
	}
}

func TestRewrite(t *testing.T) {
	re, err := CompileRegexPath("/api(/|$)(.*)")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ target, path, want string }{
		{"/$2", "/api/users/7", "/users/7"},
		{"/$2", "/api", "/"},
		{"/v1/$2x", "/api/a", "/v1/ax"}, // $2 then "x", as nginx reads it
		{"/$9/$1", "/api/a", "///"},     // a group that does not exist is empty
		{"/cost$", "/api/a", "/cost$"},  // a lone $ stays
		{"plain", "/api/a", "/plain"},   // always absolute
	} {
		if got := Rewrite(c.target, re, c.path); got != c.want {
			t.Errorf("Rewrite(%q, %q) = %q, want %q", c.target, c.path, got, c.want)
		}
	}
}

// A canary Ingress joins the routes it repeats, whatever the two
// Ingresses' ages; a canary path no other Ingress routes, or a second
// canary of one route, is reported; the canary's paths are never routes
// of their own.
func TestCanaryIngresses(t *testing.T) {
	main := ingress("main", 2, "app.example.com", ipath{"/", pf}, ipath{"/api", ex})
	canary := ingress("canary", 1, "app.example.com", ipath{"/", pf}, ipath{"/orphan", pf})
	second := ingress("second", 3, "app.example.com", ipath{"/", pf})
	rule := &CanaryRule{Weight: 10, WeightTotal: 100}
	tab, _, probs := FromIngresses([]*networkingv1.Ingress{canary, main, second},
		Options{Canaries: map[string]*CanaryRule{"ns/canary": rule, "ns/second": rule}})
	r, ok := tab.Match("app.example.com", "/x")
	if !ok || r.Source != "ns/main" || r.Canary == nil || r.Canary.Source != "ns/canary" || r.Canary.Weight != 10 {
		t.Fatalf("route / = %+v (canary %+v), want main's with canary's canary", r, r.Canary)
	}
	if r, ok := tab.Match("app.example.com", "/orphan"); !ok || r.Source != "ns/main" {
		t.Errorf("/orphan: %+v %v, want main's / (the canary's own path is no route)", r, ok)
	}
	var msgs []string
	for _, p := range probs {
		msgs = append(msgs, p.Ingress+": "+p.Message)
	}
	all := strings.Join(msgs, "\n")
	if len(probs) != 2 || !strings.Contains(all, "ns/canary: rules[0].paths[1]: canary of Prefix /orphan") ||
		!strings.Contains(all, "ns/second: rules[0].paths[0]: Prefix / on host \"app.example.com\" already has a canary (ns/canary)") {
		t.Errorf("problems:\n%s", all)
	}
}
