package nginx

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"

	"weft.dev/weft/internal/ingress/route"
)

// affinity reads affinity and the session-cookie-* annotations; like cors
// each call builds the whole setting, an invalid value is reported and
// its default used.
func affinity(p *route.Policy, key string, all map[string]string) (string, Verdict) {
	if v := all[Prefix+"affinity"]; v != "cookie" {
		if key == "affinity" {
			return fmt.Sprintf("%q: cookie is the only kind of affinity", v), Ignored
		}
		return "affinity is not cookie", Ignored
	}
	a := &route.Affinity{Cookie: "INGRESSCOOKIE"}
	g := &group{all: all, key: key, fallback: "the default is used"}
	g.read("session-cookie-name", func(v string) error {
		if v == "" || strings.ContainsAny(v, "=;, \t") || !httpguts.ValidHeaderFieldName(v) {
			return fmt.Errorf("%q is not a cookie name", v)
		}
		a.Cookie = v
		return nil
	})
	g.read("session-cookie-path", func(v string) error {
		if err := route.ValidPath(v); err != nil || strings.ContainsAny(v, ";, ") {
			return fmt.Errorf("%q is not a cookie path", v)
		}
		a.Path = v
		return nil
	})
	seconds := func(v string) (time.Duration, error) {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return 0, fmt.Errorf("%q: want seconds", v)
		}
		return time.Duration(n) * time.Second, nil
	}
	// Max-age wins over expires, as in browsers.
	g.read("session-cookie-expires", func(v string) error {
		d, err := seconds(v)
		if err == nil && a.MaxAge == 0 {
			a.MaxAge = d
		}
		return err
	})
	g.read("session-cookie-max-age", func(v string) error {
		d, err := seconds(v)
		if err == nil {
			a.MaxAge = d
		}
		return err
	})
	g.read("affinity-mode", func(v string) error {
		if v != "balanced" && v != "persistent" {
			return fmt.Errorf("%q: want balanced or persistent", v)
		}
		return nil
	})
	p.Affinity = a
	switch {
	case g.why != "":
		return g.why, Ignored
	case key == "affinity-mode" && all[Prefix+key] != "persistent":
		return "a client stays on its endpoint while that endpoint exists (persistent); weft does not move clients when a backend scales up", Differently
	case key == "session-cookie-expires":
		return "sent as the cookie's Max-Age (a relative lifetime) rather than an Expires date", Differently
	}
	return "", Honoured
}
