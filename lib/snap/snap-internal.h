/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * Private to lib/snap: the provider interface (one file per provider,
 * provider-<name>.c, each exporting one KuraProviderOps) and what the
 * coordinator (coordinator.c, writer-*.c) shares with them.
 */
#include "common/kcommon.h"
#include "kura/snap.h"

/* One volume's snapshot within a set. */
typedef struct KuraShadow {
        char id[40];                  /* shadow ID (UUID text) */
        char set_id[40];              /* the set's ID */
        char *volume;                 /* original source path (block device or image file) */
        char *device;                 /* path to read: the snapshot, or the original for fsfreeze/none */
        KuraVolumeProbe probe;        /* of the original */
        const struct KuraProviderOps *ops;
        void *priv;                   /* provider state, freed by release */
        int64_t created_ns;
        double frozen_since;          /* fsfreeze: kura_mono() at freeze, 0 when not frozen */
        unsigned copy_limit_s;        /* fsfreeze: whole-copy limit */
        const char *state_dir;        /* borrowed: where retained-shadow records live */
} KuraShadow;

typedef struct KuraProviderOps {
        const char *name;             /* "lvm-thin", "lvm", "reflink", "fsfreeze", "none" */
        const char *id;               /* UUID text, stable */
        const char *type;             /* "system" | "software" */
        const char *description;
        /* Tools present?  false with why filled. */
        bool (*available)(char *why, size_t n);
        /* Can it snapshot this volume?  1 yes, 0 no (why filled), <0 errno. */
        int (*supports)(const char *volume, const KuraVolumeProbe *p, char *why, size_t n);
        /* Outside the freeze window: checks (space, refuse to freeze protected paths),
         * may set s->device for providers whose read path is known in advance. */
        int (*prepare)(KuraShadow *s, const KuraSnapOpts *o, KuraErr *err);
        /* Inside the freeze window (filesystems of the set frozen by the coordinator,
         * except for fsfreeze whose create() IS the freeze): make the snapshot fast,
         * set s->device. */
        int (*create)(KuraShadow *s, KuraErr *err);
        /* During the copy: fsfreeze deadline, COW space exhaustion (KURA-E-SNAPSHOT-SPACE). */
        int (*check)(KuraShadow *s, KuraErr *err);
        /* After the copy: remove the snapshot, or keep it (retain == true, succeeded
         * backups of providers with change tracking) for the next incremental.
         * Must always thaw.  Frees priv. */
        int (*release)(KuraShadow *s, bool retain, KuraErr *err);
        /* Ranges changed since the retained snapshot of the previous backup; -ENODATA if unknown. NULL: unsupported. */
        int (*changed)(KuraShadow *s, KuraExtent **ret, size_t *ret_n, KuraErr *err);
        /* Shadow storage of a volume; NULL: not applicable. */
        int (*space)(const char *volume, const KuraVolumeProbe *p, KuraShadowStorage *ret, KuraErr *err);
} KuraProviderOps;

extern const KuraProviderOps kura_provider_lvm_thin;
extern const KuraProviderOps kura_provider_lvm;
extern const KuraProviderOps kura_provider_reflink;
extern const KuraProviderOps kura_provider_fsfreeze;
extern const KuraProviderOps kura_provider_none;

/* All providers, best first ("auto" tries them in this order), NULL-terminated. */
const KuraProviderOps *const *kura_provider_table(void);
const KuraProviderOps *kura_provider_find(const char *name);

/* Freeze / thaw a mounted filesystem (FIFREEZE/FITHAW on its mount point).
 * Thaw of a filesystem that is not frozen is success. */
int kura_fs_freeze(const char *mountpoint, KuraErr *err);
int kura_fs_thaw(const char *mountpoint, KuraErr *err);

/* A new random UUID text (36 chars + NUL). */
void kura_uuid_text(char out[40]);

/* ---- provider helpers (provider.c, shadows.c), added by the providers ---- */

/*
 * Ownership conventions of KuraShadow between the coordinator and providers:
 * s->device is malloc()ed by the provider (prepare or create) and freed by
 * whoever frees the KuraShadow; s->priv is always ONE flat allocation (no
 * pointers inside), so that kura_shadows_create() can keep a snapshot and
 * just free() it.  release() also works with priv == NULL from s->volume and
 * s->device alone (how `kura shadows delete` removes a recorded snapshot).
 */

/* Run argv[0] (an absolute path, or a name found in PATH, /usr/sbin, /sbin)
 * with stdin from /dev/null, no fds but 0-2, LVM_SUPPRESS_FD_WARNINGS=1, at
 * most timeout_s seconds (then SIGKILL, -ETIMEDOUT).  Captures up to outsz-1
 * bytes of stdout into out (NUL-terminated, may be NULL) and the last bytes
 * of stderr into errout.  Returns the exit status (>= 0) or a negative errno
 * (-ENOENT: program missing). */
int kura_provider_run(const char *const *argv, unsigned timeout_s, char *out, size_t outsz, char *errout,
                      size_t errsz);
/* Full path of a tool in PATH, /usr/sbin, /sbin, /usr/bin, /bin into buf; false if missing. */
bool kura_provider_tool(const char *name, char *buf, size_t n);

/* Retained shadows and persistent shadows, recorded in state_dir/shadows.json. */
int kura_shadow_records_load(const char *state_dir, KuraShadowInfo **ret, size_t *ret_n);
int kura_shadow_records_save(const char *state_dir, const KuraShadowInfo *v, size_t n);
/* Record s (retained_for_backup as given). */
int kura_shadow_record_add(const char *state_dir, const KuraShadow *s, bool retained_for_backup);
/* Remove the record with this shadow ID (missing is success). */
int kura_shadow_record_remove(const char *state_dir, const char *id);
/* The shadow retained for change tracking of volume by provider, 0 found, -ENOENT none. */
int kura_shadow_record_retained(const char *state_dir, const char *volume, const char *provider,
                                KuraShadowInfo *ret);

/* ---- LVM helpers shared by provider-lvm.c and provider-lvm-thin.c -------- */

typedef struct KuraLvInfo {
        char vg[128], lv[128];
        char segtype[32];     /* "linear", "striped", "thin", ... */
        char attr[16];        /* lv_attr */
        char pool[128];       /* pool_lv of a thin LV, "" otherwise */
        uint64_t size;        /* bytes */
        long thin_id;         /* thin device id, -1 if none */
        char origin[128];
        double percent;       /* snap_percent (classic) or data_percent (thin), -1 if none */
} KuraLvInfo;

/* Tools and device-mapper present? */
bool kura_lvm_available(char *why, size_t n);
/* lvs on path or "VG/LV": 0, -ENODEV when it is no LV, other negative errno. */
int kura_lvm_info(const char *path_or_name, KuraLvInfo *ret, char *errout, size_t errsz);
/* The common part of both LVM providers' supports(): the volume is a block
 * device, LVM is usable and it is a logical volume (*ret filled).  1 yes,
 * 0 no (why filled), <0 errno. */
int kura_lvm_supports_lv(const char *volume, const KuraVolumeProbe *p, KuraLvInfo *ret, char *why, size_t n);
/* FITHAW on mountpoint; true if it was frozen (then refreeze after). */
bool kura_lvm_thaw_if_frozen(const char *mountpoint);
/* lvremove -f of a recorded snapshot device /dev/VG/NAME. */
int kura_lvm_remove_device(const char *device, KuraErr *err);
