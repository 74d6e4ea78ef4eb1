package route

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Problem is something wrong with one Ingress, reported on it (as an
// Event) while the rest of it and every other Ingress keep working.
type Problem struct {
	Ingress string // namespace/name
	Message string
}

// TLS is a certificate an Ingress names for hosts.
type TLS struct {
	Hosts           []string
	Namespace, Name string // the Secret
	Source          string
}

// Options are what an Ingress's annotations change in the table.
type Options struct {
	// RegexHosts: on these hosts, Prefix and ImplementationSpecific paths
	// are regular expressions (ingress-nginx's use-regex applies to a
	// whole host).
	RegexHosts map[string]bool
	// Canaries are the Ingresses (namespace/name) that are canaries of
	// the routes they repeat, and how requests are chosen for them.
	Canaries map[string]*CanaryRule
}

// FromIngresses builds the table from the Ingresses this controller owns
// (the caller filters by class). Older Ingresses win conflicts (the same
// host, path and kind; the default backend), as a first come first
// served rule that does not change when a newer object appears. Canary
// Ingresses come last, each path joining the route it repeats.
func FromIngresses(ings []*networkingv1.Ingress, opts Options) (*Table, []TLS, []Problem) {
	sorted := append([]*networkingv1.Ingress(nil), ings...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if ca, cb := opts.Canaries[a.Namespace+"/"+a.Name] != nil, opts.Canaries[b.Namespace+"/"+b.Name] != nil; ca != cb {
			return cb
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	t := NewTable()
	var tls []TLS
	var probs []Problem
	for _, ing := range sorted {
		src := ing.Namespace + "/" + ing.Name
		report := func(format string, a ...any) {
			probs = append(probs, Problem{Ingress: src, Message: fmt.Sprintf(format, a...)})
		}
		if rule := opts.Canaries[src]; rule != nil {
			addCanary(t, ing, src, rule, opts.RegexHosts, report)
			continue
		}
		if b := ing.Spec.DefaultBackend; b != nil {
			if be, err := backendOf(ing.Namespace, b); err != nil {
				report("defaultBackend: %v", err)
			} else if t.Default != nil {
				report("defaultBackend ignored: an older Ingress's default backend (%s/%s) serves", t.Default.Namespace, t.Default.Service)
			} else {
				t.Default = &be
			}
		}
		addRules(t, ing, src, opts.RegexHosts, report)
		for i, x := range ing.Spec.TLS {
			if x.SecretName == "" {
				report("tls[%d]: no secretName (the default certificate serves)", i)
				continue
			}
			tls = append(tls, TLS{Hosts: x.Hosts, Namespace: ing.Namespace, Name: x.SecretName, Source: src})
		}
	}
	return t, tls, probs
}

// addCanary makes each path of a canary Ingress the canary of the route
// with the same host, path and kind (none: reported and ignored).
func addCanary(t *Table, ing *networkingv1.Ingress, src string, rule *CanaryRule, regexHosts map[string]bool, report func(string, ...any)) {
	for i, r := range ing.Spec.Rules {
		if r.HTTP == nil || ValidHost(r.Host) != nil {
			continue
		}
		vh := t.Host(r.Host)
		for j, p := range r.HTTP.Paths {
			where := fmt.Sprintf("rules[%d].paths[%d]", i, j)
			c, err := routeOf(ing.Namespace, src, p, regexHosts[strings.ToLower(r.Host)])
			if err != nil {
				report("%s: %v; canary path ignored", where, err)
				continue
			}
			main := vh.find(c.Kind, c.Path)
			switch {
			case main == nil:
				report("%s: canary of %s %s on host %q, which no other Ingress routes; ignored", where, c.Kind, c.Path, r.Host)
			case main.Canary != nil:
				report("%s: %s %s on host %q already has a canary (%s); ignored", where, c.Kind, c.Path, r.Host, main.Canary.Source)
			default:
				main.Canary = &Canary{CanaryRule: *rule, Backend: c.Backend, Source: src}
			}
		}
	}
}

func addRules(t *Table, ing *networkingv1.Ingress, src string, regexHosts map[string]bool, report func(string, ...any)) {
	for i, rule := range ing.Spec.Rules {
		if err := ValidHost(rule.Host); err != nil {
			report("rules[%d]: host %q: %v; rule ignored", i, rule.Host, err)
			continue
		}
		if rule.HTTP == nil {
			continue
		}
		vh := t.Host(rule.Host)
		for j, p := range rule.HTTP.Paths {
			where := fmt.Sprintf("rules[%d].paths[%d]", i, j)
			r, err := routeOf(ing.Namespace, src, p, regexHosts[strings.ToLower(rule.Host)])
			if err != nil {
				report("%s: %v; path ignored", where, err)
				continue
			}
			if old := vh.Add(r); old != nil {
				report("%s: %s %s on host %q is already routed by %s; path ignored", where, r.Kind, r.Path, rule.Host, old.Source)
			}
		}
	}
}

func routeOf(ns, src string, p networkingv1.HTTPIngressPath, regex bool) (*Route, error) {
	kind := Prefix
	if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
		kind = Exact
	}
	path := p.Path
	if path == "" {
		if kind == Exact {
			return nil, fmt.Errorf("an Exact path needs a path")
		}
		path = "/"
	}
	var pattern *regexp.Regexp
	if regex && kind == Prefix {
		re, err := CompileRegexPath(path)
		if err != nil {
			return nil, err
		}
		kind, pattern = Regex, re
	} else if err := ValidPath(path); err != nil {
		return nil, err
	}
	be, err := backendOf(ns, &p.Backend)
	if err != nil {
		return nil, err
	}
	return &Route{Path: path, Kind: kind, Backend: be, Source: src, Pattern: pattern}, nil
}

// CompileRegexPath compiles a regex path as ingress-nginx matches it:
// case-insensitively from the start of the request path. Go's regular
// expressions run in linear time, so no path can stall the proxy; ones
// they do not support (look-arounds, back-references) are refused.
func CompileRegexPath(p string) (*regexp.Regexp, error) {
	if !strings.HasPrefix(p, "/") || len(p) > 1024 {
		return nil, fmt.Errorf("regex path %q: must begin with / and be at most 1024 bytes", p)
	}
	if strings.ContainsFunc(p, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return nil, fmt.Errorf("regex path %q: spaces and control characters not allowed", p)
	}
	re, err := regexp.Compile("(?i)^" + p)
	if err != nil {
		return nil, fmt.Errorf("regex path %q: %v", p, err)
	}
	return re, nil
}

func backendOf(ns string, b *networkingv1.IngressBackend) (Backend, error) {
	switch {
	case b.Resource != nil:
		return Backend{}, fmt.Errorf("resource backends (%s %s) are not supported", b.Resource.Kind, b.Resource.Name)
	case b.Service == nil:
		return Backend{}, fmt.Errorf("no backend service")
	}
	if errs := validation.IsDNS1035Label(b.Service.Name); len(errs) > 0 {
		return Backend{}, fmt.Errorf("service name %q: %s", b.Service.Name, strings.Join(errs, "; "))
	}
	be := Backend{Namespace: ns, Service: b.Service.Name, Port: b.Service.Port.Number, PortName: b.Service.Port.Name}
	if (be.Port == 0) == (be.PortName == "") {
		return Backend{}, fmt.Errorf("service %s: give the port's number or its name", be.Service)
	}
	if be.Port < 0 || be.Port > 65535 {
		return Backend{}, fmt.Errorf("service %s: port %d out of range", be.Service, be.Port)
	}
	return be, nil
}

// ValidHost accepts "" (every host), a DNS name, or a wildcard of one
// label in front of a DNS name ("*.example.com"), as the API does.
func ValidHost(h string) error {
	if h == "" {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	if strings.Contains(name, "*") {
		return fmt.Errorf("a wildcard is only allowed as the first label")
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// ValidPath accepts an absolute path of printable ASCII without spaces,
// query, fragment, empty, "." or ".." elements (a proxy matches cleaned
// request paths, which never hold them).
func ValidPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q must begin with /", p)
	}
	for _, c := range p {
		if c <= ' ' || c >= 0x7f || c == '?' || c == '#' || c == '\\' {
			return fmt.Errorf("path %q: character %q not allowed", p, c)
		}
	}
	if strings.Contains(p, "//") {
		return fmt.Errorf("path %q: empty elements not allowed", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "." || el == ".." {
			return fmt.Errorf("path %q: %q elements not allowed", p, el)
		}
	}
	return nil
}
