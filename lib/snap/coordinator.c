/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The snapshot coordinator: the role of the VSS service for one backup
 * (include/kura/snap.h, docs/format/writer-protocol.md §5, §7).
 *
 *   create: load writers.d, start + handshake + identify every wanted writer,
 *           select those with a component on a volume of the set (mount table),
 *           refuse a half-covered writer (KURA-E-INCONSISTENT-SNAPSHOT) or add
 *           its volumes, choose a provider per volume, then
 *             prepare-for-backup, prepare-for-snapshot, provider prepare,
 *             freeze (writers), FIFREEZE (≤ fs_freeze_limit_s, a watchdog
 *             thread thaws no matter what), provider create, FITHAW,
 *             thaw (writers), post-snapshot;
 *           a retryable writer failure repeats the sequence RetryCount times.
 *   finish: backup-complete, backup-shutdown, release/retain, persist.
 *   free:   whatever is left: abort, shutdown, release, thaw, persist.
 *
 * Every failure path goes through fail_sequence(): abort to every prepared
 * writer still alive, release every prepared or created shadow, thaw every
 * filesystem we froze.  Writers run sequentially, each with an absolute
 * deadline, so the total time is bounded by the sum of their limits.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "common/kcommon.h"
#include "snap/writer-internal.h"

#define REMEDY_WRITER "see 'kura writers' and the writer's own log; fix the application, or back up with --writers=none"

/* ---- emergency cleanup (signal handler) ---------------------------------- */

#define EMERG_FROZEN_MAX 32
#define EMERG_PGID_MAX 256

static char emerg_frozen[EMERG_FROZEN_MAX][PATH_MAX];
static volatile sig_atomic_t emerg_frozen_used[EMERG_FROZEN_MAX];
static volatile pid_t emerg_pgids[EMERG_PGID_MAX];
static pthread_mutex_t emerg_lock = PTHREAD_MUTEX_INITIALIZER;

int kura_snap_emergency_add_frozen(const char *mountpoint) {
        if (strlen(mountpoint) >= PATH_MAX)
                return -ENAMETOOLONG;
        pthread_mutex_lock(&emerg_lock);
        int r = -ENOSPC;
        for (int i = 0; i < EMERG_FROZEN_MAX; i++)
                if (!emerg_frozen_used[i]) {
                        snprintf(emerg_frozen[i], PATH_MAX, "%s", mountpoint);
                        __atomic_thread_fence(__ATOMIC_SEQ_CST);
                        emerg_frozen_used[i] = 1;
                        r = 0;
                        break;
                }
        pthread_mutex_unlock(&emerg_lock);
        return r;
}

void kura_snap_emergency_del_frozen(const char *mountpoint) {
        pthread_mutex_lock(&emerg_lock);
        for (int i = 0; i < EMERG_FROZEN_MAX; i++)
                if (emerg_frozen_used[i] && !strcmp(emerg_frozen[i], mountpoint)) {
                        emerg_frozen_used[i] = 0;
                        break;
                }
        pthread_mutex_unlock(&emerg_lock);
}

int kura_snap_emergency_add_pgid(pid_t pgid) {
        pthread_mutex_lock(&emerg_lock);
        int r = -ENOSPC;
        for (int i = 0; i < EMERG_PGID_MAX; i++)
                if (emerg_pgids[i] == 0) {
                        emerg_pgids[i] = pgid;
                        r = 0;
                        break;
                }
        pthread_mutex_unlock(&emerg_lock);
        return r;
}

void kura_snap_emergency_del_pgid(pid_t pgid) {
        pthread_mutex_lock(&emerg_lock);
        for (int i = 0; i < EMERG_PGID_MAX; i++)
                if (emerg_pgids[i] == pgid)
                        emerg_pgids[i] = 0;
        pthread_mutex_unlock(&emerg_lock);
}

/* Async-signal-safe: open/ioctl/close/kill only, no locks, no allocation. */
void kura_snap_emergency_cleanup(void) {
        int e = errno;
        for (int i = 0; i < EMERG_FROZEN_MAX; i++)
                if (emerg_frozen_used[i]) {
                        int fd = open(emerg_frozen[i], O_RDONLY | O_CLOEXEC | O_DIRECTORY);
                        if (fd >= 0) {
                                (void)ioctl(fd, FITHAW, 0);
                                close(fd);
                        }
                        emerg_frozen_used[i] = 0;
                }
        for (int i = 0; i < EMERG_PGID_MAX; i++) {
                pid_t p = emerg_pgids[i];
                if (p > 0)
                        kill(-p, SIGKILL);
                emerg_pgids[i] = 0;
        }
        errno = e;
}

/* ---- provider table (tests may replace it) ------------------------------- */

static const KuraProviderOps *const *test_table;

void kura_snap_set_provider_table_for_tests(const KuraProviderOps *const *table) {
        test_table = table;
}

static const KuraProviderOps *const *provider_table(void) {
        return test_table ? test_table : kura_provider_table();
}

static const KuraProviderOps *provider_by_name(const char *name) {
        for (const KuraProviderOps *const *p = provider_table(); p && *p; p++)
                if (!strcmp((*p)->name, name))
                        return *p;
        return NULL;
}

/* ---- the set --------------------------------------------------------------- */

typedef struct Vol {
        KuraShadow sh;
        bool prepared, created;
        bool live;                 /* provider none on a read-write mount */
} Vol;

struct KuraSnapSet {
        json_t *pending_post_snapshot; /* args of a post-snapshot deferred until the copy is done */
        bool copy_done;
        char *config_dir, *state_dir, *backup_type;
        bool add_writer_volumes, allow_mounted;
        unsigned fs_freeze_limit_s, copy_limit_s;
        char **protect;
        size_t nprotect;
        char set_id[40];
        Vol *vols;
        size_t nvols;
        KuraWriterConf **confs;
        size_t nconfs;
        KuraWriter *ws;            /* one per wanted conf */
        size_t nws;
        bool explicit_writers;     /* --writers=name,...: a writer that fails to start fails the backup */
        bool crash_consistent;
        bool ready;                /* the sequence completed: writers wait for backup-complete */
        bool finished;
        char **frozen;             /* mount points we FIFREEZE'd and not yet thawed */
        size_t nfrozen;
};

size_t kura_snapset_nvolumes(const KuraSnapSet *s) {
        return s ? s->nvols : 0;
}
const char *kura_snapset_volume(const KuraSnapSet *s, size_t i) {
        return s && i < s->nvols ? s->vols[i].sh.volume : NULL;
}
const char *kura_snapset_read_path(const KuraSnapSet *s, size_t i) {
        if (!s || i >= s->nvols)
                return NULL;
        return s->vols[i].sh.device ? s->vols[i].sh.device : s->vols[i].sh.volume;
}
const char *kura_snapset_provider(const KuraSnapSet *s, size_t i) {
        return s && i < s->nvols && s->vols[i].sh.ops ? s->vols[i].sh.ops->name : NULL;
}
bool kura_snapset_crash_consistent(const KuraSnapSet *s) {
        return s && s->crash_consistent;
}

static int oom(KuraErr *err) {
        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
}

/* ---- path -> volume (the mount table) ------------------------------------ */

typedef struct DevSet {
        dev_t d[8];
        int n;
        char src[PATH_MAX];        /* the mount source holding a path ("" unknown) */
        char fstype[64];
        char mnt[PATH_MAX];
} DevSet;

static void devset_add(DevSet *ds, dev_t d) {
        for (int i = 0; i < ds->n; i++)
                if (ds->d[i] == d)
                        return;
        if (ds->n < (int)ELEMENTSOF(ds->d))
                ds->d[ds->n++] = d;
}

static bool devset_meets(const DevSet *a, const DevSet *b) {
        for (int i = 0; i < a->n; i++)
                for (int k = 0; k < b->n; k++)
                        if (a->d[i] == b->d[k])
                                return true;
        return false;
}

/* Undo mountinfo's octal escapes (\040 for space) in place. */
static void unescape(char *s) {
        char *w = s;
        for (char *r = s; *r;) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
                    r[3] <= '7') {
                        *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
                        r += 4;
                } else
                        *w++ = *r++;
        }
        *w = 0;
}

static bool under(const char *path, const char *mnt) {
        size_t n = strlen(mnt);
        if (!strcmp(mnt, "/"))
                return true;
        return !strncmp(path, mnt, n) && (path[n] == '/' || path[n] == 0);
}

/* The devices a path's data lives on: st_dev, and the block device that is
 * the source of the mount holding it (found in /proc/self/mountinfo by the
 * longest mount point containing the path, preferring a major:minor equal to
 * st_dev — btrfs subvolumes have anonymous st_dev). */
static int path_devices(const char *path, DevSet *ds) {
        memset(ds, 0, sizeof *ds);
        char real[PATH_MAX];
        struct stat st;
        if (!realpath(path, real) || stat(real, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode)) {
                devset_add(ds, st.st_rdev);
                snprintf(ds->src, sizeof ds->src, "%s", real);
                return 0;
        }
        devset_add(ds, st.st_dev);
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return 0;
        char *line = NULL;
        size_t cap = 0;
        size_t best_len = 0;
        bool best_devmatch = false;
        while (getline(&line, &cap, f) > 0) {
                unsigned maj, min;
                char mnt[PATH_MAX], *dash;
                if (sscanf(line, "%*s %*s %u:%u %*s %4095s", &maj, &min, mnt) != 3)
                        continue;
                if (!(dash = strstr(line, " - ")))
                        continue;
                char fstype[64], src[PATH_MAX];
                if (sscanf(dash + 3, "%63s %4095s", fstype, src) != 2)
                        continue;
                unescape(mnt);
                unescape(src);
                if (!under(real, mnt))
                        continue;
                bool devmatch = makedev(maj, min) == st.st_dev;
                size_t l = strlen(mnt);
                if (l > best_len || (l == best_len && (devmatch || !best_devmatch))) {
                        best_len = l;
                        best_devmatch = devmatch;
                        snprintf(ds->src, sizeof ds->src, "%s", src);
                        snprintf(ds->fstype, sizeof ds->fstype, "%s", fstype);
                        snprintf(ds->mnt, sizeof ds->mnt, "%s", mnt);
                }
        }
        free(line);
        fclose(f);
        struct stat sst;
        if (ds->src[0] == '/' && stat(ds->src, &sst) == 0 && S_ISBLK(sst.st_mode))
                devset_add(ds, sst.st_rdev);
        return 0;
}

/* The devices a volume is: a block device's st_rdev; an image file's loop
 * devices (sysfs backing_file). */
static int volume_devices(const char *vol, DevSet *ds) {
        memset(ds, 0, sizeof *ds);
        char real[PATH_MAX];
        struct stat st;
        if (!realpath(vol, real) || stat(real, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode)) {
                devset_add(ds, st.st_rdev);
                return 0;
        }
        for (int i = 0; i < 256; i++) {
                char p[96], buf[PATH_MAX];
                snprintf(p, sizeof p, "/sys/block/loop%d/loop/backing_file", i);
                FILE *f = fopen(p, "re");
                if (!f)
                        continue;
                bool same = fgets(buf, sizeof buf, f) != NULL;
                fclose(f);
                if (!same)
                        continue;
                buf[strcspn(buf, "\n")] = 0;
                if (strcmp(buf, real))
                        continue;
                snprintf(p, sizeof p, "/sys/block/loop%d/dev", i);
                unsigned maj, min;
                f = fopen(p, "re");
                if (f && fscanf(f, "%u:%u", &maj, &min) == 2)
                        devset_add(ds, makedev(maj, min));
                if (f)
                        fclose(f);
        }
        return 0;
}

/* Index of the volume of the set holding path, or -1 (*out filled). */
static int locate(KuraSnapSet *s, DevSet *vds, const char *path, DevSet *out) {
        char real[PATH_MAX];
        if (path_devices(path, out) < 0)
                return -2; /* does not exist: holds nothing to protect */
        if (!realpath(path, real))
                return -2;
        for (size_t i = 0; i < s->nvols; i++) {
                char rv[PATH_MAX];
                /* A path that is itself a volume of the set (raw device or image). */
                if (realpath(s->vols[i].sh.volume, rv) && !strcmp(rv, real))
                        return (int)i;
                if (devset_meets(out, &vds[i]))
                        return (int)i;
        }
        return -1;
}

/* ---- volumes and providers ----------------------------------------------- */

static int add_volume(KuraSnapSet *s, const char *path, KuraErr *err) {
        Vol *nv = realloc(s->vols, (s->nvols + 1) * sizeof *nv);
        if (!nv)
                return oom(err);
        s->vols = nv;
        Vol *v = &s->vols[s->nvols];
        memset(v, 0, sizeof *v);
        if (!(v->sh.volume = strdup(path)))
                return oom(err);
        s->nvols++;
        int r = kura_volume_probe(path, &v->sh.probe, err);
        if (r < 0)
                return r;
        kura_uuid_text(v->sh.id);
        memcpy(v->sh.set_id, s->set_id, sizeof v->sh.set_id);
        v->sh.state_dir = s->state_dir;
        v->sh.copy_limit_s = s->copy_limit_s;
        return 0;
}

static int choose_provider(KuraSnapSet *s, Vol *v, const char *want, KuraErr *err) {
        const KuraVolumeProbe *p = &v->sh.probe;
        char why[256];
        const KuraProviderOps *ops = NULL;
        bool rw = p->mounted && p->mounted_rw;
        if (!want || !strcmp(want, "auto")) {
                char whys[700] = "";
                for (const KuraProviderOps *const *t = provider_table(); t && *t; t++) {
                        why[0] = 0;
                        if ((*t)->available && !(*t)->available(why, sizeof why)) {
                                size_t l = strlen(whys);
                                snprintf(whys + l, sizeof whys - l, "%s%s: %s", l ? "; " : "", (*t)->name, why);
                                continue;
                        }
                        if (!strcmp((*t)->name, "none")) {
                                if (rw && !s->allow_mounted)
                                        continue;
                                ops = *t;
                                break;
                        }
                        if (!strcmp((*t)->name, "fsfreeze")) {
                                /* Never chosen on its own: it keeps the whole
                                 * filesystem frozen while the volume is read. */
                                size_t l = strlen(whys);
                                snprintf(whys + l, sizeof whys - l, "%sfsfreeze: only when named", l ? "; " : "");
                                continue;
                        }
                        int r = (*t)->supports ? (*t)->supports(v->sh.volume, p, why, sizeof why) : 0;
                        if (r == 1) {
                                ops = *t;
                                break;
                        }
                        size_t l = strlen(whys);
                        snprintf(whys + l, sizeof whys - l, "%s%s: %s", l ? "; " : "", (*t)->name,
                                 r < 0 ? strerror(-r) : why);
                }
                if (!ops)
                        return kura_err(err, EBUSY, KURA_E_SOURCE_MOUNTED,
                                        "unmount it or remount it read-only; or --snapshot fsfreeze (freezes the "
                                        "filesystem for the whole copy, small or quiet volumes); or put it on LVM "
                                        "thin; or --snapshot none / --allow-mounted for a crash-consistent copy",
                                        "source %s is mounted read-write at %s and no snapshot provider can take it "
                                        "(%s): its image would be torn",
                                        v->sh.volume, p->mountpoint, whys[0] ? whys : "no provider");
        } else {
                ops = provider_by_name(want);
                if (!ops)
                        return kura_err(err, ENOENT, KURA_E_NO_PROVIDER, "see 'kura providers' for the names",
                                        "there is no snapshot provider named '%s'", want);
                why[0] = 0;
                if (ops->available && !ops->available(why, sizeof why))
                        return kura_err(err, ENOTSUP, KURA_E_NO_PROVIDER, "install the tools it needs or choose "
                                        "another provider", "snapshot provider %s is not available: %s", ops->name,
                                        why);
                if (!strcmp(ops->name, "none")) {
                        if (rw && !s->allow_mounted)
                                return kura_err(err, EBUSY, KURA_E_NO_PROVIDER,
                                                "unmount it or mount it read-only, use a snapshot provider, or pass "
                                                "--allow-mounted for a crash-consistent copy",
                                                "%s is mounted read-write at %s: provider none would read it while "
                                                "it changes",
                                                v->sh.volume, p->mountpoint);
                } else {
                        int r = ops->supports ? ops->supports(v->sh.volume, p, why, sizeof why) : 0;
                        if (r != 1)
                                return kura_err(err, ENOTSUP, KURA_E_NO_PROVIDER,
                                                "choose another provider, or 'auto'",
                                                "snapshot provider %s cannot snapshot %s: %s", ops->name,
                                                v->sh.volume, r < 0 ? strerror(-r) : why);
                }
        }
        v->sh.ops = ops;
        if (!strcmp(ops->name, "none") && rw) {
                v->live = true;
                s->crash_consistent = true;
        }
        return 0;
}

/* ---- filesystem freeze window --------------------------------------------- */

typedef struct Watchdog {
        pthread_mutex_t m;
        pthread_cond_t c;
        bool done, fired;
        struct timespec until;
        char **mps;
        size_t n;
} Watchdog;

static void *watchdog_main(void *arg) {
        Watchdog *w = arg;
        pthread_mutex_lock(&w->m);
        while (!w->done) {
                int r = pthread_cond_timedwait(&w->c, &w->m, &w->until);
                if (r == ETIMEDOUT && !w->done) {
                        /* The limit passed: thaw no matter what create() is doing. */
                        for (size_t i = 0; i < w->n; i++)
                                (void)kura_fs_thaw(w->mps[i], NULL);
                        w->fired = true;
                        break;
                }
        }
        pthread_mutex_unlock(&w->m);
        return NULL;
}

static bool protected_fs(KuraSnapSet *s, const char *mnt) {
        struct stat a, b;
        if (stat(mnt, &a) < 0)
                return true; /* cannot tell: do not freeze */
        for (size_t i = 0; i < s->nprotect; i++) {
                char *p = strdup(s->protect[i]);
                /* The path may not exist yet: its nearest existing parent decides. */
                while (p && stat(p, &b) < 0) {
                        char *sl = strrchr(p, '/');
                        if (!sl || sl == p) {
                                strcpy(p, "/");
                                continue;
                        }
                        *sl = 0;
                }
                bool same = p && b.st_dev == a.st_dev;
                free(p);
                if (same)
                        return true;
        }
        return false;
}

static void thaw_all(KuraSnapSet *s) {
        for (size_t i = s->nfrozen; i > 0; i--) {
                (void)kura_fs_thaw(s->frozen[i - 1], NULL);
                kura_snap_emergency_del_frozen(s->frozen[i - 1]);
                free(s->frozen[i - 1]);
        }
        s->nfrozen = 0;
}

/* FIFREEZE the filesystems of the set, create every snapshot, FITHAW. */
static int create_snapshots(KuraSnapSet *s, KuraErr *err) {
        int r = 0;
        free(s->frozen);
        s->frozen = calloc(s->nvols + 1, sizeof(char *));
        s->nfrozen = 0;
        if (!s->frozen)
                return oom(err);
        for (size_t i = 0; i < s->nvols; i++) {
                Vol *v = &s->vols[i];
                const char *pn = v->sh.ops->name;
                const char *mp = v->sh.probe.mountpoint;
                if (!v->sh.probe.mounted || !v->sh.probe.mounted_rw || !*mp || !strcmp(pn, "none") ||
                    !strcmp(pn, "fsfreeze") || protected_fs(s, mp))
                        continue;
                bool dup = false;
                for (size_t k = 0; k < s->nfrozen; k++)
                        dup |= !strcmp(s->frozen[k], mp);
                if (dup)
                        continue;
                char *c = strdup(mp);
                if (!c) {
                        r = oom(err);
                        break;
                }
                if (kura_snap_emergency_add_frozen(mp) < 0) {
                        free(c);
                        r = kura_err(err, ENOSPC, KURA_E_FREEZE_REFUSED, "back up fewer volumes at once",
                                     "too many filesystems to freeze at once (%s)", mp);
                        break;
                }
                r = kura_fs_freeze(mp, err);
                if (r < 0) {
                        kura_snap_emergency_del_frozen(mp);
                        free(c);
                        break;
                }
                s->frozen[s->nfrozen++] = c;
        }
        Watchdog wd = {.n = s->nfrozen, .mps = s->frozen};
        pthread_t th;
        bool have_thread = false;
        if (r == 0 && s->nfrozen > 0) {
                pthread_condattr_t ca;
                pthread_condattr_init(&ca);
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
                pthread_cond_init(&wd.c, &ca);
                pthread_condattr_destroy(&ca);
                pthread_mutex_init(&wd.m, NULL);
                clock_gettime(CLOCK_MONOTONIC, &wd.until);
                wd.until.tv_sec += s->fs_freeze_limit_s;
                if (pthread_create(&th, NULL, watchdog_main, &wd) != 0) {
                        r = kura_err(err, EAGAIN, KURA_E_FREEZE_REFUSED, "free some resources and retry",
                                     "cannot start the freeze watchdog");
                } else
                        have_thread = true;
        }
        for (size_t i = 0; r == 0 && i < s->nvols; i++) {
                Vol *v = &s->vols[i];
                KuraErr e = {0};
                r = v->sh.ops->create ? v->sh.ops->create(&v->sh, &e) : 0;
                if (r < 0) {
                        if (!kura_err_isset(&e))
                                kura_err_errno(&e, r, KURA_E_PROVIDER_FAILED, "see the provider's message",
                                               "provider %s could not snapshot %s", v->sh.ops->name, v->sh.volume);
                        if (err && !kura_err_isset(err))
                                *err = e;
                        break;
                }
                v->created = true;
                v->sh.created_ns = kura_now_ns();
                if (!v->sh.device && !(v->sh.device = strdup(v->sh.volume)))
                        r = oom(err);
        }
        bool fired = false;
        if (have_thread) {
                pthread_mutex_lock(&wd.m);
                wd.done = true;
                pthread_cond_signal(&wd.c);
                pthread_mutex_unlock(&wd.m);
                pthread_join(th, NULL);
                fired = wd.fired;
                pthread_cond_destroy(&wd.c);
                pthread_mutex_destroy(&wd.m);
        }
        thaw_all(s);
        if (r == 0 && fired)
                r = kura_err(err, ETIMEDOUT, KURA_E_FREEZE_LIMIT,
                             "the snapshot provider was too slow; check the volume group's health and retry",
                             "creating the snapshots took longer than the %u s filesystem freeze limit; the "
                             "filesystems were thawed and the snapshots are not consistent",
                             s->fs_freeze_limit_s);
        return r;
}

static void release_all(KuraSnapSet *s, bool succeeded, KuraErr *err) {
        for (size_t i = 0; i < s->nvols; i++) {
                Vol *v = &s->vols[i];
                if (!v->prepared && !v->created)
                        continue;
                bool retain = succeeded && v->created && v->sh.ops->changed;
                KuraErr e = {0};
                int r = v->sh.ops->release ? v->sh.ops->release(&v->sh, retain, &e) : 0;
                if (r < 0 && err && !kura_err_isset(err)) {
                        if (!kura_err_isset(&e))
                                kura_err_errno(&e, r, KURA_E_PROVIDER_FAILED, "remove it with 'kura shadows delete'",
                                               "could not release the snapshot of %s", v->sh.volume);
                        *err = e;
                }
                v->prepared = v->created = false;
                v->sh.priv = NULL;
                if (!retain) {
                        free(v->sh.device);
                        v->sh.device = NULL;
                }
        }
}

/* ---- writers ---------------------------------------------------------------- */

static bool wanted(const char *list, const char *name) {
        if (!list || !strcmp(list, "all"))
                return true;
        if (!strcmp(list, "none"))
                return false;
        size_t n = strlen(name);
        for (const char *p = list; *p;) {
                const char *e = strchr(p, ',');
                size_t l = e ? (size_t)(e - p) : strlen(p);
                if (l == n && !strncmp(p, name, n))
                        return true;
                p += l + (e ? 1 : 0);
        }
        return false;
}

static int writer_error(KuraWriter *w, int r, KuraErr *err) {
        if (r == -ENOMEM)
                return oom(err);
        const char *code = r == -ETIMEDOUT ? KURA_E_WRITER_TIMEOUT : KURA_E_WRITER_FAILED;
        return kura_err(err, r == -ETIMEDOUT ? ETIMEDOUT : EIO, code, REMEDY_WRITER,
                        "writer '%s' failed: state [%d] %s, last error: %s: %s", w->conf->name, (int)w->state,
                        kura_writer_state_str(w->state), kura_writer_error_str(w->last_error),
                        w->message ? w->message : "");
}

static json_t *volumes_json(KuraSnapSet *s) {
        json_t *a = json_array();
        for (size_t i = 0; a && i < s->nvols; i++)
                json_array_append_new(a, json_string(s->vols[i].sh.volume));
        return a;
}

static int merge_store(KuraWriter *w, json_t *result, KuraErr *err) {
        json_t *st = NULL;
        char why[128];
        if (kura_wproto_get_store(result, &st, why, sizeof why) < 0) {
                w->state = KURA_WS_FAILED_AT_POST_SNAPSHOT;
                w->last_error = KURA_WE_UNEXPECTED;
                free(w->message);
                w->message = kura_asprintf("protocol error: %s", why);
                return writer_error(w, -EPROTO, err);
        }
        if (!st)
                return 0;
        if (!w->store && !(w->store = json_object()))
                return oom(err);
        json_object_update(w->store, st);
        return 0;
}

/* Send event to every selected, running writer.  Returns 0, or the first
 * failure (err filled, *ret_failed the writer). */
static int event_all(KuraSnapSet *s, const char *event, json_t *args_common, KuraWriter **ret_failed, KuraErr *err) {
        for (size_t i = 0; i < s->nws; i++) {
                KuraWriter *w = &s->ws[i];
                if (!w->selected || !w->proc)
                        continue;
                json_t *args = args_common ? json_incref(args_common) : NULL;
                if (!strcmp(event, "prepare-for-backup")) {
                        json_t *names = json_array();
                        for (size_t k = 0; names && k < w->ncomponents; k++)
                                json_array_append_new(names, json_string(w->components[k].name));
                        args = json_pack("{s:s, s:o, s:o}", "backup_type", s->backup_type, "components", names,
                                         "volumes", volumes_json(s));
                        if (!args)
                                return oom(err);
                        w->last_error = KURA_WE_NONE;
                        free(w->message);
                        w->message = NULL;
                }
                json_t *res = NULL;
                int r = kura_writer_event(w, event, args, &res);
                json_decref(args);
                if (r == 0 && !strcmp(event, "prepare-for-backup"))
                        w->prepared = true;
                if (r == 0 && (!strcmp(event, "post-snapshot") || !strcmp(event, "backup-complete")))
                        r = merge_store(w, res, err);
                json_decref(res);
                if (r < 0) {
                        if (r == -EAGAIN || r == -EPERM)
                                w->prepared = true; /* it answered: it gets abort too */
                        *ret_failed = w;
                        if (!kura_err_isset(err))
                                (void)writer_error(w, r, err);
                        return r; /* -EAGAIN tells the caller to retry */
                }
        }
        return 0;
}

/* abort to every selected writer still running that was prepared (for a
 * restore: took pre-restore). */
static void abort_writers(KuraWriter *ws, size_t n, const char *at) {
        json_t *args = json_pack("{s:s}", "state", at);
        for (size_t i = 0; i < n; i++) {
                KuraWriter *w = &ws[i];
                if (!w->selected || !w->proc || !w->prepared)
                        continue;
                KuraWriterState st = w->state;
                KuraWriterError le = w->last_error;
                char *msg = w->message ? strdup(w->message) : NULL;
                int r = kura_writer_event(w, "abort", args, NULL);
                if (r == 0 && st >= KURA_WS_FAILED_AT_IDENTIFY) {
                        /* abort does not erase the failure the writer reported */
                        w->state = st;
                        w->last_error = le;
                        free(w->message);
                        w->message = msg;
                        msg = NULL;
                }
                free(msg);
                w->prepared = false;
                w->freeze_sent = 0;
        }
        json_decref(args);
}

static void abort_all(KuraSnapSet *s, const char *at) {
        abort_writers(s->ws, s->nws, at);
}

static void shutdown_all(KuraSnapSet *s) {
        for (size_t i = 0; i < s->nws; i++)
                kura_writer_shutdown(&s->ws[i]);
}

static void persist_writers(const char *state_dir, KuraWriter *ws, size_t n) {
        KuraWriter **v = calloc(n ? n : 1, sizeof *v);
        if (!v)
                return;
        for (size_t i = 0; i < n; i++)
                v[i] = &ws[i];
        (void)kura_writers_persist(state_dir, v, n, NULL);
        free(v);
}

static void persist(KuraSnapSet *s) {
        persist_writers(s->state_dir, s->ws, s->nws);
}

/* One pass of the backup sequence. */
static int run_sequence(KuraSnapSet *s, const char **ret_at, KuraWriter **ret_failed, KuraErr *err) {
        int r;
        json_t *vols = volumes_json(s);
        json_t *a = vols ? json_pack("{s:O}", "volumes", vols) : NULL;
        if (!a) {
                json_decref(vols);
                return oom(err);
        }
        *ret_at = "prepare-for-backup";
        if ((r = event_all(s, "prepare-for-backup", NULL, ret_failed, err)) < 0)
                goto out;
        *ret_at = "prepare-for-snapshot";
        if ((r = event_all(s, "prepare-for-snapshot", a, ret_failed, err)) < 0)
                goto out;
        for (size_t i = 0; i < s->nvols; i++) {
                Vol *v = &s->vols[i];
                KuraSnapOpts o = {.config_dir = s->config_dir, .state_dir = s->state_dir,
                                  .allow_mounted = s->allow_mounted, .fs_freeze_limit_s = s->fs_freeze_limit_s,
                                  .fsfreeze_copy_limit_s = s->copy_limit_s,
                                  .protect_paths = (const char *const *)s->protect, .nprotect = s->nprotect};
                KuraErr e = {0};
                r = v->sh.ops->prepare ? v->sh.ops->prepare(&v->sh, &o, &e) : 0;
                v->prepared = true; /* release() frees whatever prepare left, even on failure */
                if (r < 0) {
                        if (!kura_err_isset(&e))
                                kura_err_errno(&e, r, KURA_E_PROVIDER_FAILED, "see the provider's message",
                                               "provider %s cannot prepare a snapshot of %s", v->sh.ops->name,
                                               v->sh.volume);
                        if (err && !kura_err_isset(err))
                                *err = e;
                        goto out;
                }
        }
        *ret_at = "freeze";
        if ((r = event_all(s, "freeze", NULL, ret_failed, err)) < 0)
                goto out;
        *ret_at = "snapshot";
        if ((r = create_snapshots(s, err)) < 0)
                goto out;
        *ret_at = "thaw";
        if ((r = event_all(s, "thaw", NULL, ret_failed, err)) < 0)
                goto out;
        json_t *snaps = json_array();
        for (size_t i = 0; snaps && i < s->nvols; i++)
                json_array_append_new(snaps, json_pack("{s:s, s:s}", "volume", s->vols[i].sh.volume, "device",
                                                       kura_snapset_read_path(s, i)));
        json_t *pa = snaps ? json_pack("{s:o}", "snapshots", snaps) : NULL;
        if (!pa) {
                r = oom(err);
                goto out;
        }
        /* A provider that keeps the filesystem frozen while it is read
         * (fsfreeze) has not really let go yet: a writer that writes at
         * post-snapshot (PostgreSQL's pg_backup_stop writes WAL) would block.
         * For such sets post-snapshot follows the copy, in
         * kura_snapset_copy_done(). */
        json_decref(s->pending_post_snapshot);
        s->pending_post_snapshot = NULL;
        bool held = false;
        for (size_t i = 0; i < s->nvols; i++)
                if (s->vols[i].created && !strcmp(s->vols[i].sh.ops->name, "fsfreeze"))
                        held = true;
        if (held) {
                s->pending_post_snapshot = pa;
                r = 0;
                goto out;
        }
        *ret_at = "post-snapshot";
        r = event_all(s, "post-snapshot", pa, ret_failed, err);
        json_decref(pa);
out:
        json_decref(a);
        json_decref(vols);
        return r;
}

static void fail_sequence(KuraSnapSet *s, const char *at) {
        /* Writers first (their abort thaws the application), then our own. */
        thaw_all(s);
        abort_all(s, at);
        release_all(s, false, NULL);
}

static int start_writers(KuraSnapSet *s, const KuraSnapOpts *o, KuraErr *err) {
        int r = kura_writer_confs_load(s->config_dir, &s->confs, &s->nconfs, err);
        if (r < 0)
                return r;
        s->explicit_writers = o->writers && strcmp(o->writers, "all") && strcmp(o->writers, "none");
        if (s->explicit_writers) {
                /* Every name given must be declared. */
                const char *p = o->writers;
                while (*p) {
                        const char *e = strchr(p, ',');
                        size_t l = e ? (size_t)(e - p) : strlen(p);
                        bool found = false;
                        for (size_t i = 0; i < s->nconfs; i++)
                                found |= strlen(s->confs[i]->name) == l && !strncmp(s->confs[i]->name, p, l);
                        if (!found && l > 0)
                                return kura_err(err, ENOENT, KURA_E_WRITER_FAILED, "see 'kura writers' for the names",
                                                "no writer named '%.*s' is declared in %s/writers.d", (int)l, p,
                                                s->config_dir);
                        p += l + (e ? 1 : 0);
                }
        }
        s->ws = calloc(s->nconfs ? s->nconfs : 1, sizeof *s->ws);
        if (!s->ws)
                return oom(err);
        for (size_t i = 0; i < s->nconfs; i++) {
                if (!wanted(o->writers, s->confs[i]->name))
                        continue;
                KuraWriter *w = &s->ws[s->nws++];
                w->conf = s->confs[i];
                w->time_ns = kura_now_ns();
                r = kura_writer_start(w);
                if (r == -ENOMEM)
                        return oom(err);
                if (r < 0) {
                        if (s->explicit_writers)
                                return kura_err(err, EIO, KURA_E_WRITER_FAILED, REMEDY_WRITER,
                                                "writer '%s' (%s) could not start: %s", w->conf->name,
                                                w->conf->conf_path, w->not_started);
                        continue;
                }
                json_t *res = NULL;
                r = kura_writer_event(w, "identify", NULL, &res);
                if (r == 0) {
                        char why[256];
                        r = kura_wproto_parse_components(res, &w->components, &w->ncomponents, why, sizeof why);
                        if (r == -EPROTO) {
                                w->state = KURA_WS_FAILED_AT_IDENTIFY;
                                w->last_error = KURA_WE_UNEXPECTED;
                                free(w->message);
                                w->message = kura_asprintf("protocol error in the identify result: %s", why);
                                kura_writer_shutdown(w);
                        }
                }
                json_decref(res);
                if (r == -ENOMEM)
                        return oom(err);
                if (r < 0 && s->explicit_writers)
                        return writer_error(w, r, err);
        }
        return 0;
}

/* Which writers take part; volumes their components need. */
static int select_writers(KuraSnapSet *s, KuraErr *err) {
        for (size_t pass = 0; pass < 2; pass++) {
                size_t nv = s->nvols;
                DevSet *vds = calloc(nv ? nv : 1, sizeof *vds);
                if (!vds)
                        return oom(err);
                for (size_t i = 0; i < nv; i++)
                        (void)volume_devices(s->vols[i].sh.volume, &vds[i]);
                int r = 0;
                for (size_t i = 0; r == 0 && i < s->nws; i++) {
                        KuraWriter *w = &s->ws[i];
                        if (!w->proc)
                                continue;
                        bool on = false;
                        for (size_t c = 0; c < w->ncomponents; c++)
                                for (size_t k = 0; k < w->components[c].npaths; k++) {
                                        DevSet ds;
                                        if (locate(s, vds, w->components[c].paths[k], &ds) >= 0)
                                                on = true;
                                }
                        if (!on)
                                continue;
                        w->selected = true;
                        for (size_t c = 0; r == 0 && c < w->ncomponents; c++)
                                for (size_t k = 0; r == 0 && k < w->components[c].npaths; k++) {
                                        DevSet ds;
                                        const char *path = w->components[c].paths[k];
                                        if (locate(s, vds, path, &ds) != -1)
                                                continue;
                                        bool addable = ds.src[0] == '/';
                                        struct stat st;
                                        addable = addable && stat(ds.src, &st) == 0 && S_ISBLK(st.st_mode);
                                        if (s->add_writer_volumes && addable && pass == 0) {
                                                r = add_volume(s, ds.src, err);
                                                /* refresh the device sets for the next paths */
                                                if (r == 0) {
                                                        DevSet *nvds = realloc(vds, s->nvols * sizeof *vds);
                                                        if (!nvds)
                                                                r = oom(err);
                                                        else {
                                                                vds = nvds;
                                                                (void)volume_devices(ds.src, &vds[s->nvols - 1]);
                                                        }
                                                }
                                                continue;
                                        }
                                        w->state = KURA_WS_FAILED_AT_IDENTIFY;
                                        w->last_error = KURA_WE_INCONSISTENT_SHADOW;
                                        free(w->message);
                                        w->message = kura_asprintf("component '%s' path %s is on %s, which is not "
                                                                   "in the snapshot set",
                                                                   w->components[c].name, path,
                                                                   ds.src[0] ? ds.src : "an unknown volume");
                                        r = kura_err(err, EXDEV, KURA_E_INCONSISTENT_SNAPSHOT,
                                                     addable ? "back up that volume too (--add-writer-volumes), or "
                                                               "exclude the writer with --writers"
                                                             : "exclude the writer with --writers",
                                                     "writer '%s' component '%s' has %s on volume %s%s%s%s, which "
                                                     "is not in the snapshot set",
                                                     w->conf->name, w->components[c].name, path,
                                                     ds.src[0] ? ds.src : "(unknown)", ds.mnt[0] ? " (mounted at " : "",
                                                     ds.mnt, ds.mnt[0] ? ")" : "");
                                }
                }
                free(vds);
                if (r < 0)
                        return r;
                if (!s->add_writer_volumes)
                        break;
        }
        return 0;
}

static int copy_opts(KuraSnapSet *s, const KuraSnapOpts *o, KuraErr *err) {
        s->config_dir = strdup(o->config_dir ? o->config_dir : "/etc/kura");
        s->state_dir = strdup(o->state_dir ? o->state_dir : "/var/lib/kura");
        s->backup_type = strdup(o->backup_type ? o->backup_type : "copy");
        if (!s->config_dir || !s->state_dir || !s->backup_type)
                return oom(err);
        if (strcmp(s->backup_type, "copy") && strcmp(s->backup_type, "full"))
                return kura_err(err, EINVAL, KURA_E_USAGE, "use --backup-type=copy or full",
                                "unknown backup type '%s'", s->backup_type);
        s->add_writer_volumes = o->add_writer_volumes;
        s->allow_mounted = o->allow_mounted;
        s->fs_freeze_limit_s = o->fs_freeze_limit_s ? o->fs_freeze_limit_s : 10;
        s->copy_limit_s = o->fsfreeze_copy_limit_s ? o->fsfreeze_copy_limit_s : 120;
        if (o->nprotect) {
                if (!(s->protect = calloc(o->nprotect, sizeof(char *))))
                        return oom(err);
                for (size_t i = 0; i < o->nprotect; i++, s->nprotect++)
                        if (!(s->protect[i] = strdup(o->protect_paths[i])))
                                return oom(err);
        }
        return 0;
}

int kura_snapset_create(const KuraSnapOpts *o, const char *const *volumes, size_t n, KuraSnapSet **ret,
                        KuraErr *err) {
        KuraSnapOpts defaults = {0};
        if (!o)
                o = &defaults;
        KuraSnapSet *s = calloc(1, sizeof *s);
        if (!s)
                return oom(err);
        kura_uuid_text(s->set_id);
        int r = copy_opts(s, o, err);
        for (size_t i = 0; r == 0 && i < n; i++)
                r = add_volume(s, volumes[i], err);
        if (r == 0)
                r = start_writers(s, o, err);
        if (r == 0)
                r = select_writers(s, err);
        /* Writers with nothing on the set leave now. */
        for (size_t i = 0; r == 0 && i < s->nws; i++)
                if (!s->ws[i].selected)
                        kura_writer_shutdown(&s->ws[i]);
        for (size_t i = 0; r == 0 && i < s->nvols; i++)
                r = choose_provider(s, &s->vols[i], o->provider, err);
        if (r < 0) {
                s->finished = true; /* nothing to abort beyond shutdown */
                shutdown_all(s);
                persist(s);
                kura_snapset_free(s);
                return r;
        }

        unsigned retries = 0;
        for (;;) {
                const char *at = "prepare-for-backup";
                KuraWriter *failed = NULL;
                KuraErr e = {0};
                r = run_sequence(s, &at, &failed, &e);
                if (r == 0)
                        break;
                fail_sequence(s, at);
                if (r == -EAGAIN && failed && retries < failed->conf->retry_count) {
                        retries++;
                        double d = failed->conf->retry_delay_s;
                        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
                        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                                ;
                        continue;
                }
                if (err && !kura_err_isset(err))
                        *err = e;
                s->finished = true;
                shutdown_all(s);
                persist(s);
                kura_snapset_free(s);
                return r;
        }
        s->ready = true;
        persist(s);
        *ret = s;
        return 0;
}

int kura_snapset_copy_done(KuraSnapSet *s, KuraErr *err) {
        if (!s || s->finished || s->copy_done)
                return 0;
        s->copy_done = true;
        /* Let go of the snapshots now (thaw fsfreeze, free COW space); keep
         * the ones that serve as the next backup's change-tracking base. */
        KuraErr e = {0};
        release_all(s, true, &e);
        if (kura_err_isset(&e)) {
                if (err && !kura_err_isset(err))
                        *err = e;
                return -e.errnum;
        }
        if (s->pending_post_snapshot) {
                KuraWriter *failed = NULL;
                int r = event_all(s, "post-snapshot", s->pending_post_snapshot, &failed, err);
                json_decref(s->pending_post_snapshot);
                s->pending_post_snapshot = NULL;
                if (r < 0) {
                        persist(s);
                        return r;
                }
        }
        return 0;
}

int kura_snapset_changed(KuraSnapSet *s, size_t i, KuraExtent **ret, size_t *ret_n, KuraErr *err) {
        if (!s || i >= s->nvols)
                return -EINVAL;
        Vol *v = &s->vols[i];
        if (!v->created || !v->sh.ops->changed)
                return -ENODATA;
        return v->sh.ops->changed(&v->sh, ret, ret_n, err);
}

const char *kura_snapset_shadow_id(const KuraSnapSet *s, size_t i) {
        /* Still answers after kura_snapset_copy_done() released it. */
        if (!s || i >= s->nvols || !s->vols[i].sh.ops || !s->vols[i].sh.id[0])
                return NULL;
        return s->vols[i].sh.id;
}

int kura_snapset_base_id(const KuraSnapSet *s, size_t i, char ret[40]) {
        if (!s || i >= s->nvols)
                return -EINVAL;
        const Vol *v = &s->vols[i];
        if (!v->created || !v->sh.ops->changed)
                return -ENODATA;
        KuraShadowInfo old;
        int r = kura_shadow_record_retained(s->state_dir, v->sh.volume, v->sh.ops->name, &old);
        if (r < 0)
                return -ENODATA;
        if (!strcmp(old.id, v->sh.id))
                return -ENODATA;
        snprintf(ret, 40, "%s", old.id);
        return 0;
}

int kura_snapset_check_deadline(KuraSnapSet *s, KuraErr *err) {
        if (!s)
                return 0;
        for (size_t i = 0; i < s->nvols; i++) {
                Vol *v = &s->vols[i];
                if (!v->created || !v->sh.ops->check)
                        continue;
                int r = v->sh.ops->check(&v->sh, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

int kura_snapset_finish(KuraSnapSet *s, bool succeeded, char **ret_store, KuraErr *err) {
        if (ret_store)
                *ret_store = NULL;
        if (!s || s->finished)
                return 0;
        s->finished = true;
        int r = 0;
        json_t *args = json_pack("{s:b}", "succeeded", succeeded);
        for (size_t i = 0; i < s->nws; i++) {
                KuraWriter *w = &s->ws[i];
                if (!w->selected || !w->proc)
                        continue;
                json_t *res = NULL;
                int q = kura_writer_event(w, "backup-complete", args, &res);
                if (q == 0)
                        q = merge_store(w, res, err);
                else if (r == 0)
                        q = writer_error(w, q, err);
                json_decref(res);
                if (q < 0 && r == 0)
                        r = q;
        }
        json_decref(args);
        shutdown_all(s);
        release_all(s, succeeded && r == 0, r == 0 ? err : NULL);
        persist(s);
        if (ret_store)
                *ret_store = kura_snapset_store(s);
        return r;
}

char *kura_snapset_store(const KuraSnapSet *s) {
        if (!s)
                return NULL;
        char *text = NULL;
        json_t *all = json_object();
        for (size_t i = 0; all && i < s->nws; i++)
                if (s->ws[i].selected && s->ws[i].store)
                        json_object_set(all, s->ws[i].conf->name, s->ws[i].store);
        if (all && json_object_size(all) > 0)
                text = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(all);
        return text;
}

KuraSnapSet *kura_snapset_free(KuraSnapSet *s) {
        if (!s)
                return NULL;
        json_decref(s->pending_post_snapshot);
        s->pending_post_snapshot = NULL;
        if (!s->finished) {
                s->finished = true;
                thaw_all(s);
                abort_all(s, s->ready ? "post-snapshot" : "prepare-for-backup");
                shutdown_all(s);
                release_all(s, false, NULL);
                persist(s);
        }
        thaw_all(s);
        for (size_t i = 0; i < s->nws; i++)
                kura_writer_clear(&s->ws[i]);
        free(s->ws);
        kura_writer_confs_free(s->confs, s->nconfs);
        for (size_t i = 0; i < s->nvols; i++) {
                free(s->vols[i].sh.volume);
                free(s->vols[i].sh.device);
        }
        free(s->vols);
        for (size_t i = 0; i < s->nprotect; i++)
                free(s->protect[i]);
        free(s->protect);
        free(s->frozen);
        free(s->config_dir);
        free(s->state_dir);
        free(s->backup_type);
        free(s);
        return NULL;
}

/* ---- restore: pre-restore and post-restore (writer-protocol.md §5) ------- */

#define REMEDY_PRE_RESTORE                                                                                     \
        "the restore did not start and the target is untouched; see 'kura writers' and the writer's own log; " \
        "fix the application, or restore with --writers=none"
#define REMEDY_POST_RESTORE                                                                                  \
        "the volume's data was restored; see the writer's own log, then bring the application up by hand " \
        "and check it"

struct KuraSnapRestore {
        char *config_dir, *state_dir;
        const char *restore_type;  /* static string */
        char generation_id[33];
        json_t *stores;            /* the version's "writers" object */
        KuraWriterConf **confs;
        size_t nconfs;
        KuraWriter *ws;            /* one per wanted conf */
        size_t nws;
        bool *took;                /* ws[i] answered pre-restore ok */
        char **skip_name, **skip_why;
        size_t nskipped;
        bool finished;
};

static int skip_writer(KuraSnapRestore *r, const char *name, const char *why, KuraErr *err) {
        char **nn = realloc(r->skip_name, (r->nskipped + 1) * sizeof *nn);
        if (!nn)
                return oom(err);
        r->skip_name = nn;
        char **nw = realloc(r->skip_why, (r->nskipped + 1) * sizeof *nw);
        if (!nw)
                return oom(err);
        r->skip_why = nw;
        r->skip_name[r->nskipped] = strdup(name);
        r->skip_why[r->nskipped] = strdup(why);
        if (!r->skip_name[r->nskipped] || !r->skip_why[r->nskipped]) {
                free(r->skip_name[r->nskipped]);
                free(r->skip_why[r->nskipped]);
                return oom(err);
        }
        r->nskipped++;
        return 0;
}

static bool in_list(const char *list, const char *name, size_t len) {
        return strlen(name) == len && !strncmp(name, list, len);
}

static const KuraWriterConf *conf_named(KuraSnapRestore *r, const char *name, size_t len) {
        for (size_t i = 0; i < r->nconfs; i++)
                if (in_list(name, r->confs[i]->name, len))
                        return r->confs[i];
        return NULL;
}

/* Is path on one of the volumes (vds[i] their devices)?  The same rule as
 * the backup's (§5): the path is a volume itself, or its filesystem is on
 * one (a block device, or a loop device backed by an image file). */
static bool on_restored_volume(const char *const *vols, const DevSet *vds, size_t n, const char *path) {
        char real[PATH_MAX];
        DevSet ds;
        if (path_devices(path, &ds) < 0 || !realpath(path, real))
                return false;
        for (size_t i = 0; i < n; i++) {
                char rv[PATH_MAX];
                if (realpath(vols[i], rv) && !strcmp(rv, real))
                        return true;
                if (devset_meets(&ds, &vds[i]))
                        return true;
        }
        return false;
}

static int restore_writer_error(KuraWriter *w, int r, bool pre, KuraErr *err) {
        if (r == -ENOMEM)
                return oom(err);
        const char *code = r == -ETIMEDOUT ? KURA_E_WRITER_TIMEOUT : KURA_E_WRITER_FAILED;
        return kura_err(err, r == -ETIMEDOUT ? ETIMEDOUT : EIO, code, pre ? REMEDY_PRE_RESTORE : REMEDY_POST_RESTORE,
                        "writer '%s' failed %s: state [%d] %s, last error: %s: %s", w->conf->name,
                        pre ? "pre-restore" : "post-restore", (int)w->state, kura_writer_state_str(w->state),
                        kura_writer_error_str(w->last_error), w->message ? w->message : "");
}

/* {components, restore_type, generation_id, store} for w. */
static json_t *restore_args(KuraSnapRestore *r, KuraWriter *w) {
        json_t *names = json_array();
        for (size_t k = 0; names && k < w->ncomponents; k++)
                json_array_append_new(names, json_string(w->components[k].name));
        json_t *st = json_object_get(r->stores, w->conf->name);
        st = json_is_object(st) ? json_incref(st) : json_object();
        if (!names || !st) {
                json_decref(names);
                json_decref(st);
                return NULL;
        }
        return json_pack("{s:o, s:s, s:s, s:o}", "components", names, "restore_type", r->restore_type,
                         "generation_id", r->generation_id, "store", st);
}

/* Start + handshake + identify one wanted writer.  0, -ENOMEM, or another
 * negative errno with *why set (static or in buf). */
static int restore_identify(KuraWriter *w, char *buf, size_t bufn, const char **why) {
        int r = kura_writer_start(w);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                snprintf(buf, bufn, "could not start: %s", w->not_started ? w->not_started : strerror(-r));
                *why = buf;
                return r;
        }
        json_t *res = NULL;
        r = kura_writer_event(w, "identify", NULL, &res);
        if (r == 0) {
                char pw[256];
                r = kura_wproto_parse_components(res, &w->components, &w->ncomponents, pw, sizeof pw);
                if (r == -EPROTO) {
                        w->state = KURA_WS_FAILED_AT_IDENTIFY;
                        w->last_error = KURA_WE_UNEXPECTED;
                        free(w->message);
                        w->message = kura_asprintf("protocol error in the identify result: %s", pw);
                        kura_writer_shutdown(w);
                }
        }
        json_decref(res);
        if (r < 0 && r != -ENOMEM) {
                snprintf(buf, bufn, "failed identify: %s", w->message ? w->message : strerror(-r));
                *why = buf;
        }
        return r;
}

/* pre-restore to one writer; a retryable answer is retried RetryCount
 * times, RetryDelay apart, after an abort that undoes what it began. */
static int pre_restore_one(KuraSnapRestore *r, KuraWriter *w, KuraErr *err) {
        for (unsigned tries = 0;; tries++) {
                json_t *args = restore_args(r, w);
                if (!args)
                        return oom(err);
                w->last_error = KURA_WE_NONE;
                free(w->message);
                w->message = NULL;
                int q = kura_writer_event(w, "pre-restore", args, NULL);
                json_decref(args);
                if (q == 0 || q == -EAGAIN || q == -EPERM)
                        w->prepared = true; /* it answered: it gets abort on failure */
                if (q == 0)
                        return 0;
                if (q == -EAGAIN && tries < w->conf->retry_count && w->proc) {
                        abort_writers(w, 1, "pre-restore");
                        double d = w->conf->retry_delay_s;
                        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
                        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                                ;
                        continue;
                }
                /* Out of retries, or a failure: the state is already 13 */
                return restore_writer_error(w, q, true, err);
        }
}

static void restore_wind_down(KuraSnapRestore *r, const char *abort_at) {
        if (abort_at)
                abort_writers(r->ws, r->nws, abort_at);
        for (size_t i = 0; i < r->nws; i++)
                kura_writer_shutdown(&r->ws[i]);
        persist_writers(r->state_dir, r->ws, r->nws);
}

int kura_snaprestore_begin(const KuraSnapOpts *o, const char *restore_type, const char *store_json,
                           const char *const *volumes, size_t n, KuraSnapRestore **ret, KuraErr *err) {
        KuraSnapOpts defaults = {0};
        if (!o)
                o = &defaults;
        *ret = NULL;
        const char *rt = NULL;
        if (!restore_type || !strcmp(restore_type, "non-authoritative"))
                rt = "non-authoritative";
        else if (!strcmp(restore_type, "authoritative"))
                rt = "authoritative";
        else
                return kura_err(err, EINVAL, KURA_E_USAGE, "use --restore-type=authoritative or non-authoritative",
                                "unknown restore type '%s'", restore_type);
        KuraSnapRestore *r = calloc(1, sizeof *r);
        if (!r)
                return oom(err);
        r->restore_type = rt;
        r->finished = true; /* until a writer has taken pre-restore */
        int q = 0;
        r->config_dir = strdup(o->config_dir ? o->config_dir : "/etc/kura");
        r->state_dir = strdup(o->state_dir ? o->state_dir : "/var/lib/kura");
        if (!r->config_dir || !r->state_dir) {
                q = oom(err);
                goto fail;
        }
        uint8_t gen[16];
        if ((q = kura_random(gen, sizeof gen)) < 0) {
                q = kura_err_errno(err, q, KURA_E_INTERNAL, "check the kernel's random number generator",
                                   "cannot make a restore generation ID");
                goto fail;
        }
        kura_hex(gen, sizeof gen, r->generation_id);
        if (store_json) {
                /* From the manifest: authenticated, but written by writers;
                 * anything but an object of objects is ignored per entry. */
                r->stores = json_loads(store_json, JSON_REJECT_DUPLICATES, NULL);
                if (!json_is_object(r->stores)) {
                        json_decref(r->stores);
                        r->stores = NULL;
                }
        }
        if (!r->stores && !(r->stores = json_object())) {
                q = oom(err);
                goto fail;
        }
        if (o->writers && !strcmp(o->writers, "none")) {
                *ret = r;
                return 0;
        }
        if ((q = kura_writer_confs_load(r->config_dir, &r->confs, &r->nconfs, err)) < 0)
                goto fail;
        bool explicit = o->writers && strcmp(o->writers, "all");
        if (explicit) {
                /* A name that is neither declared nor in the version is a mistake. */
                for (const char *p = o->writers; *p;) {
                        const char *e = strchr(p, ',');
                        size_t l = e ? (size_t)(e - p) : strlen(p);
                        bool stored = false;
                        const char *k;
                        json_t *val;
                        json_object_foreach(r->stores, k, val) stored |= in_list(p, k, l);
                        if (l > 0 && !conf_named(r, p, l) && !stored) {
                                q = kura_err(err, ENOENT, KURA_E_WRITER_FAILED, "see 'kura writers' for the names",
                                             "no writer named '%.*s' is declared in %s/writers.d or took part in "
                                             "the backup", (int)l, p, r->config_dir);
                                goto fail;
                        }
                        p += l + (e ? 1 : 0);
                }
        }
        /* Writers that stored something at backup time but are not here. */
        const char *key;
        json_t *val;
        json_object_foreach(r->stores, key, val) {
                if (!wanted(o->writers, key) || conf_named(r, key, strlen(key)))
                        continue;
                char why[PATH_MAX + 64];
                snprintf(why, sizeof why, "not declared in %s/writers.d", r->config_dir);
                if ((q = skip_writer(r, key, why, err)) < 0)
                        goto fail;
        }
        r->ws = calloc(r->nconfs ? r->nconfs : 1, sizeof *r->ws);
        r->took = calloc(r->nconfs ? r->nconfs : 1, sizeof *r->took);
        if (!r->ws || !r->took) {
                q = oom(err);
                goto fail;
        }
        DevSet *vds = calloc(n ? n : 1, sizeof *vds);
        if (!vds) {
                q = oom(err);
                goto fail;
        }
        for (size_t i = 0; i < n; i++)
                (void)volume_devices(volumes[i], &vds[i]);
        for (size_t i = 0; i < r->nconfs; i++) {
                if (!wanted(o->writers, r->confs[i]->name))
                        continue;
                KuraWriter *w = &r->ws[r->nws++];
                w->conf = r->confs[i];
                w->time_ns = kura_now_ns();
                bool stored = json_object_get(r->stores, w->conf->name) != NULL;
                char buf[1200];
                const char *why = NULL;
                q = restore_identify(w, buf, sizeof buf, &why);
                if (q == -ENOMEM) {
                        free(vds);
                        q = oom(err);
                        goto fail;
                }
                if (q < 0) {
                        if (explicit) {
                                free(vds);
                                q = kura_err(err, EIO, KURA_E_WRITER_FAILED, REMEDY_PRE_RESTORE,
                                             "writer '%s' (%s) %s", w->conf->name, w->conf->conf_path, why);
                                goto fail;
                        }
                        /* Its state records why; a writer the version knows is listed. */
                        q = stored ? skip_writer(r, w->conf->name, why, err) : 0;
                        if (q < 0) {
                                free(vds);
                                goto fail;
                        }
                        continue;
                }
                bool on = stored;
                for (size_t c = 0; !on && c < w->ncomponents; c++)
                        for (size_t k = 0; !on && k < w->components[c].npaths; k++)
                                on = on_restored_volume(volumes, vds, n, w->components[c].paths[k]);
                w->selected = on;
                if (!on)
                        kura_writer_shutdown(w);
        }
        free(vds);
        r->finished = false;
        for (size_t i = 0; i < r->nws; i++) {
                KuraWriter *w = &r->ws[i];
                if (!w->selected || !w->proc)
                        continue;
                if ((q = pre_restore_one(r, w, err)) < 0)
                        goto fail;
                r->took[i] = true;
        }
        persist_writers(r->state_dir, r->ws, r->nws);
        *ret = r;
        return 0;
fail:
        if (!r->finished) {
                r->finished = true;
                restore_wind_down(r, "pre-restore");
        } else if (r->nws > 0)
                restore_wind_down(r, NULL);
        kura_snaprestore_free(r);
        return q;
}

const char *kura_snaprestore_generation_id(const KuraSnapRestore *r) {
        return r ? r->generation_id : NULL;
}

const char *kura_snaprestore_writer(const KuraSnapRestore *r, size_t i) {
        if (!r)
                return NULL;
        for (size_t k = 0; k < r->nws; k++)
                if (r->took[k] && i-- == 0)
                        return r->ws[k].conf->name;
        return NULL;
}

const char *kura_snaprestore_skipped(const KuraSnapRestore *r, size_t i, const char **ret_why) {
        if (!r || i >= r->nskipped)
                return NULL;
        if (ret_why)
                *ret_why = r->skip_why[i];
        return r->skip_name[i];
}

int kura_snaprestore_finish(KuraSnapRestore *r, bool succeeded, KuraErr *err) {
        if (!r || r->finished)
                return 0;
        r->finished = true;
        if (!succeeded) {
                restore_wind_down(r, "restore");
                return 0;
        }
        int q = 0;
        for (size_t i = 0; i < r->nws; i++) {
                KuraWriter *w = &r->ws[i];
                if (!w->selected || !w->proc || !w->prepared)
                        continue;
                json_t *args = restore_args(r, w);
                int e = args ? kura_writer_event(w, "post-restore", args, NULL) : -ENOMEM;
                json_decref(args);
                if (e == 0)
                        w->prepared = false;
                else if (q == 0)
                        q = restore_writer_error(w, e, false, err);
        }
        /* A writer that failed post-restore but still runs gets abort. */
        restore_wind_down(r, q < 0 ? "post-restore" : NULL);
        return q;
}

KuraSnapRestore *kura_snaprestore_free(KuraSnapRestore *r) {
        if (!r)
                return NULL;
        if (!r->finished) {
                r->finished = true;
                restore_wind_down(r, "restore");
        }
        for (size_t i = 0; i < r->nws; i++)
                kura_writer_clear(&r->ws[i]);
        free(r->ws);
        free(r->took);
        kura_writer_confs_free(r->confs, r->nconfs);
        for (size_t i = 0; i < r->nskipped; i++) {
                free(r->skip_name[i]);
                free(r->skip_why[i]);
        }
        free(r->skip_name);
        free(r->skip_why);
        json_decref(r->stores);
        free(r->config_dir);
        free(r->state_dir);
        free(r);
        return NULL;
}
