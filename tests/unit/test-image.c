/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * lib/image unit tests, on real filesystems in image files and loop devices
 * under a private /tmp directory.  Root only (mkfs, losetup, mount): they
 * skip when not root.  Every test that attaches loop devices or mounts
 * registers them, and the per-test teardown undoes them even when an
 * assertion failed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <linux/falloc.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "image/image-internal.h"
#include "kura/image.h"

#define MiB (1024ull * 1024)

static char tmpdir[64];
static char loops[16][64];
static int nloops;
static char mounts[16][PATH_MAX];
static int nmounts;

/* ---- helpers -------------------------------------------------------------- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
        char cmd[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof cmd, fmt, ap);
        va_end(ap);
        int r = system(cmd);
        return r == 0 ? 0 : -1;
}

/* Run a command and return its stdout (trailing newlines stripped), or NULL. */
static char *sh_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *sh_out(const char *fmt, ...) {
        char cmd[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof cmd, fmt, ap);
        va_end(ap);
        FILE *f = popen(cmd, "re");
        if (!f)
                return NULL;
        KuraBuf b = {0};
        char buf[65536];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0)
                kura_buf_append(&b, buf, n);
        int st = pclose(f);
        kura_buf_u8(&b, 0);
        char *s = (char *) b.data;
        if (st != 0 || !s) {
                free(s);
                return NULL;
        }
        size_t l = strlen(s);
        while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == ' '))
                s[--l] = 0;
        return s;
}

static void tpath(char *out, const char *name) {
        snprintf(out, PATH_MAX, "%s/%s", tmpdir, name);
}

/* Attach a loop device (registered for teardown); dev gets "/dev/loopN". */
static void loop_attach(const char *img, const char *extra, char *dev) {
        char *s = sh_out("losetup -f --show %s '%s'", extra ? extra : "", img);
        assert_non_null(s);
        assert_true(strncmp(s, "/dev/loop", 9) == 0);
        snprintf(loops[nloops++], sizeof loops[0], "%s", s);
        snprintf(dev, 64, "%s", s);
        free(s);
}

static void do_mount(const char *dev, const char *dir, const char *opts) {
        mkdir(dir, 0700);
        assert_int_equal(sh("mount -o '%s' '%s' '%s'", opts, dev, dir), 0);
        snprintf(mounts[nmounts++], sizeof mounts[0], "%s", dir);
}

static int teardown_devices(void **state) {
        (void) state;
        while (nmounts > 0) {
                const char *m = mounts[--nmounts];
                if (sh("umount '%s' 2>/dev/null", m) < 0)
                        sh("umount -l '%s'", m);
        }
        /* Partitions added with partx outlive the loop device's binding
         * unless removed first. */
        while (nloops > 0) {
                const char *l = loops[--nloops];
                sh("partx -d '%s' >/dev/null 2>&1", l);
                sh("losetup -d '%s' 2>/dev/null", l);
        }
        return 0;
}

static void need_root(void) {
        if (geteuid() != 0)
                skip();
}

static void make_sparse(const char *path, uint64_t size) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t) size), 0);
        close(fd);
}

/* ext4 image (size bytes, block size bs) with a random file of file_len
 * bytes at /big, written with debugfs so that no mount is needed. */
static void make_ext4(const char *img, uint64_t size, unsigned bs, const char *fstype, uint64_t file_len) {
        char src[PATH_MAX];
        make_sparse(img, size);
        assert_int_equal(sh("mkfs.%s -q -F -L kuratest -b %u '%s' >/dev/null 2>&1", fstype, bs, img), 0);
        if (file_len) {
                tpath(src, "src.bin");
                assert_int_equal(sh("head -c %llu /dev/urandom > '%s'", (unsigned long long) file_len, src), 0);
                assert_int_equal(sh("debugfs -w -R 'write %s /big' '%s' >/dev/null 2>&1", src, img), 0);
        }
}

static bool covered(const KuraExtent *e, size_t n, uint64_t off, uint64_t len) {
        for (size_t i = 0; i < n; i++)
                if (off >= e[i].off && off + len <= e[i].off + e[i].len)
                        return true;
        return false;
}

/* Sorted, disjoint, non-touching, 4 KiB aligned (but the end of the
 * volume), inside [0, size).  Returns the total. */
static uint64_t check_extents(const KuraExtent *e, size_t n, uint64_t size) {
        uint64_t total = 0;
        for (size_t i = 0; i < n; i++) {
                assert_true(e[i].len > 0);
                assert_true(e[i].off % 4096 == 0);
                assert_true(e[i].off + e[i].len <= size);
                assert_true((e[i].off + e[i].len) % 4096 == 0 || e[i].off + e[i].len == size);
                if (i > 0)
                        assert_true(e[i].off > e[i - 1].off + e[i - 1].len);
                total += e[i].len;
        }
        return total;
}

/* Every block debugfs lists for /big lies inside a used extent. */
static void check_debugfs_blocks(const char *img, unsigned bs, const KuraExtent *e, size_t n, uint64_t file_len) {
        char *s = sh_out("debugfs -R 'blocks /big' '%s' 2>/dev/null", img);
        assert_non_null(s);
        uint64_t nblocks = 0;
        char *save = NULL;
        for (char *t = strtok_r(s, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
                uint64_t b = strtoull(t, NULL, 10);
                assert_true(covered(e, n, b * bs, bs));
                nblocks++;
        }
        assert_true(nblocks >= DIV_ROUND_UP(file_len, bs));
        free(s);
}

/* Every physical extent filefrag reports for file lies inside a used extent. */
static void check_filefrag(const char *file, const KuraExtent *e, size_t n, uint64_t file_len) {
        char *s = sh_out("filefrag -v -b4096 '%s'", file);
        assert_non_null(s);
        uint64_t blocks = 0;
        char *save = NULL;
        for (char *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                unsigned idx;
                unsigned long long l0, l1, p0, p1;
                if (sscanf(line, " %u: %llu.. %llu: %llu.. %llu:", &idx, &l0, &l1, &p0, &p1) != 5)
                        continue;
                assert_true(p1 >= p0);
                assert_true(covered(e, n, p0 * 4096, (p1 - p0 + 1) * 4096));
                blocks += p1 - p0 + 1;
        }
        assert_true(blocks * 4096 >= file_len);
        free(s);
}

static uint64_t dumpe2fs_field(const char *img, const char *field) {
        char *s = sh_out("dumpe2fs -h '%s' 2>/dev/null | sed -n 's/^%s: *//p'", img, field);
        assert_non_null(s);
        uint64_t v = strtoull(s, NULL, 10);
        free(s);
        return v;
}

/* ---- probe ---------------------------------------------------------------- */

static void check_probe_against_blkid(const char *path, const char *fs, uint64_t size) {
        KuraVolumeProbe p;
        KuraErr err = {0};
        assert_int_equal(kura_volume_probe(path, &p, &err), 0);
        assert_string_equal(p.fs, fs);
        assert_string_equal(p.label, "kuratest");
        char *uuid = sh_out("blkid -p -o value -s UUID '%s'", path);
        assert_non_null(uuid);
        assert_true(strlen(uuid) >= 32);
        assert_string_equal(p.uuid, uuid);
        free(uuid);
        assert_true(p.size == size);
        assert_false(p.mounted);
        assert_false(p.mounted_rw);
        assert_string_equal(p.mountpoint, "");
}

static void test_probe_filesystems(void **state) {
        need_root();
        char img[PATH_MAX], dev[64];

        tpath(img, "probe-ext4.img");
        make_ext4(img, 64 * MiB, 4096, "ext4", 0);
        check_probe_against_blkid(img, "ext4", 64 * MiB);

        tpath(img, "probe-xfs.img");
        make_sparse(img, 320 * MiB);
        assert_int_equal(sh("mkfs.xfs -q -f -L kuratest '%s' >/dev/null 2>&1", img), 0);
        check_probe_against_blkid(img, "xfs", 320 * MiB);

        tpath(img, "probe-btrfs.img");
        make_sparse(img, 256 * MiB);
        assert_int_equal(sh("mkfs.btrfs -q -f -L kuratest '%s' >/dev/null 2>&1", img), 0);
        check_probe_against_blkid(img, "btrfs", 256 * MiB);

        /* The same btrfs through a loop device: size by BLKGETSIZE64. */
        loop_attach(img, NULL, dev);
        check_probe_against_blkid(dev, "btrfs", 256 * MiB);
        KuraVolumeProbe p;
        assert_int_equal(kura_volume_probe(dev, &p, NULL), 0);
        assert_true(p.is_blockdev);

        /* Nothing recognisable: fs "" but a good probe. */
        tpath(img, "probe-empty.img");
        make_sparse(img, 1 * MiB);
        assert_int_equal(kura_volume_probe(img, &p, NULL), 0);
        assert_string_equal(p.fs, "");
        assert_string_equal(p.uuid, "");
        assert_true(p.size == 1 * MiB);
        assert_false(p.is_blockdev);
        (void) state;
}

static void test_probe_errors(void **state) {
        (void) state;
        KuraVolumeProbe p;
        KuraErr err = {0};
        char path[PATH_MAX];

        tpath(path, "does-not-exist.img");
        assert_int_equal(kura_volume_probe(path, &p, &err), -ENOENT);
        assert_string_equal(err.code, KURA_E_SOURCE_NOT_FOUND);
        assert_non_null(strstr(err.message, path));
        assert_true(err.remedy[0] != 0);

        kura_err_clear(&err);
        assert_true(kura_volume_probe(tmpdir, &p, &err) < 0);
        assert_string_equal(err.code, KURA_E_SOURCE_UNREADABLE);
        assert_non_null(strstr(err.message, tmpdir));

        kura_err_clear(&err);
        assert_true(kura_volume_probe("/dev/null", &p, &err) < 0);
        assert_string_equal(err.code, KURA_E_SOURCE_UNREADABLE);
}

/* ---- mount state ---------------------------------------------------------- */

static void test_mount_state(void **state) {
        need_root();
        char img[PATH_MAX], dir[PATH_MAX], dev[64];
        KuraVolumeProbe p;

        tpath(img, "mount.img");
        tpath(dir, "mnt-state");
        make_ext4(img, 64 * MiB, 4096, "ext4", 0);

        loop_attach(img, NULL, dev);
        assert_int_equal(kura_mount_state(img, &p), 0);
        assert_false(p.mounted);
        assert_int_equal(kura_mount_state(dev, &p), 0);
        assert_false(p.mounted);

        do_mount(dev, dir, "rw");
        assert_int_equal(kura_mount_state(img, &p), 0);
        assert_true(p.mounted);
        assert_true(p.mounted_rw);
        assert_string_equal(p.mountpoint, dir);
        assert_int_equal(kura_volume_probe(dev, &p, NULL), 0);
        assert_true(p.is_blockdev);
        assert_true(p.mounted);
        assert_true(p.mounted_rw);
        assert_string_equal(p.mountpoint, dir);

        assert_int_equal(sh("mount -o remount,ro '%s'", dir), 0);
        assert_int_equal(kura_mount_state(dev, &p), 0);
        assert_true(p.mounted);
        assert_false(p.mounted_rw);
        assert_int_equal(kura_volume_probe(img, &p, NULL), 0);
        assert_true(p.mounted);
        assert_false(p.mounted_rw);
        assert_string_equal(p.mountpoint, dir);

        /* A second image, not attached anywhere, is not mounted. */
        char other[PATH_MAX];
        tpath(other, "mount-other.img");
        make_sparse(other, 1 * MiB);
        assert_int_equal(kura_mount_state(other, &p), 0);
        assert_false(p.mounted);

        teardown_devices(NULL);
        assert_int_equal(kura_mount_state(img, &p), 0);
        assert_false(p.mounted);
        (void) state;
}

/* A partition of a loop device (added with partx) that is mounted makes the
 * whole device count as mounted. */
static void test_mount_state_partition(void **state) {
        need_root();
        char img[PATH_MAX], dir[PATH_MAX], dev[64], part[80];
        KuraVolumeProbe p;

        tpath(img, "parts.img");
        tpath(dir, "mnt-part");
        make_sparse(img, 80 * MiB);
        /* One MBR partition, written by hand (no sfdisk here): type 0x83,
         * LBA 2048, 100000 sectors. */
        uint8_t mbr[512] = {0};
        mbr[446 + 4] = 0x83;
        put_le32(mbr + 446 + 8, 2048);
        put_le32(mbr + 446 + 12, 100000);
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        int fd = open(img, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_true(pwrite(fd, mbr, sizeof mbr, 0) == (ssize_t) sizeof mbr);
        close(fd);
        loop_attach(img, NULL, dev);
        if (sh("partx -a '%s' 2>/dev/null", dev) < 0)
                skip();
        snprintf(part, sizeof part, "%sp1", dev);
        assert_int_equal(sh("mkfs.ext4 -q -F '%s' >/dev/null 2>&1", part), 0);
        do_mount(part, dir, "ro");
        assert_int_equal(kura_mount_state(dev, &p), 0);
        assert_true(p.mounted);
        assert_false(p.mounted_rw);
        assert_string_equal(p.mountpoint, dir);
        teardown_devices(NULL);
        (void) state;
}

/* ---- used-block maps ------------------------------------------------------ */

static void usedmap(const char *path, KuraVolumeProbe *p, KuraExtent **e, size_t *n, const char **method) {
        KuraErr err = {0};
        assert_int_equal(kura_volume_probe(path, p, &err), 0);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(kura_usedmap_get(path, fd, p, e, n, method, &err), 0);
}

static void test_usedmap_ext2fs(void **state) {
        need_root();
        char img[PATH_MAX];
        KuraVolumeProbe p;
        KuraExtent *e = NULL;
        size_t n = 0;
        const char *method = NULL;
        const uint64_t file_len = 3 * MiB + 12345;

        tpath(img, "used-ext4.img");
        make_ext4(img, 64 * MiB, 4096, "ext4", file_len);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(method, "ext2fs");
        uint64_t total = check_extents(e, n, p.size);
        /* Exactly what the superblock counts as allocated (4 KiB blocks,
         * filesystem as large as the image). */
        uint64_t count = dumpe2fs_field(img, "Block count"), freeb = dumpe2fs_field(img, "Free blocks");
        assert_true(count * 4096 == p.size);
        assert_true(total == (count - freeb) * 4096);
        assert_true(total < p.size / 4);
        assert_true(total > file_len);
        assert_true(covered(e, n, 0, 4096)); /* superblock */
        check_debugfs_blocks(img, 4096, e, n, file_len);
        free(e);

        /* ext2 with 1 KiB blocks (first data block 1), in a larger file
         * than the filesystem: the tail past the filesystem counts used. */
        tpath(img, "used-ext2.img");
        make_ext4(img, 32 * MiB, 1024, "ext2", 700000);
        assert_int_equal(truncate(img, 40 * MiB), 0);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(method, "ext2fs");
        total = check_extents(e, n, p.size);
        count = dumpe2fs_field(img, "Block count");
        freeb = dumpe2fs_field(img, "Free blocks");
        assert_true(count * 1024 == 32 * MiB);
        assert_true(total >= (count - freeb) * 1024 + 8 * MiB);
        assert_true(total < 16 * MiB);
        assert_true(covered(e, n, 0, 4096));
        assert_true(covered(e, n, 32 * MiB, 8 * MiB));
        check_debugfs_blocks(img, 1024, e, n, 700000);
        free(e);
        (void) state;
}

/* An ext4 whose journal needs recovery: the bitmaps cannot be trusted. */
static void test_usedmap_ext2fs_needs_recovery(void **state) {
        need_root();
        char img[PATH_MAX];
        KuraVolumeProbe p;
        KuraExtent *e = NULL;
        size_t n = 0;
        const char *method = NULL;

        tpath(img, "used-recover.img");
        make_ext4(img, 64 * MiB, 4096, "ext4", 100000);
        assert_int_equal(sh("debugfs -w -R 'feature needs_recovery' '%s' >/dev/null 2>&1", img), 0);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(method, "whole");
        assert_int_equal(n, 1);
        assert_true(e[0].off == 0 && e[0].len == 64 * MiB);
        free(e);
        (void) state;
}

static void test_usedmap_getfsmap_ext4(void **state) {
        need_root();
        char img[PATH_MAX], dir[PATH_MAX], dev[64], file[PATH_MAX + 8];
        KuraVolumeProbe p;
        KuraExtent *e = NULL, *e2 = NULL;
        size_t n = 0, n2 = 0;
        const char *method = NULL;
        /* Several block groups, and a file spanning more than one: ext4's
         * getfsmap has been seen leaving out used ranges at group ends. */
        const uint64_t file_len = 160 * MiB + 7;

        tpath(img, "fsmap-ext4.img");
        tpath(dir, "mnt-fsmap-ext4");
        make_ext4(img, 512 * MiB, 4096, "ext4", file_len);
        loop_attach(img, NULL, dev);
        do_mount(dev, dir, "ro");
        snprintf(file, sizeof file, "%s/big", dir);

        /* Read-only mounted ext4: the bitmaps are still good. */
        usedmap(dev, &p, &e, &n, &method);
        assert_true(p.mounted);
        assert_false(p.mounted_rw);
        assert_string_equal(method, "ext2fs");
        uint64_t total_bitmap = check_extents(e, n, p.size);
        check_filefrag(file, e, n, file_len);

        /* The getfsmap driver itself, on the same filesystem. */
        KuraExtentList l = {0};
        assert_int_equal(kura_used_driver_getfsmap.get(dev, -1, &p, &l), 0);
        kura_extents_normalize(&l, p.size, KURA_USEDMAP_ALIGN);
        uint64_t total_fsmap = check_extents(l.v, l.n, p.size);
        check_filefrag(file, l.v, l.n, file_len);
        /* Both describe the same allocation; getfsmap never reports less. */
        for (size_t i = 0; i < n; i++)
                assert_true(covered(l.v, l.n, e[i].off, e[i].len));
        assert_true(total_fsmap >= total_bitmap);
        assert_true(total_fsmap <= total_bitmap + 4 * MiB);
        assert_true(total_fsmap < p.size / 2);

        /* Three records per call: the continuation must give the same map. */
        KuraExtentList l3 = {0};
        kura_getfsmap_batch = 3;
        int r3 = kura_used_driver_getfsmap.get(dev, -1, &p, &l3);
        kura_getfsmap_batch = 1024;
        assert_int_equal(r3, 0);
        kura_extents_normalize(&l3, p.size, KURA_USEDMAP_ALIGN);
        assert_int_equal(l3.n, l.n);
        assert_memory_equal(l3.v, l.v, l.n * sizeof *l.v);
        kura_extents_free(&l3);
        kura_extents_free(&l);

        /* Read-write mounted: ext2fs steps aside, getfsmap answers. */
        assert_int_equal(sh("mount -o remount,rw '%s'", dir), 0);
        usedmap(img, &p, &e2, &n2, &method);
        assert_true(p.mounted_rw);
        assert_string_equal(method, "getfsmap");
        check_extents(e2, n2, p.size);
        check_filefrag(file, e2, n2, file_len);
        free(e);
        free(e2);
        (void) state;
}

static void test_usedmap_getfsmap_xfs(void **state) {
        need_root();
        char img[PATH_MAX], dir[PATH_MAX], dev[64], file[PATH_MAX + 8];
        KuraVolumeProbe p;
        KuraExtent *e = NULL;
        size_t n = 0;
        const char *method = NULL;
        const uint64_t file_len = 9 * MiB + 3;

        tpath(img, "fsmap-xfs.img");
        tpath(dir, "mnt-fsmap-xfs");
        make_sparse(img, 320 * MiB);
        assert_int_equal(sh("mkfs.xfs -q -f -L kuratest '%s' >/dev/null 2>&1", img), 0);
        loop_attach(img, NULL, dev);
        do_mount(dev, dir, "rw");
        snprintf(file, sizeof file, "%s/big", dir);
        assert_int_equal(sh("head -c %llu /dev/urandom > '%s' && sync", (unsigned long long) file_len, file), 0);
        assert_int_equal(sh("mount -o remount,ro '%s'", dir), 0);

        usedmap(img, &p, &e, &n, &method);
        assert_true(p.mounted);
        assert_false(p.mounted_rw);
        assert_string_equal(method, "getfsmap");
        uint64_t total = check_extents(e, n, p.size);
        check_filefrag(file, e, n, file_len);
        assert_true(covered(e, n, 0, 4096)); /* the primary superblock */
        assert_true(total > file_len);
        assert_true(total < p.size / 4);
        free(e);
        (void) state;
}

static void test_usedmap_whole(void **state) {
        need_root();
        char img[PATH_MAX];
        KuraVolumeProbe p;
        KuraExtent *e = NULL;
        size_t n = 0;
        const char *method = NULL;

        tpath(img, "used-btrfs.img");
        make_sparse(img, 256 * MiB);
        assert_int_equal(sh("mkfs.btrfs -q -f '%s' >/dev/null 2>&1", img), 0);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(method, "whole");
        assert_int_equal(n, 1);
        assert_true(e[0].off == 0 && e[0].len == 256 * MiB);
        free(e);

        /* An unaligned size stays whole too. */
        tpath(img, "used-odd.img");
        make_sparse(img, 1 * MiB + 1000);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(method, "whole");
        assert_int_equal(n, 1);
        assert_true(e[0].off == 0 && e[0].len == 1 * MiB + 1000);
        free(e);

        /* A corrupt ext4 (superblock magic kept, group descriptors wiped)
         * must fall back to whole, not fail and not shrink. */
        tpath(img, "used-corrupt.img");
        make_ext4(img, 64 * MiB, 4096, "ext4", 0);
        assert_int_equal(sh("dd if=/dev/zero of='%s' bs=4096 seek=1 count=1 conv=notrunc status=none", img), 0);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(p.fs, "ext4");
        assert_string_equal(method, "whole");
        assert_int_equal(n, 1);
        assert_true(e[0].len == 64 * MiB);
        free(e);

        /* Group 0's block bitmap wiped: the bitmap calls allocated blocks
         * free, which the descriptors (or checksums) give away. */
        tpath(img, "used-nobitmap.img");
        make_ext4(img, 64 * MiB, 4096, "ext4", 1 * MiB);
        char *loc = sh_out("dumpe2fs '%s' 2>/dev/null | sed -n 's/^ *Block bitmap at \\([0-9]*\\).*/\\1/p' | head -1", img);
        assert_non_null(loc);
        uint64_t bb = strtoull(loc, NULL, 10);
        free(loc);
        assert_true(bb > 0);
        assert_int_equal(sh("dd if=/dev/zero of='%s' bs=4096 seek=%llu count=1 conv=notrunc status=none", img,
                            (unsigned long long) bb), 0);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(method, "whole");
        free(e);

        /* The same without metadata_csum, so only the cross-check with the
         * descriptors' free counts can notice. */
        tpath(img, "used-nobitmap2.img");
        make_sparse(img, 64 * MiB);
        assert_int_equal(sh("mkfs.ext4 -q -F -O ^metadata_csum,^flex_bg -b 4096 '%s' >/dev/null 2>&1", img), 0);
        loc = sh_out("dumpe2fs '%s' 2>/dev/null | sed -n 's/^ *Block bitmap at \\([0-9]*\\).*/\\1/p' | head -1", img);
        assert_non_null(loc);
        bb = strtoull(loc, NULL, 10);
        free(loc);
        assert_true(bb > 0);
        assert_int_equal(sh("dd if=/dev/zero of='%s' bs=4096 seek=%llu count=1 conv=notrunc status=none", img,
                            (unsigned long long) bb), 0);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(method, "whole");
        free(e);

        /* Marked not clean (as after a crash of a read-write ext2). */
        tpath(img, "used-unclean.img");
        make_ext4(img, 32 * MiB, 4096, "ext2", 0);
        assert_int_equal(sh("debugfs -w -R 'ssv state 0' '%s' >/dev/null 2>&1", img), 0);
        usedmap(img, &p, &e, &n, &method);
        assert_string_equal(method, "whole");
        free(e);
        (void) state;
}

static void test_extents_normalize(void **state) {
        (void) state;
        KuraExtentList l = {0};
        assert_int_equal(kura_extents_add(&l, 10000, 10), 0);  /* -> [8192, 12288) */
        assert_int_equal(kura_extents_add(&l, 0, 1), 0);       /* -> [0, 4096) */
        assert_int_equal(kura_extents_add(&l, 4096, 100), 0);  /* touches the previous: merged */
        assert_int_equal(kura_extents_add(&l, 12288, 0), 0);   /* empty: ignored */
        assert_int_equal(kura_extents_add(&l, 20000, 100000), 0); /* clamped to size */
        assert_int_equal(kura_extents_add(&l, 8000, 200), 0);  /* overlaps two after rounding */
        kura_extents_normalize(&l, 50000, 4096);
        assert_int_equal(l.n, 2);
        assert_true(l.v[0].off == 0 && l.v[0].len == 12288);
        assert_true(l.v[1].off == 16384 && l.v[1].len == 50000 - 16384);
        kura_extents_free(&l);
        assert_null(l.v);
}

/* ---- targets --------------------------------------------------------------- */

static void fill_file(const char *path, uint8_t byte, uint64_t size) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        uint8_t *buf = malloc(MiB);
        assert_non_null(buf);
        memset(buf, byte, MiB);
        for (uint64_t off = 0; off < size; off += MiB)
                assert_true(pwrite(fd, buf, KURA_MIN(MiB, size - off), (off_t) off) == (ssize_t) KURA_MIN(MiB, size - off));
        free(buf);
        close(fd);
}

/* Every byte of [0, size) of path is 0 inside one of the ranges, byte outside. */
static void check_pattern(const char *path, uint64_t size, uint8_t byte, const KuraExtent *zero, size_t nzero) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t *buf = malloc(MiB);
        assert_non_null(buf);
        for (uint64_t off = 0; off < size; off += MiB) {
                size_t n = (size_t) KURA_MIN(MiB, size - off);
                assert_true(pread(fd, buf, n, (off_t) off) == (ssize_t) n);
                for (size_t i = 0; i < n; i++) {
                        uint8_t want = covered(zero, nzero, off + i, 1) ? 0 : byte;
                        if (buf[i] != want)
                                fail_msg("byte %llu of %s is %u, want %u", (unsigned long long) (off + i), path,
                                         buf[i], want);
                }
        }
        free(buf);
        close(fd);
}

static void test_target_new_sparse(void **state) {
        (void) state;
        char path[PATH_MAX];
        KuraTarget *t = NULL;
        KuraErr err = {0};
        uint8_t data[8192];
        struct stat st;

        tpath(path, "target-new.img");
        unlink(path);
        memset(data, 0x5a, sizeof data);
        assert_int_equal(kura_target_open(path, 64 * MiB, &t, &err), 0);
        assert_int_equal(kura_target_write(t, 1 * MiB, data, sizeof data, &err), 0);
        assert_int_equal(kura_target_zero(t, 2 * MiB, 60 * MiB, &err), 0);
        assert_int_equal(kura_target_zero(t, 0, 1 * MiB, &err), 0);
        /* Zeroing over written data must really zero it. */
        assert_int_equal(kura_target_zero(t, 1 * MiB + 4096, 4096, &err), 0);
        /* Outside the volume: refused. */
        assert_true(kura_target_write(t, 64 * MiB - 10, data, 20, &err) < 0);
        assert_string_equal(err.code, KURA_E_INTERNAL);
        assert_int_equal(kura_target_close(t, NULL), 0);

        assert_int_equal(stat(path, &st), 0);
        assert_true(st.st_size == (off_t) (64 * MiB));
        assert_true((uint64_t) st.st_blocks * 512 <= 256 * 1024);
        assert_true((st.st_mode & 0777) == 0600);
        KuraExtent z[] = {{0, 1 * MiB}, {1 * MiB + 4096, 64 * MiB}};
        check_pattern(path, 64 * MiB, 0x5a, z, ELEMENTSOF(z));
}

static void test_target_existing_file(void **state) {
        (void) state;
        char path[PATH_MAX];
        KuraTarget *t = NULL;
        KuraErr err = {0};
        const uint64_t size = 8 * MiB;

        tpath(path, "target-existing.img");
        fill_file(path, 0xab, 12 * MiB);
        assert_int_equal(kura_target_open(path, size, &t, &err), 0);
        /* Unaligned ranges on purpose: partial blocks must read back zero. */
        assert_int_equal(kura_target_zero(t, 1000, 5000, &err), 0);
        assert_int_equal(kura_target_zero(t, 2 * MiB, 1 * MiB + 123, &err), 0);
        assert_int_equal(kura_target_discard(t, 5 * MiB + 7, 100000, &err), 0);
        assert_int_equal(kura_target_zero(t, size - 1, 1, &err), 0);
        assert_true(kura_target_zero(t, size - 1, 2, &err) < 0);
        assert_int_equal(kura_target_close(t, &err), 0);

        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_true(st.st_size == (off_t) size); /* truncated to the volume */
        KuraExtent z[] = {{1000, 5000}, {2 * MiB, 1 * MiB + 123}, {5 * MiB + 7, 100000}, {size - 1, 1}};
        check_pattern(path, size, 0xab, z, ELEMENTSOF(z));

        /* Growing an existing file: the new part reads zero. */
        assert_int_equal(kura_target_open(path, 10 * MiB, &t, &err), 0);
        assert_int_equal(kura_target_close(t, &err), 0);
        KuraExtent z2[] = {{1000, 5000}, {2 * MiB, 1 * MiB + 123}, {5 * MiB + 7, 100000}, {size - 1, 2 * MiB + 1}};
        check_pattern(path, 10 * MiB, 0xab, z2, ELEMENTSOF(z2));
}

static void test_target_blockdev(void **state) {
        need_root();
        char img[PATH_MAX], dev[64];
        KuraTarget *t = NULL;
        KuraErr err = {0};
        uint8_t data[3000];

        tpath(img, "target-blk.img");
        fill_file(img, 0xcd, 16 * MiB);
        loop_attach(img, NULL, dev);

        assert_int_equal(kura_target_open(dev, 16 * MiB, &t, &err), 0);
        memset(data, 0x11, sizeof data);
        assert_int_equal(kura_target_write(t, 777, data, sizeof data, &err), 0);
        assert_int_equal(kura_target_zero(t, 10000, 3 * MiB + 3, &err), 0);
        assert_int_equal(kura_target_zero(t, 8 * MiB, 100, &err), 0);
        assert_int_equal(kura_target_zero(t, 12 * MiB + 512, 4096, &err), 0);
        /* Discard (contents unspecified afterwards) of a range outside the
         * checked ones, unaligned: must succeed. */
        assert_int_equal(kura_target_discard(t, 14 * MiB + 100, MiB, &err), 0);
        assert_int_equal(kura_target_close(t, &err), 0);
        teardown_devices(NULL);

        int fd = open(img, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        uint8_t buf[3000];
        assert_true(pread(fd, buf, sizeof buf, 777) == (ssize_t) sizeof buf);
        assert_memory_equal(buf, data, sizeof buf);
        close(fd);
        /* Check only past the written range: [0,777) and the tail of the data block are 0xcd. */
        KuraExtent z[] = {{10000, 3 * MiB + 3}, {8 * MiB, 100}, {12 * MiB + 512, 4096}, {14 * MiB + 100, MiB}};
        int fd2 = open(img, O_RDWR | O_CLOEXEC);
        assert_true(fd2 >= 0);
        uint8_t cd[3000];
        memset(cd, 0xcd, sizeof cd);
        assert_true(pwrite(fd2, cd, sizeof cd, 777) == (ssize_t) sizeof cd); /* restore pattern for the check */
        /* The discarded range may read either way: make it zero for the check. */
        assert_int_equal(fallocate(fd2, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 14 * MiB + 100, MiB), 0);
        close(fd2);
        check_pattern(img, 16 * MiB, 0xcd, z, ELEMENTSOF(z));
        (void) state;
}

static void test_target_write_error(void **state) {
        need_root();
        char dir[PATH_MAX], path[PATH_MAX + 16];
        KuraTarget *t = NULL;
        KuraErr err = {0};

        /* A 1 MiB tmpfs: the second MiB cannot be written. */
        tpath(dir, "mnt-full");
        mkdir(dir, 0700);
        assert_int_equal(sh("mount -t tmpfs -o size=1m kuratest '%s'", dir), 0);
        snprintf(mounts[nmounts++], sizeof mounts[0], "%s", dir);
        snprintf(path, sizeof path, "%s/x.img", dir);
        assert_int_equal(kura_target_open(path, 8 * MiB, &t, &err), 0);
        uint8_t *buf = calloc(1, 2 * MiB);
        assert_non_null(buf);
        memset(buf, 1, 2 * MiB);
        int r = kura_target_write(t, 4 * MiB, buf, 2 * MiB, &err);
        free(buf);
        kura_target_abort(t);
        assert_int_equal(r, -ENOSPC);
        assert_string_equal(err.code, KURA_E_TARGET_IO);
        assert_non_null(strstr(err.message, path));
        assert_non_null(strstr(err.message, "offset 5"));  /* 4 MiB + what fit, 5xxxxxx */
        (void) state;
}

static void test_target_too_small(void **state) {
        need_root();
        char img[PATH_MAX], dev[64];
        KuraTarget *t = NULL;
        KuraErr err = {0};

        tpath(img, "target-small.img");
        make_sparse(img, 100 * MiB);
        loop_attach(img, NULL, dev);
        assert_int_equal(kura_target_open(dev, 200 * MiB, &t, &err), -ENOSPC);
        assert_null(t);
        assert_string_equal(err.code, KURA_E_TARGET_TOO_SMALL);
        assert_non_null(strstr(err.message, dev));
        assert_non_null(strstr(err.message, "holds 100.0 MiB"));
        assert_non_null(strstr(err.message, "needs 200.0 MiB"));
        (void) state;
}

static void test_target_mounted(void **state) {
        need_root();
        char img[PATH_MAX], dir[PATH_MAX], dev[64];
        KuraTarget *t = NULL;
        KuraErr err = {0};

        tpath(img, "target-mounted.img");
        tpath(dir, "mnt-target");
        make_ext4(img, 64 * MiB, 4096, "ext4", 0);
        loop_attach(img, NULL, dev);
        do_mount(dev, dir, "ro");

        assert_int_equal(kura_target_open(dev, 64 * MiB, &t, &err), -EBUSY);
        assert_null(t);
        assert_string_equal(err.code, KURA_E_TARGET_MOUNTED);
        assert_non_null(strstr(err.message, dir));
        assert_string_equal(err.remedy, "unmount it");

        /* The image file behind the mounted loop device: refused as well. */
        kura_err_clear(&err);
        assert_int_equal(kura_target_open(img, 64 * MiB, &t, &err), -EBUSY);
        assert_string_equal(err.code, KURA_E_TARGET_MOUNTED);
        assert_non_null(strstr(err.message, dir));

        /* Unmounted but still attached: the device is free to write. */
        teardown_devices(NULL);
        loop_attach(img, NULL, dev);
        kura_err_clear(&err);
        assert_int_equal(kura_target_open(dev, 64 * MiB, &t, &err), 0);
        kura_target_abort(t);
        (void) state;
}

static void test_target_not_found(void **state) {
        (void) state;
        char path[PATH_MAX];
        KuraTarget *t = NULL;
        KuraErr err = {0};

        tpath(path, "no/such/dir/x.img");
        assert_int_equal(kura_target_open(path, MiB, &t, &err), -ENOENT);
        assert_null(t);
        assert_string_equal(err.code, KURA_E_TARGET_NOT_FOUND);
        assert_non_null(strstr(err.message, path));

        kura_err_clear(&err);
        assert_true(kura_target_open(tmpdir, MiB, &t, &err) < 0);
        assert_non_null(err.code);
        kura_target_abort(NULL);
}

/* ---- main ------------------------------------------------------------------- */

static int group_setup(void **state) {
        (void) state;
        snprintf(tmpdir, sizeof tmpdir, "/tmp/kura-test-image-XXXXXX");
        return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state) {
        teardown_devices(state);
        if (tmpdir[0])
                sh("rm -rf '%s'", tmpdir);
        return 0;
}

#define T(f) cmocka_unit_test_teardown(f, teardown_devices)

int main(void) {
        const struct CMUnitTest tests[] = {
                T(test_extents_normalize),
                T(test_probe_filesystems),
                T(test_probe_errors),
                T(test_mount_state),
                T(test_mount_state_partition),
                T(test_usedmap_ext2fs),
                T(test_usedmap_ext2fs_needs_recovery),
                T(test_usedmap_getfsmap_ext4),
                T(test_usedmap_getfsmap_xfs),
                T(test_usedmap_whole),
                T(test_target_new_sparse),
                T(test_target_existing_file),
                T(test_target_blockdev),
                T(test_target_write_error),
                T(test_target_too_small),
                T(test_target_mounted),
                T(test_target_not_found),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
