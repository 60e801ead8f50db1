/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz the fingerprint cache loader (docs/format/repository.md §10),
 * kura_fpcache_load(), which reads $KURA_CACHE_DIR/fpcache/<repo>/<h>.fpc.
 *
 * Input: flags(u8) || file bytes.  The file bytes are written as the cache
 * file of a fixed repository and volume under a private directory, then
 * loaded.  Flags:
 *   bit 0: replace the file's last 32 bytes by the SHA-256 of the rest, so
 *          the fuzzer gets past the checksum and reaches the header checks;
 *   bit 1: ask for the chunk size and count the file's own header names
 *          (else fixed ones: 1 MiB, (len - 56) / 48 chunks), so sizes can
 *          match or not.
 * Properties: no crash or leak; the result is 1 (with entries that are the
 * file's bytes), 0 (ignored) or -ENOMEM; never anything else.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "common/kcommon.h"
#include "crypto/kcrypto.h"
#include "engine/engine-internal.h"
#include "fuzz.h"

#define FUZZ_REPO_ID "6b7572612d66757a7a2d7265706f2d69642d303030303030303030303030303031"
#define FUZZ_VOLUME_KEY "uuid:00000000-0000-0000-0000-000000000000:fuzz"
#define FPC_HDR 24

static char dir[64], subdir[160], file[320];

static void cleanup_dir(void) {
        unlink(file);
        rmdir(subdir);
        rmdir(dir);
}

static void setup(void) {
        uint8_t h[KURA_HASH_LEN];
        char hex[2 * KURA_HASH_LEN + 1];
        snprintf(dir, sizeof dir, "/tmp/kura-fuzz-fpcache.XXXXXX");
        CHECK(mkdtemp(dir));
        snprintf(subdir, sizeof subdir, "%s/%s", dir, FUZZ_REPO_ID);
        CHECK(mkdir(subdir, 0700) == 0);
        /* The file name is the SHA-256 of the volume key (§10). */
        CHECK(kura_sha256(FUZZ_VOLUME_KEY, strlen(FUZZ_VOLUME_KEY), h) == 0);
        kura_hex(h, sizeof h, hex);
        snprintf(file, sizeof file, "%s/%s.fpc", subdir, hex);
        atexit(cleanup_dir);
}

static void write_file(const uint8_t *p, size_t n) {
        int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0);
        size_t done = 0;
        while (done < n) {
                ssize_t k = write(fd, p + done, n - done);
                CHECK(k > 0);
                done += (size_t) k;
        }
        close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > (4u << 20))
                return 0;
        if (!dir[0])
                setup();
        uint8_t flags = data[0];
        size_t n = size - 1;
        uint8_t *f = malloc(n + 1);
        CHECK(f);
        memcpy(f, data + 1, n);
        if ((flags & 1) && n >= KURA_HASH_LEN)
                CHECK(kura_sha256(f, n - KURA_HASH_LEN, f + n - KURA_HASH_LEN) == 0);
        write_file(f, n);

        uint32_t chunk_size = 1u << 20;
        uint64_t nchunks = n >= FPC_HDR + KURA_HASH_LEN ? (n - FPC_HDR - KURA_HASH_LEN) / sizeof(KuraFpEntry) : 0;
        if ((flags & 2) && n >= FPC_HDR) {
                chunk_size = get_le32(f + 8);
                nchunks = get_le64(f + 16);
        }
        KuraFpEntry *e = NULL;
        int r = kura_fpcache_load(dir, FUZZ_REPO_ID, FUZZ_VOLUME_KEY, chunk_size, nchunks, &e);
        CHECK(r == 0 || r == 1 || r == -ENOMEM);
        if (r == 1) {
                /* Accepted: exactly header + entries + checksum, and the entries are the file's. */
                CHECK(e != NULL);
                CHECK(n == FPC_HDR + nchunks * sizeof(KuraFpEntry) + KURA_HASH_LEN);
                CHECK(memcmp(f, "KFPC", 4) == 0 && get_le32(f + 4) == 1 && get_le32(f + 8) == chunk_size);
                CHECK(memcmp(e, f + FPC_HDR, nchunks * sizeof(KuraFpEntry)) == 0);
        } else {
                CHECK(e == NULL);
        }
        free(e);
        free(f);
        return 0;
}
