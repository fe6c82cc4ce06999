# Shared helpers for the hack/ scripts that start real test components. Source it, do not run it.
# shellcheck shell=bash

# The system python: `python3` on PATH may be a pyenv shim without Debian's modules.
PY=/usr/bin/python3

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# apt_ensure PKG...: install the packages that are not installed yet (nothing to do: no apt call).
apt_ensure() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	log "apt: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	local opts=(-o DPkg::Lock::Timeout=1800 -y --no-install-recommends)
	if ! apt-get "${opts[@]}" install "${missing[@]}"; then
		apt-get -o DPkg::Lock::Timeout=1800 update
		apt-get "${opts[@]}" install "${missing[@]}"
	fi
}

# pid_alive FILE: the process whose id FILE holds is running.
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_until SECONDS WHAT CMD...: poll CMD every 0.2 s until it succeeds, or fail after SECONDS.
wait_until() {
	local limit=$1 what=$2 deadline
	shift 2
	deadline=$(($(date +%s) + limit))
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$deadline" ] || { log "timed out after ${limit}s waiting for $what"; return 1; }
		sleep 0.2
	done
}

# stop_pidfile FILE NAME [SECONDS]: TERM the process, wait for it, KILL it if it does not go.
stop_pidfile() {
	local file=$1 name=$2 limit=${3:-30} pid i
	pid_alive "$file" || { rm -f "$file"; return 0; }
	pid=$(cat "$file")
	log "stopping $name (pid $pid)"
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < limit * 5; i++)); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
		sleep 0.2
	done
	log "$name did not stop in ${limit}s: killing it"
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$file"
}
