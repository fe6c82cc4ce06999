#!/usr/bin/env bash
# Real 802.1Q: build the netns test binary and run its VLAN tests inside a qemu VM with Debian's
# kernel (the development kernel has no 8021q, so on the host they skip). `make test` calls this.
# Fails when any test fails, when none ran, or when any was skipped: in the VM nothing may skip.
# Env: GO (default go), RUN (test regexp, default VLAN), plus hack/run-in-vm.sh's.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/vm
mkdir -p "$STATE"
BIN=$STATE/netns.test
OUT=$STATE/test-vlan-vm.$$.log
trap 'rm -f "$OUT"' EXIT

start=$(date +%s)
CGO_ENABLED=0 ${GO:-go} test -c -o "$BIN" ./netns
built=$(date +%s)
echo "test-vlan-vm: built $BIN in $((built - start))s" >&2

set +e
PAYLOAD_ARGS="-test.v -test.count=1 -test.run ${RUN:-VLAN}" PAYLOAD_ENV="KURYR_REQUIRE_ALL=1" \
	hack/run-in-vm.sh "$BIN" 2>&1 | tee "$OUT"
rc=${PIPESTATUS[0]}
set -e

out=$(tr -d '\r' <"$OUT")
passed=$(grep -c '^--- PASS: ' <<<"$out" || true)
skipped=$(grep -c -- '--- SKIP: ' <<<"$out" || true)
echo "test-vlan-vm: VM exit code $rc, $passed passed, $skipped skipped, $(($(date +%s) - built))s in the VM" >&2
if [ "$rc" != 0 ]; then
	echo "test-vlan-vm: FAIL" >&2
	exit "$rc"
fi
if [ "$passed" = 0 ] || grep -q 'no tests to run' <<<"$out"; then
	echo "test-vlan-vm: FAIL: no test ran" >&2
	exit 1
fi
if [ "$skipped" != 0 ]; then
	echo "test-vlan-vm: FAIL: tests skipped inside the VM" >&2
	exit 1
fi
echo "test-vlan-vm: PASS" >&2
