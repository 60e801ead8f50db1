/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kura rescue build: make the recovery environment (a hybrid BIOS/UEFI ISO).
 *
 * The image is assembled by rescue/build-iso.sh (cpio, GRUB, xorriso do the
 * work; C would add nothing but lines).  This verb finds that script, hands it
 * the path of this very kura binary (so the image restores with the same
 * version that made it), and waits for it.  The script prints its own
 * failures in kura's "kura: error: CODE: message / remedy" form.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

/* Declared here (and in main.c's verb table) rather than in cli.h, which
 * another engineer owns; moving them there is harmless. */
extern const char verb_rescue_help[];
int verb_rescue(Cli *c, int argc, char **argv, KuraErr *err);

const char verb_rescue_help[] =
        "Usage: kura rescue build OUT.iso [--kernel VMLINUZ] [--modules DIR] [--append KEYS]\n"
        "                         [--keyfile FILE] [--timeout S] [--compress zstd|gzip|xz]\n"
        "                         [--cache DIR]\n"
        "\n"
        "Build the kura rescue image: a hybrid ISO that boots from a CD or a USB stick\n"
        "under BIOS and UEFI, with a Debian kernel, kura, every tool 'kura bmr' uses, and\n"
        "storage, filesystem and network drivers.  It restores from a local disk, an SMB\n"
        "or NFS share or a repository path, from a text menu or unattended from kernel\n"
        "command-line keys (kura.repo=, kura.version=, kura.disk-map=, kura.keyfile=,\n"
        "kura.share=, kura.poweroff=1...; see rescue/README.md).\n"
        "\n"
        "  --kernel VMLINUZ  the kernel (default /boot/vmlinuz-$(uname -r))\n"
        "  --modules DIR     its lib/modules/KVER directory (default /lib/modules/$(uname -r))\n"
        "  --append KEYS     add a default boot entry with these kura.* keys (unattended)\n"
        "  --keyfile FILE    put FILE on the medium as /kura/keyfile (kura.keyfile=medium:/kura/keyfile);\n"
        "                    anyone holding the medium can then open the repository\n"
        "  --timeout S       seconds the boot menu waits (default 5 with --append, else 30)\n"
        "  --compress C      initramfs compression (default zstd)\n"
        "  --cache DIR       reuse the initramfs of an earlier build with the same inputs\n"
        "\n"
        "The passphrase never goes on the kernel command line.  The builder script is\n"
        "looked up in $KURA_RESCUE_DIR, next to this binary's source tree (../rescue),\n"
        "then in /usr/share/kura/rescue.\n";

enum {
        OPT_KERNEL = OPT_VERB,
        OPT_MODULES,
        OPT_APPEND,
        OPT_KEYFILE,
        OPT_TIMEOUT,
        OPT_COMPRESS,
        OPT_CACHE,
};

/* The directory of the running binary, from /proc/self/exe. */
static int self_exe(char *buf, size_t size) {
        ssize_t n = readlink("/proc/self/exe", buf, size - 1);
        if (n < 0)
                return -errno;
        if ((size_t)n >= size - 1)
                return -ENAMETOOLONG;
        buf[n] = 0;
        return 0;
}

static bool is_builder_dir(const char *dir, char *ret, size_t size) {
        char init[PATH_MAX];
        int n = snprintf(ret, size, "%s/build-iso.sh", dir);
        if (n < 0 || (size_t)n >= size)
                return false;
        n = snprintf(init, sizeof init, "%s/init.sh", dir);
        if (n < 0 || (size_t)n >= sizeof init)
                return false;
        return access(ret, R_OK) == 0 && access(init, R_OK) == 0;
}

/* Find rescue/build-iso.sh: $KURA_RESCUE_DIR, then EXEDIR/../rescue (build/kura
 * in the source tree), EXEDIR/../../rescue (build/cli/kura), then the installed
 * data directory. */
static int find_builder(const char *exe, char *ret, size_t size, KuraErr *err) {
        const char *env = getenv("KURA_RESCUE_DIR");
        if (env && *env) {
                if (is_builder_dir(env, ret, size))
                        return 0;
                return kura_err(err, ENOENT, KURA_E_TOOL_MISSING,
                                "point KURA_RESCUE_DIR at the rescue/ directory of kura's sources",
                                "KURA_RESCUE_DIR=%s holds no build-iso.sh and init.sh", env);
        }
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s", exe);
        char *slash = strrchr(dir, '/');
        if (slash)
                *slash = 0;
        static const char *const rel[] = {"/../rescue", "/../../rescue"};
        for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
                char cand[PATH_MAX];
                int n = snprintf(cand, sizeof cand, "%s%s", dir, rel[i]);
                if (n > 0 && (size_t)n < sizeof cand && is_builder_dir(cand, ret, size))
                        return 0;
        }
        if (is_builder_dir("/usr/share/kura/rescue", ret, size))
                return 0;
        return kura_err(err, ENOENT, KURA_E_TOOL_MISSING,
                        "install kura's rescue data (/usr/share/kura/rescue) or set KURA_RESCUE_DIR",
                        "the rescue image builder (rescue/build-iso.sh) was not found next to %s", exe);
}

int verb_rescue(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"kernel", required_argument, NULL, OPT_KERNEL},
                {"modules", required_argument, NULL, OPT_MODULES},
                {"append", required_argument, NULL, OPT_APPEND},
                {"keyfile", required_argument, NULL, OPT_KEYFILE},
                {"timeout", required_argument, NULL, OPT_TIMEOUT},
                {"compress", required_argument, NULL, OPT_COMPRESS},
                {"cache", required_argument, NULL, OPT_CACHE},
                {},
        };
        /* Each option goes to the script as "--name value": at most 7 pairs. */
        const char *pass[2 * 7];
        size_t npass = 0;
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                for (size_t i = 0; opts[i].name; i++)
                        if (opts[i].val == r && r >= OPT_VERB) {
                                pass[npass++] = opts[i].name;
                                pass[npass++] = optarg;
                                break;
                        }
                if (npass > sizeof pass / sizeof pass[0] - 2)
                        return cli_usage_error(err, "too many options");
        }
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (optind >= argc || strcmp(argv[optind], "build"))
                return cli_usage_error(err, "expected 'kura rescue build OUT.iso'");
        if (optind + 1 >= argc)
                return cli_usage_error(err, "'kura rescue build' needs the output file (OUT.iso)");
        if (optind + 2 < argc)
                return cli_usage_error(err, "unexpected argument '%s'", argv[optind + 2]);
        const char *out = argv[optind + 1];

        char exe[PATH_MAX], script[PATH_MAX];
        r = self_exe(exe, sizeof exe);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "run kura from a path it can read",
                                      "cannot find the kura binary (/proc/self/exe)");
        r = find_builder(exe, script, sizeof script, err);
        if (r < 0)
                return r;

        /* bash SCRIPT OUT --kura EXE [--name value]... NULL */
        const char *args[5 + sizeof pass / sizeof pass[0] + 1];
        size_t n = 0;
        args[n++] = "bash";
        args[n++] = script;
        args[n++] = out;
        args[n++] = "--kura";
        args[n++] = exe;
        for (size_t i = 0; i < npass; i++) {
                /* the script takes the long names with their leading dashes */
                static char names[7][16];
                if (i % 2 == 0) {
                        snprintf(names[i / 2], sizeof names[0], "--%s", pass[i]);
                        args[n++] = names[i / 2];
                } else
                        args[n++] = pass[i];
        }
        args[n] = NULL;

        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0)
                return kura_err_errno(err, -errno, KURA_E_INTERNAL, "free some memory or processes and retry",
                                      "cannot start %s", script);
        if (pid == 0) {
                execv("/bin/bash", (char *const *)args);
                fprintf(stderr, "kura: error: %s: cannot run /bin/bash %s: %s\n  remedy: apt-get install bash\n",
                        KURA_E_TOOL_MISSING, script, strerror(errno));
                _exit(127);
        }
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return kura_err_errno(err, -errno, KURA_E_INTERNAL, "retry", "waiting for %s failed",
                                              script);
        if (WIFSIGNALED(status))
                return kura_err(err, EINTR, KURA_E_INTERRUPTED, "run 'kura rescue build' again",
                                "the rescue image builder was killed by signal %d; %s was not written",
                                WTERMSIG(status), out);
        /* The script has printed its own error (code, message, remedy). */
        return WEXITSTATUS(status);
}
