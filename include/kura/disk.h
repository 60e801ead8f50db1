/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * libkura disks: partition-table layouts (capture and re-creation, through
 * libfdisk), access to a partition of a disk whether or not the kernel parsed
 * the table, filesystem grow/shrink/re-create after a bare-metal restore, and
 * the critical volumes of a system.
 *
 * All offsets and sizes are in BYTES, so that a layout moves between disks
 * with different logical sector sizes (512 <-> 4096).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kura/errors.h"

/* ---- layouts (lib/image/disk-layout.c) ----------------------------------- */

typedef struct KuraPartition {
        unsigned number;          /* 1-based partition number in the table */
        uint64_t start, size;     /* bytes */
        char type[40];            /* GPT type GUID (upper case) or MBR type "0x83" */
        char uuid[40];            /* GPT partition GUID (upper case), MBR "disk-id-NN" or "" */
        char name[80];            /* GPT partition name (UTF-8) or "" */
        uint64_t attrs;           /* GPT attribute bits; MBR: 0x80 when bootable (active) */
        /* Filled by kura_disk_layout_read() from libblkid at [start, start+size): */
        char fs[32];              /* "ext4", "xfs", "btrfs", "vfat", "swap", "LVM2_member", "crypto_LUKS", "" */
        char fs_uuid[64];
        char fs_label[256];
        char role[16];            /* "esp", "bios-boot", "swap", "lvm", "luks", "raid", "extended", "data" */
        uint64_t fs_used;         /* bytes in use by ext2/3/4, xfs or btrfs, from its superblock (0: unknown) */
        uint32_t fs_block;        /* the filesystem's smallest I/O unit: ext block, xfs sector, btrfs sector,
                                   * FAT sector (bytes; 0: unknown).  Below a target's logical sector size
                                   * the filesystem cannot be used there raw: bmr re-creates it. */
} KuraPartition;

typedef struct KuraDiskLayout {
        char label[8];            /* "gpt" or "dos" */
        char id[40];              /* GPT disk GUID (upper case) or MBR "0x1234abcd" */
        uint64_t size;            /* bytes */
        uint32_t sector_size;     /* logical */
        uint32_t physical_sector_size;
        uint64_t first_usable;    /* bytes: the first byte a partition may use (GPT first usable LBA) */
        uint64_t last_usable;     /* bytes: one past the last usable byte */
        uint64_t table_end;       /* bytes: end of the primary table area (MBR: sector_size; GPT: LBA 2 + entries) */
        uint64_t boot_area;       /* bytes [0, boot_area) kept raw: up to the first partition (<= 16 MiB) */
        size_t nparts;
        KuraPartition *parts;     /* sorted by start */
} KuraDiskLayout;

/* Read the partition table of a disk (block device or image file).  An image
 * file is read with sector_size_hint (0: 512); a block device uses its own
 * logical sector size.  KURA-E-DISK-LAYOUT when there is no GPT/MBR table or
 * it cannot be read; MD RAID members are refused with that code too. */
int kura_disk_layout_read(const char *path, uint32_t sector_size_hint, KuraDiskLayout *ret, KuraErr *err);
void kura_disk_layout_clear(KuraDiskLayout *l);

/* JSON (a json_t*, for the manifest's "disks" array; docs/format/repository.md). */
void *kura_disk_layout_to_json(const KuraDiskLayout *l);
int kura_disk_layout_from_json(const void *json, KuraDiskLayout *ret, KuraErr *err);

/* Write layout l onto the disk at path (block device or image file, whose size
 * and sector size are taken from the device; an image file uses
 * sector_size_hint, 0: 512).  l's offsets must already fit the target (see
 * lib/engine/bmr.c for the planning) and be multiples of its sector size.
 * boot_code: the first 440 bytes of the original sector 0 (MBR boot code) or
 * NULL; it is written with the table.  Writes a fresh label (GPT: both
 * copies, the backup at the disk's end) with the same disk ID, partition
 * GUIDs, types, names and attributes; re-reads the table where the kernel
 * supports it. */
int kura_disk_layout_write(const char *path, uint32_t sector_size_hint, const KuraDiskLayout *l,
                           const uint8_t *boot_code, KuraErr *err);

/* ---- partition access (lib/image/partdev.c) ------------------------------ */

/* A block device for [off, off+size) of the disk at path: the kernel's own
 * partition node when one exists with exactly that start and size, else a
 * loop device with that offset and size limit (made read-only unless
 * writable).  *ret_dev (caller frees) is its path; *ret_loop (>= 0) the loop
 * number to give to kura_partdev_release(), -1 when no loop was made. */
int kura_partdev_attach(const char *path, uint64_t off, uint64_t size, bool writable, char **ret_dev,
                        int *ret_loop, KuraErr *err);
void kura_partdev_release(int loop);

/* ---- filesystems after a restore (lib/image/fsresize.c) ------------------ */

/* Grow the filesystem fs ("ext2/3/4", "xfs", "btrfs") on dev to fill dev.
 * Others: nothing to do (0).  xfs and btrfs are mounted on a private
 * directory under tmpdir for the time of the resize. */
int kura_fs_grow(const char *dev, const char *fs, const char *tmpdir, KuraErr *err);

/* Put the filesystem held by the image file src (a full-size restored copy,
 * may be sparse) onto dev, which is smaller: ext2/3/4 and btrfs are shrunk in
 * src to dev's size and copied; xfs (cannot shrink) is re-created on dev with
 * the same UUID and label and filled at file level from src (mounted
 * read-only).  src is changed.  KURA-E-FS-RESIZE when it does not fit. */
int kura_fs_shrink_onto(const char *src, const char *fs, const char *dev, const char *tmpdir, KuraErr *err);

/* Smallest size (bytes) the filesystem on dev (or image file) can shrink to,
 * as the resize tool estimates it; -ENOTSUP for filesystems kura cannot
 * shrink (xfs: the bytes its files use, see kura_fs_used_bytes). */
int kura_fs_min_size(const char *path, const char *fs, const char *tmpdir, uint64_t *ret, KuraErr *err);

/* ---- critical volumes (lib/image/critical.c) ----------------------------- */

typedef struct KuraCritical {
        char *mountpoint;     /* "/", "/boot", "/boot/efi", or a system-state path */
        char *device;         /* block device (/dev/vda2, /dev/mapper/vg-root) */
        char *fs;             /* filesystem type */
        char *why;            /* "mounted at /; fstab entry UUID=...; kernel command line root=UUID=..." */
        char *disks;          /* whole disks under it, space separated ("/dev/vda"), through LVM/LUKS */
        char *stack;          /* "partition", "lvm", "luks", "lvm on luks", "md" (unsupported) */
        char *consistency;    /* how it will be made consistent: "snapshot: lvm-thin", "offline", or
                               * "none: ..." (no provider can snapshot it) */
} KuraCritical;

/* The critical volumes of the system whose root is root ("/" for this one):
 * from the mount table (mounts at and below root), root/etc/fstab, and, for
 * "/", /proc/cmdline.  Caller frees with kura_critical_free(). */
int kura_critical_list(const char *root, KuraCritical **ret, size_t *ret_n, KuraErr *err);
void kura_critical_free(KuraCritical *c, size_t n);
