#!/usr/bin/env bash
# A real Neutron L2 agent for make bench's time-to-ACTIVE figures: RabbitMQ, a second neutron-server
# (port $L2_NEUTRON_PORT, default 9697; database neutron_l2 on hack/neutron-up.sh's MariaDB) whose
# RPC goes over RabbitMQ, and Debian's neutron-openvswitch-agent for host kuryr-test-l2bench on the
# userspace OVS of hack/ovs-up.sh, with bridges of its own (br-kb, br-kbtun: hack/ovs-up.sh's br-int
# stays as it is for the other tests). Ports bound to that host turn ACTIVE once plugged into br-kb.
# Recipe: /work/shared/reference/test-infrastructure.md §6. Idempotent; prints the fixture's path.
# Stop with hack/l2-agent-down.sh.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
. "$HACK/lib.sh"

BASE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}
STATE=$BASE/l2agent
PORT=${L2_NEUTRON_PORT:-9697}
HOST=kuryr-test-l2bench
PROJECT=kuryr-l2bench
ENDPOINT="http://127.0.0.1:$PORT/"
SOCK=$BASE/neutron/mysql/run/mysqld.sock
[ "$(id -u)" = 0 ] || die "l2-agent-up.sh needs root"
mkdir -p "$STATE"/{lock,state,agent-state,agent-lock}

"$HACK/neutron-up.sh" >/dev/null # MariaDB and the packages of neutron-server
OVSDB=$("$HACK/ovs-up.sh" | tail -n1)
apt_ensure neutron-openvswitch-agent rabbitmq-server

# --- RabbitMQ (guest/guest on loopback), its own node name so that it is ours to find.
export RABBITMQ_NODENAME=kuryr-l2bench@localhost HOME=/root
if ! rabbitmqctl -q status >/dev/null 2>&1; then
	log "rabbitmq: starting"
	RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT=25673 setsid rabbitmq-server -detached >"$STATE/rabbitmq.out" 2>&1 3>&-
	wait_until 120 "rabbitmq" rabbitmqctl -q status || die "rabbitmq did not start ($STATE/rabbitmq.out)"
fi

mariadb --socket="$SOCK" -uroot -e "CREATE DATABASE IF NOT EXISTS neutron_l2 CHARACTER SET utf8mb4;
  GRANT ALL ON neutron_l2.* TO 'neutron'@'localhost'; FLUSH PRIVILEGES;"

cat >"$STATE/neutron.conf" <<CONF
[DEFAULT]
auth_strategy = noauth
core_plugin = ml2
service_plugins = trunk
transport_url = rabbit://guest:guest@127.0.0.1:5672/
notify_nova_on_port_status_changes = False
notify_nova_on_port_data_changes = False
bind_host = 127.0.0.1
bind_port = $PORT
api_workers = 1
rpc_workers = 1
rpc_state_report_workers = 1
api_paste_config = /etc/neutron/api-paste.ini
log_file = $STATE/server.log
state_path = $STATE/state
[database]
connection = mysql+pymysql://neutron:nt@localhost/neutron_l2?unix_socket=$SOCK&charset=utf8mb4
[oslo_concurrency]
lock_path = $STATE/lock
[quotas]
quota_port = -1
CONF
cat >"$STATE/ml2_conf.ini" <<CONF
[ml2]
type_drivers = flat,vlan,vxlan,local
tenant_network_types = vxlan
mechanism_drivers = openvswitch
extension_drivers = port_security,tag_ports_during_bulk_creation
[ml2_type_vxlan]
vni_ranges = 1:10000
CONF
cat >"$STATE/agent.conf" <<CONF
[DEFAULT]
host = $HOST
transport_url = rabbit://guest:guest@127.0.0.1:5672/
log_file = $STATE/agent.log
state_path = $STATE/agent-state
[oslo_concurrency]
lock_path = $STATE/agent-lock
[agent]
root_helper =
tunnel_types = vxlan
l2_population = False
report_interval = 10
[ovs]
integration_bridge = br-kb
tunnel_bridge = br-kbtun
int_peer_patch_port = patch-kbtun
tun_peer_patch_port = patch-kbint
datapath_type = netdev
ovsdb_connection = $OVSDB
local_ip = 127.0.0.1
of_listen_address = 127.0.0.1
of_listen_port = 6633
[securitygroup]
firewall_driver = openvswitch
enable_security_group = True
CONF
CONF_ARGS=(--config-file "$STATE/neutron.conf" --config-file "$STATE/ml2_conf.ini")
api_up() { curl -fsS -m 5 -H "X-Project-Id: $PROJECT" -H 'X-Roles: admin' "${ENDPOINT}v2.0/extensions" >/dev/null; }

if ! pid_alive "$STATE/server.pid" || ! api_up 2>/dev/null; then
	stop_pidfile "$STATE/server.pid" neutron-server 10
	if [ ! -f "$STATE/db-migrated" ]; then
		log "neutron_l2: neutron-db-manage upgrade heads"
		neutron-db-manage "${CONF_ARGS[@]}" upgrade heads >"$STATE/db-manage.log" 2>&1 ||
			{ tail -30 "$STATE/db-manage.log" >&2; die "neutron-db-manage failed"; }
		touch "$STATE/db-migrated"
	fi
	log "neutron-server (RPC over RabbitMQ): starting on $ENDPOINT"
	setsid neutron-server "${CONF_ARGS[@]}" </dev/null >>"$STATE/server.stdout" 2>&1 3>&- &
	echo $! >"$STATE/server.pid"
	wait_until 300 "neutron-server on $ENDPOINT" api_up || { tail -20 "$STATE/server.log" >&2; die "neutron-server did not answer"; }
fi

agent_alive() {
	curl -fsS -m 5 -H "X-Project-Id: $PROJECT" -H 'X-Roles: admin' "${ENDPOINT}v2.0/agents?host=$HOST&alive=true" |
		"$PY" -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["agents"] else 1)'
}
if ! pid_alive "$STATE/agent.pid"; then
	log "neutron-openvswitch-agent (host $HOST, bridges br-kb/br-kbtun on $OVSDB): starting"
	OVS_RUNDIR=$BASE/ovs setsid neutron-openvswitch-agent --config-file "$STATE/agent.conf" </dev/null >>"$STATE/agent.stdout" 2>&1 3>&- &
	echo $! >"$STATE/agent.pid"
fi
wait_until 180 "the L2 agent of $HOST alive" agent_alive || { tail -20 "$STATE/agent.log" >&2; die "the L2 agent did not report"; }

# --- the fixture: a pod network and subnet in the project, its default security group.
NEUTRON_ENDPOINT=$ENDPOINT NEUTRON_PROJECT=$PROJECT HOST=$HOST OVSDB=$OVSDB FIXTURE=$STATE/fixture.json "$PY" - <<'PYEOF'
import json, os, sys, urllib.parse, urllib.request
EP = os.environ["NEUTRON_ENDPOINT"].rstrip("/") + "/v2.0/"
P = os.environ["NEUTRON_PROJECT"]
H = {"X-Project-Id": P, "X-Roles": "admin", "Content-Type": "application/json"}
def call(method, path, body=None, **q):
    url = EP + path + ("?" + urllib.parse.urlencode(q) if q else "")
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, method=method, headers=H)
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")
def ensure(kind, path, name, body):
    found = call("GET", path, name=name, project_id=P)[kind + "s"]
    return found[0] if found else call("POST", path, {kind: dict(body, name=name, project_id=P)})[kind]
net = ensure("network", "networks", "kuryr-l2bench-pod-net", {"admin_state_up": True})
sub = ensure("subnet", "subnets", "kuryr-l2bench-pod-subnet", {"network_id": net["id"], "ip_version": 4,
      "cidr": "10.77.0.0/16", "gateway_ip": "10.77.0.1"})
sgs = [s["id"] for s in call("GET", "security-groups", project_id=P)["security_groups"] if s["name"] == "default"]
fx = {"endpoint": os.environ["NEUTRON_ENDPOINT"], "project": P, "podNetwork": net["id"], "podSubnet": sub["id"],
      "podSubnetCIDR": sub["cidr"], "securityGroups": sgs, "bareMetalHosts": [os.environ["HOST"]],
      "ovsdb": os.environ["OVSDB"], "bridge": "br-kb"}
with open(os.environ["FIXTURE"] + ".tmp", "w") as f:
    json.dump(fx, f, indent=2)
os.replace(os.environ["FIXTURE"] + ".tmp", os.environ["FIXTURE"])
PYEOF
log "L2 agent stack ready: neutron-server $ENDPOINT, agent host $HOST"
echo "$STATE/fixture.json"
