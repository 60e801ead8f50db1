/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The backup job: for each source volume, cut it into fixed-size chunks
 * aligned to the volume start, and store the chunks the repository lacks.
 *
 * Pipeline: the calling thread walks the chunks in order; a chunk that holds
 * no block the filesystem uses is recorded FREE and never read; otherwise it
 * describes the chunk (offset, length, first used extent) in a free slot and
 * queues the slot.  Worker threads (one per CPU) take slots, read the used
 * ranges into the slot's buffer (free ranges are zero-filled, so the bytes of
 * free blocks never reach the repository and do not defeat deduplication) and
 * do the CPU work: zero test, fingerprint-cache test, chunk ID (HMAC-SHA256),
 * and kura_repo_put() (compress, seal, pack).  The result lands in
 * ids[chunk index], so order does not matter.  A fixed ring of slots bounds
 * memory (nslots x chunk size) whatever the volume size, and nothing is
 * allocated per chunk.
 */
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/kcommon.h"
#include "crypto/kcrypto.h"
#include "engine-internal.h"
#include "kura/engine.h"
#include "kura/snap.h"

typedef struct Slot {
        uint64_t index;
        uint64_t start;  /* byte offset of the chunk in the volume */
        size_t len;
        size_t ei;       /* first extent that may overlap the chunk */
        uint8_t *buf;
} Slot;

typedef struct Job {
        KuraRepo *repo;
        const uint8_t *fp_key;
        uint32_t chunk_size;

        pthread_mutex_t mu;
        pthread_cond_t cv;          /* signalled when work or free slots appear, or on stop */
        Slot *slots;
        size_t nslots;
        size_t *work, nwork, work_head; /* ring of slot numbers queued for workers */
        size_t *freeq, nfree;           /* stack of free slot numbers */
        bool reading_done;
        bool failed;
        int error;
        KuraErr err;

        /* the current volume */
        int fd;                         /* what to read */
        const char *read_path;          /* for messages */
        const KuraExtent *ext;          /* sorted used ranges */
        size_t next;
        atomic_bool map_ok;             /* cache hits may be tested through mmap (cached_match()) */
        const uint8_t *map;             /* the whole volume mapped once for cached_match(), or NULL */
        uint64_t map_len;
        KuraId *ids;
        const KuraFpEntry *old_fp;      /* NULL: no cache */
        KuraFpEntry *new_fp;
        bool rehash;
        _Atomic uint64_t bytes_new, bytes_stored, chunks_new, chunks_zero;
} Job;

static bool all_zero(const uint8_t *p, size_t n) {
        /* Word-at-a-time scan; memory bandwidth bound. */
        const uint8_t *end = p + n;
        while (p < end && ((uintptr_t) p & 7))
                if (*p++)
                        return false;
        for (; p + 32 <= end; p += 32) {
                uint64_t a, b, c, d;
                memcpy(&a, p, 8), memcpy(&b, p + 8, 8), memcpy(&c, p + 16, 8), memcpy(&d, p + 24, 8);
                if (a | b | c | d)
                        return false;
        }
        while (p < end)
                if (*p++)
                        return false;
        return true;
}

static void job_fail(Job *j, int r, const KuraErr *e) {
        /* under j->mu */
        if (!j->failed) {
                j->failed = true;
                j->error = r;
                if (e && e->code)
                        j->err = *e;
        }
        pthread_cond_broadcast(&j->cv);
}

static int read_full(int fd, uint8_t *p, size_t n, uint64_t off) {
        while (n > 0) {
                ssize_t k = pread(fd, p, n, (off_t) off);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        return -EIO; /* the source shrank under us */
                p += k;
                n -= (size_t) k;
                off += (uint64_t) k;
        }
        return 0;
}

/* Read the used parts of the slot's chunk into its buffer; zero the rest.
 * Workers read their own chunks: the copy from the page cache (the largest
 * single cost of an incremental backup) then runs on every core instead of
 * one reader thread, and the bytes land in the cache of the core that
 * fingerprints, hashes and compresses them. */
static int read_slot(Job *j, Slot *s, KuraErr *err) {
        uint64_t start = s->start, end = s->start + s->len, pos = start;
        for (size_t k = s->ei; k < j->next && j->ext[k].off < end; k++) {
                uint64_t a = KURA_MAX(j->ext[k].off, start), b = KURA_MIN(j->ext[k].off + j->ext[k].len, end);
                if (a > pos)
                        memset(s->buf + (pos - start), 0, a - pos);
                int q = read_full(j->fd, s->buf + (a - start), b - a, a);
                if (q < 0)
                        return kura_err_errno(err, q, KURA_E_SOURCE_UNREADABLE,
                                              "check the device (dmesg, smartctl); kura stored nothing",
                                              "cannot read source %s at offset %llu", j->read_path,
                                              (unsigned long long) a);
                pos = b;
        }
        if (pos < end)
                memset(s->buf + (pos - start), 0, end - pos);
        return 0;
}

/* The whole-volume mapping of cached_match(), if any, goes with the volume. */
static void job_unmap(Job *j) {
        if (j->map)
                munmap((void *) j->map, (size_t) j->map_len);
        j->map = NULL;
        j->map_len = 0;
}

static bool cache_entry_usable(Job *j, const KuraFpEntry *old) {
        return !kura_id_is_zero(&old->id) && !kura_id_is_free(&old->id) && kura_repo_has(j->repo, &old->id);
}

/* An incremental backup mostly finds chunks unchanged: for those, copying
 * the chunk out of the page cache (read_slot()) costs several times more
 * than fingerprinting it.  So a chunk that the filesystem uses entirely and
 * that has a cache entry is first fingerprinted in place through a shared
 * read-only mapping; only a chunk that does not match is read and processed
 * as usual (fingerprint, ID and compression then all see the same copied
 * bytes, whatever happens to the source meanwhile).
 *
 * A mapping turns a read error into SIGBUS, so the mapping is used only when
 * every one of its pages is already in the page cache (mincore() after
 * MAP_POPULATE): reading resident pages does no I/O.  Anything else (not
 * resident, mmap unsupported) falls back to read_slot().  Returns true if
 * the chunk was recorded from the cache. */
static bool cached_match(Job *j, Slot *s) {
        if (!j->old_fp || j->rehash || !atomic_load_explicit(&j->map_ok, memory_order_relaxed))
                return false;
        const KuraFpEntry *old = &j->old_fp[s->index];
        const KuraExtent *e = s->ei < j->next ? &j->ext[s->ei] : NULL;
        uint64_t end = s->start + s->len;
        long pg = sysconf(_SC_PAGESIZE);
        if (!e || e->off > s->start || e->off + e->len < end || pg <= 0 || s->start % (uint64_t) pg ||
            kura_id_is_zero(&old->id) || kura_id_is_free(&old->id))
                return false;
        /* One mapping of the whole volume (mapped once: no mmap/munmap and no
         * TLB shootdown per chunk; pages are faulted in by the fingerprint
         * itself), else this chunk alone. */
        bool whole = j->map && end <= j->map_len;
        void *p = whole ? (void *) (j->map + s->start)
                        : mmap(NULL, s->len, PROT_READ, MAP_SHARED | MAP_POPULATE, j->fd, (off_t) s->start);
        if (p == MAP_FAILED) {
                atomic_store(&j->map_ok, false);
                return false;
        }
        size_t npages = (s->len + (size_t) pg - 1) / (size_t) pg;
        unsigned char vec[KURA_CHUNK_SIZE_MAX / 4096];
        bool resident = npages <= sizeof vec && mincore(p, s->len, vec) == 0;
        for (size_t k = 0; resident && k < npages; k++)
                resident = vec[k] & 1;
        bool hit = false;
        uint8_t fp[16];
        if (resident) {
                kura_fingerprint(j->fp_key, p, s->len, fp);
                hit = memcmp(old->fp, fp, sizeof fp) == 0;
        }
        if (!whole)
                munmap(p, s->len);
        else
                /* Drop this chunk's pages from our page tables (the page cache
                 * keeps them): the process's resident set stays small. */
                (void) madvise(p, s->len, MADV_DONTNEED);
        if (!hit || !cache_entry_usable(j, old))
                return false;
        /* A used chunk is never all zero in the cache: zero chunks have no entry. */
        j->ids[s->index] = old->id;
        j->new_fp[s->index] = *old;
        return true;
}

static int process_slot(Job *j, KuraRepoWorker *w, Slot *s, KuraErr *err) {
        KuraId id;
        if (cached_match(j, s))
                return 0;
        int rd = read_slot(j, s, err);
        if (rd < 0)
                return rd;
        if (all_zero(s->buf, s->len)) {
                j->ids[s->index] = KURA_ID_ZERO;
                memset(&j->new_fp[s->index], 0, sizeof(KuraFpEntry));
                atomic_fetch_add(&j->chunks_zero, 1);
                return 0;
        }
        uint8_t fp[16];
        kura_fingerprint(j->fp_key, s->buf, s->len, fp);
        const KuraFpEntry *old = j->old_fp ? &j->old_fp[s->index] : NULL;
        if (old && !j->rehash && memcmp(old->fp, fp, sizeof fp) == 0 && cache_entry_usable(j, old)) {
                /* Unchanged since the cached backup and still indexed. */
                id = old->id;
        } else {
                int r = kura_repo_hash(w, s->buf, s->len, &id);
                if (r < 0)
                        return kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot hash chunk");
                uint64_t stored = 0;
                r = kura_repo_put(w, KURA_BLOB_DATA, &id, s->buf, s->len, &stored, err);
                if (r < 0)
                        return r;
                if (r > 0) {
                        atomic_fetch_add(&j->bytes_new, s->len);
                        atomic_fetch_add(&j->bytes_stored, stored);
                        atomic_fetch_add(&j->chunks_new, 1);
                }
        }
        j->ids[s->index] = id;
        memcpy(j->new_fp[s->index].fp, fp, sizeof fp);
        j->new_fp[s->index].id = id;
        return 0;
}

typedef struct WorkerArg {
        Job *job;
        KuraRepoWorker *w;
} WorkerArg;

static void *worker_main(void *p) {
        WorkerArg *a = p;
        Job *j = a->job;
        for (;;) {
                pthread_mutex_lock(&j->mu);
                while (j->nwork == 0 && !j->reading_done && !j->failed)
                        pthread_cond_wait(&j->cv, &j->mu);
                if (j->failed || (j->nwork == 0 && j->reading_done)) {
                        pthread_mutex_unlock(&j->mu);
                        return NULL;
                }
                size_t sn = j->work[j->work_head];
                j->work_head = (j->work_head + 1) % j->nslots;
                j->nwork--;
                pthread_mutex_unlock(&j->mu);

                KuraErr e = {0};
                int r = process_slot(j, a->w, &j->slots[sn], &e);

                pthread_mutex_lock(&j->mu);
                if (r < 0)
                        job_fail(j, r, &e);
                j->freeq[j->nfree++] = sn;
                pthread_cond_broadcast(&j->cv);
                pthread_mutex_unlock(&j->mu);
        }
}

/* Take a free slot (blocking); NULL if the job failed. */
static Slot *get_free_slot(Job *j, size_t *ret_sn) {
        pthread_mutex_lock(&j->mu);
        while (j->nfree == 0 && !j->failed)
                pthread_cond_wait(&j->cv, &j->mu);
        if (j->failed) {
                pthread_mutex_unlock(&j->mu);
                return NULL;
        }
        size_t sn = j->freeq[--j->nfree];
        pthread_mutex_unlock(&j->mu);
        *ret_sn = sn;
        return &j->slots[sn];
}

static void queue_slot(Job *j, size_t sn) {
        pthread_mutex_lock(&j->mu);
        j->work[(j->work_head + j->nwork) % j->nslots] = sn;
        j->nwork++;
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
}

static const char *base_name(const char *path) {
        const char *s = strrchr(path, '/');
        return s ? s + 1 : path;
}

/* Newest version with a volume of the same filesystem UUID (else the same path). */
static int find_parent(KuraRepo *repo, const char *uuid, const char *path, char **ret_version) {
        KuraVersion **vs = NULL;
        size_t n = 0, damaged = 0;
        *ret_version = NULL;
        int r = kura_version_list(repo, true, &vs, &n, &damaged, NULL);
        if (r < 0)
                return 0; /* no parent: we still back up everything correctly */
        for (size_t i = n; i-- > 0 && !*ret_version;)
                for (size_t k = 0; k < vs[i]->nvolumes; k++) {
                        const KuraVolume *vol = &vs[i]->volumes[k];
                        bool match = uuid[0] ? strcmp(vol->uuid, uuid) == 0 : strcmp(vol->path, path) == 0;
                        if (match) {
                                *ret_version = strdup(vs[i]->id);
                                break;
                        }
                }
        kura_version_list_free(vs, n);
        return 0;
}

/* The chunk list of the parent's volume, if the parent version recorded
 * the snapshot `base` for it (so the provider's changed ranges are relative
 * to exactly the data the parent holds).  NULL otherwise. */
static KuraId *parent_chunks_for_base(KuraRepo *repo, KuraRepoWorker *w, const char *parent_id, const char *uuid,
                                      const char *path, uint64_t size, uint32_t cs, const char *base) {
        KuraVersion *pv = NULL;
        KuraId *ids = NULL;
        if (!parent_id || kura_version_find(repo, parent_id, &pv, NULL) < 0)
                return NULL;
        const KuraVolume *pvol = NULL;
        for (size_t k = 0; k < pv->nvolumes && !pvol; k++) {
                const KuraVolume *c = &pv->volumes[k];
                if (uuid[0] ? strcmp(c->uuid, uuid) == 0 : strcmp(c->path, path) == 0)
                        pvol = c;
        }
        bool ok = false;
        json_t *snaps = pv->extra ? json_object_get(pv->extra, "snapshots") : NULL;
        size_t k;
        json_t *e;
        if (pvol && pvol->size == size && pvol->chunk_size == cs && json_is_array(snaps))
                json_array_foreach(snaps, k, e) {
                        const char *vn = json_string_value(json_object_get(e, "volume"));
                        const char *sh = json_string_value(json_object_get(e, "shadow"));
                        if (vn && sh && !strcmp(vn, pvol->name) && !strcmp(sh, base))
                                ok = true;
                }
        if (ok && kura_volume_load_chunks(w, pvol, &ids, NULL) < 0)
                ids = NULL;
        kura_version_free(pv);
        return ids;
}

typedef struct VolumeRun {
        char *cache_key;
        KuraFpEntry *new_fp;
        uint64_t nchunks;
} VolumeRun;

/* src->path is the volume as the user named it; read_path is what to read
 * (a snapshot of it, or itself).  snap != NULL: the coordinator made the
 * volume consistent (or knowingly read it live), so no mount refusal here. */
static int backup_volume(Job *j, KuraRepoWorker *mainw, const KuraBackupOpts *o, const KuraBackupSource *src,
                         const char *read_path, KuraSnapSet *snap, size_t si, KuraVersion *v, VolumeRun *run,
                         const char *cache_dir, unsigned nthreads, KuraRepoWorker **workers, uint64_t *done_base,
                         uint64_t total, KuraErr *err) {
        KuraVolumeProbe probe, rprobe;
        int r = kura_volume_probe(src->path, &probe, err);
        if (r < 0)
                return r;
        if (strcmp(read_path, src->path) == 0)
                rprobe = probe;
        else if ((r = kura_volume_probe(read_path, &rprobe, err)) < 0)
                return r;
        if (!snap && probe.mounted_rw && !o->allow_mounted)
                return kura_err(err, EBUSY, KURA_E_SOURCE_MOUNTED,
                                "unmount it or remount it read-only (mount -o remount,ro), or pass --allow-mounted "
                                "for a crash-consistent image",
                                "source %s is mounted read-write at %s: its image would be torn", src->path,
                                probe.mountpoint);
        if (!snap && probe.mounted_rw)
                v->crash_consistent = true;
        if (rprobe.size < probe.size)
                return kura_err(err, EIO, KURA_E_SOURCE_UNREADABLE, "check the snapshot provider (kura shadows list)",
                                "snapshot %s of %s is smaller than the volume", read_path, src->path);

        const char *name = src->name ? src->name : base_name(src->path);
        for (size_t i = 0; i < v->nvolumes; i++)
                if (strcmp(v->volumes[i].name, name) == 0)
                        return kura_err(err, EINVAL, KURA_E_USAGE, "give each volume its own name with --name",
                                        "two volumes would be named '%s'", name);

        _cleanup_close_ int fd = open(read_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, errno == ENOENT ? KURA_E_SOURCE_NOT_FOUND : KURA_E_SOURCE_UNREADABLE,
                                      "check the path and that kura runs as root", "cannot open source %s", read_path);
        (void) posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        /* A filesystem that writes its metadata around the block device's page
         * cache (xfs) can leave stale pages there from an earlier read: drop
         * them so every byte comes from the device. */
        if (rprobe.is_blockdev)
                (void) ioctl(fd, BLKFLSBUF, 0);

        _cleanup_free_ KuraExtent *ext = NULL;
        size_t next = 0;
        const char *method = NULL;
        r = kura_usedmap_get(read_path, fd, &rprobe, &ext, &next, &method, err);
        if (r < 0)
                return r;

        char rp[PATH_MAX];
        const char *abs_path = src->record_path ? src->record_path : realpath(src->path, rp) ? rp : src->path;
        uint32_t cs = j->chunk_size;
        uint64_t nchunks = DIV_ROUND_UP(probe.size, cs);
        KuraVolume *vol = kura_version_add_volume(v, name, abs_path, probe.fs, probe.uuid, probe.label, probe.size, cs);
        if (!vol)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");

        _cleanup_free_ char *parent = NULL;
        find_parent(j->repo, probe.uuid, abs_path, &parent);
        if (!v->parent && parent)
                v->parent = strdup(parent);

        /* Change tracking (lvm-thin thin_delta, reflink extent maps): chunks
         * outside the changed ranges are the parent's, not read at all. */
        _cleanup_free_ KuraId *parent_ids = NULL;
        _cleanup_free_ KuraExtent *chg = NULL;
        size_t nchg = 0;
        char base[40];
        if (snap && parent && !o->rehash && kura_snapset_base_id(snap, si, base) == 0) {
                parent_ids = parent_chunks_for_base(j->repo, mainw, parent, probe.uuid, abs_path, probe.size, cs, base);
                if (parent_ids) {
                        r = kura_snapset_changed(snap, si, &chg, &nchg, err);
                        if (r == -ENODATA) {
                                free(parent_ids);
                                parent_ids = NULL;
                        } else if (r < 0)
                                return r;
                }
        }

        _cleanup_free_ KuraId *ids = calloc(nchunks ? nchunks : 1, sizeof(KuraId));
        KuraFpEntry *new_fp = calloc(nchunks ? nchunks : 1, sizeof(KuraFpEntry));
        if (!ids || !new_fp) {
                free(new_fp);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "use a larger --chunk-size", "out of memory");
        }
        run->new_fp = new_fp;
        run->nchunks = nchunks;
        run->cache_key = probe.uuid[0] ? kura_asprintf("uuid:%s:%s", probe.uuid, name)
                                       : kura_asprintf("path:%s:%s", abs_path, name);
        if (!run->cache_key)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");

        _cleanup_free_ KuraFpEntry *old_fp = NULL;
        if (!o->rehash) {
                r = kura_fpcache_load(cache_dir, kura_repo_id(j->repo), run->cache_key, cs, nchunks, &old_fp);
                if (r < 0)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }

        j->fd = fd;
        j->read_path = read_path;
        j->ext = ext;
        j->next = next;
        atomic_store(&j->map_ok, true);
        j->map = NULL;
        j->map_len = 0;
        if (old_fp && !o->rehash && probe.size > 0 && probe.size <= (uint64_t) SIZE_MAX) {
                void *m = mmap(NULL, (size_t) probe.size, PROT_READ, MAP_SHARED, fd, 0);
                if (m != MAP_FAILED) {
                        j->map = m;
                        j->map_len = probe.size;
                }
        }
        j->ids = ids;
        j->new_fp = new_fp;
        j->old_fp = old_fp;
        j->rehash = o->rehash;
        j->bytes_new = j->bytes_stored = j->chunks_new = j->chunks_zero = 0;
        j->reading_done = false;
        j->nwork = j->work_head = 0;
        j->nfree = 0;
        for (size_t i = 0; i < j->nslots; i++)
                j->freeq[j->nfree++] = i;

        pthread_t *tids = calloc(nthreads, sizeof *tids);
        WorkerArg *args = calloc(nthreads, sizeof *args);
        if (!tids || !args) {
                free(tids);
                free(args);
                job_unmap(j);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        unsigned started = 0;
        for (unsigned t = 0; t < nthreads; t++) {
                args[t] = (WorkerArg){.job = j, .w = workers[t]};
                if (pthread_create(&tids[t], NULL, worker_main, &args[t]) != 0)
                        break;
                started++;
        }

        uint64_t bytes_read = 0, chunks_free = 0, chunks_unchanged = 0;
        size_t ei = 0; /* cursor into the sorted extents */
        size_t ci = 0; /* cursor into the sorted changed ranges */
        double last_progress = 0, last_check = kura_mono();
        int rr = 0;
        KuraErr rerr = {0};
        if (started == 0)
                rr = kura_err(&rerr, EAGAIN, KURA_E_INTERNAL, "", "cannot start worker threads");
        for (uint64_t i = 0; i < nchunks && rr == 0; i++) {
                uint64_t start = i * cs, end = KURA_MIN(probe.size, start + cs);
                while (ei < next && ext[ei].off + ext[ei].len <= start)
                        ei++;
                if (ei >= next || ext[ei].off >= end) {
                        ids[i] = KURA_ID_FREE;
                        chunks_free++;
                        continue;
                }
                if (parent_ids) {
                        while (ci < nchg && chg[ci].off + chg[ci].len <= start)
                                ci++;
                        bool changed = ci < nchg && chg[ci].off < end;
                        if (!changed && !kura_id_is_free(&parent_ids[i])) {
                                ids[i] = parent_ids[i];
                                if (old_fp && !memcmp(&old_fp[i].id, &parent_ids[i], sizeof(KuraId)))
                                        new_fp[i] = old_fp[i];
                                chunks_unchanged++;
                                continue;
                        }
                }
                if (snap && kura_mono() - last_check >= 1.0) {
                        /* fsfreeze copy limit, COW space exhaustion: stop
                         * rather than store a torn image. */
                        last_check = kura_mono();
                        rr = kura_snapset_check_deadline(snap, &rerr);
                        if (rr < 0)
                                break;
                }
                size_t sn;
                Slot *s = get_free_slot(j, &sn);
                if (!s)
                        break;
                s->index = i;
                s->start = start;
                s->len = (size_t) (end - start);
                s->ei = ei;
                /* The worker reads the used parts (read_slot()). */
                for (size_t k = ei; k < next && ext[k].off < end; k++)
                        bytes_read += KURA_MIN(ext[k].off + ext[k].len, end) - KURA_MAX(ext[k].off, start);
                queue_slot(j, sn);

                if (o->progress) {
                        double now = kura_mono();
                        if (now - last_progress > 0.1 || i + 1 == nchunks) {
                                last_progress = now;
                                KuraProgress p = {.bytes_done = *done_base + end, .bytes_total = total,
                                                  .bytes_read = bytes_read, .bytes_new = j->bytes_new,
                                                  .volume = name};
                                o->progress(o->userdata, &p);
                        }
                }
        }

        pthread_mutex_lock(&j->mu);
        j->reading_done = true;
        if (rr < 0)
                job_fail(j, rr, &rerr);
        pthread_cond_broadcast(&j->cv);
        pthread_mutex_unlock(&j->mu);
        for (unsigned t = 0; t < started; t++)
                pthread_join(tids[t], NULL);
        free(tids);
        free(args);
        j->old_fp = NULL;
        job_unmap(j);
        if (j->failed) {
                if (err && !err->code && j->err.code)
                        *err = j->err;
                return j->error < 0 ? j->error : -EIO;
        }
        *done_base += probe.size;

        vol->bytes_read = bytes_read;
        vol->bytes_new = j->bytes_new;
        vol->bytes_stored = j->bytes_stored;
        vol->chunks_new = j->chunks_new;
        vol->chunks_zero = j->chunks_zero;
        vol->chunks_free = chunks_free;

        r = kura_volume_store_chunks(mainw, vol, ids, err);
        if (r < 0)
                return r;
        v->bytes_read += bytes_read;
        v->bytes_new += vol->bytes_new;
        v->bytes_stored += vol->bytes_stored;
        (void) method;
        return 0;
}

static int record_snapshot_info(KuraVersion *v, KuraSnapSet *snap, KuraErr *err) {
        json_t *extra = v->extra ? v->extra : json_object();
        if (!extra)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        v->extra = extra;
        _cleanup_free_ char *store = kura_snapset_store(snap);
        if (store) {
                json_t *w = json_loads(store, 0, NULL);
                if (!w || json_object_set_new(extra, "writers", w) < 0)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < kura_snapset_nvolumes(snap) && i < v->nvolumes; i++) {
                json_t *e = json_pack("{s:s, s:s}", "volume", v->volumes[i].name, "provider",
                                      kura_snapset_provider(snap, i));
                const char *sh = kura_snapset_shadow_id(snap, i);
                if (e && sh)
                        json_object_set_new(e, "shadow", json_string(sh));
                json_array_append_new(arr, e);
        }
        if (!arr || json_object_set_new(extra, "snapshots", arr) < 0)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        return 0;
}

int kura_backup_run(KuraRepo *repo, const KuraBackupOpts *o, KuraVersion **ret, KuraErr *err) {
        if (!o || o->nsources == 0)
                return kura_err(err, EINVAL, KURA_E_USAGE, "name a volume with --volume", "nothing to back up");
        uint32_t cs = o->chunk_size ? o->chunk_size : KURA_CHUNK_SIZE_DEFAULT;
        if (cs < KURA_CHUNK_SIZE_MIN || cs > KURA_CHUNK_SIZE_MAX || (cs & (cs - 1)))
                return kura_err(err, EINVAL, KURA_E_USAGE, "use a power of two from 256K to 8M",
                                "chunk size %u is not allowed", cs);
        double t0 = kura_mono();

        unsigned nthreads = o->threads;
        if (nthreads == 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                nthreads = n > 0 ? (unsigned) n : 1;
        }
        if (nthreads > 64)
                nthreads = 64;

        /* Probe every source first so a bad one fails before anything is stored. */
        uint64_t total = 0;
        for (size_t i = 0; i < o->nsources; i++) {
                KuraVolumeProbe p;
                int r = kura_volume_probe(o->sources[i].path, &p, err);
                if (r < 0)
                        return r;
                total += p.size;
        }

        Job j = {.repo = repo, .fp_key = kura_repo_fp_key(repo), .chunk_size = cs};
        pthread_mutex_init(&j.mu, NULL);
        pthread_cond_init(&j.cv, NULL);
        j.nslots = 2 * (size_t) nthreads + 2;
        j.slots = calloc(j.nslots, sizeof *j.slots);
        j.work = calloc(j.nslots, sizeof *j.work);
        j.freeq = calloc(j.nslots, sizeof *j.freeq);
        KuraRepoWorker **workers = calloc(nthreads, sizeof *workers);
        KuraRepoWorker *mainw = NULL;
        VolumeRun *runs = calloc(o->nsources, sizeof *runs);
        KuraVersion *v = kura_version_new();
        KuraSnapSet *snap = NULL;
        size_t nvol = o->nsources;
        int r = 0;
        if (!j.slots || !j.work || !j.freeq || !workers || !runs || !v) {
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                goto out;
        }
        for (size_t i = 0; i < j.nslots; i++) {
                /* Page-aligned, like the page cache it is copied from: the
                 * kernel's copy (rep movsb) runs several times slower when the
                 * destination is misaligned against the source (malloc's
                 * 16-byte offset made pread cost 2.4 of 11 CPU-seconds of a
                 * full backup on AMD EPYC; aligned: 0.3). */
                if (posix_memalign((void **) &j.slots[i].buf, 4096, cs) != 0)
                        j.slots[i].buf = NULL;
                if (!j.slots[i].buf) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "use a smaller --chunk-size", "out of memory");
                        goto out;
                }
        }
        r = kura_repo_worker_new(repo, &mainw);
        for (unsigned t = 0; t < nthreads && r >= 0; t++)
                r = kura_repo_worker_new(repo, &workers[t]);
        if (r < 0) {
                r = kura_err_errno(err, r, KURA_E_NO_MEMORY, "", "cannot set up the backup workers");
                goto out;
        }

        v->time_ns = kura_now_ns();
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        v->hostname = strdup(host);
        if (o->ntags) {
                v->tags = calloc(o->ntags, sizeof(char *));
                if (!v->tags || !v->hostname) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                        goto out;
                }
                for (size_t i = 0; i < o->ntags; i++) {
                        v->tags[i] = strdup(o->tags[i]);
                        if (!v->tags[i]) {
                                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                                goto out;
                        }
                        v->ntags++;
                }
        }

        /* The snapshot set: writers quiesced, every volume snapshotted at one
         * instant (or, for fsfreeze, kept frozen while it is read). */
        if (o->snapshot) {
                const char **paths = calloc(o->nsources, sizeof *paths);
                if (!paths) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                        goto out;
                }
                for (size_t i = 0; i < o->nsources; i++)
                        paths[i] = o->sources[i].path;
                const char *protect[4];
                size_t nprotect = 0;
                protect[nprotect++] = kura_repo_path(repo);
                if (o->cache_dir)
                        protect[nprotect++] = o->cache_dir;
                if (o->state_dir)
                        protect[nprotect++] = o->state_dir;
                KuraSnapOpts so = {
                        .config_dir = o->config_dir,
                        .state_dir = o->state_dir,
                        .provider = o->snapshot,
                        .writers = o->writers,
                        .backup_type = o->backup_type,
                        .add_writer_volumes = o->add_writer_volumes,
                        .allow_mounted = o->allow_mounted,
                        .fsfreeze_copy_limit_s = o->fsfreeze_limit_s,
                        .protect_paths = protect,
                        .nprotect = nprotect,
                };
                r = kura_snapset_create(&so, paths, o->nsources, &snap, err);
                free(paths);
                if (r < 0)
                        goto out;
                nvol = kura_snapset_nvolumes(snap);
                if (kura_snapset_crash_consistent(snap))
                        v->crash_consistent = true;
                if (nvol > o->nsources) {
                        /* --add-writer-volumes added some: give them runs too. */
                        VolumeRun *nr = realloc(runs, nvol * sizeof *runs);
                        if (!nr) {
                                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                                goto out;
                        }
                        runs = nr;
                        memset(runs + o->nsources, 0, (nvol - o->nsources) * sizeof *runs);
                        for (size_t i = o->nsources; i < nvol; i++) {
                                KuraVolumeProbe p;
                                if (kura_volume_probe(kura_snapset_volume(snap, i), &p, NULL) >= 0)
                                        total += p.size;
                        }
                }
        }

        uint64_t done = 0;
        for (size_t i = 0; i < nvol; i++) {
                KuraBackupSource src = i < o->nsources ? o->sources[i]
                                                       : (KuraBackupSource){.path = kura_snapset_volume(snap, i)};
                const char *read_path = snap ? kura_snapset_read_path(snap, i) : src.path;
                r = backup_volume(&j, mainw, o, &src, read_path, snap, i, v, &runs[i], o->cache_dir, nthreads, workers,
                                  &done, total, err);
                if (r < 0)
                        goto out;
        }

        /* Writers' backup data (e.g. PostgreSQL's backup label) and which
         * provider made each volume consistent go into the manifest. */
        if (snap) {
                r = kura_snapset_copy_done(snap, err);
                if (r < 0)
                        goto out;
                r = record_snapshot_info(v, snap, err);
                if (r < 0)
                        goto out;
        }

        if (o->extra_json) {
                if (!v->extra)
                        v->extra = json_object();
                if (!v->extra || json_object_update(v->extra, (json_t *) o->extra_json) < 0) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                        goto out;
                }
        }

        /* Packs, then the index naming them, then the manifest: an interruption
         * before the manifest is durable leaves no visible version. */
        r = kura_repo_flush(repo, err);
        if (r < 0)
                goto out;
        v->duration_s = kura_mono() - t0;
        r = kura_version_save(repo, v, err);
        if (r < 0)
                goto out;

        /* BackupComplete: the data is stored.  A writer failing here cannot
         * undo the version (VSS reports it the same way); it is reported. */
        if (snap) {
                r = kura_snapset_finish(snap, true, NULL, err);
                if (r < 0)
                        goto out;
        }

        /* Only now may the cache name the new chunks. */
        for (size_t i = 0; i < nvol; i++)
                (void) kura_fpcache_save(o->cache_dir, kura_repo_id(repo), runs[i].cache_key, cs, runs[i].nchunks,
                                         runs[i].new_fp);
        *ret = TAKE_PTR(v);
        r = 0;
out:
        if (j.slots)
                for (size_t i = 0; i < j.nslots; i++)
                        free(j.slots[i].buf);
        free(j.slots);
        free(j.work);
        free(j.freeq);
        if (workers)
                for (unsigned t = 0; t < nthreads; t++)
                        kura_repo_worker_free(workers[t]);
        free(workers);
        kura_repo_worker_free(mainw);
        kura_snapset_free(snap); /* aborts writers and thaws if not finished */
        if (runs)
                for (size_t i = 0; i < nvol; i++) {
                        free(runs[i].cache_key);
                        free(runs[i].new_fp);
                }
        free(runs);
        kura_version_free(v);
        pthread_mutex_destroy(&j.mu);
        pthread_cond_destroy(&j.cv);
        return r;
}
