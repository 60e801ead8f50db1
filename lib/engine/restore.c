/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The restore job.  The whole chunk list is loaded (and so verified) before
 * the target is touched.  Runs of ZERO chunks are zeroed and runs of FREE
 * chunks zeroed or discarded by the calling thread; worker threads fetch the
 * data chunks (every byte authenticated and its chunk ID recomputed inside
 * kura_repo_get) and pwrite them.  Unverified bytes are never written: a
 * damaged chunk stops the job, or with ignore_damage is zero-filled and
 * reported.
 *
 * With writers (o->writers other than NULL/"none") the coordinator sends
 * pre-restore once the chunk list is verified and before the target is
 * opened (a writer that refuses leaves the target untouched), and
 * post-restore after the target is closed; abort if the restore fails.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "common/kcommon.h"
#include "engine-internal.h"
#include "kura/engine.h"
#include "kura/snap.h"

typedef struct RJob {
        KuraRepo *repo;
        KuraTarget *t;
        const KuraId *ids;
        uint64_t nchunks, size;
        uint32_t cs;
        bool ignore_damage;
        _Atomic uint64_t next;
        _Atomic uint64_t written;
        _Atomic bool failed;
        pthread_mutex_t mu;
        int error;
        KuraErr err;
        KuraExtent *damaged;
        size_t ndamaged, cdamaged;
        const KuraRestoreOpts *o;
        const char *volume;
} RJob;

/* The prefetcher keeps the kernel reading pack bytes PREFETCH_AHEAD chunks
 * ahead of the workers.  Without it a cold repository (a backup disk, a
 * share) is read one synchronous pread at a time: the workers take
 * alternate chunks, so each pack file sees a strided pattern that the
 * kernel's sequential readahead does not recognise. */
#define PREFETCH_AHEAD 64

typedef struct RPrefetch {
        struct RJob *j;
        KuraRepoWorker *w;
        _Atomic bool stop;
} RPrefetch;

typedef struct RWorker {
        RJob *j;
        KuraRepoWorker *w;
        uint8_t *buf;
} RWorker;

static void rjob_fail(RJob *j, int r, const KuraErr *e) {
        pthread_mutex_lock(&j->mu);
        if (!j->failed) {
                j->failed = true;
                j->error = r;
                if (e && e->code)
                        j->err = *e;
        }
        pthread_mutex_unlock(&j->mu);
}

static int add_damage(RJob *j, uint64_t off, uint64_t len) {
        pthread_mutex_lock(&j->mu);
        int r = 0;
        if (j->ndamaged > 0 && j->damaged[j->ndamaged - 1].off + j->damaged[j->ndamaged - 1].len == off) {
                j->damaged[j->ndamaged - 1].len += len;
        } else {
                if (j->ndamaged == j->cdamaged) {
                        size_t nc = j->cdamaged ? 2 * j->cdamaged : 16;
                        KuraExtent *n = realloc(j->damaged, nc * sizeof *n);
                        if (!n) {
                                r = -ENOMEM;
                                goto out;
                        }
                        j->damaged = n;
                        j->cdamaged = nc;
                }
                j->damaged[j->ndamaged++] = (KuraExtent){off, len};
        }
out:
        pthread_mutex_unlock(&j->mu);
        return r;
}

static void *rworker_main(void *p) {
        RWorker *rw = p;
        RJob *j = rw->j;
        for (;;) {
                if (j->failed)
                        return NULL;
                uint64_t i = atomic_fetch_add(&j->next, 1);
                if (i >= j->nchunks)
                        return NULL;
                const KuraId *id = &j->ids[i];
                if (kura_id_is_zero(id) || kura_id_is_free(id))
                        continue;
                uint64_t off = i * j->cs;
                size_t want = (size_t) KURA_MIN((uint64_t) j->cs, j->size - off);
                size_t len = 0;
                KuraErr e = {0};
                int r = kura_repo_get(rw->w, id, rw->buf, &len, &e);
                if (r >= 0 && len != want) {
                        char hex[2 * KURA_ID_LEN + 1];
                        kura_id_hex(id, hex);
                        r = kura_err(&e, EBADMSG, KURA_E_DAMAGED, "run `kura check --read-data`",
                                     "chunk %s has %zu bytes, the volume needs %zu at offset %llu", hex, len, want,
                                     (unsigned long long) off);
                }
                if (r < 0) {
                        bool damage = e.code && strcmp(e.code, KURA_E_DAMAGED) == 0;
                        if (damage && j->ignore_damage) {
                                int q = kura_target_zero(j->t, off, want, &e);
                                if (q >= 0)
                                        q = add_damage(j, off, want);
                                if (q < 0) {
                                        rjob_fail(j, q, &e);
                                        return NULL;
                                }
                                continue;
                        }
                        rjob_fail(j, r, &e);
                        return NULL;
                }
                r = kura_target_write(j->t, off, rw->buf, len, &e);
                if (r < 0) {
                        rjob_fail(j, r, &e);
                        return NULL;
                }
                atomic_fetch_add(&j->written, len);
        }
}

static void *rprefetch_main(void *p) {
        RPrefetch *pf = p;
        RJob *j = pf->j;
        uint64_t i = 0;
        while (!atomic_load(&pf->stop) && !j->failed && i < j->nchunks) {
                uint64_t next = atomic_load(&j->next), until = next + PREFETCH_AHEAD;
                if (i < next)
                        i = next;
                if (i >= until) {
                        usleep(2000);
                        continue;
                }
                for (; i < until && i < j->nchunks; i++)
                        if (!kura_id_is_zero(&j->ids[i]) && !kura_id_is_free(&j->ids[i]))
                                kura_repo_prefetch(pf->w, &j->ids[i]);
        }
        return NULL;
}

static int cmp_extent(const void *a, const void *b) {
        const KuraExtent *x = a, *y = b;
        return x->off < y->off ? -1 : x->off > y->off;
}

static int select_volume(const KuraVersion *v, const char *spec, const KuraVolume **ret, KuraErr *err) {
        if (!spec) {
                if (v->nvolumes == 1) {
                        *ret = &v->volumes[0];
                        return 0;
                }
                char names[512] = "";
                for (size_t i = 0; i < v->nvolumes; i++) {
                        size_t l = strlen(names);
                        snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", v->volumes[i].name);
                }
                return kura_err(err, EINVAL, KURA_E_VOLUME_REQUIRED, "choose one with --volume NAME",
                                "version %.12s holds %zu volumes (%s)", v->id, v->nvolumes, names);
        }
        for (size_t i = 0; i < v->nvolumes; i++)
                if (strcmp(v->volumes[i].name, spec) == 0) {
                        *ret = &v->volumes[i];
                        return 0;
                }
        for (size_t i = 0; i < v->nvolumes; i++)
                if (strcmp(v->volumes[i].path, spec) == 0 || (v->volumes[i].uuid[0] && strcmp(v->volumes[i].uuid, spec) == 0)) {
                        *ret = &v->volumes[i];
                        return 0;
                }
        return kura_err(err, ENOENT, KURA_E_VOLUME_NOT_FOUND, "list the volumes with `kura versions`",
                        "version %.12s holds no volume named '%s'", v->id, spec);
}

/* pre-restore to the writers (writer-protocol.md §5): the version's stored
 * `writers` object is handed back; the volumes are the path the volume had
 * at backup time and the target (a writer with data on either takes part). */
static int writers_begin(const KuraRestoreOpts *o, const KuraVersion *v, const KuraVolume *vol,
                         KuraRestoreResult *res, KuraSnapRestore **ret, KuraErr *err) {
        json_t *stored = v->extra ? json_object_get((json_t *) v->extra, "writers") : NULL;
        _cleanup_free_ char *store = json_is_object(stored) ? json_dumps(stored, JSON_COMPACT) : NULL;
        const char *vols[2] = {vol->path, o->target};
        size_t n = 0;
        if (vol->path && *vol->path)
                vols[n++] = vol->path;
        if (n == 0 || strcmp(vol->path, o->target) != 0)
                vols[n++] = o->target;
        KuraSnapOpts so = {.config_dir = o->config_dir, .state_dir = o->state_dir, .writers = o->writers};
        int r = kura_snaprestore_begin(&so, o->restore_type, store, vols, n, ret, err);
        if (r < 0)
                return r;
        char *list = NULL, *skipped = NULL;
        size_t ll = 0, sl = 0;
        FILE *f = open_memstream(&list, &ll);
        FILE *g = open_memstream(&skipped, &sl);
        if (!f || !g) {
                if (f)
                        fclose(f);
                free(list);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        const char *name, *why;
        for (size_t i = 0; (name = kura_snaprestore_writer(*ret, i)); i++)
                fprintf(f, "%s%s", i ? "\n" : "", name);
        for (size_t i = 0; (name = kura_snaprestore_skipped(*ret, i, &why)); i++)
                fprintf(g, "%s%s: %s", i ? "\n" : "", name, why);
        fclose(f);
        fclose(g);
        if (ll > 0) {
                res->writers = list;
                snprintf(res->generation_id, sizeof res->generation_id, "%s", kura_snaprestore_generation_id(*ret));
        } else
                free(list);
        if (sl > 0)
                res->writers_skipped = skipped;
        else
                free(skipped);
        return 0;
}

int kura_restore_run(KuraRepo *repo, const KuraRestoreOpts *o, KuraRestoreResult *res, KuraErr *err) {
        memset(res, 0, sizeof *res);
        if (!o || !o->target)
                return kura_err(err, EINVAL, KURA_E_USAGE, "name the target with --volume-to", "no restore target");
        double t0 = kura_mono();
        KuraVersion *v = NULL;
        int r = kura_version_find(repo, o->version ? o->version : "latest", &v, err);
        if (r < 0)
                return r;
        const KuraVolume *vol = NULL;
        KuraId *ids = NULL;
        KuraRepoWorker *mainw = NULL;
        KuraTarget *t = NULL;
        RWorker *rws = NULL;
        pthread_t *tids = NULL;
        unsigned nthreads = o->threads;
        RJob j = {0};
        KuraSnapRestore *sr = NULL;
        pthread_mutex_init(&j.mu, NULL);

        r = select_volume(v, o->volume, &vol, err);
        if (r < 0)
                goto out;
        snprintf(res->version_id, sizeof res->version_id, "%s", v->id);
        res->volume_name = strdup(vol->name);
        res->size = vol->size;

        r = kura_repo_worker_new(repo, &mainw);
        if (r < 0) {
                r = kura_err_errno(err, r, KURA_E_NO_MEMORY, "", "cannot set up the restore");
                goto out;
        }
        /* Verify the whole chunk list before touching the target. */
        r = kura_volume_load_chunks(mainw, vol, &ids, err);
        if (r < 0)
                goto out;
        if (o->writers && strcmp(o->writers, "none") != 0) {
                r = writers_begin(o, v, vol, res, &sr, err);
                if (r < 0)
                        goto out;
        }
        r = kura_target_open(o->target, vol->size, &t, err);
        if (r < 0)
                goto out;

        /* Zero and free runs first (cheap, coalesced). */
        for (uint64_t i = 0; i < vol->nchunks;) {
                bool zero = kura_id_is_zero(&ids[i]), fr = kura_id_is_free(&ids[i]);
                if (!zero && !fr) {
                        i++;
                        continue;
                }
                uint64_t k = i + 1;
                while (k < vol->nchunks && kura_id_is_zero(&ids[k]) == zero && kura_id_is_free(&ids[k]) == fr)
                        k++;
                uint64_t off = i * vol->chunk_size, end = KURA_MIN(vol->size, k * vol->chunk_size);
                if (fr && o->discard) {
                        r = kura_target_discard(t, off, end - off, err);
                        res->bytes_discarded += end - off;
                } else {
                        r = kura_target_zero(t, off, end - off, err);
                        res->bytes_zeroed += end - off;
                }
                if (r < 0)
                        goto out;
                i = k;
        }

        if (nthreads == 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                nthreads = n > 0 ? (unsigned) n : 1;
        }
        if (nthreads > 64)
                nthreads = 64;
        j = (RJob){.repo = repo, .t = t, .ids = ids, .nchunks = vol->nchunks, .size = vol->size,
                   .cs = vol->chunk_size, .ignore_damage = o->ignore_damage, .o = o, .volume = vol->name};
        pthread_mutex_init(&j.mu, NULL);
        rws = calloc(nthreads, sizeof *rws);
        tids = calloc(nthreads, sizeof *tids);
        if (!rws || !tids) {
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                goto out;
        }
        unsigned started = 0;
        for (unsigned i = 0; i < nthreads; i++) {
                rws[i].j = &j;
                /* Page-aligned, so the target can write it with O_DIRECT. */
                if (posix_memalign((void **) &rws[i].buf, 4096, KURA_BLOB_MAX) != 0)
                        rws[i].buf = NULL;
                if (!rws[i].buf || kura_repo_worker_new(repo, &rws[i].w) < 0)
                        break;
                if (pthread_create(&tids[i], NULL, rworker_main, &rws[i]) != 0)
                        break;
                started++;
        }
        if (started == 0) {
                r = kura_err(err, EAGAIN, KURA_E_INTERNAL, "", "cannot start restore threads");
                goto out;
        }
        /* Best effort: a restore without the prefetcher is only slower. */
        RPrefetch pf = {.j = &j};
        pthread_t pft;
        bool pf_started = kura_repo_worker_new(repo, &pf.w) >= 0 &&
                          pthread_create(&pft, NULL, rprefetch_main, &pf) == 0;
        /* Progress from this thread while the workers run. */
        while (o->progress) {
                uint64_t n = atomic_load(&j.next);
                if (n > vol->nchunks)
                        n = vol->nchunks;
                KuraProgress p = {.bytes_done = KURA_MIN(vol->size, n * vol->chunk_size), .bytes_total = vol->size,
                                  .bytes_read = j.written, .volume = vol->name};
                o->progress(o->userdata, &p);
                if (n >= vol->nchunks || j.failed)
                        break;
                usleep(100000);
        }
        for (unsigned i = 0; i < started; i++)
                pthread_join(tids[i], NULL);
        atomic_store(&pf.stop, true);
        if (pf_started)
                pthread_join(pft, NULL);
        kura_repo_worker_free(pf.w);
        if (j.failed) {
                if (err && !err->code && j.err.code)
                        *err = j.err;
                r = j.error < 0 ? j.error : -EIO;
                goto out;
        }
        r = kura_target_close(t, err);
        t = NULL;
        if (r < 0)
                goto out;
        /* The data is on the target: the writers may start their applications. */
        r = kura_snaprestore_finish(sr, true, err);
        if (r < 0)
                goto out;
        res->bytes_written = j.written;
        if (j.ndamaged)
                qsort(j.damaged, j.ndamaged, sizeof *j.damaged, cmp_extent);
        res->damaged = TAKE_PTR(j.damaged);
        res->ndamaged = j.ndamaged;
        res->duration_s = kura_mono() - t0;
        r = 0;
out:
        if (rws)
                for (unsigned i = 0; i < nthreads; i++) {
                        kura_repo_worker_free(rws[i].w);
                        free(rws[i].buf);
                }
        free(rws);
        free(tids);
        free(j.damaged);
        kura_target_abort(t);
        /* The restore failed: writers that took pre-restore are sent abort. */
        (void) kura_snaprestore_finish(sr, false, NULL);
        kura_snaprestore_free(sr);
        kura_repo_worker_free(mainw);
        free(ids);
        kura_version_free(v);
        pthread_mutex_destroy(&j.mu);
        return r;
}

void kura_restore_result_clear(KuraRestoreResult *r) {
        if (!r)
                return;
        free(r->volume_name);
        free(r->damaged);
        free(r->writers);
        free(r->writers_skipped);
        memset(r, 0, sizeof *r);
}
