/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura providers: the snapshot providers, best first, and whether each can run here. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kura/snap.h"

const char verb_providers_help[] = "Usage: kura providers [--json]\n"
                                   "\n"
                                   "List the snapshot providers in the order --snapshot auto tries them: name,\n"
                                   "provider ID, type (system or software), and whether its tools are present on\n"
                                   "this machine (and why not).  Like 'vssadmin list providers'.\n";

int verb_providers(Cli *c, int argc, char **argv, KuraErr *err) {
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

        _cleanup_free_ KuraProviderInfo *v = NULL;
        size_t n = 0;
        r = kura_providers_list(&v, &n);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_NO_MEMORY, "", "cannot list the snapshot providers");
        if (c->json) {
                _cleanup_json_ json_t *a = json_array();
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s, s:b, s:s?}", "name", v[i].name, "id",
                                                           v[i].id, "type", v[i].type, "description",
                                                           v[i].description, "available", (int)v[i].available,
                                                           "why", v[i].available ? NULL : v[i].why));
                _cleanup_json_ json_t *j = json_pack("{s:O}", "providers", a);
                cli_json_print(j);
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                printf("Provider name: '%s'\n", v[i].name);
                printf("   Provider type: %s\n", v[i].type);
                printf("   Provider Id: {%s}\n", v[i].id);
                printf("   Description: %s\n", v[i].description);
                if (v[i].available)
                        printf("   Available: yes\n\n");
                else
                        printf("   Available: no (%s)\n\n", v[i].why);
        }
        return 0;
}
