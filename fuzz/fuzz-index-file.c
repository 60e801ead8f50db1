/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz the index file decoder (docs/format/repository.md §6) on arbitrary
 * plaintext.  Properties: the decoder never crashes, fails only with
 * -EBADMSG / -EPROTONOSUPPORT / -ENOMEM, every entry it accepts is one a
 * writer could produce, and since the format has exactly one encoding of a
 * given content, encode(decode(x)) == x and decode(encode(decode(x))) ==
 * decode(x).
 */
#include "repo/repo-internal.h"
#include "fuzz.h"

static void check_entry(const KuraIndexEntry *e) {
        CHECK(kura_ie_type(e) <= KURA_BLOB_LIST);
        CHECK(kura_ie_length(e) > 0 && kura_ie_length(e) <= KURA_SEALED_BLOB_MAX);
        CHECK(!kura_id_is_zero(&e->id) && !kura_id_is_free(&e->id));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KuraPackEntries *p = NULL, *q = NULL;
        size_t n = 0, m = 0;
        KuraBuf b = {0};

        int r = kura_index_file_decode(data, size, &p, &n);
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOMEM);
                return 0;
        }
        CHECK(p != NULL);
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < p[i].n; j++)
                        check_entry(&p[i].entries[j]);

        r = kura_index_file_encode(p, n, &b);
        CHECK(r == 0);
        CHECK(b.len == size && memcmp(b.data, data, size) == 0);

        r = kura_index_file_decode(b.data, b.len, &q, &m);
        CHECK(r == 0 && m == n);
        for (size_t i = 0; i < n; i++) {
                CHECK(memcmp(p[i].pack_id.b, q[i].pack_id.b, KURA_ID_LEN) == 0);
                CHECK(p[i].n == q[i].n);
                for (size_t j = 0; j < p[i].n; j++) {
                        const KuraIndexEntry *a = &p[i].entries[j], *c = &q[i].entries[j];
                        CHECK(memcmp(a->id.b, c->id.b, KURA_ID_LEN) == 0);
                        CHECK(a->offset == c->offset && a->type_length == c->type_length);
                }
        }
        kura_pack_entries_free(p, n);
        kura_pack_entries_free(q, m);
        kura_buf_free(&b);
        return 0;
}
