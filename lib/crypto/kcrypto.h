/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * lib/crypto: hashing, sealing (AEAD), key derivation and key slots.
 * Knows nothing of the repository layout.  Uses OpenSSL (SHA-256, HMAC,
 * AES-256-GCM) and libsodium (Argon2id).  All contexts are per thread: create
 * one per worker, they are not shared.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "kura/errors.h"

#define KURA_HASH_LEN 32
#define KURA_KEY_LEN 32
#define KURA_NONCE_LEN 12
#define KURA_TAG_LEN 16

/* The repository's master key material, created once at `kura init` and
 * wrapped by every key slot.  Always wipe with kura_master_key_wipe(). */
typedef struct KuraMasterKey {
        uint8_t enc[KURA_KEY_LEN]; /* AES-256-GCM key for every sealed object */
        uint8_t id[KURA_KEY_LEN];  /* HMAC-SHA256 key for chunk IDs */
        uint8_t fp[KURA_KEY_LEN];  /* key for the local fingerprint cache's fast hash */
} KuraMasterKey;

int kura_master_key_generate(KuraMasterKey *ret);
void kura_master_key_wipe(KuraMasterKey *k);

/* One-shot SHA-256.  Returns 0 or -ENOMEM/-EIO. */
int kura_sha256(const void *p, size_t n, uint8_t out[KURA_HASH_LEN]);

/* Chunk-ID hasher: HMAC-SHA256 with key (encrypted repositories) or plain
 * SHA-256 (key == NULL).  Reusable; one per thread.  _free accepts NULL and
 * wipes the key. */
typedef struct KuraHasher KuraHasher;
int kura_hasher_new(const uint8_t *key /* KURA_KEY_LEN or NULL */, KuraHasher **ret);
int kura_hasher_digest(KuraHasher *h, const void *p, size_t n, uint8_t out[KURA_HASH_LEN]);
KuraHasher *kura_hasher_free(KuraHasher *h);

/* Sealer: every object kura stores is sealed.
 *  - encrypted (key != NULL): out = nonce[12] || AES-256-GCM(pt, aad) || tag[16],
 *    with a fresh random nonce;
 *  - unencrypted (key == NULL): out = pt || first 16 bytes of SHA-256(aad || pt)
 *    (integrity only).
 * kura_seal_overhead() gives the size difference (28 or 16).
 * kura_unseal() returns -EBADMSG if the tag does not verify (wrong key, altered
 * bytes, wrong aad) and never writes unauthenticated plaintext to the caller
 * on failure (out is zeroed).  out may not overlap in. */
typedef struct KuraSealer KuraSealer;
int kura_sealer_new(const uint8_t *key /* KURA_KEY_LEN or NULL */, KuraSealer **ret);
KuraSealer *kura_sealer_free(KuraSealer *s);
size_t kura_seal_overhead(const KuraSealer *s);
int kura_seal(KuraSealer *s, const void *aad, size_t aad_len, const void *pt, size_t pt_len,
              uint8_t *out /* pt_len + overhead */);
int kura_unseal(KuraSealer *s, const void *aad, size_t aad_len, const uint8_t *in, size_t in_len,
                uint8_t *out /* in_len - overhead */, size_t *ret_len);
/* kura_seal() of the concatenation pt1 ‖ pt2 without building it (the same
 * output bytes); lets a caller prepend a header to a large buffer for free. */
int kura_seal2(KuraSealer *s, const void *aad, size_t aad_len, const void *pt1, size_t n1, const void *pt2,
               size_t n2, uint8_t *out /* n1 + n2 + overhead */);

/* Fast keyed fingerprint (XXH3-128 with a secret derived from key) for the
 * fingerprint cache; not cryptographic. */
void kura_fingerprint(const uint8_t key[KURA_KEY_LEN], const void *p, size_t n, uint8_t out[16]);

/* ---- key slots ---------------------------------------------------------- */

typedef struct KuraKdfParams {
        uint64_t mem_bytes; /* Argon2id memory; default 64 MiB, min 8 KiB */
        uint32_t passes;    /* Argon2id passes (opslimit); default 3, min 1 */
} KuraKdfParams;

#define KURA_KDF_DEFAULT_MEM (64ULL << 20)
#define KURA_KDF_DEFAULT_PASSES 3

/* Wrap mk under password: returns a new JSON object (caller owns, json_decref)
 * holding "kdf", "mem", "passes", "salt", "wrapped" (hex), bound to repo_id
 * (AAD) so a slot cannot be moved to another repository.  The caller adds
 * descriptive fields (id, created, host, user, access). */
int kura_keyslot_wrap(const KuraMasterKey *mk, const char *password, const KuraKdfParams *p,
                      const char *repo_id, json_t **ret);
/* Unwrap: -EKEYREJECTED if the password is wrong (tag mismatch), -EBADMSG if
 * the slot is malformed, -EPROTONOSUPPORT for an unknown kdf. */
int kura_keyslot_unwrap(json_t *slot, const char *password, const char *repo_id, KuraMasterKey *ret);
