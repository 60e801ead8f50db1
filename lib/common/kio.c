/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>

#include "kcommon.h"
#include "kio.h"

struct KioFile {
        int fd;
        char *tmp_path;
        char *dir;
        uint64_t size;
};

static char *dir_of(const char *path) {
        char *c = strdup(path);
        if (!c)
                return NULL;
        char *d = strdup(dirname(c));
        free(c);
        return d;
}

int kio_fsync_dir(const char *dir) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

int kio_create_tmp(const char *dir, KioFile **ret) {
        KioFile *f = calloc(1, sizeof *f);
        if (!f)
                return -ENOMEM;
        f->fd = -1;
        f->dir = strdup(dir);
        if (!f->dir)
                goto nomem;
        for (int attempt = 0; attempt < 16; attempt++) {
                uint8_t rnd[8];
                char hex[17];
                int r = kura_random(rnd, sizeof rnd);
                if (r < 0) {
                        kio_abort(f);
                        return r;
                }
                kura_hex(rnd, sizeof rnd, hex);
                free(f->tmp_path);
                f->tmp_path = kura_asprintf("%s/.tmp-%s", dir, hex);
                if (!f->tmp_path)
                        goto nomem;
                f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (f->fd >= 0)
                        break;
                if (errno != EEXIST) {
                        int e = -errno;
                        free(f->tmp_path);
                        f->tmp_path = NULL;
                        kio_abort(f);
                        return e;
                }
        }
        if (f->fd < 0) {
                free(f->tmp_path);
                f->tmp_path = NULL;
                kio_abort(f);
                return -EEXIST;
        }
        *ret = f;
        return 0;
nomem:
        kio_abort(f);
        return -ENOMEM;
}

int kio_write(KioFile *f, const void *p, size_t n) {
        const uint8_t *b = p;
        while (n > 0) {
                ssize_t k = write(f->fd, b, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO;
                b += k;
                n -= (size_t) k;
                f->size += (uint64_t) k;
        }
        return 0;
}

uint64_t kio_size(const KioFile *f) { return f->size; }
int kio_fd(const KioFile *f) { return f->fd; }

int kio_fsync(KioFile *f) {
        if (fsync(f->fd) < 0)
                return -errno;
        return 0;
}

void kio_abort(KioFile *f) {
        if (!f)
                return;
        if (f->fd >= 0)
                close(f->fd);
        if (f->tmp_path)
                (void) unlink(f->tmp_path);
        free(f->tmp_path);
        free(f->dir);
        free(f);
}

int kio_commit(KioFile *f, const char *final_path) {
        _cleanup_free_ char *d = NULL;
        int r = kio_fsync(f);
        if (r < 0)
                goto fail;
        if (close(f->fd) < 0) {
                f->fd = -1;
                r = -errno;
                goto fail;
        }
        f->fd = -1;
        if (rename(f->tmp_path, final_path) < 0) {
                r = -errno;
                goto fail;
        }
        free(f->tmp_path);
        f->tmp_path = NULL;
        d = dir_of(final_path);
        r = d ? kio_fsync_dir(d) : -ENOMEM;
        kio_abort(f);
        return r;
fail:
        kio_abort(f);
        return r;
}

int kio_write_file(const char *path, const void *p, size_t n) {
        _cleanup_free_ char *d = dir_of(path);
        if (!d)
                return -ENOMEM;
        KioFile *f;
        int r = kio_create_tmp(d, &f);
        if (r < 0)
                return r;
        r = kio_write(f, p, n);
        if (r < 0) {
                kio_abort(f);
                return r;
        }
        return kio_commit(f, path);
}

int kio_write_file_excl(const char *path, const void *p, size_t n) {
        _cleanup_free_ char *d = dir_of(path);
        if (!d)
                return -ENOMEM;
        KioFile *f;
        int r = kio_create_tmp(d, &f);
        if (r < 0)
                return r;
        r = kio_write(f, p, n);
        if (r >= 0)
                r = kio_fsync(f);
        if (r >= 0 && link(f->tmp_path, path) < 0)
                r = -errno;
        kio_abort(f); /* removes the temporary name */
        if (r < 0)
                return r;
        return kio_fsync_dir(d);
}

int kio_unlink(const char *path) {
        if (unlink(path) < 0)
                return -errno;
        _cleanup_free_ char *d = dir_of(path);
        return d ? kio_fsync_dir(d) : -ENOMEM;
}

int kio_mkdir(const char *path, mode_t mode) {
        if (mkdir(path, mode ? mode : 0700) < 0) {
                if (errno == EEXIST)
                        return 0;
                return -errno;
        }
        _cleanup_free_ char *d = dir_of(path);
        return d ? kio_fsync_dir(d) : -ENOMEM;
}

int kio_read_file(const char *path, size_t max, uint8_t **ret, size_t *ret_len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;
        size_t n = (size_t) st.st_size;
        uint8_t *b = malloc(n ? n : 1);
        if (!b)
                return -ENOMEM;
        int r = kio_pread_full(fd, b, n, 0);
        if (r < 0) {
                free(b);
                return r;
        }
        *ret = b;
        *ret_len = n;
        return 0;
}

int kio_pread_full(int fd, void *p, size_t n, uint64_t off) {
        uint8_t *b = p;
        while (n > 0) {
                ssize_t k = pread(fd, b, n, (off_t) off);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return KURA_CORRUPT();
                b += k;
                n -= (size_t) k;
                off += (uint64_t) k;
        }
        return 0;
}
