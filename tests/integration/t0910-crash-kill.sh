#!/bin/bash
# kura-test: timeout=1500
# SPDX-License-Identifier: GPL-2.0-or-later
# Real crashes: "kill -9" a backup and a prune at random moments.  After each
# kill: "check --read-data" passes, the earlier versions restore identical
# (sha256), no partial version is visible (every listed version restores to
# the image it was made from), and a backup (or prune) run afterwards
# completes and restores identical.
#
# The moments are a random fraction of the measured run time; the seed comes
# from $KURA_CRASH_SEED (else $RANDOM) and is printed first so that a failure
# can be replayed.  KURA_CRASH_KILLS (default 20) kills per scenario.
. "$(dirname "$0")/lib.sh"

SEED=${KURA_CRASH_SEED:-$RANDOM}
info "seed $SEED (replay with KURA_CRASH_SEED=$SEED)"
RANDOM=$SEED
NKILL=${KURA_CRASH_KILLS:-20}
# The sanitizer pass of scripts/test.sh repeats fewer kills (the normal pass did 20).
[ "${KURA_TEST_PASS:-}" = asan ] && NKILL=${KURA_CRASH_KILLS:-6}

MiB=1048576
SIZE=$((96 * MiB))
: >"$T/failures"
KILLS=0

# Repositories and images on a private tmpfs when possible (faster; a kill
# does not lose the page cache anyway).  KURA_CRASH_TMPFS=0: use $T on disk.
F=$T
if [ "${KURA_CRASH_TMPFS:-1}" = 1 ]; then
        do_mount -t tmpfs -o size=4G,mode=0700 kura-crash "$T/fast"
        F=$T/fast
fi

bad() {
        printf '[%s] FAIL: %s\n' "$TESTNAME" "$*" >&2
        echo "$*" >>"$T/failures"
}

kx() { # REPO ARGS: status in $KRC, output in $T/out, $T/err
        local repo=$1
        shift
        timeout -k 5 "$KURA_TIMEOUT" "$KURA" --repo "$repo" "$@" </dev/null >"$T/out" 2>"$T/err"
        KRC=$?
}

put() { # FILE OFFSET SEED LEN
        rand_bytes "$3" "$4" | dd of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc status=none || fail "write $1 at $2"
}

restore_sha() { # REPO VERSION
        rm -f "$F/restored.img"
        kx "$1" restore --version "$2" --volume-to "$F/restored.img"
        if [ "$KRC" != 0 ]; then
                echo "restore-failed-$KRC:$(head -c 300 "$T/err" | tr '\n' ' ')"
                return
        fi
        sha "$F/restored.img"
        rm -f "$F/restored.img"
}

now_ms() { date +%s%3N; }

# run_killed DELAY_MS CMD...: start CMD on one CPU, kill -9 it after DELAY_MS;
# $KRC is its exit status (137 when killed, 0 when it finished first).
run_killed() {
        local delay=$1
        shift
        taskset -c 0 "$@" </dev/null >"$T/kout" 2>"$T/kerr" &
        local pid=$!
        sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
        kill -9 "$pid" 2>/dev/null
        # (braces: keep bash's "Killed" notice out of the log)
        { wait "$pid"; } 2>/dev/null
        KRC=$?
}

# ---- images and the base repository -------------------------------------------

truncate -s "$SIZE" "$F/img"
put "$F/img" 0 k1a $((40 * MiB))
text_file 11 400000 | head -c $((8 * MiB)) | dd of="$F/img" bs=64K seek=$((48 * MiB)) oflag=seek_bytes conv=notrunc status=none
put "$F/img" $((56 * MiB)) k1b $((40 * MiB))
SHA1=$(sha "$F/img")
# Version 2 rewrites ~40 %.
put "$F/img" $((10 * MiB + 777)) k2a $((20 * MiB))
put "$F/img" $((60 * MiB)) k2b $((20 * MiB))
cp "$F/img" "$F/img2.ref"
SHA2=$(sha "$F/img2.ref")
put "$F/img" 0 k1a $((40 * MiB))   # back to version 1
put "$F/img" $((56 * MiB)) k1b $((40 * MiB))
[ "$(sha "$F/img")" = "$SHA1" ] || fail "could not rebuild image 1"

BASE=$F/base
mkdir -p "$BASE"
kura_init_test_repo "$BASE/repo"
KURA_CACHE_DIR=$BASE/cache kok --repo "$BASE/repo" backup --volume "$F/img"
kok --repo "$BASE/repo" versions --json
V1=$(jq -r '.versions[0].id' "$T/out")
cp "$F/img2.ref" "$F/img"

BACKUP=(backup --volume "$F/img" --threads 1)
W=$F/w
TB=
for run in 1 2; do
        rm -rf "$W" && cp -a "$BASE" "$W"
        t0=$(now_ms)
        KURA_CACHE_DIR=$W/cache taskset -c 0 "$KURA" --repo "$W/repo" "${BACKUP[@]}" </dev/null >"$T/out" 2>&1 || { cat "$T/out" >&2; fail "timing backup failed"; }
        t=$(($(now_ms) - t0))
        [ -z "$TB" ] || [ "$t" -lt "$TB" ] && TB=$t
done
info "a backup of version 2 takes $TB ms (one CPU, --threads 1)"
[ "$TB" -ge 200 ] || info "warning: the backup is fast ($TB ms): kill moments are coarse"

# ---- kill the backup ------------------------------------------------------------

nv2=0
for ((i = 1; i <= NKILL; i++)); do
        rm -rf "$W" && cp -a "$BASE" "$W"
        delay=$((TB * (RANDOM % 1000) / 1000))
        KURA_CACHE_DIR=$W/cache run_killed "$delay" "$KURA" --repo "$W/repo" "${BACKUP[@]}"
        rc=$KRC
        what="backup kill $i at ${delay}ms (exit $rc)"
        [ "$rc" = 137 ] || [ "$rc" = 0 ] || bad "$what: unexpected exit status: $(tail -c 300 "$T/kerr")"
        KILLS=$((KILLS + 1))
        kx "$W/repo" check --read-data
        if [ "$KRC" != 0 ]; then
                bad "$what: check --read-data exited $KRC: $(tail -c 500 "$T/err" | tr '\n' ' ') $(tail -c 500 "$T/out" | tr '\n' ' ')"
        fi
        kx "$W/repo" versions --json
        ids=$(jq -r '.versions[].id' "$T/out")
        grep -qx "$V1" <<<"$ids" || bad "$what: version 1 is gone"
        n=$(grep -c . <<<"$ids")
        if [ "$rc" = 0 ] && [ "$n" != 2 ]; then bad "$what: the backup finished but $n versions are listed"; fi
        [ "$n" -le 2 ] || bad "$what: $n versions listed"
        got=$(restore_sha "$W/repo" "$V1")
        [ "$got" = "$SHA1" ] || bad "$what: version 1 restores to $got"
        for id in $ids; do
                [ "$id" = "$V1" ] && continue
                nv2=$((nv2 + 1))
                got=$(restore_sha "$W/repo" "$id")
                [ "$got" = "$SHA2" ] || bad "$what: version $id (of the killed backup) restores to $got"
        done
        info "$what: check ok, $n versions, $(find "$W/repo" -name '.tmp-*' | wc -l) temporary files left"
        # A later backup completes (stale lock of the killed process included).
        KURA_CACHE_DIR=$W/cache kx "$W/repo" "${BACKUP[@]}"
        if [ "$KRC" != 0 ]; then
                bad "$what: the next backup exited $KRC: $(tail -c 300 "$T/err" | tr '\n' ' ')"
                continue
        fi
        got=$(restore_sha "$W/repo" latest)
        [ "$got" = "$SHA2" ] || bad "$what: the backup after the kill restores to $got"
        if [ $((i % 5)) = 0 ]; then
                kx "$W/repo" check --read-data
                [ "$KRC" = 0 ] || bad "$what: check after the next backup exited $KRC"
        fi
done
info "backup: $NKILL kills, the killed backup had completed its version in $nv2 of them"

# ---- kill the prune ---------------------------------------------------------------

# BASE3: v1 forgotten, v2 shares a pack with it, so prune deletes and repacks.
BASE3=$F/base3
rm -rf "$BASE3" && cp -a "$BASE" "$BASE3"
KURA_CACHE_DIR=$BASE3/cache kok --repo "$BASE3/repo" "${BACKUP[@]}"
kok --repo "$BASE3/repo" versions --json
V2=$(jq -r '.versions[1].id' "$T/out")
kok --repo "$BASE3/repo" forget "$V1"
TP=
for run in 1 2; do
        rm -rf "$W" && cp -a "$BASE3" "$W"
        t0=$(now_ms)
        taskset -c 0 "$KURA" --repo "$W/repo" prune </dev/null >"$T/out" 2>&1 || { cat "$T/out" >&2; fail "timing prune failed"; }
        t=$(($(now_ms) - t0))
        [ -z "$TP" ] || [ "$t" -lt "$TP" ] && TP=$t
done
info "a prune takes $TP ms: $(tr '\n' ' ' <"$T/out")"
for ((i = 1; i <= NKILL; i++)); do
        rm -rf "$W" && cp -a "$BASE3" "$W"
        delay=$((TP * (RANDOM % 1000) / 1000))
        run_killed "$delay" "$KURA" --repo "$W/repo" prune
        rc=$KRC
        what="prune kill $i at ${delay}ms (exit $rc)"
        [ "$rc" = 137 ] || [ "$rc" = 0 ] || bad "$what: unexpected exit status: $(tail -c 300 "$T/kerr")"
        KILLS=$((KILLS + 1))
        kx "$W/repo" check --read-data
        [ "$KRC" = 0 ] || bad "$what: check --read-data exited $KRC: $(tail -c 500 "$T/err" | tr '\n' ' ') $(tail -c 500 "$T/out" | tr '\n' ' ')"
        kx "$W/repo" versions --json
        ids=$(jq -r '.versions[].id' "$T/out")
        [ "$ids" = "$V2" ] || bad "$what: versions listed: $(echo $ids), expected only $V2"
        got=$(restore_sha "$W/repo" "$V2")
        [ "$got" = "$SHA2" ] || bad "$what: version 2 restores to $got"
        kx "$W/repo" prune
        [ "$KRC" = 0 ] || bad "$what: the prune after the kill exited $KRC: $(tail -c 300 "$T/err" | tr '\n' ' ')"
        info "$what: ok; prune afterwards: $(tr '\n' ' ' <"$T/out")"
        if [ $((i % 4)) = 0 ]; then
                kx "$W/repo" check --read-data
                [ "$KRC" = 0 ] || bad "$what: check after the completing prune exited $KRC"
                got=$(restore_sha "$W/repo" "$V2")
                [ "$got" = "$SHA2" ] || bad "$what: version 2 restores to $got after the completing prune"
        fi
done

info "kills tested: $KILLS (seed $SEED)"
if [ -s "$T/failures" ]; then
        echo "[$TESTNAME] $(wc -l <"$T/failures") failures (seed $SEED):" >&2
        head -50 "$T/failures" >&2
        fail "$(wc -l <"$T/failures") failures after kill -9"
fi
