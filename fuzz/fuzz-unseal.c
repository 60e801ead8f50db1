/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz kura_unseal() (docs/format/repository.md §4) with a fixed key, in
 * both modes (AES-256-GCM and the unencrypted SHA-256 tag), on arbitrary
 * input.  Properties: no crash; a failure is -EBADMSG and leaves the output
 * all zero (no unauthenticated plaintext escapes); an unencrypted success
 * returns exactly the bytes before the tag.  Then the input is sealed and
 * unsealed (must give it back), and the sealed copy with one bit flipped
 * (chosen by the input) must be refused.
 */
#include "crypto/kcrypto.h"
#include "common/kcommon.h"
#include "fuzz.h"

static const uint8_t fixed_key[KURA_KEY_LEN] = {
        0x6b, 0x75, 0x72, 0x61, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x6b, 0x65, 0x79, 0x00, 0x01, 0x02,
        0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12,
};
static const char aad[] = "kura-index"; /* a real context, NUL included below */

static KuraSealer *sealers[2]; /* [0] unencrypted, [1] AES-256-GCM; made once, reused */

static bool all_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

static void one_mode(KuraSealer *s, bool enc, const uint8_t *data, size_t size) {
        size_t ovh = kura_seal_overhead(s);
        CHECK(ovh == (enc ? 28u : 16u));

        /* 1. Arbitrary bytes as a sealed object.  out is pre-filled so a
         * forgotten wipe on failure shows. */
        uint8_t *out = malloc(size + 1);
        CHECK(out);
        memset(out, 0xee, size + 1);
        size_t len = (size_t) -1;
        int r = kura_unseal(s, aad, sizeof aad, data, size, out, &len);
        if (r < 0) {
                CHECK(r == -EBADMSG);
                if (size >= ovh)
                        CHECK(all_zero(out, size - ovh));
        } else {
                CHECK(size >= ovh && len == size - ovh);
                if (!enc)
                        CHECK(memcmp(out, data, len) == 0);
        }
        free(out);

        /* 2. Seal the input as plaintext, unseal it back, then flip a bit. */
        uint8_t *sealed = malloc(size + ovh);
        uint8_t *back = malloc(size + 1);
        CHECK(sealed && back);
        r = kura_seal(s, aad, sizeof aad, data, size, sealed);
        CHECK(r == 0);
        len = (size_t) -1;
        r = kura_unseal(s, aad, sizeof aad, sealed, size + ovh, back, &len);
        CHECK(r == 0 && len == size && memcmp(back, data, size) == 0);
        size_t bit = 0;
        for (size_t i = 0; i < size && i < 8; i++)
                bit = bit * 251 + data[i];
        bit %= (size + ovh) * 8;
        sealed[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        memset(back, 0xee, size + 1);
        r = kura_unseal(s, aad, sizeof aad, sealed, size + ovh, back, &len);
        CHECK(r == -EBADMSG && all_zero(back, size));
        /* The right bytes under another context must be refused too. */
        sealed[bit / 8] ^= (uint8_t) (1u << (bit % 8));
        r = kura_unseal(s, aad, sizeof aad - 1, sealed, size + ovh, back, &len);
        CHECK(r == -EBADMSG);
        free(sealed);
        free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > (1u << 20))
                return 0;
        if (!sealers[0]) {
                CHECK(kura_sealer_new(NULL, &sealers[0]) == 0);
                CHECK(kura_sealer_new(fixed_key, &sealers[1]) == 0);
        }
        one_mode(sealers[0], false, data, size);
        one_mode(sealers[1], true, data, size);
        return 0;
}
