/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura check: verify the repository's structure, and with --read-data every byte. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char verb_check_help[] = "Usage: kura check [--read-data] [--json]\n"
                               "\n"
                               "Verify the repository: config, keys, index files, pack headers, and that every\n"
                               "chunk a version references is indexed.  --read-data also reads every blob and\n"
                               "verifies its tag and ID.  Prints each problem as\n"
                               "  error|warning CODE object: message (versions: ...)\n"
                               "Exit status 0 when there is no error (warnings are fine), 3 when there are errors.\n";

enum { OPT_READ_DATA = OPT_VERB };

static void report_free(KuraCheckReport **r) {
        kura_check_report_free(*r);
}

static json_t *report_json(const KuraCheckReport *rep) {
        json_t *probs = json_array();
        for (size_t i = 0; i < rep->nproblems; i++) {
                const KuraProblem *p = &rep->problems[i];
                json_t *vs = json_array();
                for (size_t k = 0; k < p->nversions; k++)
                        json_array_append_new(vs, json_string(p->versions[k] ? p->versions[k] : ""));
                json_array_append_new(probs, json_pack("{s:s, s:s, s:s, s:s, s:o}", "severity",
                                                       p->severity == KURA_PROBLEM_ERROR ? "error" : "warning", "code",
                                                       p->code ? p->code : "", "object", p->object ? p->object : "",
                                                       "message", p->message ? p->message : "", "versions", vs));
        }
        return json_pack("{s:I, s:I, s:o, s:I, s:I, s:I, s:I}", "errors", (json_int_t)rep->nerrors, "warnings",
                         (json_int_t)rep->nwarnings, "problems", probs, "packs", (json_int_t)rep->packs, "blobs",
                         (json_int_t)rep->blobs, "versions", (json_int_t)rep->versions, "bytes_read",
                         (json_int_t)rep->bytes_read);
}

int verb_check(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"read-data", no_argument, NULL, OPT_READ_DATA},
                {},
        };
        bool read_data = false;
        int r;

        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0)
                if (r == OPT_READ_DATA)
                        read_data = true;
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);

        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        r = cli_repo_open(c, KURA_LOCK_SHARED_OR_NONE, &repo, err);
        if (r < 0)
                return r;

        CliProgress p;
        cli_progress_begin(&p);
        _cleanup_(report_free) KuraCheckReport *rep = NULL;
        r = kura_repo_check(repo, read_data, cli_progress_simple, &p, &rep, err);
        cli_progress_end(&p);
        if (r < 0)
                return r;

        if (c->json) {
                _cleanup_json_ json_t *j = report_json(rep);
                cli_json_print(j);
                /* The report is the answer: no second JSON object for the error. */
                return rep->nerrors > 0 ? CLI_EXIT_DAMAGE : CLI_EXIT_OK;
        }

        for (size_t i = 0; i < rep->nproblems; i++) {
                const KuraProblem *pr = &rep->problems[i];
                printf("%s %s %s: %s", pr->severity == KURA_PROBLEM_ERROR ? "error" : "warning",
                       pr->code ? pr->code : "", pr->object ? pr->object : "", pr->message ? pr->message : "");
                if (pr->nversions > 0) {
                        printf(" (versions:");
                        for (size_t k = 0; k < pr->nversions; k++)
                                printf("%s %s", k ? "," : "", pr->versions[k]);
                        printf(")");
                }
                printf("\n");
        }
        char b[32];
        printf("checked %" PRIu64 " packs, %" PRIu64 " blobs, %" PRIu64 " versions%s%s: %zu error%s, %zu warning%s\n",
               rep->packs, rep->blobs, rep->versions, read_data ? ", read " : "",
               read_data ? cli_fmt_size(rep->bytes_read, b) : "", rep->nerrors, rep->nerrors == 1 ? "" : "s",
               rep->nwarnings, rep->nwarnings == 1 ? "" : "s");
        if (rep->nerrors > 0)
                return kura_err(err, EBADMSG, KURA_E_CHECK_FAILED,
                                "see the problems above and 'kura explain CODE'; 'restore --ignore-damage' "
                                "recovers what is left of an affected version",
                                "check of repository %s found %zu error%s", kura_repo_path(repo), rep->nerrors,
                                rep->nerrors == 1 ? "" : "s");
        return 0;
}
