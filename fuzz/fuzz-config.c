/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Fuzz the config decoder (docs/format/repository.md §2).  Properties: no
 * crash or leak, only -EBADMSG / -EPROTONOSUPPORT / -ENOMEM as failures, an
 * accepted config is valid (version 1, a 64-digit lowercase hex ID, a zstd
 * level in range), and kura_config_encode() of it decodes to the same values.
 */
#include "repo/repo-internal.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        KuraRepoConfig c, d;
        KuraBuf b = {0};

        memset(&c, 0xa5, sizeof c);
        int r = kura_config_decode(data, size, &c);
        if (r < 0) {
                CHECK(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOMEM);
                return 0;
        }
        CHECK(r == 0);
        CHECK(c.version == KURA_FORMAT_VERSION);
        CHECK(strlen(c.id) == 64);
        for (size_t i = 0; i < 64; i++)
                CHECK((c.id[i] >= '0' && c.id[i] <= '9') || (c.id[i] >= 'a' && c.id[i] <= 'f'));
        CHECK(c.zstd_level >= -7 && c.zstd_level <= 22);

        r = kura_config_encode(&c, 1700000000LL * 1000000000LL, &b);
        CHECK(r == 0);
        memset(&d, 0x5a, sizeof d);
        r = kura_config_decode(b.data, b.len, &d);
        CHECK(r == 0);
        CHECK(d.version == c.version && strcmp(d.id, c.id) == 0 && d.encrypted == c.encrypted &&
              d.zstd_level == c.zstd_level);
        /* The encoder writes no features, so the re-read config has no unknown ones. */
        CHECK(!d.ro_compat_unknown);
        kura_buf_free(&b);
        return 0;
}
