package gateway

import (
	"strings"

	"weft.dev/weft/internal/ingress/route"
)

// intersect is the hostname a route's hostname and a listener's hostname
// both allow ("" means any), and whether there is one. A wildcard stands
// for one or more labels in front of its suffix.
func intersect(listener, rt string) (string, bool) {
	listener, rt = strings.ToLower(listener), strings.ToLower(rt)
	switch {
	case listener == "":
		return rt, true
	case rt == "":
		return listener, true
	case listener == rt:
		return rt, true
	case route.Covers(listener, rt):
		return rt, true
	case route.Covers(rt, listener):
		return listener, true
	}
	return "", false
}

// routeHostnames is what a route serves on a listener: the intersections
// of its hostnames with the listener's; ok is false when none intersect.
func routeHostnames(listener string, hosts []string) ([]string, bool) {
	if len(hosts) == 0 {
		return []string{listener}, true
	}
	var out []string
	seen := map[string]bool{}
	for _, h := range hosts {
		if x, ok := intersect(listener, h); ok && !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out, len(out) > 0
}
