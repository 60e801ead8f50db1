/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Probing a backup source: its size, what filesystem libblkid sees on it,
 * and whether it (or a loop device backed by it, or one of its partitions)
 * is mounted.
 *
 * Mount state comes from /proc/self/mountinfo, matched by device number
 * (major:minor), not by name: names lie (symlinks, /dev/disk/by-*, bind
 * mounts of /dev), device numbers do not.  btrfs shows an anonymous device
 * number in mountinfo, so the mount source is matched as well, by the device
 * number its node refers to.
 */
#include <blkid.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "common/kcommon.h"
#include "image/image-internal.h"

/* Read the first line of a small (sysfs) file, newline stripped.  0 or -errno. */
static int read_line(const char *path, char *buf, size_t size) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        ssize_t n;
        do
                n = read(fd, buf, size - 1);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
        return 0;
}

/* "8:16" -> dev_t.  0 or -EINVAL. */
static int parse_devnum(const char *s, dev_t *ret) {
        unsigned ma, mi;
        char tail;
        if (sscanf(s, "%u:%u%c", &ma, &mi, &tail) != 2)
                return -EINVAL;
        *ret = makedev(ma, mi);
        return 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo; undo in place. */
static void unescape_octal(char *s) {
        char *w = s;
        for (char *r = s; *r;) {
                if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
                    r[3] <= '7') {
                        *w++ = (char) ((r[1] - '0') << 6 | (r[2] - '0') << 3 | (r[3] - '0'));
                        r += 4;
                } else
                        *w++ = *r++;
        }
        *w = 0;
}

static bool opts_have(const char *opts, const char *word) {
        size_t wl = strlen(word);
        for (const char *p = opts; *p;) {
                size_t l = strcspn(p, ",");
                if (l == wl && memcmp(p, word, wl) == 0)
                        return true;
                p += l;
                if (*p == ',')
                        p++;
        }
        return false;
}

/* dev itself plus the partitions the kernel knows of (sysfs entries of the
 * device with a "partition" file).  Partitions added by partx count too. */
static int collect_devs(dev_t dev, dev_t **ret, size_t *ret_n) {
        size_t n = 0, cap = 8;
        _cleanup_free_ dev_t *v = malloc(cap * sizeof *v);
        if (!v)
                return -ENOMEM;
        v[n++] = dev;

        char dir[64];
        snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u", major(dev), minor(dev));
        DIR *d = opendir(dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        if (de->d_name[0] == '.')
                                continue;
                        char p[PATH_MAX], line[64];
                        dev_t pd;
                        snprintf(p, sizeof p, "%s/%s/partition", dir, de->d_name);
                        if (access(p, F_OK) < 0)
                                continue;
                        snprintf(p, sizeof p, "%s/%s/dev", dir, de->d_name);
                        if (read_line(p, line, sizeof line) < 0 || parse_devnum(line, &pd) < 0)
                                continue;
                        if (n == cap) {
                                dev_t *nv = realloc(v, 2 * cap * sizeof *v);
                                if (!nv) {
                                        closedir(d);
                                        return -ENOMEM;
                                }
                                v = nv;
                                cap *= 2;
                        }
                        v[n++] = pd;
                }
                closedir(d);
        }
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

int kura_mount_state_dev(dev_t dev, KuraVolumeProbe *p) {
        _cleanup_free_ dev_t *devs = NULL;
        size_t ndevs = 0;
        int r = collect_devs(dev, &devs, &ndevs);
        if (r < 0)
                return r;

        _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return -errno;
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
                line[strcspn(line, "\n")] = 0;
                /* id parent maj:min root mountpoint mntopts [optional...] - fstype source superopts */
                char *field[64];
                size_t nf = 0;
                char *save = NULL;
                for (char *t = strtok_r(line, " ", &save); t && nf < ELEMENTSOF(field); t = strtok_r(NULL, " ", &save))
                        field[nf++] = t;
                if (nf < 7)
                        continue;
                size_t sep = 6;
                while (sep < nf && strcmp(field[sep], "-") != 0)
                        sep++;
                if (sep + 3 > nf)
                        continue;
                const char *source = field[sep + 2], *superopts = sep + 3 < nf ? field[sep + 3] : "";
                dev_t md;
                if (parse_devnum(field[2], &md) < 0)
                        continue;

                bool match = false;
                for (size_t i = 0; i < ndevs && !match; i++)
                        match = md == devs[i];
                if (!match && strncmp(source, "/dev/", 5) == 0) {
                        char src[PATH_MAX];
                        struct stat st;
                        snprintf(src, sizeof src, "%s", source);
                        unescape_octal(src);
                        if (stat(src, &st) == 0 && S_ISBLK(st.st_mode))
                                for (size_t i = 0; i < ndevs && !match; i++)
                                        match = st.st_rdev == devs[i];
                }
                if (!match)
                        continue;

                /* A per-mount "ro" on top of a read-write superblock still
                 * lets the filesystem change through other paths (another
                 * mount, the kernel itself), so either being rw counts. */
                bool rw = opts_have(field[5], "rw") || opts_have(superopts, "rw");
                if (!p->mounted) {
                        snprintf(p->mountpoint, sizeof p->mountpoint, "%s", field[4]);
                        unescape_octal(p->mountpoint);
                }
                p->mounted = true;
                if (rw)
                        p->mounted_rw = true;
        }
        if (ferror(f))
                return -EIO;
        return 0;
}

int kura_loop_devices_for_file(const char *path, dev_t **ret, size_t *ret_n) {
        _cleanup_free_ char *real = realpath(path, NULL);
        if (!real)
                return -errno;
        size_t n = 0, cap = 0;
        _cleanup_free_ dev_t *v = NULL;
        DIR *d = opendir("/sys/block");
        if (!d)
                return -errno;
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, "loop", 4) != 0)
                        continue;
                char p[PATH_MAX + 64], backing[PATH_MAX + 16], devline[64];
                dev_t ld;
                snprintf(p, sizeof p, "/sys/block/%s/loop/backing_file", de->d_name);
                if (read_line(p, backing, sizeof backing) < 0 || strcmp(backing, real) != 0)
                        continue;
                snprintf(p, sizeof p, "/sys/block/%s/dev", de->d_name);
                if (read_line(p, devline, sizeof devline) < 0 || parse_devnum(devline, &ld) < 0)
                        continue;
                if (n == cap) {
                        size_t ncap = cap ? 2 * cap : 4;
                        dev_t *nv = realloc(v, ncap * sizeof *v);
                        if (!nv) {
                                r = -ENOMEM;
                                break;
                        }
                        v = nv;
                        cap = ncap;
                }
                v[n++] = ld;
        }
        closedir(d);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

int kura_mount_state(const char *path, KuraVolumeProbe *p) {
        struct stat st;
        p->mounted = p->mounted_rw = false;
        p->mountpoint[0] = 0;
        if (stat(path, &st) < 0)
                return -errno;
        if (S_ISBLK(st.st_mode))
                return kura_mount_state_dev(st.st_rdev, p);
        if (!S_ISREG(st.st_mode))
                return 0;
        _cleanup_free_ dev_t *loops = NULL;
        size_t n = 0;
        int r = kura_loop_devices_for_file(path, &loops, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = kura_mount_state_dev(loops[i], p);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void blkid_probe_freep(blkid_probe *pr) {
        if (*pr)
                blkid_free_probe(*pr);
}

/* Copy a blkid value; a missing value leaves "". */
static void copy_value(blkid_probe pr, const char *name, char *dst, size_t n) {
        const char *v = NULL;
        size_t len = 0;
        if (blkid_probe_lookup_value(pr, name, &v, &len) == 0 && v)
                snprintf(dst, n, "%s", v);
}

int kura_volume_probe(const char *path, KuraVolumeProbe *ret, KuraErr *err) {
        KuraVolumeProbe p = {0};
        struct stat st;

        if (stat(path, &st) < 0) {
                int r = -errno;
                if (r == -ENOENT || r == -ENOTDIR)
                        return kura_err_errno(err, r, KURA_E_SOURCE_NOT_FOUND,
                                              "check the path of the device or image file", "source %s", path);
                return kura_err_errno(err, r, KURA_E_SOURCE_UNREADABLE,
                                      "check the permissions of the source and of its directories",
                                      "cannot look up source %s", path);
        }
        if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode))
                return kura_err(err, EINVAL, KURA_E_SOURCE_UNREADABLE, "name a block device or an image file",
                                "source %s is neither a block device nor a regular file", path);

        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_SOURCE_UNREADABLE,
                                      errno == EACCES || errno == EPERM ? "run kura as root or grant read access"
                                                                        : "check the device and the kernel log",
                                      "cannot open source %s", path);
        if (S_ISBLK(st.st_mode)) {
                uint64_t size;
                if (ioctl(fd, BLKGETSIZE64, &size) < 0)
                        return kura_err_errno(err, -errno, KURA_E_SOURCE_UNREADABLE,
                                              "check the device and the kernel log",
                                              "cannot read the size of block device %s", path);
                p.size = size;
                p.is_blockdev = true;
        } else
                p.size = (uint64_t) st.st_size;

        _cleanup_(blkid_probe_freep) blkid_probe pr = blkid_new_probe();
        if (!pr)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "cannot probe %s: out of memory", path);
        if (blkid_probe_set_device(pr, fd, 0, 0) < 0)
                return kura_err(err, EIO, KURA_E_SOURCE_UNREADABLE, "check the device and the kernel log",
                                "cannot probe source %s", path);
        blkid_probe_enable_superblocks(pr, 1);
        blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_UUID | BLKID_SUBLKS_TYPE);
        /* Partition tables are the disk-layout code's business, not ours. */
        blkid_probe_enable_partitions(pr, 0);
        errno = 0;
        int r = blkid_do_safeprobe(pr);
        if (r == -1)
                return kura_err_errno(err, errno > 0 ? -errno : -EIO, KURA_E_SOURCE_UNREADABLE,
                                      "check the device and the kernel log", "cannot read source %s", path);
        if (r == 0) {
                copy_value(pr, "TYPE", p.fs, sizeof p.fs);
                copy_value(pr, "UUID", p.uuid, sizeof p.uuid);
                copy_value(pr, "LABEL", p.label, sizeof p.label);
        }
        /* r == 1: nothing found; r == -2: ambivalent (two signatures), which
         * we do not guess at: fs stays "" and the volume is read whole. */

        r = kura_mount_state(path, &p);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "check that /proc and /sys are mounted",
                                      "cannot find out whether %s is mounted", path);
        *ret = p;
        return 0;
}
