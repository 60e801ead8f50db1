/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The chunk store: IDs, sealing, put/get of blobs, flush, loading the index.
 *
 * Threading (see also repo-internal.h):
 *   - A KuraRepoWorker belongs to one thread.  It owns the hasher, sealer,
 *     zstd contexts and two buffers sized for the largest blob, so put and
 *     get never allocate.
 *   - repo->index_lock guards the in-memory index (lookups are a hash probe
 *     plus a short binary search, so the lock is held for well under a
 *     microsecond).
 *   - repo->pack_lock guards the open pack and session_packs; writes to the
 *     pack happen under it (they are serial anyway).
 *   - Lock order: pack_lock, then index_lock.  Never take pack_lock while
 *     holding index_lock.
 *   - put reserves the ID (kura_index_reserve) under index_lock before the
 *     expensive compress + seal, so two threads never store the same blob;
 *     the entry is added, and the reservation dropped, once the blob is in
 *     the pack.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <zstd.h>

#include "repo-internal.h"

const KuraId KURA_ID_ZERO = {{0}};
const KuraId KURA_ID_FREE = {{
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
}};

bool kura_id_is_zero(const KuraId *id) { return memcmp(id->b, KURA_ID_ZERO.b, KURA_ID_LEN) == 0; }
bool kura_id_is_free(const KuraId *id) { return memcmp(id->b, KURA_ID_FREE.b, KURA_ID_LEN) == 0; }
void kura_id_hex(const KuraId *id, char out[2 * KURA_ID_LEN + 1]) { kura_hex(id->b, KURA_ID_LEN, out); }
int kura_id_from_hex(const char *s, KuraId *ret) { return kura_unhex(s, ret->b, KURA_ID_LEN); }

struct KuraRepoWorker {
        KuraRepo *repo;
        KuraHasher *hasher;
        KuraSealer *sealer;
        ZSTD_CCtx *cctx;
        ZSTD_DCtx *dctx;
        uint8_t *pbuf;                /* payload comp(1) ‖ body: KURA_BLOB_MAX + 1 */
        uint8_t *sbuf;                /* sealed blob: KURA_SEALED_BLOB_MAX */
        /* the last pack read from (packs are immutable, so an open fd stays right) */
        int cache_fd;
        char *cache_path;
        KuraId cache_id;
        bool cache_id_valid;
};

/* ---- paths -------------------------------------------------------------- */

char *kura_repo_subpath(const KuraRepo *repo, const char *sub, const char *name) {
        if (name)
                return kura_asprintf("%s/%s/%s", repo->path, sub, name);
        return kura_asprintf("%s/%s", repo->path, sub);
}

char *kura_repo_pack_path(const KuraRepo *repo, const KuraId *pack_id) {
        char hex[2 * KURA_ID_LEN + 1];
        kura_id_hex(pack_id, hex);
        return kura_asprintf("%s/data/%.2s/%s", repo->path, hex, hex);
}

/* ---- metadata sealing ----------------------------------------------------- */

int kura_repo_seal(KuraRepo *repo, const char *ctx, const void *pt, size_t n, KuraBuf *out) {
        pthread_mutex_lock(&repo->meta_lock);
        size_t over = kura_seal_overhead(repo->meta_sealer);
        int r = kura_buf_reserve(out, n + over);
        if (r >= 0)
                r = kura_seal(repo->meta_sealer, ctx, strlen(ctx) + 1, pt, n, out->data + out->len);
        if (r >= 0)
                out->len += n + over;
        pthread_mutex_unlock(&repo->meta_lock);
        return r < 0 ? r : 0;
}

int kura_repo_unseal(KuraRepo *repo, const char *ctx, const uint8_t *in, size_t n, KuraBuf *out) {
        pthread_mutex_lock(&repo->meta_lock);
        size_t over = kura_seal_overhead(repo->meta_sealer), len = 0;
        int r = n < over ? KURA_CORRUPT() : kura_buf_reserve(out, n - over + 1);
        if (r >= 0)
                r = kura_unseal(repo->meta_sealer, ctx, strlen(ctx) + 1, in, n, out->data + out->len, &len);
        if (r >= 0)
                out->len += len;
        pthread_mutex_unlock(&repo->meta_lock);
        return r < 0 ? r : 0;
}

int kura_repo_write_object(KuraRepo *repo, const char *subdir, const void *bytes, size_t n, KuraId *ret_id) {
        KuraId id;
        char hex[2 * KURA_ID_LEN + 1];
        int r = kura_sha256(bytes, n, id.b);
        if (r < 0)
                return r;
        kura_id_hex(&id, hex);
        _cleanup_free_ char *path = kura_repo_subpath(repo, subdir, hex);
        if (!path)
                return -ENOMEM;
        r = kio_write_file(path, bytes, n);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = id;
        return 0;
}

/* ---- workers ----------------------------------------------------------- */

KuraRepoWorker *kura_repo_worker_free(KuraRepoWorker *w) {
        if (!w)
                return NULL;
        kura_hasher_free(w->hasher);
        kura_sealer_free(w->sealer);
        ZSTD_freeCCtx(w->cctx);
        ZSTD_freeDCtx(w->dctx);
        /* buffers held plaintext of the repository's data */
        kura_free_secret(w->pbuf, KURA_BLOB_MAX + 1);
        free(w->sbuf);
        if (w->cache_fd >= 0)
                close(w->cache_fd);
        free(w->cache_path);
        free(w);
        return NULL;
}

int kura_repo_worker_new(KuraRepo *repo, KuraRepoWorker **ret) {
        KuraRepoWorker *w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->repo = repo;
        w->cache_fd = -1;
        int r = kura_hasher_new(repo->encrypted ? repo->mk.id : NULL, &w->hasher);
        if (r >= 0)
                r = kura_sealer_new(repo->encrypted ? repo->mk.enc : NULL, &w->sealer);
        if (r < 0) {
                kura_repo_worker_free(w);
                return r;
        }
        w->cctx = ZSTD_createCCtx();
        w->dctx = ZSTD_createDCtx();
        w->pbuf = malloc(KURA_BLOB_MAX + 1);
        w->sbuf = malloc(KURA_SEALED_BLOB_MAX);
        if (!w->cctx || !w->dctx || !w->pbuf || !w->sbuf) {
                kura_repo_worker_free(w);
                return -ENOMEM;
        }
        if (ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, repo->zstd_level)) ||
            ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_contentSizeFlag, 1))) {
                kura_repo_worker_free(w);
                return -EINVAL;
        }
        *ret = w;
        return 0;
}

/* ---- blobs -------------------------------------------------------------- */

int kura_repo_hash(KuraRepoWorker *w, const void *data, size_t len, KuraId *ret) {
        return kura_hasher_digest(w->hasher, data, len, ret->b);
}

bool kura_repo_has(KuraRepo *repo, const KuraId *id) {
        pthread_mutex_lock(&repo->index_lock);
        bool r = kura_index_lookup(repo->index, id, NULL) || kura_index_inflight(repo->index, id);
        pthread_mutex_unlock(&repo->index_lock);
        return r;
}

static size_t blob_aad(uint8_t aad[64], uint8_t type, const KuraId *id) {
        static const char ctx[] = KURA_AAD_BLOB; /* sizeof includes the NUL */
        memcpy(aad, ctx, sizeof ctx);
        aad[sizeof ctx] = type;
        memcpy(aad + sizeof ctx + 1, id->b, KURA_ID_LEN);
        return sizeof ctx + 1 + KURA_ID_LEN;
}

/* Whether a blob looks incompressible (random, encrypted or already
 * compressed data), from the byte histogram of four 4 KiB windows spread
 * over it: true when the byte values are within 10 % of uniformly
 * distributed (sum of squared counts against its expectation for random
 * bytes).  Costs ~20 us a MiB against ~0.7 ms for zstd -1 to find out the
 * same on random data; on our test images it agrees with zstd on every
 * chunk zstd stores raw, and flags ~1 % more that zstd shrinks by a few
 * percent.  Text, binaries and file system metadata are far from uniform
 * (base64 text: 4x the threshold), as is a blob with one low-entropy window. */
#define PROBE_MIN (64U << 10)
#define PROBE_WIN 4096U
static bool looks_incompressible(const uint8_t *p, size_t len) {
        if (len < PROBE_MIN)
                return false;
        uint32_t h[256] = {0};
        for (unsigned k = 0; k < 4; k++) {
                const uint8_t *q = p + (len - PROBE_WIN) / 3 * k;
                for (size_t i = 0; i < PROBE_WIN; i++)
                        h[q[i]]++;
        }
        uint64_t n = 4 * PROBE_WIN, sq = 0;
        for (unsigned i = 0; i < 256; i++)
                sq += (uint64_t) h[i] * h[i];
        /* E[sq] for uniform bytes = n + n(n-1)/256 */
        return sq * 256 <= n * n * 11 / 10 + n * 256;
}

/* Compress (or not) and seal into w->sbuf; returns the sealed length. */
static int seal_blob(KuraRepoWorker *w, KuraBlobType type, const KuraId *id, const void *data, size_t len,
                     size_t *ret_len) {
        size_t plen = 0;
        if (len > 1 && !looks_incompressible(data, len)) {
                /* Give zstd only len - 1 bytes of room: if it does not fit, it does
                 * not shrink the blob and we store it raw. */
                size_t c = ZSTD_compress2(w->cctx, w->pbuf + 1, len - 1, data, len);
                if (!ZSTD_isError(c) && c < len) {
                        w->pbuf[0] = 1;
                        plen = 1 + c;
                }
        }
        uint8_t aad[64];
        size_t alen = blob_aad(aad, (uint8_t) type, id);
        int r;
        if (plen == 0) {
                /* raw: seal comp byte ‖ data without copying data next to it */
                static const uint8_t raw = 0;
                plen = 1 + len;
                r = kura_seal2(w->sealer, aad, alen, &raw, 1, data, len, w->sbuf);
        } else {
                r = kura_seal(w->sealer, aad, alen, w->pbuf, plen, w->sbuf);
        }
        if (r < 0)
                return r;
        *ret_len = plen + kura_seal_overhead(w->sealer);
        return 0;
}

int kura_repo_put(KuraRepoWorker *w, KuraBlobType type, const KuraId *id, const void *data, size_t len,
                  uint64_t *ret_stored, KuraErr *err) {
        KuraRepo *repo = w->repo;
        char hex[2 * KURA_ID_LEN + 1];
        if (len > KURA_BLOB_MAX || (type != KURA_BLOB_DATA && type != KURA_BLOB_LIST) || kura_id_is_zero(id) ||
            kura_id_is_free(id))
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "invalid blob (type %d, %zu bytes)", (int) type, len);

        pthread_mutex_lock(&repo->index_lock);
        int r = kura_index_reserve(repo->index, id);
        pthread_mutex_unlock(&repo->index_lock);
        if (r < 0)
                return kura_err(err, -r, KURA_E_NO_MEMORY, "", "cannot grow the index");
        if (r == 0) {
                if (ret_stored)
                        *ret_stored = 0;
                return 0;
        }

        size_t slen = 0;
        r = seal_blob(w, type, id, data, len, &slen);
        if (r < 0) {
                kura_id_hex(id, hex);
                r = kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot seal chunk %s", hex);
                goto unreserve;
        }

        pthread_mutex_lock(&repo->pack_lock);
        if (!repo->pw) {
                r = kura_pack_writer_new(repo, &repo->pw, err);
                if (r < 0) {
                        repo->pw = NULL;
                        pthread_mutex_unlock(&repo->pack_lock);
                        goto unreserve;
                }
        }
        uint32_t off;
        r = kura_pack_writer_append(repo->pw, type, id, w->sbuf, slen, &off, err);
        if (r < 0) {
                /* A partly written blob would shift every later offset: give up
                 * the whole open pack (its blobs leave the index too). */
                kura_pack_writer_abort(repo, TAKE_PTR(repo->pw));
                pthread_mutex_unlock(&repo->pack_lock);
                goto unreserve;
        }
        KuraIndexEntry e = {
                .id = *id,
                .pack = kura_pack_writer_number(repo->pw),
                .offset = off,
                .type_length = kura_ie_pack_tl((uint8_t) type, (uint32_t) slen),
        };
        pthread_mutex_lock(&repo->index_lock);
        r = kura_index_add(repo->index, &e);
        kura_index_unreserve(repo->index, id);
        pthread_mutex_unlock(&repo->index_lock);
        if (r < 0) {
                kura_pack_writer_abort(repo, TAKE_PTR(repo->pw));
                pthread_mutex_unlock(&repo->pack_lock);
                return kura_err(err, -r, KURA_E_NO_MEMORY, "", "cannot grow the index");
        }
        if (kura_pack_writer_size(repo->pw) >= KURA_PACK_TARGET_SIZE)
                r = kura_pack_writer_finish(repo, TAKE_PTR(repo->pw), err);
        pthread_mutex_unlock(&repo->pack_lock);
        if (r < 0)
                return r;
        if (ret_stored)
                *ret_stored = slen;
        return 1;

unreserve:
        pthread_mutex_lock(&repo->index_lock);
        kura_index_unreserve(repo->index, id);
        pthread_mutex_unlock(&repo->index_lock);
        return r;
}

/* Read the blob e from fd, unseal, decompress into buf, verify its ID.
 * what names the pack in messages.  On any failure buf holds no blob bytes. */
static int read_blob_fd(KuraRepoWorker *w, int fd, const char *what, const KuraIndexEntry *e, void *buf,
                        size_t *ret_len, KuraErr *err) {
        char hex[2 * KURA_ID_LEN + 1];
        const char *remedy = "run `kura check --read-data` to see which versions are affected";
        const char *why;
        uint32_t slen = kura_ie_length(e);
        uint8_t type = kura_ie_type(e);
        size_t over = kura_seal_overhead(w->sealer), plen = 0, n = 0;
        kura_id_hex(&e->id, hex);

        if (slen > KURA_SEALED_BLOB_MAX || slen < over + 1) {
                why = "its length in the index is impossible";
                goto corrupt;
        }
        int r = kio_pread_full(fd, w->sbuf, slen, e->offset);
        if (r == -EBADMSG) {
                why = "the pack is shorter than the index says";
                goto corrupt;
        }
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_REPO_IO, "check the repository's storage",
                                      "cannot read chunk %s from pack %s", hex, what);
        uint8_t aad[64];
        size_t alen = blob_aad(aad, type, &e->id);
        if (kura_unseal(w->sealer, aad, alen, w->sbuf, slen, w->pbuf, &plen) < 0 || plen < 1) {
                why = "it does not authenticate (altered or damaged bytes)";
                goto corrupt;
        }
        const uint8_t *body = w->pbuf + 1;
        size_t blen = plen - 1;
        if (w->pbuf[0] == 0) {
                if (blen > KURA_BLOB_MAX) {
                        why = "it is too large";
                        goto corrupt;
                }
                memcpy(buf, body, blen);
                n = blen;
        } else if (w->pbuf[0] == 1) {
                unsigned long long fcs = ZSTD_getFrameContentSize(body, blen);
                if (fcs == ZSTD_CONTENTSIZE_UNKNOWN || fcs == ZSTD_CONTENTSIZE_ERROR || fcs > KURA_BLOB_MAX ||
                    ZSTD_findFrameCompressedSize(body, blen) != blen) {
                        why = "its zstd frame is malformed";
                        goto corrupt;
                }
                size_t d = ZSTD_decompressDCtx(w->dctx, buf, (size_t) fcs, body, blen);
                if (ZSTD_isError(d) || d != fcs) {
                        kura_memzero(buf, (size_t) fcs);
                        why = "it does not decompress";
                        goto corrupt;
                }
                n = d;
        } else {
                why = "its compression byte is unknown";
                goto corrupt;
        }
        KuraId got;
        r = kura_hasher_digest(w->hasher, buf, n, got.b);
        if (r < 0) {
                kura_memzero(buf, n);
                return kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot hash chunk %s", hex);
        }
        if (memcmp(got.b, e->id.b, KURA_ID_LEN) != 0) {
                kura_memzero(buf, n);
                why = "its content does not match its ID";
                goto corrupt;
        }
        *ret_len = n;
        return 0;
corrupt:
        (void) KURA_CORRUPT();
        return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy, "chunk %s in pack %s is damaged: %s", hex, what, why);
}

static int worker_open(KuraRepoWorker *w, const char *path, KuraErr *err) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                int r = -errno;
                if (r == -ENOENT)
                        return kura_err(err, EBADMSG, KURA_E_DAMAGED,
                                        "run `kura check` to see which versions are affected",
                                        "pack %s is missing", path);
                return kura_err_errno(err, r, KURA_E_REPO_IO, "check the repository's storage",
                                      "cannot open pack %s", path);
        }
        char *p = strdup(path);
        if (!p) {
                close(fd);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "opening pack %s", path);
        }
        if (w->cache_fd >= 0)
                close(w->cache_fd);
        free(w->cache_path);
        w->cache_fd = fd;
        w->cache_path = p;
        w->cache_id_valid = false;
        return 0;
}

int kura_repo_read_blob_at(KuraRepoWorker *w, const char *pack_path, const KuraIndexEntry *e, void *buf,
                           size_t *ret_len, KuraErr *err) {
        if (w->cache_fd < 0 || !w->cache_path || strcmp(w->cache_path, pack_path) != 0) {
                int r = worker_open(w, pack_path, err);
                if (r < 0)
                        return r;
        }
        return read_blob_fd(w, w->cache_fd, pack_path, e, buf, ret_len, err);
}

/* Make the worker's cached fd the pack pack_id (opened unless it is already). */
static int worker_use_pack(KuraRepoWorker *w, const KuraId *pack_id, KuraErr *err) {
        if (w->cache_id_valid && memcmp(w->cache_id.b, pack_id->b, KURA_ID_LEN) == 0)
                return 0;
        _cleanup_free_ char *path = kura_repo_pack_path(w->repo, pack_id);
        if (!path)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "reading a chunk");
        int r = worker_open(w, path, err);
        if (r < 0)
                return r;
        w->cache_id = *pack_id;
        w->cache_id_valid = true;
        return 0;
}

void kura_repo_prefetch(KuraRepoWorker *w, const KuraId *id) {
        KuraRepo *repo = w->repo;
        KuraIndexEntry e;
        KuraId pack_id;
        bool ok = false;
        pthread_mutex_lock(&repo->index_lock);
        if (kura_index_lookup(repo->index, id, &e)) {
                const KuraId *p = kura_index_pack_id(repo->index, e.pack);
                if (p) {
                        pack_id = *p;
                        ok = true;
                }
        }
        pthread_mutex_unlock(&repo->index_lock);
        if (!ok)
                return;
        if (worker_use_pack(w, &pack_id, NULL) < 0)
                return;
        (void) posix_fadvise(w->cache_fd, (off_t) e.offset, (off_t) kura_ie_length(&e), POSIX_FADV_WILLNEED);
}

int kura_repo_get(KuraRepoWorker *w, const KuraId *id, void *buf, size_t *ret_len, KuraErr *err) {
        KuraRepo *repo = w->repo;
        char hex[2 * KURA_ID_LEN + 1];
        for (int attempt = 0; attempt < 2; attempt++) {
                KuraIndexEntry e;
                KuraId pack_id;
                bool found, pending = false;
                pthread_mutex_lock(&repo->index_lock);
                found = kura_index_lookup(repo->index, id, &e);
                if (found) {
                        const KuraId *p = kura_index_pack_id(repo->index, e.pack);
                        pending = !p;
                        if (p)
                                pack_id = *p;
                }
                pthread_mutex_unlock(&repo->index_lock);
                if (!found)
                        break;
                if (!pending) {
                        int r = worker_use_pack(w, &pack_id, err);
                        if (r < 0)
                                return r;
                        return read_blob_fd(w, w->cache_fd, w->cache_path, &e, buf, ret_len, err);
                }
                /* The blob is in the pack being written in this session: read it
                 * from the temporary file, holding pack_lock so that it is not
                 * committed under us.  If it was committed meanwhile, look again. */
                pthread_mutex_lock(&repo->pack_lock);
                if (repo->pw && kura_pack_writer_number(repo->pw) == e.pack) {
                        int fd = kura_pack_writer_read_fd(repo->pw);
                        int r = fd < 0 ? kura_err_errno(err, fd, KURA_E_REPO_IO, "", "cannot read the pack being written")
                                       : read_blob_fd(w, fd, "(being written)", &e, buf, ret_len, err);
                        pthread_mutex_unlock(&repo->pack_lock);
                        return r;
                }
                pthread_mutex_unlock(&repo->pack_lock);
        }
        kura_id_hex(id, hex);
        return kura_err(err, ENOENT, KURA_E_DAMAGED, "run `kura check` to see which versions are affected",
                        "chunk %s is not in the index", hex);
}

/* ---- flush ---------------------------------------------------------------- */

int kura_repo_flush(KuraRepo *repo, KuraErr *err) {
        int r = 0;
        pthread_mutex_lock(&repo->pack_lock);
        if (repo->pw) {
                if (kura_pack_writer_count(repo->pw) > 0)
                        r = kura_pack_writer_finish(repo, TAKE_PTR(repo->pw), err);
                else
                        kura_pack_writer_abort(repo, TAKE_PTR(repo->pw));
        }
        if (r >= 0 && repo->nsession_packs > 0) {
                KuraBuf pt = {0}, sealed = {0};
                KuraId iid;
                char hex[2 * KURA_ID_LEN + 1];
                r = kura_index_file_encode(repo->session_packs, repo->nsession_packs, &pt);
                if (r >= 0)
                        r = kura_repo_seal(repo, KURA_AAD_INDEX, pt.data, pt.len, &sealed);
                kura_buf_free(&pt);
                if (r < 0) {
                        r = kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot build an index file");
                } else {
                        r = kura_repo_write_object(repo, "index", sealed.data, sealed.len, &iid);
                        if (r < 0)
                                r = kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                                   "free space in the repository, then run the backup again",
                                                   "cannot write an index file in %s/index", repo->path);
                }
                kura_buf_free(&sealed);
                if (r >= 0) {
                        kura_id_hex(&iid, hex);
                        char **nf = realloc(repo->index_files, (repo->nindex_files + 1) * sizeof *nf);
                        char *name = strdup(hex);
                        if (nf)
                                repo->index_files = nf;
                        if (nf && name) {
                                repo->index_files[repo->nindex_files++] = name;
                        } else {
                                free(name);
                                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "after writing index file %s", hex);
                        }
                        /* the index file is durable either way: the packs are done */
                        kura_pack_entries_free(repo->session_packs, repo->nsession_packs);
                        repo->session_packs = NULL;
                        repo->nsession_packs = 0;
                }
        }
        pthread_mutex_unlock(&repo->pack_lock);
        return r < 0 ? r : 0;
}

/* ---- loading the index ----------------------------------------------------- */

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *) a, *(char *const *) b); }

static void strv_free(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

/* Read, verify against its name, unseal and decode one index file. */
static int load_index_file(KuraRepo *repo, const char *name, KuraPackEntries **ret, size_t *ret_n) {
        _cleanup_free_ char *path = kura_repo_subpath(repo, "index", name);
        if (!path)
                return -ENOMEM;
        _cleanup_free_ uint8_t *data = NULL;
        size_t n;
        int r = kio_read_file(path, KURA_META_MAX, &data, &n);
        if (r == -EFBIG)
                return KURA_CORRUPT();
        if (r < 0)
                return r;
        KuraId want, got;
        if (kura_id_from_hex(name, &want) < 0)
                return KURA_CORRUPT();
        r = kura_sha256(data, n, got.b);
        if (r < 0)
                return r;
        if (memcmp(want.b, got.b, KURA_ID_LEN) != 0)
                return KURA_CORRUPT();
        KuraBuf pt = {0};
        r = kura_repo_unseal(repo, KURA_AAD_INDEX, data, n, &pt);
        if (r >= 0)
                r = kura_index_file_decode(pt.data, pt.len, ret, ret_n);
        kura_buf_free(&pt);
        return r;
}

int kura_repo_load_index(KuraRepo *repo, bool tolerant, size_t *ret_bad, KuraErr *err) {
        _cleanup_free_ char *dir = kura_repo_subpath(repo, "index", NULL);
        if (!dir)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "loading the index");
        DIR *d = opendir(dir);
        if (!d)
                return kura_err_errno(err, -errno, KURA_E_REPO_IO, "check that the repository is readable",
                                      "cannot read %s", dir);
        char **names = NULL;
        size_t nnames = 0, bad = 0;
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                /* only <64 hex> names are index files; .tmp-* are unfinished writes */
                if (strlen(de->d_name) != 2 * KURA_ID_LEN || !kura_is_hex(de->d_name))
                        continue;
                char **nv = realloc(names, (nnames + 1) * sizeof *nv);
                if (!nv) {
                        r = -ENOMEM;
                        break;
                }
                names = nv;
                if (!(names[nnames] = strdup(de->d_name))) {
                        r = -ENOMEM;
                        break;
                }
                nnames++;
        }
        closedir(d);
        if (r < 0) {
                strv_free(names, nnames);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "loading the index");
        }
        if (nnames)
                qsort(names, nnames, sizeof *names, name_cmp);

        KuraIndex *idx = NULL;
        r = kura_index_new(&idx);
        if (r < 0) {
                strv_free(names, nnames);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "loading the index");
        }
        size_t kept = 0;
        for (size_t i = 0; i < nnames; i++) {
                KuraPackEntries *packs = NULL;
                size_t npacks = 0;
                r = load_index_file(repo, names[i], &packs, &npacks);
                if (r == -EPROTONOSUPPORT) {
                        r = kura_err(err, EPROTONOSUPPORT, KURA_E_REPO_VERSION, "upgrade kura",
                                     "index file %s/%s has a newer format", dir, names[i]);
                        break;
                }
                if (r == -ENOMEM) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "loading the index");
                        break;
                }
                if (r < 0) {
                        if (!tolerant) {
                                r = kura_err_errno(err, r, KURA_E_DAMAGED,
                                                   "run `kura check` to see which versions are affected",
                                                   "index file %s/%s is unreadable", dir, names[i]);
                                break;
                        }
                        bad++;
                        free(names[i]);
                        names[i] = NULL;
                        r = 0;
                        continue;
                }
                for (size_t j = 0; r >= 0 && j < npacks; j++)
                        r = kura_index_add_bulk(idx, &packs[j]);
                kura_pack_entries_free(packs, npacks);
                if (r < 0) {
                        r = kura_err_errno(err, r, KURA_E_NO_MEMORY, "", "loading the index");
                        break;
                }
                names[kept++] = names[i];
                if (kept - 1 != i)
                        names[i] = NULL;
        }
        if (r >= 0) {
                r = kura_index_finish_bulk(idx);
                if (r < 0)
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "loading the index");
        }
        if (r < 0) {
                kura_index_free(idx);
                strv_free(names, nnames);
                return r;
        }
        pthread_mutex_lock(&repo->index_lock);
        KuraIndex *old = repo->index;
        repo->index = idx;
        pthread_mutex_unlock(&repo->index_lock);
        kura_index_free(old);
        strv_free(repo->index_files, repo->nindex_files);
        repo->index_files = names;
        repo->nindex_files = kept;
        if (ret_bad)
                *ret_bad = bad;
        return 0;
}
