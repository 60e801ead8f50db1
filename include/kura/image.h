/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * libkura volume images: probing a source (block device or image file),
 * finding the blocks its filesystem uses (one driver per filesystem, under
 * lib/image/fs-*.c), and writing restore targets.
 */
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kura/errors.h"

typedef struct KuraExtent {
        uint64_t off, len; /* bytes */
} KuraExtent;

typedef struct KuraVolumeProbe {
        char fs[32];             /* blkid TYPE ("ext4", "xfs", "btrfs", "vfat", ...) or "" */
        char uuid[64];           /* blkid UUID or "" */
        char label[256];         /* blkid LABEL or "" */
        uint64_t size;           /* bytes (BLKGETSIZE64 or st_size) */
        bool is_blockdev;
        bool mounted;            /* the device (or the loop device backed by the file) is mounted */
        bool mounted_rw;         /* ... and at least one mount is read-write */
        bool frozen;             /* not detectable in general; reserved */
        char mountpoint[PATH_MAX]; /* first mount point found, "" if none */
} KuraVolumeProbe;

/* Probe path.  Errors: KURA-E-SOURCE-NOT-FOUND, KURA-E-SOURCE-UNREADABLE. */
int kura_volume_probe(const char *path, KuraVolumeProbe *ret, KuraErr *err);

/* Is a block device (by dev_t) or a file (through the loop devices backed by
 * it) mounted?  Fills mounted/mounted_rw/mountpoint of *p.  0 or -errno. */
int kura_mount_state(const char *path, KuraVolumeProbe *p);

/* The byte ranges of the volume its filesystem uses, sorted and merged,
 * covering [0, size).  fd is open on path for reading.  Drivers: "ext2fs"
 * (libext2fs block bitmaps; unmounted or read-only ext2/3/4), "getfsmap"
 * (FS_IOC_GETFSMAP on the mount point of a mounted ext4/xfs), "whole" (any
 * other: one extent covering everything).  *ret_method (static string) says
 * which driver answered.  A driver that fails falls back to "whole", never to
 * fewer blocks.  Caller frees *ret. */
int kura_usedmap_get(const char *path, int fd, const KuraVolumeProbe *probe, KuraExtent **ret, size_t *ret_n,
                     const char **ret_method, KuraErr *err);

/* ---- restore targets ---------------------------------------------------- */

typedef struct KuraTarget KuraTarget;

/* Open a restore target for writing size bytes.  A missing file is created
 * (sparse); an existing file is truncated to size; a block device must be at
 * least size bytes (KURA-E-TARGET-TOO-SMALL) and not mounted or held by a
 * mounted loop device (KURA-E-TARGET-MOUNTED).  Directory of a new file
 * missing: KURA-E-TARGET-NOT-FOUND. */
int kura_target_open(const char *path, uint64_t size, KuraTarget **ret, KuraErr *err);
int kura_target_write(KuraTarget *t, uint64_t off, const void *buf, size_t len, KuraErr *err);
/* Make [off, off+len) read back as zeros: BLKZEROOUT on a block device,
 * nothing for a freshly created sparse file, FALLOC_FL_ZERO_RANGE (or
 * written zeros) otherwise. */
int kura_target_zero(KuraTarget *t, uint64_t off, uint64_t len, KuraErr *err);
/* Discard (BLKDISCARD / FALLOC_FL_PUNCH_HOLE); contents afterwards are
 * unspecified.  Falls back to kura_target_zero() where unsupported. */
int kura_target_discard(KuraTarget *t, uint64_t off, uint64_t len, KuraErr *err);
/* fsync and close; frees t.  Returns the fsync result. */
int kura_target_close(KuraTarget *t, KuraErr *err);
/* Close without syncing (after an error); accepts NULL. */
void kura_target_abort(KuraTarget *t);
