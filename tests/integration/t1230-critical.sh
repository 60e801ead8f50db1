#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=900
#
# kura critical: which volumes a bare-metal recovery needs, why, what lies
# under them, and how a backup would make each consistent.  Never pointed at
# this host's own system or disks: always --root of a fake system tree.
#
# (a) On the host: a "server" assembled from loop devices under $T/sys:
#     / on partition 1 of a GPT loop disk (partx, the host kernel does not
#     parse tables on loop devices), /boot a whole ext4 loop device mounted
#     read-only, /boot/efi a vfat loop device only named in fstab (the host
#     kernel has no vfat), /data mounted but not critical, a swap line.
#     Exactly /, /boot and /boot/efi are critical, with their loop devices,
#     filesystems, disks, stacks, reasons (mount, fstab) and consistency
#     ("none: ..." for the read-write root no provider can snapshot here,
#     "offline ..." for the others).  Also the text output and errors.
# (b) In a qemu guest (device-mapper, LVM): a GPT disk image with ext4 on p1
#     and an LVM PV on p2 whose ext4 LV is the server's root, mounted at
#     /target and /target/boot: / is on "lvm" of /dev/vda with consistency
#     "snapshot: lvm", /boot a "partition" of /dev/vda.  And the guest's own
#     "/" (root "/", an overlay) with a kernel command line root=UUID= of the
#     LV (bound over /proc/cmdline in the guest): the last root= is the reason.
. "$(dirname "$0")/lib.sh"
require_tool sfdisk partx mkfs.ext4 mkfs.vfat

# ---- (a) a fake system tree on the host ------------------------------------------
LDISK=$(new_loop 96M disk)
printf 'label: gpt\n,64M,L\n,,L\n' | sfdisk -q "$LDISK" >/dev/null || fail "sfdisk $LDISK"
# sfdisk may already have added the partitions through BLKPG: -u adds what is missing.
partx -u "$LDISK" 2>"$T/partx.err" || partx -a "$LDISK" 2>>"$T/partx.err"
LROOT=${LDISK}p1
for i in $(seq 50); do grep -qw "${LROOT#/dev/}" /proc/partitions && [ -b "$LROOT" ] && break; sleep 0.1; done
grep -qw "${LROOT#/dev/}" /proc/partitions || { cat "$T/partx.err" >&2; fail "no $LROOT after partx"; }
mkfs.ext4 -q -F -L kroot "$LROOT" || fail "mkfs root"
LBOOT=$(new_loop 32M boot)
mkfs.ext4 -q -F -L kboot "$LBOOT" || fail "mkfs boot"
LEFI=$(new_loop 40M efi)
mkfs.vfat -n KESP "$LEFI" >/dev/null || fail "mkfs.vfat"
LDATA=$(new_loop 16M data)
mkfs.ext4 -q -F "$LDATA" || fail "mkfs data"
uroot=$(blkid -p -o value -s UUID "$LROOT")
uboot=$(blkid -p -o value -s UUID "$LBOOT")
uefi=$(blkid -p -o value -s UUID "$LEFI")
udata=$(blkid -p -o value -s UUID "$LDATA")
[ -n "$uroot" ] && [ -n "$uboot" ] && [ -n "$uefi" ] || fail "blkid UUIDs"

S=$T/sys
do_mount "$LROOT" "$S"
mkdir -p "$S/boot" "$S/etc" "$S/data"
cat >"$S/etc/fstab" <<EOF2
# fstab of the fake server
UUID=$uroot / ext4 errors=remount-ro 0 1
UUID=$uboot /boot/ ext4 defaults 0 2
UUID=$uefi /boot/efi vfat umask=0077 0 1
/dev/mapper/vg-swap none swap sw 0 0
UUID=$udata /data ext4 defaults 0 2
EOF2
do_mount -o ro "$LBOOT" "$S/boot"
do_mount "$LDATA" "$S/data"

t=$EPOCHREALTIME
kok critical --root "$S" --json
info "kura critical --root: $(awk -v a="$t" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s"
cp "$T/out" "$T/host.json"
cat "$T/host.json"
J=$T/host.json
q() { jq -r "$1" "$J"; }
assert_eq "/ /boot /boot/efi" "$(q '[.critical[].mountpoint] | join(" ")')" "critical mount points"
# / : partition 1 of the loop disk, mounted read-write, fstab by UUID
e='.critical[] | select(.mountpoint == "/")'
assert_eq "$LROOT" "$(q "$e.device")" "device of /"
assert_eq ext4 "$(q "$e.fs")" "fs of /"
assert_eq "$LDISK" "$(q "$e.disks")" "disks of /"
assert_eq partition "$(q "$e.stack")" "stack of /"
assert_eq "mounted at $S as /|fstab: UUID=$uroot / ext4" "$(q "[$e.why[]] | join(\"|\")")" "reasons for /"
assert_eq "none: mounted read-write and no provider can snapshot it — use --crash-consistent or an offline backup from the rescue image" \
        "$(q "$e.consistency")" "consistency of /"
# /boot : a whole loop device, mounted read-only
e='.critical[] | select(.mountpoint == "/boot")'
assert_eq "$LBOOT" "$(q "$e.device")" "device of /boot"
assert_eq ext4 "$(q "$e.fs")" "fs of /boot"
assert_eq "$LBOOT" "$(q "$e.disks")" "disks of /boot"
assert_eq "whole disk" "$(q "$e.stack")" "stack of /boot"
assert_eq "mounted at $S/boot as /boot (read-only)|fstab: UUID=$uboot /boot ext4" "$(q "[$e.why[]] | join(\"|\")")" \
        "reasons for /boot"
assert_eq "offline (not mounted read-write)" "$(q "$e.consistency")" "consistency of /boot"
# /boot/efi : only in fstab, found through libblkid
e='.critical[] | select(.mountpoint == "/boot/efi")'
assert_eq "$LEFI" "$(q "$e.device")" "device of /boot/efi (UUID=$uefi resolved)"
assert_eq vfat "$(q "$e.fs")" "fs of /boot/efi"
assert_eq "$LEFI" "$(q "$e.disks")" "disks of /boot/efi"
assert_eq "whole disk" "$(q "$e.stack")" "stack of /boot/efi"
assert_eq "fstab: UUID=$uefi /boot/efi vfat" "$(q "[$e.why[]] | join(\"|\")")" "reasons for /boot/efi"
assert_eq "offline (not mounted read-write)" "$(q "$e.consistency")" "consistency of /boot/efi"
assert_eq false "$(q .md_raid_unsupported)" "md_raid_unsupported"
assert_not_contains "$J" "$LDATA" "the /data volume (not critical)"
assert_not_contains "$J" "swap" "the swap line (never critical)"
# Nothing of the host: every device is one of ours.
for d in $(q '.critical[].device'); do
        case $d in "$LROOT" | "$LBOOT" | "$LEFI") ;; *) fail "kura critical --root $S named $d" ;; esac
done

# The same with a trailing slash and a relative path.
(cd "$T" && "$KURA" critical --root sys/ --json) >"$T/rel.json" || fail "kura critical --root sys/"
assert_eq "$(jq -c '.critical' "$J")" "$(jq -c '.critical' "$T/rel.json")" "--root sys/ (relative) vs --root $S"

# Text output: the table, the reasons, the note about a live root.
kok critical --root "$S"
cat "$T/out"
assert_contains "$T/out" "Critical volumes of the system at $S:" "text header"
grep -Eq "^MOUNT +DEVICE +FS +DISKS +STACK +CONSISTENCY$" "$T/out" || fail "text: no table header"
grep -Eq "^/ +$LROOT +ext4 +$LDISK +partition +none: mounted read-write" "$T/out" || fail "text: row of /"
grep -Eq "^/boot +$LBOOT +ext4 +$LBOOT +whole disk +offline \(not mounted read-write\)$" "$T/out" ||
        fail "text: row of /boot"
grep -Eq "^/boot/efi +$LEFI +vfat +$LEFI +whole disk +offline" "$T/out" || fail "text: row of /boot/efi"
assert_contains "$T/out" "    - fstab: UUID=$uefi /boot/efi vfat" "text: reasons"
assert_contains "$T/out" "--crash-consistent" "text: the choices for a live root"
assert_not_contains "$T/out" "MD RAID is not supported" "text: no MD note without MD"

# A root where nothing is mounted and no fstab: nothing critical (not the host's /).
mkdir -p "$T/empty"
kok critical --root "$T/empty" --json
assert_eq 0 "$(jq '.critical | length' "$T/out")" "critical volumes of an empty root"
# An fstab whose devices do not exist here: critical, unresolved, said so.
mkdir -p "$T/ghost/etc"
printf 'UUID=11111111-2222-4333-8444-555555555555 / ext4 defaults 0 1\n' >"$T/ghost/etc/fstab"
kok critical --root "$T/ghost" --json
assert_eq "UUID=11111111-2222-4333-8444-555555555555" "$(jq -r '.critical[0].device' "$T/out")" "unresolved device"
assert_eq "fstab: UUID=11111111-2222-4333-8444-555555555555 / ext4 (no such device here)" \
        "$(jq -r '.critical[0].why[0]' "$T/out")" "reason of an unresolved device"
assert_contains "$T/out" '"consistency": "unknown: UUID=11111111-2222-4333-8444-555555555555 names no device here"' \
        "consistency of an unresolved device"
expect_fail 1 KURA-E-SOURCE-NOT-FOUND critical --root "$T/no-such-dir"
expect_fail 2 KURA-E-USAGE critical --root "$S" extra-arg
# kura critical only read: the trees are as they were.
assert_eq "$(findmnt -rn -o OPTIONS "$S/boot" | cut -d, -f1)" ro "/boot still mounted read-only"
umount "$S/data" "$S/boot" "$S" || fail "umount"
partx -d "$LDISK" 2>/dev/null

# ---- (b) LVM and partitions in a qemu guest ----------------------------------------
VM=$SRCROOT/tests/vm/run.sh
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v lvm >/dev/null; then
        info "SKIP part (b): qemu or lvm2 missing"
        exit 0
fi
truncate -s 128M "$T/gdisk.img"
printf 'label: gpt\n,32M,L\n,,E6D6D379-F507-44C2-A23C-238F2A3DF928\n' | sfdisk -q "$T/gdisk.img" >/dev/null ||
        fail "sfdisk on the guest disk image"
mkdir -p "$T/share"
t=$SECONDS
"$VM" --disk "$T/gdisk.img" --share "$T/share" --timeout 360 --log "$T/console.log" \
        -- bash "$SRCROOT/tests/vm/guest-critical-lvm.sh" "$T/share" >"$T/guest.out" 2>"$T/guest.err"
rc=$?
cat "$T/guest.out" "$T/guest.err"
info "guest: exit $rc after $((SECONDS - t)) s"
assert_eq 0 "$rc" "exit status of the guest"
assert_eq 0 "$(cat "$T/share/critical.rc")" "exit status of kura critical --root /target --json in the guest"
J=$T/share/critical.json
uroot=$(sed -n 1p "$T/share/uuids")
uboot=$(sed -n 2p "$T/share/uuids")
assert_eq "/ /boot" "$(q '[.critical[].mountpoint] | join(" ")')" "critical mount points in the guest"
e='.critical[] | select(.mountpoint == "/")'
assert_eq /dev/mapper/kcrit-root "$(q "$e.device")" "device of / (guest)"
assert_eq ext4 "$(q "$e.fs")" "fs of / (guest)"
assert_eq lvm "$(q "$e.stack")" "stack of / (guest)"
assert_eq /dev/vda "$(q "$e.disks")" "disks of / (guest)"
assert_eq "mounted at /target as /|fstab: UUID=$uroot / ext4" "$(q "[$e.why[]] | join(\"|\")")" "reasons for / (guest)"
assert_eq "snapshot: lvm" "$(q "$e.consistency")" "consistency of / (guest)"
e='.critical[] | select(.mountpoint == "/boot")'
assert_eq /dev/vda1 "$(q "$e.device")" "device of /boot (guest)"
assert_eq ext4 "$(q "$e.fs")" "fs of /boot (guest)"
assert_eq partition "$(q "$e.stack")" "stack of /boot (guest)"
assert_eq /dev/vda "$(q "$e.disks")" "disks of /boot (guest)"
assert_eq "mounted at /target/boot as /boot|fstab: UUID=$uboot /boot ext4" "$(q "[$e.why[]] | join(\"|\")")" \
        "reasons for /boot (guest)"
case $(q "$e.consistency") in
"none: mounted read-write and no provider can snapshot it"*) ;;
*) fail "consistency of /boot (guest): $(q "$e.consistency")" ;;
esac
grep -Eq "^/ +/dev/mapper/kcrit-root +ext4 +/dev/vda +lvm +snapshot: lvm$" "$T/share/critical.txt" ||
        fail "guest text output: row of /"
# root "/": the guest's overlay root and the kernel command line's root=
assert_eq 0 "$(cat "$T/share/self.rc")" "exit status of kura critical (root /) in the guest"
J=$T/share/self.json
assert_eq / "$(q '.root')" "root of kura critical without --root"
e='.critical[] | select(.mountpoint == "/")'
assert_eq "mounted at /" "$(q "$e.why[0]")" "first reason for the guest's own /"
assert_eq "kernel command line root=UUID=$uroot" "$(q "[$e.why[] | select(startswith(\"kernel\"))] | join(\"|\")")" \
        "kernel command line reason (the last root= wins)"
assert_contains "$T/console.log" "KURA-VM-RESULT: PASS" "console marker"
