#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Run the integration tests one after another (they use loop devices and
# mounts: do not run them in parallel) and print a summary.
#   KURA=/abs/path/to/kura tests/integration/run.sh [PATTERN...]
# PATTERN selects tests by substring (default: all t[0-9]*.sh).
# Exit 0 if every test passed or skipped, 1 otherwise.  Logs in $LOGDIR
# (default /tmp/kura-itest-logs).
cd "$(dirname "$0")" || exit 1
LOGDIR=${LOGDIR:-/tmp/kura-itest-logs}
mkdir -p "$LOGDIR"
pass=() failed=() skipped=()
for t in t[0-9]*.sh; do
        name=${t%.sh}
        if [ $# -gt 0 ]; then
                sel=0
                for p in "$@"; do [[ "$name" == *"$p"* ]] && sel=1; done
                [ "$sel" = 1 ] || continue
        fi
        start=$SECONDS
        bash "./$t" >"$LOGDIR/$name.log" 2>&1
        rc=$?
        d=$((SECONDS - start))
        case $rc in
        0) pass+=("$name"); printf 'PASS %-34s %4d s\n' "$name" "$d" ;;
        77) skipped+=("$name"); printf 'SKIP %-34s %4d s\n' "$name" "$d" ;;
        *) failed+=("$name"); printf 'FAIL %-34s %4d s (exit %d, log %s)\n' "$name" "$d" "$rc" "$LOGDIR/$name.log"
           grep -E 'FAIL|expected' "$LOGDIR/$name.log" | head -5 | sed 's/^/     /' ;;
        esac
done
echo "${#pass[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[ ${#failed[@]} = 0 ]
