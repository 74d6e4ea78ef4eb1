package proxy

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"weft.dev/weft/internal/ingress/route"
)

var emptyTable = route.NewTable()

// tableFor is the route table of the port the request came in on: a
// Gateway listener's, else the Ingresses'. misdirected: on an HTTPS port,
// the request's host belongs to another listener than the TLS server name
// it came with (a client reusing a connection for a host the
// connection's certificate and listener are not for), answered 421.
func (s *Snapshot) tableFor(r *http.Request) (table *route.Table, misdirected bool) {
	if len(s.Ports) == 0 {
		return s.Table, false
	}
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ta, ok := a.(*net.TCPAddr); ok {
			if pt := s.Ports[ta.Port]; pt != nil {
				i := route.MostSpecific(route.HostOnly(r.Host), pt.Hostnames)
				if pt.TLS && r.TLS != nil && r.TLS.ServerName != "" &&
					i != route.MostSpecific(strings.ToLower(r.TLS.ServerName), pt.Hostnames) {
					return emptyTable, true
				}
				if i < 0 {
					return emptyTable, false
				}
				return pt.Tables[i], false
			}
		}
	}
	return s.Table, false
}

// answerByRule answers what a Gateway API rule answers itself (its
// redirect; 500 for a rule without a usable backend, as the API asks),
// or picks the backend by weight and returns it with the policy the
// rule's timeouts make.
func answerByRule(w http.ResponseWriter, r *http.Request, rule *route.Rule, prefix string) (*route.WeightedBackend, *route.Policy, int) {
	if c := rule.Filters.CORS; c != nil && route.IsPreflight(r) {
		c.Preflight(w.Header(), r)
		w.WriteHeader(http.StatusNoContent)
		return nil, nil, http.StatusNoContent
	}
	if to := rule.Filters.Redirect; to != nil {
		w.Header().Set("Location", redirectLocation(r, to, prefix))
		w.WriteHeader(to.Code)
		return nil, nil, to.Code
	}
	b := rule.PickRandom()
	if b == nil || b.Invalid || (b.TLS != nil && b.TLS.Invalid) {
		// A backend whose BackendTLSPolicy cannot be used is never
		// reached unchecked.
		http.Error(w, "no usable backend", http.StatusInternalServerError)
		return nil, nil, http.StatusInternalServerError
	}
	var pol *route.Policy
	if t := rule.Filters.Timeout; t > 0 || rule.Filters.BackendTimeout > 0 {
		if bt := rule.Filters.BackendTimeout; bt > 0 && (t == 0 || bt < t) {
			t = bt
		}
		pol = &route.Policy{ReadTimeout: t}
	}
	return b, pol, 0
}

// redirectLocation builds a RequestRedirect's Location from the request:
// a field not set keeps the request's value; the port is left out when
// it is the scheme's well-known one.
func redirectLocation(r *http.Request, to *route.RedirectTo, prefix string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host, port := r.Host, ""
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		host, port = h, p
	}
	if to.Scheme != "" {
		scheme, port = to.Scheme, "" // the scheme's well-known port unless one is set
	}
	if to.Host != "" {
		host = to.Host
	}
	if to.Port != 0 {
		port = strconv.Itoa(int(to.Port))
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(host, port)
	}
	p := r.URL.Path
	if to.Path != nil {
		p = to.Path.NewPath(route.CleanPath(p), prefix)
	}
	loc := scheme + "://" + host + p
	if r.URL.RawQuery != "" {
		loc += "?" + r.URL.RawQuery
	}
	return loc
}

// applyRule makes the request a rule's filters ask for: its header
// changes and URL rewrite.
func applyRule(pr *httputil.ProxyRequest, rule *route.Rule, wb *route.WeightedBackend, prefix string) {
	rule.Filters.RequestHeaders.Apply(pr.Out.Header)
	if wb != nil {
		wb.RequestHeaders.Apply(pr.Out.Header)
	}
	rw := rule.Filters.Rewrite
	if rw == nil {
		return
	}
	if rw.Host != "" {
		pr.Out.Host = rw.Host
	}
	if rw.Path != nil {
		pr.Out.URL.Path = rw.Path.NewPath(route.CleanPath(pr.In.URL.Path), prefix)
		pr.Out.URL.RawPath = ""
	}
}

// mirror sends a copy of a request without a body to each of the rule's
// mirrors (its share of requests), in the background; answers are
// dropped. A request with a body is not mirrored: it would have to be
// held in memory while the backend reads it.
func (p *Proxy) mirror(s *Snapshot, r *http.Request, rule *route.Rule) {
	if len(rule.Filters.Mirrors) == 0 || (r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0) {
		return
	}
	for _, m := range rule.Filters.Mirrors {
		addrs := s.Endpoints[m.Backend]
		if len(addrs) == 0 || rand.Float64()*100 >= m.Percent {
			continue
		}
		out := r.Clone(context.Background())
		out.RequestURI, out.Body = "", http.NoBody
		out.URL.Scheme, out.URL.Host = "http", addrs[rand.IntN(len(addrs))]
		rule.Filters.RequestHeaders.Apply(out.Header)
		go func() {
			resp, err := p.mirrors.Do(out)
			if err != nil {
				p.log.Debug("mirror failed", "backend", m.Backend.Service, "err", err)
				return
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
		}()
	}
}
