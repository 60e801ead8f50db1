#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=900
#
# LVM and LUKS in a whole-disk backup and its bare-metal restore.
# (a) On the host (no device-mapper here): a GPT image whose p2 is a LUKS2
#     volume that is not open.  kura backup --disk refuses it before reading
#     anything, naming the partition and saying to open it (kura reads LUKS
#     in plaintext through the open mapping); nothing is written to the
#     repository.
# (b) The bootable lvm test disk (tests/vm/make-test-disk.sh --kind lvm, cached:
#     GPT; BIOS boot, ESP, ext4 /boot, LVM PV with VG kuravg / LV root holding
#     the root, LUKS2 volume opened at boot from a crypttab key file) boots to
#     its expected marker under UEFI (OVMF) and BIOS (SeaBIOS).
# (c) In one qemu guest (tests/vm/guest-bmr-lvm-luks.sh), with the VG active
#     and the LUKS volume open as on a running server: kura backup --disk,
#     then kura bmr --luks-key-file onto an empty disk of the same size.
#     Checked here: the backup made one volume per LV, the LUKS header and its
#     plaintext (not the PV or the LUKS partition raw), the manifest's "lvm" /
#     "luks" members; the restored PV keeps its UUID, the VG its LV and size,
#     the LUKS UUID is unchanged and the old key opens it, both filesystems
#     are fsck-clean, kura leaves no dm device; a bmr while a VG of the same
#     name is visible is refused before anything is written, and so is a
#     wrong key file.
# (d) The restored disk has the same partition table (sfdisk -d) and boots to
#     the very same marker under UEFI and BIOS
#     (every partition GUID, PV UUID, VG/LV, LUKS UUID, and the sha256 of
#     known files on the ESP, /boot, the root LV and inside the LUKS volume).
# (e) The boot check can fail: the restored disk with its LUKS2 headers
#     zeroed boots (BIOS) to a marker without the luks line and with the LUKS
#     files unreadable (and the initramfs says the LUKS volume is missing).
# Measured on a quiet machine: 203 s (5 boots of 19-32 s, the guest 77 s; the
# lvm disk, when not cached, is built in ~25 s, one short guest included).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"
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

# ---- (b) the original lvm disk boots under UEFI and BIOS ----------------------------------
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v lvm >/dev/null || [ ! -f /usr/share/ovmf/OVMF.fd ] ||
        [ ! -f /usr/lib/grub/i386-pc/boot.img ] || [ ! -f /usr/lib/grub/x86_64-efi/kernel.img ]; then
        info "SKIP parts (b)-(e): qemu, lvm2, ovmf or GRUB's images missing"
        exit 0
fi
t=$SECONDS
bmr_make_disk lvm "$T/src.img"
bmr_marker_expected lvm >"$T/expected"
info "lvm disk ready in $((SECONDS - t)) s"
assert_eq $((256 * MiB)) "$(stat -c %s "$T/src.img")" "size of the lvm disk"
assert_eq 24 "$(wc -l <"$T/expected")" "lines of the expected lvm marker"
grep -q '^KURA-MARKER lvm part 4 pv-uuid=kuraPV-0000-0000-0000-0000-0000-000004 vg=kuravg lv=root$' "$T/expected" ||
        fail "the expected marker has no lvm line"
grep -q '^KURA-MARKER luks part 5 version=2 uuid=6b757261-6c75-6b73-0000-000000000005 open=kuracrypt$' "$T/expected" ||
        fail "the expected marker has no luks line"
sfdisk -d "$T/src.img" | grep -E '^(label|label-id|sector-size):|start=' | sed 's|^.*/src.img||' >"$T/layout"
cat >"$T/layout.want" <<'EOF'
label: gpt
label-id: 6B757261-6469-736B-6C76-6D0000000000
sector-size: 512
1 : start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid=6B757261-0000-4000-8000-000000000041, name="bios-boot"
2 : start=        4096, size=       65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6B757261-0000-4000-8000-000000000042, name="esp"
3 : start=       69632, size=      131072, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6B757261-0000-4000-8000-000000000043, name="boot"
4 : start=      200704, size=      245760, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, uuid=6B757261-0000-4000-8000-000000000044, name="lvm"
5 : start=      446464, size=       73728, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6B757261-0000-4000-8000-000000000045, name="crypt"
EOF
assert_file_eq "$T/layout.want" "$T/layout" "sfdisk -d of the lvm disk"
boot() { # FIRMWARE IMG WHAT
        local t0=$SECONDS rc
        bmr_boot "$1" "$2" "$T/marker.$3.$1"
        rc=$?
        info "$3 under $1: status $rc after $((SECONDS - t0)) s"
        return "$rc"
}
for fw in uefi bios; do
        boot $fw "$T/src.img" original || fail "the original lvm disk did not boot under $fw (console: $T/marker.original.$fw.console)"
        bmr_assert_marker "$T/expected" "$T/marker.original.$fw" "the original lvm disk under $fw"
done

# ---- (c) backup and bmr in one guest ----------------------------------------------------
VM=$SRCROOT/tests/vm/run.sh
mkdir -p "$T/share"
printf 'kura-test-disk-luks-key-0001' >"$T/disk.key" # make-test-disk.sh's LUKS_KEY
truncate -s $((256 * MiB)) "$T/dst.img"
t=$SECONDS
"$VM" --disk "$T/src.img" --disk "$T/dst.img" --share "$T/share" --module dm_crypt --timeout 480 \
        --log "$T/console.log" -- bash "$SRCROOT/tests/vm/guest-bmr-lvm-luks.sh" "$T/share" "$T/disk.key" \
        >"$T/guest.out" 2>"$T/guest.err"
rc=$?
cat "$T/guest.out" "$T/guest.err"
info "guest: exit $rc after $((SECONDS - t)) s"
assert_eq 0 "$rc" "exit status of the guest"
assert_contains "$T/console.log" "KURA-VM-RESULT: PASS" "console marker"
S=$T/share

# The backup: a volume per LV, LUKS header and plaintext; no raw copy of p4/p5.
J=$S/versions.json
vols=$(jq -r '.versions[0].volumes[].name' "$J" | sort | tr '\n' ' ')
assert_eq "disk0-boot disk0p1 disk0p2 disk0p3 disk0p4-root disk0p5-luks disk0p5-luks-header " "$vols" "volumes of the version"
jq -e '.versions[0].bmr == true' "$J" >/dev/null || fail "the version is not marked bmr"
p4='.versions[0].disks[0].partitions[3]'
p5='.versions[0].disks[0].partitions[4]'
assert_eq kuravg "$(jq -r "$p4.lvm.vg" "$J")" "manifest: lvm.vg"
assert_eq "$(cat "$S/pv_uuid")" "$(jq -r "$p4.lvm.pv_uuid" "$J")" "manifest: lvm.pv_uuid"
assert_eq kuraPV-0000-0000-0000-0000-0000-000004 "$(cat "$S/pv_uuid")" "PV UUID of the test disk"
assert_eq "root disk0p4-root" "$(jq -r "[$p4.lvm.lvs[] | .name + \" \" + .volume] | sort | join(\"|\")" "$J")" \
        "manifest: lvm.lvs"
jq -r "$p4.lvm.metadata" "$J" | grep -q "id = \"$(cat "$S/pv_uuid")\"" || fail "manifest: lvm.metadata lacks the PV UUID"
assert_eq null "$(jq -r "$p4.volume" "$J")" "manifest: p4 is not copied raw"
assert_eq 6b757261-6c75-6b73-0000-000000000005 "$(cat "$S/luks_uuid")" "LUKS UUID of the test disk"
assert_eq "$(cat "$S/luks_uuid")" "$(jq -r "$p5.luks.uuid" "$J")" "manifest: luks.uuid"
assert_eq "disk0p5-luks-header disk0p5-luks kuracrypt ext4" \
        "$(jq -r "$p5.luks | [.header_volume, .volume, .mapping_name, .fs] | join(\" \")" "$J")" "manifest: luks"
assert_eq 16777216 "$(jq -r "$p5.luks.header_size" "$J")" "manifest: LUKS2 header size"
assert_eq null "$(jq -r "$p5.volume" "$J")" "manifest: p5 is not copied raw"
assert_eq "root " "$(cat "$S/lvs.after-backup")" "LVs after the backup (no snapshot left)"

# The refusals.
assert_eq 1 "$(cat "$S/bmr-dup.rc")" "bmr with the VG kuravg visible: exit status"
assert_contains "$S/bmr-dup.out" "KURA-E-TARGET-MOUNTED" "bmr with the VG visible: error code"
assert_contains "$S/bmr-dup.out" "a volume group named kuravg already exists on this machine" "bmr with the VG visible: message"
assert_contains "$S/bmr-dup.out" "nothing was written" "bmr with the VG visible: refused before writing"
assert_eq untouched "$(cat "$S/bmr-dup.target")" "the target after the refused bmr (first MiB all zeros)"
assert_eq 4 "$(cat "$S/bmr-wrongkey.rc")" "bmr with a wrong key: exit status"
assert_contains "$S/bmr-wrongkey.out" "KURA-E-WRONG-PASSWORD" "bmr with a wrong key: error code"

# The restore, seen from the guest.
assert_eq "$(cat "$S/pv_uuid")" "$(cat "$S/pv_uuid.dst")" "PV UUID on the target"
assert_eq "$(cat "$S/lvs.src")" "$(cat "$S/lvs.dst")" "LVs and sizes on the target"
assert_eq "$(cat "$S/luks_uuid")" "$(cat "$S/luks_uuid.dst")" "LUKS UUID on the target"
assert_eq "root clean
luks clean" "$(cat "$S/fsck.dst")" "fsck of the restored root LV and LUKS filesystem"
assert_eq "" "$(cat "$S/dm.after-bmr")" "dm devices left by kura bmr"
assert_contains "$S/bmr.out" "LVM: physical volume" "bmr report: LVM"
assert_contains "$S/bmr.out" "LUKS: header of disk0p5-luks" "bmr report: LUKS"

# ---- (d) the restored disk: same layout, boots to the same marker ----------------------------
sfdisk -d "$T/dst.img" | grep -E '^(label|label-id|sector-size):|start=' | sed 's|^.*/dst.img||' >"$T/layout.dst"
assert_file_eq "$T/layout.want" "$T/layout.dst" "sfdisk -d of the restored disk"
for fw in uefi bios; do
        boot $fw "$T/dst.img" restored || fail "the restored lvm disk did not boot under $fw (console: $T/marker.restored.$fw.console)"
        bmr_assert_marker "$T/expected" "$T/marker.restored.$fw" "the restored lvm disk under $fw"
done

# ---- (e) the check can fail: the restored disk without its LUKS headers ------------------------
cp --sparse=always "$T/dst.img" "$T/broken.img"
read -r p5start p5size < <(bmr_part_range "$T/broken.img" 5)
assert_eq $((36 * MiB)) "$p5size" "size of the restored p5"
dd if=/dev/zero of="$T/broken.img" bs=1M seek=$((p5start / MiB)) count=16 conv=notrunc status=none
boot bios "$T/broken.img" broken || fail "the restored disk without LUKS headers did not reach the marker"
grep -v '^KURA-MARKER luks part' "$T/expected" |
        sed 's|^\(KURA-MARKER file luks:[^ ]*\) sha256=.*$|\1 unreadable (no filesystem UUID=6b757261-6c75-6b73-6673-000000000005)|' \
                >"$T/expected.broken"
bmr_assert_marker "$T/expected.broken" "$T/marker.broken.bios" "the restored disk without LUKS headers"
assert_contains "$T/marker.broken.bios.console" "KURA-INFO crypttab kuracrypt: no LUKS volume UUID=6b757261-6c75-6b73-0000-000000000005" \
        "the initramfs says the LUKS volume is missing"
cmp -s "$T/expected" "$T/marker.broken.bios" && fail "the broken disk printed the expected marker"
info "PASS: the lvm disk and its restore boot to the same marker under UEFI and BIOS"
