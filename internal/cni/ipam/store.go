// Package ipam is weft-cni's address store: one file per allocated IP,
// named after the IP, holding "containerID ifname". Creating the file with
// O_EXCL is the allocation, so two plugins can never hand out one IP; a file
// lock serialises scans so concurrent ADDs do not race for the same next IP.
// A plugin killed mid-ADD leaves at worst a file that GC removes.
package ipam

import (
	"bufio"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// ErrExhausted is returned when a range has no free address.
var ErrExhausted = errors.New("no free address")

// Attachment identifies an owner of addresses, as in the CNI GC verb.
type Attachment struct {
	ContainerID string
	IfName      string
}

// Store is a directory of allocations for one network.
type Store struct {
	dir string
}

// Open creates (if needed) the store directory for network name under dataDir.
func Open(dataDir, network string) (*Store, error) {
	dir := filepath.Join(dataDir, network)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &Store{dir: dir}, nil
}

// lock takes an exclusive flock on the store; the returned func releases it.
func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

func fileName(ip net.IP) string {
	// IPv6 colons are fine in file names on Linux.
	return ip.String()
}

// Allocate returns one address from each range for a. If a already holds
// addresses (a repeated ADD), those are returned unchanged.
func (s *Store) Allocate(a Attachment, ranges []*net.IPNet) ([]net.IP, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()

	held, err := s.list()
	if err != nil {
		return nil, err
	}
	var out []net.IP
	for i, r := range ranges {
		if ip := ownedIn(held, a, r); ip != nil {
			out = append(out, ip)
			continue
		}
		ip, err := s.allocateIn(a, r, i)
		if err != nil {
			for _, got := range out {
				if !containsIP(held, got) {
					os.Remove(filepath.Join(s.dir, fileName(got)))
				}
			}
			return nil, err
		}
		out = append(out, ip)
	}
	return out, nil
}

func ownedIn(held map[string]Attachment, a Attachment, r *net.IPNet) net.IP {
	for ipStr, owner := range held {
		ip := net.ParseIP(ipStr)
		if owner == a && ip != nil && r.Contains(ip) {
			return ip
		}
	}
	return nil
}

func containsIP(held map[string]Attachment, ip net.IP) bool {
	_, ok := held[ip.String()]
	return ok
}

// allocateIn walks the range from just after the last address handed out,
// so a freed address is not reused at once (stale conntrack, ARP caches).
func (s *Store) allocateIn(a Attachment, r *net.IPNet, idx int) (net.IP, error) {
	first, last := usableRange(r)
	if first == nil {
		return nil, fmt.Errorf("%w in %s: range too small", ErrExhausted, r)
	}
	lastFile := filepath.Join(s.dir, fmt.Sprintf(".last-%d", idx))
	start := first
	if b, err := os.ReadFile(lastFile); err == nil {
		if prev := net.ParseIP(strings.TrimSpace(string(b))); prev != nil && r.Contains(prev) {
			start = next(prev)
			if cmp(start, last) > 0 || cmp(start, first) < 0 {
				start = first
			}
		}
	}
	ip := start
	for {
		path := filepath.Join(s.dir, fileName(ip))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			_, werr := fmt.Fprintf(f, "%s\n%s\n", a.ContainerID, a.IfName)
			if werr == nil {
				werr = f.Sync()
			}
			cerr := f.Close()
			if werr != nil || cerr != nil {
				os.Remove(path)
				return nil, fmt.Errorf("write %s: %v %v", path, werr, cerr)
			}
			_ = os.WriteFile(lastFile, []byte(ip.String()), 0o600)
			return ip, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		ip = next(ip)
		if cmp(ip, last) > 0 {
			ip = first
		}
		if ip.Equal(start) {
			return nil, fmt.Errorf("%w in %s: all %s addresses are in use", ErrExhausted, r, size(first, last))
		}
	}
}

// Release frees every address held by a. Releasing nothing is not an error.
func (s *Store) Release(a Attachment) ([]net.IP, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	held, err := s.list()
	if err != nil {
		return nil, err
	}
	var freed []net.IP
	for ipStr, owner := range held {
		if owner == a {
			if err := os.Remove(filepath.Join(s.dir, ipStr)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return freed, err
			}
			freed = append(freed, net.ParseIP(ipStr))
		}
	}
	return freed, nil
}

// GC frees every address whose owner is not in valid, including files left
// empty or truncated by a plugin killed while allocating.
func (s *Store) GC(valid []Attachment) ([]net.IP, error) {
	keep := map[Attachment]bool{}
	for _, a := range valid {
		keep[a] = true
	}
	return s.Reclaim(func(_ string, owner Attachment, _ time.Duration) bool { return keep[owner] })
}

// Reclaim frees every address keep says no to, given its owner and how
// long ago it was allocated. Not every runtime calls CNI GC, and a plugin
// killed between allocating and answering leaves an address no DEL will
// free: the agent reclaims those.
func (s *Store) Reclaim(keep func(ip string, owner Attachment, age time.Duration) bool) ([]net.IP, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	held, err := s.list()
	if err != nil {
		return nil, err
	}
	var freed []net.IP
	for ipStr, owner := range held {
		path := filepath.Join(s.dir, ipStr)
		fi, err := os.Stat(path)
		if err != nil || keep(ipStr, owner, time.Since(fi.ModTime())) {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return freed, err
		}
		freed = append(freed, net.ParseIP(ipStr))
	}
	return freed, nil
}

// List returns all allocations (IP string → owner). Unreadable or partial
// files map to the zero Attachment.
func (s *Store) List() (map[string]Attachment, error) {
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.list()
}

// Owned returns the addresses held by a, sorted.
func (s *Store) Owned(a Attachment) ([]net.IP, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for ipStr, owner := range all {
		if owner == a {
			ips = append(ips, net.ParseIP(ipStr))
		}
	}
	sort.Slice(ips, func(i, j int) bool { return cmp(ips[i], ips[j]) < 0 })
	return ips, nil
}

func (s *Store) list() (map[string]Attachment, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	out := map[string]Attachment{}
	for _, e := range entries {
		if e.IsDir() || net.ParseIP(e.Name()) == nil {
			continue
		}
		out[e.Name()] = readOwner(filepath.Join(s.dir, e.Name()))
	}
	return out, nil
}

func readOwner(path string) Attachment {
	f, err := os.Open(path)
	if err != nil {
		return Attachment{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 2 || lines[0] == "" || lines[1] == "" {
		return Attachment{}
	}
	return Attachment{ContainerID: lines[0], IfName: lines[1]}
}

// usableRange skips the network and (IPv4) broadcast addresses; pods are
// routed as /32s, but many tools still treat those two as special.
func usableRange(r *net.IPNet) (net.IP, net.IP) {
	base := r.IP.Mask(r.Mask)
	ones, bits := r.Mask.Size()
	if bits-ones < 2 {
		return nil, nil
	}
	first := next(base)
	lastInt := new(big.Int).Add(ipToInt(base), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(bits-ones)), big.NewInt(1)))
	last := intToIP(lastInt, len(base))
	if bits == 32 {
		last = prev(last)
	}
	return first, last
}

func normalize(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip.To16()
}

func ipToInt(ip net.IP) *big.Int { return new(big.Int).SetBytes(normalize(ip)) }

func intToIP(i *big.Int, size int) net.IP {
	b := i.Bytes()
	out := make(net.IP, size)
	copy(out[size-len(b):], b)
	return out
}

func next(ip net.IP) net.IP {
	n := normalize(ip)
	return intToIP(new(big.Int).Add(ipToInt(n), big.NewInt(1)), len(n))
}

func prev(ip net.IP) net.IP {
	n := normalize(ip)
	return intToIP(new(big.Int).Sub(ipToInt(n), big.NewInt(1)), len(n))
}

func cmp(a, b net.IP) int { return ipToInt(a).Cmp(ipToInt(b)) }

func size(first, last net.IP) string {
	return new(big.Int).Add(new(big.Int).Sub(ipToInt(last), ipToInt(first)), big.NewInt(1)).String()
}
