#!/usr/bin/env bash
# Run static binaries (e.g. `CGO_ENABLED=0 go test -c`) as root in a throwaway qemu VM with Debian's
# kernel, which has 8021q (the development kernel has none), and exit with their exit code.
#
# Usage: PAYLOAD_ARGS="-test.v -test.run VLAN" run-in-vm.sh ./pkg.test [more...]
#        run-in-vm.sh            (no payload: an interactive busybox shell; poweroff -f to leave)
# Env:   HARNESS_ACCEL    tcg (default) or kvm. KVM here is KVM-PVM, which cannot run a stock
#                         kernel; TCG boots in ~2.5 s (reference: test-infrastructure.md §4).
#        HARNESS_TIMEOUT  seconds for the whole VM run (default 300)
#        HARNESS_MEM      MiB (default 1024)
#        HARNESS_MACHINE  qemu machine (default microvm; q35 also boots the PVH kernel, ~0.5 s slower)
#        HARNESS_TSC_KHZ  guest TSC frequency (default: the host's "cpu MHz")
#        KVER             kernel version (default: the newest /boot/vmlinuz-*)
#        PAYLOAD_ARGS, PAYLOAD_ENV, MODS, EXTRA: see build-initramfs.sh
# The uncompressed kernel is extracted once and cached in ${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/vm.
# Exit: the payloads' exit code; 125 when the guest printed none (panic, crash); 124 on timeout.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
STATE=${KURYR_STATE_DIR:-/var/tmp/kuryr-test}/vm
mkdir -p "$STATE"
start=$(date +%s.%N)

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v python3 >/dev/null || need+=(python3-minimal)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
if [ ${#need[@]} -gt 0 ]; then
	echo "run-in-vm: installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=1800 install -y --no-install-recommends "${need[@]}" >&2 ||
		{ apt-get -o DPkg::Lock::Timeout=1800 update >&2 &&
			apt-get -o DPkg::Lock::Timeout=1800 install -y --no-install-recommends "${need[@]}" >&2; }
fi

KVER=${KVER:-$(ls /boot | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1)}
export KVER
VMLINUX=$STATE/vmlinux-$KVER
if [ ! -s "$VMLINUX" ]; then
	# The uncompressed ELF kernel boots directly through its PVH entry point on -M microvm: no BIOS,
	# no decompression (CONFIG_PVH=y in Debian's kernel). Written to a temp file, then renamed, so
	# that concurrent runs never see half a kernel.
	python3 - "/boot/vmlinuz-$KVER" "$VMLINUX.tmp.$$" <<'PY'
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
while i != -1:
    try:
        out = lzma.LZMADecompressor().decompress(d[i:])
        if out[:4] == b'\x7fELF':
            open(sys.argv[2], 'wb').write(out)
            sys.exit(0)
    except lzma.LZMAError:
        pass
    i = d.find(b'\xfd7zXZ\x00', i + 1)
sys.exit("no xz-compressed ELF kernel in " + sys.argv[1])
PY
	mv "$VMLINUX.tmp.$$" "$VMLINUX"
	echo "run-in-vm: extracted $VMLINUX" >&2
fi

INITRD=$STATE/initrd-$$.cpio.gz
LOG=$STATE/console-$$.log
trap 'rm -f "$INITRD"' EXIT
"$HERE/build-initramfs.sh" "$INITRD" "$@"

ACCEL=${HARNESS_ACCEL:-tcg}
CPU=max
[ "$ACCEL" = kvm ] && CPU=host
# microvm has no HPET or ACPI PM timer, so the guest calibrates its TSC against the PIT alone. On a
# loaded host (TCG shares the cores with everything else) that calibration fails and the boot hangs
# after "tsc: Unable to calibrate against PIT". Telling the kernel the frequency skips it; under TCG
# the guest TSC runs at the host's rate.
TSC_KHZ=${HARNESS_TSC_KHZ:-$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)}
qemu_start=$(date +%s.%N)
set +e
timeout "${HARNESS_TIMEOUT:-300}" qemu-system-x86_64 -accel "$ACCEL" -M "${HARNESS_MACHINE:-microvm}" -cpu "$CPU" \
	-m "${HARNESS_MEM:-1024}" -smp 1 -nographic -no-reboot -nic none \
	-kernel "$VMLINUX" -initrd "$INITRD" \
	-append "console=ttyS0 quiet loglevel=3 panic=-1 ${TSC_KHZ:+tsc_early_khz=$TSC_KHZ}" </dev/null 2>&1 | tee "$LOG"
qrc=${PIPESTATUS[0]}
set -e
end=$(date +%s.%N)

rc=$(tr -d '\r' <"$LOG" | sed -n 's/^HARNESS: EXIT_CODE=\([0-9]*\)$/\1/p' | tail -n1)
booted=$(tr -d '\r' <"$LOG" | sed -n 's/^HARNESS: booted in \([0-9.]*\)s.*/\1/p' | tail -n1)
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
echo "run-in-vm: guest booted in ${booted:-?}s; qemu ran $(secs "$qemu_start" "$end")s;" \
	"whole run (initramfs + VM) $(secs "$start" "$end")s" >&2
if [ "$qrc" = 124 ]; then
	echo "run-in-vm: timed out after ${HARNESS_TIMEOUT:-300}s" >&2
	exit 124
fi
if [ -z "$rc" ]; then
	if [ $# -eq 0 ]; then exit 0; fi # interactive shell
	echo "run-in-vm: no EXIT_CODE from the guest (qemu rc=$qrc): see $LOG" >&2
	exit 125
fi
[ "$rc" = 0 ] && rm -f "$LOG" || echo "run-in-vm: console log kept in $LOG" >&2
exit "$rc"
