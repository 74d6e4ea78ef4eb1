package reclaim

import (
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/cni"
	"weft.dev/weft/internal/cni/ipam"
)

// Only an allocation that is old, whose IP no pod on the node has, and
// whose sandbox (host veth) is gone is freed; a file left empty by a plugin
// killed mid-write is freed once old.
func TestReclaimFreesOnlyUnused(t *testing.T) {
	dir := t.TempDir()
	store, err := ipam.Open(dir, "weft")
	if err != nil {
		t.Fatal(err)
	}
	r := []*net.IPNet{{IP: net.ParseIP("10.244.1.0").To4(), Mask: net.CIDRMask(24, 32)}}
	ips := map[string]string{}
	for _, id := range []string{"running", "sandbox", "leaked", "young"} {
		got, err := store.Allocate(ipam.Attachment{ContainerID: id, IfName: "eth0"}, r)
		if err != nil {
			t.Fatal(err)
		}
		ips[id] = got[0].String()
	}
	netDir := filepath.Join(dir, "weft")
	if err := os.WriteFile(filepath.Join(netDir, "10.244.1.200"), nil, 0o644); err != nil { // killed mid-write
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	for _, name := range []string{ips["running"], ips["sandbox"], ips["leaked"], "10.244.1.200"} {
		if err := os.Chtimes(filepath.Join(netDir, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	podIPs := map[string]bool{ips["running"]: true}
	links := map[string]bool{cni.HostVethName("sandbox", "eth0"): true}
	freed, err := store.Reclaim(func(ip string, owner ipam.Attachment, age time.Duration) bool {
		return Keep(ip, owner, age, DefaultGrace, podIPs, func(n string) bool { return links[n] })
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ip := range freed {
		got = append(got, ip.String())
	}
	sort.Strings(got)
	want := []string{ips["leaked"], "10.244.1.200"}
	sort.Strings(want)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("freed %v, want %v", got, want)
	}
	left, _ := store.List()
	if len(left) != 3 {
		t.Fatalf("left %v", left)
	}
	// A freed address can be handed out again.
	if again, err := store.Allocate(ipam.Attachment{ContainerID: "next", IfName: "eth0"}, r); err != nil || again[0] == nil {
		t.Fatalf("allocate after reclaim: %v %v", again, err)
	}
}
