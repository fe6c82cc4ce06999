#!/usr/bin/env bash
# Stop what hack/l2-agent-up.sh started: the L2 agent (and its bridges), its neutron-server, RabbitMQ.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
. "$HACK/lib.sh"
BASE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}
STATE=$BASE/l2agent
stop_pidfile "$STATE/agent.pid" neutron-openvswitch-agent 30
stop_pidfile "$STATE/server.pid" neutron-server 30
for br in br-kb br-kbtun; do
	ovs-vsctl --db="unix:$BASE/ovs/db.sock" --timeout=10 --if-exists del-br "$br" 2>/dev/null || true
done
RABBITMQ_NODENAME=kuryr-l2bench@localhost HOME=/root rabbitmqctl -q stop 2>/dev/null || true
