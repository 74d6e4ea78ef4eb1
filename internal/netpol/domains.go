package netpol

import (
	"slices"
	"strings"

	cnp "sigs.k8s.io/network-policy-api/apis/v1beta1"
)

// DomainSet is one set of addresses learned for domain-name patterns.
type DomainSet struct {
	Family   string   // "ip" or "ip6"
	Patterns []string // lower case, no trailing dot; "*.example.com" or exact
}

// domainPatterns are a rule's domain-name peers, normalized and sorted.
func domainPatterns(peers []cnp.ClusterNetworkPolicyEgressPeer) []string {
	var out []string
	for _, peer := range peers {
		for _, n := range peer.DomainNames {
			if p, ok := normalizePattern(string(n)); ok {
				out = append(out, p)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// normalizePattern lower-cases a domain name pattern and drops its
// trailing dot; a wildcard is allowed only as the whole first label.
func normalizePattern(n string) (string, bool) {
	n = strings.TrimSuffix(strings.ToLower(n), ".")
	rest := strings.TrimPrefix(n, "*.")
	if rest == "" || strings.Contains(rest, "*") || strings.Contains(rest, "..") || len(n) > 253 {
		return "", false
	}
	return n, true
}

// matchesPattern reports whether a DNS name (any case, trailing dot or
// not) matches a normalized pattern: exactly, or for "*.zone" any name of
// one or more labels below zone.
func matchesPattern(name, pattern string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if zone, ok := strings.CutPrefix(pattern, "*."); ok {
		return strings.HasSuffix(name, "."+zone) && len(name) > len(zone)+1
	}
	return name == pattern
}

// domainSet declares the (empty) set of addresses learned for patterns.
func (c *compiler) domainSet(f family, patterns []string) string {
	name := "dns" + f.suffix + "-" + shortHash(patterns...)
	if _, ok := c.rs.Sets[name]; !ok {
		c.rs.Sets[name] = &Set{Name: name, Type: f.addrType, Comment: "addresses DNS answered for " + strings.Join(patterns, " ")}
		c.rs.Domains[name] = DomainSet{Family: f.fam, Patterns: patterns}
	}
	return name
}
