/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz the pack header decoder (docs/format/repository.md §5) on arbitrary
 * plaintext (what kura_pack_read_header() hands it after unsealing).
 * Properties: no crash, only -EBADMSG / -EPROTONOSUPPORT / -ENOMEM as
 * failures, accepted entries are valid, encode(decode(x)) == x, and decoding
 * the re-encoding gives the same entries.
 */
#include "repo/repo-internal.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KuraIndexEntry *e = NULL, *f = NULL;
        size_t n = 0, m = 0;
        KuraBuf b = {0};

        int r = kura_pack_header_decode(data, size, &e, &n);
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOMEM);
                return 0;
        }
        CHECK(e != NULL);
        for (size_t i = 0; i < n; i++) {
                CHECK(kura_ie_type(&e[i]) <= KURA_BLOB_LIST);
                CHECK(kura_ie_length(&e[i]) > 0 && kura_ie_length(&e[i]) <= KURA_SEALED_BLOB_MAX);
                CHECK(!kura_id_is_zero(&e[i].id) && !kura_id_is_free(&e[i].id));
        }

        r = kura_pack_header_encode(e, n, &b);
        CHECK(r == 0);
        CHECK(b.len == size && memcmp(b.data, data, size) == 0);

        r = kura_pack_header_decode(b.data, b.len, &f, &m);
        CHECK(r == 0 && m == n);
        for (size_t i = 0; i < n; i++) {
                CHECK(memcmp(e[i].id.b, f[i].id.b, KURA_ID_LEN) == 0);
                CHECK(e[i].offset == f[i].offset && e[i].type_length == f[i].type_length);
        }
        free(e);
        free(f);
        kura_buf_free(&b);
        return 0;
}
