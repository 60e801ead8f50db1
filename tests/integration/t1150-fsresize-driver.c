/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Driver of t1150-fsresize.sh: one call of the lib/image/fsresize.c API per
 * run, linked against the build's libkura.a.
 *
 *   driver grow DEV FS TMPDIR
 *   driver shrink SRC FS DEV TMPDIR
 *   driver minsize PATH FS TMPDIR
 *
 * Prints "rc=N", and on failure "code=CODE", "message=..." and
 * "remedy=..."; minsize also prints "min=BYTES" when it has a number.
 * Exit status 0 when rc >= 0 (or -ENOTSUP with a number from minsize),
 * 1 on failure, 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kura/disk.h"

static int report(int r, const KuraErr *err) {
        printf("rc=%d\n", r);
        if (err->code) {
                printf("code=%s\n", err->code);
                printf("message=%s\n", err->message);
                printf("remedy=%s\n", err->remedy);
        }
        return r < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
        KuraErr err = {0};

        if (argc == 5 && !strcmp(argv[1], "grow"))
                return report(kura_fs_grow(argv[2], argv[3], argv[4], &err), &err);
        if (argc == 6 && !strcmp(argv[1], "shrink"))
                return report(kura_fs_shrink_onto(argv[2], argv[3], argv[4], argv[5], &err), &err);
        if (argc == 5 && !strcmp(argv[1], "minsize")) {
                uint64_t v = 0;
                int r = kura_fs_min_size(argv[2], argv[3], argv[4], &v, &err);
                if (r >= 0 || (r == -ENOTSUP && v > 0)) {
                        printf("rc=%d\nmin=%" PRIu64 "\n", r, v);
                        return 0;
                }
                return report(r, &err);
        }
        fprintf(stderr, "usage: %s grow DEV FS TMPDIR | shrink SRC FS DEV TMPDIR | minsize PATH FS TMPDIR\n",
                argv[0]);
        return 2;
}
