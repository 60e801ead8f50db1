/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Restore targets: an image file (created sparse, or an existing one reused)
 * or a block device, written with pwrite at volume offsets.
 *
 * Safety first: a block device is refused while it, one of its partitions,
 * or (for a file) a loop device backed by it is mounted; a block device is
 * also opened O_EXCL, so that the kernel refuses it while a filesystem,
 * device-mapper or md holds it.
 */
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "common/kcommon.h"
#include "image/image-internal.h"
#include "kura/image.h"

struct KuraTarget {
        int fd;
        char *path;
        uint64_t size;
        bool is_blockdev;
        /* Created by us, so every byte not yet written is a hole. */
        bool fresh;
        /* End of the highest write so far: a fresh file reads zeros past it.
         * Restore workers write concurrently. */
        _Atomic uint64_t written_end;
        /* The same file opened O_DIRECT (-1 if the filesystem refuses): aligned
         * chunk writes bypass the page cache, so a restore of gigabytes does
         * not spend its time evicting and copying pages. */
        _Atomic int dfd;
};

#define DIRECT_ALIGN 4096

/* 1 MiB of zeros for the write-zeros fallback. */
static const uint8_t zeros[1u << 20];

static int target_mounted_err(const char *path, const KuraVolumeProbe *p, KuraErr *err) {
        return kura_err(err, EBUSY, KURA_E_TARGET_MOUNTED, "unmount it",
                        "target %s is mounted on %s", path, p->mountpoint[0] ? p->mountpoint : "(unknown)");
}

static int too_small_err(const char *path, uint64_t have, uint64_t need, KuraErr *err) {
        char h[32], n[32];
        kura_format_bytes(have, h, sizeof h);
        kura_format_bytes(need, n, sizeof n);
        return kura_err(err, ENOSPC, KURA_E_TARGET_TOO_SMALL,
                        "restore to a larger device, or to an image file",
                        "target %s holds %s (%llu bytes), the volume needs %s (%llu bytes)", path, h,
                        (unsigned long long) have, n, (unsigned long long) need);
}

static int new_target(int fd, const char *path, uint64_t size, bool blk, bool fresh, KuraTarget **ret,
                      KuraErr *err) {
        KuraTarget *t = calloc(1, sizeof *t);
        if (!t || !(t->path = strdup(path))) {
                free(t);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory opening target %s", path);
        }
        t->fd = fd;
        t->size = size;
        t->is_blockdev = blk;
        t->fresh = fresh;
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        t->dfd = getenv("KURA_NO_DIRECT_IO") ? -1 : open(proc, O_WRONLY | O_DIRECT | O_CLOEXEC);
        *ret = t;
        return 0;
}

static int open_blockdev(const char *path, uint64_t size, KuraTarget **ret, KuraErr *err) {
        KuraVolumeProbe p = {0};
        int r = kura_mount_state(path, &p);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "check that /proc and /sys are mounted",
                                      "cannot find out whether target %s is mounted", path);
        if (p.mounted)
                return target_mounted_err(path, &p, err);

        /* O_EXCL on a block device: the kernel's own "is anybody using this". */
        _cleanup_close_ int fd = open(path, O_RDWR | O_EXCL | O_CLOEXEC);
        if (fd < 0) {
                if (errno == EBUSY)
                        return kura_err(err, EBUSY, KURA_E_TARGET_MOUNTED,
                                        "stop whatever holds it (mount, device-mapper, md, swap)",
                                        "target %s is in use", path);
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO,
                                      errno == EACCES || errno == EROFS ? "run kura as root, or make the device writable"
                                                                         : "check the device and the kernel log",
                                      "cannot open target %s", path);
        }
        uint64_t have;
        if (ioctl(fd, BLKGETSIZE64, &have) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the device and the kernel log",
                                      "cannot read the size of target %s", path);
        if (have < size)
                return too_small_err(path, have, size, err);
        r = new_target(fd, path, size, true, false, ret, err);
        if (r >= 0)
                TAKE_FD(fd);
        return r;
}

int kura_target_open(const char *path, uint64_t size, KuraTarget **ret, KuraErr *err) {
        struct stat st;
        if (size > INT64_MAX)
                return kura_err(err, EFBIG, KURA_E_USAGE, "", "volume size %llu is too large",
                                (unsigned long long) size);

        int sr = stat(path, &st) < 0 ? -errno : 0;
        if (sr == 0 && S_ISBLK(st.st_mode))
                return open_blockdev(path, size, ret, err);
        if (sr == -ENOTDIR)
                return kura_err_errno(err, sr, KURA_E_TARGET_NOT_FOUND, "create the directory first",
                                      "a directory of target %s", path);

        if (sr == -ENOENT) {
                /* A new file.  O_EXCL: if somebody creates it meanwhile we
                 * fail rather than write into what they made. */
                _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0) {
                        if (errno == ENOENT || errno == ENOTDIR) {
                                _cleanup_free_ char *copy = strdup(path);
                                return kura_err_errno(err, -errno, KURA_E_TARGET_NOT_FOUND,
                                                      "create the directory first",
                                                      "directory %s of target %s",
                                                      copy ? dirname(copy) : "", path);
                        }
                        return kura_err_errno(err, -errno, KURA_E_TARGET_IO,
                                              "check the permissions and free space of the directory",
                                              "cannot create target %s", path);
                }
                if (ftruncate(fd, (off_t) size) < 0) {
                        int r = -errno;
                        unlink(path);
                        return kura_err_errno(err, r,
                                              r == -EFBIG ? KURA_E_TARGET_TOO_SMALL : KURA_E_TARGET_IO,
                                              "restore to a filesystem that takes files this large",
                                              "cannot size target %s to %llu bytes", path,
                                              (unsigned long long) size);
                }
                int r = new_target(fd, path, size, false, true, ret, err);
                if (r < 0) {
                        unlink(path);
                        return r;
                }
                TAKE_FD(fd);
                return 0;
        }
        if (sr < 0)
                return kura_err_errno(err, sr, KURA_E_TARGET_IO, "check the path's permissions",
                                      "cannot look up target %s", path);
        if (!S_ISREG(st.st_mode))
                return kura_err(err, EINVAL, KURA_E_USAGE, "name an image file or a block device",
                                "target %s is neither a regular file nor a block device", path);

        /* An existing image file that a mounted loop device reads from:
         * writing under a mounted filesystem corrupts it. */
        KuraVolumeProbe p = {0};
        int r = kura_mount_state(path, &p);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "check that /proc and /sys are mounted",
                                      "cannot find out whether target %s is mounted", path);
        if (p.mounted)
                return target_mounted_err(path, &p, err);

        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the file's permissions",
                                      "cannot open target %s", path);
        if (ftruncate(fd, (off_t) size) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check free space and file size limits",
                                      "cannot size target %s to %llu bytes", path, (unsigned long long) size);
        r = new_target(fd, path, size, false, false, ret, err);
        if (r >= 0)
                TAKE_FD(fd);
        return r;
}

static int check_range(KuraTarget *t, uint64_t off, uint64_t len, KuraErr *err) {
        if (off > t->size || len > t->size - off)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "report this as a bug",
                                "range %llu+%llu is outside target %s of %llu bytes", (unsigned long long) off,
                                (unsigned long long) len, t->path, (unsigned long long) t->size);
        return 0;
}

static int pwrite_all(KuraTarget *t, uint64_t off, const void *buf, size_t len, KuraErr *err) {
        const uint8_t *p = buf;
        while (len > 0) {
                ssize_t n = pwrite(t->fd, p, len, (off_t) off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        int r = n < 0 ? -errno : -EIO;
                        return kura_err_errno(err, r, KURA_E_TARGET_IO,
                                              r == -ENOSPC ? "free space on the target's filesystem"
                                                           : "check the target device and the kernel log",
                                              "cannot write target %s at offset %llu", t->path,
                                              (unsigned long long) off);
                }
                p += n;
                off += (uint64_t) n;
                len -= (size_t) n;
        }
        return 0;
}

/* Write through the O_DIRECT descriptor when everything is aligned.
 * Returns 1 when it did not apply (the caller writes buffered). */
static int direct_write(KuraTarget *t, uint64_t off, const uint8_t *p, size_t len) {
        int dfd = t->dfd;
        if (dfd < 0 || off % DIRECT_ALIGN || len % DIRECT_ALIGN || (uintptr_t) p % DIRECT_ALIGN)
                return 1;
        while (len > 0) {
                ssize_t n = pwrite(dfd, p, len, (off_t) off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EINVAL) {
                        /* This filesystem or device wants other alignment: stop trying. */
                        t->dfd = -1;
                        close(dfd);
                        return len ? 1 : 0;
                }
                if (n <= 0)
                        return n < 0 ? -errno : -EIO;
                p += n;
                off += (uint64_t) n;
                len -= (size_t) n;
        }
        return 0;
}

int kura_target_write(KuraTarget *t, uint64_t off, const void *buf, size_t len, KuraErr *err) {
        int r = check_range(t, off, len, err);
        if (r < 0)
                return r;
        r = direct_write(t, off, buf, len);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_TARGET_IO,
                                      r == -ENOSPC ? "free space on the target's filesystem"
                                                   : "check the target device and the kernel log",
                                      "cannot write target %s at offset %llu", t->path, (unsigned long long) off);
        if (r > 0) {
                r = pwrite_all(t, off, buf, len, err);
                if (r < 0)
                        return r;
        }
        uint64_t end = off + len, cur = t->written_end;
        while (end > cur && !atomic_compare_exchange_weak(&t->written_end, &cur, end))
                ;
        return 0;
}

static int write_zeros(KuraTarget *t, uint64_t off, uint64_t len, KuraErr *err) {
        while (len > 0) {
                size_t n = (size_t) KURA_MIN(len, (uint64_t) sizeof zeros);
                int r = pwrite_all(t, off, zeros, n, err);
                if (r < 0)
                        return r;
                off += n;
                len -= n;
        }
        return 0;
}

/* The block-device ioctls take 512-byte aligned ranges: do the aligned middle
 * with ioctl (req), the unaligned edges with written zeros.  Returns 1 when
 * the ioctl is not supported (nothing done), 0 or -errno. */
static int blk_range_ioctl(KuraTarget *t, unsigned long req, uint64_t off, uint64_t len, KuraErr *err) {
        uint64_t s = (off + 511) & ~(uint64_t) 511, e = (off + len) & ~(uint64_t) 511;
        if (s >= e)
                return 1;
        uint64_t range[2] = {s, e - s};
        if (ioctl(t->fd, req, range) < 0) {
                if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL || errno == ENOSYS)
                        return 1;
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the target device and the kernel log",
                                      "cannot %s target %s at offset %llu",
                                      req == BLKDISCARD ? "discard" : "zero", t->path, (unsigned long long) s);
        }
        int r = write_zeros(t, off, s - off, err);
        if (r < 0)
                return r;
        return write_zeros(t, e, off + len - e, err);
}

static int file_fallocate(KuraTarget *t, int mode, uint64_t off, uint64_t len) {
        int r;
        do
                r = fallocate(t->fd, mode, (off_t) off, (off_t) len);
        while (r < 0 && errno == EINTR);
        return r < 0 ? -errno : 0;
}

int kura_target_zero(KuraTarget *t, uint64_t off, uint64_t len, KuraErr *err) {
        int r = check_range(t, off, len, err);
        if (r < 0 || len == 0)
                return r;
        if (t->is_blockdev) {
                r = blk_range_ioctl(t, BLKZEROOUT, off, len, err);
                if (r <= 0)
                        return r;
                return write_zeros(t, off, len, err);
        }
        /* A file we created reads zeros wherever nothing was written yet; a
         * restore writes in ascending order, so this is the common case. */
        if (t->fresh && off >= t->written_end)
                return 0;
        /* Holes first (space back, reads zero), then an explicit zero range,
         * then plain writes, for filesystems without either. */
        if (file_fallocate(t, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
                return 0;
        if (file_fallocate(t, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
                return 0;
        return write_zeros(t, off, len, err);
}

int kura_target_discard(KuraTarget *t, uint64_t off, uint64_t len, KuraErr *err) {
        int r = check_range(t, off, len, err);
        if (r < 0 || len == 0)
                return r;
        if (t->is_blockdev) {
                r = blk_range_ioctl(t, BLKDISCARD, off, len, err);
                if (r <= 0)
                        return r;
                return kura_target_zero(t, off, len, err);
        }
        return kura_target_zero(t, off, len, err);
}

int kura_target_close(KuraTarget *t, KuraErr *err) {
        if (!t)
                return 0;
        int r = 0;
        if (fsync(t->fd) < 0)
                r = kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the target device and the kernel log",
                                   "cannot flush target %s", t->path);
        if (t->dfd >= 0)
                close(t->dfd);
        if (close(t->fd) < 0 && r == 0 && errno != EINTR)
                r = kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the target device and the kernel log",
                                   "cannot close target %s", t->path);
        free(t->path);
        free(t);
        return r;
}

void kura_target_abort(KuraTarget *t) {
        if (!t)
                return;
        if (t->dfd >= 0)
                close(t->dfd);
        close(t->fd);
        free(t->path);
        free(t);
}
