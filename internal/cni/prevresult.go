package cni

import (
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// ParsePrevResult decodes conf.RawPrevResult into conf.PrevResult.
func ParsePrevResult(conf *types.PluginConf) error {
	return version.ParsePrevResult(conf)
}
