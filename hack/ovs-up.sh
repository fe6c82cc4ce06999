#!/usr/bin/env bash
# Start Open vSwitch in userspace (netdev datapath: no openvswitch kernel module needed) with all its
# state under ${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/ovs, and create br-int. Idempotent: a running
# instance is reused. Prints the OVSDB address (unix:<dir>/db.sock) as the last line; the netns tests
# find it there by themselves, or through KURYR_TEST_OVSDB.
# Stop it with hack/ovs-down.sh.
set -euo pipefail

DIR=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/ovs
BRIDGE=${OVS_BRIDGE:-br-int}
DB=unix:$DIR/db.sock

[ "$(id -u)" = 0 ] || { echo "ovs-up: needs root" >&2; exit 1; }

if ! command -v ovsdb-server >/dev/null || ! command -v ovs-vswitchd >/dev/null; then
	echo "ovs-up: installing openvswitch-switch" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=1800 install -y --no-install-recommends openvswitch-switch >&2 ||
		{ apt-get -o DPkg::Lock::Timeout=1800 update >&2 &&
			apt-get -o DPkg::Lock::Timeout=1800 install -y --no-install-recommends openvswitch-switch >&2; }
fi

mkdir -p "$DIR"
# Every OVS tool (ovs-appctl, the daemons' control sockets, pid files) looks here instead of
# /var/run/openvswitch, so this instance does not collide with a system one.
export OVS_RUNDIR=$DIR OVS_LOGDIR=$DIR OVS_DBDIR=$DIR

alive() { # pidfile
	[ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

if ! alive "$DIR/ovsdb-server.pid"; then
	rm -f "$DIR/db.sock"
	[ -s "$DIR/conf.db" ] || ovsdb-tool create "$DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
	ovsdb-server "$DIR/conf.db" --remote="punix:$DIR/db.sock" --pidfile="$DIR/ovsdb-server.pid" \
		--detach --log-file="$DIR/ovsdb-server.log"
fi
ovs-vsctl --db="$DB" --timeout=10 --no-wait init

if ! alive "$DIR/ovs-vswitchd.pid"; then
	# It logs "Generic Netlink family 'ovs_datapath' does not exist" once: harmless, the netdev
	# datapath needs no kernel module.
	ovs-vswitchd "$DB" --pidfile="$DIR/ovs-vswitchd.pid" --detach --log-file="$DIR/ovs-vswitchd.log"
fi

ovs-vsctl --db="$DB" --timeout=20 -- --may-exist add-br "$BRIDGE" -- set bridge "$BRIDGE" datapath_type=netdev
ip link set "$BRIDGE" up 2>/dev/null || true
echo "ovs-up: $(ovs-vswitchd --version | head -n1) running, bridge $BRIDGE (netdev), state in $DIR" >&2
echo "$DB"
