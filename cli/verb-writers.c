/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura writers: the declared writers and their states, in the layout of
 * `vssadmin list writers`. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kura/snap.h"

const char verb_writers_help[] = "Usage: kura writers [--json] [--no-probe]\n"
                                 "\n"
                                 "List the writers declared in $KURA_CONFIG_DIR/writers.d (default /etc/kura) with\n"
                                 "the state and last error the last backup left them in, like\n"
                                 "'vssadmin list writers'.  Each writer is started, asked who it is and shut\n"
                                 "down again, so that one that cannot start is shown with why; --no-probe only\n"
                                 "reads the states recorded in $KURA_STATE_DIR/writers.json.  Needs no\n"
                                 "repository.\n";

enum { OPT_NO_PROBE = OPT_VERB };

static void print_braced(const char *label, const char *uuid) {
        printf("   %s: {%s}\n", label, uuid && *uuid ? uuid : "");
}

int verb_writers(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"no-probe", no_argument, NULL, OPT_NO_PROBE},
                {},
        };
        bool probe = true;
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0)
                if (r == OPT_NO_PROBE)
                        probe = false;
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);

        KuraWriterInfo *ws = NULL;
        size_t n = 0;
        r = kura_writers_status(c->config_dir, c->state_dir, probe, &ws, &n, err);
        if (r < 0)
                return r;

        if (c->json) {
                _cleanup_json_ json_t *a = json_array();
                for (size_t i = 0; i < n; i++) {
                        const KuraWriterInfo *w = &ws[i];
                        json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:s, s:s, s:s, s:b, s:s?, s:s}", "name", w->name,
                                              "class_id", w->class_id, "instance_id", w->instance_id, "state",
                                              (int)w->state, "state_text", kura_writer_state_str(w->state),
                                              "last_error", kura_writer_error_str(w->last_error), "message",
                                              w->last_message, "started", (int)w->started, "not_started",
                                              w->started ? NULL : w->not_started, "conf", w->conf_path);
                        if (o)
                                json_array_append_new(a, o);
                }
                _cleanup_json_ json_t *j = json_pack("{s:O}", "writers", a);
                cli_json_print(j);
                kura_writer_info_free(ws, n);
                return 0;
        }
        if (n == 0)
                printf("No writers are declared in %s/writers.d.\n", c->config_dir);
        /* Running writers first (as vssadmin lists them), then those that could not start. */
        bool first = true;
        for (size_t i = 0; i < n; i++) {
                const KuraWriterInfo *w = &ws[i];
                if (!w->started)
                        continue;
                if (!first)
                        printf("\n");
                first = false;
                printf("Writer name: '%s'\n", w->name);
                print_braced("Writer Id", w->class_id);
                print_braced("Writer Instance Id", w->instance_id);
                printf("   State: [%d] %s\n", (int)w->state, kura_writer_state_str(w->state));
                printf("   Last error: %s\n", kura_writer_error_str(w->last_error));
                if (w->last_error != KURA_WE_NONE && w->last_message && *w->last_message)
                        printf("   Message: %s\n", w->last_message);
        }
        for (size_t i = 0; i < n; i++) {
                const KuraWriterInfo *w = &ws[i];
                if (w->started)
                        continue;
                if (!first)
                        printf("\n");
                first = false;
                printf("Writer name: '%s'\n", w->name);
                printf("   Not started: %s\n", w->not_started ? w->not_started : "unknown");
                printf("   Declared in: %s\n", w->conf_path);
        }
        kura_writer_info_free(ws, n);
        return 0;
}
