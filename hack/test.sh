#!/usr/bin/env bash
# `make test`: the whole suite. Unit tests, kernel tests (root; required
# here, never skipped), then the lab end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export WEFT_REQUIRE_PRIVILEGED=1
echo "== go vet"
go vet ./...
echo "== unit and kernel tests"
go test -count=1 -timeout 20m ./...
echo "== fuzzing the DNS message handler, the CNI network config, ingress-nginx annotations, the ingress fast path's HTTP/1.1 heads against net/http and its access records against slog (bounded)"
# Budgets in executions, not seconds: a time budget races Go 1.26's fuzz
# coordinator at its deadline (golang/go#75804: a bare "context deadline
# exceeded" with no failing input). About 30 s and 20 s here.
go test -count=1 -run '^$' -fuzz FuzzRespond -fuzztime 50000x ./internal/dns/
go test -count=1 -run '^$' -fuzz FuzzParseNetConf -fuzztime 400000x ./internal/cni/
go test -count=1 -run '^$' -fuzz FuzzParse -fuzztime 50000x ./internal/ingress/nginx/
go test -count=1 -run '^$' -fuzz FuzzParseRequest -fuzztime 200000x ./internal/ingress/h1/
go test -count=1 -run '^$' -fuzz FuzzParseResponse -fuzztime 200000x ./internal/ingress/h1/
go test -count=1 -run '^$' -fuzz FuzzRecordsReadAsSlogText -fuzztime 100000x ./internal/ingress/accesslog/
echo "== lab end-to-end tests"
# The CNI churn test with 200 pods here (its kill loop makes it the longest
# test, and its time grows with CNI ADD latency); make churn runs 1,000.
# The BGP test with BIRD only: FRR makes the same checks against another
# router (make e2e-frr).
WEFT_BGP_ROUTERS=${WEFT_BGP_ROUTERS:-bird} WEFT_CHURN_PODS=${WEFT_CHURN_PODS:-200} go test -count=1 -tags e2e -timeout 40m -v ./test/e2e/...
echo "== ClusterNetworkPolicy conformance (network-policy-api's suite): the tests that check a behaviour once"
echo "   (tier integration with NetworkPolicy, priorities and Pass, same-priority ties, named ports;"
echo "   make cnp-conformance runs all 30 and writes docs/conformance/)"
ONLY=CNPAdminTierIntegration,CNPAdminTierPriorityField,CNPAdminTierSamePriority,CNPBaselineTierEgressNamedPort hack/cnp-conformance.sh
echo "== Gateway API conformance (sigs.k8s.io/gateway-api v1.6.3): GATEWAY-HTTP, GATEWAY-GRPC and GATEWAY-TLS, core and the extended features weft serves"
echo "   (the whole suite takes about a minute; make gateway-conformance writes docs/conformance/gateway/)"
hack/gateway-conformance.sh
echo "== upstream e2e: every [sig-network] Conformance spec (pod network, DNS, services, hostPort, proxy)"
echo "   plus the service proxy's behaviour specs: session affinity, ETP Local source IP, hairpin,"
echo "   no-endpoint reject, terminating-endpoint fallback, UDP conntrack, proxy labels, health check, publishNotReadyAddresses,"
echo "   invalid conntrack state (issue 74839), CLOSE_WAIT timeout, ETP change, topology hints, externalIPs,"
echo "   internalTrafficPolicy Local, reject for evicted pods; the NetworkPolicy specs that check a behaviour once"
focus=(
  '\[sig-network\].*\[Conformance\]'
  'Services should support externalTrafficPolicy=Local for type=NodePort'
  'Services should allow pods to hairpin back to themselves through services'
  'Services should be rejected when no endpoints exist'
  'Services should fallback to terminating endpoints when there are no ready endpoints with internalTrafficPolicy=Cluster'
  'Services should fallback to local terminating endpoints when there are no ready endpoints with externalTrafficPolicy=Local'
  'Granular Checks: Services should function for client IP based session affinity: http'
  'Conntrack should be able to preserve UDP traffic when server pod cycles for a ClusterIP service'
  'Conntrack should be able to cleanup conntrack entries when UDP service target port changes for a NodePort service'
  'Services should implement service.kubernetes.io/headless'
  'Services should implement service.kubernetes.io/service-proxy-name'
  'Services should fail health check node port if there are only terminating endpoints'
  'Services should be able to connect to terminating and unready endpoints if PublishNotReadyAddresses is true'
  'Services should not be able to connect to terminating and unready endpoints if PublishNotReadyAddresses is false'
  'Conntrack proxy implementation should not be vulnerable to the invalid conntrack state bug'
  'KubeProxy should set TCP CLOSE_WAIT timeout'
  'Services should implement NodePort and HealthCheckNodePort correctly when ExternalTrafficPolicy changes'
  'Topology Hints should distribute endpoints evenly'
  'Services should be possible to connect to a service via ExternalIP when the external IP is not assigned to a node'
  'Services should respect internalTrafficPolicy=Local Pod to Pod'
  'Services should be rejected for evicted pods'
)
# And the NetworkPolicy specs that check each behaviour once (22 of 46: deny
# defaults both ways, selectors by labels and expressions, ports, protocols
# and named ports, ipBlock except, egress against an allowing server,
# updates of policies, pods and namespaces, UDP); make e2e-doc runs all 46
# (docs/e2e.md). The SCTP ones need SCTP sockets, which this kernel lacks.
focus+=(
  "NetworkPolicy between server and client.* should support a 'default-deny-ingress' policy"
  "NetworkPolicy between server and client.* should support a 'default-deny-all' policy"
  "NetworkPolicy between server and client.* should deny egress from all pods in a namespace"
  "NetworkPolicy between server and client.* should enforce multiple ingress policies with ingress allow-all policy taking precedence"
  "NetworkPolicy between server and client.* should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector"
  "NetworkPolicy between server and client.* should enforce policy based on NamespaceSelector with MatchExpressions"
  "NetworkPolicy between server and client.* should enforce policy based on PodSelector with MatchExpressions"
  "NetworkPolicy between server and client.* should not allow access by TCP when a policy specifies only UDP"
  "NetworkPolicy between server and client.* should not allow all ports if it cannot limit to the requested port"
  "NetworkPolicy between server and client.* should allow ingress access on one named port"
  "NetworkPolicy between server and client.* should allow egress access on one named port"
  "NetworkPolicy between server and client.* should enforce except clause while egress access to server in CIDR block"
  "NetworkPolicy between server and client.* should enforce updated policy"
  "NetworkPolicy between server and client.* should stop enforcing policies after they are deleted"
  "NetworkPolicy between server and client.* should allow ingress access from updated pod"
  "NetworkPolicy between server and client.* should allow ingress access from updated namespace"
  "NetworkPolicy between server and client.* should support denying of egress traffic on the client side"
  "NetworkPolicy between server and client.* should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP'"
  "NetworkPolicy between server and client.* should enforce ingress policy allowing any port traffic to a server on a specific protocol"
)
FOCUS=$(IFS='|'; echo "${focus[*]}") EXPECT_PASS=91 hack/e2e-upstream.sh
echo "== upstream e2e on a dual-stack lab: every [Feature:IPv6DualStack] spec"
DUAL_STACK=1 OUT=_output/e2e-upstream-dual FOCUS='\[Feature:IPv6DualStack\]' SKIP='\[Disruptive\]|\[Feature:SCTPConnectivity\]' EXPECT_PASS=22 hack/e2e-upstream.sh
echo "== upstream e2e on a bgp lab from the outside namespace: the [Feature:LoadBalancer] specs that check a behaviour once"
echo "   (the two rolling-update specs and the source-ranges spec take 13-15 minutes each: make e2e-lb-doc runs them, docs/e2e-loadbalancer.md)"
lb=(
  'ExternalTrafficPolicy: Local \[Feature:LoadBalancer\] should work for type=LoadBalancer'
  'ExternalTrafficPolicy: Local \[Feature:LoadBalancer\] should only target nodes with endpoints'
  'should be able to change the type and ports of a TCP service'
  'should be able to preserve UDP traffic when server pod cycles for a LoadBalancer service on different nodes'
  'should handle load balancer cleanup finalizer for service'
  'should be able to create LoadBalancer Service without NodePort and change it'
  'should have session affinity work for LoadBalancer service with Local traffic policy'
)
BACKEND=bgp FROM=outside OUT=_output/e2e-upstream-lb FOCUS=$(IFS='|'; echo "${lb[*]}") SKIP='\[Disruptive\]|switch session affinity for LoadBalancer service with Local' EXPECT_PASS=7 hack/e2e-upstream.sh
