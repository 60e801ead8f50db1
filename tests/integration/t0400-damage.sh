#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Damage: two versions of different data; on fresh copies of the repository
#   A  one byte flipped inside a data blob of a pack only version 2 uses,
#   B  that pack truncated,
#   C  the index file of version 2 deleted,
#   D  one byte of version 2's manifest altered,
#   E  (encrypted repository) one byte flipped in the middle of the largest pack.
# For each: check --read-data exits 3 naming the damage and the affected
# versions only; the undamaged version still restores byte-identical; a
# damaged restore fails with exit 3 / KURA-E-DAMAGED and never writes wrong
# bytes (every chunk-sized block is either the source's or untouched); with
# --ignore-damage the rest is restored, exit 3, and the damaged ranges are
# listed on stderr (every byte outside them equals the source).
. "$(dirname "$0")/lib.sh"
require_tool xxd

MiB=1048576
SIZE=$((32 * MiB))
vol=$(new_loop "$SIZE" vol) || exit 1
write_state() { # SEED
        { rand_bytes "$1-a" $((20 * MiB)); head -c $((8 * MiB)) /dev/zero; rand_bytes "$1-b" $((4 * MiB)); } |
                dd of="$vol" bs=1M status=none || fail "write $vol"
        sync
}

# Two repositories get the same two versions: plain (pack headers readable) and encrypted.
P=$T/plain E=$T/enc
kok --repo "$P" init --no-encryption
kura_init_test_repo "$E"
write_state one
dd if="$vol" of="$T/v1.src" bs=1M status=none
kok --repo "$P" backup --volume "$vol"
kok --repo "$E" backup --volume "$vol"
find "$P/data" -type f | sort >"$T/packs1"
find "$P/index" -type f | sort >"$T/index1"
write_state two
dd if="$vol" of="$T/v2.src" bs=1M status=none
kok --repo "$P" backup --volume "$vol"
kok --repo "$E" backup --volume "$vol"
find "$P/data" -type f | sort >"$T/packs2"
find "$P/index" -type f | sort >"$T/index2"
comm -13 "$T/packs1" "$T/packs2" >"$T/packs-v2only"
comm -13 "$T/index1" "$T/index2" >"$T/index-v2only"
[ -s "$T/packs-v2only" ] || fail "the second backup wrote no new pack"
[ -s "$T/index-v2only" ] || fail "the second backup wrote no new index file"

KURA_REPO=$P version_ids >"$T/ids" || exit 1
v1=$(sed -n 1p "$T/ids") v2=$(sed -n 2p "$T/ids")
[ -n "$v1" ] && [ -n "$v2" ] || fail "expected two versions, got: $(cat "$T/ids")"
KURA_REPO=$E version_ids >"$T/ids-enc" || exit 1
e1=$(sed -n 1p "$T/ids-enc") e2=$(sed -n 2p "$T/ids-enc")
BS=$(jq -r '.versions[0].volumes[0].chunk_size' "$T/out")
[ "$BS" -gt 0 ] 2>/dev/null || fail "no chunk_size in versions --json"
block_hashes "$T/v1.src" "$BS" >"$T/h-v1"
block_hashes "$T/v2.src" "$BS" >"$T/h-v2"
rand_bytes prefill "$SIZE" >"$T/prefill.img"
block_hashes "$T/prefill.img" "$BS" >"$T/h-prefill"
head -c "$BS" /dev/zero | sha256sum | cut -d' ' -f1 >"$T/h-zero"
ZERO=$(cat "$T/h-zero")
NBLK=$(wc -l <"$T/h-v2")

# ---- helpers ----------------------------------------------------------------------

fresh_copy() { # NAME SRC-REPO: a pristine copy to damage
        rm -rf "$T/case-$1"
        cp -a "$2" "$T/case-$1" || fail "cp -a"
        echo "$T/case-$1"
}

# affected_by_check REPO: run check --read-data (text and --json), require exit
# 3; leave the text output in $T/check.txt and the affected version IDs (from
# the JSON problems' "versions") in $T/check-versions.
run_check_damaged() {
        local repo=$1
        KURA_REPO=$repo krun check --read-data
        cat "$T/out" "$T/err" >"$T/check.txt"
        if [ "$KRC" != 3 ]; then
                show_output check --read-data
                fail "check --read-data on a damaged repository exited $KRC, expected 3"
        fi
        assert_contains "$T/check.txt" KURA-E-DAMAGED "check output"
        grep -E '^(error|warning)' "$T/check.txt" | head -4 | cut -c1-220 | sed 's/^/    check: /'
        KURA_REPO=$repo krun check --read-data --json
        assert_eq 3 "$KRC" "exit status of check --read-data --json"
        jq -e . "$T/out" >/dev/null || { show_output check --json; fail "check --json output is not JSON"; }
        cp "$T/out" "$T/check.json"
        jq -r '.. | objects | select(has("versions")) | .versions | arrays | .[]' "$T/check.json" | sort -u >"$T/check-versions"
}

# names_version LIST-FILE ID: does the list hold ID (or a prefix of >= 8 digits of it)?
names_version() {
        local s
        while read -r s; do
                [ ${#s} -ge 8 ] && [ "${2#"$s"}" != "$2" ] && return 0
        done <"$1"
        return 1
}

assert_affected() { # ID...: exactly these versions are affected (check --json) and named in the text
        local id all=("$@")
        for id in "${all[@]}"; do
                names_version "$T/check-versions" "$id" || { cat "$T/check.json" >&2; fail "check --json does not list version $id as affected"; }
                assert_contains "$T/check.txt" "${id:0:8}" "check text output names affected version"
        done
        for id in "$v1" "$v2" "$e1" "$e2"; do
                [[ " ${all[*]} " == *" $id "* ]] && continue
                if names_version "$T/check-versions" "$id"; then
                        cat "$T/check.json" >&2
                        fail "check lists the undamaged version $id as affected"
                fi
        done
}

# restore_ok REPO ID SRC: restores byte-identical.
restore_ok() {
        rm -f "$T/ok.img"
        KURA_REPO=$1 kok restore --version "$2" --volume-to "$T/ok.img"
        assert_eq "$(sha "$3")" "$(sha "$T/ok.img")" "undamaged version $2 restored"
}

# no_wrong_blocks TARGET SRC-HASHES UNTOUCHED-HASHES: every block equals the
# source's or is untouched.  Prints the number of blocks restored.
no_wrong_blocks() {
        block_hashes "$1" "$BS" "$NBLK" >"$T/h-target"
        paste -d' ' "$T/h-target" "$2" "$3" | awk -v f="$1" -v z="$ZERO" '
                { if ($1 == $2) { if ($2 != $3) good++ } else if ($1 != $3 && !($1 == "missing" && $3 == z)) { bad++; printf "block %d of %s: wrong bytes\n", NR - 1, f > "/dev/stderr" } }
                END { print good + 0; exit bad > 0 }' || fail "restore wrote wrong bytes into $1"
}

# restore_damaged REPO ID SRC-HASHES: without --ignore-damage: exit 3,
# KURA-E-DAMAGED, no wrong bytes on a prefilled device or in a new file.
restore_damaged() {
        local repo=$1 id=$2 hs=$3 dev n
        dev=$(new_loop "$SIZE") || exit 1
        dd if="$T/prefill.img" of="$dev" bs=1M status=none
        KURA_REPO=$repo expect_fail 3 KURA-E-DAMAGED restore --version "$id" --volume-to "$dev"
        n=$(no_wrong_blocks "$dev" "$hs" "$T/h-prefill") || exit 1
        info "damaged restore onto a device: $n blocks written, none wrong"
        rm -f "$T/file-target.img"
        KURA_REPO=$repo expect_fail 3 KURA-E-DAMAGED restore --version "$id" --volume-to "$T/file-target.img"
        if [ -e "$T/file-target.img" ]; then
                yes "$ZERO" | head -n "$NBLK" >"$T/h-zeros"
                n=$(no_wrong_blocks "$T/file-target.img" "$hs" "$T/h-zeros") || exit 1
                info "damaged restore into a file: $n blocks written, none wrong"
        fi
        losetup -d "$dev"
}

# in_listed_range OFF: is [OFF, OFF+BS) inside a range printed on $T/err?
# Accepts the tokens "A+LEN", "A-B", "A..B" (decimal or 0x hex, B inclusive or exclusive).
in_listed_range() {
        local off=$1 tok a b sep
        while read -r tok; do
                if [[ "$tok" =~ ^(0x[0-9a-fA-F]+|[0-9]+)(\+|-|\.\.)(0x[0-9a-fA-F]+|[0-9]+)$ ]]; then
                        a=${BASH_REMATCH[1]} sep=${BASH_REMATCH[2]} b=${BASH_REMATCH[3]}
                        [[ $a == 0x* ]] || a=$((10#$a))
                        [[ $b == 0x* ]] || b=$((10#$b))
                        a=$((a)) b=$((b))
                        [ "$sep" = + ] && b=$((a + b - 1))
                        if [ "$a" -le "$off" ] && [ $((off + BS)) -le $((b + 1)) ]; then
                                return 0
                        fi
                fi
        done < <(grep -i -E 'damag' "$T/err" | grep -owE '(0x[0-9a-fA-F]+|[0-9]+)(\+|-|\.\.)(0x[0-9a-fA-F]+|[0-9]+)')
        return 1
}

# restore_ignore REPO ID SRC-IMG SRC-HASHES MIN-DAMAGED: --ignore-damage: exit 3,
# the damaged blocks are zero and listed on stderr, every other block equals the source.
restore_ignore() {
        local repo=$1 id=$2 src=$3 hs=$4 min=$5 dev i nd=0
        dev=$(new_loop "$SIZE") || exit 1
        dd if="$T/prefill.img" of="$dev" bs=1M status=none
        KURA_REPO=$repo krun restore --version "$id" --volume-to "$dev" --ignore-damage
        [ "$KRC" = 3 ] || { show_output restore --ignore-damage; fail "restore --ignore-damage exited $KRC, expected 3"; }
        block_hashes "$dev" "$BS" "$NBLK" >"$T/h-target"
        for ((i = 1; i <= NBLK; i++)); do
                t=$(sed -n "${i}p" "$T/h-target") s=$(sed -n "${i}p" "$hs")
                [ "$t" = "$s" ] && continue
                nd=$((nd + 1))
                [ "$t" = "$ZERO" ] || fail "block $((i - 1)) differs from the source and is not zero-filled"
                in_listed_range $(((i - 1) * BS)) || { show_output restore --ignore-damage; fail "block $((i - 1)) (offset $(((i - 1) * BS))) differs from the source but is not in a damaged range on stderr"; }
        done
        [ "$nd" -ge "$min" ] || fail "--ignore-damage: only $nd blocks differ, expected at least $min"
        info "restore --ignore-damage: $nd damaged blocks zero-filled and listed, all others identical"
        losetup -d "$dev"
}

# ---- A: one byte flipped inside a data blob of version 2's pack ----------------------
info "case A: flipped byte in a data blob"
R=$(fresh_copy A "$P") || exit 1
pack=$(xargs ls -S <"$T/packs-v2only" | head -1)
pack=$R/${pack#"$P"/}
pack_entries "$pack" >"$T/entries" || exit 1
[ -s "$T/entries" ] || fail "no entries in $pack"
read -r _ chunk boff blen < <(awk '$1 == 0' "$T/entries" | sort -k4,4nr | head -1)
[ -n "$chunk" ] || fail "no data blob in $pack"
flip_byte "$pack" $((boff + blen / 2))
run_check_damaged "$R"
assert_contains "$T/check.txt" "$(basename "$pack")" "check names the damaged pack"
assert_contains "$T/check.txt" "$chunk" "check names the damaged chunk"
assert_affected "$v2"
restore_ok "$R" "$v1" "$T/v1.src"
restore_damaged "$R" "$v2" "$T/h-v2"
restore_ignore "$R" "$v2" "$T/v2.src" "$T/h-v2" 1
# Exactly one chunk holds the flipped byte.
assert_eq 1 "$(paste -d' ' "$T/h-target" "$T/h-v2" | awk '$1 != $2' | wc -l)" "blocks lost to one flipped byte"

# ---- B: the pack truncated ---------------------------------------------------------
info "case B: truncated pack"
R=$(fresh_copy B "$P") || exit 1
pack=$R/${pack#"$T/case-A"/}
cut=$(($(stat -c %s "$pack") * 6 / 10))
truncate -s "$cut" "$pack"
run_check_damaged "$R"
assert_contains "$T/check.txt" "$(basename "$pack" | cut -c1-12)" "check names the truncated pack"
assert_affected "$v2"
restore_ok "$R" "$v1" "$T/v1.src"
restore_damaged "$R" "$v2" "$T/h-v2"
# Blobs that end beyond the cut are lost (the entries were read before the cut).
lost_data=$(awk -v c="$cut" '$1 == 0 && $3 + $4 > c' "$T/entries" | wc -l)
lost_lists=$(awk -v c="$cut" '$1 == 1 && $3 + $4 > c' "$T/entries" | wc -l)
info "truncation at $cut loses $lost_data data blobs and $lost_lists list blobs"
if [ "$lost_lists" = 0 ]; then
        restore_ignore "$R" "$v2" "$T/v2.src" "$T/h-v2" 1
else
        # The chunk list itself is gone: nothing can be restored, and nothing wrong may be written.
        dev=$(new_loop "$SIZE") || exit 1
        dd if="$T/prefill.img" of="$dev" bs=1M status=none
        KURA_REPO=$R expect_fail 3 KURA-E-DAMAGED restore --version "$v2" --volume-to "$dev" --ignore-damage
        no_wrong_blocks "$dev" "$T/h-v2" "$T/h-prefill" >/dev/null || exit 1
fi

# ---- C: version 2's index file deleted ------------------------------------------------
info "case C: deleted index file"
R=$(fresh_copy C "$P") || exit 1
while read -r f; do rm -f "$R/${f#"$P"/}"; done <"$T/index-v2only"
run_check_damaged "$R"
assert_contains "$T/check.txt" "$(basename "$pack")" "check names the pack whose index file is gone"
assert_affected "$v2"
restore_ok "$R" "$v1" "$T/v1.src"
restore_damaged "$R" "$v2" "$T/h-v2"

# ---- D: a byte of version 2's manifest altered ---------------------------------------
info "case D: altered manifest"
R=$(fresh_copy D "$P") || exit 1
m=$R/versions/$v2
[ -f "$m" ] || fail "no manifest file $m"
flip_byte "$m" $(($(stat -c %s "$m") / 2))
run_check_damaged "$R"
assert_contains "$T/check.txt" "${v2:0:12}" "check names the damaged manifest"
restore_ok "$R" "$v1" "$T/v1.src"
rm -f "$T/file-target.img"
KURA_REPO=$R expect_fail 3 KURA-E-DAMAGED restore --version "$v2" --volume-to "$T/file-target.img"
[ ! -s "$T/file-target.img" ] || fail "restore of a damaged manifest wrote data"

# ---- E: encrypted, one byte in the middle of the largest pack --------------------------
info "case E: encrypted repository, flipped byte in the middle of the largest pack"
R=$(fresh_copy E "$E") || exit 1
pack=$(find "$R/data" -type f -printf '%s %p\n' | sort -k1,1nr | head -1 | cut -d' ' -f2)
flip_byte "$pack" $(($(stat -c %s "$pack") / 2))
run_check_damaged "$R"
assert_contains "$T/check.txt" "$(basename "$pack" | cut -c1-12)" "check names the damaged pack"
damaged=()
for pair in "$e1 $T/v1.src $T/h-v1" "$e2 $T/v2.src $T/h-v2"; do
        read -r id src hs <<<"$pair"
        rm -f "$T/e.img"
        KURA_REPO=$R krun restore --version "$id" --volume-to "$T/e.img"
        if [ "$KRC" = 0 ]; then
                assert_eq "$(sha "$src")" "$(sha "$T/e.img")" "encrypted: version $id restored with exit 0"
        else
                [ "$KRC" = 3 ] || { show_output restore; fail "encrypted: restore of $id exited $KRC"; }
                assert_contains "$T/err" KURA-E-DAMAGED
                damaged+=("$id")
                restore_damaged "$R" "$id" "$hs"
                restore_ignore "$R" "$id" "$src" "$hs" 1
        fi
done
[ "${#damaged[@]}" -ge 1 ] || fail "encrypted: a flipped byte in the largest pack damaged no version"
assert_affected "${damaged[@]}"
# The pristine repositories are still clean.
KURA_REPO=$P kok check --read-data
KURA_REPO=$E kok check --read-data
