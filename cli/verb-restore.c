/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura restore: write one volume of a version to a block device or file. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char verb_restore_help[] =
        "Usage: kura restore --version ID [--volume NAME] --volume-to DEST [--discard]\n"
        "                    [--ignore-damage] [--threads N] [--writers all|NAME,...|none]\n"
        "                    [--restore-type authoritative|non-authoritative] [--json]\n"
        "\n"
        "Restore volume NAME of version ID (a full ID, a unique prefix, or 'latest') to DEST,\n"
        "a block device (at least as large, not mounted) or a file (created or truncated).\n"
        "--volume may be left out when the version holds one volume.\n"
        "\n"
        "  --discard        discard free ranges instead of writing zeros (contents unspecified)\n"
        "  --ignore-damage  write zeros where chunks are damaged or missing, list those ranges,\n"
        "                   and exit with status 3\n"
        "  --writers W      none (default): no writer events.  all, or NAME,NAME (see kura writers):\n"
        "                   writers with a component on the volume or data stored in the version\n"
        "                   are sent pre-restore before DEST is touched (one that refuses stops\n"
        "                   the restore) and post-restore after it is written; a writer of the\n"
        "                   version that is not declared here is skipped and listed\n"
        "  --restore-type T non-authoritative (default: the data rejoins, and may be updated by,\n"
        "                   its replicas) or authoritative (the restored data wins); handed to\n"
        "                   the writers with a new restore generation ID, which is printed\n";

enum {
        OPT_VERSION_ID = OPT_VERB,
        OPT_VOLUME,
        OPT_VOLUME_TO,
        OPT_DISCARD,
        OPT_IGNORE_DAMAGE,
        OPT_THREADS,
        OPT_WRITERS,
        OPT_RESTORE_TYPE,
};

/* "a\nb: why" -> ["a", "b: why"] */
static json_t *split_list(const char *s) {
        json_t *a = json_array();
        for (const char *p = s; a && p && *p;) {
                const char *e = strchr(p, '\n');
                size_t l = e ? (size_t)(e - p) : strlen(p);
                json_array_append_new(a, json_stringn(p, l));
                p += l + (e ? 1 : 0);
        }
        return a;
}

int verb_restore(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"version", required_argument, NULL, OPT_VERSION_ID},
                {"volume", required_argument, NULL, OPT_VOLUME},
                {"volume-to", required_argument, NULL, OPT_VOLUME_TO},
                {"discard", no_argument, NULL, OPT_DISCARD},
                {"ignore-damage", no_argument, NULL, OPT_IGNORE_DAMAGE},
                {"threads", required_argument, NULL, OPT_THREADS},
                {"writers", required_argument, NULL, OPT_WRITERS},
                {"restore-type", required_argument, NULL, OPT_RESTORE_TYPE},
                {},
        };
        KuraRestoreOpts o = {0};
        uint64_t v;
        int r;

        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                switch (r) {
                case OPT_VERSION_ID:
                        o.version = optarg;
                        break;
                case OPT_VOLUME:
                        o.volume = optarg;
                        break;
                case OPT_VOLUME_TO:
                        o.target = optarg;
                        break;
                case OPT_DISCARD:
                        o.discard = true;
                        break;
                case OPT_IGNORE_DAMAGE:
                        o.ignore_damage = true;
                        break;
                case OPT_THREADS:
                        if ((r = cli_parse_uint("--threads", optarg, 1024, &v, err)) < 0)
                                return r;
                        o.threads = (unsigned)v;
                        break;
                case OPT_WRITERS:
                        o.writers = optarg;
                        break;
                case OPT_RESTORE_TYPE:
                        o.restore_type = optarg;
                        break;
                }
        }
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);
        if (!o.version)
                return cli_usage_error(err, "--version is required (an ID, a prefix, or 'latest')");
        if (!o.target)
                return cli_usage_error(err, "--volume-to is required");
        if (o.writers && !*o.writers)
                return cli_usage_error(err, "--writers needs all, none, or NAME,NAME");
        if (o.restore_type && strcmp(o.restore_type, "authoritative") && strcmp(o.restore_type, "non-authoritative"))
                return cli_usage_error(err, "--restore-type must be authoritative or non-authoritative, not '%s'",
                                       o.restore_type);
        o.config_dir = c->config_dir;
        o.state_dir = c->state_dir;

        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        r = cli_repo_open(c, KURA_LOCK_SHARED_OR_NONE, &repo, err);
        if (r < 0)
                return r;

        CliProgress p;
        cli_progress_begin(&p);
        o.progress = cli_progress_job;
        o.userdata = &p;
        KuraRestoreResult res = {0};
        r = kura_restore_run(repo, &o, &res, err);
        cli_progress_end(&p);
        if (r < 0) {
                kura_restore_result_clear(&res);
                return r;
        }

        if (res.ndamaged > 0) {
                /* One warning line naming every damaged range, so that a
                 * script can grep it and a human can map it to files. */
                _cleanup_free_ char *list = NULL;
                size_t len = 0;
                FILE *f = open_memstream(&list, &len);
                for (size_t i = 0; f && i < res.ndamaged; i++)
                        fprintf(f, "%s%" PRIu64 "+%" PRIu64, i ? " " : "", res.damaged[i].off, res.damaged[i].len);
                if (f)
                        fclose(f);
                cli_warn(KURA_W_DAMAGE_SKIPPED, "%zu damaged range%s of volume %s written as zeros (offset+length): %s",
                         res.ndamaged, res.ndamaged == 1 ? "" : "s", res.volume_name ? res.volume_name : "?",
                         list ? list : "");
        }

        if (c->json) {
                json_t *dmg = json_array();
                for (size_t i = 0; i < res.ndamaged; i++)
                        json_array_append_new(dmg, json_pack("{s:I, s:I}", "offset", (json_int_t)res.damaged[i].off,
                                                             "length", (json_int_t)res.damaged[i].len));
                _cleanup_json_ json_t *j = json_pack(
                        "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:f, s:o}", "version", res.version_id, "volume",
                        res.volume_name ? res.volume_name : "", "target", o.target, "size", (json_int_t)res.size,
                        "bytes_written", (json_int_t)res.bytes_written, "bytes_zeroed", (json_int_t)res.bytes_zeroed,
                        "bytes_discarded", (json_int_t)res.bytes_discarded, "duration", res.duration_s, "damaged", dmg);
                if (j && o.writers && strcmp(o.writers, "none")) {
                        json_object_set_new(j, "restore_type",
                                            json_string(o.restore_type ? o.restore_type : "non-authoritative"));
                        json_object_set_new(j, "generation_id",
                                            res.generation_id[0] ? json_string(res.generation_id) : json_null());
                        json_object_set_new(j, "writers", split_list(res.writers));
                        json_object_set_new(j, "writers_skipped", split_list(res.writers_skipped));
                }
                cli_json_print(j);
        } else {
                char a[32], b[32], d[32];
                printf("restored volume %s of version %.12s to %s (%s)\n", res.volume_name ? res.volume_name : "?",
                       res.version_id, o.target, cli_fmt_size(res.size, a));
                printf("  written %s, zeroed %s", cli_fmt_size(res.bytes_written, a),
                       cli_fmt_size(res.bytes_zeroed, b));
                if (res.bytes_discarded)
                        printf(", discarded %s", cli_fmt_size(res.bytes_discarded, d));
                printf("\n  duration %s, throughput %s\n", cli_fmt_duration(res.duration_s, a),
                       cli_fmt_rate(res.size, res.duration_s, b));
                if (res.writers) {
                        printf("  %s restore, writers:", o.restore_type ? o.restore_type : "non-authoritative");
                        for (const char *q = res.writers; *q;) {
                                size_t l = strcspn(q, "\n");
                                printf("%s %.*s", q == res.writers ? "" : ",", (int)l, q);
                                q += l + (q[l] ? 1 : 0);
                        }
                        printf("\n  restore generation ID %s\n", res.generation_id);
                }
                for (const char *q = res.writers_skipped; q && *q;) {
                        size_t l = strcspn(q, "\n");
                        printf("  writer skipped: %.*s\n", (int)l, q);
                        q += l + (q[l] ? 1 : 0);
                }
        }
        int status = res.ndamaged > 0 ? CLI_EXIT_DAMAGE : CLI_EXIT_OK;
        kura_restore_result_clear(&res);
        return status;
}
