/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Snapshot providers on real loop devices (root only, skipped otherwise):
 * freeze/thaw, fsfreeze (protected paths, copy limit), reflink clones and
 * change tracking from extent maps on xfs, recorded shadows, shadow storage.
 * After every test each filesystem must take a write (never left frozen).
 */
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "common/kcommon.h"
#include "kura/image.h"
#include "kura/snap.h"
#include "snap/snap-internal.h"

static char T[256];
static char ext4_dev[64], xfs_dev[64];
static char ext4_mnt[PATH_MAX], xfs_mnt[PATH_MAX], inner_img[PATH_MAX], inner_mnt[PATH_MAX], state_dir[PATH_MAX];
static bool have_env;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
        char cmd[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof cmd, fmt, ap);
        va_end(ap);
        int st = system(cmd);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int sh_out(char *out, size_t n, const char *cmd) {
        FILE *f = popen(cmd, "r");
        if (!f)
                return -1;
        size_t k = fread(out, 1, n - 1, f);
        out[k] = 0;
        while (k > 0 && out[k - 1] == '\n')
                out[--k] = 0;
        return pclose(f) == 0 ? 0 : -1;
}

/* A child writes and fsyncs a file in dir; true if it finished within secs. */
static bool timed_write(const char *dir, double secs) {
        pid_t pid = fork();
        if (pid < 0)
                return false;
        if (pid == 0) {
                char p[PATH_MAX + 32];
                snprintf(p, sizeof p, "%s/.probe-%d", dir, (int) getpid());
                int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                if (fd < 0 || write(fd, "x", 1) != 1 || fsync(fd) < 0)
                        _exit(1);
                close(fd);
                unlink(p);
                _exit(0);
        }
        double end = kura_mono() + secs;
        int st;
        while (kura_mono() < end) {
                pid_t w = waitpid(pid, &st, WNOHANG);
                if (w == pid)
                        return WIFEXITED(st) && WEXITSTATUS(st) == 0;
                usleep(20000);
        }
        /* still blocked: thawing lets it finish; reap it then */
        kill(pid, SIGKILL);
        return false;
}

static void reap_children(void) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
}

static void assert_all_writable(void) {
        /* never leave anything frozen, even when an assertion failed before */
        assert_true(timed_write(ext4_mnt, 10));
        assert_true(timed_write(xfs_mnt, 10));
        assert_true(timed_write(inner_mnt, 10));
        reap_children();
}

static int group_setup(void **state) {
        (void) state;
        if (geteuid() != 0)
                return 0;
        snprintf(T, sizeof T, "/tmp/kura-test-provider.XXXXXX");
        if (!mkdtemp(T))
                return -1;
        snprintf(ext4_mnt, sizeof ext4_mnt, "%s/ext4", T);
        snprintf(xfs_mnt, sizeof xfs_mnt, "%s/xfs", T);
        snprintf(inner_mnt, sizeof inner_mnt, "%s/inner", T);
        snprintf(inner_img, sizeof inner_img, "%s/xfs/inner.img", T);
        snprintf(state_dir, sizeof state_dir, "%s/state", T);
        setenv("KURA_STATE_DIR", state_dir, 1);
        if (sh("mkdir -p %s %s %s %s && truncate -s 64M %s/ext4.img && truncate -s 320M %s/xfs.img", ext4_mnt,
               xfs_mnt, inner_mnt, state_dir, T, T))
                return -1;
        char cmd[PATH_MAX + 64];
        snprintf(cmd, sizeof cmd, "losetup -f --show %s/ext4.img", T);
        if (sh_out(ext4_dev, sizeof ext4_dev, cmd) < 0)
                return -1;
        snprintf(cmd, sizeof cmd, "losetup -f --show %s/xfs.img", T);
        if (sh_out(xfs_dev, sizeof xfs_dev, cmd) < 0)
                return -1;
        if (sh("mkfs.ext4 -q -F %s >/dev/null 2>&1 && mount %s %s", ext4_dev, ext4_dev, ext4_mnt) ||
            sh("mkfs.xfs -q -f -m reflink=1 %s >/dev/null 2>&1 && mount %s %s", xfs_dev, xfs_dev, xfs_mnt) ||
            sh("truncate -s 32M %s && mkfs.ext4 -q -F %s >/dev/null 2>&1 && mount -o loop %s %s", inner_img, inner_img,
               inner_img, inner_mnt))
                return -1;
        have_env = true;
        return 0;
}

static void thaw_all(void) {
        (void) kura_fs_thaw(inner_mnt, NULL);
        (void) kura_fs_thaw(xfs_mnt, NULL);
        (void) kura_fs_thaw(ext4_mnt, NULL);
}

static int teardown_all(void **state) {
        (void) state;
        if (!T[0])
                return 0;
        thaw_all();
        sh("umount %s 2>/dev/null; umount %s 2>/dev/null; umount %s 2>/dev/null", inner_mnt, xfs_mnt, ext4_mnt);
        /* what a failed btrfs test left */
        sh("fsfreeze -u %s/btrfs 2>/dev/null; umount %s/btrfs 2>/dev/null; "
           "for d in $(losetup -n -O NAME -j %s/btrfs.img); do losetup -d $d; done",
           T, T, T);
        if (ext4_dev[0])
                sh("losetup -d %s 2>/dev/null", ext4_dev);
        if (xfs_dev[0])
                sh("losetup -d %s 2>/dev/null", xfs_dev);
        sh("rm -rf --one-file-system %s", T);
        return 0;
}

static int per_test_teardown(void **state) {
        (void) state;
        if (have_env)
                thaw_all();
        reap_children();
        return 0;
}

#define REQUIRE_ENV()                                                                                                  \
        do {                                                                                                           \
                if (geteuid() != 0 || !have_env)                                                                      \
                        skip();                                                                                        \
        } while (0)

/* ---- tests ----------------------------------------------------------------- */

static void test_uuid(void **state) {
        (void) state;
        char a[40], b[40];
        kura_uuid_text(a);
        kura_uuid_text(b);
        assert_int_equal(strlen(a), 36);
        assert_string_not_equal(a, b);
        for (int i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23)
                        assert_int_equal(a[i], '-');
                else
                        assert_true(strchr("0123456789abcdef", a[i]) != NULL);
        }
        assert_int_equal(a[14], '4');
        assert_true(strchr("89ab", a[19]) != NULL);
}

static void test_table(void **state) {
        (void) state;
        const KuraProviderOps *const *t = kura_provider_table();
        const char *want[] = {"lvm-thin", "lvm", "reflink", "fsfreeze", "none"};
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                assert_non_null(t[i]);
                assert_string_equal(t[i]->name, want[i]);
                assert_ptr_equal(kura_provider_find(want[i]), t[i]);
                assert_int_equal(strlen(t[i]->id), 36);
                assert_non_null(t[i]->prepare);
                assert_non_null(t[i]->create);
                assert_non_null(t[i]->check);
                assert_non_null(t[i]->release);
        }
        assert_null(t[ELEMENTSOF(want)]);
        assert_null(kura_provider_find("vss"));
        assert_null(kura_provider_find(NULL));

        KuraProviderInfo *v = NULL;
        size_t n = 0;
        assert_int_equal(kura_providers_list(&v, &n), 0);
        assert_int_equal(n, 5);
        assert_string_equal(v[4].name, "none");
        assert_true(v[4].available);
        assert_true(v[3].available);
        if (access("/dev/mapper/control", F_OK) < 0) {
                /* this host: no device-mapper, LVM says why */
                assert_false(v[1].available);
                assert_non_null(strstr(v[1].why, "device-mapper"));
                assert_false(v[0].available);
        }
        free(v);
}

static void test_freeze_thaw(void **state) {
        (void) state;
        REQUIRE_ENV();
        KuraErr err = {0};
        /* thaw of a filesystem that is not frozen is success */
        assert_int_equal(kura_fs_thaw(ext4_mnt, &err), 0);
        assert_int_equal(kura_fs_freeze(ext4_mnt, &err), 0);
        /* a second freeze is refused (EBUSY), and names the mount point */
        KuraErr e2 = {0};
        assert_true(kura_fs_freeze(ext4_mnt, &e2) < 0);
        assert_string_equal(e2.code, KURA_E_PROVIDER_FAILED);
        assert_non_null(strstr(e2.message, ext4_mnt));
        /* a writer blocks while frozen ... */
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                char p[PATH_MAX + 16];
                snprintf(p, sizeof p, "%s/blocked", ext4_mnt);
                int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                _exit(fd >= 0 && write(fd, "abc", 3) == 3 && fsync(fd) == 0 ? 0 : 1);
        }
        usleep(800000);
        int st;
        assert_int_equal(waitpid(pid, &st, WNOHANG), 0);
        /* ... and goes on after the thaw */
        assert_int_equal(kura_fs_thaw(ext4_mnt, &err), 0);
        double end = kura_mono() + 10;
        pid_t w = 0;
        while (kura_mono() < end && (w = waitpid(pid, &st, WNOHANG)) == 0)
                usleep(20000);
        assert_int_equal(w, pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        /* the other filesystems were never touched */
        assert_all_writable();
        /* freeze of something that is not a mount point directory fails cleanly */
        KuraErr e3 = {0};
        assert_true(kura_fs_freeze("/nonexistent-kura", &e3) < 0);
        assert_string_equal(e3.code, KURA_E_PROVIDER_FAILED);
}

static void probe(const char *path, KuraVolumeProbe *p) {
        KuraErr err = {0};
        assert_int_equal(kura_volume_probe(path, p, &err), 0);
}

static void shadow_init(KuraShadow *s, const char *volume, const KuraProviderOps *ops) {
        memset(s, 0, sizeof *s);
        kura_uuid_text(s->id);
        kura_uuid_text(s->set_id);
        s->volume = strdup(volume);
        s->ops = ops;
        s->state_dir = state_dir;
        s->created_ns = kura_now_ns();
        probe(volume, &s->probe);
}

static void shadow_done(KuraShadow *s) {
        free(s->volume);
        free(s->device);
        free(s->priv);
        memset(s, 0, sizeof *s);
}

static void test_fsfreeze(void **state) {
        (void) state;
        REQUIRE_ENV();
        const KuraProviderOps *fz = &kura_provider_fsfreeze;
        char why[256];
        KuraVolumeProbe p;

        /* a mounted block device and an image file mounted through a loop device */
        probe(ext4_dev, &p);
        assert_int_equal(fz->supports(ext4_dev, &p, why, sizeof why), 1);
        probe(inner_img, &p);
        assert_true(p.mounted_rw);
        assert_int_equal(fz->supports(inner_img, &p, why, sizeof why), 1);
        /* not mounted: nothing to freeze */
        char loose[PATH_MAX + 16];
        snprintf(loose, sizeof loose, "%s/loose.img", T);
        assert_int_equal(sh("truncate -s 8M %s", loose), 0);
        probe(loose, &p);
        assert_int_equal(fz->supports(loose, &p, why, sizeof why), 0);
        assert_non_null(strstr(why, "not mounted"));

        /* refuses the filesystem of a protected path (even one not created yet) */
        KuraShadow s;
        shadow_init(&s, ext4_dev, fz);
        char prot[PATH_MAX + 32];
        snprintf(prot, sizeof prot, "%s/repo/not-yet", ext4_mnt);
        const char *pp[] = {"/tmp", prot};
        KuraSnapOpts o = {.protect_paths = pp, .nprotect = 2, .fsfreeze_copy_limit_s = 1};
        KuraErr err = {0};
        assert_true(fz->prepare(&s, &o, &err) < 0);
        assert_string_equal(err.code, KURA_E_FREEZE_REFUSED);
        assert_non_null(strstr(err.message, prot));
        assert_non_null(strstr(err.message, ext4_mnt));
        assert_int_equal(fz->release(&s, false, NULL), 0);
        shadow_done(&s);

        /* image mounted through loop: freezing it freezes the inner fs, not the xfs holding the image */
        shadow_init(&s, inner_img, fz);
        o.nprotect = 1; /* /tmp is elsewhere */
        kura_err_clear(&err);
        assert_int_equal(fz->prepare(&s, &o, &err), 0);
        assert_int_equal(s.copy_limit_s, 1);
        assert_int_equal(fz->create(&s, &err), 0);
        assert_string_equal(s.device, inner_img);
        assert_true(s.frozen_since > 0);
        assert_false(timed_write(inner_mnt, 0.5));
        assert_true(timed_write(xfs_mnt, 10));
        assert_int_equal(fz->check(&s, &err), 0); /* within the limit */
        /* the limit passes: check thaws, then fails */
        usleep(1300000);
        assert_true(fz->check(&s, &err) < 0);
        assert_string_equal(err.code, KURA_E_FREEZE_LIMIT);
        assert_non_null(strstr(err.message, inner_img));
        assert_true(timed_write(inner_mnt, 10));
        assert_int_equal(fz->release(&s, false, NULL), 0);
        shadow_done(&s);

        /* release always thaws */
        shadow_init(&s, ext4_dev, fz);
        o.fsfreeze_copy_limit_s = 0; /* default 120 s */
        kura_err_clear(&err);
        assert_int_equal(fz->prepare(&s, &o, &err), 0);
        assert_int_equal(s.copy_limit_s, 120);
        assert_int_equal(fz->create(&s, &err), 0);
        assert_false(timed_write(ext4_mnt, 0.5));
        assert_int_equal(fz->release(&s, true, &err), 0);
        assert_null(s.priv);
        shadow_done(&s);
        assert_all_writable();
}

/* btrfs gives every subvolume its own st_dev: a protected path inside a
 * subvolume must still be seen on the filesystem being frozen. */
static void test_fsfreeze_btrfs(void **state) {
        (void) state;
        REQUIRE_ENV();
        if (sh("command -v mkfs.btrfs >/dev/null"))
                skip();
        char img[300], mnt[300], dev[64], cmd[400];
        snprintf(img, sizeof img, "%s/btrfs.img", T);
        snprintf(mnt, sizeof mnt, "%s/btrfs", T);
        assert_int_equal(sh("truncate -s 160M %s && mkdir -p %s", img, mnt), 0);
        snprintf(cmd, sizeof cmd, "losetup -f --show %s", img);
        assert_int_equal(sh_out(dev, sizeof dev, cmd), 0);
        int r = sh("mkfs.btrfs -q -f %s >/dev/null 2>&1 && mount %s %s && btrfs -q subvolume create %s/sv >/dev/null",
                   dev, dev, mnt, mnt);
        if (r == 0) {
                char prot[400];
                snprintf(prot, sizeof prot, "%s/sv/repo", mnt);
                struct stat a, b;
                assert_int_equal(stat(mnt, &a), 0);
                char sv[400];
                snprintf(sv, sizeof sv, "%s/sv", mnt);
                assert_int_equal(stat(sv, &b), 0);
                assert_true(a.st_dev != b.st_dev); /* the premise */
                KuraShadow s;
                shadow_init(&s, dev, &kura_provider_fsfreeze);
                char why[256];
                assert_int_equal(kura_provider_fsfreeze.supports(dev, &s.probe, why, sizeof why), 1);
                const char *pp[] = {prot};
                KuraSnapOpts o = {.protect_paths = pp, .nprotect = 1};
                KuraErr err = {0};
                assert_true(kura_provider_fsfreeze.prepare(&s, &o, &err) < 0);
                assert_string_equal(err.code, KURA_E_FREEZE_REFUSED);
                /* unprotected: freeze, blocks writers, release thaws */
                o.nprotect = 0;
                kura_err_clear(&err);
                assert_int_equal(kura_provider_fsfreeze.prepare(&s, &o, &err), 0);
                assert_int_equal(kura_provider_fsfreeze.create(&s, &err), 0);
                assert_false(timed_write(sv, 0.5));
                assert_int_equal(kura_provider_fsfreeze.release(&s, false, &err), 0);
                assert_true(timed_write(sv, 10));
                shadow_done(&s);
        }
        (void) kura_fs_thaw(mnt, NULL);
        sh("umount %s 2>/dev/null; losetup -d %s", mnt, dev);
        assert_int_equal(r, 0);
        assert_all_writable();
}

static void test_none(void **state) {
        (void) state;
        REQUIRE_ENV();
        const KuraProviderOps *no = &kura_provider_none;
        char why[256];
        KuraVolumeProbe p;
        probe(ext4_dev, &p);
        assert_int_equal(no->supports(ext4_dev, &p, why, sizeof why), 0);
        assert_non_null(strstr(why, "read-write"));
        KuraShadow s;
        shadow_init(&s, ext4_dev, no);
        KuraSnapOpts o = {0};
        KuraErr err = {0};
        assert_true(no->prepare(&s, &o, &err) < 0);
        assert_string_equal(err.code, KURA_E_SOURCE_MOUNTED);
        o.allow_mounted = true;
        kura_err_clear(&err);
        assert_int_equal(no->prepare(&s, &o, &err), 0);
        assert_int_equal(no->create(&s, &err), 0);
        assert_string_equal(s.device, ext4_dev);
        assert_int_equal(no->release(&s, false, &err), 0);
        shadow_done(&s);
        char loose[PATH_MAX + 16];
        snprintf(loose, sizeof loose, "%s/loose2.img", T);
        assert_int_equal(sh("truncate -s 8M %s", loose), 0);
        probe(loose, &p);
        assert_int_equal(no->supports(loose, &p, why, sizeof why), 1);
        assert_all_writable();
}

/* pwrite 4 KiB of pattern at off into path, fsync */
static void poke(const char *path, uint64_t off, int pattern) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t buf[4096];
        memset(buf, pattern, sizeof buf);
        assert_int_equal(pwrite(fd, buf, sizeof buf, (off_t) off), (ssize_t) sizeof buf);
        assert_int_equal(fsync(fd), 0);
        close(fd);
}

static bool covered(const KuraExtent *v, size_t n, uint64_t off, uint64_t len) {
        for (size_t i = 0; i < n; i++)
                if (v[i].off <= off && off + len <= v[i].off + v[i].len)
                        return true;
        return false;
}

static void reflink_shadow(KuraShadow *s, const char *img) {
        const KuraProviderOps *rf = &kura_provider_reflink;
        shadow_init(s, img, rf);
        KuraSnapOpts o = {.state_dir = state_dir};
        KuraErr err = {0};
        assert_int_equal(rf->prepare(s, &o, &err), 0);
        assert_int_equal(rf->create(s, &err), 0);
        struct stat a, b;
        assert_int_equal(stat(img, &a), 0);
        assert_int_equal(stat(s->device, &b), 0);
        assert_int_equal(a.st_size, b.st_size);
        assert_int_equal(a.st_dev, b.st_dev);
        assert_true(strstr(s->device, "/.kura-shadows/") != NULL);
}

static bool files_equal(const char *a, const char *b) {
        return sh("cmp -s %s %s", a, b) == 0;
}

static void test_reflink(void **state) {
        (void) state;
        REQUIRE_ENV();
        const KuraProviderOps *rf = &kura_provider_reflink;
        char img[PATH_MAX + 16], why[256];
        snprintf(img, sizeof img, "%s/disk.img", xfs_mnt);
        /* 64 MiB of data, all allocated */
        assert_int_equal(sh("head -c 64M /dev/urandom > %s && sync", img), 0);
        KuraVolumeProbe p;
        probe(img, &p);
        assert_int_equal(rf->supports(img, &p, why, sizeof why), 1);
        /* not on a reflink filesystem, not an image */
        char e4img[PATH_MAX + 16];
        snprintf(e4img, sizeof e4img, "%s/disk.img", ext4_mnt);
        assert_int_equal(sh("truncate -s 4M %s", e4img), 0);
        probe(e4img, &p);
        assert_int_equal(rf->supports(e4img, &p, why, sizeof why), 0);
        assert_non_null(strstr(why, "xfs or btrfs"));
        probe(xfs_dev, &p);
        assert_int_equal(rf->supports(xfs_dev, &p, why, sizeof why), 0);

        /* first backup: clone, no base yet */
        KuraShadow s1, s2;
        reflink_shadow(&s1, img);
        assert_true(files_equal(img, s1.device));
        KuraExtent *ch = NULL;
        size_t nch = 0;
        KuraErr err = {0};
        assert_int_equal(rf->changed(&s1, &ch, &nch, &err), -ENODATA);
        char clone1[PATH_MAX];
        snprintf(clone1, sizeof clone1, "%s", s1.device);
        assert_int_equal(rf->release(&s1, true, &err), 0);
        assert_int_equal(access(clone1, F_OK), 0);
        KuraShadowInfo info;
        assert_int_equal(kura_shadow_record_retained(state_dir, img, "reflink", &info), 0);
        assert_string_equal(info.device, clone1);
        assert_string_equal(info.id, s1.id);

        /* change known places: three 4 KiB writes, one hole punched, one extension */
        const uint64_t offs[] = {1u << 20, (10u << 20) + 4096, 40u << 20};
        for (size_t i = 0; i < ELEMENTSOF(offs); i++)
                poke(img, offs[i], 0x5a + (int) i);
        assert_int_equal(sh("fallocate -p -o %u -l 65536 %s && truncate -s %u %s", 20u << 20, img,
                            (64u << 20) + 65536, img),
                         0);
        reflink_shadow(&s2, img);
        assert_true(files_equal(img, s2.device));
        assert_int_equal(rf->changed(&s2, &ch, &nch, &err), 0);
        uint64_t total = 0;
        for (size_t i = 0; i < nch; i++) {
                total += ch[i].len;
                if (i > 0)
                        assert_true(ch[i].off > ch[i - 1].off + ch[i - 1].len); /* sorted, merged */
        }
        for (size_t i = 0; i < ELEMENTSOF(offs); i++)
                assert_true(covered(ch, nch, offs[i], 4096));
        assert_true(covered(ch, nch, 20u << 20, 65536));
        assert_true(covered(ch, nch, 64u << 20, 65536));
        /* and not much more: copy-on-write granularity, not the whole image */
        assert_true(total <= 6u << 20);
        assert_true(total >= 3 * 4096 + 2 * 65536);
        free(ch);
        ch = NULL;

        /* s2 becomes the base; s1's clone goes */
        char clone2[PATH_MAX];
        snprintf(clone2, sizeof clone2, "%s", s2.device);
        assert_int_equal(rf->release(&s2, true, &err), 0);
        assert_int_equal(access(clone1, F_OK), -1);
        assert_int_equal(access(clone2, F_OK), 0);
        KuraShadowInfo *list = NULL;
        size_t nl = 0;
        assert_int_equal(kura_shadows_list(state_dir, &list, &nl, &err), 0);
        assert_int_equal(nl, 1);
        assert_string_equal(list[0].device, clone2);
        assert_true(list[0].retained_for_backup);
        assert_string_equal(list[0].provider, "reflink");
        free(list);

        /* no change since: nothing to read */
        KuraShadow s3;
        reflink_shadow(&s3, img);
        assert_int_equal(rf->changed(&s3, &ch, &nch, &err), 0);
        assert_int_equal(nch, 0);
        free(ch);
        ch = NULL;
        /* a failed backup removes its clone and keeps the old base */
        char clone3[PATH_MAX];
        snprintf(clone3, sizeof clone3, "%s", s3.device);
        assert_int_equal(rf->release(&s3, false, &err), 0);
        assert_int_equal(access(clone3, F_OK), -1);
        assert_int_equal(access(clone2, F_OK), 0);

        /* shadow storage of the image; xfs frees unlinked clones in the
         * background (inodegc): syncfs flushes that, so that block 0 is
         * shared by the image and clone2 only */
        assert_int_equal(sh("sync -f %s", xfs_mnt), 0);
        poke(img, 0, 0x11);
        assert_int_equal(sh("sync -f %s", xfs_mnt), 0);
        const char *vols[] = {img};
        KuraShadowStorage *ss = NULL;
        size_t nss = 0;
        assert_int_equal(kura_shadowstorage_list(vols, 1, &ss, &nss, &err), 0);
        assert_int_equal(nss, 1);
        assert_string_equal(ss[0].provider, "reflink");
        assert_string_equal(ss[0].volume, img);
        assert_true(ss[0].used >= 4096); /* the retained clone now holds the old block 0 alone */
        assert_true(ss[0].maximum > ss[0].used);
        free(ss);
        ss = NULL;
        /* all known volumes: the one with a recorded shadow */
        assert_int_equal(kura_shadowstorage_list(NULL, 0, &ss, &nss, &err), 0);
        assert_true(nss >= 1);
        free(ss);

        /* clean up the retained base through the public API */
        assert_int_equal(kura_shadows_delete(state_dir, s2.id, &err), 0);
        assert_int_equal(access(clone2, F_OK), -1);
        shadow_done(&s1);
        shadow_done(&s2);
        shadow_done(&s3);
        assert_all_writable();
}

static void test_shadows_persistent(void **state) {
        (void) state;
        REQUIRE_ENV();
        KuraErr err = {0};
        char set[40] = "";
        /* the mounted image inner.img lives on reflink xfs: a clone, made with its fs frozen for an instant */
        const char *vols[] = {inner_img};
        assert_int_equal(kura_shadows_create(state_dir, NULL, vols, 1, set, &err), 0);
        assert_int_equal(strlen(set), 36);
        KuraShadowInfo *list = NULL;
        size_t n = 0;
        assert_int_equal(kura_shadows_list(state_dir, &list, &n, &err), 0);
        assert_int_equal(n, 1);
        assert_string_equal(list[0].set_id, set);
        assert_string_equal(list[0].volume, inner_img);
        assert_string_equal(list[0].provider, "reflink");
        assert_false(list[0].retained_for_backup);
        assert_int_equal(access(list[0].device, F_OK), 0);
        /* the clone holds a clean filesystem */
        assert_int_equal(sh("e2fsck -fn %s >/dev/null 2>&1", list[0].device), 0);
        char dev[4096];
        snprintf(dev, sizeof dev, "%s", list[0].device);
        free(list);
        assert_true(timed_write(inner_mnt, 10));

        /* fsfreeze and none make nothing that lasts */
        KuraErr e2 = {0};
        char set2[40];
        assert_true(kura_shadows_create(state_dir, "fsfreeze", vols, 1, set2, &e2) < 0);
        assert_string_equal(e2.code, KURA_E_NO_PROVIDER);
        KuraErr e3 = {0};
        assert_true(kura_shadows_create(state_dir, "bogus", vols, 1, set2, &e3) < 0);
        assert_string_equal(e3.code, KURA_E_NO_PROVIDER);
        /* ext4 has no clones: nothing can make one */
        KuraErr e4 = {0};
        const char *v4[] = {ext4_dev};
        assert_true(kura_shadows_create(state_dir, NULL, v4, 1, set2, &e4) < 0);
        assert_string_equal(e4.code, KURA_E_NO_PROVIDER);

        assert_int_equal(kura_shadows_delete(state_dir, set, &err), 0);
        assert_int_equal(access(dev, F_OK), -1);
        KuraErr e5 = {0};
        assert_int_equal(kura_shadows_delete(state_dir, set, &e5), -ENOENT);
        assert_string_equal(e5.code, KURA_E_SHADOW_NOT_FOUND);
        assert_int_equal(kura_shadows_list(state_dir, &list, &n, &err), 0);
        assert_int_equal(n, 0);
        free(list);
        assert_all_writable();
}

static void test_records_corrupt(void **state) {
        (void) state;
        REQUIRE_ENV();
        char p[PATH_MAX + 32];
        snprintf(p, sizeof p, "%s/bad", T);
        assert_int_equal(sh("mkdir -p %s && printf '{\"shadows\": 7}' > %s/shadows.json", p, p), 0);
        KuraShadowInfo *list = NULL;
        size_t n = 0;
        KuraErr err = {0};
        assert_int_equal(kura_shadows_list(p, &list, &n, &err), -EBADMSG);
        assert_string_equal(err.code, KURA_E_PROVIDER_FAILED);
        /* missing file: empty */
        snprintf(p, sizeof p, "%s/none", T);
        assert_int_equal(kura_shadows_list(p, &list, &n, &err), 0);
        assert_int_equal(n, 0);
        free(list);
}

static void test_run(void **state) {
        (void) state;
        char out[64], e[64];
        const char *ok[] = {"sh", "-c", "echo hello; echo oops >&2; exit 3", NULL};
        assert_int_equal(kura_provider_run(ok, 10, out, sizeof out, e, sizeof e), 3);
        assert_string_equal(out, "hello\n");
        assert_string_equal(e, "oops");
        const char *missing[] = {"kura-no-such-tool", NULL};
        assert_int_equal(kura_provider_run(missing, 10, out, sizeof out, e, sizeof e), -ENOENT);
        const char *slow[] = {"sleep", "30", NULL};
        double t0 = kura_mono();
        assert_int_equal(kura_provider_run(slow, 1, out, sizeof out, e, sizeof e), -ETIMEDOUT);
        assert_true(kura_mono() - t0 < 5);
        /* big output is cut, not overflowed */
        const char *big[] = {"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a", NULL};
        assert_int_equal(kura_provider_run(big, 10, out, sizeof out, NULL, 0), 0);
        assert_int_equal(strlen(out), sizeof out - 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_uuid),
                cmocka_unit_test(test_table),
                cmocka_unit_test(test_run),
                cmocka_unit_test_teardown(test_freeze_thaw, per_test_teardown),
                cmocka_unit_test_teardown(test_fsfreeze, per_test_teardown),
                cmocka_unit_test_teardown(test_fsfreeze_btrfs, per_test_teardown),
                cmocka_unit_test_teardown(test_none, per_test_teardown),
                cmocka_unit_test_teardown(test_reflink, per_test_teardown),
                cmocka_unit_test_teardown(test_shadows_persistent, per_test_teardown),
                cmocka_unit_test_teardown(test_records_corrupt, per_test_teardown),
        };
        return cmocka_run_group_tests(tests, group_setup, teardown_all);
}
