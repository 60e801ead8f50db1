/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Used-block maps: which byte ranges of a volume its filesystem uses.
 *
 * One driver per way of knowing (fs-ext.c: libext2fs bitmaps; fs-getfsmap.c:
 * the kernel's FS_IOC_GETFSMAP on a mounted filesystem), tried in table order;
 * the first that applies and succeeds answers.  Whatever goes wrong, the
 * answer degrades to "whole" (every byte used), never to fewer blocks: a
 * block wrongly called free is data lost at restore, a block wrongly called
 * used only costs a read.
 */
#include <stdlib.h>
#include <string.h>

#include "common/kcommon.h"
#include "image/image-internal.h"

static const KuraUsedDriver *const drivers[] = {
        &kura_used_driver_ext2fs,
        &kura_used_driver_getfsmap,
};

int kura_extents_add(KuraExtentList *l, uint64_t off, uint64_t len) {
        if (len == 0)
                return 0;
        if (off + len < off) /* clamp a wrapping extent; normalize clamps to size later */
                len = UINT64_MAX - off;
        /* Drivers mostly emit in ascending order: extend the last extent when
         * the new one touches or overlaps it, which keeps lists of fragmented
         * filesystems short. */
        if (l->n > 0) {
                KuraExtent *last = &l->v[l->n - 1];
                if (off >= last->off && off <= last->off + last->len) {
                        if (off + len > last->off + last->len)
                                last->len = off + len - last->off;
                        return 0;
                }
        }
        if (l->n == l->cap) {
                size_t ncap = l->cap ? 2 * l->cap : 64;
                KuraExtent *nv = realloc(l->v, ncap * sizeof *nv);
                if (!nv)
                        return -ENOMEM;
                l->v = nv;
                l->cap = ncap;
        }
        l->v[l->n++] = (KuraExtent){off, len};
        return 0;
}

static int extent_cmp(const void *a, const void *b) {
        const KuraExtent *x = a, *y = b;
        return x->off < y->off ? -1 : x->off > y->off ? 1 : 0;
}

void kura_extents_normalize(KuraExtentList *l, uint64_t size, uint64_t align) {
        size_t w = 0;
        for (size_t i = 0; i < l->n; i++) {
                uint64_t s = l->v[i].off, e = l->v[i].off + l->v[i].len;
                s &= ~(uint64_t) (align - 1);
                /* Round the end up without overflowing near UINT64_MAX. */
                e = e > UINT64_MAX - (align - 1) ? UINT64_MAX : (e + align - 1) & ~(uint64_t) (align - 1);
                if (e > size)
                        e = size;
                if (s >= e)
                        continue;
                l->v[w++] = (KuraExtent){s, e - s};
        }
        l->n = w;
        if (l->n == 0)
                return;
        qsort(l->v, l->n, sizeof *l->v, extent_cmp);
        w = 0;
        for (size_t i = 1; i < l->n; i++) {
                KuraExtent *cur = &l->v[w];
                if (l->v[i].off <= cur->off + cur->len) {
                        uint64_t e = l->v[i].off + l->v[i].len;
                        if (e > cur->off + cur->len)
                                cur->len = e - cur->off;
                } else
                        l->v[++w] = l->v[i];
        }
        l->n = w + 1;
}

void kura_extents_free(KuraExtentList *l) {
        free(l->v);
        *l = (KuraExtentList){0};
}

static bool fs_matches(const KuraUsedDriver *d, const char *fs) {
        for (const char *const *t = d->fs_types; t && *t; t++)
                if (strcmp(*t, fs) == 0)
                        return true;
        return false;
}

int kura_usedmap_get(const char *path, int fd, const KuraVolumeProbe *probe, KuraExtent **ret, size_t *ret_n,
                     const char **ret_method, KuraErr *err) {
        KuraExtentList l = {0};

        for (size_t i = 0; i < ELEMENTSOF(drivers); i++) {
                const KuraUsedDriver *d = drivers[i];
                if (!fs_matches(d, probe->fs) || (d->applies && !d->applies(probe)))
                        continue;
                int r = d->get(path, fd, probe, &l);
                if (r >= 0) {
                        kura_extents_normalize(&l, probe->size, KURA_USEDMAP_ALIGN);
                        *ret = l.v;
                        *ret_n = l.n;
                        *ret_method = d->name;
                        return 0;
                }
                kura_extents_free(&l);
                if (r == -ENOMEM)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free memory or use a smaller volume",
                                        "out of memory mapping the used blocks of %s", path);
                /* Any other failure: try the next driver, then "whole". */
        }

        if (probe->size > 0) {
                int r = kura_extents_add(&l, 0, probe->size);
                if (r < 0)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        *ret = l.v;
        *ret_n = l.n;
        *ret_method = "whole";
        return 0;
}
