#!/usr/bin/env bash
# Stop the kube-apiserver and etcd started by hack/kube-up.sh. etcd data, certs and the token stay
# for the next kube-up.sh; --purge deletes $KURYR_STATE_DIR/kube. The built binaries in
# $KURYR_CACHE_DIR are kept either way (rebuilding them takes minutes). Succeeds when nothing runs.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
. "$HACK/lib.sh"

STATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/kube
purge=0
case "${1:-}" in
--purge) purge=1 ;;
"") ;;
*) die "usage: $0 [--purge]" ;;
esac

# The apiserver first: stopped after etcd, it would spend its shutdown retrying etcd.
stop_pidfile "$STATE/kube-apiserver.pid" kube-apiserver 30
rm -f "$STATE/kube-apiserver.sum"
stop_pidfile "$STATE/etcd.pid" etcd 30

if [ "$purge" = 1 ]; then
	log "purging $STATE"
	rm -rf "$STATE"
fi
log "kube stopped"
