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
echo "== fuzzing the DNS message handler (bounded)"
go test -count=1 -run '^$' -fuzz FuzzRespond -fuzztime 30s ./internal/dns/
echo "== lab end-to-end tests"
go test -count=1 -tags e2e -timeout 40m -v ./test/e2e/...
echo "== upstream e2e: every [sig-network] Conformance spec (pod network, DNS, services, hostPort, proxy)"
FOCUS='\[sig-network\].*\[Conformance\]' EXPECT_PASS=47 hack/e2e-upstream.sh
