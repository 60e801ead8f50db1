#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-writer-sqlite, driven directly over the writer protocol:
#  - identify: one component per database (the file, -wal, -shm), user-data,
#    restore-if-can-replace;
#  - prepare-for-snapshot checkpoints the WAL (the -wal file is truncated);
#  - while frozen another connection cannot commit (fails at once without a
#    busy timeout; with one it waits) and it commits right after thaw;
#  - abort while frozen, EOF while frozen, the freeze watchdog and SIGTERM all
#    release the lock; thaw after the watchdog fired is non-retryable;
#  - unknown events ok, bad handshake / overlong line / garbage refused.
# Then, when `kura backup --writers` is there: a process commits in a loop
# while kura backs up the ext4 volume holding the database (fsfreeze snapshot,
# the sqlite writer declared in writers.d); the restored database passes
# PRAGMA integrity_check and holds a prefix of the committed rows.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/writer-lib.sh"
require_tool sqlite3 jq mkfs.ext4
W=$(writer_bin sqlite)

BG=()
trap 'rc=$?; wkill; for p in "${BG[@]}"; do kill -9 "$p" 2>/dev/null; done; (exit $rc); _cleanup' EXIT

DB=$T/data/app.db
mkdir -p "$T/data"
sq() { sqlite3 -cmd ".timeout ${SQ_TIMEOUT:-0}" "$DB" "$@"; }
sq "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" >/dev/null
# An idle connection held open keeps the WAL from being checkpointed and
# removed when the inserting connection closes.
python3 -c 'import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
print(c.execute("SELECT count(*) FROM t").fetchall(), flush=True)
time.sleep(600)' "$DB" >"$T/holder.out" 2>&1 </dev/null &
BG+=($!)
disown $!
for i in $(seq 100); do [ -s "$T/holder.out" ] && break; sleep 0.1; done
for i in $(seq 1 50); do echo "INSERT INTO t(v) VALUES('row $i');"; done |
        sqlite3 -cmd "PRAGMA wal_autocheckpoint=0" "$DB" >/dev/null || fail "insert"
[ -s "$DB-wal" ] || fail "setup: $DB-wal is empty"

# ---- the protocol basics -------------------------------------------------------
writer_protocol_checks "$W" "$DB"

# ---- a whole backup sequence ------------------------------------------------------
wstart "$W" --busy-timeout 5 "$DB"
assert_eq "SQLite Writer" "$(jq -r .name "$T/handshake.json")" "handshake name"
wok identify
assert_eq 1 "$(wresult '.components | length')" "number of components"
assert_eq "$DB" "$(wresult '.components[0].name')" "component name"
assert_eq "user-data" "$(wresult '.components[0].usage')" "component usage"
assert_eq "restore-if-can-replace" "$(wresult '.components[0].restore_method')" "restore method"
assert_eq "[\"$DB\",\"$DB-wal\",\"$DB-shm\"]" "$(wresult '.components[0].paths' | jq -c .)" "component paths"
wok prepare-for-backup "{\"backup_type\":\"full\",\"components\":[\"$DB\"],\"volumes\":[\"/dev/null\"]}"
wok prepare-for-snapshot '{"volumes":["/dev/null"]}'
assert_eq 0 "$(stat -c %s "$DB-wal")" "size of the WAL after prepare-for-snapshot (checkpoint TRUNCATE)"
assert_eq 50 "$(sq 'SELECT count(*) FROM t')" "rows after checkpoint"

wok freeze
# Readers go on; a writer without busy timeout fails at once.
assert_eq 50 "$(sq 'SELECT count(*) FROM t')" "a read while frozen"
if sq "INSERT INTO t(v) VALUES('while frozen')" 2>"$T/ins.err"; then
        fail "an INSERT committed while the writer held the database frozen"
fi
assert_contains "$T/ins.err" "locked" "error of an INSERT while frozen"
# A writer with a busy timeout waits until thaw, then commits.
SQ_TIMEOUT=20000 sq "INSERT INTO t(v) VALUES('after thaw')" >"$T/blocked.out" 2>&1 &
blocked=$!
BG+=("$blocked")
sleep 1.5
kill -0 "$blocked" 2>/dev/null || fail "the INSERT with a busy timeout did not wait while frozen ($(cat "$T/blocked.out"))"
assert_eq 50 "$(sq 'SELECT count(*) FROM t')" "rows while frozen"
t0=$SECONDS
wok thaw
wait "$blocked" || fail "the waiting INSERT failed after thaw: $(cat "$T/blocked.out")"
assert_le $((SECONDS - t0)) 3 "seconds for the waiting INSERT to commit after thaw"
assert_eq 51 "$(sq 'SELECT count(*) FROM t')" "rows after thaw"
info "ok: frozen blocks commits (reads go on), thaw lets the waiting commit through"
wok post-snapshot '{"snapshots":[{"volume":"/dev/null","device":"/dev/null"}]}'
wok backup-complete '{"succeeded":true}'
wshutdown

# ---- abort while frozen --------------------------------------------------------------
wstart "$W" "$DB"
wok identify
wok prepare-for-backup '{"backup_type":"copy","components":[],"volumes":[]}'
wok prepare-for-snapshot '{}'
wok freeze
if sq "INSERT INTO t(v) VALUES('x')" 2>/dev/null; then fail "INSERT committed while frozen (2)"; fi
wok abort '{"state":"freeze"}'
sq "INSERT INTO t(v) VALUES('after abort')" || fail "INSERT after abort"
# Abort when nothing is held, and a second freeze/thaw after an abort.
wok abort '{"state":"prepare-for-backup"}'
wok freeze
wok thaw
sq "INSERT INTO t(v) VALUES('after second thaw')" || fail "INSERT after the second thaw"
wshutdown
info "ok: abort while frozen releases the lock; abort when idle is ok"

# ---- kura goes away while frozen: EOF ---------------------------------------------------
wstart "$W" "$DB"
wok identify
wok freeze
wclose 10
sq "INSERT INTO t(v) VALUES('after EOF')" || fail "INSERT after the writer saw EOF while frozen"
info "ok: EOF while frozen releases the lock and the writer exits"

# ---- SIGTERM while frozen ------------------------------------------------------------------
wstart "$W" "$DB"
wok identify
wok freeze
kill -TERM "$WPID"
wexit_within 10
sq "INSERT INTO t(v) VALUES('after SIGTERM')" || fail "INSERT after SIGTERM while frozen"
info "ok: SIGTERM while frozen releases the lock"

# ---- no thaw within --freeze-limit: the writer thaws on its own -----------------------------
wstart "$W" --freeze-limit 2 "$DB"
wok identify
wok freeze
if sq "INSERT INTO t(v) VALUES('x')" 2>/dev/null; then fail "INSERT committed while frozen (3)"; fi
sleep 3
sq "INSERT INTO t(v) VALUES('after watchdog')" || fail "INSERT after the freeze watchdog fired"
wfail non-retryable thaw
grep -q 'freeze limit' "$T/writer.log" || fail "the writer did not log the watchdog"
wshutdown
info "ok: the freeze watchdog releases the lock, and thaw then reports it"

# ---- a database that is busy: freeze is retryable ---------------------------------------------
wstart "$W" --busy-timeout 1 "$DB"
wok identify
sqlite3 "$DB" "BEGIN IMMEDIATE; SELECT 1; SELECT 1;" >/dev/null # (returns at once: sanity)
( sqlite3 "$DB" <<EOF
BEGIN IMMEDIATE;
INSERT INTO t(v) VALUES('held');
.shell sleep 4
COMMIT;
EOF
) >/dev/null 2>&1 &
holder=$!
BG+=("$holder")
sleep 1
wfail retryable freeze
wait "$holder"
wok freeze
wok thaw
wshutdown
info "ok: a database whose write lock another process holds makes freeze retryable"

# ---- a missing database: the writer refuses to start ------------------------------------------
if "$W" "$T/no/such.db" </dev/null >/dev/null 2>"$T/missing.err"; then fail "writer started with a missing database"; fi
assert_contains "$T/missing.err" "no/such.db" "error for a missing database"

assert_eq ok "$(sq 'PRAGMA integrity_check')" "integrity of the test database"
info "direct protocol tests passed"

# ---- end to end: kura backup --writers sqlite under a committing loop ---------------------------
if ! "$KURA" backup --help 2>&1 | grep -q -- '--writers'; then
        info "kura backup has no --writers yet: end-to-end part not run"
        exit 0
fi
dev=$(new_loop 256M vol) || exit 1
mkfs.ext4 -q -F "$dev" || fail "mkfs.ext4"
do_mount "$dev" "$T/vol"
DB=$T/vol/app.db
sq "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);" >/dev/null
mkdir -p "$KURA_CONFIG_DIR/writers.d"
cat >"$KURA_CONFIG_DIR/writers.d/sqlite.conf" <<EOF
[Writer]
Name=SQLite Writer
ClassId=6a3c2f0e-5b1d-4c8e-9f27-1d0b7e4a9c31
Exec=$W --busy-timeout 10 $DB
FreezeTimeout=30
EOF
# The committer: one row per transaction, ids 1, 2, 3, ... and the last committed id in a file.
(
        i=0
        while [ ! -e "$T/stop" ]; do
                i=$((i + 1))
                sqlite3 -cmd ".timeout 30000" "$DB" "INSERT INTO t(id, v) VALUES($i, printf('%.200c', 'x'));" || exit 1
                echo "$i" >"$T/committed"
        done
) &
committer=$!
BG+=("$committer")
sleep 2
kura_init_test_repo
kok backup --volume "$dev" --snapshot fsfreeze --writers "SQLite Writer"
assert_writer_stable "SQLite Writer"
sleep 1
touch "$T/stop"
wait "$committer" || fail "the committing loop failed (a commit was refused during the backup?)"
last=$(cat "$T/committed")
info "the committer made $last commits; backup done"
[ "$last" -gt 10 ] || fail "only $last commits"

r=$(new_loop 256M restored) || exit 1
kok restore --version latest --volume-to "$r"
do_mount -o ro,noload "$r" "$T/rvol" 2>/dev/null || do_mount "$r" "$T/rvol"
cp "$T/rvol/app.db" "$T/check.db"
[ -e "$T/rvol/app.db-wal" ] && cp "$T/rvol/app.db-wal" "$T/check.db-wal"
assert_eq ok "$(sqlite3 "$T/check.db" 'PRAGMA integrity_check')" "integrity of the restored database"
n=$(sqlite3 "$T/check.db" 'SELECT count(*) FROM t')
mx=$(sqlite3 "$T/check.db" 'SELECT coalesce(max(id),0) FROM t')
assert_eq "$n" "$mx" "restored rows are a prefix (count = max id)"
[ "$n" -gt 0 ] || fail "the restored database holds no rows"
assert_le "$n" "$last" "restored rows <= committed rows"
info "ok: restored database is intact and holds the first $n of $last committed rows"
