package ipam

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func mustCIDR(t *testing.T, s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAllocateSkipsNetworkAndBroadcastAndExhausts(t *testing.T) {
	s, _ := Open(t.TempDir(), "n")
	r := mustCIDR(t, "10.0.0.0/29")
	var got []string
	for i := 0; i < 6; i++ {
		ips, err := s.Allocate(Attachment{fmt.Sprint(i), "eth0"}, []*net.IPNet{r})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ips[0].String())
	}
	want := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if _, err := s.Allocate(Attachment{"x", "eth0"}, []*net.IPNet{r}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("want ErrExhausted, got %v", err)
	}
}

func TestRepeatedAllocateIsIdempotent(t *testing.T) {
	s, _ := Open(t.TempDir(), "n")
	r := mustCIDR(t, "10.0.0.0/24")
	a, _ := s.Allocate(Attachment{"c", "eth0"}, []*net.IPNet{r})
	b, _ := s.Allocate(Attachment{"c", "eth0"}, []*net.IPNet{r})
	if !a[0].Equal(b[0]) {
		t.Fatalf("second ADD got %s, first %s", b[0], a[0])
	}
}

func TestFreedAddressIsNotReusedAtOnce(t *testing.T) {
	s, _ := Open(t.TempDir(), "n")
	r := mustCIDR(t, "10.0.0.0/24")
	a, _ := s.Allocate(Attachment{"a", "eth0"}, []*net.IPNet{r})
	if _, err := s.Release(Attachment{"a", "eth0"}); err != nil {
		t.Fatal(err)
	}
	b, _ := s.Allocate(Attachment{"b", "eth0"}, []*net.IPNet{r})
	if a[0].Equal(b[0]) {
		t.Fatalf("freed %s handed out again immediately", a[0])
	}
}

func TestDualStack(t *testing.T) {
	s, _ := Open(t.TempDir(), "n")
	ips, err := s.Allocate(Attachment{"a", "eth0"}, []*net.IPNet{mustCIDR(t, "10.0.0.0/24"), mustCIDR(t, "fd10:244::/64")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ips) != 2 || ips[0].To4() == nil || ips[1].To4() != nil {
		t.Fatalf("got %v", ips)
	}
}

func TestGCRemovesPartialFilesAndUnknownOwners(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, "n")
	r := mustCIDR(t, "10.0.0.0/24")
	s.Allocate(Attachment{"keep", "eth0"}, []*net.IPNet{r})
	s.Allocate(Attachment{"gone", "eth0"}, []*net.IPNet{r})
	// A plugin killed between create and write leaves an empty file.
	if err := os.WriteFile(filepath.Join(dir, "n", "10.0.0.77"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	freed, err := s.GC([]Attachment{{"keep", "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(freed) != 2 {
		t.Fatalf("freed %v, want 2", freed)
	}
	all, _ := s.List()
	if len(all) != 1 {
		t.Fatalf("left %v", all)
	}
}

func TestConcurrentAllocateDistinct(t *testing.T) {
	s, _ := Open(t.TempDir(), "n")
	r := mustCIDR(t, "10.0.0.0/24")
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ips, err := s.Allocate(Attachment{fmt.Sprint(i), "eth0"}, []*net.IPNet{r})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if i < 254 {
					t.Errorf("allocate %d: %v", i, err)
				}
				return
			}
			if seen[ips[0].String()] {
				t.Errorf("duplicate %s", ips[0])
			}
			seen[ips[0].String()] = true
		}(i)
	}
	wg.Wait()
	if len(seen) != 200 {
		t.Fatalf("%d distinct addresses, want 200", len(seen))
	}
}
