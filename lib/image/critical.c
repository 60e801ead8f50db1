/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The critical volumes of a system: what a bare-metal recovery cannot do
 * without (the filesystems at /, /boot, /boot/efi, and paths that hold
 * system state), found from three witnesses that may disagree:
 *
 *   - the mount table (/proc/self/mountinfo through libmount): mounts at
 *     root and below, root stripped from their mount points, so that a
 *     rescue system looking at a server's disks mounted at /target sees the
 *     server's "/" and "/boot";
 *   - root/etc/fstab (libmount's parser), whose UUID=/LABEL=/PARTUUID=
 *     sources are resolved with libblkid;
 *   - for root "/" only, the kernel command line's root=.
 *
 * Each volume's reasons are kept ("mounted at /", "fstab: UUID=... /boot
 * ext4", "kernel command line root=UUID=..."), so `kura critical` can show
 * why.  Then sysfs tells what lies under each device (dm slaves for LVM and
 * LUKS, recursively; a partition's parent disk) and the snapshot providers
 * tell how a backup would make it consistent.
 */
#include <blkid/blkid.h>
#include <dirent.h>
#include <fcntl.h>
#include <libmount/libmount.h>
#include <limits.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "common/kcommon.h"
#include "kura/disk.h"
#include "kura/image.h"
#include "kura/snap.h"

/* The paths whose filesystem a system cannot boot without, in output order. */
static const char *const boot_paths[] = {"/", "/boot", "/boot/efi"};

/* Hook: paths that hold system state and are critical when they are a
 * separate filesystem (Windows counts the volumes of system services'
 * state).  None for now; add e.g. "/var" here and every caller follows. */
static const char *const state_paths[] = {NULL};

#define STACK_MAX_DEPTH 16
#define STACK_MAX_KINDS 8

typedef struct Entry {
        const char *mountpoint; /* static: one of boot_paths / state_paths */
        char *device;           /* mounted source, else fstab's resolved source, else NULL */
        char *spec;             /* fstab source as written (UUID=...), for unresolved devices */
        char *fs;
        char *why;              /* "; " separated */
        dev_t devno;            /* 0 when unknown */
        bool mounted, mounted_rw;
        bool found;
} Entry;

static void entry_clear(Entry *e) {
        free(e->device);
        free(e->spec);
        free(e->fs);
        free(e->why);
}

static int oom(KuraErr *err) {
        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
}

/* Append a reason to *s ("; " between them). */
static int __attribute__((format(printf, 2, 3))) why_add(char **s, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        char *add = NULL;
        int k = vasprintf(&add, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        char *n = NULL;
        k = *s ? asprintf(&n, "%s; %s", *s, add) : asprintf(&n, "%s", add);
        free(add);
        if (k < 0)
                return -ENOMEM;
        free(*s);
        *s = n;
        return 0;
}

static int set_str(char **dst, const char *src) {
        if (!src)
                return 0;
        char *d = strdup(src);
        if (!d)
                return -ENOMEM;
        free(*dst);
        *dst = d;
        return 0;
}

/* The entry for a path relative to the system root, NULL if not critical. */
static Entry *entry_for(Entry *v, size_t n, const char *rel) {
        for (size_t i = 0; i < n; i++)
                if (!strcmp(v[i].mountpoint, rel))
                        return &v[i];
        return NULL;
}

/* Mount point of the system under root: "/" for root itself, "/boot" for
 * root/boot; NULL when target is not at or below root.  prefix is root's
 * real path without a trailing slash ("" for "/").  Writes into buf. */
static const char *strip_root(const char *prefix, const char *target, char *buf, size_t n) {
        size_t pl = strlen(prefix);
        if (strncmp(target, prefix, pl))
                return NULL;
        const char *rest = target + pl;
        if (!*rest)
                rest = "/";
        else if (*rest != '/')
                return NULL; /* /target2 is not below /target */
        snprintf(buf, n, "%s", rest);
        /* "/boot/" -> "/boot" (fstab may carry a trailing slash) */
        size_t l = strlen(buf);
        while (l > 1 && buf[l - 1] == '/')
                buf[--l] = 0;
        return buf;
}

static dev_t blockdev_of(const char *path) {
        struct stat st;
        if (!path || path[0] != '/' || stat(path, &st) < 0 || !S_ISBLK(st.st_mode))
                return 0;
        return st.st_rdev;
}

/* ---- the three witnesses --------------------------------------------------- */

static int from_mounts(Entry *v, size_t n, const char *prefix, KuraErr *err) {
        struct libmnt_table *tb = mnt_new_table_from_file("/proc/self/mountinfo");
        if (!tb)
                return kura_err(err, EIO, KURA_E_SOURCE_UNREADABLE, "Check that /proc is mounted.",
                                "cannot read the mount table /proc/self/mountinfo");
        struct libmnt_iter *it = mnt_new_iter(MNT_ITER_FORWARD);
        if (!it) {
                mnt_unref_table(tb);
                return oom(err);
        }
        struct libmnt_fs *fs;
        int r = 0;
        /* In mount order: a later mount at the same place is on top and wins. */
        while (r >= 0 && mnt_table_next_fs(tb, it, &fs) == 0) {
                const char *target = mnt_fs_get_target(fs);
                char rel[PATH_MAX];
                if (!target || !strip_root(prefix, target, rel, sizeof rel))
                        continue;
                Entry *e = entry_for(v, n, rel);
                if (!e)
                        continue;
                const char *src = mnt_fs_get_srcpath(fs);
                if (!src)
                        src = mnt_fs_get_source(fs);
                const char *opts = mnt_fs_get_vfs_options(fs);
                bool ro = opts && mnt_optstr_get_option(opts, "ro", NULL, NULL) == 0;
                /* btrfs reports an anonymous device number (major 0): the
                 * source's own number is the one sysfs knows. */
                dev_t d = blockdev_of(src);
                if (!d && major(mnt_fs_get_devno(fs)))
                        d = mnt_fs_get_devno(fs);
                if (e->mounted) {
                        /* mounted over: the earlier reason no longer holds */
                        free(e->why);
                        e->why = NULL;
                }
                e->found = e->mounted = true;
                e->mounted_rw = !ro;
                e->devno = d;
                if (set_str(&e->device, src) < 0 || set_str(&e->fs, mnt_fs_get_fstype(fs)) < 0)
                        r = -ENOMEM;
                else if (!prefix[0])
                        r = why_add(&e->why, "mounted at %s%s", rel, ro ? " (read-only)" : "");
                else
                        r = why_add(&e->why, "mounted at %s as %s%s", target, rel, ro ? " (read-only)" : "");
        }
        mnt_free_iter(it);
        mnt_unref_table(tb);
        return r < 0 ? oom(err) : 0;
}

/* Resolve "UUID=...", "LABEL=...", "PARTUUID=...", "PARTLABEL=..." or a path
 * to a device path (malloc'ed) with libblkid; NULL if no device has it. */
static char *resolve_spec(const char *spec) {
        if (!spec || !*spec)
                return NULL;
        if (spec[0] == '/')
                return access(spec, F_OK) == 0 ? strdup(spec) : NULL;
        return blkid_evaluate_spec(spec, NULL);
}

/* A source the fstab or the command line names is compared with what is
 * mounted; a mismatch is said in the reason (a stale fstab matters in a
 * restore: the restored system would mount something else). */
static int add_named(Entry *e, const char *spec, const char *fstype, const char *what) {
        _cleanup_free_ char *dev = resolve_spec(spec);
        dev_t d = blockdev_of(dev);
        const char *note = "";
        char buf[PATH_MAX + 64];
        if (!dev)
                note = " (no such device here)";
        else if (e->mounted && e->devno && d && d != e->devno) {
                snprintf(buf, sizeof buf, " (names %s, which is not the mounted device)", dev);
                note = buf;
        }
        int r;
        if (fstype)
                r = why_add(&e->why, "%s: %s %s %s%s", what, spec, e->mountpoint, fstype, note);
        else
                r = why_add(&e->why, "%s%s%s", what, spec, note);
        if (r < 0)
                return r;
        if (!e->found || (!e->mounted && !e->device && dev)) {
                /* not mounted: this names the device */
                e->found = true;
                if (dev) {
                        e->devno = d;
                        if ((r = set_str(&e->device, dev)) < 0)
                                return r;
                } else if ((r = set_str(&e->spec, spec)) < 0)
                        return r;
        }
        if (!e->fs && fstype && strcmp(fstype, "auto") && (r = set_str(&e->fs, fstype)) < 0)
                return r;
        return 0;
}

static int from_fstab(Entry *v, size_t n, const char *prefix, KuraErr *err) {
        char path[PATH_MAX];
        int k = snprintf(path, sizeof path, "%s/etc/fstab", prefix);
        if (k < 0 || (size_t) k >= sizeof path)
                return kura_err(err, ENAMETOOLONG, KURA_E_USAGE, "Use a shorter root path.", "root %s is too long",
                                prefix);
        if (access(path, F_OK) < 0)
                return 0; /* no fstab: a system that mounts by other means */
        struct libmnt_table *tb = mnt_new_table();
        if (!tb)
                return oom(err);
        int r = mnt_table_parse_fstab(tb, path);
        if (r < 0) {
                mnt_unref_table(tb);
                return kura_err_errno(err, r, KURA_E_SOURCE_UNREADABLE, "Check the file's syntax and permissions.",
                                      "cannot parse %s", path);
        }
        struct libmnt_iter *it = mnt_new_iter(MNT_ITER_FORWARD);
        if (!it) {
                mnt_unref_table(tb);
                return oom(err);
        }
        struct libmnt_fs *fs;
        r = 0;
        while (r >= 0 && mnt_table_next_fs(tb, it, &fs) == 0) {
                const char *target = mnt_fs_get_target(fs);
                if (!target || target[0] != '/' || mnt_fs_is_swaparea(fs))
                        continue; /* swap is recorded by the backup, never critical */
                char rel[PATH_MAX];
                if (!strip_root("", target, rel, sizeof rel))
                        continue;
                Entry *e = entry_for(v, n, rel);
                if (!e)
                        continue;
                const char *src = mnt_fs_get_source(fs);
                if (!src)
                        continue;
                r = add_named(e, src, mnt_fs_get_fstype(fs) ? mnt_fs_get_fstype(fs) : "auto", "fstab");
        }
        mnt_free_iter(it);
        mnt_unref_table(tb);
        return r < 0 ? oom(err) : 0;
}

/* root= of /proc/cmdline (the last one wins, as in the kernel). */
static int from_cmdline(Entry *v, size_t n) {
        _cleanup_fclose_ FILE *f = fopen("/proc/cmdline", "re");
        if (!f)
                return 0;
        char line[4096];
        if (!fgets(line, sizeof line, f))
                return 0;
        char root[1024] = "";
        char *save = NULL;
        for (char *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
                if (!strncmp(w, "root=", 5))
                        snprintf(root, sizeof root, "%s", w + 5);
        Entry *e = entry_for(v, n, "/");
        if (!root[0] || !e)
                return 0;
        char what[64];
        snprintf(what, sizeof what, "kernel command line root=");
        return add_named(e, root, NULL, what);
}

/* ---- what lies under a device (sysfs) -------------------------------------- */

typedef struct Stack {
        char disks[1024];                  /* "/dev/vda /dev/vdb" */
        const char *kinds[STACK_MAX_KINDS]; /* dm/md layers, top first */
        size_t nkinds;
        bool top_partition;
        bool md;
} Stack;

static void stack_kind(Stack *s, const char *k) {
        for (size_t i = 0; i < s->nkinds; i++)
                if (!strcmp(s->kinds[i], k))
                        return;
        if (s->nkinds < STACK_MAX_KINDS)
                s->kinds[s->nkinds++] = k;
}

static void stack_disk(Stack *s, const char *name) {
        char w[300];
        snprintf(w, sizeof w, "/dev/%s", name);
        /* already there? (two PVs on one disk) */
        size_t wl = strlen(w);
        for (const char *p = s->disks; (p = strstr(p, w)); p += wl)
                if ((p == s->disks || p[-1] == ' ') && (p[wl] == ' ' || !p[wl]))
                        return;
        size_t l = strlen(s->disks);
        snprintf(s->disks + l, sizeof s->disks - l, "%s%s", l ? " " : "", w);
}

static bool read_attr(const char *dir, const char *name, char *buf, size_t n) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t k = read(fd, buf, n - 1);
        if (k < 0)
                return false;
        buf[k] = 0;
        buf[strcspn(buf, "\n")] = 0;
        return true;
}

static bool is_dir(const char *dir, const char *name) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, name);
        struct stat st;
        return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* dir: /sys/devices/.../block/<dev> (a real path). */
static void walk(Stack *s, const char *dir, unsigned depth) {
        if (depth > STACK_MAX_DEPTH)
                return;
        char buf[256];
        bool layer = false;
        if (read_attr(dir, "dm/uuid", buf, sizeof buf)) {
                layer = true;
                if (!strncmp(buf, "LVM-", 4))
                        stack_kind(s, "lvm");
                else if (!strncmp(buf, "CRYPT-LUKS", 10))
                        stack_kind(s, "luks");
                else if (!strncmp(buf, "CRYPT-", 6))
                        stack_kind(s, "dm-crypt");
                else if (!strncmp(buf, "mpath-", 6))
                        stack_kind(s, "multipath");
                else
                        stack_kind(s, "dm");
        } else if (is_dir(dir, "md")) {
                layer = true;
                s->md = true;
                stack_kind(s, "md");
        }
        if (layer) {
                char sl[PATH_MAX];
                snprintf(sl, sizeof sl, "%s/slaves", dir);
                DIR *d = opendir(sl);
                if (!d)
                        return;
                struct dirent *de;
                while ((de = readdir(d))) {
                        if (de->d_name[0] == '.')
                                continue;
                        char p[PATH_MAX + 512], real[PATH_MAX];
                        snprintf(p, sizeof p, "%s/%s", sl, de->d_name);
                        if (realpath(p, real))
                                walk(s, real, depth + 1);
                }
                closedir(d);
                return;
        }
        if (read_attr(dir, "partition", buf, sizeof buf)) {
                if (depth == 0)
                        s->top_partition = true;
                /* The parent is walked, not just named: a partition of an
                 * MD array (md0p1) must still say "md". */
                char parent[PATH_MAX], real[PATH_MAX];
                snprintf(parent, sizeof parent, "%s/..", dir);
                if (realpath(parent, real))
                        walk(s, real, depth + 1);
                return;
        }
        const char *b = strrchr(dir, '/');
        stack_disk(s, b ? b + 1 : dir);
}

static int stack_of(dev_t d, Stack *s) {
        memset(s, 0, sizeof *s);
        char p[64], real[PATH_MAX];
        snprintf(p, sizeof p, "/sys/dev/block/%u:%u", major(d), minor(d));
        if (!realpath(p, real))
                return -errno;
        walk(s, real, 0);
        return 0;
}

static int stack_text(const Stack *s, char **ret) {
        char buf[256] = "";
        if (!s->nkinds)
                snprintf(buf, sizeof buf, "%s", s->top_partition ? "partition" : "whole disk");
        for (size_t i = 0; i < s->nkinds; i++) {
                size_t l = strlen(buf);
                snprintf(buf + l, sizeof buf - l, "%s%s", i ? " on " : "", s->kinds[i]);
        }
        return (*ret = strdup(buf)) ? 0 : -ENOMEM;
}

/* ---- how it will be made consistent ------------------------------------------ */

static char *consistency_of(const Entry *e, const Stack *s, bool have_stack) {
        char *c = NULL;
        int k;
        if (have_stack && s->md)
                k = asprintf(&c, "unsupported: MD RAID is not supported for bare-metal recovery");
        else if (!e->device)
                k = asprintf(&c, "unknown: %s names no device here", e->spec ? e->spec : "the system");
        else if (!e->devno)
                k = asprintf(&c, "unknown: %s is not a block device", e->device);
        else {
                const char *name = NULL;
                char why[700];
                KuraErr perr = {0};
                int r = kura_provider_pick_auto(e->device, &name, why, sizeof why, &perr);
                if (r < 0)
                        k = asprintf(&c, "unknown: %s", perr.message[0] ? perr.message : strerror(-r));
                else if (r == 1 && strcmp(name, "none"))
                        k = asprintf(&c, "snapshot: %s", name);
                else if (r == 0 && e->mounted && e->mounted_rw)
                        k = asprintf(&c, "none: mounted read-write and no provider can snapshot it \u2014 use "
                                         "--crash-consistent or an offline backup from the rescue image");
                else
                        k = asprintf(&c, "offline (not mounted read-write)");
        }
        return k < 0 ? NULL : c;
}

/* ---- the list ------------------------------------------------------------------ */

int kura_critical_list(const char *root, KuraCritical **ret, size_t *ret_n, KuraErr *err) {
        if (!root || !*root)
                root = "/";
        char real[PATH_MAX];
        if (!realpath(root, real))
                return kura_err_errno(err, -errno, KURA_E_SOURCE_NOT_FOUND,
                                      "Give the directory the system's root filesystem is mounted at.",
                                      "cannot find the system root %s", root);
        struct stat st;
        if (stat(real, &st) < 0 || !S_ISDIR(st.st_mode))
                return kura_err(err, ENOTDIR, KURA_E_SOURCE_NOT_FOUND,
                                "Give the directory the system's root filesystem is mounted at.",
                                "the system root %s is not a directory", root);
        /* "/" becomes "": every mount point then starts right after the prefix. */
        const char *prefix = strcmp(real, "/") ? real : "";

        Entry v[ELEMENTSOF(boot_paths) + ELEMENTSOF(state_paths)];
        size_t n = 0;
        memset(v, 0, sizeof v);
        for (size_t i = 0; i < ELEMENTSOF(boot_paths); i++)
                v[n++].mountpoint = boot_paths[i];
        for (size_t i = 0; i < ELEMENTSOF(state_paths) && state_paths[i]; i++)
                v[n++].mountpoint = state_paths[i];

        KuraCritical *out = NULL;
        size_t nout = 0;
        int r = from_mounts(v, n, prefix, err);
        if (r >= 0)
                r = from_fstab(v, n, prefix, err);
        if (r >= 0 && !prefix[0] && from_cmdline(v, n) < 0)
                r = oom(err);
        if (r < 0)
                goto done;

        out = calloc(n ? n : 1, sizeof *out);
        if (!out) {
                r = oom(err);
                goto done;
        }
        for (size_t i = 0; i < n; i++) {
                Entry *e = &v[i];
                if (!e->found)
                        continue;
                KuraCritical *c = &out[nout++];
                Stack s = {0};
                bool have_stack = e->devno && stack_of(e->devno, &s) == 0;
                if (!e->fs && e->device) {
                        /* named by fstab with fs "auto", not mounted: ask the device */
                        KuraVolumeProbe p;
                        KuraErr perr = {0};
                        if (kura_volume_probe(e->device, &p, &perr) >= 0 && p.fs[0])
                                e->fs = strdup(p.fs);
                }
                c->mountpoint = strdup(e->mountpoint);
                c->device = strdup(e->device ? e->device : e->spec ? e->spec : "");
                c->fs = strdup(e->fs ? e->fs : "");
                c->why = strdup(e->why ? e->why : "");
                c->disks = strdup(have_stack ? s.disks : "");
                if (have_stack) {
                        if (stack_text(&s, &c->stack) < 0)
                                c->stack = NULL;
                } else
                        c->stack = strdup("");
                c->consistency = consistency_of(e, &s, have_stack);
                if (!c->mountpoint || !c->device || !c->fs || !c->why || !c->disks || !c->stack ||
                    !c->consistency) {
                        r = oom(err);
                        goto done;
                }
        }
        *ret = TAKE_PTR(out);
        *ret_n = nout;
        r = 0;
done:
        kura_critical_free(out, nout);
        for (size_t i = 0; i < n; i++)
                entry_clear(&v[i]);
        return r;
}

void kura_critical_free(KuraCritical *c, size_t n) {
        if (!c)
                return;
        for (size_t i = 0; i < n; i++) {
                free(c[i].mountpoint);
                free(c[i].device);
                free(c[i].fs);
                free(c[i].why);
                free(c[i].disks);
                free(c[i].stack);
                free(c[i].consistency);
        }
        free(c);
}
