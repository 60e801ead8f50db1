/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * lib/snap coordinator and writers: declarations, the protocol codec, and
 * whole backup sequences against the fixture writers in
 * tests/fixtures/writers/ with provider "none" on unmounted image files
 * (no root, no loop devices needed).  Each fixture writer logs every event it
 * receives to a file, so the tests assert the exact order the coordinator
 * drove it in.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "snap/writer-internal.h"

static char tmpdir[64];
static char confdir[256], statedir[256], wdir[512], img[256], img2[256];
static char fixtures[PATH_MAX];

#define CLASS_A "1b6a8e0c-0f5b-4c61-9a0e-5d2a7f3b9c01"
#define CLASS_B "2c7b9f1d-1a6c-4d72-8b1f-6e3b8a4c0d02"

/* ---- helpers -------------------------------------------------------------- */

static void write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static char *read_text(const char *path) {
        FILE *f = fopen(path, "re");
        if (!f)
                return strdup("");
        static char buf[65536];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        return strdup(buf);
}

/* Declare a fixture writer: writers.d/<file>.conf running writer-<mode>.sh,
 * logging to <tmp>/<file>.log, its component on paths (JSON strings). */
static void declare(const char *file, const char *name, const char *class, const char *mode, const char *paths,
                    const char *extra) {
        char path[PATH_MAX * 2], text[8192];
        snprintf(path, sizeof path, "%s/%s.conf", wdir, file);
        snprintf(text, sizeof text,
                 "# fixture\n[Writer]\nName = %s\nClassId=%s\nExec=%s/writer-%s.sh\n"
                 "Environment=WRITER_LOG=%s/%s.log\nEnvironment=WRITER_CLASS=%s\nEnvironment=WRITER_NAME=%s\n"
                 "Environment=WRITER_PATHS=%s\nIdentifyTimeout=5\nEventTimeout=5\nFreezeTimeout=1.5\n"
                 "RetryCount=2\nRetryDelay=0.1\n%s",
                 name, class, fixtures, mode, tmpdir, file, class, name, paths, extra ? extra : "");
        write_text(path, text);
}

static char *log_of(const char *file) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s.log", tmpdir, file);
        return read_text(path);
}

static char img_paths[PATH_MAX + 8];

static int setup(void **state) {
        (void)state;
        snprintf(tmpdir, sizeof tmpdir, "/tmp/kura-snap-XXXXXX");
        assert_non_null(mkdtemp(tmpdir));
        snprintf(confdir, sizeof confdir, "%s/etc", tmpdir);
        snprintf(statedir, sizeof statedir, "%s/state", tmpdir);
        snprintf(wdir, sizeof wdir, "%s/writers.d", confdir);
        snprintf(img, sizeof img, "%s/vol.img", tmpdir);
        snprintf(img2, sizeof img2, "%s/vol2.img", tmpdir);
        assert_int_equal(mkdir(confdir, 0700), 0);
        assert_int_equal(mkdir(statedir, 0700), 0);
        assert_int_equal(mkdir(wdir, 0700), 0);
        int fd = open(img, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 1 << 20), 0);
        close(fd);
        fd = open(img2, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 1 << 20), 0);
        close(fd);
        snprintf(img_paths, sizeof img_paths, "\"%s\"", img);
        return 0;
}

static int teardown(void **state) {
        (void)state;
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        assert_int_equal(system(cmd), 0);
        return 0;
}

static KuraSnapOpts opts(void) {
        KuraSnapOpts o = {.config_dir = confdir, .state_dir = statedir, .provider = "none"};
        return o;
}

static const KuraWriterInfo *find_info(const KuraWriterInfo *v, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (!strcmp(v[i].name, name))
                        return &v[i];
        return NULL;
}

/* ---- declarations ----------------------------------------------------------- */

static KuraWriterConf *parse(const char *text) {
        KuraWriterConf *c = NULL;
        assert_int_equal(kura_writer_conf_parse("/etc/kura/writers.d/pg.conf", text, strlen(text), &c), 0);
        assert_non_null(c);
        return c;
}

static void expect_bad(const char *text, const char *why) {
        KuraWriterConf *c = parse(text);
        assert_non_null(c->bad);
        if (!strstr(c->bad, why))
                fail_msg("bad declaration '%s' does not mention '%s'", c->bad, why);
        assert_string_equal(c->name, "pg"); /* the file's base name */
        assert_null(c->argv);
        kura_writer_conf_free(c);
}

static void test_conf_parse(void **state) {
        (void)state;
        KuraWriterConf *c = parse("; comment\n[Writer]\n  Name =  PostgreSQL Writer  \n"
                                  "ClassId=1B6A8E0C-0F5B-4C61-9A0E-5D2A7F3B9C01\n"
                                  "Exec=/usr/lib/kura/writers/pg --cluster \"15 main\" \"a\\\"b\"\n"
                                  "User=postgres\nEnvironment=PGHOST=/run/postgresql\nEnvironment=A=b=c\n"
                                  "IdentifyTimeout=7\nEventTimeout=0.5\nFreezeTimeout=20\nRetryCount=0\nRetryDelay=0\n");
        assert_null(c->bad);
        assert_string_equal(c->name, "PostgreSQL Writer");
        assert_string_equal(c->class_id, "1b6a8e0c-0f5b-4c61-9a0e-5d2a7f3b9c01");
        assert_string_equal(c->argv[0], "/usr/lib/kura/writers/pg");
        assert_string_equal(c->argv[1], "--cluster");
        assert_string_equal(c->argv[2], "15 main");
        assert_string_equal(c->argv[3], "a\"b");
        assert_null(c->argv[4]);
        assert_string_equal(c->user, "postgres");
        assert_string_equal(c->env[0], "PGHOST=/run/postgresql");
        assert_string_equal(c->env[1], "A=b=c");
        assert_null(c->env[2]);
        assert_true(c->identify_timeout_s == 7 && c->event_timeout_s == 0.5 && c->freeze_timeout_s == 20);
        assert_int_equal(c->retry_count, 0);
        assert_true(c->retry_delay_s == 0);
        kura_writer_conf_free(c);

        /* defaults */
        c = parse("[Writer]\nName=x\nClassId=" CLASS_A "\nExec=/bin/true\n");
        assert_null(c->bad);
        assert_true(c->identify_timeout_s == 30 && c->event_timeout_s == 60 && c->freeze_timeout_s == 60);
        assert_int_equal(c->retry_count, 3);
        assert_true(c->retry_delay_s == 10);
        assert_null(c->user);
        kura_writer_conf_free(c);

        expect_bad("[Writer]\nName=x\nColor=red\n", "unknown key Color, line 3");
        expect_bad("[Writer]\nName=x\nClassId=" CLASS_A "\n", "Exec= is missing");
        expect_bad("[Writer]\nName=x\nClassId=" CLASS_A "\nExec=bin/pg\n", "not an absolute path, line 4");
        expect_bad("[Writer]\nName=x\nClassId=not-a-uuid\nExec=/bin/true\n", "not a UUID, line 3");
        expect_bad("[Writer]\nName=x\nName=y\n", "given twice (first on line 2), line 3");
        expect_bad("[Writer]\nName=x\nClassId=" CLASS_A "\nExec=/bin/true\nFreezeTimeout=soon\n",
                   "FreezeTimeout= 'soon' is not a number of seconds in (0, 86400], line 5");
        expect_bad("[Writer]\nName=x\nClassId=" CLASS_A "\nExec=/bin/true\nFreezeTimeout=-1\n", "line 5");
        expect_bad("[Writer]\nName=x\nClassId=" CLASS_A "\nExec=/bin/true\nRetryCount=1000\n", "RetryCount=");
        expect_bad("Name=x\n", "before the [Writer] section, line 1");
        expect_bad("[Service]\n", "unknown section");
        expect_bad("[Writer]\n[Writer]\n", "a second [Writer] section, line 2");
        expect_bad("[Writer]\nName=x\nClassId=" CLASS_A "\nExec=/bin/true \"open\n", "unterminated quote");
        expect_bad("[Writer]\nName=x\nClassId=" CLASS_A "\nExec=/bin/true\nEnvironment=NOEQUALS\n", "KEY=VALUE");
        expect_bad("[Writer]\nName=x\nClassId=" CLASS_A "\nExec=/bin/true\nUser=bad user\n", "User=");
        expect_bad("", "no [Writer] section");
        KuraWriterConf *n = NULL;
        assert_int_equal(kura_writer_conf_parse("/x/pg.conf", "[Writer]\0Name=x", 15, &n), 0);
        assert_non_null(n->bad);
        assert_non_null(strstr(n->bad, "NUL"));
        kura_writer_conf_free(n);
}

static void test_conf_dir(void **state) {
        (void)state;
        declare("b-good", "Writer B", CLASS_B, "good", "\"/nonexistent\"", NULL);
        declare("a-good", "Writer A", CLASS_A, "good", "\"/nonexistent\"", NULL);
        declare("c-dup", "Writer A", CLASS_A, "good", "\"/nonexistent\"", NULL);
        char p[PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/ignored.txt", wdir);
        write_text(p, "garbage");
        KuraWriterConf **cs = NULL;
        size_t n = 0;
        KuraErr err = {0};
        assert_int_equal(kura_writer_confs_load(confdir, &cs, &n, &err), 0);
        assert_int_equal(n, 3);
        assert_string_equal(cs[0]->name, "Writer A");
        assert_null(cs[0]->bad);
        assert_string_equal(cs[1]->name, "Writer B");
        assert_non_null(cs[2]->bad);
        assert_non_null(strstr(cs[2]->bad, "already declared"));
        kura_writer_confs_free(cs, n);
        /* missing directory: zero writers */
        assert_int_equal(kura_writer_confs_load("/nonexistent-kura", &cs, &n, &err), 0);
        assert_int_equal(n, 0);
}

/* ---- protocol codec ------------------------------------------------------ */

static void hello_bad(const char *line, const char *why_part) {
        KuraWriterHello h;
        char why[256] = "";
        assert_int_equal(kura_wproto_parse_hello(line, strlen(line), &h, why, sizeof why), -EPROTO);
        if (!strstr(why, why_part))
                fail_msg("hello '%s': reason '%s' lacks '%s'", line, why, why_part);
}

static void msg_bad(const char *line, uint64_t id, const char *why_part) {
        KuraWriterMsg m;
        char why[256] = "";
        assert_int_equal(kura_wproto_parse_msg(line, strlen(line), id, &m, why, sizeof why), -EPROTO);
        if (!strstr(why, why_part))
                fail_msg("msg '%s': reason '%s' lacks '%s'", line, why, why_part);
        assert_null(m.result);
        assert_null(m.text);
}

static void test_proto(void **state) {
        (void)state;
        char why[256];
        KuraWriterHello h;
        const char *good = "{\"protocol\":\"kura-writer\",\"version\":1,\"name\":\"PG\",\"class_id\":\"" CLASS_A
                           "\",\"instance_id\":\"" CLASS_B "\",\"capabilities\":[\"restore\"],\"future\":1}";
        assert_int_equal(kura_wproto_parse_hello(good, strlen(good), &h, why, sizeof why), 0);
        assert_string_equal(h.name, "PG");
        assert_string_equal(h.class_id, CLASS_A);
        assert_string_equal(h.instance_id, CLASS_B);
        assert_true(h.cap_restore);
        assert_false(h.cap_backup_type);

        hello_bad("not json", "not JSON");
        hello_bad("[1,2]", "not a JSON object");
        hello_bad("{\"protocol\":\"kura-writer\",\"error\":\"unsupported version\"}", "unsupported version");
        hello_bad("{\"protocol\":\"other\",\"version\":1}", "protocol");
        hello_bad("{\"protocol\":\"kura-writer\",\"version\":2,\"name\":\"x\"}", "did not offer");
        hello_bad("{\"protocol\":\"kura-writer\",\"version\":\"1\"}", "not an integer");
        hello_bad("{\"protocol\":\"kura-writer\",\"version\":1,\"name\":\"x\",\"class_id\":\"nope\"}", "class_id");
        hello_bad("{\"protocol\":\"kura-writer\",\"version\":1,\"name\":\"\",\"class_id\":\"" CLASS_A "\"}", "name");
        hello_bad("{\"protocol\":\"kura-writer\",\"protocol\":\"kura-writer\"}", "not JSON");
        /* oversized */
        size_t big = KURA_WRITER_LINE_MAX + 10;
        char *line = malloc(big + 1);
        assert_non_null(line);
        memset(line, ' ', big);
        line[0] = '{';
        line[big - 1] = '}';
        line[big] = 0;
        hello_bad(line, "longer than");
        free(line);

        KuraWriterMsg m;
        const char *ok = "{\"id\":3,\"status\":\"ok\",\"result\":{\"store\":{\"a\":1}}}";
        assert_int_equal(kura_wproto_parse_msg(ok, strlen(ok), 3, &m, why, sizeof why), 0);
        assert_false(m.is_log);
        assert_int_equal(m.status, KURA_WR_OK);
        json_t *st = NULL;
        assert_int_equal(kura_wproto_get_store(m.result, &st, why, sizeof why), 0);
        assert_int_equal(json_integer_value(json_object_get(st, "a")), 1);
        kura_writer_msg_clear(&m);
        const char *nr = "{\"id\":4,\"status\":\"non-retryable\",\"message\":\"bad\\u0007thing\"}";
        assert_int_equal(kura_wproto_parse_msg(nr, strlen(nr), 4, &m, why, sizeof why), 0);
        assert_int_equal(m.status, KURA_WR_NON_RETRYABLE);
        assert_string_equal(m.text, "bad thing"); /* control character replaced */
        assert_null(m.result);
        kura_writer_msg_clear(&m);
        const char *lg = "{\"log\":\"hi\",\"level\":\"warning\"}";
        assert_int_equal(kura_wproto_parse_msg(lg, strlen(lg), 9, &m, why, sizeof why), 0);
        assert_true(m.is_log);
        assert_string_equal(m.level, "warning");
        assert_string_equal(m.text, "hi");
        kura_writer_msg_clear(&m);

        msg_bad("{\"id\":2,\"status\":\"ok\"}", 3, "id 2 where 3");
        msg_bad("{\"id\":\"3\",\"status\":\"ok\"}", 3, "integer");
        msg_bad("{\"id\":3,\"status\":\"fine\"}", 3, "status");
        msg_bad("{\"id\":3,\"status\":\"ok\",\"result\":[]}", 3, "result");
        msg_bad("{\"id\":3,\"status\":\"retryable\",\"message\":7}", 3, "message");
        msg_bad("{\"log\":5}", 3, "log");
        msg_bad("{\"log\":\"x\",\"level\":\"debug\"}", 3, "level");
        msg_bad("{}", 3, "neither");
        msg_bad("{\"id\":3,\"status\":\"ok\"} trailing", 3, "not JSON");
        msg_bad("\"string\"", 3, "not a JSON object");

        /* components */
        KuraWriterComponent *cs = NULL;
        size_t nc = 0;
        json_t *r = json_loads("{\"components\":[{\"name\":\"c\",\"paths\":[\"/a\",\"/b\"],\"usage\":\"system-service\","
                               "\"log_truncation\":true}]}",
                               0, NULL);
        assert_int_equal(kura_wproto_parse_components(r, &cs, &nc, why, sizeof why), 0);
        assert_int_equal(nc, 1);
        assert_string_equal(cs[0].name, "c");
        assert_string_equal(cs[0].usage, "system-service");
        assert_string_equal(cs[0].restore_method, "restore-if-can-replace");
        assert_true(cs[0].log_truncation);
        assert_true(cs[0].selectable);
        assert_int_equal(cs[0].npaths, 2);
        assert_string_equal(cs[0].paths[1], "/b");
        kura_writer_components_free(cs, nc);
        json_decref(r);
        static const char *const badc[] = {
                "{}",
                "{\"components\":{}}",
                "{\"components\":[1]}",
                "{\"components\":[{\"paths\":[\"/a\"]}]}",
                "{\"components\":[{\"name\":\"c\",\"paths\":[\"relative\"]}]}",
                "{\"components\":[{\"name\":\"c\",\"paths\":[5]}]}",
                "{\"components\":[{\"name\":\"c\",\"paths\":[\"/a\"],\"usage\":\"whatever\"}]}",
                "{\"components\":[{\"name\":\"c\",\"paths\":[\"/a\"],\"selectable\":\"yes\"}]}",
                "{\"components\":[{\"name\":\"c\",\"paths\":[\"/a\"]},{\"name\":\"c\",\"paths\":[\"/b\"]}]}",
        };
        for (size_t i = 0; i < ELEMENTSOF(badc); i++) {
                r = json_loads(badc[i], 0, NULL);
                assert_non_null(r);
                cs = NULL;
                if (kura_wproto_parse_components(r, &cs, &nc, why, sizeof why) != -EPROTO)
                        fail_msg("components %s accepted", badc[i]);
                assert_null(cs);
                json_decref(r);
        }
        /* store: not an object, too big */
        r = json_loads("{\"store\":[1]}", 0, NULL);
        assert_int_equal(kura_wproto_get_store(r, &st, why, sizeof why), -EPROTO);
        json_decref(r);
        char *bigs = malloc(KURA_WRITER_STORE_MAX + 1);
        memset(bigs, 'x', KURA_WRITER_STORE_MAX);
        bigs[KURA_WRITER_STORE_MAX] = 0;
        r = json_pack("{s:{s:s}}", "store", "k", bigs);
        free(bigs);
        assert_int_equal(kura_wproto_get_store(r, &st, why, sizeof why), -EPROTO);
        json_decref(r);

        /* request framing */
        json_t *args = json_pack("{s:b}", "succeeded", 1);
        char *req = kura_wproto_request_line(7, "backup-complete", args);
        assert_string_equal(req, "{\"id\":7,\"event\":\"backup-complete\",\"args\":{\"succeeded\":true}}\n");
        free(req);
        json_decref(args);
        req = kura_wproto_request_line(1, "freeze", NULL);
        assert_string_equal(req, "{\"id\":1,\"event\":\"freeze\",\"args\":{}}\n");
        free(req);
}

/* ---- sequences ---------------------------------------------------------------- */

static void test_good_sequence(void **state) {
        (void)state;
        declare("good", "Good Writer", CLASS_A, "good", img_paths, NULL);
        declare("other", "Other Writer", CLASS_B, "good", "\"/nonexistent/x\"", NULL);
        KuraSnapOpts o = opts();
        o.backup_type = "full";
        const char *vols[] = {img, img2};
        KuraSnapSet *s = NULL;
        KuraErr err = {0};
        int r = kura_snapset_create(&o, vols, 2, &s, &err);
        if (r < 0)
                fail_msg("create: %s: %s", err.code, err.message);
        assert_int_equal(kura_snapset_nvolumes(s), 2);
        assert_string_equal(kura_snapset_volume(s, 0), img);
        assert_string_equal(kura_snapset_read_path(s, 0), img);
        assert_string_equal(kura_snapset_provider(s, 1), "none");
        assert_false(kura_snapset_crash_consistent(s));
        assert_int_equal(kura_snapset_check_deadline(s, &err), 0);
        KuraExtent *ex = NULL;
        size_t nex = 0;
        assert_int_equal(kura_snapset_changed(s, 0, &ex, &nex, &err), -ENODATA);

        /* persisted mid-backup: waiting for backup complete */
        KuraWriterInfo *info = NULL;
        size_t ni = 0;
        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        const KuraWriterInfo *gi = find_info(info, ni, "Good Writer");
        assert_non_null(gi);
        assert_int_equal(gi->state, KURA_WS_WAITING_FOR_BACKUP_COMPLETE);
        assert_true(kura_wproto_is_uuid(gi->instance_id));
        kura_writer_info_free(info, ni);

        char *store = NULL;
        assert_int_equal(kura_snapset_finish(s, true, &store, &err), 0);
        assert_non_null(store);
        assert_string_equal(store, "{\"Good Writer\":{\"completed\":true,\"lsn\":\"0/1234\"}}");
        free(store);
        kura_snapset_free(s);

        char *lg = log_of("good");
        assert_string_equal(lg, "hello\nidentify\nprepare-for-backup\nprepare-for-snapshot\nfreeze\nthaw\n"
                                "post-snapshot\nbackup-complete\nbackup-shutdown\n");
        free(lg);
        /* not on the set: identified, then sent home */
        lg = log_of("other");
        assert_string_equal(lg, "hello\nidentify\nbackup-shutdown\n");
        free(lg);

        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        assert_int_equal(ni, 2);
        gi = find_info(info, ni, "Good Writer");
        assert_int_equal(gi->state, KURA_WS_STABLE);
        assert_int_equal(gi->last_error, KURA_WE_NONE);
        assert_true(gi->started);
        assert_string_equal(gi->class_id, CLASS_A);
        assert_true(gi->time_ns > 0);
        kura_writer_info_free(info, ni);
        char p[PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/writers.json", statedir);
        char *js = read_text(p);
        assert_non_null(strstr(js, "\"Good Writer\""));
        assert_non_null(strstr(js, "\"Other Writer\""));
        free(js);
}

static double now_s(void) {
        return kura_mono();
}

static void test_hang_in_freeze(void **state) {
        (void)state;
        declare("a-good", "Good Writer", CLASS_A, "good", img_paths, NULL);
        declare("b-hang", "Hang Writer", CLASS_B, "hang-freeze", img_paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapSet *s = NULL;
        KuraErr err = {0};
        double t0 = now_s();
        int r = kura_snapset_create(&o, vols, 1, &s, &err);
        double dt = now_s() - t0;
        assert_true(r < 0);
        assert_null(s);
        assert_string_equal(err.code, KURA_E_WRITER_TIMEOUT);
        assert_non_null(strstr(err.message, "Hang Writer"));
        assert_non_null(strstr(err.message, "Failed at freeze"));
        assert_non_null(strstr(err.message, "FreezeTimeout=1.5"));
        assert_true(dt >= 1.4);
        assert_true(dt < 6); /* FreezeTimeout 1.5 s + abort + shutdown, never the 1000 s sleep */

        char *lg = log_of("a-good");
        assert_string_equal(lg, "hello\nidentify\nprepare-for-backup\nprepare-for-snapshot\nfreeze\nabort\n"
                                "backup-shutdown\n");
        free(lg);
        lg = log_of("b-hang");
        assert_string_equal(lg, "hello\nidentify\nprepare-for-backup\nprepare-for-snapshot\nfreeze\n");
        free(lg);

        KuraWriterInfo *info = NULL;
        size_t ni = 0;
        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        const KuraWriterInfo *h = find_info(info, ni, "Hang Writer");
        assert_int_equal(h->state, KURA_WS_FAILED_AT_FREEZE);
        assert_int_equal(h->last_error, KURA_WE_TIMED_OUT);
        assert_string_equal(kura_writer_state_str(h->state), "Failed at freeze");
        assert_string_equal(kura_writer_error_str(h->last_error), "Timed out");
        assert_non_null(strstr(h->last_message, "hanging in freeze")); /* its stderr */
        const KuraWriterInfo *g = find_info(info, ni, "Good Writer");
        assert_int_equal(g->state, KURA_WS_STABLE);
        assert_int_equal(g->last_error, KURA_WE_NONE);
        kura_writer_info_free(info, ni);
        /* the process group is gone: no sleep 1000 left behind */
        assert_int_not_equal(system("pgrep -f '[s]leep 1000' >/dev/null"), 0);
}

static void test_crash_in_freeze(void **state) {
        (void)state;
        declare("crash", "Crash Writer", CLASS_A, "crash-freeze", img_paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapSet *s = NULL;
        KuraErr err = {0};
        assert_true(kura_snapset_create(&o, vols, 1, &s, &err) < 0);
        assert_string_equal(err.code, KURA_E_WRITER_FAILED);
        assert_non_null(strstr(err.message, "Crash Writer"));
        assert_non_null(strstr(err.message, "Unexpected error"));
        assert_non_null(strstr(err.message, "killed by signal 11"));
        assert_non_null(strstr(err.message, "about to crash in freeze"));
        KuraWriterInfo *info = NULL;
        size_t ni = 0;
        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        assert_int_equal(info[0].state, KURA_WS_FAILED_AT_FREEZE);
        assert_int_equal(info[0].last_error, KURA_WE_UNEXPECTED);
        kura_writer_info_free(info, ni);
}

static void test_non_retryable(void **state) {
        (void)state;
        declare("nr", "Recovering Writer", CLASS_A, "nonretry-pfb", img_paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapSet *s = NULL;
        KuraErr err = {0};
        assert_true(kura_snapset_create(&o, vols, 1, &s, &err) < 0);
        assert_string_equal(err.code, KURA_E_WRITER_FAILED);
        assert_non_null(strstr(err.message, "writer 'Recovering Writer' failed"));
        assert_non_null(strstr(err.message, "[7] Failed at prepare backup"));
        assert_non_null(strstr(err.message, "Non-retryable error"));
        assert_non_null(strstr(err.message, "database is in recovery mode"));
        char *lg = log_of("nr");
        /* no retry for non-retryable; abort undoes prepare-for-backup */
        assert_string_equal(lg, "hello\nidentify\nprepare-for-backup\nabort\nbackup-shutdown\n");
        free(lg);
        KuraWriterInfo *info = NULL;
        size_t ni = 0;
        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        assert_int_equal(info[0].state, KURA_WS_FAILED_AT_PREPARE_BACKUP);
        assert_int_equal(info[0].last_error, KURA_WE_NON_RETRYABLE);
        assert_string_equal(info[0].last_message, "database is in recovery mode");
        kura_writer_info_free(info, ni);
}

static void test_garbage(void **state) {
        (void)state;
        declare("garbage", "Garbage Writer", CLASS_A, "garbage", img_paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapSet *s = NULL;
        KuraErr err = {0};
        assert_true(kura_snapset_create(&o, vols, 1, &s, &err) < 0);
        assert_string_equal(err.code, KURA_E_WRITER_FAILED);
        assert_non_null(strstr(err.message, "protocol error during prepare-for-backup: not JSON"));
        KuraWriterInfo *info = NULL;
        size_t ni = 0;
        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        assert_int_equal(info[0].state, KURA_WS_FAILED_AT_PREPARE_BACKUP);
        assert_int_equal(info[0].last_error, KURA_WE_UNEXPECTED);
        kura_writer_info_free(info, ni);
}

static void test_retry_then_ok(void **state) {
        (void)state;
        declare("retry", "Busy Writer", CLASS_A, "retry-then-ok", img_paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapSet *s = NULL;
        KuraErr err = {0};
        int r = kura_snapset_create(&o, vols, 1, &s, &err);
        if (r < 0)
                fail_msg("create: %s: %s", err.code, err.message);
        assert_int_equal(kura_snapset_finish(s, false, NULL, &err), 0);
        kura_snapset_free(s);
        char *lg = log_of("retry");
        assert_string_equal(lg, "hello\nidentify\nprepare-for-backup\nabort\nprepare-for-backup\n"
                                "prepare-for-snapshot\nfreeze\nthaw\npost-snapshot\nbackup-complete\nbackup-shutdown\n");
        free(lg);
}

static void test_retry_exhausted(void **state) {
        (void)state;
        /* RetryCount=0: the first retryable answer fails the backup */
        declare("retry", "Busy Writer", CLASS_A, "retry-then-ok", img_paths, NULL);
        char p[PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/retry.conf", wdir);
        char *t = read_text(p);
        char *rc = strstr(t, "RetryCount=2");
        assert_non_null(rc);
        rc[11] = '0';
        write_text(p, t);
        free(t);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapSet *s = NULL;
        KuraErr err = {0};
        assert_true(kura_snapset_create(&o, vols, 1, &s, &err) < 0);
        assert_string_equal(err.code, KURA_E_WRITER_FAILED);
        assert_non_null(strstr(err.message, "Retryable error: busy, try again"));
}

static void test_not_started(void **state) {
        (void)state;
        char p[PATH_MAX * 2];
        snprintf(p, sizeof p, "%s/missing.conf", wdir);
        write_text(p, "[Writer]\nName=Missing Writer\nClassId=" CLASS_A "\nExec=/nonexistent/kura-writer --x\n");
        snprintf(p, sizeof p, "%s/bad.conf", wdir);
        write_text(p, "[Writer]\nName=Bad Writer\nClassId=" CLASS_B "\nExec=/bin/true\nFrobnicate=1\n");
        char noexec[PATH_MAX], text[PATH_MAX * 2];
        snprintf(noexec, sizeof noexec, "%s/noexec", tmpdir);
        write_text(noexec, "#!/bin/sh\n");
        assert_int_equal(chmod(noexec, 0644), 0);
        snprintf(p, sizeof p, "%s/noexec.conf", wdir);
        snprintf(text, sizeof text, "[Writer]\nName=Noexec Writer\nClassId=" CLASS_B "\nExec=%s\n", noexec);
        write_text(p, text);
        snprintf(p, sizeof p, "%s/mute.conf", wdir);
        write_text(p, "[Writer]\nName=Mute Writer\nClassId=" CLASS_B "\nExec=/bin/sleep 30\nIdentifyTimeout=0.3\n");
        declare("wrongclass", "Wrong Writer", CLASS_A, "good", img_paths, NULL);
        /* the fixture announces CLASS_A, the declaration says B */
        snprintf(p, sizeof p, "%s/wrongclass.conf", wdir);
        char *t = read_text(p);
        char *c = strstr(t, "ClassId=" CLASS_A);
        memcpy(c + 8, CLASS_B, 36);
        write_text(p, t);
        free(t);
        declare("zgood", "Good Writer", CLASS_A, "good", img_paths, NULL);

        KuraWriterInfo *info = NULL;
        size_t ni = 0;
        KuraErr err = {0};
        assert_int_equal(kura_writers_status(confdir, statedir, true, &info, &ni, &err), 0);
        assert_int_equal(ni, 6);
        const KuraWriterInfo *w = find_info(info, ni, "Missing Writer");
        assert_false(w->started);
        assert_string_equal(w->not_started, "program /nonexistent/kura-writer is missing");
        w = find_info(info, ni, "bad");
        assert_non_null(w);
        assert_false(w->started);
        assert_string_equal(w->not_started, "bad declaration: unknown key Frobnicate, line 5");
        w = find_info(info, ni, "Noexec Writer");
        assert_false(w->started);
        snprintf(text, sizeof text, "permission denied: cannot execute %s", noexec);
        assert_string_equal(w->not_started, text);
        w = find_info(info, ni, "Mute Writer");
        assert_false(w->started);
        assert_string_equal(w->not_started, "handshake failed: no answer within IdentifyTimeout=0.3 s");
        w = find_info(info, ni, "Wrong Writer");
        assert_false(w->started);
        assert_non_null(strstr(w->not_started, "handshake failed: the writer says class_id " CLASS_A));
        w = find_info(info, ni, "Good Writer");
        assert_true(w->started);
        assert_null(w->not_started);
        assert_true(kura_wproto_is_uuid(w->instance_id));
        assert_int_equal(w->state, KURA_WS_STABLE);
        kura_writer_info_free(info, ni);

        /* a backup with --writers=all goes on without the broken ones, and
         * records why they did not start */
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapSet *s = NULL;
        int r = kura_snapset_create(&o, vols, 1, &s, &err);
        if (r < 0)
                fail_msg("create: %s: %s", err.code, err.message);
        assert_int_equal(kura_snapset_finish(s, true, NULL, &err), 0);
        kura_snapset_free(s);
        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        w = find_info(info, ni, "Missing Writer");
        assert_false(w->started);
        assert_string_equal(w->not_started, "program /nonexistent/kura-writer is missing");
        kura_writer_info_free(info, ni);

        /* naming a writer that cannot start fails the backup */
        o.writers = "Good Writer,Missing Writer";
        memset(&err, 0, sizeof err);
        assert_true(kura_snapset_create(&o, vols, 1, &s, &err) < 0);
        assert_string_equal(err.code, KURA_E_WRITER_FAILED);
        assert_non_null(strstr(err.message, "program /nonexistent/kura-writer is missing"));
        o.writers = "Nobody";
        memset(&err, 0, sizeof err);
        assert_true(kura_snapset_create(&o, vols, 1, &s, &err) < 0);
        assert_non_null(strstr(err.message, "no writer named 'Nobody'"));
        /* --writers=none: nobody is started */
        o.writers = "none";
        char *before = log_of("zgood");
        assert_int_equal(kura_snapset_create(&o, vols, 1, &s, &err), 0);
        kura_snapset_free(s);
        char *after = log_of("zgood");
        assert_string_equal(before, after);
        free(before);
        free(after);
}

static void test_inconsistent(void **state) {
        (void)state;
        char paths[PATH_MAX * 2];
        snprintf(paths, sizeof paths, "\"%s\",\"%s\"", img, img2);
        declare("split", "Split Writer", CLASS_A, "good", paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapSet *s = NULL;
        KuraErr err = {0};
        assert_true(kura_snapset_create(&o, vols, 1, &s, &err) < 0);
        assert_string_equal(err.code, KURA_E_INCONSISTENT_SNAPSHOT);
        assert_non_null(strstr(err.message, "writer 'Split Writer' component 'data'"));
        assert_non_null(strstr(err.message, img2));
        char *lg = log_of("split");
        assert_string_equal(lg, "hello\nidentify\nbackup-shutdown\n");
        free(lg);
        /* both volumes in the set: fine */
        const char *both[] = {img, img2};
        memset(&err, 0, sizeof err);
        assert_int_equal(kura_snapset_create(&o, both, 2, &s, &err), 0);
        kura_snapset_free(s); /* free without finish: abort */
        lg = log_of("split");
        assert_non_null(strstr(lg, "post-snapshot\nabort\nbackup-shutdown\n"));
        free(lg);
}

static void test_emergency(void **state) {
        (void)state;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                setsid();
                execl("/bin/sleep", "sleep", "30", (char *)NULL);
                _exit(127);
        }
        usleep(50000);
        assert_int_equal(kura_snap_emergency_add_pgid(pid), 0);
        kura_snap_emergency_cleanup();
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}


/* ---- on a mounted filesystem (root only) --------------------------------------- */

static char loopdev[64], mnt[300];

static int sh(const char *cmd) {
        int r = system(cmd);
        return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static int setup_mounted(void **state) {
        setup(state);
        loopdev[0] = mnt[0] = 0;
        if (geteuid() != 0)
                return 0;
        char cmd[1024];
        snprintf(mnt, sizeof mnt, "%s/mnt", tmpdir);
        snprintf(cmd, sizeof cmd, "truncate -s 32M %s && mkfs.ext4 -q -F %s && mkdir %s", img, img, mnt);
        if (sh(cmd) != 0)
                return 0;
        FILE *f;
        snprintf(cmd, sizeof cmd, "losetup -f --show %s", img);
        if (!(f = popen(cmd, "r")) || !fgets(loopdev, sizeof loopdev, f)) {
                loopdev[0] = 0;
                if (f)
                        pclose(f);
                return 0;
        }
        pclose(f);
        loopdev[strcspn(loopdev, "\n")] = 0;
        snprintf(cmd, sizeof cmd, "mount %s %s && mkdir %s/data", loopdev, mnt, mnt);
        if (sh(cmd) != 0) {
                snprintf(cmd, sizeof cmd, "losetup -d %s", loopdev);
                sh(cmd);
                loopdev[0] = 0;
        }
        return 0;
}

static int teardown_mounted(void **state) {
        char cmd[1024];
        if (loopdev[0]) {
                /* never leave it frozen: thaw is harmless when it is not */
                snprintf(cmd, sizeof cmd, "fsfreeze -u %s 2>/dev/null; umount %s; losetup -d %s", mnt, mnt, loopdev);
                sh(cmd);
        }
        return teardown(state);
}

static double create_sleep;
static int slow_create(KuraShadow *sh_, KuraErr *err) {
        (void)err;
        usleep((useconds_t)(create_sleep * 1e6));
        sh_->device = strdup(sh_->volume);
        return sh_->device ? 0 : -ENOMEM;
}
static int any_supports(const char *v, const KuraVolumeProbe *p, char *why, size_t n) {
        (void)v, (void)p, (void)why, (void)n;
        return 1;
}
static int slow_release(KuraShadow *sh_, bool retain, KuraErr *err) {
        (void)sh_, (void)retain, (void)err;
        return 0;
}
static const KuraProviderOps slow_provider = {
        .name = "slowtest", .id = "00000000-0000-0000-0000-00000000beef", .type = "software",
        .description = "test", .supports = any_supports, .create = slow_create, .release = slow_release,
};

/* Can we write to the mount within 3 s (i.e. it is not frozen)? */
static bool writable(void) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "timeout 3 sh -c 'echo x > %s/probe && sync -f %s/probe'", mnt, mnt);
        return sh(cmd) == 0;
}

static void test_mounted(void **state) {
        (void)state;
        if (!loopdev[0])
                skip();
        char paths[700];
        snprintf(paths, sizeof paths, "\"%s/data\"", mnt);
        declare("mounted", "Mounted Writer", CLASS_A, "good", paths, NULL);
        KuraErr err = {0};
        KuraSnapSet *s = NULL;

        /* provider none refuses a read-write mount ... */
        KuraSnapOpts o = opts();
        const char *byimg[] = {img};
        assert_true(kura_snapset_create(&o, byimg, 1, &s, &err) < 0);
        assert_string_equal(err.code, KURA_E_NO_PROVIDER);
        /* ... unless allow_mounted: crash-consistent; the writer is selected
         * through the image file's loop device and the mount table */
        o.allow_mounted = true;
        memset(&err, 0, sizeof err);
        int r = kura_snapset_create(&o, byimg, 1, &s, &err);
        if (r < 0)
                fail_msg("create: %s: %s", err.code, err.message);
        assert_true(kura_snapset_crash_consistent(s));
        assert_int_equal(kura_snapset_finish(s, true, NULL, &err), 0);
        kura_snapset_free(s);
        char *lg = log_of("mounted");
        assert_non_null(strstr(lg, "freeze\nthaw\npost-snapshot\nbackup-complete\n"));
        free(lg);

        const char *other[] = {img2};
        char both[900];
        snprintf(both, sizeof both, "\"%s/data\",\"%s\"", mnt, img2);
        declare("mounted", "Mounted Writer", CLASS_A, "good", both, NULL);
        memset(&err, 0, sizeof err);
        assert_true(kura_snapset_create(&o, other, 1, &s, &err) < 0);
        assert_string_equal(err.code, KURA_E_INCONSISTENT_SNAPSHOT);
        assert_non_null(strstr(err.message, loopdev));
        assert_non_null(strstr(err.message, mnt));
        /* --add-writer-volumes adds the loop device */
        o.add_writer_volumes = true;
        memset(&err, 0, sizeof err);
        r = kura_snapset_create(&o, other, 1, &s, &err);
        if (r < 0)
                fail_msg("create: %s: %s", err.code, err.message);
        assert_int_equal(kura_snapset_nvolumes(s), 2);
        assert_string_equal(kura_snapset_volume(s, 1), loopdev);
        kura_snapset_free(s);

        /* the filesystem freeze window: a provider slower than the limit
         * gets KURA-E-FREEZE-LIMIT, and the filesystem is thawed regardless */
        declare("mounted", "Mounted Writer", CLASS_A, "good", paths, NULL);
        const KuraProviderOps *table[] = {&slow_provider, NULL};
        kura_snap_set_provider_table_for_tests(table);
        KuraSnapOpts so = opts();
        so.provider = "slowtest";
        so.fs_freeze_limit_s = 1;
        create_sleep = 1.6;
        const char *bydev[] = {loopdev};
        memset(&err, 0, sizeof err);
        double t0 = kura_mono();
        r = kura_snapset_create(&so, bydev, 1, &s, &err);
        double dt = kura_mono() - t0;
        kura_snap_set_provider_table_for_tests(NULL);
        assert_true(r < 0);
        assert_string_equal(err.code, KURA_E_FREEZE_LIMIT);
        assert_true(dt < 5);
        assert_true(writable());
        lg = log_of("mounted");
        assert_non_null(strstr(lg, "prepare-for-snapshot\nfreeze\nabort\nbackup-shutdown\n"));
        free(lg);
        /* fast enough: fine, thawed after */
        kura_snap_set_provider_table_for_tests(table);
        create_sleep = 0.05;
        memset(&err, 0, sizeof err);
        r = kura_snapset_create(&so, bydev, 1, &s, &err);
        kura_snap_set_provider_table_for_tests(NULL);
        if (r < 0)
                fail_msg("create: %s: %s", err.code, err.message);
        assert_true(writable());
        kura_snapset_free(s);
}

/* ---- restore: pre-restore / post-restore ----------------------------------- */

static bool is_hex32(const char *s) {
        if (!s || strlen(s) != 32)
                return false;
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
                        return false;
        return true;
}

/* The args line a fixture writer logs for a restore event. */
static char *restore_line(const char *event, const char *type, const char *gen, const char *store) {
        return kura_asprintf("%s {\"components\":[\"data\"],\"restore_type\":\"%s\",\"generation_id\":\"%s\","
                             "\"store\":%s}\n",
                             event, type, gen, store);
}

static KuraWriterState state_of(const char *name) {
        KuraWriterInfo *info = NULL;
        size_t ni = 0;
        KuraErr err = {0};
        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        const KuraWriterInfo *wi = find_info(info, ni, name);
        assert_non_null(wi);
        KuraWriterState st = wi->state;
        kura_writer_info_free(info, ni);
        return st;
}

static void test_restore_sequence(void **state) {
        (void)state;
        declare("a-good", "Good Writer", CLASS_A, "good", img_paths, NULL);
        declare("b-other", "Other Writer", CLASS_B, "good", "\"/nonexistent/x\"", NULL);
        declare("c-stored", "Stored Writer", "3d8c0a2e-2b7d-4e83-9c20-7f4c9b5d1e03", "good", "\"/nonexistent/y\"",
                NULL);
        const char *store = "{\"Good Writer\":{\"completed\":true,\"lsn\":\"0/1234\"},\"Gone Writer\":{\"x\":1},"
                            "\"Stored Writer\":{\"k\":\"v\"}}";
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapRestore *rs = NULL;
        KuraErr err = {0};
        int r = kura_snaprestore_begin(&o, "authoritative", store, vols, 1, &rs, &err);
        if (r < 0)
                fail_msg("begin: %s: %s", err.code, err.message);
        char gen1[33];
        assert_true(is_hex32(kura_snaprestore_generation_id(rs)));
        snprintf(gen1, sizeof gen1, "%s", kura_snaprestore_generation_id(rs));
        /* on the volume, and named in the store; Other Writer is neither */
        assert_string_equal(kura_snaprestore_writer(rs, 0), "Good Writer");
        assert_string_equal(kura_snaprestore_writer(rs, 1), "Stored Writer");
        assert_null(kura_snaprestore_writer(rs, 2));
        const char *why = NULL;
        assert_string_equal(kura_snaprestore_skipped(rs, 0, &why), "Gone Writer");
        assert_non_null(strstr(why, "not declared in"));
        assert_null(kura_snaprestore_skipped(rs, 1, &why));

        /* pre-restore has happened, post-restore not yet */
        _cleanup_free_ char *pre = restore_line("pre-restore", "authoritative", gen1,
                                                "{\"completed\":true,\"lsn\":\"0/1234\"}");
        _cleanup_free_ char *post = restore_line("post-restore", "authoritative", gen1,
                                                 "{\"completed\":true,\"lsn\":\"0/1234\"}");
        char *want = kura_asprintf("hello\nidentify\n%s", pre);
        char *lg = log_of("a-good");
        assert_string_equal(lg, want);
        free(lg);
        lg = log_of("b-other");
        assert_string_equal(lg, "hello\nidentify\nbackup-shutdown\n");
        free(lg);

        assert_int_equal(kura_snaprestore_finish(rs, true, &err), 0);
        assert_int_equal(kura_snaprestore_finish(rs, true, &err), 0); /* idempotent */
        /* the accessors still answer after finish */
        assert_string_equal(kura_snaprestore_writer(rs, 0), "Good Writer");
        kura_snaprestore_free(rs);
        free(want);
        want = kura_asprintf("hello\nidentify\n%s%sbackup-shutdown\n", pre, post);
        lg = log_of("a-good");
        assert_string_equal(lg, want);
        free(lg);
        _cleanup_free_ char *spre = restore_line("pre-restore", "authoritative", gen1, "{\"k\":\"v\"}");
        _cleanup_free_ char *spost = restore_line("post-restore", "authoritative", gen1, "{\"k\":\"v\"}");
        free(want);
        want = kura_asprintf("hello\nidentify\n%s%sbackup-shutdown\n", spre, spost);
        lg = log_of("c-stored");
        assert_string_equal(lg, want);
        free(lg);
        assert_int_equal(state_of("Good Writer"), KURA_WS_STABLE);

        /* A second restore: a new generation ID; non-authoritative by default;
         * without a store the writer gets {} */
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/a-good.log", tmpdir);
        unlink(p);
        rs = NULL;
        r = kura_snaprestore_begin(&o, NULL, NULL, vols, 1, &rs, &err);
        if (r < 0)
                fail_msg("begin: %s: %s", err.code, err.message);
        const char *gen2 = kura_snaprestore_generation_id(rs);
        assert_true(is_hex32(gen2));
        assert_string_not_equal(gen1, gen2);
        assert_null(kura_snaprestore_skipped(rs, 0, NULL));
        assert_string_equal(kura_snaprestore_writer(rs, 0), "Good Writer");
        assert_null(kura_snaprestore_writer(rs, 1));
        _cleanup_free_ char *pre2 = restore_line("pre-restore", "non-authoritative", gen2, "{}");
        _cleanup_free_ char *post2 = restore_line("post-restore", "non-authoritative", gen2, "{}");
        assert_int_equal(kura_snaprestore_finish(rs, true, &err), 0);
        kura_snaprestore_free(rs);
        free(want);
        want = kura_asprintf("hello\nidentify\n%s%sbackup-shutdown\n", pre2, post2);
        lg = log_of("a-good");
        assert_string_equal(lg, want);
        free(lg);
        free(want);

        /* an unknown restore type is refused before any writer starts */
        unlink(p);
        err = (KuraErr){0};
        rs = NULL;
        assert_true(kura_snaprestore_begin(&o, "sideways", NULL, vols, 1, &rs, &err) < 0);
        assert_null(rs);
        assert_string_equal(err.code, KURA_E_USAGE);
        lg = log_of("a-good");
        assert_string_equal(lg, "");
        free(lg);
}

static void test_restore_pre_fails(void **state) {
        (void)state;
        declare("a-good", "Good Writer", CLASS_A, "good", img_paths, NULL);
        declare("b-nr", "Running Writer", CLASS_B, "nonretry-pre-restore", img_paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapRestore *rs = NULL;
        KuraErr err = {0};
        assert_true(kura_snaprestore_begin(&o, "authoritative", NULL, vols, 1, &rs, &err) < 0);
        assert_null(rs);
        assert_string_equal(err.code, KURA_E_WRITER_FAILED);
        assert_non_null(strstr(err.message, "writer 'Running Writer' failed pre-restore"));
        assert_non_null(strstr(err.message, "[13] Failed at pre restore"));
        assert_non_null(strstr(err.message, "Non-retryable error"));
        assert_non_null(strstr(err.message, "the cluster is still running"));
        assert_non_null(strstr(err.remedy, "target is untouched"));
        /* the writer that had taken pre-restore is told to undo it; so is the
         * one that refused (it answered) */
        char *lg = log_of("a-good");
        assert_non_null(strstr(lg, "\npre-restore {"));
        assert_non_null(strstr(lg, "}\nabort\nbackup-shutdown\n"));
        assert_null(strstr(lg, "post-restore"));
        free(lg);
        lg = log_of("b-nr");
        assert_non_null(strstr(lg, "}\nabort\nbackup-shutdown\n"));
        assert_null(strstr(lg, "post-restore"));
        free(lg);
        assert_int_equal(state_of("Running Writer"), KURA_WS_FAILED_AT_PRE_RESTORE);
        assert_int_equal(state_of("Good Writer"), KURA_WS_STABLE);
        KuraWriterInfo *info = NULL;
        size_t ni = 0;
        assert_int_equal(kura_writers_status(confdir, statedir, false, &info, &ni, &err), 0);
        const KuraWriterInfo *wi = find_info(info, ni, "Running Writer");
        assert_int_equal(wi->last_error, KURA_WE_NON_RETRYABLE);
        assert_string_equal(wi->last_message, "the cluster is still running");
        kura_writer_info_free(info, ni);
}

static void test_restore_post_fails(void **state) {
        (void)state;
        declare("a-nr", "Broken Writer", CLASS_A, "nonretry-post-restore", img_paths, NULL);
        declare("b-good", "Good Writer", CLASS_B, "good", img_paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapRestore *rs = NULL;
        KuraErr err = {0};
        assert_int_equal(kura_snaprestore_begin(&o, NULL, NULL, vols, 1, &rs, &err), 0);
        assert_true(kura_snaprestore_finish(rs, true, &err) < 0);
        kura_snaprestore_free(rs);
        assert_string_equal(err.code, KURA_E_WRITER_FAILED);
        assert_non_null(strstr(err.message, "writer 'Broken Writer' failed post-restore"));
        assert_non_null(strstr(err.message, "[14] Failed at post restore"));
        assert_non_null(strstr(err.message, "recovery failed to start"));
        /* the failure of one does not keep the others from post-restore */
        char *lg = log_of("b-good");
        assert_non_null(strstr(lg, "\npost-restore {"));
        assert_non_null(strstr(lg, "}\nbackup-shutdown\n"));
        free(lg);
        assert_int_equal(state_of("Broken Writer"), KURA_WS_FAILED_AT_POST_RESTORE);
        assert_int_equal(state_of("Good Writer"), KURA_WS_STABLE);
}

static void test_restore_aborted(void **state) {
        (void)state;
        declare("good", "Good Writer", CLASS_A, "good", img_paths, NULL);
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapRestore *rs = NULL;
        KuraErr err = {0};
        assert_int_equal(kura_snaprestore_begin(&o, NULL, NULL, vols, 1, &rs, &err), 0);
        /* the restore itself failed: abort, never post-restore */
        assert_int_equal(kura_snaprestore_finish(rs, false, &err), 0);
        kura_snaprestore_free(rs);
        char *lg = log_of("good");
        assert_non_null(strstr(lg, "}\nabort\nbackup-shutdown\n"));
        assert_null(strstr(lg, "post-restore"));
        free(lg);
        /* free without finish aborts too */
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/good.log", tmpdir);
        unlink(p);
        assert_int_equal(kura_snaprestore_begin(&o, NULL, NULL, vols, 1, &rs, &err), 0);
        kura_snaprestore_free(rs);
        lg = log_of("good");
        assert_non_null(strstr(lg, "}\nabort\nbackup-shutdown\n"));
        assert_null(strstr(lg, "post-restore"));
        free(lg);
}

static void test_restore_retry_and_missing(void **state) {
        (void)state;
        declare("a-retry", "Slow Writer", CLASS_A, "retry-then-ok", img_paths, NULL);
        /* declared, but its program is missing; it holds a store */
        char path[PATH_MAX * 2];
        snprintf(path, sizeof path, "%s/b-missing.conf", wdir);
        write_text(path, "[Writer]\nName=Missing Writer\nClassId=" CLASS_B "\nExec=/nonexistent/kura-writer\n");
        KuraSnapOpts o = opts();
        const char *vols[] = {img};
        KuraSnapRestore *rs = NULL;
        KuraErr err = {0};
        const char *store = "{\"Missing Writer\":{\"a\":1}}";
        int r = kura_snaprestore_begin(&o, NULL, store, vols, 1, &rs, &err);
        if (r < 0)
                fail_msg("begin: %s: %s", err.code, err.message);
        assert_string_equal(kura_snaprestore_writer(rs, 0), "Slow Writer");
        const char *why = NULL;
        assert_string_equal(kura_snaprestore_skipped(rs, 0, &why), "Missing Writer");
        assert_non_null(strstr(why, "could not start"));
        assert_non_null(strstr(why, "/nonexistent/kura-writer"));
        assert_int_equal(kura_snaprestore_finish(rs, true, &err), 0);
        kura_snaprestore_free(rs);
        char *lg = log_of("a-retry");
        /* retryable: abort, then pre-restore again */
        const char *a = strstr(lg, "\npre-restore {");
        assert_non_null(a);
        const char *b = strstr(a + 1, "\nabort\npre-restore {");
        assert_non_null(b);
        assert_non_null(strstr(b, "\npost-restore {"));
        free(lg);

        /* naming writers: one from the version that is not declared here is
         * skipped; a name nobody knows is a mistake */
        rs = NULL;
        r = kura_snaprestore_begin(&(KuraSnapOpts){.config_dir = confdir, .state_dir = statedir,
                                                   .writers = "Slow Writer,Gone Writer"},
                                   NULL, "{\"Gone Writer\":{}}", vols, 1, &rs, &err);
        if (r < 0)
                fail_msg("begin: %s: %s", err.code, err.message);
        assert_string_equal(kura_snaprestore_skipped(rs, 0, NULL), "Gone Writer");
        assert_null(kura_snaprestore_skipped(rs, 1, NULL));
        assert_string_equal(kura_snaprestore_writer(rs, 0), "Slow Writer");
        assert_int_equal(kura_snaprestore_finish(rs, true, &err), 0);
        kura_snaprestore_free(rs);
        rs = NULL;
        err = (KuraErr){0};
        assert_true(kura_snaprestore_begin(&(KuraSnapOpts){.config_dir = confdir, .state_dir = statedir,
                                                           .writers = "Typo Writer"},
                                           NULL, NULL, vols, 1, &rs, &err) < 0);
        assert_null(rs);
        assert_string_equal(err.code, KURA_E_WRITER_FAILED);
        assert_non_null(strstr(err.message, "Typo Writer"));
        /* --writers none: nobody is started, a generation ID all the same */
        snprintf(path, sizeof path, "%s/a-retry.log", tmpdir);
        unlink(path);
        assert_int_equal(kura_snaprestore_begin(&(KuraSnapOpts){.config_dir = confdir, .state_dir = statedir,
                                                                .writers = "none"},
                                                NULL, store, vols, 1, &rs, &err),
                         0);
        assert_true(is_hex32(kura_snaprestore_generation_id(rs)));
        assert_null(kura_snaprestore_writer(rs, 0));
        assert_int_equal(kura_snaprestore_finish(rs, true, &err), 0);
        kura_snaprestore_free(rs);
        lg = log_of("a-retry");
        assert_string_equal(lg, "");
        free(lg);
}

static int reset(void **state) {
        teardown(state);
        return setup(state);
}

int main(void) {
        const char *f = getenv("KURA_TEST_FIXTURES");
        if (f)
                snprintf(fixtures, sizeof fixtures, "%s", f);
        else {
                /* __FILE__ is relative to the build directory, the grandparent of
                 * this program's directory (tests/unit/test-snap). */
                char exe[PATH_MAX];
                ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
                if (n < 0)
                        return 1;
                exe[n] = 0;
                for (int i = 0; i < 3; i++)
                        *strrchr(exe, '/') = 0;
                char src[256];
                snprintf(src, sizeof src, "%s", __FILE__);
                *strrchr(src, '/') = 0;
                char raw[PATH_MAX * 3];
                if (src[0] == '/')
                        snprintf(raw, sizeof raw, "%s/../fixtures/writers", src);
                else
                        snprintf(raw, sizeof raw, "%s/%s/../fixtures/writers", exe, src);
                if (!realpath(raw, fixtures))
                        return fprintf(stderr, "fixtures not found at %s\n", raw), 1;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_conf_parse, setup, teardown),
                cmocka_unit_test_setup_teardown(test_conf_dir, setup, teardown),
                cmocka_unit_test_setup_teardown(test_proto, setup, teardown),
                cmocka_unit_test_setup_teardown(test_good_sequence, setup, teardown),
                cmocka_unit_test_setup_teardown(test_hang_in_freeze, setup, teardown),
                cmocka_unit_test_setup_teardown(test_crash_in_freeze, setup, teardown),
                cmocka_unit_test_setup_teardown(test_non_retryable, setup, teardown),
                cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
                cmocka_unit_test_setup_teardown(test_retry_then_ok, setup, teardown),
                cmocka_unit_test_setup_teardown(test_retry_exhausted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_started, setup, teardown),
                cmocka_unit_test_setup_teardown(test_inconsistent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_emergency, setup, teardown),
                cmocka_unit_test_setup_teardown(test_mounted, setup_mounted, teardown_mounted),
                cmocka_unit_test_setup_teardown(test_restore_sequence, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restore_pre_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restore_post_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restore_aborted, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restore_retry_and_missing, setup, teardown),
        };
        (void)reset;
        return cmocka_run_group_tests(tests, NULL, NULL);
}
