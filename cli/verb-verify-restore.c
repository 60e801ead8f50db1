/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura verify-restore: a restore test of a bare-metal version, on scratch image files. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

#ifndef KURA_VERSION
#define KURA_VERSION "0.1.0"
#endif

const char verb_verify_restore_help[] =
        "Usage: kura verify-restore --version ID [--boot] [--firmware bios|uefi|auto] [--timeout S]\n"
        "                           [--boot-marker REGEX] [--tmpdir DIR] [--keep] [--threads N] [--json]\n"
        "\n"
        "Restore test: rebuild every disk of version ID (made with backup --disk or\n"
        "--all-critical) into scratch image files of the original size, check each restored\n"
        "filesystem with its own checker in no-change mode (e2fsck -fn, xfs_repair -n,\n"
        "btrfs check --readonly, fsck.vfat -n), and record the result in the repository:\n"
        "'kura versions' then flags the version 'verified' or 'VERIFY-FAILED'.  Nothing is\n"
        "attached to this machine (no loop device, no mount) and the repository's data is\n"
        "never changed.\n"
        "\n"
        "  --boot             also boot each bootable disk image in a qemu guest (TCG, no\n"
        "                     network, the image read-only) until a console line matches\n"
        "                     the boot marker; ' console=ttyS0' is appended to the kernel\n"
        "                     lines of grub.cfg on an ext2/3/4 partition of the scratch copy\n"
        "  --firmware F       auto (default: UEFI when the disk has an ESP, else BIOS), bios, uefi\n"
        "  --timeout S        seconds a boot may take (default 300)\n"
        "  --boot-marker RE   extended regex of the console line that means 'booted'\n"
        "                     (default: " KURA_VERIFY_MARKER_DEFAULT ")\n"
        "  --tmpdir DIR       where the scratch directory is made (default $TMPDIR or\n"
        "                     /var/tmp); needs room for the disks' data (sparse files)\n"
        "  --keep             keep the scratch directory (images, console logs) and print it\n"
        "\n"
        "Exit status 3 (KURA-E-VERIFY-FAILED) when the test failed: damaged data, a checker\n"
        "found errors, or the guest did not reach the marker.\n";

enum {
        OPT_VERSION_ID = OPT_VERB,
        OPT_BOOT,
        OPT_FIRMWARE,
        OPT_TIMEOUT,
        OPT_MARKER,
        OPT_TMPDIR,
        OPT_KEEP,
        OPT_THREADS,
};

int verb_verify_restore(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"version", required_argument, NULL, OPT_VERSION_ID},
                {"boot", no_argument, NULL, OPT_BOOT},
                {"firmware", required_argument, NULL, OPT_FIRMWARE},
                {"timeout", required_argument, NULL, OPT_TIMEOUT},
                {"boot-marker", required_argument, NULL, OPT_MARKER},
                {"tmpdir", required_argument, NULL, OPT_TMPDIR},
                {"keep", no_argument, NULL, OPT_KEEP},
                {"threads", required_argument, NULL, OPT_THREADS},
                {},
        };
        KuraVerifyOpts o = {.kura_version = KURA_VERSION};
        uint64_t v;
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                switch (r) {
                case OPT_VERSION_ID:
                        o.version = optarg;
                        break;
                case OPT_BOOT:
                        o.boot = true;
                        break;
                case OPT_FIRMWARE:
                        if (strcmp(optarg, "bios") && strcmp(optarg, "uefi") && strcmp(optarg, "auto"))
                                return cli_usage_error(err, "--firmware must be bios, uefi or auto, not '%s'", optarg);
                        o.firmware = optarg;
                        break;
                case OPT_TIMEOUT:
                        if ((r = cli_parse_uint("--timeout", optarg, 86400, &v, err)) < 0)
                                return r;
                        if (v == 0)
                                return cli_usage_error(err, "--timeout must be at least 1 second");
                        o.timeout_s = (unsigned)v;
                        break;
                case OPT_MARKER:
                        o.boot_marker = optarg;
                        break;
                case OPT_TMPDIR:
                        o.tmpdir = optarg;
                        break;
                case OPT_KEEP:
                        o.keep = true;
                        break;
                case OPT_THREADS:
                        if ((r = cli_parse_uint("--threads", optarg, 1024, &v, err)) < 0)
                                return r;
                        o.threads = (unsigned)v;
                        break;
                }
        }
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind]);
        if (!o.version)
                return cli_usage_error(err, "--version is required (an ID, a prefix, or 'latest')");
        if (!o.boot && (o.firmware || o.timeout_s || o.boot_marker))
                return cli_usage_error(err, "--firmware, --timeout and --boot-marker need --boot");

        /* Shared: the record is written, like a backup adds a version. */
        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        r = cli_repo_open(c, KURA_LOCK_SHARED, &repo, err);
        if (r < 0)
                return r;
        CliProgress p;
        cli_progress_begin(&p);
        o.progress = cli_progress_job;
        o.progress_userdata = &p;
        KuraVerifyResult res = {0};
        r = kura_verify_restore_run(repo, &o, &res, err);
        cli_progress_end(&p);
        char d[32];
        if (c->json && r >= 0) {
                json_error_t jerr;
                json_t *rec = res.record ? json_loads(res.record, 0, &jerr) : NULL;
                _cleanup_json_ json_t *j = json_pack("{s:s, s:b, s:b, s:o, s:s, s:f}", "version", res.version_id,
                                                     "ok", (int)res.ok, "recorded", (int)res.recorded, "record",
                                                     rec ? rec : json_null(), "report", res.report ? res.report : "",
                                                     "duration", res.duration_s);
                if (j && res.workdir)
                        json_object_set_new(j, "workdir", json_string(res.workdir));
                cli_json_print(j);
        } else {
                /* On failure the report says what was found; main() adds the error. */
                FILE *f = r < 0 ? stderr : stdout;
                if (res.report)
                        fprintf(f, "%s", res.report);
                if (res.workdir)
                        fprintf(f, "scratch directory kept: %s\n", res.workdir);
                if (r >= 0)
                        printf("restore test of version %.12s passed in %s%s\n", res.version_id,
                               cli_fmt_duration(res.duration_s, d),
                               res.recorded ? "; recorded in the repository" : "");
                else if (res.recorded)
                        fprintf(stderr, "the failure is recorded in the repository ('kura versions' shows "
                                        "VERIFY-FAILED)\n");
        }
        kura_verify_result_clear(&res);
        return r;
}
