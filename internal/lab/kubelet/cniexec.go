package kubelet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"weft.dev/weft/internal/lab/container"
)

// nodeRootExec runs CNI plugins as a container runtime on this node would:
// with the node's filesystem as their root. Lab nodes share one machine,
// so each has its own root directory (HostRoot) holding what a node keeps
// under /etc/cni, /opt/cni, /run and /var/lib; a plugin is exec'd through
// `weft lab run-container` chrooted there, with the machine's /proc, /dev,
// /sys and /run/netns bound in. The paths the agent writes into its
// conflist then mean the same to the plugin as on a real node.
type nodeRootExec struct {
	invoke.RawExec
	weft     string
	specPath string
	root     string
}

func (k *Kubelet) cniConfig() *libcni.CNIConfig {
	var ex invoke.Exec
	if k.cfg.HostRoot != "" {
		ex = NodeRootExec(k.cfg.WeftBinary, k.cfg.StateDir, k.cfg.HostRoot)
	}
	return libcni.NewCNIConfigWithCacheDir([]string{k.cfg.CNIBinDir}, k.cfg.CNICacheDir, ex)
}

// NodeRootExec runs CNI plugins as the lab node whose state directory and
// root are given does (benchmarks call weft-cni as a node's runtime would).
func NodeRootExec(weft, stateDir, root string) invoke.Exec {
	return &nodeRootExec{weft: weft, specPath: filepath.Join(stateDir, "cni-exec.json"), root: root}
}

// writeCNIExecSpec writes the runner spec CNI plugins are exec'd with.
func (k *Kubelet) writeCNIExecSpec() error {
	if k.cfg.HostRoot == "" {
		return nil
	}
	s := &container.Spec{NodeRoot: k.cfg.HostRoot}
	return s.Save(filepath.Join(k.cfg.StateDir, "cni-exec.json"))
}

func (e *nodeRootExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	inRoot, ok := strings.CutPrefix(pluginPath, strings.TrimSuffix(e.root, "/")+"/")
	if !ok {
		return nil, fmt.Errorf("CNI plugin %s is not under the node's root %s", pluginPath, e.root)
	}
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, e.weft, "lab", "run-container", "--spec", e.specPath, "--", "/"+inRoot)
	c.Env, c.Stdin, c.Stdout, c.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	if err := c.Run(); err != nil {
		// A plugin reports its error as JSON on stdout (CNI spec).
		msg := &types.Error{}
		if stdout.Len() > 0 && json.Unmarshal(stdout.Bytes(), msg) == nil && (msg.Code != 0 || msg.Msg != "") {
			return nil, msg
		}
		return nil, fmt.Errorf("CNI plugin %s failed: %v: %s", pluginPath, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (e *nodeRootExec) Decode(b []byte) (version.PluginInfo, error) {
	d := &version.PluginDecoder{}
	return d.Decode(b)
}
