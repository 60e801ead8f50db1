/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura backup: back up volumes (block devices or image files) as one new version. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "kura/disk.h"

const char verb_backup_help[] = "Usage: kura backup --volume SRC [--name NAME] [--volume SRC2 [--name NAME2]]...\n"
                                "                   [--disk DEV]... [--all-critical [--root DIR]] [--crash-consistent]\n"
                                "                   [--tag TAG]... [--chunk-size SIZE] [--allow-mounted] [--rehash]\n"
                                "                   [--snapshot auto|PROVIDER|none] [--writers all|NAME,...|none]\n"
                                "                   [--backup-type copy|full] [--add-writer-volumes] [--threads N] [--json]\n"
                                "\n"
                                "Back up each SRC (a block device or an image file) into one new version.  Only\n"
                                "chunks the repository does not hold yet are stored.\n"
                                "\n"
                                "  --volume SRC       a volume to back up (repeatable)\n"
                                "  --name NAME        name of the preceding --volume (default: base name of SRC)\n"
                                "  --disk DEV         a whole disk (block device or image file) for bare-metal\n"
                                "                     recovery: its partition table, boot area and partitions\n"
                                "                     (volumes diskN-boot, diskNpM; swap recorded, not copied)\n"
                                "  --all-critical     every disk holding a critical volume (see kura critical)\n"
                                "  --root DIR         with --all-critical: the system whose root is DIR (default /)\n"
                                "  --crash-consistent read critical volumes live when no snapshot provider can take\n"
                                "                     them (the version is marked crash-consistent)\n"
                                "  --tag TAG          tag the version (repeatable)\n"
                                "  --chunk-size SIZE  256K to 8M, a power of two (default 1M)\n"
                                "  --allow-mounted    read a volume mounted read-write (crash-consistent copy)\n"
                                "  --rehash           ignore the fingerprint cache and hash every chunk\n"
                                "  --threads N        worker threads (default: number of CPUs)\n"
                                "  --snapshot P       auto (default), none, or a provider: lvm-thin, lvm, reflink,\n"
                                "                     fsfreeze (see kura providers); auto never picks fsfreeze\n"
                                "  --writers W        all (default), none, or NAME,NAME (see kura writers)\n"
                                "  --backup-type T    copy (default: writers change nothing) or full (writers may\n"
                                "                     truncate their logs after the backup)\n"
                                "  --add-writer-volumes  add the volumes the selected writers' data also lives on\n"
                                "  --fsfreeze-limit S longest time fsfreeze may keep a filesystem frozen (120)\n"
                                "\n"
                                "The fingerprint cache lives in $KURA_CACHE_DIR/fpcache (default /var/cache/kura).\n";

enum {
        OPT_VOLUME = OPT_VERB, OPT_NAME, OPT_TAG, OPT_CHUNK, OPT_ALLOW_MOUNTED, OPT_REHASH, OPT_THREADS,
        OPT_SNAPSHOT, OPT_WRITERS, OPT_BACKUP_TYPE, OPT_ADD_WRITER_VOLUMES, OPT_FSFREEZE_LIMIT,
        OPT_DISK, OPT_ALL_CRITICAL, OPT_ROOT, OPT_CRASH_CONSISTENT,
};

static void disk_backup_freep(KuraDiskBackup **d) {
        kura_disk_backup_free(*d);
}

/* The whole disks under the critical volumes of the system at root. */
static int critical_disks(const char *root, const char ***disks, size_t *ndisks, KuraErr *err) {
        KuraCritical *cr = NULL;
        size_t n = 0;
        int r = kura_critical_list(root, &cr, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++) {
                if ((cr[i].stack && strstr(cr[i].stack, "md")) ||
                    (cr[i].consistency && !strncmp(cr[i].consistency, "unsupported:", 12))) {
                        r = kura_err(err, ENOTSUP, KURA_E_DISK_LAYOUT,
                                     "back the array's volumes up with --volume; MD RAID bare-metal recovery is not "
                                     "supported yet",
                                     "critical volume %s (%s) is on MD RAID", cr[i].mountpoint, cr[i].device);
                        break;
                }
                char *save = NULL;
                _cleanup_free_ char *list = strdup(cr[i].disks ? cr[i].disks : "");
                for (char *t = list ? strtok_r(list, " ", &save) : NULL; t; t = strtok_r(NULL, " ", &save)) {
                        bool dup = false;
                        for (size_t k = 0; k < *ndisks; k++)
                                dup |= !strcmp((*disks)[k], t);
                        if (dup)
                                continue;
                        const char **nd = realloc(*disks, (*ndisks + 1) * sizeof *nd);
                        char *copy = strdup(t);
                        if (!nd || !copy) {
                                free(copy);
                                if (nd)
                                        *disks = nd;
                                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                                break;
                        }
                        *disks = nd;
                        (*disks)[(*ndisks)++] = copy;
                }
        }
        if (r >= 0 && *ndisks == 0)
                r = kura_err(err, ENOENT, KURA_E_DISK_LAYOUT, "run 'kura critical' to see what was found",
                             "no disk holds a critical volume of the system at %s", root);
        kura_critical_free(cr, n);
        return r;
}

/* mkdir -p with mode for the directories we create. */
static int mkdir_p(const char *path, mode_t mode) {
        char buf[4096];
        if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
                return -ENAMETOOLONG;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        struct stat st;
        if (stat(buf, &st) < 0)
                return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* The name the engine will give the volume: --name, else the base name. */
static const char *source_name(const KuraBackupSource *s) {
        if (s->name)
                return s->name;
        const char *b = strrchr(s->path, '/');
        return b ? b + 1 : s->path;
}

static void print_summary(const KuraVersion *v) {
        char a[32], b[32], d[32], e[32];
        uint64_t total = 0;
        printf("version %s\n", v->id);
        for (size_t i = 0; i < v->nvolumes; i++) {
                const KuraVolume *vol = &v->volumes[i];
                total += vol->size;
                printf("  volume %s  %s  fs %s  size %s\n", vol->name, vol->path, vol->fs && *vol->fs ? vol->fs : "-",
                       cli_fmt_size(vol->size, a));
                printf("    read %s, new %s, stored %s\n", cli_fmt_size(vol->bytes_read, a),
                       cli_fmt_size(vol->bytes_new, b), cli_fmt_size(vol->bytes_stored, d));
        }
        printf("total: read %s, new %s, stored %s\n", cli_fmt_size(v->bytes_read, a), cli_fmt_size(v->bytes_new, b),
               cli_fmt_size(v->bytes_stored, d));
        printf("duration %s, throughput %s", cli_fmt_duration(v->duration_s, a), cli_fmt_rate(total, v->duration_s, b));
        printf(" (read %s)\n", cli_fmt_rate(v->bytes_read, v->duration_s, e));
        if (v->crash_consistent)
                printf("note: read while mounted read-write: the copy is crash-consistent only\n");
}

int verb_backup(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"volume", required_argument, NULL, OPT_VOLUME},
                {"name", required_argument, NULL, OPT_NAME},
                {"tag", required_argument, NULL, OPT_TAG},
                {"chunk-size", required_argument, NULL, OPT_CHUNK},
                {"allow-mounted", no_argument, NULL, OPT_ALLOW_MOUNTED},
                {"rehash", no_argument, NULL, OPT_REHASH},
                {"threads", required_argument, NULL, OPT_THREADS},
                {"snapshot", required_argument, NULL, OPT_SNAPSHOT},
                {"writers", required_argument, NULL, OPT_WRITERS},
                {"backup-type", required_argument, NULL, OPT_BACKUP_TYPE},
                {"add-writer-volumes", no_argument, NULL, OPT_ADD_WRITER_VOLUMES},
                {"fsfreeze-limit", required_argument, NULL, OPT_FSFREEZE_LIMIT},
                {"disk", required_argument, NULL, OPT_DISK},
                {"all-critical", no_argument, NULL, OPT_ALL_CRITICAL},
                {"root", required_argument, NULL, OPT_ROOT},
                {"crash-consistent", no_argument, NULL, OPT_CRASH_CONSISTENT},
                {},
        };
        /* At most argc sources or tags: each takes at least one argument. */
        /* --volume sources, then the partitions of every disk (a few hundred at most). */
        _cleanup_free_ KuraBackupSource *src = calloc((size_t)argc + 1024, sizeof *src);
        _cleanup_free_ const char **tags = calloc((size_t)argc + 1, sizeof *tags);
        _cleanup_free_ const char **disks = calloc((size_t)argc + 1, sizeof *disks);
        size_t ndisks = 0;
        bool all_critical = false, crash_consistent = false;
        const char *root = "/";
        KuraBackupOpts o = {.snapshot = "auto"};
        uint64_t v;
        int r;

        if (!src || !tags || !disks)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory", "out of memory");
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                switch (r) {
                case OPT_VOLUME:
                        src[o.nsources++] = (KuraBackupSource){.path = optarg};
                        break;
                case OPT_NAME:
                        if (o.nsources == 0)
                                return cli_usage_error(err, "--name must follow the --volume it names");
                        if (src[o.nsources - 1].name)
                                return cli_usage_error(err, "--volume %s has two names", src[o.nsources - 1].path);
                        if (!*optarg || strchr(optarg, '/'))
                                return cli_usage_error(err, "--name '%s': a name must be non-empty and have no '/'",
                                                       optarg);
                        src[o.nsources - 1].name = optarg;
                        break;
                case OPT_TAG:
                        tags[o.ntags++] = optarg;
                        break;
                case OPT_CHUNK:
                        if ((r = cli_parse_size("--chunk-size", optarg, &v, err)) < 0)
                                return r;
                        if (v < KURA_CHUNK_SIZE_MIN || v > KURA_CHUNK_SIZE_MAX || (v & (v - 1)))
                                return cli_usage_error(err, "--chunk-size %s: must be a power of two from 256K to 8M",
                                                       optarg);
                        o.chunk_size = (uint32_t)v;
                        break;
                case OPT_ALLOW_MOUNTED:
                        o.allow_mounted = true;
                        break;
                case OPT_REHASH:
                        o.rehash = true;
                        break;
                case OPT_THREADS:
                        if ((r = cli_parse_uint("--threads", optarg, 1024, &v, err)) < 0)
                                return r;
                        o.threads = (unsigned)v;
                        break;
                case OPT_SNAPSHOT:
                        o.snapshot = optarg;
                        /* "none" said out loud: read a writable volume live (crash-consistent). */
                        if (!strcmp(optarg, "none"))
                                o.allow_mounted = true;
                        break;
                case OPT_WRITERS:
                        o.writers = optarg;
                        break;
                case OPT_BACKUP_TYPE:
                        if (strcmp(optarg, "copy") && strcmp(optarg, "full"))
                                return cli_usage_error(err, "--backup-type %s: use copy or full", optarg);
                        o.backup_type = optarg;
                        break;
                case OPT_ADD_WRITER_VOLUMES:
                        o.add_writer_volumes = true;
                        break;
                case OPT_DISK:
                        disks[ndisks++] = optarg;
                        break;
                case OPT_ALL_CRITICAL:
                        all_critical = true;
                        break;
                case OPT_ROOT:
                        root = optarg;
                        break;
                case OPT_CRASH_CONSISTENT:
                        crash_consistent = true;
                        break;
                case OPT_FSFREEZE_LIMIT:
                        if ((r = cli_parse_uint("--fsfreeze-limit", optarg, 86400, &v, err)) < 0)
                                return r;
                        o.fsfreeze_limit_s = (unsigned)v;
                        break;
                }
        }
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind < argc)
                return cli_usage_error(err, "unexpected argument '%s' (volumes are given with --volume)", argv[optind]);
        if (o.nsources == 0 && ndisks == 0 && !all_critical)
                return cli_usage_error(err, "name what to back up: --volume, --disk or --all-critical");
        if (crash_consistent) {
                o.allow_mounted = true;
                if (!strcmp(o.snapshot, "auto"))
                        o.snapshot = "none";
        }
        /* Whole disks: --disk as given, then those under the critical
         * volumes (each disk once). */
        const char **alldisks = NULL;
        size_t nall = 0;
        for (size_t i = 0; i < ndisks; i++) {
                const char **nd = realloc(alldisks, (nall + 1) * sizeof *nd);
                char *cp = strdup(disks[i]);
                if (!nd || !cp) {
                        free(cp);
                        free(nd ? nd : alldisks);
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                }
                alldisks = nd;
                alldisks[nall++] = cp;
        }
        if (all_critical && (r = critical_disks(root, &alldisks, &nall, err)) < 0) {
                for (size_t i = 0; i < nall; i++)
                        free((char *)alldisks[i]);
                free(alldisks);
                return r;
        }
        _cleanup_(disk_backup_freep) KuraDiskBackup *db = NULL;
        if (nall) {
                r = kura_disk_backup_prepare(alldisks, nall, 0, &db, err);
                for (size_t i = 0; i < nall; i++)
                        free((char *)alldisks[i]);
                free(alldisks);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < db->nsources; i++)
                        src[o.nsources++] = db->sources[i];
                o.extra_json = db->extra_json;
        }
        for (size_t i = 0; i < o.nsources; i++)
                for (size_t j = 0; j < i; j++)
                        if (!strcmp(source_name(&src[i]), source_name(&src[j])))
                                return cli_usage_error(err, "two volumes are named '%s': give one a --name",
                                                       source_name(&src[i]));
        o.sources = src;
        o.tags = tags;
        o.config_dir = c->config_dir;
        o.state_dir = c->state_dir;

        _cleanup_free_ char *cache = NULL;
        if (asprintf(&cache, "%s/fpcache", c->cache_dir) < 0)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory", "out of memory");
        r = mkdir_p(cache, 0700);
        if (r < 0)
                cli_warn(CLI_W_NO_CACHE, "cannot create fingerprint cache %s: %s; every chunk will be hashed", cache,
                         strerror(-r));
        else
                o.cache_dir = cache;

        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        r = cli_repo_open(c, KURA_LOCK_SHARED, &repo, err);
        if (r < 0)
                return r;

        CliProgress p;
        cli_progress_begin(&p);
        o.progress = cli_progress_job;
        o.userdata = &p;
        _cleanup_(cli_version_freep) KuraVersion *ver = NULL;
        KuraErr berr = {0};
        r = kura_backup_run(repo, &o, &ver, &berr);
        cli_progress_end(&p);
        if (r < 0 && all_critical && berr.code && !strcmp(berr.code, KURA_E_SOURCE_MOUNTED))
                return kura_err(err, -r, KURA_E_CRITICAL_LIVE,
                                "either pass --crash-consistent (read live; the version is marked crash-consistent), "
                                "or boot the kura rescue image and back the disks up offline",
                                "a critical volume cannot be kept still for the whole copy: %s", berr.message);
        if (r < 0) {
                if (err)
                        *err = berr;
                return r;
        }
        if (ver->crash_consistent && (all_critical || crash_consistent))
                cli_warn(KURA_W_CRASH_CONSISTENT,
                         "version %.12s was read from volumes in use without a snapshot: it is crash-consistent, like "
                         "a power cut",
                         ver->id);

        if (c->json) {
                _cleanup_json_ json_t *j = cli_json_version(ver);
                cli_json_print(j);
        } else
                print_summary(ver);
        return 0;
}
