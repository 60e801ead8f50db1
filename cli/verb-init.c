/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura init: create a repository. */
#include <errno.h>
#include <stdio.h>

#include "cli.h"

const char verb_init_help[] = "Usage: kura [--repo DIR] init [--no-encryption] [--kdf-memory SIZE] [--kdf-passes N]\n"
                              "                              [--zstd-level N] [--json]\n"
                              "\n"
                              "Create a repository in DIR (created if missing, else it must be empty).\n"
                              "The passphrase comes from KURA_PASSWORD, --password-file, or is asked twice.\n"
                              "\n"
                              "  --no-encryption     store chunks unencrypted (still checksummed)\n"
                              "  --kdf-memory SIZE   Argon2id memory (default 64M)\n"
                              "  --kdf-passes N      Argon2id passes (default 3)\n"
                              "  --zstd-level N      compression level for new data, -7 to 22 (default 1)\n";

enum { OPT_NO_ENC = OPT_VERB, OPT_KDF_MEM, OPT_KDF_PASSES, OPT_ZSTD };

int verb_init(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"no-encryption", no_argument, NULL, OPT_NO_ENC},
                {"kdf-memory", required_argument, NULL, OPT_KDF_MEM},
                {"kdf-passes", required_argument, NULL, OPT_KDF_PASSES},
                {"zstd-level", required_argument, NULL, OPT_ZSTD},
                {},
        };
        KuraRepoInitOpts o = {.encrypted = true};
        uint64_t v;
        int r;

        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                switch (r) {
                case OPT_NO_ENC:
                        o.encrypted = false;
                        break;
                case OPT_KDF_MEM:
                        if ((r = cli_parse_size("--kdf-memory", optarg, &o.kdf_mem, err)) < 0)
                                return r;
                        break;
                case OPT_KDF_PASSES:
                        if ((r = cli_parse_uint("--kdf-passes", optarg, UINT32_MAX, &v, err)) < 0)
                                return r;
                        o.kdf_passes = (uint32_t)v;
                        break;
                case OPT_ZSTD:
                {
                        /* -7..22 (negative: zstd's fast levels); 0 would mean "default". */
                        char *end = NULL;
                        errno = 0;
                        long lv = strtol(optarg, &end, 10);
                        if (errno || !end || *end || end == optarg || lv < -7 || lv > 22 || lv == 0)
                                return cli_usage_error(err, "--zstd-level %s: use an integer from -7 to 22, not 0",
                                                       optarg);
                        o.zstd_level = (int)lv;
                        (void)v;
                }
                        break;
                }
        }
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);

        const char *path = NULL;
        if ((r = cli_repo_path(c, &path, err)) < 0)
                return r;

        char *pw = NULL;
        if (o.encrypted) {
                r = cli_new_password("KURA_PASSWORD", c->password_file, "New passphrase", &pw, err);
                if (r < 0)
                        return r;
                o.password = pw;
        }
        _cleanup_free_ char *id = NULL;
        r = kura_repo_init(path, &o, &id, err);
        cli_secret_free(pw);
        if (r < 0)
                return r;

        if (c->json) {
                _cleanup_json_ json_t *j =
                        json_pack("{s:s, s:s, s:b}", "id", id ? id : "", "path", path, "encrypted", (int)o.encrypted);
                cli_json_print(j);
        } else {
                printf("created repository %s at %s%s\n", id ? id : "", path, o.encrypted ? "" : " (unencrypted)");
                if (o.encrypted)
                        printf("keep the passphrase safe: without it the backups cannot be restored\n");
        }
        return 0;
}
