package nginx

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"k8s.io/apimachinery/pkg/util/validation"

	"weft.dev/weft/internal/ingress/route"
)

// ingress-nginx's CORS defaults.
const (
	corsMethods = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
	corsHeaders = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
	corsMaxAge  = 1728000
)

// cors reads enable-cors and the cors-* annotations. Each call builds the
// whole policy from all of them (map order is random); an invalid value
// is reported and its default used, as ingress-nginx does.
func cors(p *route.Policy, key string, all map[string]string) (string, Verdict) {
	on, err := strconv.ParseBool(all[Prefix+"enable-cors"])
	if key == "enable-cors" && err != nil {
		return fmt.Sprintf("%q is not true or false", all[Prefix+key]), Ignored
	}
	if !on {
		if key == "enable-cors" {
			return "", Honoured
		}
		return "enable-cors is not true", Ignored
	}
	c := &route.CORS{Origins: []string{"*"}, Methods: corsMethods, Headers: corsHeaders, Credentials: true, MaxAgeSeconds: corsMaxAge}
	g := &group{all: all, key: key, fallback: "the default is used"}
	g.read("cors-allow-origin", func(v string) error {
		o, err := parseOrigins(v)
		if err == nil {
			c.Origins = o
		}
		return err
	})
	g.read("cors-allow-methods", func(v string) error { return tokens(v, &c.Methods, isMethod) })
	g.read("cors-allow-headers", func(v string) error { return tokens(v, &c.Headers, isHeaderName) })
	g.read("cors-expose-headers", func(v string) error { return tokens(v, &c.ExposeHeaders, isHeaderName) })
	g.read("cors-allow-credentials", func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		c.Credentials = b
		return nil
	})
	g.read("cors-max-age", func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not a number of seconds", v)
		}
		c.MaxAgeSeconds = n
		return nil
	})
	p.CORS = c
	if g.why != "" {
		return g.why, Ignored
	}
	return "", Honoured
}

// parseOrigins reads "*" or a comma-separated list of scheme://host[:port]
// origins, where host may start with "*." for one level of subdomain.
func parseOrigins(v string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o == "*" {
			return []string{"*"}, nil
		}
		u, err := url.Parse(o)
		if err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return nil, fmt.Errorf("origin %q: want scheme://host[:port]", o)
		}
		host := strings.TrimPrefix(u.Hostname(), "*.")
		if errs := validation.IsDNS1123Subdomain(host); len(errs) > 0 {
			return nil, fmt.Errorf("origin %q: %s", o, strings.Join(errs, "; "))
		}
		if port := u.Port(); port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("origin %q: port %q", o, port)
			}
		}
		out = append(out, strings.ToLower(u.Scheme)+"://"+u.Host)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no origins in %q", v)
	}
	return out, nil
}

// tokens reads a comma-separated list whose every item passes ok, into
// "A, B" form.
func tokens(v string, into *string, ok func(string) bool) error {
	var out []string
	for _, t := range strings.Split(v, ",") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if !ok(t) {
			return fmt.Errorf("%q is not allowed in the list", t)
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return fmt.Errorf("empty list %q", v)
	}
	*into = strings.Join(out, ", ")
	return nil
}

func isMethod(s string) bool {
	return strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") == "" && len(s) <= 20
}

func isHeaderName(s string) bool { return s == "*" || httpguts.ValidHeaderFieldName(s) }

// parseSeconds reads an nginx timeout as ingress-nginx writes it: whole
// seconds, from 1 to a day.
func parseSeconds(v string) (time.Duration, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > 86400 {
		return 0, fmt.Errorf("%q: want whole seconds from 1 to 86400", v)
	}
	return time.Duration(n) * time.Second, nil
}
