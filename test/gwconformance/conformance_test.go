// Package gwconformance runs the Gateway API conformance suite of
// sigs.k8s.io/gateway-api v1.6.3 against a cluster running weft ingress
// (hack/gateway-conformance.sh brings up the lab and passes the flags:
// the suite's own, --gateway-class, --conformance-profiles,
// --supported-features, --report-output, ...).
package gwconformance

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestGatewayAPIConformance(t *testing.T) {
	conformance.RunConformance(t)
}
