#!/usr/bin/env bash
# Start a real Neutron API for tests: Debian's neutron-server (noauth, fake RPC transport, ML2 + trunk)
# on MariaDB, listening on 127.0.0.1:9696 (env NEUTRON_PORT), then create the test fixture (project, pod and worker
# networks, three "VM" parent ports with trunks, a security group) and print the path of fixture.json.
#
# Idempotent: packages are installed only when missing, the database is migrated only when new, a
# running server is reused and fixture objects are found by name before anything is created.
# Everything lives under $KURYR_STATE_DIR/neutron (default /var/tmp/kuryr-test/neutron).
# Stop with hack/neutron-down.sh. Recipe: /work/shared/reference/test-infrastructure.md §0.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
. "$HACK/lib.sh"

STATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/neutron
PROJECT=${KURYR_TEST_PROJECT:-kuryr-test}
PORT=${NEUTRON_PORT:-9696}
ENDPOINT="http://127.0.0.1:$PORT/"
SOCK=$STATE/mysql/run/mysqld.sock
API_TIMEOUT=${NEUTRON_API_TIMEOUT:-180}

[ "$(id -u)" = 0 ] || die "neutron-up.sh needs root (apt, mariadbd --user=mysql)"
t0=$(date +%s)
exec 3>&2
mkdir -p "$STATE"/{etc,lock,state}

apt_ensure neutron-server mariadb-server python3-pymysql

# --- MariaDB: a private instance (own datadir, unix socket only) so it cannot clash with another
# MariaDB on this machine. Durability is traded for speed: this is test data.
cat >"$STATE/my.cnf" <<EOF
[mysqld]
datadir = $STATE/mysql/data
socket = $SOCK
pid-file = $STATE/mysql/run/mysqld.pid
log-error = $STATE/mysql/run/mysqld.log
skip-networking
skip-log-bin
innodb_flush_log_at_trx_commit = 2
innodb_doublewrite = 0
max_connections = 200
character-set-server = utf8mb4
EOF
# mariadbd runs as user mysql: its data and run directories must be mysql's.
mysql_up() { mariadb-admin --socket="$SOCK" -uroot ping; }
# Fail at once when mariadbd exits (fd 3 is stderr: wait_until silences the probe's own output).
mysql_started() { kill -0 "$mysqld_pid" || { tail -20 "$STATE/mysql/run/mysqld.log" >&3; die "mariadbd exited" 2>&3; }; mysql_up; }
if ! pid_alive "$STATE/mysql/run/mysqld.pid" || ! mysql_up >/dev/null 2>&1; then
	mkdir -p "$STATE/mysql/run" "$STATE/mysql/data"
	chown mysql:mysql "$STATE/mysql" "$STATE/mysql/run" "$STATE/mysql/data"
	if [ ! -d "$STATE/mysql/data/mysql" ]; then
		log "mariadb: initialising $STATE/mysql/data"
		mariadb-install-db --defaults-file="$STATE/my.cnf" --user=mysql --skip-test-db \
			--auth-root-authentication-method=socket >"$STATE/mariadb-install.log" 2>&1 ||
			{ cat "$STATE/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
	fi
	log "mariadb: starting"
	# setsid: its own session, so neither the caller's terminal nor its job control can stop it.
	setsid /usr/sbin/mariadbd --defaults-file="$STATE/my.cnf" --user=mysql </dev/null >>"$STATE/mysql/run/mysqld.log" 2>&1 3>&- &
	mysqld_pid=$!
	wait_until 60 "mariadb on $SOCK" mysql_started || die "mariadb did not start (log: $STATE/mysql/run/mysqld.log)"
fi
mariadb --socket="$SOCK" -uroot -e "CREATE DATABASE IF NOT EXISTS neutron CHARACTER SET utf8mb4;
  CREATE USER IF NOT EXISTS 'neutron'@'localhost' IDENTIFIED BY 'nt';
  GRANT ALL ON neutron.* TO 'neutron'@'localhost'; FLUSH PRIVILEGES;"

# --- neutron-server configuration (a private copy; /etc/neutron is not used except api-paste.ini)
cat >"$STATE/etc/neutron.conf" <<EOF
[DEFAULT]
auth_strategy = noauth
core_plugin = ml2
# router: the namespace subnets' pod_router interface (kuryr-controller); no L3 agent is needed for it.
service_plugins = router,trunk
transport_url = fake:/
notify_nova_on_port_status_changes = False
notify_nova_on_port_data_changes = False
bind_host = 127.0.0.1
bind_port = $PORT
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
api_paste_config = /etc/neutron/api-paste.ini
log_file = $STATE/server.log
state_path = $STATE/state
[database]
connection = mysql+pymysql://neutron:nt@localhost/neutron?unix_socket=$SOCK&charset=utf8mb4
[oslo_concurrency]
lock_path = $STATE/lock
[experimental]
linuxbridge = true
[quotas]
quota_network = -1
quota_subnet = -1
quota_port = -1
quota_security_group = -1
quota_security_group_rule = -1
EOF
cat >"$STATE/etc/ml2_conf.ini" <<EOF
[ml2]
type_drivers = flat,vlan,vxlan,local
tenant_network_types = vxlan
# linuxbridge: make bench's hosts (LB_HOSTS below) get vif_type bridge, the same kernel work as the
# reference bridge plugin it is compared with.
mechanism_drivers = openvswitch,linuxbridge
# tag_ports_during_bulk_creation: without it Neutron answers 201 to a create body with "tags" and
# silently drops them (checked on this Zed server); kuryr sets its tags in the create request.
extension_drivers = port_security,tag_ports_during_bulk_creation
[ml2_type_vxlan]
vni_ranges = 1:10000
[ml2_type_vlan]
network_vlan_ranges = physnet1:100:2000
[ml2_type_flat]
flat_networks = *
EOF
CONF=(--config-file "$STATE/etc/neutron.conf" --config-file "$STATE/etc/ml2_conf.ini")

api_up() { curl -fsS -m 5 -H "X-Project-Id: $PROJECT" -H 'X-Roles: admin' "${ENDPOINT}v2.0/extensions" >/dev/null; }

# A running server started with another configuration is restarted.
conf_sum=$(cat "$STATE/etc/neutron.conf" "$STATE/etc/ml2_conf.ini" | sha256sum | cut -d' ' -f1)
same_conf() { [ "$(cat "$STATE/etc/running.sum" 2>/dev/null)" = "$conf_sum" ]; }
if pid_alive "$STATE/neutron-server.pid" && api_up && same_conf; then
	log "neutron-server: reusing the running server (pid $(cat "$STATE/neutron-server.pid"))"
else
	if pid_alive "$STATE/neutron-server.pid"; then
		log "neutron-server: configuration changed, restarting"
		kill -TERM -- "-$(cat "$STATE/neutron-server.pid")" 2>/dev/null || true
		stop_pidfile "$STATE/neutron-server.pid" neutron-server 30
	fi
	api_up 2>/dev/null && die "something else answers on $ENDPOINT (not our pid file $STATE/neutron-server.pid)"
	stop_pidfile "$STATE/neutron-server.pid" neutron-server 10
	# Migrate only a new database; the marker is written after a complete migration.
	if [ ! -f "$STATE/db-migrated" ]; then
		log "neutron-db-manage upgrade heads (takes ~20 s)"
		neutron-db-manage "${CONF[@]}" upgrade heads >"$STATE/db-manage.log" 2>&1 ||
			{ tail -30 "$STATE/db-manage.log" >&2; die "neutron-db-manage failed"; }
		touch "$STATE/db-migrated"
	fi
	log "neutron-server: starting on $ENDPOINT"
	setsid neutron-server "${CONF[@]}" </dev/null >>"$STATE/server.stdout" 2>&1 3>&- &
	echo $! >"$STATE/neutron-server.pid"
	echo "$conf_sum" >"$STATE/etc/running.sum"
	if ! wait_until "$API_TIMEOUT" "neutron-server API on $ENDPOINT" api_up; then
		tail -30 "$STATE/server.log" >&2 || true
		die "neutron-server did not answer within ${API_TIMEOUT}s"
	fi
	log "neutron-server: API up after $(($(date +%s) - t0))s"
fi

# --- "L2 agents" for the bare-metal hosts. No agent runs here, so ML2 fails every binding to a host
# (after 10 tries, ~0.3 s each per port). An agent row whose heartbeat lies in the future counts as
# alive forever: ports bound to these hosts get binding:vif_type ovs, as with a real OVS agent.
# bm1 and bm2 are shared; the reliability suites each take their own (test/crash: crash1-3), since
# a bare-metal agent loads every kuryr port bound to its host; node1 is hack/node-up.sh's kubelet
# node (test/fullnode); bench1 is make bench's.
BM_HOSTS=(kuryr-test-bm1 kuryr-test-bm2 kuryr-test-crash1 kuryr-test-crash2 kuryr-test-crash3 kuryr-test-fault1 kuryr-test-fault2 kuryr-test-fault3 kuryr-test-node1 kuryr-test-kube1 kuryr-test-bench1)
# make bench's hosts get a Linux bridge agent row instead: the pool (bench-lb1) and noop (bench-lb2, of
# its own, as a noop agent deletes the ports it finds) plug veth + Linux bridge, as the floor does.
LB_HOSTS=(kuryr-test-bench-lb1 kuryr-test-bench-lb2)
fake_agent() { # host, agent_type, binary, configurations
	mariadb --socket="$SOCK" -uroot neutron -e "INSERT IGNORE INTO agents (id, agent_type, \`binary\`, topic, host,
	  admin_state_up, created_at, started_at, heartbeat_timestamp, configurations, \`load\`)
	  VALUES (UUID(), '$2', '$3', 'N/A', '$1', 1, NOW(), NOW(), '2099-01-01 00:00:00', '$4', 0);"
}
ovs_conf='{"bridge_mappings": {"physnet1": "br-ex"}, "tunnel_types": ["vxlan"], "integration_bridge": "br-int", "datapath_type": "system", "ovs_hybrid_plug": false, "l2_population": false, "enable_distributed_routing": false, "ovs_capabilities": {"datapath_types": ["system"], "iface_types": []}}'
lb_conf='{"interface_mappings": {"physnet1": "eth1"}, "bridge_mappings": {}, "tunnel_types": ["vxlan"], "l2_population": false}'
for h in "${BM_HOSTS[@]}"; do fake_agent "$h" 'Open vSwitch agent' neutron-openvswitch-agent "$ovs_conf"; done
for h in "${LB_HOSTS[@]}"; do fake_agent "$h" 'Linux bridge agent' neutron-linuxbridge-agent "$lb_conf"; done

# --- the fixture (found by name first; created only when missing)
BM_HOSTS="${BM_HOSTS[*]}" NEUTRON_ENDPOINT=$ENDPOINT NEUTRON_PROJECT=$PROJECT FIXTURE=$STATE/fixture.json "$PY" - <<'PYEOF'
import json, os, sys, urllib.error, urllib.parse, urllib.request

EP = os.environ["NEUTRON_ENDPOINT"].rstrip("/") + "/v2.0/"
PROJECT = os.environ["NEUTRON_PROJECT"]
HDRS = {"X-Project-Id": PROJECT, "X-Roles": "admin", "Content-Type": "application/json",
        "Accept": "application/json"}

def call(method, path, body=None, **query):
    url = EP + path + ("?" + urllib.parse.urlencode(query, doseq=True) if query else "")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=HDRS)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        sys.exit(f"fixture: {method} {url}: {e.code} {e.read().decode(errors='replace')}")

def ensure(kind, path, name, body):
    """Return the object of this kind named name in the project, creating it when missing."""
    found = call("GET", path, name=name, project_id=PROJECT)[kind + "s"]
    if found:
        return found[0]
    body = dict(body, name=name, project_id=PROJECT)
    return call("POST", path, {kind: body})[kind]

pod_net = ensure("network", "networks", "kuryr-test-pod-net", {"admin_state_up": True})
pod_sub = ensure("subnet", "subnets", "kuryr-test-pod-subnet",
                 {"network_id": pod_net["id"], "ip_version": 4, "cidr": "10.10.0.0/16",
                  "gateway_ip": "10.10.0.1", "dns_nameservers": ["10.10.0.2"]})
wk_net = ensure("network", "networks", "kuryr-test-worker-net", {"admin_state_up": True})
wk_sub = ensure("subnet", "subnets", "kuryr-test-worker-subnet",
                {"network_id": wk_net["id"], "ip_version": 4, "cidr": "192.168.0.0/24",
                 "gateway_ip": "192.168.0.1"})

# Listing the project's security groups makes Neutron create its "default" group.
sgs = call("GET", "security-groups", project_id=PROJECT)["security_groups"]
default_sg = next((s["id"] for s in sgs if s["name"] == "default"), None)
extra_sg = ensure("security_group", "security-groups", "kuryr-test-sg",
                  {"description": "kuryr-pools tests"})["id"]
sg_ids = [s for s in (default_sg, extra_sg) if s]

# The [namespace_subnet] pod_router of the controller tests.
pod_router = ensure("router", "routers", "kuryr-test-pod-router", {"admin_state_up": True})

trunks = []
for i, node in enumerate(("node1", "node2", "node3")):
    ip = f"192.168.0.{11 + i}"
    parent = ensure("port", "ports", f"kuryr-test-{node}-parent",
                    {"network_id": wk_net["id"], "fixed_ips": [{"subnet_id": wk_sub["id"], "ip_address": ip}],
                     "device_owner": "compute:nova", "device_id": f"kuryr-test-vm-{node}",
                     "admin_state_up": True})
    trunk = ensure("trunk", "trunks", f"kuryr-test-{node}-trunk", {"port_id": parent["id"]})
    trunks.append({"name": node, "ip": ip, "parentPort": parent["id"], "trunk": trunk["id"]})

fixture = {
    "endpoint": os.environ["NEUTRON_ENDPOINT"],
    "project": PROJECT,
    "podNetwork": pod_net["id"],
    "podSubnet": pod_sub["id"],
    "podSubnetCIDR": pod_sub["cidr"],
    "workerNetwork": wk_net["id"],
    "workerSubnet": wk_sub["id"],
    "workerSubnetCIDR": wk_sub["cidr"],
    "securityGroups": sg_ids,
    "bareMetalHosts": os.environ["BM_HOSTS"].split(),
    "trunks": trunks,
    "podRouter": pod_router["id"],
}
path = os.environ["FIXTURE"]
with open(path + ".tmp", "w") as f:
    json.dump(fixture, f, indent=2)
    f.write("\n")
os.replace(path + ".tmp", path)
PYEOF

log "neutron ready in $(($(date +%s) - t0))s; fixture:"
echo "$STATE/fixture.json"
