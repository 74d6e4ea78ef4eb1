package netlinkdump

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestRetry(t *testing.T) {
	calls := 0
	got, err := Retry(func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || calls != 3 {
		t.Fatalf("got %v %v after %d calls", got, err, calls)
	}
	other := errors.New("no such device")
	calls = 0
	if _, err := Retry(func() ([]int, error) { calls++; return nil, other }); !errors.Is(err, other) || calls != 1 {
		t.Fatalf("another error is returned at once: %v after %d calls", err, calls)
	}
	calls = 0
	if _, err := Retry(func() ([]int, error) { calls++; return nil, netlink.ErrDumpInterrupted }); !errors.Is(err, netlink.ErrDumpInterrupted) || calls != attempts {
		t.Fatalf("always interrupted: %v after %d calls", err, calls)
	}
}
