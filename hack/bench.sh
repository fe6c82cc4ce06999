#!/usr/bin/env bash
# `make bench`: ADD/DEL latency through the real kuryr-cni binary against the real neutron-server,
# in pool mode and in noop mode, and the reference bridge + host-local plugins doing the same kernel
# work (veth + Linux bridge) as the floor; all rows in one run, printed as one table.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make bench needs root (network namespaces)" >&2; exit 1; }
SEQ=${BENCH_SEQUENTIAL:-200}
BURSTS=${BENCH_BURSTS:-50,100}
# noop creates a port per pod: on this test neutron-server (no L2 agent) each create also waits for
# Neutron's failed-binding retries, several seconds, so its phase is smaller to keep the run bounded.
NOOP_SEQ=${BENCH_NOOP_SEQUENTIAL:-20}
NOOP_BURSTS=${BENCH_NOOP_BURSTS:-10}
D=${BENCH_DIR:-/var/tmp/kuryr-bench}
CACHE=${KURYR_CACHE_DIR:-/var/cache/kuryr-test}
rm -rf "$D" && mkdir -p "$D"
ROWS=$D/rows.jsonl
[ -x bin/kuryr-agent ] || make --no-print-directory build
go build -o "$D/bench" ./test/bench

# Reference plugins (the floor), from the Go module proxy, cached.
PLUGINS=$CACHE/cni-plugins-v1.9.1
if [ ! -x "$PLUGINS/bridge" ] || [ ! -x "$PLUGINS/host-local" ]; then
	mkdir -p "$PLUGINS"
	GOBIN=$PLUGINS go install github.com/containernetworking/plugins/plugins/main/bridge@v1.9.1 \
		github.com/containernetworking/plugins/plugins/ipam/host-local@v1.9.1
fi

fixture=$(hack/neutron-up.sh | tail -n1)

agent=
stop_agent() {
	[ -n "$agent" ] || return 0
	kill "$agent" 2>/dev/null || true
	wait "$agent" 2>/dev/null || true
	agent=
}
cleanup() { stop_agent; ip link del kuryrbench0 2>/dev/null || true; ip link del cnibench0 2>/dev/null || true; }
trap cleanup EXIT

start_agent() { # $1 = pool driver (neutron | noop)
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
	bin/kuryr-agent --standalone --config-file "$D/kuryr.conf" --node-name bench-node > "$D/agent-$1.log" 2>&1 &
	agent=$!
	for _ in $(seq 1 600); do
		curl -sf http://127.0.0.1:28090/ready >/dev/null 2>&1 && return 0
		kill -0 "$agent" 2>/dev/null || break
		sleep 0.1
	done
	echo "kuryr-agent ($1) did not become ready:" >&2; tail -20 "$D/agent-$1.log" >&2; exit 1
}

neutron_requests() { curl -s http://127.0.0.1:29655/metrics | awk '/^kuryr_neutron_requests_total/ {s+=$NF} END {print s+0}'; }

conf_kuryr=$D/kuryr.conflist
echo "{\"cniVersion\":\"1.1.0\",\"name\":\"kuryr\",\"plugins\":[{\"type\":\"kuryr-cni\",\"socketPath\":\"$D/cni.sock\",\"logFile\":\"$D/kuryr-cni.log\"}]}" > "$conf_kuryr"

# Fill the pool so that every pod finds a port, as an operator sizes a pool for the pod churn of a
# node; the ports released by the sequential phase are recycled in a second and serve the bursts.
fill="bin/kuryr-pools --socket $D/manage.sock create --trunks bench-node --force -n"
echo "== kuryr, pool mode (bare metal ports, veth + Linux bridge)" >&2
start_agent neutron
$fill "$SEQ" >&2
before=$(neutron_requests)
"$D/bench" -label kuryr-pool -conflist "$conf_kuryr" -cni-bin bin -cache-dir "$D/cache" -sequential "$SEQ" -bursts "$BURSTS" \
	-before-burst "sleep 3" -out "$ROWS" >&2
echo "neutron requests by the agent during the pool-mode run (incl. refills and async renames): $(( $(neutron_requests) - before ))" >&2
stop_agent

echo "== kuryr, noop mode (a port created per pod on the real neutron-server)" >&2
start_agent noop
"$D/bench" -label kuryr-noop -conflist "$conf_kuryr" -cni-bin bin -cache-dir "$D/cache" -sequential "$NOOP_SEQ" -bursts "$NOOP_BURSTS" -out "$ROWS" >&2
stop_agent

echo "== reference bridge + host-local (the floor of kernel work)" >&2
cat > "$D/bridge.conflist" <<CONF
{"cniVersion":"1.1.0","name":"bench-bridge","plugins":[{"type":"bridge","bridge":"cnibench0","isGateway":true,"ipMasq":false,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.251.0.0/16"}]],"dataDir":"$D/ipam"}}]}
CONF
"$D/bench" -label bridge -conflist "$D/bridge.conflist" -cni-bin "$PLUGINS" -cache-dir "$D/cache" -sequential "$SEQ" -bursts "$BURSTS" -out "$ROWS" >&2

echo
"$D/bench" -report "$ROWS"
echo
echo "rows: $ROWS"
