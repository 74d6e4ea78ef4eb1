// Package figure keeps benchmark figures honest: a figure is a value or the
// reason it is missing, a ratio of a missing figure is missing, a verdict
// on a missing figure is FAILED, and a bench that printed any FAILED
// figure exits non-zero (Exit).
package figure

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Figure is one measured quantity, or why there is none.
type Figure struct {
	Value float64
	Err   error
}

// Of is a measurement: an error, a zero, a negative, NaN or infinite value
// all make a missing figure.
func Of(v float64, err error) Figure {
	if err != nil {
		return Figure{Err: err}
	}
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return Figure{Err: fmt.Errorf("no data (value %v)", v)}
	}
	return Figure{Value: v}
}

// Count is a counted quantity, where zero is a real answer (writes seen,
// errors seen); an error, a negative or NaN value make it missing.
func Count(v float64, err error) Figure {
	if err != nil {
		return Figure{Err: err}
	}
	if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return Figure{Err: fmt.Errorf("no count (value %v)", v)}
	}
	return Figure{Value: v}
}

// Signed is a measured difference, where zero and negative values are real
// answers (one side minus the other); an error, NaN or infinity make it
// missing.
func Signed(v float64, err error) Figure {
	if err != nil {
		return Figure{Err: err}
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return Figure{Err: fmt.Errorf("no difference (value %v)", v)}
	}
	return Figure{Value: v}
}

// Missing is a figure that could not be measured.
func Missing(format string, args ...any) Figure {
	return Figure{Err: fmt.Errorf(format, args...)}
}

// OK says whether the figure was measured.
func (f Figure) OK() bool { return f.Err == nil }

// Div is a/b, missing when either side is.
func Div(a, b Figure) Figure {
	switch {
	case a.Err != nil:
		return Figure{Err: a.Err}
	case b.Err != nil:
		return Figure{Err: b.Err}
	}
	return Of(a.Value/b.Value, nil)
}

// Format prints the value with format, or FAILED.
func (f Figure) Format(format string) string {
	if f.Err != nil {
		fail(f.Err)
		return "FAILED"
	}
	return fmt.Sprintf(format, f.Value)
}

// Verdict is "met" or "MISSED" by target, or FAILED (with the reason) when
// the figure is missing: no verdict is ever computed from missing data.
func (f Figure) Verdict(target func(float64) bool) string {
	if f.Err != nil {
		fail(f.Err)
		return "FAILED (" + strings.Join(strings.Fields(f.Err.Error()), " ") + ")"
	}
	if target(f.Value) {
		return "met"
	}
	return "MISSED"
}

var (
	mu       sync.Mutex
	failures []string
)

func fail(err error) {
	mu.Lock()
	defer mu.Unlock()
	failures = append(failures, err.Error())
}

// Exit ends the bench: status 1, with every reason on stderr, when any
// figure printed was FAILED.
func Exit() {
	mu.Lock()
	defer mu.Unlock()
	if len(failures) == 0 {
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "bench: %d figure(s) FAILED:\n  %s\n", len(failures), strings.Join(failures, "\n  "))
	os.Exit(1)
}

// Rounds are the per-round samples of one figure. A round that failed
// fails the whole figure: a median over the rounds that happened to work
// would hide the failure.
type Rounds struct {
	values []float64
	err    error
}

// Add records one round.
func (r *Rounds) Add(f Figure) {
	if f.Err != nil {
		r.err = errors.Join(r.err, f.Err)
		return
	}
	r.values = append(r.values, f.Value)
}

// Len is the number of good rounds.
func (r *Rounds) Len() int { return len(r.values) }

func (r *Rounds) sorted() ([]float64, error) {
	if r.err != nil {
		return nil, r.err
	}
	if len(r.values) == 0 {
		return nil, errors.New("no rounds")
	}
	s := append([]float64(nil), r.values...)
	sort.Float64s(s)
	return s, nil
}

// Median of the rounds.
func (r *Rounds) Median() Figure {
	s, err := r.sorted()
	if err != nil {
		return Figure{Err: err}
	}
	return Of(quantile(s, 0.5), nil)
}

// Spread is the interquartile range "q1–q3" with format, or FAILED.
func (r *Rounds) Spread(format string) string {
	s, err := r.sorted()
	if err != nil {
		fail(err)
		return "FAILED"
	}
	return fmt.Sprintf(format+"–"+format, quantile(s, 0.25), quantile(s, 0.75))
}

// quantile interpolates linearly between the closest ranks of sorted s.
func quantile(s []float64, q float64) float64 {
	if len(s) == 1 {
		return s[0]
	}
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	if lo >= len(s)-1 {
		return s[len(s)-1]
	}
	return s[lo] + (pos-float64(lo))*(s[lo+1]-s[lo])
}

// Stamp says when and from which commit a section's figures come.
func Stamp() string {
	commit, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		commit = []byte("unknown")
	}
	return fmt.Sprintf("run on %s at commit %s", time.Now().UTC().Format("2006-01-02"), strings.TrimSpace(string(commit)))
}

// WithOutput adds a command's output to its error.
func WithOutput(err error, out []byte) error {
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// Judge is the value and its verdict ("15.2×: met"), or FAILED.
func (f Figure) Judge(format string, target func(float64) bool) string {
	if f.Err != nil {
		return f.Verdict(target)
	}
	return f.Format(format) + ": " + f.Verdict(target)
}

// RSS is a process's VmRSS in MiB, from /proc.
func RSS(pid int) Figure {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Missing("rss: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return Of(kb/1024, err)
		}
	}
	return Missing("no VmRSS for pid %d", pid)
}
