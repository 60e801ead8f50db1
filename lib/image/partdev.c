/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A block device for one partition of a disk.  The kernel's own partition
 * node is used when it exists with exactly the wanted start and size; else
 * (an image file, a loop device without partition scanning, a kernel that
 * did not re-read the table) a loop device is set up over the disk with that
 * offset and size limit.  kura never relies on the kernel having parsed a
 * partition table.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "kura/disk.h"

static int read_u64(const char *path, uint64_t *ret) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        unsigned long long v;
        if (!f || fscanf(f, "%llu", &v) != 1)
                return -ENOENT;
        *ret = v;
        return 0;
}

/* The kernel's partition node of the disk st with this start and size. */
static char *kernel_partition(const struct stat *st, uint64_t off, uint64_t size) {
        char dir[64];
        snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u", major(st->st_rdev), minor(st->st_rdev));
        DIR *d = opendir(dir);
        if (!d)
                return NULL;
        char *found = NULL;
        struct dirent *de;
        while (!found && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_free_ char *ps = kura_asprintf("%s/%s/partition", dir, de->d_name);
                _cleanup_free_ char *ss = kura_asprintf("%s/%s/start", dir, de->d_name);
                _cleanup_free_ char *zs = kura_asprintf("%s/%s/size", dir, de->d_name);
                uint64_t num, start, sz;
                if (!ps || !ss || !zs || read_u64(ps, &num) < 0 || read_u64(ss, &start) < 0 ||
                    read_u64(zs, &sz) < 0)
                        continue;
                /* sysfs counts 512-byte units whatever the sector size. */
                if (start * 512 != off || sz * 512 != size)
                        continue;
                _cleanup_free_ char *dev = kura_asprintf("/dev/%s", de->d_name);
                struct stat pst;
                if (dev && stat(dev, &pst) == 0 && S_ISBLK(pst.st_mode))
                        found = TAKE_PTR(dev);
        }
        closedir(d);
        return found;
}

int kura_partdev_attach(const char *path, uint64_t off, uint64_t size, bool writable, char **ret_dev, int *ret_loop,
                        KuraErr *err) {
        *ret_dev = NULL;
        *ret_loop = -1;
        struct stat st;
        if (stat(path, &st) < 0)
                return kura_err_errno(err, -errno, KURA_E_SOURCE_NOT_FOUND, "check the disk's path", "disk %s", path);
        if (S_ISBLK(st.st_mode)) {
                char *dev = kernel_partition(&st, off, size);
                if (dev) {
                        *ret_dev = dev;
                        return 0;
                }
        }
        _cleanup_close_ int bfd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        if (bfd < 0)
                return kura_err_errno(err, -errno, writable ? KURA_E_TARGET_IO : KURA_E_SOURCE_UNREADABLE,
                                      "run as root", "cannot open disk %s", path);
        uint32_t bs = 0;
        if (S_ISBLK(st.st_mode)) {
                int lbs = 0;
                if (ioctl(bfd, BLKSSZGET, &lbs) == 0 && lbs > 512)
                        bs = (uint32_t) lbs;
        }
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return kura_err_errno(err, -errno, KURA_E_TOOL_MISSING, "load the loop module (modprobe loop)",
                                      "cannot open /dev/loop-control to reach a partition of %s", path);
        for (int attempt = 0; attempt < 20; attempt++) {
                int n = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (n < 0)
                        return kura_err_errno(err, -errno, KURA_E_TOOL_MISSING, "free a loop device (losetup -D)",
                                              "no free loop device for a partition of %s", path);
                char dev[32];
                snprintf(dev, sizeof dev, "/dev/loop%d", n);
                _cleanup_close_ int lfd = open(dev, O_RDWR | O_CLOEXEC);
                if (lfd < 0) {
                        if (errno == ENOENT) {
                                /* devtmpfs without the node yet */
                                (void) mknod(dev, S_IFBLK | 0660, makedev(7, n));
                                lfd = open(dev, O_RDWR | O_CLOEXEC);
                        }
                        if (lfd < 0)
                                return kura_err_errno(err, -errno, KURA_E_TOOL_MISSING, "", "cannot open %s", dev);
                }
                struct loop_config cfg = {0};
                cfg.fd = (uint32_t) bfd;
                cfg.block_size = bs;
                cfg.info.lo_offset = off;
                cfg.info.lo_sizelimit = size;
                cfg.info.lo_flags = writable ? 0 : LO_FLAGS_READ_ONLY;
                snprintf((char *) cfg.info.lo_file_name, sizeof cfg.info.lo_file_name, "%s", path);
                if (ioctl(lfd, LOOP_CONFIGURE, &cfg) < 0) {
                        if (errno == EBUSY)
                                continue; /* taken between GET_FREE and CONFIGURE */
                        return kura_err_errno(err, -errno, KURA_E_TOOL_MISSING, "",
                                              "cannot set up %s over %s at byte %" PRIu64, dev, path, off);
                }
                *ret_dev = strdup(dev);
                if (!*ret_dev) {
                        (void) ioctl(lfd, LOOP_CLR_FD, 0);
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                }
                *ret_loop = n;
                return 0;
        }
        return kura_err(err, EBUSY, KURA_E_TOOL_MISSING, "try again", "loop devices kept being taken");
}

void kura_partdev_release(int loop) {
        if (loop < 0)
                return;
        char dev[32];
        snprintf(dev, sizeof dev, "/dev/loop%d", loop);
        int fd = open(dev, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return;
        (void) ioctl(fd, BLKFLSBUF, 0);
        /* A loop still opened by someone (udev's probe) clears on last close. */
        for (int i = 0; i < 50; i++) {
                if (ioctl(fd, LOOP_CLR_FD, 0) == 0 || errno != EBUSY)
                        break;
                usleep(20000);
        }
        close(fd);
}
