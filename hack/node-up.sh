#!/usr/bin/env bash
# Start a whole Kubernetes node for the full-node tests (test/fullnode): containerd + runc with
# local images only, kube-controller-manager (Deployments and ReplicaSets) and a kubelet for node
# $KURYR_TEST_NODE_NAME (kuryr-test-node1, a bare-metal host of hack/neutron-up.sh's fixture), all
# against the apiserver of hack/kube-up.sh. The CNI plugin is not installed here: the tests run
# kuryr-agent, whose install step puts kuryr-cni and its conflist into the CNI directories below,
# so the node stays NotReady (NetworkPluginNotReady) until an agent is ready.
#
#   export KURYR_TEST_NODE=$(hack/node-up.sh | tail -n1)
#
# The LAST line of stdout is an env file (KEY=value lines) saying where everything is; progress goes
# to stderr. No registry is ever contacted: the sandbox (pause) and workload images are static Go
# binaries packed by test/fullnode/images/mkoci and imported with `ctr images import`; pods must use
# imagePullPolicy: Never.
#
# Idempotent: packages are installed when missing, binaries come from kube-up.sh's cache, daemons
# running with the same configuration and binary are reused. State lives in $KURYR_STATE_DIR/node.
# Stop with hack/node-down.sh. Recipe: /work/shared/reference/test-infrastructure.md §1c and §3.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HACK/.." && pwd)
# shellcheck source=hack/lib.sh
. "$HACK/lib.sh"

NODE=${KURYR_TEST_NODE_NAME:-kuryr-test-node1}
CACHE_ROOT=${KURYR_CACHE_DIR:-/var/cache/kuryr-test}
BIN=$CACHE_ROOT/k8s-v1.35.4/bin
PLUGINS=$CACHE_ROOT/cni-plugins-v1.9.1
STATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/node
KUBELET_PORT=${KURYR_NODE_KUBELET_PORT:-20250}
KUBELET_HEALTHZ_PORT=${KURYR_NODE_KUBELET_HEALTHZ_PORT:-20248}
KCM_PORT=${KURYR_NODE_KCM_PORT:-20257}
READY_TIMEOUT=${KURYR_NODE_READY_TIMEOUT:-120}
PAUSE_IMAGE=localhost/kuryr-test/pause:1
WORKLOAD_IMAGE=localhost/kuryr-test/workload:1
CTRD=$STATE/containerd
SOCK=$CTRD/containerd.sock
CNI_BIN=$STATE/cni-bin
CNI_CONF=$STATE/cni-conf
export PATH=$PATH:/usr/local/go/bin

[ "$(id -u)" = 0 ] || die "node-up.sh needs root (containerd, kubelet)"
t0=$(date +%s)
exec 3>&2
mkdir -p "$STATE" "$CTRD" "$CNI_BIN" "$CNI_CONF" "$STATE/images" "$STATE/kubelet" "$STATE/pod-logs"
chmod 700 "$STATE"

apt_ensure containerd runc >&2

# --- the apiserver (reused when running) and the kubelet / controller-manager binaries (built into
# kube-up.sh's cache with kube-apiserver and kubectl, from the same k8s.io/kubernetes module)
KUBECONFIG_FILE=$("$HACK/kube-up.sh" | tail -n1)
for b in kubelet kube-controller-manager kubectl; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing after kube-up.sh"
done
KUBECTL=("$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE")

# --- CNI: containerd 1.6 always sets up the pod's loopback with the reference loopback plugin.
if [ ! -x "$PLUGINS/loopback" ]; then
	log "building the loopback CNI plugin into $PLUGINS"
	mkdir -p "$PLUGINS"
	(cd "$ROOT" && GOBIN=$PLUGINS CGO_ENABLED=0 go install github.com/containernetworking/plugins/plugins/main/loopback@v1.9.1) >&2
fi
install -m 0755 "$PLUGINS/loopback" "$CNI_BIN/loopback"

# --- images: static Go binaries in single-layer OCI archives (go build is cached: cheap when unchanged)
log "building the pause and workload images"
(
	cd "$ROOT"
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$STATE/images/" ./test/fullnode/images/pause ./test/fullnode/images/workload
	go build -o "$STATE/images/mkoci" ./test/fullnode/images/mkoci
) >&2
"$STATE/images/mkoci" -ref "$PAUSE_IMAGE" -bin "$STATE/images/pause" -out "$STATE/images/pause.tar"
"$STATE/images/mkoci" -ref "$WORKLOAD_IMAGE" -bin "$STATE/images/workload" -out "$STATE/images/workload.tar"

# --- containerd, all its state under $CTRD (never /var/lib/containerd or /run/containerd/containerd.sock)
cat >"$CTRD/config.toml.tmp" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This sandbox lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj, and every sandbox fails.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$CNI_CONF"
    max_conf_num = 1
EOF
mv -f "$CTRD/config.toml.tmp" "$CTRD/config.toml"
ctr_() { ctr -a "$SOCK" "$@"; }
ctrd_sum=$({
	cat "$CTRD/config.toml"
	stat -c %Y "$(command -v containerd)"
} | sha256sum | cut -d' ' -f1)
ctrd_up() { ctr_ version; }
ctrd_started() {
	kill -0 "$ctrd_pid" 2>/dev/null || { tail -20 "$CTRD/containerd.log" >&3; die "containerd exited" 2>&3; }
	ctrd_up
}
if pid_alive "$CTRD/containerd.pid" && [ "$(cat "$CTRD/containerd.sum" 2>/dev/null)" = "$ctrd_sum" ] && ctrd_up >/dev/null 2>&1; then
	log "containerd: reusing the running one (pid $(cat "$CTRD/containerd.pid")) on $SOCK"
else
	stop_pidfile "$CTRD/containerd.pid" containerd 30
	log "containerd: starting on $SOCK (log: $CTRD/containerd.log)"
	setsid containerd --config "$CTRD/config.toml" </dev/null >>"$CTRD/containerd.log" 2>&1 3>&- &
	ctrd_pid=$!
	echo "$ctrd_pid" >"$CTRD/containerd.pid"
	echo "$ctrd_sum" >"$CTRD/containerd.sum"
	wait_until 30 "containerd on $SOCK" ctrd_started || { tail -20 "$CTRD/containerd.log" >&2; die "containerd did not start in 30s"; }
fi
for img in pause workload; do
	ctr_ -n k8s.io images import "$STATE/images/$img.tar" >&2 || die "ctr images import $img.tar failed"
done

# --- daemons the same way: reuse when alive, healthy and started with the same arguments and binary
# start_daemon NAME HEALTH-URL ARG...: (re)start $BIN/NAME with ARGs unless an identical one is healthy.
start_daemon() {
	local name=$1 url=$2 sum pid
	shift 2
	sum=$({
		printf '%s\n' "$@"
		stat -c %Y "$BIN/$name"
		[ "$name" != kubelet ] || cat "$STATE/kubelet-config.yaml"
	} | sha256sum | cut -d' ' -f1)
	healthy() { [ "$(curl -sk -m 2 "$url")" = ok ]; }
	if pid_alive "$STATE/$name.pid" && [ "$(cat "$STATE/$name.sum" 2>/dev/null)" = "$sum" ] && healthy; then
		log "$name: reusing the running one (pid $(cat "$STATE/$name.pid"))"
		return
	fi
	stop_pidfile "$STATE/$name.pid" "$name" 30
	log "$name: starting (log: $STATE/$name.log)"
	setsid "$BIN/$name" "$@" </dev/null >>"$STATE/$name.log" 2>&1 3>&- &
	pid=$!
	echo "$pid" >"$STATE/$name.pid"
	echo "$sum" >"$STATE/$name.sum"
	started() {
		kill -0 "$pid" 2>/dev/null || { tail -30 "$STATE/$name.log" >&3; die "$name exited" 2>&3; }
		healthy
	}
	wait_until "$READY_TIMEOUT" "$name at $url" started || { tail -30 "$STATE/$name.log" >&2; die "$name was not healthy within ${READY_TIMEOUT}s"; }
}

# --- kube-controller-manager: only what Deployments need, and the namespace controller so that a
# deleted namespace goes away. No garbage collector: the apiserver is shared with other suites whose
# objects may carry owner references to objects that never existed. No ServiceAccounts either: the
# apiserver runs without the ServiceAccount admission plugin, and the controllers use its admin
# kubeconfig.
start_daemon kube-controller-manager "https://127.0.0.1:$KCM_PORT/healthz" \
	--kubeconfig="$KUBECONFIG_FILE" \
	--controllers=deployment-controller,replicaset-controller,namespace-controller \
	--leader-elect=false --use-service-account-credentials=false \
	--bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STATE/kcm-certs"

# --- kubelet (§1c): cgroupfs on the host's cgroup v1, no auth on its loopback port, nothing that
# evicts or garbage-collects the local images
cat >"$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://$SOCK
imageServiceEndpoint: unix://$SOCK
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
enforceNodeAllocatable: []
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: ""
localStorageCapacityIsolation: false
podLogsDir: $STATE/pod-logs
syncFrequency: 10s
# Ready follows the CNI conflist within seconds (default 10s).
nodeStatusUpdateFrequency: 2s
EOF
start_daemon kubelet "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" \
	--config="$STATE/kubelet-config.yaml" --kubeconfig="$KUBECONFIG_FILE" \
	--root-dir="$STATE/kubelet" --hostname-override="$NODE"
wait_until 60 "Node $NODE registered" "${KUBECTL[@]}" get node "$NODE" ||
	{ tail -30 "$STATE/kubelet.log" >&2; die "the kubelet did not register Node $NODE"; }

# --- issue 7 §6: a real neutron-openvswitch-agent for this node. hack/l2-agent-up.sh gives RabbitMQ
# and a second neutron-server (with an agent of its own for make bench's host); a second agent here
# binds ports of host $NODE on bridges of its own (br-kn, br-kntun, OpenFlow on 127.0.0.1:6634) in
# the same userspace OVS, so ports of this node turn ACTIVE once plugged. KURYR_NODE_L2=0 skips it.
L2_FIXTURE=
if [ "${KURYR_NODE_L2:-1}" = 1 ]; then
	L2_FIXTURE=$("$HACK/l2-agent-up.sh" | tail -n1)
	L2_ENDPOINT=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' "$L2_FIXTURE")
	L2_PROJECT=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["project"])' "$L2_FIXTURE")
	OVSDB=$("$HACK/ovs-up.sh" | tail -n1)
	mkdir -p "$STATE/l2agent/state" "$STATE/l2agent/lock"
	cat >"$STATE/l2agent/agent.conf" <<EOF
[DEFAULT]
host = $NODE
transport_url = rabbit://guest:guest@127.0.0.1:5672/
log_file = $STATE/l2agent/agent.log
state_path = $STATE/l2agent/state
[oslo_concurrency]
lock_path = $STATE/l2agent/lock
[agent]
root_helper =
tunnel_types = vxlan
l2_population = False
report_interval = 10
[ovs]
integration_bridge = br-kn
tunnel_bridge = br-kntun
int_peer_patch_port = patch-kntun
tun_peer_patch_port = patch-knint
datapath_type = netdev
ovsdb_connection = $OVSDB
local_ip = 127.0.0.1
of_listen_address = 127.0.0.1
of_listen_port = ${KURYR_NODE_L2_OF_PORT:-6634}
[securitygroup]
firewall_driver = openvswitch
enable_security_group = True
EOF
	l2_sum=$(sha256sum <"$STATE/l2agent/agent.conf" | cut -d' ' -f1)
	l2_alive() {
		curl -fsS -m 5 -H "X-Project-Id: $L2_PROJECT" -H 'X-Roles: admin' "${L2_ENDPOINT}v2.0/agents?host=$NODE&alive=true" |
			"$PY" -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["agents"] else 1)'
	}
	if pid_alive "$STATE/l2agent/agent.pid" && [ "$(cat "$STATE/l2agent/agent.sum" 2>/dev/null)" = "$l2_sum" ]; then
		log "neutron-openvswitch-agent for $NODE: reusing the running one (pid $(cat "$STATE/l2agent/agent.pid"))"
	else
		stop_pidfile "$STATE/l2agent/agent.pid" neutron-openvswitch-agent 30
		log "neutron-openvswitch-agent for $NODE (br-kn on $OVSDB, server $L2_ENDPOINT): starting (log: $STATE/l2agent/agent.log)"
		ovs_dir=${OVSDB#unix:}
		OVS_RUNDIR=${ovs_dir%/*} setsid neutron-openvswitch-agent --config-file "$STATE/l2agent/agent.conf" \
			</dev/null >>"$STATE/l2agent/agent.stdout" 2>&1 3>&- &
		echo $! >"$STATE/l2agent/agent.pid"
		echo "$l2_sum" >"$STATE/l2agent/agent.sum"
	fi
	wait_until 180 "the L2 agent of $NODE alive" l2_alive || { tail -20 "$STATE/l2agent/agent.log" >&2; die "the L2 agent of $NODE did not report"; }
fi

# --- what the tests need
cat >"$STATE/env.tmp" <<EOF
KURYR_TEST_NODE_NAME=$NODE
KURYR_TEST_NODE_KUBECONFIG=$KUBECONFIG_FILE
KURYR_TEST_NODE_KUBECTL=$BIN/kubectl
KURYR_TEST_NODE_CNI_BIN_DIR=$CNI_BIN
KURYR_TEST_NODE_CNI_CONF_DIR=$CNI_CONF
KURYR_TEST_NODE_CONTAINERD_SOCK=$SOCK
KURYR_TEST_NODE_PAUSE_IMAGE=$PAUSE_IMAGE
KURYR_TEST_NODE_WORKLOAD_IMAGE=$WORKLOAD_IMAGE
KURYR_TEST_NODE_KUBELET_LOG=$STATE/kubelet.log
KURYR_TEST_NODE_L2_FIXTURE=$L2_FIXTURE
KURYR_TEST_NODE_L2_BRIDGE=br-kn
KURYR_TEST_NODE_L2_AGENT_LOG=$STATE/l2agent/agent.log
EOF
mv -f "$STATE/env.tmp" "$STATE/env"
log "node $NODE up in $(($(date +%s) - t0))s (NotReady until a kuryr-agent installs its conflist); env:"
echo "$STATE/env"
