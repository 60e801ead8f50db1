/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Provider "fsfreeze": no snapshot, the mounted filesystem stays frozen
 * (FIFREEZE) for the whole copy and the volume itself is read.  For small or
 * quiet volumes only: every writer to the filesystem blocks meanwhile, so the
 * copy has its own limit (KuraSnapOpts.fsfreeze_copy_limit_s, default 120 s);
 * check() thaws and fails with KURA-E-FREEZE-LIMIT once it has passed rather
 * than let the copy go on (a thawed filesystem would give a torn image).
 *
 * It refuses to freeze the filesystem that holds the repository or kura's
 * state, cache, lock or temporary files (KuraSnapOpts.protect_paths): kura
 * would block on its own writes.  "Same filesystem" is decided twice: equal
 * st_dev (ext4, xfs), and equal device numbers of the mounts that hold the
 * paths in /proc/self/mountinfo (btrfs gives each subvolume its own st_dev).
 */
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "snap-internal.h"
#include "writer-internal.h" /* kura_snap_emergency_*: a signal thaws what we froze */

#define FSFREEZE_DEFAULT_LIMIT_S 120

typedef struct FsfreezePriv {
        char mountpoint[PATH_MAX];
        bool frozen;
} FsfreezePriv;

static bool fsfreeze_available(char *why, size_t n) {
        (void) why, (void) n;
        return true;
}

static bool fs_freezable(const char *fs) {
        return !strcmp(fs, "ext4") || !strcmp(fs, "ext3") || !strcmp(fs, "xfs") || !strcmp(fs, "btrfs");
}

static int fsfreeze_supports(const char *volume, const KuraVolumeProbe *p, char *why, size_t n) {
        if (!p->mounted || !p->mounted_rw || !p->mountpoint[0]) {
                snprintf(why, n, "%s is not mounted read-write: nothing to freeze", volume);
                return 0;
        }
        if (!fs_freezable(p->fs)) {
                snprintf(why, n, "%s holds %s, which kura does not freeze (ext4, xfs, btrfs only)", volume,
                         p->fs[0] ? p->fs : "an unknown filesystem");
                return 0;
        }
        return 1;
}

/* Undo the octal escapes (\040 for a space ...) of a mountinfo field in place. */
static void unescape(char *s) {
        char *w = s;
        for (char *r = s; *r; r++) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
                    r[3] <= '7') {
                        *w++ = (char) ((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                        r += 3;
                } else
                        *w++ = *r;
        }
        *w = 0;
}

/* The device number mountinfo gives for the mount that holds path (longest
 * mount point prefix, the later of equal ones: it is mounted on top). */
static int mount_devno(const char *path, dev_t *ret) {
        char real[PATH_MAX];
        if (!realpath(path, real))
                return -errno;
        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return -errno;
        char line[8192];
        size_t best = 0;
        bool found = false;
        while (fgets(line, sizeof line, f)) {
                unsigned ma, mi;
                char mp[4096];
                if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &ma, &mi, mp) != 3)
                        continue;
                unescape(mp);
                size_t l = strlen(mp);
                bool under = !strcmp(mp, "/") || (!strncmp(real, mp, l) && (real[l] == 0 || real[l] == '/'));
                if (!under)
                        continue;
                if (!strcmp(mp, "/"))
                        l = 1;
                if (l >= best) {
                        best = l;
                        *ret = makedev(ma, mi);
                        found = true;
                }
        }
        return found ? 0 : -ENOENT;
}

/* stat() the path, or its nearest existing ancestor (a repository or lock
 * file that does not exist yet will be created in the directory). */
static int stat_existing(const char *path, struct stat *st, char *which, size_t n) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s", path);
        for (;;) {
                if (stat(p, st) == 0) {
                        snprintf(which, n, "%s", p);
                        return 0;
                }
                char *slash = strrchr(p, '/');
                if (!slash)
                        return stat(".", st) == 0 ? (snprintf(which, n, "."), 0) : -errno;
                if (slash == p) {
                        p[1] = 0;
                        if (stat(p, st) < 0)
                                return -errno;
                        snprintf(which, n, "/");
                        return 0;
                }
                *slash = 0;
        }
}

static int fsfreeze_prepare(KuraShadow *s, const KuraSnapOpts *o, KuraErr *err) {
        char why[512];
        if (fsfreeze_supports(s->volume, &s->probe, why, sizeof why) <= 0)
                return kura_err(err, EINVAL, KURA_E_PROVIDER_FAILED,
                                "Choose another provider, or mount the volume read-write to freeze it.",
                                "provider fsfreeze cannot be used: %s", why);
        const char *mp = s->probe.mountpoint;
        struct stat fst;
        if (stat(mp, &fst) < 0)
                return kura_err_errno(err, -errno, KURA_E_PROVIDER_FAILED, "Check that it is still mounted.",
                                      "cannot stat mount point %s of %s", mp, s->volume);
        dev_t fsdev = 0;
        bool have_fsdev = mount_devno(mp, &fsdev) == 0;
        for (size_t i = 0; o && i < o->nprotect; i++) {
                const char *pp = o->protect_paths[i];
                if (!pp || !*pp)
                        continue;
                struct stat pst;
                char which[PATH_MAX];
                if (stat_existing(pp, &pst, which, sizeof which) < 0)
                        continue;
                dev_t pdev;
                bool same = pst.st_dev == fst.st_dev ||
                            (have_fsdev && mount_devno(which, &pdev) == 0 && pdev == fsdev);
                if (same)
                        return kura_err(err, EDEADLK, KURA_E_FREEZE_REFUSED,
                                        "Keep the repository, and kura's state, cache, lock and temporary files "
                                        "(KURA_STATE_DIR, KURA_CACHE_DIR, TMPDIR) on another filesystem, or use "
                                        "a snapshot provider that does not freeze for the whole copy.",
                                        "refusing to freeze %s (volume %s) for the copy: it holds %s, which kura "
                                        "writes to during the backup",
                                        mp, s->volume, pp);
        }
        FsfreezePriv *pv = calloc(1, sizeof *pv);
        if (!pv)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        snprintf(pv->mountpoint, sizeof pv->mountpoint, "%s", mp);
        free(s->priv);
        s->priv = pv;
        s->copy_limit_s = o && o->fsfreeze_copy_limit_s ? o->fsfreeze_copy_limit_s : FSFREEZE_DEFAULT_LIMIT_S;
        return 0;
}

/* Drop the page cache of the volume.  Filesystems such as xfs write their
 * metadata with bios of their own, past the block device's page cache: pages
 * of the device cached before (by blkid, an earlier backup, anyone) can be
 * stale, and a buffered read of the frozen device would mix them with the
 * current blocks into an image that does not mount.  BLKFLSBUF writes back
 * and invalidates the device's cache; an image file (loop) is kept coherent by
 * the loop driver, and gets POSIX_FADV_DONTNEED only for good measure. */
static int drop_cache(const KuraShadow *s, KuraErr *err) {
        _cleanup_close_ int fd = open(s->volume, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_SOURCE_UNREADABLE, "", "cannot open %s", s->volume);
        if (s->probe.is_blockdev) {
                if (ioctl(fd, BLKFLSBUF, 0) < 0)
                        return kura_err_errno(err, -errno, KURA_E_PROVIDER_FAILED,
                                              "kura needs CAP_SYS_ADMIN to read a frozen block device.",
                                              "cannot drop the cached blocks of %s", s->volume);
        } else
                (void) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        return 0;
}

static int fsfreeze_create(KuraShadow *s, KuraErr *err) {
        FsfreezePriv *pv = s->priv;
        if (!pv)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "fsfreeze: create() before prepare() for %s",
                                s->volume);
        if (!s->device && !(s->device = strdup(s->volume)))
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        int r = kura_fs_freeze(pv->mountpoint, err);
        if (r < 0)
                return r;
        pv->frozen = true;
        (void) kura_snap_emergency_add_frozen(pv->mountpoint);
        s->frozen_since = kura_mono();
        r = drop_cache(s, err);
        if (r < 0) {
                (void) kura_fs_thaw(pv->mountpoint, NULL);
                kura_snap_emergency_del_frozen(pv->mountpoint);
                pv->frozen = false;
                s->frozen_since = 0;
                return r;
        }
        if (!s->copy_limit_s)
                s->copy_limit_s = FSFREEZE_DEFAULT_LIMIT_S;
        return 0;
}

static int fsfreeze_check(KuraShadow *s, KuraErr *err) {
        FsfreezePriv *pv = s->priv;
        if (!pv || !pv->frozen || s->frozen_since <= 0)
                return 0;
        double held = kura_mono() - s->frozen_since;
        if (held <= (double) s->copy_limit_s)
                return 0;
        /* Thaw first: the filesystem's users must not wait for our error path. */
        (void) kura_fs_thaw(pv->mountpoint, NULL);
        kura_snap_emergency_del_frozen(pv->mountpoint);
        pv->frozen = false;
        s->frozen_since = 0;
        return kura_err(err, ETIME, KURA_E_FREEZE_LIMIT,
                        "Use a snapshot provider (lvm, lvm-thin, reflink) for this volume, or raise the limit "
                        "(fsfreeze copy limit) if its users can wait that long.",
                        "the copy of %s kept %s frozen for %.0f s, longer than the fsfreeze limit of %u s; "
                        "it was thawed and the backup stopped",
                        s->volume, pv->mountpoint, held, s->copy_limit_s);
}

static int fsfreeze_release(KuraShadow *s, bool retain, KuraErr *err) {
        (void) retain;
        FsfreezePriv *pv = s->priv;
        int r = 0;
        if (pv && (pv->frozen || s->frozen_since > 0)) {
                r = kura_fs_thaw(pv->mountpoint, err);
                kura_snap_emergency_del_frozen(pv->mountpoint);
        }
        s->frozen_since = 0;
        free(pv);
        s->priv = NULL;
        return r;
}

const KuraProviderOps kura_provider_fsfreeze = {
        .name = "fsfreeze",
        .id = "9d1c34e6-6a0f-4b1e-9f3e-2b5c8a7e0002",
        .type = "software",
        .description = "Keeps a mounted ext4/xfs/btrfs frozen for the whole copy (small or quiet volumes)",
        .available = fsfreeze_available,
        .supports = fsfreeze_supports,
        .prepare = fsfreeze_prepare,
        .create = fsfreeze_create,
        .check = fsfreeze_check,
        .release = fsfreeze_release,
        .changed = NULL,
        .space = NULL,
};
