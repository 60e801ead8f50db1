#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-writer-script, driven directly over the writer protocol:
#  - identify reports the --component NAME:PATH components (paths grouped by name);
#  - each --on EVENT=CMD runs at its event, in order, with KURA_EVENT etc. set,
#    its output arriving as log lines (never on the protocol stream);
#  - a failing command: non-retryable with its exit status and last stderr line;
#    exit 75: retryable; a command over --timeout is killed with its children;
#  - abort while frozen runs the thaw commands (or the abort commands when given);
#    EOF while frozen too; unknown events ok; bad handshake / overlong line refused.
# Then, when `kura backup --writers` is there: a script writer's freeze/thaw
# commands run around a real `kura backup --snapshot fsfreeze`.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/writer-lib.sh"
W=$(writer_bin script)
trap 'rc=$?; wkill; (exit $rc); _cleanup' EXIT

E=$T/events
: >"$E"
rec() { echo "echo \"\$KURA_EVENT ${1:-}\" >>$E"; }

writer_protocol_checks "$W" --component app:/srv/app

# ---- the whole sequence, with environment and output --------------------------
wstart "$W" --name "App Writer" --component app:/srv/app --component app:/var/lib/app --component logs:/var/log/app \
        --on "prepare-for-backup=$(rec) ; echo type=\$KURA_BACKUP_TYPE >>$E" \
        --on "prepare-for-snapshot=$(rec)" \
        --on "freeze=$(rec one)" --on "freeze=$(rec two); echo 'to stdout'; echo 'to stderr' >&2" \
        --on "thaw=$(rec)" --on "post-snapshot=$(rec)" \
        --on "backup-complete=$(rec) ; echo ok=\$KURA_SUCCEEDED >>$E"
assert_eq "App Writer" "$(jq -r .name "$T/handshake.json")" "name from --name"
wok identify
assert_eq 2 "$(wresult '.components | length')" "number of components"
assert_eq '["/srv/app","/var/lib/app"]' "$(wresult '.components[0].paths' | jq -c .)" "paths of component app"
assert_eq logs "$(wresult '.components[1].name')" "second component"
assert_eq user-data "$(wresult '.components[1].usage')" "usage"
wok prepare-for-backup '{"backup_type":"full","components":["app"],"volumes":[]}'
wok prepare-for-snapshot '{}'
wok freeze
grep -q '"log":"to stdout"' "$T/writer.log" || fail "a command's stdout did not arrive as a log line"
grep -q '"log":"to stderr","level":"warning"' "$T/writer.log" || fail "a command's stderr did not arrive as a warning"
wok thaw
wok post-snapshot '{"snapshots":[]}'
wok backup-complete '{"succeeded":true}'
wshutdown
printf '%s\n' "prepare-for-backup " "type=full" "prepare-for-snapshot " "freeze one" "freeze two" "thaw " \
        "post-snapshot " "backup-complete " "ok=1" >"$T/want"
assert_file_eq "$T/want" "$E" "commands run, in order, with their environment"
info "ok: commands ran in order with KURA_EVENT, KURA_BACKUP_TYPE, KURA_SUCCEEDED; output as logs"

# ---- failures ---------------------------------------------------------------------
wstart "$W" --component app:/srv/app --timeout 2 \
        --on "freeze=echo first >&2; echo 'cannot stop the app' >&2; exit 3" \
        --on "thaw=exit 75" \
        --on "post-snapshot=sleep 30 & echo \$! >$T/bgpid; sleep 30; echo never >>$E"
wok identify
wfail non-retryable freeze
[[ "$WMSG" == *"status 3"* ]] || fail "message lacks the exit status: $WMSG"
[[ "$WMSG" == *"cannot stop the app"* ]] || fail "message lacks the last stderr line: $WMSG"
wfail retryable thaw
t0=$SECONDS
wfail non-retryable post-snapshot
[[ "$WMSG" == *"timed out after 2 s"* ]] || fail "message does not say timed out: $WMSG"
assert_le $((SECONDS - t0)) 5 "seconds for a command over its 2 s timeout"
sleep 0.5
bg=$(cat "$T/bgpid")
[ -n "$bg" ] || fail "the timed-out command did not record its background child"
# (A zombie waiting for init to reap it is dead: only a live process counts.)
if kill -0 "$bg" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$bg/status" 2>/dev/null; then
        kill -9 "$bg"
        fail "a background child of a timed-out command survived (pid $bg)"
fi
assert_not_contains "$E" never "output of the killed command"
wshutdown
info "ok: failure -> non-retryable with status and stderr; 75 -> retryable; timeout kills the group"

# ---- abort and EOF while frozen run the thaw commands ------------------------------------
: >"$E"
wstart "$W" --component app:/srv/app --on "freeze=$(rec)" --on "thaw=$(rec)"
wok identify
wok abort '{"state":"prepare-for-backup"}'
assert_eq "" "$(cat "$E")" "commands run by an abort before freeze"
wok freeze
wok abort '{"state":"freeze"}'
printf '%s\n' "freeze " "thaw " >"$T/want"
assert_file_eq "$T/want" "$E" "abort while frozen runs thaw"
wok freeze
wclose 10
printf '%s\n' "freeze " "thaw " "freeze " "thaw " >"$T/want"
assert_file_eq "$T/want" "$E" "EOF while frozen runs thaw"
info "ok: abort and EOF while frozen run the thaw commands"

# Explicit abort commands win, with KURA_ABORT_STATE.
: >"$E"
wstart "$W" --component app:/srv/app --on "freeze=$(rec)" --on "thaw=$(rec)" \
        --on "abort=echo abort \$KURA_ABORT_STATE >>$E"
wok identify
wok freeze
wok abort '{"state":"freeze"}'
printf '%s\n' "freeze " "abort freeze" >"$T/want"
assert_file_eq "$T/want" "$E" "abort commands"
wshutdown

# Freeze watchdog.
: >"$E"
wstart "$W" --component app:/srv/app --freeze-limit 1 --on "freeze=$(rec)" --on "thaw=$(rec)"
wok identify
wok freeze
sleep 2.5
wfail non-retryable thaw
printf '%s\n' "freeze " "thaw " >"$T/want"
assert_file_eq "$T/want" "$E" "the freeze watchdog runs thaw once"
wshutdown
info "ok: abort commands with KURA_ABORT_STATE; the freeze watchdog thaws"

# Bad command lines.
if "$W" --on "frezee=true" </dev/null >/dev/null 2>"$T/bad.err"; then fail "accepted --on frezee"; fi
assert_contains "$T/bad.err" "frezee" "error for an unknown event name"
if "$W" --component "noslash" </dev/null >/dev/null 2>/dev/null; then fail "accepted --component without a path"; fi
info "direct protocol tests passed"

# ---- end to end --------------------------------------------------------------------------
if ! "$KURA" backup --help 2>&1 | grep -q -- '--writers'; then
        info "kura backup has no --writers yet: end-to-end part not run"
        exit 0
fi
require_tool mkfs.ext4
dev=$(new_loop 64M vol) || exit 1
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4"
do_mount "$dev" "$T/vol"
echo data >"$T/vol/file"
: >"$E"
mkdir -p "$KURA_CONFIG_DIR/writers.d"
cat >"$KURA_CONFIG_DIR/writers.d/app.conf" <<EOF
[Writer]
Name=App Writer
ClassId=3f1e9a52-8c47-4d2b-a6e0-7b5c9d18e204
Exec=$W --name "App Writer" --component app:$T/vol --on freeze="echo freeze >>$E" --on thaw="echo thaw >>$E" --on backup-complete="echo complete \$KURA_SUCCEEDED >>$E"
EOF
kura_init_test_repo
kok backup --volume "$dev" --snapshot fsfreeze --writers "App Writer"
assert_writer_stable "App Writer"
printf '%s\n' freeze thaw "complete 1" >"$T/want"
assert_file_eq "$T/want" "$E" "script writer events during kura backup"
info "ok: kura backup ran the script writer's freeze, thaw and backup-complete"
