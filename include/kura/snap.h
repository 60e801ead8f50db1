/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * libkura snapshots: the snapshot coordinator (the VSS service's role),
 * writers (docs/format/writer-protocol.md) and snapshot providers
 * (lib/snap/provider-*.c).  The backup engine (the requester) drives it:
 *
 *   kura_snapset_create()   Identify every declared writer, select those with
 *                           components on the volumes, PrepareForBackup,
 *                           PrepareForSnapshot, Freeze, provider snapshots
 *                           (inside one short filesystem-freeze window), Thaw,
 *                           PostSnapshot.  Returns the path to read each volume from.
 *   ... the engine reads the volumes (kura_snapset_check_deadline() between chunks) ...
 *   kura_snapset_finish()   BackupComplete(succeeded), BackupShutdown, release or
 *                           retain the snapshots, persist writer states.
 *   kura_snapset_free()     always safe: aborts writers, thaws, removes
 *                           non-retained snapshots if finish was not called.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kura/errors.h"
#include "kura/image.h"

/* ---- writers ------------------------------------------------------------- */

typedef enum KuraWriterState {
        KURA_WS_UNKNOWN = 0,
        KURA_WS_STABLE = 1,
        KURA_WS_WAITING_FOR_FREEZE = 2,
        KURA_WS_WAITING_FOR_THAW = 3,
        KURA_WS_WAITING_FOR_POST_SNAPSHOT = 4,
        KURA_WS_WAITING_FOR_BACKUP_COMPLETE = 5,
        KURA_WS_FAILED_AT_IDENTIFY = 6,
        KURA_WS_FAILED_AT_PREPARE_BACKUP = 7,
        KURA_WS_FAILED_AT_PREPARE_SNAPSHOT = 8,
        KURA_WS_FAILED_AT_FREEZE = 9,
        KURA_WS_FAILED_AT_THAW = 10,
        KURA_WS_FAILED_AT_POST_SNAPSHOT = 11,
        KURA_WS_FAILED_AT_BACKUP_COMPLETE = 12,
        KURA_WS_FAILED_AT_PRE_RESTORE = 13,
        KURA_WS_FAILED_AT_POST_RESTORE = 14,
        KURA_WS_FAILED_AT_BACKUP_SHUTDOWN = 15,
} KuraWriterState;

typedef enum KuraWriterError {
        KURA_WE_NONE = 0,
        KURA_WE_RETRYABLE,
        KURA_WE_NON_RETRYABLE,
        KURA_WE_TIMED_OUT,
        KURA_WE_UNEXPECTED,
        KURA_WE_INCONSISTENT_SHADOW,
        KURA_WE_OUT_OF_RESOURCES,
} KuraWriterError;

/* "Stable", "Failed at freeze", ... and "No error", "Timed out", ... (static). */
const char *kura_writer_state_str(KuraWriterState s);
const char *kura_writer_error_str(KuraWriterError e);

typedef struct KuraWriterInfo {
        char *conf_path;          /* the declaration file */
        char *name;               /* Name= (or the file's base name if unreadable) */
        char *class_id;           /* ClassId= */
        char *instance_id;        /* from the last handshake, "" if none */
        bool started;             /* false: could not start, see not_started */
        char *not_started;        /* why: "program /usr/… is missing", "permission denied",
                                     "handshake failed: …", "bad declaration: …"; NULL if started */
        KuraWriterState state;
        KuraWriterError last_error;
        char *last_message;       /* the writer's message or kura's diagnosis, "" if none */
        int64_t time_ns;          /* when the state was recorded */
} KuraWriterInfo;

/* Writers as `kura writers` shows them: every declaration under
 * config_dir/writers.d, with the state persisted in state_dir by the last run;
 * with probe, each writer is started, handshaken and identified now (then
 * shut down) so that a writer that cannot start is reported with why. */
int kura_writers_status(const char *config_dir, const char *state_dir, bool probe, KuraWriterInfo **ret,
                        size_t *ret_n, KuraErr *err);
void kura_writer_info_free(KuraWriterInfo *w, size_t n);

/* ---- providers ----------------------------------------------------------- */

typedef struct KuraProviderInfo {
        const char *name;         /* "lvm-thin", "lvm", "btrfs", "reflink", "fsfreeze", "none" */
        const char *id;           /* provider ID (UUID, stable) */
        const char *type;         /* "system" | "software" */
        const char *description;
        bool available;           /* tools present on this machine */
        char why[256];            /* when not available */
} KuraProviderInfo;

int kura_providers_list(KuraProviderInfo **ret, size_t *ret_n);

/* The provider `--snapshot auto` would choose for volume (a block device or
 * an image file) as it is now, by the coordinator's rule: the first available
 * provider whose supports() says yes, never "fsfreeze" (only when named), and
 * "none" only when the volume is not mounted read-write.  Returns 1 with
 * *ret_name set (a static string: "lvm-thin", "lvm", "reflink", "none"), 0
 * when no provider would take it (why: each provider's reason, "; "
 * separated), or a negative errno (the volume cannot be probed; err filled).
 * (lib/snap/provider-pick.c) */
int kura_provider_pick_auto(const char *volume, const char **ret_name, char *why, size_t n, KuraErr *err);

typedef struct KuraShadowStorage {
        char volume[4096];
        char provider[32];
        uint64_t used, allocated, maximum; /* bytes; maximum UINT64_MAX = unbounded */
} KuraShadowStorage;

/* Shadow storage of the volumes (all known volumes when n == 0). */
int kura_shadowstorage_list(const char *const *volumes, size_t n, KuraShadowStorage **ret, size_t *ret_n,
                            KuraErr *err);

/* ---- persistent shadows (kura shadows list|create|delete) --------------- */

typedef struct KuraShadowInfo {
        char id[40];              /* shadow ID */
        char set_id[40];          /* shadow set ID */
        char volume[4096];        /* original volume */
        char device[4096];        /* the snapshot's device or file */
        char provider[32];
        int64_t created_ns;
        bool retained_for_backup; /* kept by the backup for change tracking */
} KuraShadowInfo;

int kura_shadows_list(const char *state_dir, KuraShadowInfo **ret, size_t *ret_n, KuraErr *err);
int kura_shadows_create(const char *state_dir, const char *provider, const char *const *volumes, size_t n,
                        char ret_set_id[40], KuraErr *err);
int kura_shadows_delete(const char *state_dir, const char *id_or_set_id, KuraErr *err);

/* ---- the snapshot set of one backup ------------------------------------- */

typedef struct KuraSnapOpts {
        const char *config_dir;   /* writers.d lives here */
        const char *state_dir;    /* writer states, shadows */
        const char *provider;     /* "auto" (NULL), "none", or a provider name */
        const char *writers;      /* "all" (NULL), "none", or "name,name" */
        const char *backup_type;  /* "copy" (NULL) or "full" */
        bool add_writer_volumes;  /* add volumes that selected writers' components live on */
        bool allow_mounted;       /* with provider "none": read a writable volume live */
        unsigned fs_freeze_limit_s;  /* freeze around snapshot creation, default 10 */
        unsigned fsfreeze_copy_limit_s; /* fsfreeze provider: whole copy, default 120 */
        const char *const *protect_paths; /* repository, cache, lock, temp: never freeze their filesystem */
        size_t nprotect;
} KuraSnapOpts;

typedef struct KuraSnapSet KuraSnapSet;

/* volumes[] are the source paths of the backup.  On success every volume has
 * a read path.  With add_writer_volumes the set may hold more volumes than
 * given: kura_snapset_nvolumes()/kura_snapset_volume() list them. */
int kura_snapset_create(const KuraSnapOpts *o, const char *const *volumes, size_t n, KuraSnapSet **ret,
                        KuraErr *err);
size_t kura_snapset_nvolumes(const KuraSnapSet *s);
const char *kura_snapset_volume(const KuraSnapSet *s, size_t i);      /* the original */
const char *kura_snapset_read_path(const KuraSnapSet *s, size_t i);   /* what to read */
const char *kura_snapset_provider(const KuraSnapSet *s, size_t i);    /* who made it */
bool kura_snapset_crash_consistent(const KuraSnapSet *s);             /* some volume read live */
/* Byte ranges changed since the snapshot this provider retained at the last
 * backup of the volume (lvm-thin thin_delta, reflink extent maps).
 * -ENODATA when the provider cannot tell (read everything). */
int kura_snapset_changed(KuraSnapSet *s, size_t i, KuraExtent **ret, size_t *ret_n, KuraErr *err);
/* The ID of volume i's snapshot in this set (NULL if none); after a
 * successful backup the provider may retain it as the next base. */
const char *kura_snapset_shadow_id(const KuraSnapSet *s, size_t i);
/* The ID of the retained snapshot kura_snapset_changed() compares against,
 * or -ENODATA.  The engine uses the changed ranges only when the parent
 * version recorded this very ID, so that skipped chunks are the parent's. */
int kura_snapset_base_id(const KuraSnapSet *s, size_t i, char ret[40]);
/* fsfreeze keeps a filesystem frozen during the copy: fails with
 * KURA-E-FREEZE-LIMIT (after thawing) once its limit has passed. */
int kura_snapset_check_deadline(KuraSnapSet *s, KuraErr *err);
/* The volumes have been read: release the snapshots (retaining change-
 * tracking bases), and for sets kept frozen during the copy (fsfreeze) send
 * the post-snapshot that had to wait.  Call before kura_snapset_store() and
 * saving the version.  Idempotent. */
int kura_snapset_copy_done(KuraSnapSet *s, KuraErr *err);
/* BackupComplete(succeeded) + BackupShutdown, snapshots released (retained
 * for change tracking where the provider does that and succeeded), states
 * persisted.  *ret_store (may be NULL) receives a JSON text object
 * {"writer name": {store…}} for the manifest (caller frees), or NULL. */
int kura_snapset_finish(KuraSnapSet *s, bool succeeded, char **ret_store, KuraErr *err);
/* What the selected writers returned so far (post-snapshot) as JSON text
 * {"writer name": {store…}}, or NULL if nothing; caller frees.  The engine
 * puts it into the manifest before BackupComplete. */
char *kura_snapset_store(const KuraSnapSet *s);
/* Abort (if not finished), thaw, release, free.  Accepts NULL. */
KuraSnapSet *kura_snapset_free(KuraSnapSet *s);

/* ---- writers around a restore (writer-protocol.md §5, restore) ---------- */

typedef struct KuraSnapRestore KuraSnapRestore;

/* Start, handshake and identify the declared writers that o->writers wants
 * ("all" (NULL), "none", or "name,name"; only config_dir, state_dir and
 * writers of o are used), select those that have a `store` entry in
 * store_json (the version manifest's "writers" object as JSON text, may be
 * NULL) or a component on one of volumes[] (the original volume paths being
 * restored and the restore target), make a new generation ID, and send
 * pre-restore {components, restore_type, generation_id, store} to each.
 * restore_type: "authoritative" or "non-authoritative" (NULL).  A writer
 * named in the store that is not declared here, or (with "all") cannot
 * start, is skipped with a reason (kura_snaprestore_skipped()), never a
 * failure.  A writer that fails pre-restore fails the call
 * (KURA-E-WRITER-FAILED naming it, state 13 Failed at pre restore): the
 * writers that took pre-restore are sent abort, and the restore must not
 * start.  With zero writers selected the call succeeds all the same. */
int kura_snaprestore_begin(const KuraSnapOpts *o, const char *restore_type, const char *store_json,
                           const char *const *volumes, size_t n, KuraSnapRestore **ret, KuraErr *err);
/* 32 lower-case hex digits (from getrandom), new at every begin. */
const char *kura_snaprestore_generation_id(const KuraSnapRestore *r);
/* The writers that were sent pre-restore, in order; NULL past the end. */
const char *kura_snaprestore_writer(const KuraSnapRestore *r, size_t i);
/* The writers left out, with why ("not declared in /etc/kura/writers.d",
 * "could not start: …"); NULL past the end. */
const char *kura_snaprestore_skipped(const KuraSnapRestore *r, size_t i, const char **ret_why);
/* succeeded: post-restore to every writer that took pre-restore (all of
 * them, even after one fails; the first failure is returned,
 * KURA-E-WRITER-FAILED, state 14 Failed at post restore).  Not succeeded:
 * abort {"state":"restore"} instead.  Then backup-shutdown; states are
 * persisted.  Idempotent. */
int kura_snaprestore_finish(KuraSnapRestore *r, bool succeeded, KuraErr *err);
/* Abort (if not finished), shut down, persist, free.  Accepts NULL. */
KuraSnapRestore *kura_snaprestore_free(KuraSnapRestore *r);

/* For a SIGINT/SIGTERM handler: thaw every filesystem this process froze and
 * SIGKILL every writer process group it started.  Async-signal-safe (fixed
 * static tables, open/ioctl/kill only); the process should _exit() after. */
void kura_snap_emergency_cleanup(void);
