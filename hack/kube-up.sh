#!/usr/bin/env bash
# Start a real, minimal Kubernetes API for tests: Debian's etcd plus kube-apiserver built from the
# Go module proxy, both on loopback only. Prints the path of a kubeconfig (token of a system:masters
# user, insecure-skip-tls-verify) as the LAST line of stdout; progress goes to stderr.
#
#   export KURYR_TEST_KUBECONFIG=$(hack/kube-up.sh | tail -n1)
#
# No controller-manager, scheduler or kubelet: objects are stored and watched, nothing reconciles
# them (pods stay Pending, no ServiceAccounts are made, so the ServiceAccount admission plugin is off).
#
# Idempotent: etcd is installed only when missing; kube-apiserver, kubectl, kubelet and
# kube-controller-manager (the last two for hack/node-up.sh) are built only when missing from the
# cache ($KURYR_CACHE_DIR/k8s-v1.35.4/bin; cold build ~6-8 min on 2 cores, a few GB of Go build
# cache); a running, healthy etcd and apiserver started with the same flags are reused.
# KURYR_KUBE_BUILD_ONLY=1: fill the cache and exit (hack/node-up.sh uses it).
# State (etcd data, certs, token, logs) lives in $KURYR_STATE_DIR/kube. Stop with hack/kube-down.sh.
# Recipe: /work/shared/reference/test-infrastructure.md §1a.
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/lib.sh
. "$HACK/lib.sh"

K8S_VERSION=1.35.4 # the k8s.io/kubernetes module version; staging modules are v0.35.4
CACHE=${KURYR_CACHE_DIR:-/var/cache/kuryr-test}/k8s-v$K8S_VERSION
BIN=$CACHE/bin
STATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/kube
ETCD_CLIENT_PORT=${KURYR_KUBE_ETCD_PORT:-22379}
ETCD_PEER_PORT=${KURYR_KUBE_ETCD_PEER_PORT:-22380}
API_PORT=${KURYR_KUBE_API_PORT:-6443}
READY_TIMEOUT=${KURYR_KUBE_READY_TIMEOUT:-120}
ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT
API_URL=https://127.0.0.1:$API_PORT

t0=$(date +%s)
# wait_until silences its probe; fd 3 lets a probe still report why it gave up. The daemons get
# 3>&- so that they do not hold a caller's pipe open (`kube-up.sh 2>&1 | tail` would never end).
exec 3>&2
export PATH=$PATH:/usr/local/go/bin

# --- etcd from Debian (3.4.23 on bookworm; works with apiserver 1.35)
if ! command -v etcd >/dev/null; then
	[ "$(id -u)" = 0 ] || die "etcd is missing and installing it (apt) needs root"
	apt_ensure etcd-server >&2 # apt talks on stdout; ours carries only the kubeconfig path
fi

# --- kube-apiserver, kubectl, kubelet and kube-controller-manager, built once into the cache
K8S_BINS=(kube-apiserver kubectl kubelet kube-controller-manager)
missing_bins() {
	local b
	for b in "${K8S_BINS[@]}"; do [ -x "$BIN/$b" ] || echo "$b"; done
}
# build_k8s BIN...: build only the missing binaries; the ones in the cache are never replaced, so a
# running apiserver's binary (part of its args_sum) does not change under it.
build_k8s() {
	local v=0.${K8S_VERSION#1.} b0 work gomod mods m ldf bins=("$@") pkgs=() b
	for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	b0=$(date +%s)
	command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go)"
	mkdir -p "$CACHE"
	work=$(mktemp -d "$CACHE/build.XXXXXX")
	# shellcheck disable=SC2064 # expand $work now: it is local
	trap "rm -rf '$work'" EXIT
	log "building ${bins[*]} v$K8S_VERSION in $work (log: $CACHE/build.log); this takes minutes"
	(
		cd "$work"
		# A throwaway module: never /work/main's go.mod or a go.work above it.
		export GOWORK=off GOTOOLCHAIN=local GOFLAGS=-buildvcs=false
		gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
			/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
		# k8s.io/kubernetes replaces its staging modules with ./staging/...: pin each to its release.
		mods=$(grep -oP '^\s+\Kk8s.io/[a-z0-9-]+(?= => ./staging)' "$gomod")
		[ -n "$mods" ] || { echo "no staging modules found in $gomod"; exit 1; }
		{
			printf 'module example.com/k8sbuild\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
			for m in $mods; do printf '\t%s => %s v%s\n' "$m" "$m" "$v"; done
			printf ')\n'
		} >go.mod
		cat >tools.go <<-'EOF'
			//go:build tools

			package tools

			import (
				_ "k8s.io/kubernetes/cmd/kube-apiserver"
				_ "k8s.io/kubernetes/cmd/kube-controller-manager"
				_ "k8s.io/kubernetes/cmd/kubectl"
				_ "k8s.io/kubernetes/cmd/kubelet"
			)
		EOF
		go mod tidy
		# Without the stamp gitVersion is "v0.0.0-master+$Format:%H$" and kubectl refuses to parse it.
		ldf="-s -w"
		for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			ldf+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=${K8S_VERSION%%.*}"
			ldf+=" -X $p.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $p.gitTreeState=clean"
		done
		go build -ldflags "$ldf" -o bin/ "${pkgs[@]}"
	) >"$CACHE/build.log" 2>&1 || { tail -30 "$CACHE/build.log" >&2; die "building kubernetes v$K8S_VERSION failed"; }
	for b in "${bins[@]}"; do
		# kubectl has no --version flag.
		case $b in kubectl) "$work/bin/$b" version --client >&2 ;; *) "$work/bin/$b" --version >&2 ;; esac
	done
	mkdir -p "$BIN"
	# mv within one file system: a concurrent reader sees the old binary or the new one, never half.
	for b in "${bins[@]}"; do mv -f "$work/bin/$b" "$BIN/"; done
	rm -rf "$work"
	trap - EXIT
	log "built in $(($(date +%s) - b0))s into $BIN"
}
if [ -n "$(missing_bins)" ]; then
	mkdir -p "$CACHE"
	# Two kube-up.sh at once (parallel CI jobs) build once: the second waits for the first.
	exec 4>"$CACHE/build.lock"
	flock 4
	mapfile -t todo < <(missing_bins)
	[ ${#todo[@]} -eq 0 ] || build_k8s "${todo[@]}"
	exec 4>&- # closing it unlocks; the daemons below must not inherit it
fi
[ "${KURYR_KUBE_BUILD_ONLY:-}" != 1 ] || { log "binaries in $BIN"; exit 0; }

# --- state: service-account key pair, a random admin token, the kubeconfig
mkdir -p "$STATE/certs"
chmod 700 "$STATE"
[ -s "$STATE/sa.key" ] && [ -s "$STATE/sa.pub" ] || {
	openssl genrsa -out "$STATE/sa.key" 2048 2>/dev/null
	openssl rsa -in "$STATE/sa.key" -pubout -out "$STATE/sa.pub" 2>/dev/null
}
[ -s "$STATE/token" ] || (umask 077 && openssl rand -hex 24 >"$STATE/token")
TOKEN=$(cat "$STATE/token")
(umask 077 && echo "$TOKEN,kuryr-test-admin,kuryr-test-admin,\"system:masters\"" >"$STATE/tokens.csv")

port_busy() { ss -Htln "sport = :$1" | grep -q .; }

# --- etcd
etcd_up() { curl -fsS -m 2 "$ETCD_URL/health" | grep -q '"health":"true"'; }
etcd_started() {
	kill -0 "$etcd_pid" 2>/dev/null || { tail -20 "$STATE/etcd.log" >&3; die "etcd exited" 2>&3; }
	etcd_up
}
if pid_alive "$STATE/etcd.pid" && etcd_up 2>/dev/null; then
	log "etcd: reusing the running etcd (pid $(cat "$STATE/etcd.pid")) on $ETCD_URL"
else
	stop_pidfile "$STATE/etcd.pid" etcd 30
	for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT"; do
		port_busy "$p" && die "127.0.0.1:$p is taken by another process (set KURYR_KUBE_ETCD_PORT / KURYR_KUBE_ETCD_PEER_PORT)"
	done
	log "etcd: starting on $ETCD_URL (data: $STATE/etcd-data)"
	# --unsafe-no-fsync: test data, speed over durability (envtest does the same).
	setsid etcd --name kuryr-test --data-dir "$STATE/etcd-data" --unsafe-no-fsync \
		--listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
		--initial-cluster "kuryr-test=http://127.0.0.1:$ETCD_PEER_PORT" \
		</dev/null >>"$STATE/etcd.log" 2>&1 3>&- &
	etcd_pid=$!
	echo "$etcd_pid" >"$STATE/etcd.pid"
	wait_until 30 "etcd on $ETCD_URL" etcd_started || { tail -20 "$STATE/etcd.log" >&2; die "etcd did not become healthy in 30s"; }
fi

# --- kube-apiserver
API_ARGS=(
	--etcd-servers="$ETCD_URL"
	--secure-port="$API_PORT" --bind-address=127.0.0.1 --advertise-address=127.0.0.1
	--cert-dir="$STATE/certs"
	--token-auth-file="$STATE/tokens.csv"
	--authorization-mode=RBAC
	--service-account-key-file="$STATE/sa.pub" --service-account-signing-key-file="$STATE/sa.key"
	--service-account-issuer=https://kubernetes.default.svc
	--service-cluster-ip-range=10.0.0.0/24
	# Nothing creates ServiceAccounts without kube-controller-manager: with the plugin on, every pod
	# create fails with 'serviceaccount "default" not found'.
	--disable-admission-plugins=ServiceAccount
	--allow-privileged=true
)
# A running apiserver started with other flags, another token or another binary is restarted.
args_sum=$({
	printf '%s\n' "${API_ARGS[@]}" "$TOKEN"
	stat -c %Y "$BIN/kube-apiserver"
} | sha256sum | cut -d' ' -f1)
api_up() { [ "$(curl -sk -m 2 -H "Authorization: Bearer $TOKEN" "$API_URL/readyz")" = ok ]; }
api_started() {
	kill -0 "$api_pid" 2>/dev/null || { tail -30 "$STATE/kube-apiserver.log" >&3; die "kube-apiserver exited" 2>&3; }
	api_up
}
if pid_alive "$STATE/kube-apiserver.pid" && [ "$(cat "$STATE/kube-apiserver.sum" 2>/dev/null)" = "$args_sum" ] && api_up; then
	log "kube-apiserver: reusing the running server (pid $(cat "$STATE/kube-apiserver.pid")) on $API_URL"
else
	pid_alive "$STATE/kube-apiserver.pid" && log "kube-apiserver: not ready or started differently, restarting"
	stop_pidfile "$STATE/kube-apiserver.pid" kube-apiserver 30
	port_busy "$API_PORT" && die "127.0.0.1:$API_PORT is taken by another process (set KURYR_KUBE_API_PORT)"
	log "kube-apiserver: starting on $API_URL (log: $STATE/kube-apiserver.log)"
	setsid "$BIN/kube-apiserver" "${API_ARGS[@]}" </dev/null >>"$STATE/kube-apiserver.log" 2>&1 3>&- &
	api_pid=$!
	echo "$api_pid" >"$STATE/kube-apiserver.pid"
	echo "$args_sum" >"$STATE/kube-apiserver.sum"
	wait_until "$READY_TIMEOUT" "kube-apiserver /readyz on $API_URL" api_started || {
		tail -30 "$STATE/kube-apiserver.log" >&2
		die "kube-apiserver was not ready within ${READY_TIMEOUT}s"
	}
fi

# --- kubeconfig (rewritten every time: cheap, and follows a changed port or token)
KUBECONFIG_FILE=$STATE/kubeconfig
(
	umask 077
	cat >"$KUBECONFIG_FILE.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kuryr-test
  cluster:
    server: $API_URL
    insecure-skip-tls-verify: true
users:
- name: kuryr-test-admin
  user:
    token: $TOKEN
contexts:
- name: kuryr-test
  context:
    cluster: kuryr-test
    user: kuryr-test-admin
current-context: kuryr-test
EOF
	mv -f "$KUBECONFIG_FILE.tmp" "$KUBECONFIG_FILE"
)
"$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" version >&2 || die "kubectl version failed against $API_URL"
# Tests find kubectl next to the kubeconfig (testutil.Kubectl).
ln -sfn "$BIN/kubectl" "$STATE/kubectl"
log "kube-apiserver ready in $(($(date +%s) - t0))s; kubectl: $BIN/kubectl; kubeconfig:"
echo "$KUBECONFIG_FILE"
