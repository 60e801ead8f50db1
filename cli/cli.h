/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * Private header of the `kura` command: the context every verb gets, the
 * shared helpers in cli-util.c, and the verb entry points.
 *
 * A verb returns a negative errno with *err filled on failure, or the exit
 * status it wants (0, or 3 when it found damage and has already said so).
 * Only main() turns failures into exit statuses and prints them.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "kura/engine.h"
#include "kura/errors.h"
#include "kura/image.h"
#include "kura/repo.h"

/* CLI-only warning: the fingerprint cache directory could not be created.
 * Not (yet) in include/kura/errors.h because the library never raises it. */
#define CLI_W_NO_CACHE KURA_W_NO_CACHE

/* Exit statuses (docs/ERRORS.md, kura(1)). */
enum {
        CLI_EXIT_OK = 0,
        CLI_EXIT_FAILURE = 1,
        CLI_EXIT_USAGE = 2,
        CLI_EXIT_DAMAGE = 3,
        CLI_EXIT_AUTH = 4,
        CLI_EXIT_LOCKED = 5,
        CLI_EXIT_INTERRUPTED = 130,
};

typedef struct Cli {
        const char *verb;      /* "backup", ...; NULL before the verb */
        const char *verb_help; /* usage text of the verb being parsed */
        const char *repo;      /* --repo, else KURA_REPO */
        bool json;
        const char *password_file;
        const char *config_dir; /* KURA_CONFIG_DIR or /etc/kura */
        const char *state_dir;  /* KURA_STATE_DIR or /var/lib/kura */
        const char *cache_dir;  /* KURA_CACHE_DIR or /var/cache/kura */
        bool debug;             /* KURA_DEBUG set */
        bool help_shown;        /* --help printed: the verb returns 0 at once */
        KuraErr pw_err;         /* why the password callback failed, if it did */
} Cli;

/* Long-option values shared by every verb (options may come after the verb). */
enum {
        OPT_REPO = 0x100,
        OPT_JSON,
        OPT_PASSWORD_FILE,
        OPT_VERSION,
        OPT_VERB = 0x200, /* verbs number their own options from here */
};

#define CLI_GLOBAL_OPTIONS                                                                                             \
        {"repo", required_argument, NULL, OPT_REPO}, {"json", no_argument, NULL, OPT_JSON},                            \
                {"password-file", required_argument, NULL, OPT_PASSWORD_FILE}, {                                       \
                "help", no_argument, NULL, 'h'                                                                         \
        }

#define _cleanup_(f) __attribute__((cleanup(f)))
static inline void cli_freep(void *p) {
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(cli_freep)
static inline void cli_repo_closep(KuraRepo **r) {
        kura_repo_close(*r);
}
static inline void cli_version_freep(KuraVersion **v) {
        kura_version_free(*v);
}
static inline void cli_json_decrefp(json_t **j) {
        json_decref(*j);
}
#define _cleanup_json_ _cleanup_(cli_json_decrefp)

/* ---- options ------------------------------------------------------------ */

/* Next option of the verb being parsed (call with optind = 0 set by main).
 * Global options are consumed here; -h/--help prints c->verb_help and ends
 * the loop with c->help_shown set.  Returns the option value (> 0), 0 at the
 * end, or -EINVAL with a KURA-E-USAGE error. */
int cli_next_opt(Cli *c, int argc, char **argv, const struct option *longopts, KuraErr *err);
int cli_usage_error(KuraErr *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "64M", "1GiB", "262144": binary multiples.  KURA-E-USAGE naming opt. */
int cli_parse_size(const char *opt, const char *s, uint64_t *ret, KuraErr *err);
int cli_parse_uint(const char *opt, const char *s, uint64_t max, uint64_t *ret, KuraErr *err);
/* The repository path, or a KURA-E-USAGE error. */
int cli_repo_path(Cli *c, const char **ret, KuraErr *err);

/* ---- passwords and opening ---------------------------------------------- */

/* KuraPasswordFn: KURA_PASSWORD, --password-file, a prompt on /dev/tty.
 * userdata is the Cli. */
int cli_password_cb(void *userdata, char **ret);
/* Get a (new) passphrase: environment variable env, else file, else a prompt
 * asked twice on the terminal.  *ret is malloc'ed; wipe with cli_secret_free(). */
int cli_new_password(const char *env, const char *file, const char *what, char **ret, KuraErr *err);
void cli_secret_free(char *s);
/* kura_repo_open() with the CLI's password callback; warns KURA-W-NO-LOCK
 * when a SHARED_OR_NONE open went on without a lock. */
int cli_repo_open(Cli *c, KuraLockMode mode, KuraRepo **ret, KuraErr *err);

/* ---- output ------------------------------------------------------------- */

void cli_warn(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print an error (stderr text, or JSON on stdout with --json). */
void cli_print_error(const Cli *c, const KuraErr *err);
/* Print j to stdout followed by a newline. */
void cli_json_print(json_t *j);
/* The versions --json entry of v (new reference). */
json_t *cli_json_version(const KuraVersion *v);
/* "1.5 GiB", "512 B". */
const char *cli_fmt_size(uint64_t n, char buf[static 32]);
/* Local "YYYY-MM-DD HH:MM:SS" and UTC RFC 3339. */
const char *cli_fmt_time_local(int64_t ns, char buf[static 32]);
const char *cli_fmt_time_rfc3339(int64_t ns, char buf[static 40]);
/* "12.3 MB/s" (decimal MB, as dd and most tools print rates). */
const char *cli_fmt_rate(uint64_t bytes, double secs, char buf[static 32]);
const char *cli_fmt_duration(double secs, char buf[static 32]);

/* ---- progress bar --------------------------------------------------------- */

typedef struct CliProgress {
        bool enabled;       /* stderr is a terminal */
        bool drawn;         /* a line is on screen */
        double start, last; /* monotonic seconds */
} CliProgress;

void cli_progress_begin(CliProgress *p);
void cli_progress_job(void *userdata, const KuraProgress *kp);           /* KuraJobProgressFn */
void cli_progress_simple(void *userdata, uint64_t done, uint64_t total); /* KuraProgressFn */
void cli_progress_end(CliProgress *p);
double cli_now(void);

/* Install the SIGINT/SIGTERM handler (clears the bar, restores the terminal, exits 130). */
void cli_signals_setup(const Cli *c);

/* ---- verbs -------------------------------------------------------------- */

extern const char verb_init_help[], verb_key_help[], verb_backup_help[], verb_versions_help[], verb_restore_help[],
        verb_check_help[], verb_forget_help[], verb_prune_help[], verb_unlock_help[], verb_explain_help[];

int verb_init(Cli *c, int argc, char **argv, KuraErr *err);
int verb_key(Cli *c, int argc, char **argv, KuraErr *err);
int verb_backup(Cli *c, int argc, char **argv, KuraErr *err);
int verb_versions(Cli *c, int argc, char **argv, KuraErr *err);
int verb_restore(Cli *c, int argc, char **argv, KuraErr *err);
extern const char verb_bmr_help[];
int verb_bmr(Cli *c, int argc, char **argv, KuraErr *err);
extern const char verb_verify_restore_help[];
int verb_verify_restore(Cli *c, int argc, char **argv, KuraErr *err);
int verb_check(Cli *c, int argc, char **argv, KuraErr *err);
int verb_forget(Cli *c, int argc, char **argv, KuraErr *err);
int verb_prune(Cli *c, int argc, char **argv, KuraErr *err);
int verb_unlock(Cli *c, int argc, char **argv, KuraErr *err);
int verb_explain(Cli *c, int argc, char **argv, KuraErr *err);
extern const char verb_writers_help[];
int verb_writers(Cli *c, int argc, char **argv, KuraErr *err);
extern const char verb_providers_help[], verb_shadows_help[], verb_shadowstorage_help[];
int verb_providers(Cli *c, int argc, char **argv, KuraErr *err);
int verb_shadows(Cli *c, int argc, char **argv, KuraErr *err);
int verb_shadowstorage(Cli *c, int argc, char **argv, KuraErr *err);
