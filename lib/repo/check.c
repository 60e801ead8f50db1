/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `kura check`: verify a repository without changing it.
 *
 * The check builds its own view of the index from the index files (rather
 * than trusting the one kura_repo_open() loaded), so that a damaged or
 * missing index file shows up as the chunks it leaves unreachable.  Order:
 *   1. config and key slots;
 *   2. every index file: readable, named by its SHA-256, authentic, well formed;
 *   3. every pack file: its header agrees with the index; with read_data also
 *      every blob is unsealed, decompressed and its ID recomputed, and the
 *      file's SHA-256 is compared with its name;
 *   4. every version: manifest readable, every list blob and every data chunk
 *      it references indexed (and, for list blobs, readable).
 * Damaged or missing chunks found in 3 are remembered (chunk ID -> problem)
 * so that 4 can name, for every problem, the versions it affects.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "repo/repo-internal.h"

/* version.c (see the note there). */
int kura_version_load(KuraRepo *repo, const char *name, KuraVersion **ret, KuraErr *err);

/* Individual "chunk missing" problems before they are summed up in one. */
#define CHECK_MAX_CHUNK_PROBLEMS 100

static const char *const remedy_leftover = "`kura prune` removes it";

typedef struct Checker {
        KuraRepo *repo;
        KuraCheckReport *rep;
        bool read_data;
        KuraRepoWorker *w;
        uint8_t *buf;                 /* KURA_BLOB_MAX */
        KuraPackEntries *packs;       /* union of the readable index files, sorted by pack ID */
        size_t npacks;
        bool *seen;                   /* packs[i] found on disk */
        KuraIndex *idx;               /* blob ID -> entry, .pack = position in packs */
        KuraIndex *bad;               /* blob ID -> problem number (in .offset) */
        size_t nchunk_problems;
        size_t overflow_problem;      /* SIZE_MAX until needed */
        uint64_t overflow_count;
        KuraProgressFn progress;
        void *userdata;
        uint64_t done, total;
} Checker;

/* ---- the report ----------------------------------------------------------- */

KuraCheckReport *kura_check_report_free(KuraCheckReport *r) {
        if (!r)
                return NULL;
        for (size_t i = 0; i < r->nproblems; i++) {
                KuraProblem *p = &r->problems[i];
                free(p->object);
                free(p->message);
                for (size_t j = 0; j < p->nversions; j++)
                        free(p->versions[j]);
                free(p->versions);
        }
        free(r->problems);
        free(r);
        return NULL;
}

static int add_problem(Checker *ch, KuraProblemSeverity sev, const char *code, const char *object,
                       const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Returns the new problem's number, or -ENOMEM. */
static int add_problem(Checker *ch, KuraProblemSeverity sev, const char *code, const char *object,
                       const char *fmt, ...) {
        KuraCheckReport *r = ch->rep;
        if (r->nproblems >= INT32_MAX)
                return -E2BIG;
        KuraProblem *np = reallocarray(r->problems, r->nproblems + 1, sizeof *np);
        if (!np)
                return -ENOMEM;
        r->problems = np;
        KuraProblem *p = &np[r->nproblems];
        memset(p, 0, sizeof *p);
        va_list ap;
        va_start(ap, fmt);
        int k = vasprintf(&p->message, fmt, ap);
        va_end(ap);
        if (k < 0) {
                p->message = NULL;
                return -ENOMEM;
        }
        p->object = strdup(object);
        if (!p->object) {
                free(p->message);
                return -ENOMEM;
        }
        p->severity = sev;
        p->code = code;
        if (sev == KURA_PROBLEM_ERROR)
                r->nerrors++;
        else
                r->nwarnings++;
        return (int) r->nproblems++;
}

static int problem_add_version(Checker *ch, size_t pn, const char *vid) {
        KuraProblem *p = &ch->rep->problems[pn];
        /* Versions are checked one after the other, so a repeat is always the last one. */
        if (p->nversions > 0 && strcmp(p->versions[p->nversions - 1], vid) == 0)
                return 0;
        char **nv = reallocarray(p->versions, p->nversions + 1, sizeof *nv);
        if (!nv)
                return -ENOMEM;
        p->versions = nv;
        if (!(nv[p->nversions] = strdup(vid)))
                return -ENOMEM;
        p->nversions++;
        return 0;
}

static int mark_bad(Checker *ch, const KuraId *id, size_t pn) {
        KuraIndexEntry e = {.id = *id, .offset = (uint32_t) pn};
        int r = kura_index_add(ch->bad, &e);
        return r < 0 ? r : 0;
}

static void pack_name(const KuraId *id, char out[80]) {
        char hex[2 * KURA_ID_LEN + 1];
        kura_hex(id->b, KURA_ID_LEN, hex);
        snprintf(out, 80, "pack data/%.2s/%s", hex, hex);
}

static void progress(Checker *ch, uint64_t add) {
        ch->done += add;
        if (ch->progress)
                ch->progress(ch->userdata, KURA_MIN(ch->done, ch->total), ch->total);
}

static bool is_id_hex(const char *s) {
        if (strlen(s) != 2 * KURA_ID_LEN)
                return false;
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
                        return false;
        return true;
}

static bool is_tmp(const char *name) { return strncmp(name, ".tmp-", 5) == 0; }

static int warn_tmp(Checker *ch, const char *sub, const char *name) {
        _cleanup_free_ char *obj = kura_asprintf("%s/%s", sub, name);
        if (!obj)
                return -ENOMEM;
        int r = add_problem(ch, KURA_PROBLEM_WARNING, KURA_W_LEFTOVER, obj,
                            "temporary file %s left by an interrupted command (%s)", obj, remedy_leftover);
        return r < 0 ? r : 0;
}

/* ---- 1. config and keys ----------------------------------------------------- */

static int check_config(Checker *ch) {
        _cleanup_free_ char *path = kura_repo_subpath(ch->repo, "config", NULL);
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        KuraRepoConfig cfg;
        if (!path)
                return -ENOMEM;
        int r = kio_read_file(path, 1U << 20, &data, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, "config", "cannot read %s: %s", path,
                                strerror(-r));
                return r < 0 ? r : 0;
        }
        r = kura_config_decode(data, len, &cfg);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || strcmp(cfg.id, ch->repo->id) != 0 || cfg.encrypted != ch->repo->encrypted) {
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, "config",
                                "%s is malformed or does not match the repository that was opened", path);
                return r < 0 ? r : 0;
        }
        return 0;
}

static int check_keys(Checker *ch) {
        _cleanup_free_ char *dir = kura_repo_subpath(ch->repo, "keys", NULL);
        if (!dir)
                return -ENOMEM;
        DIR *d = opendir(dir);
        if (!d) {
                if (errno == ENOENT && !ch->repo->encrypted)
                        return 0;
                int r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, "keys", "cannot list %s: %s", dir,
                                    strerror(errno));
                return r < 0 ? r : 0;
        }
        size_t nslots = 0;
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (is_tmp(de->d_name)) {
                        r = warn_tmp(ch, "keys", de->d_name);
                        continue;
                }
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_free_ char *obj = kura_asprintf("keys/%s", de->d_name);
                _cleanup_free_ char *path = kura_path_join(dir, de->d_name);
                _cleanup_free_ uint8_t *data = NULL;
                size_t len = 0;
                if (!obj || !path) {
                        r = -ENOMEM;
                        break;
                }
                int k = kio_read_file(path, 1U << 20, &data, &len);
                json_t *j = k >= 0 ? json_loadb((const char *) data, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
                bool ok = json_is_object(j) && json_is_string(json_object_get(j, "wrapped")) &&
                          json_is_string(json_object_get(j, "salt"));
                if (j)
                        json_decref(j);
                if (!ok)
                        r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj,
                                        "key slot %s is unreadable or malformed", obj);
                else
                        nslots++;
        }
        closedir(d);
        if (r < 0)
                return r;
        if (ch->repo->encrypted && nslots == 0) {
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, "keys",
                                "no readable key slot: the repository cannot be opened again");
                return r < 0 ? r : 0;
        }
        return 0;
}

/* ---- 2. index files ------------------------------------------------------ */

static int cmp_pack(const void *a, const void *b) {
        return memcmp(((const KuraPackEntries *) a)->pack_id.b, ((const KuraPackEntries *) b)->pack_id.b,
                      KURA_ID_LEN);
}

static ssize_t find_pack(Checker *ch, const KuraId *id) {
        KuraPackEntries key = {.pack_id = *id};
        if (ch->npacks == 0)
                return -1;
        KuraPackEntries *p = bsearch(&key, ch->packs, ch->npacks, sizeof key, cmp_pack);
        return p ? p - ch->packs : -1;
}

static int load_one_index(Checker *ch, const char *dir, const char *name) {
        _cleanup_free_ char *path = kura_path_join(dir, name);
        _cleanup_free_ char *obj = kura_asprintf("index file index/%s", name);
        _cleanup_free_ uint8_t *data = NULL;
        KuraBuf pt = {0};
        uint8_t digest[KURA_HASH_LEN];
        char hex[2 * KURA_ID_LEN + 1];
        size_t len = 0, n = 0;
        KuraPackEntries *p = NULL;
        const char *why = NULL;

        if (!path || !obj)
                return -ENOMEM;
        int r = kio_read_file(path, KURA_META_MAX, &data, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                why = "cannot be read";
        else if (kura_sha256(data, len, digest) < 0)
                return -ENOMEM;
        if (!why) {
                kura_hex(digest, sizeof digest, hex);
                if (strcmp(hex, name) != 0)
                        why = "is damaged (its contents do not match its name)";
        }
        if (!why) {
                r = kura_repo_unseal(ch->repo, KURA_AAD_INDEX, data, len, &pt);
                if (r == -ENOMEM)
                        return r; /* not damage: the check itself cannot run */
                if (r < 0)
                        why = "cannot be authenticated (damaged)";
        }
        if (!why) {
                r = kura_index_file_decode(pt.data, pt.len, &p, &n);
                if (r == -ENOMEM) {
                        kura_buf_free(&pt);
                        return r;
                }
                if (r < 0)
                        why = "is malformed";
        }
        kura_buf_free(&pt);
        if (why) {
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj,
                                "index file index/%s %s; the chunks it lists are reported missing below", name,
                                why);
                return r < 0 ? r : 0;
        }
        KuraPackEntries *np = reallocarray(ch->packs, ch->npacks + n, sizeof *np);
        if (!np) {
                kura_pack_entries_free(p, n);
                return -ENOMEM;
        }
        ch->packs = np;
        memcpy(np + ch->npacks, p, n * sizeof *p);
        ch->npacks += n;
        free(p); /* the entries now belong to ch->packs */
        return 0;
}

static int check_index_files(Checker *ch) {
        _cleanup_free_ char *dir = kura_repo_subpath(ch->repo, "index", NULL);
        if (!dir)
                return -ENOMEM;
        DIR *d = opendir(dir);
        if (!d) {
                int r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, "index", "cannot list %s: %s", dir,
                                    strerror(errno));
                return r < 0 ? r : 0;
        }
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (is_tmp(de->d_name))
                        r = warn_tmp(ch, "index", de->d_name);
                else if (de->d_name[0] == '.')
                        continue;
                else if (!is_id_hex(de->d_name)) {
                        _cleanup_free_ char *obj = kura_asprintf("index/%s", de->d_name);
                        r = obj ? add_problem(ch, KURA_PROBLEM_WARNING, KURA_W_LEFTOVER, obj,
                                              "%s is not an index file (unexpected name); remove it", obj)
                                : -ENOMEM;
                } else
                        r = load_one_index(ch, dir, de->d_name);
        }
        closedir(d);
        if (r < 0)
                return r;

        /* A pack named by two index files (an interrupted prune) counts once. */
        if (ch->npacks > 1)
                qsort(ch->packs, ch->npacks, sizeof *ch->packs, cmp_pack);
        size_t out = 0;
        for (size_t i = 0; i < ch->npacks; i++) {
                if (out > 0 && memcmp(ch->packs[out - 1].pack_id.b, ch->packs[i].pack_id.b, KURA_ID_LEN) == 0) {
                        free(ch->packs[i].entries);
                        continue;
                }
                ch->packs[out++] = ch->packs[i];
        }
        ch->npacks = out;
        ch->seen = calloc(KURA_MAX(out, (size_t) 1), sizeof *ch->seen);
        if (!ch->seen)
                return -ENOMEM;
        for (size_t i = 0; i < ch->npacks; i++)
                for (size_t j = 0; j < ch->packs[i].n; j++) {
                        KuraIndexEntry e = ch->packs[i].entries[j];
                        e.pack = (uint32_t) i;
                        ch->total += kura_ie_length(&e);
                        r = kura_index_add(ch->idx, &e);
                        if (r < 0)
                                return r;
                }
        return 0;
}

/* ---- 3. packs ------------------------------------------------------------- */

static int cmp_entry_id(const void *a, const void *b) {
        return memcmp(((const KuraIndexEntry *) a)->id.b, ((const KuraIndexEntry *) b)->id.b, KURA_ID_LEN);
}

/* Every index entry of a pack lost or unreadable points at problem pn. */
static int mark_pack_bad(Checker *ch, size_t i, size_t pn) {
        for (size_t j = 0; j < ch->packs[i].n; j++) {
                int r = mark_bad(ch, &ch->packs[i].entries[j].id, pn);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int pack_sha256_matches(const char *path, const KuraId *want, bool *ret) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        EVP_MD_CTX *sha = EVP_MD_CTX_new();
        _cleanup_free_ uint8_t *b = malloc(1U << 20);
        if (!sha || !b || EVP_DigestInit_ex(sha, EVP_sha256(), NULL) != 1) {
                EVP_MD_CTX_free(sha);
                return -ENOMEM;
        }
        int r = 0;
        for (;;) {
                ssize_t k = read(fd, b, 1U << 20);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = -errno;
                        break;
                }
                if (k == 0)
                        break;
                if (EVP_DigestUpdate(sha, b, (size_t) k) != 1) {
                        r = -EIO;
                        break;
                }
        }
        KuraId got;
        unsigned dlen = 0;
        if (r == 0 && (EVP_DigestFinal_ex(sha, got.b, &dlen) != 1 || dlen != KURA_ID_LEN))
                r = -EIO;
        EVP_MD_CTX_free(sha);
        if (r == 0)
                *ret = memcmp(got.b, want->b, KURA_ID_LEN) == 0;
        return r;
}

static int check_one_pack(Checker *ch, size_t i, const char *path) {
        KuraPackEntries *pe = &ch->packs[i];
        _cleanup_free_ KuraIndexEntry *hdr = NULL;
        size_t hn = 0;
        uint64_t size = 0, bytes = 0;
        char obj[80];
        KuraErr lerr = {0};
        int r;

        pack_name(&pe->pack_id, obj);
        for (size_t j = 0; j < pe->n; j++)
                bytes += kura_ie_length(&pe->entries[j]);
        r = kura_pack_read_header(ch->repo, path, &hdr, &hn, &size, &lerr);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj, "%s (the index lists %zu blobs in it)",
                                lerr.message, pe->n);
                if (r < 0)
                        return r;
                progress(ch, bytes);
                return mark_pack_bad(ch, i, (size_t) r);
        }
        ch->rep->packs++;
        ch->rep->blobs += hn;
        if (hn > 1)
                qsort(hdr, hn, sizeof *hdr, cmp_entry_id);

        /* Each index entry must be in the header with the same place and type. */
        size_t mismatched = 0, problem = SIZE_MAX;
        _cleanup_free_ bool *ok = calloc(KURA_MAX(pe->n, (size_t) 1), sizeof *ok);
        if (!ok)
                return -ENOMEM;
        for (size_t j = 0; j < pe->n; j++) {
                const KuraIndexEntry *e = &pe->entries[j];
                const KuraIndexEntry *h = bsearch(e, hdr, hn, sizeof *hdr, cmp_entry_id);
                if (h && h->offset == e->offset && h->type_length == e->type_length) {
                        ok[j] = true;
                        continue;
                }
                if (problem == SIZE_MAX) {
                        r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj,
                                        "%s: its header does not hold blobs the index places in it", obj);
                        if (r < 0)
                                return r;
                        problem = (size_t) r;
                }
                mismatched++;
                if ((r = mark_bad(ch, &e->id, problem)) < 0)
                        return r;
        }
        if (problem != SIZE_MAX) {
                char *m = kura_asprintf("%s: its header does not hold %zu of the %zu blobs the index places in it",
                                        obj, mismatched, pe->n);
                if (m) {
                        free(ch->rep->problems[problem].message);
                        ch->rep->problems[problem].message = m;
                }
        }
        if (hn > pe->n - mismatched) {
                r = add_problem(ch, KURA_PROBLEM_WARNING, KURA_W_LEFTOVER, obj,
                                "%s holds %zu blobs the index does not list (%s)", obj, hn - (pe->n - mismatched),
                                remedy_leftover);
                if (r < 0)
                        return r;
        }
        if (!ch->read_data) {
                progress(ch, bytes);
                return 0;
        }

        bool name_ok = false;
        r = pack_sha256_matches(path, &pe->pack_id, &name_ok);
        if (r == -ENOMEM)
                return r;
        ch->rep->bytes_read += size;
        if (r < 0 || !name_ok) {
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj,
                                "%s is damaged: its contents do not match its name%s", obj,
                                r < 0 ? " (read error)" : "");
                if (r < 0)
                        return r;
        }
        for (size_t j = 0; j < pe->n; j++) {
                const KuraIndexEntry *e = &pe->entries[j];
                size_t len = 0;
                char hex[2 * KURA_ID_LEN + 1];
                progress(ch, kura_ie_length(e));
                if (!ok[j])
                        continue;
                kura_err_clear(&lerr);
                r = kura_repo_read_blob_at(ch->w, path, e, ch->buf, &len, &lerr);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0)
                        continue;
                kura_hex(e->id.b, KURA_ID_LEN, hex);
                _cleanup_free_ char *cobj = kura_asprintf("chunk %s", hex);
                if (!cobj)
                        return -ENOMEM;
                /* read_blob_at's message already names the chunk and the pack. */
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, cobj, "%s%s",
                                kura_ie_type(e) == KURA_BLOB_LIST ? "(chunk list) " : "", lerr.message);
                if (r < 0)
                        return r;
                if ((r = mark_bad(ch, &e->id, (size_t) r)) < 0)
                        return r;
        }
        return 0;
}

static int check_pack_dir(Checker *ch, const char *data_dir, const char *sub) {
        _cleanup_free_ char *dir = kura_path_join(data_dir, sub);
        if (!dir)
                return -ENOMEM;
        DIR *d = opendir(dir);
        if (!d) {
                _cleanup_free_ char *obj = kura_asprintf("data/%s", sub);
                int r = obj ? add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj, "cannot list %s: %s", dir,
                                          strerror(errno))
                            : -ENOMEM;
                return r < 0 ? r : 0;
        }
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                _cleanup_free_ char *rel = kura_asprintf("data/%s", sub);
                if (!rel) {
                        r = -ENOMEM;
                        break;
                }
                if (is_tmp(de->d_name)) {
                        r = warn_tmp(ch, rel, de->d_name);
                        continue;
                }
                if (de->d_name[0] == '.')
                        continue;
                KuraId id;
                ssize_t i = -1;
                if (is_id_hex(de->d_name) && strncmp(de->d_name, sub, 2) == 0 &&
                    kura_unhex(de->d_name, id.b, KURA_ID_LEN) == 0)
                        i = find_pack(ch, &id);
                if (i < 0 || ch->seen[i]) {
                        _cleanup_free_ char *obj = kura_asprintf("pack %s/%s", rel, de->d_name);
                        r = obj ? add_problem(ch, KURA_PROBLEM_WARNING, KURA_W_LEFTOVER, obj,
                                              "%s: pack not indexed (left by an interrupted backup; `kura prune` "
                                              "removes it)", obj)
                                : -ENOMEM;
                        continue;
                }
                ch->seen[i] = true;
                _cleanup_free_ char *path = kura_path_join(dir, de->d_name);
                r = path ? check_one_pack(ch, (size_t) i, path) : -ENOMEM;
        }
        closedir(d);
        return r;
}

static int check_packs(Checker *ch) {
        _cleanup_free_ char *dir = kura_repo_subpath(ch->repo, "data", NULL);
        if (!dir)
                return -ENOMEM;
        DIR *d = opendir(dir);
        if (!d) {
                int r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, "data", "cannot list %s: %s", dir,
                                    strerror(errno));
                return r < 0 ? r : 0;
        }
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (is_tmp(de->d_name))
                        r = warn_tmp(ch, "data", de->d_name);
                else if (strlen(de->d_name) == 2 && kura_is_hex(de->d_name))
                        r = check_pack_dir(ch, dir, de->d_name);
        }
        closedir(d);
        if (r < 0)
                return r;
        /* Packs the index names that are not on disk. */
        for (size_t i = 0; i < ch->npacks; i++) {
                if (ch->seen[i])
                        continue;
                char obj[80];
                uint64_t bytes = 0;
                pack_name(&ch->packs[i].pack_id, obj);
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj,
                                "%s is missing (the index lists %zu blobs in it)", obj, ch->packs[i].n);
                if (r < 0)
                        return r;
                if ((r = mark_pack_bad(ch, i, (size_t) r)) < 0)
                        return r;
                for (size_t j = 0; j < ch->packs[i].n; j++)
                        bytes += kura_ie_length(&ch->packs[i].entries[j]);
                progress(ch, bytes);
        }
        return 0;
}

/* ---- 4. versions ----------------------------------------------------------- */

/* A chunk a version references: is it known bad, or not indexed at all?
 * Returns 1 if it is usable, 0 if not (the version is added to the problem),
 * negative errno on failure. */
static int reference(Checker *ch, const KuraId *id, bool is_list, const char *vid, KuraIndexEntry *ret) {
        KuraIndexEntry e;
        int r;
        if (kura_index_lookup(ch->bad, id, &e))
                return problem_add_version(ch, e.offset, vid);
        if (kura_index_lookup(ch->idx, id, ret))
                return 1;

        char hex[2 * KURA_ID_LEN + 1];
        kura_hex(id->b, KURA_ID_LEN, hex);
        size_t pn;
        if (ch->nchunk_problems < CHECK_MAX_CHUNK_PROBLEMS) {
                _cleanup_free_ char *obj = kura_asprintf("chunk %s", hex);
                if (!obj)
                        return -ENOMEM;
                r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj,
                                "%s %s is not in the index (its pack or index file is lost)",
                                is_list ? "chunk list" : "chunk", hex);
                if (r < 0)
                        return r;
                ch->nchunk_problems++;
                pn = (size_t) r;
        } else {
                if (ch->overflow_problem == SIZE_MAX) {
                        r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, "chunks",
                                        "more chunks are not in the index");
                        if (r < 0)
                                return r;
                        ch->overflow_problem = (size_t) r;
                }
                ch->overflow_count++;
                pn = ch->overflow_problem;
        }
        if ((r = mark_bad(ch, id, pn)) < 0)
                return r;
        return problem_add_version(ch, pn, vid);
}

static int check_volume(Checker *ch, const KuraVersion *v, const KuraVolume *vol) {
        uint64_t seen = 0;
        int r;
        for (size_t l = 0; l < vol->nlists; l++) {
                KuraIndexEntry e;
                r = reference(ch, &vol->lists[l], true, v->id, &e);
                if (r <= 0) {
                        if (r < 0)
                                return r;
                        /* Unknown content: skip the chunks this list would name. */
                        seen += KURA_LIST_MAX_IDS;
                        continue;
                }
                _cleanup_free_ char *path = kura_repo_pack_path(ch->repo, &ch->packs[e.pack].pack_id);
                _cleanup_free_ KuraId *ids = NULL;
                KuraErr lerr = {0};
                size_t len = 0, n = 0;
                char hex[2 * KURA_ID_LEN + 1];
                if (!path)
                        return -ENOMEM;
                kura_hex(vol->lists[l].b, KURA_ID_LEN, hex);
                r = kura_repo_read_blob_at(ch->w, path, &e, ch->buf, &len, &lerr);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0) {
                        r = kura_list_decode(ch->buf, len, &ids, &n);
                        if (r == -ENOMEM)
                                return r;
                        uint64_t want = vol->nchunks > seen ? KURA_MIN((uint64_t) KURA_LIST_MAX_IDS,
                                                                       vol->nchunks - seen)
                                                            : 0;
                        if (r < 0 || n != want)
                                snprintf(lerr.message, sizeof lerr.message, "malformed (%zu IDs, %llu expected)",
                                         n, (unsigned long long) want);
                }
                if (r < 0 || lerr.message[0]) {
                        _cleanup_free_ char *obj = kura_asprintf("chunk %s", hex);
                        if (!obj)
                                return -ENOMEM;
                        r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj,
                                        "chunk list %s of volume %s is unreadable: %s", hex, vol->name,
                                        lerr.message);
                        if (r < 0)
                                return r;
                        size_t pn = (size_t) r;
                        if ((r = mark_bad(ch, &vol->lists[l], pn)) < 0 ||
                            (r = problem_add_version(ch, pn, v->id)) < 0)
                                return r;
                        seen += KURA_LIST_MAX_IDS;
                        continue;
                }
                seen += n;
                for (size_t j = 0; j < n; j++) {
                        if (kura_id_is_zero(&ids[j]) || kura_id_is_free(&ids[j]))
                                continue;
                        KuraIndexEntry de;
                        r = reference(ch, &ids[j], false, v->id, &de);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int check_versions(Checker *ch) {
        _cleanup_free_ char *dir = kura_repo_subpath(ch->repo, "versions", NULL);
        if (!dir)
                return -ENOMEM;
        DIR *d = opendir(dir);
        if (!d) {
                int r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, "versions", "cannot list %s: %s", dir,
                                    strerror(errno));
                return r < 0 ? r : 0;
        }
        /* Collect the names first: checking takes long, and readdir order is arbitrary. */
        char **names = NULL;
        size_t n = 0;
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (is_tmp(de->d_name)) {
                        r = warn_tmp(ch, "versions", de->d_name);
                        continue;
                }
                if (de->d_name[0] == '.')
                        continue;
                char **nn = reallocarray(names, n + 1, sizeof *nn);
                if (!nn) {
                        r = -ENOMEM;
                        break;
                }
                names = nn;
                if (!(names[n] = strdup(de->d_name))) {
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        closedir(d);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                KuraVersion *v = NULL;
                KuraErr lerr = {0};
                _cleanup_free_ char *obj = kura_asprintf("version %s", names[i]);
                if (!obj) {
                        r = -ENOMEM;
                        break;
                }
                r = kura_version_load(ch->repo, names[i], &v, &lerr);
                if (r == -ENOMEM)
                        break;
                if (r == -ENOENT) { /* forgotten meanwhile */
                        r = 0;
                        continue;
                }
                if (r < 0) {
                        r = add_problem(ch, KURA_PROBLEM_ERROR, KURA_E_DAMAGED, obj, "%s", lerr.message);
                        if (r >= 0)
                                r = problem_add_version(ch, (size_t) r, names[i]);
                        continue;
                }
                ch->rep->versions++;
                for (size_t k = 0; r >= 0 && k < v->nvolumes; k++)
                        r = check_volume(ch, v, &v->volumes[k]);
                kura_version_free(v);
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        if (r < 0)
                return r;
        if (ch->overflow_problem != SIZE_MAX) {
                char *m = kura_asprintf("%llu more chunks are not in the index (their packs or index files are lost)",
                                        (unsigned long long) ch->overflow_count);
                if (m) {
                        free(ch->rep->problems[ch->overflow_problem].message);
                        ch->rep->problems[ch->overflow_problem].message = m;
                }
        }
        return 0;
}

/* ---- entry point ---------------------------------------------------------- */

int kura_repo_check(KuraRepo *repo, bool read_data, KuraProgressFn progress_fn, void *userdata,
                    KuraCheckReport **ret, KuraErr *err) {
        Checker ch = {
                .repo = repo,
                .read_data = read_data,
                .overflow_problem = SIZE_MAX,
                .progress = progress_fn,
                .userdata = userdata,
        };
        int r;

        ch.rep = calloc(1, sizeof *ch.rep);
        ch.buf = malloc(KURA_BLOB_MAX);
        if (!ch.rep || !ch.buf) {
                r = -ENOMEM;
                goto finish;
        }
        if ((r = kura_index_new(&ch.idx)) < 0 || (r = kura_index_new(&ch.bad)) < 0)
                goto finish;
        r = kura_repo_worker_new(repo, &ch.w);
        if (r < 0)
                goto finish;
        if ((r = check_config(&ch)) < 0 || (r = check_keys(&ch)) < 0 || (r = check_index_files(&ch)) < 0 ||
            (r = check_packs(&ch)) < 0 || (r = check_versions(&ch)) < 0)
                goto finish;
        if (ch.progress)
                ch.progress(ch.userdata, ch.total, ch.total);
        *ret = TAKE_PTR(ch.rep);
        r = 0;
finish:
        if (r < 0)
                kura_err_errno(err, r, r == -ENOMEM ? KURA_E_NO_MEMORY : KURA_E_REPO_IO, "",
                               "the check of %s could not run", repo->path);
        kura_check_report_free(ch.rep);
        kura_repo_worker_free(ch.w);
        kura_index_free(ch.idx);
        kura_index_free(ch.bad);
        kura_pack_entries_free(ch.packs, ch.npacks);
        free(ch.seen);
        free(ch.buf);
        return r;
}
