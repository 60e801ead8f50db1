/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * `kura prune`: delete the blobs no version references.
 *
 * Algorithm:
 *   1. read every index file (all must be readable: an index file we could
 *      not read would be deleted below, and with it our knowledge of which
 *      packs hold live blobs);
 *   2. collect every ID the versions reference (list blobs and their data
 *      chunks; every manifest must be readable for the same reason);
 *   3. classify each indexed pack: all blobs used -> keep; none used ->
 *      delete; some used -> repack (copy the used blobs that no kept pack
 *      holds into new packs, then delete it);
 *   4. crash-safe order (§9): new packs (fsync'd) -> one or more new index
 *      files naming every kept and new pack -> delete the old index files ->
 *      delete obsolete packs -> remove leftovers (.tmp-* files and packs
 *      that no index file names).
 * At any interruption every blob a version needs is named by some index file
 * and present in the pack it names: before the new index files exist the old
 * ones and old packs are untouched; afterwards the new ones cover everything
 * kept, and old packs are merely unindexed leftovers that the next prune
 * removes.  A blob may meanwhile be in two packs, which §6 allows.
 *
 * Blobs are copied as their sealed bytes: the seal binds type and chunk ID,
 * not the position, so a copied blob stays valid without re-encryption.
 * Each one is still unsealed and its ID recomputed before it is copied, so
 * prune never carries damage into a fresh pack whose name would vouch for it.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "repo/repo-internal.h"

/* Entries per new index file (41 bytes each: about 40 MiB, well under KURA_META_MAX). */
#define PRUNE_INDEX_FILE_ENTRIES (1U << 20)

enum { PACK_KEEP, PACK_DELETE, PACK_REPACK };

static const char *const remedy_check = "run `kura check` and repair the repository before pruning";
static const char *const remedy_write = "check free space and permissions of the repository, then run "
                                        "`kura prune` again (an interrupted prune loses nothing)";

typedef struct Pruner {
        KuraRepo *repo;
        KuraErr *err;
        KuraRepoWorker *w;
        char **index_names;            /* the index files read in step 1 */
        size_t nindex_names;
        KuraPackEntries *packs;        /* union of the index files, sorted by pack ID */
        size_t npacks;
        uint8_t *action;               /* PACK_* per packs[i] */
        KuraIndex *used;               /* IDs some version references */
        KuraIndex *have;               /* IDs present in kept or new packs */
        KuraPackEntries *newp;         /* packs written by this prune */
        size_t nnew;
        uint64_t new_bytes;
        /* the pack being built */
        KuraBuf cur;
        KuraIndexEntry *cur_e;
        size_t cur_n, cur_cap;
        uint8_t *buf;                  /* KURA_BLOB_MAX, for verification */
        KuraPruneStats st;
} Pruner;

static bool is_id_hex(const char *s) {
        if (strlen(s) != 2 * KURA_ID_LEN)
                return false;
        for (; *s; s++)
                if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
                        return false;
        return true;
}

static bool is_tmp(const char *name) { return strncmp(name, ".tmp-", 5) == 0; }

static int cmp_pack(const void *a, const void *b) {
        return memcmp(((const KuraPackEntries *) a)->pack_id.b, ((const KuraPackEntries *) b)->pack_id.b,
                      KURA_ID_LEN);
}

static int nomem(Pruner *p) { return kura_err(p->err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory while pruning"); }

/* ---- 1. index files -------------------------------------------------------- */

static int read_index_file(Pruner *p, const char *dir, const char *name) {
        _cleanup_free_ char *path = kura_path_join(dir, name);
        _cleanup_free_ uint8_t *data = NULL;
        KuraBuf pt = {0};
        uint8_t digest[KURA_HASH_LEN];
        char hex[2 * KURA_ID_LEN + 1];
        KuraPackEntries *pe = NULL;
        size_t len = 0, n = 0;

        if (!path)
                return nomem(p);
        int r = kio_read_file(path, KURA_META_MAX, &data, &len);
        if (r == -ENOMEM)
                return nomem(p);
        if (r < 0)
                return kura_err_errno(p->err, r, KURA_E_DAMAGED, remedy_check, "cannot read index file %s", path);
        if (kura_sha256(data, len, digest) < 0)
                return nomem(p);
        kura_hex(digest, sizeof digest, hex);
        if (strcmp(hex, name) != 0)
                return kura_err(p->err, EBADMSG, KURA_E_DAMAGED, remedy_check,
                                "index file %s is damaged (its contents do not match its name)", path);
        r = kura_repo_unseal(p->repo, KURA_AAD_INDEX, data, len, &pt);
        if (r >= 0)
                r = kura_index_file_decode(pt.data, pt.len, &pe, &n);
        kura_buf_free(&pt);
        if (r == -ENOMEM)
                return nomem(p);
        if (r < 0)
                return kura_err(p->err, EBADMSG, KURA_E_DAMAGED, remedy_check, "index file %s is damaged", path);
        KuraPackEntries *np = reallocarray(p->packs, p->npacks + n, sizeof *np);
        if (!np) {
                kura_pack_entries_free(pe, n);
                return nomem(p);
        }
        p->packs = np;
        memcpy(np + p->npacks, pe, n * sizeof *pe);
        p->npacks += n;
        free(pe);
        return 0;
}

static int read_index_files(Pruner *p) {
        _cleanup_free_ char *dir = kura_repo_subpath(p->repo, "index", NULL);
        if (!dir)
                return nomem(p);
        DIR *d = opendir(dir);
        if (!d)
                return kura_err_errno(p->err, -errno, KURA_E_REPO_IO, remedy_check, "cannot list %s", dir);
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (de->d_name[0] == '.' || !is_id_hex(de->d_name))
                        continue;
                char **nn = reallocarray(p->index_names, p->nindex_names + 1, sizeof *nn);
                if (!nn || !(nn[p->nindex_names] = strdup(de->d_name))) {
                        if (nn)
                                p->index_names = nn;
                        r = nomem(p);
                        break;
                }
                p->index_names = nn;
                p->nindex_names++;
                r = read_index_file(p, dir, de->d_name);
        }
        closedir(d);
        if (r < 0)
                return r;
        /* A pack named by two index files (an interrupted prune) counts once. */
        if (p->npacks > 1)
                qsort(p->packs, p->npacks, sizeof *p->packs, cmp_pack);
        size_t out = 0;
        for (size_t i = 0; i < p->npacks; i++) {
                if (out > 0 && memcmp(p->packs[out - 1].pack_id.b, p->packs[i].pack_id.b, KURA_ID_LEN) == 0) {
                        free(p->packs[i].entries);
                        continue;
                }
                p->packs[out++] = p->packs[i];
        }
        p->npacks = out;
        return 0;
}

/* ---- 2. what the versions use -------------------------------------------------- */

static int mark_used(Pruner *p, const KuraId *id) {
        KuraIndexEntry e = {.id = *id};
        int r = kura_index_add(p->used, &e);
        return r < 0 ? nomem(p) : 0;
}

static int collect_used(Pruner *p) {
        KuraVersion **vs = NULL;
        size_t n = 0;
        /* Not skip_damaged: a manifest we cannot read may use any blob. */
        int r = kura_version_list(p->repo, false, &vs, &n, NULL, p->err);
        if (r < 0)
                return r;
        for (size_t i = 0; r >= 0 && i < n; i++)
                for (size_t k = 0; r >= 0 && k < vs[i]->nvolumes; k++) {
                        const KuraVolume *vol = &vs[i]->volumes[k];
                        KuraId *ids = NULL;
                        for (size_t l = 0; r >= 0 && l < vol->nlists; l++)
                                r = mark_used(p, &vol->lists[l]);
                        if (r < 0)
                                break;
                        r = kura_volume_load_chunks(p->w, vol, &ids, p->err);
                        if (r < 0) {
                                kura_err(p->err, -r, KURA_E_DAMAGED, remedy_check,
                                         "cannot read the chunk list of volume %s of version %s", vol->name,
                                         vs[i]->id);
                                break;
                        }
                        for (uint64_t j = 0; r >= 0 && j < vol->nchunks; j++)
                                if (!kura_id_is_zero(&ids[j]) && !kura_id_is_free(&ids[j]))
                                        r = mark_used(p, &ids[j]);
                        free(ids);
                }
        kura_version_list_free(vs, n);
        return r;
}

/* ---- 3. repacking ---------------------------------------------------------------- */

/* Finish the pack being built: header, trailer, write as data/xx/<sha256>. */
static int flush_pack(Pruner *p) {
        KuraBuf hdr = {0}, sealed = {0};
        KuraId id;
        uint8_t tail[8];
        char hex[2 * KURA_ID_LEN + 1];
        int r;

        if (p->cur_n == 0)
                return 0;
        r = kura_pack_header_encode(p->cur_e, p->cur_n, &hdr);
        if (r >= 0)
                r = kura_repo_seal(p->repo, KURA_AAD_PACKHDR, hdr.data, hdr.len, &sealed);
        if (r >= 0)
                r = kura_buf_append(&p->cur, sealed.data, sealed.len);
        put_le32(tail, (uint32_t) sealed.len);
        memcpy(tail + 4, KURA_PACK_MAGIC, 4);
        if (r >= 0)
                r = kura_buf_append(&p->cur, tail, sizeof tail);
        kura_buf_free(&hdr);
        kura_buf_free(&sealed);
        if (r < 0)
                return kura_err_errno(p->err, r, r == -ENOMEM ? KURA_E_NO_MEMORY : KURA_E_INTERNAL, "",
                                      "cannot build a new pack");
        if ((r = kura_sha256(p->cur.data, p->cur.len, id.b)) < 0)
                return nomem(p);
        kura_hex(id.b, KURA_ID_LEN, hex);
        _cleanup_free_ char *dir = kura_asprintf("%s/data/%.2s", p->repo->path, hex);
        _cleanup_free_ char *path = kura_repo_pack_path(p->repo, &id);
        if (!dir || !path)
                return nomem(p);
        r = kio_mkdir(dir, 0700);
        if (r >= 0)
                r = kio_write_file(path, p->cur.data, p->cur.len);
        if (r < 0)
                return kura_err_errno(p->err, r, kura_err_code_for_repo_write(r), remedy_write,
                                      "cannot write new pack %s", path);
        KuraPackEntries *np = reallocarray(p->newp, p->nnew + 1, sizeof *np);
        if (!np)
                return nomem(p);
        p->newp = np;
        np[p->nnew++] = (KuraPackEntries) {.pack_id = id, .entries = p->cur_e, .n = p->cur_n};
        p->new_bytes += p->cur.len;
        p->cur_e = NULL;
        p->cur_n = p->cur_cap = 0;
        p->cur.len = 0;
        return 0;
}

static int copy_blob(Pruner *p, int fd, const char *pack_path, const KuraIndexEntry *e) {
        KuraErr lerr = {0};
        char hex[2 * KURA_ID_LEN + 1];
        size_t len = 0;
        uint32_t n = kura_ie_length(e);

        kura_hex(e->id.b, KURA_ID_LEN, hex);
        int r = kura_repo_read_blob_at(p->w, pack_path, e, p->buf, &len, &lerr);
        if (r == -ENOMEM)
                return nomem(p);
        if (r < 0)
                return kura_err(p->err, EBADMSG, KURA_E_DAMAGED,
                                "run `kura check --read-data`; `kura forget` the versions it names, then prune again",
                                "chunk %s in pack %s is damaged, refusing to copy it: %s", hex, pack_path,
                                lerr.message);
        if (p->cur_n == p->cur_cap) {
                size_t ncap = p->cur_cap ? 2 * p->cur_cap : 256;
                KuraIndexEntry *ne = reallocarray(p->cur_e, ncap, sizeof *ne);
                if (!ne)
                        return nomem(p);
                p->cur_e = ne;
                p->cur_cap = ncap;
        }
        size_t off = p->cur.len;
        if ((r = kura_buf_reserve(&p->cur, n)) < 0)
                return nomem(p);
        r = kio_pread_full(fd, p->cur.data + off, n, e->offset);
        if (r < 0)
                return kura_err_errno(p->err, r, r == -EBADMSG ? KURA_E_DAMAGED : KURA_E_REPO_IO, remedy_check,
                                      "cannot read chunk %s from pack %s", hex, pack_path);
        p->cur.len += n;
        p->cur_e[p->cur_n++] = (KuraIndexEntry) {.id = e->id, .offset = (uint32_t) off, .type_length = e->type_length};
        KuraIndexEntry h = {.id = e->id};
        if (kura_index_add(p->have, &h) < 0)
                return nomem(p);
        if (p->cur.len >= KURA_PACK_TARGET_SIZE)
                return flush_pack(p);
        return 0;
}

static int repack(Pruner *p, const KuraPackEntries *pe) {
        KuraIndexEntry tmp;
        _cleanup_free_ char *path = kura_repo_pack_path(p->repo, &pe->pack_id);
        if (!path)
                return nomem(p);
        _cleanup_close_ int fd = -1;
        for (size_t j = 0; j < pe->n; j++) {
                const KuraIndexEntry *e = &pe->entries[j];
                if (!kura_index_lookup(p->used, &e->id, &tmp) || kura_index_lookup(p->have, &e->id, &tmp))
                        continue;
                if (fd < 0) {
                        fd = open(path, O_RDONLY | O_CLOEXEC);
                        if (fd < 0)
                                return kura_err_errno(p->err, -errno, KURA_E_DAMAGED, remedy_check,
                                                      "cannot open pack %s to keep the blobs versions use", path);
                }
                int r = copy_blob(p, fd, path, e);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int classify_and_repack(Pruner *p) {
        KuraIndexEntry tmp;
        p->action = calloc(KURA_MAX(p->npacks, (size_t) 1), 1);
        if (!p->action)
                return nomem(p);
        for (size_t i = 0; i < p->npacks; i++) {
                size_t used = 0;
                for (size_t j = 0; j < p->packs[i].n; j++)
                        used += kura_index_lookup(p->used, &p->packs[i].entries[j].id, &tmp);
                p->action[i] = used == p->packs[i].n ? PACK_KEEP : used == 0 ? PACK_DELETE : PACK_REPACK;
                if (p->action[i] != PACK_KEEP)
                        continue;
                for (size_t j = 0; j < p->packs[i].n; j++) {
                        KuraIndexEntry h = {.id = p->packs[i].entries[j].id};
                        if (kura_index_add(p->have, &h) < 0)
                                return nomem(p);
                }
        }
        for (size_t i = 0; i < p->npacks; i++) {
                if (p->action[i] != PACK_REPACK)
                        continue;
                int r = repack(p, &p->packs[i]);
                if (r < 0)
                        return r;
        }
        return flush_pack(p);
}

/* ---- 4. index files, deletions, leftovers --------------------------------------- */

static int write_index_group(Pruner *p, const KuraPackEntries *g, size_t n, char ***names, size_t *nnames) {
        KuraBuf pt = {0}, sealed = {0};
        KuraId id;
        int r = kura_index_file_encode(g, n, &pt);
        if (r >= 0)
                r = kura_repo_seal(p->repo, KURA_AAD_INDEX, pt.data, pt.len, &sealed);
        kura_buf_free(&pt);
        if (r < 0) {
                kura_buf_free(&sealed);
                return kura_err_errno(p->err, r, r == -ENOMEM ? KURA_E_NO_MEMORY : KURA_E_INTERNAL, "",
                                      "cannot build a new index file");
        }
        r = kura_repo_write_object(p->repo, "index", sealed.data, sealed.len, &id);
        kura_buf_free(&sealed);
        if (r < 0)
                return kura_err_errno(p->err, r, kura_err_code_for_repo_write(r), remedy_write,
                                      "cannot write a new index file in %s/index", p->repo->path);
        char **nn = reallocarray(*names, *nnames + 1, sizeof *nn);
        if (!nn)
                return nomem(p);
        *names = nn;
        if (!(nn[*nnames] = malloc(2 * KURA_ID_LEN + 1)))
                return nomem(p);
        kura_hex(id.b, KURA_ID_LEN, nn[(*nnames)++]);
        return 0;
}

/* The packs of the new index: every kept pack, then every new one.  Entries
 * are borrowed from p->packs / p->newp. */
static int write_index_files(Pruner *p, char ***names, size_t *nnames) {
        size_t total = 0, k = 0;
        for (size_t i = 0; i < p->npacks; i++)
                total += p->action[i] == PACK_KEEP;
        total += p->nnew;
        _cleanup_free_ KuraPackEntries *all = calloc(KURA_MAX(total, (size_t) 1), sizeof *all);
        if (!all)
                return nomem(p);
        for (size_t i = 0; i < p->npacks; i++)
                if (p->action[i] == PACK_KEEP)
                        all[k++] = p->packs[i];
        for (size_t i = 0; i < p->nnew; i++)
                all[k++] = p->newp[i];
        size_t start = 0, entries = 0;
        for (size_t i = 0; i < total; i++) {
                entries += all[i].n;
                if (entries >= PRUNE_INDEX_FILE_ENTRIES || i + 1 == total) {
                        int r = write_index_group(p, all + start, i + 1 - start, names, nnames);
                        if (r < 0)
                                return r;
                        start = i + 1;
                        entries = 0;
                }
        }
        return 0;
}

static int unlink_counted(Pruner *p, const char *path, uint64_t *bytes) {
        struct stat st;
        if (bytes && stat(path, &st) == 0)
                *bytes = (uint64_t) st.st_size;
        int r = kio_unlink(path);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return kura_err_errno(p->err, r, kura_err_code_for_repo_write(r), remedy_write, "cannot remove %s",
                                      path);
        return 1;
}

static int remove_tmp_in(Pruner *p, const char *dir) {
        DIR *d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : kura_err_errno(p->err, -errno, KURA_E_REPO_IO, "", "cannot list %s", dir);
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (!is_tmp(de->d_name))
                        continue;
                _cleanup_free_ char *path = kura_path_join(dir, de->d_name);
                if (!path) {
                        r = nomem(p);
                        break;
                }
                r = unlink_counted(p, path, NULL);
                if (r > 0)
                        p->st.leftovers_removed++;
        }
        closedir(d);
        return r < 0 ? r : 0;
}

static bool pack_is_live(Pruner *p, const KuraId *id) {
        KuraPackEntries key = {.pack_id = *id};
        KuraPackEntries *pe = p->npacks == 0 ? NULL : bsearch(&key, p->packs, p->npacks, sizeof key, cmp_pack);
        if (pe && p->action[pe - p->packs] == PACK_KEEP)
                return true;
        for (size_t i = 0; i < p->nnew; i++)
                if (memcmp(p->newp[i].pack_id.b, id->b, KURA_ID_LEN) == 0)
                        return true;
        return false;
}

/* .tmp-* files and packs that no index file names (an interrupted backup or prune). */
static int remove_leftovers(Pruner *p) {
        static const char *const subs[] = {"index", "versions", "keys"};
        for (size_t i = 0; i < ELEMENTSOF(subs); i++) {
                _cleanup_free_ char *dir = kura_repo_subpath(p->repo, subs[i], NULL);
                if (!dir)
                        return nomem(p);
                int r = remove_tmp_in(p, dir);
                if (r < 0)
                        return r;
        }
        _cleanup_free_ char *data = kura_repo_subpath(p->repo, "data", NULL);
        if (!data)
                return nomem(p);
        int r = remove_tmp_in(p, data);
        if (r < 0)
                return r;
        DIR *d = opendir(data);
        if (!d)
                return kura_err_errno(p->err, -errno, KURA_E_REPO_IO, "", "cannot list %s", data);
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                if (strlen(de->d_name) != 2 || !kura_is_hex(de->d_name))
                        continue;
                _cleanup_free_ char *sub = kura_path_join(data, de->d_name);
                if (!sub) {
                        r = nomem(p);
                        break;
                }
                DIR *sd = opendir(sub);
                if (!sd)
                        continue;
                struct dirent *se;
                while (r >= 0 && (se = readdir(sd))) {
                        KuraId id;
                        if (se->d_name[0] == '.' && !is_tmp(se->d_name))
                                continue;
                        if (!is_tmp(se->d_name)) {
                                if (!is_id_hex(se->d_name) || kura_unhex(se->d_name, id.b, KURA_ID_LEN) < 0)
                                        continue; /* not ours: leave it alone */
                                if (strncmp(se->d_name, de->d_name, 2) == 0 && pack_is_live(p, &id))
                                        continue;
                        }
                        _cleanup_free_ char *path = kura_path_join(sub, se->d_name);
                        uint64_t bytes = 0;
                        if (!path) {
                                r = nomem(p);
                                break;
                        }
                        r = unlink_counted(p, path, &bytes);
                        if (r > 0) {
                                p->st.leftovers_removed++;
                                p->st.bytes_freed += bytes;
                        }
                }
                closedir(sd);
                /* An emptied fan-out directory goes too (fails harmlessly if not empty). */
                if (r >= 0)
                        (void) rmdir(sub);
        }
        closedir(d);
        return r < 0 ? r : 0;
}

static int delete_obsolete(Pruner *p, char **new_names, size_t nnew_names) {
        _cleanup_free_ char *idir = kura_repo_subpath(p->repo, "index", NULL);
        if (!idir)
                return nomem(p);
        for (size_t i = 0; i < p->nindex_names; i++) {
                bool still = false;
                for (size_t j = 0; j < nnew_names; j++)
                        still = still || strcmp(p->index_names[i], new_names[j]) == 0;
                if (still)
                        continue;
                _cleanup_free_ char *path = kura_path_join(idir, p->index_names[i]);
                if (!path)
                        return nomem(p);
                int r = unlink_counted(p, path, NULL);
                if (r < 0)
                        return r;
        }
        /* Only now, with no index file naming them, may the packs go. */
        for (size_t i = 0; i < p->npacks; i++) {
                KuraIndexEntry tmp;
                if (p->action[i] == PACK_KEEP)
                        continue;
                _cleanup_free_ char *path = kura_repo_pack_path(p->repo, &p->packs[i].pack_id);
                uint64_t bytes = 0;
                if (!path)
                        return nomem(p);
                int r = unlink_counted(p, path, &bytes);
                if (r < 0)
                        return r;
                p->st.bytes_freed += bytes;
                if (p->action[i] == PACK_DELETE)
                        p->st.packs_deleted++;
                else
                        p->st.packs_rewritten++;
                for (size_t j = 0; j < p->packs[i].n; j++)
                        p->st.blobs_deleted += !kura_index_lookup(p->used, &p->packs[i].entries[j].id, &tmp);
        }
        return 0;
}

int kura_repo_prune(KuraRepo *repo, KuraPruneStats *ret_stats, KuraErr *err) {
        Pruner p = {.repo = repo, .err = err};
        char **new_names = NULL;
        size_t nnew_names = 0;
        int r;

        if (repo->lock_mode != KURA_LOCK_EXCLUSIVE)
                return kura_err(err, EPERM, KURA_E_INTERNAL, "open the repository with KURA_LOCK_EXCLUSIVE",
                                "prune needs the exclusive lock on %s", repo->path);
        p.buf = malloc(KURA_BLOB_MAX);
        if (!p.buf || kura_index_new(&p.used) < 0 || kura_index_new(&p.have) < 0) {
                r = nomem(&p);
                goto finish;
        }
        r = kura_repo_worker_new(repo, &p.w);
        if (r < 0) {
                r = nomem(&p);
                goto finish;
        }
        if ((r = read_index_files(&p)) < 0 || (r = collect_used(&p)) < 0 || (r = classify_and_repack(&p)) < 0)
                goto finish;

        bool changed = p.nnew > 0;
        for (size_t i = 0; i < p.npacks; i++)
                changed = changed || p.action[i] != PACK_KEEP;
        if (changed) {
                if ((r = write_index_files(&p, &new_names, &nnew_names)) < 0 ||
                    (r = delete_obsolete(&p, new_names, nnew_names)) < 0)
                        goto finish;
        }
        if ((r = remove_leftovers(&p)) < 0)
                goto finish;
        p.st.bytes_freed = p.st.bytes_freed > p.new_bytes ? p.st.bytes_freed - p.new_bytes : 0;
        /* The in-memory index still names the deleted packs. */
        if (changed && (r = kura_repo_load_index(repo, false, NULL, err)) < 0)
                goto finish;
        if (ret_stats)
                *ret_stats = p.st;
        r = 0;
finish:
        for (size_t i = 0; i < nnew_names; i++)
                free(new_names[i]);
        free(new_names);
        for (size_t i = 0; i < p.nindex_names; i++)
                free(p.index_names[i]);
        free(p.index_names);
        kura_pack_entries_free(p.packs, p.npacks);
        kura_pack_entries_free(p.newp, p.nnew);
        free(p.cur_e);
        kura_buf_free(&p.cur);
        free(p.action);
        free(p.buf);
        kura_index_free(p.used);
        kura_index_free(p.have);
        kura_repo_worker_free(p.w);
        return r;
}
