#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura backup --snapshot reflink of an ext4 image file on reflink xfs: the
# backup reads an instant clone (FICLONE) in .kura-shadows/ next to the image;
# a successful backup keeps its clone as the base of the next one (one
# retained shadow per image, the older one deleted); the next backup restores
# to exactly the image as it was; kura shadows create/list/delete and
# kura shadowstorage list work on the image.  The same with the image mounted
# (its filesystem frozen for the instant of the clone), which must stay writable.
. "$(dirname "$0")/lib.sh"
require_tool mkfs.ext4 mkfs.xfs e2fsck

kura backup --help >"$T/backup-help" 2>&1
grep -q -- '--snapshot' "$T/backup-help" || skip "kura backup has no --snapshot option yet"

# The loop device of an image on the xfs keeps that xfs busy: lib.sh would
# only lazy-unmount it and leave both loop devices behind.  Detach it first.
inner_cleanup() {
        local rc=$?
        if [ -n "${inner:-}" ]; then
                umount "$T/inner" 2>/dev/null
                losetup -d "$inner" 2>/dev/null
        fi
        (exit "$rc") # _cleanup reads the test's status from $?
        _cleanup
}
trap inner_cleanup EXIT

writable() {
        timeout -k 2 10 sh -c "echo probe >'$1/.probe' && sync -f '$1/.probe' && rm -f '$1/.probe'" ||
                fail "$1 does not take a write: left frozen?"
}

x=$(new_loop 320M xfs) || exit 1
mkfs.xfs -q -f -m reflink=1 "$x" || fail "mkfs.xfs reflink"
do_mount "$x" "$T/xfs"
img=$T/xfs/disk.img
truncate -s 64M "$img"
mkfs.ext4 -q -F "$img" || fail "mkfs image"
inner=$(losetup -f --show "$img") || fail losetup
echo "$inner" >>"$T/loops"
do_mount "$inner" "$T/inner"
fill_tree "$T/inner" 7 4
do_umount "$T/inner"
losetup -d "$inner"

kura_init_test_repo
retained() { # prints the retained reflink shadows as "id device"
        kok shadows list --json
        jq -r '.shadows[] | select(.retained_for_backup and .provider == "reflink") | "\(.id) \(.device)"' "$T/out"
}

# ---- first backup: no base yet, a clone is retained ----------------------------
sha1=$(sha "$img")
kok backup --volume "$img" --snapshot reflink --writers none
assert_eq "$sha1" "$(sha "$img")" "the image is unchanged by the backup"
retained >"$T/ret1"
assert_eq 1 "$(wc -l <"$T/ret1")" "retained shadows after the first backup"
read -r id1 dev1 <"$T/ret1"
case $dev1 in "$T/xfs/.kura-shadows/"*) ;; *) fail "clone not next to the image: $dev1" ;; esac
[ -f "$dev1" ] || fail "retained clone $dev1 missing"
assert_eq "$sha1" "$(sha "$dev1")" "the retained clone equals the image"

# ---- change the image, back up again --------------------------------------------
inner=$(losetup -f --show "$img") || fail losetup
echo "$inner" >>"$T/loops"
do_mount "$inner" "$T/inner"
change_percent "$T/inner" 5 11
echo "new file" >"$T/inner/new.txt"
tree_manifest "$T/inner" >"$T/m2" || fail manifest
do_umount "$T/inner"
losetup -d "$inner"
sha2=$(sha "$img")
assert_ne "$sha1" "$sha2" "the image changed"
kok backup --volume "$img" --snapshot reflink --writers none
retained >"$T/ret2"
assert_eq 1 "$(wc -l <"$T/ret2")" "retained shadows after the second backup"
read -r id2 dev2 <"$T/ret2"
assert_ne "$id1" "$id2" "the base moved to the new clone"
[ ! -e "$dev1" ] || fail "the older retained clone $dev1 was not deleted"
assert_eq "$sha2" "$(sha "$dev2")" "the new retained clone equals the image"
kok restore --version latest --volume-to "$T/r2.img"
assert_eq "$sha2" "$(sha "$T/r2.img")" "restore of the incremental reflink backup"
kok restore --version "$(version_ids | head -1)" --volume-to "$T/r1.img"
assert_eq "$sha1" "$(sha "$T/r1.img")" "restore of the first reflink backup"

# ---- the image mounted and written to during the backup ----------------------------
inner=$(losetup -f --show "$img") || fail losetup
echo "$inner" >>"$T/loops"
do_mount "$inner" "$T/inner"
(while :; do date >>"$T/inner/.busy"; sleep 0.05; done) &
busy=$!
kok backup --volume "$img" --snapshot reflink --writers none
kill "$busy"
wait "$busy" 2>/dev/null
writable "$T/inner"
writable "$T/xfs"
kok restore --version latest --volume-to "$T/r3.img"
fs_fsck ext4 "$T/r3.img"

# ---- shadow storage, persistent shadows ---------------------------------------------
kok shadowstorage list "$img" --json
assert_eq reflink "$(jq -r '.shadowstorage[0].provider' "$T/out")" "shadow storage provider of the image"
[ "$(jq -r '.shadowstorage[0].maximum' "$T/out")" -gt 0 ] || fail "shadow storage maximum"
kok shadows create --provider reflink "$img" --json
set=$(jq -r .set_id "$T/out")
kok shadows list --json
dev=$(jq -r --arg s "$set" '.shadows[] | select(.set_id == $s) | .device' "$T/out")
[ -f "$dev" ] || fail "persistent shadow $dev missing"
assert_eq false "$(jq -r --arg s "$set" '.shadows[] | select(.set_id == $s) | .retained_for_backup' "$T/out")" \
        "persistent shadow is not retained_for_backup"
e2fsck -fn "$dev" >/dev/null 2>&1 || fail "the persistent shadow of a mounted image is not a clean filesystem"
writable "$T/inner"
kok shadows delete "$set"
[ ! -e "$dev" ] || fail "shadows delete left $dev"
expect_fail 1 KURA-E-SHADOW-NOT-FOUND shadows delete "$set"
# an image on ext4 cannot be cloned
e4=$(new_loop 64M e4) || exit 1
fs_mkfs ext4 "$e4"
do_mount "$e4" "$T/e4"
truncate -s 8M "$T/e4/x.img"
expect_fail 1 KURA-E-NO-PROVIDER shadows create --provider reflink "$T/e4/x.img"
writable "$T/e4"
writable "$T/inner"

# ---- change tracking: an incremental reads only the chunks the test wrote ----------
# A raw image (every byte in use) on the reflink xfs: after the first backup the
# retained clone is the base; the next backup must read exactly the chunks that
# cover the offsets written in between (kura's own bytes_read), and restore identical.
raw="$T/xfs/raw.img"
rand_bytes ct-base $((32 * 1024 * 1024)) > "$raw" || fail "make $raw"
kok backup --volume "$raw" --snapshot reflink --json
assert_eq $((32 * 1024 * 1024)) "$(jq -r .bytes_read "$T/out")" "first reflink backup reads everything"
# two 4 KiB writes in chunks 3 and 17, one 8 KiB write across the 9/10 chunk boundary
for off in $((3 * 1048576 + 4096)) $((17 * 1048576 + 500 * 1024)) $((10 * 1048576 - 4096)); do
        rand_bytes "ct-$off" 8192 | dd of="$raw" bs=8192 seek="$off" oflag=seek_bytes conv=notrunc status=none
done
kok backup --volume "$raw" --snapshot reflink --json
# chunks 3, 9, 10, 17 (and at most one more per write for extent rounding)
read2=$(jq -r .bytes_read "$T/out")
[ "$read2" -ge $((4 * 1048576)) ] && [ "$read2" -le $((7 * 1048576)) ] ||
        fail "incremental with change tracking read $read2 bytes, expected the 4 chunks written (4-7 MiB)"
info "change tracking: the incremental read $read2 bytes of 32 MiB"
kok restore --version latest --volume raw.img --volume-to "$T/raw-restored.img"
cmp "$raw" "$T/raw-restored.img" || fail "restore after a change-tracked incremental differs"
writable "$T/xfs"
