#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=1800
#
# Bare-metal recovery proven by booting.  The bootable GPT test disk
# (tests/vm/make-test-disk.sh: BIOS boot partition with GRUB's core.img, ESP
# with GRUB EFI, ext4 root with Debian's kernel and a busybox init that prints
# a marker, swap, xfs, btrfs) and the MBR/BIOS-only disk are backed up once
# each with `kura backup --disk`; `kura bmr` restores them onto empty image
# files: the same size, larger, smaller (ext4/btrfs shrunk, xfs re-created),
# and (GPT) a disk with 4096-byte logical sectors.  Every restored GPT disk
# boots to exactly the original's marker (root UUID, partition types and
# GUIDs, every file's checksum on ESP/root/xfs/btrfs, swap UUID, no GPT
# warning) under UEFI with an empty NVRAM (OVMF, removable path) and under
# BIOS (SeaBIOS); the 4Kn one under UEFI; the MBR disk under BIOS.  Then the
# check is shown to fail: a zeroed ESP does not boot under UEFI, a changed
# partition type and a backup GPT left in the middle of a larger disk give a
# different marker.  Boots run one at a time (tests/vm/boot-disk.sh locks).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"

require_tool qemu-system-x86_64 sfdisk mkfs.ext4 mkfs.vfat mcopy mkswap mkfs.xfs mkfs.btrfs grub-mkimage cpio
[ -f /usr/share/ovmf/OVMF.fd ] || skip "ovmf is missing"
[ -x /bin/busybox ] || skip "busybox-static is missing"
MiB=1048576
export KURA_TIMEOUT=600

bmr_make_disk gpt "$T/gpt.img"
bmr_make_disk mbr "$T/mbr.img"
bmr_marker_expected gpt >"$T/gpt.expected"
bmr_marker_expected mbr >"$T/mbr.expected"
GPT_SIZE=$(stat -c %s "$T/gpt.img")
MBR_SIZE=$(stat -c %s "$T/mbr.img")

kura_init_test_repo
kok backup --disk "$T/gpt.img" --snapshot none --tag gpt
GPTV=$(jq -r .id "$T/out" 2>/dev/null || true)
kok versions --json
GPTV=$(jq -r '.versions[-1].id' "$T/out")
kok backup --disk "$T/mbr.img" --snapshot none --tag mbr
kok versions --json
MBRV=$(jq -r '.versions[-1].id' "$T/out")
jq -e '[.versions[].bmr] == [true, true]' "$T/out" >/dev/null || fail "both versions must be flagged bmr"
# The source disks are not needed any more: everything below comes from the repository.
rm -f "$T/gpt.img" "$T/mbr.img"

BOOTS=0 BOOT_SECONDS=0
# boot_ok FIRMWARE IMG EXPECTED WHAT [boot options]: boots to exactly EXPECTED.
boot_ok() {
        local fw=$1 img=$2 exp=$3 what=$4 t0=$SECONDS rc
        shift 4
        bmr_boot "$fw" "$img" "$T/marker" "$@"
        rc=$?
        BOOTS=$((BOOTS + 1)) BOOT_SECONDS=$((BOOT_SECONDS + SECONDS - t0))
        if [ "$rc" != 0 ]; then
                tail -30 "$T/marker.console" | tr -d '\r' >&2
                fail "$what: $fw boot did not reach the marker (boot-disk.sh exit $rc)"
        fi
        bmr_assert_marker "$exp" "$T/marker" "$what ($fw)"
        info "$what: $fw boot shows the original's marker ($((SECONDS - t0)) s)"
}
# boot_differs FIRMWARE IMG EXPECTED WHAT: no marker, or a different one.
boot_differs() {
        local fw=$1 img=$2 exp=$3 what=$4 t0=$SECONDS rc
        shift 4
        bmr_boot "$fw" "$img" "$T/marker" "$@"
        rc=$?
        BOOTS=$((BOOTS + 1)) BOOT_SECONDS=$((BOOT_SECONDS + SECONDS - t0))
        if [ "$rc" = 0 ] && cmp -s "$exp" "$T/marker"; then
                fail "$what: the boot check did not notice (same marker)"
        fi
        info "$what: $fw boot exit $rc, marker $( [ -s "$T/marker" ] && echo differs || echo absent) ($((SECONDS - t0)) s)"
}
restore_to() { # VERSION IMG SIZE [bmr options]
        local v=$1 img=$2 size=$3
        shift 3
        rm -f "$img"
        truncate -s "$size" "$img"
        kok bmr --version "$v" --disk-map "disk0=$img" --yes --tmpdir "$T" "$@"
        cat "$T/out"
}

# ---- GPT: same size, larger, smaller; UEFI (empty NVRAM) and BIOS --------------------
restore_to "$GPTV" "$T/same.img" "$GPT_SIZE"
boot_ok uefi "$T/same.img" "$T/gpt.expected" "same-size GPT restore"
boot_ok bios "$T/same.img" "$T/gpt.expected" "same-size GPT restore"

restore_to "$GPTV" "$T/big.img" $((GPT_SIZE + 400 * MiB))
read -r start size < <(bmr_part_range "$T/big.img" 6)
[ $((start + size)) -gt $((GPT_SIZE + 350 * MiB)) ] || fail "the last partition did not grow on the larger disk"
boot_ok uefi "$T/big.img" "$T/gpt.expected" "larger GPT restore"
boot_ok bios "$T/big.img" "$T/gpt.expected" "larger GPT restore"

restore_to "$GPTV" "$T/small.img" $((720 * MiB))
grep -q 're-create xfs' "$T/out" || fail "the smaller restore should re-create xfs"
boot_ok uefi "$T/small.img" "$T/gpt.expected" "smaller GPT restore"
boot_ok bios "$T/small.img" "$T/gpt.expected" "smaller GPT restore"

# ---- 4096-byte logical sectors (UEFI: core.img's LBAs do not survive the conversion)
truncate -s "$GPT_SIZE" "$T/4k.img"
D4K=$(losetup -f --show -b 4096 "$T/4k.img") || fail "losetup -b 4096"
echo "$D4K" >>"$T/loops"
kok bmr --version "$GPTV" --disk-map "disk0=$D4K" --yes --tmpdir "$T"
cat "$T/out"
losetup -d "$D4K"
boot_ok uefi "$T/4k.img" "$T/gpt.expected" "4Kn GPT restore" --sector-size 4096

# ---- MBR / BIOS only -------------------------------------------------------------------
restore_to "$MBRV" "$T/mbr-same.img" "$MBR_SIZE"
boot_ok bios "$T/mbr-same.img" "$T/mbr.expected" "same-size MBR restore"
restore_to "$MBRV" "$T/mbr-big.img" $((MBR_SIZE + 200 * MiB))
boot_ok bios "$T/mbr-big.img" "$T/mbr.expected" "larger MBR restore"

# ---- the boot check can fail ------------------------------------------------------------
cp --sparse=always "$T/same.img" "$T/bad.img"
read -r start size < <(bmr_part_range "$T/bad.img" 2)
dd if=/dev/zero of="$T/bad.img" bs=$MiB seek=$((start / MiB)) count=$((size / MiB)) conv=notrunc status=none
boot_differs uefi "$T/bad.img" "$T/gpt.expected" "zeroed ESP" --timeout 120

cp --sparse=always "$T/same.img" "$T/bad.img"
sfdisk -q --part-type "$T/bad.img" 5 933AC7E1-2EB4-4F13-B844-0E14E2AEF915 || fail "sfdisk --part-type"
boot_differs bios "$T/bad.img" "$T/gpt.expected" "changed partition type"
grep -q 'part 5 type=933AC7E1' "$T/marker" || fail "the marker should show the changed type"

cp --sparse=always "$T/same.img" "$T/bad.img"
truncate -s $((GPT_SIZE + 400 * MiB)) "$T/bad.img" # backup GPT left in the middle
boot_differs bios "$T/bad.img" "$T/gpt.expected" "backup GPT in the middle of a larger disk"
grep -q 'gpt-warnings=none' "$T/marker" && fail "the kernel's GPT complaint should be in the marker"

info "$BOOTS boots took $BOOT_SECONDS s"
exit 0
