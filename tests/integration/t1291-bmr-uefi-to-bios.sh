#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=900
#
# Dissimilar firmware, the other way: a UEFI-only GPT disk (the gpt test
# disk with its BIOS boot partition deleted and its MBR boot code zeroed,
# so SeaBIOS finds nothing to boot) restored with `kura bmr
# --reinstall-bootloader bios` onto an empty disk: kura adds a BIOS boot
# partition in the gap before the first partition (said in the plan), puts
# GRUB for BIOS there and its boot code in the protective MBR, and the disk
# boots under SeaBIOS to the original's marker plus the new partition.
# Refused before anything is written: a 4096-byte-sector target (BIOS
# cannot boot it) and a disk whose first partition leaves no room.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"
require_tool qemu-system-x86_64 sfdisk grub-mkimage losetup
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin is missing"
export KURA_TIMEOUT=600

bmr_make_disk gpt "$T/src.img"
SIZE=$(stat -c %s "$T/src.img")
read -r bstart bsize < <(bmr_part_range "$T/src.img" 1)
# UEFI only: no BIOS boot partition, no core.img, no MBR boot code.  (The
# table's first usable LBA is 2048, so the new partition takes 1 MiB..2 MiB.)
sfdisk -q --delete "$T/src.img" 1 || fail "sfdisk --delete"
dd if=/dev/zero of="$T/src.img" bs=1 count=440 conv=notrunc status=none
dd if=/dev/zero of="$T/src.img" bs=512 seek=$((bstart / 512)) count=$((bsize / 512)) conv=notrunc status=none
bmr_marker_expected gpt | grep -v '^KURA-MARKER part 1 ' >"$T/expected"

bmr_boot bios "$T/src.img" "$T/marker" --timeout 60
rc=$?
assert_ne 0 "$rc" "BIOS boot of the UEFI-only disk"
info "the UEFI-only source does not boot under BIOS (exit $rc)"

kura_init_test_repo
kok backup --disk "$T/src.img" --snapshot none
rm -f "$T/src.img"

# Refused before writing: 4096-byte sectors.
truncate -s "$SIZE" "$T/4k.img"
L4=$(losetup -f --show -b 4096 "$T/4k.img") || fail "losetup -b 4096"
echo "$L4" >>"$T/loops"
expect_fail 1 KURA-E-DISK-LAYOUT bmr --version latest --disk-map "disk0=$L4" --yes --reinstall-bootloader bios
assert_contains "$T/err" "4096-byte sectors" "the error names the sector size"
assert_contains "$T/err" "nothing was written" "the error says nothing was written"
assert_eq "0" "$(cmp -s "$T/4k.img" /dev/zero -n "$SIZE"; echo $?)" "the 4Kn target is untouched (all zeros)"
losetup -d "$L4"
rm -f "$T/4k.img"

# The restore for BIOS.
truncate -s "$SIZE" "$T/bios.img"
kok bmr --version latest --disk-map "disk0=$T/bios.img" --yes --tmpdir "$T" --reinstall-bootloader bios
cat "$T/out"
grep -q 'disk0p7 bios-boot .* new 1.0 MiB at byte 1048576: made for BIOS (in the gap before the first partition)' "$T/out" ||
        fail "the plan must show the new BIOS boot partition in the gap"
grep -q 'GRUB for BIOS (i386-pc) installed' "$T/out" || fail "the report must say GRUB for BIOS was installed"
jq -e '.partitiontable.partitions | map(select(.type == "21686148-6449-6E6F-744E-656564454649")) | length == 1' \
        <(sfdisk -J "$T/bios.img") >/dev/null || { sfdisk -d "$T/bios.img" >&2; fail "no BIOS boot partition"; }
[ "$(od -An -tx1 -j 0x66 -N 2 "$T/bios.img" | tr -d ' ')" = 9090 ] || fail "GRUB's boot code is not in the MBR"
bmr_boot bios "$T/bios.img" "$T/marker" || fail "the restore with --reinstall-bootloader bios does not boot under BIOS"
grep -q '^KURA-MARKER part 7 type=21686148-6449-6E6F-744E-656564454649 uuid=[0-9A-F-]* name=BIOS boot$' "$T/marker" ||
        { cat "$T/marker" >&2; fail "the guest does not see the new BIOS boot partition"; }
grep -v '^KURA-MARKER part 7 ' "$T/marker" >"$T/marker.rest"
bmr_assert_marker "$T/expected" "$T/marker.rest" "UEFI-only disk restored for BIOS"
info "the UEFI-only disk restored with --reinstall-bootloader bios boots under BIOS"

# No room: a disk whose first partition starts 64 KiB in.
truncate -s 64M "$T/tight.img"
printf 'label: gpt\nfirst-lba: 34\nstart=128, size=65536, type=L\n' | sfdisk -q "$T/tight.img" >/dev/null ||
        fail "sfdisk tight"
read -r tstart tsize < <(bmr_part_range "$T/tight.img" 1)
truncate -s "$tsize" "$T/tight-p1.img"
mkfs.ext4 -q -F "$T/tight-p1.img"
dd if="$T/tight-p1.img" of="$T/tight.img" bs=1M seek=$((tstart)) oflag=seek_bytes conv=notrunc,sparse status=none
kok backup --disk "$T/tight.img" --snapshot none
truncate -s 64M "$T/tight2.img"
expect_fail 1 KURA-E-DISK-LAYOUT bmr --version latest --disk-map "disk0=$T/tight2.img" --yes --reinstall-bootloader bios
assert_contains "$T/err" "too few for a BIOS boot partition" "the error says why"
assert_eq "0" "$(cmp -s "$T/tight2.img" /dev/zero -n 67108864; echo $?)" "the target is untouched (all zeros)"
exit 0
