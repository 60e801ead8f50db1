/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura unlock: list the repository's locks and remove stale ones (or all). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char verb_unlock_help[] = "Usage: kura unlock [--all] [--stale-age SECONDS] [--json]\n"
                                "\n"
                                "List the locks of the repository and remove the stale ones: locks of dead\n"
                                "processes on this host, and locks of other hosts older than --stale-age\n"
                                "(default 86400 s).  --all removes every lock: only when you are sure no other\n"
                                "kura is using the repository.  Needs no passphrase.\n";

enum { OPT_ALL = OPT_VERB, OPT_STALE_AGE };

int verb_unlock(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"all", no_argument, NULL, OPT_ALL},
                {"stale-age", required_argument, NULL, OPT_STALE_AGE},
                {},
        };
        bool all = false;
        uint64_t age = 24 * 3600;
        int r;

        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                if (r == OPT_ALL)
                        all = true;
                else if (r == OPT_STALE_AGE && (r = cli_parse_uint("--stale-age", optarg, INT64_MAX, &age, err)) < 0)
                        return r;
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

        _cleanup_free_ KuraLockInfo *locks = NULL;
        size_t n = 0, removed = 0;
        r = kura_lock_list(path, (int64_t)age, &locks, &n, err);
        if (r < 0)
                return r;
        r = kura_lock_remove(path, (int64_t)age, all, &removed, err);
        if (r < 0)
                return r;

        if (c->json) {
                _cleanup_json_ json_t *a = json_array();
                char t[40];
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(a,
                                              json_pack("{s:s, s:s, s:i, s:s, s:s, s:b, s:b}", "name", locks[i].name,
                                                        "host", locks[i].host, "pid", locks[i].pid, "mode",
                                                        locks[i].exclusive ? "exclusive" : "shared", "time",
                                                        cli_fmt_time_rfc3339(locks[i].time_ns, t), "stale",
                                                        (int)locks[i].stale, "removed", (int)(all || locks[i].stale)));
                _cleanup_json_ json_t *j = json_pack("{s:O, s:I}", "locks", a, "removed", (json_int_t)removed);
                cli_json_print(j);
                return 0;
        }
        if (n == 0) {
                printf("no locks\n");
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                char t[32];
                printf("%-9s %s pid %d on %s since %s%s%s\n", locks[i].exclusive ? "exclusive" : "shared",
                       locks[i].name, locks[i].pid, locks[i].host, cli_fmt_time_local(locks[i].time_ns, t),
                       locks[i].stale ? " (stale)" : "", all || locks[i].stale ? ": removed" : "");
        }
        printf("removed %zu lock%s\n", removed, removed == 1 ? "" : "s");
        return 0;
}
