/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Pack files (§5): blob0 ‖ blob1 ‖ … ‖ sealed header ‖ header_len(le32) ‖ "KPK1".
 *
 * The writer appends sealed blobs to a temporary file in REPO/data/ and
 * hashes every byte as it goes (the pack ID is the SHA-256 of the whole
 * file), so finishing a 32 MiB pack costs a header, an fsync and a rename,
 * not a second read.  OpenSSL's EVP digest is used directly because
 * lib/crypto only offers one-shot SHA-256.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "repo-internal.h"

struct KuraPackWriter {
        KioFile *f;
        EVP_MD_CTX *sha;
        uint32_t number;              /* pending pack number in repo->index */
        int read_fd;                  /* for reading back blobs of this pack, -1 until needed */
        KuraIndexEntry *entries;
        size_t n, cap;
};

/* ---- header codec -------------------------------------------------------- */

int kura_pack_header_encode(const KuraIndexEntry *e, size_t n, KuraBuf *out) {
        if (n > UINT32_MAX)
                return -E2BIG;
        int r = kura_buf_reserve(out, 12 + n * 41);
        if (r < 0)
                return r;
        kura_buf_append(out, "KPKH", 4);
        kura_buf_le32(out, 1);
        kura_buf_le32(out, (uint32_t) n);
        for (size_t i = 0; i < n; i++) {
                uint8_t rec[41];
                rec[0] = kura_ie_type(&e[i]);
                memcpy(rec + 1, e[i].id.b, KURA_ID_LEN);
                put_le32(rec + 33, e[i].offset);
                put_le32(rec + 37, kura_ie_length(&e[i]));
                kura_buf_append(out, rec, sizeof rec);
        }
        return 0;
}

int kura_pack_header_decode(const uint8_t *p, size_t n, KuraIndexEntry **ret, size_t *ret_n) {
        KuraBufReader br;
        const uint8_t *magic;
        uint32_t version, count;
        kura_br_init(&br, p, n);
        if (kura_br_ptr(&br, &magic, 4) < 0 || memcmp(magic, "KPKH", 4) != 0)
                return KURA_CORRUPT();
        if (kura_br_le32(&br, &version) < 0 || kura_br_le32(&br, &count) < 0)
                return KURA_CORRUPT();
        if (version != 1)
                return -EPROTONOSUPPORT;
        if (br.left != (size_t) count * 41)
                return KURA_CORRUPT();
        KuraIndexEntry *e = malloc(KURA_MAX(count, 1u) * sizeof *e);
        if (!e)
                return -ENOMEM;
        for (uint32_t i = 0; i < count; i++) {
                int r = kura_entry_record_decode(&br, &e[i]);
                if (r < 0) {
                        free(e);
                        return r;
                }
        }
        *ret = e;
        *ret_n = count;
        return 0;
}

int kura_pack_trailer_decode(const uint8_t tail[8], uint64_t file_size, uint32_t *ret_hdr_len) {
        if (memcmp(tail + 4, KURA_PACK_MAGIC, 4) != 0)
                return KURA_CORRUPT();
        uint32_t len = get_le32(tail);
        if (file_size < 8 || len > file_size - 8 || len > KURA_META_MAX || len < 12)
                return KURA_CORRUPT();
        *ret_hdr_len = len;
        return 0;
}

int kura_pack_read_header(KuraRepo *repo, const char *path, KuraIndexEntry **ret, size_t *ret_n,
                          uint64_t *ret_size, KuraErr *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_REPO_IO, "check that the repository is readable",
                                      "cannot open pack %s", path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return kura_err_errno(err, -errno, KURA_E_REPO_IO, "", "cannot stat pack %s", path);
        uint64_t size = (uint64_t) st.st_size;
        uint8_t tail[8];
        uint32_t hlen;
        const char *damaged = "run `kura check` to see which versions are affected";
        if (size < 8 || kio_pread_full(fd, tail, 8, size - 8) < 0 || kura_pack_trailer_decode(tail, size, &hlen) < 0)
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, damaged, "pack %s has no valid trailer", path);
        _cleanup_free_ uint8_t *sealed = malloc(hlen);
        if (!sealed)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "reading pack header of %s", path);
        uint64_t hoff = size - 8 - hlen;
        int r = kio_pread_full(fd, sealed, hlen, hoff);
        if (r < 0)
                return kura_err_errno(err, r, r == -EBADMSG ? KURA_E_DAMAGED : KURA_E_REPO_IO, damaged,
                                      "cannot read header of pack %s", path);
        KuraBuf pt = {0};
        r = kura_repo_unseal(repo, KURA_AAD_PACKHDR, sealed, hlen, &pt);
        if (r < 0) {
                kura_buf_free(&pt);
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, damaged,
                                "header of pack %s does not authenticate (altered or damaged)", path);
        }
        KuraIndexEntry *e = NULL;
        size_t n = 0;
        r = kura_pack_header_decode(pt.data, pt.len, &e, &n);
        kura_buf_free(&pt);
        if (r < 0)
                return kura_err(err, -r, r == -EPROTONOSUPPORT ? KURA_E_REPO_VERSION : KURA_E_DAMAGED,
                                r == -EPROTONOSUPPORT ? "upgrade kura" : damaged, "header of pack %s is malformed",
                                path);
        /* v1 writers put blobs back to back from offset 0 up to the header. */
        uint64_t expect = 0;
        for (size_t i = 0; i < n; i++) {
                if (e[i].offset != expect) {
                        free(e);
                        return kura_err(err, EBADMSG, KURA_E_DAMAGED, damaged,
                                        "header of pack %s lists blob %zu at a wrong offset", path, i);
                }
                expect += kura_ie_length(&e[i]);
        }
        if (expect != hoff) {
                free(e);
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, damaged,
                                "header of pack %s does not cover the pack's blobs", path);
        }
        *ret = e;
        *ret_n = n;
        if (ret_size)
                *ret_size = size;
        return 0;
}

/* ---- writer -------------------------------------------------------------- */

static KuraPackWriter *pw_free(KuraPackWriter *pw) {
        if (!pw)
                return NULL;
        kio_abort(pw->f);
        if (pw->read_fd >= 0)
                close(pw->read_fd);
        EVP_MD_CTX_free(pw->sha);
        free(pw->entries);
        free(pw);
        return NULL;
}

int kura_pack_writer_new(KuraRepo *repo, KuraPackWriter **ret, KuraErr *err) {
        KuraPackWriter *pw = calloc(1, sizeof *pw);
        if (!pw)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "starting a pack");
        pw->read_fd = -1;
        pw->sha = EVP_MD_CTX_new();
        if (!pw->sha || EVP_DigestInit_ex(pw->sha, EVP_sha256(), NULL) != 1) {
                pw_free(pw);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "starting a pack");
        }
        _cleanup_free_ char *dir = kura_repo_subpath(repo, "data", NULL);
        if (!dir) {
                pw_free(pw);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "starting a pack");
        }
        int r = kio_create_tmp(dir, &pw->f);
        if (r < 0) {
                pw->f = NULL;
                pw_free(pw);
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                      "check free space and permissions of the repository",
                                      "cannot create a pack in %s", dir);
        }
        pthread_mutex_lock(&repo->index_lock);
        r = kura_index_pack_new_pending(repo->index, &pw->number);
        pthread_mutex_unlock(&repo->index_lock);
        if (r < 0) {
                pw_free(pw);
                return kura_err_errno(err, r, KURA_E_NO_MEMORY, "", "starting a pack");
        }
        *ret = pw;
        return 0;
}

/* Start write-back of every full 8 MiB of a pack while it is being filled,
 * so the fsync that makes it durable (taken under pack_lock, stalling every
 * worker) waits only for the tail.  Durability still comes only from fsync. */
#define PW_WRITEBACK_STEP (8U << 20)

static int pw_write(KuraPackWriter *pw, const void *p, size_t n) {
        uint64_t before = kio_size(pw->f);
        int r = kio_write(pw->f, p, n);
        if (r < 0)
                return r;
        if (EVP_DigestUpdate(pw->sha, p, n) != 1)
                return -EIO;
        uint64_t after = kio_size(pw->f);
        if (after / PW_WRITEBACK_STEP != before / PW_WRITEBACK_STEP) {
                uint64_t end = after / PW_WRITEBACK_STEP * PW_WRITEBACK_STEP;
                (void) sync_file_range(kio_fd(pw->f), (off64_t) (end - PW_WRITEBACK_STEP), PW_WRITEBACK_STEP,
                                       SYNC_FILE_RANGE_WRITE);
                /* Drop the step before the one just started, whose write-back
                 * has most likely finished (pages still dirty or under
                 * write-back are skipped by the kernel): see pack_drop_cache(). */
                if (end >= 2 * PW_WRITEBACK_STEP)
                        (void) posix_fadvise(kio_fd(pw->f), (off_t) (end - 2 * PW_WRITEBACK_STEP),
                                             PW_WRITEBACK_STEP, POSIX_FADV_DONTNEED);
        }
        return 0;
}

/* A backup writes about as many pack bytes as it stores, all of which it
 * never reads again; left in the page cache they evict the server's working
 * set, and every new page cache page costs the kernel a fresh page (on VMs
 * with free page reporting, a host page fault: ~3 s of system time per GiB
 * written on our CI machines, against ~0.4 s when the same pages are
 * recycled).  Once the pack is durable its clean pages are dropped, so the
 * next pack reuses them. */
static void pack_drop_cache(const char *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                (void) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
                close(fd);
        }
}

int kura_pack_writer_append(KuraPackWriter *pw, KuraBlobType type, const KuraId *id, const void *sealed,
                            size_t n, uint32_t *ret_offset, KuraErr *err) {
        uint64_t off = kio_size(pw->f);
        if (n == 0 || n > KURA_SEALED_BLOB_MAX || off + n > UINT32_MAX - KURA_META_MAX)
                return kura_err(err, EFBIG, KURA_E_INTERNAL, "", "blob does not fit in the pack");
        if (pw->n == pw->cap) {
                size_t ncap = pw->cap ? pw->cap * 2 : 64;
                KuraIndexEntry *e = realloc(pw->entries, ncap * sizeof *e);
                if (!e)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "adding a blob to a pack");
                pw->entries = e;
                pw->cap = ncap;
        }
        int r = pw_write(pw, sealed, n);
        if (r < 0)
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                      "free space in the repository, then run the backup again",
                                      "cannot write to a new pack");
        pw->entries[pw->n++] = (KuraIndexEntry) {
                .id = *id,
                .pack = pw->number,
                .offset = (uint32_t) off,
                .type_length = kura_ie_pack_tl((uint8_t) type, (uint32_t) n),
        };
        *ret_offset = (uint32_t) off;
        return 0;
}

uint64_t kura_pack_writer_size(const KuraPackWriter *pw) { return kio_size(pw->f); }
size_t kura_pack_writer_count(const KuraPackWriter *pw) { return pw->n; }
uint32_t kura_pack_writer_number(const KuraPackWriter *pw) { return pw->number; }
int kura_pack_writer_read_fd(KuraPackWriter *pw) {
        /* kio opens temporary files write-only; a second, read-only open file
         * description of the same inode serves reads of unfinished packs. */
        if (pw->read_fd < 0) {
                char p[64];
                snprintf(p, sizeof p, "/proc/self/fd/%d", kio_fd(pw->f));
                pw->read_fd = open(p, O_RDONLY | O_CLOEXEC);
                if (pw->read_fd < 0)
                        return -errno;
        }
        return pw->read_fd;
}

void kura_pack_writer_abort(KuraRepo *repo, KuraPackWriter *pw) {
        if (!pw)
                return;
        pthread_mutex_lock(&repo->index_lock);
        (void) kura_index_drop_pack(repo->index, pw->number);
        pthread_mutex_unlock(&repo->index_lock);
        pw_free(pw);
}

int kura_pack_writer_finish(KuraRepo *repo, KuraPackWriter *pw, KuraErr *err) {
        KuraBuf hdr = {0}, sealed = {0};
        _cleanup_free_ char *dir = NULL, *path = NULL;
        const char *remedy = "free space in the repository, then run the backup again";
        KuraId pack_id;
        char hex[2 * KURA_ID_LEN + 1];
        uint8_t tail[8];
        unsigned dlen = 0;
        int r = kura_pack_header_encode(pw->entries, pw->n, &hdr);
        if (r < 0) {
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "encoding a pack header");
                goto fail;
        }
        r = kura_repo_seal(repo, KURA_AAD_PACKHDR, hdr.data, hdr.len, &sealed);
        if (r < 0) {
                r = kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot seal a pack header");
                goto fail;
        }
        put_le32(tail, (uint32_t) sealed.len);
        memcpy(tail + 4, KURA_PACK_MAGIC, 4);
        r = pw_write(pw, sealed.data, sealed.len);
        if (r >= 0)
                r = pw_write(pw, tail, sizeof tail);
        if (r < 0) {
                r = kura_err_errno(err, r, kura_err_code_for_repo_write(r), remedy, "cannot write a pack");
                goto fail;
        }
        if (EVP_DigestFinal_ex(pw->sha, pack_id.b, &dlen) != 1 || dlen != KURA_ID_LEN) {
                r = kura_err(err, EIO, KURA_E_INTERNAL, "", "SHA-256 failed");
                goto fail;
        }
        kura_id_hex(&pack_id, hex);
        dir = kura_asprintf("%s/data/%.2s", repo->path, hex);
        path = kura_repo_pack_path(repo, &pack_id);
        if (!dir || !path) {
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "finishing a pack");
                goto fail;
        }
        r = kio_mkdir(dir, 0700);
        if (r < 0) {
                r = kura_err_errno(err, r, kura_err_code_for_repo_write(r), remedy, "cannot create %s", dir);
                goto fail;
        }
        r = kio_commit(pw->f, path);
        pw->f = NULL; /* freed by kio_commit in every case */
        if (r < 0) {
                r = kura_err_errno(err, r, kura_err_code_for_repo_write(r), remedy, "cannot commit pack %s", path);
                goto fail;
        }

        pack_drop_cache(path);

        /* The pack is durable: name it in the index and queue it for the next index file. */
        KuraPackEntries *sp = realloc(repo->session_packs, (repo->nsession_packs + 1) * sizeof *sp);
        if (!sp) {
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "finishing a pack");
                goto fail;
        }
        repo->session_packs = sp;
        pthread_mutex_lock(&repo->index_lock);
        r = kura_index_pack_set_id(repo->index, pw->number, &pack_id);
        pthread_mutex_unlock(&repo->index_lock);
        if (r < 0) {
                r = kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot add pack %s to the index", hex);
                goto fail;
        }
        sp[repo->nsession_packs++] = (KuraPackEntries) {.pack_id = pack_id, .entries = TAKE_PTR(pw->entries), .n = pw->n};
        kura_buf_free(&hdr);
        kura_buf_free(&sealed);
        pw_free(pw);
        return 0;
fail:
        kura_buf_free(&hdr);
        kura_buf_free(&sealed);
        kura_pack_writer_abort(repo, pw);
        return r;
}
