// Command weft-cni is weft's CNI plugin (spec 1.1.0). It is kept small and
// links no Kubernetes client: everything it needs from the cluster reaches
// it through the runtime config file the weft agent writes.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"weft.dev/weft/internal/cni"
	weftversion "weft.dev/weft/internal/version"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cni.Add,
		Del:    cni.Del,
		Check:  cni.Check,
		GC:     cni.GC,
		Status: cni.Status,
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "weft-cni "+weftversion.Version)
}
