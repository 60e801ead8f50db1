/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz the list blob decoder (docs/format/repository.md §7.1).  Properties:
 * no crash, only -EBADMSG / -EPROTONOSUPPORT / -ENOMEM as failures, 1..4096
 * IDs when accepted, encode(decode(x)) == x and a stable second decode.
 */
#include "repo/repo-internal.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KuraId *ids = NULL, *ids2 = NULL;
        size_t n = 0, m = 0;
        KuraBuf b = {0};

        int r = kura_list_decode(data, size, &ids, &n);
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOMEM);
                return 0;
        }
        CHECK(ids != NULL && n >= 1 && n <= KURA_LIST_MAX_IDS);

        r = kura_list_encode(ids, n, &b);
        CHECK(r == 0);
        CHECK(b.len == size && memcmp(b.data, data, size) == 0);

        r = kura_list_decode(b.data, b.len, &ids2, &m);
        CHECK(r == 0 && m == n && memcmp(ids, ids2, n * sizeof *ids) == 0);
        free(ids);
        free(ids2);
        kura_buf_free(&b);
        return 0;
}
