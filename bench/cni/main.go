// Command cni measures CNI ADD and DEL latency through libcni, for
// weft-cni and, in the same run and interleaved pod by pod, for the
// reference plugins ptp + host-local (the closest upstream equivalent of a
// routed veth with node-local IPAM). It prints a Markdown section.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"time"
	"weft.dev/weft/bench/internal/figure"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"weft.dev/weft/internal/testutil"
)

type contender struct {
	name string
	list *libcni.NetworkConfigList
	cc   *libcni.CNIConfig
	host ns.NetNS
	adds []time.Duration
	dels []time.Duration
}

func main() {
	// Registered first, so it runs last: after every cleanup below.
	defer figure.Exit()
	pods := flag.Int("pods", 200, "pods to add and delete")
	weftBin := flag.String("weft-cni", "bin/weft-cni", "weft-cni binary")
	flag.Parse()
	testutil.RemoveStaleTestNetNS()
	work, err := os.MkdirTemp("", "weft-bench-cni-")
	check(err)
	defer os.RemoveAll(work)

	bin := filepath.Join(work, "bin")
	check(os.MkdirAll(bin, 0o755))
	abs, _ := filepath.Abs(*weftBin)
	check(os.Symlink(abs, filepath.Join(bin, "weft-cni")))
	for _, p := range []string{"github.com/containernetworking/plugins/plugins/main/ptp", "github.com/containernetworking/plugins/plugins/ipam/host-local"} {
		out, err := exec.Command("go", "build", "-o", bin+"/", p).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", p, err, out)
			os.Exit(1)
		}
	}
	rc := filepath.Join(work, "runtime.json")
	check(os.WriteFile(rc, []byte(`{"podCIDRs":["10.244.0.0/16"],"mtu":1500}`), 0o644))

	mk := func(name, conf string) *contender {
		list, err := libcni.ConfListFromBytes([]byte(conf))
		check(err)
		h, err := testutil.CreateNamedNetNS(fmt.Sprintf("weft-test-%d-bench-%s", os.Getpid(), name))
		check(err)
		// A node address, as on a real node.
		check(h.Do(func(ns.NetNS) error {
			lo, _ := netlink.LinkByName("lo")
			return netlink.AddrAdd(lo, &netlink.Addr{IPNet: mustCIDR("198.18.100.1/32").IPNet})
		}))
		return &contender{name: name, list: list, host: h,
			cc: libcni.NewCNIConfigWithCacheDir([]string{bin}, filepath.Join(work, "cache-"+name), nil)}
	}
	weft := mk("weft", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","plugins":[{"type":"weft-cni","runtimeConfigPath":%q,"dataDir":%q}]}`,
		rc, filepath.Join(work, "weft-data")))
	ptp := mk("ptp", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ptp","plugins":[{"type":"ptp","ipMasq":false,"mtu":1500,
		"ipam":{"type":"host-local","ranges":[[{"subnet":"10.245.0.0/16"}]],"dataDir":%q}}]}`, filepath.Join(work, "ptp-data")))
	defer cleanupNS(weft.host, ptp.host)
	contenders := []*contender{weft, ptp}

	podNS := make([]ns.NetNS, *pods)
	names := make([]string, *pods)
	for i := range podNS {
		names[i] = fmt.Sprintf("weft-test-%d-bp%d", os.Getpid(), i)
		podNS[i], err = testutil.CreateNamedNetNS(names[i])
		check(err)
	}
	defer func() {
		for i, n := range podNS {
			n.Close()
			_ = netns.DeleteNamed(names[i])
		}
	}()

	ctx := context.Background()
	rt := func(c *contender, i int) *libcni.RuntimeConf {
		ifname := "eth0"
		if c.name == "ptp" {
			ifname = "eth1" // both contenders share each pod netns
		}
		return &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench-%d", i), NetNS: podNS[i].Path(), IfName: ifname}
	}
	// Interleave so machine noise hits both alike.
	for i := 0; i < *pods; i++ {
		for _, c := range contenders {
			err := c.host.Do(func(ns.NetNS) error {
				t := time.Now()
				_, err := c.cc.AddNetworkList(ctx, c.list, rt(c, i))
				c.adds = append(c.adds, time.Since(t))
				return err
			})
			check(err)
		}
	}
	for i := 0; i < *pods; i++ {
		for _, c := range contenders {
			err := c.host.Do(func(ns.NetNS) error {
				t := time.Now()
				err := c.cc.DelNetworkList(ctx, c.list, rt(c, i))
				c.dels = append(c.dels, time.Since(t))
				return err
			})
			check(err)
		}
	}
	fmt.Printf("### CNI ADD / DEL latency, %d pods, through libcni\n\n", *pods)
	fmt.Printf("`go run ./bench/cni -pods %d -weft-cni bin/weft-cni` (part of `make bench`), %s. Sequential ADDs then DELs, weft-cni and ptp+host-local interleaved pod by pod in one run (%s, %d CPUs); any failed ADD or DEL ends the bench with an error.\n\n", *pods, figure.Stamp(), runtime.GOARCH, runtime.NumCPU())
	fmt.Println("| plugin | ADD median | ADD p99 | DEL median | DEL p99 |")
	fmt.Println("| --- | --- | --- | --- | --- |")
	for _, c := range contenders {
		label := "weft-cni"
		if c.name == "ptp" {
			label = "ptp + host-local (baseline, containernetworking/plugins v1.9.1)"
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", label, ms(pct(c.adds, 50)), ms(pct(c.adds, 99)), ms(pct(c.dels, 50)), ms(pct(c.dels, 99)))
	}
	med, base := figure.Of(pct(weft.adds, 50).Seconds()*1000, nil), figure.Of(pct(ptp.adds, 50).Seconds()*1000, nil)
	fmt.Printf("\nTarget ADD median ≤ 50 ms: %s. Ratio weft/baseline ADD median: %s.\n\n",
		med.Judge("%.1f ms", func(x float64) bool { return x <= 50 }), figure.Div(med, base).Format("%.2f"))
}

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	idx := (len(s)*p + 99) / 100
	if idx < 1 {
		idx = 1
	}
	return s[idx-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func cleanupNS(list ...ns.NetNS) {
	for _, n := range list {
		p := n.Path()
		n.Close()
		_ = netns.DeleteNamed(filepath.Base(p))
	}
}

func mustCIDR(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	check(err)
	return a
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
