/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Provider "none": no snapshot at all.  Safe for a volume nobody writes: not
 * mounted, or mounted read-only.  With KuraSnapOpts.allow_mounted it also
 * reads a read-write mounted volume live (crash-consistent at best).
 */
#include "snap-internal.h"

static bool none_available(char *why, size_t n) {
        (void) why, (void) n;
        return true;
}

static int none_supports(const char *volume, const KuraVolumeProbe *p, char *why, size_t n) {
        if (p->mounted && p->mounted_rw) {
                snprintf(why, n, "%s is mounted read-write at %s", volume, p->mountpoint);
                return 0;
        }
        return 1;
}

static int none_prepare(KuraShadow *s, const KuraSnapOpts *o, KuraErr *err) {
        if (s->probe.mounted && s->probe.mounted_rw && !(o && o->allow_mounted))
                return kura_err(err, EBUSY, KURA_E_SOURCE_MOUNTED,
                                "Unmount it or remount it read-only, choose a snapshot provider (--snapshot auto), "
                                "or read it live with --allow-mounted (crash-consistent at best).",
                                "%s is mounted read-write at %s and provider none takes no snapshot", s->volume,
                                s->probe.mountpoint);
        if (!s->device) {
                s->device = strdup(s->volume);
                if (!s->device)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        return 0;
}

static int none_create(KuraShadow *s, KuraErr *err) {
        if (!s->device) {
                s->device = strdup(s->volume);
                if (!s->device)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        return 0;
}

static int none_check(KuraShadow *s, KuraErr *err) {
        (void) s, (void) err;
        return 0;
}

static int none_release(KuraShadow *s, bool retain, KuraErr *err) {
        (void) retain, (void) err;
        free(s->priv);
        s->priv = NULL;
        return 0;
}

const KuraProviderOps kura_provider_none = {
        .name = "none",
        .id = "9d1c34e6-6a0f-4b1e-9f3e-2b5c8a7e0001",
        .type = "software",
        .description = "No snapshot: reads an unmounted or read-only volume directly",
        .available = none_available,
        .supports = none_supports,
        .prepare = none_prepare,
        .create = none_create,
        .check = none_check,
        .release = none_release,
        .changed = NULL,
        .space = NULL,
};
