#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: timeout=900
#
# Bare-metal recovery of a whole GPT disk (an image file) on this host, no
# guest: BIOS boot partition (raw bytes), ESP (vfat, filled with mtools),
# ext4, swap, xfs and btrfs (last).  The MBR boot code and the gap before
# the first partition hold known bytes.  btrfs cannot shrink below 256 MiB,
# xfs not at all (and mkfs.xfs needs 300 MiB): sizes follow.  One backup with --disk, then
# kura bmr onto: a same-size image (every partition byte-identical, boot
# area identical, removable-path UEFI loader added); a larger one (backup
# GPT at the new end, the last partition and its btrfs grown); a smaller one
# (ext4 and btrfs shrunk, xfs re-created with its UUID and filled file by
# file); a disk with 4096-byte logical sectors (table converted).  Each
# restored filesystem is fsck-clean, keeps its UUID and label, and holds
# the same tree as the source.  Refusals write nothing: a too-small target
# (names the missing bytes), a mounted target, an unmapped disk, a version
# without disks, no --yes off a terminal; --dry-run writes nothing.
# The boot proof (the restored disks boot) is t1220.
. "$(dirname "$0")/lib.sh"
require_tool sfdisk mkfs.ext4 mkfs.xfs mkfs.btrfs mkfs.vfat mcopy mdir mkswap e2fsck xfs_repair btrfs cmp

MiB=1048576
shas() { sha256sum | cut -d' ' -f1; } # of stdin
IMG=$T/src.img
truncate -s 900M "$IMG"
sfdisk -q "$IMG" <<'EOF' || fail "sfdisk"
label: gpt
label-id: 6B0E5A1C-7A1E-4C2B-9E55-4B55A0000001
start=2048, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, uuid=6B0E5A1C-7A1E-4C2B-9E55-4B55A0000011, name="bios"
size=32MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6B0E5A1C-7A1E-4C2B-9E55-4B55A0000012, name="EFI System", attrs="RequiredPartition"
size=200MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=6B0E5A1C-7A1E-4C2B-9E55-4B55A0000013, name="root"
size=16MiB, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, uuid=6B0E5A1C-7A1E-4C2B-9E55-4B55A0000014, name="swap"
size=320MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6B0E5A1C-7A1E-4C2B-9E55-4B55A0000015, name="xfs data"
size=300MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6B0E5A1C-7A1E-4C2B-9E55-4B55A0000016, name="btrfs data"
EOF

# part_off IMG N / part_size IMG N: bytes, from the table on IMG.
part_field() { sfdisk -J "$1" | jq -r --argjson n "$2" --arg f "$3" '.partitiontable as $t | $t.partitions[$n - 1][$f] * ($t.sectorsize // 512)'; }
part_off() { part_field "$1" "$2" start; }
part_size() { part_field "$1" "$2" size; }
# part_loop IMG N [BLOCKSIZE]: a loop device over partition N of IMG.
part_loop() {
        local dev
        dev=$(losetup -f --show -o "$(part_off "$1" "$2")" --sizelimit "$(part_size "$1" "$2")" ${3:+-b "$3"} "$1") || fail "losetup partition $2 of $1"
        echo "$dev" >>"$T/loops"
        echo "$dev"
}

# Known boot bytes: MBR boot code (440 bytes) and the gap after the GPT
# entries (sector 34 to 1 MiB, where a BIOS loader could live).
rand_bytes bootcode 440 | dd of="$IMG" conv=notrunc status=none
rand_bytes gap $((MiB - 34 * 512)) | dd of="$IMG" bs=512 seek=34 conv=notrunc status=none
rand_bytes biosboot $MiB | dd of="$IMG" bs=$MiB seek=1 conv=notrunc status=none

P2=$(part_loop "$IMG" 2)
mkfs.vfat -I -n KURAESP -i 6B0E5A1C "$P2" >/dev/null || fail "mkfs.vfat"
mkdir -p "$T/esp/EFI/debian"
rand_bytes grubx64 300000 >"$T/esp/EFI/debian/grubx64.efi"
text_file 7 100 >"$T/esp/EFI/debian/grub.cfg"
(cd "$T/esp" && mcopy -s -m -i "$P2" ./EFI ::/) || fail "mcopy to the ESP"

declare -A FS=([3]=ext4 [5]=xfs [6]=btrfs) UUIDS=() MAN=()
UUIDS[3]=3f0c1b2a-0001-4c0e-8a55-000000000003
UUIDS[5]=3f0c1b2a-0001-4c0e-8a55-000000000005
UUIDS[6]=3f0c1b2a-0001-4c0e-8a55-000000000006
for n in 3 5 6; do
        dev=$(part_loop "$IMG" "$n")
        case ${FS[$n]} in
        ext4) mkfs.ext4 -q -F -L kura-root -U "${UUIDS[$n]}" "$dev" ;;
        xfs) mkfs.xfs -q -f -L kura-xfs -m uuid="${UUIDS[$n]}" "$dev" ;;
        btrfs) mkfs.btrfs -q -f -L kura-btrfs -U "${UUIDS[$n]}" "$dev" >/dev/null ;;
        esac || fail "mkfs ${FS[$n]}"
        fs_fill "${FS[$n]}" "$dev" "$n" 24
        MAN[$n]=$(fs_manifest "${FS[$n]}" "$dev") || fail "manifest of partition $n"
        losetup -d "$dev"
done
P4=$(part_loop "$IMG" 4)
mkswap -q -L kura-swap -U 3f0c1b2a-0001-4c0e-8a55-000000000004 "$P4" >/dev/null || fail "mkswap"
losetup -d "$P2" "$P4"
btrfs device scan --forget >/dev/null 2>&1

kura_init_test_repo
kok backup --disk "$IMG" --snapshot none --json
jq -e '.volumes | map(.name) == ["disk0-boot","disk0p1","disk0p2","disk0p3","disk0p5","disk0p6"]' "$T/out" >/dev/null ||
        { show_output backup; fail "volumes of the disk backup"; }
kok versions --json
jq -e '.versions[0].bmr == true and (.versions[0].disks | length) == 1' "$T/out" >/dev/null || fail "versions: not marked bmr"
jq -e '.versions[0].disks[0] | .label == "gpt" and .id == "6B0E5A1C-7A1E-4C2B-9E55-4B55A0000001" and .sector_size == 512
        and (.partitions | map(.role) == ["bios-boot","esp","data","swap","data","data"])
        and (.partitions | map(.volume) == ["disk0p1","disk0p2","disk0p3",null,"disk0p5","disk0p6"])
        and .partitions[1].attrs == 1 and .partitions[2].type == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        and .partitions[3].fs_uuid == "3f0c1b2a-0001-4c0e-8a55-000000000004"' "$T/out" >/dev/null ||
        { jq '.versions[0].disks' "$T/out" >&2; fail "the recorded layout"; }
kok versions
grep -q ' bmr ' "$T/out" || { cat "$T/out" >&2; fail "versions does not flag the version bmr"; }

# verify_disk IMG [BLOCKSIZE] (IMG: an image file, or a loop device with
# BLOCKSIZE-byte sectors, which sfdisk 2.38 needs to read a 4Kn table): the table (types, GUIDs, names, attributes,
# disk ID) as in the source, every filesystem fsck-clean with its UUID and
# the source's tree, the swap's UUID, the BIOS boot bytes.
verify_disk() {
        local img=$1 bs=${2:-} n dev
        sfdisk -J "$img" | jq -c '.partitiontable | [.id, (.partitions[] | [.type, .uuid, .name, .attrs])]' >"$T/t.got"
        sfdisk -J "$IMG" | jq -c '.partitiontable | [.id, (.partitions[] | [.type, .uuid, .name, .attrs])]' >"$T/t.want"
        assert_file_eq "$T/t.want" "$T/t.got" "partition table of $img"
        sfdisk -V "$img" >"$T/verify" 2>&1 || { cat "$T/verify" >&2; fail "sfdisk -V $img"; }
        for n in 3 5 6; do
                dev=$(part_loop "$img" "$n" "$bs")
                assert_eq "${UUIDS[$n]}" "$(blkid -p -o value -s UUID "$dev")" "UUID of partition $n on $img"
                fs_fsck "${FS[$n]}" "$dev"
                [ "$(fs_manifest "${FS[$n]}" "$dev")" = "${MAN[$n]}" ] || fail "the tree of partition $n (${FS[$n]}) on $img differs"
                losetup -d "$dev"
                btrfs device scan --forget >/dev/null 2>&1
        done
        dev=$(part_loop "$img" 4 "$bs")
        assert_eq 3f0c1b2a-0001-4c0e-8a55-000000000004 "$(blkid -p -o value -s UUID "$dev")" "swap UUID on $img"
        losetup -d "$dev"
        assert_eq "$(rand_bytes biosboot $MiB | shas)" "$(dd if="$img" bs=$MiB skip=1 count=1 status=none | shas)" "BIOS boot partition of $img"
        assert_eq "$(rand_bytes bootcode 440 | shas)" "$(head -c 440 "$img" | shas)" "MBR boot code of $img"
        info "$img: table, filesystems, swap and boot bytes as backed up"
}

# ---- same size ----------------------------------------------------------------------
truncate -s 900M "$T/same.img"
kok bmr --version latest --disk-map "disk0=$T/same.img" --yes
grep -q 'disk0p6.*restore' "$T/out" || { show_output bmr; fail "bmr plan output"; }
for n in 1 3 5 6; do
        cmp -s -n "$(part_size "$IMG" "$n")" -i "$(part_off "$IMG" "$n"):$(part_off "$T/same.img" "$n")" "$IMG" "$T/same.img" ||
                fail "partition $n of the same-size restore is not byte-identical"
done
cmp -s -n $((MiB - 17408)) -i 17408:17408 "$IMG" "$T/same.img" || fail "the gap before the first partition differs"
verify_disk "$T/same.img"
# The ESP: the source's files, plus the removable-path loader for an empty NVRAM.
P2=$(part_loop "$T/same.img" 2)
mcopy -n -i "$P2" ::/EFI/BOOT/BOOTX64.EFI "$T/bootx64" || fail "no \\EFI\\BOOT\\BOOTX64.EFI on the restored ESP"
assert_eq "$(sha "$T/esp/EFI/debian/grubx64.efi")" "$(sha "$T/bootx64")" "BOOTX64.EFI is the system's own GRUB"
mcopy -n -i "$P2" ::/EFI/debian/grub.cfg "$T/grub.cfg" || fail "grub.cfg on the ESP"
assert_file_eq "$T/esp/EFI/debian/grub.cfg" "$T/grub.cfg" "grub.cfg on the restored ESP"
fsck.vfat -n "$P2" >/dev/null || fail "fsck.vfat of the restored ESP"
losetup -d "$P2"

# ---- larger ---------------------------------------------------------------------------
truncate -s 1300M "$T/big.img"
kok bmr --version latest --disk-map "disk0=$T/big.img" --yes
verify_disk "$T/big.img"
last=$(sfdisk -J "$T/big.img" | jq '.partitiontable.lastlba')
[ "$last" -ge $(((1300 * MiB - 34 * 512) / 512 - 1)) ] || fail "the backup GPT is not at the end of the larger disk (lastlba $last)"
assert_eq $((700 * MiB)) "$(part_size "$T/big.img" 6)" "size of the grown last partition"
dev=$(part_loop "$T/big.img" 6)
do_mount "$dev" "$T/mbig"
size=$(btrfs filesystem show --raw "$T/mbig" | awk '/devid/ {print $4}')
[ "$size" -ge $((690 * MiB)) ] || fail "btrfs was not grown with its partition (device size $size)"
do_umount "$T/mbig"
losetup -d "$dev"
btrfs device scan --forget >/dev/null 2>&1
info "larger disk: last partition and btrfs grown to 700 MiB"

# ---- smaller ---------------------------------------------------------------------------
truncate -s 780M "$T/small.img"
kok bmr --version latest --disk-map "disk0=$T/small.img" --yes --tmpdir "$T"
cat "$T/out"
grep -q 'disk0p5.*re-create xfs' "$T/out" || fail "the plan should re-create xfs"
verify_disk "$T/small.img"
end=$(($(part_off "$T/small.img" 6) + $(part_size "$T/small.img" 6)))
[ "$end" -le $((780 * MiB)) ] || fail "partitions overrun the smaller disk"
info "smaller disk: sizes $(sfdisk -J "$T/small.img" | jq -c '[.partitiontable.partitions[].size / 2048]') MiB"

# ---- 4096-byte logical sectors -------------------------------------------------------
truncate -s 900M "$T/4k.img"
D4K=$(losetup -f --show -b 4096 "$T/4k.img") || fail "losetup -b 4096"
echo "$D4K" >>"$T/loops"
kok bmr --version latest --disk-map "disk0=$D4K" --yes
assert_eq 4096 "$(sfdisk -J "$D4K" | jq .partitiontable.sectorsize)" "sector size of the converted table"
verify_disk "$D4K" 4096
losetup -d "$D4K"

# ---- refusals: nothing written -----------------------------------------------------------
truncate -s 300M "$T/tiny.img"
rand_bytes tiny 4096 | dd of="$T/tiny.img" conv=notrunc status=none
before=$(sha "$T/tiny.img")
expect_fail 1 KURA-E-TARGET-TOO-SMALL bmr --version latest --disk-map "disk0=$T/tiny.img" --yes
grep -Eq 'is [0-9]+ bytes too small' "$T/err" || fail "the error must say how many bytes are missing"
assert_eq "$before" "$(sha "$T/tiny.img")" "a too-small target was written to"

# The mounted filesystem covers the first 100 MiB only: its boot block (the
# first 1024 bytes, where a table would go) and the disk's last MiB (where a
# backup GPT would go) are bytes it never writes itself.
M=$(new_loop 900M mounted)
rand_bytes mounted-tail $MiB | dd of="$M" bs=$MiB seek=899 status=none
mkfs.ext4 -q "$M" 100M
do_mount "$M" "$T/mnt-target"
mounted_marks() { { head -c 1024 "$M"; dd if="$M" bs=$MiB skip=899 status=none; } | shas; }
before=$(mounted_marks)
expect_fail 1 KURA-E-TARGET-MOUNTED bmr --version latest --disk-map "disk0=$M" --yes
assert_eq "$before" "$(mounted_marks)" "a mounted target was written to"
do_umount "$T/mnt-target"

before=$(sha "$T/same.img")
expect_fail 1 KURA-E-DISK-NOT-MAPPED bmr --version latest --disk-map "disk7=$T/same.img" --yes
expect_fail 1 KURA-E-NOT-CONFIRMED bmr --version latest --disk-map "disk0=$T/same.img"
kok bmr --version latest --disk-map "disk0=$T/same.img" --dry-run
grep -q 'ERASED' "$T/out" || fail "--dry-run prints the plan"
assert_eq "$before" "$(sha "$T/same.img")" "a refused or dry-run bmr wrote to the target"

V=$(new_loop 32M plain)
mkfs.ext4 -q "$V"
kok backup --volume "$V" --snapshot none
expect_fail 1 KURA-E-NOT-BMR-COMPLETE bmr --version latest --disk-map "disk0=$T/same.img" --yes
kok versions
tail -1 "$T/out" | grep -q ' bmr ' && fail "a --volume version must not be flagged bmr"
exit 0
