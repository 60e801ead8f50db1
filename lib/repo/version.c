/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Versions (recovery points): the list-blob codec (§7.1 of
 * docs/format/repository.md), the manifest JSON codec (§7), and saving,
 * listing, finding and forgetting manifests.
 *
 * A manifest is the one object that ties a recovery point together, and it
 * is read from a directory anyone with write access to the repository could
 * have touched: the decoder treats it as hostile (every type checked, every
 * count cross-checked against the others, every string bounded) so that code
 * further on (restore, check, prune) can trust a decoded KuraVersion.
 */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <zstd.h>

#include "repo/repo-internal.h"

/* Not in repo-internal.h (owned by another engineer): shared with check.c.
 * Load and verify the manifest REPO/versions/<name>; -ENOENT (with
 * KURA-E-VERSION-NOT-FOUND) when there is no such file. */
int kura_version_load(KuraRepo *repo, const char *name, KuraVersion **ret, KuraErr *err);
/* Names of the manifests in REPO/versions (64-hex names only), sorted. */
int kura_version_scan_names(KuraRepo *repo, char ***ret, size_t *ret_n, KuraErr *err);
void kura_strv_free(char **v, size_t n);

#define KURA_LIST_MAGIC "KLST"
#define KURA_LIST_VERSION 1
/* Longest string accepted in a manifest (paths are the longest thing in it). */
#define KURA_MANIFEST_STR_MAX 4096
#define KURA_MANIFEST_FORMAT 1

static const char *const remedy_damaged =
        "run `kura check`; restore another version, or `kura forget` this one";

/* jansson provides json_decrefp() for the cleanup attribute. */
#define _cleanup_json_ _cleanup_(json_decrefp)

static inline void kura_buf_freep(KuraBuf *b) { kura_buf_free(b); }
#define _cleanup_buf_ _cleanup_(kura_buf_freep)

static inline void kura_version_freep(KuraVersion **v) { kura_version_free(*v); }

void kura_strv_free(char **v, size_t n) {
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

/* ---- objects ------------------------------------------------------------ */

static void volume_clear(KuraVolume *vol) {
        free(vol->name);
        free(vol->path);
        free(vol->fs);
        free(vol->uuid);
        free(vol->label);
        free(vol->lists);
        memset(vol, 0, sizeof *vol);
}

KuraVersion *kura_version_new(void) { return calloc(1, sizeof(KuraVersion)); }

KuraVersion *kura_version_free(KuraVersion *v) {
        if (!v)
                return NULL;
        free(v->hostname);
        kura_strv_free(v->tags, v->ntags);
        free(v->parent);
        for (size_t i = 0; i < v->nvolumes; i++)
                volume_clear(&v->volumes[i]);
        free(v->volumes);
        if (v->extra)
                json_decref(v->extra);
        free(v);
        return NULL;
}

void kura_version_list_free(KuraVersion **v, size_t n) {
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                kura_version_free(v[i]);
        free(v);
}

/* ceil(a / b) without the overflow of a + b - 1. */
static uint64_t div_up(uint64_t a, uint64_t b) { return a / b + (a % b != 0); }

static bool chunk_size_valid(uint64_t cs) {
        return cs >= KURA_CHUNK_SIZE_MIN && cs <= KURA_CHUNK_SIZE_MAX && (cs & (cs - 1)) == 0;
}

KuraVolume *kura_version_add_volume(KuraVersion *v, const char *name, const char *path, const char *fs,
                                    const char *uuid, const char *label, uint64_t size, uint32_t chunk_size) {
        KuraVolume *nv = reallocarray(v->volumes, v->nvolumes + 1, sizeof *nv);
        if (!nv)
                return NULL;
        v->volumes = nv;
        KuraVolume *vol = &nv[v->nvolumes];
        memset(vol, 0, sizeof *vol);
        vol->name = strdup(name ? name : "");
        vol->path = strdup(path ? path : "");
        vol->fs = strdup(fs ? fs : "");
        vol->uuid = strdup(uuid ? uuid : "");
        vol->label = strdup(label ? label : "");
        if (!vol->name || !vol->path || !vol->fs || !vol->uuid || !vol->label) {
                volume_clear(vol);
                return NULL;
        }
        vol->size = size;
        vol->chunk_size = chunk_size;
        vol->nchunks = chunk_size ? div_up(size, chunk_size) : 0;
        v->nvolumes++;
        return vol;
}

/* ---- list blobs (§7.1) -------------------------------------------------- */

int kura_list_encode(const KuraId *ids, size_t n, KuraBuf *out) {
        if (n == 0 || n > KURA_LIST_MAX_IDS)
                return -EINVAL;
        int r = kura_buf_reserve(out, 12 + n * KURA_ID_LEN);
        if (r < 0)
                return r;
        (void) kura_buf_append(out, KURA_LIST_MAGIC, 4);
        (void) kura_buf_le32(out, KURA_LIST_VERSION);
        (void) kura_buf_le32(out, (uint32_t) n);
        return kura_buf_append(out, ids, n * KURA_ID_LEN);
}

int kura_list_decode(const uint8_t *p, size_t n, KuraId **ret, size_t *ret_n) {
        KuraBufReader br;
        const uint8_t *magic, *body;
        uint32_t version, count;

        kura_br_init(&br, p, n);
        if (kura_br_ptr(&br, &magic, 4) < 0 || memcmp(magic, KURA_LIST_MAGIC, 4) != 0)
                return KURA_CORRUPT();
        if (kura_br_le32(&br, &version) < 0)
                return KURA_CORRUPT();
        if (version != KURA_LIST_VERSION)
                return -EPROTONOSUPPORT;
        if (kura_br_le32(&br, &count) < 0 || count == 0 || count > KURA_LIST_MAX_IDS)
                return KURA_CORRUPT();
        /* Exactly count IDs and nothing after them. */
        if (br.left != (size_t) count * KURA_ID_LEN || kura_br_ptr(&br, &body, br.left) < 0)
                return KURA_CORRUPT();
        KuraId *ids = malloc((size_t) count * sizeof *ids);
        if (!ids)
                return -ENOMEM;
        memcpy(ids, body, (size_t) count * KURA_ID_LEN);
        *ret = ids;
        *ret_n = count;
        return 0;
}

int kura_volume_store_chunks(KuraRepoWorker *w, KuraVolume *vol, const KuraId *ids, KuraErr *err) {
        if (!chunk_size_valid(vol->chunk_size) || vol->nchunks != div_up(vol->size, vol->chunk_size))
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "report this bug",
                                "volume %s: chunk size %u does not fit %llu bytes / %llu chunks", vol->name,
                                vol->chunk_size, (unsigned long long) vol->size, (unsigned long long) vol->nchunks);
        size_t nlists = (size_t) div_up(vol->nchunks, KURA_LIST_MAX_IDS);
        _cleanup_free_ KuraId *lists = nlists ? calloc(nlists, sizeof *lists) : NULL;
        if (nlists && !lists)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory storing the chunk list of %s",
                                vol->name);
        _cleanup_buf_ KuraBuf b = {0};
        for (size_t i = 0; i < nlists; i++) {
                uint64_t first = (uint64_t) i * KURA_LIST_MAX_IDS;
                size_t n = (size_t) KURA_MIN((uint64_t) KURA_LIST_MAX_IDS, vol->nchunks - first);
                b.len = 0;
                int r = kura_list_encode(ids + first, n, &b);
                if (r < 0)
                        return kura_err_errno(err, r, KURA_E_NO_MEMORY, "", "cannot encode the chunk list of %s",
                                              vol->name);
                r = kura_repo_hash(w, b.data, b.len, &lists[i]);
                if (r < 0)
                        return kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot hash the chunk list of %s",
                                              vol->name);
                r = kura_repo_put(w, KURA_BLOB_LIST, &lists[i], b.data, b.len, NULL, err);
                if (r < 0)
                        return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                              "check free space and permissions of the repository",
                                              "cannot store the chunk list of volume %s", vol->name);
        }
        free(vol->lists);
        vol->lists = TAKE_PTR(lists);
        vol->nlists = nlists;
        return 0;
}

int kura_volume_load_chunks(KuraRepoWorker *w, const KuraVolume *vol, KuraId **ret, KuraErr *err) {
        char hex[2 * KURA_ID_LEN + 1];

        if (vol->nlists != div_up(vol->nchunks, KURA_LIST_MAX_IDS) ||
            vol->nchunks > SIZE_MAX / sizeof(KuraId))
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_damaged,
                                "volume %s: %zu chunk lists cannot hold %llu chunks", vol->name, vol->nlists,
                                (unsigned long long) vol->nchunks);
        _cleanup_free_ KuraId *all = malloc(KURA_MAX((size_t) vol->nchunks, (size_t) 1) * sizeof *all);
        _cleanup_free_ uint8_t *buf = malloc(KURA_BLOB_MAX);
        if (!all || !buf)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "",
                                "out of memory loading the chunk list of volume %s (%llu chunks)", vol->name,
                                (unsigned long long) vol->nchunks);
        uint64_t have = 0;
        for (size_t i = 0; i < vol->nlists; i++) {
                size_t len = 0, n = 0;
                int r = kura_repo_get(w, &vol->lists[i], buf, &len, err);
                kura_hex(vol->lists[i].b, KURA_ID_LEN, hex);
                if (r < 0)
                        return kura_err_errno(err, r, KURA_E_DAMAGED, remedy_damaged,
                                              "cannot read chunk list %s of volume %s", hex, vol->name);
                _cleanup_free_ KuraId *ids = NULL;
                r = kura_list_decode(buf, len, &ids, &n);
                if (r == -ENOMEM)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                /* Every list but the last is full (§7.1), so chunk i is in list i / 4096. */
                uint64_t want = KURA_MIN((uint64_t) KURA_LIST_MAX_IDS, vol->nchunks - have);
                if (r < 0 || n != want)
                        return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_damaged,
                                        "chunk list %s of volume %s is malformed (%zu IDs, %llu expected)", hex,
                                        vol->name, n, (unsigned long long) want);
                memcpy(all + have, ids, n * sizeof *ids);
                have += n;
        }
        if (have != vol->nchunks)
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_damaged,
                                "volume %s: chunk lists hold %llu chunks, %llu expected", vol->name,
                                (unsigned long long) have, (unsigned long long) vol->nchunks);
        *ret = TAKE_PTR(all);
        return 0;
}

/* ---- manifest JSON (§7) ------------------------------------------------- */

static const char *const known_keys[] = {
        "format", "time", "hostname", "tags", "parent", "crash_consistent",
        "bytes_read", "bytes_new", "bytes_stored", "duration", "volumes",
};

static bool is_known_key(const char *k) {
        for (size_t i = 0; i < ELEMENTSOF(known_keys); i++)
                if (strcmp(k, known_keys[i]) == 0)
                        return true;
        return false;
}

static bool is_id_hex(const char *s) {
        if (!s || strlen(s) != 2 * KURA_ID_LEN)
                return false;
        for (const char *c = s; *c; c++)
                if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
                        return false;
        return true;
}

static int set_new(json_t *o, const char *k, json_t *v) {
        /* json_object_set_new() consumes v, even on failure, and fails on v == NULL. */
        return json_object_set_new(o, k, v) < 0 ? -ENOMEM : 0;
}

static int set_u64(json_t *o, const char *k, uint64_t v) {
        if (v > INT64_MAX)
                return -ERANGE;
        return set_new(o, k, json_integer((json_int_t) v));
}

/* json_string() also fails on invalid UTF-8, which the manifest cannot carry. */
static int set_str(json_t *o, const char *k, const char *s) {
        if (!s)
                s = "";
        if (strlen(s) > KURA_MANIFEST_STR_MAX)
                return -EINVAL;
        json_t *j = json_string(s);
        if (!j)
                return -EINVAL;
        return set_new(o, k, j);
}

static int encode_volume(const KuraVolume *vol, json_t **ret) {
        char hex[2 * KURA_ID_LEN + 1];
        int r;

        if (!vol->name || !*vol->name || !chunk_size_valid(vol->chunk_size) ||
            vol->nchunks != div_up(vol->size, vol->chunk_size) ||
            vol->nlists != div_up(vol->nchunks, KURA_LIST_MAX_IDS))
                return -EINVAL;
        _cleanup_json_ json_t *o = json_object();
        _cleanup_json_ json_t *lists = json_array();
        if (!o || !lists)
                return -ENOMEM;
        for (size_t i = 0; i < vol->nlists; i++) {
                kura_hex(vol->lists[i].b, KURA_ID_LEN, hex);
                if (json_array_append_new(lists, json_string(hex)) < 0)
                        return -ENOMEM;
        }
        if ((r = set_str(o, "name", vol->name)) < 0 || (r = set_str(o, "path", vol->path)) < 0 ||
            (r = set_str(o, "fs", vol->fs)) < 0 || (r = set_str(o, "uuid", vol->uuid)) < 0 ||
            (r = set_str(o, "label", vol->label)) < 0 || (r = set_u64(o, "size", vol->size)) < 0 ||
            (r = set_u64(o, "chunk_size", vol->chunk_size)) < 0 || (r = set_u64(o, "chunks", vol->nchunks)) < 0 ||
            (r = set_new(o, "lists", TAKE_PTR(lists))) < 0 || (r = set_u64(o, "bytes_read", vol->bytes_read)) < 0 ||
            (r = set_u64(o, "bytes_new", vol->bytes_new)) < 0 ||
            (r = set_u64(o, "bytes_stored", vol->bytes_stored)) < 0 ||
            (r = set_u64(o, "chunks_zero", vol->chunks_zero)) < 0 ||
            (r = set_u64(o, "chunks_free", vol->chunks_free)) < 0 ||
            (r = set_u64(o, "chunks_new", vol->chunks_new)) < 0)
                return r;
        *ret = TAKE_PTR(o);
        return 0;
}

int kura_version_encode(const KuraVersion *v, KuraBuf *out) {
        char tbuf[64];
        int r;

        if (v->time_ns < 0 || !isfinite(v->duration_s) || v->duration_s < 0 ||
            (v->parent && !is_id_hex(v->parent)))
                return -EINVAL;
        _cleanup_json_ json_t *o = json_object();
        _cleanup_json_ json_t *tags = json_array();
        _cleanup_json_ json_t *vols = json_array();
        if (!o || !tags || !vols)
                return -ENOMEM;
        for (size_t i = 0; i < v->ntags; i++) {
                if (!v->tags[i] || strlen(v->tags[i]) > KURA_MANIFEST_STR_MAX)
                        return -EINVAL;
                json_t *t = json_string(v->tags[i]);
                if (!t)
                        return -EINVAL;
                if (json_array_append_new(tags, t) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < v->nvolumes; i++) {
                json_t *jv;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(v->volumes[i].name, v->volumes[j].name) == 0)
                                return -EINVAL;
                r = encode_volume(&v->volumes[i], &jv);
                if (r < 0)
                        return r;
                if (json_array_append_new(vols, jv) < 0)
                        return -ENOMEM;
        }
        kura_format_time(v->time_ns, tbuf, sizeof tbuf);
        if ((r = set_u64(o, "format", KURA_MANIFEST_FORMAT)) < 0 || (r = set_str(o, "time", tbuf)) < 0 ||
            (r = set_str(o, "hostname", v->hostname)) < 0 || (r = set_new(o, "tags", TAKE_PTR(tags))) < 0 ||
            (r = set_new(o, "parent", v->parent ? json_string(v->parent) : json_null())) < 0 ||
            (r = set_new(o, "crash_consistent", json_boolean(v->crash_consistent))) < 0 ||
            (r = set_u64(o, "bytes_read", v->bytes_read)) < 0 || (r = set_u64(o, "bytes_new", v->bytes_new)) < 0 ||
            (r = set_u64(o, "bytes_stored", v->bytes_stored)) < 0 ||
            (r = set_new(o, "duration", json_real(v->duration_s))) < 0 ||
            (r = set_new(o, "volumes", TAKE_PTR(vols))) < 0)
                return r;
        /* Fields a newer kura wrote: kept verbatim, never shadowing ours. */
        if (v->extra) {
                const char *k;
                json_t *val;
                if (!json_is_object((json_t *) v->extra))
                        return -EINVAL;
                json_object_foreach((json_t *) v->extra, k, val) {
                        if (is_known_key(k))
                                continue;
                        if (json_object_set(o, k, val) < 0)
                                return -ENOMEM;
                }
        }
        _cleanup_free_ char *s = kura_json_dumps_checked(o, JSON_COMPACT);
        if (!s)
                return -ENOMEM;
        return kura_buf_append(out, s, strlen(s));
}

/* Decoding helpers: absent optional fields get defaults; a present field of
 * the wrong type is always corruption. */
static int get_u64(json_t *o, const char *k, bool required, uint64_t *ret) {
        json_t *j = json_object_get(o, k);
        if (!j) {
                *ret = 0;
                return required ? KURA_CORRUPT() : 0;
        }
        if (!json_is_integer(j) || json_integer_value(j) < 0)
                return KURA_CORRUPT();
        *ret = (uint64_t) json_integer_value(j);
        return 0;
}

static int get_str(json_t *o, const char *k, bool required, char **ret) {
        json_t *j = json_object_get(o, k);
        const char *s = "";
        if (!j) {
                if (required)
                        return KURA_CORRUPT();
        } else {
                if (!json_is_string(j) || json_string_length(j) > KURA_MANIFEST_STR_MAX)
                        return KURA_CORRUPT();
                s = json_string_value(j);
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

/* Stricter than kura_parse_time(): exactly YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z,
 * and a year whose nanoseconds fit in int64 (1970..2261). */
static int parse_manifest_time(const char *s, int64_t *ret) {
        static const char pat[] = "dddd-dd-ddTdd:dd:dd";
        size_t i;
        for (i = 0; pat[i]; i++) {
                if (pat[i] == 'd' ? !isdigit((unsigned char) s[i]) : s[i] != pat[i])
                        return KURA_CORRUPT();
        }
        const char *p = s + i;
        if (*p == '.') {
                size_t nd = 0;
                for (p++; isdigit((unsigned char) *p); p++)
                        nd++;
                if (nd < 1 || nd > 9)
                        return KURA_CORRUPT();
        }
        if (strcmp(p, "Z") != 0)
                return KURA_CORRUPT();
        int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
        int mon = (s[5] - '0') * 10 + (s[6] - '0'), day = (s[8] - '0') * 10 + (s[9] - '0');
        int hour = (s[11] - '0') * 10 + (s[12] - '0'), min = (s[14] - '0') * 10 + (s[15] - '0');
        int sec = (s[17] - '0') * 10 + (s[18] - '0');
        if (year < 1970 || year > 2261 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
            sec > 60)
                return KURA_CORRUPT();
        if (kura_parse_time(s, ret) < 0 || *ret < 0)
                return KURA_CORRUPT();
        return 0;
}

static int decode_volume(json_t *o, KuraVolume *vol) {
        uint64_t cs, n;
        int r;

        if (!json_is_object(o))
                return KURA_CORRUPT();
        if ((r = get_str(o, "name", true, &vol->name)) < 0 || (r = get_str(o, "path", false, &vol->path)) < 0 ||
            (r = get_str(o, "fs", false, &vol->fs)) < 0 || (r = get_str(o, "uuid", false, &vol->uuid)) < 0 ||
            (r = get_str(o, "label", false, &vol->label)) < 0 || (r = get_u64(o, "size", true, &vol->size)) < 0 ||
            (r = get_u64(o, "chunk_size", true, &cs)) < 0 || (r = get_u64(o, "chunks", true, &vol->nchunks)) < 0 ||
            (r = get_u64(o, "bytes_read", false, &vol->bytes_read)) < 0 ||
            (r = get_u64(o, "bytes_new", false, &vol->bytes_new)) < 0 ||
            (r = get_u64(o, "bytes_stored", false, &vol->bytes_stored)) < 0 ||
            (r = get_u64(o, "chunks_zero", false, &vol->chunks_zero)) < 0 ||
            (r = get_u64(o, "chunks_free", false, &vol->chunks_free)) < 0 ||
            (r = get_u64(o, "chunks_new", false, &vol->chunks_new)) < 0)
                return r;
        if (!*vol->name || !chunk_size_valid(cs) || vol->nchunks != div_up(vol->size, cs))
                return KURA_CORRUPT();
        vol->chunk_size = (uint32_t) cs;
        json_t *lists = json_object_get(o, "lists");
        if (!json_is_array(lists))
                return KURA_CORRUPT();
        n = json_array_size(lists);
        if (n != div_up(vol->nchunks, KURA_LIST_MAX_IDS))
                return KURA_CORRUPT();
        if (n > 0) {
                vol->lists = calloc(n, sizeof *vol->lists);
                if (!vol->lists)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                const char *s = json_string_value(json_array_get(lists, i));
                if (!is_id_hex(s) || kura_unhex(s, vol->lists[i].b, KURA_ID_LEN) < 0)
                        return KURA_CORRUPT();
                /* ZERO and FREE never name a blob (§5). */
                if (kura_id_is_zero(&vol->lists[i]) || kura_id_is_free(&vol->lists[i]))
                        return KURA_CORRUPT();
        }
        vol->nlists = n;
        return 0;
}

int kura_version_decode(const uint8_t *p, size_t n, KuraVersion **ret) {
        json_error_t jerr;
        uint64_t format;
        int r;

        /* Duplicate keys would make the meaning depend on the parser. */
        _cleanup_json_ json_t *o = json_loadb((const char *) p, n, JSON_REJECT_DUPLICATES, &jerr);
        if (!o || !json_is_object(o))
                return KURA_CORRUPT();
        if ((r = get_u64(o, "format", true, &format)) < 0)
                return r;
        if (format != KURA_MANIFEST_FORMAT)
                return -EPROTONOSUPPORT;

        _cleanup_(kura_version_freep) KuraVersion *v = kura_version_new();
        if (!v)
                return -ENOMEM;
        const char *ts = json_string_value(json_object_get(o, "time"));
        if (!ts || parse_manifest_time(ts, &v->time_ns) < 0)
                return KURA_CORRUPT();
        if ((r = get_str(o, "hostname", true, &v->hostname)) < 0 ||
            (r = get_u64(o, "bytes_read", false, &v->bytes_read)) < 0 ||
            (r = get_u64(o, "bytes_new", false, &v->bytes_new)) < 0 ||
            (r = get_u64(o, "bytes_stored", false, &v->bytes_stored)) < 0)
                return r;

        json_t *j = json_object_get(o, "tags");
        if (j) {
                if (!json_is_array(j))
                        return KURA_CORRUPT();
                size_t nt = json_array_size(j);
                if (nt > 0 && !(v->tags = calloc(nt, sizeof *v->tags)))
                        return -ENOMEM;
                for (size_t i = 0; i < nt; i++) {
                        json_t *t = json_array_get(j, i);
                        if (!json_is_string(t) || json_string_length(t) > KURA_MANIFEST_STR_MAX)
                                return KURA_CORRUPT();
                        if (!(v->tags[i] = strdup(json_string_value(t))))
                                return -ENOMEM;
                        v->ntags++;
                }
        }
        j = json_object_get(o, "parent");
        if (j && !json_is_null(j)) {
                if (!is_id_hex(json_string_value(j)))
                        return KURA_CORRUPT();
                if (!(v->parent = strdup(json_string_value(j))))
                        return -ENOMEM;
        }
        j = json_object_get(o, "crash_consistent");
        if (j) {
                if (!json_is_boolean(j))
                        return KURA_CORRUPT();
                v->crash_consistent = json_is_true(j);
        }
        j = json_object_get(o, "duration");
        if (j) {
                if (!json_is_number(j) || !isfinite(json_number_value(j)) || json_number_value(j) < 0)
                        return KURA_CORRUPT();
                v->duration_s = json_number_value(j);
        }

        j = json_object_get(o, "volumes");
        if (!json_is_array(j))
                return KURA_CORRUPT();
        size_t nv = json_array_size(j);
        if (nv > 0 && !(v->volumes = calloc(nv, sizeof *v->volumes)))
                return -ENOMEM;
        for (size_t i = 0; i < nv; i++) {
                /* Count it first so that kura_version_free() releases a half-decoded volume. */
                v->nvolumes++;
                r = decode_volume(json_array_get(j, i), &v->volumes[i]);
                if (r < 0)
                        return r;
                for (size_t k = 0; k < i; k++)
                        if (strcmp(v->volumes[k].name, v->volumes[i].name) == 0)
                                return KURA_CORRUPT();
        }

        /* Everything else is a field of a newer kura: kept to be re-emitted. */
        const char *k;
        json_t *val;
        json_object_foreach(o, k, val) {
                if (is_known_key(k))
                        continue;
                if (!v->extra && !(v->extra = json_object()))
                        return -ENOMEM;
                if (json_object_set(v->extra, k, val) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(v);
        return 0;
}

/* ---- manifests in the repository ---------------------------------------- */

int kura_version_save(KuraRepo *repo, KuraVersion *v, KuraErr *err) {
        _cleanup_buf_ KuraBuf json = {0};
        _cleanup_buf_ KuraBuf sealed = {0};
        _cleanup_free_ uint8_t *z = NULL;
        KuraId id;

        int r = kura_version_encode(v, &json);
        if (r == -ENOMEM)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory writing a version manifest");
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "report this bug",
                                      "refusing to write an invalid version manifest");
        size_t zcap = ZSTD_compressBound(json.len);
        z = malloc(zcap);
        if (!z)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory writing a version manifest");
        /* One-shot compression records the content size, which the reader needs (§7). */
        size_t zlen = ZSTD_compress(z, zcap, json.data, json.len,
                                    repo->zstd_level > 0 ? repo->zstd_level : KURA_DEFAULT_ZSTD_LEVEL);
        if (ZSTD_isError(zlen))
                return kura_err(err, EIO, KURA_E_INTERNAL, "report this bug", "zstd: %s",
                                ZSTD_getErrorName(zlen));
        r = kura_repo_seal(repo, KURA_AAD_VERSION, z, zlen, &sealed);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot seal the version manifest");
        r = kura_repo_write_object(repo, "versions", sealed.data, sealed.len, &id);
        if (r < 0)
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                      "check free space and permissions of the repository",
                                      "cannot write the version manifest in %s/versions", repo->path);
        kura_hex(id.b, KURA_ID_LEN, v->id);
        return 0;
}

/* Decompress a manifest: exactly one zstd frame that records its size,
 * at most KURA_META_MAX bytes (a bomb cannot make us allocate more). */
static int manifest_decompress(const uint8_t *p, size_t n, uint8_t **ret, size_t *ret_len) {
        unsigned long long sz = ZSTD_getFrameContentSize(p, n);
        if (sz == ZSTD_CONTENTSIZE_UNKNOWN || sz == ZSTD_CONTENTSIZE_ERROR || sz > KURA_META_MAX)
                return KURA_CORRUPT();
        size_t fsz = ZSTD_findFrameCompressedSize(p, n);
        if (ZSTD_isError(fsz) || fsz != n)
                return KURA_CORRUPT();
        uint8_t *b = malloc(sz ? sz : 1);
        if (!b)
                return -ENOMEM;
        size_t got = ZSTD_decompress(b, sz, p, n);
        if (ZSTD_isError(got) || got != sz) {
                free(b);
                return KURA_CORRUPT();
        }
        *ret = b;
        *ret_len = got;
        return 0;
}

int kura_version_load(KuraRepo *repo, const char *name, KuraVersion **ret, KuraErr *err) {
        _cleanup_free_ char *path = NULL;
        _cleanup_free_ uint8_t *data = NULL, *plain = NULL;
        _cleanup_buf_ KuraBuf z = {0};
        uint8_t digest[KURA_HASH_LEN];
        char hex[2 * KURA_ID_LEN + 1];
        size_t len = 0, plen = 0;
        KuraVersion *v = NULL;

        if (!is_id_hex(name))
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, "remove the stray file from versions/",
                                "versions/%s is not a version manifest (bad name)", name);
        path = kura_repo_subpath(repo, "versions", name);
        if (!path)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        int r = kio_read_file(path, KURA_META_MAX, &data, &len);
        if (r == -ENOENT)
                return kura_err(err, ENOENT, KURA_E_VERSION_NOT_FOUND, "list versions with `kura versions`",
                                "version %s not found", name);
        if (r == -ENOMEM)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (r < 0)
                return kura_err_errno(err, r == -EFBIG ? -EBADMSG : r, KURA_E_DAMAGED, remedy_damaged,
                                      "cannot read version manifest %s", name);
        r = kura_sha256(data, len, digest);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot hash version manifest %s", name);
        kura_hex(digest, sizeof digest, hex);
        if (strcmp(hex, name) != 0)
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_damaged,
                                "version manifest %s is damaged (its contents do not match its name)", name);
        r = kura_repo_unseal(repo, KURA_AAD_VERSION, data, len, &z);
        if (r == -ENOMEM)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (r < 0)
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_damaged,
                                "version manifest %s cannot be authenticated (damaged, or another repository's)",
                                name);
        r = manifest_decompress(z.data, z.len, &plain, &plen);
        if (r == -ENOMEM)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (r < 0)
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_damaged,
                                "version manifest %s does not decompress", name);
        r = kura_version_decode(plain, plen, &v);
        if (r == -ENOMEM)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (r == -EPROTONOSUPPORT)
                return kura_err(err, EPROTONOSUPPORT, KURA_E_REPO_VERSION, "upgrade kura",
                                "version manifest %s was written by a newer kura (unknown format)", name);
        if (r < 0)
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_damaged,
                                "version manifest %s is malformed", name);
        memcpy(v->id, name, sizeof v->id);
        *ret = v;
        return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *) a, *(char *const *) b); }

/* The directory entries of versions/ that are neither "." entries nor
 * temporary files (.tmp-*).  With only_ids, names that are not 64 hex digits
 * are left out. */
static int scan_dir(KuraRepo *repo, bool only_ids, char ***ret, size_t *ret_n, KuraErr *err) {
        _cleanup_free_ char *dir = kura_repo_subpath(repo, "versions", NULL);
        if (!dir)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        DIR *d = opendir(dir);
        if (!d)
                return kura_err_errno(err, -errno, KURA_E_REPO_IO, "check the repository's permissions",
                                      "cannot list %s", dir);
        char **names = NULL;
        size_t n = 0;
        int r = 0;
        struct dirent *de;
        while ((errno = 0, de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                if (only_ids && !is_id_hex(de->d_name))
                        continue;
                char **nn = reallocarray(names, n + 1, sizeof *names);
                if (!nn || !(nn[n] = strdup(de->d_name))) {
                        if (nn)
                                names = nn;
                        r = -ENOMEM;
                        break;
                }
                names = nn;
                n++;
        }
        if (r == 0 && errno)
                r = -errno;
        closedir(d);
        if (r < 0) {
                kura_strv_free(names, n);
                return kura_err_errno(err, r, r == -ENOMEM ? KURA_E_NO_MEMORY : KURA_E_REPO_IO, "",
                                      "cannot list %s", dir);
        }
        if (n > 1)
                qsort(names, n, sizeof *names, cmp_str);
        *ret = names;
        *ret_n = n;
        return 0;
}

int kura_version_scan_names(KuraRepo *repo, char ***ret, size_t *ret_n, KuraErr *err) {
        return scan_dir(repo, true, ret, ret_n, err);
}

static int cmp_version(const void *a, const void *b) {
        const KuraVersion *x = *(KuraVersion *const *) a, *y = *(KuraVersion *const *) b;
        if (x->time_ns != y->time_ns)
                return x->time_ns < y->time_ns ? -1 : 1;
        return strcmp(x->id, y->id);
}

int kura_version_list(KuraRepo *repo, bool skip_damaged, KuraVersion ***ret, size_t *ret_n,
                      size_t *ret_damaged, KuraErr *err) {
        char **names = NULL;
        size_t nnames = 0, damaged = 0, n = 0;
        int r = scan_dir(repo, false, &names, &nnames, err);
        if (r < 0)
                return r;
        KuraVersion **vs = calloc(KURA_MAX(nnames, (size_t) 1), sizeof *vs);
        if (!vs) {
                kura_strv_free(names, nnames);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        for (size_t i = 0; i < nnames; i++) {
                KuraErr lerr = {0};
                r = kura_version_load(repo, names[i], &vs[n], &lerr);
                if (r >= 0) {
                        n++;
                        continue;
                }
                /* Deleted between readdir and open (a concurrent forget): not damage. */
                if (r == -ENOENT)
                        continue;
                if (skip_damaged && r != -ENOMEM) {
                        damaged++;
                        continue;
                }
                if (err && !err->code)
                        *err = lerr;
                kura_strv_free(names, nnames);
                kura_version_list_free(vs, n);
                return r;
        }
        kura_strv_free(names, nnames);
        if (n > 1)
                qsort(vs, n, sizeof *vs, cmp_version);
        *ret = vs;
        *ret_n = n;
        if (ret_damaged)
                *ret_damaged = damaged;
        return 0;
}

/* Resolve spec (full ID or unique prefix, any case) to a manifest name,
 * from the directory alone, so that a damaged manifest can still be named
 * (and forgotten). */
static int resolve_name(KuraRepo *repo, const char *spec, char ret[2 * KURA_ID_LEN + 1], KuraErr *err) {
        char want[2 * KURA_ID_LEN + 1];
        size_t len = spec ? strlen(spec) : 0;

        if (len == 0 || len > 2 * KURA_ID_LEN || !kura_is_hex(spec))
                return kura_err(err, EINVAL, KURA_E_VERSION_NOT_FOUND,
                                "give a version ID (or a unique prefix of it) or \"latest\"; see `kura versions`",
                                "'%s' is not a version ID", spec ? spec : "");
        for (size_t i = 0; i <= len; i++)
                want[i] = (char) tolower((unsigned char) spec[i]);

        char **names = NULL;
        size_t n = 0;
        int r = scan_dir(repo, true, &names, &n, err);
        if (r < 0)
                return r;
        size_t first = SIZE_MAX, matches = 0;
        char cand[8 * 20 + 1] = "";
        for (size_t i = 0; i < n; i++) {
                if (strncmp(names[i], want, len) != 0)
                        continue;
                if (matches == 0)
                        first = i;
                if (matches < 8) {
                        size_t cl = strlen(cand);
                        snprintf(cand + cl, sizeof cand - cl, "%s%.16s", matches ? ", " : "", names[i]);
                }
                matches++;
        }
        if (matches == 1)
                memcpy(ret, names[first], 2 * KURA_ID_LEN + 1);
        kura_strv_free(names, n);
        if (matches == 0)
                return kura_err(err, ENOENT, KURA_E_VERSION_NOT_FOUND, "list versions with `kura versions`",
                                "no version %s in %s", want, repo->path);
        if (matches > 1)
                return kura_err(err, EEXIST, KURA_E_VERSION_AMBIGUOUS, "give more digits of the version ID",
                                "version prefix %s is ambiguous: %zu versions match (%s%s)", want, matches, cand,
                                matches > 8 ? ", ..." : "");
        return 0;
}

int kura_version_find(KuraRepo *repo, const char *spec, KuraVersion **ret, KuraErr *err) {
        char name[2 * KURA_ID_LEN + 1];
        int r;

        if (spec && strcmp(spec, "latest") == 0) {
                KuraVersion **vs = NULL;
                size_t n = 0, damaged = 0;
                r = kura_version_list(repo, true, &vs, &n, &damaged, err);
                if (r < 0)
                        return r;
                if (n == 0) {
                        kura_version_list_free(vs, n);
                        if (damaged > 0)
                                return kura_err(err, ENOENT, KURA_E_VERSION_NOT_FOUND, remedy_damaged,
                                                "no readable version in %s (%zu manifests are damaged)",
                                                repo->path, damaged);
                        return kura_err(err, ENOENT, KURA_E_VERSION_NOT_FOUND, "make one with `kura backup`",
                                        "the repository %s has no versions", repo->path);
                }
                *ret = TAKE_PTR(vs[n - 1]);
                kura_version_list_free(vs, n - 1);
                return 0;
        }
        r = resolve_name(repo, spec, name, err);
        if (r < 0)
                return r;
        return kura_version_load(repo, name, ret, err);
}

int kura_version_forget(KuraRepo *repo, const char *id, KuraErr *err) {
        char name[2 * KURA_ID_LEN + 1];

        if (repo->lock_mode != KURA_LOCK_EXCLUSIVE)
                return kura_err(err, EPERM, KURA_E_INTERNAL, "open the repository with KURA_LOCK_EXCLUSIVE",
                                "forgetting a version needs the exclusive lock on %s", repo->path);
        int r = resolve_name(repo, id, name, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = kura_repo_subpath(repo, "versions", name);
        if (!path)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        r = kio_unlink(path);
        if (r < 0)
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                      "check the repository's permissions", "cannot remove %s", path);
        return 0;
}
