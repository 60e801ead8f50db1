/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests of lib/repo's core: codecs (index file, pack header, list blob,
 * config), the in-memory index, the chunk store (put/get/flush/reopen,
 * encrypted and not), damage detection, locks, key slots, a full disk.
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "repo/repo-internal.h"

#define PASSWORD "correct horse battery staple"

/* ---- helpers ----------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd64(void) {
        /* xorshift64*: fixed seed, reproducible */
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return rng_state * 0x2545f4914f6cdd1dULL;
}
static void rnd_fill(void *p, size_t n) {
        uint8_t *b = p;
        for (size_t i = 0; i < n; i++)
                b[i] = (uint8_t) rnd64();
}
static void rnd_id(KuraId *id) { rnd_fill(id->b, KURA_ID_LEN); }

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f) {
        (void) st, (void) flag, (void) f;
        return remove(p);
}
static void rm_rf(const char *p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static char *mktemp_dir(void) {
        char *t = strdup("/tmp/kura-test-repo-XXXXXX");
        assert_non_null(mkdtemp(t));
        return t;
}

static int pw_fn(void *ud, char **ret) {
        if (!ud)
                return -ENOKEY;
        *ret = strdup(ud);
        return *ret ? 0 : -ENOMEM;
}

static char *make_repo(bool encrypted, char **ret_dir) {
        char *dir = mktemp_dir();
        char *path = kura_path_join(dir, "repo");
        KuraRepoInitOpts o = {.encrypted = encrypted, .password = PASSWORD, .kdf_mem = 64 << 10, .kdf_passes = 1};
        KuraErr err = {0};
        char *id = NULL;
        assert_int_equal(kura_repo_init(path, &o, &id, &err), 0);
        assert_non_null(id);
        assert_int_equal(strlen(id), 64);
        free(id);
        *ret_dir = dir;
        return path;
}

static KuraRepo *open_repo(const char *path, KuraLockMode mode, const char *password) {
        KuraRepoOpenOpts o = {.lock = mode, .password_fn = pw_fn, .password_userdata = (void *) password};
        KuraErr err = {0};
        KuraRepo *repo = NULL;
        int r = kura_repo_open(path, &o, &repo, &err);
        if (r < 0)
                fail_msg("open %s: %s: %s", path, err.code, err.message);
        return repo;
}

static int open_err(const char *path, KuraLockMode mode, const char *password, KuraErr *err) {
        KuraRepoOpenOpts o = {.lock = mode, .password_fn = password ? pw_fn : NULL,
                              .password_userdata = (void *) password};
        KuraRepo *repo = NULL;
        int r = kura_repo_open(path, &o, &repo, err);
        if (r >= 0)
                kura_repo_close(repo);
        return r;
}

static size_t count_files(const char *dir) {
        DIR *d = opendir(dir);
        if (!d)
                return 0;
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

/* Path of the only (or first) pack file in the repository. */
static char *first_pack(const char *repo) {
        _cleanup_free_ char *data = kura_path_join(repo, "data");
        DIR *d = opendir(data);
        assert_non_null(d);
        struct dirent *de;
        char *found = NULL;
        while (!found && (de = readdir(d))) {
                if (strlen(de->d_name) != 2)
                        continue;
                _cleanup_free_ char *sub = kura_path_join(data, de->d_name);
                DIR *s = opendir(sub);
                struct dirent *pe;
                while (s && !found && (pe = readdir(s)))
                        if (strlen(pe->d_name) == 64)
                                found = kura_path_join(sub, pe->d_name);
                if (s)
                        closedir(s);
        }
        closedir(d);
        assert_non_null(found);
        return found;
}

static void flip_byte(const char *path, uint64_t off) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t b;
        assert_int_equal(pread(fd, &b, 1, (off_t) off), 1);
        b ^= 0x40;
        assert_int_equal(pwrite(fd, &b, 1, (off_t) off), 1);
        close(fd);
}

/* ---- codecs -------------------------------------------------------------- */

static KuraIndexEntry mk_entry(uint8_t type, uint32_t off, uint32_t len) {
        KuraIndexEntry e = {.offset = off, .type_length = kura_ie_pack_tl(type, len)};
        rnd_id(&e.id);
        return e;
}

static void test_index_file_codec(void **state) {
        (void) state;
        KuraPackEntries in[3];
        for (size_t i = 0; i < 3; i++) {
                rnd_id(&in[i].pack_id);
                in[i].n = i == 1 ? 0 : 5 + i;
                in[i].entries = calloc(8, sizeof(KuraIndexEntry));
                uint32_t off = 0;
                for (size_t j = 0; j < in[i].n; j++) {
                        in[i].entries[j] = mk_entry((uint8_t) (j & 1), off, 1000 + (uint32_t) j);
                        off += 1000 + (uint32_t) j;
                }
        }
        KuraBuf b = {0};
        assert_int_equal(kura_index_file_encode(in, 3, &b), 0);
        assert_int_equal(b.len, 12 + 3 * 36 + (5 + 7) * 41);
        assert_memory_equal(b.data, "KIDX\1\0\0\0\3\0\0\0", 12);

        KuraPackEntries *out = NULL;
        size_t n = 0;
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), 0);
        assert_int_equal(n, 3);
        for (size_t i = 0; i < 3; i++) {
                assert_memory_equal(out[i].pack_id.b, in[i].pack_id.b, 32);
                assert_int_equal(out[i].n, in[i].n);
                for (size_t j = 0; j < in[i].n; j++) {
                        assert_memory_equal(out[i].entries[j].id.b, in[i].entries[j].id.b, 32);
                        assert_int_equal(out[i].entries[j].offset, in[i].entries[j].offset);
                        assert_int_equal(out[i].entries[j].type_length, in[i].entries[j].type_length);
                }
        }
        kura_pack_entries_free(out, n);

        /* every truncation is rejected */
        for (size_t len = 0; len < b.len; len++)
                assert_int_equal(kura_index_file_decode(b.data, len, &out, &n), -EBADMSG);
        /* trailing garbage */
        KuraBuf c = {0};
        kura_buf_append(&c, b.data, b.len);
        kura_buf_u8(&c, 0);
        assert_int_equal(kura_index_file_decode(c.data, c.len, &out, &n), -EBADMSG);
        kura_buf_free(&c);
        /* newer version, bad magic, bad type, zero length, huge counts */
        b.data[4] = 2;
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), -EPROTONOSUPPORT);
        b.data[4] = 1;
        b.data[0] = 'X';
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), -EBADMSG);
        b.data[0] = 'K';
        size_t rec0 = 12 + 36; /* first entry of the first pack */
        b.data[rec0] = 7;
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), -EBADMSG);
        b.data[rec0] = 0;
        uint8_t save[4];
        memcpy(save, b.data + rec0 + 37, 4);
        memset(b.data + rec0 + 37, 0, 4);
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), -EBADMSG);
        memset(b.data + rec0 + 37, 0xff, 4);
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), -EBADMSG);
        memcpy(b.data + rec0 + 37, save, 4);
        memset(b.data + 8, 0xff, 4); /* npacks = 4 G */
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), -EBADMSG);
        put_le32(b.data + 8, 3);
        memset(b.data + 12 + 32, 0xff, 4); /* count = 4 G */
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), -EBADMSG);
        put_le32(b.data + 12 + 32, 5);
        assert_int_equal(kura_index_file_decode(b.data, b.len, &out, &n), 0);
        kura_pack_entries_free(out, n);
        /* random garbage never crashes and is rejected */
        uint8_t g[512];
        for (int i = 0; i < 2000; i++) {
                size_t len = (size_t) (rnd64() % sizeof g);
                rnd_fill(g, len);
                if (i & 1 && len >= 12)
                        memcpy(g, "KIDX\1\0\0\0", 8);
                int r = kura_index_file_decode(g, len, &out, &n);
                if (r == 0)
                        kura_pack_entries_free(out, n);
                else
                        assert_true(r == -EBADMSG || r == -EPROTONOSUPPORT);
        }
        kura_buf_free(&b);
        for (size_t i = 0; i < 3; i++)
                free(in[i].entries);
}

static void test_pack_header_codec(void **state) {
        (void) state;
        KuraIndexEntry e[4];
        uint32_t off = 0;
        for (int i = 0; i < 4; i++) {
                e[i] = mk_entry((uint8_t) (i == 3), off, 77 + (uint32_t) i);
                off += 77 + (uint32_t) i;
        }
        KuraBuf b = {0};
        assert_int_equal(kura_pack_header_encode(e, 4, &b), 0);
        assert_int_equal(b.len, 12 + 4 * 41);
        assert_memory_equal(b.data, "KPKH\1\0\0\0\4\0\0\0", 12);
        KuraIndexEntry *out = NULL;
        size_t n = 0;
        assert_int_equal(kura_pack_header_decode(b.data, b.len, &out, &n), 0);
        assert_int_equal(n, 4);
        for (int i = 0; i < 4; i++) {
                assert_memory_equal(out[i].id.b, e[i].id.b, 32);
                assert_int_equal(out[i].offset, e[i].offset);
                assert_int_equal(kura_ie_length(&out[i]), kura_ie_length(&e[i]));
                assert_int_equal(kura_ie_type(&out[i]), kura_ie_type(&e[i]));
        }
        free(out);
        for (size_t len = 0; len < b.len; len++)
                assert_int_equal(kura_pack_header_decode(b.data, len, &out, &n), -EBADMSG);
        b.data[4] = 9;
        assert_int_equal(kura_pack_header_decode(b.data, b.len, &out, &n), -EPROTONOSUPPORT);
        b.data[4] = 1;
        b.data[8] = 5; /* count larger than the records */
        assert_int_equal(kura_pack_header_decode(b.data, b.len, &out, &n), -EBADMSG);
        b.data[8] = 4;
        memset(b.data + 12 + 1, 0, 32); /* reserved ID ZERO */
        assert_int_equal(kura_pack_header_decode(b.data, b.len, &out, &n), -EBADMSG);
        kura_buf_free(&b);

        /* empty header is valid */
        assert_int_equal(kura_pack_header_encode(NULL, 0, &b), 0);
        assert_int_equal(kura_pack_header_decode(b.data, b.len, &out, &n), 0);
        assert_int_equal(n, 0);
        free(out);
        kura_buf_free(&b);

        /* trailer */
        uint8_t tail[8];
        uint32_t hl;
        put_le32(tail, 100);
        memcpy(tail + 4, "KPK1", 4);
        assert_int_equal(kura_pack_trailer_decode(tail, 1000, &hl), 0);
        assert_int_equal(hl, 100);
        assert_int_equal(kura_pack_trailer_decode(tail, 107, &hl), -EBADMSG);
        memcpy(tail + 4, "KPK2", 4);
        assert_int_equal(kura_pack_trailer_decode(tail, 1000, &hl), -EBADMSG);
}

static void test_list_codec(void **state) {
        (void) state;
        KuraId ids[10];
        for (int i = 0; i < 10; i++)
                rnd_id(&ids[i]);
        ids[3] = KURA_ID_ZERO;
        ids[4] = KURA_ID_FREE;
        KuraBuf b = {0};
        assert_int_equal(kura_list_encode(ids, 10, &b), 0);
        assert_int_equal(b.len, 12 + 320);
        KuraId *out = NULL;
        size_t n = 0;
        assert_int_equal(kura_list_decode(b.data, b.len, &out, &n), 0);
        assert_int_equal(n, 10);
        assert_memory_equal(out, ids, sizeof ids);
        free(out);
        for (size_t len = 0; len < b.len; len++)
                assert_int_equal(kura_list_decode(b.data, len, &out, &n), -EBADMSG);
        kura_buf_free(&b);
}

static void test_config_codec(void **state) {
        (void) state;
        KuraRepoConfig c = {.version = 1, .encrypted = true, .zstd_level = 5}, d;
        memset(c.id, 'a', 64);
        c.id[64] = 0;
        KuraBuf b = {0};
        assert_int_equal(kura_config_encode(&c, 1795000000000000000LL, &b), 0);
        assert_int_equal(kura_config_decode(b.data, b.len, &d), 0);
        assert_int_equal(d.version, 1);
        assert_string_equal(d.id, c.id);
        assert_true(d.encrypted);
        assert_int_equal(d.zstd_level, 5);
        assert_false(d.ro_compat_unknown);
        kura_buf_free(&b);

        const char *id = "\"id\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"";
        struct {
                const char *json;
                int expect;
        } cases[] = {
                {"{\"kura_repository\":1,%s,\"encryption\":\"none\",\"compression\":\"zstd\",\"zstd_level\":3}", 0},
                {"{\"kura_repository\":2,%s,\"encryption\":\"none\",\"compression\":\"zstd\"}", -EPROTONOSUPPORT},
                {"{\"kura_repository\":2,\"whatever\":1,%s}", -EPROTONOSUPPORT},
                {"{\"kura_repository\":1,%s,\"encryption\":\"none\",\"compression\":\"zstd\",\"features_incompat\":[\"write-only-keys\"]}",
                 -EPROTONOSUPPORT},
                {"{\"kura_repository\":1,%s,\"encryption\":\"rot13\",\"compression\":\"zstd\"}", -EPROTONOSUPPORT},
                {"{\"kura_repository\":1,%s,\"encryption\":\"none\",\"compression\":\"lz4\"}", -EPROTONOSUPPORT},
                {"{\"kura_repository\":1,%s,\"encryption\":\"none\"}", -EBADMSG},
                {"{\"kura_repository\":\"1\",%s}", -EBADMSG},
                {"{\"kura_repository\":0,%s,\"encryption\":\"none\",\"compression\":\"zstd\"}", -EBADMSG},
                {"{\"kura_repository\":1,\"id\":\"abc\",\"encryption\":\"none\",\"compression\":\"zstd\"}%s", -EBADMSG},
                {"{\"kura_repository\":1,%s,\"encryption\":\"none\",\"compression\":\"zstd\",\"zstd_level\":99}", -EBADMSG},
                {"{\"kura_repository\":1,%s,\"encryption\":\"none\",\"compression\":\"zstd\",\"features_compat\":[1]}", -EBADMSG},
                {"[1,2]%s", -EBADMSG},
                {"not json %s", -EBADMSG},
                {"{\"kura_repository\":1,%s,\"encryption\":\"none\",\"compression\":\"zstd\",\"kura_repository\":1}", -EBADMSG},
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char buf[512];
                const char *at = strstr(cases[i].json, "%s");
                snprintf(buf, sizeof buf, "%.*s%s%s", (int) (at - cases[i].json), cases[i].json, id, at + 2);
                int r = kura_config_decode((const uint8_t *) buf, strlen(buf), &d);
                if (r != cases[i].expect)
                        fail_msg("case %zu: %s -> %d, expected %d", i, buf, r, cases[i].expect);
        }
        char buf[512];
        snprintf(buf, sizeof buf,
                 "{\"kura_repository\":1,%s,\"encryption\":\"none\",\"compression\":\"zstd\",\"features_ro_compat\":[\"x\"]}",
                 id);
        assert_int_equal(kura_config_decode((const uint8_t *) buf, strlen(buf), &d), 0);
        assert_true(d.ro_compat_unknown);
        assert_int_equal(d.zstd_level, KURA_DEFAULT_ZSTD_LEVEL);
}

/* ---- the in-memory index -------------------------------------------------- */

static void test_index_memory(void **state) {
        (void) state;
        KuraIndex *idx = NULL;
        assert_int_equal(kura_index_new(&idx), 0);
        const size_t N = 400000;
        KuraIndexEntry *all = malloc(N * sizeof *all);
        KuraId pack;
        rnd_id(&pack);
        uint32_t pn;
        assert_int_equal(kura_index_pack_number(idx, &pack, &pn), 0);
        for (size_t i = 0; i < N; i++) {
                all[i] = mk_entry(0, (uint32_t) i, 100);
                all[i].pack = pn;
                assert_int_equal(kura_index_add(idx, &all[i]), 1);
        }
        assert_int_equal(kura_index_add(idx, &all[17]), 0); /* duplicate */
        assert_int_equal(kura_index_count(idx), N);
        for (size_t i = 0; i < N; i++) {
                KuraIndexEntry e;
                assert_true(kura_index_lookup(idx, &all[i].id, &e));
                assert_int_equal(e.offset, (uint32_t) i);
        }
        KuraId missing;
        rnd_id(&missing);
        assert_false(kura_index_lookup(idx, &missing, NULL));
        double per = (double) kura_index_memory(idx) / (double) N;
        print_message("index memory after %zu single adds: %.1f bytes/entry\n", N, per);
        assert_true(per <= 64.0);

        /* update, reserve, drop */
        KuraIndexEntry u = all[5];
        u.offset = 4242;
        assert_int_equal(kura_index_update(idx, &u), 0);
        KuraIndexEntry got;
        assert_true(kura_index_lookup(idx, &all[5].id, &got));
        assert_int_equal(got.offset, 4242);
        assert_int_equal(kura_index_reserve(idx, &all[6].id), 0);
        assert_int_equal(kura_index_reserve(idx, &missing), 1);
        assert_int_equal(kura_index_reserve(idx, &missing), 0);
        assert_true(kura_index_inflight(idx, &missing));
        assert_false(kura_index_lookup(idx, &missing, NULL));
        kura_index_unreserve(idx, &missing);
        assert_false(kura_index_inflight(idx, &missing));

        uint32_t pend;
        assert_int_equal(kura_index_pack_new_pending(idx, &pend), 0);
        assert_null(kura_index_pack_id(idx, pend));
        KuraIndexEntry p1 = mk_entry(1, 0, 50);
        p1.pack = pend;
        assert_int_equal(kura_index_add(idx, &p1), 1);
        KuraId pid2;
        rnd_id(&pid2);
        assert_int_equal(kura_index_pack_set_id(idx, pend, &pid2), 0);
        assert_memory_equal(kura_index_pack_id(idx, pend)->b, pid2.b, 32);
        uint32_t again;
        assert_int_equal(kura_index_pack_number(idx, &pid2, &again), 0);
        assert_int_equal(again, pend);
        assert_int_equal(kura_index_drop_pack(idx, pend), 0);
        assert_false(kura_index_lookup(idx, &p1.id, NULL));
        assert_int_equal(kura_index_count(idx), N);
        kura_index_free(idx);

        /* bulk load, as at open: 1 million entries in 1000 packs */
        assert_int_equal(kura_index_new(&idx), 0);
        const size_t M = 1000000;
        KuraIndexEntry *ents = malloc(1000 * sizeof *ents);
        for (size_t p = 0; p < 1000; p++) {
                KuraPackEntries pe = {.entries = ents, .n = 1000};
                rnd_id(&pe.pack_id);
                for (size_t i = 0; i < 1000; i++)
                        ents[i] = mk_entry(0, (uint32_t) i, 1 << 20);
                if (p == 999)
                        ents[0].id = all[0].id;
                assert_int_equal(kura_index_add_bulk(idx, &pe), 0);
        }
        /* a duplicate across packs is kept once */
        KuraPackEntries dup = {.entries = ents, .n = 1};
        rnd_id(&dup.pack_id);
        assert_int_equal(kura_index_add_bulk(idx, &dup), 0);
        assert_int_equal(kura_index_finish_bulk(idx), 0);
        assert_int_equal(kura_index_count(idx), M);
        assert_int_equal(kura_index_npacks(idx), 1001);
        assert_true(kura_index_lookup(idx, &all[0].id, &got));
        assert_true(kura_index_lookup(idx, &ents[999].id, &got));
        assert_int_equal(got.offset, 999);
        per = (double) kura_index_memory(idx) / (double) M;
        print_message("index memory after bulk load of %zu: %.1f bytes/entry\n", M, per);
        assert_true(per <= 48.0);
        /* session additions on top, then more lookups */
        for (size_t i = 1; i < 1000; i++)
                assert_int_equal(kura_index_add(idx, &all[i]), 1);
        assert_true(kura_index_lookup(idx, &all[999].id, NULL));
        assert_int_equal(kura_index_count(idx), M + 999);
        free(ents);
        free(all);
        kura_index_free(idx);
}

/* ---- the store ---------------------------------------------------------- */

typedef struct Blob {
        KuraId id;
        uint8_t *data;
        size_t len;
} Blob;

static void make_blobs(KuraRepoWorker *w, Blob *b, size_t n) {
        for (size_t i = 0; i < n; i++) {
                /* sizes 0 .. ~2 MiB; every third one compressible */
                size_t len = i == 0 ? 0 : i == 1 ? 1 : (size_t) (rnd64() % (2u << 20));
                b[i].data = malloc(len ? len : 1);
                b[i].len = len;
                if (i % 3 == 0) {
                        for (size_t j = 0; j < len; j++)
                                b[i].data[j] = (uint8_t) ("kura backup "[j % 12] + i);
                } else
                        rnd_fill(b[i].data, len);
                assert_int_equal(kura_repo_hash(w, b[i].data, len, &b[i].id), 0);
        }
}

static void free_blobs(Blob *b, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(b[i].data);
}

static void roundtrip(bool encrypted) {
        char *dir = NULL;
        char *path = make_repo(encrypted, &dir);
        KuraRepo *repo = open_repo(path, KURA_LOCK_SHARED, PASSWORD);
        assert_int_equal(kura_repo_encrypted(repo), encrypted);
        assert_false(kura_repo_unlocked(repo));
        assert_int_equal(strlen(kura_repo_id(repo)), 64);
        assert_string_equal(kura_repo_path(repo), path);
        assert_int_equal(kura_repo_index_count(repo), 0);
        uint8_t fp1[32];
        memcpy(fp1, kura_repo_fp_key(repo), 32);
        KuraRepoWorker *w = NULL;
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);

        /* the chunk ID is keyed only when encrypted */
        KuraId id;
        uint8_t sha[32];
        assert_int_equal(kura_repo_hash(w, "abc", 3, &id), 0);
        assert_int_equal(kura_sha256("abc", 3, sha), 0);
        if (encrypted)
                assert_memory_not_equal(id.b, sha, 32);
        else
                assert_memory_equal(id.b, sha, 32);

        enum { N = 24 };
        Blob b[N];
        make_blobs(w, b, N);
        KuraErr err = {0};
        uint64_t stored = 0, total = 0;
        for (size_t i = 0; i < N; i++) {
                assert_int_equal(kura_repo_put(w, i == 5 ? KURA_BLOB_LIST : KURA_BLOB_DATA, &b[i].id, b[i].data,
                                               b[i].len, &stored, &err),
                                 1);
                assert_true(stored > 0);
                if (i % 3 == 0 && b[i].len > 4096)
                        assert_true(stored < b[i].len / 4); /* compressed */
                if (i % 3 != 0 && b[i].len > 4096)
                        assert_int_equal(stored, b[i].len + 1 + (encrypted ? 28 : 16)); /* raw */
                total += stored;
                assert_true(kura_repo_has(repo, &b[i].id));
        }
        /* a second put stores nothing */
        assert_int_equal(kura_repo_put(w, KURA_BLOB_DATA, &b[2].id, b[2].data, b[2].len, &stored, &err), 0);
        assert_int_equal(stored, 0);
        assert_int_equal(kura_repo_index_count(repo), N);

        uint8_t *buf = malloc(KURA_BLOB_MAX);
        size_t len = 0;
        /* read back before flush: from the open pack */
        for (size_t i = 0; i < N; i += 5) {
                assert_int_equal(kura_repo_get(w, &b[i].id, buf, &len, &err), 0);
                assert_int_equal(len, b[i].len);
                assert_memory_equal(buf, b[i].data, len);
        }
        assert_int_equal(kura_repo_flush(repo, &err), 0);
        _cleanup_free_ char *idir = kura_path_join(path, "index");
        assert_int_equal(count_files(idir), 1);
        /* flushing again with nothing new writes nothing */
        assert_int_equal(kura_repo_flush(repo, &err), 0);
        assert_int_equal(count_files(idir), 1);
        for (size_t i = 0; i < N; i += 4) {
                assert_int_equal(kura_repo_get(w, &b[i].id, buf, &len, &err), 0);
                assert_int_equal(len, b[i].len);
                assert_memory_equal(buf, b[i].data, len);
        }
        /* the pack file: header lists every blob; its name is its SHA-256 */
        char *pack = first_pack(path);
        KuraIndexEntry *he = NULL;
        size_t hn = 0;
        uint64_t psize = 0;
        assert_int_equal(kura_pack_read_header(repo, pack, &he, &hn, &psize, &err), 0);
        assert_int_equal(hn, N);
        uint64_t sum = 0;
        for (size_t i = 0; i < hn; i++)
                sum += kura_ie_length(&he[i]);
        assert_int_equal(sum, total);
        free(he);
        uint8_t *pdata = NULL;
        size_t plen = 0;
        assert_int_equal(kio_read_file(pack, 1 << 30, &pdata, &plen), 0);
        assert_int_equal(plen, psize);
        assert_memory_equal(pdata + plen - 4, "KPK1", 4);
        KuraId pid;
        char phex[65];
        assert_int_equal(kura_sha256(pdata, plen, pid.b), 0);
        kura_id_hex(&pid, phex);
        assert_string_equal(strrchr(pack, '/') + 1, phex);
        free(pdata);

        /* an unknown ID */
        KuraId unknown;
        rnd_id(&unknown);
        kura_err_clear(&err);
        assert_int_equal(kura_repo_get(w, &unknown, buf, &len, &err), -ENOENT);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        assert_non_null(strstr(err.message, "not in the index"));
        kura_repo_worker_free(w);
        kura_repo_close(repo);

        /* reopen: everything is there, same fp key */
        repo = open_repo(path, KURA_LOCK_SHARED_OR_NONE, PASSWORD);
        assert_memory_equal(kura_repo_fp_key(repo), fp1, 32);
        assert_int_equal(kura_repo_index_count(repo), N);
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        for (size_t i = 0; i < N; i++) {
                kura_err_clear(&err);
                memset(buf, 0xaa, 16);
                assert_int_equal(kura_repo_get(w, &b[i].id, buf, &len, &err), 0);
                assert_int_equal(len, b[i].len);
                assert_memory_equal(buf, b[i].data, len);
        }
        /* unflushed blobs are gone after close */
        KuraId lost;
        assert_int_equal(kura_repo_hash(w, "lost", 4, &lost), 0);
        assert_int_equal(kura_repo_put(w, KURA_BLOB_DATA, &lost, "lost", 4, NULL, &err), 1);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
        repo = open_repo(path, KURA_LOCK_NONE, PASSWORD);
        assert_false(kura_repo_has(repo, &lost));
        assert_int_equal(kura_repo_index_count(repo), N);
        kura_repo_close(repo);
        _cleanup_free_ char *ddir = kura_path_join(path, "data");
        /* no temporary file left in data/ (only xx/ directories) */
        DIR *d = opendir(ddir);
        struct dirent *de;
        while ((de = readdir(d)))
                assert_false(strncmp(de->d_name, ".tmp-", 5) == 0);
        closedir(d);

        free(pack);
        free(buf);
        free_blobs(b, N);
        free(path);
        rm_rf(dir);
        free(dir);
}

static void test_roundtrip_plain(void **state) {
        (void) state;
        roundtrip(false);
}

static void test_roundtrip_encrypted(void **state) {
        (void) state;
        roundtrip(true);
}

static void test_open_errors(void **state) {
        (void) state;
        char *dir = NULL;
        char *path = make_repo(true, &dir);
        KuraErr err = {0};

        assert_int_equal(open_err(path, KURA_LOCK_SHARED, "wrong", &err), -EKEYREJECTED);
        assert_string_equal(err.code, KURA_E_WRONG_PASSWORD);
        assert_non_null(strstr(err.message, path));
        assert_true(err.remedy[0]);
        kura_err_clear(&err);
        assert_int_equal(open_err(path, KURA_LOCK_SHARED, NULL, &err), -ENOKEY);
        assert_string_equal(err.code, KURA_E_NO_PASSWORD);
        _cleanup_free_ char *ldir = kura_path_join(path, "locks");
        assert_int_equal(count_files(ldir), 0); /* failed opens leave no lock */

        /* not found, not a repo, exists */
        kura_err_clear(&err);
        _cleanup_free_ char *nx = kura_path_join(dir, "nope");
        assert_int_equal(open_err(nx, KURA_LOCK_SHARED, PASSWORD, &err), -ENOENT);
        assert_string_equal(err.code, KURA_E_REPO_NOT_FOUND);
        kura_err_clear(&err);
        assert_int_equal(open_err(dir, KURA_LOCK_SHARED, PASSWORD, &err), -ENOENT);
        assert_string_equal(err.code, KURA_E_NOT_A_REPO);
        kura_err_clear(&err);
        KuraRepoInitOpts o = {.encrypted = false};
        assert_int_equal(kura_repo_init(path, &o, NULL, &err), -EEXIST);
        assert_string_equal(err.code, KURA_E_REPO_EXISTS);
        kura_err_clear(&err);
        KuraRepoInitOpts enc_nopw = {.encrypted = true};
        _cleanup_free_ char *p2 = kura_path_join(dir, "r2");
        assert_true(kura_repo_init(p2, &enc_nopw, NULL, &err) < 0);
        assert_string_equal(err.code, KURA_E_NO_PASSWORD);

        /* a newer format version, an unknown incompat feature, garbage */
        _cleanup_free_ char *cpath = kura_path_join(path, "config");
        uint8_t *cfg = NULL;
        size_t n = 0;
        assert_int_equal(kio_read_file(cpath, 1 << 20, &cfg, &n), 0);
        char *s = strndup((char *) cfg, n);
        char *v = strstr(s, "\"kura_repository\": 1");
        assert_non_null(v);
        v[strlen("\"kura_repository\": ")] = '2';
        assert_int_equal(kio_write_file(cpath, s, strlen(s)), 0);
        kura_err_clear(&err);
        assert_int_equal(open_err(path, KURA_LOCK_SHARED, PASSWORD, &err), -EPROTONOSUPPORT);
        assert_string_equal(err.code, KURA_E_REPO_VERSION);
        assert_non_null(strstr(err.remedy, "upgrade kura"));
        v[strlen("\"kura_repository\": ")] = '1';
        char *f = strstr(s, "\"features_incompat\": []");
        assert_non_null(f);
        char *s2 = kura_asprintf("%.*s\"features_incompat\": [\"x\"]%s", (int) (f - s), s, f + strlen("\"features_incompat\": []"));
        assert_int_equal(kio_write_file(cpath, s2, strlen(s2)), 0);
        kura_err_clear(&err);
        assert_int_equal(open_err(path, KURA_LOCK_SHARED_OR_NONE, PASSWORD, &err), -EPROTONOSUPPORT);
        assert_string_equal(err.code, KURA_E_REPO_VERSION);
        assert_int_equal(kio_write_file(cpath, "garbage", 7), 0);
        kura_err_clear(&err);
        assert_int_equal(open_err(path, KURA_LOCK_SHARED, PASSWORD, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_NOT_A_REPO);
        /* back to the original: opens again */
        assert_int_equal(kio_write_file(cpath, cfg, n), 0);
        assert_int_equal(open_err(path, KURA_LOCK_SHARED, PASSWORD, &err), 0);
        free(s);
        free(s2);
        free(cfg);
        free(path);
        rm_rf(dir);
        free(dir);
}

static void damaged(bool encrypted) {
        char *dir = NULL;
        char *path = make_repo(encrypted, &dir);
        KuraRepo *repo = open_repo(path, KURA_LOCK_SHARED, PASSWORD);
        KuraRepoWorker *w = NULL;
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        enum { N = 4 };
        Blob b[N];
        make_blobs(w, b, N);
        b[3].len = 100000; /* make the one we damage non-trivial */
        b[3].data = realloc(b[3].data, b[3].len);
        rnd_fill(b[3].data, b[3].len);
        assert_int_equal(kura_repo_hash(w, b[3].data, b[3].len, &b[3].id), 0);
        KuraErr err = {0};
        for (size_t i = 0; i < N; i++)
                assert_int_equal(kura_repo_put(w, KURA_BLOB_DATA, &b[i].id, b[i].data, b[i].len, NULL, &err), 1);
        /* a blob stored under a wrong ID (a buggy or malicious writer) */
        KuraId wrong;
        rnd_id(&wrong);
        assert_int_equal(kura_repo_put(w, KURA_BLOB_DATA, &wrong, "hello", 5, NULL, &err), 1);
        assert_int_equal(kura_repo_flush(repo, &err), 0);
        KuraIndexEntry e;
        assert_true(kura_index_lookup(repo->index, &b[3].id, &e));
        kura_repo_worker_free(w);
        kura_repo_close(repo);

        char *pack = first_pack(path);
        flip_byte(pack, e.offset + kura_ie_length(&e) / 2);

        repo = open_repo(path, KURA_LOCK_SHARED, PASSWORD);
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        uint8_t *buf = malloc(KURA_BLOB_MAX);
        size_t len = 12345;
        memset(buf, 0xaa, KURA_BLOB_MAX);
        assert_int_equal(kura_repo_get(w, &b[3].id, buf, &len, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        char hex[65], phex[65];
        kura_id_hex(&b[3].id, hex);
        assert_non_null(strstr(err.message, hex));
        snprintf(phex, sizeof phex, "%s", strrchr(pack, '/') + 1);
        assert_non_null(strstr(err.message, phex));
        assert_int_equal(len, 12345);
        /* no byte of the blob reached the caller */
        for (size_t i = 0; i < b[3].len; i++)
                if (buf[i] != 0xaa && buf[i] != 0)
                        fail_msg("byte %zu of a damaged blob was returned", i);
        /* the others still read */
        for (size_t i = 0; i < 3; i++) {
                assert_int_equal(kura_repo_get(w, &b[i].id, buf, &len, &err), 0);
                assert_int_equal(len, b[i].len);
                assert_memory_equal(buf, b[i].data, len);
        }
        /* content that does not match its ID */
        kura_err_clear(&err);
        assert_int_equal(kura_repo_get(w, &wrong, buf, &len, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        assert_non_null(strstr(err.message, "does not match"));
        assert_memory_not_equal(buf, "hello", 5);

        /* the pack header no longer authenticates once altered */
        KuraIndexEntry *he = NULL;
        size_t hn;
        uint64_t size;
        assert_int_equal(kura_pack_read_header(repo, pack, &he, &hn, &size, &err), 0);
        free(he);
        flip_byte(pack, size - 20);
        kura_err_clear(&err);
        assert_int_equal(kura_pack_read_header(repo, pack, &he, &hn, &size, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        flip_byte(pack, size - 2); /* the magic */
        kura_err_clear(&err);
        assert_int_equal(kura_pack_read_header(repo, pack, &he, &hn, &size, &err), -EBADMSG);
        kura_repo_worker_free(w);
        kura_repo_close(repo);

        /* a damaged index file: open goes on without it (its chunks look
         * missing, so undamaged versions still restore and check names the
         * damage) and counts it; a strict reload fails naming it */
        _cleanup_free_ char *idir = kura_path_join(path, "index");
        DIR *d = opendir(idir);
        struct dirent *de;
        char *ifile = NULL;
        while ((de = readdir(d)))
                if (strlen(de->d_name) == 64)
                        ifile = kura_path_join(idir, de->d_name);
        closedir(d);
        assert_non_null(ifile);
        flip_byte(ifile, 30);
        repo = open_repo(path, KURA_LOCK_SHARED, PASSWORD);
        assert_int_equal(kura_repo_index_files_damaged(repo), 1);
        assert_int_equal(kura_repo_index_count(repo), 0);
        kura_err_clear(&err);
        assert_int_equal(kura_repo_load_index(repo, false, NULL, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        assert_non_null(strstr(err.message, strrchr(ifile, '/') + 1));
        kura_repo_close(repo);
        /* restore it, open, damage it again: a tolerant reload skips it */
        flip_byte(ifile, 30);
        repo = open_repo(path, KURA_LOCK_NONE, PASSWORD);
        assert_int_equal(kura_repo_index_count(repo), N + 1);
        flip_byte(ifile, 30);
        size_t bad = 0;
        kura_err_clear(&err);
        assert_int_equal(kura_repo_load_index(repo, true, &bad, &err), 0);
        assert_int_equal(bad, 1);
        assert_int_equal(kura_repo_index_count(repo), 0);
        assert_int_equal(repo->nindex_files, 0);
        assert_int_equal(kura_repo_load_index(repo, false, &bad, &err), -EBADMSG);
        kura_repo_close(repo);
        free(ifile);
        free(buf);
        free(pack);
        free_blobs(b, N);
        free(path);
        rm_rf(dir);
        free(dir);
}

static void test_damaged_plain(void **state) {
        (void) state;
        damaged(false);
}

static void test_damaged_encrypted(void **state) {
        (void) state;
        damaged(true);
}

/* Several threads store an overlapping set of blobs: each is stored once. */
typedef struct ThreadArg {
        KuraRepo *repo;
        Blob *b;
        size_t n;
        size_t stored;
        int ret;
} ThreadArg;

static void *put_thread(void *p) {
        ThreadArg *a = p;
        KuraRepoWorker *w = NULL;
        a->ret = kura_repo_worker_new(a->repo, &w);
        for (size_t i = 0; a->ret >= 0 && i < a->n; i++) {
                int r = kura_repo_put(w, KURA_BLOB_DATA, &a->b[i].id, a->b[i].data, a->b[i].len, NULL, NULL);
                if (r < 0)
                        a->ret = r;
                else
                        a->stored += (size_t) r;
        }
        kura_repo_worker_free(w);
        return NULL;
}

static void test_threads_and_packs(void **state) {
        (void) state;
        char *dir = NULL;
        char *path = make_repo(false, &dir);
        KuraRepo *repo = open_repo(path, KURA_LOCK_SHARED, NULL);
        KuraRepoWorker *w = NULL;
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        /* 48 incompressible 1 MiB blobs: more than one 32 MiB pack */
        enum { N = 48 };
        Blob b[N];
        for (size_t i = 0; i < N; i++) {
                b[i].len = 1 << 20;
                b[i].data = malloc(b[i].len);
                rnd_fill(b[i].data, b[i].len);
                assert_int_equal(kura_repo_hash(w, b[i].data, b[i].len, &b[i].id), 0);
        }
        pthread_t t[4];
        ThreadArg a[4];
        for (int i = 0; i < 4; i++) {
                /* thread i stores blobs from i*8 on: they overlap */
                a[i] = (ThreadArg) {.repo = repo, .b = b + i * 8, .n = N - 24};
                assert_int_equal(pthread_create(&t[i], NULL, put_thread, &a[i]), 0);
        }
        size_t stored = 0;
        for (int i = 0; i < 4; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(a[i].ret, 0);
                stored += a[i].stored;
        }
        assert_int_equal(stored, N);
        assert_int_equal(kura_repo_index_count(repo), N);
        KuraErr err = {0};
        assert_int_equal(kura_repo_flush(repo, &err), 0);
        /* the packs together hold every blob exactly once */
        size_t in_packs = 0;
        assert_int_equal(repo->nindex_files, 1);
        KuraPackEntries *pe = NULL;
        size_t npe = 0;
        _cleanup_free_ char *ifile = kura_repo_subpath(repo, "index", repo->index_files[0]);
        uint8_t *data;
        size_t n;
        assert_int_equal(kio_read_file(ifile, 1 << 30, &data, &n), 0);
        KuraBuf pt = {0};
        assert_int_equal(kura_repo_unseal(repo, KURA_AAD_INDEX, data, n, &pt), 0);
        assert_int_equal(kura_index_file_decode(pt.data, pt.len, &pe, &npe), 0);
        assert_true(npe >= 2);
        for (size_t i = 0; i < npe; i++) {
                _cleanup_free_ char *pp = kura_repo_pack_path(repo, &pe[i].pack_id);
                KuraIndexEntry *he;
                size_t hn;
                uint64_t size;
                assert_int_equal(kura_pack_read_header(repo, pp, &he, &hn, &size, &err), 0);
                assert_int_equal(hn, pe[i].n);
                assert_true(size <= KURA_PACK_TARGET_SIZE + (2u << 20));
                free(he);
                in_packs += pe[i].n;
        }
        assert_int_equal(in_packs, N);
        kura_pack_entries_free(pe, npe);
        kura_buf_free(&pt);
        free(data);
        kura_repo_worker_free(w);
        kura_repo_close(repo);

        repo = open_repo(path, KURA_LOCK_SHARED, NULL);
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        uint8_t *buf = malloc(KURA_BLOB_MAX);
        size_t len;
        for (size_t i = 0; i < N; i++) {
                assert_int_equal(kura_repo_get(w, &b[i].id, buf, &len, &err), 0);
                assert_int_equal(len, b[i].len);
                assert_memory_equal(buf, b[i].data, len);
        }
        free(buf);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
        free_blobs(b, N);
        free(path);
        rm_rf(dir);
        free(dir);
}

/* ---- locks ------------------------------------------------------------------ */

static void write_lock(const char *repo, const char *name, const char *host, int pid, bool ex, int64_t t) {
        char ts[64];
        kura_format_time(t, ts, sizeof ts);
        _cleanup_free_ char *p = kura_asprintf("%s/locks/%s", repo, name);
        _cleanup_free_ char *s = kura_asprintf("{\"host\":\"%s\",\"pid\":%d,\"exclusive\":%s,\"time\":\"%s\"}", host, pid,
                                               ex ? "true" : "false", ts);
        assert_int_equal(kio_write_file(p, s, strlen(s)), 0);
}

static void test_locks(void **state) {
        (void) state;
        char *dir = NULL;
        char *path = make_repo(false, &dir);
        _cleanup_free_ char *ldir = kura_path_join(path, "locks");
        KuraErr err = {0};
        KuraRepo *a = open_repo(path, KURA_LOCK_SHARED, NULL);
        KuraRepo *b = open_repo(path, KURA_LOCK_SHARED, NULL);
        assert_int_equal(count_files(ldir), 2);
        char host[128], user[64];
        kura_host_user(host, user);
        /* exclusive conflicts with shared */
        assert_int_equal(open_err(path, KURA_LOCK_EXCLUSIVE, NULL, &err), -EBUSY);
        assert_string_equal(err.code, KURA_E_LOCKED);
        char spid[32];
        snprintf(spid, sizeof spid, "process %d", (int) getpid());
        assert_non_null(strstr(err.message, spid));
        assert_non_null(strstr(err.message, host));
        assert_non_null(strstr(err.remedy, "kura unlock"));
        assert_int_equal(count_files(ldir), 2); /* the failed locker removed its own */
        kura_repo_close(a);
        kura_repo_close(b);
        assert_int_equal(count_files(ldir), 0);
        /* shared conflicts with exclusive; NONE needs no lock */
        KuraRepo *x = open_repo(path, KURA_LOCK_EXCLUSIVE, NULL);
        kura_err_clear(&err);
        assert_int_equal(open_err(path, KURA_LOCK_SHARED, NULL, &err), -EBUSY);
        assert_string_equal(err.code, KURA_E_LOCKED);
        assert_non_null(strstr(err.message, "exclusive"));
        assert_int_equal(open_err(path, KURA_LOCK_NONE, NULL, &err), 0);
        kura_repo_close(x);

        /* a lock of a dead process of this host is removed silently */
        pid_t child = fork();
        if (child == 0)
                _exit(0);
        waitpid(child, NULL, 0);
        write_lock(path, "dead-lock", host, child, true, kura_now_ns());
        /* another host's old lock is stale but not removed by open */
        write_lock(path, "other-old", "elsewhere.example", 1, false, kura_now_ns() - 3 * 86400LL * 1000000000LL);
        write_lock(path, "other-new", "elsewhere.example", 1, false, kura_now_ns());
        write_lock(path, "junk", "", 0, false, 0); /* not a valid lock */
        KuraLockInfo *li = NULL;
        size_t n = 0;
        assert_int_equal(kura_lock_list(path, 0, &li, &n, &err), 0);
        assert_int_equal(n, 4);
        size_t nstale = 0;
        for (size_t i = 0; i < n; i++) {
                if (strcmp(li[i].name, "dead-lock") == 0) {
                        assert_true(li[i].stale);
                        assert_true(li[i].exclusive);
                        assert_int_equal(li[i].pid, child);
                }
                if (strcmp(li[i].name, "other-new") == 0)
                        assert_false(li[i].stale);
                nstale += li[i].stale;
        }
        assert_int_equal(nstale, 3);
        free(li);
        KuraRepo *s = open_repo(path, KURA_LOCK_SHARED, NULL);
        assert_int_equal(count_files(ldir), 4); /* dead-lock gone, ours added */
        kura_repo_close(s);
        size_t removed = 0;
        assert_int_equal(kura_lock_remove(path, 0, false, &removed, &err), 0);
        assert_int_equal(removed, 2); /* other-old and junk */
        assert_int_equal(count_files(ldir), 1);
        /* with a shorter stale age the new one is stale too */
        assert_int_equal(kura_lock_list(path, 1, &li, &n, &err), 0);
        assert_int_equal(n, 1);
        assert_false(li[0].stale);
        free(li);
        assert_int_equal(kura_lock_remove(path, 0, true, &removed, &err), 0);
        assert_int_equal(removed, 1);
        assert_int_equal(count_files(ldir), 0);
        free(path);
        rm_rf(dir);
        free(dir);
}

/* ---- keys ------------------------------------------------------------------ */

static void test_keys(void **state) {
        (void) state;
        char *dir = NULL;
        char *path = make_repo(true, &dir);
        _cleanup_free_ char *kdir = kura_path_join(path, "keys");
        KuraErr err = {0};
        KuraRepo *repo = open_repo(path, KURA_LOCK_SHARED, PASSWORD);
        char id2[17];
        assert_int_equal(kura_key_add(repo, "second", 64 << 10, 1, id2, &err), 0);
        assert_int_equal(strlen(id2), 16);
        KuraKeySlotInfo *ki = NULL;
        size_t n = 0;
        assert_int_equal(kura_key_list(repo, &ki, &n, &err), 0);
        assert_int_equal(n, 2);
        size_t ncur = 0;
        char host[128], user[64];
        kura_host_user(host, user);
        for (size_t i = 0; i < n; i++) {
                ncur += ki[i].current;
                assert_string_equal(ki[i].access, "full");
                assert_string_equal(ki[i].host, host);
                assert_int_equal(ki[i].kdf_mem, 64 << 10);
                assert_int_equal(ki[i].kdf_passes, 1);
                assert_true(ki[i].created_ns > 0);
                if (strcmp(ki[i].id, id2) == 0)
                        assert_false(ki[i].current);
        }
        assert_int_equal(ncur, 1);
        char id1[17];
        snprintf(id1, sizeof id1, "%s", strcmp(ki[0].id, id2) == 0 ? ki[1].id : ki[0].id);
        free(ki);
        /* removing needs the exclusive lock */
        assert_true(kura_key_remove(repo, id1, &err) < 0);
        kura_repo_close(repo);

        /* the new passphrase opens it, and the same master key */
        repo = open_repo(path, KURA_LOCK_EXCLUSIVE, "second");
        KuraRepoWorker *w;
        KuraId h1, h2;
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        assert_int_equal(kura_repo_hash(w, "x", 1, &h1), 0);
        kura_repo_worker_free(w);
        /* remove the first by a prefix */
        char prefix[7];
        snprintf(prefix, sizeof prefix, "%.6s", id1);
        kura_err_clear(&err);
        assert_int_equal(kura_key_remove(repo, "zz", &err), -ENOENT);
        assert_string_equal(err.code, KURA_E_KEY_SLOT);
        assert_int_equal(kura_key_remove(repo, prefix, &err), 0);
        assert_int_equal(count_files(kdir), 1);
        /* the last one is refused */
        kura_err_clear(&err);
        assert_int_equal(kura_key_remove(repo, id2, &err), -EPERM);
        assert_string_equal(err.code, KURA_E_KEY_SLOT);
        assert_int_equal(count_files(kdir), 1);
        /* ambiguous prefix: two slots whose IDs share "aaaa" */
        _cleanup_free_ char *src = kura_path_join(kdir, id2);
        uint8_t *d;
        size_t dn;
        assert_int_equal(kio_read_file(src, 1 << 20, &d, &dn), 0);
        _cleanup_free_ char *c1 = kura_path_join(kdir, "aaaa000000000001");
        _cleanup_free_ char *c2 = kura_path_join(kdir, "aaaa000000000002");
        assert_int_equal(kio_write_file(c1, d, dn), 0);
        assert_int_equal(kio_write_file(c2, d, dn), 0);
        free(d);
        kura_err_clear(&err);
        assert_int_equal(kura_key_remove(repo, "aaaa", &err), -EINVAL);
        assert_string_equal(err.code, KURA_E_KEY_SLOT);
        assert_int_equal(count_files(kdir), 3);
        assert_int_equal(kura_key_remove(repo, "aaaa000000000001", &err), 0);
        kura_repo_close(repo);
        /* the old passphrase no longer works */
        kura_err_clear(&err);
        assert_int_equal(open_err(path, KURA_LOCK_SHARED, PASSWORD, &err), -EKEYREJECTED);
        repo = open_repo(path, KURA_LOCK_SHARED, "second");
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        assert_int_equal(kura_repo_hash(w, "x", 1, &h2), 0);
        assert_memory_equal(h1.b, h2.b, 32);
        kura_repo_worker_free(w);
        kura_repo_close(repo);

        /* unencrypted repositories have no key slots */
        char *dir2 = NULL;
        char *path2 = make_repo(false, &dir2);
        repo = open_repo(path2, KURA_LOCK_SHARED, NULL);
        kura_err_clear(&err);
        assert_true(kura_key_add(repo, "x", 0, 0, id2, &err) < 0);
        assert_string_equal(err.code, KURA_E_KEY_SLOT);
        kura_repo_close(repo);
        free(path2);
        rm_rf(dir2);
        free(dir2);
        free(path);
        rm_rf(dir);
        free(dir);
}

/* ---- a full disk ------------------------------------------------------------- */

static void test_enospc(void **state) {
        (void) state;
        if (geteuid() != 0)
                skip();
        char *dir = mktemp_dir();
        if (mount("kura-test", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=6m,mode=0700") < 0) {
                rmdir(dir);
                free(dir);
                skip();
        }
        char *path = kura_path_join(dir, "repo");
        KuraRepoInitOpts o = {.encrypted = false};
        KuraErr err = {0};
        assert_int_equal(kura_repo_init(path, &o, NULL, &err), 0);
        KuraRepo *repo = open_repo(path, KURA_LOCK_SHARED, NULL);
        KuraRepoWorker *w;
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        uint8_t *data = malloc(1 << 20);
        int r = 0;
        int i;
        for (i = 0; i < 20 && r >= 0; i++) {
                rnd_fill(data, 1 << 20);
                KuraId id;
                assert_int_equal(kura_repo_hash(w, data, 1 << 20, &id), 0);
                r = kura_repo_put(w, KURA_BLOB_DATA, &id, data, 1 << 20, NULL, &err);
        }
        assert_int_equal(r, -ENOSPC);
        assert_string_equal(err.code, KURA_E_REPO_FULL);
        /* the failed pack's blobs left the index; nothing half-written remains */
        assert_int_equal(kura_repo_index_count(repo), 0);
        kura_err_clear(&err);
        assert_int_equal(kura_repo_flush(repo, &err), 0);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
        _cleanup_free_ char *ddir = kura_path_join(path, "data");
        assert_int_equal(count_files(ddir), 0);
        repo = open_repo(path, KURA_LOCK_SHARED, NULL);
        assert_int_equal(kura_repo_index_count(repo), 0);
        kura_repo_close(repo);
        free(data);
        free(path);
        assert_int_equal(umount(dir), 0);
        rmdir(dir);
        free(dir);
}

/* SHARED_OR_NONE on read-only media goes on without a lock; SHARED fails. */
static void test_read_only(void **state) {
        (void) state;
        if (geteuid() != 0)
                skip();
        char *dir = mktemp_dir();
        if (mount("kura-test", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0700") < 0) {
                rmdir(dir);
                free(dir);
                skip();
        }
        char *path = kura_path_join(dir, "repo");
        KuraRepoInitOpts o = {.encrypted = false};
        KuraErr err = {0};
        assert_int_equal(kura_repo_init(path, &o, NULL, &err), 0);
        KuraRepo *repo = open_repo(path, KURA_LOCK_SHARED, NULL);
        KuraRepoWorker *w;
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        KuraId id;
        assert_int_equal(kura_repo_hash(w, "ro", 2, &id), 0);
        assert_int_equal(kura_repo_put(w, KURA_BLOB_DATA, &id, "ro", 2, NULL, &err), 1);
        assert_int_equal(kura_repo_flush(repo, &err), 0);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
        assert_int_equal(mount(NULL, dir, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);

        assert_int_equal(open_err(path, KURA_LOCK_SHARED, NULL, &err), -EROFS);
        assert_string_equal(err.code, KURA_E_REPO_READ_ONLY);
        repo = open_repo(path, KURA_LOCK_SHARED_OR_NONE, NULL);
        assert_true(kura_repo_unlocked(repo));
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        char buf[16];
        size_t len;
        uint8_t *big = malloc(KURA_BLOB_MAX);
        assert_int_equal(kura_repo_get(w, &id, big, &len, &err), 0);
        assert_int_equal(len, 2);
        memcpy(buf, big, 2);
        assert_memory_equal(buf, "ro", 2);
        free(big);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
        free(path);
        assert_int_equal(umount(dir), 0);
        rmdir(dir);
        free(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_index_file_codec),
                cmocka_unit_test(test_pack_header_codec),
                cmocka_unit_test(test_list_codec),
                cmocka_unit_test(test_config_codec),
                cmocka_unit_test(test_index_memory),
                cmocka_unit_test(test_roundtrip_plain),
                cmocka_unit_test(test_roundtrip_encrypted),
                cmocka_unit_test(test_open_errors),
                cmocka_unit_test(test_damaged_plain),
                cmocka_unit_test(test_damaged_encrypted),
                cmocka_unit_test(test_threads_and_packs),
                cmocka_unit_test(test_locks),
                cmocka_unit_test(test_keys),
                cmocka_unit_test(test_enospc),
                cmocka_unit_test(test_read_only),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
