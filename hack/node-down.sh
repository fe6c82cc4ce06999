#!/usr/bin/env bash
# Stop what hack/node-up.sh started: the kubelet, kube-controller-manager and containerd with the
# containers it still runs, the kubelet's mounts under its root dir and the cgroups it created, and
# the Node object. The apiserver is left alone (hack/kube-down.sh). Pods should be deleted first
# while an agent runs (the tests do): a sandbox killed here gets no CNI DEL.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
. "$HACK/lib.sh"

NODE=${KURYR_TEST_NODE_NAME:-kuryr-test-node1}
BIN=${KURYR_CACHE_DIR:-/var/cache/kuryr-test}/k8s-v1.35.4/bin
KSTATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/kube
STATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/node
CTRD=$STATE/containerd
SOCK=$CTRD/containerd.sock

stop_pidfile "$STATE/l2agent/agent.pid" neutron-openvswitch-agent 30
for br in br-kn br-kntun; do
	ovs-vsctl --db="unix:${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/ovs/db.sock" --timeout=10 --if-exists del-br "$br" 2>/dev/null || true
done
stop_pidfile "$STATE/kubelet.pid" kubelet 30
stop_pidfile "$STATE/kube-controller-manager.pid" kube-controller-manager 30

if pid_alive "$CTRD/containerd.pid"; then
	# The pods' containers outlive the kubelet: kill every task, then the containers' records.
	for c in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
		ctr -a "$SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
	done
	sleep 1
	for c in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
		ctr -a "$SOCK" -n k8s.io tasks rm -f "$c" >/dev/null 2>&1 || true
		ctr -a "$SOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1 || true
	done
fi
stop_pidfile "$CTRD/containerd.pid" containerd 30

# The kubelet bind-mounts its root dir and the pods' volumes; containerd mounts sandboxes' shm and
# rootfs under its own root and state. Deepest first.
for dir in "$STATE/kubelet" "$CTRD"; do
	awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
	done
done

# cgroup v1 (hybrid): the kubelet leaves kubepods/ in every hierarchy. rmdir only empties.
for h in /sys/fs/cgroup/*/; do
	for top in kubepods kubepods.slice; do
		[ -d "$h$top" ] || continue
		find "$h$top" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
done

if [ -s "$KSTATE/kubeconfig" ] && [ -x "$BIN/kubectl" ]; then
	"$BIN/kubectl" --kubeconfig "$KSTATE/kubeconfig" delete node "$NODE" --ignore-not-found --wait=false >/dev/null 2>&1 || true
fi
rm -f "$STATE/env"
log "node $NODE stopped"
