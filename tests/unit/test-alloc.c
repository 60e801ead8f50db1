/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Allocation and I/O failures injected into the repository writer.
 *
 * Allocation failures: this program is linked with
 * -Wl,--wrap=malloc,--wrap=calloc,... (see tests/unit/meson.build), so every
 * call to those functions from libkura.a's objects (and from this file)
 * lands in the __wrap_* functions below, which count calls and make the k-th
 * one fail (NULL, errno = ENOMEM).  jansson is given the same counting
 * allocator through json_set_alloc_funcs(), so manifest, key-slot and config
 * JSON can fail too.  Allocations inside OpenSSL, libsodium and zstd are not
 * counted (they call their own malloc from shared libraries).
 *
 * One scenario is run on an unencrypted and an encrypted repository: init,
 * open, put 50 blobs of mixed data from one worker, flush, save a version
 * (one volume, chunk list blobs), a second version sharing some blobs, then
 * reopen, list, load the chunk lists, get every blob and compare, check with
 * read_data, and finally forget the first version and prune.  First without
 * failures to count the allocations N, then once for each k = 1..N (every k
 * up to 200, then a stride that keeps the runtime bounded) with the k-th
 * allocation failing.  For each k it asserts:
 *   - no crash, and the call that failed returns a negative errno and, where
 *     it has a KuraErr, fills err.code; no call fails unless a fault fired;
 *   - afterwards, with allocations working again: the repository opens with
 *     the exclusive lock (so no lock file of ours was left behind),
 *     kura_repo_check(read_data) reports no error, every version saved
 *     before the failure (and not forgotten) is listed, and every listed
 *     version loads and reads back byte-identical; storing all blobs again
 *     and reading them back works (the index does not claim blobs that are
 *     not in a pack).
 * Each k runs in-process and everything is freed, so under ASan the leak
 * checker also verifies the error paths free what they allocated.
 * KURA_ALLOC_FORK=1 runs each k in a forked child instead (finds every crash
 * rather than stopping at the first one).
 *
 * I/O failures: KURA_FAULT_ENOSPC_AFTER=BYTES (lib/common/kio.c) makes
 * repository writes fail with ENOSPC after BYTES.  kio reads it once per
 * process, so every byte count runs in a fresh process: this program
 * re-executes itself (/proc/self/exe --enospc-child ...) on a repository that
 * already holds version 1, writes version 2, forgets 1 and prunes; the child
 * asserts that whatever fails fails with -ENOSPC and KURA-E-REPO-FULL, and
 * the parent verifies the repository as above.
 *
 * Knobs (environment): KURA_ALLOC_STRIDE=S (fixed stride after the first
 * 200), KURA_ALLOC_ALL=1 (every k), KURA_ALLOC_BUDGET=SECONDS (per
 * repository kind, default 20), KURA_ALLOC_ONLY=K (just that k, verbose).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <execinfo.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "repo/repo-internal.h"

/* ---- the counting allocator ------------------------------------------------ */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
void *__real_reallocarray(void *p, size_t n, size_t m);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_vasprintf(char **s, const char *fmt, va_list ap);
DIR *__real_opendir(const char *name);
ssize_t __real_write(int fd, const void *p, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_reallocarray(void *p, size_t n, size_t m);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
int __wrap_vasprintf(char **s, const char *fmt, va_list ap);
int __wrap_asprintf(char **s, const char *fmt, ...);
DIR *__wrap_opendir(const char *name);
ssize_t __wrap_write(int fd, const void *p, size_t n);

static atomic_bool alloc_armed;   /* count (and maybe fail) allocations */
static atomic_long alloc_count;   /* allocations seen while armed */
static long alloc_fail_at;        /* 1-based number of the one to fail, 0: none */
static atomic_bool alloc_fired;   /* the injected failure happened */

static bool alloc_backtrace;      /* KURA_ALLOC_BT=1: print where the failure is injected */

enum { AK_MALLOC, AK_CALLOC, AK_REALLOC, AK_STRDUP, AK_MEMALIGN, AK_ASPRINTF, AK_OPENDIR, AK_JSON, _AK_MAX };
static const char *const ak_names[_AK_MAX] = {"malloc", "calloc", "realloc", "strdup", "memalign", "asprintf",
                                              "opendir", "jansson"};
static atomic_long ak_count[_AK_MAX];

static bool alloc_inject(int kind) {
        if (!atomic_load(&alloc_armed))
                return false;
        atomic_fetch_add(&ak_count[kind], 1);
        long c = atomic_fetch_add(&alloc_count, 1) + 1;
        if (c != alloc_fail_at)
                return false;
        atomic_store(&alloc_fired, true);
        if (alloc_backtrace) {
                void *frames[16];
                int n = backtrace(frames, (int) ELEMENTSOF(frames));
                backtrace_symbols_fd(frames, n, STDOUT_FILENO);
        }
        errno = ENOMEM;
        return true;
}

void *__wrap_malloc(size_t n) { return alloc_inject(AK_MALLOC) ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t m) { return alloc_inject(AK_CALLOC) ? NULL : __real_calloc(n, m); }
void *__wrap_realloc(void *p, size_t n) { return alloc_inject(AK_REALLOC) ? NULL : __real_realloc(p, n); }
void *__wrap_reallocarray(void *p, size_t n, size_t m) {
        return alloc_inject(AK_REALLOC) ? NULL : __real_reallocarray(p, n, m);
}
char *__wrap_strdup(const char *s) { return alloc_inject(AK_STRDUP) ? NULL : __real_strdup(s); }
char *__wrap_strndup(const char *s, size_t n) { return alloc_inject(AK_STRDUP) ? NULL : __real_strndup(s, n); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) {
        return alloc_inject(AK_MEMALIGN) ? ENOMEM : __real_posix_memalign(p, a, n);
}
void *__wrap_aligned_alloc(size_t a, size_t n) { return alloc_inject(AK_MEMALIGN) ? NULL : __real_aligned_alloc(a, n); }
int __wrap_vasprintf(char **s, const char *fmt, va_list ap) {
        if (alloc_inject(AK_ASPRINTF)) {
                *s = NULL;
                return -1;
        }
        return __real_vasprintf(s, fmt, ap);
}
int __wrap_asprintf(char **s, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = __wrap_vasprintf(s, fmt, ap);
        va_end(ap);
        return r;
}
/* opendir() allocates its DIR inside glibc, out of the wrap's reach. */
DIR *__wrap_opendir(const char *name) { return alloc_inject(AK_OPENDIR) ? NULL : __real_opendir(name); }

/* Bytes libkura wrote (kio writes with write(2)): how far the ENOSPC limits
 * must reach. */
static atomic_ullong bytes_written;
ssize_t __wrap_write(int fd, const void *p, size_t n) {
        ssize_t k = __real_write(fd, p, n);
        if (k > 0)
                atomic_fetch_add(&bytes_written, (unsigned long long) k);
        return k;
}

/* jansson 2.14's parser ignores a failed strbuffer_append_byte() in
 * lex_save() (src/load.c:230): the byte is dropped and the lexer later
 * asserts (load.c:442) or parses something else.  libkura cannot defend
 * against that, so by default allocations made inside json_loadb() are
 * neither counted nor failed; KURA_ALLOC_JSON_LOAD=1 includes them (use
 * KURA_ALLOC_FORK=1 then: the assertion aborts the process). */
json_t *__real_json_loadb(const char *buf, size_t n, size_t flags, json_error_t *error);
json_t *__wrap_json_loadb(const char *buf, size_t n, size_t flags, json_error_t *error);
static _Thread_local bool in_json_load;
static bool fail_json_load;
json_t *__wrap_json_loadb(const char *buf, size_t n, size_t flags, json_error_t *error) {
        in_json_load = true;
        json_t *j = __real_json_loadb(buf, n, flags, error);
        in_json_load = false;
        return j;
}

static void *json_alloc(size_t n) {
        if (in_json_load && !fail_json_load)
                return __real_malloc(n);
        return alloc_inject(AK_JSON) ? NULL : __real_malloc(n);
}
static void json_release(void *p) { free(p); }

/* ---- test data ------------------------------------------------------------- */

#define NBLOBS 50
/* Version v (1, 2) holds blobs VFIRST(v) .. VFIRST(v)+VBLOBS-1, with zero
 * chunks at list positions 3 and 17; version 3 is written by the verifier. */
#define VBLOBS 30
#define VFIRST(v) ((v) == 1 ? 0 : 20)
#define VCHUNKS (VBLOBS + 2)

static uint8_t *blob[NBLOBS];
static size_t blob_len[NBLOBS];
static uint8_t *getbuf; /* KURA_BLOB_MAX */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

/* Mixed data: incompressible, text-like, runs, tiny, one large; the last
 * five repeat the first five (deduplicated puts). */
static void make_data(void) {
        static const char words[] = "kura backup restore volume chunk pack index manifest ";
        for (int i = 0; i < NBLOBS; i++) {
                if (i >= NBLOBS - 5) {
                        blob_len[i] = blob_len[i - (NBLOBS - 5)];
                        blob[i] = __real_malloc(blob_len[i]);
                        memcpy(blob[i], blob[i - (NBLOBS - 5)], blob_len[i]);
                        continue;
                }
                size_t n;
                switch (i % 4) {
                case 0: n = 8192 + rng() % 32768; break;
                case 1: n = 4096 + rng() % 65536; break;
                case 2: n = 1024 + rng() % 16384; break;
                default: n = 1 + rng() % 200; break;
                }
                if (i == 7)
                        n = 256 << 10;
                blob_len[i] = n;
                blob[i] = __real_malloc(n);
                for (size_t j = 0; j < n; j++) {
                        switch (i % 4) {
                        case 0: blob[i][j] = (uint8_t) rng(); break;
                        case 1: blob[i][j] = (uint8_t) words[(j + (size_t) i) % (sizeof words - 1)]; break;
                        case 2: blob[i][j] = (uint8_t) (j / 512 + (size_t) i); break;
                        default: blob[i][j] = (uint8_t) rng(); break;
                        }
                }
        }
        getbuf = __real_malloc(KURA_BLOB_MAX);
}

/* ---- results --------------------------------------------------------------- */

static long cur_k;               /* for messages */
static unsigned violations;      /* invariant broken: the test fails */
static unsigned suspects;        /* odd but allowed: printed */
static bool quiet_suspects;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stdout, "VIOLATION k=%ld: ", cur_k);
        vfprintf(stdout, fmt, ap);
        fputc('\n', stdout);
        va_end(ap);
        fflush(stdout);
        violations++;
}

/* Distinct "suspect" lines are printed once. */
static char *seen_suspect[256];
static size_t nseen_suspect;
static void suspect(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void suspect(const char *fmt, ...) {
        char line[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        suspects++;
        /* Dedupe on the shape: hex IDs, temporary paths and pids vary. */
        char shape[1024];
        size_t o = 0;
        for (const char *c = line; *c && o < sizeof shape - 8;) {
                size_t h = strspn(c, "0123456789abcdef");
                if (h >= 5) {
                        memcpy(shape + o, "<n>", 3);
                        o += 3;
                        c += h;
                } else if (strncmp(c, "kura-test-alloc-", 16) == 0) {
                        memcpy(shape + o, "<tmp>", 5);
                        o += 5;
                        c += 16 + strspn(c + 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
                } else {
                        shape[o++] = *c++;
                }
        }
        shape[o] = 0;
        memcpy(line, shape, o + 1);
        for (size_t i = 0; i < nseen_suspect; i++)
                if (strcmp(seen_suspect[i], line) == 0)
                        return;
        if (nseen_suspect < ELEMENTSOF(seen_suspect))
                seen_suspect[nseen_suspect++] = __real_strdup(line);
        if (!quiet_suspects) {
                fprintf(stdout, "suspect (first at k=%ld): %s\n", cur_k, line);
                fflush(stdout);
        }
}

/* ---- one run --------------------------------------------------------------- */

typedef enum Mode { MODE_ALLOC, MODE_ENOSPC } Mode;

typedef struct Run {
        Mode mode;
        bool encrypted;
        char dir[64];
        char path[96];
        const char *failed_step;      /* NULL: the scenario completed */
        int failed_r;
        bool init_ok;
        bool saved[3];                /* [1], [2]: version saved (returned 0) */
        char vid[3][2 * KURA_ID_LEN + 1];
        bool forgot1;                 /* forget of version 1 returned 0 */
        bool forget1_tried;
} Run;

/* Histogram of where the injected failure surfaced. */
typedef struct StepCount {
        const char *step;
        unsigned n;
} StepCount;
static StepCount step_counts[64];
static unsigned swallowed;
static long swallowed_k[32];

static void count_step(const char *step) {
        for (size_t i = 0; i < ELEMENTSOF(step_counts); i++) {
                if (!step_counts[i].step)
                        step_counts[i].step = step;
                if (step_counts[i].step == step || strcmp(step_counts[i].step, step) == 0) {
                        step_counts[i].n++;
                        return;
                }
        }
}

/* Step names read back from a child, as the static strings count_step() keeps. */
static const char *intern_step(const char *s) {
        static const char *const names[] = {"open_shared", "worker_new", "hash", "put", "flush", "version_new",
                                            "add_volume", "store_chunks", "flush_lists", "version_save",
                                            "open_exclusive", "forget", "prune"};
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(names[i], s) == 0)
                        return names[i];
        return "other";
}

static const char *step_name(const Run *R) { return R->failed_step ? R->failed_step : "none"; }

static bool fault_fired(const Run *R) { return R->mode == MODE_ALLOC ? atomic_load(&alloc_fired) : true; }

/* Judge a call's result.  true: it succeeded, go on. */
static bool ok(Run *R, const char *step, int r, const KuraErr *err) {
        if (r >= 0)
                return true;
        R->failed_step = step;
        R->failed_r = r;
        if (!fault_fired(R))
                violation("%s failed without an injected fault: %s (%s: %s)", step, strerror(-r),
                          err && err->code ? err->code : "-", err ? err->message : "");
        else if (R->mode == MODE_ALLOC && r != -ENOMEM)
                suspect("%s: ENOMEM reported as %s (%s: %s)", step, strerror(-r), err && err->code ? err->code : "-",
                        err ? err->message : "");
        else if (R->mode == MODE_ENOSPC && r != -ENOSPC)
                violation("%s: ENOSPC reported as %s (%s: %s)", step, strerror(-r), err && err->code ? err->code : "-",
                          err ? err->message : "");
        if (err && !err->code)
                violation("%s returned %s but left err.code unset", step, strerror(-r));
        if (err && err->code && R->mode == MODE_ENOSPC && r == -ENOSPC && strcmp(err->code, KURA_E_REPO_FULL) != 0)
                violation("%s: ENOSPC reported with code %s (%s), not %s", step, err->code, err->message,
                          KURA_E_REPO_FULL);
        if (err && err->code && R->mode == MODE_ALLOC && r == -ENOMEM && strcmp(err->code, KURA_E_NO_MEMORY) != 0)
                suspect("%s: ENOMEM reported with code %s (%s)", step, err->code, err->message);
        return false;
}

static bool ok_ptr(Run *R, const char *step, const void *p) {
        if (p)
                return true;
        return ok(R, step, -ENOMEM, NULL);
}

static int pw_fn(void *ud, char **ret) {
        (void) ud;
        *ret = __real_strdup("correct horse");
        return *ret ? 0 : -ENOMEM;
}

static int open_repo(Run *R, KuraLockMode mode, KuraRepo **ret, KuraErr *err) {
        KuraRepoOpenOpts o = {.lock = mode, .password_fn = pw_fn};
        return kura_repo_open(R->path, &o, ret, err);
}

static void expected_ids(int v, KuraId out[VCHUNKS], const KuraId *blob_ids) {
        size_t j = 0;
        for (int i = 0; i < VCHUNKS; i++) {
                if (i == 3 || i == 17)
                        out[i] = KURA_ID_ZERO;
                else
                        out[i] = blob_ids[VFIRST(v) + (int) j++];
        }
}

/* Put version v's blobs, its chunk list, flush and save. */
static bool make_version(Run *R, KuraRepo *repo, KuraRepoWorker *w, int v) {
        KuraErr err = {0};
        KuraId ids[NBLOBS], chunks[VCHUNKS];
        KuraVersion *ver = NULL;
        bool good = false;
        int r;

        for (int i = VFIRST(v); i < VFIRST(v) + VBLOBS; i++) {
                r = kura_repo_hash(w, blob[i], blob_len[i], &ids[i]);
                if (!ok(R, "hash", r, NULL))
                        goto out;
                r = kura_repo_put(w, KURA_BLOB_DATA, &ids[i], blob[i], blob_len[i], NULL, &err);
                if (!ok(R, "put", r, &err))
                        goto out;
        }
        r = kura_repo_flush(repo, &err);
        if (!ok(R, "flush", r, &err))
                goto out;
        expected_ids(v, chunks, ids);

        ver = kura_version_new();
        if (!ok_ptr(R, "version_new", ver))
                goto out;
        ver->time_ns = kura_now_ns();
        ver->hostname = __real_strdup(v == 1 ? "v1" : "v2");
        KuraVolume *vol = kura_version_add_volume(ver, v == 1 ? "vol1" : "vol2", "/dev/test", "ext4", "u-u-i-d",
                                                  "label", (uint64_t) VCHUNKS * KURA_CHUNK_SIZE_MIN,
                                                  KURA_CHUNK_SIZE_MIN);
        if (!ok_ptr(R, "add_volume", vol))
                goto out;
        r = kura_volume_store_chunks(w, vol, chunks, &err);
        if (!ok(R, "store_chunks", r, &err))
                goto out;
        r = kura_repo_flush(repo, &err);
        if (!ok(R, "flush_lists", r, &err))
                goto out;
        r = kura_version_save(repo, ver, &err);
        if (!ok(R, "version_save", r, &err))
                goto out;
        R->saved[v] = true;
        memcpy(R->vid[v], ver->id, sizeof R->vid[v]);
        good = true;
out:
        kura_version_free(ver);
        return good;
}

/* Load version ver's chunks and compare with what it should hold; get every
 * blob and compare bytes.  In the scenario (faults possible) a failing call
 * is judged by ok(); in the verifier any failure is a violation. */
static bool read_version(Run *R, KuraRepoWorker *w, const KuraVersion *ver, const KuraId *blob_ids, bool verifying) {
        KuraErr err = {0};
        KuraId *got = NULL;
        const char *host = ver->hostname ? ver->hostname : "";
        int v = strcmp(host, "v1") == 0 ? 1 : strcmp(host, "v2") == 0 ? 2 : 0;
        bool good = false;

        if (v == 0 || ver->nvolumes != 1 || ver->volumes[0].nchunks != VCHUNKS) {
                violation("version %s: unexpected content (host %s, %zu volumes)", ver->id,
                          ver->hostname ? ver->hostname : "(null)", ver->nvolumes);
                return false;
        }
        int r = kura_volume_load_chunks(w, &ver->volumes[0], &got, &err);
        if (verifying && r < 0) {
                violation("version %s: load_chunks: %s: %s", ver->id, err.code, err.message);
                return false;
        }
        if (!ok(R, "load_chunks", r, &err))
                return false;
        KuraId exp[VCHUNKS];
        expected_ids(v, exp, blob_ids);
        if (memcmp(got, exp, sizeof exp) != 0) {
                violation("version %s (v%d): chunk list differs from what was stored", ver->id, v);
                goto out;
        }
        for (int i = VFIRST(v); i < VFIRST(v) + VBLOBS; i++) {
                size_t len = 0;
                kura_err_clear(&err);
                r = kura_repo_get(w, &blob_ids[i], getbuf, &len, &err);
                if (verifying && r < 0) {
                        violation("version %s: get blob %d: %s: %s", ver->id, i, err.code, err.message);
                        goto out;
                }
                if (!ok(R, "get", r, &err))
                        goto out;
                if (len != blob_len[i] || memcmp(getbuf, blob[i], len) != 0) {
                        violation("version %s: blob %d reads back different (%zu bytes, %zu expected)", ver->id, i,
                                  len, blob_len[i]);
                        goto out;
                }
        }
        good = true;
out:
        free(got);
        return good;
}

static bool hash_all(Run *R, KuraRepoWorker *w, KuraId ids[NBLOBS]) {
        for (int i = 0; i < NBLOBS; i++)
                if (!ok(R, "hash", kura_repo_hash(w, blob[i], blob_len[i], &ids[i]), NULL))
                        return false;
        return true;
}

/* The write session: versions from..to. */
static void write_session(Run *R, int from, int to) {
        KuraErr err = {0};
        KuraRepo *repo = NULL;
        KuraRepoWorker *w = NULL;
        int r = open_repo(R, KURA_LOCK_SHARED, &repo, &err);
        if (!ok(R, "open_shared", r, &err))
                goto out;
        if (!ok(R, "worker_new", kura_repo_worker_new(repo, &w), NULL))
                goto out;
        for (int v = from; v <= to; v++)
                if (!make_version(R, repo, w, v))
                        goto out;
out:
        kura_repo_worker_free(w);
        kura_repo_close(repo);
}

/* The read session: list, load, get, check. */
static void read_session(Run *R) {
        KuraErr err = {0};
        KuraRepo *repo = NULL;
        KuraRepoWorker *w = NULL;
        KuraVersion **list = NULL;
        size_t n = 0, damaged = 0;
        KuraCheckReport *rep = NULL;
        KuraId ids[NBLOBS];

        int r = open_repo(R, KURA_LOCK_SHARED_OR_NONE, &repo, &err);
        if (!ok(R, "open_read", r, &err))
                goto out;
        if (!ok(R, "worker_new", kura_repo_worker_new(repo, &w), NULL) || !hash_all(R, w, ids))
                goto out;
        r = kura_version_list(repo, false, &list, &n, &damaged, &err);
        if (!ok(R, "version_list", r, &err))
                goto out;
        if (n != 2)
                violation("version_list found %zu versions, 2 expected", n);
        for (size_t i = 0; i < n; i++)
                if (!read_version(R, w, list[i], ids, false))
                        goto out;
        r = kura_repo_check(repo, true, NULL, NULL, &rep, &err);
        if (!ok(R, "check", r, &err))
                goto out;
        if (rep->nerrors > 0) {
                if (fault_fired(R) && R->mode == MODE_ALLOC)
                        suspect("check under ENOMEM reported damage instead of failing: %s %s: %s",
                                rep->problems[0].code, rep->problems[0].object, rep->problems[0].message);
                else
                        violation("check reported %zu errors, first: %s %s: %s", rep->nerrors, rep->problems[0].code,
                                  rep->problems[0].object, rep->problems[0].message);
                R->failed_step = "check_report";
                R->failed_r = -EIO;
        }
out:
        kura_check_report_free(rep);
        kura_version_list_free(list, n);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
}

static void prune_session(Run *R) {
        KuraErr err = {0};
        KuraRepo *repo = NULL;
        KuraPruneStats st = {0};
        int r = open_repo(R, KURA_LOCK_EXCLUSIVE, &repo, &err);
        if (!ok(R, "open_exclusive", r, &err))
                goto out;
        R->forget1_tried = true;
        r = kura_version_forget(repo, R->vid[1], &err);
        if (!ok(R, "forget", r, &err))
                goto out;
        R->forgot1 = true;
        r = kura_repo_prune(repo, &st, &err);
        if (!ok(R, "prune", r, &err))
                goto out;
        if (st.packs_deleted + st.packs_rewritten == 0)
                suspect("prune after forgetting version 1 changed no pack");
out:
        kura_repo_close(repo);
}

static void scenario(Run *R) {
        KuraErr err = {0};
        KuraRepoInitOpts io = {.encrypted = R->encrypted, .password = "correct horse", .kdf_mem = 64 << 10,
                               .kdf_passes = 1};
        int r = kura_repo_init(R->path, &io, NULL, &err);
        if (!ok(R, "init", r, &err))
                return;
        R->init_ok = true;
        write_session(R, 1, 2);
        if (R->failed_step)
                return;
        read_session(R);
        if (R->failed_step)
                return;
        prune_session(R);
}

/* After the run, with allocations working: the repository must be whole. */
static void verify(Run *R) {
        KuraErr err = {0};
        KuraRepo *repo = NULL;
        KuraRepoWorker *w = NULL;
        KuraVersion **list = NULL;
        size_t n = 0, damaged = 0;
        KuraCheckReport *rep = NULL;
        KuraId ids[NBLOBS];
        int r;

        r = open_repo(R, KURA_LOCK_EXCLUSIVE, &repo, &err);
        if (r < 0) {
                if (!R->init_ok) {
                        /* A half-made repository has no config: not a repository. */
                        if (!err.code)
                                violation("open of a half-initialised repository failed without err.code");
                        else if (strcmp(err.code, KURA_E_NOT_A_REPO) != 0 &&
                                 strcmp(err.code, KURA_E_REPO_NOT_FOUND) != 0)
                                suspect("after init failed at %s, open fails with %s (%s)", step_name(R), err.code,
                                        err.message);
                        return;
                }
                violation("repository does not open (exclusive) after failure at %s: %s: %s", step_name(R),
                          err.code, err.message);
                return;
        }
        if (!R->init_ok)
                suspect("init failed at %s (%s) but left a repository that opens", step_name(R),
                        strerror(-R->failed_r));
        if (kura_repo_worker_new(repo, &w) < 0) {
                violation("worker_new failed without faults");
                goto out;
        }
        for (int i = 0; i < NBLOBS; i++)
                assert_int_equal(kura_repo_hash(w, blob[i], blob_len[i], &ids[i]), 0);

        r = kura_repo_check(repo, true, NULL, NULL, &rep, &err);
        if (r < 0)
                violation("check failed after failure at %s: %s: %s", step_name(R), err.code, err.message);
        else if (rep->nerrors > 0)
                for (size_t i = 0; i < rep->nproblems; i++)
                        if (rep->problems[i].severity == KURA_PROBLEM_ERROR)
                                violation("after failure at %s (%s), check: %s %s: %s", step_name(R),
                                          R->failed_step ? strerror(-R->failed_r) : "-", rep->problems[i].code,
                                          rep->problems[i].object, rep->problems[i].message);

        r = kura_version_list(repo, false, &list, &n, &damaged, &err);
        if (r < 0) {
                violation("version list failed after failure at %s: %s: %s", step_name(R), err.code, err.message);
                goto out;
        }
        for (int v = 1; v <= 2; v++) {
                if (!R->saved[v] || (v == 1 && R->forgot1))
                        continue;
                bool found = false;
                for (size_t i = 0; i < n; i++)
                        found = found || strcmp(list[i]->id, R->vid[v]) == 0;
                if (!found && v == 1 && R->forget1_tried)
                        /* forget failed, but the manifest may be gone already */
                        suspect("forget of version 1 failed (%s) but the version is gone", strerror(-R->failed_r));
                else if (!found)
                        violation("version %d (%s), saved before the failure at %s, is gone", v, R->vid[v],
                                  step_name(R));
        }
        for (size_t i = 0; i < n; i++) {
                bool known = (R->saved[1] && !R->forgot1 && strcmp(list[i]->id, R->vid[1]) == 0) ||
                             (R->saved[2] && strcmp(list[i]->id, R->vid[2]) == 0);
                bool forgotten = R->forgot1 && strcmp(list[i]->id, R->vid[1]) == 0;
                if (forgotten)
                        violation("version 1 was forgotten (returned 0) but is still listed");
                else if (!known)
                        /* save failed after its manifest was made durable: allowed, must still read back */
                        suspect("a version whose save reported failure (at %s) is listed", step_name(R));
                read_version(R, w, list[i], ids, true);
        }

        /* Store everything again: blobs the index claims must really be there. */
        for (int i = 0; i < NBLOBS; i++) {
                kura_err_clear(&err);
                r = kura_repo_put(w, KURA_BLOB_DATA, &ids[i], blob[i], blob_len[i], NULL, &err);
                if (r < 0) {
                        violation("re-put of blob %d failed: %s: %s", i, err.code, err.message);
                        goto out;
                }
        }
        r = kura_repo_flush(repo, &err);
        if (r < 0) {
                violation("re-flush failed: %s: %s", err.code, err.message);
                goto out;
        }
        for (int i = 0; i < NBLOBS; i++) {
                size_t len = 0;
                kura_err_clear(&err);
                r = kura_repo_get(w, &ids[i], getbuf, &len, &err);
                if (r < 0 || len != blob_len[i] || memcmp(getbuf, blob[i], len) != 0) {
                        violation("after failure at %s, blob %d stored again does not read back (%s: %s)",
                                  step_name(R), i, r < 0 ? err.code : "differs", r < 0 ? err.message : "");
                        goto out;
                }
        }
out:
        kura_check_report_free(rep);
        kura_version_list_free(list, n);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f) {
        (void) st, (void) flag, (void) f;
        return remove(p);
}

/* tmpfs (when there is one) keeps the thousands of fsyncs cheap. */
static const char *tmp_base(void) {
        const char *e = getenv("KURA_ALLOC_TMP");
        if (e && *e)
                return e;
        return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

static void run_setup(Run *R, Mode mode, bool encrypted) {
        memset(R, 0, sizeof *R);
        R->mode = mode;
        R->encrypted = encrypted;
        snprintf(R->dir, sizeof R->dir, "%s/kura-test-alloc-XXXXXX", tmp_base());
        assert_non_null(mkdtemp(R->dir));
        snprintf(R->path, sizeof R->path, "%s/repo", R->dir);
}

static void run_cleanup(Run *R) {
        if (getenv("KURA_ALLOC_KEEP")) {
                printf("kept %s\n", R->dir);
                return;
        }
        nftw(R->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* One allocation-failure run: k = 0 means no failure.  Returns the number
 * of allocations counted while armed. */
static long run_alloc(bool encrypted, long k) {
        Run R;
        run_setup(&R, MODE_ALLOC, encrypted);
        cur_k = k;
        atomic_store(&alloc_count, 0);
        atomic_store(&alloc_fired, false);
        alloc_fail_at = k;
        atomic_store(&alloc_armed, true);
        scenario(&R);
        atomic_store(&alloc_armed, false);
        long count = atomic_load(&alloc_count);
        if (k > 0) {
                if (R.failed_step)
                        count_step(R.failed_step);
                else if (atomic_load(&alloc_fired)) {
                        if (swallowed < ELEMENTSOF(swallowed_k))
                                swallowed_k[swallowed] = k;
                        swallowed++;
                }
        } else if (R.failed_step) {
                violation("the scenario fails without faults at %s: %s", R.failed_step, strerror(-R.failed_r));
        }
        if (k > 0 && !atomic_load(&alloc_fired) && k <= count)
                violation("allocation %ld was counted but did not fail", k);
        verify(&R);
        run_cleanup(&R);
        return count;
}

static long env_long(const char *name, long def) {
        const char *s = getenv(name);
        return s && *s ? strtol(s, NULL, 10) : def;
}

static void alloc_sweep(bool encrypted) {
        const char *kind = encrypted ? "encrypted" : "unencrypted";
        bool forking = env_long("KURA_ALLOC_FORK", 0) != 0;
        long only = env_long("KURA_ALLOC_ONLY", 0);
        double budget = (double) env_long("KURA_ALLOC_BUDGET", 20);

        violations = suspects = swallowed = 0;
        memset(step_counts, 0, sizeof step_counts);

        memset(ak_count, 0, sizeof ak_count);
        long n = run_alloc(encrypted, 0);
        double t0 = now_s(); /* the first run pays for warming up */
        long n2 = run_alloc(encrypted, 0);
        double per = now_s() - t0; /* a whole scenario: later k fail later, so cost about that */
        assert_int_equal(violations, 0);
        printf("%s: %ld allocations in the scenario (second run %ld), %.1f ms per run:", kind, n, n2, per * 1e3);
        for (int i = 0; i < _AK_MAX; i++)
                printf(" %s=%ld", ak_names[i], atomic_load(&ak_count[i]) / 2);
        printf("\n");
        if (n2 > n)
                n = n2;

        long stride = env_long("KURA_ALLOC_STRIDE", 0);
        if (env_long("KURA_ALLOC_ALL", 0))
                stride = 1;
        bool adaptive = stride <= 0;
        if (adaptive)
                stride = 1;
        unsigned runs = 0;
        t0 = now_s();
        for (long k = 1; k <= n + 2; k++) {
                if (adaptive && k == 201) {
                        /* The first 200 always, then enough of the rest to
                         * fill the budget (each costing about a whole
                         * scenario, as the later failures come late). */
                        double used = now_s() - t0, each = KURA_MAX(used / 200, per);
                        long more = used < budget ? (long) ((budget - used) / each) : 1;
                        stride = more > 0 ? (n - 200 + more - 1) / more : n;
                        if (stride < 1)
                                stride = 1;
                }
                if (only && k != only)
                        continue;
                if (!only && k > 200 && (k - 200) % stride != 0 && k < n - 2)
                        continue;
                runs++;
                if (!forking) {
                        run_alloc(encrypted, k);
                        continue;
                }
                fflush(stdout);
                pid_t pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        violations = 0;
                        run_alloc(encrypted, k);
                        fflush(stdout);
                        _exit(violations ? 1 : 0);
                }
                int status;
                assert_int_equal(waitpid(pid, &status, 0), pid);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        cur_k = k;
                        if (WIFSIGNALED(status))
                                violation("child crashed with signal %d", WTERMSIG(status));
                        else
                                violations++;
                }
        }
        double took = now_s() - t0;
        printf("%s: %u allocation points exercised (1..200, then every %ld-th up to %ld) in %.1f s; "
               "%u violations, %u suspect results, %u faults absorbed without an error\n",
               kind, runs, stride, n, took, violations, suspects, swallowed);
        printf("%s: where the failure surfaced:", kind);
        for (size_t i = 0; i < ELEMENTSOF(step_counts) && step_counts[i].step; i++)
                printf(" %s=%u", step_counts[i].step, step_counts[i].n);
        printf("\n%s: absorbed at k =", kind);
        for (unsigned i = 0; i < swallowed && i < ELEMENTSOF(swallowed_k); i++)
                printf(" %ld", swallowed_k[i]);
        printf(" (KURA_ALLOC_BT=1 KURA_ALLOC_ONLY=k shows where)\n");
        fflush(stdout);
        assert_int_equal(violations, 0);
}

static void test_alloc_plain(void **state) {
        (void) state;
        alloc_sweep(false);
}

static void test_alloc_encrypted(void **state) {
        (void) state;
        alloc_sweep(true);
}

/* ---- ENOSPC ---------------------------------------------------------------- */

/* In the child: write version 2 onto a repository holding version 1, forget
 * 1, prune.  Writes the outcome to status_path. */
static int enospc_child(const char *dir, bool encrypted, const char *vid1, const char *status_path) {
        Run R;
        memset(&R, 0, sizeof R);
        R.mode = MODE_ENOSPC;
        R.encrypted = encrypted;
        snprintf(R.dir, sizeof R.dir, "%s", dir);
        snprintf(R.path, sizeof R.path, "%s/repo", dir);
        R.init_ok = true;
        R.saved[1] = true;
        snprintf(R.vid[1], sizeof R.vid[1], "%s", vid1);
        atomic_store(&bytes_written, 0);
        write_session(&R, 2, 2);
        unsigned long long written_v2 = atomic_load(&bytes_written);
        if (!R.failed_step)
                prune_session(&R);
        unsigned long long written = atomic_load(&bytes_written);
        FILE *f = fopen(status_path, "we");
        if (!f)
                return 1;
        fprintf(f, "%d %d %d %s %s %llu %llu\n", R.saved[2], R.forgot1, R.failed_r, R.saved[2] ? R.vid[2] : "-",
                R.failed_step ? R.failed_step : "-", written, written_v2);
        fclose(f);
        return violations ? 1 : 0;
}

/* Make a repository with version 1, then run the child with limit bytes
 * (UINT64_MAX: none).  Returns the bytes the child wrote. */
static uint64_t enospc_run(bool encrypted, uint64_t limit, uint64_t *ret_written_v2) {
        Run R;
        run_setup(&R, MODE_ALLOC, encrypted);
        cur_k = (long) (limit == UINT64_MAX ? -1 : (long) limit);
        KuraErr err = {0};
        KuraRepoInitOpts io = {.encrypted = encrypted, .password = "correct horse", .kdf_mem = 64 << 10,
                               .kdf_passes = 1};
        assert_int_equal(kura_repo_init(R.path, &io, NULL, &err), 0);
        R.init_ok = true;
        write_session(&R, 1, 1);
        assert_null(R.failed_step);
        assert_true(R.saved[1]);

        char status_path[128], limit_s[32];
        snprintf(status_path, sizeof status_path, "%s/status", R.dir);
        snprintf(limit_s, sizeof limit_s, "%llu", (unsigned long long) (limit == UINT64_MAX ? (1ULL << 50) : limit));
        fflush(stdout);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                setenv("KURA_FAULT_ENOSPC_AFTER", limit_s, 1);
                execl("/proc/self/exe", "test-alloc", "--enospc-child", R.dir, encrypted ? "1" : "0", R.vid[1],
                      status_path, (char *) NULL);
                _exit(127);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                if (WIFSIGNALED(status))
                        violation("ENOSPC child crashed with signal %d", WTERMSIG(status));
                else
                        violation("ENOSPC child reported violations (exit %d)", WEXITSTATUS(status));
        }
        FILE *f = fopen(status_path, "re");
        int saved2 = 0, forgot1 = 0, fr = 0;
        unsigned long long written = 0, written_v2 = 0;
        char vid2[80] = "", step[64] = "";
        if (!f || fscanf(f, "%d %d %d %79s %63s %llu %llu", &saved2, &forgot1, &fr, vid2, step, &written,
                         &written_v2) != 7) {
                violation("ENOSPC child left no status");
        } else {
                R.saved[2] = saved2;
                if (saved2)
                        snprintf(R.vid[2], sizeof R.vid[2], "%.64s", vid2);
                R.forgot1 = forgot1;
                R.failed_r = fr;
                R.failed_step = strcmp(step, "-") == 0 ? NULL : intern_step(step);
                if (R.failed_step)
                        count_step(R.failed_step);
        }
        if (f)
                fclose(f);
        unlink(status_path);
        if (limit == UINT64_MAX && R.failed_step)
                violation("the ENOSPC scenario fails without a limit at %s", R.failed_step);
        verify(&R);
        run_cleanup(&R);
        if (ret_written_v2)
                *ret_written_v2 = written_v2;
        return written;
}

static void enospc_sweep(bool encrypted) {
        const char *kind = encrypted ? "encrypted" : "unencrypted";
        violations = suspects = 0;
        memset(step_counts, 0, sizeof step_counts);
        double t0 = now_s();
        /* Bytes the child writes without a limit (lock files, pack, index,
         * manifest, prune's rewritten pack and index). */
        uint64_t v2 = 0;
        uint64_t total = enospc_run(encrypted, UINT64_MAX, &v2) + 4096;
        assert_int_equal(violations, 0);
        uint64_t limits[96];
        size_t nl = 0;
        static const uint64_t small[] = {0, 1, 16, 100, 512, 4096, 65536};
        for (size_t i = 0; i < ELEMENTSOF(small); i++)
                limits[nl++] = small[i];
        for (uint64_t i = 1; i <= 24; i++)
                limits[nl++] = total * i / 24 + i * 37; /* odd offsets: not all on block boundaries */
        /* The small metadata writes at the end of the write session (pack
         * header, index file, list blobs, manifest) lie within a few KiB. */
        for (uint64_t i = 1; i <= 20 && i * 131 < v2; i++)
                limits[nl++] = v2 - i * 131;
        for (size_t i = 0; i < nl; i++)
                enospc_run(encrypted, limits[i], NULL);
        printf("%s: ENOSPC injected at %zu byte counts (0 .. %llu of %llu) in %.1f s; %u violations, "
               "%u suspect results\n",
               kind, nl, (unsigned long long) limits[ELEMENTSOF(small) + 23], (unsigned long long) total,
               now_s() - t0, violations, suspects);
        printf("%s: where ENOSPC surfaced:", kind);
        for (size_t i = 0; i < ELEMENTSOF(step_counts) && step_counts[i].step; i++)
                printf(" %s=%u", step_counts[i].step, step_counts[i].n);
        printf("\n");
        fflush(stdout);
        assert_int_equal(violations, 0);
}

static void test_enospc_plain(void **state) {
        (void) state;
        enospc_sweep(false);
}

static void test_enospc_encrypted(void **state) {
        (void) state;
        enospc_sweep(true);
}

int main(int argc, char **argv) {
        json_set_alloc_funcs(json_alloc, json_release);
        fail_json_load = getenv("KURA_ALLOC_JSON_LOAD") != NULL;
        if (getenv("KURA_ALLOC_BT")) {
                void *frame;
                backtrace(&frame, 1); /* loads libgcc now, not inside a failing allocation */
                alloc_backtrace = true;
        }
        make_data();
        if (argc == 6 && strcmp(argv[1], "--enospc-child") == 0)
                return enospc_child(argv[2], strcmp(argv[3], "1") == 0, argv[4], argv[5]);

        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_alloc_plain),
                cmocka_unit_test(test_alloc_encrypted),
                cmocka_unit_test(test_enospc_plain),
                cmocka_unit_test(test_enospc_encrypted),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        for (int i = 0; i < NBLOBS; i++)
                free(blob[i]);
        free(getbuf);
        for (size_t i = 0; i < nseen_suspect; i++)
                free(seen_suspect[i]);
        return r;
}
