/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura key add|list|remove: the passphrases (key slots) of a repository. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char verb_key_help[] = "Usage: kura key add [--kdf-memory SIZE] [--kdf-passes N] [--new-password-file FILE]\n"
                             "       kura key list [--json]\n"
                             "       kura key remove ID\n"
                             "\n"
                             "Key slots wrap the repository's master key under a passphrase.  'add' opens the\n"
                             "repository with an existing passphrase (KURA_PASSWORD, --password-file or a prompt)\n"
                             "and adds a new one (KURA_NEW_PASSWORD, --new-password-file, or asked twice).\n"
                             "'remove' refuses to remove the last slot.\n";

enum { OPT_KDF_MEM = OPT_VERB, OPT_KDF_PASSES, OPT_NEW_PW_FILE };

static int key_add(Cli *c, uint64_t kdf_mem, uint32_t kdf_passes, const char *new_pw_file, KuraErr *err) {
        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        int r = cli_repo_open(c, KURA_LOCK_SHARED, &repo, err);
        if (r < 0)
                return r;
        if (!kura_repo_encrypted(repo))
                return kura_err(err, EINVAL, KURA_E_KEY_SLOT, "unencrypted repositories have no passphrases",
                                "repository %s is not encrypted", kura_repo_path(repo));
        char *pw = NULL;
        r = cli_new_password("KURA_NEW_PASSWORD", new_pw_file, "New passphrase", &pw, err);
        if (r < 0)
                return r;
        char id[17] = "";
        r = kura_key_add(repo, pw, kdf_mem, kdf_passes, id, err);
        cli_secret_free(pw);
        if (r < 0)
                return r;
        if (c->json) {
                _cleanup_json_ json_t *j = json_pack("{s:s}", "id", id);
                cli_json_print(j);
        } else
                printf("added key %s\n", id);
        return 0;
}

static int key_list(Cli *c, KuraErr *err) {
        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        int r = cli_repo_open(c, KURA_LOCK_NONE, &repo, err);
        if (r < 0)
                return r;
        _cleanup_free_ KuraKeySlotInfo *keys = NULL;
        size_t n = 0;
        r = kura_key_list(repo, &keys, &n, err);
        if (r < 0)
                return r;
        if (c->json) {
                _cleanup_json_ json_t *a = json_array();
                char t[40];
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b}", "id", keys[i].id,
                                                           "created", cli_fmt_time_rfc3339(keys[i].created_ns, t),
                                                           "host", keys[i].host, "user", keys[i].user, "access",
                                                           keys[i].access, "kdf_memory", (json_int_t)keys[i].kdf_mem,
                                                           "kdf_passes", (json_int_t)keys[i].kdf_passes, "current",
                                                           (int)keys[i].current));
                _cleanup_json_ json_t *j = json_pack("{s:O}", "keys", a);
                cli_json_print(j);
                return 0;
        }
        printf("%-1s %-16s  %-19s  %-20s  %-6s  %s\n", "", "ID", "CREATED", "USER@HOST", "ACCESS", "KDF");
        for (size_t i = 0; i < n; i++) {
                char t[32], m[32], uh[200];
                snprintf(uh, sizeof uh, "%s@%s", keys[i].user, keys[i].host);
                printf("%-1s %-16s  %-19s  %-20s  %-6s  argon2id %s, %" PRIu32 " passes\n", keys[i].current ? "*" : "",
                       keys[i].id, cli_fmt_time_local(keys[i].created_ns, t), uh, keys[i].access,
                       cli_fmt_size(keys[i].kdf_mem, m), keys[i].kdf_passes);
        }
        return 0;
}

static int key_remove(Cli *c, const char *id, KuraErr *err) {
        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        int r = cli_repo_open(c, KURA_LOCK_EXCLUSIVE, &repo, err);
        if (r < 0)
                return r;
        r = kura_key_remove(repo, id, err);
        if (r < 0)
                return r;
        if (c->json) {
                _cleanup_json_ json_t *j = json_pack("{s:s}", "removed", id);
                cli_json_print(j);
        } else
                printf("removed key %s\n", id);
        return 0;
}

int verb_key(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"kdf-memory", required_argument, NULL, OPT_KDF_MEM},
                {"kdf-passes", required_argument, NULL, OPT_KDF_PASSES},
                {"new-password-file", required_argument, NULL, OPT_NEW_PW_FILE},
                {},
        };
        uint64_t kdf_mem = 0, v;
        uint32_t kdf_passes = 0;
        const char *new_pw_file = NULL;
        int r;

        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                switch (r) {
                case OPT_KDF_MEM:
                        if ((r = cli_parse_size("--kdf-memory", optarg, &kdf_mem, err)) < 0)
                                return r;
                        break;
                case OPT_KDF_PASSES:
                        if ((r = cli_parse_uint("--kdf-passes", optarg, UINT32_MAX, &v, err)) < 0)
                                return r;
                        kdf_passes = (uint32_t)v;
                        break;
                case OPT_NEW_PW_FILE:
                        new_pw_file = optarg;
                        break;
                }
        }
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind >= argc)
                return cli_usage_error(err, "key needs a subcommand: add, list or remove");
        const char *sub = argv[optind++];
        int nargs = argc - optind;
        if (!strcmp(sub, "add")) {
                if (nargs > 0)
                        return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);
                return key_add(c, kdf_mem, kdf_passes, new_pw_file, err);
        }
        if (!strcmp(sub, "list")) {
                if (nargs > 0)
                        return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);
                return key_list(c, err);
        }
        if (!strcmp(sub, "remove")) {
                if (nargs != 1)
                        return cli_usage_error(err, "key remove needs exactly one key ID");
                return key_remove(c, argv[optind], err);
        }
        return cli_usage_error(err, "unknown key subcommand '%s' (add, list, remove)", sub);
}
