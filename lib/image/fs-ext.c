/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Used-block driver "ext2fs": the block allocation bitmaps of ext2/3/4, read
 * with libext2fs from the device itself.
 *
 * The bitmaps mark every allocated block, metadata included (superblocks,
 * group descriptors, bitmaps, inode tables, journal); for BLOCK_UNINIT
 * groups libext2fs computes the metadata blocks itself.  The on-disk bitmaps
 * are only trustworthy when nothing is changing them and nothing is waiting
 * in the journal: so this driver answers only for an unmounted, read-only
 * or frozen filesystem, and gives up (the caller then reads the volume
 * whole) when the superblock says the journal needs recovery, because a
 * replay could allocate blocks the bitmaps still call free.
 */
#include <errno.h>
#include <string.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <ext2fs/ext2_err.h>
#include <ext2fs/ext2fs.h>
#pragma GCC diagnostic pop

#include "common/kcommon.h"
#include "image/image-internal.h"

/* libext2fs errors are either errno values or com_err codes from its own
 * table; only ENOMEM matters to the caller (everything else means "whole"). */
static int errcode_to_errno(errcode_t e) {
        if (e == EXT2_ET_NO_MEMORY || e == ENOMEM)
                return -ENOMEM;
        if (e > 0 && e < 4096)
                return -(int) e;
        return -EIO;
}

static void ext2fs_closep(ext2_filsys *fs) {
        if (*fs)
                ext2fs_close_free(fs);
}

static bool ext_applies(const KuraVolumeProbe *p) {
        return !p->mounted_rw || p->frozen;
}

static int ext_get(const char *path, int fd, const KuraVolumeProbe *p, KuraExtentList *out) {
        _cleanup_(ext2fs_closep) ext2_filsys fs = NULL;
        errcode_t e;
        int r;

        /* Read-only (no EXT2_FLAG_RW); 64-bit block numbers; MMP is a
         * multi-host write guard that a reader does not need to take. */
        e = ext2fs_open2(path, NULL, EXT2_FLAG_64BITS | EXT2_FLAG_SKIP_MMP, 0, 0, unix_io_manager, &fs);
        if (e)
                return errcode_to_errno(e);
        if (ext2fs_has_feature_journal_needs_recovery(fs->super))
                return -EUCLEAN;
        /* Not cleanly unmounted (ext2 without a journal, mounted read-write
         * or crashed) or with recorded errors: fsck's business, not ours. */
        if (!(fs->super->s_state & EXT2_VALID_FS) || (fs->super->s_state & EXT2_ERROR_FS))
                return -EUCLEAN;
        /* An external journal device or a snapshot-capable fork: not ours. */
        if (ext2fs_has_feature_journal_dev(fs->super))
                return -EOPNOTSUPP;
        /* Group descriptors pointing outside their group (or at block 0)
         * would make libext2fs read an empty bitmap: refuse them. */
        e = ext2fs_check_desc(fs);
        if (e)
                return errcode_to_errno(e);
        e = ext2fs_read_block_bitmap(fs);
        if (e)
                return errcode_to_errno(e);

        uint64_t bs = fs->blocksize;
        blk64_t first = fs->super->s_first_data_block, count = ext2fs_blocks_count(fs->super);
        if (count == 0 || first >= count)
                return KURA_CORRUPT();

        /* Blocks before the first data block (the 1 KiB boot block of 1 KiB
         * block filesystems) are outside the bitmap: count them used. */
        r = kura_extents_add(out, 0, first * bs);
        if (r < 0)
                return r;

        /* Runs of set bits, found with the bitmap's own search (fast on the
         * rbtree representation: one step per run, not per block). */
        blk64_t start = first, used = 0;
        while (start < count) {
                blk64_t set, zero;
                e = ext2fs_find_first_set_block_bitmap2(fs->block_map, start, count - 1, &set);
                if (e == ENOENT)
                        break;
                if (e)
                        return errcode_to_errno(e);
                e = ext2fs_find_first_zero_block_bitmap2(fs->block_map, set, count - 1, &zero);
                if (e == ENOENT)
                        zero = count;
                else if (e)
                        return errcode_to_errno(e);
                if (zero <= set)
                        return KURA_CORRUPT();
                r = kura_extents_add(out, set * bs, (zero - set) * bs);
                if (r < 0)
                        return r;
                used += zero - set;
                start = zero;
        }

        /* Cross-check with the free counts of the group descriptors: a
         * bitmap that calls more blocks free than the descriptors do is not
         * believed (a clean filesystem has them equal).  Skipped for
         * bigalloc, whose counts are in clusters. */
        if (EXT2FS_CLUSTER_RATIO(fs) == 1) {
                blk64_t desc_free = 0;
                for (dgrp_t g = 0; g < fs->group_desc_count; g++)
                        desc_free += ext2fs_bg_free_blocks_count(fs, g);
                if (desc_free > count - first || used < count - first - desc_free)
                        return -EUCLEAN;
        }

        /* Whatever lies past the filesystem's end on the device (another
         * format's metadata, a shrunk filesystem's leftovers) is not ours to
         * call free. */
        if (count * bs < p->size) {
                r = kura_extents_add(out, count * bs, p->size - count * bs);
                if (r < 0)
                        return r;
        }
        (void) fd;
        return 0;
}

static const char *const ext_types[] = {"ext2", "ext3", "ext4", NULL};

const KuraUsedDriver kura_used_driver_ext2fs = {
        .name = "ext2fs",
        .fs_types = ext_types,
        .applies = ext_applies,
        .get = ext_get,
};
