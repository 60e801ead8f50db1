/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz the version manifest decoder (docs/format/repository.md §7) on
 * arbitrary JSON text (the plaintext after unsealing and zstd).  Properties:
 *  - no crash or leak; failures only -EBADMSG / -EPROTONOSUPPORT / -ENOMEM;
 *  - whatever the decoder accepts, the encoder accepts too (a manifest kura
 *    can read it can also rewrite, e.g. keep unknown fields when re-saving);
 *  - decode(encode(v)) == v field by field, and encoding that gives the
 *    same bytes again (the encoding is a fixpoint after one round).
 */
#include <jansson.h>
#include <math.h>

#include "repo/repo-internal.h"
#include "fuzz.h"

static bool str_eq(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

/* Decoded strings are never NULL (absent optional ones become ""). */
static void check_volume(const KuraVolume *a, const KuraVolume *b) {
        CHECK(a->name && a->path && a->fs && a->uuid && a->label);
        CHECK(*a->name);
        CHECK(str_eq(a->name, b->name) && str_eq(a->path, b->path) && str_eq(a->fs, b->fs));
        CHECK(str_eq(a->uuid, b->uuid) && str_eq(a->label, b->label));
        CHECK(a->size == b->size && a->chunk_size == b->chunk_size && a->nchunks == b->nchunks);
        CHECK(a->chunk_size >= KURA_CHUNK_SIZE_MIN && a->chunk_size <= KURA_CHUNK_SIZE_MAX);
        CHECK(a->nchunks == a->size / a->chunk_size + (a->size % a->chunk_size != 0));
        CHECK(a->nlists == b->nlists);
        CHECK(a->nlists == a->nchunks / KURA_LIST_MAX_IDS + (a->nchunks % KURA_LIST_MAX_IDS != 0));
        for (size_t i = 0; i < a->nlists; i++) {
                CHECK(memcmp(a->lists[i].b, b->lists[i].b, KURA_ID_LEN) == 0);
                CHECK(!kura_id_is_zero(&a->lists[i]) && !kura_id_is_free(&a->lists[i]));
        }
        CHECK(a->bytes_read == b->bytes_read && a->bytes_new == b->bytes_new && a->bytes_stored == b->bytes_stored);
        CHECK(a->chunks_zero == b->chunks_zero && a->chunks_free == b->chunks_free &&
              a->chunks_new == b->chunks_new);
}

static void check_version(const KuraVersion *a, const KuraVersion *b) {
        CHECK(a->hostname && str_eq(a->hostname, b->hostname));
        CHECK(a->time_ns >= 0 && a->time_ns == b->time_ns);
        CHECK(a->ntags == b->ntags);
        for (size_t i = 0; i < a->ntags; i++)
                CHECK(str_eq(a->tags[i], b->tags[i]));
        CHECK(str_eq(a->parent, b->parent));
        CHECK(a->nvolumes == b->nvolumes);
        for (size_t i = 0; i < a->nvolumes; i++)
                check_volume(&a->volumes[i], &b->volumes[i]);
        CHECK(a->bytes_read == b->bytes_read && a->bytes_new == b->bytes_new && a->bytes_stored == b->bytes_stored);
        CHECK(isfinite(a->duration_s) && a->duration_s >= 0);
        CHECK(memcmp(&a->duration_s, &b->duration_s, sizeof a->duration_s) == 0);
        CHECK(a->crash_consistent == b->crash_consistent);
        CHECK(!a->extra == !b->extra);
        if (a->extra)
                CHECK(json_equal(a->extra, b->extra));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KuraVersion *v = NULL, *w = NULL;
        KuraBuf b1 = {0}, b2 = {0};

        int r = kura_version_decode(data, size, &v);
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOMEM);
                return 0;
        }
        CHECK(v != NULL);

        r = kura_version_encode(v, &b1);
        if (r == -ENOMEM)
                goto out;
        CHECK(r == 0);
        r = kura_version_decode(b1.data, b1.len, &w);
        if (r == -ENOMEM)
                goto out;
        CHECK(r == 0);
        check_version(v, w);

        r = kura_version_encode(w, &b2);
        if (r == -ENOMEM)
                goto out;
        CHECK(r == 0);
        CHECK(b1.len == b2.len && memcmp(b1.data, b2.data, b1.len) == 0);
out:
        kura_version_free(v);
        kura_version_free(w);
        kura_buf_free(&b1);
        kura_buf_free(&b2);
        return 0;
}
