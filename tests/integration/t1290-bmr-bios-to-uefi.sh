#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=900
#
# Dissimilar firmware: the MBR/BIOS-only test disk (GRUB core.img in the gap
# after the MBR, no ESP) restored with `kura bmr --reinstall-bootloader
# uefi` onto an empty disk of the same size: kura takes 64 MiB from the end
# of the last partition (its ext4 shrunk) for a new ESP (type 0xEF, FAT32),
# says so in the plan, builds GRUB for UEFI that finds the restored
# /boot/grub by UUID, and the disk boots under UEFI (OVMF, empty NVRAM) to
# the original's marker plus the new partition.  Without the option it does
# not boot under UEFI.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"
require_tool qemu-system-x86_64 sfdisk grub-mkimage mkfs.vfat mcopy
[ -f /usr/share/ovmf/OVMF.fd ] || skip "ovmf is missing"
[ -f /usr/lib/grub/x86_64-efi/kernel.img ] || skip "grub-efi-amd64-bin is missing"
export KURA_TIMEOUT=600

bmr_make_disk mbr "$T/mbr.img"
bmr_marker_expected mbr >"$T/expected"
SIZE=$(stat -c %s "$T/mbr.img")
# The system's fstab names / by UUID (rewritten here as a plain one): kura must add the new ESP to it.
read -r rstart rsize < <(bmr_part_range "$T/mbr.img" 1)
R=$(losetup -f --show -o "$rstart" --sizelimit "$rsize" "$T/mbr.img") || fail "losetup root"
echo "$R" >>"$T/loops"
do_mount "$R" "$T/root"
echo "UUID=$(blkid -p -o value -s UUID "$R") / ext4 defaults 0 1" >"$T/root/etc/fstab"
do_umount "$T/root"
losetup -d "$R"
kura_init_test_repo
kok backup --disk "$T/mbr.img" --snapshot none
rm -f "$T/mbr.img"

truncate -s "$SIZE" "$T/plain.img"
kok bmr --version latest --disk-map "disk0=$T/plain.img" --yes --tmpdir "$T"
bmr_boot uefi "$T/plain.img" "$T/marker" --timeout 120
rc=$?
assert_ne 0 "$rc" "UEFI boot of the BIOS-only restore"
info "without --reinstall-bootloader the BIOS-only disk does not boot under UEFI"

truncate -s "$SIZE" "$T/uefi.img"
kok bmr --version latest --disk-map "disk0=$T/uefi.img" --yes --tmpdir "$T" --reinstall-bootloader uefi
cat "$T/out"
grep -q 'disk0p3 esp .*made for UEFI (from space of the last partitions, shrunk)' "$T/out" ||
        fail "the plan must say where the ESP's space came from"
grep -q 'GRUB for UEFI installed' "$T/out" || fail "the report must say GRUB was installed"
jq -e '.partitiontable.partitions[2].type == "ef"' <(sfdisk -J "$T/uefi.img") >/dev/null ||
        { sfdisk -d "$T/uefi.img" >&2; fail "no ESP (type ef) as partition 3"; }
read -r rstart rsize < <(bmr_part_range "$T/uefi.img" 1)
read -r estart esize < <(bmr_part_range "$T/uefi.img" 3)
esp_uuid=$(blkid -p -O "$estart" -o value -s UUID "$T/uefi.img")
R=$(losetup -f --show -r -o "$rstart" --sizelimit "$rsize" "$T/uefi.img") || fail "losetup root"
echo "$R" >>"$T/loops"
debugfs -R "cat /etc/fstab" "$R" 2>/dev/null >"$T/fstab"
losetup -d "$R"
grep -q "^UUID=$esp_uuid /boot/efi vfat " "$T/fstab" || { cat "$T/fstab" >&2; fail "the restored fstab lacks the new ESP (UUID $esp_uuid)"; }
bmr_boot uefi "$T/uefi.img" "$T/marker" || fail "the restore with --reinstall-bootloader uefi does not boot under UEFI"
grep -q '^KURA-MARKER part 3 type=0xef ' "$T/marker" || fail "the guest does not see the new ESP"
grep -v '^KURA-MARKER part 3 ' "$T/marker" >"$T/marker.rest"
bmr_assert_marker "$T/expected" "$T/marker.rest" "BIOS-only disk restored for UEFI"
info "the BIOS-only disk restored with --reinstall-bootloader uefi boots under UEFI"
exit 0
