package cni

import (
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseNetConf feeds arbitrary bytes as the plugin's network config, as
// a runtime would hand it on stdin. What must hold: no panic; a rejection
// carries a CNI spec error code (or weft's own, 100+); an accepted config
// is one the plugin can act on (a name, no foreign IPAM, an MTU in range,
// its paths set), and its prevResult, if any, parses or is refused without
// a panic.
func FuzzParseNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni"}`,
		`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","mtu":1450,"dataDir":"/tmp/x","runtimeConfigPath":"/tmp/r.json"}`,
		`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","ipam":{"type":"host-local"}}`,
		`{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.5/24"}]}}`,
		`{"cniVersion":"1.1.0","name":"weft","type":"weft-cni","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"name":"","mtu":-1}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	specCodes := map[uint]bool{types.ErrUnknown: true, types.ErrIncompatibleCNIVersion: true, types.ErrUnsupportedField: true,
		types.ErrUnknownContainer: true, types.ErrInvalidEnvironmentVariables: true, types.ErrIOFailure: true,
		types.ErrDecodingFailure: true, types.ErrInvalidNetworkConfig: true, types.ErrTryAgainLater: true,
		types.ErrPluginNotAvailable: true, types.ErrLimitedConnectivity: true}
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := ParseNetConf(data)
		if err != nil {
			if conf != nil {
				t.Fatalf("a config and an error: %+v %v", conf, err)
			}
			if !specCodes[err.Code] && err.Code < 100 {
				t.Fatalf("error code %d is neither the spec's nor weft's: %v", err.Code, err)
			}
			if err.Msg == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if conf.Name == "" || conf.IPAM.Type != "" || conf.MTU < 0 || (conf.MTU > 0 && conf.MTU < 576) || conf.MTU > 65535 ||
			conf.RuntimeConfigPath == "" || conf.DataDir == "" {
			t.Fatalf("accepted a config the plugin cannot act on: %+v", conf)
		}
		_ = ParsePrevResult(&conf.PluginConf)
		_ = conf.ValidAttachments()
	})
}
