/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Unit tests for lib/crypto: known-answer tests of the primitives as kura uses
 * them, the sealed-object layouts of docs/format/repository.md §4, tamper
 * detection, key slots (§3) and the fingerprint.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <xxhash.h>

#include "common/kcommon.h"
#include "crypto/kcrypto.h"

/* ---- helpers --------------------------------------------------------------- */

static size_t unhex_alloc(const char *hex, uint8_t **ret) {
        size_t n = strlen(hex) / 2;
        uint8_t *b = malloc(n ? n : 1);
        assert_non_null(b);
        assert_int_equal(kura_unhex(hex, b, n), 0);
        *ret = b;
        return n;
}

static void assert_hex(const uint8_t *p, size_t n, const char *expect) {
        char *h = malloc(2 * n + 1);
        assert_non_null(h);
        kura_hex(p, n, h);
        assert_string_equal(h, expect);
        free(h);
}

static bool all_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed) {
        /* xorshift: deterministic, incompressible-looking test data */
        uint32_t x = seed ? seed : 1;
        for (size_t i = 0; i < n; i++) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                p[i] = (uint8_t) x;
        }
}

static const uint8_t key_a[KURA_KEY_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                             17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
static const uint8_t key_b[KURA_KEY_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                             17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 33 };

/* ---- SHA-256 (FIPS 180-2 / NIST examples) ---------------------------------- */

static const struct {
        const char *msg, *digest;
} sha_vectors[] = {
        { "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
        { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
          "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
        { "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
};

static void test_sha256_kat(void **state) {
        KuraHasher *h = NULL;
        uint8_t out[KURA_HASH_LEN];

        assert_int_equal(kura_hasher_new(NULL, &h), 0);
        /* twice round, so a reused hasher context is covered */
        for (int round = 0; round < 2; round++)
                for (size_t i = 0; i < ELEMENTSOF(sha_vectors); i++) {
                        memset(out, 0, sizeof out);
                        assert_int_equal(kura_sha256(sha_vectors[i].msg, strlen(sha_vectors[i].msg), out), 0);
                        assert_hex(out, sizeof out, sha_vectors[i].digest);
                        memset(out, 0, sizeof out);
                        assert_int_equal(kura_hasher_digest(h, sha_vectors[i].msg, strlen(sha_vectors[i].msg), out), 0);
                        assert_hex(out, sizeof out, sha_vectors[i].digest);
                }
        assert_null(kura_hasher_free(h));
        assert_null(kura_hasher_free(NULL));
}

/* One million 'a' (FIPS 180-2 appendix B.3), through a 1 MiB-class buffer. */
static void test_sha256_million_a(void **state) {
        size_t n = 1000000;
        uint8_t *buf = malloc(n), out[KURA_HASH_LEN];
        assert_non_null(buf);
        memset(buf, 'a', n);
        assert_int_equal(kura_sha256(buf, n, out), 0);
        assert_hex(out, sizeof out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        free(buf);
}

/* ---- HMAC-SHA256 (RFC 4231) ---------------------------------------------------
 * kura's hasher takes 32-byte keys only.  HMAC pads any key shorter than the
 * 64-byte block with zeros, so the RFC's 20-, 4- and 25-byte keys zero-padded
 * to 32 bytes give the RFC's results: a genuine known-answer test. */

static const struct {
        const char *key_hex, *data_hex, *mac;
} hmac_vectors[] = {
        /* test case 1 */
        { "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "4869205468657265",
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
        /* test case 2 */
        { "4a656665", "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
        /* test case 4 */
        { "0102030405060708090a0b0c0d0e0f10111213141516171819",
          "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
          "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
};

static void test_hmac_kat(void **state) {
        KuraHasher *h[ELEMENTSOF(hmac_vectors)];
        uint8_t out[KURA_HASH_LEN];

        for (size_t i = 0; i < ELEMENTSOF(hmac_vectors); i++) {
                uint8_t key[KURA_KEY_LEN] = { 0 }, *k;
                size_t kn = unhex_alloc(hmac_vectors[i].key_hex, &k);
                assert_true(kn <= sizeof key);
                memcpy(key, k, kn);
                free(k);
                assert_int_equal(kura_hasher_new(key, &h[i]), 0);
        }
        /* interleaved and repeated: each hasher must restore its own key */
        for (int round = 0; round < 3; round++)
                for (size_t i = 0; i < ELEMENTSOF(hmac_vectors); i++) {
                        uint8_t *d;
                        size_t dn = unhex_alloc(hmac_vectors[i].data_hex, &d);
                        memset(out, 0, sizeof out);
                        assert_int_equal(kura_hasher_digest(h[i], d, dn, out), 0);
                        assert_hex(out, sizeof out, hmac_vectors[i].mac);
                        free(d);
                }
        for (size_t i = 0; i < ELEMENTSOF(hmac_vectors); i++)
                kura_hasher_free(h[i]);
}

/* Large inputs, keyed and plain, against OpenSSL's one-shot functions. */
static void test_hasher_large(void **state) {
        size_t n = (1 << 20) + 7;
        uint8_t *buf = malloc(n), out[KURA_HASH_LEN], ref[KURA_HASH_LEN];
        unsigned rl = 0;
        KuraHasher *hk = NULL, *hp = NULL;

        assert_non_null(buf);
        fill_pattern(buf, n, 42);
        assert_int_equal(kura_hasher_new(key_a, &hk), 0);
        assert_int_equal(kura_hasher_new(NULL, &hp), 0);
        for (int round = 0; round < 2; round++) {
                buf[round] ^= 1;
                assert_non_null(HMAC(EVP_sha256(), key_a, KURA_KEY_LEN, buf, n, ref, &rl));
                assert_int_equal(kura_hasher_digest(hk, buf, n, out), 0);
                assert_memory_equal(out, ref, sizeof out);
                assert_int_equal(EVP_Digest(buf, n, ref, &rl, EVP_sha256(), NULL), 1);
                assert_int_equal(kura_hasher_digest(hp, buf, n, out), 0);
                assert_memory_equal(out, ref, sizeof out);
        }
        /* keyed != plain */
        uint8_t a[KURA_HASH_LEN], b[KURA_HASH_LEN];
        assert_int_equal(kura_hasher_digest(hk, buf, 100, a), 0);
        assert_int_equal(kura_hasher_digest(hp, buf, 100, b), 0);
        assert_memory_not_equal(a, b, sizeof a);
        /* empty input */
        assert_int_equal(kura_hasher_digest(hp, NULL, 0, out), 0);
        assert_hex(out, sizeof out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        kura_hasher_free(hk);
        kura_hasher_free(hp);
        free(buf);
}

/* ---- AES-256-GCM known answers (McGrew & Viega, "The Galois/Counter Mode of
 * Operation", test cases 13, 14, 16 — the 256-bit-key ones), laid out the way
 * kura stores them (nonce || ct || tag) and opened with kura_unseal. */

static const struct {
        const char *key, *iv, *pt, *aad, *ct, *tag;
} gcm_vectors[] = {
        { "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
          "", "", "", "530f8afbc74536b9a963b4f1c4cb738b" },
        { "0000000000000000000000000000000000000000000000000000000000000000", "000000000000000000000000",
          "00000000000000000000000000000000", "", "cea7403d4d606b6e074ec5d3baf39d18",
          "d0d1c8a799996bf0265b98b5d48ab919" },
        { "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
          "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525"
          "b16aedf5aa0de657ba637b39",
          "feedfacedeadbeeffeedfacedeadbeefabaddad2",
          "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838"
          "c5f61e6393ba7a0abcc9f662",
          "76fc6ece0f4e1768cddf8853bb2d551b" },
};

static void test_gcm_kat(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(gcm_vectors); i++) {
                uint8_t *key, *iv, *pt, *aad, *ct, *tag;
                unhex_alloc(gcm_vectors[i].key, &key);
                unhex_alloc(gcm_vectors[i].iv, &iv);
                size_t ptn = unhex_alloc(gcm_vectors[i].pt, &pt);
                size_t aadn = unhex_alloc(gcm_vectors[i].aad, &aad);
                size_t ctn = unhex_alloc(gcm_vectors[i].ct, &ct);
                unhex_alloc(gcm_vectors[i].tag, &tag);
                assert_int_equal(ptn, ctn);

                size_t inn = KURA_NONCE_LEN + ctn + KURA_TAG_LEN;
                uint8_t *in = malloc(inn), *out = malloc(ptn + 1);
                assert_non_null(in);
                assert_non_null(out);
                memcpy(in, iv, KURA_NONCE_LEN);
                memcpy(in + KURA_NONCE_LEN, ct, ctn);
                memcpy(in + KURA_NONCE_LEN + ctn, tag, KURA_TAG_LEN);

                KuraSealer *s = NULL;
                size_t outn = 12345;
                assert_int_equal(kura_sealer_new(key, &s), 0);
                assert_int_equal(kura_seal_overhead(s), 28);
                assert_int_equal(kura_unseal(s, aad, aadn, in, inn, out, &outn), 0);
                assert_int_equal(outn, ptn);
                if (ptn)
                        assert_memory_equal(out, pt, ptn);

                /* the last tag bit flipped: must fail */
                in[inn - 1] ^= 1;
                assert_int_equal(kura_unseal(s, aad, aadn, in, inn, out, &outn), -EBADMSG);
                assert_true(all_zero(out, ptn));

                kura_sealer_free(s);
                free(in), free(out);
                free(key), free(iv), free(pt), free(aad), free(ct), free(tag);
        }
}

/* kura_seal's output decrypted by OpenSSL directly: checks the layout
 * nonce || ct || tag and that the AAD is authenticated as given. */
static void test_seal_layout_encrypted(void **state) {
        static const char aad[] = "kura-index";
        size_t n = 1000;
        uint8_t *pt = malloc(n), *sealed = malloc(n + 28), *dec = malloc(n);
        KuraSealer *s = NULL;
        int outl = 0;

        fill_pattern(pt, n, 7);
        assert_int_equal(kura_sealer_new(key_a, &s), 0);
        assert_int_equal(kura_seal(s, aad, sizeof aad, pt, n, sealed), 0);

        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
        assert_non_null(c);
        assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key_a, sealed), 1);
        assert_int_equal(EVP_DecryptUpdate(c, NULL, &outl, (const uint8_t *) aad, sizeof aad), 1);
        assert_int_equal(EVP_DecryptUpdate(c, dec, &outl, sealed + 12, (int) n), 1);
        assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, sealed + 12 + n), 1);
        assert_int_equal(EVP_DecryptFinal_ex(c, dec + outl, &outl), 1);
        assert_memory_equal(dec, pt, n);
        EVP_CIPHER_CTX_free(c);

        /* ciphertext is not the plaintext */
        assert_memory_not_equal(sealed + 12, pt, n);
        kura_sealer_free(s);
        free(pt), free(sealed), free(dec);
}

/* Unencrypted layout: pt || SHA-256(aad || pt)[0..16]. */
static void test_seal_layout_plain(void **state) {
        static const char aad[] = "kura-packhdr";
        static const char pt[] = "hello, kura";
        uint8_t sealed[sizeof pt + 16], cat[sizeof aad + sizeof pt], digest[KURA_HASH_LEN];
        KuraSealer *s = NULL;

        assert_int_equal(kura_sealer_new(NULL, &s), 0);
        assert_int_equal(kura_seal_overhead(s), 16);
        assert_int_equal(kura_seal(s, aad, sizeof aad, pt, sizeof pt, sealed), 0);
        assert_memory_equal(sealed, pt, sizeof pt);
        memcpy(cat, aad, sizeof aad);
        memcpy(cat + sizeof aad, pt, sizeof pt);
        assert_int_equal(kura_sha256(cat, sizeof cat, digest), 0);
        assert_memory_equal(sealed + sizeof pt, digest, 16);
        kura_sealer_free(s);
}

static void roundtrip(const uint8_t *key) {
        static const size_t sizes[] = { 0, 1, 15, 16, 17, 4096, (1 << 20) + 3 };
        static const uint8_t aad[] = { 'k', 'u', 'r', 'a', '-', 'b', 'l', 'o', 'b', 0, 0, 0xaa, 0xbb };
        KuraSealer *s = NULL;

        assert_int_equal(kura_sealer_new(key, &s), 0);
        size_t ov = kura_seal_overhead(s);
        assert_int_equal(ov, key ? 28 : 16);
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                size_t n = sizes[i], outn = 0;
                uint8_t *pt = malloc(n + 1), *sealed = malloc(n + ov), *sealed2 = malloc(n + ov),
                        *out = malloc(n + 1);
                assert_non_null(pt);
                assert_non_null(sealed);
                assert_non_null(sealed2);
                assert_non_null(out);
                fill_pattern(pt, n, (uint32_t) i + 1);
                assert_int_equal(kura_seal(s, aad, sizeof aad, pt, n, sealed), 0);
                assert_int_equal(kura_seal(s, aad, sizeof aad, pt, n, sealed2), 0);
                if (key) /* fresh nonce each time */
                        assert_memory_not_equal(sealed, sealed2, KURA_NONCE_LEN);
                else /* deterministic */
                        assert_memory_equal(sealed, sealed2, n + ov);
                memset(out, 0x55, n + 1);
                assert_int_equal(kura_unseal(s, aad, sizeof aad, sealed, n + ov, out, &outn), 0);
                assert_int_equal(outn, n);
                if (n)
                        assert_memory_equal(out, pt, n);
                assert_int_equal(out[n], 0x55); /* nothing written past the end */
                assert_int_equal(kura_unseal(s, aad, sizeof aad, sealed2, n + ov, out, NULL), 0);
                if (n)
                        assert_memory_equal(out, pt, n);
                free(pt), free(sealed), free(sealed2), free(out);
        }
        kura_sealer_free(s);
}

static void test_seal_roundtrip_encrypted(void **state) { roundtrip(key_a); }
static void test_seal_roundtrip_plain(void **state) { roundtrip(NULL); }

/* kura_seal2(pt1, pt2) seals exactly the bytes pt1 ‖ pt2: unsealing gives the
 * concatenation back, and without a key (deterministic) the output is
 * byte-identical to kura_seal() of the concatenation; splits at and around
 * the 16-byte GCM block boundary. */
static void seal2_check(const uint8_t *key) {
        static const size_t splits[][2] = {{1, 100000}, {0, 4096}, {17, 65536}, {16, 33}, {5, 0}, {0, 0}};
        static const uint8_t aad[] = "kura-blob\0xyz";
        KuraSealer *s = NULL;
        assert_int_equal(kura_sealer_new(key, &s), 0);
        size_t ov = kura_seal_overhead(s);
        for (size_t i = 0; i < sizeof splits / sizeof splits[0]; i++) {
                size_t n1 = splits[i][0], n2 = splits[i][1], n = n1 + n2;
                uint8_t *pt = malloc(n + 1), *a = malloc(n + ov), *b = malloc(n + ov), *out = malloc(n + 1);
                assert_non_null(pt);
                assert_non_null(a);
                assert_non_null(b);
                assert_non_null(out);
                fill_pattern(pt, n, (uint32_t) i + 77);
                assert_int_equal(kura_seal2(s, aad, sizeof aad, pt, n1, pt + n1, n2, a), 0);
                size_t outn = 0;
                memset(out, 0x55, n + 1);
                assert_int_equal(kura_unseal(s, aad, sizeof aad, a, n + ov, out, &outn), 0);
                assert_int_equal(outn, n);
                if (n)
                        assert_memory_equal(out, pt, n);
                assert_int_equal(out[n], 0x55);
                if (!key) {
                        assert_int_equal(kura_seal(s, aad, sizeof aad, pt, n, b), 0);
                        assert_memory_equal(a, b, n + ov);
                }
                /* a flipped bit in the second part's ciphertext is caught */
                if (n2) {
                        a[n + ov - KURA_TAG_LEN - 1] ^= 1;
                        assert_int_equal(kura_unseal(s, aad, sizeof aad, a, n + ov, out, NULL), -EBADMSG);
                }
                free(pt), free(a), free(b), free(out);
        }
        kura_sealer_free(s);
}

static void test_seal2_encrypted(void **state) { seal2_check(key_a); }
static void test_seal2_plain(void **state) { seal2_check(NULL); }

/* Every way of damaging a sealed object gives -EBADMSG and a zeroed out. */
static void tamper(const uint8_t *key) {
        static const char aad[] = "kura-version";
        size_t n = 100;
        KuraSealer *s = NULL, *other = NULL;
        uint8_t pt[100], sealed[100 + 28], bad[100 + 28 + 1], out[100 + 28 + 1];
        size_t outn = 777;

        fill_pattern(pt, n, 99);
        assert_int_equal(kura_sealer_new(key, &s), 0);
        size_t ov = kura_seal_overhead(s), sn = n + ov;
        assert_int_equal(kura_seal(s, aad, sizeof aad, pt, n, sealed), 0);

        /* a flipped bit in every byte, low and high bit */
        for (size_t i = 0; i < sn; i++)
                for (int bit = 0; bit < 8; bit += 7) {
                        memcpy(bad, sealed, sn);
                        bad[i] ^= (uint8_t) (1 << bit);
                        memset(out, 0xaa, sizeof out);
                        assert_int_equal(kura_unseal(s, aad, sizeof aad, bad, sn, out, &outn), -EBADMSG);
                        assert_true(all_zero(out, n));
                        assert_int_equal(outn, 777);
                }

        /* truncated at the end and at the front, to every length */
        for (size_t len = 0; len < sn; len++) {
                memset(out, 0xaa, sizeof out);
                assert_int_equal(kura_unseal(s, aad, sizeof aad, sealed, len, out, &outn), -EBADMSG);
                if (len >= ov)
                        assert_true(all_zero(out, len - ov));
                assert_int_equal(kura_unseal(s, aad, sizeof aad, sealed + (sn - len), len, out, &outn),
                                 -EBADMSG);
        }
        /* an appended byte */
        memcpy(bad, sealed, sn);
        bad[sn] = 0;
        assert_int_equal(kura_unseal(s, aad, sizeof aad, bad, sn + 1, out, &outn), -EBADMSG);

        /* wrong aad: other byte, shorter, longer, empty */
        static const char aad2[] = "kura-versioN";
        assert_int_equal(kura_unseal(s, aad2, sizeof aad2, sealed, sn, out, &outn), -EBADMSG);
        assert_int_equal(kura_unseal(s, aad, sizeof aad - 1, sealed, sn, out, &outn), -EBADMSG);
        assert_int_equal(kura_unseal(s, "kura-version\0x", sizeof aad + 1, sealed, sn, out, &outn), -EBADMSG);
        assert_int_equal(kura_unseal(s, NULL, 0, sealed, sn, out, &outn), -EBADMSG);
        assert_true(all_zero(out, n));

        /* wrong key (or no key vs. key) */
        assert_int_equal(kura_sealer_new(key ? key_b : key_a, &other), 0);
        memset(out, 0xaa, sizeof out);
        assert_int_equal(kura_unseal(other, aad, sizeof aad, sealed, sn, out, &outn), -EBADMSG);
        assert_true(all_zero(out, sn - kura_seal_overhead(other)));
        kura_sealer_free(other);
        if (key) {
                assert_int_equal(kura_sealer_new(NULL, &other), 0);
                assert_int_equal(kura_unseal(other, aad, sizeof aad, sealed, sn, out, &outn), -EBADMSG);
                kura_sealer_free(other);
        }

        /* and the intact object still opens (the failures left no state) */
        assert_int_equal(kura_unseal(s, aad, sizeof aad, sealed, sn, out, &outn), 0);
        assert_int_equal(outn, n);
        assert_memory_equal(out, pt, n);
        kura_sealer_free(s);
}

static void test_seal_tamper_encrypted(void **state) { tamper(key_a); }
static void test_seal_tamper_plain(void **state) { tamper(NULL); }

/* ---- fingerprint ------------------------------------------------------------ */

/* Independent implementation of the documented derivation:
 * secret[32i..] = HMAC-SHA256(key, "kura-fp-secret" || i), i = 0..5;
 * XXH3-128 with that secret, canonical (big-endian) bytes. */
static void fp_reference(const uint8_t key[KURA_KEY_LEN], const void *p, size_t n, uint8_t out[16]) {
        uint8_t secret[192], msg[15];
        unsigned len = 0;
        memcpy(msg, "kura-fp-secret", 14);
        for (int i = 0; i < 6; i++) {
                msg[14] = (uint8_t) i;
                assert_non_null(HMAC(EVP_sha256(), key, KURA_KEY_LEN, msg, sizeof msg, secret + 32 * i, &len));
        }
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_withSecret(p, n, secret, sizeof secret));
        memcpy(out, c.digest, 16);
}

static void test_fingerprint(void **state) {
        size_t n = (1 << 20) + 1;
        uint8_t *buf = malloc(n), a[16], a2[16], b[16], c[16], ref[16];
        assert_non_null(buf);
        fill_pattern(buf, n, 3);

        kura_fingerprint(key_a, buf, n, a);
        fp_reference(key_a, buf, n, ref);
        assert_memory_equal(a, ref, 16);

        kura_fingerprint(key_b, buf, n, b); /* key switch: per-thread cache */
        assert_memory_not_equal(a, b, 16);
        fp_reference(key_b, buf, n, ref);
        assert_memory_equal(b, ref, 16);

        kura_fingerprint(key_a, buf, n, a2); /* deterministic after switching back */
        assert_memory_equal(a, a2, 16);

        buf[n / 2] ^= 1; /* data-dependent */
        kura_fingerprint(key_a, buf, n, c);
        assert_memory_not_equal(a, c, 16);

        kura_fingerprint(key_a, NULL, 0, c);
        fp_reference(key_a, NULL, 0, ref);
        assert_memory_equal(c, ref, 16);
        free(buf);
}

/* ---- master key -------------------------------------------------------------- */

static void test_master_key(void **state) {
        KuraMasterKey a, b;
        assert_int_equal(kura_master_key_generate(&a), 0);
        assert_int_equal(kura_master_key_generate(&b), 0);
        assert_memory_not_equal(&a, &b, sizeof a);
        assert_false(all_zero(a.enc, 32));
        assert_false(all_zero(a.id, 32));
        assert_false(all_zero(a.fp, 32));
        assert_memory_not_equal(a.enc, a.id, 32);
        kura_master_key_wipe(&a);
        assert_true(all_zero((uint8_t *) &a, sizeof a));
        kura_master_key_wipe(&b);
        kura_master_key_wipe(NULL);
}

/* ---- key slots ------------------------------------------------------------------ */

static const KuraKdfParams cheap = { .mem_bytes = 64 << 10, .passes = 1 };
static const char repo_a[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char repo_b[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdee";

static void test_keyslot_roundtrip(void **state) {
        KuraMasterKey mk, got;
        json_t *slot = NULL, *slot2 = NULL;

        assert_int_equal(kura_master_key_generate(&mk), 0);
        assert_int_equal(kura_keyslot_wrap(&mk, "correct horse", &cheap, repo_a, &slot), 0);

        /* exactly the §3 fields, with the right types and sizes */
        assert_int_equal(json_object_size(slot), 5);
        assert_string_equal(json_string_value(json_object_get(slot, "kdf")), "argon2id");
        assert_true(json_is_integer(json_object_get(slot, "mem")));
        assert_int_equal(json_integer_value(json_object_get(slot, "mem")), 65536);
        assert_int_equal(json_integer_value(json_object_get(slot, "passes")), 1);
        const char *salt = json_string_value(json_object_get(slot, "salt"));
        const char *wrapped = json_string_value(json_object_get(slot, "wrapped"));
        assert_non_null(salt);
        assert_non_null(wrapped);
        assert_int_equal(strlen(salt), 32);
        assert_int_equal(strlen(wrapped), 2 * (12 + 96 + 16));
        assert_true(kura_is_hex(salt));
        assert_true(kura_is_hex(wrapped));
        for (const char *p = wrapped; *p; p++) /* lowercase hex */
                assert_false(*p >= 'A' && *p <= 'F');

        memset(&got, 0, sizeof got);
        assert_int_equal(kura_keyslot_unwrap(slot, "correct horse", repo_a, &got), 0);
        assert_memory_equal(got.enc, mk.enc, 32);
        assert_memory_equal(got.id, mk.id, 32);
        assert_memory_equal(got.fp, mk.fp, 32);

        /* a second slot of the same key: new salt, new nonce */
        assert_int_equal(kura_keyslot_wrap(&mk, "correct horse", &cheap, repo_a, &slot2), 0);
        assert_string_not_equal(salt, json_string_value(json_object_get(slot2, "salt")));
        assert_string_not_equal(wrapped, json_string_value(json_object_get(slot2, "wrapped")));

        /* a slot survives serialisation (what repo/key.c will do) */
        char *text = json_dumps(slot, JSON_COMPACT);
        assert_non_null(text);
        json_t *reparsed = json_loads(text, 0, NULL);
        assert_non_null(reparsed);
        memset(&got, 0, sizeof got);
        assert_int_equal(kura_keyslot_unwrap(reparsed, "correct horse", repo_a, &got), 0);
        assert_memory_equal(&got, &mk, sizeof mk);
        json_decref(reparsed);
        free(text);

        /* extra descriptive fields added by the caller are ignored */
        json_object_set_new(slot2, "id", json_string("0011223344556677"));
        json_object_set_new(slot2, "access", json_string("full"));
        assert_int_equal(kura_keyslot_unwrap(slot2, "correct horse", repo_a, &got), 0);
        assert_memory_equal(&got, &mk, sizeof mk);

        /* empty password works as a password like any other */
        json_decref(slot2);
        assert_int_equal(kura_keyslot_wrap(&mk, "", &cheap, repo_a, &slot2), 0);
        assert_int_equal(kura_keyslot_unwrap(slot2, "", repo_a, &got), 0);
        assert_memory_equal(&got, &mk, sizeof mk);
        assert_int_equal(kura_keyslot_unwrap(slot2, "x", repo_a, &got), -EKEYREJECTED);

        kura_master_key_wipe(&mk);
        kura_master_key_wipe(&got);
        json_decref(slot);
        json_decref(slot2);
}

static void test_keyslot_rejected(void **state) {
        KuraMasterKey mk, got;
        json_t *slot = NULL;

        assert_int_equal(kura_master_key_generate(&mk), 0);
        assert_int_equal(kura_keyslot_wrap(&mk, "pw", &cheap, repo_a, &slot), 0);
        memset(&got, 0, sizeof got);
        assert_int_equal(kura_keyslot_unwrap(slot, "pW", repo_a, &got), -EKEYREJECTED);
        assert_int_equal(kura_keyslot_unwrap(slot, "pw ", repo_a, &got), -EKEYREJECTED);
        assert_int_equal(kura_keyslot_unwrap(slot, "", repo_a, &got), -EKEYREJECTED);
        /* bound to the repository ID */
        assert_int_equal(kura_keyslot_unwrap(slot, "pw", repo_b, &got), -EKEYREJECTED);
        assert_int_equal(kura_keyslot_unwrap(slot, "pw", "", &got), -EKEYREJECTED);
        assert_true(all_zero((uint8_t *) &got, sizeof got));
        assert_int_equal(kura_keyslot_unwrap(slot, "pw", repo_a, &got), 0);
        assert_memory_equal(&got, &mk, sizeof mk);
        json_decref(slot);
}

/* Replace one field of a copy of slot and expect r from unwrap. */
static void expect_altered(json_t *slot, const char *field, json_t *value /* stolen; NULL = delete */,
                           int r) {
        json_t *copy = json_deep_copy(slot);
        KuraMasterKey got;
        assert_non_null(copy);
        if (value)
                json_object_set_new(copy, field, value);
        else
                json_object_del(copy, field);
        memset(&got, 0, sizeof got);
        assert_int_equal(kura_keyslot_unwrap(copy, "pw", repo_a, &got), r);
        assert_true(all_zero((uint8_t *) &got, sizeof got));
        json_decref(copy);
}

static char *flip_hex_digit(const char *s, size_t i) {
        char *c = strdup(s);
        assert_non_null(c);
        c[i] = c[i] == '0' ? '1' : '0';
        return c;
}

static void test_keyslot_altered(void **state) {
        KuraMasterKey mk;
        json_t *slot = NULL;
        char *s;

        assert_int_equal(kura_master_key_generate(&mk), 0);
        assert_int_equal(kura_keyslot_wrap(&mk, "pw", &cheap, repo_a, &slot), 0);
        const char *salt = json_string_value(json_object_get(slot, "salt"));
        const char *wrapped = json_string_value(json_object_get(slot, "wrapped"));

        /* altered bytes: the key or the tag no longer matches */
        s = flip_hex_digit(salt, 5);
        expect_altered(slot, "salt", json_string(s), -EKEYREJECTED);
        free(s);
        for (size_t i = 0; i < strlen(wrapped); i += 41) {
                s = flip_hex_digit(wrapped, i);
                expect_altered(slot, "wrapped", json_string(s), -EKEYREJECTED);
                free(s);
        }
        s = flip_hex_digit(wrapped, strlen(wrapped) - 1);
        expect_altered(slot, "wrapped", json_string(s), -EKEYREJECTED);
        free(s);
        expect_altered(slot, "mem", json_integer(128 << 10), -EKEYREJECTED);
        expect_altered(slot, "passes", json_integer(2), -EKEYREJECTED);

        /* malformed fields */
        s = strdup(wrapped);
        s[strlen(s) - 2] = 0;
        expect_altered(slot, "wrapped", json_string(s), -EBADMSG);
        free(s);
        s = kura_asprintf("%s00", wrapped);
        expect_altered(slot, "wrapped", json_string(s), -EBADMSG);
        free(s);
        s = strdup(salt);
        s[3] = 'g';
        expect_altered(slot, "salt", json_string(s), -EBADMSG);
        s[3] = 0;
        expect_altered(slot, "salt", json_string(s), -EBADMSG);
        free(s);
        expect_altered(slot, "salt", json_integer(1), -EBADMSG);
        expect_altered(slot, "salt", NULL, -EBADMSG);
        expect_altered(slot, "wrapped", NULL, -EBADMSG);
        expect_altered(slot, "wrapped", json_null(), -EBADMSG);
        expect_altered(slot, "mem", NULL, -EBADMSG);
        expect_altered(slot, "mem", json_string("65536"), -EBADMSG);
        expect_altered(slot, "mem", json_real(65536.0), -EBADMSG);
        expect_altered(slot, "mem", json_integer(-65536), -EBADMSG);
        expect_altered(slot, "mem", json_integer(4096), -EBADMSG);         /* below 8 KiB */
        expect_altered(slot, "mem", json_integer(1LL << 40), -EBADMSG);    /* absurd */
        expect_altered(slot, "passes", json_integer(0), -EBADMSG);
        expect_altered(slot, "passes", json_integer(1LL << 32), -EBADMSG);
        expect_altered(slot, "passes", NULL, -EBADMSG);
        expect_altered(slot, "kdf", NULL, -EBADMSG);
        expect_altered(slot, "kdf", json_integer(1), -EBADMSG);
        expect_altered(slot, "kdf", json_string("scrypt"), -EPROTONOSUPPORT);
        expect_altered(slot, "kdf", json_string("Argon2id"), -EPROTONOSUPPORT);

        KuraMasterKey got;
        json_t *arr = json_array();
        assert_int_equal(kura_keyslot_unwrap(arr, "pw", repo_a, &got), -EBADMSG);
        json_decref(arr);

        /* the original is still fine */
        assert_int_equal(kura_keyslot_unwrap(slot, "pw", repo_a, &got), 0);
        assert_memory_equal(&got, &mk, sizeof mk);
        json_decref(slot);
}

static void test_keyslot_params(void **state) {
        KuraMasterKey mk, got;
        json_t *slot = NULL;

        assert_int_equal(kura_master_key_generate(&mk), 0);
        KuraKdfParams p = { .mem_bytes = 4096, .passes = 1 };
        assert_int_equal(kura_keyslot_wrap(&mk, "pw", &p, repo_a, &slot), -EINVAL);
        p = (KuraKdfParams) { .mem_bytes = 64 << 10, .passes = 0 };
        assert_int_equal(kura_keyslot_wrap(&mk, "pw", &p, repo_a, &slot), -EINVAL);
        p = (KuraKdfParams) { .mem_bytes = 1ULL << 40, .passes = 1 };
        assert_int_equal(kura_keyslot_wrap(&mk, "pw", &p, repo_a, &slot), -EINVAL);
        assert_int_equal(kura_keyslot_wrap(&mk, NULL, &cheap, repo_a, &slot), -EINVAL);
        assert_null(slot);

        /* the minimum is accepted */
        p = (KuraKdfParams) { .mem_bytes = 8 << 10, .passes = 1 };
        assert_int_equal(kura_keyslot_wrap(&mk, "pw", &p, repo_a, &slot), 0);
        assert_int_equal(kura_keyslot_unwrap(slot, "pw", repo_a, &got), 0);
        assert_memory_equal(&got, &mk, sizeof mk);
        json_decref(slot);

        /* NULL params = the defaults of the spec (64 MiB, 3 passes) */
        assert_int_equal(kura_keyslot_wrap(&mk, "pw", NULL, repo_a, &slot), 0);
        assert_int_equal(json_integer_value(json_object_get(slot, "mem")), 67108864);
        assert_int_equal(json_integer_value(json_object_get(slot, "passes")), 3);
        json_decref(slot);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sha256_kat),
                cmocka_unit_test(test_sha256_million_a),
                cmocka_unit_test(test_hmac_kat),
                cmocka_unit_test(test_hasher_large),
                cmocka_unit_test(test_gcm_kat),
                cmocka_unit_test(test_seal_layout_encrypted),
                cmocka_unit_test(test_seal_layout_plain),
                cmocka_unit_test(test_seal_roundtrip_encrypted),
                cmocka_unit_test(test_seal_roundtrip_plain),
                cmocka_unit_test(test_seal2_encrypted),
                cmocka_unit_test(test_seal2_plain),
                cmocka_unit_test(test_seal_tamper_encrypted),
                cmocka_unit_test(test_seal_tamper_plain),
                cmocka_unit_test(test_fingerprint),
                cmocka_unit_test(test_master_key),
                cmocka_unit_test(test_keyslot_roundtrip),
                cmocka_unit_test(test_keyslot_rejected),
                cmocka_unit_test(test_keyslot_altered),
                cmocka_unit_test(test_keyslot_params),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
