/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura forget ID... [--prune], kura prune: delete versions and unused data. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char verb_forget_help[] = "Usage: kura forget ID... [--prune] [--json]\n"
                                "\n"
                                "Delete the given versions (full IDs or unique prefixes).  Their data stays in\n"
                                "the repository until 'kura prune' (or --prune) removes what no version uses.\n"
                                "Takes the exclusive lock.\n";

const char verb_prune_help[] = "Usage: kura prune [--json]\n"
                               "\n"
                               "Delete data no version references: unused packs are deleted, partly used ones\n"
                               "repacked, index files rewritten, leftovers of interrupted backups removed.\n"
                               "Takes the exclusive lock.  Safe to interrupt.\n";

enum { OPT_PRUNE = OPT_VERB };

static json_t *prune_json(const KuraPruneStats *s) {
        return json_pack("{s:I, s:I, s:I, s:I, s:I}", "packs_deleted", (json_int_t)s->packs_deleted, "packs_rewritten",
                         (json_int_t)s->packs_rewritten, "blobs_deleted", (json_int_t)s->blobs_deleted, "bytes_freed",
                         (json_int_t)s->bytes_freed, "leftovers_removed", (json_int_t)s->leftovers_removed);
}

static void prune_print(const KuraPruneStats *s) {
        char b[32];
        printf("pruned: %" PRIu64 " packs deleted, %" PRIu64 " packs rewritten, %" PRIu64
               " blobs deleted, %s freed, %" PRIu64 " leftovers removed\n",
               s->packs_deleted, s->packs_rewritten, s->blobs_deleted, cli_fmt_size(s->bytes_freed, b),
               s->leftovers_removed);
}

static int no_args_opts(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {},
        };
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0)
                ;
        if (r < 0)
                return r;
        if (!c->help_shown && optind < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);
        return 0;
}

int verb_prune(Cli *c, int argc, char **argv, KuraErr *err) {
        int r = no_args_opts(c, argc, argv, err);
        if (r < 0 || c->help_shown)
                return r;
        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        r = cli_repo_open(c, KURA_LOCK_EXCLUSIVE, &repo, err);
        if (r < 0)
                return r;
        KuraPruneStats st = {0};
        r = kura_repo_prune(repo, &st, err);
        if (r < 0)
                return r;
        /* Restore-test records of versions that are gone (repository.md §11). */
        (void)kura_verify_records_prune(repo, NULL, NULL);
        if (c->json) {
                _cleanup_json_ json_t *j = json_pack("{s:o}", "prune", prune_json(&st));
                cli_json_print(j);
        } else
                prune_print(&st);
        return 0;
}

int verb_forget(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"prune", no_argument, NULL, OPT_PRUNE},
                {},
        };
        bool prune = false;
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0)
                if (r == OPT_PRUNE)
                        prune = true;
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind >= argc)
                return cli_usage_error(err, "forget needs at least one version ID");

        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        r = cli_repo_open(c, KURA_LOCK_EXCLUSIVE, &repo, err);
        if (r < 0)
                return r;

        /* Resolve every ID first, so that a typo in the third one does not
         * leave the first two forgotten. */
        size_t n = (size_t)(argc - optind);
        _cleanup_free_ char(*ids)[2 * KURA_ID_LEN + 1] = calloc(n, sizeof *ids);
        if (!ids)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory", "out of memory");
        for (size_t i = 0; i < n; i++) {
                _cleanup_(cli_version_freep) KuraVersion *v = NULL;
                r = kura_version_find(repo, argv[optind + (int)i], &v, err);
                if (r < 0)
                        return r;
                memcpy(ids[i], v->id, sizeof ids[i]);
        }
        _cleanup_json_ json_t *forgotten = json_array();
        for (size_t i = 0; i < n; i++) {
                bool dup = false;
                for (size_t k = 0; k < i; k++)
                        dup = dup || !strcmp(ids[k], ids[i]);
                if (dup)
                        continue;
                r = kura_version_forget(repo, ids[i], err);
                if (r < 0)
                        return r;
                (void)kura_verify_record_forget(repo, ids[i], NULL);
                if (c->json)
                        json_array_append_new(forgotten, json_string(ids[i]));
                else
                        printf("forgot version %s\n", ids[i]);
        }
        KuraPruneStats st = {0};
        if (prune) {
                r = kura_repo_prune(repo, &st, err);
                if (r < 0)
                        return r;
                if (!c->json)
                        prune_print(&st);
        }
        if (c->json) {
                _cleanup_json_ json_t *j =
                        json_pack("{s:O, s:o}", "forgotten", forgotten, "prune", prune ? prune_json(&st) : json_null());
                cli_json_print(j);
        }
        return 0;
}
