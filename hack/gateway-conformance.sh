#!/usr/bin/env bash
# The Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance
# v1.6.3) against a lab of its own, run from the control-plane node's
# namespace (which reaches the Gateways' LoadBalancer addresses).
# RUN_TEST: one test name; SKIP: comma-separated tests left out; DOC=1:
# copy the report into docs/conformance/ instead of failing on a failure;
# KEEP_LAB=1: leave the lab up.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/_output/gateway-conformance
mkdir -p "$out"
(cd test/gwconformance && go build -o "$root/bin/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic &&
  go test -c -o "$out/gwconformance.test" .)
bin/weft lab down >/dev/null 2>&1 || true
bin/weft lab up --nodes 2
if [[ -z "${KEEP_LAB:-}" ]]; then # KEEP_LAB=1: left up to look into (weft lab down after)
  trap 'bin/weft lab down >/dev/null 2>&1 || true' EXIT
fi
bin/weft lab kubectl apply -f - <<'YAML'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway}
YAML
# What weft serves of the profiles' extended features (the lab installs the
# experimental channel's CRDs, which HTTPRouteRetry needs).
features=${FEATURES:-Gateway,HTTPRoute,ReferenceGrant,GRPCRoute,TLSRoute,GatewayPort8080,GatewayHTTPListenerIsolation,GatewayAddressEmpty,HTTPRouteQueryParamMatching,HTTPRouteMethodMatching,HTTPRouteResponseHeaderModification,HTTPRouteBackendRequestHeaderModification,HTTPRouteHostRewrite,HTTPRoutePathRewrite,HTTPRouteSchemeRedirect,HTTPRoutePathRedirect,HTTPRoutePortRedirect,HTTPRoute303RedirectStatusCode,HTTPRoute307RedirectStatusCode,HTTPRoute308RedirectStatusCode,HTTPRouteRequestTimeout,HTTPRouteBackendTimeout,HTTPRouteBackendProtocolH2C,HTTPRouteBackendProtocolWebSocket,HTTPRouteParentRefPort,HTTPRouteNamedRouteRule,HTTPRouteDestinationPortMatching,HTTPRouteCORS,HTTPRouteRequestMirror,HTTPRouteRequestMultipleMirrors,HTTPRouteRequestPercentageMirror,HTTPRouteRetry,GatewayHTTPSListenerDetectMisdirectedRequests,GatewayFrontendClientCertificateValidation,GatewayFrontendClientCertificateValidationInsecureFallback,TLSRouteModeTerminate,TLSRouteModeMixed,BackendTLSPolicy,BackendTLSPolicySANValidation,GatewayBackendClientCertificate,GatewayStaticAddresses,ListenerSet,HTTPRouteRetryBackendTimeout,HTTPRouteRetryConnectionError,GatewayInfrastructure}
args=(-test.v -test.timeout 60m --gateway-class weft
  --supported-features "$features" --conformance-profiles "${PROFILES:-GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS}"
  --organization weft --project weft --url https://weft.dev --version "$(git rev-parse --short HEAD)" --contact weft
  --report-output "$out/report.yaml" --cleanup-base-resources=false
  # GatewayStaticAddresses: an address of the lab's LoadBalancer pool
  # nothing else takes, and one outside it (never given, never sent to).
  --usable-address 198.19.100.250 --unusable-address 192.0.2.1)
if [[ -n "${RUN_TEST:-}" ]]; then args+=(--run-test "$RUN_TEST"); fi
if [[ -n "${SKIP:-}" ]]; then args+=(--skip-tests "$SKIP"); fi
rc=0
(cd test/gwconformance && KUBECONFIG=/var/lib/weft-lab/admin.kubeconfig ip netns exec weft-control-plane "$out/gwconformance.test" "${args[@]}") > "$out/results.log" 2>&1 || rc=$?
grep -E '^\s*--- (PASS|FAIL|SKIP)' "$out/results.log" | sed 's/ (.*//' | sort | uniq -c | sort -rn | head -5 || true
grep -cE '^\s*--- PASS' "$out/results.log" | sed 's/^/passed: /'
grep -E '^\s*--- FAIL' "$out/results.log" | sed 's/^/  /' || true
if [[ $rc != 0 ]]; then # what weft ingress saw, before the lab goes
  bin/weft lab kubectl -n kube-system logs -l app.kubernetes.io/name=weft-ingress --tail=-1 --prefix > "$out/ingress.log" 2>&1 || true
  echo "weft ingress's logs: $out/ingress.log; its warnings:"
  grep -E '"level":"(WARN|ERROR)"|level=(WARN|ERROR)' "$out/ingress.log" | tail -20 || true
  bin/weft lab kubectl -n kube-system logs -l app.kubernetes.io/name=weft-agent --tail=-1 --prefix > "$out/agents.log" 2>&1 || true
  echo "the agents' warnings ($out/agents.log):"
  grep -E 'level=(WARN|ERROR)' "$out/agents.log" | tail -20 || true
fi
if [[ "${DOC:-}" == 1 ]]; then
  mkdir -p "$root/docs/conformance/gateway"
  cp "$out/report.yaml" "$root/docs/conformance/gateway/report.yaml"
  exit 0
fi
exit $rc
