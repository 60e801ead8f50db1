# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=bash
# Private PostgreSQL instances for tests (PostgreSQL refuses to run as root):
# initdb/pg_ctl as the postgres user through runuser, unix socket in a
# directory of the test, no TCP.  Source after lib.sh.
#   pg_init DIR             initdb DIR (owned by postgres)
#   pg_start DIR SOCKDIR    start it (port $PGPORT), remembered for the cleanup
#   pg_stop DIR             stop it (fast)
#   pg_stop_all             stop every instance this test started
#   psql_q SQL              run SQL as postgres on $PGSOCK, unaligned, tuples only
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || skip "PostgreSQL server binaries missing (Debian: postgresql)"
id postgres >/dev/null 2>&1 || skip "no postgres user"
PGPORT=${PGPORT:-55432}
PG_STARTED=()
# postgres must reach its files under $T; its logs go to $T/pglogs.
chmod 711 "$T"
mkdir -p "$T/pglogs" && chown postgres: "$T/pglogs"

as_pg() { runuser -u postgres -- "$@"; }

pg_init() {
        mkdir -p "$1" && chown postgres: "$1" && chmod 700 "$1"
        as_pg "$PGBIN/initdb" -D "$1" -A trust -U postgres --no-sync >"$T/initdb.log" 2>&1 ||
                { cat "$T/initdb.log" >&2; fail "initdb $1"; }
}

pg_start() {
        local dir=$1 sock=$2
        mkdir -p "$sock" && chown postgres: "$sock"
        as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$T/pglogs/$(basename "$(dirname "$dir")").log" -w -t 60 \
                -o "-k $sock -c listen_addresses='' -p $PGPORT -c fsync=on" start >/dev/null ||
                { tail -20 "$T/pglogs/$(basename "$(dirname "$dir")").log" >&2; fail "pg_ctl start $dir"; }
        PG_STARTED+=("$dir")
        PGSOCK=$sock
}

pg_stop() {
        as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w -t 60 stop >/dev/null 2>&1
}

pg_stop_all() {
        local d
        for d in "${PG_STARTED[@]}"; do
                [ -f "$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate -w -t 20 stop >/dev/null 2>&1
        done
}

psql_q() {
        as_pg "$PGBIN/psql" -h "$PGSOCK" -p "$PGPORT" -U postgres -d "${PGDB:-postgres}" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"
}
