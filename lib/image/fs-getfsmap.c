/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Used-block driver "getfsmap": ask the kernel (FS_IOC_GETFSMAP) for the
 * physical space map of a mounted ext4 or xfs.
 *
 * The map lists every owned range of the data device: file data, inodes,
 * allocation trees, the internal log or journal, reserved areas; free space
 * comes as records owned by FMR_OWN_FREE, which are the only ones left out.
 * Records of other devices (xfs realtime or external log, ext4 external
 * journal) are skipped by comparing fmr_device with the data device.  On a
 * filesystem mounted read-write the answer is a moment's picture; whether
 * that is good enough (a frozen filesystem, a read-only mount, a snapshot
 * taken right after) is the caller's decision.
 */
#include <fcntl.h>
#include <linux/fsmap.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "common/kcommon.h"
#include "image/image-internal.h"

#define FSMAP_BATCH 1024

/* The kernel's new_encode_dev(): what fmr_device holds under FMH_OF_DEV_T. */
static uint32_t encode_dev(dev_t d) {
        uint32_t ma = major(d), mi = minor(d);
        return (mi & 0xff) | (ma << 8) | ((mi & ~0xffu) << 12);
}

static bool getfsmap_applies(const KuraVolumeProbe *p) {
        return p->mounted && p->mountpoint[0] == '/';
}

/* Is the filesystem under the mount point really the one on path?  Guards
 * against a mount point that another filesystem was mounted over since the
 * probe, which would answer for the wrong device. */
static int check_device(const char *path, dev_t fsdev) {
        struct stat st;
        if (stat(path, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode))
                return st.st_rdev == fsdev ? 0 : -EXDEV;
        _cleanup_free_ dev_t *loops = NULL;
        size_t n = 0;
        int r = kura_loop_devices_for_file(path, &loops, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (loops[i] == fsdev)
                        return 0;
        return -EXDEV;
}

static int getfsmap_get(const char *path, int fd, const KuraVolumeProbe *p, KuraExtentList *out) {
        _cleanup_close_ int mfd = open(p->mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mfd < 0)
                return -errno;
        struct stat st;
        if (fstat(mfd, &st) < 0)
                return -errno;
        int r = check_device(path, st.st_dev);
        if (r < 0)
                return r;
        uint32_t want = encode_dev(st.st_dev);

        _cleanup_free_ struct fsmap_head *h = calloc(1, fsmap_sizeof(FSMAP_BATCH));
        if (!h)
                return -ENOMEM;
        h->fmh_count = FSMAP_BATCH;
        h->fmh_keys[1].fmr_device = UINT32_MAX;
        h->fmh_keys[1].fmr_physical = UINT64_MAX;
        h->fmh_keys[1].fmr_owner = UINT64_MAX;
        h->fmh_keys[1].fmr_offset = UINT64_MAX;
        h->fmh_keys[1].fmr_flags = UINT32_MAX;

        uint64_t fs_end = 0;
        for (;;) {
                if (ioctl(mfd, FS_IOC_GETFSMAP, h) < 0)
                        return -errno;
                if (h->fmh_entries == 0)
                        break;
                if (h->fmh_entries > FSMAP_BATCH)
                        return -EIO;
                bool last = false;
                for (uint32_t i = 0; i < h->fmh_entries; i++) {
                        const struct fsmap *m = &h->fmh_recs[i];
                        if (m->fmr_flags & FMR_OF_LAST)
                                last = true;
                        /* Without FMH_OF_DEV_T the device field is the
                         * filesystem's own numbering: then keep everything
                         * (extra ranges cost reads, never data). */
                        if ((h->fmh_oflags & FMH_OF_DEV_T) && m->fmr_device != want)
                                continue;
                        if (m->fmr_physical + m->fmr_length > fs_end)
                                fs_end = m->fmr_physical + m->fmr_length;
                        if ((m->fmr_flags & FMR_OF_SPECIAL_OWNER) && m->fmr_owner == FMR_OWN_FREE)
                                continue;
                        r = kura_extents_add(out, m->fmr_physical, m->fmr_length);
                        if (r < 0)
                                return r;
                }
                if (last)
                        break;
                fsmap_advance(h);
        }
        if (fs_end == 0)
                return -ENODATA; /* an empty map is not believable */

        /* Past the last mapped byte (free space included) the device holds
         * nothing the filesystem accounts for: keep it, see fs-ext.c. */
        if (fs_end < p->size) {
                r = kura_extents_add(out, fs_end, p->size - fs_end);
                if (r < 0)
                        return r;
        }
        (void) fd;
        return 0;
}

static const char *const getfsmap_types[] = {"ext4", "xfs", NULL};

const KuraUsedDriver kura_used_driver_getfsmap = {
        .name = "getfsmap",
        .fs_types = getfsmap_types,
        .applies = getfsmap_applies,
        .get = getfsmap_get,
};
