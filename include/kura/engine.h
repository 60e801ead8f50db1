/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * libkura engine: the requester.  Backup and restore jobs that drive image
 * and repo.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kura/errors.h"
#include "kura/image.h"
#include "kura/repo.h"

typedef struct KuraBackupSource {
        const char *path;  /* block device or image file */
        const char *name;  /* NULL: base name of path */
        const char *record_path; /* NULL: path; else recorded (and matched for the parent) instead,
                                  * e.g. "/dev/vda#p3" for a partition read through a loop device */
} KuraBackupSource;

typedef struct KuraProgress {
        uint64_t bytes_done;   /* of bytes_total: volume bytes processed (read or skipped) */
        uint64_t bytes_total;
        uint64_t bytes_read;
        uint64_t bytes_new;
        const char *volume;    /* borrowed, the volume being processed */
} KuraProgress;
typedef void (*KuraJobProgressFn)(void *userdata, const KuraProgress *p);

typedef struct KuraBackupOpts {
        const KuraBackupSource *sources;
        size_t nsources;
        uint32_t chunk_size;        /* 0: default 1 MiB */
        const char *const *tags;
        size_t ntags;
        bool allow_mounted;         /* read a volume mounted read-write (crash-consistent) */
        bool rehash;                /* ignore the fingerprint cache */
        const char *cache_dir;      /* NULL: no fingerprint cache */
        unsigned threads;           /* 0: number of CPUs */
        KuraJobProgressFn progress;
        void *userdata;

        /* Snapshots and writers (include/kura/snap.h).  snapshot == NULL: no
         * coordinator at all — volumes are read as they are and one mounted
         * read-write is refused unless allow_mounted.  Otherwise every volume
         * is read from a snapshot set made by the coordinator. */
        const char *snapshot;       /* "auto", "none", or a provider name */
        const char *writers;        /* "all" (NULL), "none", or "name,name" */
        const char *backup_type;    /* "copy" (NULL) or "full" */
        bool add_writer_volumes;
        const char *config_dir;     /* writers.d lives here */
        const char *state_dir;      /* writer states, retained shadows */
        unsigned fsfreeze_limit_s;  /* 0: default 120 */

        /* json_t* object (borrowed) whose members are added to the manifest
         * (e.g. "disks" from kura_disk_backup_prepare()), or NULL. */
        const void *extra_json;
} KuraBackupOpts;

/* Back up every source into one new version.  On success *ret (caller frees)
 * is the saved version with its statistics.  Nothing is visible in the
 * repository unless it returns 0. */
int kura_backup_run(KuraRepo *repo, const KuraBackupOpts *opts, KuraVersion **ret, KuraErr *err);

typedef struct KuraRestoreOpts {
        const char *version;        /* ID, prefix or "latest" */
        const char *volume;         /* name (or path/uuid alias); NULL if the version holds one */
        const char *target;         /* block device or file */
        bool discard;               /* discard free ranges instead of zeroing them */
        bool ignore_damage;         /* zero-fill damaged chunks and go on */
        unsigned threads;
        KuraJobProgressFn progress;
        void *userdata;

        /* Writers (include/kura/snap.h, writer-protocol.md §5 restore):
         * NULL or "none": no writer events (the default).  "all" or
         * "name,name": pre-restore after the chunk list is verified and
         * before the target is opened, post-restore after it is closed
         * (abort if the restore fails). */
        const char *writers;
        const char *restore_type;   /* "authoritative" | "non-authoritative" (NULL) */
        const char *config_dir;     /* writers.d lives here */
        const char *state_dir;      /* writer states */
} KuraRestoreOpts;

typedef struct KuraRestoreResult {
        char version_id[2 * KURA_ID_LEN + 1];
        char *volume_name;
        uint64_t size;
        uint64_t bytes_written;     /* data written from stored chunks */
        uint64_t bytes_zeroed;      /* zero chunks and free ranges made zero */
        uint64_t bytes_discarded;
        KuraExtent *damaged;        /* byte ranges that could not be restored (ignore_damage) */
        size_t ndamaged;
        double duration_s;
        /* With writers: the restore generation ID handed to them (32 hex),
         * "" when no writer took part; the writers that took part and those
         * left out ("Name: why"), one a line (no final newline), NULL if none. */
        char generation_id[33];
        char *writers;
        char *writers_skipped;
} KuraRestoreResult;

int kura_restore_run(KuraRepo *repo, const KuraRestoreOpts *opts, KuraRestoreResult *ret, KuraErr *err);
void kura_restore_result_clear(KuraRestoreResult *r);

/* ---- whole disks (lib/engine/disks.c) -------------------------------------- */

/* What backing up whole disks adds to a backup: one source per disk's boot
 * area ("diskN-boot": the bytes before the first partition) and per copied
 * partition ("diskNpM"; swap and extended containers are recorded, not
 * copied), and the manifest's "disks" array (docs/format/repository.md). */
typedef struct KuraDiskBackup {
        KuraBackupSource *sources;
        size_t nsources;
        void *extra_json;           /* json_t* {"disks":[...]} for KuraBackupOpts.extra_json */
        char **names;               /* owned strings the sources point to */
        size_t nnames;
        int *loops;                 /* loop devices made for partitions */
        size_t nloops;
} KuraDiskBackup;

/* disks: block devices or image files (first_index: the N of the first "diskN"). */
int kura_disk_backup_prepare(const char *const *disks, size_t n, unsigned first_index, KuraDiskBackup **ret,
                             KuraErr *err);
KuraDiskBackup *kura_disk_backup_free(KuraDiskBackup *d);

/* Does the version carry disk layouts (bare-metal recovery)?  *ret_ndisks. */
bool kura_version_is_bmr(const KuraVersion *v, size_t *ret_ndisks);

typedef bool (*KuraBmrConfirmFn)(void *userdata, const char *plan);

typedef struct KuraBmrOpts {
        const char *version;        /* ID, prefix or "latest" */
        const char *disk_map;       /* "auto" or "disk0=/dev/sdb,disk1=/dev/sdc" (keys: names or source paths) */
        const char *const *exclude; /* disk names or source paths left out */
        size_t nexclude;
        const char *grow;           /* partition volume (e.g. "disk0p3") that takes growth/shrink first */
        const char *tmpdir;         /* NULL: $TMPDIR or /var/tmp */
        bool dry_run;               /* plan only */
        KuraBmrConfirmFn confirm;   /* called with the plan before anything is written; NULL: go on */
        void *userdata;
        unsigned threads;
        KuraJobProgressFn progress;
        void *progress_userdata;
        const char *luks_key_file;  /* opens restored LUKS volumes (their backed-up headers keep the old
                                     * passphrases and keys); its bytes are the key, as cryptsetup --key-file
                                     * reads it.  NULL: a version with LUKS volumes is refused before writing. */
        /* Dissimilar hardware (DISM driver injection): kernel modules (*.ko*) in this
         * directory go into the restored system's /lib/modules/KVER/updates/kura,
         * are named in its /etc/initramfs-tools/modules, and its initramfs is
         * regenerated in a chroot (update-initramfs, else dracut).  NULL: none. */
        const char *add_drivers;
        /* "uefi", "bios" or "auto" (this machine's firmware): boot the restored
         * system with that firmware.  BIOS -> UEFI on a disk without an ESP makes
         * one (64 MiB at the end) and installs GRUB for UEFI there.  NULL: keep
         * the boot loaders as backed up. */
        const char *reinstall_bootloader;
} KuraBmrOpts;

typedef struct KuraBmrResult {
        char *plan;                 /* what was (to be) done, one line per disk and partition */
        char *report;               /* what happened: boot loader steps, warnings */
        uint64_t bytes_written;
        double duration_s;
} KuraBmrResult;

int kura_bmr_run(KuraRepo *repo, const KuraBmrOpts *o, KuraBmrResult *ret, KuraErr *err);
void kura_bmr_result_clear(KuraBmrResult *r);

/* ---- restore tests (lib/engine/verify.c) ------------------------------------ */

/* Restore every disk of a version into scratch image files (never attached
 * to the host: no loop device, no mount), check each restored filesystem
 * with its own checker in no-change mode, optionally boot each bootable disk
 * image in a qemu guest (no network, snapshot=on) until a console marker,
 * and record the result in the repository (kura_verify_record_save()). */
typedef struct KuraVerifyOpts {
        const char *version;        /* ID, prefix or "latest" */
        bool boot;                  /* boot the images in qemu */
        const char *firmware;       /* "auto" (NULL: UEFI when the disk has an ESP, else BIOS), "bios", "uefi" */
        unsigned timeout_s;         /* per boot; 0: 300 */
        const char *boot_marker;    /* POSIX extended regex for a console line; NULL: KURA_VERIFY_MARKER_DEFAULT */
        const char *tmpdir;         /* NULL: $TMPDIR or /var/tmp; a private directory is made in it */
        bool keep;                  /* keep the scratch directory (its path in the result) */
        bool no_record;             /* do not write the result into the repository */
        const char *kura_version;   /* recorded as "kura_version" (NULL: "unknown") */
        const char *vm_lock_dir;    /* NULL: $KURA_VM_CACHE or /var/cache/kura-vm (one guest at a time) */
        unsigned threads;
        KuraJobProgressFn progress;
        void *progress_userdata;
} KuraVerifyOpts;

#define KURA_VERIFY_MARKER_DEFAULT "Reached target .*Multi-User System|login: |KURA-MARKER-END"

typedef struct KuraVerifyResult {
        bool ok;                    /* every check (and boot, if asked) passed */
        bool recorded;              /* the record was saved in the repository */
        char version_id[2 * KURA_ID_LEN + 1];
        char *report;               /* one line per disk, partition and boot, for people */
        char *record;               /* the JSON record (text) as saved */
        char *workdir;              /* with keep: the scratch directory; else NULL */
        double duration_s;
} KuraVerifyResult;

/* Returns 0 when the restore test passed.  A failed test (damaged data, a
 * checker finding errors, a boot that does not reach the marker) is
 * recorded and returns -EIO with KURA-E-VERIFY-FAILED naming the first
 * failure (ret->report has all of them).  Errors that prevent the test
 * itself (version not found, no disks in it, no room in tmpdir, qemu
 * missing) are returned as such and nothing is recorded. */
int kura_verify_restore_run(KuraRepo *repo, const KuraVerifyOpts *o, KuraVerifyResult *ret, KuraErr *err);
void kura_verify_result_clear(KuraVerifyResult *r);
