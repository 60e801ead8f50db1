#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Writer failures through the real command, on a mounted ext4 kept frozen by
# the fsfreeze provider: a writer that hangs in Freeze (fails after its
# FreezeTimeout, the other writer is told Abort), one that crashes, one that
# answers non-retryable, a declared writer whose program is missing (shown by
# `kura writers`), and no writer able to start.  After every one the
# filesystem takes a write at once, no version was added, and the state that
# `kura writers` shows (vssadmin's numbers) names what happened.
. "$(dirname "$0")/lib.sh"
require_tool mkfs.ext4

FIX=$(cd "$(dirname "$0")/../fixtures/writers" && pwd)
export KURA_CONFIG_DIR=$T/conf KURA_STATE_DIR=$T/state
mkdir -p "$KURA_CONFIG_DIR/writers.d" "$KURA_STATE_DIR"
kura_init_test_repo

dev=$(new_loop 96M vol) || exit 1
fs_mkfs ext4 "$dev"
do_mount "$dev" "$T/m"
echo data >"$T/m/file"
sync

writable() {
        timeout -k 2 10 sh -c "echo probe >'$1/.probe' && sync -f '$1/.probe' && rm -f '$1/.probe'" ||
                fail "$1 does not take a write: left frozen?"
}

# declare FILE NAME CLASS MODE [EXEC]: a fixture writer with its component on the mounted filesystem
declare() {
        cat >"$KURA_CONFIG_DIR/writers.d/$1.conf" <<CONF
[Writer]
Name=$2
ClassId=$3
Exec=${5:-$FIX/writer-$4.sh}
Environment=WRITER_LOG=$T/$1.log
Environment=WRITER_CLASS=$3
Environment=WRITER_NAME=$2
Environment=WRITER_PATHS="$T/m/file"
IdentifyTimeout=5
EventTimeout=5
FreezeTimeout=2
RetryCount=0
RetryDelay=0
CONF
}
nversions() { kok versions --json; jq '.versions | length' "$T/out"; }

declare good "Good Writer" 11111111-1111-4111-8111-111111111111 good
declare hang "Hang Writer" 22222222-2222-4222-8222-222222222222 hang-freeze

# ---- a writer that hangs in freeze ----
start=$SECONDS
expect_fail 1 KURA-E-WRITER-TIMEOUT backup --volume "$dev" --snapshot fsfreeze --writers all
[ $((SECONDS - start)) -lt 30 ] || fail "the hanging writer held the backup for $((SECONDS - start)) s"
writable "$T/m"
grep -q '^abort' "$T/good.log" || fail "the good writer was not told abort: $(tr '\n' ' ' <"$T/good.log")"
assert_eq 0 "$(nversions)" "no version after a writer timed out"
kok writers --json --no-probe
assert_eq 9 "$(jq -r '.writers[] | select(.name == "Hang Writer") | .state' "$T/out")" "Hang Writer state (Failed at freeze)"
assert_eq "Timed out" "$(jq -r '.writers[] | select(.name == "Hang Writer") | .last_error' "$T/out")" "Hang Writer last error"
kok writers --no-probe
grep -q "State: \[9\] Failed at freeze" "$T/out" || { cat "$T/out"; fail "kura writers does not show [9] Failed at freeze"; }
rm -f "$KURA_CONFIG_DIR/writers.d/hang.conf"

# ---- a writer that crashes in freeze ----
declare crash "Crash Writer" 33333333-3333-4333-8333-333333333333 crash-freeze
expect_fail 1 KURA-E-WRITER-FAILED backup --volume "$dev" --snapshot fsfreeze --writers all
writable "$T/m"
assert_eq 0 "$(nversions)" "no version after a writer crashed"
kok writers --json --no-probe
assert_eq "Unexpected error" "$(jq -r '.writers[] | select(.name == "Crash Writer") | .last_error' "$T/out")" "Crash Writer last error"
rm -f "$KURA_CONFIG_DIR/writers.d/crash.conf"

# ---- a non-retryable answer ----
declare nonretry "Refusing Writer" 44444444-4444-4444-8444-444444444444 nonretry-pfb
expect_fail 1 KURA-E-WRITER-FAILED backup --volume "$dev" --snapshot fsfreeze --writers all
grep -q "Refusing Writer" "$T/err" || fail "the error does not name the writer: $(cat "$T/err")"
writable "$T/m"
kok writers --json --no-probe
assert_eq 7 "$(jq -r '.writers[] | select(.name == "Refusing Writer") | .state' "$T/out")" "state (Failed at prepare backup)"
assert_eq "Non-retryable error" "$(jq -r '.writers[] | select(.name == "Refusing Writer") | .last_error' "$T/out")" "last error"
rm -f "$KURA_CONFIG_DIR/writers.d/nonretry.conf"

# ---- a declared writer whose program is missing: shown, and --writers all goes on ----
declare missing "Missing Writer" 55555555-5555-4555-8555-555555555555 good /usr/lib/kura/no-such-writer
kok writers --json
assert_eq false "$(jq -r '.writers[] | select(.name == "Missing Writer") | .started' "$T/out")" "missing writer not started"
jq -r '.writers[] | select(.name == "Missing Writer") | .not_started' "$T/out" | grep -q "missing" ||
        fail "kura writers does not say the program is missing: $(cat "$T/out")"
kok backup --volume "$dev" --snapshot fsfreeze --writers all
writable "$T/m"
assert_eq 1 "$(nversions)" "backup with a missing writer under --writers all"
# named explicitly, it fails the backup
expect_fail 1 KURA-E-WRITER-FAILED backup --volume "$dev" --snapshot fsfreeze --writers "Missing Writer"
writable "$T/m"

# ---- no writer able to start ----
rm -f "$KURA_CONFIG_DIR/writers.d/good.conf"
declare missing2 "Missing Writer 2" 66666666-6666-4666-8666-666666666666 good /nonexistent/writer
kok writers
grep -q "Not started" "$T/out" || { cat "$T/out"; fail "kura writers shows no writer that could not start"; }
kok backup --volume "$dev" --snapshot fsfreeze --writers all
writable "$T/m"
assert_eq 2 "$(nversions)" "backup with no writer able to start (crash-consistent at the filesystem level)"
kok restore --version latest --volume-to "$T/r.img"
e2fsck -fn "$T/r.img" >/dev/null 2>&1 || fail "restored filesystem is not clean"

# ---- kura killed by SIGINT / SIGTERM while it holds the filesystem frozen ----
# fsfreeze freezes the filesystem, then waits for a writer that never answers
# thaw: interrupting kura then must thaw the filesystem and kill the writer.
for sig in INT TERM; do
        declare hangthaw "Hang Thaw Writer" 77777777-7777-4777-8777-777777777777 hang-thaw
        sed -i 's/^FreezeTimeout=.*/FreezeTimeout=60/' "$KURA_CONFIG_DIR/writers.d/hangthaw.conf"
        : >"$T/hangthaw.log"
        "$KURA" backup --volume "$dev" --snapshot fsfreeze --writers all >"$T/sig.out" 2>&1 &
        kpid=$!
        for _ in $(seq 1 100); do grep -q '^thaw' "$T/hangthaw.log" 2>/dev/null && break; sleep 0.1; done
        grep -q '^thaw' "$T/hangthaw.log" || { kill -9 $kpid; cat "$T/sig.out"; fail "the writer never got thaw"; }
        # the filesystem is frozen now: a write must block
        timeout 1 sh -c "echo x >'$T/m/.frozen-probe' && sync -f '$T/m/.frozen-probe'" &&
                fail "the filesystem was not frozen while the writer held thaw (test cannot tell)"
        kill -"$sig" $kpid
        wait $kpid
        rc=$?
        [ "$rc" = 130 ] || [ "$rc" = 143 ] || [ "$rc" = 1 ] || fail "kura exited $rc on SIG$sig"
        writable "$T/m"
        sleep 0.5; pgrep -f "writer-common.sh hang-thaw" >/dev/null && fail "the writer survived kura's SIG$sig"
        rm -f "$KURA_CONFIG_DIR/writers.d/hangthaw.conf" "$T/m/.frozen-probe"
        info "SIG$sig while frozen: thawed, writer gone"
done
