package route

import "strings"

// Covers: the Gateway API wildcard w takes every name h takes, and more.
func Covers(w, h string) bool {
	if !strings.HasPrefix(w, "*.") {
		return false
	}
	suffix := w[1:] // ".example.com"
	if strings.HasPrefix(h, "*.") {
		return strings.HasSuffix(h[1:], suffix) && len(h) > len(w)
	}
	return strings.HasSuffix(h, suffix) && len(h) > len(suffix)
}

// MostSpecific picks, among listener hostnames, the one a request for
// host goes to: exact first, then the wildcard with the longest suffix,
// then "" (any); -1 when none takes it.
func MostSpecific(host string, listeners []string) int {
	best, bestLen := -1, -1
	for i, l := range listeners {
		n := -1
		switch {
		case l == host:
			n = 1 << 20
		case l == "":
			n = 0
		case Covers(l, host):
			n = len(l)
		}
		if n > bestLen {
			best, bestLen = i, n
		}
	}
	return best
}
