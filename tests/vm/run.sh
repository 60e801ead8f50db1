#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run one command as root inside a qemu guest booted with Debian's kernel, the
# host's root filesystem shared read-only over 9p (with a tmpfs overlay, so the
# guest can write anywhere; nothing reaches the host except through --share).
# See tests/vm/README.md.
#
#   tests/vm/run.sh [--disk IMG]... [--share DIR]... [--module M]... [--timeout S]
#                   [--log FILE] [--mem MIB] -- COMMAND [ARG]...
#
# Exit status: COMMAND's, or 124 if the guest did not finish in time, 125 if it
# did not boot (the last 40 lines of the console go to stderr), 126 for bad usage.
# COMMAND's output (stdout and stderr merged, from the serial console) is
# printed on stdout when the guest is done.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${KURA_VM_CACHE:-/var/cache/kura-vm}

usage() {
        echo "usage: $0 [--disk IMG]... [--share DIR]... [--module M]... [--timeout S] [--log FILE] [--mem MIB] -- COMMAND..." >&2
        exit 126
}
say() { echo "vm: $*" >&2; }

disks=() shares=() modules=(loop dm-mod)
timeout=180 log='' mem=${KURA_VM_MEM:-512}
while [ $# -gt 0 ]; do
        case $1 in
        --disk) [ $# -ge 2 ] || usage; disks+=("$2"); shift 2 ;;
        --share) [ $# -ge 2 ] || usage; shares+=("$2"); shift 2 ;;
        --module) [ $# -ge 2 ] || usage; modules+=("$2"); shift 2 ;;
        --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
        --log) [ $# -ge 2 ] || usage; log=$2; shift 2 ;;
        --mem) [ $# -ge 2 ] || usage; mem=$2; shift 2 ;;
        --) shift; break ;;
        *) usage ;;
        esac
done
[ $# -ge 1 ] || usage
[[ "$timeout" =~ ^[0-9]+$ ]] && [ "$timeout" -gt 0 ] || usage
[[ "$mem" =~ ^[0-9]+$ ]] || usage
[ "$(id -u)" = 0 ] || { say "must run as root (the guest sees the host root as root)"; exit 126; }
QEMU=$(command -v qemu-system-x86_64) || { say "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"; exit 126; }

KURA_VM_QUIET=1 KURA_VM_USE_CACHED=1 "$HERE/prepare.sh" || { say "prepare.sh failed"; exit 125; }
KVER=$(cat "$CACHE/KVER")
KDIR=$CACHE/$KVER

work=$(mktemp -d /tmp/kura-vm.XXXXXX) || exit 126
qpid=
cleanup() {
        [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ -n "$log" ] || log=$work/console.log
: >"$log" || exit 126

# Single-quote for /bin/sh.
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# The script the guest runs: environment, cwd, command.  Passed through: PATH,
# every KURA_* variable (not KURA_VM_*), and the names listed in KURA_VM_ENV.
{
        echo "export HOME=/root LANG=C.UTF-8"
        for v in PATH $(compgen -e | grep -E '^KURA(_|$)' | grep -v '^KURA_VM_') ${KURA_VM_ENV:-}; do
                [ -n "${!v+x}" ] && echo "export $v=$(sq "${!v}")"
        done
        echo "cd $(sq "$PWD") || exit 125"
        printf 'exec'
        for a in "$@"; do printf ' %s' "$(sq "$a")"; done
        echo
} >"$work/cmd.sh"

qargs=(-nodefaults -display none -vga none -nic none -no-reboot -m "$mem" -smp 1)
if [ "${KURA_VM_ACCEL:-tcg}" = kvm ]; then
        qargs+=(-accel kvm -cpu host)
else
        # KVM hangs guests on these machines: TCG unless asked.  "max" so that
        # binaries built for this host's CPU features still run.
        qargs+=(-accel tcg -cpu max)
fi
kernel=$KDIR/vmlinuz
[ -f "$KDIR/vmlinux" ] && [ "${KURA_VM_PVH:-1}" = 1 ] && kernel=$KDIR/vmlinux # PVH: no firmware, no decompression
qargs+=(-kernel "$kernel" -initrd "$KDIR/initrd.img")
qargs+=(-serial "file:$log")
qargs+=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
vmshares=
i=0
for d in "${shares[@]}"; do
        d=$(realpath "$d") && [ -d "$d" ] || { say "--share $d is not a directory"; exit 126; }
        [[ "$d" != *[[:space:],]* ]] || { say "--share $d: no spaces or commas, please"; exit 126; }
        qargs+=(-virtfs "local,path=$d,mount_tag=share$i,security_model=none,multidevs=remap")
        vmshares+="share$i $d "
        i=$((i + 1))
done
for img in "${disks[@]}"; do
        [ -f "$img" ] || [ -b "$img" ] || { say "--disk $img does not exist"; exit 126; }
        [[ "$img" != *,* ]] || { say "--disk $img: no commas, please"; exit 126; }
        fmt=raw
        [[ "$img" == *.qcow2 ]] && fmt=qcow2
        qargs+=(-drive "file=$img,format=$fmt,if=virtio,cache=writeback")
done
{
        echo "VM_KDIR=$(sq "$KDIR")"
        echo "VM_SCRIPT=$(sq "$work/cmd.sh")"
        echo "VM_SHARES=$(sq "$vmshares")"
        echo "VM_MODULES=$(sq "${modules[*]}")"
} >"$work/guest.conf"
append="console=ttyS0 panic=-1 kura.conf=$work/guest.conf"
[ "${KURA_VM_DEBUG:-0}" = 1 ] || append+=" quiet"
qargs+=(-append "$append")

t0=$EPOCHREALTIME
# One guest at a time on this machine (two TCG guests on 2 cores each take
# more than twice as long); qemu holds the lock until it is gone.
lockdir=${KURA_VM_CACHE:-/var/cache/kura-vm}
mkdir -p "$lockdir"
exec 8>"$lockdir/.boot.lock"
if ! flock -n 8; then
        say "waiting for another guest to finish ($lockdir/.boot.lock)"
        flock -w 900 8 || { say "another guest held $lockdir/.boot.lock for 15 min"; exit 125; }
fi
# timeout(1): no qemu outlives this script by much, even if it is killed hard.
timeout -k 5 $((timeout + 30)) "$QEMU" "${qargs[@]}" </dev/null >"$work/qemu.out" 2>&1 &
qpid=$!
secs() { awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
boot=
status=
while :; do
        if [ -z "$boot" ] && grep -q '^KURA-VM-BEGIN' "$log"; then
                boot=$(secs)
        fi
        if grep -qa '^KURA-VM-RESULT: \|^KURA-VM-BOOT-FAILED' "$log"; then
                # Let the guest power off (and qemu flush the disks).
                for _ in $(seq 50); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
                break
        fi
        if ! kill -0 "$qpid" 2>/dev/null; then
                break
        fi
        if awk -v a="$t0" -v b="$EPOCHREALTIME" -v t="$timeout" 'BEGIN { exit !(b - a > t) }'; then
                status=124
                break
        fi
        sleep 0.25
done
kill "$qpid" 2>/dev/null
wait "$qpid" 2>/dev/null
qpid=
total=$(secs)

res=$(grep -a '^KURA-VM-RESULT: ' "$log" | tail -1 | tr -d '\r')
# The command's output: the console between the markers.
sed -n '/^KURA-VM-BEGIN/,/^KURA-VM-RESULT: /{/^KURA-VM-/d;p}' "$log" | tr -d '\r'
if [ -z "$status" ]; then
        case $res in
        "KURA-VM-RESULT: PASS") status=0 ;;
        "KURA-VM-RESULT: FAIL "*)
                status=${res#KURA-VM-RESULT: FAIL }
                [[ "$status" =~ ^[0-9]+$ ]] || status=125
                ;;
        *) status=125 ;;
        esac
fi
case $status in
124) say "TIMEOUT after $timeout s (booted: ${boot:-no}); last 40 lines of the console:" ;;
125) say "the guest did not boot or did not finish; last 40 lines of the console:" ;;
*) say "guest booted in ${boot:-?} s, exit $status after $total s (kernel $KVER)" ;;
esac
if [ "$status" = 124 ] || [ "$status" = 125 ]; then
        tail -40 "$log" | tr -d '\r' | sed 's/^/  | /' >&2
        [ -s "$work/qemu.out" ] && sed 's/^/  qemu: /' "$work/qemu.out" >&2
fi
exit "$status"
