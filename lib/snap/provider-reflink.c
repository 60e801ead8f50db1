/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Provider "reflink": an image file on xfs (reflink=1) or btrfs is cloned
 * instantly (FICLONE) to DIR/.kura-shadows/<shadow id>.img next to it, and
 * the backup reads the clone.  A successful backup keeps its clone (recorded
 * in state_dir/shadows.json) as the base of the next one and deletes the
 * older base.
 *
 * Change tracking: both clones are never written, so a physical extent that
 * the new clone maps at the same file offset as the retained one still holds
 * the same bytes (copy-on-write never overwrites a shared block, and the
 * retained clone keeps it allocated).  Everything else — different physical
 * blocks, holes that became data and data that became holes, extents whose
 * mapping FIEMAP cannot state exactly (delalloc, encoded, inline, unknown) —
 * is reported changed.
 */
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>

#include "common/kio.h"
#include "snap-internal.h"

#define XFS_MAGIC   0x58465342
#define BTRFS_MAGIC 0x9123683E

typedef struct ReflinkPriv {
        char clone[PATH_MAX];
        bool created;
} ReflinkPriv;

static bool reflink_available(char *why, size_t n) {
        (void) why, (void) n;
        return true;
}

static int shadow_dir(const char *volume, char *buf, size_t n) {
        char tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", volume);
        int k = snprintf(buf, n, "%s/.kura-shadows", dirname(tmp));
        return k > 0 && (size_t) k < n ? 0 : -ENAMETOOLONG;
}

/* Can the file be cloned?  Try it: clone at most one block into an unnamed
 * temporary file in the same directory (O_TMPFILE: nothing to clean up). */
static int reflink_supports(const char *volume, const KuraVolumeProbe *p, char *why, size_t n) {
        struct stat st;
        if (p->is_blockdev || stat(volume, &st) < 0 || !S_ISREG(st.st_mode)) {
                snprintf(why, n, "%s is not an image file", volume);
                return 0;
        }
        struct statfs sf;
        if (statfs(volume, &sf) < 0)
                return -errno;
        if ((unsigned long) sf.f_type != XFS_MAGIC && (unsigned long) sf.f_type != BTRFS_MAGIC) {
                snprintf(why, n, "%s is not on xfs or btrfs", volume);
                return 0;
        }
        _cleanup_close_ int src = open(volume, O_RDONLY | O_CLOEXEC);
        if (src < 0)
                return -errno;
        char dir[PATH_MAX], tmp[PATH_MAX];
        snprintf(tmp, sizeof tmp, "%s", volume);
        snprintf(dir, sizeof dir, "%s", dirname(tmp));
        _cleanup_close_ int dst = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (dst < 0) {
                snprintf(why, n, "cannot create a file next to %s: %s", volume, strerror(errno));
                return 0;
        }
        uint64_t len = (uint64_t) st.st_size >= 4096 ? 4096 : 0;
        struct file_clone_range fcr = {.src_fd = src, .src_offset = 0, .src_length = len, .dest_offset = 0};
        if (ioctl(dst, FICLONERANGE, &fcr) < 0) {
                snprintf(why, n, "the filesystem of %s cannot clone files (%s)%s", volume, strerror(errno),
                         (unsigned long) sf.f_type == XFS_MAGIC ? ": xfs needs mkfs.xfs -m reflink=1" : "");
                return 0;
        }
        return 1;
}

static int reflink_prepare(KuraShadow *s, const KuraSnapOpts *o, KuraErr *err) {
        (void) o;
        char dir[PATH_MAX];
        if (shadow_dir(s->volume, dir, sizeof dir) < 0)
                return kura_err(err, ENAMETOOLONG, KURA_E_PROVIDER_FAILED, "", "path too long: %s", s->volume);
        int r = kio_mkdir(dir, 0700);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED,
                                      "Make the directory of the image writable for kura.",
                                      "cannot create the shadow directory %s", dir);
        ReflinkPriv *pv = calloc(1, sizeof *pv);
        if (!pv)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if ((size_t) snprintf(pv->clone, sizeof pv->clone, "%.4000s/%.39s.img", dir, s->id) >= sizeof pv->clone)
                return kura_err(err, ENAMETOOLONG, KURA_E_PROVIDER_FAILED, "", "path too long: %s", dir);
        free(s->priv);
        s->priv = pv;
        free(s->device);
        s->device = strdup(pv->clone);
        if (!s->device)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        return 0;
}

static int reflink_create(KuraShadow *s, KuraErr *err) {
        ReflinkPriv *pv = s->priv;
        if (!pv)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "reflink: create() before prepare() for %s",
                                s->volume);
        _cleanup_close_ int src = open(s->volume, O_RDONLY | O_CLOEXEC);
        if (src < 0)
                return kura_err_errno(err, -errno, KURA_E_SOURCE_UNREADABLE, "", "cannot open %s", s->volume);
        _cleanup_close_ int dst = open(pv->clone, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (dst < 0)
                return kura_err_errno(err, -errno, KURA_E_PROVIDER_FAILED, "", "cannot create the clone %s",
                                      pv->clone);
        pv->created = true;
        if (ioctl(dst, FICLONE, src) < 0) {
                int r = -errno;
                (void) unlink(pv->clone);
                pv->created = false;
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED,
                                      "Use xfs with reflink=1 or btrfs, and keep the clone on the same filesystem.",
                                      "cannot clone %s to %s", s->volume, pv->clone);
        }
        return 0;
}

static int reflink_check(KuraShadow *s, KuraErr *err) {
        (void) s, (void) err;
        return 0;
}

/* The path of the clone from priv, or from s->device (priv == NULL: a
 * recorded shadow being deleted). */
static const char *clone_path(const KuraShadow *s) {
        const ReflinkPriv *pv = s->priv;
        if (pv)
                return pv->created ? pv->clone : NULL;
        return s->device;
}

static int reflink_release(KuraShadow *s, bool retain, KuraErr *err) {
        const char *clone = clone_path(s);
        int r = 0;
        if (clone && retain && s->state_dir) {
                KuraShadowInfo old;
                bool have_old = kura_shadow_record_retained(s->state_dir, s->volume, "reflink", &old) == 0;
                r = kura_shadow_record_add(s->state_dir, s, true);
                if (r < 0) {
                        kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "Check that the state directory is writable.",
                                       "cannot record the retained clone %s in %s", clone, s->state_dir);
                        (void) unlink(clone);
                } else if (have_old && strcmp(old.id, s->id)) {
                        (void) unlink(old.device);
                        (void) kura_shadow_record_remove(s->state_dir, old.id);
                }
        } else if (clone) {
                if (unlink(clone) < 0 && errno != ENOENT)
                        r = kura_err_errno(err, -errno, KURA_E_PROVIDER_FAILED, "Remove it by hand.",
                                           "cannot remove the clone %s", clone);
        }
        free(s->priv);
        s->priv = NULL;
        return r;
}

typedef struct Ext {
        uint64_t logical, physical, len;
        bool exact; /* physical address meaningful for comparison */
} Ext;

/* All extents of fd (FIEMAP, synced first), sorted by logical offset. */
static int fiemap_all(int fd, Ext **ret, size_t *ret_n) {
        enum { BATCH = 256 };
        _cleanup_free_ struct fiemap *fm = calloc(1, sizeof *fm + BATCH * sizeof(struct fiemap_extent));
        _cleanup_free_ Ext *v = NULL;
        size_t n = 0, cap = 0;
        if (!fm)
                return -ENOMEM;
        uint64_t start = 0;
        for (;;) {
                memset(fm, 0, sizeof *fm);
                fm->fm_start = start;
                fm->fm_length = FIEMAP_MAX_OFFSET - start;
                fm->fm_flags = FIEMAP_FLAG_SYNC;
                fm->fm_extent_count = BATCH;
                if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
                        return -errno;
                if (fm->fm_mapped_extents == 0)
                        break;
                bool last = false;
                for (unsigned i = 0; i < fm->fm_mapped_extents; i++) {
                        const struct fiemap_extent *e = &fm->fm_extents[i];
                        if (n == cap) {
                                size_t nc = cap ? cap * 2 : 256;
                                Ext *nv = reallocarray(v, nc, sizeof *nv);
                                if (!nv)
                                        return -ENOMEM;
                                v = nv;
                                cap = nc;
                        }
                        v[n++] = (Ext) {
                                .logical = e->fe_logical,
                                .physical = e->fe_physical,
                                .len = e->fe_length,
                                .exact = !(e->fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
                                                          FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED |
                                                          FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE |
                                                          FIEMAP_EXTENT_DATA_TAIL)),
                        };
                        if (e->fe_flags & FIEMAP_EXTENT_LAST)
                                last = true;
                        uint64_t end = e->fe_logical + e->fe_length;
                        if (end > start)
                                start = end;
                }
                if (last)
                        break;
        }
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

static int add_range(KuraExtent **v, size_t *n, size_t *cap, uint64_t off, uint64_t len) {
        if (len == 0)
                return 0;
        if (*n > 0 && (*v)[*n - 1].off + (*v)[*n - 1].len >= off) {
                uint64_t end = KURA_MAX((*v)[*n - 1].off + (*v)[*n - 1].len, off + len);
                (*v)[*n - 1].len = end - (*v)[*n - 1].off;
                return 0;
        }
        if (*n == *cap) {
                size_t nc = *cap ? *cap * 2 : 64;
                KuraExtent *nv = reallocarray(*v, nc, sizeof *nv);
                if (!nv)
                        return -ENOMEM;
                *v = nv;
                *cap = nc;
        }
        (*v)[(*n)++] = (KuraExtent) {.off = off, .len = len};
        return 0;
}

/* Find what covers position pos in the sorted extent list (cursor *i moves
 * forward only).  Returns the extent, or NULL for a hole; *next is where the
 * answer next may change. */
static const Ext *lookup(const Ext *v, size_t n, size_t *i, uint64_t pos, uint64_t *next) {
        while (*i < n && v[*i].logical + v[*i].len <= pos)
                (*i)++;
        if (*i >= n) {
                *next = UINT64_MAX;
                return NULL;
        }
        if (v[*i].logical > pos) {
                *next = v[*i].logical;
                return NULL;
        }
        *next = v[*i].logical + v[*i].len;
        return &v[*i];
}

/* Ranges of [0, size) where the two mappings differ, sorted and merged. */
static int diff_maps(const Ext *a, size_t na, const Ext *b, size_t nb, uint64_t size, KuraExtent **ret,
                     size_t *ret_n) {
        _cleanup_free_ KuraExtent *v = NULL;
        size_t n = 0, cap = 0, ia = 0, ib = 0;
        uint64_t pos = 0;
        while (pos < size) {
                uint64_t na_next, nb_next;
                const Ext *ea = lookup(a, na, &ia, pos, &na_next);
                const Ext *eb = lookup(b, nb, &ib, pos, &nb_next);
                uint64_t end = KURA_MIN(KURA_MIN(na_next, nb_next), size);
                bool same;
                if (!ea && !eb)
                        same = true;
                else if (!ea || !eb)
                        same = false;
                else
                        same = ea->exact && eb->exact &&
                               ea->physical + (pos - ea->logical) == eb->physical + (pos - eb->logical);
                if (!same) {
                        int r = add_range(&v, &n, &cap, pos, end - pos);
                        if (r < 0)
                                return r;
                }
                pos = end;
        }
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

static int reflink_changed(KuraShadow *s, KuraExtent **ret, size_t *ret_n, KuraErr *err) {
        if (!s->state_dir)
                return -ENODATA;
        KuraShadowInfo old;
        if (kura_shadow_record_retained(s->state_dir, s->volume, "reflink", &old) < 0 || !strcmp(old.id, s->id))
                return -ENODATA;
        _cleanup_close_ int fo = open(old.device, O_RDONLY | O_CLOEXEC);
        if (fo < 0)
                return -ENODATA; /* the base was removed: read everything */
        const char *clone = clone_path(s);
        _cleanup_close_ int fn = open(clone ? clone : s->device, O_RDONLY | O_CLOEXEC);
        if (fn < 0)
                return kura_err_errno(err, -errno, KURA_E_PROVIDER_FAILED, "", "cannot open the clone %s",
                                      clone ? clone : s->device);
        struct stat so, sn;
        if (fstat(fo, &so) < 0 || fstat(fn, &sn) < 0)
                return -errno;
        if (so.st_dev != sn.st_dev)
                return -ENODATA; /* not on one filesystem: physical addresses say nothing */
        _cleanup_free_ Ext *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        int r = fiemap_all(fo, &a, &na);
        if (r >= 0)
                r = fiemap_all(fn, &b, &nb);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "The backup reads the whole image instead.",
                                      "cannot read the extent maps of %s and %s", old.device, clone ? clone : s->device);
        uint64_t size = (uint64_t) KURA_MAX(so.st_size, sn.st_size);
        r = diff_maps(a, na, b, nb, size, ret, ret_n);
        if (r < 0)
                return kura_err(err, -r, KURA_E_NO_MEMORY, "", "out of memory");
        /* Past the old end everything is new even where both are holes. */
        if (sn.st_size > so.st_size) {
                size_t cap = *ret_n;
                r = add_range(ret, ret_n, &cap, (uint64_t) so.st_size, (uint64_t) (sn.st_size - so.st_size));
                if (r < 0)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        return 0;
}

/* Shadow storage of an image: the bytes its retained clones hold that the
 * image no longer shares (FIEMAP_EXTENT_SHARED clear), bounded by the free
 * space of the filesystem. */
static int reflink_space(const char *volume, const KuraVolumeProbe *p, KuraShadowStorage *ret, KuraErr *err) {
        (void) p, (void) err;
        memset(ret, 0, sizeof *ret);
        snprintf(ret->volume, sizeof ret->volume, "%s", volume);
        snprintf(ret->provider, sizeof ret->provider, "reflink");
        char dir[PATH_MAX];
        if (shadow_dir(volume, dir, sizeof dir) < 0)
                return -ENAMETOOLONG;
        struct statvfs sv;
        if (statvfs(volume, &sv) < 0)
                return -errno;
        _cleanup_free_ KuraShadowInfo *recs = NULL;
        size_t nrec = 0;
        const char *sd = getenv("KURA_STATE_DIR");
        if (kura_shadow_records_load(sd ? sd : "/var/lib/kura", &recs, &nrec) < 0)
                nrec = 0;
        uint64_t used = 0;
        for (size_t i = 0; i < nrec; i++) {
                if (strcmp(recs[i].provider, "reflink") || strcmp(recs[i].volume, volume))
                        continue;
                _cleanup_close_ int fd = open(recs[i].device, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                enum { BATCH = 256 };
                _cleanup_free_ struct fiemap *fm = calloc(1, sizeof *fm + BATCH * sizeof(struct fiemap_extent));
                if (!fm)
                        return -ENOMEM;
                uint64_t start = 0;
                for (;;) {
                        memset(fm, 0, sizeof *fm);
                        fm->fm_start = start;
                        fm->fm_length = FIEMAP_MAX_OFFSET - start;
                        fm->fm_extent_count = BATCH;
                        if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0 || fm->fm_mapped_extents == 0)
                                break;
                        bool last = false;
                        for (unsigned k = 0; k < fm->fm_mapped_extents; k++) {
                                const struct fiemap_extent *x = &fm->fm_extents[k];
                                if (!(x->fe_flags & FIEMAP_EXTENT_SHARED))
                                        used += x->fe_length;
                                if (x->fe_flags & FIEMAP_EXTENT_LAST)
                                        last = true;
                                start = x->fe_logical + x->fe_length;
                        }
                        if (last)
                                break;
                }
        }
        ret->used = used;
        ret->allocated = used;
        ret->maximum = used + (uint64_t) sv.f_bavail * sv.f_frsize;
        return 0;
}

const KuraProviderOps kura_provider_reflink = {
        .name = "reflink",
        .id = "9d1c34e6-6a0f-4b1e-9f3e-2b5c8a7e0003",
        .type = "software",
        .description = "Clones image files on xfs/btrfs instantly (FICLONE); changes found from extent maps",
        .available = reflink_available,
        .supports = reflink_supports,
        .prepare = reflink_prepare,
        .create = reflink_create,
        .check = reflink_check,
        .release = reflink_release,
        .changed = reflink_changed,
        .space = reflink_space,
};
