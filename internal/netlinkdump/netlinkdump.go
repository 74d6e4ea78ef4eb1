// Package netlinkdump retries netlink dumps the kernel interrupted.
package netlinkdump

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// attempts bounds the retries; an interruption needs links, addresses or
// routes to change during the dump, which pods coming and going do.
const attempts = 10

// Retry calls dump until the kernel does not interrupt it (netlink returns
// ErrDumpInterrupted with partial results when the table changed meanwhile),
// at most a few times, and returns the last result.
func Retry[T any](dump func() ([]T, error)) ([]T, error) {
	var out []T
	var err error
	for i := 0; i < attempts; i++ {
		if out, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}
