/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura versions: list the versions (recovery points), oldest first. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char verb_versions_help[] = "Usage: kura versions [--json]\n"
                                  "\n"
                                  "List the versions in the repository, oldest first: ID (first 12 hex digits; any\n"
                                  "unique prefix or 'latest' names a version), local time, volumes (name:size), bytes\n"
                                  "new in that version, tags.  Takes no lock.\n";

typedef struct VersionList {
        KuraVersion **v;
        size_t n;
} VersionList;

static void version_list_clear(VersionList *l) {
        kura_version_list_free(l->v, l->n);
}

/* Put the version's restore-test record (kura verify-restore) into
 * v->extra["verify_restore"].  An unreadable record is shown as a warning
 * and otherwise ignored: the version itself is fine. */
static void merge_verify_record(KuraRepo *repo, KuraVersion *v) {
        _cleanup_free_ char *text = NULL;
        KuraErr lerr = {0};
        int r = kura_verify_record_load(repo, v->id, &text, &lerr);
        if (r == -ENOENT && !lerr.code)
                return;
        if (r < 0) {
                cli_warn(lerr.code ? lerr.code : KURA_E_DAMAGED, "%s", lerr.message);
                return;
        }
        json_error_t jerr;
        json_t *rec = json_loads(text, 0, &jerr);
        if (!rec)
                return;
        if (!v->extra)
                v->extra = json_object();
        if (!v->extra || json_object_set_new((json_t *)v->extra, "verify_restore", rec) < 0)
                json_decref(rec);
}

int verb_versions(Cli *c, int argc, char **argv, KuraErr *err) {
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
        if (optind < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);

        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        r = cli_repo_open(c, KURA_LOCK_NONE, &repo, err);
        if (r < 0)
                return r;

        _cleanup_(version_list_clear) VersionList l = {0};
        size_t damaged = 0;
        r = kura_version_list(repo, true, &l.v, &l.n, &damaged, err);
        if (r < 0)
                return r;
        KuraVersion **v = l.v;
        size_t n = l.n;

        /* The last restore test of each version lives beside it (a manifest is
         * immutable): shown as the manifest's "verify_restore" would be. */
        for (size_t i = 0; i < n; i++)
                merge_verify_record(repo, v[i]);

        if (damaged > 0)
                cli_warn(KURA_W_DAMAGE_SKIPPED,
                         "%zu version manifest%s could not be read and %s not listed; run 'kura check'", damaged,
                         damaged == 1 ? "" : "s", damaged == 1 ? "is" : "are");

        if (c->json) {
                _cleanup_json_ json_t *a = json_array();
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(a, cli_json_version(v[i]));
                _cleanup_json_ json_t *j = json_pack("{s:O}", "versions", a);
                cli_json_print(j);
                return 0;
        }

        printf("%-12s  %-19s  %-40s  %10s  %-10s  %s\n", "ID", "TIME", "VOLUMES", "NEW", "FLAGS", "TAGS");
        for (size_t i = 0; i < n; i++) {
                char t[32], s[32], vols[512] = "", tags[512] = "";
                size_t off = 0;
                for (size_t k = 0; k < v[i]->nvolumes && off < sizeof vols; k++) {
                        int w = snprintf(vols + off, sizeof vols - off, "%s%s:%s", k ? " " : "", v[i]->volumes[k].name,
                                         cli_fmt_size(v[i]->volumes[k].size, s));
                        off += w > 0 ? (size_t)w : 0;
                }
                off = 0;
                for (size_t k = 0; k < v[i]->ntags && off < sizeof tags; k++) {
                        int w = snprintf(tags + off, sizeof tags - off, "%s%s", k ? "," : "", v[i]->tags[k]);
                        off += w > 0 ? (size_t)w : 0;
                }
                /* bmr: complete for bare-metal recovery; crash: read live, no
                 * snapshot; verified/VERIFY-FAILED: the last verify-restore. */
                char flags[64] = "";
                if (kura_version_is_bmr(v[i], NULL))
                        strcat(flags, "bmr");
                if (v[i]->crash_consistent)
                        strcat(flags, flags[0] ? ",crash" : "crash");
                json_t *vr = v[i]->extra ? json_object_get((json_t *)v[i]->extra, "verify_restore") : NULL;
                if (json_is_object(vr)) {
                        bool ok = json_is_true(json_object_get(vr, "ok"));
                        strcat(flags, flags[0] ? "," : "");
                        strcat(flags, ok ? "verified" : "VERIFY-FAILED");
                }
                printf("%.12s  %-19s  %-40s  %10s  %-10s  %s\n", v[i]->id, cli_fmt_time_local(v[i]->time_ns, t),
                       vols, cli_fmt_size(v[i]->bytes_new, s), flags[0] ? flags : "-", tags);
        }
        return 0;
}
