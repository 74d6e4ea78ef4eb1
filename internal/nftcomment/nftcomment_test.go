package nftcomment

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestBounded(t *testing.T) {
	for _, in := range []string{"", "short", strings.Repeat("a", MaxLen), strings.Repeat("a", MaxLen+1),
		strings.Repeat("n", 63) + "/" + strings.Repeat("s", 63) + ":" + strings.Repeat("p", 15) + "/TCP",
		strings.Repeat("é", 100)} {
		got := *Bounded(in)
		if len(got) > MaxLen || !utf8.ValidString(got) {
			t.Errorf("Bounded(%d bytes) = %d bytes, valid UTF-8 %v", len(in), len(got), utf8.ValidString(got))
		}
		if len(in) <= MaxLen && got != in {
			t.Errorf("a short comment changed: %q -> %q", in, got)
		}
		if len(in) > MaxLen && (!strings.HasSuffix(got, "~") || !strings.HasPrefix(in, strings.TrimSuffix(got, "~"))) {
			t.Errorf("a cut comment must be a prefix ending in ~: %q", got)
		}
	}
}
