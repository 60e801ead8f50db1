/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Used-block driver "getfsmap": ask the kernel (FS_IOC_GETFSMAP) for the
 * physical space map of a mounted ext4 or xfs.
 *
 * The map lists the owned ranges of the data device (file data, inodes,
 * allocation trees, the log or journal, reserved areas) and the free space,
 * as records owned by FMR_OWN_FREE.  Only the free records are used: every
 * byte not reported free counts as used (see below why).  Records of other
 * devices (xfs realtime or external log, ext4 external journal) are skipped
 * by comparing fmr_device with the data device.  On a
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

/* Records asked for per ioctl; tests lower it to exercise the continuation. */
unsigned kura_getfsmap_batch = 1024;

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

        unsigned batch = kura_getfsmap_batch ? kura_getfsmap_batch : 1;
        _cleanup_free_ struct fsmap_head *h = calloc(1, fsmap_sizeof(batch));
        if (!h)
                return -ENOMEM;
        h->fmh_count = batch;
        h->fmh_keys[1].fmr_device = UINT32_MAX;
        h->fmh_keys[1].fmr_physical = UINT64_MAX;
        h->fmh_keys[1].fmr_owner = UINT64_MAX;
        h->fmh_keys[1].fmr_offset = UINT64_MAX;
        h->fmh_keys[1].fmr_flags = UINT32_MAX;

        /* The answer is built from the free-space records alone: used is
         * everything on the device that is not explicitly free.  Listing the
         * owned records instead would trust the kernel to report every one,
         * and ext4's getfsmap does not (seen on 6.18: whole stretches of
         * file data between a group's last free extent and the next group
         * are simply missing from the map).  A missing free record only
         * costs a read. */
        _cleanup_(kura_extents_free) KuraExtentList freel = {0};
        bool have_dev = false, devs_differ = false;
        uint32_t first_dev = 0;
        size_t nrecs = 0;
        for (;;) {
                if (ioctl(mfd, FS_IOC_GETFSMAP, h) < 0)
                        return -errno;
                if (h->fmh_entries == 0)
                        break;
                if (h->fmh_entries > batch)
                        return -EIO;
                bool last = false;
                for (uint32_t i = 0; i < h->fmh_entries; i++) {
                        const struct fsmap *m = &h->fmh_recs[i];
                        nrecs++;
                        if (m->fmr_flags & FMR_OF_LAST)
                                last = true;
                        if (!have_dev) {
                                first_dev = m->fmr_device;
                                have_dev = true;
                        } else if (m->fmr_device != first_dev)
                                devs_differ = true;
                        if ((h->fmh_oflags & FMH_OF_DEV_T) && m->fmr_device != want)
                                continue;
                        if ((m->fmr_flags & FMR_OF_SPECIAL_OWNER) && m->fmr_owner == FMR_OWN_FREE) {
                                r = kura_extents_add(&freel, m->fmr_physical, m->fmr_length);
                                if (r < 0)
                                        return r;
                        }
                }
                if (last)
                        break;
                fsmap_advance(h);
        }
        if (nrecs == 0)
                return -ENODATA; /* an empty map is not believable */
        /* Without FMH_OF_DEV_T the device numbers are the filesystem's own:
         * with more than one device we cannot tell whose free space is whose. */
        if (!(h->fmh_oflags & FMH_OF_DEV_T) && devs_differ)
                return -EOPNOTSUPP;

        /* Exact sort and merge of the free extents (alignment 1: rounding
         * happens on the used extents, outwards, in the caller). */
        kura_extents_normalize(&freel, p->size, 1);
        uint64_t pos = 0;
        for (size_t i = 0; i < freel.n; i++) {
                r = kura_extents_add(out, pos, freel.v[i].off - pos);
                if (r < 0)
                        return r;
                pos = freel.v[i].off + freel.v[i].len;
        }
        r = kura_extents_add(out, pos, p->size - pos);
        if (r < 0)
                return r;
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
