package route

import (
	"net/http"
	"regexp"
	"testing"
	"time"
)

func req(method, host, target string, hdr ...string) *http.Request {
	r, _ := http.NewRequest(method, "http://x"+target, nil)
	r.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	return r
}

func TestRulePrecedence(t *testing.T) {
	old, young := time.Unix(100, 0), time.Unix(200, 0)
	tb := NewTable()
	tb.DeepWildcards = true
	vh := tb.Host("example.com")
	add := func(kind PathKind, p, name string, created time.Time, idx int, mod func(*Rule)) {
		r := &Rule{Source: name, Rank: Rank{Created: created, Name: name, Index: idx}}
		if mod != nil {
			mod(r)
		}
		vh.AddRule(kind, p, r)
	}
	add(Prefix, "/", "young-root", young, 0, nil)
	add(Prefix, "/", "old-root", old, 0, nil)
	add(Prefix, "/a", "header", young, 0, func(r *Rule) { r.Headers = []ValueMatch{{Name: "version", Value: "two"}} })
	add(Prefix, "/a", "two-headers", young, 0, func(r *Rule) {
		r.Headers = []ValueMatch{{Name: "version", Value: "two"}, {Name: "color", Value: "blue"}}
	})
	add(Prefix, "/a", "method", young, 1, func(r *Rule) { r.Method = "POST" })
	add(Prefix, "/a", "query", young, 2, func(r *Rule) {
		r.Query = []ValueMatch{{Name: "animal", Regex: regexp.MustCompile("^wh.*$")}}
	})
	add(Exact, "/a/exact", "exact", young, 0, nil)
	add(Prefix, "/b", "rule0", old, 0, nil)
	add(Prefix, "/b", "rule0", old, 1024, nil) // a later rule of the same route never wins
	cases := []struct {
		r    *http.Request
		want string
	}{
		{req("GET", "example.com", "/"), "old-root"},
		{req("GET", "example.com", "/a"), "old-root"}, // every /a rule has a condition
		{req("GET", "example.com", "/a", "Version", "two"), "header"},
		{req("GET", "example.com", "/a", "version", "two", "color", "blue"), "two-headers"},
		{req("POST", "example.com", "/a", "version", "two", "color", "blue"), "method"},
		{req("GET", "example.com", "/a/b?animal=whale", "version", "three"), "query"},
		{req("GET", "example.com", "/a?animal=dolphin"), "old-root"},
		{req("GET", "example.com", "/a/exact", "version", "two"), "exact"},
		{req("GET", "example.com", "/b/c"), "rule0"},
	}
	for _, c := range cases {
		_, rule, ok := tb.MatchRequest(c.r)
		got := ""
		if ok && rule != nil {
			got = rule.Source + ":" + string(rune('0'+rule.Rank.Index/1024))
		}
		want := c.want + ":0"
		if got != want {
			t.Errorf("%s %s %v: got %q, want %q", c.r.Method, c.r.URL, c.r.Header, got, want)
		}
	}
}

func TestDeepWildcardsFallThrough(t *testing.T) {
	tb := NewTable()
	tb.DeepWildcards = true
	tb.Host("foo.example.com").AddRule(Prefix, "/only", &Rule{Source: "exact-host"})
	tb.Host("*.example.com").AddRule(Prefix, "/", &Rule{Source: "wildcard"})
	tb.Host("*.bar.example.com").AddRule(Prefix, "/", &Rule{Source: "longer-wildcard"})
	tb.Host("").AddRule(Prefix, "/", &Rule{Source: "any"})
	for host, want := range map[string]string{
		"foo.example.com":      "wildcard", // its own host has no rule for the path
		"a.b.example.com":      "wildcard",
		"x.bar.example.com":    "longer-wildcard",
		"example.com":          "any",
		"other.test:8080":      "any",
		"FOO.example.com.":     "wildcard",
		"only.foo.example.com": "wildcard",
	} {
		_, rule, ok := tb.MatchRequest(req("GET", host, "/x"))
		if !ok || rule.Source != want {
			t.Errorf("%s: got %+v, want %s", host, rule, want)
		}
	}
	if _, rule, _ := tb.MatchRequest(req("GET", "foo.example.com", "/only/x")); rule == nil || rule.Source != "exact-host" {
		t.Errorf("foo.example.com/only/x: got %+v", rule)
	}
	ing := NewTable() // Ingress: one label, no fall-through
	ing.Host("*.example.com").Add(&Route{Path: "/", Kind: Prefix, Source: "ing"})
	if _, _, ok := ing.MatchRequest(req("GET", "a.b.example.com", "/")); ok {
		t.Error("an Ingress wildcard matched two labels")
	}
}

func TestPathChange(t *testing.T) {
	for _, c := range []struct {
		change       PathChange
		path, prefix string
		want         string
	}{
		{PathChange{Full: "/one"}, "/full/path/x", "/full", "/one"},
		{PathChange{Prefix: "/one", PrefixSet: true}, "/prefix/one/two", "/prefix/one", "/one/two"},
		{PathChange{Prefix: "/", PrefixSet: true}, "/prefix/one/two", "/prefix/one", "/two"},
		{PathChange{Prefix: "/", PrefixSet: true}, "/prefix/one", "/prefix/one", "/"},
		{PathChange{Prefix: "/one/", PrefixSet: true}, "/prefix/one/", "/prefix/one/", "/one/"},
		{PathChange{Prefix: "", PrefixSet: true}, "/strip/x", "/strip", "/x"},
	} {
		if got := c.change.NewPath(c.path, c.prefix); got != c.want {
			t.Errorf("%+v on %s (prefix %s): %s, want %s", c.change, c.path, c.prefix, got, c.want)
		}
	}
}

func TestHeaderChangesAndPick(t *testing.T) {
	h := http.Header{"X-Keep": {"1"}, "X-Add": {"a"}, "X-Gone": {"x"}}
	(&HeaderChanges{Set: []Header{{"X-Set", "s"}}, Add: []Header{{"X-Add", "b"}, {"X-New", "n"}}, Remove: []string{"x-gone"}}).Apply(h)
	want := http.Header{"X-Keep": {"1"}, "X-Add": {"a,b"}, "X-New": {"n"}, "X-Set": {"s"}}
	if len(h) != len(want) {
		t.Fatalf("got %v, want %v", h, want)
	}
	for k, v := range want {
		if h.Get(k) != v[0] {
			t.Errorf("%s: %q, want %q", k, h.Get(k), v[0])
		}
	}
	r := &Rule{Backends: []WeightedBackend{{Backend: Backend{Service: "a"}, Weight: 1}, {Backend: Backend{Service: "zero"}}, {Backend: Backend{Service: "b"}, Weight: 3}}}
	got := map[string]int{}
	for n := 0; n < 4; n++ {
		got[r.Pick(func(int) int { return n }).Backend.Service]++
	}
	if got["a"] != 1 || got["b"] != 3 || got["zero"] != 0 {
		t.Errorf("weights 1/0/3 over 4 draws: %v", got)
	}
	if (&Rule{Backends: []WeightedBackend{{Weight: 0}}}).Pick(func(int) int { return 0 }) != nil {
		t.Error("all weights 0 picked a backend")
	}
}
