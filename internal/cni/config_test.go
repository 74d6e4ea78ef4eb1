package cni

import (
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestParseNetConf(t *testing.T) {
	cases := []struct {
		name string
		in   string
		code uint
	}{
		{"ok", `{"cniVersion":"1.1.0","name":"weft","type":"weft-cni"}`, 0},
		{"garbage", `{`, types.ErrDecodingFailure},
		{"no name", `{"cniVersion":"1.1.0","type":"weft-cni"}`, types.ErrInvalidNetworkConfig},
		{"ipam", `{"name":"weft","ipam":{"type":"host-local"}}`, types.ErrUnsupportedField},
		{"mtu", `{"name":"weft","mtu":100}`, types.ErrInvalidNetworkConfig},
	}
	for _, c := range cases {
		conf, err := ParseNetConf([]byte(c.in))
		if c.code == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else if conf.DataDir != DefaultDataDir || conf.RuntimeConfigPath != DefaultRuntimeConfigPath {
				t.Errorf("%s: defaults not applied: %+v", c.name, conf)
			}
			continue
		}
		if err == nil || err.Code != c.code {
			t.Errorf("%s: got %v, want code %d", c.name, err, c.code)
		}
	}
}

func TestHostVethName(t *testing.T) {
	a := HostVethName("abc", "eth0")
	if len(a) > 15 || a[:4] != "weft" {
		t.Fatalf("bad name %q", a)
	}
	if a == HostVethName("abc", "eth1") || a != HostVethName("abc", "eth0") {
		t.Fatal("name not stable or not unique per attachment")
	}
}
