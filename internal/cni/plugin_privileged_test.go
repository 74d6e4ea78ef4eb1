package cni_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"weft.dev/weft/internal/cni"
	"weft.dev/weft/internal/cni/ipam"
	"weft.dev/weft/internal/testutil"
)

var pluginDir string

func TestMain(m *testing.M) {
	if os.Geteuid() == 0 {
		testutil.RemoveStaleTestNetNS()
		dir, err := os.MkdirTemp("", "weft-cni-bin-")
		if err != nil {
			panic(err)
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "weft-cni"), "weft.dev/weft/cmd/weft-cni").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build weft-cni: %v\n%s", err, out)
			os.Exit(1)
		}
		pluginDir = dir
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// env is one throwaway node: a "host" netns the plugin runs in, a libcni
// caller, and the agent's runtime config.
type env struct {
	t       *testing.T
	dir     string
	host    ns.NetNS
	cniConf *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	podCIDR string
	// podCIDR6: a second (IPv6) pod CIDR for dual-stack tests.
	podCIDR6 string
	rawConf  []byte
}

func newEnv(t *testing.T, podCIDR string, writeRuntime bool) *env {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	e := &env{t: t, dir: dir, host: testutil.NewNetNS(t), podCIDR: podCIDR}
	e.rawConf = []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","plugins":[{"type":"weft-cni","runtimeConfigPath":%q,"dataDir":%q}]}`,
		filepath.Join(dir, "runtime.json"), filepath.Join(dir, "data")))
	list, err := libcni.ConfListFromBytes(e.rawConf)
	if err != nil {
		t.Fatal(err)
	}
	e.list = list
	e.cniConf = libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, filepath.Join(dir, "cache"), nil)
	if writeRuntime {
		e.writeRuntime()
	}
	// Give the throwaway host a node address, as a real node has (on lo:
	// this kernel has no dummy links).
	if err := e.inHost(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("198.18.100.1"), Mask: net.CIDRMask(32, 32)}})
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) writeRuntime() {
	cidrs := []string{e.podCIDR}
	if e.podCIDR6 != "" {
		cidrs = append(cidrs, e.podCIDR6)
	}
	b, _ := json.Marshal(cni.RuntimeConfig{NodeName: "test", PodCIDRs: cidrs, MTU: 1400})
	if err := os.WriteFile(filepath.Join(e.dir, "runtime.json"), b, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) rt(id string, pod ns.NetNS) *libcni.RuntimeConf {
	p := ""
	if pod != nil {
		p = pod.Path()
	}
	return &libcni.RuntimeConf{ContainerID: id, NetNS: p, IfName: "eth0",
		Args: [][2]string{{"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", id}}}
}

// inHost runs f in the throwaway host netns, so the plugin (a child process
// forked from this locked thread) sees that namespace as its host.
func (e *env) inHost(f func() error) error {
	return e.host.Do(func(ns.NetNS) error { return f() })
}

func (e *env) add(ctx context.Context, id string, pod ns.NetNS) (*current.Result, error) {
	var res types.Result
	err := e.inHost(func() error {
		var err error
		res, err = e.cniConf.AddNetworkList(ctx, e.list, e.rt(id, pod))
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

func (e *env) del(id string, pod ns.NetNS) error {
	return e.inHost(func() error { return e.cniConf.DelNetworkList(context.Background(), e.list, e.rt(id, pod)) })
}

func (e *env) store() *ipam.Store {
	s, err := ipam.Open(filepath.Join(e.dir, "data"), "weft")
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *env) hostLink(id string) (netlink.Link, error) {
	var l netlink.Link
	err := e.inHost(func() error {
		var err error
		l, err = netlink.LinkByName(cni.HostVethName(id, "eth0"))
		return err
	})
	return l, err
}

func cniCode(t *testing.T, err error) uint {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a CNI error", err, err)
	}
	return te.Code
}

func TestPrivilegedAddCheckDel(t *testing.T) {
	e := newEnv(t, "10.244.7.0/24", true)
	pod := testutil.NewNetNS(t)
	res, err := e.add(context.Background(), "pod-a", pod)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("want 1 IP, got %+v", res.IPs)
	}
	podIP := res.IPs[0].Address.IP
	_, cidr, _ := net.ParseCIDR(e.podCIDR)
	if !cidr.Contains(podIP) {
		t.Fatalf("pod IP %s outside podCIDR %s", podIP, cidr)
	}

	// Inside the pod: address, MTU from the runtime config, default route.
	err = pod.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if l.Attrs().MTU != 1400 {
			return fmt.Errorf("pod MTU %d, want 1400", l.Attrs().MTU)
		}
		routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range routes {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw.Equal(cni.GatewayV4) {
				return nil
			}
		}
		return fmt.Errorf("no default route via %s in %+v", cni.GatewayV4, routes)
	})
	if err != nil {
		t.Fatal(err)
	}

	// A real dial from the host netns to a listener in the pod.
	var ln net.Listener
	if err := pod.Do(func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(podIP.String(), "8080"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	if err := e.inHost(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(podIP.String(), "8080"), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 5)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Read(buf); err != nil {
			return err
		}
		if string(buf) != "hello" {
			return fmt.Errorf("read %q", buf)
		}
		return nil
	}); err != nil {
		t.Fatalf("dial host→pod: %v", err)
	}

	if err := e.inHost(func() error { return e.cniConf.CheckNetworkList(context.Background(), e.list, e.rt("pod-a", pod)) }); err != nil {
		t.Fatalf("CHECK on healthy pod: %v", err)
	}
	// CHECK must notice a removed host route.
	if err := e.inHost(func() error {
		l, _ := netlink.LinkByName(cni.HostVethName("pod-a", "eth0"))
		return netlink.RouteDel(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: podIP, Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.inHost(func() error { return e.cniConf.CheckNetworkList(context.Background(), e.list, e.rt("pod-a", pod)) }); err == nil {
		t.Fatal("CHECK passed with the host route removed")
	}

	if err := e.del("pod-a", pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := e.del("pod-a", pod); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if _, err := e.hostLink("pod-a"); err == nil {
		t.Fatal("host veth survived DEL")
	}
	if all, _ := e.store().List(); len(all) != 0 {
		t.Fatalf("addresses still held after DEL: %v", all)
	}
}

func TestPrivilegedDelAfterNetnsGone(t *testing.T) {
	e := newEnv(t, "10.244.8.0/24", true)
	name := fmt.Sprintf("weft-test-%d-gone", os.Getpid())
	pod, err := testutil.CreateNamedNetNS(name)
	if err != nil {
		t.Fatal(err)
	}
	path := pod.Path()
	if _, err := e.add(context.Background(), "pod-gone", pod); err != nil {
		t.Fatal(err)
	}
	pod.Close()
	if err := exec.Command("ip", "netns", "del", name).Run(); err != nil {
		t.Fatal(err)
	}
	rt := e.rt("pod-gone", nil)
	rt.NetNS = path
	if err := e.inHost(func() error { return e.cniConf.DelNetworkList(context.Background(), e.list, rt) }); err != nil {
		t.Fatalf("DEL with netns gone: %v", err)
	}
	if all, _ := e.store().List(); len(all) != 0 {
		t.Fatalf("addresses still held: %v", all)
	}
}

func TestPrivilegedConcurrentAdds(t *testing.T) {
	e := newEnv(t, "10.244.9.0/24", true)
	const n = 100
	pods := make([]ns.NetNS, n)
	for i := range pods {
		pods[i] = testutil.NewNetNS(t)
	}
	ips := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := e.add(context.Background(), fmt.Sprintf("pod-%d", i), pods[i])
			if err != nil {
				errs[i] = err
				return
			}
			ips[i] = res.IPs[0].Address.IP.String()
		}(i)
	}
	wg.Wait()
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("ADD %d: %v", i, errs[i])
		}
		if j, dup := seen[ips[i]]; dup {
			t.Fatalf("pods %d and %d both got %s", j, i, ips[i])
		}
		seen[ips[i]] = i
	}
	all, _ := e.store().List()
	if len(all) != n {
		t.Fatalf("store holds %d addresses, want %d", len(all), n)
	}
	for i := 0; i < n; i++ {
		if err := e.del(fmt.Sprintf("pod-%d", i), pods[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPrivilegedPoolExhaustion(t *testing.T) {
	e := newEnv(t, "10.244.10.0/29", true) // .1 to .6 usable
	for i := 0; i < 6; i++ {
		if _, err := e.add(context.Background(), fmt.Sprintf("p%d", i), testutil.NewNetNS(t)); err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
	}
	_, err := e.add(context.Background(), "one-too-many", testutil.NewNetNS(t))
	if err == nil {
		t.Fatal("7th ADD in a /29 succeeded")
	}
	if code := cniCode(t, err); code != cni.ErrPoolExhausted {
		t.Fatalf("code %d, want %d (%v)", code, cni.ErrPoolExhausted, err)
	}
	if !strings.Contains(err.Error(), "exhausted") {
		t.Fatalf("message does not say exhausted: %v", err)
	}
	if _, lerr := e.hostLink("one-too-many"); lerr == nil {
		t.Fatal("failed ADD left a host veth")
	}
}

// rawExec runs the plugin binary with an arbitrary config, as a runtime would.
func (e *env) rawExec(verb string, conf []byte, pod ns.NetNS) error {
	args := &invoke.Args{Command: verb, ContainerID: "raw", IfName: "eth0", Path: pluginDir}
	if pod != nil {
		args.NetNS = pod.Path()
	}
	return e.inHost(func() error {
		_, err := invoke.ExecPluginWithResult(context.Background(), filepath.Join(pluginDir, "weft-cni"), conf, args, nil)
		return err
	})
}

func TestPrivilegedBadConfig(t *testing.T) {
	e := newEnv(t, "10.244.11.0/24", true)
	pod := testutil.NewNetNS(t)
	rc := filepath.Join(e.dir, "runtime.json")
	cases := []struct {
		name string
		conf string
		code uint
		msg  string
	}{
		{"not json", `{"cniVersion":"1.1.0",`, types.ErrDecodingFailure, "unmarshal"},
		{"no name", `{"cniVersion":"1.1.0","type":"weft-cni"}`, types.ErrInvalidNetworkConfig, "name"},
		{"unknown version", `{"cniVersion":"9.9.9","name":"weft","type":"weft-cni"}`, types.ErrIncompatibleCNIVersion, "version"},
		{"foreign ipam", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","runtimeConfigPath":%q,"ipam":{"type":"host-local"}}`, rc), types.ErrUnsupportedField, "ipam"},
		{"bad mtu", fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","runtimeConfigPath":%q,"mtu":42}`, rc), types.ErrInvalidNetworkConfig, "mtu"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := e.rawExec("ADD", []byte(c.conf), pod)
			if err == nil {
				t.Fatal("ADD accepted a bad config")
			}
			if code := cniCode(t, err); code != c.code {
				t.Fatalf("code %d, want %d: %v", code, c.code, err)
			}
			if !strings.Contains(strings.ToLower(err.Error()), c.msg) {
				t.Fatalf("message %q does not mention %q", err, c.msg)
			}
		})
	}
	// A netns that does not exist is "container unknown" (3).
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","runtimeConfigPath":%q,"dataDir":%q}`, rc, filepath.Join(e.dir, "data"))
	args := &invoke.Args{Command: "ADD", ContainerID: "x", IfName: "eth0", NetNS: "/run/netns/weft-test-does-not-exist", Path: pluginDir}
	err := e.inHost(func() error {
		_, err := invoke.ExecPluginWithResult(context.Background(), filepath.Join(pluginDir, "weft-cni"), []byte(conf), args, nil)
		return err
	})
	if err == nil || cniCode(t, err) != types.ErrUnknownContainer {
		t.Fatalf("missing netns: got %v, want code %d", err, types.ErrUnknownContainer)
	}
	if all, _ := e.store().List(); len(all) != 0 {
		t.Fatalf("failed ADDs leaked addresses: %v", all)
	}
}

func TestPrivilegedStatusAndVersion(t *testing.T) {
	e := newEnv(t, "10.244.12.0/24", false)
	err := e.inHost(func() error { return e.cniConf.GetStatusNetworkList(context.Background(), e.list) })
	if err == nil || cniCode(t, err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS before agent config: %v, want code 50", err)
	}
	// ADD before the agent wrote config: try again later (11).
	if _, err := e.add(context.Background(), "early", testutil.NewNetNS(t)); err == nil || cniCode(t, err) != types.ErrTryAgainLater {
		t.Fatalf("ADD before agent config: %v, want code 11", err)
	}
	e.writeRuntime()
	if err := e.inHost(func() error { return e.cniConf.GetStatusNetworkList(context.Background(), e.list) }); err != nil {
		t.Fatalf("STATUS after agent config: %v", err)
	}
	info, err := e.cniConf.GetVersionInfo(context.Background(), "weft-cni")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"1.1.0": false, "1.0.0": false, "0.4.0": false}
	for _, v := range info.SupportedVersions() {
		if _, ok := want[v]; ok {
			want[v] = true
		}
	}
	for v, ok := range want {
		if !ok {
			t.Errorf("VERSION does not list %s: %v", v, info.SupportedVersions())
		}
	}
}

func TestPrivilegedGC(t *testing.T) {
	e := newEnv(t, "10.244.13.0/24", true)
	pods := map[string]ns.NetNS{}
	for _, id := range []string{"keep", "drop1", "drop2"} {
		pods[id] = testutil.NewNetNS(t)
		if _, err := e.add(context.Background(), id, pods[id]); err != nil {
			t.Fatal(err)
		}
	}
	// The runtime lost track of drop1 and drop2 without calling DEL.
	err := e.inHost(func() error {
		return e.cniConf.GCNetworkList(context.Background(), e.list, &libcni.GCArgs{
			ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}},
		})
	})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	all, _ := e.store().List()
	if len(all) != 1 {
		t.Fatalf("after GC store holds %v, want only keep's address", all)
	}
	for _, owner := range all {
		if owner.ContainerID != "keep" {
			t.Fatalf("GC kept %v", owner)
		}
	}
	if _, err := e.hostLink("keep"); err != nil {
		t.Fatalf("GC removed a valid attachment's veth: %v", err)
	}
	for _, id := range []string{"drop1", "drop2"} {
		if _, err := e.hostLink(id); err == nil {
			t.Fatalf("GC left %s's host veth", id)
		}
	}
}

// TestPrivilegedKillDuringAdd kills plugins at varied points of ADD (libcni
// kills the plugin with SIGKILL when the context ends) and checks that,
// after GC with the attachments the runtime knows succeeded, every address
// is owned exactly once and nothing leaked.
func TestPrivilegedKillDuringAdd(t *testing.T) {
	e := newEnv(t, "10.244.14.0/24", true)
	const n = 40
	var mu sync.Mutex
	succeeded := map[string]string{}
	killed := 0
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		pod := testutil.NewNetNS(t)
		go func(i int) {
			defer wg.Done()
			// Deadlines from 1 ms to 512 ms, doubling every four ADDs,
			// cover every phase of ADD, and the longest complete even on a
			// loaded machine.
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1<<(i/4))*time.Millisecond)
			defer cancel()
			id := fmt.Sprintf("k%d", i)
			res, err := e.add(ctx, id, pod)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				killed++
				return
			}
			succeeded[id] = res.IPs[0].Address.IP.String()
		}(i)
	}
	wg.Wait()
	runtime.Gosched()
	if killed == 0 || len(succeeded) == 0 {
		t.Fatalf("%d ADDs killed, %d completed: the test needs both to mean anything", killed, len(succeeded))
	}
	var valid []types.GCAttachment
	for id := range succeeded {
		valid = append(valid, types.GCAttachment{ContainerID: id, IfName: "eth0"})
	}
	if err := e.inHost(func() error {
		return e.cniConf.GCNetworkList(context.Background(), e.list, &libcni.GCArgs{ValidAttachments: valid})
	}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	all, _ := e.store().List()
	if len(all) != len(succeeded) {
		t.Fatalf("after GC %d addresses held, want %d (killed %d): %v", len(all), len(succeeded), killed, all)
	}
	for ipStr, owner := range all {
		if succeeded[owner.ContainerID] != ipStr {
			t.Fatalf("address %s owned by %v, which was given %q", ipStr, owner, succeeded[owner.ContainerID])
		}
	}
	// No host veth of a killed ADD may survive GC.
	_ = e.inHost(func() error {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, cni.HostVethPrefix) {
				found := false
				for id := range succeeded {
					if cni.HostVethName(id, "eth0") == l.Attrs().Name {
						found = true
					}
				}
				if !found {
					t.Errorf("leaked host veth %s", l.Attrs().Name)
				}
			}
		}
		return nil
	})
	t.Logf("%d ADDs succeeded, %d killed", len(succeeded), killed)
}

// Dual-stack: one address per pod CIDR, both usable the moment ADD
// returns (no IPv6 duplicate address detection holding the pod's address
// back), the pod reaches the host over IPv6 through fe80::1, and DEL frees
// both.
func TestPrivilegedDualStackAdd(t *testing.T) {
	e := newEnv(t, "10.244.7.0/24", false)
	e.podCIDR6 = "fd00:10:244:7::/64"
	e.writeRuntime()
	if err := e.inHost(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("fd00:198:18:100::1"), Mask: net.CIDRMask(128, 128)}})
	}); err != nil {
		t.Fatal(err)
	}
	pod := testutil.NewNetNS(t)
	res, err := e.add(context.Background(), "ds1", pod)
	if err != nil {
		t.Fatal(err)
	}
	_, v6net, _ := net.ParseCIDR(e.podCIDR6)
	var v4, v6 net.IP
	for _, ipc := range res.IPs {
		if ipc.Address.IP.To4() != nil {
			v4 = ipc.Address.IP
		} else if v6net.Contains(ipc.Address.IP) {
			v6 = ipc.Address.IP
		}
	}
	if len(res.IPs) != 2 || v4 == nil || v6 == nil {
		t.Fatalf("IPs %v, want one IPv4 and one in %s", res.IPs, e.podCIDR6)
	}
	podNS := filepath.Base(pod.Path())
	out, err := exec.Command("ip", "-n", podNS, "-6", "addr", "show", "dev", "eth0", "tentative").CombinedOutput()
	if err != nil || strings.Contains(string(out), v6.String()) {
		t.Fatalf("pod IPv6 address still tentative after ADD: %v %s", err, out)
	}
	if out, err := exec.Command("ip", "netns", "exec", podNS, "ping", "-c", "1", "-W", "2", "fd00:198:18:100::1").CombinedOutput(); err != nil {
		t.Fatalf("pod → host over IPv6 right after ADD: %v %s", err, out)
	}
	if err := e.del("ds1", pod); err != nil {
		t.Fatal(err)
	}
	held, err := e.store().List()
	if err != nil || len(held) != 0 {
		t.Fatalf("after DEL the store still holds %v %v", held, err)
	}
}
