#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Incremental backups and the fingerprint cache: an unchanged volume adds no
# bytes (bytes_new == 0) and gets the previous version as parent; --rehash
# gives the same chunk lists; a change is always seen (also after the cache
# is deleted, and when the cache is stale); restores are byte-identical.
. "$(dirname "$0")/lib.sh"
require_tool mkfs.ext4

MiB=1048576
SIZE=$((48 * MiB))
vol=$(new_loop "$SIZE" vol) || exit 1
{ rand_bytes base $((16 * MiB)); head -c $((8 * MiB)) /dev/zero; rand_bytes base2 $((24 * MiB)); } |
        dd of="$vol" bs=1M status=none
sha0=$(sha "$vol")
kura_init_test_repo

kok backup --volume "$vol"
kok backup --volume "$vol"
kok versions --json
cp "$T/out" "$T/v.json"
assert_eq 2 "$(jq '.versions | length' "$T/v.json")" "versions"
v1=$(jq -r '.versions[0].id' "$T/v.json") v2=$(jq -r '.versions[1].id' "$T/v.json")
assert_eq null "$(jq -r '.versions[0].parent' "$T/v.json")" "parent of the first version"
assert_eq "$v1" "$(jq -r '.versions[1].parent' "$T/v.json")" "parent of the second version"
assert_eq 0 "$(jq -r '.versions[1].bytes_new' "$T/v.json")" "bytes_new of an unchanged volume"
[ "$(jq -r '.versions[0].bytes_new' "$T/v.json")" -gt $((30 * MiB)) ] ||
        fail "bytes_new of the first backup: $(jq -r '.versions[0].bytes_new' "$T/v.json") (expected > 30 MiB)"
[ "$(jq -r '.versions[0].bytes_stored' "$T/v.json")" -gt $((30 * MiB)) ] ||
        fail "bytes_stored of the first backup: $(jq -r '.versions[0].bytes_stored' "$T/v.json")"
info "bytes_read: first $(jq -r '.versions[0].bytes_read' "$T/v.json"), second $(jq -r '.versions[1].bytes_read' "$T/v.json")"
s2=$(repo_size)

# --rehash: the same chunk lists, nothing new.
kok backup --volume "$vol" --rehash
kok versions --json
cp "$T/out" "$T/v.json"
v3=$(jq -r '.versions[2].id' "$T/v.json")
assert_eq 0 "$(jq -r '.versions[2].bytes_new' "$T/v.json")" "bytes_new of a --rehash backup of an unchanged volume"
assert_eq "$v2" "$(jq -r '.versions[2].parent' "$T/v.json")" "parent of the --rehash version"
assert_eq "$SIZE" "$(jq -r '.versions[2].bytes_read' "$T/v.json")" "bytes_read of --rehash (reads the whole raw volume)"
if jq -e '.versions[0].volumes[0].lists' "$T/v.json" >/dev/null 2>&1; then
        assert_eq "$(jq -c '.versions[1].volumes[0].lists' "$T/v.json")" "$(jq -c '.versions[2].volumes[0].lists' "$T/v.json")" "chunk lists of cached and --rehash versions"
fi
s3=$(repo_size)
assert_le $((s3 - s2)) $((64 * 1024)) "repository growth of a --rehash backup of an unchanged volume"
for id in "$v1" "$v2" "$v3"; do
        rm -f "$T/r.img"
        kok restore --version "$id" --volume-to "$T/r.img"
        assert_eq "$sha0" "$(sha "$T/r.img")" "restore of $id"
done

# A change the cache must not hide: same size, same position, new bytes.
rand_bytes change1 $((MiB / 2)) | dd of="$vol" bs=64K seek=$((3 * MiB + 4096)) oflag=seek_bytes conv=notrunc status=none
printf 'X' | dd of="$vol" bs=1 seek=$((40 * MiB + 17)) conv=notrunc status=none
sync
sha1=$(sha "$vol")
kok backup --volume "$vol"
kok versions --json
cp "$T/out" "$T/v.json"
v4=$(jq -r '.versions[3].id' "$T/v.json")
bn=$(jq -r '.versions[3].bytes_new' "$T/v.json")
[ "$bn" -gt 0 ] && [ "$bn" -le $((3 * MiB)) ] || fail "bytes_new after changing 2 chunks: $bn (expected 1..3 MiB)"
rm -f "$T/r.img"
kok restore --version "$v4" --volume-to "$T/r.img"
assert_eq "$sha1" "$(sha "$T/r.img")" "restore after a change"

# Delete the cache: the next backup still works and still sees changes.
rm -rf "$KURA_CACHE_DIR"
rand_bytes change2 $MiB | dd of="$vol" bs=64K seek=$((20 * MiB)) oflag=seek_bytes conv=notrunc status=none
sync
sha2=$(sha "$vol")
kok backup --volume "$vol"
kok versions --json
cp "$T/out" "$T/v.json"
v5=$(jq -r '.versions[4].id' "$T/v.json")
assert_eq "$v4" "$(jq -r '.versions[4].parent' "$T/v.json")" "parent after deleting the cache"
bn=$(jq -r '.versions[4].bytes_new' "$T/v.json")
[ "$bn" -gt 0 ] && [ "$bn" -le $((2 * MiB)) ] || fail "bytes_new after deleting the cache and changing 1 chunk: $bn"
rm -f "$T/r.img"
kok restore --version "$v5" --volume-to "$T/r.img"
assert_eq "$sha2" "$(sha "$T/r.img")" "restore after deleting the cache"

# A stale cache: go back to an older state of the volume (content the cache
# saw before), then back up again: must restore to the current bytes.
dd if="$T/r.img" of="$T/state2.img" bs=1M status=none
rand_bytes base $((16 * MiB)) | dd of="$vol" bs=1M conv=notrunc status=none
sync
sha3=$(sha "$vol")
kok backup --volume "$vol"
rm -f "$T/r.img"
kok restore --version latest --volume-to "$T/r.img"
assert_eq "$sha3" "$(sha "$T/r.img")" "restore after reverting part of the volume"

# An ext4 volume: unchanged second backup adds nothing either (used-block map path).
ext=$(new_loop 64M ext) || exit 1
mkfs.ext4 -q -F "$ext" || fail mkfs
do_mount "$ext" "$T/ext"
fill_tree "$T/ext" 7 12
do_umount "$T/ext"
kok backup --volume "$ext"
kok backup --volume "$ext"
kok versions --json
assert_eq 0 "$(jq -r '.versions[-1].bytes_new' "$T/out")" "bytes_new of an unchanged ext4 volume"
assert_eq "$(jq -r '.versions[-2].id' "$T/out")" "$(jq -r '.versions[-1].parent' "$T/out")" "parent of the second ext4 version"
kok check --read-data
