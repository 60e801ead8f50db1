/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The in-memory index (chunk ID -> pack number, offset, type, length) and the
 * codecs of index files (§6) and the shared KuraPackEntries type.
 *
 * Memory layout, chosen so that an entry costs 44 bytes plus a small
 * constant instead of the 100+ bytes of a general hash table:
 *
 *   base    a sorted array of KuraIndexEntry (44 bytes each, no slack after a
 *           merge: realloc to the exact size), plus a 65537-slot table of
 *           offsets by the first 16 bits of the ID (256 KiB, fixed), so a
 *           lookup is one table read and a binary search over ~n/65536
 *           entries: 1-3 cache misses for 10 million entries.
 *   delta   entries added one by one this session (kura_index_add): an
 *           append-only array and an open-addressing table of uint32 slots
 *           (load <= 1/2).  When delta reaches max(64 Ki, base/4) entries it is
 *           sorted and merged into base from the back, in place, so the
 *           overhead of delta is bounded (<= 1/4 of the entries, each
 *           44 + 8..16 bytes) and merges are amortised O(1) per entry.
 *   bulk    kura_index_add_bulk() appends to base unsorted; kura_index_finish_bulk()
 *           sorts once and drops duplicate IDs (loading 10 million entries is one
 *           qsort, not 10 million hash inserts).
 *
 * Pack numbers: a dense array of pack IDs plus an open-addressing table for
 * interning.  A pack being written has a number before it has an ID (its ID is
 * the hash of its final bytes): kura_index_pack_new_pending() hands one out,
 * kura_index_pack_set_id() names it when the pack is committed.
 *
 * In-flight reservations (kura_index_reserve) live in a small separate array:
 * at most one per writing thread, so a linear scan is cheapest.
 *
 * Nothing here locks: the caller holds repo->index_lock.
 */
#include "repo-internal.h"

#define BUCKET_BITS 16
#define NBUCKETS (1u << BUCKET_BITS)
#define DELTA_MIN_MERGE (64u << 10)
#define EMPTY UINT32_MAX

struct KuraIndex {
        KuraIndexEntry *base;
        size_t nbase, cap_base;       /* cap_base > nbase only while bulk-loading */
        size_t nbulk;                 /* entries appended after the sorted part, not yet sorted */
        uint32_t *buckets;            /* NBUCKETS + 1 offsets into base, NULL while base is empty */

        KuraIndexEntry *delta;
        size_t ndelta, cap_delta;
        uint32_t *dtab;               /* open addressing: index into delta, EMPTY if free */
        size_t dtab_mask;             /* size - 1, size a power of two */

        KuraId *packs;                /* pack number -> ID (zero while pending) */
        uint8_t *pack_pending;
        size_t npacks, cap_packs;
        uint32_t *ptab;               /* open addressing: pack number, EMPTY if free */
        size_t ptab_mask;

        KuraId *inflight;
        size_t ninflight, cap_inflight;
};

static inline uint16_t bucket_of(const KuraId *id) { return (uint16_t) (id->b[0] << 8 | id->b[1]); }

static inline uint64_t hash_of(const KuraId *id) {
        /* IDs are cryptographic hashes: any 8 bytes are uniformly distributed.
         * Use bytes 8..15 so the delta table does not correlate with buckets. */
        uint64_t h;
        memcpy(&h, id->b + 8, sizeof h);
        return h;
}

static int entry_cmp(const void *a, const void *b) {
        return memcmp(((const KuraIndexEntry *) a)->id.b, ((const KuraIndexEntry *) b)->id.b, KURA_ID_LEN);
}

int kura_index_new(KuraIndex **ret) {
        KuraIndex *idx = calloc(1, sizeof *idx);
        if (!idx)
                return -ENOMEM;
        *ret = idx;
        return 0;
}

KuraIndex *kura_index_free(KuraIndex *idx) {
        if (!idx)
                return NULL;
        free(idx->base);
        free(idx->buckets);
        free(idx->delta);
        free(idx->dtab);
        free(idx->packs);
        free(idx->pack_pending);
        free(idx->ptab);
        free(idx->inflight);
        free(idx);
        return NULL;
}

/* ---- pack numbers ------------------------------------------------------- */

static void ptab_insert(KuraIndex *idx, uint32_t n) {
        size_t i = hash_of(&idx->packs[n]) & idx->ptab_mask;
        while (idx->ptab[i] != EMPTY)
                i = (i + 1) & idx->ptab_mask;
        idx->ptab[i] = n;
}

static int ptab_grow(KuraIndex *idx) {
        size_t size = idx->ptab ? (idx->ptab_mask + 1) * 2 : 64;
        uint32_t *t = malloc(size * sizeof *t);
        if (!t)
                return -ENOMEM;
        memset(t, 0xff, size * sizeof *t);
        free(idx->ptab);
        idx->ptab = t;
        idx->ptab_mask = size - 1;
        for (size_t n = 0; n < idx->npacks; n++)
                if (!idx->pack_pending[n])
                        ptab_insert(idx, (uint32_t) n);
        return 0;
}

static int pack_append(KuraIndex *idx, const KuraId *id, bool pending, uint32_t *ret) {
        if (idx->npacks >= UINT32_MAX - 1)
                return -E2BIG;
        if (idx->npacks == idx->cap_packs) {
                size_t ncap = idx->cap_packs ? idx->cap_packs * 2 : 16;
                KuraId *p = realloc(idx->packs, ncap * sizeof *p);
                if (!p)
                        return -ENOMEM;
                idx->packs = p;
                uint8_t *q = realloc(idx->pack_pending, ncap);
                if (!q)
                        return -ENOMEM;
                idx->pack_pending = q;
                idx->cap_packs = ncap;
        }
        /* keep the table at most half full */
        if (!idx->ptab || 2 * (idx->npacks + 1) > idx->ptab_mask + 1) {
                int r = ptab_grow(idx);
                if (r < 0)
                        return r;
        }
        uint32_t n = (uint32_t) idx->npacks++;
        idx->packs[n] = pending ? (KuraId) {{0}} : *id;
        idx->pack_pending[n] = pending;
        if (!pending)
                ptab_insert(idx, n);
        *ret = n;
        return 0;
}

static bool pack_find(const KuraIndex *idx, const KuraId *pack_id, uint32_t *ret) {
        if (!idx->ptab)
                return false;
        for (size_t i = hash_of(pack_id) & idx->ptab_mask; idx->ptab[i] != EMPTY; i = (i + 1) & idx->ptab_mask)
                if (memcmp(idx->packs[idx->ptab[i]].b, pack_id->b, KURA_ID_LEN) == 0) {
                        *ret = idx->ptab[i];
                        return true;
                }
        return false;
}

int kura_index_pack_number(KuraIndex *idx, const KuraId *pack_id, uint32_t *ret) {
        if (pack_find(idx, pack_id, ret))
                return 0;
        return pack_append(idx, pack_id, false, ret);
}

int kura_index_pack_new_pending(KuraIndex *idx, uint32_t *ret) { return pack_append(idx, NULL, true, ret); }

int kura_index_pack_set_id(KuraIndex *idx, uint32_t n, const KuraId *pack_id) {
        if (n >= idx->npacks || !idx->pack_pending[n])
                return -EINVAL;
        uint32_t other;
        if (pack_find(idx, pack_id, &other))
                return -EEXIST; /* cannot happen unless SHA-256 collides */
        idx->packs[n] = *pack_id;
        idx->pack_pending[n] = 0;
        ptab_insert(idx, n);
        return 0;
}

bool kura_index_pack_is_pending(const KuraIndex *idx, uint32_t n) { return n < idx->npacks && idx->pack_pending[n]; }

const KuraId *kura_index_pack_id(const KuraIndex *idx, uint32_t n) {
        if (n >= idx->npacks || idx->pack_pending[n])
                return NULL;
        return &idx->packs[n];
}

size_t kura_index_npacks(const KuraIndex *idx) { return idx->npacks; }

/* ---- base: the sorted array --------------------------------------------- */

static int rebuild_buckets(KuraIndex *idx) {
        if (!idx->buckets) {
                idx->buckets = malloc((NBUCKETS + 1) * sizeof *idx->buckets);
                if (!idx->buckets)
                        return -ENOMEM;
        }
        size_t i = 0;
        for (uint32_t b = 0; b < NBUCKETS; b++) {
                idx->buckets[b] = (uint32_t) i;
                while (i < idx->nbase && bucket_of(&idx->base[i].id) == b)
                        i++;
        }
        idx->buckets[NBUCKETS] = (uint32_t) idx->nbase;
        return 0;
}

static KuraIndexEntry *base_find(const KuraIndex *idx, const KuraId *id) {
        if (idx->nbase == 0 || !idx->buckets)
                return NULL;
        uint16_t b = bucket_of(id);
        size_t lo = idx->buckets[b], hi = idx->buckets[b + 1];
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = memcmp(idx->base[mid].id.b, id->b, KURA_ID_LEN);
                if (c == 0)
                        return &idx->base[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

/* ---- delta: this session's additions ------------------------------------ */

static KuraIndexEntry *delta_find(const KuraIndex *idx, const KuraId *id) {
        if (!idx->dtab)
                return NULL;
        for (size_t i = hash_of(id) & idx->dtab_mask; idx->dtab[i] != EMPTY; i = (i + 1) & idx->dtab_mask)
                if (memcmp(idx->delta[idx->dtab[i]].id.b, id->b, KURA_ID_LEN) == 0)
                        return &idx->delta[idx->dtab[i]];
        return NULL;
}

static void dtab_insert(KuraIndex *idx, uint32_t n) {
        size_t i = hash_of(&idx->delta[n].id) & idx->dtab_mask;
        while (idx->dtab[i] != EMPTY)
                i = (i + 1) & idx->dtab_mask;
        idx->dtab[i] = n;
}

static int dtab_resize(KuraIndex *idx, size_t size) {
        uint32_t *t = malloc(size * sizeof *t);
        if (!t)
                return -ENOMEM;
        memset(t, 0xff, size * sizeof *t);
        free(idx->dtab);
        idx->dtab = t;
        idx->dtab_mask = size - 1;
        for (size_t n = 0; n < idx->ndelta; n++)
                dtab_insert(idx, (uint32_t) n);
        return 0;
}

/* Sort delta and merge it into base from the back (no second copy of base). */
static int merge_delta(KuraIndex *idx) {
        if (idx->ndelta == 0)
                return 0;
        size_t n = idx->nbase, m = idx->ndelta;
        KuraIndexEntry *nb = realloc(idx->base, (n + m) * sizeof *nb);
        if (!nb)
                return -ENOMEM;
        idx->base = nb;
        idx->cap_base = n + m;
        qsort(idx->delta, m, sizeof *idx->delta, entry_cmp);
        size_t i = n, j = m, k = n + m;
        while (j > 0) {
                if (i > 0 && memcmp(nb[i - 1].id.b, idx->delta[j - 1].id.b, KURA_ID_LEN) > 0)
                        nb[--k] = nb[--i];
                else
                        nb[--k] = idx->delta[--j];
        }
        idx->nbase = n + m;
        idx->ndelta = 0;
        /* Drop the delta's memory: a long-lived index that got a burst of
         * additions should not keep the peak. */
        free(idx->delta);
        idx->delta = NULL;
        idx->cap_delta = 0;
        free(idx->dtab);
        idx->dtab = NULL;
        idx->dtab_mask = 0;
        return rebuild_buckets(idx);
}

static KuraIndexEntry *find(const KuraIndex *idx, const KuraId *id) {
        KuraIndexEntry *e = NULL;
        if (idx->ndelta > 0)
                e = delta_find(idx, id);
        return e ? e : base_find(idx, id);
}

int kura_index_add(KuraIndex *idx, const KuraIndexEntry *e) {
        if (idx->nbulk > 0)
                return -EINVAL; /* finish the bulk load first */
        if (find(idx, &e->id))
                return 0;
        if (idx->ndelta >= UINT32_MAX - 1 || idx->nbase + idx->ndelta >= UINT32_MAX - 1)
                return -E2BIG; /* bucket offsets are 32 bits: 4 G entries = 4 PiB of 1 MiB chunks */
        if (idx->ndelta == idx->cap_delta) {
                size_t ncap = idx->cap_delta ? idx->cap_delta * 2 : 256;
                KuraIndexEntry *d = realloc(idx->delta, ncap * sizeof *d);
                if (!d)
                        return -ENOMEM;
                idx->delta = d;
                idx->cap_delta = ncap;
        }
        if (!idx->dtab || 2 * (idx->ndelta + 1) > idx->dtab_mask + 1) {
                int r = dtab_resize(idx, idx->dtab ? 2 * (idx->dtab_mask + 1) : 512);
                if (r < 0)
                        return r;
        }
        idx->delta[idx->ndelta] = *e;
        dtab_insert(idx, (uint32_t) idx->ndelta);
        idx->ndelta++;
        if (idx->ndelta >= KURA_MAX((size_t) DELTA_MIN_MERGE, idx->nbase / 4)) {
                int r = merge_delta(idx);
                if (r < 0)
                        return r; /* the entry is in delta still: the index is consistent */
        }
        return 1;
}

bool kura_index_lookup(const KuraIndex *idx, const KuraId *id, KuraIndexEntry *ret) {
        const KuraIndexEntry *e = find(idx, id);
        if (!e)
                return false;
        if (ret)
                *ret = *e;
        return true;
}

int kura_index_update(KuraIndex *idx, const KuraIndexEntry *e) {
        KuraIndexEntry *old = find(idx, &e->id);
        if (!old)
                return -ENOENT;
        *old = *e;
        return 0;
}

size_t kura_index_count(const KuraIndex *idx) { return idx->nbase + idx->ndelta; }

int kura_index_foreach(const KuraIndex *idx, int (*fn)(void *ud, const KuraIndexEntry *e), void *ud) {
        for (size_t i = 0; i < idx->nbase; i++) {
                int r = fn(ud, &idx->base[i]);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < idx->ndelta; i++) {
                int r = fn(ud, &idx->delta[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

size_t kura_index_memory(const KuraIndex *idx) {
        return sizeof *idx + idx->cap_base * sizeof(KuraIndexEntry) +
               (idx->buckets ? (NBUCKETS + 1) * sizeof(uint32_t) : 0) +
               idx->cap_delta * sizeof(KuraIndexEntry) + (idx->dtab ? (idx->dtab_mask + 1) * sizeof(uint32_t) : 0) +
               idx->cap_packs * (sizeof(KuraId) + 1) + (idx->ptab ? (idx->ptab_mask + 1) * sizeof(uint32_t) : 0) +
               idx->cap_inflight * sizeof(KuraId);
}

int kura_index_drop_pack(KuraIndex *idx, uint32_t pack) {
        size_t k = 0;
        for (size_t i = 0; i < idx->nbase; i++)
                if (idx->base[i].pack != pack)
                        idx->base[k++] = idx->base[i];
        idx->nbase = k;
        k = 0;
        for (size_t i = 0; i < idx->ndelta; i++)
                if (idx->delta[i].pack != pack)
                        idx->delta[k++] = idx->delta[i];
        idx->ndelta = k;
        if (idx->dtab) {
                int r = dtab_resize(idx, idx->dtab_mask + 1);
                if (r < 0)
                        return r;
        }
        return idx->buckets ? rebuild_buckets(idx) : 0;
}

/* ---- bulk load ---------------------------------------------------------- */

int kura_index_add_bulk(KuraIndex *idx, const KuraPackEntries *p) {
        uint32_t pn;
        int r = kura_index_pack_number(idx, &p->pack_id, &pn);
        if (r < 0)
                return r;
        if (p->n > UINT32_MAX - 1 - idx->nbase)
                return -E2BIG;
        size_t need = idx->nbase + p->n;
        if (need > idx->cap_base) {
                size_t ncap = KURA_MAX(need, idx->cap_base + idx->cap_base / 2);
                KuraIndexEntry *nb = realloc(idx->base, ncap * sizeof *nb);
                if (!nb)
                        return -ENOMEM;
                idx->base = nb;
                idx->cap_base = ncap;
        }
        for (size_t i = 0; i < p->n; i++) {
                idx->base[idx->nbase + i] = p->entries[i];
                idx->base[idx->nbase + i].pack = pn;
        }
        idx->nbase += p->n;
        idx->nbulk += p->n;
        return 0;
}

int kura_index_finish_bulk(KuraIndex *idx) {
        if (idx->nbulk == 0)
                return 0;
        /* Sort everything (the sorted prefix is sorted again: simpler, and
         * bulk loads happen when base is empty). */
        qsort(idx->base, idx->nbase, sizeof *idx->base, entry_cmp);
        size_t k = 0;
        for (size_t i = 0; i < idx->nbase; i++)
                if (k == 0 || memcmp(idx->base[k - 1].id.b, idx->base[i].id.b, KURA_ID_LEN) != 0)
                        idx->base[k++] = idx->base[i];
        idx->nbase = k;
        idx->nbulk = 0;
        if (k < idx->cap_base) {
                KuraIndexEntry *nb = realloc(idx->base, KURA_MAX(k, (size_t) 1) * sizeof *nb);
                if (nb) {
                        idx->base = nb;
                        idx->cap_base = KURA_MAX(k, (size_t) 1);
                }
        }
        /* entries already in delta that the bulk load also has: keep base's */
        return rebuild_buckets(idx);
}

/* ---- in-flight reservations ---------------------------------------------- */

static ssize_t inflight_find(const KuraIndex *idx, const KuraId *id) {
        for (size_t i = 0; i < idx->ninflight; i++)
                if (memcmp(idx->inflight[i].b, id->b, KURA_ID_LEN) == 0)
                        return (ssize_t) i;
        return -1;
}

bool kura_index_inflight(const KuraIndex *idx, const KuraId *id) { return inflight_find(idx, id) >= 0; }

int kura_index_reserve(KuraIndex *idx, const KuraId *id) {
        if (find(idx, id) || inflight_find(idx, id) >= 0)
                return 0;
        if (idx->ninflight == idx->cap_inflight) {
                size_t ncap = idx->cap_inflight ? idx->cap_inflight * 2 : 16;
                KuraId *p = realloc(idx->inflight, ncap * sizeof *p);
                if (!p)
                        return -ENOMEM;
                idx->inflight = p;
                idx->cap_inflight = ncap;
        }
        idx->inflight[idx->ninflight++] = *id;
        return 1;
}

void kura_index_unreserve(KuraIndex *idx, const KuraId *id) {
        ssize_t i = inflight_find(idx, id);
        if (i < 0)
                return;
        idx->inflight[i] = idx->inflight[--idx->ninflight];
}

/* ---- index files (§6) ---------------------------------------------------- */

void kura_pack_entries_free(KuraPackEntries *p, size_t n) {
        if (!p)
                return;
        for (size_t i = 0; i < n; i++)
                free(p[i].entries);
        free(p);
}

int kura_index_file_encode(const KuraPackEntries *packs, size_t npacks, KuraBuf *out) {
        if (npacks > UINT32_MAX)
                return -E2BIG;
        int r = kura_buf_append(out, "KIDX", 4);
        if (r >= 0)
                r = kura_buf_le32(out, 1);
        if (r >= 0)
                r = kura_buf_le32(out, (uint32_t) npacks);
        for (size_t i = 0; r >= 0 && i < npacks; i++) {
                if (packs[i].n > UINT32_MAX)
                        return -E2BIG;
                r = kura_buf_reserve(out, KURA_ID_LEN + 4 + packs[i].n * 41);
                if (r >= 0)
                        r = kura_buf_append(out, packs[i].pack_id.b, KURA_ID_LEN);
                if (r >= 0)
                        r = kura_buf_le32(out, (uint32_t) packs[i].n);
                for (size_t j = 0; r >= 0 && j < packs[i].n; j++) {
                        const KuraIndexEntry *e = &packs[i].entries[j];
                        uint8_t rec[41];
                        rec[0] = kura_ie_type(e);
                        memcpy(rec + 1, e->id.b, KURA_ID_LEN);
                        put_le32(rec + 33, e->offset);
                        put_le32(rec + 37, kura_ie_length(e));
                        r = kura_buf_append(out, rec, sizeof rec);
                }
        }
        return r < 0 ? r : 0;
}

/* One entry record (type, id, offset, length) as in pack headers and index
 * files.  Rejects unknown types and lengths no writer produces. */
int kura_entry_record_decode(KuraBufReader *br, KuraIndexEntry *e) {
        uint8_t type;
        uint32_t off, len;
        int r = kura_br_u8(br, &type);
        if (r >= 0)
                r = kura_br_bytes(br, e->id.b, KURA_ID_LEN);
        if (r >= 0)
                r = kura_br_le32(br, &off);
        if (r >= 0)
                r = kura_br_le32(br, &len);
        if (r < 0)
                return r;
        if (type > KURA_BLOB_LIST || len == 0 || len > KURA_SEALED_BLOB_MAX)
                return KURA_CORRUPT();
        if (kura_id_is_zero(&e->id) || kura_id_is_free(&e->id))
                return KURA_CORRUPT();
        e->pack = 0;
        e->offset = off;
        e->type_length = kura_ie_pack_tl(type, len);
        return 0;
}

int kura_index_file_decode(const uint8_t *p, size_t n, KuraPackEntries **ret, size_t *ret_n) {
        KuraBufReader br;
        const uint8_t *magic;
        uint32_t version, npacks;
        kura_br_init(&br, p, n);
        if (kura_br_ptr(&br, &magic, 4) < 0 || memcmp(magic, "KIDX", 4) != 0)
                return KURA_CORRUPT();
        if (kura_br_le32(&br, &version) < 0 || kura_br_le32(&br, &npacks) < 0)
                return KURA_CORRUPT();
        if (version != 1)
                return -EPROTONOSUPPORT;
        /* each pack takes at least 36 bytes: bound the allocation by the input */
        if (npacks > br.left / 36)
                return KURA_CORRUPT();
        KuraPackEntries *packs = calloc(KURA_MAX(npacks, 1u), sizeof *packs);
        if (!packs)
                return -ENOMEM;
        int r = 0;
        for (uint32_t i = 0; i < npacks; i++) {
                KuraPackEntries *pe = &packs[i];
                uint32_t count;
                if (kura_br_bytes(&br, pe->pack_id.b, KURA_ID_LEN) < 0 || kura_br_le32(&br, &count) < 0 ||
                    count > br.left / 41) {
                        r = KURA_CORRUPT();
                        break;
                }
                pe->entries = malloc(KURA_MAX(count, 1u) * sizeof *pe->entries);
                if (!pe->entries) {
                        r = -ENOMEM;
                        break;
                }
                pe->n = count;
                for (uint32_t j = 0; r >= 0 && j < count; j++)
                        r = kura_entry_record_decode(&br, &pe->entries[j]);
                if (r < 0)
                        break;
        }
        if (r >= 0 && br.left != 0)
                r = KURA_CORRUPT();
        if (r < 0) {
                kura_pack_entries_free(packs, npacks); /* calloc'ed: unfilled ones are NULL */
                return r;
        }
        *ret = packs;
        *ret_n = npacks;
        return 0;
}
