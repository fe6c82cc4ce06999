#!/usr/bin/env bash
# `make test`: start every real component the tests need, then run the whole suite with
# KURYR_REQUIRE_ALL=1 so that a component that failed to start fails its tests instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export KURYR_REQUIRE_ALL=1
export KURYR_STATE_DIR=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}
FUZZTIME=${FUZZTIME:-15s}
start=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

[ "$(id -u)" = 0 ] || { echo "make test needs root (network namespaces, OVS, neutron-server)" >&2; exit 1; }

step "installing and starting neutron-server"
fixture=$(hack/neutron-up.sh | tail -n1)
export KURYR_TEST_NEUTRON=$fixture
step "starting Open vSwitch (userspace datapath)"
export KURYR_TEST_OVSDB=$(hack/ovs-up.sh | tail -n1)
step "building (cached) and starting kube-apiserver + etcd"
export KURYR_TEST_KUBECONFIG=$(hack/kube-up.sh | tail -n1)
step "starting a kubelet node: containerd, kubelet, kube-controller-manager, a real L2 agent (test/fullnode)"
export KURYR_TEST_NODE=$(hack/node-up.sh | tail -n1)

step "build and --version of every binary"
make --no-print-directory build
for b in bin/kuryr-*; do
	out=$("$b" --version)
	echo "$out"
	case "$out" in *" dev "*|"") echo "$b: --version is not stamped" >&2; exit 1 ;; esac
done

# The whole suite runs under the race detector, the binaries the end-to-end tests start included.
step "race-enabled binaries"
# shellcheck source=hack/lib.sh
. hack/lib.sh
# gcc for -race; GNU time for test/bench, which measures a plugin's own peak memory with it.
apt_ensure gcc libc6-dev time
make --no-print-directory build-race
export KURYR_BIN_DIR=$PWD/bin/race

step "go vet"
go vet ./...

step "go test -race ./..."
# The reliability suites append their figures here (go test shows a passing package's output only with -v).
figures=$KURYR_STATE_DIR/reliability-figures.txt
seen=$(cat "$figures" 2>/dev/null | wc -l)
go test -race -count=1 -timeout 30m -coverprofile=/tmp/kuryr-cover.out ./... 2>&1 | tee /tmp/kuryr-go-test.log
echo "reliability figures of this run:"
tail -n +"$((seen + 1))" "$figures" 2>/dev/null || true

step "coverage of pool/ and config/"
go test -count=1 -cover ./pool/ ./config/ | tee /tmp/kuryr-cover.log

step "802.1Q inside a qemu VM with Debian's kernel"
hack/test-vlan-vm.sh

step "fuzz targets, ${FUZZTIME} each"
hack/fuzz.sh "$FUZZTIME"

step "done"
echo "make test took $(( $(date +%s) - start ))s"
