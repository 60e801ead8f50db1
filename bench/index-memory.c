/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bench/index-memory: what the in-memory chunk index of lib/repo costs with
 * millions of entries.  Built and run by bench/index-memory.sh.
 *
 *   index-memory add  N   entries added one by one, as a backup session does
 *   index-memory bulk N   entries loaded pack by pack, as opening a repository does
 *   index-memory repo N   "add" into the index of a real (unencrypted) repository
 *                         created and opened in a temporary directory
 *
 * Entries have random IDs and 64 entries per pack (a 32 MiB pack of ~0.5 MiB
 * compressed 1 MiB chunks).  Prints one line of key=value pairs: RSS before and
 * after, peak RSS (VmHWM), heap bytes the index reports, bytes per entry,
 * insert rate, lookup rate for present and absent IDs (per CPU second).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "repo/repo-internal.h"

#define PER_PACK 64

static uint64_t rng_state;

static uint64_t rng(void) {
        /* splitmix64: fast, fixed sequence for a fixed seed */
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

static void id_for(uint64_t seed, uint64_t i, KuraId *id) {
        rng_state = seed ^ (i * 0xd1b54a32d192ed03ULL);
        for (size_t k = 0; k < sizeof id->b; k += 8) {
                uint64_t v = rng();
                memcpy(id->b + k, &v, 8);
        }
}

/* kB value of a "Name:" line of /proc/self/status */
static long status_kb(const char *name) {
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        long v = -1;
        size_t n = strlen(name);
        if (!f)
                return -1;
        while (fgets(line, sizeof line, f))
                if (!strncmp(line, name, n) && line[n] == ':') {
                        v = strtol(line + n + 1, NULL, 10);
                        break;
                }
        fclose(f);
        return v;
}

/* CPU time of the process, not wall time: the rates stay meaningful when
 * the machine is busy with other work. */
static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int fill_add(KuraIndex *idx, size_t n) {
        uint32_t pack = 0;
        for (size_t i = 0; i < n; i++) {
                if (i % PER_PACK == 0) {
                        KuraId pid;
                        id_for(0x9ac4, i / PER_PACK, &pid);
                        int r = kura_index_pack_number(idx, &pid, &pack);
                        if (r < 0)
                                return r;
                }
                KuraIndexEntry e = {
                        .pack = pack,
                        .offset = (uint32_t) (i % PER_PACK) * (512u << 10),
                        .type_length = kura_ie_pack_tl(KURA_BLOB_DATA, 300000 + (uint32_t) (i % 1000)),
                };
                id_for(1, i, &e.id);
                int r = kura_index_add(idx, &e);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int fill_bulk(KuraIndex *idx, size_t n) {
        KuraIndexEntry ents[PER_PACK];
        for (size_t i = 0; i < n; i += PER_PACK) {
                KuraPackEntries p = { .entries = ents, .n = 0 };
                id_for(0x9ac4, i / PER_PACK, &p.pack_id);
                for (size_t j = i; j < n && j < i + PER_PACK; j++) {
                        KuraIndexEntry *e = &ents[p.n++];
                        memset(e, 0, sizeof *e);
                        id_for(1, j, &e->id);
                        e->offset = (uint32_t) (j % PER_PACK) * (512u << 10);
                        e->type_length = kura_ie_pack_tl(KURA_BLOB_DATA, 300000 + (uint32_t) (j % 1000));
                }
                int r = kura_index_add_bulk(idx, &p);
                if (r < 0)
                        return r;
        }
        return kura_index_finish_bulk(idx);
}

int main(int argc, char **argv) {
        if (argc != 3) {
                fprintf(stderr, "usage: %s add|bulk|repo N\n", argv[0]);
                return 2;
        }
        const char *mode = argv[1];
        size_t n = strtoull(argv[2], NULL, 10);
        KuraRepo *repo = NULL;
        KuraIndex *idx = NULL, *own = NULL;
        char tmpl[] = "/tmp/kura-index-bench-XXXXXX";
        int r;

        if (!strcmp(mode, "repo")) {
                KuraErr err = { 0 };
                if (!mkdtemp(tmpl)) {
                        perror("mkdtemp");
                        return 1;
                }
                KuraRepoInitOpts io = { .encrypted = false };
                KuraRepoOpenOpts oo = { .lock = KURA_LOCK_SHARED };
                r = kura_repo_init(tmpl, &io, NULL, &err);
                if (r >= 0)
                        r = kura_repo_open(tmpl, &oo, &repo, &err);
                if (r < 0) {
                        fprintf(stderr, "repository in %s: %s (%s)\n", tmpl, err.message, strerror(-r));
                        return 1;
                }
                idx = repo->index;
        } else {
                r = kura_index_new(&own);
                if (r < 0) {
                        fprintf(stderr, "kura_index_new: %s\n", strerror(-r));
                        return 1;
                }
                idx = own;
        }

        long rss0 = status_kb("VmRSS");
        double t0 = now();
        if (!strcmp(mode, "bulk"))
                r = fill_bulk(idx, n);
        else
                r = fill_add(idx, n);
        double t1 = now();
        if (r < 0) {
                fprintf(stderr, "filling the index: %s\n", strerror(-r));
                return 1;
        }
        long rss1 = status_kb("VmRSS"), hwm = status_kb("VmHWM");
        if (kura_index_count(idx) != n) {
                fprintf(stderr, "index holds %zu entries, expected %zu\n", kura_index_count(idx), n);
                return 1;
        }

        /* lookups: every present ID once in a scattered order, then as many absent IDs */
        size_t stride = 1000003 % (n ? n : 1), found = 0, wrong = 0, ghosts = 0;
        double t2 = now();
        for (size_t k = 0, i = 0; k < n; k++, i = (i + stride) % n) {
                KuraId id;
                KuraIndexEntry e;
                id_for(1, i, &id);
                if (!kura_index_lookup(idx, &id, &e))
                        continue;
                found++;
                if (e.offset != (uint32_t) (i % PER_PACK) * (512u << 10) ||
                    kura_ie_length(&e) != 300000 + (uint32_t) (i % 1000))
                        wrong++;
        }
        double t3 = now();
        for (size_t i = 0; i < n; i++) {
                KuraId id;
                id_for(2, i, &id);
                if (kura_index_lookup(idx, &id, NULL))
                        ghosts++;
        }
        double t4 = now();

        printf("mode=%s entries=%zu packs=%zu rss_before_kib=%ld rss_after_kib=%ld hwm_kib=%ld "
               "index_heap_bytes=%zu bytes_per_entry_rss=%.1f bytes_per_entry_hwm=%.1f bytes_per_entry_heap=%.1f "
               "insert_per_s=%.0f lookup_hit_per_s=%.0f lookup_miss_per_s=%.0f found=%zu wrong=%zu ghosts=%zu\n",
               mode, n, kura_index_npacks(idx), rss0, rss1, hwm, kura_index_memory(idx),
               (double) (rss1 - rss0) * 1024 / (double) n, (double) (hwm - rss0) * 1024 / (double) n,
               (double) kura_index_memory(idx) / (double) n, (double) n / (t1 - t0), (double) n / (t3 - t2),
               (double) n / (t4 - t3), found, wrong, ghosts);

        kura_index_free(own);
        if (repo) {
                kura_repo_close(repo);
                char cmd[sizeof tmpl + 16];
                snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
                if (system(cmd) != 0)
                        fprintf(stderr, "could not remove %s\n", tmpl);
        }
        return found == n && wrong == 0 && ghosts == 0 ? 0 : 1;
}
