/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Driver for t1020-snap-lvm.sh, run inside a qemu guest (LVM needs
 * device-mapper): one backup's worth of provider calls on a volume.
 *
 *   t1020-snap-lvm-driver VOLUME PROVIDER STATE_DIR RETAIN(0|1) [HOOK]
 *
 * supports, prepare, create (with the filesystem at $FREEZE_MNT frozen
 * around it, as the coordinator does), check, changed, then HOOK (a shell
 * command, SNAPDEV set to the snapshot) runs while the snapshot exists, check
 * again, release.  Prints key=value lines for the script to assert on.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kcommon.h"
#include "kura/image.h"
#include "kura/snap.h"
#include "snap/snap-internal.h"

int main(int argc, char **argv) {
        if (argc < 5) {
                fprintf(stderr, "usage: %s VOLUME PROVIDER STATE_DIR RETAIN [HOOK]\n", argv[0]);
                return 2;
        }
        const KuraProviderOps *ops = kura_provider_find(argv[2]);
        if (!ops)
                return 2;
        KuraShadow s = {0};
        KuraErr err = {0};
        kura_uuid_text(s.id);
        kura_uuid_text(s.set_id);
        s.volume = argv[1];
        s.ops = ops;
        s.state_dir = argv[3];
        s.created_ns = kura_now_ns();
        if (kura_volume_probe(argv[1], &s.probe, &err) < 0) {
                printf("error=%s %s\n", err.code, err.message);
                return 1;
        }
        char why[256] = "";
        printf("available=%d\n", ops->available(why, sizeof why));
        int r = ops->supports(argv[1], &s.probe, why, sizeof why);
        printf("supports=%d %s\n", r, why);
        KuraSnapOpts o = {.state_dir = argv[3]};
        if (ops->prepare(&s, &o, &err) < 0) {
                printf("error=%s %s\n", err.code, err.message);
                return 1;
        }
        const char *fm = getenv("FREEZE_MNT");
        if (fm && *fm && kura_fs_freeze(fm, &err) < 0) {
                printf("error=%s %s\n", err.code, err.message);
                return 1;
        }
        r = ops->create(&s, &err);
        if (fm && *fm)
                (void) kura_fs_thaw(fm, NULL);
        if (r < 0) {
                printf("error=%s %s\n", err.code, err.message);
                (void) ops->release(&s, false, NULL);
                return 1;
        }
        printf("device=%s\n", s.device);
        printf("check=%d\n", ops->check(&s, &err));
        if (ops->changed) {
                KuraExtent *v = NULL;
                size_t n = 0;
                r = ops->changed(&s, &v, &n, &err);
                printf("changed=%d\n", r);
                if (r < 0 && r != -ENODATA)
                        printf("changed_error=%s %s\n", err.code ? err.code : "", err.message);
                for (size_t i = 0; r >= 0 && i < n; i++)
                        printf("range=%llu %llu\n", (unsigned long long) v[i].off, (unsigned long long) v[i].len);
                free(v);
        }
        fflush(stdout);
        if (argc > 5) {
                setenv("SNAPDEV", s.device, 1);
                printf("hook=%d\n", system(argv[5]));
                fflush(stdout);
                KuraErr e2 = {0};
                r = ops->check(&s, &e2);
                printf("check2=%d %s\n", r, e2.code ? e2.code : "");
                if (e2.code)
                        printf("check2_message=%s\n", e2.message);
        }
        KuraShadowStorage ss;
        if (ops->space && ops->space(argv[1], &s.probe, &ss, NULL) >= 0)
                printf("space=%llu %llu %llu\n", (unsigned long long) ss.used, (unsigned long long) ss.allocated,
                       (unsigned long long) ss.maximum);
        KuraErr e3 = {0};
        r = ops->release(&s, argv[4][0] == '1', &e3);
        printf("release=%d %s\n", r, e3.code ? e3.message : "");
        free(s.device);
        return 0;
}
