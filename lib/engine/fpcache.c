/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fingerprint cache file: DIR/<repo-id>/<sha256(volume key) hex>.fpc
 *   "KFPC" | version le32 = 1 | chunk_size le32 | reserved le32 | nchunks le64
 *   | nchunks x (fp[16] | id[32]) | SHA-256 of everything before (32)
 * The trailing checksum rejects torn or truncated files: a damaged cache is
 * simply ignored (the backup hashes everything).
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "common/kio.h"
#include "crypto/kcrypto.h"
#include "engine-internal.h"

#define FPC_MAGIC "KFPC"
#define FPC_HDR 24

static char *cache_path(const char *dir, const char *repo_id, const char *volume_key, char **ret_subdir) {
        uint8_t h[KURA_HASH_LEN];
        char hex[2 * KURA_HASH_LEN + 1];
        if (kura_sha256(volume_key, strlen(volume_key), h) < 0)
                return NULL;
        kura_hex(h, sizeof h, hex);
        char *sub = kura_path_join(dir, repo_id);
        if (!sub)
                return NULL;
        char *p = kura_asprintf("%s/%s.fpc", sub, hex);
        if (ret_subdir)
                *ret_subdir = sub;
        else
                free(sub);
        return p;
}

int kura_fpcache_load(const char *dir, const char *repo_id, const char *volume_key, uint32_t chunk_size,
                      uint64_t nchunks, KuraFpEntry **ret) {
        *ret = NULL;
        if (!dir)
                return 0;
        _cleanup_free_ char *path = cache_path(dir, repo_id, volume_key, NULL);
        if (!path)
                return -ENOMEM;
        if (nchunks > (SIZE_MAX - FPC_HDR - 32) / sizeof(KuraFpEntry))
                return 0;
        size_t want = FPC_HDR + (size_t) nchunks * sizeof(KuraFpEntry) + KURA_HASH_LEN;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        int r = kio_read_file(path, want, &buf, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0 || len != want)
                return 0;
        uint8_t h[KURA_HASH_LEN];
        if (kura_sha256(buf, len - KURA_HASH_LEN, h) < 0 || memcmp(h, buf + len - KURA_HASH_LEN, KURA_HASH_LEN) != 0)
                return 0;
        if (memcmp(buf, FPC_MAGIC, 4) != 0 || get_le32(buf + 4) != 1 || get_le32(buf + 8) != chunk_size ||
            get_le64(buf + 16) != nchunks)
                return 0;
        KuraFpEntry *e = malloc(nchunks ? (size_t) nchunks * sizeof *e : 1);
        if (!e)
                return -ENOMEM;
        memcpy(e, buf + FPC_HDR, (size_t) nchunks * sizeof *e);
        *ret = e;
        return 1;
}

/* Temporary file + rename, without the fsyncs of kio_write_file(): the
 * cache is a hint that validates itself (exact size, trailing SHA-256), so
 * a file torn or lost by a power failure is ignored and costs one full
 * rehash, never a wrong chunk ID; the fsyncs of the file and its directory
 * cost up to a few hundred milliseconds of every incremental backup on a
 * busy disk. */
static int write_unsynced(const char *dir, const char *path, const void *p, size_t n) {
        uint8_t rnd[8];
        char hex[2 * sizeof rnd + 1];
        int r = kura_random(rnd, sizeof rnd);
        if (r < 0)
                return r;
        kura_hex(rnd, sizeof rnd, hex);
        _cleanup_free_ char *tmp = kura_asprintf("%s/.tmp-%s", dir, hex);
        if (!tmp)
                return -ENOMEM;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        const uint8_t *q = p;
        while (n > 0) {
                ssize_t k = write(fd, q, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        r = k < 0 ? -errno : -EIO;
                        close(fd);
                        unlink(tmp);
                        return r;
                }
                q += k;
                n -= (size_t) k;
        }
        if (close(fd) < 0 || rename(tmp, path) < 0) {
                r = -errno;
                unlink(tmp);
                return r;
        }
        return 0;
}

int kura_fpcache_save(const char *dir, const char *repo_id, const char *volume_key, uint32_t chunk_size,
                      uint64_t nchunks, const KuraFpEntry *entries) {
        if (!dir)
                return 0;
        _cleanup_free_ char *sub = NULL;
        _cleanup_free_ char *path = cache_path(dir, repo_id, volume_key, &sub);
        if (!path)
                return -ENOMEM;
        (void) mkdir(dir, 0700);
        int r = kio_mkdir(sub, 0700);
        if (r < 0)
                return r;
        KuraBuf b = {0};
        uint8_t hdr[FPC_HDR] = {0};
        memcpy(hdr, FPC_MAGIC, 4);
        put_le32(hdr + 4, 1);
        put_le32(hdr + 8, chunk_size);
        put_le64(hdr + 16, nchunks);
        r = kura_buf_append(&b, hdr, sizeof hdr);
        if (r >= 0)
                r = kura_buf_append(&b, entries, (size_t) nchunks * sizeof *entries);
        uint8_t h[KURA_HASH_LEN];
        if (r >= 0)
                r = kura_sha256(b.data, b.len, h);
        if (r >= 0)
                r = kura_buf_append(&b, h, sizeof h);
        if (r >= 0)
                r = write_unsynced(sub, path, b.data, b.len);
        kura_buf_free(&b);
        return r;
}
