/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura critical: the volumes a bare-metal recovery needs, why, and how a backup will make each consistent. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "kura/disk.h"

/* Not in cli.h (owned by the CLI's author): main.c declares them the same way. */
extern const char verb_critical_help[];
int verb_critical(Cli *c, int argc, char **argv, KuraErr *err);

const char verb_critical_help[] =
        "Usage: kura critical [--root DIR] [--json]\n"
        "\n"
        "Show the critical volumes of a system: the filesystems at /, /boot and /boot/efi\n"
        "(and paths that hold system state), found from the mount table, DIR/etc/fstab\n"
        "and, for the running system, the kernel command line's root=.  For each: the\n"
        "device, filesystem, the whole disks under it (through LVM and LUKS), the\n"
        "stack, every reason it is critical, and how a backup will make it consistent\n"
        "(the snapshot provider --snapshot auto would use, offline, or none).\n"
        "\n"
        "  --root DIR   the system whose root is mounted at DIR (a rescue system's\n"
        "               /target): mounts at and below DIR count with DIR stripped,\n"
        "               DIR/etc/fstab is read, the kernel command line is not.\n"
        "               Default: / (this system).\n"
        "\n"
        "MD RAID is not supported for bare-metal recovery: volumes on it are shown as such.\n";

enum {
        OPT_ROOT = OPT_VERB,
};

/* "a; b; c" -> ["a", "b", "c"] */
static json_t *why_array(const char *why) {
        json_t *a = json_array();
        if (!a)
                return NULL;
        const char *p = why;
        while (p && *p) {
                const char *e = strstr(p, "; ");
                size_t l = e ? (size_t)(e - p) : strlen(p);
                json_array_append_new(a, json_stringn(p, l));
                p = e ? e + 2 : NULL;
        }
        return a;
}

static int col_width(const KuraCritical *v, size_t n, size_t off, const char *title) {
        size_t w = strlen(title);
        for (size_t i = 0; i < n; i++) {
                const char *s = *(char *const *)((const char *)&v[i] + off);
                if (strlen(s) > w)
                        w = strlen(s);
        }
        return (int)w;
}

int verb_critical(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"root", required_argument, NULL, OPT_ROOT},
                {},
        };
        const char *root = "/";
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0)
                if (r == OPT_ROOT)
                        root = optarg;
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);

        KuraCritical *v = NULL;
        size_t n = 0;
        r = kura_critical_list(root, &v, &n, err);
        if (r < 0)
                return r;
        bool md = false, live = false;
        for (size_t i = 0; i < n; i++) {
                if (strstr(v[i].stack, "md"))
                        md = true;
                if (!strncmp(v[i].consistency, "none:", 5))
                        live = true;
        }
        if (c->json) {
                _cleanup_json_ json_t *a = json_array();
                for (size_t i = 0; i < n; i++)
                        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:s}", "mountpoint",
                                                           v[i].mountpoint, "device", v[i].device, "fs", v[i].fs,
                                                           "why", why_array(v[i].why), "disks", v[i].disks,
                                                           "stack", v[i].stack, "consistency", v[i].consistency));
                _cleanup_json_ json_t *j = json_pack("{s:s, s:O, s:b}", "root", root, "critical", a,
                                                     "md_raid_unsupported", (int)md);
                cli_json_print(j);
                kura_critical_free(v, n);
                return 0;
        }
        if (n == 0) {
                printf("No critical volumes found for the system at %s (nothing mounted at %s, no fstab entry).\n",
                       root, root);
                kura_critical_free(v, n);
                return 0;
        }
        int wm = col_width(v, n, offsetof(KuraCritical, mountpoint), "MOUNT");
        int wd = col_width(v, n, offsetof(KuraCritical, device), "DEVICE");
        int wf = col_width(v, n, offsetof(KuraCritical, fs), "FS");
        int wk = col_width(v, n, offsetof(KuraCritical, disks), "DISKS");
        int ws = col_width(v, n, offsetof(KuraCritical, stack), "STACK");
        if (strcmp(root, "/"))
                printf("Critical volumes of the system at %s:\n\n", root);
        printf("%-*s  %-*s  %-*s  %-*s  %-*s  %s\n", wm, "MOUNT", wd, "DEVICE", wf, "FS", wk, "DISKS", ws, "STACK",
               "CONSISTENCY");
        for (size_t i = 0; i < n; i++)
                printf("%-*s  %-*s  %-*s  %-*s  %-*s  %s\n", wm, v[i].mountpoint, wd, v[i].device, wf,
                       v[i].fs[0] ? v[i].fs : "-", wk, v[i].disks[0] ? v[i].disks : "-", ws,
                       v[i].stack[0] ? v[i].stack : "-", v[i].consistency);
        printf("\nWhy:\n");
        for (size_t i = 0; i < n; i++) {
                printf("  %s\n", v[i].mountpoint);
                const char *p = v[i].why;
                while (p && *p) {
                        const char *e = strstr(p, "; ");
                        int l = e ? (int)(e - p) : (int)strlen(p);
                        printf("    - %.*s\n", l, p);
                        p = e ? e + 2 : NULL;
                }
        }
        if (md)
                printf("\nMD RAID is not supported for bare-metal recovery: the volumes on it above cannot be "
                       "captured by kura backup --all-critical.\n");
        if (live)
                printf("\nA volume marked \"none\" is mounted read-write and no snapshot provider can take it: "
                       "kura backup --all-critical refuses it unless --crash-consistent is given (read live, "
                       "version marked crash-consistent); or back it up offline from the rescue image.\n");
        kura_critical_free(v, n);
        return 0;
}
