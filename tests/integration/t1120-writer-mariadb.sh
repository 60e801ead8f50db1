#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-writer-mariadb against a private MariaDB server (own datadir and socket,
# --skip-networking, run as root), driven directly over the writer protocol:
#  - identify: component "server" = @@datadir, user-data, stop-restore-start;
#  - freeze: FLUSH TABLES WITH READ LOCK; an INSERT from another session waits
#    until thaw, then commits; reads go on;
#  - abort while frozen, EOF while frozen and the freeze watchdog release the lock;
#  - a long statement in the way: freeze is retryable (lock_wait_timeout);
#  - the server dies while frozen: thaw is non-retryable (the lock is gone).
# Then, when `kura backup --writers` is there: a transactional workload runs
# while kura backs up the ext4 volume holding the datadir; the restored server
# starts, the money invariant holds and mariadb-check is clean.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/writer-lib.sh"
require_tool mariadbd mariadb-install-db mariadb mariadb-admin jq
W=$(writer_bin mariadb)
BG=()
MY_PIDS=()
my_stop_all() {
        local p
        for p in "${MY_PIDS[@]}"; do kill -9 "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
}
trap 'rc=$?; wkill; for p in "${BG[@]}"; do kill -9 "$p" 2>/dev/null; done; my_stop_all; (exit $rc); _cleanup' EXIT

SOCK=$T/my.sock
my() { mariadb --no-defaults -S "$SOCK" -u root -N -B "$@"; }
my_init() {
        mkdir -p "$1"
        mariadb-install-db --no-defaults --datadir="$1" --user=root --auth-root-authentication-method=socket \
                --skip-test-db >"$T/install.log" 2>&1 || { tail -20 "$T/install.log" >&2; fail "mariadb-install-db $1"; }
}
my_start() { # DATADIR
        mariadbd --no-defaults --datadir="$1" --socket="$SOCK" --skip-networking --user=root \
                --pid-file="$T/my.pid" --log-error="$T/mariadb.log" --innodb-buffer-pool-size=32M \
                --innodb-flush-log-at-trx-commit=1 </dev/null >/dev/null 2>&1 &
        MYPID=$!
        MY_PIDS+=("$MYPID")
        local i
        for ((i = 0; i < 300; i++)); do
                mariadb-admin --no-defaults -S "$SOCK" -u root ping >/dev/null 2>&1 && return 0
                kill -0 "$MYPID" 2>/dev/null || break
                sleep 0.2
        done
        tail -20 "$T/mariadb.log" >&2
        fail "mariadbd did not start on $1"
}
my_stop() {
        mariadb-admin --no-defaults -S "$SOCK" -u root shutdown >/dev/null 2>&1
        wait "$MYPID" 2>/dev/null
}

D=$T/my/data
my_init "$D"
my_start "$D"
my -e "CREATE DATABASE app; CREATE TABLE app.t(i INT) ENGINE=InnoDB; INSERT INTO app.t VALUES (1),(2),(3);" ||
        fail "create table"
WM=("$W" --socket "$SOCK")

writer_protocol_checks "${WM[@]}"

# ---- a whole backup sequence -------------------------------------------------------
wstart "${WM[@]}"
assert_eq "MariaDB Writer" "$(jq -r .name "$T/handshake.json")" "handshake name"
wok identify
assert_eq server "$(wresult '.components[0].name')" "component name"
assert_eq "[\"$D\"]" "$(wresult '.components[0].paths' | jq -c .)" "component paths (the datadir)"
assert_eq user-data "$(wresult '.components[0].usage')" "usage"
assert_eq stop-restore-start "$(wresult '.components[0].restore_method')" "restore method"
wok prepare-for-backup '{"backup_type":"full","components":["server"],"volumes":[]}'
wok prepare-for-snapshot '{}'
wok freeze
assert_eq 3 "$(my -e 'SELECT count(*) FROM app.t')" "a read while frozen"
timeout 30 mariadb --no-defaults -S "$SOCK" -u root -e "INSERT INTO app.t VALUES (4)" >"$T/ins.out" 2>&1 &
blocked=$!
BG+=("$blocked")
sleep 1.5
kill -0 "$blocked" 2>/dev/null || fail "an INSERT did not wait while frozen: $(cat "$T/ins.out")"
assert_eq 3 "$(my -e 'SELECT count(*) FROM app.t')" "rows while frozen"
t0=$SECONDS
wok thaw
wait "$blocked" || fail "the waiting INSERT failed after thaw: $(cat "$T/ins.out")"
assert_le $((SECONDS - t0)) 3 "seconds for the waiting INSERT to commit after thaw"
assert_eq 4 "$(my -e 'SELECT count(*) FROM app.t')" "rows after thaw"
wok post-snapshot '{"snapshots":[]}'
wok backup-complete '{"succeeded":true}'
wshutdown
info "ok: frozen blocks writes (reads go on), thaw lets the waiting INSERT through"

# ---- abort, EOF, watchdog while frozen --------------------------------------------------
ins_now() { timeout 5 mariadb --no-defaults -S "$SOCK" -u root -e "INSERT INTO app.t VALUES ($1)"; }
wstart "${WM[@]}"
wok identify
wok freeze
if ins_now 5 2>/dev/null; then fail "INSERT went through while frozen"; fi
wok abort '{"state":"freeze"}'
ins_now 6 || fail "INSERT after abort"
wok abort '{"state":"thaw"}'
wok freeze
wclose 10
ins_now 7 || fail "INSERT after EOF while frozen"
info "ok: abort and EOF while frozen release the read lock"

wstart "${WM[@]}" --freeze-limit 2
wok identify
wok freeze
sleep 3
ins_now 8 || fail "INSERT after the freeze watchdog fired"
wfail non-retryable thaw
wshutdown
info "ok: the freeze watchdog releases the lock"

# ---- a long transaction in the way: retryable ---------------------------------------------
wstart "${WM[@]}" --lock-timeout 1
wok identify
# A running DML statement holds the backup lock FTWRL waits for.
my -e "INSERT INTO app.t SELECT 9 + SLEEP(4)" >/dev/null 2>&1 &
BG+=($!)
sleep 0.5
wfail retryable freeze
wait "${BG[-1]}"
wok freeze
wok thaw
wshutdown

# ---- the server dies while frozen ---------------------------------------------------------
wstart "${WM[@]}"
wok identify
wok freeze
kill -9 "$MYPID"
wait "$MYPID" 2>/dev/null
wfail non-retryable thaw
wok abort '{"state":"thaw"}'
wshutdown
my_start "$D"
info "ok: a server that dies while frozen makes thaw non-retryable; abort after it is ok"
info "direct protocol tests passed"

# ---- end to end: a transactional workload while kura backs up ----------------------------------
if ! "$KURA" backup --help 2>&1 | grep -q -- '--writers'; then
        info "kura backup has no --writers yet: end-to-end part not run"
        exit 0
fi
my_stop
require_tool mkfs.ext4 mariadb-check
dev=$(new_loop 512M vol) || exit 1
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4"
do_mount "$dev" "$T/vol"
VD=$T/vol/data
my_init "$VD"
my_start "$VD"
my -e "CREATE DATABASE bank; CREATE TABLE bank.acct(id INT PRIMARY KEY, bal BIGINT NOT NULL) ENGINE=InnoDB;
       CREATE TABLE bank.hist(n BIGINT AUTO_INCREMENT PRIMARY KEY, a INT, b INT, amt INT) ENGINE=InnoDB;" || fail "schema"
my -D bank -e "INSERT INTO acct SELECT seq, 1000 FROM seq_1_to_100" || fail "accounts"
mkdir -p "$KURA_CONFIG_DIR/writers.d"
cat >"$KURA_CONFIG_DIR/writers.d/mariadb.conf" <<EOF
[Writer]
Name=MariaDB Writer
ClassId=e2a7c914-3d58-4b6f-8a01-9c4d5e6f7a82
Exec=$W --socket $SOCK
EOF
# Transfers: each moves money between two accounts and records it, in one transaction.
(
        while [ ! -e "$T/stop" ]; do
                for ((k = 0; k < 20; k++)); do
                        a=$((RANDOM % 100 + 1)) b=$((RANDOM % 100 + 1)) m=$((RANDOM % 50 + 1))
                        echo "START TRANSACTION; UPDATE bank.acct SET bal = bal - $m WHERE id = $a;
                              UPDATE bank.acct SET bal = bal + $m WHERE id = $b;
                              INSERT INTO bank.hist(a, b, amt) VALUES ($a, $b, $m); COMMIT;"
                done
        done | mariadb --no-defaults -S "$SOCK" -u root
) >"$T/workload.log" 2>&1 &
load=$!
BG+=("$load")
sleep 3
kura_init_test_repo
kok backup --volume "$dev" --snapshot fsfreeze --writers "MariaDB Writer"
assert_writer_stable "MariaDB Writer"
touch "$T/stop"
sleep 1
kill "$load" 2>/dev/null
n=$(my -e "SELECT count(*) FROM bank.hist")
info "the workload committed $n transfers; backup done"
[ "$n" -gt 0 ] || fail "no transfers committed"
my_stop
do_umount "$T/vol"
del_loop "$dev"

r=$(new_loop 512M restored) || exit 1
kok restore --version latest --volume-to "$r"
do_mount "$r" "$T/rvol"
my_start "$T/rvol/data"
assert_eq 100000 "$(my -e 'SELECT sum(bal) FROM bank.acct')" "total money in the restored database"
rn=$(my -e "SELECT count(*) FROM bank.hist")
[ "$rn" -gt 0 ] || fail "the restored database holds no transfers"
# Each account's balance = 1000 + what it received - what it sent, by the restored history.
bad=$(my -e "SELECT count(*) FROM bank.acct x WHERE x.bal <> 1000
        + (SELECT coalesce(sum(amt),0) FROM bank.hist WHERE b = x.id) - (SELECT coalesce(sum(amt),0) FROM bank.hist WHERE a = x.id)")
assert_eq 0 "$bad" "accounts whose balance disagrees with the restored history"
mariadb-check --no-defaults -S "$SOCK" -u root --all-databases >"$T/check.log" 2>&1 || { cat "$T/check.log" >&2; fail "mariadb-check"; }
if grep -v -E '\sOK$' "$T/check.log" | grep -q .; then cat "$T/check.log" >&2; fail "mariadb-check found problems"; fi
my_stop
info "ok: restored server started, $rn of $n transfers, balances match the history, mariadb-check clean"
