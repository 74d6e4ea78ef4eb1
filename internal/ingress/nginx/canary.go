package nginx

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"weft.dev/weft/internal/ingress/route"
)

// canary reads canary and the canary-* annotations: the Ingress is then a
// canary of the routes it repeats, and its own other settings are not
// used (as with ingress-nginx). Like cors, each call builds the whole
// rule; an invalid value is reported and left out.
func canary(p *route.Policy, key string, all map[string]string) (string, Verdict) {
	on, err := strconv.ParseBool(all[Prefix+"canary"])
	if key == "canary" && err != nil {
		return fmt.Sprintf("%q is not true or false", all[Prefix+key]), Ignored
	}
	if !on {
		if key == "canary" {
			return "", Honoured
		}
		return "canary is not true", Ignored
	}
	c := &route.CanaryRule{WeightTotal: 100}
	g := &group{all: all, key: key, fallback: "left out"}
	token := func(what string, into *string) func(string) error {
		return func(v string) error {
			if v == "" || !httpguts.ValidHeaderFieldName(v) || strings.ContainsAny(v, "=;,") {
				return fmt.Errorf("%q is not a %s name", v, what)
			}
			*into = v
			return nil
		}
	}
	g.read("canary-by-header", token("header", &c.Header))
	g.read("canary-by-cookie", token("cookie", &c.Cookie))
	g.read("canary-by-header-value", func(v string) error {
		if !httpguts.ValidHeaderFieldValue(v) || v == "" {
			return fmt.Errorf("%q is not a header value", v)
		}
		if all[Prefix+"canary-by-header"] == "" {
			return fmt.Errorf("needs canary-by-header")
		}
		c.HeaderValue = v
		return nil
	})
	g.read("canary-weight-total", func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > 1000000 {
			return fmt.Errorf("%q: want 1 to 1000000", v)
		}
		c.WeightTotal = n
		return nil
	})
	g.read("canary-weight", func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 || n > c.WeightTotal {
			return fmt.Errorf("%q: want 0 to canary-weight-total (%d)", v, c.WeightTotal)
		}
		c.Weight = n
		return nil
	})
	if c.Header == "" {
		c.HeaderValue = ""
	}
	p.Canary = c
	if g.why != "" {
		return g.why, Ignored
	}
	return "", Honoured
}
