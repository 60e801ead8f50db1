#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test markers (read by scripts/test.sh):
# kura-test: no-asan
# kura-test: timeout=600
#
# The bootable test disks of the bare-metal-recovery tests (tests/vm/make-test-disk.sh,
# tests/integration/bmr-lib.sh).  On the host: the GPT and MBR layouts (types,
# GUIDs, names, sizes), the filesystem UUIDs at their offsets, GRUB's boot code
# in the MBR with core.img's LBA patched in.  In qemu (one boot at a time): the
# GPT disk under UEFI (OVMF) and BIOS (SeaBIOS), the MBR disk under BIOS, each
# printing exactly the expected marker block (root UUID, every partition's type
# and GUID, every known file's checksum, the swap UUID, no GPT warning).  Then
# the check can fail: the GPT disk with its ESP zeroed does not boot under UEFI
# (no marker), and the same disk with 4096-byte sectors is shown under UEFI
# (only with KURA_BMR_4KN=1: t1220 boots a 4Kn restore in CI).  No kura binary is involved.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"

require_tool qemu-system-x86_64 sfdisk mkfs.ext4 mkfs.vfat mcopy mkswap mkfs.xfs mkfs.btrfs grub-mkimage cpio
[ -f /usr/share/ovmf/OVMF.fd ] || skip "ovmf is missing"
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin is missing"
[ -f /usr/lib/grub/x86_64-efi/kernel.img ] || skip "grub-efi-amd64-bin is missing"
[ -x /bin/busybox ] || skip "busybox-static is missing"
MiB=1048576

# ---- build (the first time: make-test-disk.sh; then the cache) ---------------------
t=$SECONDS
bmr_make_disk gpt "$T/gpt.img"
bmr_make_disk mbr "$T/mbr.img"
info "gpt + mbr disks ready in $((SECONDS - t)) s"
bmr_marker_expected gpt >"$T/gpt.expected"
bmr_marker_expected mbr >"$T/mbr.expected"
assert_eq 23 "$(wc -l <"$T/gpt.expected")" "lines of the expected gpt marker"
assert_eq 14 "$(wc -l <"$T/mbr.expected")" "lines of the expected mbr marker"
assert_eq $((900 * MiB)) "$(stat -c %s "$T/gpt.img")" "size of the gpt disk"
assert_eq $((400 * MiB)) "$(stat -c %s "$T/mbr.img")" "size of the mbr disk"

# ---- the layouts, read on the host --------------------------------------------------
sfdisk -d "$T/gpt.img" | grep -E '^(label|label-id|sector-size):|start=' | sed 's|^.*/gpt.img||' >"$T/gpt.layout"
cat >"$T/gpt.layout.want" <<'EOF'
label: gpt
label-id: 6B757261-6469-736B-0000-000000000000
sector-size: 512
1 : start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid=6B757261-0000-4000-8000-000000000001, name="bios-boot"
2 : start=        4096, size=       65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6B757261-0000-4000-8000-000000000002, name="esp"
3 : start=       69632, size=      409600, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=6B757261-0000-4000-8000-000000000003, name="root"
4 : start=      479232, size=       16384, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=6B757261-0000-4000-8000-000000000004, name="swap"
5 : start=      495616, size=      819200, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6B757261-0000-4000-8000-000000000005, name="data-xfs"
6 : start=     1314816, size=      526336, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6B757261-0000-4000-8000-000000000006, name="data-btrfs"
EOF
assert_file_eq "$T/gpt.layout.want" "$T/gpt.layout" "sfdisk -d of the gpt disk"
sfdisk -d "$T/mbr.img" | grep -E '^(label|label-id):|start=' | sed 's|^.*/mbr.img||' >"$T/mbr.layout"
cat >"$T/mbr.layout.want" <<'EOF'
label: dos
label-id: 0x4b555241
1 : start=        2048, size=      409600, type=83, bootable
2 : start=      411648, size=      407552, type=83
EOF
assert_file_eq "$T/mbr.layout.want" "$T/mbr.layout" "sfdisk -d of the mbr disk"
# Filesystems at their offsets (blkid -p reads the image, no loop device).
fsid() { blkid -p -O "$(($2 * MiB))" -o value -s "$3" "$1"; }
assert_eq vfat "$(fsid "$T/gpt.img" 2 TYPE)" "ESP type"
assert_eq 4B55-0002 "$(fsid "$T/gpt.img" 2 UUID)" "ESP UUID"
assert_eq 6b757261-726f-6f74-0000-000000000003 "$(fsid "$T/gpt.img" 34 UUID)" "root UUID"
assert_eq ext4 "$(fsid "$T/gpt.img" 34 TYPE)" "root type"
assert_eq 6b757261-7377-6170-0000-000000000004 "$(fsid "$T/gpt.img" 234 UUID)" "swap UUID"
assert_eq xfs "$(fsid "$T/gpt.img" 242 TYPE)" "p5 type"
assert_eq 6b757261-7866-7300-0000-000000000005 "$(fsid "$T/gpt.img" 242 UUID)" "xfs UUID"
assert_eq btrfs "$(fsid "$T/gpt.img" 642 TYPE)" "p6 type"
assert_eq 6b757261-6274-7266-0000-000000000006 "$(fsid "$T/gpt.img" 642 UUID)" "btrfs UUID"
assert_eq 6b757261-6d62-7200-0000-000000000001 "$(fsid "$T/mbr.img" 1 UUID)" "mbr root UUID"
assert_eq 6b757261-6d62-7200-0000-000000000002 "$(fsid "$T/mbr.img" 201 UUID)" "mbr data UUID"
assert_eq "$((642 * MiB)) $((257 * MiB))" "$(bmr_part_range "$T/gpt.img" 6)" "bmr_part_range of the last partition"
assert_eq "$((2 * MiB)) $((32 * MiB))" "$(bmr_part_range "$T/gpt.img" 2)" "bmr_part_range of the ESP"
# GRUB's boot.img in the MBR: its code, core.img's LBA at 0x5c, the protective
# MBR / DOS table left alone; diskboot.img's first blocklist points after it.
hexat() { od -An -v -tx1 -j "$2" -N "$3" "$1" | tr -d ' \n'; }
assert_eq "$(hexat /usr/lib/grub/i386-pc/boot.img 0 92)" "$(hexat "$T/gpt.img" 0 92)" "boot.img code in the gpt MBR"
assert_eq 0008000000000000 "$(hexat "$T/gpt.img" $((0x5c)) 8)" "core.img LBA (2048) in the gpt MBR"
assert_eq 0108000000000000 "$(hexat "$T/gpt.img" $((MiB + 0x1f4)) 8)" "diskboot blocklist start (2049)"
assert_eq 0100000000000000 "$(hexat "$T/mbr.img" $((0x5c)) 8)" "core.img LBA (1) in the mbr MBR"
assert_eq ee "$(hexat "$T/gpt.img" 450 1)" "protective MBR type"
assert_eq 55aa "$(hexat "$T/gpt.img" 510 2)" "MBR signature"
assert_eq 80 "$(hexat "$T/mbr.img" 446 1)" "active flag of mbr p1"

# ---- boots ------------------------------------------------------------------------------
gpt_sum=$(sha "$T/gpt.img")
boot() { # FIRMWARE IMG NAME [options]: boots, prints the time
        local fw=$1 img=$2 name=$3 t0=$SECONDS rc
        shift 3
        bmr_boot "$fw" "$img" "$T/$name.marker" "$@" 2>"$T/$name.err"
        rc=$?
        cat "$T/$name.err"
        info "$name: $fw boot exit $rc after $((SECONDS - t0)) s"
        return "$rc"
}
boot uefi "$T/gpt.img" gpt-uefi || fail "the gpt disk did not boot under UEFI"
bmr_assert_marker "$T/gpt.expected" "$T/gpt-uefi.marker" "gpt disk under UEFI"
assert_contains "$T/gpt-uefi.marker.console" "KURA-GRUB: booting from hd0,gpt3" "GRUB EFI found the root"
boot bios "$T/gpt.img" gpt-bios || fail "the gpt disk did not boot under BIOS"
bmr_assert_marker "$T/gpt.expected" "$T/gpt-bios.marker" "gpt disk under BIOS"
assert_eq "$gpt_sum" "$(sha "$T/gpt.img")" "the gpt image after two snapshot=on boots"
boot bios "$T/mbr.img" mbr-bios || fail "the mbr disk did not boot under BIOS"
bmr_assert_marker "$T/mbr.expected" "$T/mbr-bios.marker" "mbr disk under BIOS"
assert_contains "$T/mbr-bios.marker.console" "KURA-GRUB: booting from hd0,msdos1" "GRUB found the mbr root"

# ---- the check can fail -------------------------------------------------------------------
# The ESP zeroed: OVMF finds no loader, ends in its shell; no marker.
cp --sparse=always "$T/gpt.img" "$T/noesp.img"
dd if=/dev/zero of="$T/noesp.img" bs=1M seek=2 count=32 conv=notrunc status=none
boot uefi "$T/noesp.img" noesp-uefi --timeout 150
rc=$?
assert_ne 0 "$rc" "boot of the disk with a zeroed ESP"
assert_eq 0 "$(wc -l <"$T/noesp-uefi.marker")" "marker lines of the disk with a zeroed ESP"

# ---- 4096-byte logical sectors under UEFI -----------------------------------------------------
if [ "${KURA_BMR_4KN:-0}" = 1 ]; then # t1220 boots a 4Kn restore; this shows the builder's own 4Kn disk
        bmr_make_disk gpt "$T/gpt4k.img" 4096
        bmr_marker_expected gpt 4096 >"$T/gpt4k.expected"
        assert_file_eq "$T/gpt.expected" "$T/gpt4k.expected" "the 4Kn disk's expected marker (same as 512)"
        assert_eq "$((MiB)) $((MiB))" "$(bmr_part_range "$T/gpt4k.img" 1 4096)" "4Kn BIOS boot partition"
        boot uefi "$T/gpt4k.img" gpt4k-uefi --sector-size 4096 || fail "the 4Kn gpt disk did not boot under UEFI"
        bmr_assert_marker "$T/gpt.expected" "$T/gpt4k-uefi.marker" "4Kn gpt disk under UEFI"
        assert_contains "$T/gpt4k-uefi.marker.console" "logical-sector-size=4096" "the guest saw 4096-byte sectors"
fi
exit 0
