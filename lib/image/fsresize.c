/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Filesystems after a bare-metal restore: grow a filesystem to fill a larger
 * partition, put a filesystem onto a smaller one, and estimate how small a
 * filesystem can get.
 *
 * The work is done by each filesystem's own tools (e2fsprogs, xfsprogs,
 * btrfs-progs), run as child processes with an argv array (never a shell),
 * LC_ALL=C, stdin from /dev/null, stdout and stderr captured together; the
 * last lines of that output go into the error message.  Mounts (xfs and
 * btrfs resize only work on a mounted filesystem) are made with mount(2) on
 * a private mkdtemp() directory, and loop devices (to mount an image file)
 * with LOOP_CONFIGURE through /dev/loop-control; everything is unmounted,
 * detached and removed again on every path out.
 *
 * Shrinking:
 *   ext2/3/4  resize2fs shrinks the image file in place; then its first
 *             (new size) bytes are copied to the target.
 *   btrfs     the image is loop-attached and mounted, `btrfs filesystem
 *             resize` moves the chunks below the new end; then copied.  The
 *             kernel refuses to resize a btrfs below 256 MiB.
 *   xfs       cannot shrink: a new xfs with the same UUID and label is made
 *             on the target and filled at file level from the image (mounted
 *             read-only, nouuid, norecovery) with `cp -a --sparse=always`,
 *             which keeps hard links, modes, owners, times, ACLs and xattrs.
 * The copy skips the holes of the (usually sparse) image and zeroes the
 * target there instead (BLKZEROOUT on a block device), so no stale data of
 * whatever the target held before survives inside the new filesystem.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/btrfs.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <blkid/blkid.h>

#include "common/kcommon.h"
#include "kura/disk.h"

extern char **environ;

/* The kernel refuses BTRFS_IOC_RESIZE below this (fs/btrfs/ioctl.c). */
#define BTRFS_MIN_RESIZE ((uint64_t) 256 << 20)

/* Output kept from a tool: the first part (where resize2fs -P and btrfs
 * min-dev-size print their answer) and, beyond that, the last part (where the
 * error is). */
#define TOOL_OUT_MAX (64u * 1024u)

typedef struct ToolOut {
        char buf[TOOL_OUT_MAX + 1];
        size_t len;
} ToolOut;

static bool is_ext(const char *fs) {
        return fs && (!strcmp(fs, "ext2") || !strcmp(fs, "ext3") || !strcmp(fs, "ext4"));
}

static const char *tool_package(const char *tool) {
        if (!strncmp(tool, "e2fsck", 6) || !strncmp(tool, "resize2fs", 9) || !strncmp(tool, "mke2fs", 6))
                return "e2fsprogs";
        if (!strncmp(tool, "xfs_", 4) || !strcmp(tool, "mkfs.xfs"))
                return "xfsprogs";
        if (!strncmp(tool, "btrfs", 5))
                return "btrfs-progs";
        return "coreutils";
}

/* PATH lookup, done before fork (execve in the child).  Without a PATH, the
 * usual root one. */
static int find_tool(const char *name, char *ret, size_t n) {
        const char *p = getenv("PATH");

        if (!p || !*p)
                p = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        while (*p) {
                const char *e = strchrnul(p, ':');
                size_t l = (size_t) (e - p);
                if (l > 0) {
                        int w = snprintf(ret, n, "%.*s/%s", (int) l, p, name);
                        if (w > 0 && (size_t) w < n && access(ret, X_OK) == 0)
                                return 0;
                }
                p = *e ? e + 1 : e;
        }
        return -ENOENT;
}

/* The last two non-empty lines of the output, joined with "; ", for an error
 * message. */
static const char *tool_tail(ToolOut *o, char *buf, size_t n) {
        size_t end = o->len, got = 0;
        const char *lines[2];
        size_t lens[2];

        while (end > 0 && got < 2) {
                while (end > 0 && (o->buf[end - 1] == '\n' || o->buf[end - 1] == ' '))
                        end--;
                if (end == 0)
                        break;
                size_t start = end;
                while (start > 0 && o->buf[start - 1] != '\n')
                        start--;
                lines[got] = o->buf + start;
                lens[got] = end - start;
                got++;
                end = start;
        }
        if (got == 0)
                snprintf(buf, n, "no output");
        else if (got == 1)
                snprintf(buf, n, "%.*s", (int) KURA_MIN(lens[0], 300), lines[0]);
        else
                snprintf(buf, n, "%.*s; %.*s", (int) KURA_MIN(lens[1], 200), lines[1], (int) KURA_MIN(lens[0], 200),
                         lines[0]);
        for (char *c = buf; *c; c++)
                if ((unsigned char) *c < 0x20)
                        *c = ' ';
        return buf;
}

static void tool_out_add(ToolOut *o, const char *p, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (o->len == TOOL_OUT_MAX) {
                        /* Keep the first half, drop the oldest of the second. */
                        size_t half = TOOL_OUT_MAX / 2, drop = 4096;
                        memmove(o->buf + half, o->buf + half + drop, TOOL_OUT_MAX - half - drop);
                        o->len -= drop;
                }
                o->buf[o->len++] = p[i];
        }
        o->buf[o->len] = 0;
}

/* Run argv (argv[0] looked up in PATH).  Returns the exit status (>= 0), or a
 * negative errno with err filled: KURA-E-TOOL-MISSING when the tool is not
 * installed, KURA-E-FS-RESIZE when it could not be run or died of a signal. */
static int run_tool(const char *const *argv, ToolOut *out, KuraErr *err) {
        char prog[PATH_MAX];
        int r;

        out->len = 0;
        out->buf[0] = 0;
        if (find_tool(argv[0], prog, sizeof prog) < 0)
                return kura_err(err, ENOENT, KURA_E_TOOL_MISSING, "install the Debian package that provides it",
                                "%s is not installed (Debian package %s)", argv[0], tool_package(argv[0]));

        /* Everything the child needs is prepared before fork: libkura's
         * caller may have threads, so only async-signal-safe calls follow. */
        size_t ne = 0;
        while (environ && environ[ne])
                ne++;
        _cleanup_free_ char **envp = calloc(ne + 2, sizeof *envp);
        if (!envp)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory running %s", argv[0]);
        size_t k = 0;
        for (size_t i = 0; i < ne; i++)
                if (strncmp(environ[i], "LC_ALL=", 7) && strncmp(environ[i], "LANG=", 5) &&
                    strncmp(environ[i], "LANGUAGE=", 9))
                        envp[k++] = environ[i];
        envp[k++] = (char *) "LC_ALL=C";

        _cleanup_close_ int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (nul < 0)
                return kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "", "cannot open /dev/null to run %s", argv[0]);
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0)
                return kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "", "cannot create a pipe to run %s", argv[0]);
        pid_t pid = fork();
        if (pid < 0) {
                r = -errno;
                close(pfd[0]);
                close(pfd[1]);
                return kura_err_errno(err, r, KURA_E_FS_RESIZE, "", "cannot fork to run %s", argv[0]);
        }
        if (pid == 0) {
                if (dup2(nul, 0) < 0 || dup2(pfd[1], 1) < 0 || dup2(pfd[1], 2) < 0)
                        _exit(127);
                /* The caller may block or ignore signals the tool expects. */
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_DFL);
                execve(prog, (char *const *) argv, envp);
                _exit(127);
        }
        close(pfd[1]);
        for (;;) {
                char tmp[4096];
                ssize_t got = read(pfd[0], tmp, sizeof tmp);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got <= 0)
                        break;
                tool_out_add(out, tmp, (size_t) got);
        }
        close(pfd[0]);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "", "waiting for %s", argv[0]);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 127 && out->len == 0)
                return kura_err(err, ENOEXEC, KURA_E_TOOL_MISSING, "reinstall the Debian package that provides it",
                                "%s (%s) could not be executed (Debian package %s)", argv[0], prog,
                                tool_package(argv[0]));
        if (WIFSIGNALED(st)) {
                char t[512];
                return kura_err(err, EIO, KURA_E_FS_RESIZE, "see the system log",
                                "%s was killed by signal %d: %s", argv[0], WTERMSIG(st), tool_tail(out, t, sizeof t));
        }
        return WEXITSTATUS(st);
}

/* Run argv and require an exit status <= ok_max; the failure names what and
 * carries the tool's last output lines. */
static int run_ok(const char *const *argv, int ok_max, const char *what, ToolOut *out, KuraErr *err) {
        int r = run_tool(argv, out, err);
        if (r < 0)
                return r;
        if (r > ok_max) {
                char t[512];
                return kura_err(err, EIO, KURA_E_FS_RESIZE, "run the command by hand to see why",
                                "%s: %s exited %d: %s", what, argv[0], r, tool_tail(out, t, sizeof t));
        }
        return 0;
}

static ToolOut *tool_out_new(KuraErr *err) {
        ToolOut *o = malloc(sizeof *o);
        if (!o)
                kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        return o;
}

/* ---- sizes ------------------------------------------------------------------ */

static int fd_size(int fd, uint64_t *ret) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode))
                return ioctl(fd, BLKGETSIZE64, ret) < 0 ? -errno : 0;
        if (!S_ISREG(st.st_mode))
                return -ENOTBLK;
        *ret = (uint64_t) st.st_size;
        return 0;
}

static int path_size(const char *path, uint64_t *ret, KuraErr *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the path", "cannot open %s", path);
        int r = fd_size(fd, ret);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_TARGET_IO, "give a block device or an image file",
                                      "cannot get the size of %s", path);
        return 0;
}

/* The block size of the ext2/3/4 filesystem in path, from its superblock
 * (1024 bytes in: s_log_block_size at 24, magic 0xEF53 at 56). */
static int ext_block_size(const char *path, uint32_t *ret, KuraErr *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint8_t sb[1024];

        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the path", "cannot open %s", path);
        ssize_t n = pread(fd, sb, sizeof sb, 1024);
        if (n < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the device", "cannot read %s", path);
        if (n != (ssize_t) sizeof sb || get_le16(sb + 56) != 0xEF53 || get_le32(sb + 24) > 6)
                return kura_err(err, -KURA_CORRUPT(), KURA_E_FS_RESIZE,
                                "check that the volume really holds an ext2/3/4 filesystem",
                                "%s has no valid ext2/3/4 superblock", path);
        *ret = 1024u << get_le32(sb + 24);
        return 0;
}

/* ---- mounts and loop devices ------------------------------------------------ */

typedef struct Mnt {
        char *dir;              /* mkdtemp() directory, removed at release */
        bool mounted;
        int loop_fd;            /* loop device we attached, or -1 */
        char loop_dev[32];
} Mnt;

#define MNT_INIT { .dir = NULL, .mounted = false, .loop_fd = -1, .loop_dev = "" }

static int loop_attach(Mnt *m, const char *path, bool ro, KuraErr *err) {
        _cleanup_close_ int bfd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (bfd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the image file", "cannot open %s", path);
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "load the loop module (modprobe loop)",
                                      "cannot open /dev/loop-control to attach %s", path);
        int r = -EBUSY;
        /* Another process may take the free device between GET_FREE and
         * CONFIGURE: then ask again. */
        for (int attempt = 0; attempt < 32 && r == -EBUSY; attempt++) {
                int n = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (n < 0)
                        return kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "free a loop device",
                                              "no free loop device for %s", path);
                snprintf(m->loop_dev, sizeof m->loop_dev, "/dev/loop%d", n);
                _cleanup_close_ int lfd = open(m->loop_dev, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
                if (lfd < 0) {
                        r = -errno;
                        break;
                }
                /* AUTOCLEAR: if this process dies, the device goes away with
                 * its last user (our fd, then the mount). */
                struct loop_config cfg = {.fd = (uint32_t) bfd};
                cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (ro ? LO_FLAGS_READ_ONLY : 0);
                snprintf((char *) cfg.info.lo_file_name, sizeof cfg.info.lo_file_name, "%s", path);
                if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0) {
                        m->loop_fd = TAKE_FD(lfd);
                        return 0;
                }
                r = -errno;
                if (r == -EINVAL || r == -ENOTTY) {
                        /* Kernels before 5.8: the two-step way. */
                        if (ioctl(lfd, LOOP_SET_FD, bfd) < 0) {
                                r = -errno;
                                continue;
                        }
                        if (ioctl(lfd, LOOP_SET_STATUS64, &cfg.info) < 0) {
                                r = -errno;
                                ioctl(lfd, LOOP_CLR_FD, 0);
                                break;
                        }
                        m->loop_fd = TAKE_FD(lfd);
                        return 0;
                }
        }
        m->loop_dev[0] = 0;
        return kura_err_errno(err, r, KURA_E_FS_RESIZE, "free a loop device", "cannot attach %s to a loop device",
                              path);
}

static int make_dir(Mnt *m, const char *tmpdir, KuraErr *err) {
        m->dir = kura_asprintf("%s/kura-fsresize.XXXXXX", tmpdir ? tmpdir : "/tmp");
        if (!m->dir)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (!mkdtemp(m->dir)) {
                int r = -errno;
                free(m->dir);
                m->dir = NULL;
                return kura_err_errno(err, r, KURA_E_FS_RESIZE, "give a writable temporary directory",
                                      "cannot create a mount point under %s", tmpdir ? tmpdir : "/tmp");
        }
        return 0;
}

/* Mount path (a block device; an image file is first attached to a loop
 * device) on a fresh directory under tmpdir. */
static int mnt_open(Mnt *m, const char *path, const char *fs, unsigned long flags, const char *opts,
                    const char *tmpdir, KuraErr *err) {
        struct stat st;
        int r;

        if (stat(path, &st) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the path", "cannot open %s", path);
        const char *dev = path;
        if (S_ISREG(st.st_mode)) {
                r = loop_attach(m, path, flags & MS_RDONLY, err);
                if (r < 0)
                        return r;
                dev = m->loop_dev;
        }
        r = make_dir(m, tmpdir, err);
        if (r < 0)
                return r;
        if (mount(dev, m->dir, fs, flags | MS_NOSUID | MS_NODEV | MS_NOEXEC, opts) < 0)
                return kura_err_errno(err, -errno, KURA_E_FS_RESIZE,
                                      "check the filesystem (fsck) and the kernel log (dmesg)",
                                      "cannot mount %s %s%s%s", fs, path, dev != path ? " through " : "",
                                      dev != path ? dev : "");
        m->mounted = true;
        return 0;
}

/* Forget a btrfs device the kernel registered while we had it mounted, so
 * that a later mount of a clone with the same fsid does not find a stale
 * path (best effort). */
static void btrfs_forget(const char *dev) {
        _cleanup_close_ int fd = open("/dev/btrfs-control", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return;
        struct btrfs_ioctl_vol_args a = {0};
        snprintf(a.name, sizeof a.name, "%s", dev);
        (void) ioctl(fd, BTRFS_IOC_FORGET_DEV, &a);
}

/* Unmount, detach, remove the directory.  Returns 0 or the first failure
 * (with err filled); everything is attempted in any case. */
static int mnt_close(Mnt *m, const char *fs, KuraErr *err) {
        int ret = 0;

        if (m->mounted) {
                int r = 0;
                /* A tool that just exited may still hold the mount for a
                 * moment (deferred fput): retry briefly before detaching. */
                for (int i = 0; i < 50; i++) {
                        if (umount2(m->dir, UMOUNT_NOFOLLOW) == 0) {
                                r = 0;
                                break;
                        }
                        r = -errno;
                        if (r != -EBUSY)
                                break;
                        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
                }
                if (r < 0) {
                        ret = kura_err_errno(err, r, KURA_E_FS_RESIZE, "unmount it by hand", "cannot unmount %s",
                                             m->dir);
                        (void) umount2(m->dir, MNT_DETACH | UMOUNT_NOFOLLOW);
                }
                m->mounted = false;
        }
        if (m->loop_fd >= 0) {
                if (fs && !strcmp(fs, "btrfs"))
                        btrfs_forget(m->loop_dev);
                (void) ioctl(m->loop_fd, LOOP_CLR_FD, 0);
                close(m->loop_fd);
                m->loop_fd = -1;
        }
        if (m->dir) {
                (void) rmdir(m->dir);
                free(m->dir);
                m->dir = NULL;
        }
        return ret;
}

static void mnt_closep(Mnt *m) {
        (void) mnt_close(m, NULL, NULL);
}

/* ---- copying an image onto the target ----------------------------------------- */

#define COPY_BUF (1u << 20)

static int zero_range(int fd, bool blk, uint64_t off, uint64_t len, const uint8_t *zeros, const char *dev,
                      KuraErr *err) {
        if (len == 0)
                return 0;
        if (blk) {
                /* BLKZEROOUT wants 512-byte units; the odd edges are written. */
                uint64_t a = (off + 511) & ~511ULL, b = (off + len) & ~511ULL;
                if (b > a) {
                        uint64_t range[2] = {a, b - a};
                        if (ioctl(fd, BLKZEROOUT, range) == 0) {
                                int r = zero_range(fd, false, off, a - off, zeros, dev, err);
                                if (r < 0)
                                        return r;
                                return zero_range(fd, false, b, off + len - b, zeros, dev, err);
                        }
                }
        } else if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) off, (off_t) len) == 0)
                return 0;
        /* Fallback: write zeros. */
        while (len > 0) {
                size_t c = (size_t) KURA_MIN(len, (uint64_t) COPY_BUF);
                ssize_t w = pwrite(fd, zeros, c, (off_t) off);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return kura_err_errno(err, w < 0 ? -errno : -EIO, KURA_E_TARGET_IO, "check the target disk",
                                              "cannot write zeros to %s at %" PRIu64, dev, off);
                off += (uint64_t) w;
                len -= (uint64_t) w;
        }
        return 0;
}

/* Make dev's first dev_size bytes: [0, n) from src, [n, dev_size) zeros. */
static int copy_image(const char *src, const char *dev, uint64_t n, KuraErr *err) {
        _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC);
        if (in < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the restored image", "cannot open %s", src);
        struct stat st;
        if (stat(dev, &st) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the target disk", "cannot open %s", dev);
        /* O_EXCL on a block device: refused while it is mounted or held. */
        _cleanup_close_ int out = open(dev, O_WRONLY | O_CLOEXEC | (S_ISBLK(st.st_mode) ? O_EXCL : 0));
        if (out < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check that the target disk is not in use",
                                      "cannot open %s", dev);
        uint64_t dev_size, src_size;
        int r;
        if (fstat(out, &st) < 0 || fd_size(out, &dev_size) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the target disk", "cannot stat %s", dev);
        bool blk = S_ISBLK(st.st_mode);
        r = fd_size(in, &src_size);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_TARGET_IO, "check the restored image", "cannot stat %s", src);
        if (n > dev_size)
                return kura_err(err, ENOSPC, KURA_E_FS_RESIZE, "use a larger target",
                                "%s needs %" PRIu64 " bytes on %s, which has %" PRIu64 " (%" PRIu64 " bytes missing)",
                                src, n, dev, dev_size, n - dev_size);
        _cleanup_free_ uint8_t *buf = malloc(COPY_BUF);
        _cleanup_free_ uint8_t *zeros = calloc(1, COPY_BUF);
        if (!buf || !zeros)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory copying %s", src);

        uint64_t pos = 0;
        uint64_t limit = KURA_MIN(n, src_size);
        bool seek_ok = true;
        while (pos < limit) {
                uint64_t data = pos, hole = limit;
                if (seek_ok) {
                        off_t d = lseek(in, (off_t) pos, SEEK_DATA);
                        if (d < 0 && errno == ENXIO)
                                d = (off_t) limit;
                        if (d < 0) {
                                seek_ok = false; /* no SEEK_DATA: copy everything */
                        } else {
                                data = KURA_MIN((uint64_t) d, limit);
                                off_t h = lseek(in, d, SEEK_HOLE);
                                hole = h < 0 ? limit : KURA_MIN((uint64_t) h, limit);
                        }
                }
                r = zero_range(out, blk, pos, data - pos, zeros, dev, err);
                if (r < 0)
                        return r;
                for (pos = data; pos < hole;) {
                        size_t c = (size_t) KURA_MIN(hole - pos, (uint64_t) COPY_BUF);
                        ssize_t got = pread(in, buf, c, (off_t) pos);
                        if (got < 0 && errno == EINTR)
                                continue;
                        if (got < 0)
                                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the restored image",
                                                      "cannot read %s at %" PRIu64, src, pos);
                        if (got == 0) { /* shrank under us: the rest reads as zeros */
                                r = zero_range(out, blk, pos, hole - pos, zeros, dev, err);
                                if (r < 0)
                                        return r;
                                pos = hole;
                                break;
                        }
                        for (size_t done = 0; done < (size_t) got;) {
                                ssize_t w = pwrite(out, buf + done, (size_t) got - done, (off_t) (pos + done));
                                if (w < 0 && errno == EINTR)
                                        continue;
                                if (w <= 0)
                                        return kura_err_errno(err, w < 0 ? -errno : -EIO, KURA_E_TARGET_IO,
                                                              "check the target disk", "cannot write %s at %" PRIu64,
                                                              dev, pos + done);
                                done += (size_t) w;
                        }
                        pos += (uint64_t) got;
                }
                pos = KURA_MAX(pos, hole);
        }
        r = zero_range(out, blk, pos, dev_size - pos, zeros, dev, err);
        if (r < 0)
                return r;
        if (fsync(out) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the target disk", "cannot flush %s", dev);
        return 0;
}

/* ---- grow ----------------------------------------------------------------------- */

static int ext_fsck(const char *path, ToolOut *o, KuraErr *err) {
        /* 0: clean, 1: errors corrected.  Anything else (uncorrected errors,
         * operational error) stops the resize. */
        const char *fsck[] = {"e2fsck", "-f", "-y", path, NULL};
        return run_ok(fsck, 1, path, o, err);
}

int kura_fs_grow(const char *dev, const char *fs, const char *tmpdir, KuraErr *err) {
        if (!dev || !fs)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "kura_fs_grow: no device or filesystem");
        _cleanup_free_ ToolOut *o = NULL;
        int r;

        if (is_ext(fs)) {
                if (!(o = tool_out_new(err)))
                        return -ENOMEM;
                r = ext_fsck(dev, o, err);
                if (r < 0)
                        return r;
                const char *rs[] = {"resize2fs", dev, NULL};
                return run_ok(rs, 0, dev, o, err);
        }
        if (strcmp(fs, "xfs") && strcmp(fs, "btrfs"))
                return 0;

        if (!(o = tool_out_new(err)))
                return -ENOMEM;
        _cleanup_(mnt_closep) Mnt m = MNT_INIT;
        bool xfs = !strcmp(fs, "xfs");
        /* nouuid: the restored copy may share its UUID with a source that is
         * still attached. */
        r = mnt_open(&m, dev, fs, 0, xfs ? "nouuid" : NULL, tmpdir, err);
        if (r < 0)
                return r;
        if (xfs) {
                const char *g[] = {"xfs_growfs", m.dir, NULL};
                r = run_ok(g, 0, dev, o, err);
        } else {
                /* "max" resizes device 1: the only one of a single-device
                 * btrfs, which is what a partition restore makes. */
                const char *g[] = {"btrfs", "filesystem", "resize", "max", m.dir, NULL};
                r = run_ok(g, 0, dev, o, err);
        }
        int q = mnt_close(&m, fs, err);
        return r < 0 ? r : q;
}

/* ---- shrink ---------------------------------------------------------------------- */

static int parse_u64_after(const char *s, const char *prefix, uint64_t *ret) {
        const char *p = strstr(s, prefix);
        if (!p)
                return -ENOENT;
        p += strlen(prefix);
        while (*p == ' ' || *p == '\t')
                p++;
        char *e;
        errno = 0;
        unsigned long long v = strtoull(p, &e, 10);
        if (e == p || errno)
                return -EBADMSG;
        *ret = v;
        return 0;
}

static int shrink_ext(const char *src, const char *dev, uint64_t dev_size, ToolOut *o, KuraErr *err) {
        uint32_t bs;
        int r = ext_block_size(src, &bs, err);
        if (r < 0)
                return r;
        uint64_t blocks = dev_size / bs;
        uint64_t bytes = blocks * bs;
        r = ext_fsck(src, o, err);
        if (r < 0)
                return r;
        char size[32];
        snprintf(size, sizeof size, "%" PRIu64 "K", bytes / 1024);
        const char *rs[] = {"resize2fs", src, size, NULL};
        r = run_tool(rs, o, err);
        if (r < 0)
                return r;
        if (r != 0) {
                char t[512];
                uint64_t min;
                if (parse_u64_after(o->buf, "smaller than minimum (", &min) == 0 && min * bs > bytes)
                        return kura_err(err, ENOSPC, KURA_E_FS_RESIZE, "use a larger target or delete files first",
                                        "the ext filesystem of %s does not fit on %s: it needs at least %" PRIu64
                                        " bytes, %" PRIu64 " are available (%" PRIu64 " bytes missing)",
                                        src, dev, min * bs, bytes, min * bs - bytes);
                return kura_err(err, EIO, KURA_E_FS_RESIZE, "run resize2fs by hand to see why",
                                "cannot shrink the ext filesystem of %s to %s for %s: resize2fs exited %d: %s", src,
                                size, dev, r, tool_tail(o, t, sizeof t));
        }
        return copy_image(src, dev, bytes, err);
}

static int btrfs_min_dev_size(const char *mnt, ToolOut *o, uint64_t *ret, KuraErr *err) {
        const char *md[] = {"btrfs", "inspect-internal", "min-dev-size", mnt, NULL};
        int r = run_ok(md, 0, mnt, o, err);
        if (r < 0)
                return r;
        /* "105906176 bytes (101.00MiB)" */
        char *e;
        const char *p = o->buf;
        while (*p) {
                errno = 0;
                unsigned long long v = strtoull(p, &e, 10);
                if (e != p && !errno && !strncmp(e, " bytes", 6)) {
                        *ret = v;
                        return 0;
                }
                p = strchrnul(p, '\n');
                if (*p)
                        p++;
        }
        char t[512];
        return kura_err(err, EBADMSG, KURA_E_FS_RESIZE, "check the btrfs-progs version",
                        "btrfs inspect-internal min-dev-size %s: no size in its output: %s", mnt,
                        tool_tail(o, t, sizeof t));
}

static int shrink_btrfs(const char *src, const char *dev, uint64_t dev_size, const char *tmpdir, ToolOut *o,
                        KuraErr *err) {
        /* btrfs rounds the size down to its sector size; 64 KiB covers every
         * sector size it supports. */
        uint64_t bytes = dev_size & ~(uint64_t) 0xffff;
        int r;

        if (bytes < BTRFS_MIN_RESIZE)
                return kura_err(err, ENOSPC, KURA_E_FS_RESIZE, "use a target of at least 256 MiB",
                                "%s is too small for a btrfs: the kernel cannot shrink one below 256 MiB "
                                "(%" PRIu64 " bytes missing)",
                                dev, BTRFS_MIN_RESIZE - bytes);
        _cleanup_(mnt_closep) Mnt m = MNT_INIT;
        r = mnt_open(&m, src, "btrfs", 0, NULL, tmpdir, err);
        if (r < 0)
                return r;
        char size[32];
        snprintf(size, sizeof size, "%" PRIu64, bytes);
        const char *rs[] = {"btrfs", "filesystem", "resize", size, m.dir, NULL};
        r = run_tool(rs, o, err);
        if (r > 0) {
                char t[512], msg[512];
                uint64_t min = 0;
                snprintf(msg, sizeof msg, "%s", tool_tail(o, t, sizeof t));
                if (strstr(o->buf, "No space left") || strstr(o->buf, "Invalid argument")) {
                        KuraErr e2 = {0};
                        if (btrfs_min_dev_size(m.dir, o, &min, &e2) == 0 && min > bytes)
                                r = kura_err(err, ENOSPC, KURA_E_FS_RESIZE,
                                             "use a larger target or delete files first",
                                             "the btrfs of %s does not fit on %s: btrfs estimates it needs %" PRIu64
                                             " bytes, %" PRIu64 " are available (%" PRIu64 " bytes missing)",
                                             src, dev, min, bytes, min - bytes);
                }
                if (r > 0)
                        r = kura_err(err, EIO, KURA_E_FS_RESIZE, "run btrfs filesystem resize by hand to see why",
                                     "cannot shrink the btrfs of %s to %" PRIu64 " bytes for %s: %s", src, bytes, dev,
                                     msg);
        }
        int q = mnt_close(&m, "btrfs", err);
        if (r < 0)
                return r;
        if (q < 0)
                return q;
        return copy_image(src, dev, bytes, err);
}

static int blkid_tags(const char *path, char *uuid, size_t un, char *label, size_t ln, KuraErr *err) {
        blkid_probe pr = blkid_new_probe_from_filename(path);
        if (!pr)
                return kura_err(err, EIO, KURA_E_TARGET_IO, "check the restored image", "cannot probe %s", path);
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_UUID | BLKID_SUBLKS_LABEL | BLKID_SUBLKS_TYPE);
        int r = blkid_do_safeprobe(pr);
        const char *v = NULL;
        uuid[0] = label[0] = 0;
        if (r == 0 && blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0)
                snprintf(uuid, un, "%s", v);
        if (r == 0 && blkid_probe_lookup_value(pr, "LABEL", &v, NULL) == 0)
                snprintf(label, ln, "%s", v);
        blkid_free_probe(pr);
        if (r != 0 || !uuid[0])
                return kura_err(err, EBADMSG, KURA_E_FS_RESIZE, "check the restored image",
                                "no filesystem UUID found on %s", path);
        return 0;
}

static int statfs_used(const char *dir, uint64_t *ret_used, uint64_t *ret_free, KuraErr *err) {
        struct statfs s;
        if (statfs(dir, &s) < 0)
                return kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "", "statfs %s", dir);
        if (ret_used)
                *ret_used = (uint64_t) (s.f_blocks - s.f_bfree) * (uint64_t) s.f_bsize;
        if (ret_free)
                *ret_free = (uint64_t) s.f_bavail * (uint64_t) s.f_bsize;
        return 0;
}

static int shrink_xfs(const char *src, const char *dev, const char *tmpdir, ToolOut *o, KuraErr *err) {
        char uuid[64], label[256];
        int r = blkid_tags(src, uuid, sizeof uuid, label, sizeof label, err);
        if (r < 0)
                return r;
        char muuid[80];
        snprintf(muuid, sizeof muuid, "uuid=%s", uuid);
        const char *mk[10] = {"mkfs.xfs", "-q", "-f", "-m", muuid};
        size_t k = 5;
        if (label[0]) {
                mk[k++] = "-L";
                mk[k++] = label;
        }
        mk[k++] = dev;
        mk[k] = NULL;
        r = run_tool(mk, o, err);
        if (r < 0)
                return r;
        if (r > 0) {
                char t[512];
                return kura_err(err, EIO, KURA_E_FS_RESIZE,
                                "xfs needs a target of at least 300 MiB; run mkfs.xfs by hand to see why",
                                "cannot create an xfs on %s: mkfs.xfs exited %d: %s", dev, r, tool_tail(o, t, sizeof t));
        }

        _cleanup_(mnt_closep) Mnt in = MNT_INIT;
        _cleanup_(mnt_closep) Mnt out = MNT_INIT;
        /* Both share one UUID: nouuid on each.  The image may hold an
         * unreplayed log of a crash-consistent copy; norecovery reads it as it
         * is (a replay would need a writable mount). */
        r = mnt_open(&out, dev, "xfs", 0, "nouuid", tmpdir, err);
        if (r < 0)
                return r;
        r = mnt_open(&in, src, "xfs", MS_RDONLY, "nouuid,norecovery", tmpdir, err);
        if (r < 0)
                return r;
        uint64_t src_used = 0;
        (void) statfs_used(in.dir, &src_used, NULL, NULL);

        /* cp -a: recursive, symlinks as symlinks, hard links within the tree,
         * modes, owners, times, ACLs and xattrs (--preserve=all; naming xattr
         * again makes a failure to copy one an error instead of silence);
         * --sparse=always keeps holes (and makes runs of zeros holes). */
        _cleanup_free_ char *from = kura_path_join(in.dir, ".");
        _cleanup_free_ char *to = kura_asprintf("%s/", out.dir);
        if (!from || !to)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        const char *cp[] = {"cp", "-a", "--preserve=all,xattr", "--sparse=always", "--no-target-directory", from, to, NULL};
        r = run_tool(cp, o, err);
        if (r > 0) {
                char t[512];
                uint64_t dst_used = 0;
                if (strstr(o->buf, "No space left on device") && statfs_used(out.dir, &dst_used, NULL, NULL) == 0) {
                        /* The target is full: what the source uses beyond
                         * what got copied is an estimate of what is missing
                         * (the two filesystems' metadata differ a little). */
                        uint64_t missing = src_used > dst_used ? src_used - dst_used : 0;
                        r = kura_err(err, ENOSPC, KURA_E_FS_RESIZE, "use a larger target or delete files first",
                                     "the files of the xfs %s do not fit on %s: %" PRIu64
                                     " bytes used, about %" PRIu64 " bytes missing",
                                     src, dev, src_used, missing);
                } else
                        r = kura_err(err, EIO, KURA_E_FS_RESIZE, "run cp -a by hand to see why",
                                     "cannot copy the files of the xfs %s to %s: cp exited %d: %s", src, dev, r,
                                     tool_tail(o, t, sizeof t));
        }
        /* umount writes everything back (no global sync(): other
         * filesystems of a busy host need not wait for this one). */
        int q1 = mnt_close(&in, "xfs", err);
        int q2 = mnt_close(&out, "xfs", err);
        if (r < 0)
                return r;
        return q1 < 0 ? q1 : q2;
}

int kura_fs_shrink_onto(const char *src, const char *fs, const char *dev, const char *tmpdir, KuraErr *err) {
        if (!src || !fs || !dev)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "kura_fs_shrink_onto: no source, filesystem or device");
        bool xfs = !strcmp(fs, "xfs");
        if (!is_ext(fs) && !xfs && strcmp(fs, "btrfs"))
                return kura_err(err, ENOTSUP, KURA_E_FS_RESIZE, "restore onto a target at least as large as the source",
                                "kura cannot shrink a %s filesystem (%s onto %s)", fs[0] ? fs : "unknown", src, dev);
        uint64_t dev_size;
        int r = path_size(dev, &dev_size, err);
        if (r < 0)
                return r;
        _cleanup_free_ ToolOut *o = tool_out_new(err);
        if (!o)
                return -ENOMEM;
        if (is_ext(fs))
                return shrink_ext(src, dev, dev_size, o, err);
        if (xfs)
                return shrink_xfs(src, dev, tmpdir, o, err);
        return shrink_btrfs(src, dev, dev_size, tmpdir, o, err);
}

/* ---- minimum size ------------------------------------------------------------------ */

/*
 * ext2/3/4: resize2fs -P (after e2fsck -f -y: its estimate is only meaningful
 * for a checked, unmounted filesystem; the path is a restored copy kura owns,
 * so fixing it is allowed).
 * btrfs: `btrfs inspect-internal min-dev-size` on a read-only mount, but never
 * less than 256 MiB, below which the kernel refuses any resize.
 * xfs cannot shrink: -ENOTSUP, and *ret is the bytes in use on a read-only
 * mount ((f_blocks - f_bfree) * f_bsize: data and metadata, without the
 * internal log, which f_blocks excludes).  A planner re-creating it must add
 * the new filesystem's own overhead (log and allocation-group headers, a few
 * percent) and respect mkfs.xfs's floor of 300 MiB.
 * Other filesystems: -ENOTSUP, *ret untouched.  err is not set for -ENOTSUP.
 */
int kura_fs_min_size(const char *path, const char *fs, const char *tmpdir, uint64_t *ret, KuraErr *err) {
        if (!path || !fs || !ret)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "kura_fs_min_size: bad arguments");
        _cleanup_free_ ToolOut *o = NULL;
        int r;

        if (is_ext(fs)) {
                uint32_t bs;
                r = ext_block_size(path, &bs, err);
                if (r < 0)
                        return r;
                if (!(o = tool_out_new(err)))
                        return -ENOMEM;
                r = ext_fsck(path, o, err);
                if (r < 0)
                        return r;
                const char *p[] = {"resize2fs", "-P", path, NULL};
                r = run_ok(p, 0, path, o, err);
                if (r < 0)
                        return r;
                uint64_t blocks;
                if (parse_u64_after(o->buf, "Estimated minimum size of the filesystem:", &blocks) < 0) {
                        char t[512];
                        return kura_err(err, EBADMSG, KURA_E_FS_RESIZE, "check the e2fsprogs version",
                                        "resize2fs -P %s: no estimate in its output: %s", path,
                                        tool_tail(o, t, sizeof t));
                }
                *ret = blocks * bs;
                return 0;
        }
        bool xfs = !strcmp(fs, "xfs");
        if (!xfs && strcmp(fs, "btrfs"))
                return -ENOTSUP;
        if (!(o = tool_out_new(err)))
                return -ENOMEM;
        _cleanup_(mnt_closep) Mnt m = MNT_INIT;
        r = mnt_open(&m, path, fs, MS_RDONLY, xfs ? "nouuid,norecovery" : NULL, tmpdir, err);
        if (r < 0)
                return r;
        uint64_t v = 0;
        if (xfs)
                r = statfs_used(m.dir, &v, NULL, err);
        else {
                r = btrfs_min_dev_size(m.dir, o, &v, err);
                v = KURA_MAX(v, BTRFS_MIN_RESIZE);
        }
        int q = mnt_close(&m, fs, err);
        if (r < 0)
                return r;
        if (q < 0)
                return q;
        *ret = v;
        return xfs ? -ENOTSUP : 0;
}
