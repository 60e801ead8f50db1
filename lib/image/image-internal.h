/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * lib/image private header: the extent list every used-block driver fills,
 * the driver descriptor (one fs-*.c file per way of finding used blocks, in
 * the spirit of util-linux libblkid's superblocks directory), and the mount-table
 * helpers shared by probe.c and target.c.  Not installed.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kura/image.h"

/* Used extents never get finer than this: a driver's answer is rounded out
 * (start down, end up) to this alignment so that no used byte is lost to a
 * partial block at an extent edge. */
#define KURA_USEDMAP_ALIGN 4096u

/* ---- extent lists -------------------------------------------------------- */

typedef struct KuraExtentList {
        KuraExtent *v;
        size_t n, cap;
} KuraExtentList;

/* Append [off, off+len).  Empty extents are ignored.  0 or -ENOMEM. */
int kura_extents_add(KuraExtentList *l, uint64_t off, uint64_t len);
/* Round every extent out to align (a power of two), clamp to [0, size), sort
 * and merge overlapping or touching extents.  Never shrinks the covered set
 * inside [0, size). */
void kura_extents_normalize(KuraExtentList *l, uint64_t size, uint64_t align);
void kura_extents_free(KuraExtentList *l);

/* ---- used-block drivers -------------------------------------------------- */

typedef struct KuraUsedDriver {
        const char *name;
        /* Filesystem TYPEs (blkid names) this driver understands, NULL-terminated. */
        const char *const *fs_types;
        /* Whether the driver may answer for this probe (mount state etc.);
         * NULL means always. */
        bool (*applies)(const KuraVolumeProbe *p);
        /* Append the used byte ranges of the volume to *out (any order,
         * overlaps allowed, need not be aligned).  Anything in doubt must be
         * included.  0 or a negative errno; on failure the caller discards
         * *out and falls back to the next driver or to "whole". */
        int (*get)(const char *path, int fd, const KuraVolumeProbe *p, KuraExtentList *out);
} KuraUsedDriver;

extern const KuraUsedDriver kura_used_driver_ext2fs;
extern const KuraUsedDriver kura_used_driver_getfsmap;
/* Records per FS_IOC_GETFSMAP call (default 1024); for tests. */
extern unsigned kura_getfsmap_batch;

/* ---- mount table ----------------------------------------------------------- */

/* Fill mounted/mounted_rw/mountpoint of *p for the block device dev, counting
 * also mounts of its partitions.  A mount matches by the device number in
 * mountinfo or, for filesystems (btrfs) that show an anonymous device number
 * there, by the device its /dev/ source names.  Only ever sets fields (to
 * true, or the first mount point), so it can be called once per loop device.
 * 0 or -errno. */
int kura_mount_state_dev(dev_t dev, KuraVolumeProbe *p);

/* The loop devices whose backing file is the file at path (compared by
 * realpath).  *ret is a fresh array owned by the caller (NULL when *ret_n is
 * 0).  0 or -errno. */
int kura_loop_devices_for_file(const char *path, dev_t **ret, size_t *ret_n);
