/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kura: the command.  Parses the global options, dispatches to one verb
 * (verb-*.c), and is the only place that prints a failure and picks the
 * exit status.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef KURA_VERSION
#define KURA_VERSION "0.1.0" /* keep in step with project() in meson.build */
#endif

static const char main_help[] = "Usage: kura [--repo DIR] [--json] [--password-file FILE] COMMAND [ARGS...]\n"
                                "\n"
                                "Block-level, deduplicating, encrypted backups of Linux volumes.\n"
                                "\n"
                                "Commands:\n"
                                "  init              create a repository\n"
                                "  key add|list|remove  manage the passphrases (key slots) of a repository\n"
                                "  backup            back up volumes (block devices or image files) as a new version\n"
                                "  versions          list the versions (recovery points)\n"
                                "  restore           restore a volume of a version to a device or file\n"
                                "  bmr               bare-metal recovery: rebuild whole disks from a version\n"
                                "  verify-restore    restore test: rebuild a version's disks into scratch images\n"
                                "  check             verify the repository (--read-data: every byte)\n"
                                "  forget            delete versions (--prune: and free their space)\n"
                                "  prune             delete data no version uses\n"
                                "  unlock            list and remove stale locks\n"
                                "  explain CODE      explain a kura error code or a Windows backup error code\n"
                                "  writers           list the application writers and their states\n"
                                "  providers         list the snapshot providers\n"
                                "  shadows           list, create or delete persistent snapshots\n"
                                "  shadowstorage     show the snapshot (shadow) storage of volumes\n"
                                "  rescue build      make the rescue (recovery) ISO for bare-metal restores\n"
                                "  critical          show the critical volumes of a system (bare-metal recovery)\n"
                                "\n"
                                "Global options (also accepted after the command):\n"
                                "  --repo DIR            the repository (default: $KURA_REPO)\n"
                                "  --json                machine-readable output on stdout\n"
                                "  --password-file FILE  read the passphrase from FILE's first line\n"
                                "  --help, --version\n"
                                "\n"
                                "Environment: KURA_REPO, KURA_PASSWORD, KURA_NEW_PASSWORD, KURA_CONFIG_DIR,\n"
                                "KURA_STATE_DIR, KURA_CACHE_DIR, KURA_DEBUG.\n"
                                "Exit status: 0 ok, 1 error, 2 usage, 3 damage found, 4 authentication, 5 locked,\n"
                                "130 interrupted.  'kura COMMAND --help' shows a command's options; see kura(1).\n";

/* verb-critical.c (declared here: cli.h belongs to the CLI's owner) */
extern const char verb_critical_help[];
int verb_critical(Cli *c, int argc, char **argv, KuraErr *err);

/* verb-rescue.c (declared here: cli.h belongs to the CLI's owner) */
extern const char verb_rescue_help[];
int verb_rescue(Cli *c, int argc, char **argv, KuraErr *err);

typedef struct Verb {
        const char *name;
        int (*run)(Cli *c, int argc, char **argv, KuraErr *err);
        const char *help;
} Verb;

static const Verb verbs[] = {
        {"init", verb_init, verb_init_help},          {"key", verb_key, verb_key_help},
        {"backup", verb_backup, verb_backup_help},    {"versions", verb_versions, verb_versions_help},
        {"restore", verb_restore, verb_restore_help}, {"check", verb_check, verb_check_help},
        {"forget", verb_forget, verb_forget_help},    {"prune", verb_prune, verb_prune_help},
        {"unlock", verb_unlock, verb_unlock_help},    {"explain", verb_explain, verb_explain_help},
        {"writers", verb_writers, verb_writers_help},
        {"providers", verb_providers, verb_providers_help},
        {"shadows", verb_shadows, verb_shadows_help},
        {"shadowstorage", verb_shadowstorage, verb_shadowstorage_help},
        {"rescue", verb_rescue, verb_rescue_help},
        {"critical", verb_critical, verb_critical_help},
        {"bmr", verb_bmr, verb_bmr_help},
        {"verify-restore", verb_verify_restore, verb_verify_restore_help},
};

static const Verb *find_verb(const char *name) {
        for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
                if (!strcmp(verbs[i].name, name))
                        return &verbs[i];
        return NULL;
}

static int exit_status_for(const KuraErr *e) {
        static const struct {
                const char *code;
                int status;
        } map[] = {
                {KURA_E_USAGE, CLI_EXIT_USAGE},
                {KURA_E_DAMAGED, CLI_EXIT_DAMAGE},
                {KURA_E_CHECK_FAILED, CLI_EXIT_DAMAGE},
                {KURA_E_VERIFY_FAILED, CLI_EXIT_DAMAGE},
                {KURA_E_WRONG_PASSWORD, CLI_EXIT_AUTH},
                {KURA_E_NO_PASSWORD, CLI_EXIT_AUTH},
                {KURA_E_LOCKED, CLI_EXIT_LOCKED},
                {KURA_E_INTERRUPTED, CLI_EXIT_INTERRUPTED},
        };
        if (!e->code)
                return CLI_EXIT_FAILURE;
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
                if (!strcmp(map[i].code, e->code))
                        return map[i].status;
        return CLI_EXIT_FAILURE;
}

static const char *env_or(const char *name, const char *def) {
        const char *v = getenv(name);
        return v && *v ? v : def;
}

/* The global options before the verb.  Returns the verb's index in argv, 0
 * when --help/--version was handled, or -EINVAL with a usage error. */
static int parse_global(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"version", no_argument, NULL, OPT_VERSION},
                {},
        };
        for (;;) {
                opterr = 0;
                /* '+': stop at the verb; its options are the verb's to parse. */
                int o = getopt_long(argc, argv, "+:h", opts, NULL);
                switch (o) {
                case -1:
                        if (optind >= argc)
                                return cli_usage_error(err, "no command given");
                        return optind;
                case 'h':
                        fputs(main_help, stdout);
                        return 0;
                case OPT_VERSION:
                        printf("kura %s\n", KURA_VERSION);
                        return 0;
                case OPT_REPO:
                        c->repo = optarg;
                        break;
                case OPT_JSON:
                        c->json = true;
                        break;
                case OPT_PASSWORD_FILE:
                        c->password_file = optarg;
                        break;
                case ':':
                        return cli_usage_error(err, "option '%s' needs an argument", argv[optind - 1]);
                default:
                        if (optopt > 0 && optopt < 0x100)
                                return cli_usage_error(err, "unknown option '-%c'", optopt);
                        return cli_usage_error(err, "unknown option '%s'", argv[optind - 1]);
                }
        }
}

static int run(Cli *c, int argc, char **argv, KuraErr *err) {
        int r = parse_global(c, argc, argv, err);
        if (r <= 0)
                return r;
        int vi = r;
        const char *name = argv[vi];
        if (!strcmp(name, "help")) {
                const Verb *v = vi + 1 < argc ? find_verb(argv[vi + 1]) : NULL;
                fputs(v ? v->help : main_help, stdout);
                return 0;
        }
        const Verb *v = find_verb(name);
        if (!v)
                return cli_usage_error(err, "unknown command '%s'", name);
        c->verb = v->name;
        c->verb_help = v->help;
        optind = 0; /* full re-initialisation of getopt for the verb's arguments */
        return v->run(c, argc - vi, argv + vi, err);
}

int main(int argc, char **argv) {
        Cli c = {
                .repo = env_or("KURA_REPO", NULL),
                .config_dir = env_or("KURA_CONFIG_DIR", "/etc/kura"),
                .state_dir = env_or("KURA_STATE_DIR", "/var/lib/kura"),
                .cache_dir = env_or("KURA_CACHE_DIR", "/var/cache/kura"),
                .debug = getenv("KURA_DEBUG") != NULL,
        };
        KuraErr err = {0};

        cli_signals_setup(&c);
        int r = run(&c, argc, argv, &err);
        fflush(stdout);
        if (r >= 0)
                return r;
        if (!kura_err_isset(&err)) {
                /* A path that forgot to fill err: still say something useful. */
                if (r == -ENOMEM)
                        kura_err(&err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
                else
                        kura_err_errno(&err, r, KURA_E_INTERNAL, "report this as a bug with KURA_DEBUG=1 output",
                                       "%s failed", c.verb ? c.verb : "kura");
        }
        cli_print_error(&c, &err);
        return exit_status_for(&err);
}
