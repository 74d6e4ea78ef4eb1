package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netns"

	"weft.dev/weft/internal/lab"
	"weft.dev/weft/internal/lab/kubelet"
	"weft.dev/weft/internal/testutil"
)

// adder runs weft-cni ADD and DEL on the server's node through libcni,
// as its lab node does, with the node's own conflist (policy socket in
// the runtime config) or a copy whose runtime config has no socket.
type adder struct {
	cc            *libcni.CNIConfig
	with, without *libcni.NetworkConfigList
	node          ns.NetNS
	work          string
}

func newAdder(binDir string) (*adder, error) {
	l := lab.New(lab.DefaultStateDir, lab.DefaultCacheDir, binDir, os.Stderr)
	nd, root := l.NodeDir(server), l.NodeRoot(server)
	files, _ := filepath.Glob(filepath.Join(root, "etc", "cni", "net.d", "*.conflist"))
	if len(files) != 1 {
		return nil, fmt.Errorf("want one conflist in %s, found %v", nd, files)
	}
	with, err := libcni.ConfListFromFile(files[0])
	if err != nil {
		return nil, err
	}
	var conf map[string]any
	if err := json.Unmarshal(with.Plugins[0].Bytes, &conf); err != nil {
		return nil, err
	}
	rcPath, _ := conf["runtimeConfigPath"].(string)
	var rc map[string]any
	b, err := os.ReadFile(filepath.Join(root, rcPath)) // the node's path
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &rc); err != nil {
		return nil, err
	}
	if rc["policySocket"] == nil {
		return nil, fmt.Errorf("%s names no policy socket: the agent runs without NetworkPolicy", rcPath)
	}
	// Under the node's /tmp: weft-cni runs with the node's root as "/".
	work, err := os.MkdirTemp(filepath.Join(root, "tmp"), "weft-bench-netpol-")
	if err != nil {
		return nil, err
	}
	delete(rc, "policySocket")
	b, _ = json.Marshal(rc)
	noWait := filepath.Join(work, "runtime.json")
	if err := os.WriteFile(noWait, b, 0o644); err != nil {
		return nil, err
	}
	conf["runtimeConfigPath"] = strings.TrimPrefix(noWait, root)
	plugin, _ := json.Marshal(conf)
	list, _ := json.Marshal(map[string]any{"cniVersion": with.CNIVersion, "name": with.Name, "plugins": []json.RawMessage{plugin}})
	without, err := libcni.ConfListFromBytes(list)
	if err != nil {
		return nil, err
	}
	node, err := ns.GetNS("/run/netns/" + server)
	if err != nil {
		return nil, err
	}
	exec := kubelet.NodeRootExec(filepath.Join(binDir, "weft"), nd, root)
	return &adder{cc: libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(root, "opt", "cni", "bin")}, filepath.Join(work, "cache"), exec),
		with: with, without: without, node: node, work: work}, nil
}

// add times one ADD+DEL in a fresh pod namespace, in milliseconds.
func (a *adder) add(i int, wait bool) (float64, error) {
	name := fmt.Sprintf("weft-bench-add-%d-%v", i, wait)
	pod, err := testutil.CreateNamedNetNS(name)
	if err != nil {
		return 0, err
	}
	defer func() {
		pod.Close()
		_ = netns.DeleteNamed(name)
	}()
	list := a.without
	if wait {
		list = a.with
	}
	rt := &libcni.RuntimeConf{ContainerID: name, NetNS: pod.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", benchNS}, {"K8S_POD_NAME", "bench-add"}}}
	var took time.Duration
	err = a.node.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := a.cc.AddNetworkList(ctx, list, rt); err != nil {
			return fmt.Errorf("ADD: %w", err)
		}
		err := a.cc.DelNetworkList(ctx, list, rt)
		took = time.Since(start)
		return err
	})
	return float64(took.Microseconds()) / 1000, err
}

func (a *adder) close() {
	a.node.Close()
	os.RemoveAll(a.work)
}
