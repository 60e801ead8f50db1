#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# forget + prune (the repository shrinks, the rest stays intact), locks (a
# stale lock of a dead process on this host is cleaned automatically, another
# host's lock blocks prune with exit 5 until unlock --all), and restore/check
# on a read-only mount of the repository (KURA-W-NO-LOCK).
. "$(dirname "$0")/lib.sh"

MiB=1048576
SIZE=$((24 * MiB))
vol=$(new_loop "$SIZE" vol) || exit 1
kura_init_test_repo

# v1: A; v2: B (nothing shared with v1); v3: A with the first 4 MiB replaced.
{ rand_bytes A $((20 * MiB)); head -c $((4 * MiB)) /dev/zero; } | dd of="$vol" bs=1M status=none
dd if="$vol" of="$T/v1.src" bs=1M status=none
kok backup --volume "$vol" --tag one
{ rand_bytes B $((20 * MiB)); head -c $((4 * MiB)) /dev/zero; } | dd of="$vol" bs=1M status=none
dd if="$vol" of="$T/v2.src" bs=1M status=none
kok backup --volume "$vol" --tag two
dd if="$T/v1.src" of="$vol" bs=1M status=none
rand_bytes C $((4 * MiB)) | dd of="$vol" bs=1M conv=notrunc status=none
dd if="$vol" of="$T/v3.src" bs=1M status=none
kok backup --volume "$vol" --tag three
version_ids >"$T/ids" || exit 1
assert_eq 3 "$(wc -l <"$T/ids")" "versions"
v1=$(sed -n 1p "$T/ids") v2=$(sed -n 2p "$T/ids") v3=$(sed -n 3p "$T/ids")
assert_eq '["two"]' "$(jq -c '.versions[1].tags' "$T/out")" "tags of the middle version"

# ---- forget the middle one, prune ---------------------------------------------------
size_before=$(repo_size)
kok forget "${v2:0:12}"
version_ids >"$T/ids2" || exit 1
printf '%s\n%s\n' "$v1" "$v3" >"$T/ids-want"
assert_file_eq "$T/ids-want" "$T/ids2" "versions after forget"
[ ! -e "$REPO/versions/$v2" ] || fail "the forgotten manifest is still there"
expect_fail 1 KURA-E-VERSION-NOT-FOUND restore --version "$v2" --volume-to "$T/x.img"
kok prune
size_after=$(repo_size)
info "repository size: $size_before bytes before forget+prune, $size_after after"
assert_le "$size_after" $((size_before - 15 * MiB)) "repository size after pruning ~20 MiB of unique data"
kok check --read-data
kok check --read-data --json
jq -e . "$T/out" >/dev/null || fail "check --json is not JSON"
for pair in "$v1 v1" "$v3 v3"; do
        read -r id name <<<"$pair"
        rm -f "$T/r.img"
        kok restore --version "$id" --volume-to "$T/r.img"
        assert_eq "$(sha "$T/$name.src")" "$(sha "$T/r.img")" "$name restored after prune"
done
# A second prune has nothing left to do and changes nothing.
tree_sha "$REPO" >"$T/before-prune2"
kok prune
tree_sha "$REPO" >"$T/after-prune2"
assert_file_eq "$T/before-prune2" "$T/after-prune2" "repository after a second prune"

# forget --prune in one go, and forget of an unknown ID.
kok backup --volume "$vol" --tag four
v4=$(version_ids | tail -1) || exit 1
kok forget "$v4" --prune
assert_eq 2 "$(version_ids | wc -l)" "versions after forget --prune"
expect_fail 1 KURA-E-VERSION-NOT-FOUND forget 0000000000000000000000
kok check --read-data

# ---- a stale lock of a dead process on this host ---------------------------------------
now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$REPO/locks"
printf '{"host":"%s","pid":999999,"exclusive":true,"time":"%s"}\n' "$(hostname)" "$now" >"$REPO/locks/stale-itest"
kok check
[ ! -e "$REPO/locks/stale-itest" ] || fail "the stale lock of a dead process on this host was not removed"
printf '{"host":"%s","pid":999999,"exclusive":true,"time":"%s"}\n' "$(hostname)" "$now" >"$REPO/locks/stale-itest2"
kok prune
[ ! -e "$REPO/locks/stale-itest2" ] || fail "the stale lock was not removed by prune"

# A lock of this host whose PID is alive but belongs to another process: written
# under an earlier boot (after a crash and reboot, PIDs are handed out again), or
# by a process that started at another time.  Both are gone; a lock of a live
# holder (this shell: same boot, same start time) is not.
bid=$(cat /proc/sys/kernel/random/boot_id)
start=$(awk '{ sub(/.*\) /, ""); print $20 }' /proc/$$/stat)
printf '{"host":"%s","pid":1,"exclusive":true,"time":"%s","boot_id":"00000000-0000-4000-8000-000000000000","start":1}\n' \
        "$(hostname)" "$now" >"$REPO/locks/oldboot-itest"
printf '{"host":"%s","pid":%d,"exclusive":true,"time":"%s","boot_id":"%s","start":%d}\n' \
        "$(hostname)" $$ "$now" "$bid" $((start + 1)) >"$REPO/locks/reused-itest"
kok backup --volume "$vol" --tag after-reboot
[ ! -e "$REPO/locks/oldboot-itest" ] || fail "a lock from an earlier boot (its PID alive now) was not removed"
[ ! -e "$REPO/locks/reused-itest" ] || fail "a lock whose PID was reused was not removed"
printf '{"host":"%s","pid":%d,"exclusive":true,"time":"%s","boot_id":"%s","start":%d}\n' \
        "$(hostname)" $$ "$now" "$bid" "$start" >"$REPO/locks/live-itest"
expect_fail 5 KURA-E-LOCKED backup --volume "$vol"
rm -f "$REPO/locks/live-itest"
kok versions --json
v5=$(jq -r '.versions[] | select(.tags | index("after-reboot")) | .id' "$T/out")
[ -n "$v5" ] || fail "the backup after removing the stale locks is not listed"
kok forget "$v5"
# The lock kura writes names its holder that way.
grep -q '"boot_id": *"'"$bid"'"' "$REPO"/locks/* 2>/dev/null && fail "a lock was left behind"

# ---- a lock held by another host -------------------------------------------------------
printf '{"host":"other-host.itest","pid":4242,"exclusive":true,"time":"%s"}\n' "$now" >"$REPO/locks/other-itest"
tree_sha "$REPO" >"$T/before-locked"
expect_fail 5 KURA-E-LOCKED prune
assert_contains "$T/err" other-host.itest "the LOCKED message names the holder"
expect_fail 5 KURA-E-LOCKED forget "$v1"
expect_fail 5 KURA-E-LOCKED backup --volume "$vol"
tree_sha "$REPO" >"$T/after-locked"
assert_file_eq "$T/before-locked" "$T/after-locked" "repository after commands refused by a lock"
[ -e "$REPO/locks/other-itest" ] || fail "a live lock of another host was removed"
# A plain unlock removes only stale locks: this one is fresh.
kok unlock
[ -e "$REPO/locks/other-itest" ] || fail "unlock (without --all) removed another host's fresh lock"
kok unlock --all
[ ! -e "$REPO/locks/other-itest" ] || fail "unlock --all did not remove the lock"
kok prune
[ -z "$(ls -A "$REPO/locks")" ] || fail "locks left behind: $(ls -A "$REPO/locks")"

# ---- a read-only repository ------------------------------------------------------------
mkdir -p "$T/ro"
mount --bind "$REPO" "$T/ro" || fail "bind mount"
MOUNTS+=("$T/ro")
mount -o remount,bind,ro "$T/ro" || fail "remount ro"
touch "$T/ro/x" 2>/dev/null && fail "the read-only bind mount is writable"
KURA_REPO=$T/ro kok restore --version "$v3" --volume-to "$T/ro-restore.img"
assert_contains "$T/err" KURA-W-NO-LOCK "restore from a read-only repository"
assert_eq "$(sha "$T/v3.src")" "$(sha "$T/ro-restore.img")" "restore from a read-only repository"
KURA_REPO=$T/ro kok check --read-data
assert_contains "$T/err" KURA-W-NO-LOCK "check of a read-only repository"
KURA_REPO=$T/ro kok versions
KURA_REPO=$T/ro expect_fail 1 KURA-E-REPO-READ-ONLY backup --volume "$vol"
do_umount "$T/ro"
