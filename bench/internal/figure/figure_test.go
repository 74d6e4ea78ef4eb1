package figure

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

func TestMissingFiguresNeverGiveAVerdict(t *testing.T) {
	good := Of(2, nil)
	for name, bad := range map[string]Figure{
		"error": Of(5, errors.New("rr: connection refused")),
		"zero":  Of(0, nil),
		"NaN":   Of(math.NaN(), nil),
	} {
		for _, f := range []Figure{bad, Div(good, bad), Div(bad, good)} {
			if f.OK() {
				t.Errorf("%s: %+v is OK", name, f)
			}
			if v := f.Verdict(func(float64) bool { return true }); !strings.HasPrefix(v, "FAILED") {
				t.Errorf("%s: verdict %q", name, v)
			}
			if s := f.Format("%.2f"); s != "FAILED" {
				t.Errorf("%s: formatted %q", name, s)
			}
		}
	}
	if r := Div(Of(3, nil), good); !r.OK() || r.Value != 1.5 {
		t.Errorf("3/2 = %+v", r)
	}
	if v := good.Verdict(func(x float64) bool { return x >= 10 }); v != "MISSED" {
		t.Errorf("verdict %q", v)
	}
}

func TestOneFailedRoundFailsTheFigure(t *testing.T) {
	var r Rounds
	for _, v := range []float64{1, 2, 3, 4} {
		r.Add(Of(v, nil))
	}
	if m := r.Median(); m.Value != 2.5 {
		t.Errorf("median %v", m)
	}
	if s := r.Spread("%.2f"); s != "1.75–3.25" {
		t.Errorf("spread %q", s)
	}
	r.Add(Of(0, errors.New("iperf3 failed")))
	if r.Median().OK() || r.Spread("%.1f") != "FAILED" {
		t.Error("a failed round did not fail the figure")
	}
	var empty Rounds
	if empty.Median().OK() {
		t.Error("no rounds gave a median")
	}
}

func TestCountKeepsZero(t *testing.T) {
	if f := Count(0, nil); !f.OK() || f.Verdict(func(x float64) bool { return x == 0 }) != "met" {
		t.Errorf("zero count: %+v", f)
	}
	if Count(-1, nil).OK() || Count(3, errors.New("metrics unreachable")).OK() {
		t.Error("a negative or failed count is OK")
	}
}

func TestSignedKeepsNegativeDifferences(t *testing.T) {
	if f := Signed(-3.5, nil); !f.OK() || f.Value != -3.5 {
		t.Fatalf("%+v", f)
	}
	if Signed(math.NaN(), nil).OK() || Signed(1, errors.New("x")).OK() {
		t.Fatal("NaN or an error gave a difference")
	}
}

func TestRSS(t *testing.T) {
	if f := RSS(os.Getpid()); !f.OK() || f.Value <= 0 {
		t.Errorf("own RSS: %+v", f)
	}
	if f := RSS(-1); f.OK() {
		t.Errorf("RSS of no process: %+v, want missing", f)
	}
}
