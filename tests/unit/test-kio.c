/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of lib/common/kio.c: the pass-through semantics, and the fault
 * injection (simulated power loss, event count, ENOSPC).
 *
 * kio reads KURA_FAULT_* once per process, so every fault scenario runs in a
 * fresh process: the test re-executes itself (/proc/self/exe child SCENARIO
 * DIR) with the variables set, and the parent asserts on what is left on
 * disk afterwards.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "common/kcommon.h"
#include "common/kio.h"

/* ---- helpers -------------------------------------------------------------- */

static void fill(uint8_t *p, size_t n, uint8_t seed) {
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t) (seed + i * 7 + (i >> 8));
}

static int rm_cb(const char *p, const struct stat *st, int type, struct FTW *ftw) {
        (void) st, (void) type, (void) ftw;
        return remove(p);
}

static char *make_dir(void) {
        char tmpl[] = "/tmp/test-kio-XXXXXX";
        char *d = mkdtemp(tmpl);
        assert_non_null(d);
        return strdup(d);
}

static void rm_dir(char *d) {
        if (!d)
                return;
        (void) nftw(d, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        free(d);
}

/* Number of entries in dir (without . and ..) whose name starts with prefix. */
static int count_prefix(const char *dir, const char *prefix, char *ret_name, size_t ret_len) {
        DIR *d = opendir(dir);
        assert_non_null(d);
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                if (!strncmp(de->d_name, prefix, strlen(prefix))) {
                        n++;
                        if (ret_name)
                                snprintf(ret_name, ret_len, "%s/%s", dir, de->d_name);
                }
        }
        closedir(d);
        return n;
}

static bool exists(const char *dir, const char *name) {
        _cleanup_free_ char *p = kura_path_join(dir, name);
        struct stat st;
        return lstat(p, &st) == 0;
}

/* Assert that dir/name holds exactly n bytes equal to want. */
static void assert_file(const char *path, const void *want, size_t n) {
        uint8_t *b = NULL;
        size_t len = 0;
        assert_int_equal(kio_read_file(path, 1 << 20, &b, &len), 0);
        assert_int_equal(len, n);
        if (n)
                assert_memory_equal(b, want, n);
        free(b);
}

static void assert_file_in(const char *dir, const char *name, const void *want, size_t n) {
        _cleanup_free_ char *p = kura_path_join(dir, name);
        assert_file(p, want, n);
}

static void write_plain(const char *dir, const char *name, const char *s) {
        _cleanup_free_ char *p = kura_path_join(dir, name);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, s, strlen(s)), (ssize_t) strlen(s));
        assert_int_equal(fsync(fd), 0);
        close(fd);
}

/* Run "self child SCENARIO DIR" with the environment variable set; returns the
 * raw wait status. */
static int run_child(const char *scenario, const char *dir, const char *var, const char *val) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                if (var)
                        setenv(var, val, 1);
                execl("/proc/self/exe", "test-kio", "child", scenario, dir, (char *) NULL);
                _exit(127);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        return st;
}

static int exit_code(int st) {
        assert_true(WIFEXITED(st));
        return WEXITSTATUS(st);
}

/* ---- pass-through --------------------------------------------------------- */

static void test_write_file(void **state) {
        (void) state;
        char *d = make_dir();
        _cleanup_free_ char *p = kura_path_join(d, "obj");
        uint8_t a[5000], b[10];
        fill(a, sizeof a, 1);
        fill(b, sizeof b, 9);
        assert_int_equal(kio_write_file(p, a, sizeof a), 0);
        assert_file(p, a, sizeof a);
        struct stat st;
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        /* replacing is allowed and atomic */
        assert_int_equal(kio_write_file(p, b, sizeof b), 0);
        assert_file(p, b, sizeof b);
        /* an empty file */
        _cleanup_free_ char *e = kura_path_join(d, "empty");
        assert_int_equal(kio_write_file(e, NULL, 0), 0);
        assert_file(e, NULL, 0);
        assert_int_equal(count_prefix(d, ".tmp-", NULL, 0), 0);
        assert_int_equal(count_prefix(d, "", NULL, 0), 2);
        /* a directory that does not exist */
        _cleanup_free_ char *bad = kura_path_join(d, "nodir/x");
        assert_int_equal(kio_write_file(bad, a, 10), -ENOENT);
        rm_dir(d);
}

static void test_write_file_excl(void **state) {
        (void) state;
        char *d = make_dir();
        _cleanup_free_ char *p = kura_path_join(d, "lock");
        assert_int_equal(kio_write_file_excl(p, "first", 5), 0);
        assert_int_equal(kio_write_file_excl(p, "second", 6), -EEXIST);
        assert_file(p, "first", 5);
        assert_int_equal(count_prefix(d, ".tmp-", NULL, 0), 0);
        assert_int_equal(count_prefix(d, "", NULL, 0), 1);
        rm_dir(d);
}

static void test_commit_abort(void **state) {
        (void) state;
        char *d = make_dir();
        uint8_t a[70000];
        fill(a, sizeof a, 3);
        KioFile *f = NULL;
        assert_int_equal(kio_create_tmp(d, &f), 0);
        int fd = kio_fd(f);
        assert_true(fd >= 0);
        assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        assert_int_equal(kio_write(f, a, 1000), 0);
        assert_int_equal(kio_write(f, a + 1000, sizeof a - 1000), 0);
        assert_true(kio_size(f) == sizeof a);
        assert_int_equal(kio_fsync(f), 0);
        char tmp[512];
        assert_int_equal(count_prefix(d, ".tmp-", tmp, sizeof tmp), 1);
        _cleanup_free_ char *fin = kura_path_join(d, "final");
        assert_int_equal(kio_commit(f, fin), 0);
        assert_file(fin, a, sizeof a);
        assert_int_equal(count_prefix(d, "", NULL, 0), 1);

        /* abort leaves nothing */
        assert_int_equal(kio_create_tmp(d, &f), 0);
        assert_int_equal(kio_write(f, a, 100), 0);
        assert_int_equal(count_prefix(d, ".tmp-", NULL, 0), 1);
        kio_abort(f);
        kio_abort(NULL);
        assert_int_equal(count_prefix(d, ".tmp-", NULL, 0), 0);
        assert_int_equal(count_prefix(d, "", NULL, 0), 1);

        /* a failed commit removes the temporary file */
        assert_int_equal(kio_create_tmp(d, &f), 0);
        assert_int_equal(kio_write(f, a, 100), 0);
        _cleanup_free_ char *bad = kura_path_join(d, "nodir/x");
        assert_int_equal(kio_commit(f, bad), -ENOENT);
        assert_int_equal(count_prefix(d, "", NULL, 0), 1);

        /* create in a missing directory */
        _cleanup_free_ char *nod = kura_path_join(d, "nodir");
        f = NULL;
        assert_int_equal(kio_create_tmp(nod, &f), -ENOENT);
        assert_null(f);
        rm_dir(d);
}

static void test_unlink_mkdir(void **state) {
        (void) state;
        char *d = make_dir();
        _cleanup_free_ char *sub = kura_path_join(d, "sub");
        assert_int_equal(kio_mkdir(sub, 0), 0);
        struct stat st;
        assert_int_equal(stat(sub, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0700);
        assert_int_equal(kio_mkdir(sub, 0755), 0); /* EEXIST is success */
        _cleanup_free_ char *sub2 = kura_path_join(d, "sub2");
        assert_int_equal(kio_mkdir(sub2, 0750), 0);
        assert_int_equal(stat(sub2, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0750 & ~0022 & 0777);
        _cleanup_free_ char *deep = kura_path_join(d, "no/such");
        assert_int_equal(kio_mkdir(deep, 0), -ENOENT);

        _cleanup_free_ char *p = kura_path_join(sub, "x");
        assert_int_equal(kio_write_file(p, "x", 1), 0);
        assert_int_equal(kio_unlink(p), 0);
        assert_int_equal(lstat(p, &st), -1);
        assert_int_equal(kio_unlink(p), -ENOENT);
        assert_int_equal(count_prefix(sub, "", NULL, 0), 0);
        assert_int_equal(kio_fsync_dir(sub), 0);
        assert_int_equal(kio_fsync_dir(p), -ENOENT);
        rm_dir(d);
}

static void test_read_bounds(void **state) {
        (void) state;
        char *d = make_dir();
        _cleanup_free_ char *p = kura_path_join(d, "f");
        uint8_t a[4096];
        fill(a, sizeof a, 5);
        assert_int_equal(kio_write_file(p, a, sizeof a), 0);
        uint8_t *b = NULL;
        size_t n = 0;
        assert_int_equal(kio_read_file(p, sizeof a - 1, &b, &n), -EFBIG);
        assert_null(b);
        assert_int_equal(kio_read_file(p, sizeof a, &b, &n), 0);
        assert_int_equal(n, sizeof a);
        assert_memory_equal(a, b, n);
        free(b);
        _cleanup_free_ char *missing = kura_path_join(d, "missing");
        assert_int_equal(kio_read_file(missing, 100, &b, &n), -ENOENT);

        int fd = open(p, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t buf[200];
        assert_int_equal(kio_pread_full(fd, buf, 100, 1000), 0);
        assert_memory_equal(buf, a + 1000, 100);
        assert_int_equal(kio_pread_full(fd, buf, 100, sizeof a - 100), 0);
        assert_memory_equal(buf, a + sizeof a - 100, 100);
        assert_int_equal(kio_pread_full(fd, buf, 101, sizeof a - 100), -EBADMSG);
        assert_int_equal(kio_pread_full(fd, buf, 1, sizeof a), -EBADMSG);
        assert_int_equal(kio_pread_full(fd, buf, 0, sizeof a + 10), 0);
        close(fd);
        rm_dir(d);
}

/* ---- the crash scenario --------------------------------------------------- */

/* Contents written by the scenario. */
#define X1_LEN 3000
#define X2_LEN 1000
#define Y_LEN 2000
#define Y2_LEN 500
#define Z_LEN 100
#define W_LEN 50
#define V_LEN 60
#define SCENARIO_EVENTS 28

static uint8_t X[X1_LEN + X2_LEN], Y[Y_LEN + Y2_LEN], Z[Z_LEN], W[W_LEN], V[V_LEN];

static void init_data(void) {
        fill(X, sizeof X, 11);
        fill(Y, sizeof Y, 22);
        fill(Z, sizeof Z, 33);
        fill(W, sizeof W, 44);
        fill(V, sizeof V, 55);
}

#define CHK(x) do { if ((x) < 0) { fprintf(stderr, "child: %s failed at line %d\n", #x, __LINE__); _exit(3); } } while (0)

/* Each numbered comment is one I/O event (the count the parent expects). */
static int child_scenario(const char *d) {
        init_data();
        _cleanup_free_ char *pnew = kura_path_join(d, "new"), *pold = kura_path_join(d, "old"),
                            *psub = kura_path_join(d, "sub"), *pf = kura_path_join(d, "sub/f"),
                            *pvictim = kura_path_join(d, "victim"), *pexcl = kura_path_join(d, "excl");
        KioFile *t1, *t2;
        CHK(kio_create_tmp(d, &t1));
        CHK(kio_write(t1, X, X1_LEN));                  /* 1 */
        CHK(kio_fsync(t1));                             /* 2 */
        CHK(kio_write(t1, X + X1_LEN, X2_LEN));         /* 3 */
        CHK(kio_commit(t1, pnew));                      /* 4 fsync, 5 rename, 6 dir fsync */
        CHK(kio_create_tmp(d, &t2));
        CHK(kio_write(t2, Y, Y_LEN));                   /* 7 */
        CHK(kio_fsync(t2));                             /* 8 */
        CHK(kio_write(t2, Y + Y_LEN, Y2_LEN));          /* 9: never synced */
        CHK(kio_write_file(pold, Z, Z_LEN));            /* 10 write, 11 fsync, 12 rename over, 13 dir fsync */
        CHK(kio_mkdir(psub, 0));                        /* 14 mkdir, 15 dir fsync */
        CHK(kio_write_file(pf, W, W_LEN));              /* 16, 17, 18, 19 (fsync of sub) */
        CHK(kio_unlink(pvictim));                       /* 20 unlink, 21 dir fsync */
        CHK(kio_write_file_excl(pexcl, V, V_LEN));      /* 22 write, 23 fsync, 24 link, 25 unlink tmp, 26 dir fsync */
        kio_abort(t2);                                  /* 27 unlink, no dir fsync */
        CHK(kio_mkdir(psub, 0));                        /* 28: exists, no fsync */
        return 0;
}

static void prepare_scenario_dir(const char *d) {
        write_plain(d, "old", "OLD-CONTENT");
        write_plain(d, "victim", "VICTIM");
}

/* What must be on disk after a crash instead of event k (k > SCENARIO_EVENTS:
 * no crash, a normal exit). */
static void check_scenario(const char *d, unsigned k) {
        char tmp[512];
        /* hidden names of kio never survive */
        assert_int_equal(count_prefix(d, ".tmp-kio-", NULL, 0), 0);
        if (exists(d, "sub")) {
                _cleanup_free_ char *sub = kura_path_join(d, "sub");
                assert_int_equal(count_prefix(sub, ".tmp-", NULL, 0), 0);
        }

        /* t1: synced 3000, then committed; the rename is durable at 6 */
        if (k > 6)
                assert_file_in(d, "new", X, sizeof X);
        else
                assert_false(exists(d, "new"));

        /* t2: created after the fsync of d at 6; its name becomes durable with
         * the next fsync of d (13); 2000 bytes synced at 8; aborted at 27
         * without a directory fsync, so the unlink is lost at 28. */
        int ntmp = count_prefix(d, ".tmp-", tmp, sizeof tmp);
        if (k >= 14 && k <= SCENARIO_EVENTS) {
                assert_int_equal(ntmp, 1);
                assert_file(tmp, Y, Y_LEN);
        } else
                assert_int_equal(ntmp, 0);

        /* old replaced at 12, durable at 13 */
        if (k > 13)
                assert_file_in(d, "old", Z, Z_LEN);
        else
                assert_file_in(d, "old", "OLD-CONTENT", 11);

        /* sub made at 14, durable at 15; sub/f durable at 19 */
        if (k > 15) {
                _cleanup_free_ char *sub = kura_path_join(d, "sub");
                if (k > 19) {
                        assert_int_equal(count_prefix(sub, "", NULL, 0), 1);
                        assert_file_in(sub, "f", W, W_LEN);
                } else
                        assert_int_equal(count_prefix(sub, "", NULL, 0), 0);
        } else
                assert_false(exists(d, "sub"));

        /* victim unlinked at 20, durable at 21 */
        if (k > 21)
                assert_false(exists(d, "victim"));
        else
                assert_file_in(d, "victim", "VICTIM", 6);

        /* excl linked at 24, durable at 26 */
        if (k > 26)
                assert_file_in(d, "excl", V, V_LEN);
        else
                assert_false(exists(d, "excl"));

        int want = 1 /* old */ + (k > 6) + (k >= 14 && k <= SCENARIO_EVENTS) + (k > 15) + (k <= 21) + (k > 26);
        assert_int_equal(count_prefix(d, "", NULL, 0), want);
}

static void test_crash_every_point(void **state) {
        (void) state;
        init_data();
        for (unsigned k = 1; k <= SCENARIO_EVENTS + 1; k++) {
                char *d = make_dir();
                prepare_scenario_dir(d);
                char val[16];
                snprintf(val, sizeof val, "%u", k);
                int st = run_child("scenario", d, "KURA_FAULT_CRASH_AT", val);
                int code = exit_code(st);
                if (k <= SCENARIO_EVENTS)
                        assert_int_equal(code, KIO_CRASH_EXIT);
                else
                        assert_int_equal(code, 0);
                check_scenario(d, k);
                rm_dir(d);
        }
}

static void test_count(void **state) {
        (void) state;
        init_data();
        char *d = make_dir();
        char *cd = make_dir();
        prepare_scenario_dir(d);
        _cleanup_free_ char *cf = kura_path_join(cd, "count");
        assert_int_equal(exit_code(run_child("scenario", d, "KURA_FAULT_COUNT", cf)), 0);
        assert_file(cf, "28\n", 3);
        check_scenario(d, SCENARIO_EVENTS + 1);
        /* without any variable: the same end state, no count */
        rm_dir(d);
        d = make_dir();
        prepare_scenario_dir(d);
        assert_int_equal(exit_code(run_child("scenario", d, NULL, NULL)), 0);
        check_scenario(d, SCENARIO_EVENTS + 1);
        rm_dir(d);
        rm_dir(cd);
}

/* ---- ENOSPC ----------------------------------------------------------------- */

static int child_enospc(const char *d) {
        uint8_t a[600];
        fill(a, sizeof a, 77);
        _cleanup_free_ char *pa = kura_path_join(d, "a"), *pb = kura_path_join(d, "b");
        if (kio_write_file(pa, a, sizeof a) != 0)
                return 10;
        if (kio_write_file(pb, a, sizeof a) != -ENOSPC)     /* 400 of 600 fit */
                return 11;
        KioFile *f;
        if (kio_create_tmp(d, &f) != 0)
                return 12;
        if (kio_write(f, a, 1) != -ENOSPC)
                return 13;
        if (kio_size(f) != 0)
                return 14;
        kio_abort(f);
        /* other operations still work */
        _cleanup_free_ char *ps = kura_path_join(d, "s");
        if (kio_mkdir(ps, 0) != 0 || kio_unlink(pa) != 0)
                return 15;
        return 0;
}

static void test_enospc(void **state) {
        (void) state;
        char *d = make_dir();
        assert_int_equal(exit_code(run_child("enospc", d, "KURA_FAULT_ENOSPC_AFTER", "1000")), 0);
        assert_false(exists(d, "a"));
        assert_false(exists(d, "b"));
        assert_true(exists(d, "s"));
        assert_int_equal(count_prefix(d, "", NULL, 0), 1);
        rm_dir(d);
        /* also with a crash point far away, so unlinks are journalled */
        d = make_dir();
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                setenv("KURA_FAULT_CRASH_AT", "100000", 1);
                setenv("KURA_FAULT_ENOSPC_AFTER", "1000", 1);
                execl("/proc/self/exe", "test-kio", "child", "enospc", d, (char *) NULL);
                _exit(127);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_int_equal(exit_code(st), 0);
        assert_int_equal(count_prefix(d, "", NULL, 0), 1);
        assert_true(exists(d, "s"));
        rm_dir(d);
}

/* ---- threads ---------------------------------------------------------------- */

#define NTHREADS 4
#define NFILES 20
#define TFILE_LEN 3000

typedef struct ThreadArg {
        const char *dir;
        int t;
} ThreadArg;

static void *writer_thread(void *p) {
        ThreadArg *a = p;
        for (int i = 0; i < NFILES; i++) {
                uint8_t b[TFILE_LEN];
                fill(b, sizeof b, (uint8_t) (a->t * NFILES + i));
                char name[64];
                snprintf(name, sizeof name, "%s/f-%d-%d", a->dir, a->t, i);
                /* 4 events each: write, fsync, rename, dir fsync */
                if (kio_write_file(name, b, sizeof b) < 0)
                        _exit(4);
        }
        return NULL;
}

static int child_threads(const char *d) {
        pthread_t th[NTHREADS];
        ThreadArg args[NTHREADS];
        for (int t = 0; t < NTHREADS; t++) {
                args[t] = (ThreadArg) {d, t};
                if (pthread_create(&th[t], NULL, writer_thread, &args[t]) != 0)
                        return 5;
        }
        for (int t = 0; t < NTHREADS; t++)
                pthread_join(th[t], NULL);
        return 0;
}

/* After a crash, every visible file is complete, and at most one per thread
 * (its last) is missing in the middle of each thread's sequence. */
static unsigned check_threads_dir(const char *d) {
        unsigned total = 0;
        for (int t = 0; t < NTHREADS; t++) {
                bool gap = false;
                for (int i = 0; i < NFILES; i++) {
                        char name[64];
                        snprintf(name, sizeof name, "f-%d-%d", t, i);
                        if (!exists(d, name)) {
                                gap = true;
                                continue;
                        }
                        /* files of one thread become durable in order */
                        assert_false(gap);
                        uint8_t b[TFILE_LEN];
                        fill(b, sizeof b, (uint8_t) (t * NFILES + i));
                        assert_file_in(d, name, b, sizeof b);
                        total++;
                }
        }
        /* A temporary file whose creation was made durable by another
         * thread's directory fsync may be left over, holding exactly what was
         * fsynced: nothing, or the whole file. */
        assert_int_equal(count_prefix(d, ".tmp-kio-", NULL, 0), 0);
        int ntmp = 0;
        DIR *dd = opendir(d);
        assert_non_null(dd);
        struct dirent *de;
        while ((de = readdir(dd))) {
                if (strncmp(de->d_name, ".tmp-", 5))
                        continue;
                _cleanup_free_ char *p = kura_path_join(d, de->d_name);
                struct stat st;
                assert_int_equal(stat(p, &st), 0);
                assert_true(st.st_size == 0 || st.st_size == TFILE_LEN);
                ntmp++;
        }
        closedir(dd);
        assert_true(ntmp <= NTHREADS);
        assert_int_equal(count_prefix(d, "", NULL, 0), total + (unsigned) ntmp);
        return total;
}

static void test_crash_threads(void **state) {
        (void) state;
        char *cd = make_dir();
        char *d = make_dir();
        _cleanup_free_ char *cf = kura_path_join(cd, "count");
        assert_int_equal(exit_code(run_child("threads", d, "KURA_FAULT_COUNT", cf)), 0);
        char want[32];
        snprintf(want, sizeof want, "%d\n", NTHREADS * NFILES * 4);
        assert_file(cf, want, strlen(want));
        assert_int_equal(check_threads_dir(d), NTHREADS * NFILES);
        rm_dir(d);

        unsigned points[] = {1, 2, 3, 4, 5, 17, 50, 101, 160, 233, 300, 318, 319, 320};
        for (size_t i = 0; i < ELEMENTSOF(points); i++) {
                d = make_dir();
                char val[16];
                snprintf(val, sizeof val, "%u", points[i]);
                assert_int_equal(exit_code(run_child("threads", d, "KURA_FAULT_CRASH_AT", val)), KIO_CRASH_EXIT);
                unsigned n = check_threads_dir(d);
                /* k-1 events happened; a file is durable only after at least its
                 * own write, fsync and rename (another thread's directory fsync
                 * may complete it); each thread has at most one file with <= 3
                 * events in progress, the others are complete. */
                unsigned done = points[i] - 1;
                assert_true(n * 3 <= done);
                assert_true(n * 4 + NTHREADS * 3 >= done);
                rm_dir(d);
        }
        rm_dir(cd);
}

int main(int argc, char **argv) {
        if (argc == 4 && !strcmp(argv[1], "child")) {
                if (!strcmp(argv[2], "scenario"))
                        return child_scenario(argv[3]);
                if (!strcmp(argv[2], "enospc"))
                        return child_enospc(argv[3]);
                if (!strcmp(argv[2], "threads"))
                        return child_threads(argv[3]);
                return 2;
        }
        /* the parent runs the pass-through tests: no faults here */
        unsetenv("KURA_FAULT_CRASH_AT");
        unsetenv("KURA_FAULT_COUNT");
        unsetenv("KURA_FAULT_ENOSPC_AFTER");
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_write_file),
                cmocka_unit_test(test_write_file_excl),
                cmocka_unit_test(test_commit_abort),
                cmocka_unit_test(test_unlink_mkdir),
                cmocka_unit_test(test_read_bounds),
                cmocka_unit_test(test_crash_every_point),
                cmocka_unit_test(test_count),
                cmocka_unit_test(test_enospc),
                cmocka_unit_test(test_crash_threads),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
