#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Boot a whole disk image the way a machine would (firmware, boot loader, its
# own kernel and initramfs) and wait for a marker on the serial console.
# The images are never changed (snapshot=on).  See tests/vm/README.md.
#
#   tests/vm/boot-disk.sh --firmware bios|uefi|uefi-sb --disk IMG [--disk IMG]...
#                         --marker REGEX [--timeout S] [--bus virtio|sata|nvme|ide]
#                         [--log FILE] [--mem MIB]
#                         [--cdrom ISO] [--disk-rw IMG] [--nic SPEC]
#                         [--fail-marker REGEX] [--sector-size 512|4096]
#
# --fail-marker REGEX: a console line matching it ends the boot at once with
# status 1 (the guest failed: a GRUB prompt, the firmware's shell...).
# --sector-size N: the disks have N-byte logical and physical sectors
# (virtio-blk or nvme only; default: qemu's 512).
# --cdrom ISO boots a CD image first (IDE, read-only; the disks may then be
# left out).  --disk-rw IMG is a disk like --disk (same order, same bus) but
# writable: the guest's writes reach IMG.  --nic SPEC is qemu's -nic (e.g.
# user,model=virtio-net-pci: the guest reaches the host's loopback at 10.0.2.2).
#
# Exit status: 0 when a console line matches REGEX (grep -E), 1 if the guest
# stopped (powered off, rebooted, crashed) without printing it, 124 if it did
# not print it within S seconds (default 180), 126 for bad usage.  Unless 0,
# the last 40 lines of the console go to stderr.
set -uo pipefail

usage() {
        echo "usage: $0 --firmware bios|uefi|uefi-sb --disk IMG [--disk IMG]... --marker REGEX [--timeout S] [--bus virtio|sata|nvme|ide] [--log FILE] [--mem MIB] [--cdrom ISO] [--disk-rw IMG] [--nic SPEC] [--fail-marker REGEX] [--sector-size 512|4096]" >&2
        exit 126
}
say() { echo "vm: $*" >&2; }

fw='' marker='' timeout=180 bus=virtio log='' mem=${KURA_VM_MEM:-512}
disks=() cdrom='' nic=none
rw=() # rw[i]=1: disks[i] is writable (--disk-rw)
while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || usage
        case $1 in
        --firmware) fw=$2 ;;
        --disk) disks+=("$2") rw+=(0) ;;
        --disk-rw) disks+=("$2") rw+=(1) ;;
        --cdrom) cdrom=$2 ;;
        --nic) nic=$2 ;;
        --marker) marker=$2 ;;
        --timeout) timeout=$2 ;;
        --bus) bus=$2 ;;
        --log) log=$2 ;;
        --mem) mem=$2 ;;
        --fail-marker) failmarker=$2 ;;
        --sector-size) secsize=$2 ;;
        *) usage ;;
        esac
        shift 2
done
{ [ ${#disks[@]} -ge 1 ] || [ -n "$cdrom" ]; } && [ -n "$marker" ] || usage
[[ "$timeout" =~ ^[0-9]+$ ]] && [ "$timeout" -gt 0 ] || usage
[[ "$mem" =~ ^[0-9]+$ ]] || usage
case ${secsize:=} in
'') ;;
512 | 4096) [ "$bus" = virtio ] || [ "$bus" = nvme ] || { say "--sector-size needs --bus virtio or nvme"; exit 126; } ;;
*) usage ;;
esac
QEMU=$(command -v qemu-system-x86_64) || { say "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"; exit 126; }

qargs=(-nodefaults -display none -vga none -nic "$nic" -no-reboot -m "$mem" -smp 1)
if [ "${KURA_VM_ACCEL:-tcg}" = kvm ]; then
        qargs+=(-accel kvm -cpu host)
else
        qargs+=(-accel tcg) # KVM hangs guests on these machines
fi
case $fw in
bios) ;; # SeaBIOS, qemu's default
uefi)
        ovmf=${KURA_VM_OVMF:-/usr/share/ovmf/OVMF.fd}
        [ -f "$ovmf" ] || { say "$ovmf is missing (apt-get install ovmf)"; exit 126; }
        # No persistent NVRAM: OVMF boots \EFI\BOOT\BOOTX64.EFI only.
        qargs+=(-bios "$ovmf")
        ;;
uefi-sb)
        # Secure Boot on: OVMF with Microsoft's keys enrolled (Debian's shim is
        # signed by them), q35 with SMM, a fresh copy of the variable store.
        sbcode=${KURA_VM_OVMF_SB_CODE:-/usr/share/OVMF/OVMF_CODE_4M.ms.fd}
        sbvars=${KURA_VM_OVMF_SB_VARS:-/usr/share/OVMF/OVMF_VARS_4M.ms.fd}
        [ -f "$sbcode" ] && [ -f "$sbvars" ] || { say "$sbcode or $sbvars is missing (apt-get install ovmf)"; exit 126; }
        qargs+=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on
                -drive "if=pflash,format=raw,unit=0,readonly=on,file=$sbcode")
        ;;
*) usage ;;
esac

work=$(mktemp -d /tmp/kura-vm-boot.XXXXXX) || exit 126
qpid=
cleanup() {
        [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "$fw" = uefi-sb ]; then
        cp "$sbvars" "$work/vars.fd" || exit 126
        qargs+=(-drive "if=pflash,format=raw,unit=1,file=$work/vars.fd")
fi
[ -n "$log" ] || log=$work/console.log
: >"$log" || exit 126
qargs+=(-serial "file:$log")

[ "$bus" = sata ] && qargs+=(-device "ahci,id=ahci")
i=0
for img in "${disks[@]}"; do
        [ -f "$img" ] || [ -b "$img" ] || { say "--disk $img does not exist"; exit 126; }
        [[ "$img" != *,* ]] || { say "--disk $img: no commas, please"; exit 126; }
        fmt=raw
        [[ "$img" == *.qcow2 ]] && fmt=qcow2
        drv="file=$img,format=$fmt,snapshot=on,id=d$i"
        [ "${rw[i]}" = 1 ] && drv="file=$img,format=$fmt,id=d$i"
        case $bus in
        virtio)
                if [ -n "$secsize" ]; then
                        qargs+=(-drive "$drv,if=none" -device "virtio-blk-pci,drive=d$i,logical_block_size=$secsize,physical_block_size=$secsize")
                else
                        qargs+=(-drive "$drv,if=virtio")
                fi
                ;;
        ide) qargs+=(-drive "$drv,if=ide") ;;
        sata) qargs+=(-drive "$drv,if=none" -device "ide-hd,drive=d$i,bus=ahci.$i") ;;
        nvme) qargs+=(-drive "$drv,if=none" -device "nvme,drive=d$i,serial=kura$i${secsize:+,logical_block_size=$secsize,physical_block_size=$secsize}") ;;
        *) usage ;;
        esac
        i=$((i + 1))
done

if [ -n "$cdrom" ]; then
        [ -f "$cdrom" ] || { say "--cdrom $cdrom does not exist"; exit 126; }
        [[ "$cdrom" != *,* ]] || { say "--cdrom $cdrom: no commas, please"; exit 126; }
        # Secondary IDE master, like a real CD drive; first in the boot order.
        qargs+=(-drive "file=$cdrom,format=raw,media=cdrom,readonly=on,if=none,id=cd0"
                -device "ide-cd,drive=cd0,bus=ide.1,bootindex=0")
        disks=("$cdrom" "${disks[@]}") # named in the messages below
fi

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
t0=$EPOCHREALTIME # the timeout (and the time reported) count from qemu's start, not from the wait
# timeout(1): no qemu outlives this script by much, even if it is killed hard.
timeout -k 5 $((timeout + 30)) "$QEMU" "${qargs[@]}" </dev/null >"$work/qemu.out" 2>&1 &
qpid=$!
secs() { awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
status=
while :; do
        if tr -d '\r' <"$log" | grep -aqE -- "$marker"; then
                status=0
                break
        fi
        if [ -n "${failmarker:-}" ] && tr -d '\r' <"$log" | grep -aqE -- "$failmarker"; then
                say "$fw boot of ${disks[0]}: failure marker /$failmarker/ seen"
                status=1
                break
        fi
        if ! kill -0 "$qpid" 2>/dev/null; then
                # One last look: the marker may have come with the power-off.
                tr -d '\r' <"$log" | grep -aqE -- "$marker" && status=0 || status=1
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
case $status in
0) say "$fw boot of ${disks[0]}: marker seen after $(secs) s" ;;
1) say "$fw boot of ${disks[0]}: the guest stopped after $(secs) s without printing /$marker/; last 40 lines:" ;;
124) say "$fw boot of ${disks[0]}: no /$marker/ within $timeout s; last 40 lines:" ;;
esac
if [ "$status" != 0 ]; then
        tail -40 "$log" | tr -d '\r' | sed 's/^/  | /' >&2
        [ -s "$work/qemu.out" ] && sed 's/^/  qemu: /' "$work/qemu.out" >&2
fi
exit "$status"
