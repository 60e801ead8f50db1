/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kura shadows list|create|delete: persistent snapshots and the ones kept by
 * backups for change tracking.  kura shadowstorage list: how much snapshot
 * (shadow) storage volumes use.  Like 'vssadmin list shadows' and
 * 'vssadmin list shadowstorage'.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kura/snap.h"

const char verb_shadows_help[] =
        "Usage: kura shadows list [--json]\n"
        "       kura shadows create [--provider auto|lvm-thin|lvm|reflink] VOLUME... [--json]\n"
        "       kura shadows delete ID|SET-ID [--json]\n"
        "\n"
        "list: the snapshots kura keeps: persistent ones made by 'create', and those a\n"
        "backup retained as the base of the next one's change tracking.\n"
        "create: one snapshot of each VOLUME (a shadow set); prints the set ID.\n"
        "delete: removes a snapshot, or every snapshot of a set.  Records live in\n"
        "$KURA_STATE_DIR/shadows.json.\n";

const char verb_shadowstorage_help[] = "Usage: kura shadowstorage list [VOLUME...] [--json]\n"
                                       "\n"
                                       "Snapshot (shadow) storage of the volumes (default: every known volume):\n"
                                       "used, allocated and maximum bytes, and the provider that owns it.\n";

enum { OPT_PROVIDER = OPT_VERB };

static const char *state_dir(const Cli *c) {
        return c->state_dir ? c->state_dir : "/var/lib/kura";
}

static int shadows_list(Cli *c, KuraErr *err) {
        _cleanup_free_ KuraShadowInfo *v = NULL;
        size_t n = 0;
        int r = kura_shadows_list(state_dir(c), &v, &n, err);
        if (r < 0)
                return r;
        if (c->json) {
                _cleanup_json_ json_t *a = json_array();
                char t[40];
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(
                                a, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "id", v[i].id, "set_id",
                                             v[i].set_id, "volume", v[i].volume, "device", v[i].device, "provider",
                                             v[i].provider, "created", cli_fmt_time_rfc3339(v[i].created_ns, t),
                                             "retained_for_backup", (int)v[i].retained_for_backup));
                _cleanup_json_ json_t *j = json_pack("{s:O}", "shadows", a);
                cli_json_print(j);
                return 0;
        }
        if (n == 0) {
                printf("No items found that satisfy the query.\n");
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                char t[32];
                printf("Contents of shadow copy set ID: {%s}\n", v[i].set_id);
                printf("   Shadow Copy ID: {%s}\n", v[i].id);
                printf("      Original Volume: %s\n", v[i].volume);
                printf("      Shadow Copy Volume: %s\n", v[i].device);
                printf("      Provider: '%s'\n", v[i].provider);
                printf("      Created: %s\n", cli_fmt_time_local(v[i].created_ns, t));
                printf("      Type: %s\n\n", v[i].retained_for_backup ? "retained by backup (change tracking)"
                                                                      : "persistent");
        }
        return 0;
}

int verb_shadows(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"provider", required_argument, NULL, OPT_PROVIDER},
                {},
        };
        const char *provider = NULL;
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0)
                if (r == OPT_PROVIDER)
                        provider = optarg;
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind >= argc)
                return cli_usage_error(err, "missing subcommand: list, create or delete");
        const char *sub = argv[optind++];
        if (provider && strcmp(sub, "create"))
                return cli_usage_error(err, "--provider only applies to 'shadows create'");

        if (!strcmp(sub, "list")) {
                if (optind < argc)
                        return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);
                return shadows_list(c, err);
        }
        if (!strcmp(sub, "create")) {
                if (optind >= argc)
                        return cli_usage_error(err, "shadows create: name at least one volume");
                char set[40];
                r = kura_shadows_create(state_dir(c), provider, (const char *const *)argv + optind,
                                        (size_t)(argc - optind), set, err);
                if (r < 0)
                        return r;
                if (c->json) {
                        _cleanup_json_ json_t *j = json_pack("{s:s}", "set_id", set);
                        cli_json_print(j);
                } else
                        printf("Successfully created shadow copy set\n   Shadow Copy Set ID: {%s}\n", set);
                return 0;
        }
        if (!strcmp(sub, "delete")) {
                if (optind >= argc)
                        return cli_usage_error(err, "shadows delete: name a shadow ID or shadow set ID");
                if (optind + 1 < argc)
                        return cli_usage_error(err, "unexpected argument '%s'", argv[optind + 1]);
                const char *id = argv[optind];
                /* accept the braces vssadmin prints */
                char buf[64];
                if (id[0] == '{' && strlen(id) < sizeof buf) {
                        snprintf(buf, sizeof buf, "%s", id + 1);
                        char *e = strchr(buf, '}');
                        if (e)
                                *e = 0;
                        id = buf;
                }
                r = kura_shadows_delete(state_dir(c), id, err);
                if (r < 0)
                        return r;
                if (c->json) {
                        _cleanup_json_ json_t *j = json_pack("{s:s}", "deleted", id);
                        cli_json_print(j);
                } else
                        printf("Deleted %s\n", id);
                return 0;
        }
        return cli_usage_error(err, "unknown subcommand '%s' (list, create, delete)", sub);
}

int verb_shadowstorage(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {},
        };
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0)
                ;
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind >= argc || strcmp(argv[optind], "list"))
                return cli_usage_error(err, "usage: kura shadowstorage list [VOLUME...]");
        optind++;
        /* shadowstorage_list reads retained shadows from KURA_STATE_DIR */
        if (c->state_dir)
                setenv("KURA_STATE_DIR", c->state_dir, 0);
        _cleanup_free_ KuraShadowStorage *v = NULL;
        size_t n = 0;
        r = kura_shadowstorage_list((const char *const *)argv + optind, (size_t)(argc - optind), &v, &n, err);
        if (r < 0)
                return r;
        if (c->json) {
                _cleanup_json_ json_t *a = json_array();
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:I, s:o}", "volume", v[i].volume,
                                                           "provider", v[i].provider, "used", (json_int_t)v[i].used,
                                                           "allocated", (json_int_t)v[i].allocated, "maximum",
                                                           v[i].maximum == UINT64_MAX
                                                                   ? json_null()
                                                                   : json_integer((json_int_t)v[i].maximum)));
                _cleanup_json_ json_t *j = json_pack("{s:O}", "shadowstorage", a);
                cli_json_print(j);
                return 0;
        }
        if (n == 0) {
                printf("No items found that satisfy the query.\n");
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                char u[32], al[32], mx[32];
                printf("Shadow Copy Storage association\n");
                printf("   For volume: %s\n", v[i].volume);
                printf("   Provider: '%s'\n", v[i].provider);
                printf("   Used Shadow Copy Storage space: %s\n", cli_fmt_size(v[i].used, u));
                printf("   Allocated Shadow Copy Storage space: %s\n", cli_fmt_size(v[i].allocated, al));
                printf("   Maximum Shadow Copy Storage space: %s\n\n",
                       v[i].maximum == UINT64_MAX ? "UNBOUNDED" : cli_fmt_size(v[i].maximum, mx));
        }
        return 0;
}
