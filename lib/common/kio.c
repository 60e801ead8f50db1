/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kio: the only way libkura writes to a repository (see kio.h).
 *
 * Without the KURA_FAULT_* variables every function is a thin wrapper around
 * the system calls; the only added cost is one pthread_once() check.
 *
 * Fault injection.  The variables are read once.  When any is set, every
 * primitive operation (write, fsync, rename, link, unlink, mkdir, directory
 * fsync) runs under one mutex and counts one "event", so a crash point is
 * well defined even when the backup pipeline writes from several threads.
 *
 * Crash simulation (KURA_FAULT_CRASH_AT=N) keeps just enough state to undo,
 * at the Nth event, everything a power loss could lose:
 *   - data: each temporary file keeps a record (a private dup of its fd and
 *     the length at its last kio_fsync()); at the crash every such file is
 *     truncated to that length, wherever its name has gone by then;
 *   - names: a journal, newest first, of namespace changes (file created,
 *     renamed or linked into a directory, unlinked, directory made) that
 *     are not yet durable, each tagged with the (dev, ino) of the directory
 *     whose fsync makes it durable.  kio_fsync_dir() drops the entries of its
 *     directory; at the crash the remaining entries are undone in reverse
 *     order.  To make undo possible, an unlink is done as a rename to a
 *     hidden name (".tmp-kio-del-*"), and a rename over an existing file
 *     first keeps the old file under a hidden link (".tmp-kio-old-*"); the
 *     hidden names are really removed when the directory is fsynced (or at a
 *     normal exit, since a process that did not crash eventually gets its
 *     changes to disk).  They start with ".tmp-" so that repository readers
 *     ignore them like any temporary file.
 * The crash itself happens *instead of* the Nth event: crash point 1 loses
 * everything not durable before the first operation, crash point E (the
 * last event) everything but the final operation.
 */
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <pthread.h>
#include <sys/stat.h>

#include "kcommon.h"
#include "kio.h"

/* One data record per temporary file while it may hold unsynced bytes. */
typedef struct KioDataRec {
        int fd;                 /* our own dup: still valid after the caller closes */
        uint64_t synced;        /* length at the last kio_fsync() */
        struct KioDataRec *next;
} KioDataRec;

struct KioFile {
        int fd;
        char *tmp_path;
        char *dir;
        uint64_t size;
        KioDataRec *rec;        /* crash simulation only, else NULL */
};

typedef enum KioJournalKind {
        KJ_CREATE,      /* path appeared (O_CREAT or link): undo = unlink */
        KJ_RENAME,      /* aux renamed to path, old path kept as saved: undo = rename back */
        KJ_UNLINK,      /* path renamed to hidden aux: undo = rename back; durable = unlink aux */
        KJ_MKDIR,       /* directory path made: undo = remove the tree */
} KioJournalKind;

typedef struct KioJournal {
        KioJournalKind kind;
        dev_t dev;              /* the directory whose fsync makes this durable */
        ino_t ino;
        char *path;
        char *aux;
        char *saved;
        struct KioJournal *next; /* older entry */
} KioJournal;

static pthread_once_t fault_once = PTHREAD_ONCE_INIT;
static bool fault_on;           /* any KURA_FAULT_* variable set: count and serialise */
static bool fault_track;        /* KURA_FAULT_CRASH_AT set: keep the undo state */
static uint64_t fault_crash_at;
static bool fault_enospc_on;
static uint64_t fault_enospc_after;
static char *fault_count_file;

/* Everything below is guarded by fault_mu. */
static pthread_mutex_t fault_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t fault_events;
static uint64_t fault_bytes;
static uint64_t fault_seq;
static KioJournal *fault_journal;
static KioDataRec *fault_recs;

static bool parse_u64_env(const char *name, uint64_t *ret) {
        const char *s = getenv(name);
        if (!s || !*s)
                return false;
        uint64_t v;
        if (kura_parse_size(s, &v) < 0)
                return false;
        *ret = v;
        return true;
}

static void journal_free(KioJournal *j) {
        free(j->path);
        free(j->aux);
        free(j->saved);
        free(j);
}

/* A normal exit: report the count, and let the hidden names of unlinked and
 * replaced files go as the kernel eventually would. */
static void fault_atexit(void) {
        pthread_mutex_lock(&fault_mu);
        if (fault_count_file) {
                int fd = open(fault_count_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd >= 0) {
                        char buf[32];
                        int n = snprintf(buf, sizeof buf, "%llu\n", (unsigned long long) fault_events);
                        if (write(fd, buf, (size_t) n) != n) {
                                /* nothing to do: the test will see a short file */
                        }
                        close(fd);
                }
        }
        while (fault_journal) {
                KioJournal *j = fault_journal;
                fault_journal = j->next;
                if (j->kind == KJ_UNLINK)
                        (void) unlink(j->aux);
                if (j->kind == KJ_RENAME && j->saved)
                        (void) unlink(j->saved);
                journal_free(j);
        }
        while (fault_recs) {
                KioDataRec *d = fault_recs;
                fault_recs = d->next;
                close(d->fd);
                free(d);
        }
        pthread_mutex_unlock(&fault_mu);
}

static void fault_init(void) {
        fault_track = parse_u64_env("KURA_FAULT_CRASH_AT", &fault_crash_at) && fault_crash_at > 0;
        fault_enospc_on = parse_u64_env("KURA_FAULT_ENOSPC_AFTER", &fault_enospc_after);
        const char *c = getenv("KURA_FAULT_COUNT");
        if (c && *c)
                fault_count_file = strdup(c);
        fault_on = fault_track || fault_enospc_on || fault_count_file;
        if (fault_on)
                (void) atexit(fault_atexit);
}

static inline bool faults(void) {
        (void) pthread_once(&fault_once, fault_init);
        return fault_on;
}

static int rm_tree_cb(const char *p, const struct stat *st, int type, struct FTW *ftw) {
        (void) st, (void) type, (void) ftw;
        (void) remove(p);
        return 0;
}

/* The power loss: drop what was not durable, newest change first. */
static _Noreturn void fault_crash_locked(void) {
        for (KioDataRec *d = fault_recs; d; d = d->next)
                (void) ftruncate(d->fd, (off_t) d->synced);
        for (KioJournal *j = fault_journal; j; j = j->next) {
                switch (j->kind) {
                case KJ_CREATE:
                        (void) unlink(j->path);
                        break;
                case KJ_RENAME:
                        (void) rename(j->path, j->aux);
                        if (j->saved)
                                (void) rename(j->saved, j->path);
                        break;
                case KJ_UNLINK:
                        (void) rename(j->aux, j->path);
                        break;
                case KJ_MKDIR:
                        (void) nftw(j->path, rm_tree_cb, 16, FTW_DEPTH | FTW_PHYS);
                        break;
                }
        }
        _exit(KIO_CRASH_EXIT);
}

/* Count one event; at the chosen one, crash instead of doing it. */
static void fault_event_locked(void) {
        fault_events++;
        if (fault_track && fault_events == fault_crash_at)
                fault_crash_locked();
}

/* The directory part of path into buf, without allocating (so that
 * removing a lock or a manifest cannot fail half-way for want of memory). */
static int dir_of_buf(const char *path, char *buf, size_t n) {
        const char *slash = strrchr(path, '/');
        if (!slash)
                return snprintf(buf, n, ".") < 0 ? -EINVAL : 0;
        size_t len = slash == path ? 1 : (size_t) (slash - path);
        if (len >= n)
                return -ENAMETOOLONG;
        memcpy(buf, path, len);
        buf[len] = 0;
        return 0;
}

static char *dir_of(const char *path) {
        char *c = strdup(path);
        if (!c)
                return NULL;
        char *d = strdup(dirname(c));
        free(c);
        return d;
}

/* Journal a namespace change of the directory containing (or named) dir. */
static int journal_add_locked(KioJournalKind kind, const char *dir, const char *path, const char *aux,
                              const char *saved) {
        struct stat st;
        if (stat(dir, &st) < 0)
                return -errno;
        KioJournal *j = calloc(1, sizeof *j);
        if (!j)
                return -ENOMEM;
        j->kind = kind;
        j->dev = st.st_dev;
        j->ino = st.st_ino;
        j->path = strdup(path);
        j->aux = aux ? strdup(aux) : NULL;
        j->saved = saved ? strdup(saved) : NULL;
        if (!j->path || (aux && !j->aux) || (saved && !j->saved)) {
                journal_free(j);
                return -ENOMEM;
        }
        j->next = fault_journal;
        fault_journal = j;
        return 0;
}

static char *hidden_name_locked(const char *dir, const char *what) {
        return kura_asprintf("%s/.tmp-kio-%s-%ld-%llu", dir, what, (long) getpid(),
                             (unsigned long long) ++fault_seq);
}

static void rec_release_locked(KioDataRec *rec) {
        for (KioDataRec **p = &fault_recs; *p; p = &(*p)->next)
                if (*p == rec) {
                        *p = rec->next;
                        break;
                }
        close(rec->fd);
        free(rec);
}

/* Crash simulation: unlink as a rename to a hidden name, journalled. */
static int tracked_unlink_locked(const char *path) {
        _cleanup_free_ char *d = dir_of(path);
        if (!d)
                return -ENOMEM;
        struct stat st;
        if (lstat(path, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        _cleanup_free_ char *hidden = hidden_name_locked(d, "del");
        if (!hidden)
                return -ENOMEM;
        if (rename(path, hidden) < 0)
                return -errno;
        if (journal_add_locked(KJ_UNLINK, d, path, hidden, NULL) < 0)
                (void) unlink(hidden); /* cannot track it: behave like a plain unlink */
        return 0;
}

static int do_unlink(const char *path) {
        if (!faults())
                return unlink(path) < 0 ? -errno : 0;
        int r = 0;
        pthread_mutex_lock(&fault_mu);
        fault_event_locked();
        if (fault_track)
                r = tracked_unlink_locked(path);
        else if (unlink(path) < 0)
                r = -errno;
        pthread_mutex_unlock(&fault_mu);
        return r;
}

/* Crash simulation: keep the file being replaced under a hidden link so the
 * rename can be undone. */
static int tracked_rename_locked(const char *src, const char *dst) {
        _cleanup_free_ char *d = dir_of(dst);
        if (!d)
                return -ENOMEM;
        _cleanup_free_ char *saved = hidden_name_locked(d, "old");
        if (!saved)
                return -ENOMEM;
        if (link(dst, saved) < 0) {
                free(saved);
                saved = NULL;
        }
        if (rename(src, dst) < 0) {
                int r = -errno;
                if (saved)
                        (void) unlink(saved);
                return r;
        }
        if (journal_add_locked(KJ_RENAME, d, dst, src, saved) < 0 && saved)
                (void) unlink(saved);
        return 0;
}

static int do_rename(const char *src, const char *dst) {
        if (!faults())
                return rename(src, dst) < 0 ? -errno : 0;
        int r = 0;
        pthread_mutex_lock(&fault_mu);
        fault_event_locked();
        if (fault_track)
                r = tracked_rename_locked(src, dst);
        else if (rename(src, dst) < 0)
                r = -errno;
        pthread_mutex_unlock(&fault_mu);
        return r;
}

static int do_link(const char *src, const char *dst) {
        if (!faults())
                return link(src, dst) < 0 ? -errno : 0;
        int r = 0;
        pthread_mutex_lock(&fault_mu);
        fault_event_locked();
        if (link(src, dst) < 0) {
                r = -errno;
                goto out;
        }
        if (fault_track) {
                _cleanup_free_ char *d = dir_of(dst);
                if (d)
                        (void) journal_add_locked(KJ_CREATE, d, dst, NULL, NULL);
        }
out:
        pthread_mutex_unlock(&fault_mu);
        return r;
}

/* Everything journalled in the directory st names is now durable. */
static void journal_durable_locked(const struct stat *st) {
        for (KioJournal **p = &fault_journal; *p;) {
                KioJournal *j = *p;
                if (j->dev != st->st_dev || j->ino != st->st_ino) {
                        p = &j->next;
                        continue;
                }
                if (j->kind == KJ_UNLINK)
                        (void) unlink(j->aux);
                if (j->kind == KJ_RENAME && j->saved)
                        (void) unlink(j->saved);
                *p = j->next;
                journal_free(j);
        }
}

int kio_fsync_dir(const char *dir) {
        bool f = faults();
        if (f) {
                pthread_mutex_lock(&fault_mu);
                fault_event_locked();
        }
        int r = 0;
        struct stat st;
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0 || (f && fstat(fd, &st) < 0))
                r = -errno;
        else if (f && fault_track)
                journal_durable_locked(&st);
        if (fd >= 0)
                close(fd);
        if (f)
                pthread_mutex_unlock(&fault_mu);
        return r;
}

static int open_tmp(KioFile *f) {
        f->fd = open(f->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (f->fd < 0)
                return -errno;
        if (!fault_track)
                return 0;
        /* Not an event of its own: a created file without a durable
         * directory entry simply vanishes at a crash. */
        pthread_mutex_lock(&fault_mu);
        int r = -ENOMEM;
        KioDataRec *rec = calloc(1, sizeof *rec);
        if (rec) {
                rec->fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 3);
                r = rec->fd < 0 ? -errno : journal_add_locked(KJ_CREATE, f->dir, f->tmp_path, NULL, NULL);
                if (r < 0) {
                        if (rec->fd >= 0)
                                close(rec->fd);
                        free(rec);
                } else {
                        rec->next = fault_recs;
                        fault_recs = rec;
                        f->rec = rec;
                }
        }
        pthread_mutex_unlock(&fault_mu);
        if (r < 0) {
                close(f->fd);
                f->fd = -1;
                (void) unlink(f->tmp_path);
        }
        return r;
}

int kio_create_tmp(const char *dir, KioFile **ret) {
        (void) faults();
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
                r = open_tmp(f);
                if (r >= 0)
                        break;
                if (r != -EEXIST) {
                        free(f->tmp_path);
                        f->tmp_path = NULL;
                        kio_abort(f);
                        return r;
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

static int write_all(KioFile *f, const uint8_t *b, size_t n) {
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

int kio_write(KioFile *f, const void *p, size_t n) {
        if (!faults())
                return write_all(f, p, n);
        pthread_mutex_lock(&fault_mu);
        fault_event_locked();
        int r;
        if (fault_enospc_on && (fault_bytes >= fault_enospc_after || n > fault_enospc_after - fault_bytes)) {
                /* Like a full disk: what fits is written, then ENOSPC. */
                size_t room = fault_bytes >= fault_enospc_after ? 0 : (size_t) (fault_enospc_after - fault_bytes);
                uint64_t before = f->size;
                r = write_all(f, p, room);
                fault_bytes += f->size - before;
                if (r >= 0)
                        r = -ENOSPC;
        } else {
                uint64_t before = f->size;
                r = write_all(f, p, n);
                fault_bytes += f->size - before;
        }
        pthread_mutex_unlock(&fault_mu);
        return r;
}

uint64_t kio_size(const KioFile *f) { return f->size; }
int kio_fd(const KioFile *f) { return f->fd; }

int kio_fsync(KioFile *f) {
        if (!faults())
                return fsync(f->fd) < 0 ? -errno : 0;
        int r = 0;
        pthread_mutex_lock(&fault_mu);
        fault_event_locked();
        if (fsync(f->fd) < 0)
                r = -errno;
        else if (f->rec)
                f->rec->synced = f->size;
        pthread_mutex_unlock(&fault_mu);
        return r;
}

void kio_abort(KioFile *f) {
        if (!f)
                return;
        if (f->fd >= 0)
                close(f->fd);
        if (f->tmp_path)
                (void) do_unlink(f->tmp_path);
        if (f->rec) {
                /* A file with unsynced bytes keeps its record: if the unlink
                 * is undone at a crash, the file must come back truncated. */
                pthread_mutex_lock(&fault_mu);
                if (f->rec->synced == f->size)
                        rec_release_locked(f->rec);
                pthread_mutex_unlock(&fault_mu);
        }
        free(f->tmp_path);
        free(f->dir);
        free(f);
}

int kio_commit(KioFile *f, const char *final_path) {
        char dbuf[4096];
        int r = kio_fsync(f);
        if (r < 0)
                goto fail;
        if (close(f->fd) < 0) {
                f->fd = -1;
                r = -errno;
                goto fail;
        }
        f->fd = -1;
        /* Everything that can fail for want of memory happens before the
         * rename: once the file is in place, only the directory fsync can fail. */
        r = dir_of_buf(final_path, dbuf, sizeof dbuf);
        if (r < 0)
                goto fail;
        r = do_rename(f->tmp_path, final_path);
        if (r < 0)
                goto fail;
        free(f->tmp_path);
        f->tmp_path = NULL;
        r = kio_fsync_dir(dbuf);
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
        if (r >= 0)
                r = do_link(f->tmp_path, path);
        kio_abort(f); /* removes the temporary name */
        if (r < 0)
                return r;
        return kio_fsync_dir(d);
}

int kio_unlink(const char *path) {
        char d[4096];
        int r = dir_of_buf(path, d, sizeof d);
        if (r < 0)
                return r;
        r = do_unlink(path);
        if (r < 0)
                return r;
        return kio_fsync_dir(d);
}

int kio_mkdir(const char *path, mode_t mode) {
        if (faults()) {
                int r = 0;
                pthread_mutex_lock(&fault_mu);
                fault_event_locked();
                if (mkdir(path, mode ? mode : 0700) < 0)
                        r = errno == EEXIST ? 1 : -errno;
                else if (fault_track) {
                        _cleanup_free_ char *pd = dir_of(path);
                        if (pd)
                                (void) journal_add_locked(KJ_MKDIR, pd, path, NULL, NULL);
                }
                pthread_mutex_unlock(&fault_mu);
                if (r != 0)
                        return r > 0 ? 0 : r;
        } else if (mkdir(path, mode ? mode : 0700) < 0) {
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
