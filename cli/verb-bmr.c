/* SPDX-License-Identifier: GPL-2.0-or-later */
/* kura bmr: bare-metal recovery — repartition the target disks and restore a version onto them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

const char verb_bmr_help[] =
        "Usage: kura bmr --version ID [--disk-map auto|SRC=DST,...] [--exclude-disk D]...\n"
        "                [--grow PART] [--tmpdir DIR] [--luks-key-file FILE] [--add-drivers DIR]\n"
        "                [--reinstall-bootloader uefi|bios|auto] [--dry-run] [--yes]\n"
        "                [--threads N] [--json]\n"
        "\n"
        "Bare-metal recovery (wbadmin start sysrecovery): ERASE the target disks, recreate the\n"
        "partition tables of version ID (made with backup --disk or --all-critical), restore\n"
        "every partition and the boot areas, grow or shrink filesystems to fit the targets.\n"
        "\n"
        "  --disk-map M       auto (default: empty, unmounted disks large enough, in name\n"
        "                     order) or disk0=/dev/sdb,disk1=/dev/sdc (SRC: disk name or the\n"
        "                     backed-up path; DST: a whole disk or an existing image file)\n"
        "  --exclude-disk D   leave disk D of the version out (repeatable)\n"
        "  --grow PART        the partition (disk0p3, its path at backup time, or UUID=...\n"
        "                     of its filesystem) that grows onto a larger disk or shrinks\n"
        "                     first onto a smaller one (default: each disk's last)\n"
        "  --tmpdir DIR       scratch space for shrinking (default $TMPDIR or /var/tmp)\n"
        "  --luks-key-file F  a passphrase or key file of the backed-up LUKS volumes (their\n"
        "                     headers are restored as they were); the file's bytes are the key\n"
        "  --add-drivers DIR  new hardware: put the kernel modules in DIR (*.ko) into the\n"
        "                     restored system and regenerate its initramfs in a chroot\n"
        "                     (update-initramfs or dracut), like DISM /Add-Driver\n"
        "  --reinstall-bootloader F  the new machine boots with F (auto: this one's firmware);\n"
        "                     BIOS -> UEFI makes a 64 MiB ESP at the disk's end (free space\n"
        "                     or shrinking the last partitions; the plan says which) and\n"
        "                     installs GRUB for UEFI there; UEFI -> BIOS puts a BIOS boot\n"
        "                     partition in the gap before the first partition (GPT) and\n"
        "                     installs GRUB for BIOS there and in the MBR\n"
        "  --dry-run          print the plan and stop\n"
        "  --yes              do not ask (required when not on a terminal)\n"
        "\n"
        "A target that is mounted, used by device-mapper, holds the repository, or is too\n"
        "small for the data is refused before anything is written.\n";

enum { OPT_VERSION_ID = OPT_VERB, OPT_DISK_MAP, OPT_EXCLUDE, OPT_GROW, OPT_TMPDIR, OPT_DRY_RUN, OPT_YES, OPT_THREADS,
       OPT_LUKS_KEY_FILE, OPT_ADD_DRIVERS, OPT_REINSTALL };

/* Ask on the terminal; anything but "yes" stops. */
static bool confirm_tty(void *userdata, const char *plan) {
        (void)userdata;
        int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || !isatty(fd)) {
                if (fd >= 0)
                        close(fd);
                return false;
        }
        dprintf(fd, "%s\nEvery disk named above on the right is ERASED.  Type 'yes' to go on: ", plan);
        char buf[16] = "";
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = 0;
        buf[strcspn(buf, "\r\n")] = 0;
        return strcmp(buf, "yes") == 0;
}

int verb_bmr(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"version", required_argument, NULL, OPT_VERSION_ID},
                {"disk-map", required_argument, NULL, OPT_DISK_MAP},
                {"exclude-disk", required_argument, NULL, OPT_EXCLUDE},
                {"grow", required_argument, NULL, OPT_GROW},
                {"tmpdir", required_argument, NULL, OPT_TMPDIR},
                {"dry-run", no_argument, NULL, OPT_DRY_RUN},
                {"yes", no_argument, NULL, OPT_YES},
                {"threads", required_argument, NULL, OPT_THREADS},
                {"luks-key-file", required_argument, NULL, OPT_LUKS_KEY_FILE},
                {"add-drivers", required_argument, NULL, OPT_ADD_DRIVERS},
                {"reinstall-bootloader", required_argument, NULL, OPT_REINSTALL},
                {},
        };
        _cleanup_free_ const char **excl = calloc((size_t)argc + 1, sizeof *excl);
        KuraBmrOpts o = {0};
        bool yes = false;
        uint64_t v;
        int r;
        if (!excl)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                switch (r) {
                case OPT_VERSION_ID:
                        o.version = optarg;
                        break;
                case OPT_DISK_MAP:
                        o.disk_map = optarg;
                        break;
                case OPT_EXCLUDE:
                        excl[o.nexclude++] = optarg;
                        break;
                case OPT_GROW:
                        o.grow = optarg;
                        break;
                case OPT_TMPDIR:
                        o.tmpdir = optarg;
                        break;
                case OPT_DRY_RUN:
                        o.dry_run = true;
                        break;
                case OPT_YES:
                        yes = true;
                        break;
                case OPT_THREADS:
                        if ((r = cli_parse_uint("--threads", optarg, 1024, &v, err)) < 0)
                                return r;
                        o.threads = (unsigned)v;
                        break;
                case OPT_LUKS_KEY_FILE:
                        o.luks_key_file = optarg;
                        break;
                case OPT_ADD_DRIVERS:
                        o.add_drivers = optarg;
                        break;
                case OPT_REINSTALL:
                        o.reinstall_bootloader = optarg;
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
        o.exclude = excl;
        if (!yes && !o.dry_run)
                o.confirm = confirm_tty;

        _cleanup_(cli_repo_closep) KuraRepo *repo = NULL;
        r = cli_repo_open(c, KURA_LOCK_SHARED_OR_NONE, &repo, err);
        if (r < 0)
                return r;
        CliProgress p;
        cli_progress_begin(&p);
        o.progress = cli_progress_job;
        o.progress_userdata = &p;
        KuraBmrResult res = {0};
        r = kura_bmr_run(repo, &o, &res, err);
        cli_progress_end(&p);
        if (r < 0) {
                /* The plan helps to understand a refusal made after planning. */
                if (res.plan && !c->json)
                        fprintf(stderr, "%s", res.plan);
                kura_bmr_result_clear(&res);
                return r;
        }
        if (c->json) {
                _cleanup_json_ json_t *j =
                        json_pack("{s:s, s:b, s:s, s:s, s:I, s:f}", "version", o.version, "dry_run", o.dry_run,
                                  "plan", res.plan ? res.plan : "", "report", res.report ? res.report : "",
                                  "bytes_written", (json_int_t)res.bytes_written, "duration", res.duration_s);
                cli_json_print(j);
        } else {
                printf("%s", res.plan ? res.plan : "");
                if (!o.dry_run) {
                        char a[32], b[32];
                        printf("%s", res.report ? res.report : "");
                        printf("bare-metal restore done: written %s in %s\n", cli_fmt_size(res.bytes_written, a),
                               cli_fmt_duration(res.duration_s, b));
                }
        }
        kura_bmr_result_clear(&res);
        return 0;
}
