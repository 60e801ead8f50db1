/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kura-writer-postgresql: puts a PostgreSQL cluster into backup mode around
 * the snapshot.
 *
 *   kura-writer-postgresql [--host SOCKETDIR] [--port PORT] [--dbname DB] [--user USER]
 *                          [--pgdata DIR] [--timeout SECONDS] [--wal-archive DIR]
 *
 * It connects through libpq (unix socket in SOCKETDIR, default
 * /var/run/postgresql) as the OS user it runs as (User=postgres in its
 * declaration) unless --user says otherwise.
 *
 * prepare-for-snapshot: CHECKPOINT, then pg_backup_start('kura', true) (a
 * non-exclusive backup, PostgreSQL 15; pg_start_backup(…, false) before), on a
 * connection kept open until the backup ends.  freeze/thaw: nothing (backup
 * mode makes an atomic snapshot of the cluster safe without stopping writes).
 * post-snapshot: pg_backup_stop(true); the backup_label and tablespace_map it
 * returns go back to kura in `store` and are kept in the version manifest.
 * (If the stop cannot finish within --stop-wait seconds, default 5, because
 * the filesystem is still frozen, the store comes with backup-complete.)
 * abort: pg_backup_stop, errors ignored.
 *
 * One component, "cluster": the data directory (SHOW data_directory), plus
 * tablespace locations and an out-of-tree pg_wal, stop-restore-start.
 *
 * post-restore: removes the stale postmaster.pid the snapshot holds.  The
 * restored cluster is one atomic snapshot, so PostgreSQL's crash recovery
 * from the checkpoint in pg_control is exact, and a backup_label must NOT be
 * written: PostgreSQL would then insist on replaying to the backup's end
 * record (written by pg_backup_stop after the snapshot) and refuse to start
 * ("WAL ends before end of online backup").  With --wal-archive DIR (a WAL
 * archive that holds the segments up to the backup's end) the writer writes
 * backup_label and tablespace_map from `store`, recovery.signal and a
 * restore_command, so PostgreSQL recovers from the backup's start checkpoint.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libpq-fe.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kura-writer.h"

typedef struct Ctx {
        const char *host, *port, *dbname, *user, *pgdata_opt, *wal_archive;
        unsigned timeout_s;
        PGconn *conn;
        int version;            /* server_version_num */
        bool in_backup;
        bool stop_pending;      /* pg_backup_stop sent, its result not read yet */
        unsigned stop_wait_s;
        char *datadir;
} Ctx;

static int64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void disconnect(Ctx *c) {
        if (c->conn)
                PQfinish(c->conn);
        c->conn = NULL;
}

static int pg_connect(Ctx *c, char *msg, size_t msgsz) {
        if (c->conn && PQstatus(c->conn) == CONNECTION_OK)
                return 0;
        disconnect(c);
        char ct[16], opts[64];
        snprintf(ct, sizeof(ct), "%u", c->timeout_s < 10 ? c->timeout_s : 10);
        /* A statement that takes longer than our event time must fail, not hang the backup. */
        snprintf(opts, sizeof(opts), "-c statement_timeout=%us", c->timeout_s);
        const char *keys[8], *vals[8];
        int n = 0;
        keys[n] = "host", vals[n++] = c->host;
        keys[n] = "port", vals[n++] = c->port;
        keys[n] = "dbname", vals[n++] = c->dbname;
        keys[n] = "connect_timeout", vals[n++] = ct;
        keys[n] = "application_name", vals[n++] = "kura-writer";
        keys[n] = "options", vals[n++] = opts;
        if (c->user)
                keys[n] = "user", vals[n++] = c->user;
        keys[n] = NULL, vals[n] = NULL;
        c->conn = PQconnectdbParams(keys, vals, 0);
        if (!c->conn || PQstatus(c->conn) != CONNECTION_OK) {
                snprintf(msg, msgsz, "cannot connect to PostgreSQL (socket %s, port %s): %s", c->host, c->port,
                         c->conn ? PQerrorMessage(c->conn) : "out of memory");
                /* libpq's messages end in a newline. */
                msg[strcspn(msg, "\n")] = '\0';
                disconnect(c);
                return -ECONNREFUSED;
        }
        c->version = PQserverVersion(c->conn);
        return 0;
}

/* Runs sql; on failure NULL and msg filled. */
static PGresult *pg_exec(Ctx *c, const char *sql, char *msg, size_t msgsz) {
        PGresult *r = PQexec(c->conn, sql);
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                snprintf(msg, msgsz, "%s: %s", sql, r ? PQresultErrorMessage(r) : PQerrorMessage(c->conn));
                msg[strcspn(msg, "\n")] = '\0';
                PQclear(r);
                return NULL;
        }
        return r;
}

static char *pg_value(Ctx *c, const char *sql, char *msg, size_t msgsz) {
        PGresult *r = pg_exec(c, sql, msg, msgsz);
        if (!r)
                return NULL;
        char *v = PQntuples(r) > 0 ? strdup(PQgetvalue(r, 0, 0)) : NULL;
        if (!v)
                snprintf(msg, msgsz, "%s: no result", sql);
        PQclear(r);
        return v;
}

static KwStatus on_identify(Ctx *c, KwRequest *req) {
        char msg[1024];
        json_t *comps = json_array();
        json_object_set_new(req->result, "components", comps);
        json_t *paths = json_array();
        char logical[256];

        if (pg_connect(c, msg, sizeof(msg)) < 0) {
                if (!c->pgdata_opt) {
                        /* A cluster that is not running is consistent at rest: nothing to do for it. */
                        kw_log("warning", "%s; no components (give --pgdata to name the data directory anyway)",
                               msg);
                        json_decref(paths);
                        return KW_OK;
                }
                kw_log("warning", "%s; using --pgdata %s", msg, c->pgdata_opt);
                free(c->datadir);
                c->datadir = strdup(c->pgdata_opt);
                json_array_append_new(paths, json_string(c->datadir));
                snprintf(logical, sizeof(logical), "postgresql/%s", c->port);
        } else {
                char *dd = pg_value(c, "SHOW data_directory", msg, sizeof(msg));
                if (!dd) {
                        json_decref(paths);
                        return kw_fail(req, KW_RETRYABLE, "%s", msg);
                }
                free(c->datadir);
                c->datadir = dd;
                json_array_append_new(paths, json_string(dd));
                /* Tablespaces live outside the data directory: they are part of the cluster. */
                PGresult *r = pg_exec(c,
                                      "SELECT pg_tablespace_location(oid) FROM pg_tablespace "
                                      "WHERE pg_tablespace_location(oid) <> ''",
                                      msg, sizeof(msg));
                for (int i = 0; r && i < PQntuples(r); i++)
                        json_array_append_new(paths, json_string(PQgetvalue(r, i, 0)));
                PQclear(r);
                /* So is a pg_wal moved elsewhere (initdb --waldir). */
                char wal[PATH_MAX], target[PATH_MAX];
                snprintf(wal, sizeof(wal), "%s/pg_wal", dd);
                ssize_t l = readlink(wal, target, sizeof(target) - 1);
                if (l > 0 && target[0] == '/') {
                        target[l] = '\0';
                        json_array_append_new(paths, json_string(target));
                }
                snprintf(logical, sizeof(logical), "postgresql/%d/%s", c->version / 10000, c->port);
        }
        json_t *comp = kw_component("cluster", logical, "user-data", "stop-restore-start", NULL);
        json_object_set_new(comp, "paths", paths);
        json_array_append_new(comps, comp);
        return KW_OK;
}

static void stop_backup_quietly(Ctx *c) {
        if (c->stop_pending) {
                /* pg_backup_stop is still waiting (a frozen filesystem): ending
                 * the session ends the backup on the server. */
                kw_log("warning", "pg_backup_stop did not finish: closing the session ends the backup");
                c->stop_pending = false;
                disconnect(c);
                return;
        }
        if (!c->in_backup)
                return;
        c->in_backup = false;
        if (!c->conn || PQstatus(c->conn) != CONNECTION_OK)
                return; /* the server ended the backup with the session */
        char msg[1024];
        PGresult *r = pg_exec(c,
                              c->version >= 150000 ? "SELECT * FROM pg_backup_stop(false)"
                                                   : "SELECT * FROM pg_stop_backup(false, false)",
                              msg, sizeof(msg));
        if (!r)
                kw_log("warning", "ending backup mode: %s", msg);
        else
                kw_log("info", "backup mode ended (abort)");
        PQclear(r);
}

static KwStatus on_prepare_backup(Ctx *c, KwRequest *req) {
        if (pg_connect(c, req->message, sizeof(req->message)) < 0)
                return KW_RETRYABLE;
        if (c->version < 90600)
                return kw_fail(req, KW_NON_RETRYABLE,
                               "PostgreSQL %d is too old: non-exclusive backups need 9.6 or later", c->version);
        return KW_OK;
}

static KwStatus on_prepare_snapshot(Ctx *c, KwRequest *req) {
        PGresult *r;
        if (pg_connect(c, req->message, sizeof(req->message)) < 0)
                return KW_RETRYABLE;
        stop_backup_quietly(c); /* a retried sequence: start afresh */
        /* A checkpoint now makes the one pg_backup_start does short. */
        r = pg_exec(c, "CHECKPOINT", req->message, sizeof(req->message));
        if (!r)
                return KW_RETRYABLE;
        PQclear(r);
        r = pg_exec(c,
                    c->version >= 150000 ? "SELECT pg_backup_start('kura', true)"
                                         : "SELECT pg_start_backup('kura', true, false)",
                    req->message, sizeof(req->message));
        if (!r)
                return KW_RETRYABLE;
        kw_log("info", "backup mode started at %s", PQgetvalue(r, 0, 0));
        PQclear(r);
        c->in_backup = true;
        return KW_OK;
}

/* Wait up to wait_ms for the result of the query in flight: 1 got it (*ret),
 * 0 not yet, <0 the connection failed (msg filled). */
static int wait_result(Ctx *c, int wait_ms, PGresult **ret, char *msg, size_t msgsz) {
        for (;;) {
                if (!PQconsumeInput(c->conn)) {
                        snprintf(msg, msgsz, "pg_backup_stop: %s", PQerrorMessage(c->conn));
                        msg[strcspn(msg, "\n")] = '\0';
                        return -EIO;
                }
                if (!PQisBusy(c->conn))
                        break;
                if (wait_ms <= 0)
                        return 0;
                struct pollfd p = { .fd = PQsocket(c->conn), .events = POLLIN };
                int64_t t0 = mono_ms();
                (void) poll(&p, 1, wait_ms);
                wait_ms -= (int) (mono_ms() - t0);
        }
        PGresult *r, *last = NULL;
        while ((r = PQgetResult(c->conn))) {
                PQclear(last);
                last = r;
        }
        if (!last || PQresultStatus(last) != PGRES_TUPLES_OK) {
                snprintf(msg, msgsz, "pg_backup_stop: %s", last ? PQresultErrorMessage(last) : PQerrorMessage(c->conn));
                msg[strcspn(msg, "\n")] = '\0';
                PQclear(last);
                return -EIO;
        }
        *ret = last;
        return 1;
}

static KwStatus store_from(Ctx *c, PGresult *r, KwRequest *req) {
        if (PQntuples(r) != 1 || PQnfields(r) != 3) {
                PQclear(r);
                return kw_fail(req, KW_NON_RETRYABLE, "pg_backup_stop returned an unexpected result");
        }
        json_t *store = json_object();
        json_object_set_new(store, "backup_label", json_string(PQgetvalue(r, 0, 1)));
        json_object_set_new(store, "tablespace_map", json_string(PQgetisnull(r, 0, 2) ? "" : PQgetvalue(r, 0, 2)));
        json_object_set_new(store, "stop_lsn", json_string(PQgetvalue(r, 0, 0)));
        if (c->datadir)
                json_object_set_new(store, "data_directory", json_string(c->datadir));
        json_object_set_new(req->result, "store", store);
        kw_log("info", "backup mode ended at %s", PQgetvalue(r, 0, 0));
        PQclear(r);
        return KW_OK;
}

/* pg_backup_stop writes WAL.  A provider that keeps the filesystem frozen
 * until the copy is done (fsfreeze) sends post-snapshot while it still is:
 * the stop then cannot finish before the copy, so it is sent without waiting
 * for ever; its result (the store) comes with backup-complete, or the backup
 * ends with the session. */
static KwStatus on_post_snapshot(Ctx *c, KwRequest *req) {
        if (!c->in_backup)
                return kw_fail(req, KW_RETRYABLE, "post-snapshot without backup mode (prepare-for-snapshot missing)");
        c->in_backup = false;
        if (!c->conn || PQstatus(c->conn) != CONNECTION_OK)
                return kw_fail(req, KW_RETRYABLE,
                               "the connection to PostgreSQL was lost during the snapshot (backup mode ended)");
        if (!PQsendQuery(c->conn, c->version >= 150000 ? "SELECT lsn, labelfile, spcmapfile FROM pg_backup_stop(true)"
                                                       : "SELECT lsn, labelfile, spcmapfile FROM pg_stop_backup(false, true)"))
                return kw_fail(req, KW_RETRYABLE, "pg_backup_stop: %s", PQerrorMessage(c->conn));
        PGresult *r = NULL;
        int q = wait_result(c, (int) c->stop_wait_s * 1000, &r, req->message, sizeof(req->message));
        if (q < 0) {
                disconnect(c);
                return KW_RETRYABLE;
        }
        if (q == 0) {
                c->stop_pending = true;
                kw_log("warning", "pg_backup_stop is waiting (filesystem still frozen?): its backup_label comes "
                       "with backup-complete");
                return KW_OK;
        }
        return store_from(c, r, req);
}

static KwStatus on_backup_complete(Ctx *c, KwRequest *req) {
        if (!c->stop_pending)
                return KW_OK;
        PGresult *r = NULL;
        char msg[1024];
        /* Short: with fsfreeze the filesystem thaws only after backup-complete. */
        int q = wait_result(c, c->stop_wait_s < 2 ? (int) c->stop_wait_s * 1000 : 2000, &r, msg, sizeof(msg));
        if (q == 0) {
                kw_log("warning", "pg_backup_stop has not finished yet: no backup_label kept for this backup");
                return KW_OK;
        }
        c->stop_pending = false;
        if (q < 0) {
                kw_log("warning", "%s", msg);
                disconnect(c);
                return KW_OK;
        }
        return store_from(c, r, req);
}

/* Write path with contents atomically (temp + fsync + rename). */
static int write_file(const char *dir, const char *name, const char *contents, char *msg, size_t msgsz) {
        char path[PATH_MAX], tmp[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        snprintf(tmp, sizeof(tmp), "%s/.%s.kura-tmp", dir, name);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                snprintf(msg, msgsz, "cannot create %.600s: %s", tmp, strerror(errno));
                return -errno;
        }
        size_t n = strlen(contents), off = 0;
        while (off < n) {
                ssize_t w = write(fd, contents + off, n - off);
                if (w < 0) {
                        int e = errno;
                        close(fd);
                        unlink(tmp);
                        snprintf(msg, msgsz, "cannot write %.600s: %s", tmp, strerror(e));
                        return -e;
                }
                off += (size_t) w;
        }
        if (fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
                int e = errno;
                unlink(tmp);
                snprintf(msg, msgsz, "cannot write %.600s: %s", path, strerror(e));
                return -e;
        }
        return 0;
}

static KwStatus on_post_restore(Ctx *c, KwRequest *req) {
        json_t *store = json_object_get(req->args, "store");
        const char *dd = c->pgdata_opt ? c->pgdata_opt : kw_args_str(store, "data_directory");
        if (!dd)
                return kw_fail(req, KW_NON_RETRYABLE,
                               "post-restore: no data directory (give --pgdata, or restore a backup whose store "
                               "names it)");
        char pid[PATH_MAX];
        struct stat st;
        snprintf(pid, sizeof(pid), "%s/PG_VERSION", dd);
        if (stat(pid, &st) < 0)
                return kw_fail(req, KW_NON_RETRYABLE, "post-restore: %s is not a PostgreSQL data directory: %s", dd,
                               strerror(errno));
        /* The snapshot was taken from a running server: its lock file would
         * make the restored cluster refuse to start if that PID is alive. */
        snprintf(pid, sizeof(pid), "%s/postmaster.pid", dd);
        if (unlink(pid) == 0)
                kw_log("info", "removed the stale %s", pid);

        if (!c->wal_archive) {
                kw_log("info", "%s: PostgreSQL will run crash recovery from the snapshot's checkpoint", dd);
                return KW_OK;
        }
        const char *label = kw_args_str(store, "backup_label");
        const char *map = kw_args_str(store, "tablespace_map");
        if (!label || !*label)
                return kw_fail(req, KW_NON_RETRYABLE, "post-restore: the backup's store holds no backup_label");
        if (write_file(dd, "backup_label", label, req->message, sizeof(req->message)) < 0)
                return KW_NON_RETRYABLE;
        if (map && *map && write_file(dd, "tablespace_map", map, req->message, sizeof(req->message)) < 0)
                return KW_NON_RETRYABLE;
        if (write_file(dd, "recovery.signal", "", req->message, sizeof(req->message)) < 0)
                return KW_NON_RETRYABLE;
        char conf[PATH_MAX];
        snprintf(conf, sizeof(conf), "%s/postgresql.auto.conf", dd);
        FILE *f = fopen(conf, "ae");
        if (!f || fprintf(f, "# added by kura-writer-postgresql at restore\nrestore_command = 'cp %s/%%f %%p'\n",
                          c->wal_archive) < 0 || fclose(f) != 0)
                return kw_fail(req, KW_NON_RETRYABLE, "cannot append to %s: %s", conf, strerror(errno));
        kw_log("info", "%s: backup_label written; PostgreSQL will recover from the backup's start with WAL from %s",
               dd, c->wal_archive);
        return KW_OK;
}

static KwStatus handle(void *userdata, KwRequest *req) {
        Ctx *c = userdata;
        const char *e = req->event;
        if (strcmp(e, "identify") == 0)
                return on_identify(c, req);
        if (strcmp(e, "prepare-for-backup") == 0)
                return on_prepare_backup(c, req);
        if (strcmp(e, "prepare-for-snapshot") == 0)
                return on_prepare_snapshot(c, req);
        if (strcmp(e, "post-snapshot") == 0)
                return on_post_snapshot(c, req);
        if (strcmp(e, "post-restore") == 0)
                return on_post_restore(c, req);
        if (strcmp(e, "backup-complete") == 0)
                return on_backup_complete(c, req);
        if (strcmp(e, "abort") == 0) {
                stop_backup_quietly(c);
                return KW_OK;
        }
        if (strcmp(e, "backup-shutdown") == 0) {
                stop_backup_quietly(c);
                disconnect(c);
                return KW_OK;
        }
        return KW_OK; /* freeze, thaw, backup-complete, pre-restore, unknown */
}

static void undo(void *userdata, const char *why) {
        Ctx *c = userdata;
        if (c->in_backup)
                kw_log("warning", "ending backup mode: %s", why);
        stop_backup_quietly(c);
}

static void usage(void) {
        fprintf(stderr,
                "usage: %s [--host SOCKETDIR] [--port PORT] [--dbname DB] [--user USER] [--pgdata DIR]\n"
                "          [--timeout SECONDS] [--wal-archive DIR] [--stop-wait SECONDS]\n",
                kw_program);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "host", required_argument, NULL, 'H' },
                { "port", required_argument, NULL, 'p' },
                { "dbname", required_argument, NULL, 'd' },
                { "user", required_argument, NULL, 'U' },
                { "pgdata", required_argument, NULL, 'D' },
                { "timeout", required_argument, NULL, 't' },
                { "wal-archive", required_argument, NULL, 'w' },
                { "stop-wait", required_argument, NULL, 's' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        Ctx c = { .host = "/var/run/postgresql", .port = "5432", .dbname = "postgres", .timeout_s = 50,
                  .stop_wait_s = 5 };
        int o;
        kw_program = "kura-writer-postgresql";
        while ((o = getopt_long(argc, argv, "H:p:d:U:D:t:w:s:h", opts, NULL)) >= 0) {
                switch (o) {
                case 'H':
                        c.host = optarg;
                        break;
                case 'p':
                        c.port = optarg;
                        break;
                case 'd':
                        c.dbname = optarg;
                        break;
                case 'U':
                        c.user = optarg;
                        break;
                case 'D':
                        c.pgdata_opt = optarg;
                        break;
                case 'w':
                        c.wal_archive = optarg;
                        break;
                case 's':
                        if (kw_parse_seconds(optarg, &c.stop_wait_s) < 0) {
                                usage();
                                return 2;
                        }
                        break;
                case 't':
                        if (kw_parse_seconds(optarg, &c.timeout_s) < 0 || c.timeout_s == 0) {
                                usage();
                                return 2;
                        }
                        break;
                case 'h':
                        usage();
                        return 0;
                default:
                        usage();
                        return 2;
                }
        }
        if (optind != argc) {
                usage();
                return 2;
        }
        KwWriterDesc d = {
                .name = "PostgreSQL Writer",
                .class_id = "b8f3d1c2-7a64-4e09-9d5b-2c1e8f7a6b43",
                .capabilities = (const char *const[]) { "restore", NULL },
                .handle = handle,
                .undo = undo,
                .userdata = &c,
                /* No freeze is held (backup mode needs none): no watchdog. */
        };
        int rc = kw_run(&d);
        disconnect(&c);
        free(c.datadir);
        return rc;
}
