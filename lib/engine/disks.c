/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Whole disks in a backup: each disk's layout goes into the manifest's
 * "disks" array, its boot area (everything before the first partition) and
 * each partition become volumes of their own, read through the kernel's
 * partition node or a loop device with an offset (kura does not rely on the
 * kernel having parsed the table).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "engine-internal.h"
#include "kura/disk.h"
#include "kura/engine.h"

KuraDiskBackup *kura_disk_backup_free(KuraDiskBackup *d) {
        if (!d)
                return NULL;
        for (size_t i = 0; i < d->nloops; i++)
                kura_partdev_release(d->loops[i]);
        for (size_t i = 0; i < d->nnames; i++)
                free(d->names[i]);
        free(d->names);
        free(d->loops);
        free(d->sources);
        json_decref(d->extra_json);
        free(d);
        return NULL;
}

static char *keep(KuraDiskBackup *d, char *s) {
        if (!s)
                return NULL;
        char **n = realloc(d->names, (d->nnames + 1) * sizeof *n);
        if (!n) {
                free(s);
                return NULL;
        }
        d->names = n;
        d->names[d->nnames++] = s;
        return s;
}

int kura_disk_backup_add_source(KuraDiskBackup *d, const char *path, const char *name, const char *record_path,
                                KuraErr *err) {
        KuraBackupSource *ns = realloc(d->sources, (d->nsources + 1) * sizeof *ns);
        if (ns)
                d->sources = ns;
        char *p = keep(d, strdup(path));
        char *nm = keep(d, strdup(name));
        char *rec = record_path ? keep(d, strdup(record_path)) : NULL;
        if (!ns || !p || !nm || (record_path && !rec))
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        d->sources[d->nsources++] = (KuraBackupSource){.path = p, .name = nm, .record_path = rec};
        return 0;
}

static int remember_loop(KuraDiskBackup *d, int loop, KuraErr *err) {
        if (loop < 0)
                return 0;
        int *nl = realloc(d->loops, (d->nloops + 1) * sizeof *nl);
        if (!nl) {
                kura_partdev_release(loop);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        d->loops = nl;
        d->loops[d->nloops++] = loop;
        return 0;
}

static int add_source(KuraDiskBackup *d, const char *disk, uint64_t off, uint64_t size, const char *name,
                      const char *suffix, KuraErr *err) {
        char *dev = NULL;
        int loop = -1;
        int r = kura_partdev_attach(disk, off, size, false, &dev, &loop, err);
        if (r < 0)
                return r;
        int *nl = loop >= 0 ? realloc(d->loops, (d->nloops + 1) * sizeof *nl) : d->loops;
        if (loop >= 0 && !nl) {
                kura_partdev_release(loop);
                free(dev);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        if (loop >= 0) {
                d->loops = nl;
                d->loops[d->nloops++] = loop;
        }
        KuraBackupSource *ns = realloc(d->sources, (d->nsources + 1) * sizeof *ns);
        char *p = keep(d, dev);
        char *nm = keep(d, strdup(name));
        char *rec = keep(d, kura_asprintf("%s#%s", disk, suffix));
        if (!ns || !p || !nm || !rec) {
                if (ns)
                        d->sources = ns;
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        d->sources = ns;
        d->sources[d->nsources++] = (KuraBackupSource){.path = p, .name = nm, .record_path = rec};
        return 0;
}

int kura_disk_backup_prepare(const char *const *disks, size_t n, unsigned first_index, KuraDiskBackup **ret,
                             KuraErr *err) {
        KuraDiskBackup *d = calloc(1, sizeof *d);
        json_t *arr = json_array();
        if (!d || !arr || !(d->extra_json = json_pack("{s:o}", "disks", arr))) {
                free(d);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        int r = 0;
        for (size_t i = 0; i < n && r >= 0; i++) {
                KuraDiskLayout l;
                char rp[PATH_MAX];
                const char *disk = realpath(disks[i], rp) ? rp : disks[i];
                r = kura_disk_layout_read(disk, 0, &l, err);
                if (r < 0)
                        break;
                char name[32], vname[48];
                snprintf(name, sizeof name, "disk%u", first_index + (unsigned) i);
                json_t *dj = kura_disk_layout_to_json(&l);
                snprintf(vname, sizeof vname, "%s-boot", name);
                if (!dj || json_object_set_new(dj, "name", json_string(name)) < 0 ||
                    json_object_set_new(dj, "path", json_string(disk)) < 0 ||
                    json_object_set_new(dj, "boot_volume", json_string(vname)) < 0 ||
                    json_array_append_new(arr, dj) < 0) {
                        kura_disk_layout_clear(&l);
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                        break;
                }
                r = add_source(d, disk, 0, l.boot_area, vname, "boot", err);
                json_t *pj = json_object_get(dj, "partitions");
                for (size_t k = 0; k < l.nparts && r >= 0; k++) {
                        const KuraPartition *p = &l.parts[k];
                        bool copied = strcmp(p->role, "swap") != 0 && strcmp(p->role, "extended") != 0;
                        snprintf(vname, sizeof vname, "%sp%u", name, p->number);
                        char suffix[16];
                        snprintf(suffix, sizeof suffix, "p%u", p->number);
                        json_t *pe = json_array_get(pj, k);
                        if (json_object_set_new(pe, "volume", copied ? json_string(vname) : json_null()) < 0) {
                                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                                break;
                        }
                        /* LVM and LUKS: their volumes through the stack (consistent
                         * snapshots of each logical volume, plaintext of LUKS). */
                        if (copied && (!strcmp(p->role, "lvm") || !strcmp(p->role, "luks"))) {
                                char *dev = NULL;
                                int loop = -1;
                                r = kura_partdev_attach(disk, p->start, p->size, false, &dev, &loop, err);
                                if (r >= 0)
                                        r = remember_loop(d, loop, err);
                                int h = r >= 0 ? kura_disk_stack_backup(name, p, dev, pe, d, err) : r;
                                free(dev);
                                if (h < 0) {
                                        r = h;
                                        break;
                                }
                                if (h == 1) {
                                        json_object_set_new(pe, "volume", json_null());
                                        continue;
                                }
                        }
                        if (copied)
                                r = add_source(d, disk, p->start, p->size, vname, suffix, err);
                }
                kura_disk_layout_clear(&l);
        }
        if (r < 0) {
                kura_disk_backup_free(d);
                return r;
        }
        *ret = d;
        return 0;
}

bool kura_version_is_bmr(const KuraVersion *v, size_t *ret_ndisks) {
        json_t *a = v && v->extra ? json_object_get(v->extra, "disks") : NULL;
        size_t n = json_is_array(a) ? json_array_size(a) : 0;
        if (ret_ndisks)
                *ret_ndisks = n;
        return n > 0;
}

/* Run a program (argv[0] looked up in PATH) with stdin /dev/null, stdout and
 * stderr captured (the last 4 KiB).  Returns its exit status (>= 0), -ENOENT
 * when it is not installed, or another -errno. */
int kura_engine_run(const char *const argv[], char **ret_output) {
        int pfd[2];
        if (ret_output)
                *ret_output = NULL;
        if (pipe2(pfd, O_CLOEXEC) < 0)
                return -errno;
        int ex[2];
        if (pipe2(ex, O_CLOEXEC) < 0) {
                close(pfd[0]);
                close(pfd[1]);
                return -errno;
        }
        pid_t pid = fork();
        if (pid < 0) {
                int e = -errno;
                close(pfd[0]);
                close(pfd[1]);
                close(ex[0]);
                close(ex[1]);
                return e;
        }
        if (pid == 0) {
                int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (nul >= 0 && nul != 0) {
                        dup2(nul, 0);
                        close(nul);
                }
                dup2(pfd[1], 1);
                dup2(pfd[1], 2);
                setenv("MTOOLS_SKIP_CHECK", "1", 1);
                setenv("LC_ALL", "C", 1);
                execvp(argv[0], (char *const *) argv);
                int e = errno;
                (void) !write(ex[1], &e, sizeof e);
                _exit(127);
        }
        close(pfd[1]);
        close(ex[1]);
        char buf[4096];
        size_t len = 0;
        for (;;) {
                char tmp[1024];
                ssize_t k = read(pfd[0], tmp, sizeof tmp);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                for (ssize_t i = 0; i < k; i++) {
                        if (len == sizeof buf - 1) {
                                memmove(buf, buf + 1024, len - 1024);
                                len -= 1024;
                        }
                        buf[len++] = tmp[i];
                }
        }
        close(pfd[0]);
        int e = 0;
        ssize_t k = read(ex[0], &e, sizeof e);
        close(ex[0]);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        if (k == (ssize_t) sizeof e)
                return -(e ? e : ENOENT);
        buf[len] = 0;
        if (ret_output)
                *ret_output = strdup(buf);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
