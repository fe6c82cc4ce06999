#!/usr/bin/env bash
# Stop the neutron-server and MariaDB started by hack/neutron-up.sh. Data stays for the next
# neutron-up.sh (fast restart, no migration); --purge deletes the whole state directory.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
. "$HACK/lib.sh"

STATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/neutron
purge=0
case "${1:-}" in
--purge) purge=1 ;;
"") ;;
*) die "usage: $0 [--purge]" ;;
esac

# neutron-server forks its API worker: it runs in its own session (setsid in neutron-up.sh), so
# signal its whole process group, then the leader's pid file as a fallback.
if pid_alive "$STATE/neutron-server.pid"; then
	kill -TERM -- "-$(cat "$STATE/neutron-server.pid")" 2>/dev/null || true
fi
stop_pidfile "$STATE/neutron-server.pid" neutron-server 30
stop_pidfile "$STATE/mysql/run/mysqld.pid" mariadb 60

if [ "$purge" = 1 ]; then
	log "purging $STATE"
	rm -rf "$STATE"
fi
log "neutron stopped"
