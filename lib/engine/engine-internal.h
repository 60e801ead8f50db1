/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/* Private to lib/engine. */
#include "common/kcommon.h"
#include "kura/engine.h"

/* The local fingerprint cache (docs/format/repository.md §10): per volume,
 * per chunk, a keyed 128-bit fast hash of the chunk's bytes as read, and the
 * chunk ID it had.  It only lets a backup skip the cryptographic hash of a
 * chunk whose bytes did not change; the ID it yields is used only if the
 * repository's index still holds it. */
typedef struct KuraFpEntry {
        uint8_t fp[16];   /* all zero: no entry */
        KuraId id;
} KuraFpEntry;
_Static_assert(sizeof(KuraFpEntry) == 48, "fp cache entry is 48 bytes");

/* Load the cache for (repo_id, volume_key, chunk_size).  Returns 1 and *ret
 * (nchunks entries, caller frees) if a valid cache exists, 0 if none (or
 * it does not match: other size, torn, garbage), negative errno on ENOMEM. */
int kura_fpcache_load(const char *dir, const char *repo_id, const char *volume_key, uint32_t chunk_size,
                      uint64_t nchunks, KuraFpEntry **ret);
/* Replace the cache atomically.  Errors are not fatal for a backup. */
int kura_fpcache_save(const char *dir, const char *repo_id, const char *volume_key, uint32_t chunk_size,
                      uint64_t nchunks, const KuraFpEntry *entries);

/* Run a program (PATH lookup, no shell), stdin /dev/null, stdout+stderr
 * captured (last 4 KiB) into *ret_output (caller frees).  Its exit status,
 * -ENOENT when it is not installed, or -errno (lib/engine/disks.c). */
int kura_engine_run(const char *const argv[], char **ret_output);

/* ---- disks: LVM and LUKS stacks (lib/engine/disks-stack.c) -------------- */
#include <jansson.h>
#include "kura/disk.h"
#include "kura/engine.h"

/* Add a source that is already a device (no loop): lib/engine/disks.c. */
int kura_disk_backup_add_source(KuraDiskBackup *d, const char *path, const char *name, const char *record_path,
                                KuraErr *err);
/* Restore one volume of version v onto target (a device or file): lib/engine/bmr.c. */
int kura_bmr_restore_volume(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, const char *vol,
                            const char *target, uint64_t *written, KuraErr *err);

/* Backup: partition p of disk (its block device dev, the kernel's node or a
 * loop) is an LVM PV or LUKS container.  Returns 1 when the stack handled it:
 * it added its own sources (each logical volume / the open LUKS mapping)
 * with kura_disk_backup_add_source() and described itself in pe (the
 * partition's JSON object: e.g. "lvm" / "luks" members); 0 to copy the
 * partition raw; negative errno with err. */
int kura_disk_stack_backup(const char *disk_name, const KuraPartition *p, const char *dev, json_t *pe,
                           KuraDiskBackup *d, KuraErr *err);
/* Does the partition's JSON carry a stack that kura_disk_stack_restore handles? */
bool kura_disk_stack_present(const json_t *pe);
/* bmr, before anything is written onto target: what the stack needs is
 * there (a LUKS key file), and no other volume group has its name. */
int kura_disk_stack_check(const KuraBmrOpts *o, const json_t *pe, const char *target, KuraErr *err);
/* bmr: re-create the stack on dev (the new partition, new_size bytes) and
 * restore its volumes.  Returns 1 when handled, 0 when pe has no stack. */
int kura_disk_stack_restore(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, const json_t *pe,
                            const char *dev, uint64_t new_size, uint64_t *written, char **report, KuraErr *err);

/* Write back the boot area's bytes after the partition table and before the
 * first partition (first_start; GRUB's core.img on an MBR disk), from boot
 * (boot_size bytes, the diskN-boot volume) onto fd at the same offsets.
 * Returns the bytes written (0: no gap) or -errno (lib/engine/bmr.c; used by
 * bmr and verify-restore). */
int64_t kura_boot_gap_write(int fd, const KuraDiskLayout *src, uint64_t first_start, const uint8_t *boot,
                            uint64_t boot_size);
