# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=bash
#
# Drive a writer directly over docs/format/writer-protocol.md (as kura's
# coordinator would), for t11x0-writer-*.sh.  Source after lib.sh.
#
#   writer_bin NAME            path of kura-writer-NAME (KURA_WRITERS_DIR, next to $KURA,
#                              or build*/writers/ in the source tree); skips if missing
#   wstart CMD...              start the writer as a coprocess and do the handshake
#   wevent EVENT [ARGS]        send a request, wait for its reply (timeout $WTIMEOUT s):
#                              $WSTATUS ok|retryable|non-retryable, reply in $T/reply.json,
#                              logs appended to $T/writer.log
#   wok EVENT [ARGS]           wevent, fail unless ok
#   wfail STATUS EVENT [ARGS]  wevent, fail unless the status is STATUS
#   wclose                     close the writer's stdin (EOF) and wait for it to exit
#   wshutdown                  backup-shutdown, then require exit status 0
#   wexit_within SECONDS       wait for the writer to exit; fail if it does not
#   wresult JQ                 jq on the last reply's result

WTIMEOUT=${WTIMEOUT:-60}
WPID=
WID=0

writer_bin() {
        local name=kura-writer-$1 d
        for d in ${KURA_WRITERS_DIR:-} "$(dirname "$KURA")/writers" "$SRCROOT"/build*/writers; do
                if [ -x "$d/$name" ]; then
                        realpath "$d/$name"
                        return 0
                fi
        done
        skip "$name is not built (set KURA_WRITERS_DIR)"
}

_wsend() {
        printf '%s\n' "$1" >&"$WIN" || fail "writer: cannot send (it exited?): $1"
}

_wread() { # -> $WLINE
        WLINE=
        if ! IFS= read -r -t "$WTIMEOUT" WLINE <&"$WOUT"; then
                echo "--- writer stderr:" >&2
                tail -20 "$T/writer.err" >&2
                fail "writer: no line within $WTIMEOUT s (or EOF)"
        fi
}

wstart() {
        : >>"$T/writer.err"
        echo "+ writer: $*" >>"$T/writer.log"
        coproc WRITERP { exec "$@" 2>>"$T/writer.err"; }
        WPID=$WRITERP_PID
        # Keep our own copies: bash closes the coproc's fds when it exits.
        exec {WIN}>&"${WRITERP[1]}" {WOUT}<&"${WRITERP[0]}"
        # ... and only those, so that closing WIN really is EOF for the writer.
        eval "exec ${WRITERP[1]}>&- ${WRITERP[0]}<&-"
        WID=0
        _wsend '{"protocol":"kura-writer","versions":[1],"capabilities":["restore","backup-type"]}'
        _wread
        echo "$WLINE" >"$T/handshake.json"
        [ "$(jq -r .protocol <<<"$WLINE")" = kura-writer ] || fail "handshake: not kura-writer: $WLINE"
        [ "$(jq -r .version <<<"$WLINE")" = 1 ] || fail "handshake: version is not 1: $WLINE"
        jq -re '.instance_id | test("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")' \
                <<<"$WLINE" >/dev/null || fail "handshake: instance_id is not a UUID: $WLINE"
        jq -re '.name | length > 0' <<<"$WLINE" >/dev/null || fail "handshake: no name: $WLINE"
        jq -re '.class_id | length > 0' <<<"$WLINE" >/dev/null || fail "handshake: no class_id: $WLINE"
}

wevent() {
        local ev=$1 args=${2:-"{}"}
        WID=$((WID + 1))
        _wsend "$(jq -cn --argjson id "$WID" --arg ev "$ev" --argjson a "$args" '{id:$id,event:$ev,args:$a}')"
        echo "> $ev $args" >>"$T/writer.log"
        while :; do
                _wread
                if jq -e 'has("log")' <<<"$WLINE" >/dev/null 2>&1; then
                        echo "  log: $WLINE" >>"$T/writer.log"
                        continue
                fi
                break
        done
        echo "< $WLINE" >>"$T/writer.log"
        printf '%s\n' "$WLINE" >"$T/reply.json"
        jq -e . "$T/reply.json" >/dev/null 2>&1 || fail "writer: reply to $ev is not JSON: $WLINE"
        [ "$(jq -r .id "$T/reply.json")" = "$WID" ] || fail "writer: reply to $ev has id $(jq -r .id "$T/reply.json"), expected $WID"
        WSTATUS=$(jq -r .status "$T/reply.json")
        WMSG=$(jq -r '.message // ""' "$T/reply.json")
}

wok() {
        wevent "$@"
        if [ "$WSTATUS" != ok ]; then
                tail -20 "$T/writer.log" >&2
                fail "writer: $1 answered $WSTATUS: $WMSG"
        fi
}

wfail() {
        local want=$1
        shift
        wevent "$@"
        if [ "$WSTATUS" != "$want" ]; then
                tail -20 "$T/writer.log" >&2
                fail "writer: $1 answered $WSTATUS ($WMSG), expected $want"
        fi
        info "ok: $1 -> $WSTATUS: $WMSG"
}

wresult() { jq -r ".result | $1" "$T/reply.json"; }

wexit_within() { # SECONDS [expected status]
        local s=$1 want=${2:-} i rc
        for ((i = 0; i < s * 10; i++)); do
                kill -0 "$WPID" 2>/dev/null || break
                sleep 0.1
        done
        if kill -0 "$WPID" 2>/dev/null; then
                kill -9 "$WPID"
                fail "writer did not exit within $s s"
        fi
        wait "$WPID" 2>/dev/null
        rc=$?
        exec {WIN}>&- {WOUT}<&-
        if [ -n "$want" ] && [ "$rc" != "$want" ]; then
                tail -5 "$T/writer.err" >&2
                fail "writer exited $rc, expected $want"
        fi
        WPID=
}

wclose() {
        exec {WIN}>&-
        wexit_within "${1:-10}"
}

wshutdown() {
        wok backup-shutdown
        wexit_within 10 0
}

# Kill a writer left running by a failed test (from the test's cleanup).
wkill() {
        [ -n "${WPID:-}" ] && kill -9 "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null
        WPID=
}

# Generic protocol checks every writer must pass: an unknown event is ok
# with an empty result, a bad handshake is refused, an overlong line ends it.
writer_protocol_checks() { # CMD...
        wstart "$@"
        wok identify
        wok frobnicate-the-future '{"x":1}'
        assert_eq '{}' "$(jq -c .result "$T/reply.json")" "result of an unknown event"
        wshutdown
        info "ok: unknown event answered ok with an empty result; backup-shutdown exits 0"

        local out
        out=$(printf '%s\n' '{"protocol":"kura-writer","versions":[7]}' | timeout 10 "$@" 2>/dev/null)
        assert_eq "unsupported version" "$(jq -r .error <<<"$out")" "answer to a handshake without version 1"

        # A request line longer than 65536 bytes: protocol error, the writer exits non-zero.
        local rc
        { printf '%s\n' '{"protocol":"kura-writer","versions":[1]}'
          printf '{"id":1,"event":"identify","args":{"pad":"%s"}}\n' "$(head -c 70000 /dev/zero | tr '\0' x)"; } |
                timeout 10 "$@" >"$T/long.out" 2>/dev/null
        rc=$?
        [ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "writer answered an overlong line with exit $rc"
        assert_not_contains "$T/long.out" '"id":1' "reply to an overlong request"
        # Garbage instead of a request.
        { printf '%s\n' '{"protocol":"kura-writer","versions":[1]}' 'not json'; } |
                timeout 10 "$@" >/dev/null 2>&1
        rc=$?
        [ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "writer answered garbage with exit $rc"
        info "ok: bad handshake refused, overlong line and garbage end the writer"
}

# After `kura backup --writers NAME`: the writer took part (it has an instance
# ID from its handshake) and ended Stable with no error ($KURA_STATE_DIR/writers.json).
assert_writer_stable() { # NAME
        local ws=$KURA_STATE_DIR/writers.json
        [ -f "$ws" ] || fail "no $ws after the backup"
        jq -e --arg n "$1" '.writers[$n].instance_id | length > 0' "$ws" >/dev/null ||
                { cat "$ws" >&2; fail "writer '$1' did not take part in the backup"; }
        assert_eq 1 "$(jq -r --arg n "$1" '.writers[$n].state' "$ws")" "state of writer '$1' after the backup (1 Stable)"
        assert_eq 0 "$(jq -r --arg n "$1" '.writers[$n].last_error' "$ws")" "last error of writer '$1'"
}
