/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * libkura repository API: the encrypted, deduplicating chunk store, its key
 * slots, versions (recovery points), locks, check and prune.
 * docs/format/repository.md is the normative description of the bytes.
 *
 * Conventions: functions return >= 0 on success or a negative errno; the last
 * parameter KuraErr *err (may be NULL) receives the user-facing error.
 * Objects returned through ret_* are owned by the caller unless said otherwise.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kura/errors.h"

#define KURA_ID_LEN 32
#define KURA_FORMAT_VERSION 1
#define KURA_CHUNK_SIZE_DEFAULT (1U << 20)
#define KURA_CHUNK_SIZE_MIN (256U << 10)
#define KURA_CHUNK_SIZE_MAX (8U << 20)
/* Largest plaintext blob the store accepts (a chunk, or a chunk-list blob). */
#define KURA_BLOB_MAX (KURA_CHUNK_SIZE_MAX)

typedef struct KuraId {
        uint8_t b[KURA_ID_LEN];
} KuraId;

/* Reserved IDs in chunk lists (never the ID of a stored blob). */
extern const KuraId KURA_ID_ZERO; /* 32 x 0x00: the chunk is all zeros, nothing stored */
extern const KuraId KURA_ID_FREE; /* 32 x 0xff: the filesystem marks every block of it free */
bool kura_id_is_zero(const KuraId *id);
bool kura_id_is_free(const KuraId *id);
void kura_id_hex(const KuraId *id, char out[2 * KURA_ID_LEN + 1]);
int kura_id_from_hex(const char *s, KuraId *ret);

typedef enum KuraBlobType {
        KURA_BLOB_DATA = 0, /* a volume chunk */
        KURA_BLOB_LIST = 1, /* a piece of a volume's ordered chunk list */
} KuraBlobType;

typedef struct KuraRepo KuraRepo;
typedef struct KuraRepoWorker KuraRepoWorker;

/* ---- create, open ------------------------------------------------------- */

typedef struct KuraRepoInitOpts {
        bool encrypted;            /* default true (AES-256-GCM) */
        const char *password;      /* required when encrypted */
        uint64_t kdf_mem;          /* 0: default 64 MiB */
        uint32_t kdf_passes;       /* 0: default 3 */
        int zstd_level;            /* 0: default (3) */
} KuraRepoInitOpts;

/* Create a repository in path (created if missing; must be empty otherwise:
 * KURA-E-REPO-EXISTS).  On success *ret_repo_id (may be NULL) gets the new
 * repository's ID (hex, caller frees). */
int kura_repo_init(const char *path, const KuraRepoInitOpts *opts, char **ret_repo_id, KuraErr *err);

typedef enum KuraLockMode {
        KURA_LOCK_NONE = 0,        /* reading only, no lock (e.g. versions) */
        KURA_LOCK_SHARED,          /* backup, key add */
        KURA_LOCK_EXCLUSIVE,       /* prune, forget, key remove */
        KURA_LOCK_SHARED_OR_NONE,  /* restore, check: shared lock, but on read-only
                                      media go on without one (see kura_repo_unlocked) */
} KuraLockMode;

/* Called at most once, only when the repository is encrypted, to obtain the
 * passphrase.  Return 0 and a malloc'ed string in *ret (the library wipes
 * and frees it), or a negative errno. */
typedef int (*KuraPasswordFn)(void *userdata, char **ret);

typedef struct KuraRepoOpenOpts {
        KuraLockMode lock;
        KuraPasswordFn password_fn;
        void *password_userdata;
        int64_t stale_lock_age_s;  /* locks of other hosts older than this are "stale" (default 24 h) */
} KuraRepoOpenOpts;

/* Open: reads config (refusing unknown incompatible features:
 * KURA-E-REPO-VERSION), unwraps the master key trying every key slot
 * (KURA-E-WRONG-PASSWORD), takes the lock (KURA-E-LOCKED naming the holder),
 * loads the index.  Errors: KURA-E-REPO-NOT-FOUND, KURA-E-NOT-A-REPO. */
int kura_repo_open(const char *path, const KuraRepoOpenOpts *opts, KuraRepo **ret, KuraErr *err);
/* Release the lock (if any), free everything, wipe keys.  Accepts NULL.
 * Does NOT flush: call kura_repo_flush() first to keep new blobs. */
KuraRepo *kura_repo_close(KuraRepo *repo);

const char *kura_repo_path(const KuraRepo *repo);
const char *kura_repo_id(const KuraRepo *repo);
bool kura_repo_encrypted(const KuraRepo *repo);
/* true when opened with KURA_LOCK_SHARED_OR_NONE and no lock could be taken
 * because the repository is read-only (the caller should warn). */
bool kura_repo_unlocked(const KuraRepo *repo);
/* Number of blobs in the loaded index. */
uint64_t kura_repo_index_count(const KuraRepo *repo);
/* Index files that could not be read when the repository was opened (their
 * chunks look missing; `kura check` names the damage).  0 normally. */
size_t kura_repo_index_files_damaged(const KuraRepo *repo);
/* The key for the local fingerprint cache (borrowed, lives as long as repo). */
const uint8_t *kura_repo_fp_key(const KuraRepo *repo);

/* ---- blobs -------------------------------------------------------------- */

/* A worker holds the per-thread contexts (hasher, sealer, zstd, buffers) for
 * the hot path.  Create one per thread; free before closing the repo. */
int kura_repo_worker_new(KuraRepo *repo, KuraRepoWorker **ret);
KuraRepoWorker *kura_repo_worker_free(KuraRepoWorker *w);

/* Chunk ID of data (HMAC-SHA256 or SHA-256 by repository). */
int kura_repo_hash(KuraRepoWorker *w, const void *data, size_t len, KuraId *ret);

/* Is the blob in the index (committed, or added in this session)?  Thread-safe. */
bool kura_repo_has(KuraRepo *repo, const KuraId *id);

/* Store a blob whose ID the caller computed with kura_repo_hash().  If the
 * repository has it already (or another thread is storing it) nothing is
 * written and 0 is returned; otherwise the blob is compressed (zstd, raw if
 * that does not shrink it), sealed, appended to the current pack, and 1 is
 * returned with *ret_stored (may be NULL) = bytes added to the pack.
 * Thread-safe.  Errors: KURA-E-REPO-FULL, KURA-E-REPO-IO. */
int kura_repo_put(KuraRepoWorker *w, KuraBlobType type, const KuraId *id, const void *data, size_t len,
                  uint64_t *ret_stored, KuraErr *err);

/* Read a blob: locate it through the index, read, unseal (AEAD tag),
 * decompress, recompute its ID and compare.  buf must hold KURA_BLOB_MAX
 * bytes.  Errors: -ENOENT (not indexed: KURA-E-DAMAGED), -EBADMSG (corrupt:
 * KURA-E-DAMAGED naming the chunk and pack).  Thread-safe. */
int kura_repo_get(KuraRepoWorker *w, const KuraId *id, void *buf, size_t *ret_len, KuraErr *err);

/* Ask the kernel to start reading the bytes of a blob that kura_repo_get()
 * will want soon (posix_fadvise WILLNEED on its pack range; returns at
 * once).  A hint only: blobs not indexed or in the pack being written are
 * ignored, and nothing read this way is trusted before kura_repo_get()
 * authenticates it.  Use a worker of its own (it caches one pack fd). */
void kura_repo_prefetch(KuraRepoWorker *w, const KuraId *id);

/* Make everything stored so far durable: finish the open pack (fsync,
 * rename), then write an index file for all packs finished in this session.
 * After it returns 0, versions may reference the blobs.  Not thread-safe
 * against concurrent put. */
int kura_repo_flush(KuraRepo *repo, KuraErr *err);

/* ---- versions ----------------------------------------------------------- */

typedef struct KuraVolume {
        char *name;            /* stable within the version: "sda1", "root.img", --name */
        char *path;            /* source path at backup time */
        char *fs;              /* filesystem type from blkid, "" if none */
        char *uuid;            /* filesystem UUID, "" if none */
        char *label;           /* filesystem label, "" if none */
        uint64_t size;         /* bytes */
        uint32_t chunk_size;
        uint64_t nchunks;      /* DIV_ROUND_UP(size, chunk_size) */
        KuraId *lists;         /* IDs of the KURA_BLOB_LIST blobs, in order */
        size_t nlists;
        /* statistics of the backup that made it */
        uint64_t bytes_read, bytes_new, bytes_stored;
        uint64_t chunks_zero, chunks_free, chunks_new;
} KuraVolume;

typedef struct KuraVersion {
        char id[2 * KURA_ID_LEN + 1]; /* hex; set by kura_version_save() / when loaded */
        int64_t time_ns;
        char *hostname;
        char **tags;
        size_t ntags;
        char *parent;                 /* id of the parent version or NULL */
        KuraVolume *volumes;
        size_t nvolumes;
        uint64_t bytes_read, bytes_new, bytes_stored;
        double duration_s;
        bool crash_consistent;        /* read while mounted writable (--allow-mounted) */
        void *extra;                  /* json_t*: fields this kura does not know, kept verbatim */
} KuraVersion;

KuraVersion *kura_version_new(void);
KuraVersion *kura_version_free(KuraVersion *v);
void kura_version_list_free(KuraVersion **v, size_t n);
/* Append a volume (fields copied; lists left empty); returns it (borrowed) or NULL on ENOMEM. */
KuraVolume *kura_version_add_volume(KuraVersion *v, const char *name, const char *path, const char *fs,
                                    const char *uuid, const char *label, uint64_t size, uint32_t chunk_size);

/* Store a volume's ordered chunk list (nchunks IDs) as LIST blobs of up to
 * 4096 IDs each, setting vol->lists. */
int kura_volume_store_chunks(KuraRepoWorker *w, KuraVolume *vol, const KuraId *ids, KuraErr *err);
/* Load it back: *ret gets vol->nchunks IDs (caller frees). */
int kura_volume_load_chunks(KuraRepoWorker *w, const KuraVolume *vol, KuraId **ret, KuraErr *err);

/* Write the manifest (after kura_repo_flush!).  Sets v->id. */
int kura_version_save(KuraRepo *repo, KuraVersion *v, KuraErr *err);
/* All versions, oldest first.  Unreadable manifests fail with KURA-E-DAMAGED
 * unless skip_damaged (then they are left out and *ret_damaged counts them). */
int kura_version_list(KuraRepo *repo, bool skip_damaged, KuraVersion ***ret, size_t *ret_n,
                      size_t *ret_damaged, KuraErr *err);
/* Find by full ID, unique prefix, or "latest".  KURA-E-VERSION-NOT-FOUND,
 * KURA-E-VERSION-AMBIGUOUS. */
int kura_version_find(KuraRepo *repo, const char *spec, KuraVersion **ret, KuraErr *err);
/* Delete a version's manifest (needs the exclusive lock). */
int kura_version_forget(KuraRepo *repo, const char *id, KuraErr *err);

/* ---- restore tests (lib/repo/verify.c; spec §11) ------------------------ */

/* The result of the last `kura verify-restore` of a version is kept in
 * REPO/verify/<version-id> (a manifest is immutable).  json_text is one JSON
 * object with at least "format": 1, "version" (= version_id, full 64 hex),
 * "ok" (bool) and "time" (RFC 3339); it replaces any earlier record of that
 * version, crash-safely.  Needs a shared or exclusive lock. */
int kura_verify_record_save(KuraRepo *repo, const char *version_id, const char *json_text, KuraErr *err);
/* The record of version_id (full ID): *ret_json_text (caller frees) is its
 * JSON text.  -ENOENT (err left unset) when the version was never tested;
 * KURA-E-DAMAGED when the record is unreadable, fails authentication (also
 * when moved from another version's name) or is malformed. */
int kura_verify_record_load(KuraRepo *repo, const char *version_id, char **ret_json_text, KuraErr *err);
/* Delete the record of version_id: 1 removed, 0 there was none. */
int kura_verify_record_forget(KuraRepo *repo, const char *version_id, KuraErr *err);
/* Delete every record whose version manifest is gone, and temporary files in
 * verify/ (needs KURA_LOCK_EXCLUSIVE; for forget/prune).  *ret_removed (may be
 * NULL) counts them. */
int kura_verify_records_prune(KuraRepo *repo, size_t *ret_removed, KuraErr *err);

/* ---- keys --------------------------------------------------------------- */

typedef struct KuraKeySlotInfo {
        char id[17];
        int64_t created_ns;
        char host[128];
        char user[64];
        char access[16];         /* "full" (room for "write-only") */
        uint64_t kdf_mem;
        uint32_t kdf_passes;
        bool current;            /* the slot this session was opened with */
} KuraKeySlotInfo;

int kura_key_add(KuraRepo *repo, const char *password, uint64_t kdf_mem, uint32_t kdf_passes,
                 char ret_id[17], KuraErr *err);
int kura_key_list(KuraRepo *repo, KuraKeySlotInfo **ret, size_t *ret_n, KuraErr *err);
/* Refuses to remove the last slot (KURA-E-KEY-SLOT). */
int kura_key_remove(KuraRepo *repo, const char *id_prefix, KuraErr *err);

/* ---- locks -------------------------------------------------------------- */

typedef struct KuraLockInfo {
        char name[80];           /* file name under locks/ */
        char host[128];
        int pid;
        bool exclusive;
        int64_t time_ns;
        bool stale;              /* dead process on this host, or other host and older than the stale age */
        char boot_id[40];        /* the holder's kernel boot ID ("" in locks of older kuras) */
        uint64_t start;          /* the holder's start time, clock ticks after boot (0: unknown) */
} KuraLockInfo;

int kura_lock_list(const char *repo_path, int64_t stale_age_s, KuraLockInfo **ret, size_t *ret_n, KuraErr *err);
/* Remove stale locks (all locks when all == true).  *ret_removed counts them. */
int kura_lock_remove(const char *repo_path, int64_t stale_age_s, bool all, size_t *ret_removed, KuraErr *err);

/* ---- check, prune ------------------------------------------------------- */

typedef enum KuraProblemSeverity { KURA_PROBLEM_WARNING, KURA_PROBLEM_ERROR } KuraProblemSeverity;

typedef struct KuraProblem {
        KuraProblemSeverity severity;
        const char *code;        /* KURA_E_DAMAGED, KURA_W_LEFTOVER, ... */
        char *object;            /* "pack data/ab/abcd…", "chunk 1234…", "version 5e0c…" */
        char *message;
        char **versions;         /* IDs of affected versions */
        size_t nversions;
} KuraProblem;

typedef struct KuraCheckReport {
        KuraProblem *problems;
        size_t nproblems;
        size_t nerrors, nwarnings;
        uint64_t packs, blobs, versions, bytes_read;
} KuraCheckReport;

typedef void (*KuraProgressFn)(void *userdata, uint64_t done, uint64_t total);

/* Structure check: config, keys, every index file readable, every pack
 * header matches the index, every referenced chunk (list and data) indexed;
 * with read_data every blob is read, unsealed, decompressed and its ID
 * recomputed.  Leftovers (temporary files, unindexed packs) are warnings.
 * Returns 0 (inspect report->nerrors) or a negative errno if the check itself
 * could not run. */
int kura_repo_check(KuraRepo *repo, bool read_data, KuraProgressFn progress, void *userdata,
                    KuraCheckReport **ret, KuraErr *err);
KuraCheckReport *kura_check_report_free(KuraCheckReport *r);

typedef struct KuraPruneStats {
        uint64_t packs_deleted, packs_rewritten, blobs_deleted, bytes_freed, leftovers_removed;
} KuraPruneStats;

/* Needs KURA_LOCK_EXCLUSIVE.  Deletes blobs no version references: packs
 * holding only unused blobs are deleted; packs with some used ones are
 * repacked; index files are rewritten; leftovers removed.  Crash-safe (see
 * the spec for the order of operations). */
int kura_repo_prune(KuraRepo *repo, KuraPruneStats *ret_stats, KuraErr *err);
