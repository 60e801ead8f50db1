/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Hashing, sealing and fingerprints (see docs/format/repository.md §4–§5).
 *
 * Everything here is on the backup hot path (one hash and one seal per 1 MiB
 * chunk, millions of calls), so the OpenSSL algorithm objects are fetched once
 * per process and every hasher/sealer keeps its own contexts keyed once:
 * a call only re-initialises the per-message state (HMAC inner/outer state
 * restored from the saved key, GCM nonce) instead of re-fetching algorithms or
 * re-expanding keys.
 */
#include <limits.h>
#include <pthread.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/kcommon.h"
#include "crypto/kcrypto.h"

/* ---- algorithm objects, fetched once ------------------------------------- */

static pthread_once_t algs_once = PTHREAD_ONCE_INIT;
static EVP_MD *alg_sha256;
static EVP_MAC *alg_hmac;
static EVP_CIPHER *alg_aes_gcm;

static void algs_fetch(void) {
        /* Explicit fetches: the implicit EVP_sha256()-style objects do a
         * provider lookup on every *Init call, measurable at millions of
         * calls.  Kept for the process lifetime on purpose. */
        alg_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
        alg_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        alg_aes_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

static int algs_get(void) {
        if (pthread_once(&algs_once, algs_fetch) != 0)
                return -EIO;
        if (!alg_sha256 || !alg_hmac || !alg_aes_gcm)
                return -EIO;
        return 0;
}

/* ---- SHA-256 ------------------------------------------------------------- */

int kura_sha256(const void *p, size_t n, uint8_t out[KURA_HASH_LEN]) {
        int r = algs_get();
        if (r < 0)
                return r;
        unsigned len = 0;
        if (!EVP_Digest(n ? p : "", n, out, &len, alg_sha256, NULL) || len != KURA_HASH_LEN)
                return -EIO;
        return 0;
}

/* ---- chunk-ID hasher ------------------------------------------------------ */

struct KuraHasher {
        EVP_MAC_CTX *mac; /* keyed: HMAC-SHA256, key set once at _new */
        EVP_MD_CTX *md;   /* unkeyed: plain SHA-256 */
};

int kura_hasher_new(const uint8_t *key, KuraHasher **ret) {
        int r = algs_get();
        if (r < 0)
                return r;

        KuraHasher *h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;

        if (key) {
                OSSL_PARAM params[] = {
                        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0),
                        OSSL_PARAM_construct_end(),
                };
                h->mac = EVP_MAC_CTX_new(alg_hmac);
                if (!h->mac) {
                        kura_hasher_free(h);
                        return -ENOMEM;
                }
                /* The key is expanded into the HMAC inner/outer states here,
                 * once; kura_hasher_digest() re-inits with a NULL key, which
                 * restores those states without touching the key again. */
                if (!EVP_MAC_init(h->mac, key, KURA_KEY_LEN, params)) {
                        kura_hasher_free(h);
                        return -EIO;
                }
        } else {
                h->md = EVP_MD_CTX_new();
                if (!h->md) {
                        kura_hasher_free(h);
                        return -ENOMEM;
                }
        }
        *ret = h;
        return 0;
}

int kura_hasher_digest(KuraHasher *h, const void *p, size_t n, uint8_t out[KURA_HASH_LEN]) {
        if (h->mac) {
                size_t len = 0;
                if (!EVP_MAC_init(h->mac, NULL, 0, NULL) ||
                    (n > 0 && !EVP_MAC_update(h->mac, p, n)) ||
                    !EVP_MAC_final(h->mac, out, &len, KURA_HASH_LEN) || len != KURA_HASH_LEN)
                        return -EIO;
                return 0;
        }
        unsigned len = 0;
        if (!EVP_DigestInit_ex2(h->md, alg_sha256, NULL) ||
            (n > 0 && !EVP_DigestUpdate(h->md, p, n)) ||
            !EVP_DigestFinal_ex(h->md, out, &len) || len != KURA_HASH_LEN)
                return -EIO;
        return 0;
}

KuraHasher *kura_hasher_free(KuraHasher *h) {
        if (!h)
                return NULL;
        /* Both _free functions cleanse the key material they hold. */
        EVP_MAC_CTX_free(h->mac);
        EVP_MD_CTX_free(h->md);
        free(h);
        return NULL;
}

/* ---- sealer ---------------------------------------------------------------- */

struct KuraSealer {
        uint8_t nonce[KURA_NONCE_LEN]; /* next nonce: random start, then a counter */
        uint32_t nonce_left;           /* messages until a fresh random start */
        EVP_CIPHER_CTX *enc; /* encrypted: keyed once for sealing */
        EVP_CIPHER_CTX *dec; /* encrypted: keyed once for unsealing */
        EVP_MD_CTX *md;      /* unencrypted: SHA-256 integrity tag */
};

/* EVP_*Update() take int lengths; feed large buffers in pieces (GCM is a
 * stream mode, so the split does not change the output). */
#define EVP_PIECE ((size_t) 1 << 30)

/* GCM limit: 2^39 - 256 bits of plaintext per nonce. */
#define GCM_MAX_PT (((uint64_t) 1 << 36) - 32)

int kura_sealer_new(const uint8_t *key, KuraSealer **ret) {
        int r = algs_get();
        if (r < 0)
                return r;

        KuraSealer *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;

        if (key) {
                s->enc = EVP_CIPHER_CTX_new();
                s->dec = EVP_CIPHER_CTX_new();
                if (!s->enc || !s->dec) {
                        kura_sealer_free(s);
                        return -ENOMEM;
                }
                /* Key schedule computed once; each message only sets its
                 * nonce (the default GCM IV length is the 12 bytes we use). */
                if (!EVP_EncryptInit_ex2(s->enc, alg_aes_gcm, key, NULL, NULL) ||
                    !EVP_DecryptInit_ex2(s->dec, alg_aes_gcm, key, NULL, NULL)) {
                        kura_sealer_free(s);
                        return -EIO;
                }
        } else {
                s->md = EVP_MD_CTX_new();
                if (!s->md) {
                        kura_sealer_free(s);
                        return -ENOMEM;
                }
        }
        *ret = s;
        return 0;
}

KuraSealer *kura_sealer_free(KuraSealer *s) {
        if (!s)
                return NULL;
        /* EVP_CIPHER_CTX_free() cleanses the expanded key. */
        EVP_CIPHER_CTX_free(s->enc);
        EVP_CIPHER_CTX_free(s->dec);
        EVP_MD_CTX_free(s->md);
        free(s);
        return NULL;
}

size_t kura_seal_overhead(const KuraSealer *s) {
        return s->enc ? KURA_NONCE_LEN + KURA_TAG_LEN : KURA_TAG_LEN;
}

/* Feed AAD (out == NULL) or data through an initialised GCM context. */
static int gcm_update(EVP_CIPHER_CTX *c, bool encrypt, uint8_t *out, const uint8_t *in, size_t n) {
        while (n > 0) {
                size_t piece = KURA_MIN(n, EVP_PIECE);
                int outl = 0;
                int ok = encrypt ? EVP_EncryptUpdate(c, out, &outl, in, (int) piece)
                                 : EVP_DecryptUpdate(c, out, &outl, in, (int) piece);
                if (!ok || (out && (size_t) outl != piece))
                        return -EIO;
                in += piece;
                if (out)
                        out += piece;
                n -= piece;
        }
        return 0;
}

/* SHA-256(aad || pt || pt2) for unencrypted integrity tags. */
static int plain_tag2(KuraSealer *s, const void *aad, size_t aad_len, const void *pt, size_t pt_len,
                      const void *pt2, size_t pt2_len, uint8_t digest[KURA_HASH_LEN]) {
        unsigned len = 0;
        if (!EVP_DigestInit_ex2(s->md, alg_sha256, NULL) ||
            (aad_len > 0 && !EVP_DigestUpdate(s->md, aad, aad_len)) ||
            (pt_len > 0 && !EVP_DigestUpdate(s->md, pt, pt_len)) ||
            (pt2_len > 0 && !EVP_DigestUpdate(s->md, pt2, pt2_len)) ||
            !EVP_DigestFinal_ex(s->md, digest, &len) || len != KURA_HASH_LEN)
                return -EIO;
        return 0;
}

static int plain_tag(KuraSealer *s, const void *aad, size_t aad_len, const void *pt, size_t pt_len,
                     uint8_t digest[KURA_HASH_LEN]) {
        return plain_tag2(s, aad, aad_len, pt, pt_len, NULL, 0, digest);
}

int kura_seal(KuraSealer *s, const void *aad, size_t aad_len, const void *pt, size_t pt_len,
              uint8_t *out) {
        return kura_seal2(s, aad, aad_len, pt, pt_len, NULL, 0, out);
}

int kura_seal2(KuraSealer *s, const void *aad, size_t aad_len, const void *pt, size_t pt_len, const void *pt2,
               size_t pt2_len, uint8_t *out) {
        int r;

        if (!s->enc) {
                uint8_t digest[KURA_HASH_LEN];
                r = plain_tag2(s, aad, aad_len, pt, pt_len, pt2, pt2_len, digest);
                if (r < 0)
                        return r;
                if (pt_len > 0)
                        memcpy(out, pt, pt_len);
                if (pt2_len > 0)
                        memcpy(out + pt_len, pt2, pt2_len);
                memcpy(out + pt_len + pt2_len, digest, KURA_TAG_LEN);
                return 0;
        }

        if ((uint64_t) pt_len > GCM_MAX_PT || (uint64_t) pt2_len > GCM_MAX_PT - pt_len)
                return -EMSGSIZE;

        /* Nonces: a random 96-bit starting point per sealer (re-drawn every
         * 2^20 messages), incremented as a 64-bit counter in its last 8
         * bytes for each message.  Within a run they never repeat; runs of
         * different sealers collide with probability about
         * runs^2 * 2^20 / 2^96, as safe as one random nonce per message
         * (NIST SP 800-38D) without a getrandom() call per chunk. */
        uint8_t *nonce = out, *ct = out + KURA_NONCE_LEN, *tag = ct + pt_len + pt2_len;
        if (s->nonce_left == 0) {
                r = kura_random(s->nonce, KURA_NONCE_LEN);
                if (r < 0)
                        return r;
                s->nonce_left = 1U << 20;
        }
        memcpy(nonce, s->nonce, KURA_NONCE_LEN);
        s->nonce_left--;
        for (int i = 4; i < KURA_NONCE_LEN && ++s->nonce[i] == 0; i++)
                ;

        int outl = 0;
        if (!EVP_EncryptInit_ex2(s->enc, NULL, NULL, nonce, NULL))
                return -EIO;
        r = gcm_update(s->enc, true, NULL, aad, aad_len);
        if (r < 0)
                return r;
        r = gcm_update(s->enc, true, ct, pt, pt_len);
        if (r < 0)
                return r;
        /* GCM is a stream mode: two updates give the bytes of one. */
        r = gcm_update(s->enc, true, ct + pt_len, pt2, pt2_len);
        if (r < 0)
                return r;
        if (!EVP_EncryptFinal_ex(s->enc, ct + pt_len + pt2_len, &outl) || outl != 0 ||
            !EVP_CIPHER_CTX_ctrl(s->enc, EVP_CTRL_GCM_GET_TAG, KURA_TAG_LEN, tag))
                return -EIO;
        return 0;
}

int kura_unseal(KuraSealer *s, const void *aad, size_t aad_len, const uint8_t *in, size_t in_len,
                uint8_t *out, size_t *ret_len) {
        size_t overhead = kura_seal_overhead(s);
        int r;

        if (in_len < overhead)
                return KURA_CORRUPT();

        if (!s->enc) {
                size_t pt_len = in_len - KURA_TAG_LEN;
                uint8_t digest[KURA_HASH_LEN];
                r = plain_tag(s, aad, aad_len, in, pt_len, digest);
                if (r < 0) {
                        kura_memzero(out, pt_len);
                        return r;
                }
                if (CRYPTO_memcmp(digest, in + pt_len, KURA_TAG_LEN) != 0) {
                        kura_memzero(out, pt_len);
                        return KURA_CORRUPT();
                }
                if (pt_len > 0)
                        memcpy(out, in, pt_len);
                if (ret_len)
                        *ret_len = pt_len;
                return 0;
        }

        size_t pt_len = in_len - overhead;
        const uint8_t *ct = in + KURA_NONCE_LEN;
        uint8_t tag[KURA_TAG_LEN];
        int outl = 0;

        /* The tag is copied because the ctrl interface takes a non-const
         * pointer. */
        memcpy(tag, ct + pt_len, KURA_TAG_LEN);
        if (!EVP_DecryptInit_ex2(s->dec, NULL, NULL, in, NULL) ||
            !EVP_CIPHER_CTX_ctrl(s->dec, EVP_CTRL_GCM_SET_TAG, KURA_TAG_LEN, tag)) {
                r = -EIO;
                goto fail;
        }
        r = gcm_update(s->dec, false, NULL, aad, aad_len);
        if (r < 0)
                goto fail;
        r = gcm_update(s->dec, false, out, ct, pt_len);
        if (r < 0)
                goto fail;
        /* The plaintext written so far is unauthenticated until Final
         * succeeds; on failure it is wiped before the caller can see it. */
        if (EVP_DecryptFinal_ex(s->dec, out + pt_len, &outl) <= 0 || outl != 0) {
                r = KURA_CORRUPT();
                goto fail;
        }
        if (ret_len)
                *ret_len = pt_len;
        return 0;

fail:
        kura_memzero(out, pt_len);
        return r;
}

/* ---- fingerprint ------------------------------------------------------------ */

/*
 * XXH3-128 with a custom secret (XXH3_128bits_withSecret), not with a seed:
 * a seed only perturbs 64 bits, a 192-byte secret derived from the whole
 * 256-bit fp key makes fingerprints of different repositories unrelated.
 * Derivation (ours, so it never changes with the xxhash version):
 *     secret[32i .. 32i+32) = HMAC-SHA256(fp key, "kura-fp-secret" || byte i), i = 0..5.
 * Not cryptographic: the fingerprint cache only uses it to skip re-hashing.
 *
 * The derivation costs a few HMACs, so each thread caches the secret of the
 * last key it saw (the fp key is one per repository, so this is "derive
 * once").  The cache lives in thread-local storage for the thread's lifetime
 * and is not wiped at thread exit: it holds only the fp key, which protects
 * nothing but the local cache's privacy.
 */
#define FP_SECRET_LEN 192
_Static_assert(FP_SECRET_LEN >= XXH3_SECRET_SIZE_MIN, "XXH3 secret too short");

static __thread struct {
        bool valid;
        uint8_t key[KURA_KEY_LEN];
        uint8_t secret[FP_SECRET_LEN];
} fp_cache;

static bool fp_derive(const uint8_t key[KURA_KEY_LEN], uint8_t secret[FP_SECRET_LEN]) {
        static const char label[] = "kura-fp-secret";
        uint8_t msg[sizeof label]; /* label without NUL + counter byte */
        memcpy(msg, label, sizeof label - 1);

        if (algs_get() < 0)
                return false;
        EVP_MAC_CTX *mac = EVP_MAC_CTX_new(alg_hmac);
        if (!mac)
                return false;
        OSSL_PARAM params[] = {
                OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0),
                OSSL_PARAM_construct_end(),
        };
        bool ok = true;
        for (unsigned i = 0; ok && i < FP_SECRET_LEN / KURA_HASH_LEN; i++) {
                size_t len = 0;
                msg[sizeof label - 1] = (uint8_t) i;
                ok = EVP_MAC_init(mac, key, KURA_KEY_LEN, params) &&
                     EVP_MAC_update(mac, msg, sizeof msg) &&
                     EVP_MAC_final(mac, secret + i * KURA_HASH_LEN, &len, KURA_HASH_LEN) &&
                     len == KURA_HASH_LEN;
        }
        EVP_MAC_CTX_free(mac);
        return ok;
}

/* Canonical (big-endian) form: the same bytes on every host. */
static void fp_emit(XXH128_hash_t h, uint8_t out[16]) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, h);
        memcpy(out, c.digest, 16);
}

void kura_fingerprint(const uint8_t key[KURA_KEY_LEN], const void *p, size_t n, uint8_t out[16]) {
        if (!fp_cache.valid || CRYPTO_memcmp(fp_cache.key, key, KURA_KEY_LEN) != 0) {
                fp_cache.valid = false;
                if (!fp_derive(key, fp_cache.secret)) {
                        /* Only reachable if OpenSSL cannot run HMAC at all
                         * (then nothing else works either).  The function
                         * cannot fail by contract: fall back to xxhash's own
                         * secret derivation, still keyed and deterministic,
                         * and do not cache it (a later call may use the
                         * normal secret: that costs cache misses, never a
                         * false match within one derivation). */
                        uint8_t secret[FP_SECRET_LEN];
                        XXH3_generateSecret(secret, sizeof secret, key, KURA_KEY_LEN);
                        fp_emit(XXH3_128bits_withSecret(p, n, secret, sizeof secret), out);
                        kura_memzero(secret, sizeof secret);
                        return;
                }
                memcpy(fp_cache.key, key, KURA_KEY_LEN);
                fp_cache.valid = true;
        }
        fp_emit(XXH3_128bits_withSecret(p, n, fp_cache.secret, FP_SECRET_LEN), out);
}
