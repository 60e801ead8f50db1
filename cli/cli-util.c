/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Helpers shared by the verbs of the `kura` command: option parsing,
 * passphrases, opening the repository, error and JSON output, sizes and
 * times, the progress bar and the interrupt handler.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "kura/snap.h"

#define PASSWORD_MAX 1024

/* State the signal handler needs; only async-signal-safe use there. */
static CliProgress *volatile active_progress;
static volatile sig_atomic_t tty_fd = -1;
static struct termios tty_saved;
static const Cli *sig_cli;
static const char *usage_verb;

/* ---- options ------------------------------------------------------------ */

int cli_usage_error(KuraErr *err, const char *fmt, ...) {
        char remedy[128];
        if (usage_verb)
                snprintf(remedy, sizeof remedy, "see 'kura %s --help'", usage_verb);
        else
                snprintf(remedy, sizeof remedy, "see 'kura --help'");
        if (err && !err->code) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err->message, sizeof err->message, fmt, ap);
                va_end(ap);
                snprintf(err->remedy, sizeof err->remedy, "%s", remedy);
                err->code = KURA_E_USAGE;
                err->errnum = EINVAL;
        }
        return -EINVAL;
}

int cli_next_opt(Cli *c, int argc, char **argv, const struct option *longopts, KuraErr *err) {
        usage_verb = c->verb;
        for (;;) {
                if (c->help_shown)
                        return 0;
                /* Leading ':' so that a missing argument is told apart from an
                 * unknown option; opterr = 0 because we print errors ourselves. */
                opterr = 0;
                int o = getopt_long(argc, argv, ":h", longopts, NULL);
                switch (o) {
                case -1:
                        return 0;
                case 'h':
                        fputs(c->verb_help, stdout);
                        c->help_shown = true;
                        return 0;
                case OPT_REPO:
                        c->repo = optarg;
                        continue;
                case OPT_JSON:
                        c->json = true;
                        continue;
                case OPT_PASSWORD_FILE:
                        c->password_file = optarg;
                        continue;
                case ':':
                        return cli_usage_error(err, "option '%s' needs an argument", argv[optind - 1]);
                case '?':
                        if (optopt > 0 && optopt < 0x100)
                                return cli_usage_error(err, "unknown option '-%c'", optopt);
                        return cli_usage_error(err, "unknown option '%s'", argv[optind - 1]);
                default:
                        return o;
                }
        }
}

int cli_parse_uint(const char *opt, const char *s, uint64_t max, uint64_t *ret, KuraErr *err) {
        char *end;
        errno = 0;
        if (!s || !*s || *s == '-' || *s == '+')
                return cli_usage_error(err, "%s: '%s' is not a number", opt, s ? s : "");
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end || v > max)
                return cli_usage_error(err, "%s: '%s' is not a number from 0 to %" PRIu64, opt, s, max);
        *ret = v;
        return 0;
}

int cli_parse_size(const char *opt, const char *s, uint64_t *ret, KuraErr *err) {
        char *end;
        errno = 0;
        if (!s || !*s || *s == '-' || *s == '+')
                return cli_usage_error(err, "%s: '%s' is not a size", opt, s ? s : "");
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s)
                return cli_usage_error(err, "%s: '%s' is not a size", opt, s);
        unsigned shift = 0;
        switch (*end) {
        case 'k':
        case 'K':
                shift = 10;
                end++;
                break;
        case 'm':
        case 'M':
                shift = 20;
                end++;
                break;
        case 'g':
        case 'G':
                shift = 30;
                end++;
                break;
        case 't':
        case 'T':
                shift = 40;
                end++;
                break;
        default:
                break;
        }
        /* Accept "64M", "64MiB", "64MB" (all binary: sizes of chunks and
         * KDF memory are powers of two in practice). */
        if (shift && (!strcmp(end, "iB") || !strcmp(end, "B")))
                end += strlen(end);
        else if (!shift && !strcmp(end, "B"))
                end++;
        if (*end)
                return cli_usage_error(err, "%s: '%s' is not a size (use e.g. 1M, 256K, 64MiB)", opt, s);
        if (shift && v > (UINT64_MAX >> shift))
                return cli_usage_error(err, "%s: '%s' is too large", opt, s);
        *ret = (uint64_t)v << shift;
        return 0;
}

int cli_repo_path(Cli *c, const char **ret, KuraErr *err) {
        if (!c->repo || !*c->repo)
                return kura_err(err, EINVAL, KURA_E_USAGE, "pass --repo DIR or set KURA_REPO", "no repository given");
        *ret = c->repo;
        return 0;
}

/* ---- passwords ------------------------------------------------------------ */

void cli_secret_free(char *s) {
        if (s) {
                explicit_bzero(s, strlen(s));
                free(s);
        }
}

static int read_password_file(const char *path, char **ret, KuraErr *err) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_NO_PASSWORD, "check the path given to --password-file",
                                      "cannot open password file %s", path);
        char buf[PASSWORD_MAX + 1];
        size_t n = 0;
        while (n < sizeof buf - 1) {
                ssize_t k = read(fd, buf + n, sizeof buf - 1 - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        int e = errno;
                        close(fd);
                        explicit_bzero(buf, sizeof buf);
                        return kura_err_errno(err, -e, KURA_E_NO_PASSWORD, "check the password file",
                                              "cannot read password file %s", path);
                }
                if (k == 0)
                        break;
                n += (size_t)k;
        }
        close(fd);
        buf[n] = 0;
        /* First line only, its newline stripped. */
        buf[strcspn(buf, "\n")] = 0;
        size_t len = strlen(buf);
        if (len > 0 && buf[len - 1] == '\r')
                buf[--len] = 0;
        if (len == 0) {
                explicit_bzero(buf, sizeof buf);
                return kura_err(err, ENOKEY, KURA_E_NO_PASSWORD, "write the passphrase on the file's first line",
                                "password file %s is empty", path);
        }
        *ret = strdup(buf);
        explicit_bzero(buf, sizeof buf);
        if (!*ret)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory", "out of memory");
        return 0;
}

static int prompt_once(int fd, const char *prompt, char **ret, KuraErr *err) {
        char buf[PASSWORD_MAX + 1];
        size_t n = 0;
        struct termios t;
        bool echo_off = false;

        if (tcgetattr(fd, &tty_saved) == 0) {
                t = tty_saved;
                t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
                t.c_lflag |= ICANON;
                tty_fd = fd;
                if (tcsetattr(fd, TCSAFLUSH, &t) == 0)
                        echo_off = true;
        }
        (void)!write(fd, prompt, strlen(prompt));
        for (;;) {
                char ch;
                ssize_t k = read(fd, &ch, 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0 || ch == '\n')
                        break;
                if (n < PASSWORD_MAX)
                        buf[n++] = ch;
        }
        buf[n] = 0;
        if (echo_off)
                tcsetattr(fd, TCSAFLUSH, &tty_saved);
        tty_fd = -1;
        (void)!write(fd, "\n", 1);
        if (n > 0 && buf[n - 1] == '\r')
                buf[--n] = 0;
        if (n == 0) {
                explicit_bzero(buf, sizeof buf);
                return kura_err(err, ENOKEY, KURA_E_NO_PASSWORD, "enter a non-empty passphrase", "empty passphrase");
        }
        *ret = strdup(buf);
        explicit_bzero(buf, sizeof buf);
        if (!*ret)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory", "out of memory");
        return 0;
}

static int prompt_password(const char *what, bool twice, char **ret, KuraErr *err) {
        int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || !isatty(fd)) {
                if (fd >= 0)
                        close(fd);
                return kura_err(err, ENOKEY, KURA_E_NO_PASSWORD,
                                "set KURA_PASSWORD, pass --password-file FILE, or run kura on a terminal",
                                "no passphrase given and no terminal to ask for one");
        }
        char prompt[160], *a = NULL, *b = NULL;
        snprintf(prompt, sizeof prompt, "%s: ", what);
        int r = prompt_once(fd, prompt, &a, err);
        if (r >= 0 && twice) {
                snprintf(prompt, sizeof prompt, "Repeat %s: ", what);
                r = prompt_once(fd, prompt, &b, err);
                if (r >= 0 && strcmp(a, b) != 0)
                        r = kura_err(err, ENOKEY, KURA_E_NO_PASSWORD,
                                     "run the command again and type the same passphrase twice",
                                     "the passphrases do not match");
        }
        close(fd);
        cli_secret_free(b);
        if (r < 0) {
                cli_secret_free(a);
                return r;
        }
        *ret = a;
        return 0;
}

int cli_password_cb(void *userdata, char **ret) {
        Cli *c = userdata;
        const char *e = getenv("KURA_PASSWORD");
        if (e) {
                *ret = strdup(e);
                return *ret ? 0 : -ENOMEM;
        }
        if (c->password_file)
                return read_password_file(c->password_file, ret, &c->pw_err);
        return prompt_password("Passphrase", false, ret, &c->pw_err);
}

int cli_new_password(const char *env, const char *file, const char *what, char **ret, KuraErr *err) {
        const char *e = getenv(env);
        if (e) {
                if (!*e)
                        return kura_err(err, ENOKEY, KURA_E_NO_PASSWORD, "set a non-empty passphrase", "%s is empty",
                                        env);
                *ret = strdup(e);
                if (!*ret)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory", "out of memory");
                return 0;
        }
        if (file)
                return read_password_file(file, ret, err);
        return prompt_password(what, true, ret, err);
}

int cli_repo_open(Cli *c, KuraLockMode mode, KuraRepo **ret, KuraErr *err) {
        const char *path = NULL;
        int r = cli_repo_path(c, &path, err);
        if (r < 0)
                return r;
        KuraRepoOpenOpts o = {
                .lock = mode,
                .password_fn = cli_password_cb,
                .password_userdata = c,
        };
        KuraErr lib = {0};
        kura_err_clear(&c->pw_err);
        r = kura_repo_open(path, &o, ret, &lib);
        if (r < 0) {
                /* The library only sees the callback's errno; our own error
                 * says why there is no passphrase, so it wins. */
                if (kura_err_isset(&c->pw_err)) {
                        if (err && !err->code)
                                *err = c->pw_err;
                        return -c->pw_err.errnum;
                }
                if (err && !err->code)
                        *err = lib;
                if (!kura_err_isset(&lib))
                        return kura_err_errno(err, r, KURA_E_REPO_IO, "check the repository path and permissions",
                                              "cannot open repository %s", path);
                return r;
        }
        if (mode == KURA_LOCK_SHARED_OR_NONE && kura_repo_unlocked(*ret))
                cli_warn(KURA_W_NO_LOCK, "repository is read-only; %s without a lock",
                         c->verb && !strcmp(c->verb, "check") ? "checking" : "restoring");
        return 0;
}

/* ---- output --------------------------------------------------------------- */

void cli_warn(const char *code, const char *fmt, ...) {
        CliProgress *p = active_progress;
        if (p && p->drawn) {
                fputs("\r\033[K", stderr);
                p->drawn = false;
        }
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "kura: warning: %s: ", code);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}

void cli_json_print(json_t *j) {
        json_dumpf(j, stdout, JSON_INDENT(2));
        fputc('\n', stdout);
        fflush(stdout);
}

void cli_print_error(const Cli *c, const KuraErr *e) {
        const char *code = e->code ? e->code : KURA_E_INTERNAL;
        if (c->json) {
                _cleanup_json_ json_t *j = json_pack("{s:{s:s, s:s, s:s, s:i}}", "error", "code", code, "message",
                                                     e->message, "remedy", e->remedy, "errno", e->errnum);
                if (j)
                        cli_json_print(j);
                return;
        }
        fprintf(stderr, "kura: error: %s: %s\n", code, e->message);
        if (e->remedy[0])
                fprintf(stderr, "  remedy: %s\n", e->remedy);
        if (c->debug)
                fprintf(stderr, "  errno: %d (%s)\n", e->errnum, strerror(e->errnum));
}

static const char *nz(const char *s) {
        return s ? s : "";
}

json_t *cli_json_version(const KuraVersion *v) {
        char t[40];
        json_t *vols = json_array(), *tags = json_array();
        if (!vols || !tags) {
                json_decref(vols);
                json_decref(tags);
                return NULL;
        }
        for (size_t i = 0; i < v->ntags; i++)
                json_array_append_new(tags, json_string(nz(v->tags[i])));
        for (size_t i = 0; i < v->nvolumes; i++) {
                const KuraVolume *vol = &v->volumes[i];
                json_array_append_new(
                        vols, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I}", "name",
                                        nz(vol->name), "path", nz(vol->path), "fs", nz(vol->fs), "uuid", nz(vol->uuid),
                                        "label", nz(vol->label), "size", (json_int_t)vol->size, "chunk_size",
                                        (json_int_t)vol->chunk_size, "chunks", (json_int_t)vol->nchunks, "bytes_read",
                                        (json_int_t)vol->bytes_read, "bytes_new", (json_int_t)vol->bytes_new,
                                        "bytes_stored", (json_int_t)vol->bytes_stored));
        }
        json_t *j = json_pack("{s:s, s:s, s:s, s:o, s:o, s:b, s:o, s:I, s:I, s:I, s:f}", "id", v->id, "time",
                              cli_fmt_time_rfc3339(v->time_ns, t), "hostname", nz(v->hostname), "tags", tags, "parent",
                              v->parent ? json_string(v->parent) : json_null(), "crash_consistent",
                              (int)v->crash_consistent, "volumes", vols, "bytes_read", (json_int_t)v->bytes_read,
                              "bytes_new", (json_int_t)v->bytes_new, "bytes_stored", (json_int_t)v->bytes_stored,
                              "duration", v->duration_s);
        /* Bare-metal recovery: complete when the version holds disk layouts;
         * the layouts themselves as stored (docs/format/repository.md). */
        json_t *disks = v->extra ? json_object_get((json_t *)v->extra, "disks") : NULL;
        json_t *vr = v->extra ? json_object_get((json_t *)v->extra, "verify_restore") : NULL;
        if (j) {
                json_object_set_new(j, "bmr", json_boolean(kura_version_is_bmr(v, NULL)));
                json_object_set_new(j, "disks", json_is_array(disks) ? json_incref(disks) : json_array());
                json_object_set_new(j, "verify_restore", json_is_object(vr) ? json_incref(vr) : json_null());
        }
        return j;
}

const char *cli_fmt_size(uint64_t n, char buf[static 32]) {
        static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
        if (n < 1024) {
                snprintf(buf, 32, "%" PRIu64 " B", n);
                return buf;
        }
        double d = (double)n / 1024;
        size_t u = 0;
        while (d >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
                d /= 1024;
                u++;
        }
        snprintf(buf, 32, "%.1f %s", d, units[u]);
        return buf;
}

const char *cli_fmt_time_local(int64_t ns, char buf[static 32]) {
        time_t s = (time_t)(ns / 1000000000);
        struct tm tm;
        if (!localtime_r(&s, &tm) || !strftime(buf, 32, "%Y-%m-%d %H:%M:%S", &tm))
                snprintf(buf, 32, "?");
        return buf;
}

const char *cli_fmt_time_rfc3339(int64_t ns, char buf[static 40]) {
        time_t s = (time_t)(ns / 1000000000);
        struct tm tm;
        if (!gmtime_r(&s, &tm) || !strftime(buf, 40, "%Y-%m-%dT%H:%M:%SZ", &tm))
                snprintf(buf, 40, "1970-01-01T00:00:00Z");
        return buf;
}

const char *cli_fmt_rate(uint64_t bytes, double secs, char buf[static 32]) {
        if (secs <= 0)
                snprintf(buf, 32, "- MB/s");
        else
                snprintf(buf, 32, "%.1f MB/s", (double)bytes / secs / 1e6);
        return buf;
}

const char *cli_fmt_duration(double secs, char buf[static 32]) {
        if (secs < 0)
                secs = 0;
        if (secs < 60) {
                snprintf(buf, 32, "%.2f s", secs);
                return buf;
        }
        uint64_t s = (uint64_t)(secs + 0.5);
        if (s < 3600)
                snprintf(buf, 32, "%" PRIu64 "m %02" PRIu64 "s", s / 60, s % 60);
        else
                snprintf(buf, 32, "%" PRIu64 "h %02" PRIu64 "m %02" PRIu64 "s", s / 3600, s / 60 % 60, s % 60);
        return buf;
}

/* ---- progress bar ----------------------------------------------------------- */

double cli_now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void cli_progress_begin(CliProgress *p) {
        *p = (CliProgress){.enabled = isatty(STDERR_FILENO) == 1};
        p->start = cli_now();
        active_progress = p;
}

static void progress_draw(CliProgress *p, uint64_t done, uint64_t total, const char *what) {
        if (!p || !p->enabled)
                return;
        double now = cli_now();
        /* At most four redraws a second: a terminal over ssh is slow. */
        if (p->drawn && now - p->last < 0.25 && done < total)
                return;
        p->last = now;
        double el = now - p->start;
        char sd[32], st[32], rate[32], eta[32] = "--:--";
        if (done > 0 && total > done && el > 0.5) {
                double left = (double)(total - done) / ((double)done / el);
                uint64_t l = (uint64_t)(left + 0.5);
                if (l >= 3600)
                        snprintf(eta, sizeof eta, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, l / 3600, l / 60 % 60,
                                 l % 60);
                else
                        snprintf(eta, sizeof eta, "%02" PRIu64 ":%02" PRIu64, l / 60, l % 60);
        } else if (total > 0 && done >= total)
                snprintf(eta, sizeof eta, "00:00");
        double pct = total ? 100.0 * (double)done / (double)total : 0;
        if (pct > 100)
                pct = 100;
        char bar[21];
        int fill = (int)(pct / 5);
        for (int i = 0; i < 20; i++)
                bar[i] = i < fill ? '#' : '-';
        bar[20] = 0;
        fprintf(stderr, "\r\033[K[%s] %5.1f%% %s / %s  %s  ETA %s%s%s", bar, pct, cli_fmt_size(done, sd),
                cli_fmt_size(total, st), cli_fmt_rate(done, el, rate), eta, what ? "  " : "", what ? what : "");
        fflush(stderr);
        p->drawn = true;
}

void cli_progress_job(void *userdata, const KuraProgress *kp) {
        progress_draw(userdata, kp->bytes_done, kp->bytes_total, kp->volume);
}

void cli_progress_simple(void *userdata, uint64_t done, uint64_t total) {
        progress_draw(userdata, done, total, NULL);
}

void cli_progress_end(CliProgress *p) {
        if (p->enabled && p->drawn) {
                fputs("\r\033[K", stderr);
                fflush(stderr);
        }
        p->drawn = false;
        active_progress = NULL;
}

/* ---- signals ---------------------------------------------------------------- */

static void on_signal(int sig) {
        /* Only async-signal-safe calls.  The library has no cancellation
         * point, so we stop here: an interrupted backup leaves no visible
         * version (the manifest is written last), and our lock file names
         * a dead process on this host, which kura treats as stale. */
        static const char clear[] = "\r\033[K";
        static const char text[] = "kura: error: KURA-E-INTERRUPTED: interrupted\n"
                                   "  remedy: run the command again; 'kura prune' removes leftovers of an "
                                   "interrupted backup\n";
        static const char js[] = "{\"error\": {\"code\": \"KURA-E-INTERRUPTED\", \"message\": \"interrupted\", "
                                 "\"remedy\": \"run the command again; 'kura prune' removes leftovers of an "
                                 "interrupted backup\", \"errno\": 4}}\n";
        (void)sig;
        /* Thaw every filesystem this process froze and kill its writers
         * first: a frozen server is worse than a failed backup. */
        kura_snap_emergency_cleanup();
        if (tty_fd >= 0)
                tcsetattr(tty_fd, TCSANOW, &tty_saved);
        CliProgress *p = active_progress;
        if (p && p->drawn)
                (void)!write(STDERR_FILENO, clear, sizeof clear - 1);
        if (sig_cli && sig_cli->json)
                (void)!write(STDOUT_FILENO, js, sizeof js - 1);
        else
                (void)!write(STDERR_FILENO, text, sizeof text - 1);
        _exit(CLI_EXIT_INTERRUPTED);
}

void cli_signals_setup(const Cli *c) {
        sig_cli = c;
        struct sigaction sa = {.sa_handler = on_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
}
