/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Master keys and key slots (docs/format/repository.md §3).
 *
 * A slot is: kdf "argon2id", mem, passes, salt (16 bytes hex) and wrapped =
 * nonce(12) || AES-256-GCM(enc || id || fp) || tag(16) under the 32-byte
 * Argon2id key, with AAD "kura-keyslot\0" || repository ID (hex ASCII).  That
 * layout is exactly what KuraSealer produces, so the AEAD part reuses it.
 *
 * Slots are read from files anybody with write access to the repository can
 * change, so every field is checked and the KDF parameters are bounded before
 * any memory is committed to Argon2id.
 */
#include <pthread.h>

#include <sodium.h>

#include "common/kcommon.h"
#include "crypto/kcrypto.h"

#define SLOT_SALT_LEN 16
#define SLOT_MK_LEN (3 * KURA_KEY_LEN)
#define SLOT_WRAPPED_LEN (KURA_NONCE_LEN + SLOT_MK_LEN + KURA_TAG_LEN)

/* Bounds on the KDF parameters.  The lower ones are Argon2id's (libsodium's
 * MEMLIMIT_MIN / OPSLIMIT_MIN); the upper ones keep a planted slot from making
 * `kura` allocate or spin without end: 4 GiB is 64 times the default and
 * more than a backup host can be expected to spare, 64 passes at that size
 * would already take minutes. */
#define SLOT_MEM_MIN ((uint64_t) 8 << 10)
#define SLOT_MEM_MAX ((uint64_t) 4 << 30)
#define SLOT_PASSES_MIN 1U
#define SLOT_PASSES_MAX 64U

_Static_assert(SLOT_MEM_MIN >= crypto_pwhash_argon2id_MEMLIMIT_MIN, "Argon2id memory minimum");
_Static_assert(SLOT_PASSES_MIN >= crypto_pwhash_argon2id_OPSLIMIT_MIN, "Argon2id passes minimum");

/* ---- master key ------------------------------------------------------------ */

int kura_master_key_generate(KuraMasterKey *ret) {
        int r = kura_random(ret->enc, sizeof ret->enc);
        if (r >= 0)
                r = kura_random(ret->id, sizeof ret->id);
        if (r >= 0)
                r = kura_random(ret->fp, sizeof ret->fp);
        if (r < 0)
                kura_master_key_wipe(ret);
        return r;
}

void kura_master_key_wipe(KuraMasterKey *k) {
        if (k)
                kura_memzero(k, sizeof *k);
}

/* ---- helpers ----------------------------------------------------------------- */

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_ok;

static void sodium_setup(void) {
        /* sodium_init() returns 1 when already initialised elsewhere. */
        sodium_ok = sodium_init() >= 0;
}

static int sodium_get(void) {
        if (pthread_once(&sodium_once, sodium_setup) != 0 || !sodium_ok)
                return -EIO;
        return 0;
}

static void sealer_freep(KuraSealer **s) { kura_sealer_free(*s); }

/* AAD = "kura-keyslot\0" || repo_id; the NUL is part of the prefix. */
static uint8_t *slot_aad(const char *repo_id, size_t *ret_len) {
        static const char prefix[] = "kura-keyslot"; /* sizeof includes the NUL */
        size_t idl = strlen(repo_id);
        uint8_t *aad = malloc(sizeof prefix + idl);
        if (!aad)
                return NULL;
        memcpy(aad, prefix, sizeof prefix);
        memcpy(aad + sizeof prefix, repo_id, idl);
        *ret_len = sizeof prefix + idl;
        return aad;
}

static int derive_key(const char *password, const uint8_t salt[SLOT_SALT_LEN], uint64_t mem,
                      uint32_t passes, uint8_t key[KURA_KEY_LEN]) {
        int r = sodium_get();
        if (r < 0)
                return r;
        /* crypto_pwhash() fails only for out-of-range parameters (excluded
         * by the callers' bounds) or when it cannot allocate the memory. */
        if (crypto_pwhash(key, KURA_KEY_LEN, password, strlen(password), salt, passes, (size_t) mem,
                          crypto_pwhash_ALG_ARGON2ID13) != 0) {
                kura_memzero(key, KURA_KEY_LEN);
                return -ENOMEM;
        }
        return 0;
}

static void mk_serialize(const KuraMasterKey *mk, uint8_t out[SLOT_MK_LEN]) {
        memcpy(out, mk->enc, KURA_KEY_LEN);
        memcpy(out + KURA_KEY_LEN, mk->id, KURA_KEY_LEN);
        memcpy(out + 2 * KURA_KEY_LEN, mk->fp, KURA_KEY_LEN);
}

static void mk_deserialize(const uint8_t in[SLOT_MK_LEN], KuraMasterKey *mk) {
        memcpy(mk->enc, in, KURA_KEY_LEN);
        memcpy(mk->id, in + KURA_KEY_LEN, KURA_KEY_LEN);
        memcpy(mk->fp, in + 2 * KURA_KEY_LEN, KURA_KEY_LEN);
}

/* ---- wrap / unwrap --------------------------------------------------------- */

int kura_keyslot_wrap(const KuraMasterKey *mk, const char *password, const KuraKdfParams *p,
                      const char *repo_id, json_t **ret) {
        KuraKdfParams params = p ? *p : (KuraKdfParams) {
                .mem_bytes = KURA_KDF_DEFAULT_MEM,
                .passes = KURA_KDF_DEFAULT_PASSES,
        };
        uint8_t salt[SLOT_SALT_LEN], key[KURA_KEY_LEN], plain[SLOT_MK_LEN], wrapped[SLOT_WRAPPED_LEN];
        char salt_hex[2 * SLOT_SALT_LEN + 1], wrapped_hex[2 * SLOT_WRAPPED_LEN + 1];
        _cleanup_(sealer_freep) KuraSealer *sealer = NULL;
        _cleanup_free_ uint8_t *aad = NULL;
        size_t aad_len = 0;
        int r;

        if (!mk || !password || !repo_id || !ret)
                return -EINVAL;
        if (params.mem_bytes < SLOT_MEM_MIN || params.mem_bytes > SLOT_MEM_MAX ||
            params.passes < SLOT_PASSES_MIN || params.passes > SLOT_PASSES_MAX)
                return -EINVAL;

        aad = slot_aad(repo_id, &aad_len);
        if (!aad)
                return -ENOMEM;

        r = kura_random(salt, sizeof salt);
        if (r < 0)
                return r;
        r = derive_key(password, salt, params.mem_bytes, params.passes, key);
        if (r < 0)
                return r;
        r = kura_sealer_new(key, &sealer);
        kura_memzero(key, sizeof key);
        if (r < 0)
                return r;

        mk_serialize(mk, plain);
        r = kura_seal(sealer, aad, aad_len, plain, sizeof plain, wrapped);
        kura_memzero(plain, sizeof plain);
        if (r < 0)
                return r;

        kura_hex(salt, sizeof salt, salt_hex);
        kura_hex(wrapped, sizeof wrapped, wrapped_hex);

        json_t *o = json_pack("{s:s, s:I, s:I, s:s, s:s}",
                              "kdf", "argon2id",
                              "mem", (json_int_t) params.mem_bytes,
                              "passes", (json_int_t) params.passes,
                              "salt", salt_hex,
                              "wrapped", wrapped_hex);
        if (!o)
                return -ENOMEM;
        *ret = o;
        return 0;
}

/* A non-negative JSON integer within [min, max], or -EBADMSG. */
static int slot_uint(json_t *slot, const char *name, uint64_t min, uint64_t max, uint64_t *ret) {
        json_t *v = json_object_get(slot, name);
        if (!json_is_integer(v))
                return KURA_CORRUPT();
        json_int_t i = json_integer_value(v);
        if (i < 0 || (uint64_t) i < min || (uint64_t) i > max)
                return KURA_CORRUPT();
        *ret = (uint64_t) i;
        return 0;
}

static int slot_hex(json_t *slot, const char *name, uint8_t *out, size_t n) {
        const char *s = json_string_value(json_object_get(slot, name));
        if (!s || kura_unhex(s, out, n) < 0)
                return KURA_CORRUPT();
        return 0;
}

int kura_keyslot_unwrap(json_t *slot, const char *password, const char *repo_id, KuraMasterKey *ret) {
        uint8_t salt[SLOT_SALT_LEN], key[KURA_KEY_LEN], plain[SLOT_MK_LEN], wrapped[SLOT_WRAPPED_LEN];
        _cleanup_(sealer_freep) KuraSealer *sealer = NULL;
        _cleanup_free_ uint8_t *aad = NULL;
        size_t aad_len = 0, plain_len = 0;
        uint64_t mem = 0, passes = 0;
        int r;

        if (!password || !repo_id || !ret)
                return -EINVAL;
        if (!json_is_object(slot))
                return KURA_CORRUPT();

        json_t *kdf = json_object_get(slot, "kdf");
        if (!json_is_string(kdf))
                return KURA_CORRUPT();
        if (strcmp(json_string_value(kdf), "argon2id") != 0)
                return -EPROTONOSUPPORT;

        r = slot_uint(slot, "mem", SLOT_MEM_MIN, SLOT_MEM_MAX, &mem);
        if (r < 0)
                return r;
        r = slot_uint(slot, "passes", SLOT_PASSES_MIN, SLOT_PASSES_MAX, &passes);
        if (r < 0)
                return r;
        r = slot_hex(slot, "salt", salt, sizeof salt);
        if (r < 0)
                return r;
        r = slot_hex(slot, "wrapped", wrapped, sizeof wrapped);
        if (r < 0)
                return r;

        aad = slot_aad(repo_id, &aad_len);
        if (!aad)
                return -ENOMEM;

        r = derive_key(password, salt, mem, (uint32_t) passes, key);
        if (r < 0)
                return r;
        r = kura_sealer_new(key, &sealer);
        kura_memzero(key, sizeof key);
        if (r < 0)
                return r;

        /* A wrong password, a slot of another repository and altered salt or
         * parameters all yield a wrong key: the tag cannot tell them apart,
         * and all mean "this passphrase does not open this slot". */
        r = kura_unseal(sealer, aad, aad_len, wrapped, sizeof wrapped, plain, &plain_len);
        if (r == -EBADMSG)
                return -EKEYREJECTED;
        if (r < 0)
                return r;
        if (plain_len != SLOT_MK_LEN) {
                kura_memzero(plain, sizeof plain);
                return KURA_CORRUPT();
        }
        mk_deserialize(plain, ret);
        kura_memzero(plain, sizeof plain);
        return 0;
}
