/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Replay driver: runs a fuzz target's LLVMFuzzerTestOneInput over every file
 * named on the command line, or every regular file in a directory named
 * there (not recursive), without libFuzzer.  This is how the corpora run as
 * ordinary tests (meson suite 'fuzz-replay') in every build, with or
 * without sanitizers.  A target signals a bug by crashing or aborting.
 *
 * An argument that is missing, unreadable, or a directory holding no file is
 * an error (exit 1): a corpus must not silently vanish and leave a test that
 * passes by running nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_INPUT (64U << 20) /* no corpus file comes near this */

/* Read the whole file; returns 0 or a negative errno. */
static int read_all(const char *path, uint8_t **ret, size_t *ret_len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t) st.st_size > REPLAY_MAX_INPUT) {
                int e = errno ? errno : EINVAL;
                close(fd);
                return -e;
        }
        /* Always a real buffer, even for an empty file: targets may read data[0..size). */
        uint8_t *buf = malloc((size_t) st.st_size + 1);
        if (!buf) {
                close(fd);
                return -ENOMEM;
        }
        size_t got = 0;
        while (got < (size_t) st.st_size) {
                ssize_t k = read(fd, buf + got, (size_t) st.st_size - got);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                got += (size_t) k;
        }
        close(fd);
        *ret = buf;
        *ret_len = got;
        return 0;
}

static int run_file(const char *path) {
        uint8_t *buf = NULL;
        size_t len = 0;
        int r = read_all(path, &buf, &len);
        if (r < 0) {
                fprintf(stderr, "replay: %s: %s\n", path, strerror(-r));
                return r;
        }
        /* Feed an exact-size copy so ASan sees reads past the end. */
        uint8_t *exact = malloc(len ? len : 1);
        if (!exact) {
                free(buf);
                return -ENOMEM;
        }
        memcpy(exact, buf, len);
        free(buf);
        (void) LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *) a, *(char *const *) b); }

/* Run every regular file of dir (sorted, so failures reproduce in order).
 * Returns the number run, or a negative errno. */
static long run_dir(const char *dir) {
        DIR *d = opendir(dir);
        if (!d)
                return -errno;
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        long ran = 0;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                if (n == cap) {
                        cap = cap ? 2 * cap : 64;
                        char **nn = realloc(names, cap * sizeof *names);
                        if (!nn) {
                                ran = -ENOMEM;
                                goto out;
                        }
                        names = nn;
                }
                if (!(names[n] = strdup(de->d_name))) {
                        ran = -ENOMEM;
                        goto out;
                }
                n++;
        }
        if (n > 0)
                qsort(names, n, sizeof *names, cmp_str);
        for (size_t i = 0; i < n; i++) {
                size_t l = strlen(dir) + strlen(names[i]) + 2;
                char *p = malloc(l);
                if (!p) {
                        ran = -ENOMEM;
                        goto out;
                }
                snprintf(p, l, "%s/%s", dir, names[i]);
                struct stat st;
                if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
                        int r = run_file(p);
                        if (r < 0) {
                                free(p);
                                ran = r;
                                goto out;
                        }
                        ran++;
                }
                free(p);
        }
out:
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        closedir(d);
        return ran;
}

int main(int argc, char **argv) {
        long total = 0;
        if (argc < 2) {
                fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
                return 2;
        }
        for (int i = 1; i < argc; i++) {
                struct stat st;
                long ran;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
                        return 1;
                }
                if (S_ISDIR(st.st_mode)) {
                        ran = run_dir(argv[i]);
                        if (ran < 0) {
                                fprintf(stderr, "replay: %s: %s\n", argv[i], strerror((int) -ran));
                                return 1;
                        }
                        if (ran == 0) {
                                fprintf(stderr, "replay: %s: no input files (corpus missing?)\n", argv[i]);
                                return 1;
                        }
                } else {
                        if (run_file(argv[i]) < 0)
                                return 1;
                        ran = 1;
                }
                printf("%s: %ld inputs\n", argv[i], ran);
                total += ran;
        }
        printf("ran %ld inputs\n", total);
        return 0;
}
