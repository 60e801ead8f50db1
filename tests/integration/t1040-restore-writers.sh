#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura restore --writers / --restore-type (writer-protocol.md §5, restore):
# an image file is backed up with a fixture writer whose component path is
# the image file itself (a path that is itself a volume is on it); the
# writer's `store` is kept in the version.  kura restore --writers all
# --restore-type authoritative then sends it pre-restore and post-restore
# with the restore type, that store and a generation ID that is new at every
# restore; the restored bytes are the backed-up ones.  A writer that refuses
# pre-restore stops the restore before the target is touched.
. "$(dirname "$0")/lib.sh"

kura restore --help >"$T/restore-help" 2>&1
grep -q -- '--restore-type' "$T/restore-help" || skip "kura restore has no --restore-type option yet"

FIX=$SRCROOT/tests/fixtures/writers
CLASS=4e9d1b3f-3c8e-4f94-8d31-8a5d0c6e2f04
declare_writer() { # FILE NAME MODE
        mkdir -p "$KURA_CONFIG_DIR/writers.d"
        cat >"$KURA_CONFIG_DIR/writers.d/$1.conf" <<EOC
[Writer]
Name=$2
ClassId=$CLASS
Exec=$FIX/writer-$3.sh
Environment=WRITER_LOG=$T/$1.log
Environment=WRITER_CLASS=$CLASS
Environment=WRITER_NAME=$2
Environment=WRITER_PATHS="$T/vol.img"
IdentifyTimeout=10
EventTimeout=10
RetryCount=0
EOC
}

kura_init_test_repo
rand_bytes 7 $((8 << 20)) >"$T/vol.img"
sha_orig=$(sha "$T/vol.img")
declare_writer app "App Writer" good

kok backup --volume "$T/vol.img" --snapshot none --writers all
assert_contains "$T/app.log" "post-snapshot" "the writer took part in the backup"
# The fixture returns store {"lsn":"0/1234"} at post-snapshot, which the
# backup writes into the manifest (before backup-complete, whose store
# comes too late for it): the restore can only hand it back from there.
store='{"lsn":"0/1234"}'

# ---- restore in place, authoritative -----------------------------------------
rand_bytes 8 $((8 << 20)) >"$T/vol.img"
assert_ne "$sha_orig" "$(sha "$T/vol.img")" "the image was overwritten"
: >"$T/app.log"
kok restore --version latest --volume-to "$T/vol.img" --writers all --restore-type authoritative
assert_eq "$sha_orig" "$(sha "$T/vol.img")" "restored bytes"
grep -q '^  authoritative restore, writers: App Writer$' "$T/out" || { show_output; fail "summary lacks the writers"; }
gen1=$(sed -n 's/^  restore generation ID \([0-9a-f]*\)$/\1/p' "$T/out")
[[ "$gen1" =~ ^[0-9a-f]{32}$ ]] || { show_output; fail "no restore generation ID in the summary"; }
# exactly: hello, identify, pre-restore, post-restore, backup-shutdown
assert_eq "hello identify pre-restore post-restore backup-shutdown" "$(cut -d' ' -f1 "$T/app.log" | xargs)" \
        "events of the writer"
for ev in pre-restore post-restore; do
        args=$(sed -n "s/^$ev //p" "$T/app.log")
        assert_eq authoritative "$(jq -r .restore_type <<<"$args")" "$ev restore_type"
        assert_eq "$gen1" "$(jq -r .generation_id <<<"$args")" "$ev generation_id"
        assert_eq '["data"]' "$(jq -c .components <<<"$args")" "$ev components"
        assert_eq "$(jq -cS . <<<"$store")" "$(jq -cS .store <<<"$args")" "$ev store"
done

# ---- a second restore: a new generation ID, non-authoritative by default, JSON -
rand_bytes 9 $((8 << 20)) >"$T/vol.img"
: >"$T/app.log"
kok restore --version latest --volume-to "$T/vol.img" --writers "App Writer" --json
assert_eq "$sha_orig" "$(sha "$T/vol.img")" "restored bytes (second restore)"
gen2=$(jq -r .generation_id "$T/out")
[[ "$gen2" =~ ^[0-9a-f]{32}$ ]] || { show_output; fail "no generation_id in the JSON output"; }
assert_ne "$gen1" "$gen2" "generation ID of two restores"
assert_eq non-authoritative "$(jq -r .restore_type "$T/out")" "restore_type in JSON"
assert_eq '["App Writer"]' "$(jq -c .writers "$T/out")" "writers in JSON"
args=$(sed -n 's/^pre-restore //p' "$T/app.log")
assert_eq non-authoritative "$(jq -r .restore_type <<<"$args")" "default restore_type"
assert_eq "$gen2" "$(jq -r .generation_id <<<"$args")" "generation_id sent = printed"

# ---- the default is no writer events ------------------------------------------
: >"$T/app.log"
kok restore --version latest --volume-to "$T/vol2.img"
assert_eq "" "$(cat "$T/app.log")" "no writer started without --writers"
assert_eq "$sha_orig" "$(sha "$T/vol2.img")" "restored bytes (no writers)"
if grep -q 'generation' "$T/out"; then show_output; fail "a generation ID without writers"; fi

# ---- the writer is gone from this machine: skipped, restore goes on -----------
rm "$KURA_CONFIG_DIR/writers.d/app.conf"
rand_bytes 10 $((8 << 20)) >"$T/vol.img"
kok restore --version latest --volume-to "$T/vol.img" --writers all
assert_eq "$sha_orig" "$(sha "$T/vol.img")" "restored bytes (writer missing)"
grep -q "^  writer skipped: App Writer: not declared in $KURA_CONFIG_DIR/writers.d" "$T/out" ||
        { show_output; fail "the missing writer is not listed as skipped"; }

# ---- a writer that refuses pre-restore: the target is untouched ---------------
declare_writer app "App Writer" nonretry-pre-restore
rand_bytes 11 $((8 << 20)) >"$T/vol.img"
sha_other=$(sha "$T/vol.img")
expect_fail 1 KURA-E-WRITER-FAILED restore --version latest --volume-to "$T/vol.img" --writers all
assert_contains "$T/err" "writer 'App Writer' failed pre-restore" "error names the writer"
assert_contains "$T/err" "the cluster is still running" "error carries the writer's message"
assert_eq "$sha_other" "$(sha "$T/vol.img")" "target untouched after a refused pre-restore"
kok writers --no-probe --json
assert_eq 13 "$(jq -r '.writers[] | select(.name == "App Writer") | .state' "$T/out")" \
        "writer state after a refused pre-restore (13 Failed at pre restore)"

expect_fail 2 KURA-E-USAGE restore --version latest --volume-to "$T/vol.img" --restore-type sideways
