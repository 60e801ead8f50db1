/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Placeholder: being written. */
#include <errno.h>
#include "kura/disk.h"
int kura_fs_grow(const char *dev, const char *fs, const char *tmpdir, KuraErr *err) {
        (void)dev; (void)fs; (void)tmpdir; (void)err;
        return -ENOTSUP;
}
int kura_fs_shrink_onto(const char *src, const char *fs, const char *dev, const char *tmpdir, KuraErr *err) {
        (void)src; (void)fs; (void)dev; (void)tmpdir; (void)err;
        return -ENOTSUP;
}
int kura_fs_min_size(const char *path, const char *fs, const char *tmpdir, uint64_t *ret, KuraErr *err) {
        (void)path; (void)fs; (void)tmpdir; (void)ret; (void)err;
        return -ENOTSUP;
}
