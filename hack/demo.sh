#!/usr/bin/env bash
# The demo: a standalone kuryr-agent on an embedded Neutron stand-in (or, with DEMO_NEUTRON=real, on
# the real neutron-server of hack/neutron-up.sh), real network namespaces, veth + Linux bridge
# binding (no 802.1Q needed), and a few dozen pods created and deleted through the real kuryr-cni.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the demo needs root: it creates network namespaces" >&2; exit 1; }
PODS=${DEMO_PODS:-30}
D=${DEMO_DIR:-/var/tmp/kuryr-demo}
rm -rf "$D" && mkdir -p "$D"
[ -x bin/kuryr-agent ] && [ -x bin/kuryr-cni ] || make --no-print-directory build

cat > "$D/kuryr.conf" <<CONF
# Demo configuration: bare-metal pools (ports bound to this host) plugged with veth + Linux bridge.
[kubernetes]
vif_pool_driver = neutron
pod_vif_driver = neutron-vif
enable_manager = True
[vif_pool]
ports_pool_min = 5
ports_pool_batch = 10
ports_pool_update_frequency = 2
[binding]
default_vif_type = bridge
linux_bridge = kuryrdemo0
[pool_manager]
sock_file = $D/kuryr_manage.sock
[cni_daemon]
socket_path = $D/cni.sock
checkpoint_path = $D/checkpoint.json
metrics_address = 127.0.0.1:19655
[cni_health_server]
health_address = 127.0.0.1:18090
CONF

agent_args=(--config-file "$D/kuryr.conf" --node-name demo-node)
if [ "${DEMO_NEUTRON:-embedded}" = real ]; then
	fixture=$(hack/neutron-up.sh | tail -n1)
	python3 - "$fixture" >> "$D/kuryr.conf" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))
print(f"""[neutron]
auth_type = none
endpoint_override = {f['endpoint']}
project_id = {f['project']}
[neutron_defaults]
project = {f['project']}
pod_subnet = {f['podSubnet']}
pod_security_groups = {','.join(f['securityGroups'])}""")
PY
	agent_args+=(--standalone)
	echo "demo: against the real neutron-server ($fixture)"
else
	agent_args+=(--embedded-neutron)
	echo "demo: against the embedded Neutron stand-in"
fi

bin/kuryr-agent "${agent_args[@]}" > "$D/agent.log" 2>&1 &
agent=$!
cleanup() {
	kill "$agent" 2>/dev/null || true
	wait "$agent" 2>/dev/null || true
	ip link del kuryrdemo0 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 300); do
	curl -sf http://127.0.0.1:18090/ready >/dev/null 2>&1 && break
	kill -0 "$agent" 2>/dev/null || { echo "kuryr-agent exited:" >&2; tail -20 "$D/agent.log" >&2; exit 1; }
	sleep 0.1
done
curl -sf http://127.0.0.1:18090/ready >/dev/null || { echo "kuryr-agent not ready after 30s" >&2; tail -20 "$D/agent.log" >&2; exit 1; }
echo "demo: kuryr-agent ready (log: $D/agent.log)"
go run ./test/demo --pods "$PODS" --cni-bin bin --cni-socket "$D/cni.sock" --manage-socket "$D/kuryr_manage.sock" --cache-dir "$D/cni-cache"
echo
echo "Neutron requests made by the agent during the demo (its metrics endpoint):"
curl -s http://127.0.0.1:19655/metrics | grep -E '^kuryr_neutron_requests_total' | sed 's/^/  /' || true
echo
echo "demo done: $PODS pods created and deleted through kuryr-cni; agent log in $D/agent.log"
