/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/* Private to lib/engine. */
#include "common/kcommon.h"
#include "kura/engine.h"

/* The local fingerprint cache (docs/format/repository.md §10): per volume,
 * per chunk, a keyed 128-bit fast hash of the chunk's bytes as read, and the
 * chunk ID it had.  It only lets a backup skip the cryptographic hash of a
 * chunk whose bytes did not change; the ID it yields is used only if the
 * repository's index still holds it. */
typedef struct KuraFpEntry {
        uint8_t fp[16];   /* all zero: no entry */
        KuraId id;
} KuraFpEntry;
_Static_assert(sizeof(KuraFpEntry) == 48, "fp cache entry is 48 bytes");

/* Load the cache for (repo_id, volume_key, chunk_size).  Returns 1 and *ret
 * (nchunks entries, caller frees) if a valid cache exists, 0 if none (or
 * it does not match: other size, torn, garbage), negative errno on ENOMEM. */
int kura_fpcache_load(const char *dir, const char *repo_id, const char *volume_key, uint32_t chunk_size,
                      uint64_t nchunks, KuraFpEntry **ret);
/* Replace the cache atomically.  Errors are not fatal for a backup. */
int kura_fpcache_save(const char *dir, const char *repo_id, const char *volume_key, uint32_t chunk_size,
                      uint64_t nchunks, const KuraFpEntry *entries);

/* Run a program (PATH lookup, no shell), stdin /dev/null, stdout+stderr
 * captured (last 4 KiB) into *ret_output (caller frees).  Its exit status,
 * -ENOENT when it is not installed, or -errno (lib/engine/disks.c). */
int kura_engine_run(const char *const argv[], char **ret_output);
