/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Placeholder: being written. */
#include <errno.h>
#include "kura/disk.h"
int kura_disk_layout_read(const char *path, uint32_t h, KuraDiskLayout *ret, KuraErr *err) {
        (void)path; (void)h; (void)ret; (void)err;
        return -ENOTSUP;
}
void kura_disk_layout_clear(KuraDiskLayout *l) { (void)l; }
void *kura_disk_layout_to_json(const KuraDiskLayout *l) { (void)l; return NULL; }
int kura_disk_layout_from_json(const void *json, KuraDiskLayout *ret, KuraErr *err) {
        (void)json; (void)ret; (void)err;
        return -ENOTSUP;
}
int kura_disk_layout_write(const char *path, uint32_t h, const KuraDiskLayout *l, const uint8_t *bc, KuraErr *err) {
        (void)path; (void)h; (void)l; (void)bc; (void)err;
        return -ENOTSUP;
}
