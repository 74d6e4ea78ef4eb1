package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"weft.dev/weft/internal/ingress/route"
)

// dial connects to an endpoint within the route's connect timeout, else
// the proxy's.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: p.dialTimeout(ctx), KeepAlive: 30 * time.Second}
	return d.DialContext(ctx, network, addr)
}

func (p *Proxy) dialTimeout(ctx context.Context) time.Duration {
	if pk, _ := ctx.Value(ctxKey{}).(*pick); pk != nil && pk.policy != nil && pk.policy.ConnectTimeout > 0 {
		return pk.policy.ConnectTimeout
	}
	return p.cfg.DialTimeout
}

// errReadTimeout: the backend was slower than the route's read timeout.
var errReadTimeout = errors.New("the backend exceeded the read timeout")

// roundTrip sends one request; with a read timeout, a backend that takes
// longer for its headers, or between two reads of its body, is cut off
// (an upgraded connection, e.g. a WebSocket, is not).
func (p *Proxy) roundTrip(base http.RoundTripper, req *http.Request, pol *route.Policy) (*http.Response, error) {
	if pol == nil || pol.ReadTimeout <= 0 {
		return base.RoundTrip(req)
	}
	ctx, cancelCause := context.WithCancelCause(req.Context())
	cancel := func() { cancelCause(nil) }
	timer := time.AfterFunc(pol.ReadTimeout, func() { cancelCause(errReadTimeout) })
	resp, err := base.RoundTrip(req.WithContext(ctx))
	if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
		timer.Stop()
		if err != nil {
			if errors.Is(context.Cause(ctx), errReadTimeout) {
				err = fmt.Errorf("%w: %w", errReadTimeout, err)
			}
			cancel()
		}
		return resp, err
	}
	resp.Body = &idleBody{ReadCloser: resp.Body, timer: timer, idle: pol.ReadTimeout, cancel: cancel}
	return resp, nil
}

// idleBody re-arms its timer on every read and cancels the request when
// the timer fires first.
type idleBody struct {
	io.ReadCloser
	timer  *time.Timer
	idle   time.Duration
	cancel context.CancelFunc
	once   sync.Once
}

func (b *idleBody) Read(buf []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.ReadCloser.Read(buf)
	b.timer.Reset(b.idle)
	return n, err
}

func (b *idleBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(func() {
		b.timer.Stop()
		b.cancel()
	})
	return err
}

// onResponse sets the route's custom and CORS headers on a backend's
// response (replacing any the backend set, so a client never sees two).
func onResponse(resp *http.Response) error {
	pk, _ := resp.Request.Context().Value(ctxKey{}).(*pick)
	if pk != nil && pk.rule != nil {
		pk.rule.Filters.ResponseHeaders.Apply(resp.Header)
		if pk.wb != nil {
			pk.wb.ResponseHeaders.Apply(resp.Header)
		}
		if c := pk.rule.Filters.CORS; c != nil {
			c.Simple(resp.Header, resp.Request)
		}
	}
	if pk == nil || pk.policy == nil {
		return nil
	}
	for k, v := range pk.policy.ResponseHeaders {
		resp.Header.Set(k, v)
	}
	if pk.policy.CORS != nil {
		setCORS(resp.Header, pk.policy.CORS, resp.Request.Header.Get("Origin"), false)
	}
	return nil
}

// setCORS writes the CORS headers for a request from origin; a preflight
// answer also names the methods, headers and how long to keep it. An
// origin that is not allowed gets none (the browser then refuses).
func setCORS(h http.Header, c *route.CORS, origin string, preflight bool) {
	allow := c.AllowOrigin(origin)
	if allow == "" {
		return
	}
	h.Set("Access-Control-Allow-Origin", allow)
	if allow != "*" {
		h.Add("Vary", "Origin")
	}
	if c.Credentials {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	if c.ExposeHeaders != "" {
		h.Set("Access-Control-Expose-Headers", c.ExposeHeaders)
	}
	if preflight {
		h.Set("Access-Control-Allow-Methods", c.Methods)
		h.Set("Access-Control-Allow-Headers", c.Headers)
		h.Set("Access-Control-Max-Age", strconv.Itoa(c.MaxAgeSeconds))
		h.Set("Content-Length", "0")
	}
}

// endpointToken names an endpoint in an affinity cookie without showing
// its address; the same in every replica of the proxy.
func endpointToken(addr string) string {
	sum := sha256.Sum256([]byte("weft-affinity/" + addr))
	return hex.EncodeToString(sum[:8])
}

// pinned moves the endpoint the request's affinity cookie names to the
// front (the others stay as fallbacks) and returns it; a cookie naming no
// current endpoint is ignored and replaced.
func pinned(r *http.Request, a *route.Affinity, addrs []string) ([]string, string) {
	c, err := r.Cookie(a.Cookie)
	if err != nil {
		return addrs, ""
	}
	for i, addr := range addrs {
		if endpointToken(addr) == c.Value {
			out := make([]string, 0, len(addrs))
			out = append(append(out, addr), addrs[:i]...)
			return append(out, addrs[i+1:]...), addr
		}
	}
	return addrs, ""
}

// affinityCookie is the Set-Cookie pinning the client to addr.
func affinityCookie(pk *pick, addr string) string {
	a := pk.policy.Affinity
	c := &http.Cookie{Name: a.Cookie, Value: endpointToken(addr), Path: a.Path, HttpOnly: true, Secure: pk.tls}
	if c.Path == "" {
		c.Path = pk.path
	}
	if a.MaxAge > 0 {
		c.MaxAge = int(a.MaxAge / time.Second)
	}
	return c.String()
}

// useCanary decides whether a request goes to the route's canary: its
// header ("always"/"never", or exactly the given value), then its cookie
// ("always"/"never"), then the weight (roll(n) draws from [0, n)), in
// ingress-nginx's order.
func useCanary(r *http.Request, c *route.Canary, roll func(int) int) bool {
	if c.Header != "" {
		v := r.Header.Get(c.Header)
		switch {
		case c.HeaderValue != "" && v == c.HeaderValue:
			return true
		case c.HeaderValue == "" && v == "always":
			return true
		case c.HeaderValue == "" && v == "never":
			return false
		}
	}
	if c.Cookie != "" {
		if ck, err := r.Cookie(c.Cookie); err == nil {
			switch ck.Value {
			case "always":
				return true
			case "never":
				return false
			}
		}
	}
	return c.Weight > 0 && roll(c.WeightTotal) < c.Weight
}
