#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=600
#
# LVM and LUKS in a whole-disk backup and its bare-metal restore.
# (a) On the host (no device-mapper here): a GPT image whose p2 is a LUKS2
#     volume that is not open.  kura backup --disk refuses it before reading
#     anything, naming the partition and saying to open it (kura reads LUKS
#     in plaintext through the open mapping); nothing is written to the
#     repository.
# (b) In one qemu guest (tests/vm/guest-bmr-lvm-luks.sh): a GPT disk with
#     ext4, an LVM PV (VG "kbmr": LVs root and data, ext4 each) and a LUKS2
#     volume (ext4 inside), backed up with --disk, restored with kura bmr
#     onto a larger empty disk with --luks-key-file.  Checked here: the
#     backup made one volume per LV, the LUKS header and its plaintext (not
#     the partitions raw), the manifest's "lvm" / "luks" members; the
#     restored PV keeps its UUID, the VG its LVs and sizes, every file is
#     identical in p1, in each LV and in the LUKS volume (sha256), each
#     filesystem is fsck-clean, the LUKS UUID is unchanged and the old key
#     opens it; a bmr while a VG of the same name is visible is refused, and
#     so is a wrong key file.
. "$(dirname "$0")/lib.sh"
require_tool sfdisk mkfs.ext4 cryptsetup partx

MiB=1048576
# ---- (a) host: a LUKS partition that is not open ------------------------------------------
IMG=$T/luks.img
truncate -s 64M "$IMG"
printf 'label: gpt\n,8M,L\n,,L\n' | sfdisk -q "$IMG" >/dev/null || fail "sfdisk"
start=$(sfdisk -J "$IMG" | jq '.partitiontable.partitions[1].start * 512')
size=$(sfdisk -J "$IMG" | jq '.partitiontable.partitions[1].size * 512')
LP=$(losetup -f --show -o "$start" --sizelimit "$size" "$IMG") || fail "losetup"
printf 'host-key' >"$T/key"
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$T/key" "$LP" ||
        fail "luksFormat"
luuid=$(cryptsetup luksUUID "$LP")
losetup -d "$LP"
kura_init_test_repo
before=$(tree_sha "$REPO" | sha256sum)
expect_fail 1 KURA-E-SOURCE-UNREADABLE backup --disk "$IMG" --snapshot none
assert_contains "$T/err" "disk0p2" "the refusal names the partition"
assert_contains "$T/err" "LUKS volume (UUID $luuid) that is not open" "the refusal says the LUKS volume is not open"
assert_contains "$T/err" "cryptsetup open" "the remedy says how to open it"
assert_eq "$before" "$(tree_sha "$REPO" | sha256sum)" "the refused backup changed the repository"
kok versions --json
assert_eq 0 "$(jq '.versions | length' "$T/out")" "versions after the refused backup"
# kura bmr without a key file on a version with LUKS is covered in the guest.

# ---- (b) the guest ----------------------------------------------------------------------
VM=$SRCROOT/tests/vm/run.sh
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v lvm >/dev/null; then
        info "SKIP part (b): qemu or lvm2 missing"
        exit 0
fi
mkdir -p "$T/data" "$T/share"
rand_bytes f1 $((2 * MiB)) >"$T/data/f1"
rand_bytes f2 $((3 * MiB)) >"$T/data/f2"
rand_bytes f3 $((1 * MiB + 12345)) >"$T/data/f3"
rand_bytes f4 $((2 * MiB + 7)) >"$T/data/f4"
rand_bytes f5 $((3 * MiB)) >"$T/data/f5"
rand_bytes luks-key 64 >"$T/data/key"
truncate -s 160M "$T/src.img"
truncate -s 192M "$T/dst.img"
sfdisk -q "$T/src.img" <<'EOF' >/dev/null || fail "sfdisk src"
label: gpt
label-id: 5A1E0B1C-7A1E-4C2B-9E55-4B55A0000260
size=16MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=5A1E0B1C-7A1E-4C2B-9E55-4B55A0000261, name="boot"
size=72MiB, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, uuid=5A1E0B1C-7A1E-4C2B-9E55-4B55A0000262, name="lvm"
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=5A1E0B1C-7A1E-4C2B-9E55-4B55A0000263, name="crypt"
EOF
t=$SECONDS
"$VM" --disk "$T/src.img" --disk "$T/dst.img" --share "$T/share" --module dm_crypt --timeout 420 \
        --log "$T/console.log" -- bash "$SRCROOT/tests/vm/guest-bmr-lvm-luks.sh" "$T/share" "$T/data" \
        >"$T/guest.out" 2>"$T/guest.err"
rc=$?
cat "$T/guest.out" "$T/guest.err"
info "guest: exit $rc after $((SECONDS - t)) s"
assert_eq 0 "$rc" "exit status of the guest"
S=$T/share

# The backup: volumes per LV, LUKS header and plaintext; no raw copy of p2/p3.
J=$S/versions.json
vols=$(jq -r '.versions[0].volumes[].name' "$J" | sort | tr '\n' ' ')
assert_eq "disk0-boot disk0p1 disk0p2-data disk0p2-root disk0p3-luks disk0p3-luks-header " "$vols" "volumes of the version"
jq -e '.versions[0].bmr == true' "$J" >/dev/null || fail "the version is not marked bmr"
p2='.versions[0].disks[0].partitions[1]'
p3='.versions[0].disks[0].partitions[2]'
assert_eq kbmr "$(jq -r "$p2.lvm.vg" "$J")" "manifest: lvm.vg"
assert_eq "$(cat "$S/pv_uuid")" "$(jq -r "$p2.lvm.pv_uuid" "$J")" "manifest: lvm.pv_uuid"
assert_eq "data disk0p2-data|root disk0p2-root" "$(jq -r "[$p2.lvm.lvs[] | .name + \" \" + .volume] | sort | join(\"|\")" "$J")" \
        "manifest: lvm.lvs"
jq -r "$p2.lvm.metadata" "$J" | grep -q "id = \"$(cat "$S/pv_uuid")\"" || fail "manifest: lvm.metadata lacks the PV UUID"
assert_eq null "$(jq -r "$p2.volume" "$J")" "manifest: p2 is not copied raw"
assert_eq "$(cat "$S/luks_uuid")" "$(jq -r "$p3.luks.uuid" "$J")" "manifest: luks.uuid"
assert_eq "disk0p3-luks-header disk0p3-luks kcrypt ext4" \
        "$(jq -r "$p3.luks | [.header_volume, .volume, .mapping_name, .fs] | join(\" \")" "$J")" "manifest: luks"
assert_eq 16777216 "$(jq -r "$p3.luks.header_size" "$J")" "manifest: LUKS2 header size"
assert_eq null "$(jq -r "$p3.volume" "$J")" "manifest: p3 is not copied raw"
assert_eq "data root " "$(cat "$S/lvs.after-backup")" "LVs after the backup (no snapshot left)"

# The refusals.
assert_eq 1 "$(cat "$S/bmr-dup.rc")" "bmr with the VG kbmr visible: exit status"
assert_contains "$S/bmr-dup.out" "KURA-E-TARGET-MOUNTED" "bmr with the VG visible: error code"
assert_contains "$S/bmr-dup.out" "a volume group named kbmr already exists on this machine" "bmr with the VG visible: message"
assert_eq 4 "$(cat "$S/bmr-wrongkey.rc")" "bmr with a wrong key: exit status"
assert_contains "$S/bmr-wrongkey.out" "KURA-E-WRONG-PASSWORD" "bmr with a wrong key: error code"

# The restore.
assert_eq "$(cat "$S/pv_uuid")" "$(cat "$S/pv_uuid.dst")" "PV UUID on the target"
assert_eq "$(cat "$S/lvs.src")" "$(cat "$S/lvs.dst")" "LVs and sizes on the target"
assert_eq "$(cat "$S/luks_uuid")" "$(cat "$S/luks_uuid.dst")" "LUKS UUID on the target"
sh() { sha256sum "$T/data/$1" | cut -d' ' -f1; }
expect="p1 f1 $(sh f1)
root f2 $(sh f2)
root f3 $(sh f3)
root lost+found
data f4 $(sh f4)
data lost+found
luks f1 $(sh f1)
luks f5 $(sh f5)
luks lost+found"
# ck lists regular files only: lost+found (a directory) does not appear.
expect=$(grep -v lost+found <<<"$expect")
assert_eq "$expect" "$(cat "$S/files.dst")" "files (sha256) on the target, fsck clean"
assert_contains "$S/bmr.out" "LVM: physical volume" "bmr report: LVM"
assert_contains "$S/bmr.out" "LUKS: header of disk0p3-luks" "bmr report: LUKS"
assert_contains "$T/console.log" "KURA-VM-RESULT: PASS" "console marker"
