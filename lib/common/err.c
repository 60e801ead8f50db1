/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "kura/errors.h"

__attribute__((format(printf, 5, 0)))
static void vset(KuraErr *err, int errnum, const char *code, const char *remedy,
                 const char *fmt, va_list ap, bool with_strerror) {
        int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
        if (with_strerror && n >= 0 && (size_t) n < sizeof err->message)
                snprintf(err->message + n, sizeof err->message - (size_t) n, ": %s", strerror(errnum));
        snprintf(err->remedy, sizeof err->remedy, "%s", remedy ? remedy : "");
        err->errnum = errnum;
        err->code = code;
}

int kura_err(KuraErr *err, int errnum, const char *code, const char *remedy, const char *fmt, ...) {
        if (errnum < 0)
                errnum = -errnum;
        if (errnum == 0)
                errnum = EIO;
        if (err && !err->code) {
                va_list ap;
                va_start(ap, fmt);
                vset(err, errnum, code, remedy, fmt, ap, false);
                va_end(ap);
        }
        return -errnum;
}

int kura_err_errno(KuraErr *err, int r, const char *code, const char *remedy, const char *fmt, ...) {
        int errnum = r < 0 ? -r : r;
        if (errnum == 0)
                errnum = EIO;
        if (err && !err->code) {
                va_list ap;
                va_start(ap, fmt);
                vset(err, errnum, code, remedy, fmt, ap, true);
                va_end(ap);
        }
        return -errnum;
}

void kura_err_clear(KuraErr *err) {
        if (err)
                memset(err, 0, sizeof *err);
}

const char *kura_err_code_for_repo_write(int r) {
        switch (-r) {
        case ENOSPC:
        case EDQUOT:
                return KURA_E_REPO_FULL;
        case EROFS:
                return KURA_E_REPO_READ_ONLY;
        case ENOMEM:
                return KURA_E_NO_MEMORY;
        default:
                return KURA_E_REPO_IO;
        }
}
