#!/usr/bin/env bash
# `make bench`: every figure of docs/benchmarks.md in one run on one machine, printed as one table and
# written as docs/bench-results.json and docs/bench.svg (the README shows the plot):
#   - CNI ADD/DEL latency through the real kuryr-cni binary against the real neutron-server, pool mode
#     and noop mode, and the reference bridge + host-local plugins doing the same kernel work (veth +
#     Linux bridge) as the floor; kuryr-cni's exec time, CPU and peak memory;
#   - agent start-up with 100 and 1000 pre-created ports (time to ready, Neutron requests), resident
#     memory with 1000 pooled ports and 200 attached pods, the ADD path with every Neutron request held;
#   - refill: filling an empty pool of 100, draining it with 100 ADDs and refilling it;
#   - Neutron requests per nested refill batch, on a trunk of the bench's own;
#   - time until a pod's port is ACTIVE with a real neutron-openvswitch-agent (hack/l2-agent-up.sh),
#     from the pool and without (noop).
# BENCH_SKIP (comma-separated: latency,pooled,refill,nested,active) leaves phases out. BENCH_PPROF=true
# serves the latency phase's agents' profiles on 127.0.0.1:29655/debug/pprof/ (for profiling a run).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespaces)" >&2; exit 1; }
SEQ=${BENCH_SEQUENTIAL:-200}
BURSTS=${BENCH_BURSTS:-50,100}
# noop creates a port per pod, bound at once (its host has a Linux bridge agent row in hack/neutron-up.sh):
# the same sizes as pool mode.
NOOP_SEQ=${BENCH_NOOP_SEQUENTIAL:-$SEQ}
NOOP_BURSTS=${BENCH_NOOP_BURSTS:-$BURSTS}
SKIP=,${BENCH_SKIP:-},
D=${BENCH_DIR:-/var/tmp/kuryr-bench}
OUT=${BENCH_RESULTS_DIR:-docs}
CACHE=${KURYR_CACHE_DIR:-/var/cache/kuryr-test}
rm -rf "$D" && mkdir -p "$D"
ROWS=$D/rows.jsonl
skip() { [[ $SKIP == *,$1,* ]]; }
# shellcheck source=hack/lib.sh
. hack/lib.sh
apt_ensure time >&2 # GNU time: kuryr-cni's own peak memory (test/bench rusageExec)
[ -x bin/kuryr-agent ] || make --no-print-directory build
# A copy: others may rebuild bin/ while the bench runs.
mkdir -p "$D/bin" && cp bin/kuryr-agent bin/kuryr-cni bin/kuryr-pools "$D/bin/"
BIN=$D/bin
go build -o "$D/bench" ./test/bench

echo "bench: $(nproc) CPUs, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if awk '{exit !($1 >= 1.5)}' /proc/loadavg; then
	echo "bench: WARNING: load average above 1.5: other work on this machine skews the figures" >&2
fi

# Reference plugins (the floor), from the Go module proxy, cached.
PLUGINS=$CACHE/cni-plugins-v1.9.1
if [ ! -x "$PLUGINS/bridge" ] || [ ! -x "$PLUGINS/host-local" ]; then
	mkdir -p "$PLUGINS"
	GOBIN=$PLUGINS go install github.com/containernetworking/plugins/plugins/main/bridge@v1.9.1 \
		github.com/containernetworking/plugins/plugins/ipam/host-local@v1.9.1
fi

fixture=$(hack/neutron-up.sh | tail -n1)
ovsdb=$(hack/ovs-up.sh | tail -n1)

agent=
stop_agent() {
	[ -n "$agent" ] || return 0
	kill "$agent" 2>/dev/null || true
	wait "$agent" 2>/dev/null || true
	agent=
}
cleanup() { stop_agent; ip link del kuryrbench0 2>/dev/null || true; ip link del cnibench0 2>/dev/null || true; }
trap cleanup EXIT

start_agent() { # $1 = pool driver (neutron | noop), $2 = node
	cat > "$D/kuryr.conf" <<CONF
[kubernetes]
vif_pool_driver = $1
pod_vif_driver = neutron-vif
enable_manager = True
[vif_pool]
ports_pool_min = 5
ports_pool_batch = 10
ports_pool_update_frequency = 1
[binding]
default_vif_type = bridge
linux_bridge = kuryrbench0
[pool_manager]
sock_file = $D/manage.sock
[cni_daemon]
socket_path = $D/cni.sock
checkpoint_path = $D/checkpoint-$1.json
metrics_address = 127.0.0.1:29655
pprof = ${BENCH_PPROF:-false}
[cni_health_server]
health_address = 127.0.0.1:28090
CONF
	python3 - "$fixture" >> "$D/kuryr.conf" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))
print(f"""[neutron]
auth_type = none
endpoint_override = {f['endpoint']}
project_id = {f['project']}
qps = 200
burst = 400
timeout = 300
[neutron_defaults]
project = {f['project']}
pod_subnet = {f['podSubnet']}
pod_security_groups = {','.join(f['securityGroups'])}""")
PY
	"$BIN/kuryr-agent" --standalone --config-file "$D/kuryr.conf" --node-name "$2" > "$D/agent-$1.log" 2>&1 &
	agent=$!
	for _ in $(seq 1 600); do
		curl -sf http://127.0.0.1:28090/ready >/dev/null 2>&1 && return 0
		kill -0 "$agent" 2>/dev/null || break
		sleep 0.1
	done
	echo "kuryr-agent ($1) did not become ready:" >&2; tail -20 "$D/agent-$1.log" >&2; exit 1
}

# clear_host HOST: delete every kuryr port bound to HOST, so that a phase starts and ends with none (a
# noop agent would spend its start deleting an earlier run's ports, with ADDs timing out meanwhile).
clear_host() { "$D/bench" -mode clear -fixture "$fixture" -host "$1" >&2; }

# Neutron requests of the running agent by operation, as "op=count ..." (sorted).
neutron_requests() {
	curl -s http://127.0.0.1:29655/metrics | awk '/^kuryr_neutron_requests_total/ {
		match($0, /operation="[^"]*"/); op = substr($0, RSTART + 11, RLENGTH - 12); n[op] += $NF }
		END { for (o in n) print o "=" n[o] }' | sort
}
requests_diff() { # before after: "op=delta ..." of the operations that changed
	join -t= -a2 -e0 -o 0,1.2,2.2 <(echo "$1") <(echo "$2") | awk -F= '$3 != $2 { printf "%s=%d ", $1, $3 - $2 }'
}

bench=("$D/bench" -out "$ROWS" -cache-dir "$D/cache")

if ! skip latency; then
	conf_kuryr=$D/kuryr.conflist
	echo "{\"cniVersion\":\"1.1.0\",\"name\":\"kuryr\",\"plugins\":[{\"type\":\"kuryr-cni\",\"socketPath\":\"$D/cni.sock\",\"logFile\":\"$D/kuryr-cni.log\"}]}" > "$conf_kuryr"

	# Fill the pool so that every pod finds a free port, as an operator sizes a pool for the pod churn
	# of a node: the sequential pods and each burst take fresh ports (a released port is recycled with
	# a Neutron update in the background). Both kuryr hosts have a Linux bridge agent row
	# (hack/neutron-up.sh): Neutron binds their ports with vif_type bridge, plugged veth + Linux bridge.
	echo "== kuryr, pool mode (bare metal ports, veth + Linux bridge)" >&2
	clear_host kuryr-test-bench-lb1
	start_agent neutron kuryr-test-bench-lb1
	want=$((SEQ + 20)) # 20: -exec-usage's pass through GNU time (kuryr-cni's peak memory)
	for b in ${BURSTS//,/ }; do want=$((want + b)); done
	t0=$(date +%s)
	free=$(curl -s http://127.0.0.1:29655/metrics | awk '/^kuryr_pool_ports\{.*state="free"/ {n += $NF} END {print n + 0}')
	# In bulk requests of 50.
	while [ "$free" -lt "$want" ]; do
		n=$((want - free < 50 ? want - free : 50))
		"$BIN/kuryr-pools" --socket "$D/manage.sock" create --trunks kuryr-test-bench-lb1 --force -n "$n" -t 900 >&2
		free=$((free + n))
	done
	echo "pool of $want filled in $(( $(date +%s) - t0 )) s" >&2
	before=$(neutron_requests)
	"${bench[@]}" -label kuryr-pool -conflist "$conf_kuryr" -cni-bin "$BIN" -sequential "$SEQ" -bursts "$BURSTS" -exec-usage \
		-before-burst "sleep 3" >&2
	echo "neutron requests of the agent during the pool-mode run (refills and asynchronous port names, none on the ADD path): $(requests_diff "$before" "$(neutron_requests)")" >&2
	stop_agent
	# Leave no ports behind: they would lengthen every nested listing of the shared test server.
	clear_host kuryr-test-bench-lb1

	echo "== kuryr, noop mode (a port created per pod on the real neutron-server)" >&2
	clear_host kuryr-test-bench-lb2
	start_agent noop kuryr-test-bench-lb2 # its own node: a noop agent deletes the ports it finds
	"${bench[@]}" -label kuryr-noop -conflist "$conf_kuryr" -cni-bin "$BIN" -sequential "$NOOP_SEQ" -bursts "$NOOP_BURSTS" >&2
	stop_agent
	clear_host kuryr-test-bench-lb2 # the creates of timed-out ADDs, and deletions the stop cut short

	echo "== reference bridge + host-local (the floor of kernel work)" >&2
	cat > "$D/bridge.conflist" <<CONF
{"cniVersion":"1.1.0","name":"bench-bridge","plugins":[{"type":"bridge","bridge":"cnibench0","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.251.0.0/16"}]],"dataDir":"$D/ipam"}}]}
CONF
	"${bench[@]}" -label bridge -conflist "$D/bridge.conflist" -cni-bin "$PLUGINS" -sequential "$SEQ" -bursts "$BURSTS" >&2
fi

agentbench=("${bench[@]}" -fixture "$fixture" -bin "$BIN" -dir "$D/agents" -ovsdb "$ovsdb")
if ! skip pooled; then
	echo "== agent start-up with pre-created ports, memory, the ADD path with Neutron held" >&2
	"${agentbench[@]}" -mode pooled >&2
fi
if ! skip refill; then
	echo "== refill throughput" >&2
	"${agentbench[@]}" -mode refill >&2
fi
if ! skip nested; then
	echo "== nested refill batches" >&2
	"${agentbench[@]}" -mode nested >&2
fi
if ! skip active; then
	echo "== time until ACTIVE with a real neutron-openvswitch-agent" >&2
	if l2fixture=$(hack/l2-agent-up.sh | tail -n1); then
		"${agentbench[@]}" -mode active -active-fixture "$l2fixture" >&2
	else
		echo "bench: the real L2 agent stack did not start (hack/l2-agent-up.sh): no ACTIVE figures" >&2
	fi
fi

echo
"$D/bench" -mode report -report "$ROWS" -json "$OUT/bench-results.json" -svg "$OUT/bench.svg"
echo
echo "rows: $ROWS; results: $OUT/bench-results.json, plot: $OUT/bench.svg"
