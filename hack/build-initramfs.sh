#!/usr/bin/env bash
# Build the initramfs of the test VM (hack/run-in-vm.sh): busybox-static, iproute2's ip, the kernel
# modules the network tests need (8021q and friends, from Debian's kernel), and payload binaries that
# /init runs in order, as root, before powering off.
#
# Usage: build-initramfs.sh OUT.cpio.gz [payload-binary...]
# Env:   KVER          kernel version (default: the newest /boot/vmlinuz-*)
#        MODS          modules to load at boot (default: 8021q veth bridge macvlan dummy)
#        PAYLOAD_ARGS  arguments for every payload, e.g. "-test.v -test.run VLAN"
#        PAYLOAD_ENV   space-separated NAME=value pairs exported to the payloads
#        EXTRA         space-separated host/path:/guest/path files to add
set -euo pipefail

OUT=${1:?usage: build-initramfs.sh OUT.cpio.gz [payload...]}
shift

# Packages the image is made of; installed when missing so that a fresh Debian (CI) works.
pkgs=()
for p in busybox-static cpio kmod linux-image-amd64 iproute2; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
	echo "build-initramfs: installing ${pkgs[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=1800 install -y --no-install-recommends "${pkgs[@]}" >&2 ||
		{ apt-get -o DPkg::Lock::Timeout=1800 update >&2 &&
			apt-get -o DPkg::Lock::Timeout=1800 install -y --no-install-recommends "${pkgs[@]}" >&2; }
fi

KVER=${KVER:-$(ls /boot | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1)}
[ -n "$KVER" ] && [ -d "/lib/modules/$KVER" ] || { echo "build-initramfs: no kernel with modules in /boot (KVER=$KVER)" >&2; exit 1; }
MODS=${MODS:-8021q veth bridge macvlan dummy}

ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,run,etc,payload,lib/modules/"$KVER"}
mkdir -p "$ROOT/var" && ln -s ../run "$ROOT/var/run" # /var/run/netns (testutils.NewNS, ip netns) must exist

# One symlink per applet, made by busybox itself in one process (hundreds of ln take seconds on a
# busy machine). The links point to the binary's resolved host path (/usr/bin/busybox on merged-/usr
# Debian), so the guest has the binary there too.
bb=$(readlink -f /bin/busybox)
install -D /bin/busybox "$ROOT$bb"
[ "$bb" = /bin/busybox ] || ln -s "$bb" "$ROOT/bin/busybox"
/bin/busybox --install -s "$ROOT/bin"

# iproute2's ip, for debugging by hand in the VM's shell. Debian's busybox is built with
# SH_STANDALONE, so in sh a bare `ip` is busybox's applet (which ignores e.g. `peer name`): call
# /usr/sbin/ip by its full path.
copy_with_libs() { # host-binary guest-path
	install -D "$1" "$ROOT$2"
	for l in $(ldd "$1" | grep -oE '/[^ ]+'); do install -D "$l" "$ROOT$l"; done
}
copy_with_libs "$(command -v ip)" /usr/sbin/ip

# Kernel modules and their dependencies (modprobe resolves them; depmod indexes the copy).
for m in $MODS; do
	for f in $(modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'); do
		install -D -m644 "$f" "$ROOT$f"
	done
done
cp /lib/modules/"$KVER"/modules.{order,builtin,builtin.modinfo} "$ROOT/lib/modules/$KVER/"
depmod -b "$ROOT" "$KVER"

for e in ${EXTRA:-}; do install -D "${e%%:*}" "$ROOT${e#*:}"; done
for p in "$@"; do install -m755 "$p" "$ROOT/payload/$(basename "$p")"; done

echo "$MODS" | tr ' ' '\n' >"$ROOT/etc/modules-load"
printf '%s\n' "${PAYLOAD_ARGS:-}" >"$ROOT/etc/payload-args"
: >"$ROOT/etc/payload-env"
for kv in ${PAYLOAD_ENV:-}; do printf 'export %q\n' "$kv" >>"$ROOT/etc/payload-env"; done

cat >"$ROOT/init" <<'INIT'
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mkdir -p /run/netns
for m in $(cat /etc/modules-load); do modprobe "$m" || echo "HARNESS: modprobe $m failed"; done
ip link set lo up
echo "HARNESS: booted in $(cut -d' ' -f1 /proc/uptime)s (kernel $(uname -r))"
if [ -n "$(ls /payload)" ]; then
	export KURYR_IN_VM=1
	. /etc/payload-env
	rc=0
	args=$(cat /etc/payload-args)
	for p in /payload/*; do
		echo "HARNESS: running $p $args"
		(cd /tmp && "$p" $args)
		r=$?
		[ $r -ne 0 ] && rc=$r
	done
	echo "HARNESS: payload done at $(cut -d' ' -f1 /proc/uptime)s"
	echo "HARNESS: EXIT_CODE=$rc"
	sync
	poweroff -f
fi
# No payload: an interactive shell on the serial console.
exec setsid cttyhack sh
INIT
chmod 755 "$ROOT/init"

(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$OUT"
echo "build-initramfs: $OUT ($(du -h "$OUT" | cut -f1), kernel $KVER, modules: $MODS)" >&2
