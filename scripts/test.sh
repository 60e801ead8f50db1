#!/usr/bin/env bash
# Run every kura test through one runner:
#   unit tests (cmocka) and fuzz-corpus replays, in the normal build and under ASan+UBSan;
#   integration tests (tests/integration/t*.sh) with build/kura and again with the
#   ASan+UBSan build (unless a script says "# kura-test: no-asan").
# The last line is "N passed, N failed, N skipped".
# Two lanes run side by side: the "no-asan" tests (qemu guests, databases) with build/kura,
# and everything else (unit tests, the other integration tests, the whole ASan+UBSan pass);
# KURA_TEST_SERIAL=1 runs them one after the other.
# KURA_TEST_NO_NORMAL=1 / KURA_TEST_NO_ASAN=1 leave out one of the two passes (for development).  As root on Linux every test must
# run: a skip counts as a failure unless KURA_TEST_ALLOW_SKIP=1.
set -uo pipefail
cd "$(dirname "$0")/.."
top=$PWD
logdir=${KURA_TEST_LOGDIR:-$top/build/test-logs}
mkdir -p "$logdir"
pass=0 fail=0 skip=0
failed_names=()

skip_is_failure=0
if [ "$(id -u)" -eq 0 ] && [ "${KURA_TEST_ALLOW_SKIP:-0}" != 1 ]; then skip_is_failure=1; fi

# Results go to a file as well: the two lanes below run in separate processes.
results=$logdir/results
: >"$results"
record() { # name result(pass|fail|skip) [detail]
  local r=$2
  [ "$r" = skip ] && [ $skip_is_failure = 1 ] && r=fail
  echo "$r $1" >>"$results"
  case $2 in
    pass) pass=$((pass + 1)); echo "PASS  $1" ;;
    fail) fail=$((fail + 1)); failed_names+=("$1"); echo "FAIL  $1 ${3:-}" ;;
    skip) if [ $skip_is_failure = 1 ]; then
            fail=$((fail + 1)); failed_names+=("$1"); echo "FAIL  $1 (skipped as root: ${3:-})"
          else
            skip=$((skip + 1)); echo "SKIP  $1 ${3:-}"
          fi ;;
  esac
}

build_dir() { # dir [meson args...]
  local d=$1; shift
  if [ ! -f "$d/build.ninja" ]; then
    meson setup "$d" "$@" >"$logdir/setup-$(basename "$d").log" 2>&1 || { cat "$logdir/setup-$(basename "$d").log"; return 1; }
  fi
  ninja -C "$d" >"$logdir/ninja-$(basename "$d").log" 2>&1 || { tail -50 "$logdir/ninja-$(basename "$d").log"; return 1; }
}

run_meson_tests() { # builddir label
  local d=$1 label=$2
  rm -f "$d/meson-logs/testlog.json"
  meson test -C "$d" --suite unit --suite fuzz-replay --suite cli --num-processes 2 --print-errorlogs \
    >"$logdir/meson-$label.log" 2>&1
  if [ ! -f "$d/meson-logs/testlog.json" ]; then
    record "meson-$label" fail "(no test log; see $logdir/meson-$label.log)"; return
  fi
  while IFS=$'\t' read -r name result; do
    case $result in
      OK|EXPECTEDFAIL) record "$label/$name" pass ;;
      SKIP) record "$label/$name" skip "(meson reported SKIP)" ;;
      *) record "$label/$name" fail "($result; see $logdir/meson-$label.log)"
         grep -A40 "$name" "$logdir/meson-$label.log" | tail -40 ;;
    esac
  done < <(python3 -c '
import json,sys
for line in open(sys.argv[1]):
    t=json.loads(line); print(t["name"]+"\t"+t["result"])' "$d/meson-logs/testlog.json")
}

run_integration() { # kura-binary label [all|slow|fast]
  local bin=$1 label=$2 which=${3:-all} t name rc start
  for t in tests/integration/t[0-9]*.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .sh)
    if [ "$label" = asan ] && grep -q '^# kura-test: no-asan' "$t"; then continue; fi
    # "slow": the no-asan tests (qemu guests, databases); "fast": the others.
    if [ "$which" = slow ] && ! grep -q '^# kura-test: no-asan' "$t"; then continue; fi
    if [ "$which" = fast ] && grep -q '^# kura-test: no-asan' "$t"; then continue; fi
    local tmo
    tmo=$(sed -n 's/^# kura-test: timeout=\([0-9]*\).*/\1/p' "$t" | head -1)
    tmo=${tmo:-600}
    start=$(date +%s)
    KURA="$bin" KURA_TEST_PASS="$label" timeout -k 10 "$tmo" bash "$t" >"$logdir/$label-$name.log" 2>&1
    rc=$?
    case $rc in
      0) record "$label/$name" pass ;;
      77) record "$label/$name" skip "($(tail -1 "$logdir/$label-$name.log"))" ;;
      *) record "$label/$name" fail "(exit $rc after $(( $(date +%s) - start ))s; log $logdir/$label-$name.log)"
         tail -30 "$logdir/$label-$name.log" | sed 's/^/    | /' ;;
    esac
  done
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

normal_ok=0
if [ "${KURA_TEST_NO_NORMAL:-0}" != 1 ]; then
  if build_dir build --buildtype=debugoptimized; then
    normal_ok=1
  else
    record build fail "(build failed)"
  fi
fi

# Two lanes side by side: a qemu guest under TCG keeps one core busy and the
# other idle, so the guest and database tests (one at a time, in this lane)
# run beside everything else (unit tests, the other integration tests, the
# ASan+UBSan build and pass).  KURA_TEST_SERIAL=1 runs them one after the other.
slow_lane() {
  [ $normal_ok = 1 ] && run_integration "$top/build/kura" normal slow
  return 0
}
main_lane() {
  if [ $normal_ok = 1 ]; then
    run_meson_tests build normal
    run_integration "$top/build/kura" normal fast
  fi
  # clang refuses a goto that jumps over the initialisation of a _cleanup_
  # variable (gcc accepts it, and the cleanup then frees garbage on that path).
  if [ "${KURA_TEST_NO_CLANG:-0}" != 1 ]; then
    if CC=clang build_dir build-clang --buildtype=plain -Dtests=false; then
      record build-clang pass
    else
      record build-clang fail "(clang build failed: see $logdir/ninja-build-clang.log)"
    fi
  fi
  if [ "${KURA_TEST_NO_ASAN:-0}" != 1 ]; then
    if build_dir build-asan --buildtype=debug -Db_sanitize=address,undefined -Db_lundef=false; then
      run_meson_tests build-asan asan
      run_integration "$top/build-asan/kura" asan
    else
      record build-asan fail "(ASan build failed)"
    fi
  fi
}
if [ "${KURA_TEST_SERIAL:-0}" = 1 ]; then
  slow_lane
  main_lane
else
  slow_lane &
  slow_pid=$!
  main_lane
  wait "$slow_pid"
fi

pass=$(grep -c '^pass ' "$results")
fail=$(grep -c '^fail ' "$results")
skip=$(grep -c '^skip ' "$results")
mapfile -t failed_names < <(sed -n 's/^fail //p' "$results")
if [ ${#failed_names[@]} -gt 0 ]; then
  echo "failed: ${failed_names[*]}"
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
