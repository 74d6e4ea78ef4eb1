package hostport

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"sigs.k8s.io/knftables"

	"weft.dev/weft/internal/testutil"
)

// The table loads into the real kernel (the Fake does not check nft
// syntax, e.g. which priority keywords a hook accepts).
func TestPrivilegedTableLoads(t *testing.T) {
	testutil.RequireRoot(t)
	netns := testutil.NewNetNS(t)
	ms := []Mapping{{HostIP: "127.0.0.1", HostPort: 54323, Protocol: "tcp", PodIP: "10.244.1.6", ContainerPort: 8080, Pod: "ns/lo"},
		{HostPort: 54323, Protocol: "udp", PodIP: "10.244.1.7", ContainerPort: 8081, Pod: "ns/u"},
		// The longest names the API allows: the comment must stay in the
		// kernel's 128 bytes.
		{HostPort: 54324, Protocol: "tcp", PodIP: "10.244.1.8", ContainerPort: 8080, Pod: strings.Repeat("n", 63) + "/" + strings.Repeat("p", 253)},
		// IPv6, wildcard and with a host IP.
		{HostPort: 54325, Protocol: "tcp", PodIP: "fd10:244:0:1::9", ContainerPort: 8080, Pod: "ns/v6", IPv6: true},
		{HostIP: "fd00::11", HostPort: 54326, Protocol: "udp", PodIP: "fd10:244:0:1::9", ContainerPort: 8081, Pod: "ns/v6", IPv6: true}}
	err := netns.Do(func(ns.NetNS) error {
		nft, err := knftables.New(knftables.InetFamily, TableName)
		if err != nil {
			return err
		}
		for i := 0; i < 2; i++ { // twice: rebuilding an existing table works too
			tx := nft.NewTransaction()
			Build(tx, ms)
			if err := nft.Run(context.Background(), tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", filepath.Base(netns.Path()), "nft", "list", "table", "inet", TableName).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "dnat ip to 10.244.1.6:8080") || strings.Count(string(out), "dnat ip to") != 3 || strings.Count(string(out), "dnat ip6 to") != 2 {
		t.Fatalf("table in the kernel: %v\n%s", err, out)
	}
}
