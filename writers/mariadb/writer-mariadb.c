/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kura-writer-mariadb: holds a global read lock on a MariaDB (or MySQL)
 * server while the snapshot is taken.
 *
 *   kura-writer-mariadb [--socket PATH] [--user USER] [--datadir DIR]
 *                       [--lock-timeout SECONDS] [--timeout SECONDS] [--freeze-limit SECONDS]
 *
 * Connects over the unix socket (default /run/mysqld/mysqld.sock) as USER
 * (default: the OS user it runs as, which unix_socket authentication accepts;
 * a password, if one is needed, comes from ~/.my.cnf's [client] group).
 * freeze: FLUSH TABLES WITH READ LOCK on a connection held open (no
 * auto-reconnect: a reconnect would silently drop the lock), after
 * lock_wait_timeout = --lock-timeout (default 10 s; a timeout is retryable).
 * thaw: UNLOCK TABLES; if the connection was lost while frozen the lock was
 * too, and thaw fails non-retryable.  abort: UNLOCK TABLES.
 * One component, "server": @@datadir (and InnoDB log/data directories kept
 * elsewhere), stop-restore-start.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kura-writer.h"

typedef struct Ctx {
        const char *socket, *user, *datadir_opt;
        unsigned lock_timeout_s, timeout_s;
        MYSQL *conn;
        bool frozen;
        bool lost_freeze;
} Ctx;

static void disconnect(Ctx *c) {
        if (c->conn)
                mysql_close(c->conn);
        c->conn = NULL;
}

static int db_connect(Ctx *c, char *msg, size_t msgsz) {
        if (c->conn)
                return 0;
        c->conn = mysql_init(NULL);
        if (!c->conn) {
                snprintf(msg, msgsz, "mysql_init: out of memory");
                return -ENOMEM;
        }
        unsigned ct = c->timeout_s < 10 ? c->timeout_s : 10, rt = c->timeout_s;
        my_bool no = 0;
        mysql_options(c->conn, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
        mysql_options(c->conn, MYSQL_OPT_READ_TIMEOUT, &rt);
        mysql_options(c->conn, MYSQL_OPT_WRITE_TIMEOUT, &rt);
        mysql_options(c->conn, MYSQL_OPT_RECONNECT, &no);
        mysql_options(c->conn, MYSQL_READ_DEFAULT_GROUP, "client");
        if (!mysql_real_connect(c->conn, "localhost", c->user, NULL, NULL, 0, c->socket, 0)) {
                snprintf(msg, msgsz, "cannot connect to MariaDB (socket %s, user %s): %s", c->socket, c->user,
                         mysql_error(c->conn));
                disconnect(c);
                return -ECONNREFUSED;
        }
        return 0;
}

/* Runs sql (results discarded); on failure the server's errno (or -1) and msg filled. */
static int db_exec(Ctx *c, const char *sql, char *msg, size_t msgsz) {
        if (mysql_query(c->conn, sql) != 0) {
                unsigned e = mysql_errno(c->conn);
                snprintf(msg, msgsz, "%s: %s (error %u)", sql, mysql_error(c->conn), e);
                return e ? (int) e : -1;
        }
        MYSQL_RES *r = mysql_store_result(c->conn);
        mysql_free_result(r);
        return 0;
}

static bool conn_lost(unsigned e) {
        return e == 2006 /* CR_SERVER_GONE_ERROR */ || e == 2013 /* CR_SERVER_LOST */ ||
               e == 2055 /* CR_SERVER_LOST_EXTENDED */ || e == 4031 /* ER_CLIENT_INTERACTION_TIMEOUT */;
}

static KwStatus on_identify(Ctx *c, KwRequest *req) {
        char msg[1024];
        json_t *comps = json_array(), *paths = json_array();
        json_object_set_new(req->result, "components", comps);
        if (db_connect(c, msg, sizeof(msg)) < 0) {
                if (!c->datadir_opt) {
                        kw_log("warning", "%s; no components (give --datadir to name the data directory anyway)",
                               msg);
                        json_decref(paths);
                        return KW_OK;
                }
                kw_log("warning", "%s; using --datadir %s", msg, c->datadir_opt);
                json_array_append_new(paths, json_string(c->datadir_opt));
        } else {
                if (mysql_query(c->conn, "SELECT @@datadir, @@innodb_log_group_home_dir, @@innodb_data_home_dir") !=
                    0) {
                        json_decref(paths);
                        return kw_fail(req, KW_RETRYABLE, "SELECT @@datadir: %s", mysql_error(c->conn));
                }
                MYSQL_RES *r = mysql_store_result(c->conn);
                MYSQL_ROW row = r ? mysql_fetch_row(r) : NULL;
                if (!row || !row[0]) {
                        mysql_free_result(r);
                        json_decref(paths);
                        return kw_fail(req, KW_RETRYABLE, "SELECT @@datadir: no result");
                }
                char dd[PATH_MAX];
                snprintf(dd, sizeof(dd), "%s", row[0]);
                size_t l = strlen(dd);
                while (l > 1 && dd[l - 1] == '/')
                        dd[--l] = '\0';
                json_array_append_new(paths, json_string(dd));
                /* InnoDB files kept outside the datadir belong to the same server. */
                for (int i = 1; i <= 2; i++) {
                        if (!row[i] || row[i][0] != '/' || strncmp(row[i], dd, l) == 0)
                                continue;
                        char p[PATH_MAX];
                        snprintf(p, sizeof(p), "%s", row[i]);
                        size_t pl = strlen(p);
                        while (pl > 1 && p[pl - 1] == '/')
                                p[--pl] = '\0';
                        json_array_append_new(paths, json_string(p));
                }
                mysql_free_result(r);
        }
        json_t *comp = kw_component("server", "mariadb/server", "user-data", "stop-restore-start", NULL);
        json_object_set_new(comp, "paths", paths);
        json_array_append_new(comps, comp);
        return KW_OK;
}

static void unlock_quietly(Ctx *c) {
        if (!c->frozen)
                return;
        c->frozen = false;
        char msg[1024];
        if (c->conn && db_exec(c, "UNLOCK TABLES", msg, sizeof(msg)) != 0)
                kw_log("warning", "%s", msg);
}

static KwStatus on_freeze(Ctx *c, KwRequest *req) {
        char sql[128];
        c->lost_freeze = false;
        if (db_connect(c, req->message, sizeof(req->message)) < 0)
                return KW_RETRYABLE;
        if (c->frozen)
                return KW_OK;
        snprintf(sql, sizeof(sql), "SET SESSION lock_wait_timeout = %u", c->lock_timeout_s);
        int e = db_exec(c, sql, req->message, sizeof(req->message));
        if (e == 0)
                e = db_exec(c, "FLUSH TABLES WITH READ LOCK", req->message, sizeof(req->message));
        if (e != 0) {
                if (e > 0 && conn_lost((unsigned) e))
                        disconnect(c);
                /* A lock wait timeout (long transaction, DDL) may pass: retry later. */
                return e == ER_LOCK_WAIT_TIMEOUT || (e > 0 && conn_lost((unsigned) e)) ? KW_RETRYABLE
                                                                                         : KW_NON_RETRYABLE;
        }
        c->frozen = true;
        kw_log("info", "global read lock held (FLUSH TABLES WITH READ LOCK)");
        return KW_OK;
}

static KwStatus on_thaw(Ctx *c, KwRequest *req) {
        bool was_lost = c->lost_freeze;
        c->lost_freeze = false;
        if (was_lost)
                return kw_fail(req, KW_NON_RETRYABLE,
                               "the read lock was released before thaw (freeze limit passed): the snapshot may not "
                               "be consistent");
        if (!c->frozen)
                return KW_OK;
        c->frozen = false;
        int e = db_exec(c, "UNLOCK TABLES", req->message, sizeof(req->message));
        if (e != 0) {
                if (e > 0 && conn_lost((unsigned) e)) {
                        disconnect(c);
                        return kw_fail(req, KW_NON_RETRYABLE,
                                       "the connection to MariaDB was lost while frozen, and the read lock with "
                                       "it: the snapshot may not be consistent");
                }
                return KW_NON_RETRYABLE;
        }
        return KW_OK;
}

static KwStatus handle(void *userdata, KwRequest *req) {
        Ctx *c = userdata;
        const char *e = req->event;
        if (strcmp(e, "identify") == 0)
                return on_identify(c, req);
        if (strcmp(e, "prepare-for-backup") == 0 || strcmp(e, "prepare-for-snapshot") == 0)
                return db_connect(c, req->message, sizeof(req->message)) < 0 ? KW_RETRYABLE : KW_OK;
        if (strcmp(e, "freeze") == 0)
                return on_freeze(c, req);
        if (strcmp(e, "thaw") == 0)
                return on_thaw(c, req);
        if (strcmp(e, "abort") == 0) {
                unlock_quietly(c);
                c->lost_freeze = false;
                return KW_OK;
        }
        if (strcmp(e, "backup-shutdown") == 0) {
                unlock_quietly(c);
                disconnect(c);
                return KW_OK;
        }
        return KW_OK;
}

static void undo(void *userdata, const char *why) {
        Ctx *c = userdata;
        if (c->frozen) {
                kw_log("warning", "releasing the read lock: %s", why);
                c->lost_freeze = true;
        }
        unlock_quietly(c);
}

static void usage(void) {
        fprintf(stderr,
                "usage: %s [--socket PATH] [--user USER] [--datadir DIR] [--lock-timeout SECONDS]\n"
                "          [--timeout SECONDS] [--freeze-limit SECONDS]\n",
                kw_program);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "socket", required_argument, NULL, 's' },
                { "user", required_argument, NULL, 'u' },
                { "datadir", required_argument, NULL, 'D' },
                { "lock-timeout", required_argument, NULL, 'l' },
                { "timeout", required_argument, NULL, 't' },
                { "freeze-limit", required_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        Ctx c = { .socket = "/run/mysqld/mysqld.sock", .lock_timeout_s = 10, .timeout_s = 50 };
        unsigned freeze_limit = 120;
        int o;
        kw_program = "kura-writer-mariadb";
        while ((o = getopt_long(argc, argv, "s:u:D:l:t:f:h", opts, NULL)) >= 0) {
                unsigned *target = NULL;
                switch (o) {
                case 's':
                        c.socket = optarg;
                        break;
                case 'u':
                        c.user = optarg;
                        break;
                case 'D':
                        c.datadir_opt = optarg;
                        break;
                case 'l':
                        target = &c.lock_timeout_s;
                        break;
                case 't':
                        target = &c.timeout_s;
                        break;
                case 'f':
                        target = &freeze_limit;
                        break;
                case 'h':
                        usage();
                        return 0;
                default:
                        usage();
                        return 2;
                }
                if (target && (kw_parse_seconds(optarg, target) < 0 || *target == 0)) {
                        usage();
                        return 2;
                }
        }
        if (optind != argc) {
                usage();
                return 2;
        }
        if (!c.user) {
                struct passwd *pw = getpwuid(geteuid());
                c.user = pw ? pw->pw_name : "root";
        }
        KwWriterDesc d = {
                .name = "MariaDB Writer",
                .class_id = "e2a7c914-3d58-4b6f-8a01-9c4d5e6f7a82",
                .handle = handle,
                .undo = undo,
                .userdata = &c,
                .freeze_limit_s = freeze_limit,
        };
        int rc = kw_run(&d);
        disconnect(&c);
        return rc;
}
