#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# A raw volume (no filesystem): random data, runs of zeros, a lone non-zero
# byte inside a zero chunk, and a size that is not a multiple of the chunk
# size.  Two backups (the second after rewriting ~1 %), restores must be
# byte-identical (sha256 of the whole device) to the source at each point in
# time, onto devices and into a new regular file; --name/--tag/--chunk-size
# show up in versions --json.
. "$(dirname "$0")/lib.sh"

MiB=1048576
SIZE=$((97 * MiB + 3 * 4096))   # not a multiple of 1 MiB: a partial last chunk

src=$(new_loop "$SIZE" src) || exit 1
put() { # OFFSET SEED LEN: random bytes at a byte offset
        rand_bytes "$2" "$3" | dd of="$src" bs=64K seek="$1" oflag=seek_bytes conv=notrunc status=none || fail "write $src at $1"
}
put 0 a $((10 * MiB))
put $((18 * MiB + 12345)) b $((7 * MiB + 999))
put $((30 * MiB)) c $((20 * MiB))
printf '\001' | dd of="$src" bs=1 seek=$((60 * MiB + 777)) conv=notrunc status=none
put $((64 * MiB - 4096)) d $((8 * MiB))
put $((SIZE - 5000)) e 5000                          # the partial last chunk
sync
[ -z "$(blkid -p -o value -s TYPE "$src" 2>/dev/null)" ] || fail "blkid found a filesystem on the raw pattern"
sha_v1=$(sha "$src")

kura_init_test_repo
s0=$(repo_size)
kok backup --volume "$src" --name rawvol --tag first --tag raw
s1=$(repo_size)

# ~1 %: 1 MiB across a chunk boundary, plus one byte.
put $((40 * MiB - 300000)) f $MiB
printf '\377' | dd of="$src" bs=1 seek=$((5 * MiB + 3)) conv=notrunc status=none
sync
sha_v2=$(sha "$src")
assert_ne "$sha_v1" "$sha_v2" "source sha after the change"

kok backup --volume "$src" --name rawvol --tag second
s2=$(repo_size)
g1=$((s1 - s0)) g2=$((s2 - s1))
info "repository growth: first backup $g1 bytes, second backup $g2 bytes"
[ "$g1" -gt $((40 * MiB)) ] || fail "first backup stored only $g1 bytes for ~45 MiB of random data"
assert_le "$g2" $((g1 / 10)) "second backup growth <= 10% of the first"

check_versions_json 2 "$src" ""
v1=$(jq -r '.versions[0].id' "$T/versions.json")
v2=$(jq -r '.versions[1].id' "$T/versions.json")
assert_eq rawvol "$(jq -r '.versions[0].volumes[0].name' "$T/versions.json")" "volume name from --name"
assert_eq '["first","raw"]' "$(jq -c '.versions[0].tags | sort' "$T/versions.json")" "tags of version 1"
assert_eq '["second"]' "$(jq -c '.versions[1].tags' "$T/versions.json")" "tags of version 2"
assert_eq "$MiB" "$(jq -r '.versions[0].volumes[0].chunk_size' "$T/versions.json")" "default chunk size"
assert_eq "$(hostname)" "$(jq -r '.versions[0].hostname' "$T/versions.json")" "hostname"

r1=$(new_loop "$SIZE" r1) || exit 1
r2=$(new_loop "$SIZE" r2) || exit 1
# A target with old non-zero contents: zero chunks must really be zeroed.
rand_bytes junk "$SIZE" | dd of="$r2" bs=1M status=none || fail "fill $r2"
kok restore --version "${v1:0:10}" --volume-to "$r1"
assert_eq "$sha_v1" "$(sha "$r1")" "sha256 of version 1 restored onto a device"
kok restore --version latest --volume-to "$r2"
assert_eq "$sha_v2" "$(sha "$r2")" "sha256 of version 2 (latest) restored onto a dirty device"
kok restore --version "$v1" --volume rawvol --volume-to "$T/v1.img"
assert_eq "$sha_v1" "$(sha "$T/v1.img")" "sha256 of version 1 restored into a new file"
# An existing larger file is truncated to the volume size.
rand_bytes junk2 $((SIZE + 3 * MiB)) >"$T/v2.img"
kok restore --version "$v2" --volume-to "$T/v2.img"
assert_eq "$sha_v2" "$(sha "$T/v2.img")" "sha256 of version 2 restored over an existing larger file"

# Another chunk size.
kok backup --volume "$src" --chunk-size 256K
kok versions --json
assert_eq 262144 "$(jq -r '.versions[2].volumes[0].chunk_size' "$T/out")" "chunk_size with --chunk-size 256K"
assert_eq $(((SIZE + 262143) / 262144)) "$(jq -r '.versions[2].volumes[0].chunks' "$T/out")" "chunks with 256 KiB chunks"
kok restore --version latest --volume-to "$T/v3.img"
assert_eq "$sha_v2" "$(sha "$T/v3.img")" "sha256 of the 256 KiB-chunk version"

kok check --read-data
