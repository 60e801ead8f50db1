/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kura-writer-sqlite: quiesces SQLite databases for a snapshot.
 *
 *   kura-writer-sqlite [--config FILE] [--busy-timeout SECONDS] [--freeze-limit SECONDS] DB...
 *
 * prepare-for-snapshot: PRAGMA wal_checkpoint(TRUNCATE), so the snapshot
 * holds (almost) everything in the main file and a short WAL.
 * freeze: BEGIN IMMEDIATE on every database, held open: no other connection
 * can commit until thaw (ROLLBACK; we wrote nothing).  Other processes keep
 * reading; their writers wait on their busy timeout.
 * One component per database: the file and its -wal and -shm.
 *
 * --config FILE: one database path a line, '#' comments.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kura-writer.h"

typedef struct Db {
        char *path;             /* absolute */
        sqlite3 *conn;          /* opened lazily, kept for the writer's life */
        bool locked;            /* BEGIN IMMEDIATE held */
} Db;

typedef struct Ctx {
        Db *dbs;
        size_t n;
        unsigned busy_timeout_s;
        bool lost_freeze;       /* the watchdog or a peer loss released the locks */
} Ctx;

static int db_open(Db *db, unsigned busy_s, char *msg, size_t msgsz) {
        if (db->conn)
                return 0;
        /* Never create a database that is not there: a typo must fail loudly. */
        int rc = sqlite3_open_v2(db->path, &db->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                snprintf(msg, msgsz, "cannot open SQLite database %s: %s", db->path,
                         db->conn ? sqlite3_errmsg(db->conn) : sqlite3_errstr(rc));
                sqlite3_close(db->conn);
                db->conn = NULL;
                return -EIO;
        }
        sqlite3_busy_timeout(db->conn, (int) (busy_s * 1000));
        /* Read the schema now: it proves the file is a database, and a
         * connection only learns that the database is in WAL mode when it
         * first reads it (a checkpoint before that is a no-op). */
        char *e = NULL;
        rc = sqlite3_exec(db->conn, "SELECT count(*) FROM sqlite_master", NULL, NULL, &e);
        if (rc != SQLITE_OK) {
                snprintf(msg, msgsz, "%s is not a usable SQLite database: %s", db->path, e ? e : sqlite3_errstr(rc));
                sqlite3_free(e);
                sqlite3_close(db->conn);
                db->conn = NULL;
                return rc == SQLITE_BUSY ? -EBUSY : -EIO;
        }
        return 0;
}

static int db_exec(Db *db, const char *sql, char *msg, size_t msgsz, bool *ret_busy) {
        char *e = NULL;
        int rc = sqlite3_exec(db->conn, sql, NULL, NULL, &e);
        if (ret_busy)
                *ret_busy = rc == SQLITE_BUSY || rc == SQLITE_LOCKED;
        if (rc != SQLITE_OK) {
                snprintf(msg, msgsz, "%s on %s: %s", sql, db->path, e ? e : sqlite3_errstr(rc));
                sqlite3_free(e);
                return -EIO;
        }
        return 0;
}

static void release_all(Ctx *c) {
        for (size_t i = 0; i < c->n; i++) {
                if (!c->dbs[i].locked)
                        continue;
                char msg[512];
                if (db_exec(&c->dbs[i], "ROLLBACK", msg, sizeof(msg), NULL) < 0)
                        kw_log("warning", "%s", msg);
                c->dbs[i].locked = false;
        }
}

static KwStatus on_identify(Ctx *c, KwRequest *req) {
        json_t *comps = json_array();
        for (size_t i = 0; i < c->n; i++) {
                char wal[PATH_MAX + 8], shm[PATH_MAX + 8], logical[PATH_MAX + 16];
                snprintf(wal, sizeof(wal), "%s-wal", c->dbs[i].path);
                snprintf(shm, sizeof(shm), "%s-shm", c->dbs[i].path);
                snprintf(logical, sizeof(logical), "sqlite%s", c->dbs[i].path);
                const char *paths[] = { c->dbs[i].path, wal, shm, NULL };
                json_array_append_new(comps, kw_component(c->dbs[i].path, logical, "user-data",
                                                          "restore-if-can-replace", paths));
        }
        json_object_set_new(req->result, "components", comps);
        return KW_OK;
}

static KwStatus on_prepare_backup(Ctx *c, KwRequest *req) {
        for (size_t i = 0; i < c->n; i++)
                if (db_open(&c->dbs[i], c->busy_timeout_s, req->message, sizeof(req->message)) < 0)
                        return KW_NON_RETRYABLE;
        return KW_OK;
}

static KwStatus on_prepare_snapshot(Ctx *c, KwRequest *req) {
        for (size_t i = 0; i < c->n; i++) {
                Db *db = &c->dbs[i];
                if (db_open(db, c->busy_timeout_s, req->message, sizeof(req->message)) < 0)
                        return KW_NON_RETRYABLE;
                int log = -1, ckpt = -1;
                int rc = sqlite3_wal_checkpoint_v2(db->conn, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log, &ckpt);
                if (rc == SQLITE_BUSY)
                        /* Readers kept part of the WAL: still consistent, only a longer WAL in the copy. */
                        kw_log("info", "%s: checkpoint incomplete (busy), %d of %d WAL frames copied", db->path,
                               ckpt, log);
                else if (rc != SQLITE_OK)
                        return kw_fail(req, KW_RETRYABLE, "PRAGMA wal_checkpoint(TRUNCATE) on %s: %s", db->path,
                                       sqlite3_errmsg(db->conn));
        }
        return KW_OK;
}

static KwStatus on_freeze(Ctx *c, KwRequest *req) {
        c->lost_freeze = false;
        for (size_t i = 0; i < c->n; i++) {
                Db *db = &c->dbs[i];
                bool busy = false;
                if (db_open(db, c->busy_timeout_s, req->message, sizeof(req->message)) < 0) {
                        release_all(c);
                        return KW_NON_RETRYABLE;
                }
                if (db->locked)
                        continue;
                if (db_exec(db, "BEGIN IMMEDIATE", req->message, sizeof(req->message), &busy) < 0) {
                        release_all(c);
                        return busy ? KW_RETRYABLE : KW_NON_RETRYABLE;
                }
                db->locked = true;
        }
        kw_log("info", "%zu database(s) locked for writing", c->n);
        return KW_OK;
}

static KwStatus on_thaw(Ctx *c, KwRequest *req) {
        bool was_lost = c->lost_freeze;
        release_all(c);
        c->lost_freeze = false;
        if (was_lost)
                return kw_fail(req, KW_NON_RETRYABLE,
                               "the write locks were released before thaw (freeze limit passed): the snapshot may "
                               "not be consistent");
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
        if (strcmp(e, "freeze") == 0)
                return on_freeze(c, req);
        if (strcmp(e, "thaw") == 0)
                return on_thaw(c, req);
        if (strcmp(e, "abort") == 0 || strcmp(e, "backup-shutdown") == 0) {
                release_all(c);
                c->lost_freeze = false;
                return KW_OK;
        }
        return KW_OK; /* post-snapshot, backup-complete, pre/post-restore, unknown */
}

static void undo(void *userdata, const char *why) {
        Ctx *c = userdata;
        bool any = false;
        for (size_t i = 0; i < c->n; i++)
                any |= c->dbs[i].locked;
        if (any) {
                kw_log("warning", "releasing the write locks: %s", why);
                c->lost_freeze = true;
        }
        release_all(c);
}

static int add_db(Ctx *c, const char *p) {
        char abs[PATH_MAX];
        if (!realpath(p, abs)) {
                fprintf(stderr, "%s: database %s: %s\n", kw_program, p, strerror(errno));
                return -errno;
        }
        Db *n = realloc(c->dbs, (c->n + 1) * sizeof(*n));
        if (!n)
                return -ENOMEM;
        c->dbs = n;
        c->dbs[c->n++] = (Db) { .path = strdup(abs) };
        return c->dbs[c->n - 1].path ? 0 : -ENOMEM;
}

static int read_config(Ctx *c, const char *file) {
        FILE *f = fopen(file, "re");
        if (!f) {
                fprintf(stderr, "%s: config %s: %s\n", kw_program, file, strerror(errno));
                return -errno;
        }
        char line[PATH_MAX + 2];
        int r = 0;
        while (r == 0 && fgets(line, sizeof(line), f)) {
                char *s = line + strspn(line, " \t");
                s[strcspn(s, "\r\n")] = '\0';
                size_t l = strlen(s);
                while (l > 0 && (s[l - 1] == ' ' || s[l - 1] == '\t'))
                        s[--l] = '\0';
                if (*s == '\0' || *s == '#' || *s == ';')
                        continue;
                r = add_db(c, s);
        }
        fclose(f);
        return r;
}

static void usage(FILE *f) {
        fprintf(f, "usage: %s [--config FILE] [--busy-timeout SECONDS] [--freeze-limit SECONDS] DB...\n",
                kw_program);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "config", required_argument, NULL, 'c' },
                { "busy-timeout", required_argument, NULL, 'b' },
                { "freeze-limit", required_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        Ctx c = { .busy_timeout_s = 10 };
        unsigned freeze_limit = 120;
        int o;
        kw_program = "kura-writer-sqlite";
        while ((o = getopt_long(argc, argv, "c:b:f:h", opts, NULL)) >= 0) {
                switch (o) {
                case 'c':
                        if (read_config(&c, optarg) < 0)
                                return 2;
                        break;
                case 'b':
                        if (kw_parse_seconds(optarg, &c.busy_timeout_s) < 0) {
                                usage(stderr);
                                return 2;
                        }
                        break;
                case 'f':
                        if (kw_parse_seconds(optarg, &freeze_limit) < 0) {
                                usage(stderr);
                                return 2;
                        }
                        break;
                case 'h':
                        usage(stderr); /* stdout belongs to the protocol */
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        for (int i = optind; i < argc; i++)
                if (add_db(&c, argv[i]) < 0)
                        return 2;
        if (c.n == 0) {
                usage(stderr);
                return 2;
        }

        KwWriterDesc d = {
                .name = "SQLite Writer",
                .class_id = "6a3c2f0e-5b1d-4c8e-9f27-1d0b7e4a9c31",
                .handle = handle,
                .undo = undo,
                .userdata = &c,
                .freeze_limit_s = freeze_limit,
        };
        int rc = kw_run(&d);
        for (size_t i = 0; i < c.n; i++) {
                sqlite3_close(c.dbs[i].conn);
                free(c.dbs[i].path);
        }
        free(c.dbs);
        return rc;
}
