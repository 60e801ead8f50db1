/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Placeholder: being written. */
#include <errno.h>
#include "kura/disk.h"
int kura_critical_list(const char *root, KuraCritical **ret, size_t *ret_n, KuraErr *err) {
        (void)root; (void)ret; (void)ret_n; (void)err;
        return -ENOTSUP;
}
void kura_critical_free(KuraCritical *c, size_t n) {
        (void)c; (void)n;
}
