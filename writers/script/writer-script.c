/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kura-writer-script: runs administrator-given commands at chosen events, for
 * applications without a writer of their own (pre-freeze / post-thaw hooks).
 *
 *   kura-writer-script [--name NAME] [--class-id UUID] [--timeout SECONDS]
 *                      [--usage USAGE] [--restore-method METHOD] [--freeze-limit SECONDS]
 *                      --component NAME:PATH ... --on EVENT=COMMAND ...
 *
 * Each COMMAND runs through /bin/sh -c in its own process group, stdin from
 * /dev/null, its output sent to kura as log lines (never to our stdout, which
 * belongs to the protocol), with KURA_EVENT, KURA_BACKUP_TYPE, KURA_ABORT_STATE,
 * KURA_SUCCEEDED, KURA_RESTORE_TYPE in its environment.  Exit 0: ok; 75
 * (EX_TEMPFAIL): retryable; anything else, a signal or the per-command timeout
 * (--timeout, default 30 s; the whole process group is killed): non-retryable
 * with the status and the last line the command wrote to stderr.
 *
 * abort (and a lost peer, a signal, the freeze watchdog) runs the `abort`
 * commands if any are given; otherwise, while frozen, the `thaw` commands, so
 * that whatever freeze stopped is started again.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kura-writer.h"

typedef struct Hook {
        char *event;
        char *cmd;
} Hook;

typedef struct Comp {
        char *name;
        char **paths;           /* NULL-terminated */
        size_t npaths;
} Comp;

typedef struct Ctx {
        Hook *hooks;
        size_t nhooks;
        Comp *comps;
        size_t ncomps;
        unsigned timeout_s;
        const char *usage;
        const char *restore_method;
        bool frozen;
        bool lost_freeze;
} Ctx;

static const char *const known_events[] = {
        "prepare-for-backup", "prepare-for-snapshot", "freeze", "thaw", "post-snapshot", "backup-complete",
        "backup-shutdown", "abort", "pre-restore", "post-restore", NULL,
};

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Output of a command, split into lines that go to kura as logs. */
typedef struct Out {
        char buf[4096];
        size_t len;
        char last[512];         /* last non-empty line (stderr) */
        const char *level;
} Out;

static void out_line(Out *o, const char *s, size_t n) {
        if (n == 0)
                return;
        kw_log(o->level, "%.*s", (int) n, s);
        snprintf(o->last, sizeof(o->last), "%.*s", (int) n, s);
}

static void out_feed(Out *o, const char *data, size_t n, bool flush) {
        for (size_t i = 0; i < n; i++) {
                if (data[i] == '\n' || o->len == sizeof(o->buf)) {
                        out_line(o, o->buf, o->len);
                        o->len = 0;
                        if (data[i] == '\n')
                                continue;
                }
                o->buf[o->len++] = data[i];
        }
        if (flush && o->len) {
                out_line(o, o->buf, o->len);
                o->len = 0;
        }
}

/* Read what is there now; returns false once the pipe is closed. */
static bool drain(int fd, Out *o) {
        char b[4096];
        for (;;) {
                ssize_t n = read(fd, b, sizeof(b));
                if (n > 0) {
                        out_feed(o, b, (size_t) n, false);
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return true;
                return false;
        }
}

static void set_env(const char *k, const char *v) {
        if (v)
                setenv(k, v, 1);
        else
                unsetenv(k);
}

/* Run one command; KW_OK or a failure with req->message filled. */
static KwStatus run_cmd(Ctx *c, const char *event, const char *cmd, const json_t *args, KwRequest *req) {
        int po[2], pe[2];
        if (pipe2(po, O_CLOEXEC) < 0)
                return kw_fail(req, KW_RETRYABLE, "pipe: %s", strerror(errno));
        if (pipe2(pe, O_CLOEXEC) < 0) {
                close(po[0]);
                close(po[1]);
                return kw_fail(req, KW_RETRYABLE, "pipe: %s", strerror(errno));
        }
        kw_log("info", "%s: running %s", event, cmd);
        pid_t pid = fork();
        if (pid < 0) {
                close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
                return kw_fail(req, KW_RETRYABLE, "fork: %s", strerror(errno));
        }
        if (pid == 0) {
                setpgid(0, 0);
                int null = open("/dev/null", O_RDONLY);
                if (null < 0 || dup2(null, 0) < 0 || dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0)
                        _exit(127);
                signal(SIGPIPE, SIG_DFL);
                set_env("KURA_EVENT", event);
                set_env("KURA_BACKUP_TYPE", kw_args_str(args, "backup_type"));
                set_env("KURA_ABORT_STATE", kw_args_str(args, "state"));
                set_env("KURA_RESTORE_TYPE", kw_args_str(args, "restore_type"));
                json_t *s = json_object_get(args, "succeeded");
                set_env("KURA_SUCCEEDED", json_is_boolean(s) ? (json_is_true(s) ? "1" : "0") : NULL);
                execl("/bin/sh", "sh", "-c", cmd, (char *) NULL);
                _exit(127);
        }
        setpgid(pid, pid); /* both sides: no race with the kill below */
        close(po[1]);
        close(pe[1]);
        fcntl(po[0], F_SETFL, O_NONBLOCK);
        fcntl(pe[0], F_SETFL, O_NONBLOCK);

        static Out oo, oe;
        memset(&oo, 0, sizeof(oo));
        memset(&oe, 0, sizeof(oe));
        oo.level = "info";
        oe.level = "warning";
        bool open_o = true, open_e = true, exited = false, timed_out = false;
        int status = 0;
        int64_t deadline = now_ms() + (int64_t) c->timeout_s * 1000;
        while (!exited) {
                struct pollfd p[2] = { { .fd = open_o ? po[0] : -1, .events = POLLIN },
                                       { .fd = open_e ? pe[0] : -1, .events = POLLIN } };
                int64_t left = deadline - now_ms();
                if (left <= 0) {
                        /* The whole group: a shell's children must not outlive the timeout. */
                        kill(-pid, SIGKILL);
                        kill(pid, SIGKILL);
                        timed_out = true;
                        waitpid(pid, &status, 0);
                        break;
                }
                (void) poll(p, 2, left > 100 ? 100 : (int) left);
                if (open_o)
                        open_o = drain(po[0], &oo);
                if (open_e)
                        open_e = drain(pe[0], &oe);
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid)
                        exited = true;
        }
        /* The shell is gone; a background child of it may still hold the
         * pipes: take what is there and do not wait for it. */
        if (open_o)
                drain(po[0], &oo);
        if (open_e)
                drain(pe[0], &oe);
        out_feed(&oo, "", 0, true);
        out_feed(&oe, "", 0, true);
        close(po[0]);
        close(pe[0]);

        if (timed_out)
                return kw_fail(req, KW_NON_RETRYABLE, "%s command `%s` timed out after %u s (killed)%s%s", event,
                               cmd, c->timeout_s, oe.last[0] ? ": " : "", oe.last);
        if (WIFSIGNALED(status))
                return kw_fail(req, KW_NON_RETRYABLE, "%s command `%s` was killed by signal %d%s%s", event, cmd,
                               WTERMSIG(status), oe.last[0] ? ": " : "", oe.last);
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 255;
        if (code == 0)
                return KW_OK;
        return kw_fail(req, code == 75 ? KW_RETRYABLE : KW_NON_RETRYABLE, "%s command `%s` exited with status %d%s%s",
                       event, cmd, code, oe.last[0] ? ": " : "", oe.last);
}

/* Every command for event, in order; stops at the first failure. */
static KwStatus run_event(Ctx *c, const char *event, const json_t *args, KwRequest *req) {
        for (size_t i = 0; i < c->nhooks; i++) {
                if (strcmp(c->hooks[i].event, event) != 0)
                        continue;
                KwStatus s = run_cmd(c, event, c->hooks[i].cmd, args, req);
                if (s != KW_OK)
                        return s;
        }
        return KW_OK;
}

static bool has_event(const Ctx *c, const char *event) {
        for (size_t i = 0; i < c->nhooks; i++)
                if (strcmp(c->hooks[i].event, event) == 0)
                        return true;
        return false;
}

/* Undo: the abort commands, or thaw while frozen. */
static KwStatus undo_now(Ctx *c, const json_t *args, KwRequest *req) {
        KwStatus s = KW_OK;
        if (has_event(c, "abort"))
                s = run_event(c, "abort", args, req);
        else if (c->frozen)
                s = run_event(c, "thaw", args, req);
        c->frozen = false;
        return s;
}

static KwStatus handle(void *userdata, KwRequest *req) {
        Ctx *c = userdata;
        const char *e = req->event;
        if (strcmp(e, "identify") == 0) {
                json_t *comps = json_array();
                for (size_t i = 0; i < c->ncomps; i++) {
                        char logical[512];
                        snprintf(logical, sizeof(logical), "script/%s", c->comps[i].name);
                        json_array_append_new(comps, kw_component(c->comps[i].name, logical, c->usage,
                                                                  c->restore_method,
                                                                  (const char *const *) c->comps[i].paths));
                }
                json_object_set_new(req->result, "components", comps);
                return KW_OK;
        }
        if (strcmp(e, "abort") == 0) {
                c->lost_freeze = false;
                return undo_now(c, req->args, req);
        }
        if (strcmp(e, "freeze") == 0) {
                c->lost_freeze = false;
                KwStatus s = run_event(c, e, req->args, req);
                if (s == KW_OK)
                        c->frozen = true;
                return s;
        }
        if (strcmp(e, "thaw") == 0) {
                bool was_lost = c->lost_freeze;
                c->lost_freeze = false;
                if (was_lost)
                        return kw_fail(req, KW_NON_RETRYABLE,
                                       "the freeze was undone before thaw (freeze limit passed): the snapshot "
                                       "may not be consistent");
                KwStatus s = run_event(c, e, req->args, req);
                if (s == KW_OK)
                        c->frozen = false;
                return s;
        }
        /* Any other event, known or not, runs its commands if some were given. */
        return run_event(c, e, req->args, req);
}

static void undo(void *userdata, const char *why) {
        Ctx *c = userdata;
        if (!c->frozen && !has_event(c, "abort"))
                return;
        /* A peer loss while idle is not an abort of anything. */
        if (!c->frozen && strcmp(why, "kura closed the connection") == 0)
                return;
        kw_log("warning", "undoing: %s", why);
        KwRequest r = { .event = "abort", .args = json_object(), .result = json_object() };
        json_object_set_new(r.args, "state", json_string(c->frozen ? "freeze" : "unknown"));
        bool was_frozen = c->frozen;
        if (undo_now(c, r.args, &r) != KW_OK)
                kw_log("error", "%s", r.message);
        c->lost_freeze = was_frozen;
        json_decref(r.args);
        json_decref(r.result);
}

static void ctx_free(Ctx *c) {
        for (size_t i = 0; i < c->nhooks; i++) {
                free(c->hooks[i].event);
                free(c->hooks[i].cmd);
        }
        free(c->hooks);
        for (size_t i = 0; i < c->ncomps; i++) {
                for (size_t k = 0; k < c->comps[i].npaths; k++)
                        free(c->comps[i].paths[k]);
                free(c->comps[i].paths);
                free(c->comps[i].name);
        }
        free(c->comps);
}

static int add_component(Ctx *c, const char *spec) {
        const char *colon = strchr(spec, ':');
        if (!colon || colon == spec || colon[1] != '/') {
                fprintf(stderr, "%s: --component %s: expected NAME:/ABSOLUTE/PATH\n", kw_program, spec);
                return -EINVAL;
        }
        size_t nl = (size_t) (colon - spec);
        Comp *comp = NULL;
        for (size_t i = 0; i < c->ncomps; i++)
                if (strlen(c->comps[i].name) == nl && memcmp(c->comps[i].name, spec, nl) == 0)
                        comp = &c->comps[i];
        if (!comp) {
                Comp *n = realloc(c->comps, (c->ncomps + 1) * sizeof(*n));
                if (!n)
                        return -ENOMEM;
                c->comps = n;
                comp = &c->comps[c->ncomps++];
                *comp = (Comp) { .name = strndup(spec, nl), .paths = calloc(1, sizeof(char *)) };
                if (!comp->name || !comp->paths)
                        return -ENOMEM;
        }
        char **p = realloc(comp->paths, (comp->npaths + 2) * sizeof(char *));
        if (!p)
                return -ENOMEM;
        comp->paths = p;
        p[comp->npaths++] = strdup(colon + 1);
        p[comp->npaths] = NULL;
        return p[comp->npaths - 1] ? 0 : -ENOMEM;
}

static int add_hook(Ctx *c, const char *spec) {
        const char *eq = strchr(spec, '=');
        bool known = false;
        if (eq) {
                for (size_t i = 0; known_events[i]; i++)
                        if (strlen(known_events[i]) == (size_t) (eq - spec) &&
                            memcmp(known_events[i], spec, (size_t) (eq - spec)) == 0)
                                known = true;
        }
        if (!known || eq[1] == '\0') {
                fprintf(stderr, "%s: --on %s: expected EVENT=COMMAND with EVENT one of", kw_program, spec);
                for (size_t i = 0; known_events[i]; i++)
                        fprintf(stderr, " %s", known_events[i]);
                fputc('\n', stderr);
                return -EINVAL;
        }
        Hook *n = realloc(c->hooks, (c->nhooks + 1) * sizeof(*n));
        if (!n)
                return -ENOMEM;
        c->hooks = n;
        c->hooks[c->nhooks++] = (Hook) { .event = strndup(spec, (size_t) (eq - spec)), .cmd = strdup(eq + 1) };
        return 0;
}

static void usage(void) {
        fprintf(stderr,
                "usage: %s [--name NAME] [--class-id UUID] [--timeout SECONDS] [--usage USAGE]\n"
                "          [--restore-method METHOD] [--freeze-limit SECONDS]\n"
                "          --component NAME:PATH ... --on EVENT=COMMAND ...\n",
                kw_program);
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "on", required_argument, NULL, 'o' },
                { "component", required_argument, NULL, 'C' },
                { "timeout", required_argument, NULL, 't' },
                { "name", required_argument, NULL, 'n' },
                { "class-id", required_argument, NULL, 'i' },
                { "usage", required_argument, NULL, 'u' },
                { "restore-method", required_argument, NULL, 'r' },
                { "freeze-limit", required_argument, NULL, 'f' },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        Ctx c = { .timeout_s = 30, .usage = "user-data", .restore_method = "restore-if-can-replace" };
        const char *name = "Script Writer", *class_id = "3f1e9a52-8c47-4d2b-a6e0-7b5c9d18e204";
        unsigned freeze_limit = 120;
        int o;
        kw_program = "kura-writer-script";
        while ((o = getopt_long(argc, argv, "o:C:t:n:i:u:r:f:h", opts, NULL)) >= 0) {
                switch (o) {
                case 'o':
                        if (add_hook(&c, optarg) < 0)
                                return 2;
                        break;
                case 'C':
                        if (add_component(&c, optarg) < 0)
                                return 2;
                        break;
                case 't':
                        if (kw_parse_seconds(optarg, &c.timeout_s) < 0 || c.timeout_s == 0) {
                                usage();
                                return 2;
                        }
                        break;
                case 'f':
                        if (kw_parse_seconds(optarg, &freeze_limit) < 0) {
                                usage();
                                return 2;
                        }
                        break;
                case 'n':
                        name = optarg;
                        break;
                case 'i':
                        class_id = optarg;
                        break;
                case 'u':
                        c.usage = optarg;
                        break;
                case 'r':
                        c.restore_method = optarg;
                        break;
                case 'h':
                        usage();
                        return 0;
                default:
                        usage();
                        return 2;
                }
        }
        if (optind != argc) {
                usage();
                return 2;
        }
        KwWriterDesc d = {
                .name = name,
                .class_id = class_id,
                .handle = handle,
                .undo = undo,
                .userdata = &c,
                .freeze_limit_s = freeze_limit,
        };
        int r = kw_run(&d);
        ctx_free(&c);
        return r;
}
