/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * Private to lib/repo (and its unit tests and fuzzers): the repository
 * object, the in-memory index, and the codecs of the on-disk formats of
 * docs/format/repository.md.  Every decoder takes untrusted bytes: it checks
 * every length (KuraBufReader) and returns KURA_CORRUPT() (-EBADMSG) on
 * anything malformed, never asserts.
 */
#include <pthread.h>

#include <jansson.h>

#include "common/kcommon.h"
#include "common/kio.h"
#include "crypto/kcrypto.h"
#include "kura/repo.h"

#define KURA_PACK_TARGET_SIZE (32U << 20)  /* a pack is closed once it reaches this */
#define KURA_LIST_MAX_IDS 4096             /* IDs per list blob */
#define KURA_META_MAX (256U << 20)         /* largest index file / manifest / pack header accepted */
#define KURA_DEFAULT_ZSTD_LEVEL 1  /* ~650 MB/s a core on disk images; see bench/ */
#define KURA_STALE_LOCK_AGE_DEFAULT (24 * 3600)

/* Seal contexts (AAD prefixes), see §4 of the spec.  The NUL is part of it. */
#define KURA_AAD_BLOB    "kura-blob"       /* + "\0" + type(u8) + id(32) */
#define KURA_AAD_PACKHDR "kura-packhdr"
#define KURA_AAD_INDEX   "kura-index"
#define KURA_AAD_VERSION "kura-version"
#define KURA_AAD_KEYSLOT "kura-keyslot"

/* One index entry, 44 bytes in memory (the budget is <= 64 bytes per chunk).
 * length < 2^24 always holds (largest sealed blob: 8 MiB + 29 bytes), so the
 * blob type lives in the top byte of type_length. */
typedef struct KuraIndexEntry {
        KuraId id;
        uint32_t pack;         /* number of the pack in the KuraIndex pack table */
        uint32_t offset;       /* of the sealed blob in the pack */
        uint32_t type_length;  /* type << 24 | sealed length */
} KuraIndexEntry;
_Static_assert(sizeof(KuraIndexEntry) == 44, "index entry must stay 44 bytes");

static inline uint32_t kura_ie_length(const KuraIndexEntry *e) { return e->type_length & 0xffffffu; }
static inline uint8_t kura_ie_type(const KuraIndexEntry *e) { return (uint8_t) (e->type_length >> 24); }
static inline uint32_t kura_ie_pack_tl(uint8_t type, uint32_t length) { return (uint32_t) type << 24 | (length & 0xffffffu); }

/* ---- in-memory index (index.c) ------------------------------------------ */

typedef struct KuraIndex KuraIndex;
int kura_index_new(KuraIndex **ret);
KuraIndex *kura_index_free(KuraIndex *idx);
/* Intern a pack ID, returning its number (stable for the index's life). */
int kura_index_pack_number(KuraIndex *idx, const KuraId *pack_id, uint32_t *ret);
const KuraId *kura_index_pack_id(const KuraIndex *idx, uint32_t n);
size_t kura_index_npacks(const KuraIndex *idx);
/* Add an entry; an ID already present keeps its first entry (returns 0 then, 1 if added). */
int kura_index_add(KuraIndex *idx, const KuraIndexEntry *e);
bool kura_index_lookup(const KuraIndex *idx, const KuraId *id, KuraIndexEntry *ret);
size_t kura_index_count(const KuraIndex *idx);
/* Visit every entry (order unspecified); stops at and returns the first negative fn result. */
int kura_index_foreach(const KuraIndex *idx, int (*fn)(void *ud, const KuraIndexEntry *e), void *ud);

/* ---- codecs ------------------------------------------------------------- */

/* The entries of one pack; in KuraPackEntries the .pack field of entries is unused. */
typedef struct KuraPackEntries {
        KuraId pack_id;
        KuraIndexEntry *entries;
        size_t n;
} KuraPackEntries;
void kura_pack_entries_free(KuraPackEntries *p, size_t n);

/* Index file plaintext (§6). */
int kura_index_file_encode(const KuraPackEntries *packs, size_t npacks, KuraBuf *out);
int kura_index_file_decode(const uint8_t *p, size_t n, KuraPackEntries **ret, size_t *ret_n);

/* Pack header plaintext (§5). */
int kura_pack_header_encode(const KuraIndexEntry *e, size_t n, KuraBuf *out);
int kura_pack_header_decode(const uint8_t *p, size_t n, KuraIndexEntry **ret, size_t *ret_n);

/* List blob plaintext (§7.1). */
int kura_list_encode(const KuraId *ids, size_t n, KuraBuf *out);
int kura_list_decode(const uint8_t *p, size_t n, KuraId **ret, size_t *ret_n);

/* Config (§2): parse and validate; -EPROTONOSUPPORT for a newer version or
 * unknown incompatible feature, -EBADMSG if malformed. */
typedef struct KuraRepoConfig {
        int version;
        char id[65];
        bool encrypted;
        int zstd_level;
        bool ro_compat_unknown; /* unknown ro_compat feature: read-only use only */
} KuraRepoConfig;
int kura_config_decode(const uint8_t *p, size_t n, KuraRepoConfig *ret);

/* Manifest (§7): JSON plaintext (after zstd decompression) <-> KuraVersion. */
int kura_version_encode(const KuraVersion *v, KuraBuf *out /* JSON text */);
int kura_version_decode(const uint8_t *p, size_t n, KuraVersion **ret);

/* json_dumps() that never returns malformed text: jansson 2.14 can drop a
 * key on allocation failure and still return a string, so the result is
 * parsed back; NULL (treat as -ENOMEM) if dumping or that check fails. */
char *kura_json_dumps_checked(const json_t *o, size_t flags);

/* ---- the repository object --------------------------------------------- */

struct KuraPackWriter;

struct KuraRepo {
        char *path;
        char id[65];
        bool encrypted;
        int zstd_level;
        KuraMasterKey mk;             /* all zero when unencrypted (fp key derived from id) */
        char slot_id[17];             /* key slot used to open */
        KuraLockMode lock_mode;
        char *lock_file;              /* our lock file, NULL if none */
        bool unlocked;                /* SHARED_OR_NONE fell back to no lock */
        bool read_only_compat;        /* unknown ro_compat feature */
        int64_t stale_lock_age_s;

        pthread_mutex_t meta_lock;    /* guards meta_sealer */
        KuraSealer *meta_sealer;

        pthread_mutex_t index_lock;   /* guards index */
        KuraIndex *index;
        char **index_files;           /* names (hex) of the index files loaded */
        size_t index_files_damaged;   /* index files that could not be read at open */
        size_t nindex_files;

        pthread_mutex_t pack_lock;    /* guards pw and session_packs */
        struct KuraPackWriter *pw;    /* the open pack, NULL if none */
        KuraPackEntries *session_packs; /* finished packs not yet in an index file */
        size_t nsession_packs;
};

/* Seal / unseal a metadata object (pack header, index, manifest) with
 * context ctx (one of KURA_AAD_*; the trailing NUL is included).  Thread-safe. */
int kura_repo_seal(KuraRepo *repo, const char *ctx, const void *pt, size_t n, KuraBuf *out);
int kura_repo_unseal(KuraRepo *repo, const char *ctx, const uint8_t *in, size_t n, KuraBuf *out);

/* "REPO/data/xx/<hex>" etc.; NULL on ENOMEM. */
char *kura_repo_pack_path(const KuraRepo *repo, const KuraId *pack_id);
char *kura_repo_subpath(const KuraRepo *repo, const char *sub, const char *name /* may be NULL */);

/* Write bytes as REPO/<subdir>/<sha256-hex of bytes> (crash-safe); *ret_id (may be NULL) = that SHA-256. */
int kura_repo_write_object(KuraRepo *repo, const char *subdir, const void *bytes, size_t n, KuraId *ret_id);

/* (Re)load the index from all index files.  Unreadable index files fail
 * with KURA-E-DAMAGED unless tolerant (then skipped, counted in *ret_bad). */
int kura_repo_load_index(KuraRepo *repo, bool tolerant, size_t *ret_bad, KuraErr *err);

/* Read and unseal the header of the pack file at path; *ret_size (may be NULL) = file size. */
int kura_pack_read_header(KuraRepo *repo, const char *path, KuraIndexEntry **ret, size_t *ret_n,
                          uint64_t *ret_size, KuraErr *err);

/* Read, unseal, decompress one blob given its entry and pack path and verify
 * its ID (used by get, check --read-data and prune's repack).  buf holds
 * KURA_BLOB_MAX bytes. */
int kura_repo_read_blob_at(KuraRepoWorker *w, const char *pack_path, const KuraIndexEntry *e, void *buf,
                           size_t *ret_len, KuraErr *err);

/* ---- additions by lib/repo's core (index.c, pack.c, store.c, lock.c) ----- */

/* Largest sealed blob a writer produces: comp byte + raw plaintext + the
 * largest seal overhead (nonce 12 + tag 16).  Readers reject longer ones. */
#define KURA_SEALED_BLOB_MAX (KURA_BLOB_MAX + 1 + 28)
#define KURA_PACK_MAGIC "KPK1"
#define KURA_PACK_NUMBER_INFLIGHT UINT32_MAX

/* One record type(u8) id(32) offset(le32) length(le32) of a pack header or
 * index file; -EBADMSG on a short read, an unknown type, a length of 0 or
 * above KURA_SEALED_BLOB_MAX, or a reserved ID.  e->pack is set to 0. */
int kura_entry_record_decode(KuraBufReader *br, KuraIndexEntry *e);

/* Parse a lock file (§8) into *li (name not set); -EBADMSG if it is not one. */
int kura_lock_parse(const uint8_t *data, size_t n, KuraLockInfo *li);

/* More of the in-memory index (caller holds repo->index_lock for all of them). */
/* A number for a pack still being written (its ID is not known yet). */
int kura_index_pack_new_pending(KuraIndex *idx, uint32_t *ret);
/* Name a pending pack once its ID is known.  -EINVAL if n is not pending. */
int kura_index_pack_set_id(KuraIndex *idx, uint32_t n, const KuraId *pack_id);
bool kura_index_pack_is_pending(const KuraIndex *idx, uint32_t n);
/* kura_index_pack_id() returns NULL for a pending pack. */
/* Overwrite the entry with e->id (-ENOENT if absent). */
int kura_index_update(KuraIndex *idx, const KuraIndexEntry *e);
/* Forget every entry of pack n (after a pack failed to be written). */
int kura_index_drop_pack(KuraIndex *idx, uint32_t pack);
/* Fast loading: append a pack's entries unsorted (their .pack is set to the
 * interned number of p->pack_id), then sort once with finish_bulk (which
 * keeps one entry per ID).  Lookups are only valid after finish_bulk. */
int kura_index_add_bulk(KuraIndex *idx, const KuraPackEntries *p);
int kura_index_finish_bulk(KuraIndex *idx);
/* Reserve id for a put in progress: 1 = reserved by the caller, 0 = already
 * indexed or reserved by another thread.  Reservations are not entries
 * (lookup does not see them); unreserve after adding the entry or on failure. */
int kura_index_reserve(KuraIndex *idx, const KuraId *id);
void kura_index_unreserve(KuraIndex *idx, const KuraId *id);
bool kura_index_inflight(const KuraIndex *idx, const KuraId *id);
/* Bytes of heap the index uses (for tests and `kura check` statistics). */
size_t kura_index_memory(const KuraIndex *idx);

/* Pack writer (pack.c).  All calls under repo->pack_lock. */
typedef struct KuraPackWriter KuraPackWriter;
/* Start a pack: a temporary file in REPO/data/, and a pending pack number. */
int kura_pack_writer_new(KuraRepo *repo, KuraPackWriter **ret, KuraErr *err);
/* Append one sealed blob; *ret_offset = its offset in the pack. */
int kura_pack_writer_append(KuraPackWriter *pw, KuraBlobType type, const KuraId *id, const void *sealed,
                            size_t n, uint32_t *ret_offset, KuraErr *err);
uint64_t kura_pack_writer_size(const KuraPackWriter *pw);
size_t kura_pack_writer_count(const KuraPackWriter *pw);
uint32_t kura_pack_writer_number(const KuraPackWriter *pw);
/* An fd to read the unfinished pack (owned by pw), or a negative errno. */
int kura_pack_writer_read_fd(KuraPackWriter *pw);
/* Write the header and trailer, commit to data/xx/<id>, name the pending
 * pack in repo->index (takes index_lock) and move the entries to
 * repo->session_packs.  Frees pw in every case; on failure the pack's
 * entries are dropped from the index. */
int kura_pack_writer_finish(KuraRepo *repo, KuraPackWriter *pw, KuraErr *err);
/* Drop an unfinished pack (temporary file removed, entries dropped from the index). */
void kura_pack_writer_abort(KuraRepo *repo, KuraPackWriter *pw);

/* Pack trailer helpers: parse the last 8 bytes (le32 header length + magic). */
int kura_pack_trailer_decode(const uint8_t tail[8], uint64_t file_size, uint32_t *ret_hdr_len);

/* Locks (lock.c). */
int kura_lock_take(KuraRepo *repo, KuraLockMode mode, KuraErr *err);
void kura_lock_release(KuraRepo *repo);

/* Config encoding (repo.c), the inverse of kura_config_decode. */
int kura_config_encode(const KuraRepoConfig *c, int64_t created_ns, KuraBuf *out);

/* This host's name and the current user's name (repo.c). */
void kura_host_user(char host[128], char user[64]);
/* Wrap mk under password and write it as a new key slot keys/<16 hex>
 * (with id, created, host, user, access "full"); ret_id gets the slot ID.
 * kdf_mem/kdf_passes 0 mean the defaults. */
int kura_keyslot_write(const char *repo_path, const char *repo_id, const KuraMasterKey *mk, const char *password,
                       uint64_t kdf_mem, uint32_t kdf_passes, char ret_id[17], KuraErr *err);

/*
 * Threading and lifetimes of the repository core (store.c, pack.c, index.c):
 *  - KuraRepoWorker: one per thread, never shared; free all workers before
 *    kura_repo_close().  put/get/hash/read_blob_at allocate nothing per blob.
 *  - Lock order: pack_lock before index_lock; never take pack_lock while
 *    holding index_lock.  meta_lock is a leaf (taken by kura_repo_seal/unseal).
 *  - kura_repo_has() is true for IDs another thread is storing right now
 *    (reserved); such a blob becomes readable when that put returns.  If a
 *    put fails (e.g. ENOSPC), the whole open pack is dropped, including blobs
 *    whose put already returned 1: after a put error the session's unflushed
 *    blobs must be considered lost (fail the backup; do not save a version).
 *  - kura_repo_flush() and kura_repo_load_index() must not run concurrently
 *    with put.  load_index replaces repo->index: pack numbers and entries
 *    copied out of the old index are meaningless afterwards.
 *  - Pack numbers (KuraIndexEntry.pack) are private to one KuraIndex.
 */
