/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz the lock file parser (docs/format/repository.md §8): lock files are
 * written by any host sharing the repository, so their bytes are untrusted.
 * Properties: no crash or leak, only -EBADMSG as a failure; an accepted lock
 * has a NUL-terminated host, a PID > 0, a boot ID that fits its field
 * (NUL-terminated) and a time that parsed.
 */
#include "repo/repo-internal.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KuraLockInfo li;
        memset(&li, 0, sizeof li);
        int r = kura_lock_parse(data, size, &li);
        if (r < 0) {
                CHECK(r == -EBADMSG);
                return 0;
        }
        CHECK(r == 0);
        CHECK(memchr(li.host, 0, sizeof li.host) != NULL);
        CHECK(li.pid > 0);
        CHECK(memchr(li.boot_id, 0, sizeof li.boot_id) != NULL);
        return 0;
}
