/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Which snapshot provider `--snapshot auto` would take for a volume, without
 * making a snapshot set: `kura critical` tells how each critical volume will
 * be made consistent.  The rule must stay the one of choose_provider() in
 * coordinator.c (best first, fsfreeze only when named, none only for a volume
 * nobody writes), or `kura critical` would promise what a backup does not do.
 */
#include "snap-internal.h"

static void add_why(char *whys, size_t n, const char *name, const char *why) {
        size_t l = strlen(whys);
        if (l + 1 < n)
                snprintf(whys + l, n - l, "%s%s: %s", l ? "; " : "", name, why);
}

int kura_provider_pick_auto(const char *volume, const char **ret_name, char *why, size_t n, KuraErr *err) {
        KuraVolumeProbe p;
        int r = kura_volume_probe(volume, &p, err);
        if (r < 0)
                return r;
        bool rw = p.mounted && p.mounted_rw;
        if (why && n)
                why[0] = 0;
        for (const KuraProviderOps *const *t = kura_provider_table(); t && *t; t++) {
                char w[256] = "";
                if ((*t)->available && !(*t)->available(w, sizeof w)) {
                        if (why)
                                add_why(why, n, (*t)->name, w);
                        continue;
                }
                if (!strcmp((*t)->name, "none")) {
                        if (rw) {
                                if (why)
                                        add_why(why, n, "none", "mounted read-write");
                                continue;
                        }
                        *ret_name = (*t)->name;
                        return 1;
                }
                if (!strcmp((*t)->name, "fsfreeze")) {
                        if (why)
                                add_why(why, n, "fsfreeze", "only when named");
                        continue;
                }
                r = (*t)->supports ? (*t)->supports(volume, &p, w, sizeof w) : 0;
                if (r == 1) {
                        *ret_name = (*t)->name;
                        return 1;
                }
                if (why)
                        add_why(why, n, (*t)->name, r < 0 ? strerror(-r) : w);
        }
        *ret_name = NULL;
        return 0;
}
