#!/bin/bash
# kura-test: timeout=1500
# SPDX-License-Identifier: GPL-2.0-or-later
# Simulated power loss (lib/common/kio.c, KURA_FAULT_CRASH_AT) at many points
# of a backup, of "forget --prune" and of "prune", on an unencrypted and an
# encrypted repository.  After every crash (exit 86): "check --read-data"
# passes, version 1 is listed, no partial version is visible, every listed
# version restores byte-identical (sha256) to the image it was made from, and
# a following backup or prune completes.
#
# Environment: KURA (binary), KURA_CRASH_MAX_POINTS (default 40: crash points
# per scenario when there are more than 60 events), KURA_CRASH_KEEP=1 keeps the
# repository of the first failing crash point under /tmp.
. "$(dirname "$0")/lib.sh"

MiB=1048576
SIZE=$((32 * MiB))
MAXPTS=${KURA_CRASH_MAX_POINTS:-40}
TOTAL_POINTS=0
ENOSPC_POINTS=0

# The repositories and images live on a private tmpfs when possible: fsync is
# free there, and the power loss is simulated by kio anyway
# (KURA_CRASH_TMPFS=0: use $T on disk).
F=$T
if [ "${KURA_CRASH_TMPFS:-1}" = 1 ]; then
        do_mount -t tmpfs -o size=3G,mode=0700 kura-crash "$T/fast"
        F=$T/fast
fi
: >"$T/failures"

# A failure is recorded and the test goes on, so one run reports every bad
# crash point; the test fails at the end.
bad() {
        printf '[%s] FAIL: %s\n' "$TESTNAME" "$*" >&2
        echo "$*" >>"$T/failures"
        if [ "${KURA_CRASH_KEEP:-0}" = 1 ] && [ ! -e "$T/kept" ] && [ -d "$W/repo" ]; then
                local keep
                keep=$(mktemp -d /tmp/kura-crash-keep.XXXXXX)
                cp -a "$W" "$keep/" && echo "$keep" >"$T/kept"
                echo "[$TESTNAME] kept the failing state in $keep" >&2
        fi
}

# kx REPO ARGS: run kura on REPO with the work cache; status in $KRC.
kx() {
        local repo=$1
        shift
        timeout -k 5 "$KURA_TIMEOUT" "$KURA" --repo "$repo" "$@" </dev/null >"$T/out" 2>"$T/err"
        KRC=$?
}

# crash_points E: every event if E <= 60, else MAXPTS points spread evenly,
# including the first and the last five.
crash_points() {
        local e=$1 i
        # Under the sanitizer build (the second pass of scripts/test.sh) every
        # point has already been tested with the normal build: spread fewer.
        if [ "${KURA_TEST_PASS:-}" = asan ] && [ "$e" -gt 12 ]; then
                { seq 1 3; seq $((e - 2)) "$e"; for ((i = 1; i <= 6; i++)); do echo $((3 + i * (e - 6) / 7)); done; } | sort -nu
                return
        fi
        if [ "$e" -le 60 ]; then
                seq 1 "$e"
                return
        fi
        {
                seq 1 5
                seq $((e - 4)) "$e"
                for ((i = 1; i <= MAXPTS - 10; i++)); do
                        echo $((5 + i * (e - 10) / (MAXPTS - 9)))
                done
        } | sort -nu
}

put() { # FILE OFFSET SEED LEN
        rand_bytes "$3" "$4" | dd of="$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc status=none || fail "write $1 at $2"
}

# The two images: mixed random, text, zeros, repeated data.
make_images() {
        truncate -s "$SIZE" "$F/img"
        put "$F/img" 0 v1a $((8 * MiB))
        text_file 7 120000 | head -c $((3 * MiB)) | dd of="$F/img" bs=64K seek=$((12 * MiB)) oflag=seek_bytes conv=notrunc status=none
        put "$F/img" $((16 * MiB)) v1b $((8 * MiB + 4321))
        dd if="$F/img" of="$F/img" bs=1M count=2 skip=0 seek=26 conv=notrunc status=none   # repeated chunks
        put "$F/img" $((29 * MiB)) v1c $((2 * MiB))
        cp "$F/img" "$F/img1.ref"
        SHA1=$(sha "$F/img1.ref")
        # Version 2: ~20 % of the chunks change, a zero chunk gets data, a data
        # chunk becomes zero.
        put "$F/img" $((3 * MiB + 12345)) v2a $((2 * MiB))
        put "$F/img" $((9 * MiB)) v2b 4096
        put "$F/img" $((17 * MiB)) v2c $((3 * MiB))
        dd if=/dev/zero of="$F/img" bs=1M count=1 seek=21 conv=notrunc status=none
        cp "$F/img" "$F/img2.ref"
        SHA2=$(sha "$F/img2.ref")
        [ "$SHA1" != "$SHA2" ] || fail "the two images are identical"
}

# restore_sha REPO VERSION: sha256 of the restored volume ("" on failure).
restore_sha() {
        rm -f "$F/restored.img"
        kx "$1" restore --version "$2" --volume-to "$F/restored.img"
        if [ "$KRC" != 0 ]; then
                echo "restore-failed-$KRC:$(head -c 300 "$T/err" | tr '\n' ' ')"
                return
        fi
        sha "$F/restored.img"
        rm -f "$F/restored.img"
}

# verify_repo WHAT REPO ALLOWED...: check --read-data passes; every listed
# version is one of the allowed "id=sha" pairs or (id "new") a new version
# restoring to SHA2; the required ones (prefixed "!") are present.
# Prints the number of versions.
verify_repo() {
        local what=$1 repo=$2
        shift 2
        kx "$repo" check --read-data
        if [ "$KRC" != 0 ]; then
                bad "$what: check --read-data exited $KRC: $(tail -c 600 "$T/err" | tr '\n' ' ') $(tail -c 600 "$T/out" | tr '\n' ' ')"
                return
        fi
        cp "$T/out" "$T/check.out"
        kx "$repo" versions --json
        if [ "$KRC" != 0 ]; then
                bad "$what: versions --json exited $KRC: $(head -c 300 "$T/err")"
                return
        fi
        local ids id spec want req got n=0
        ids=$(jq -r '.versions[].id' "$T/out") || { bad "$what: versions --json is not JSON"; return; }
        for spec in "$@"; do
                case $spec in
                '!'*)
                        req=${spec#!}
                        grep -qx "${req%%=*}" <<<"$ids" || bad "$what: version ${req%%=*} is missing"
                        ;;
                esac
        done
        for id in $ids; do
                n=$((n + 1))
                want=
                for spec in "$@"; do
                        spec=${spec#!}
                        [ "${spec%%=*}" = "$id" ] && want=${spec#*=}
                done
                if [ -z "$want" ]; then
                        for spec in "$@"; do
                                [ "${spec%%=*}" = new ] && want=${spec#*=}
                        done
                fi
                if [ -z "$want" ]; then
                        bad "$what: unexpected version $id listed"
                        continue
                fi
                got=$(restore_sha "$repo" "$id")
                [ "$got" = "$want" ] || bad "$what: version $id restores to $got, expected $want"
        done
        echo "$n" >"$T/nversions"
}

# ---- one repository kind -------------------------------------------------------

run_kind() {
        local kind=$1
        local base=$F/base-$kind e k pts rc nv n2 tmpleft got
        shift
        info "== $kind repository"
        rm -rf "$base"
        mkdir -p "$base"
        kok --repo "$base/repo" init "$@"
        cp "$F/img1.ref" "$F/img"
        KURA_CACHE_DIR=$base/cache kok --repo "$base/repo" backup --volume "$F/img"
        kok --repo "$base/repo" versions --json
        local v1
        v1=$(jq -r '.versions[0].id' "$T/out")
        cp "$F/img2.ref" "$F/img"

        # -- the second backup --------------------------------------------------
        W=$F/w
        rm -rf "$W" && cp -a "$base" "$W"
        rm -f "$T/count"
        KURA_CACHE_DIR=$W/cache KURA_FAULT_COUNT=$T/count kx "$W/repo" backup --volume "$F/img"
        [ "$KRC" = 0 ] || { cat "$T/err" >&2; fail "$kind: counting backup exited $KRC"; }
        e=$(cat "$T/count")
        [ "$e" -gt 5 ] || fail "$kind: only $e I/O events in a backup: is kio in use?"
        pts=$(crash_points "$e" | wc -l)
        info "$kind backup: $e I/O events, testing $pts crash points"
        n2=0 tmpleft=0
        for k in $(crash_points "$e"); do
                rm -rf "$W" && cp -a "$base" "$W"
                KURA_CACHE_DIR=$W/cache KURA_FAULT_CRASH_AT=$k kx "$W/repo" backup --volume "$F/img"
                rc=$KRC
                if [ "$rc" != 86 ]; then
                        bad "$kind backup crash at $k/$e: exit $rc, expected 86: $(tail -c 300 "$T/err" | tr '\n' ' ')"
                        continue
                fi
                tmpleft=$((tmpleft + $(find "$W/repo" -name '.tmp-*' | wc -l)))
                find "$W/repo" -name '.tmp-kio-*' | grep -q . && bad "$kind backup crash at $k: kio hidden names left"
                verify_repo "$kind backup crash at $k/$e" "$W/repo" "!$v1=$SHA1" "new=$SHA2"
                nv=$(cat "$T/nversions" 2>/dev/null || echo 0)
                [ "$nv" = 2 ] && n2=$((n2 + 1))
                # The next backup after the crash completes and restores.
                KURA_CACHE_DIR=$W/cache kx "$W/repo" backup --volume "$F/img"
                if [ "$KRC" != 0 ]; then
                        bad "$kind backup crash at $k: the next backup exited $KRC: $(tail -c 300 "$T/err" | tr '\n' ' ')"
                        continue
                fi
                kx "$W/repo" versions --json
                [ "$(jq '.versions | length' "$T/out")" = $((nv + 1)) ] || bad "$kind backup crash at $k: next backup did not add one version"
                got=$(restore_sha "$W/repo" latest)
                [ "$got" = "$SHA2" ] || bad "$kind backup crash at $k: backup after the crash restores to $got"
                if [ $((k % 8)) = 0 ] || [ "$k" -ge $((e - 2)) ]; then
                        kx "$W/repo" check --read-data
                        [ "$KRC" = 0 ] || bad "$kind backup crash at $k: check after the next backup exited $KRC: $(tail -c 300 "$T/err")"
                fi
                TOTAL_POINTS=$((TOTAL_POINTS + 1))
        done
        info "$kind backup: $pts crash points, version 2 durable at $n2 of them, $tmpleft .tmp- leftovers in total"

        # -- a full repository (injected ENOSPC) during the second backup -------
        local lim
        for lim in 1 65536 1000000 3000000 6000000; do
                rm -rf "$W" && cp -a "$base" "$W"
                KURA_CACHE_DIR=$W/cache KURA_FAULT_ENOSPC_AFTER=$lim kx "$W/repo" backup --volume "$F/img"
                rc=$KRC
                if [ "$rc" = 0 ]; then
                        info "$kind backup with ENOSPC after $lim bytes: completed"
                elif [ "$rc" = 86 ]; then
                        bad "$kind backup with ENOSPC after $lim bytes: exit 86"
                elif ! grep -q KURA-E-REPO-FULL "$T/err"; then
                        bad "$kind backup with ENOSPC after $lim bytes: exit $rc without KURA-E-REPO-FULL: $(tail -c 300 "$T/err" | tr '\n' ' ')"
                else
                        info "$kind backup with ENOSPC after $lim bytes: exit $rc, $(grep -o 'KURA-E-[A-Z-]*' "$T/err" | head -1)"
                fi
                verify_repo "$kind backup with ENOSPC after $lim" "$W/repo" "!$v1=$SHA1" "new=$SHA2"
                [ "$rc" = 0 ] || [ "$(cat "$T/nversions")" = 1 ] || bad "$kind backup with ENOSPC after $lim bytes failed but added a version"
                KURA_CACHE_DIR=$W/cache kx "$W/repo" backup --volume "$F/img"
                [ "$KRC" = 0 ] || bad "$kind backup with ENOSPC after $lim: the next backup exited $KRC"
                got=$(restore_sha "$W/repo" latest)
                [ "$got" = "$SHA2" ] || bad "$kind backup with ENOSPC after $lim: the next backup restores to $got"
                ENOSPC_POINTS=$((ENOSPC_POINTS + 1))
        done

        # -- forget v1 --prune, then prune ----------------------------------------
        # base2: v1 and v2, where v2 shares most of v1's pack: forgetting v1
        # makes that pack partly used, so prune must repack it.
        local base2=$F/base2-$kind v2
        rm -rf "$base2" && cp -a "$base" "$base2"
        KURA_CACHE_DIR=$base2/cache kok --repo "$base2/repo" backup --volume "$F/img"
        kok --repo "$base2/repo" versions --json
        v2=$(jq -r '.versions[1].id' "$T/out")

        local verb
        for verb in forget-prune prune; do
                local start=$base2
                if [ "$verb" = prune ]; then
                        start=$F/base3-$kind
                        rm -rf "$start" && cp -a "$base2" "$start"
                        kok --repo "$start/repo" forget "$v1"
                fi
                rm -rf "$W" && cp -a "$start" "$W"
                rm -f "$T/count"
                if [ "$verb" = prune ]; then
                        KURA_FAULT_COUNT=$T/count kx "$W/repo" prune
                else
                        KURA_FAULT_COUNT=$T/count kx "$W/repo" forget "$v1" --prune
                fi
                if [ "$KRC" != 0 ]; then
                        bad "$kind $verb: the counting run exited $KRC: $(tail -c 400 "$T/err" | tr '\n' ' ')"
                        continue
                fi
                grep -q . "$T/out" && info "$kind $verb: $(tr '\n' ' ' <"$T/out")"
                e=$(cat "$T/count")
                pts=$(crash_points "$e" | wc -l)
                info "$kind $verb: $e I/O events, testing $pts crash points"
                for k in $(crash_points "$e"); do
                        rm -rf "$W" && cp -a "$start" "$W"
                        if [ "$verb" = prune ]; then
                                KURA_FAULT_CRASH_AT=$k kx "$W/repo" prune
                        else
                                KURA_FAULT_CRASH_AT=$k kx "$W/repo" forget "$v1" --prune
                        fi
                        if [ "$KRC" != 86 ]; then
                                bad "$kind $verb crash at $k/$e: exit $KRC, expected 86: $(tail -c 300 "$T/err" | tr '\n' ' ')"
                                continue
                        fi
                        verify_repo "$kind $verb crash at $k/$e" "$W/repo" "$v1=$SHA1" "!$v2=$SHA2"
                        # Finishing the job after the crash leaves a clean repository.
                        kx "$W/repo" prune
                        [ "$KRC" = 0 ] || bad "$kind $verb crash at $k: prune after the crash exited $KRC: $(tail -c 300 "$T/err" | tr '\n' ' ')"
                        if [ $((k % 4)) = 0 ] || [ "$k" -ge $((e - 2)) ] || [ "$k" -le 2 ]; then
                                verify_repo "$kind $verb crash at $k, then prune" "$W/repo" "$v1=$SHA1" "!$v2=$SHA2"
                        fi
                        TOTAL_POINTS=$((TOTAL_POINTS + 1))
                done
        done
}

make_images
info "images: v1 $SHA1, v2 $SHA2"
run_kind unencrypted --no-encryption
export KURA_PASSWORD=itest-passphrase-crash
run_kind encrypted --kdf-memory 1M --kdf-passes 1

info "crash points tested: $TOTAL_POINTS (plus $ENOSPC_POINTS ENOSPC points)"
if [ -s "$T/failures" ]; then
        echo "[$TESTNAME] $(wc -l <"$T/failures") failures:" >&2
        sort "$T/failures" | head -50 >&2
        fail "$(wc -l <"$T/failures") failures at simulated crash points"
fi
