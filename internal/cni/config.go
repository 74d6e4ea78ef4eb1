// Package cni implements the weft CNI plugin: a routed veth per pod (no
// bridge), addresses from the node's podCIDRs, and the CNI 1.1 verbs.
package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"os"

	"github.com/containernetworking/cni/pkg/types"
)

// Default paths on a real node; the lab and tests override them in the config.
const (
	DefaultRuntimeConfigPath = "/run/weft/cni-runtime.json"
	DefaultDataDir           = "/var/lib/weft/cni"
)

// ErrPoolExhausted is weft's own error code (the spec leaves 100+ to plugins).
const ErrPoolExhausted uint = 100

// NetConf is the plugin's entry in the CNI conflist.
type NetConf struct {
	types.PluginConf
	// RuntimeConfigPath is the file the agent writes with the node's
	// podCIDRs and MTU. Until it exists the plugin reports not ready.
	RuntimeConfigPath string `json:"runtimeConfigPath,omitempty"`
	// DataDir holds the IPAM store.
	DataDir string `json:"dataDir,omitempty"`
	// MTU overrides the agent's MTU when set.
	MTU int `json:"mtu,omitempty"`
	// Attachments the runtime still uses, given with GC. Older libcni
	// versions used this key; the spec's key is in PluginConf.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// RuntimeConfig is what the agent hands the plugin for this node.
type RuntimeConfig struct {
	NodeName string   `json:"nodeName,omitempty"`
	PodCIDRs []string `json:"podCIDRs"`
	MTU      int      `json:"mtu"`
	// PolicySocket is where the agent's NetworkPolicy component answers;
	// ADD waits there until the pod's addresses are judged by policy.
	PolicySocket string `json:"policySocket,omitempty"`
}

// ParseNetConf decodes and validates the plugin config; errors carry spec codes.
func ParseNetConf(data []byte) (*NetConf, *types.Error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode weft-cni config", err.Error())
	}
	if conf.Name == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "network config has no name", "")
	}
	if conf.IPAM.Type != "" {
		return nil, types.NewError(types.ErrUnsupportedField,
			"weft-cni allocates addresses itself from the node's podCIDRs; remove the \"ipam\" section",
			"ipam.type="+conf.IPAM.Type)
	}
	if conf.MTU < 0 || (conf.MTU > 0 && conf.MTU < 576) || conf.MTU > 65535 {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("mtu %d out of range 576..65535", conf.MTU), "")
	}
	if conf.RuntimeConfigPath == "" {
		conf.RuntimeConfigPath = DefaultRuntimeConfigPath
	}
	if conf.DataDir == "" {
		conf.DataDir = DefaultDataDir
	}
	return conf, nil
}

// ValidAttachments returns the attachments given with GC under either key.
func (c *NetConf) ValidAttachments() []types.GCAttachment {
	if len(c.PluginConf.ValidAttachments) > 0 {
		return c.PluginConf.ValidAttachments
	}
	return c.LegacyAttachments
}

// LoadRuntimeConfig reads the agent's file. A missing file means the agent
// has not configured this node yet (code 50 for STATUS, 11 for ADD).
func LoadRuntimeConfig(path string) (*RuntimeConfig, []*net.IPNet, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	rc := &RuntimeConfig{}
	if err := json.Unmarshal(data, rc); err != nil {
		return nil, nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if len(rc.PodCIDRs) == 0 {
		return nil, nil, fmt.Errorf("%s lists no podCIDRs", path)
	}
	var nets []*net.IPNet
	for _, c := range rc.PodCIDRs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: bad podCIDR %q: %w", path, c, err)
		}
		nets = append(nets, n)
	}
	return rc, nets, nil
}
