#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: timeout=1500
#
# Restore tests (kura verify-restore, issue 4 "Restore tests as a feature").
# (1) A GPT disk image like t1210's source (BIOS boot bytes, ESP, ext4, swap,
#     xfs, btrfs; known MBR boot code and gap) backed up with --disk into an
#     unencrypted repository: verify-restore passes, names each partition's
#     checker, records the result (versions: "verified"; --json
#     verify_restore.ok == true with an RFC 3339 time and the kura version),
#     leaves nothing in --tmpdir and makes no loop device and no mount; with
#     --keep the rebuilt image equals the source (table, boot bytes, every
#     partition but swap, whose page kura re-makes).  A record moved to
#     another version's name is refused.  forget + check: no complaint.
# (2) One byte flipped in a stored chunk of the ext4 partition's volume:
#     verify-restore exits 3 with KURA-E-VERIFY-FAILED naming disk0p3 and the
#     damage, still checks the other partitions, and versions shows
#     VERIFY-FAILED (--json ok == false, the error recorded).
# (3) --boot, with the bootable test disks of tests/vm (bmr-lib.sh): the GPT
#     disk boots (UEFI, auto) to KURA-MARKER-END; the MBR disk boots (BIOS,
#     GRUB's core.img in the gap before the first partition, so the gap and
#     boot code restore is proven); a version of the GPT disk whose ESP lost
#     \EFI\BOOT\BOOTX64.EFI restores and checks clean but fails the boot
#     (exit 3, VERIFY-FAILED) while the good version stays "verified".
#     Skipped (with a note) when qemu or the test-disk scripts are missing,
#     or with KURA_SKIP_VM=1.
. "$(dirname "$0")/lib.sh"
require_tool sfdisk mkfs.ext4 mkfs.xfs mkfs.btrfs mkfs.vfat mcopy mdel mkswap e2fsck xfs_repair btrfs fsck.vfat jq xxd cmp

MiB=1048576
shas() { sha256sum | cut -d' ' -f1; }
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

part_field() { sfdisk -J "$1" | jq -r --argjson n "$2" --arg f "$3" '.partitiontable as $t | $t.partitions[$n - 1][$f] * ($t.sectorsize // 512)'; }
part_off() { part_field "$1" "$2" start; }
part_size() { part_field "$1" "$2" size; }
part_loop() {
        local dev
        dev=$(losetup -f --show -o "$(part_off "$1" "$2")" --sizelimit "$(part_size "$1" "$2")" "$1") || fail "losetup partition $2 of $1"
        echo "$dev" >>"$T/loops"
        echo "$dev"
}

# The source disk (set-up only: loop devices here are the test's, not kura's).
rand_bytes bootcode 440 | dd of="$IMG" conv=notrunc status=none
rand_bytes gap $((MiB - 34 * 512)) | dd of="$IMG" bs=512 seek=34 conv=notrunc status=none
rand_bytes biosboot $MiB | dd of="$IMG" bs=$MiB seek=1 conv=notrunc status=none
P2=$(part_loop "$IMG" 2)
mkfs.vfat -I -n KURAESP -i 6B0E5A1C "$P2" >/dev/null || fail "mkfs.vfat"
mkdir -p "$T/esp/EFI/debian"
rand_bytes grubx64 300000 >"$T/esp/EFI/debian/grubx64.efi"
(cd "$T/esp" && mcopy -s -m -i "$P2" ./EFI ::/) || fail "mcopy to the ESP"
declare -A FS=([3]=ext4 [5]=xfs [6]=btrfs)
for n in 3 5 6; do
        dev=$(part_loop "$IMG" "$n")
        case ${FS[$n]} in
        ext4) mkfs.ext4 -q -F -L kura-root -U 3f0c1b2a-0001-4c0e-8a55-000000000003 "$dev" ;;
        xfs) mkfs.xfs -q -f -L kura-xfs -m uuid=3f0c1b2a-0001-4c0e-8a55-000000000005 "$dev" ;;
        btrfs) mkfs.btrfs -q -f -L kura-btrfs -U 3f0c1b2a-0001-4c0e-8a55-000000000006 "$dev" >/dev/null ;;
        esac || fail "mkfs ${FS[$n]}"
        fs_fill "${FS[$n]}" "$dev" "$n" 24
        losetup -d "$dev"
done
P4=$(part_loop "$IMG" 4)
mkswap -q -L kura-swap -U 3f0c1b2a-0001-4c0e-8a55-000000000004 "$P4" >/dev/null || fail "mkswap"
losetup -d "$P2" "$P4"
btrfs device scan --forget >/dev/null 2>&1

# Unencrypted, so that a test can find and flip a byte of a stored chunk.
kok init --no-encryption
kok backup --disk "$IMG" --snapshot none --json
V1=$(jq -r '.id // .version.id // empty' "$T/out")
[ -n "$V1" ] || V1=$(version_ids | tail -1)
[ ${#V1} = 64 ] || fail "no version ID after the backup"

# ---- (1) a clean version ------------------------------------------------------------
# Loop devices backed by a file of this test, and mounts of anything of this
# test (other tests may run at the same time: only ours count).
ours() { { losetup -a; cat /proc/self/mountinfo; } | grep -F -e "$T" -e kura-verify | sort; }
mkdir -p "$T/scratch"
ours >"$T/attached.before"
t0=$SECONDS
kok verify-restore --version "$V1" --tmpdir "$T/scratch"
info "verify-restore of the 900 MiB disk: $((SECONDS - t0)) s"
cp "$T/out" "$T/verify1.txt"
ours >"$T/attached.after"
assert_file_eq "$T/attached.before" "$T/attached.after" "loop devices and mounts during verify-restore"
# While it runs, too: a second run, sampled every 50 ms.
( while :; do ours; sleep 0.05; done ) >"$T/attached.during" 2>/dev/null &
sampler=$!
kok verify-restore --version "$V1" --tmpdir "$T/scratch"
kill "$sampler"
wait "$sampler" 2>/dev/null
sort -u "$T/attached.during" | comm -13 "$T/attached.before" - >"$T/attached.new"
[ -s "$T/attached.new" ] && { cat "$T/attached.new" >&2; fail "verify-restore attached something to the host"; }
for pat in 'disk0p2 +esp +vfat +fsck.vfat -n: clean' 'disk0p3 +data +ext4 +e2fsck -fn: clean' \
        'disk0p5 +data +xfs +xfs_repair -n -f: clean' 'disk0p6 +data +btrfs +btrfs check --readonly: clean' \
        'disk0p4 +swap .*UUID 3f0c1b2a-0001-4c0e-8a55-000000000004' 'disk0p1 +bios-boot .*not checked' \
        'passed in .*recorded in the repository'; do
        grep -qE -- "$pat" "$T/verify1.txt" || { cat "$T/verify1.txt" >&2; fail "verify-restore output lacks /$pat/"; }
done
[ -z "$(ls -A "$T/scratch")" ] || { ls -la "$T/scratch" >&2; fail "verify-restore left files in --tmpdir"; }
[ -f "$REPO/verify/$V1" ] || fail "no record $REPO/verify/$V1"
kok versions
grep -E "^${V1:0:12} .* bmr,verified " "$T/out" >/dev/null || { cat "$T/out" >&2; fail "versions does not flag the version verified"; }
kok versions --json
jq -e --arg id "$V1" '.versions[] | select(.id == $id) | .verify_restore
        | .ok == true and .version == $id and .format == 1 and .booted == false and .error == null
        and (.time | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]+)?Z$"))
        and (.kura_version | length > 0) and (.duration >= 0)
        and (.disks[0].partitions | map(.result) == ["not checked (no filesystem)","clean","clean",
                "swap re-made with UUID 3f0c1b2a-0001-4c0e-8a55-000000000004","clean","clean"])
        and (.disks[0].partitions | map(.check) == [null,"fsck.vfat -n","e2fsck -fn",null,"xfs_repair -n -f","btrfs check --readonly"])' \
        "$T/out" >/dev/null || { jq '.versions[].verify_restore' "$T/out" >&2; fail "versions --json: verify_restore of $V1"; }
info "clean version: verified, recorded, nothing attached"

# --keep: the rebuilt image is the source, byte for byte (swap aside).
kok verify-restore --version "$V1" --tmpdir "$T/scratch" --keep --json
W=$(jq -r .workdir "$T/out")
[ -f "$W/disk0.img" ] || fail "--keep: no $W/disk0.img"
assert_eq "$(stat -c %s "$IMG")" "$(stat -c %s "$W/disk0.img")" "size of the scratch image"
table() { sfdisk -d "$1" | grep -v '^device:' | sed 's|^/.*img\([0-9]*\) :|p\1 :|'; }
assert_eq "$(table "$IMG")" "$(table "$W/disk0.img")" "partition table of the scratch image"
assert_eq "$(head -c $MiB "$IMG" | tail -c +17409 | shas)" "$(head -c $MiB "$W/disk0.img" | tail -c +17409 | shas)" "gap before the first partition"
assert_eq "$(head -c 440 "$IMG" | shas)" "$(head -c 440 "$W/disk0.img" | shas)" "MBR boot code"
for n in 1 2 3 5 6; do
        cmp -s -n "$(part_size "$IMG" "$n")" -i "$(part_off "$IMG" "$n"):$(part_off "$IMG" "$n")" "$IMG" "$W/disk0.img" ||
                fail "partition $n of the scratch image differs from the source"
done
assert_eq 3f0c1b2a-0001-4c0e-8a55-000000000004 "$(blkid -p -o value -s UUID -O "$(part_off "$IMG" 4)" "$W/disk0.img")" "swap UUID in the scratch image"
rm -rf "$W"
info "--keep: the scratch image equals the source disk"

# A record copied to another version's name does not authenticate.
kok backup --volume "$T/esp/EFI/debian/grubx64.efi" --snapshot none
V2=$(version_ids | tail -1)
cp "$REPO/verify/$V1" "$REPO/verify/$V2"
kok versions --json
jq -e --arg id "$V2" '.versions[] | select(.id == $id) | .verify_restore == null' "$T/out" >/dev/null ||
        fail "a record moved to version $V2 was accepted"
assert_contains "$T/err" KURA-E-DAMAGED "warning about the moved record"
expect_fail 1 KURA-E-NOT-BMR-COMPLETE verify-restore --version "$V2" --tmpdir "$T/scratch"
rm -f "$REPO/verify/$V2"
# forget removes the forgotten version's record; check does not complain.
cp -a "$REPO" "$T/repo-forget"
KURA_REPO=$T/repo-forget kok forget "$V1" --prune
KURA_REPO=$T/repo-forget kok check
KURA_REPO=$T/repo-forget kok versions --json
jq -e --arg id "$V1" '[.versions[] | select(.id == $id)] == []' "$T/out" >/dev/null || fail "forgotten version still listed"
[ -e "$T/repo-forget/verify/$V1" ] && fail "forget left the record verify/${V1:0:12}... behind"
rm -rf "$T/repo-forget"

# ---- (2) a damaged chunk of the ext4 partition ------------------------------------------
BS=$(jq -r '.versions[0].volumes[0].chunk_size' "$T/out" 2>/dev/null)
kok versions --json
BS=$(jq -r --arg id "$V1" '.versions[] | select(.id == $id) | .volumes[] | select(.name == "disk0p3") | .chunk_size' "$T/out")
[ "$BS" -gt 0 ] 2>/dev/null || fail "no chunk size of disk0p3"
dd if="$IMG" of="$T/p3" bs=$MiB skip=$(($(part_off "$IMG" 3) / MiB)) count=$(($(part_size "$IMG" 3) / MiB)) status=none
block_hashes "$T/p3" "$BS" | sort -u >"$T/h-p3"
head -c "$BS" /dev/zero | shas >"$T/h-zero"
for p in "$REPO"/data/*/*; do pack_entries "$p" | sed "s|^|$p |"; done >"$T/entries"
# A data blob of disk0p3 (type 0) that no other partition holds.
: >"$T/h-others"
for n in 1 2 5 6; do
        dd if="$IMG" bs=$MiB skip=$(($(part_off "$IMG" "$n") / MiB)) count=$(($(part_size "$IMG" "$n") / MiB)) status=none >"$T/pn"
        block_hashes "$T/pn" "$BS" >>"$T/h-others"
done
sort -u "$T/h-others" -o "$T/h-others"
comm -23 "$T/h-p3" "$T/h-others" | comm -23 - "$T/h-zero" >"$T/h-only-p3"
read -r pack _ chunk boff blen < <(awk 'NR == FNR { want[$1] = 1; next } $2 == 0 && ($3 in want)' "$T/h-only-p3" "$T/entries" | head -1)
[ -n "${chunk:-}" ] || fail "no stored chunk found that only disk0p3 uses"
flip_byte "$pack" $((boff + blen / 2))
info "flipped a byte of chunk ${chunk:0:16} (disk0p3) in ${pack#"$REPO"/}"
expect_fail 3 KURA-E-VERIFY-FAILED verify-restore --version "$V1" --tmpdir "$T/scratch"
cat "$T/out" "$T/err" >"$T/verify2.txt"
grep -qE 'disk0p3.*(KURA-E-DAMAGED|damaged)' "$T/verify2.txt" || { cat "$T/verify2.txt" >&2; fail "the failure does not name disk0p3 and the damage"; }
grep -qE 'disk0p5 .*xfs_repair -n -f: clean' "$T/verify2.txt" || { cat "$T/verify2.txt" >&2; fail "the other partitions were not checked after the damage"; }
[ -z "$(ls -A "$T/scratch")" ] || fail "a failed verify-restore left files in --tmpdir"
kok versions
grep -E "^${V1:0:12} .* bmr,VERIFY-FAILED " "$T/out" >/dev/null || { cat "$T/out" >&2; fail "versions does not flag VERIFY-FAILED"; }
kok versions --json
jq -e --arg id "$V1" '.versions[] | select(.id == $id) | .verify_restore | .ok == false and (.error | test("disk0p3"))
        and (.disks[0].partitions[2].ok == false) and (.disks[0].partitions[4].ok == true)' "$T/out" >/dev/null ||
        { jq '.versions[].verify_restore' "$T/out" >&2; fail "versions --json: the failed record"; }
info "damaged chunk: exit 3, KURA-E-VERIFY-FAILED naming disk0p3, versions shows VERIFY-FAILED"

# ---- (3) booting ---------------------------------------------------------------------------
if [ "${KURA_SKIP_VM:-0}" = 1 ]; then
        info "boot part skipped (KURA_SKIP_VM=1)"
        exit 0
fi
if ! command -v qemu-system-x86_64 >/dev/null || [ ! -f /usr/share/ovmf/OVMF.fd ] ||
        [ ! -f "$TESTDIR/bmr-lib.sh" ] || [ ! -x "$SRCROOT/tests/vm/make-test-disk.sh" ]; then
        info "boot part skipped: needs qemu-system-x86_64, ovmf, tests/integration/bmr-lib.sh and tests/vm/make-test-disk.sh"
        exit 0
fi
. "$TESTDIR/bmr-lib.sh"
# A boot may wait for other tests' guests (one at a time on the machine).
KURA_TIMEOUT=1200
BR=$T/brepo
KURA_REPO=$BR kok init --no-encryption
bmr_make_disk gpt "$T/gpt.img"
KURA_REPO=$BR kok backup --disk "$T/gpt.img" --snapshot none
G1=$(KURA_REPO=$BR version_ids | tail -1)
t0=$SECONDS
KURA_REPO=$BR kok verify-restore --version "$G1" --boot --timeout 240 --tmpdir "$T/scratch"
info "GPT disk, --boot: $((SECONDS - t0)) s"
cp "$T/out" "$T/boot1.txt"
grep -qE 'boot disk0 \(uefi, .*marker seen after .*KURA-MARKER-END' "$T/boot1.txt" || { cat "$T/boot1.txt" >&2; fail "the GPT disk did not boot to the marker"; }
KURA_REPO=$BR kok versions --json
jq -e --arg id "$G1" '.versions[] | select(.id == $id) | .verify_restore | .ok == true and .booted == true
        and (.boot | length == 1) and .boot[0].ok == true and .boot[0].firmware == "uefi" and .boot[0].seconds > 0' \
        "$T/out" >/dev/null || { jq '.versions[].verify_restore' "$T/out" >&2; fail "versions --json: boot record"; }
info "GPT disk boots from its scratch image (UEFI): $(grep -o 'marker seen after [0-9.]* s' "$T/boot1.txt")"

# The MBR disk: BIOS, GRUB's core.img lives in the gap restored from the boot area.
bmr_make_disk mbr "$T/mbr.img"
KURA_REPO=$BR kok backup --disk "$T/mbr.img" --snapshot none
M1=$(KURA_REPO=$BR version_ids | tail -1)
t0=$SECONDS
KURA_REPO=$BR kok verify-restore --version "$M1" --boot --timeout 240 --tmpdir "$T/scratch"
info "MBR disk, --boot: $((SECONDS - t0)) s"
grep -qE 'boot disk0 \(bios, .*marker seen after' "$T/out" || { cat "$T/out" >&2; fail "the MBR disk did not boot (BIOS)"; }

# A version whose ESP lost the removable-path loader: restores and checks
# clean, but OVMF finds nothing to boot.
cp --sparse=always "$T/gpt.img" "$T/gpt-broken.img"
read -r off _ < <(bmr_part_range "$T/gpt-broken.img" 2)
mdel -i "$T/gpt-broken.img@@$off" ::/EFI/BOOT/BOOTX64.EFI || fail "mdel BOOTX64.EFI"
KURA_REPO=$BR kok backup --disk "$T/gpt-broken.img" --snapshot none
G2=$(KURA_REPO=$BR version_ids | tail -1)
t0=$SECONDS
KURA_REPO=$BR expect_fail 3 KURA-E-VERIFY-FAILED verify-restore --version "$G2" --boot --timeout 150 --tmpdir "$T/scratch"
info "broken GPT disk, --boot: $((SECONDS - t0)) s"
cat "$T/out" "$T/err" >"$T/boot2.txt"
grep -q 'disk0p2 .*fsck.vfat -n: clean' "$T/boot2.txt" || { cat "$T/boot2.txt" >&2; fail "the broken ESP should still check clean"; }
grep -qE 'disk0 did not boot \(uefi\)' "$T/boot2.txt" || { cat "$T/boot2.txt" >&2; fail "the failure does not say the disk did not boot"; }
KURA_REPO=$BR kok versions
grep -E "^${G1:0:12} .* bmr,verified " "$T/out" >/dev/null || { cat "$T/out" >&2; fail "the good GPT version lost its verified flag"; }
grep -E "^${M1:0:12} .* bmr,verified " "$T/out" >/dev/null || { cat "$T/out" >&2; fail "the MBR version is not verified"; }
grep -E "^${G2:0:12} .* bmr,VERIFY-FAILED " "$T/out" >/dev/null || { cat "$T/out" >&2; fail "the broken version is not VERIFY-FAILED"; }
[ -z "$(ls -A "$T/scratch")" ] || fail "--boot left files in --tmpdir"
info "boot: good GPT (UEFI) and MBR (BIOS) disks verified, the one without a loader VERIFY-FAILED"
