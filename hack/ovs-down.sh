#!/usr/bin/env bash
# Stop the userspace Open vSwitch that hack/ovs-up.sh started. The database stays in the state dir
# (the next ovs-up.sh reuses it); pass --purge to delete it too. Succeeds when nothing runs.
set -euo pipefail

DIR=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/ovs
export OVS_RUNDIR=$DIR OVS_LOGDIR=$DIR OVS_DBDIR=$DIR

stop() { # name
	local pidfile=$DIR/$1.pid pid
	[ -s "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
	# exit --cleanup makes ovs-vswitchd remove its datapath (the bridges' tap devices) on the way out.
	if [ "$1" = ovs-vswitchd ]; then
		ovs-appctl -t "$DIR/$1.$pid.ctl" exit --cleanup 2>/dev/null || kill "$pid" 2>/dev/null || true
	else
		ovs-appctl -t "$DIR/$1.$pid.ctl" exit 2>/dev/null || kill "$pid" 2>/dev/null || true
	fi
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "ovs-down: $1 ($pid) ignored exit; killing it" >&2
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

stop ovs-vswitchd
stop ovsdb-server
rm -f "$DIR/db.sock"
if [ "${1:-}" = --purge ]; then
	rm -rf "$DIR"
fi
echo "ovs-down: stopped (state in $DIR${1:+, purged})" >&2
