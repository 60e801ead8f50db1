/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Versions, check and prune: the list-blob and manifest codecs in isolation,
 * then the whole cycle on real temporary repositories (unencrypted and
 * encrypted): store chunks and lists, save / list / find / forget versions,
 * prune (packs deleted and rewritten, survivors byte-identical), and check
 * finding a flipped byte, a truncated pack and a deleted index file, naming
 * the versions affected.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "repo/repo-internal.h"

/* ---- helpers ---------------------------------------------------------------- */

static KuraId mkid(uint8_t seed) {
        KuraId id;
        for (int i = 0; i < KURA_ID_LEN; i++)
                id.b[i] = (uint8_t) (seed * 31 + i + 1);
        return id;
}

static KuraVersion *sample_version(void) {
        KuraVersion *v = kura_version_new();
        assert_non_null(v);
        v->time_ns = 1795000000123456789LL;
        v->hostname = strdup("db1.example");
        v->ntags = 2;
        v->tags = calloc(2, sizeof(char *));
        v->tags[0] = strdup("daily");
        v->tags[1] = strdup("ünïcode");
        v->parent = strdup("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
        v->crash_consistent = true;
        v->bytes_read = 123;
        v->bytes_new = 45;
        v->bytes_stored = 6;
        v->duration_s = 1.5;
        /* 4097 chunks of 256 KiB, the last one partial: two lists. */
        KuraVolume *vol = kura_version_add_volume(v, "sda1", "/dev/sda1", "ext4", "abcd-ef", "root",
                                                  4096ULL * (256 << 10) + 1, 256 << 10);
        assert_non_null(vol);
        assert_true(vol->nchunks == 4097);
        vol->nlists = 2;
        vol->lists = calloc(2, sizeof(KuraId));
        vol->lists[0] = mkid(1);
        vol->lists[1] = mkid(2);
        vol->chunks_zero = 7;
        vol->chunks_free = 8;
        vol->chunks_new = 9;
        vol->bytes_read = 10;
        /* An empty volume has no lists at all. */
        vol = kura_version_add_volume(v, "empty", "/dev/empty", "", "", "", 0, 1 << 20);
        assert_non_null(vol);
        assert_true(vol->nchunks == 0);
        return v;
}

static char *encode_str(const KuraVersion *v) {
        KuraBuf b = {0};
        assert_int_equal(kura_version_encode(v, &b), 0);
        assert_int_equal(kura_buf_append(&b, "", 1), 0);
        return (char *) b.data;
}

static int decode_str(const char *s, KuraVersion **ret) {
        return kura_version_decode((const uint8_t *) s, strlen(s), ret);
}

/* ---- list codec ------------------------------------------------------------------ */

static void test_list_codec(void **state) {
        (void) state;
        KuraId ids[3] = {mkid(1), KURA_ID_ZERO, KURA_ID_FREE};
        KuraBuf b = {0};
        KuraId *out = NULL;
        size_t n = 0;

        assert_int_equal(kura_list_encode(ids, 3, &b), 0);
        assert_int_equal(b.len, 12 + 3 * 32);
        assert_memory_equal(b.data, "KLST\1\0\0\0\3\0\0\0", 12);
        assert_int_equal(kura_list_decode(b.data, b.len, &out, &n), 0);
        assert_int_equal(n, 3);
        assert_memory_equal(out, ids, sizeof ids);
        free(out);

        /* Truncated, trailing bytes, bad magic, unknown version, bad counts. */
        assert_int_equal(kura_list_decode(b.data, b.len - 1, &out, &n), -EBADMSG);
        assert_int_equal(kura_list_decode(b.data, 11, &out, &n), -EBADMSG);
        assert_int_equal(kura_buf_u8(&b, 0), 0);
        assert_int_equal(kura_list_decode(b.data, b.len, &out, &n), -EBADMSG);
        b.len--;
        b.data[0] = 'X';
        assert_int_equal(kura_list_decode(b.data, b.len, &out, &n), -EBADMSG);
        b.data[0] = 'K';
        b.data[4] = 2;
        assert_int_equal(kura_list_decode(b.data, b.len, &out, &n), -EPROTONOSUPPORT);
        b.data[4] = 1;
        put_le32(b.data + 8, 0);
        assert_int_equal(kura_list_decode(b.data, 12, &out, &n), -EBADMSG);
        put_le32(b.data + 8, 4097);
        assert_int_equal(kura_list_decode(b.data, b.len, &out, &n), -EBADMSG);
        put_le32(b.data + 8, 0xffffffffu);
        assert_int_equal(kura_list_decode(b.data, b.len, &out, &n), -EBADMSG);
        kura_buf_free(&b);

        assert_int_equal(kura_list_encode(ids, 0, &b), -EINVAL);
        KuraId *many = calloc(4097, sizeof *many);
        assert_int_equal(kura_list_encode(many, 4097, &b), -EINVAL);
        assert_int_equal(kura_list_encode(many, 4096, &b), 0);
        assert_int_equal(kura_list_decode(b.data, b.len, &out, &n), 0);
        assert_int_equal(n, 4096);
        free(out);
        free(many);
        kura_buf_free(&b);
}

/* ---- manifest codec --------------------------------------------------------------- */

static void test_manifest_roundtrip(void **state) {
        (void) state;
        KuraVersion *v = sample_version(), *d = NULL;
        char *s = encode_str(v);
        assert_int_equal(decode_str(s, &d), 0);

        assert_true(d->time_ns == v->time_ns);
        assert_string_equal(d->hostname, "db1.example");
        assert_int_equal(d->ntags, 2);
        assert_string_equal(d->tags[1], "ünïcode");
        assert_string_equal(d->parent, v->parent);
        assert_true(d->crash_consistent);
        assert_true(d->bytes_read == 123 && d->bytes_new == 45 && d->bytes_stored == 6);
        assert_true(d->duration_s == 1.5);
        assert_null(d->extra);
        assert_int_equal(d->nvolumes, 2);
        KuraVolume *a = &d->volumes[0];
        assert_string_equal(a->name, "sda1");
        assert_string_equal(a->path, "/dev/sda1");
        assert_string_equal(a->fs, "ext4");
        assert_string_equal(a->uuid, "abcd-ef");
        assert_string_equal(a->label, "root");
        assert_true(a->size == 4096ULL * (256 << 10) + 1);
        assert_int_equal(a->chunk_size, 256 << 10);
        assert_true(a->nchunks == 4097);
        assert_int_equal(a->nlists, 2);
        assert_memory_equal(a->lists, v->volumes[0].lists, 2 * sizeof(KuraId));
        assert_true(a->chunks_zero == 7 && a->chunks_free == 8 && a->chunks_new == 9 && a->bytes_read == 10);
        assert_int_equal(d->volumes[1].nlists, 0);
        assert_null(d->volumes[1].lists);

        /* Encoding is deterministic: decode + encode gives the same bytes. */
        char *s2 = encode_str(d);
        assert_string_equal(s, s2);
        free(s2);
        free(s);
        kura_version_free(d);

        /* A version without parent encodes null and decodes to NULL. */
        free(v->parent);
        v->parent = NULL;
        s = encode_str(v);
        assert_non_null(strstr(s, "\"parent\":null"));
        assert_int_equal(decode_str(s, &d), 0);
        assert_null(d->parent);
        free(s);
        kura_version_free(d);

        /* The encoder refuses what the decoder would refuse. */
        v->volumes[0].nlists = 1;
        KuraBuf b = {0};
        assert_int_equal(kura_version_encode(v, &b), -EINVAL);
        v->volumes[0].nlists = 2;
        v->volumes[0].chunk_size = 3 << 18;
        assert_int_equal(kura_version_encode(v, &b), -EINVAL);
        v->volumes[0].chunk_size = 256 << 10;
        v->volumes[0].bytes_new = (uint64_t) INT64_MAX + 1;
        assert_int_equal(kura_version_encode(v, &b), -ERANGE);
        kura_buf_free(&b);
        kura_version_free(v);
}

static void test_manifest_unknown_keys(void **state) {
        (void) state;
        KuraVersion *v = sample_version(), *d = NULL, *d2 = NULL;
        char *s = encode_str(v);
        json_t *o = json_loads(s, 0, NULL);
        assert_non_null(o);
        json_t *disks = json_pack("[{s:s, s:I, s:[i,i]}]", "name", "sda", "size", (json_int_t) 1 << 40, "parts", 1, 2);
        json_object_set_new(o, "disks", disks);
        json_object_set_new(o, "zz_future", json_pack("{s:b, s:n}", "flag", 1, "nothing"));
        char *s2 = json_dumps(o, JSON_COMPACT);
        assert_int_equal(decode_str(s2, &d), 0);
        assert_non_null(d->extra);
        assert_int_equal(json_object_size(d->extra), 2);
        assert_true(json_equal(json_object_get(d->extra, "disks"), json_object_get(o, "disks")));

        /* Re-encoded: the unknown keys come back verbatim, known ones unchanged. */
        char *s3 = encode_str(d);
        json_t *o3 = json_loads(s3, 0, NULL);
        assert_true(json_equal(o, o3));
        assert_int_equal(decode_str(s3, &d2), 0);
        assert_true(json_equal(d2->extra, d->extra));

        /* extra cannot shadow a known key. */
        json_object_set_new(d2->extra, "hostname", json_string("evil"));
        char *s4 = encode_str(d2);
        assert_null(strstr(s4, "evil"));

        free(s);
        free(s2);
        free(s3);
        free(s4);
        json_decref(o);
        json_decref(o3);
        kura_version_free(v);
        kura_version_free(d);
        kura_version_free(d2);
}

/* Apply one mutation to a valid manifest and expect rejection. */
typedef void (*Mutate)(json_t *o);
static json_t *vol0(json_t *o) { return json_array_get(json_object_get(o, "volumes"), 0); }
static void m_format_str(json_t *o) { json_object_set_new(o, "format", json_string("1")); }
static void m_time_int(json_t *o) { json_object_set_new(o, "time", json_integer(5)); }
static void m_time_bad(json_t *o) { json_object_set_new(o, "time", json_string("2026-01-01 10:00:00Z")); }
static void m_time_tz(json_t *o) { json_object_set_new(o, "time", json_string("2026-01-01T10:00:00+01:00")); }
static void m_time_huge(json_t *o) { json_object_set_new(o, "time", json_string("9999-12-31T23:59:59.999999999Z")); }
static void m_time_month(json_t *o) { json_object_set_new(o, "time", json_string("2026-13-01T10:00:00Z")); }
static void m_no_time(json_t *o) { json_object_del(o, "time"); }
static void m_host_int(json_t *o) { json_object_set_new(o, "hostname", json_integer(1)); }
static void m_tags_str(json_t *o) { json_object_set_new(o, "tags", json_string("daily")); }
static void m_tags_int(json_t *o) { json_array_append_new(json_object_get(o, "tags"), json_integer(3)); }
static void m_parent_short(json_t *o) { json_object_set_new(o, "parent", json_string("abcd")); }
static void m_parent_upper(json_t *o) {
        json_object_set_new(o, "parent", json_string("00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff"));
}
static void m_cc_str(json_t *o) { json_object_set_new(o, "crash_consistent", json_string("yes")); }
static void m_dur_neg(json_t *o) { json_object_set_new(o, "duration", json_real(-1)); }
static void m_dur_str(json_t *o) { json_object_set_new(o, "duration", json_string("1s")); }
static void m_stat_neg(json_t *o) { json_object_set_new(o, "bytes_read", json_integer(-1)); }
static void m_stat_real(json_t *o) { json_object_set_new(o, "bytes_new", json_real(1e300)); }
static void m_vols_obj(json_t *o) { json_object_set_new(o, "volumes", json_object()); }
static void m_vol_str(json_t *o) { json_array_set_new(json_object_get(o, "volumes"), 0, json_string("x")); }
static void m_vol_noname(json_t *o) { json_object_del(vol0(o), "name"); }
static void m_vol_emptyname(json_t *o) { json_object_set_new(vol0(o), "name", json_string("")); }
static void m_vol_dupname(json_t *o) { json_object_set_new(json_array_get(json_object_get(o, "volumes"), 1), "name", json_string("sda1")); }
static void m_vol_cs3(json_t *o) { json_object_set_new(vol0(o), "chunk_size", json_integer(3 << 18)); }
static void m_vol_cs_small(json_t *o) { json_object_set_new(vol0(o), "chunk_size", json_integer(128 << 10)); }
static void m_vol_cs_big(json_t *o) { json_object_set_new(vol0(o), "chunk_size", json_integer(16 << 20)); }
static void m_vol_chunks(json_t *o) { json_object_set_new(vol0(o), "chunks", json_integer(4096)); }
static void m_vol_size(json_t *o) { json_object_set_new(vol0(o), "size", json_integer(4096LL << 18)); }
static void m_vol_size_neg(json_t *o) { json_object_set_new(vol0(o), "size", json_integer(-1)); }
static void m_vol_size_huge(json_t *o) {
        /* Consistent with chunks but with a list count that cannot hold them. */
        json_object_set_new(vol0(o), "size", json_integer(INT64_MAX));
        json_object_set_new(vol0(o), "chunks", json_integer(INT64_MAX / (256 << 10) + 1));
}
static void m_vol_lists_short(json_t *o) { json_array_remove(json_object_get(vol0(o), "lists"), 1); }
static void m_vol_lists_long(json_t *o) { json_array_append(json_object_get(vol0(o), "lists"), json_array_get(json_object_get(vol0(o), "lists"), 0)); }
static void m_vol_list_hex(json_t *o) {
        json_array_set_new(json_object_get(vol0(o), "lists"), 0,
                           json_string("g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"));
}
static void m_vol_list_len(json_t *o) { json_array_set_new(json_object_get(vol0(o), "lists"), 0, json_string("0011")); }
static void m_vol_list_int(json_t *o) { json_array_set_new(json_object_get(vol0(o), "lists"), 0, json_integer(7)); }
static void m_vol_list_zero(json_t *o) {
        json_array_set_new(json_object_get(vol0(o), "lists"), 0,
                           json_string("0000000000000000000000000000000000000000000000000000000000000000"));
}
static void m_vol_path_int(json_t *o) { json_object_set_new(vol0(o), "path", json_integer(1)); }
static void m_vol_longstr(json_t *o) {
        char *s = malloc(5000);
        memset(s, 'a', 4999);
        s[4999] = 0;
        json_object_set_new(vol0(o), "label", json_string(s));
        free(s);
}

static void test_manifest_rejects(void **state) {
        (void) state;
        static const Mutate muts[] = {
                m_format_str, m_time_int, m_time_bad, m_time_tz, m_time_huge, m_time_month, m_no_time,
                m_host_int, m_tags_str, m_tags_int, m_parent_short, m_parent_upper, m_cc_str, m_dur_neg,
                m_dur_str, m_stat_neg, m_stat_real, m_vols_obj, m_vol_str, m_vol_noname, m_vol_emptyname,
                m_vol_dupname, m_vol_cs3, m_vol_cs_small, m_vol_cs_big, m_vol_chunks, m_vol_size,
                m_vol_size_neg, m_vol_size_huge, m_vol_lists_short, m_vol_lists_long, m_vol_list_hex,
                m_vol_list_len, m_vol_list_int, m_vol_list_zero, m_vol_path_int, m_vol_longstr,
        };
        KuraVersion *v = sample_version(), *d = NULL;
        char *s = encode_str(v);
        assert_int_equal(decode_str(s, &d), 0); /* the base is valid */
        kura_version_free(d);
        for (size_t i = 0; i < ELEMENTSOF(muts); i++) {
                json_t *o = json_loads(s, 0, NULL);
                muts[i](o);
                char *m = json_dumps(o, JSON_COMPACT);
                d = NULL;
                int r = decode_str(m, &d);
                if (r != -EBADMSG)
                        fail_msg("mutation %zu accepted (r=%d): %s", i, r, m);
                assert_null(d);
                free(m);
                json_decref(o);
        }

        /* Every strict prefix of the text is rejected (truncated JSON). */
        size_t len = strlen(s);
        for (size_t k = 0; k < len; k++) {
                d = NULL;
                assert_int_equal(kura_version_decode((const uint8_t *) s, k, &d), -EBADMSG);
        }
        /* Raw syntax the mutations cannot express. */
        static const char *const raw[] = {
                "", "[]", "null", "{\"format\":1,\"format\":1}",
                "{\"format\":1,\"time\":\"2026-01-01T00:00:00Z\",\"hostname\":\"h\",\"volumes\":[]} x",
                "{\"format\":99999999999999999999999}",
        };
        for (size_t i = 0; i < ELEMENTSOF(raw); i++)
                assert_int_equal(decode_str(raw[i], &d), -EBADMSG);
        assert_int_equal(decode_str("{\"format\":2}", &d), -EPROTONOSUPPORT);
        /* The minimum a manifest needs. */
        assert_int_equal(decode_str("{\"format\":1,\"time\":\"2026-01-01T00:00:00Z\",\"hostname\":\"h\",\"volumes\":[]}",
                                    &d),
                         0);
        assert_true(d->time_ns == 1767225600LL * 1000000000LL);
        kura_version_free(d);
        free(s);
        kura_version_free(v);
}

/* ---- repositories ---------------------------------------------------------------- */

typedef struct Fixture {
        bool encrypted;
        char dir[64];
} Fixture;

static int pw_fn(void *ud, char **ret) {
        (void) ud;
        *ret = strdup("correct horse");
        return *ret ? 0 : -ENOMEM;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f) {
        (void) st, (void) flag, (void) f;
        return remove(p);
}

static int setup_repo(void **state, bool encrypted) {
        Fixture *f = calloc(1, sizeof *f);
        f->encrypted = encrypted;
        snprintf(f->dir, sizeof f->dir, "/tmp/kura-test-version-XXXXXX");
        if (!mkdtemp(f->dir))
                return -1;
        KuraRepoInitOpts o = {.encrypted = encrypted, .password = "correct horse", .kdf_mem = 64 << 10,
                              .kdf_passes = 1};
        KuraErr err = {0};
        _cleanup_free_ char *path = kura_path_join(f->dir, "repo");
        int r = kura_repo_init(path, &o, NULL, &err);
        if (r < 0) {
                fprintf(stderr, "init: %s: %s\n", err.code, err.message);
                return -1;
        }
        *state = f;
        return 0;
}
static int setup_plain(void **state) { return setup_repo(state, false); }
static int setup_enc(void **state) { return setup_repo(state, true); }

static int teardown_repo(void **state) {
        Fixture *f = *state;
        nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        free(f);
        return 0;
}

static KuraRepo *open_repo(Fixture *f, KuraLockMode mode) {
        KuraRepoOpenOpts o = {.lock = mode, .password_fn = pw_fn};
        KuraErr err = {0};
        KuraRepo *repo = NULL;
        _cleanup_free_ char *path = kura_path_join(f->dir, "repo");
        int r = kura_repo_open(path, &o, &repo, &err);
        if (r < 0)
                fail_msg("open: %s: %s", err.code, err.message);
        return repo;
}

#define NCH 6 /* data chunks per group */
typedef struct Data {
        uint8_t *blob[4][NCH];      /* groups: A (v1 only), B (shared), C (v1 only), D (v2 only) */
        size_t len[4][NCH];
        KuraId id[4][NCH];
} Data;

static void put_group(KuraRepoWorker *w, Data *d, int g) {
        KuraErr err = {0};
        for (int i = 0; i < NCH; i++) {
                d->len[g][i] = 3000 + 100 * (size_t) g + (size_t) i;
                d->blob[g][i] = malloc(d->len[g][i]);
                assert_int_equal(kura_random(d->blob[g][i], d->len[g][i]), 0);
                assert_int_equal(kura_repo_hash(w, d->blob[g][i], d->len[g][i], &d->id[g][i]), 0);
                assert_int_equal(kura_repo_put(w, KURA_BLOB_DATA, &d->id[g][i], d->blob[g][i], d->len[g][i], NULL, &err),
                                 1);
        }
}

static void flush(KuraRepo *repo) {
        KuraErr err = {0};
        if (kura_repo_flush(repo, &err) < 0)
                fail_msg("flush: %s", err.message);
}

/* A version with one volume of 4100 chunks (two lists) that uses groups
 * g1 and g2 at chunk positions spread across both lists, ZERO/FREE elsewhere. */
static KuraVersion *make_version(KuraRepoWorker *w, Data *d, int g1, int g2, KuraId **ret_ids) {
        KuraErr err = {0};
        KuraVersion *v = kura_version_new();
        v->time_ns = kura_now_ns();
        v->hostname = strdup("testhost");
        KuraVolume *vol = kura_version_add_volume(v, "vda", "/dev/vda", "ext4", "", "", 4100ULL * (256 << 10) - 5,
                                                  256 << 10);
        assert_true(vol->nchunks == 4100);
        KuraId *ids = calloc(4100, sizeof *ids);
        for (size_t i = 0; i < 4100; i++)
                ids[i] = i % 3 ? KURA_ID_ZERO : KURA_ID_FREE;
        for (int i = 0; i < NCH; i++) {
                ids[i * 700] = d->id[g1][i];
                ids[i * 700 + 1] = d->id[g2][i];
        }
        ids[4099] = d->id[g2][0];
        if (kura_volume_store_chunks(w, vol, ids, &err) < 0)
                fail_msg("store_chunks: %s", err.message);
        assert_int_equal(vol->nlists, 2);
        *ret_ids = ids;
        return v;
}

static void save(KuraRepo *repo, KuraVersion *v) {
        KuraErr err = {0};
        if (kura_version_save(repo, v, &err) < 0)
                fail_msg("save: %s", err.message);
        assert_int_equal(strlen(v->id), 64);
}

static void free_data(Data *d) {
        for (int g = 0; g < 4; g++)
                for (int i = 0; i < NCH; i++)
                        free(d->blob[g][i]);
}

static size_t count_files(const char *dir, bool recurse) {
        DIR *dd = opendir(dir);
        size_t n = 0;
        struct dirent *de;
        if (!dd)
                return 0;
        while ((de = readdir(dd))) {
                if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
                        continue;
                if (recurse && de->d_type == DT_DIR) {
                        char *sub = kura_path_join(dir, de->d_name);
                        n += count_files(sub, false);
                        free(sub);
                } else
                        n++;
        }
        closedir(dd);
        return n;
}

static char *pack_of(KuraRepo *repo, const KuraId *id, KuraIndexEntry *e) {
        assert_true(kura_index_lookup(repo->index, id, e));
        const KuraId *pid = kura_index_pack_id(repo->index, e->pack);
        assert_non_null(pid);
        return kura_repo_pack_path(repo, pid);
}

static const KuraProblem *find_problem(const KuraCheckReport *r, const char *object_prefix) {
        for (size_t i = 0; i < r->nproblems; i++)
                if (strncmp(r->problems[i].object, object_prefix, strlen(object_prefix)) == 0)
                        return &r->problems[i];
        return NULL;
}

static bool problem_names(const KuraProblem *p, const char *vid) {
        for (size_t i = 0; i < p->nversions; i++)
                if (strcmp(p->versions[i], vid) == 0)
                        return true;
        return false;
}

static KuraCheckReport *run_check(KuraRepo *repo, bool read_data) {
        KuraCheckReport *rep = NULL;
        KuraErr err = {0};
        if (kura_repo_check(repo, read_data, NULL, NULL, &rep, &err) < 0)
                fail_msg("check: %s", err.message);
        return rep;
}

static void dump(const KuraCheckReport *r) {
        for (size_t i = 0; i < r->nproblems; i++)
                print_message("  %s %s: %s (%zu versions)\n", r->problems[i].code, r->problems[i].object,
                              r->problems[i].message, r->problems[i].nversions);
}

static void assert_chunks_equal(KuraRepoWorker *w, Data *d, int g) {
        uint8_t *buf = malloc(KURA_BLOB_MAX);
        for (int i = 0; i < NCH; i++) {
                size_t len = 0;
                KuraErr err = {0};
                if (kura_repo_get(w, &d->id[g][i], buf, &len, &err) < 0)
                        fail_msg("get group %d chunk %d: %s", g, i, err.message);
                assert_int_equal(len, d->len[g][i]);
                assert_memory_equal(buf, d->blob[g][i], len);
        }
        free(buf);
}

static void progress_cb(void *ud, uint64_t done, uint64_t total) {
        uint64_t *last = ud;
        assert_true(done <= total);
        assert_true(done >= last[0]);
        last[0] = done;
        last[1] = total;
}

static void test_repo_cycle(void **state) {
        Fixture *f = *state;
        KuraErr err = {0};
        Data d = {0};
        KuraId *ids1 = NULL, *ids2 = NULL;
        char v1id[65], v2id[65];

        /* ---- store: packs P1 = {A}, P2 = {B, C}, P3 = {v1 lists}, P4 = {D, v2 lists} */
        KuraRepo *repo = open_repo(f, KURA_LOCK_SHARED);
        KuraRepoWorker *w = NULL;
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        put_group(w, &d, 0);
        flush(repo);
        put_group(w, &d, 1);
        put_group(w, &d, 2);
        flush(repo);
        KuraVersion *v1 = make_version(w, &d, 0, 2, &ids1);
        /* B is also used by v1 through the list of v2 below; v1 uses A, C and B[0] at 4099. */
        flush(repo);
        save(repo, v1);
        put_group(w, &d, 3);
        KuraVersion *v2 = make_version(w, &d, 3, 1, &ids2);
        flush(repo);
        save(repo, v2);
        memcpy(v1id, v1->id, 65);
        memcpy(v2id, v2->id, 65);

        /* Lists come back exactly. */
        KuraId *back = NULL;
        assert_int_equal(kura_volume_load_chunks(w, &v2->volumes[0], &back, &err), 0);
        assert_memory_equal(back, ids2, 4100 * sizeof(KuraId));
        free(back);
        /* A list count that does not match the chunks is refused. */
        v2->volumes[0].nchunks = 4097;
        assert_int_equal(kura_volume_load_chunks(w, &v2->volumes[0], &back, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        v2->volumes[0].nchunks = 4100;
        kura_err_clear(&err);

        /* 17 small versions: two of them must share the first hex digit. */
        char small[17][65];
        for (int i = 0; i < 17; i++) {
                KuraVersion *s = kura_version_new();
                s->time_ns = kura_now_ns();
                s->hostname = strdup("h");
                save(repo, s);
                memcpy(small[i], s->id, 65);
                kura_version_free(s);
        }

        /* ---- list, find */
        KuraVersion **vs = NULL;
        size_t n = 0, damaged = 99;
        assert_int_equal(kura_version_list(repo, false, &vs, &n, &damaged, &err), 0);
        assert_int_equal(n, 19);
        assert_int_equal(damaged, 0);
        assert_string_equal(vs[0]->id, v1id);
        assert_string_equal(vs[1]->id, v2id);
        assert_string_equal(vs[18]->id, small[16]);
        for (size_t i = 1; i < n; i++)
                assert_true(vs[i - 1]->time_ns <= vs[i]->time_ns);
        assert_memory_equal(vs[1]->volumes[0].lists, v2->volumes[0].lists, 2 * sizeof(KuraId));
        kura_version_list_free(vs, n);

        KuraVersion *found = NULL;
        assert_int_equal(kura_version_find(repo, "latest", &found, &err), 0);
        assert_string_equal(found->id, small[16]);
        kura_version_free(found);
        char prefix[13];
        memcpy(prefix, v2id, 12);
        prefix[12] = 0;
        assert_int_equal(kura_version_find(repo, prefix, &found, &err), 0);
        assert_string_equal(found->id, v2id);
        assert_string_equal(found->hostname, "testhost");
        kura_version_free(found);
        for (int i = 0; i < 12; i++)
                prefix[i] = (char) toupper((unsigned char) prefix[i]);
        assert_int_equal(kura_version_find(repo, prefix, &found, &err), 0);
        kura_version_free(found);
        assert_int_equal(kura_version_find(repo, v1id, &found, &err), 0);
        assert_string_equal(found->id, v1id);
        kura_version_free(found);

        int digits[16] = {0};
        char amb[2] = {0};
        for (int i = 0; i < 17; i++)
                if (++digits[isdigit((unsigned char) small[i][0]) ? small[i][0] - '0' : small[i][0] - 'a' + 10] == 2)
                        amb[0] = small[i][0];
        assert_true(amb[0] != 0);
        assert_true(kura_version_find(repo, amb, &found, &err) < 0);
        assert_string_equal(err.code, KURA_E_VERSION_AMBIGUOUS);
        assert_non_null(strstr(err.message, "ambiguous"));
        kura_err_clear(&err);
        assert_true(kura_version_find(repo, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdex", &found,
                                      &err) < 0);
        assert_string_equal(err.code, KURA_E_VERSION_NOT_FOUND);
        kura_err_clear(&err);
        char missing[65];
        memcpy(missing, v1id, 65);
        missing[63] = missing[63] == '0' ? '1' : '0';
        assert_int_equal(kura_version_find(repo, missing, &found, &err), -ENOENT);
        assert_string_equal(err.code, KURA_E_VERSION_NOT_FOUND);
        kura_err_clear(&err);

        /* forget needs the exclusive lock. */
        assert_int_equal(kura_version_forget(repo, v1id, &err), -EPERM);
        kura_err_clear(&err);
        KuraPruneStats st;
        assert_int_equal(kura_repo_prune(repo, &st, &err), -EPERM);
        kura_err_clear(&err);

        /* A clean repository checks clean, progress runs monotonically to the total. */
        uint64_t prog[2] = {0, 0};
        KuraCheckReport *rep = NULL;
        assert_int_equal(kura_repo_check(repo, true, progress_cb, prog, &rep, &err), 0);
        dump(rep);
        assert_int_equal(rep->nerrors, 0);
        assert_int_equal(rep->nwarnings, 0);
        assert_int_equal(rep->versions, 19);
        assert_int_equal(rep->packs, 4);
        assert_int_equal(rep->blobs, 4 * NCH + 4);
        assert_true(rep->bytes_read > 0);
        assert_true(prog[1] > 0 && prog[0] == prog[1]);
        kura_check_report_free(rep);

        kura_repo_worker_free(w);
        kura_repo_close(repo);

        /* ---- forget v1 and the small ones, add leftovers, prune */
        repo = open_repo(f, KURA_LOCK_EXCLUSIVE);
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        memcpy(prefix, v1id, 10);
        prefix[10] = 0;
        assert_int_equal(kura_version_forget(repo, prefix, &err), 0);
        for (int i = 0; i < 17; i++)
                assert_int_equal(kura_version_forget(repo, small[i], &err), 0);
        assert_true(kura_version_forget(repo, v1id, &err) < 0);
        assert_string_equal(err.code, KURA_E_VERSION_NOT_FOUND);
        kura_err_clear(&err);

        KuraIndexEntry e;
        char *p1 = pack_of(repo, &d.id[0][0], &e); /* deleted */
        char *p2 = pack_of(repo, &d.id[1][0], &e); /* rewritten */
        char *p4 = pack_of(repo, &d.id[3][0], &e); /* kept */
        char *p3 = pack_of(repo, &v1->volumes[0].lists[0], &e); /* deleted */
        _cleanup_free_ char *datadir = kura_asprintf("%s/repo/data", f->dir);
        _cleanup_free_ char *tmp1 = kura_asprintf("%s/.tmp-leftover", datadir);
        _cleanup_free_ char *stray = kura_asprintf("%s/ab/ab%062d", datadir, 0);
        _cleanup_free_ char *abdir = kura_asprintf("%s/ab", datadir);
        assert_int_equal(kio_write_file(tmp1, "x", 1), 0);
        assert_int_equal(kio_mkdir(abdir, 0700), 0);
        assert_int_equal(kio_write_file(stray, "junk", 4), 0);

        rep = run_check(repo, false);
        assert_int_equal(rep->nerrors, 0);
        assert_int_equal(rep->nwarnings, 2);
        const KuraProblem *pr = find_problem(rep, "pack data/ab/");
        assert_non_null(pr);
        assert_string_equal(pr->code, KURA_W_LEFTOVER);
        assert_non_null(strstr(pr->message, "not indexed"));
        assert_non_null(find_problem(rep, "data/.tmp-leftover"));
        kura_check_report_free(rep);

        if (kura_repo_prune(repo, &st, &err) < 0)
                fail_msg("prune: %s", err.message);
        assert_true(st.packs_deleted == 2);
        assert_true(st.packs_rewritten == 1);
        /* A (6) + C (6) + v1's two lists; B stays because v2 uses it. */
        assert_true(st.blobs_deleted == 2 * NCH + 2);
        assert_true(st.leftovers_removed == 2);
        assert_true(st.bytes_freed > 2 * NCH * 3000);
        assert_int_equal(access(p1, F_OK), -1);
        assert_int_equal(access(p2, F_OK), -1);
        assert_int_equal(access(p3, F_OK), -1);
        assert_int_equal(access(p4, F_OK), 0);
        assert_int_equal(access(tmp1, F_OK), -1);
        assert_int_equal(access(stray, F_OK), -1);
        assert_false(kura_repo_has(repo, &d.id[0][0]));
        assert_false(kura_repo_has(repo, &d.id[2][3]));
        assert_true(kura_repo_has(repo, &d.id[1][5]));
        _cleanup_free_ char *idxdir = kura_asprintf("%s/repo/index", f->dir);
        assert_int_equal(count_files(idxdir, false), 1);
        assert_int_equal(count_files(datadir, true), 2); /* P4 and the new pack */
        char *pb = pack_of(repo, &d.id[1][0], &e);
        assert_string_not_equal(pb, p2);
        free(pb);
        assert_chunks_equal(w, &d, 1);
        assert_chunks_equal(w, &d, 3);
        KuraId *after = NULL;
        assert_int_equal(kura_volume_load_chunks(w, &v2->volumes[0], &after, &err), 0);
        assert_memory_equal(after, ids2, 4100 * sizeof(KuraId));
        free(after);

        /* A second prune has nothing to do. */
        KuraPruneStats st2;
        assert_int_equal(kura_repo_prune(repo, &st2, &err), 0);
        assert_true(st2.packs_deleted == 0 && st2.packs_rewritten == 0 && st2.blobs_deleted == 0 &&
                    st2.leftovers_removed == 0);
        kura_repo_worker_free(w);
        kura_repo_close(repo);

        /* ---- a fresh session sees the same thing, checks clean */
        repo = open_repo(f, KURA_LOCK_SHARED);
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        assert_chunks_equal(w, &d, 1);
        assert_chunks_equal(w, &d, 3);
        rep = run_check(repo, true);
        dump(rep);
        assert_int_equal(rep->nproblems, 0);
        assert_int_equal(rep->versions, 1);
        assert_int_equal(rep->packs, 2);
        kura_check_report_free(rep);

        /* ---- damage 1: a flipped byte in chunk D[2] */
        char *pd = pack_of(repo, &d.id[3][2], &e);
        uint8_t *orig = NULL;
        size_t olen = 0;
        assert_int_equal(kio_read_file(pd, 1U << 30, &orig, &olen), 0);
        {
                uint8_t *mod = malloc(olen);
                memcpy(mod, orig, olen);
                mod[e.offset + 40] ^= 0x01;
                int fd = open(pd, O_WRONLY | O_TRUNC | O_CLOEXEC);
                assert_true(fd >= 0);
                assert_int_equal(write(fd, mod, olen), (ssize_t) olen);
                close(fd);
                free(mod);
        }
        rep = run_check(repo, false);
        assert_int_equal(rep->nerrors, 0); /* the structure is intact */
        kura_check_report_free(rep);
        rep = run_check(repo, true);
        dump(rep);
        assert_int_equal(rep->nerrors, 2); /* the blob, and the pack's name */
        char hex[65], obj[80];
        kura_hex(d.id[3][2].b, 32, hex);
        snprintf(obj, sizeof obj, "chunk %s", hex);
        pr = find_problem(rep, obj);
        assert_non_null(pr);
        assert_string_equal(pr->code, KURA_E_DAMAGED);
        assert_int_equal(pr->severity, KURA_PROBLEM_ERROR);
        assert_non_null(strstr(pr->message, "data/"));
        assert_int_equal(pr->nversions, 1);
        assert_string_equal(pr->versions[0], v2id);
        pr = find_problem(rep, "pack data/");
        assert_non_null(pr);
        assert_non_null(strstr(pr->message, "do not match its name"));
        kura_check_report_free(rep);

        /* ---- damage 2: the pack truncated */
        assert_int_equal(truncate(pd, (off_t) olen - 3), 0);
        rep = run_check(repo, false);
        dump(rep);
        assert_true(rep->nerrors >= 1);
        snprintf(obj, sizeof obj, "pack data/%.2s/", strrchr(pd, '/') + 1);
        pr = find_problem(rep, obj);
        assert_non_null(pr);
        assert_non_null(strstr(pr->object, strrchr(pd, '/') + 1));
        assert_true(problem_names(pr, v2id));
        kura_check_report_free(rep);
        assert_int_equal(kio_write_file(pd, orig, olen), 0);
        rep = run_check(repo, true);
        assert_int_equal(rep->nproblems, 0);
        kura_check_report_free(rep);
        free(orig);
        free(pd);

        /* ---- damage 3: the index file deleted */
        DIR *dd = opendir(idxdir);
        struct dirent *de;
        char *ifile = NULL;
        while ((de = readdir(dd)))
                if (de->d_name[0] != '.')
                        ifile = kura_path_join(idxdir, de->d_name);
        closedir(dd);
        assert_non_null(ifile);
        assert_int_equal(kio_read_file(ifile, 1U << 30, &orig, &olen), 0);
        assert_int_equal(unlink(ifile), 0);
        rep = run_check(repo, false);
        dump(rep);
        assert_true(rep->nerrors >= 1);
        kura_hex(v2->volumes[0].lists[0].b, 32, hex);
        snprintf(obj, sizeof obj, "chunk %s", hex);
        pr = find_problem(rep, obj);
        assert_non_null(pr);
        assert_non_null(strstr(pr->message, "not in the index"));
        assert_int_equal(pr->nversions, 1);
        assert_string_equal(pr->versions[0], v2id);
        pr = find_problem(rep, "pack data/");
        assert_non_null(pr);
        assert_string_equal(pr->code, KURA_W_LEFTOVER);
        kura_check_report_free(rep);

        /* ---- damage 4: that index file back, but altered */
        orig[olen / 2] ^= 0x80;
        assert_int_equal(kio_write_file(ifile, orig, olen), 0);
        rep = run_check(repo, false);
        pr = find_problem(rep, "index file index/");
        assert_non_null(pr);
        assert_string_equal(pr->code, KURA_E_DAMAGED);
        kura_check_report_free(rep);
        /* prune refuses to work on top of an unreadable index file */
        kura_repo_worker_free(w);
        kura_repo_close(repo);
        orig[olen / 2] ^= 0x80;
        assert_int_equal(kio_write_file(ifile, orig, olen), 0);
        repo = open_repo(f, KURA_LOCK_EXCLUSIVE);
        orig[olen / 2] ^= 0x80;
        assert_int_equal(kio_write_file(ifile, orig, olen), 0);
        assert_true(kura_repo_prune(repo, &st, &err) < 0);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        assert_non_null(strstr(err.message, "index"));
        kura_err_clear(&err);
        kura_repo_close(repo);
        free(orig);
        free(ifile);

        free(p1);
        free(p2);
        free(p3);
        free(p4);
        free(ids1);
        free(ids2);
        kura_version_free(v1);
        kura_version_free(v2);
        free_data(&d);
}

/* A damaged manifest: list fails, or skips it and counts it; find names it. */
static void test_damaged_manifest(void **state) {
        Fixture *f = *state;
        KuraErr err = {0};
        KuraRepo *repo = open_repo(f, KURA_LOCK_SHARED);
        KuraVersion *v = kura_version_new();
        v->time_ns = kura_now_ns();
        v->hostname = strdup("h");
        save(repo, v);
        KuraVersion *v2 = kura_version_new();
        v2->time_ns = kura_now_ns() + 1;
        v2->hostname = strdup("h2");
        save(repo, v2);

        _cleanup_free_ char *path = kura_asprintf("%s/repo/versions/%s", f->dir, v->id);
        uint8_t *b = NULL;
        size_t n = 0;
        assert_int_equal(kio_read_file(path, 1 << 20, &b, &n), 0);
        b[n - 1] ^= 1;
        assert_int_equal(kio_write_file(path, b, n), 0);
        free(b);
        _cleanup_free_ char *tmp = kura_asprintf("%s/repo/versions/.tmp-abc", f->dir);
        assert_int_equal(kio_write_file(tmp, "x", 1), 0);

        KuraVersion **vs = NULL;
        size_t nv = 0, damaged = 0;
        assert_int_equal(kura_version_list(repo, false, &vs, &nv, &damaged, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        assert_non_null(strstr(err.message, v->id));
        kura_err_clear(&err);
        assert_int_equal(kura_version_list(repo, true, &vs, &nv, &damaged, &err), 0);
        assert_int_equal(nv, 1);
        assert_int_equal(damaged, 1);
        assert_string_equal(vs[0]->id, v2->id);
        kura_version_list_free(vs, nv);

        KuraVersion *found = NULL;
        assert_int_equal(kura_version_find(repo, "latest", &found, &err), 0);
        assert_string_equal(found->id, v2->id);
        kura_version_free(found);
        assert_int_equal(kura_version_find(repo, v->id, &found, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        kura_err_clear(&err);

        KuraCheckReport *rep = run_check(repo, false);
        char obj[80];
        snprintf(obj, sizeof obj, "version %s", v->id);
        const KuraProblem *pr = find_problem(rep, obj);
        assert_non_null(pr);
        assert_int_equal(pr->severity, KURA_PROBLEM_ERROR);
        assert_non_null(find_problem(rep, "versions/.tmp-abc"));
        kura_check_report_free(rep);
        kura_repo_close(repo);

        /* prune refuses (the damaged manifest may use anything); forget still works on it */
        repo = open_repo(f, KURA_LOCK_EXCLUSIVE);
        KuraPruneStats st;
        assert_true(kura_repo_prune(repo, &st, &err) < 0);
        assert_string_equal(err.code, KURA_E_DAMAGED);
        kura_err_clear(&err);
        assert_int_equal(kura_version_forget(repo, v->id, &err), 0);
        assert_int_equal(kura_repo_prune(repo, &st, &err), 0);
        assert_true(st.leftovers_removed == 1);
        assert_int_equal(access(tmp, F_OK), -1);
        kura_repo_close(repo);
        kura_version_free(v);
        kura_version_free(v2);
}

/* ---- prune interrupted at every I/O event ------------------------------------------- */

/* Child side: runs in a fresh process so that kio reads KURA_FAULT_CRASH_AT. */
static int child_prune(const char *repo_path) {
        KuraRepoOpenOpts o = {.lock = KURA_LOCK_EXCLUSIVE, .password_fn = pw_fn};
        KuraRepo *repo = NULL;
        KuraErr err = {0};
        KuraPruneStats st;
        if (kura_repo_open(repo_path, &o, &repo, &err) < 0) {
                fprintf(stderr, "child open: %s\n", err.message);
                return 2;
        }
        int r = kura_repo_prune(repo, &st, &err);
        if (r < 0)
                fprintf(stderr, "child prune: %s\n", err.message);
        kura_repo_close(repo);
        return r < 0 ? 3 : 0;
}

/* Everything v2 needs is there, byte for byte, and check finds no error. */
static void verify_v2(Fixture *f, Data *d, const char *v2id, const KuraId *ids2, bool expect_clean) {
        KuraRepo *repo = open_repo(f, KURA_LOCK_SHARED);
        KuraRepoWorker *w = NULL;
        KuraVersion *v = NULL;
        KuraId *back = NULL;
        KuraErr err = {0};
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        assert_int_equal(kura_version_find(repo, v2id, &v, &err), 0);
        assert_int_equal(kura_volume_load_chunks(w, &v->volumes[0], &back, &err), 0);
        assert_memory_equal(back, ids2, 4100 * sizeof(KuraId));
        free(back);
        kura_version_free(v);
        assert_chunks_equal(w, d, 1);
        assert_chunks_equal(w, d, 3);
        KuraCheckReport *rep = run_check(repo, true);
        if (rep->nerrors || (expect_clean && rep->nwarnings))
                dump(rep);
        assert_int_equal(rep->nerrors, 0);
        if (expect_clean)
                assert_int_equal(rep->nwarnings, 0);
        assert_int_equal(rep->versions, 1);
        kura_check_report_free(rep);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
}

static void test_prune_crash(void **state) {
        Fixture *f = *state;
        KuraErr err = {0};
        Data d = {0};
        KuraId *ids1 = NULL, *ids2 = NULL;
        char v1id[65], v2id[65];

        /* Packs: {A, B} (to be rewritten), {v1 lists} (deleted), {D, v2 lists} (kept). */
        KuraRepo *repo = open_repo(f, KURA_LOCK_SHARED);
        KuraRepoWorker *w = NULL;
        assert_int_equal(kura_repo_worker_new(repo, &w), 0);
        put_group(w, &d, 0);
        put_group(w, &d, 1);
        flush(repo);
        KuraVersion *v1 = make_version(w, &d, 0, 1, &ids1);
        flush(repo);
        save(repo, v1);
        put_group(w, &d, 3);
        KuraVersion *v2 = make_version(w, &d, 3, 1, &ids2);
        flush(repo);
        save(repo, v2);
        memcpy(v1id, v1->id, 65);
        memcpy(v2id, v2->id, 65);
        kura_repo_worker_free(w);
        kura_repo_close(repo);
        repo = open_repo(f, KURA_LOCK_EXCLUSIVE);
        assert_int_equal(kura_version_forget(repo, v1id, &err), 0);
        kura_repo_close(repo);

        _cleanup_free_ char *src = kura_asprintf("%s/repo", f->dir);
        _cleanup_free_ char *cmd = kura_asprintf("cp -a %s/repo %s/pristine", f->dir, f->dir);
        _cleanup_free_ char *restore = kura_asprintf("rm -rf %s/repo && cp -a %s/pristine %s/repo", f->dir, f->dir,
                                                     f->dir);
        assert_int_equal(system(cmd), 0);
        int crashes = 0, n;
        for (n = 1; n < 1000; n++) {
                assert_int_equal(system(restore), 0);
                pid_t pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        char at[32];
                        snprintf(at, sizeof at, "%d", n);
                        setenv("KURA_FAULT_CRASH_AT", at, 1);
                        execl("/proc/self/exe", "test-version", "--prune-child", src, (char *) NULL);
                        _exit(127);
                }
                int status = 0;
                assert_int_equal(waitpid(pid, &status, 0), pid);
                assert_true(WIFEXITED(status));
                if (WEXITSTATUS(status) == 0)
                        break; /* n is past the last event: prune completed */
                assert_int_equal(WEXITSTATUS(status), KIO_CRASH_EXIT);
                crashes++;
                /* After the crash: v2 intact, no error (leftovers are only warnings)... */
                verify_v2(f, &d, v2id, ids2, false);
                /* ...and the next prune finishes the job. */
                repo = open_repo(f, KURA_LOCK_EXCLUSIVE);
                KuraPruneStats st;
                if (kura_repo_prune(repo, &st, &err) < 0)
                        fail_msg("prune after crash at %d: %s", n, err.message);
                kura_repo_close(repo);
                verify_v2(f, &d, v2id, ids2, true);
        }
        print_message("  prune survived %d crash points\n", crashes);
        assert_true(crashes >= 10);
        verify_v2(f, &d, v2id, ids2, true);
        repo = open_repo(f, KURA_LOCK_SHARED);
        assert_false(kura_repo_has(repo, &d.id[0][0]));
        /* (v1's second list equals v2's: same chunks, so one shared blob.) */
        assert_false(kura_repo_has(repo, &v1->volumes[0].lists[0]));
        assert_true(kura_repo_has(repo, &v1->volumes[0].lists[1]));
        kura_repo_close(repo);

        free(ids1);
        free(ids2);
        kura_version_free(v1);
        kura_version_free(v2);
        free_data(&d);
}

int main(int argc, char **argv) {
        if (argc == 3 && strcmp(argv[1], "--prune-child") == 0)
                return child_prune(argv[2]);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_list_codec),
                cmocka_unit_test(test_manifest_roundtrip),
                cmocka_unit_test(test_manifest_unknown_keys),
                cmocka_unit_test(test_manifest_rejects),
                cmocka_unit_test_setup_teardown(test_repo_cycle, setup_plain, teardown_repo),
                cmocka_unit_test_setup_teardown(test_repo_cycle, setup_enc, teardown_repo),
                cmocka_unit_test_setup_teardown(test_damaged_manifest, setup_plain, teardown_repo),
                cmocka_unit_test_setup_teardown(test_damaged_manifest, setup_enc, teardown_repo),
                cmocka_unit_test_setup_teardown(test_prune_crash, setup_plain, teardown_repo),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
