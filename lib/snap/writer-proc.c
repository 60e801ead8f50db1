/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The writer process (docs/format/writer-protocol.md §2, §4, §7).
 *
 * A writer is untrusted and may hang, crash or flood us.  So: every read is
 * poll()ed against an absolute deadline and bounded (one line at most
 * KURA_WRITER_LINE_MAX, stderr kept in a 4 KiB ring); writes never block
 * past a deadline (non-blocking socket, MSG_NOSIGNAL); the writer runs in its
 * own session, so SIGKILL to its process group takes its children too; it is
 * reaped with waitid(WNOWAIT) first so the group id cannot be reused between
 * the kill and the reap.
 *
 * Everything that is not async-signal-safe (user lookup, group list,
 * environment) is prepared before fork(): the coordinator may have threads.
 * The child reports a failure before or at exec through a CLOEXEC pipe as
 * {stage, errno}, so "program missing" and "permission denied" are told apart
 * from a writer that started and then failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <math.h>
#include <pthread.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "snap/writer-internal.h"

struct KuraWriterProc {
        pid_t pid;                 /* also the process group id; 0 once reaped */
        bool exited;               /* waitid() saw it exit (maybe not reaped yet) */
        int status_code, status_kind; /* si_status, si_code */
        int fd;                    /* our end of the socket pair */
        int errfd;                 /* stderr pipe, -1 at EOF */
        char ring[KURA_WRITER_STDERR_RING];
        size_t ring_head, ring_len;
        char ring_text[KURA_WRITER_STDERR_RING + 1];
        char *buf;                 /* line buffer, KURA_WRITER_LINE_MAX + 1 */
        size_t len, consumed;
        bool eof;
        char exit_str[64];
};

enum { STAGE_SETUP = 1, STAGE_USER, STAGE_EXEC };

pid_t kura_wproc_pid(const KuraWriterProc *p) {
        return p ? p->pid : 0;
}

static void ring_put(KuraWriterProc *p, const char *b, size_t n) {
        for (size_t i = 0; i < n; i++) {
                p->ring[(p->ring_head + p->ring_len) % sizeof p->ring] = b[i];
                if (p->ring_len < sizeof p->ring)
                        p->ring_len++;
                else
                        p->ring_head = (p->ring_head + 1) % sizeof p->ring;
        }
}

static void drain_stderr(KuraWriterProc *p) {
        char b[4096];
        while (p->errfd >= 0) {
                ssize_t n = read(p->errfd, b, sizeof b);
                if (n > 0) {
                        ring_put(p, b, (size_t)n);
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                close(p->errfd);
                p->errfd = -1;
        }
}

const char *kura_wproc_stderr(KuraWriterProc *p) {
        if (!p)
                return "";
        drain_stderr(p);
        size_t k = 0;
        for (size_t i = 0; i < p->ring_len; i++) {
                char ch = p->ring[(p->ring_head + i) % sizeof p->ring];
                p->ring_text[k++] = ch == 0 ? ' ' : ch;
        }
        p->ring_text[k] = 0;
        return p->ring_text;
}

/* Collect the exit status without reaping (so the pgid stays ours). */
static bool check_exited(KuraWriterProc *p) {
        if (p->pid <= 0 || p->exited)
                return p->exited || p->pid <= 0;
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == p->pid) {
                p->exited = true;
                p->status_kind = si.si_code;
                p->status_code = si.si_status;
                if (si.si_code == CLD_EXITED)
                        snprintf(p->exit_str, sizeof p->exit_str, "exited with status %d", si.si_status);
                else
                        snprintf(p->exit_str, sizeof p->exit_str, "killed by signal %d (%s)", si.si_status,
                                 sigabbrev_np(si.si_status) ? sigabbrev_np(si.si_status) : "?");
        }
        return p->exited;
}

const char *kura_wproc_exit_str(KuraWriterProc *p) {
        if (!p)
                return "";
        check_exited(p);
        return p->exit_str;
}

static void reap(KuraWriterProc *p) {
        if (p->pid <= 0)
                return;
        /* Kill the group first: the leader (zombie or alive) still holds the id. */
        kill(-p->pid, SIGKILL);
        /* SIGKILL is not instant for a task in uninterruptible sleep: wait a
         * bounded time, never forever. */
        double until = kura_mono() + 5;
        for (;;) {
                int st;
                pid_t r = waitpid(p->pid, &st, WNOHANG);
                if (r == p->pid || (r < 0 && errno == ECHILD)) {
                        if (r == p->pid && !p->exited) {
                                p->exited = true;
                                if (WIFEXITED(st))
                                        snprintf(p->exit_str, sizeof p->exit_str, "exited with status %d",
                                                 WEXITSTATUS(st));
                                else if (WIFSIGNALED(st))
                                        snprintf(p->exit_str, sizeof p->exit_str, "killed by signal %d (%s)",
                                                 WTERMSIG(st),
                                                 sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
                        }
                        break;
                }
                if (kura_mono() > until)
                        break; /* leave a zombie rather than hang */
                struct timespec ts = {0, 5 * 1000 * 1000};
                nanosleep(&ts, NULL);
        }
        kura_snap_emergency_del_pgid(p->pid);
        p->pid = 0;
}

void kura_wproc_kill(KuraWriterProc *p) {
        if (!p)
                return;
        check_exited(p);
        reap(p);
        drain_stderr(p);
}

void kura_wproc_stop(KuraWriterProc *p, double grace_s) {
        if (!p)
                return;
        double until = kura_mono() + grace_s;
        while (p->pid > 0 && !check_exited(p) && kura_mono() < until) {
                struct pollfd pf = {.fd = p->errfd, .events = POLLIN};
                if (p->errfd >= 0 && poll(&pf, 1, 10) > 0)
                        drain_stderr(p);
                else {
                        struct timespec ts = {0, 10 * 1000 * 1000};
                        nanosleep(&ts, NULL);
                }
        }
        reap(p);
        drain_stderr(p);
}

KuraWriterProc *kura_wproc_free(KuraWriterProc *p) {
        if (!p)
                return NULL;
        kura_wproc_kill(p);
        if (p->fd >= 0)
                close(p->fd);
        if (p->errfd >= 0)
                close(p->errfd);
        free(p->buf);
        free(p);
        return NULL;
}

static int ms_until(double deadline) {
        double left = deadline - kura_mono();
        if (left <= 0)
                return 0;
        if (left > 3600)
                return 3600 * 1000;
        return (int)ceil(left * 1000);
}

int kura_wproc_send(KuraWriterProc *p, const char *line, size_t len, double deadline) {
        size_t off = 0;
        while (off < len) {
                ssize_t n = send(p->fd, line + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) {
                        off += (size_t)n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != EAGAIN)
                        return -EPIPE;
                struct pollfd pf[2] = {{.fd = p->fd, .events = POLLOUT}, {.fd = p->errfd, .events = POLLIN}};
                int ms = ms_until(deadline);
                if (ms == 0)
                        return -ETIMEDOUT;
                int r = poll(pf, p->errfd >= 0 ? 2 : 1, ms);
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r > 0 && p->errfd >= 0 && pf[1].revents)
                        drain_stderr(p);
        }
        return 0;
}

int kura_wproc_recv(KuraWriterProc *p, double deadline, const char **ret, size_t *ret_len) {
        for (;;) {
                /* A complete line already buffered? */
                char *start = p->buf + p->consumed;
                size_t avail = p->len - p->consumed;
                char *nl = memchr(start, '\n', avail);
                if (nl) {
                        size_t n = (size_t)(nl - start);
                        *nl = 0;
                        p->consumed += n + 1;
                        if (n + 1 > KURA_WRITER_LINE_MAX)
                                return -EMSGSIZE;
                        *ret = start;
                        *ret_len = n;
                        return 0;
                }
                if (avail >= KURA_WRITER_LINE_MAX)
                        return -EMSGSIZE;
                if (p->eof)
                        return -EPIPE;
                if (p->consumed > 0) {
                        memmove(p->buf, start, avail);
                        p->len = avail;
                        p->consumed = 0;
                }
                ssize_t n = recv(p->fd, p->buf + p->len, KURA_WRITER_LINE_MAX - p->len, MSG_DONTWAIT);
                if (n > 0) {
                        p->len += (size_t)n;
                        continue;
                }
                if (n == 0) {
                        p->eof = true;
                        continue;
                }
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN) {
                        p->eof = true;
                        continue;
                }
                struct pollfd pf[2] = {{.fd = p->fd, .events = POLLIN}, {.fd = p->errfd, .events = POLLIN}};
                int ms = ms_until(deadline);
                if (ms == 0)
                        return -ETIMEDOUT;
                int r = poll(pf, p->errfd >= 0 ? 2 : 1, ms);
                if (r < 0 && errno != EINTR)
                        return -errno;
                if (r > 0 && p->errfd >= 0 && pf[1].revents)
                        drain_stderr(p);
        }
}

/* ---- start ---------------------------------------------------------------- */

static void child_fail(int fd, int stage, int e) {
        int msg[2] = {stage, e};
        (void)!write(fd, msg, sizeof msg);
        _exit(127);
}

static void child_close_fds(int keep) {
        /* Close everything >= 3 except the error pipe (CLOEXEC, closed by exec). */
#ifdef SYS_close_range
        if (keep > 3 && syscall(SYS_close_range, 3u, (unsigned)keep - 1, 0u) < 0)
                goto loop;
        if (syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u) < 0)
                goto loop;
        return;
loop:
#endif
        for (int fd = 3; fd < 65536; fd++)
                if (fd != keep)
                        close(fd);
}

int kura_wproc_start(const KuraWriterConf *conf, KuraWriterProc **ret, char *why, size_t whyn) {
        const char *prog = conf->argv ? conf->argv[0] : NULL;
        if (!prog) {
                snprintf(why, whyn, "no program to start");
                return -EINVAL;
        }
        /* Everything the child needs, prepared here (no malloc after fork). */
        uid_t uid = 0;
        gid_t gid = 0;
        gid_t groups[256];
        int ngroups = 0;
        const char *home = "/", *uname = "root";
        _cleanup_free_ char *home_dup = NULL, *uname_dup = NULL;
        bool drop = conf->user && strcmp(conf->user, "root");
        if (drop) {
                errno = 0;
                struct passwd *pw = getpwnam(conf->user);
                if (!pw) {
                        snprintf(why, whyn, "user %s does not exist", conf->user);
                        return -ESRCH;
                }
                uid = pw->pw_uid;
                gid = pw->pw_gid;
                home_dup = strdup(pw->pw_dir ? pw->pw_dir : "/");
                uname_dup = strdup(pw->pw_name);
                if (!home_dup || !uname_dup)
                        return -ENOMEM;
                home = home_dup;
                uname = uname_dup;
                ngroups = (int)ELEMENTSOF(groups);
                if (getgrouplist(uname, gid, groups, &ngroups) < 0)
                        ngroups = 0; /* too many: fall back to the primary group only */
        }
        size_t nenv = 0;
        for (char **e = conf->env; e && *e; e++)
                nenv++;
        _cleanup_free_ char **envp = calloc(nenv + 8, sizeof(char *));
        _cleanup_free_ char *e_home = kura_asprintf("HOME=%s", home);
        _cleanup_free_ char *e_user = kura_asprintf("USER=%s", uname);
        _cleanup_free_ char *e_logname = kura_asprintf("LOGNAME=%s", uname);
        if (!envp || !e_home || !e_user || !e_logname)
                return -ENOMEM;
        /* A clean environment: never leak the caller's (KURA_PASSWORD...). */
        size_t k = 0;
        envp[k++] = (char *)"KURA_WRITER_PROTOCOL=1";
        envp[k++] = (char *)"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        envp[k++] = e_home;
        envp[k++] = e_user;
        envp[k++] = e_logname;
        for (char **e = conf->env; e && *e; e++)
                envp[k++] = *e;
        envp[k] = NULL;

        KuraWriterProc *p = calloc(1, sizeof *p);
        if (!p)
                return -ENOMEM;
        p->fd = p->errfd = -1;
        if (!(p->buf = malloc(KURA_WRITER_LINE_MAX + 1))) {
                free(p);
                return -ENOMEM;
        }
        int sv[2] = {-1, -1}, ep[2] = {-1, -1}, xp[2] = {-1, -1};
        int r;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(ep, O_CLOEXEC) < 0 ||
            pipe2(xp, O_CLOEXEC) < 0) {
                r = -errno;
                snprintf(why, whyn, "cannot create pipes: %s", strerror(-r));
                goto fail;
        }
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pid_t pid = fork();
        if (pid == 0) {
                /* Child: only async-signal-safe calls from here on. */
                int x = fcntl(xp[1], F_DUPFD_CLOEXEC, 10);
                int s = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);
                int e = fcntl(ep[1], F_DUPFD_CLOEXEC, 10);
                if (x < 0)
                        _exit(127);
                if (s < 0 || e < 0)
                        child_fail(x, STAGE_SETUP, errno);
                if (setsid() < 0)
                        child_fail(x, STAGE_SETUP, errno);
                if (dup2(s, 0) < 0 || dup2(s, 1) < 0 || dup2(e, 2) < 0)
                        child_fail(x, STAGE_SETUP, errno);
                child_close_fds(x);
                struct sigaction sa = {.sa_handler = SIG_DFL};
                for (int sig = 1; sig < NSIG; sig++)
                        if (sig != SIGKILL && sig != SIGSTOP)
                                sigaction(sig, &sa, NULL);
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                if (drop) {
                        if (setgroups((size_t)ngroups, groups) < 0 || setresgid(gid, gid, gid) < 0 ||
                            setresuid(uid, uid, uid) < 0)
                                child_fail(x, STAGE_USER, errno);
                }
                if (chdir("/") < 0)
                        child_fail(x, STAGE_SETUP, errno);
                execve(conf->argv[0], conf->argv, envp);
                child_fail(x, STAGE_EXEC, errno);
        }
        int fork_errno = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (pid < 0) {
                r = -fork_errno;
                snprintf(why, whyn, "cannot fork: %s", strerror(fork_errno));
                goto fail;
        }
        p->pid = pid;
        /* The table is full: still run it, it is reaped on every path anyway. */
        (void)kura_snap_emergency_add_pgid(pid);
        close(sv[1]);
        close(ep[1]);
        close(xp[1]);
        sv[1] = ep[1] = xp[1] = -1;
        p->fd = sv[0];
        p->errfd = ep[0];
        sv[0] = ep[0] = -1;
        fcntl(p->fd, F_SETFL, O_NONBLOCK);
        fcntl(p->errfd, F_SETFL, O_NONBLOCK);

        /* EOF on the CLOEXEC pipe: exec succeeded.  Bounded wait. */
        int msg[2] = {0, 0};
        size_t got = 0;
        double until = kura_mono() + 10;
        while (got < sizeof msg) {
                struct pollfd pf = {.fd = xp[0], .events = POLLIN};
                int pr = poll(&pf, 1, ms_until(until));
                if (pr == 0)
                        break;
                if (pr < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                ssize_t n = read(xp[0], (char *)msg + got, sizeof msg - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t)n;
        }
        close(xp[0]);
        xp[0] = -1;
        if (got == sizeof msg) {
                int e = msg[1];
                if (msg[0] == STAGE_EXEC && (e == ENOENT || e == ENOTDIR))
                        snprintf(why, whyn, "program %s is missing", prog);
                else if (msg[0] == STAGE_EXEC && e == EACCES)
                        snprintf(why, whyn, "permission denied: cannot execute %s", prog);
                else if (msg[0] == STAGE_EXEC && e == ENOEXEC)
                        snprintf(why, whyn, "program %s is not an executable", prog);
                else if (msg[0] == STAGE_EXEC)
                        snprintf(why, whyn, "cannot execute %s: %s", prog, strerror(e));
                else if (msg[0] == STAGE_USER)
                        snprintf(why, whyn, "permission denied: cannot switch to user %s: %s", conf->user,
                                 strerror(e));
                else
                        snprintf(why, whyn, "cannot set up the writer process: %s", strerror(e));
                kura_wproc_free(p);
                return e == ENOENT ? -ENOENT : e == EACCES ? -EACCES : -(e ? e : EIO);
        }
        *ret = p;
        return 0;
fail:
        for (int i = 0; i < 2; i++) {
                if (sv[i] >= 0)
                        close(sv[i]);
                if (ep[i] >= 0)
                        close(ep[i]);
                if (xp[i] >= 0)
                        close(xp[i]);
        }
        kura_wproc_free(p);
        return r;
}

/* ---- one writer's conversation ------------------------------------------- */

KuraWriterState kura_writer_failed_state(const char *event) {
        static const struct {
                const char *event;
                KuraWriterState s;
        } map[] = {
                {"identify", KURA_WS_FAILED_AT_IDENTIFY},
                {"prepare-for-backup", KURA_WS_FAILED_AT_PREPARE_BACKUP},
                {"prepare-for-snapshot", KURA_WS_FAILED_AT_PREPARE_SNAPSHOT},
                {"freeze", KURA_WS_FAILED_AT_FREEZE},
                {"thaw", KURA_WS_FAILED_AT_THAW},
                {"post-snapshot", KURA_WS_FAILED_AT_POST_SNAPSHOT},
                {"backup-complete", KURA_WS_FAILED_AT_BACKUP_COMPLETE},
                {"pre-restore", KURA_WS_FAILED_AT_PRE_RESTORE},
                {"post-restore", KURA_WS_FAILED_AT_POST_RESTORE},
                {"backup-shutdown", KURA_WS_FAILED_AT_BACKUP_SHUTDOWN},
        };
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (!strcmp(map[i].event, event))
                        return map[i].s;
        return KURA_WS_UNKNOWN;
}

static KuraWriterState ok_state(const char *event, KuraWriterState cur) {
        if (!strcmp(event, "prepare-for-snapshot"))
                return KURA_WS_WAITING_FOR_FREEZE;
        if (!strcmp(event, "freeze"))
                return KURA_WS_WAITING_FOR_THAW;
        if (!strcmp(event, "thaw"))
                return KURA_WS_WAITING_FOR_POST_SNAPSHOT;
        if (!strcmp(event, "post-snapshot"))
                return KURA_WS_WAITING_FOR_BACKUP_COMPLETE;
        if (!strcmp(event, "identify") || !strcmp(event, "prepare-for-backup") || !strcmp(event, "backup-complete") ||
            !strcmp(event, "abort") || !strcmp(event, "pre-restore") || !strcmp(event, "post-restore"))
                return KURA_WS_STABLE;
        return cur;
}

/* The last line of the writer's stderr, for messages. */
static void last_output(KuraWriterProc *p, char *buf, size_t n) {
        const char *s = kura_wproc_stderr(p);
        size_t l = strlen(s);
        while (l > 0 && (s[l - 1] == '\n' || s[l - 1] == '\r' || s[l - 1] == ' '))
                l--;
        size_t b = l;
        while (b > 0 && s[b - 1] != '\n')
                b--;
        size_t len = KURA_MIN(l - b, n - 1);
        memcpy(buf, s + b, len);
        buf[len] = 0;
        for (char *q = buf; *q; q++)
                if ((unsigned char)*q < 0x20 || *q == 0x7f)
                        *q = ' ';
}

static void set_message(KuraWriter *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_message(KuraWriter *w, const char *fmt, ...) {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        char *m = strdup(buf);
        if (m) {
                free(w->message);
                w->message = m;
        }
}

/* The writer broke a rule or died: kill it, record why. */
static int writer_broke(KuraWriter *w, const char *event, KuraWriterError e, int r, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));
static int writer_broke(KuraWriter *w, const char *event, KuraWriterError e, int r, const char *fmt, ...) {
        char what[600];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        kura_wproc_kill(w->proc);
        char out[300] = "";
        last_output(w->proc, out, sizeof out);
        const char *ex = kura_wproc_exit_str(w->proc);
        KuraWriterState fs = kura_writer_failed_state(event);
        if (fs != KURA_WS_UNKNOWN)
                w->state = fs;
        w->last_error = e;
        w->time_ns = kura_now_ns();
        bool show_exit = e == KURA_WE_UNEXPECTED && *ex;
        set_message(w, "%s%s%s%s%s%s", what, show_exit ? " (the writer " : "", show_exit ? ex : "",
                    show_exit ? ")" : "", *out ? "; its last output: " : "", out);
        w->proc = kura_wproc_free(w->proc);
        w->freeze_sent = 0;
        return r;
}

int kura_writer_start(KuraWriter *w) {
        char why[512] = "";
        const KuraWriterConf *c = w->conf;
        free(w->not_started);
        w->not_started = NULL;
        if (c->bad) {
                w->not_started = strdup(c->bad);
                return w->not_started ? -EINVAL : -ENOMEM;
        }
        int r = kura_wproc_start(c, &w->proc, why, sizeof why);
        if (r < 0) {
                w->not_started = strdup(why);
                return w->not_started ? r : -ENOMEM;
        }
        _cleanup_free_ char *hello = kura_wproto_hello_line();
        if (!hello)
                return -ENOMEM;
        double deadline = kura_mono() + c->identify_timeout_s;
        r = kura_wproc_send(w->proc, hello, strlen(hello), deadline);
        for (; r >= 0;) {
                const char *line;
                size_t len;
                r = kura_wproc_recv(w->proc, deadline, &line, &len);
                if (r < 0)
                        break;
                KuraWriterHello h;
                r = kura_wproto_parse_hello(line, len, &h, why, sizeof why);
                if (r == 0) {
                        if (strcmp(h.class_id, c->class_id)) {
                                snprintf(why, sizeof why, "the writer says class_id %s, its declaration ClassId=%s",
                                         h.class_id, c->class_id);
                                r = -EPROTO;
                                break;
                        }
                        w->hello = h;
                        w->state = KURA_WS_STABLE;
                        w->last_error = KURA_WE_NONE;
                        w->next_id = 1;
                        w->time_ns = kura_now_ns();
                        return 0;
                }
                /* A log line before the handshake reply is tolerated. */
                KuraWriterMsg m;
                char why2[64];
                if (kura_wproto_parse_msg(line, len, 0, &m, why2, sizeof why2) == 0 && m.is_log) {
                        kura_writer_msg_clear(&m);
                        r = 0;
                        continue;
                }
                kura_writer_msg_clear(&m);
                break;
        }
        char out[300] = "";
        if (r == -ETIMEDOUT)
                snprintf(why, sizeof why, "no answer within IdentifyTimeout=%g s", c->identify_timeout_s);
        else if (r == -EPIPE) {
                kura_wproc_stop(w->proc, 1);
                snprintf(why, sizeof why, "the writer closed its output (%s)",
                         *kura_wproc_exit_str(w->proc) ? kura_wproc_exit_str(w->proc) : "still running");
        } else if (r == -EMSGSIZE)
                snprintf(why, sizeof why, "a line longer than %d bytes", KURA_WRITER_LINE_MAX);
        kura_wproc_kill(w->proc);
        last_output(w->proc, out, sizeof out);
        w->not_started = kura_asprintf("handshake failed: %s%s%s", why, *out ? "; its last output: " : "", out);
        w->proc = kura_wproc_free(w->proc);
        return w->not_started ? -EPROTO : -ENOMEM;
}

int kura_writer_event(KuraWriter *w, const char *event, json_t *args, json_t **ret_result) {
        const KuraWriterConf *c = w->conf;
        if (ret_result)
                *ret_result = NULL;
        if (!w->proc)
                return -ESRCH;
        bool is_identify = !strcmp(event, "identify");
        double timeout = is_identify ? c->identify_timeout_s : c->event_timeout_s;
        double now = kura_mono();
        double deadline = now + timeout;
        const char *limit = is_identify ? "IdentifyTimeout" : "EventTimeout";
        if (!strcmp(event, "freeze"))
                w->freeze_sent = now;
        if ((!strcmp(event, "freeze") || !strcmp(event, "thaw")) && w->freeze_sent > 0 &&
            w->freeze_sent + c->freeze_timeout_s < deadline) {
                deadline = w->freeze_sent + c->freeze_timeout_s;
                timeout = c->freeze_timeout_s;
                limit = "FreezeTimeout";
        }
        uint64_t id = w->next_id++;
        _cleanup_free_ char *line = kura_wproto_request_line(id, event, args);
        if (!line)
                return -ENOMEM;
        int r = kura_wproc_send(w->proc, line, strlen(line), deadline);
        if (r == -ETIMEDOUT)
                return writer_broke(w, event, KURA_WE_TIMED_OUT, -ETIMEDOUT,
                                    "%s: could not send %s within %s=%g s", c->name, event, limit, timeout);
        if (r < 0)
                return writer_broke(w, event, KURA_WE_UNEXPECTED, -EPROTO, "%s: the writer went away before %s",
                                    c->name, event);
        for (;;) {
                const char *l;
                size_t len;
                r = kura_wproc_recv(w->proc, deadline, &l, &len);
                if (r == -ETIMEDOUT)
                        return writer_broke(w, event, KURA_WE_TIMED_OUT, -ETIMEDOUT,
                                            "%s: no reply to %s within %s=%g s", c->name, event, limit, timeout);
                if (r == -EPIPE) {
                        /* Give the exit status a moment to be known. */
                        kura_wproc_stop(w->proc, 0.5);
                        return writer_broke(w, event, KURA_WE_UNEXPECTED, -EPROTO,
                                            "%s: the writer closed its output during %s", c->name, event);
                }
                if (r == -EMSGSIZE)
                        return writer_broke(w, event, KURA_WE_UNEXPECTED, -EPROTO,
                                            "%s: protocol error during %s: a line longer than %d bytes", c->name,
                                            event, KURA_WRITER_LINE_MAX);
                if (r < 0)
                        return writer_broke(w, event, KURA_WE_UNEXPECTED, -EPROTO, "%s: cannot read from the writer: %s",
                                            c->name, strerror(-r));
                KuraWriterMsg m;
                char why[256];
                r = kura_wproto_parse_msg(l, len, id, &m, why, sizeof why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return writer_broke(w, event, KURA_WE_UNEXPECTED, -EPROTO, "%s: protocol error during %s: %s",
                                            c->name, event, why);
                if (m.is_log) {
                        free(w->last_log);
                        w->last_log = TAKE_PTR(m.text);
                        kura_writer_msg_clear(&m);
                        continue;
                }
                w->time_ns = kura_now_ns();
                if (m.status == KURA_WR_OK) {
                        w->state = ok_state(event, w->state);
                        if (!strcmp(event, "thaw"))
                                w->freeze_sent = 0;
                        if (ret_result)
                                *ret_result = TAKE_PTR(m.result);
                        kura_writer_msg_clear(&m);
                        return 0;
                }
                KuraWriterState fs = kura_writer_failed_state(event);
                if (fs != KURA_WS_UNKNOWN)
                        w->state = fs;
                bool retry = m.status == KURA_WR_RETRYABLE;
                w->last_error = retry ? KURA_WE_RETRYABLE : KURA_WE_NON_RETRYABLE;
                set_message(w, "%s", *m.text ? m.text : retry ? "retryable error" : "non-retryable error");
                kura_writer_msg_clear(&m);
                return retry ? -EAGAIN : -EPERM;
        }
}

void kura_writer_shutdown(KuraWriter *w) {
        if (!w->proc)
                return;
        /* A writer that fails backup-shutdown is killed; its state says so. */
        KuraWriterState before = w->state;
        KuraWriterError before_e = w->last_error;
        _cleanup_free_ char *before_m = w->message ? strdup(w->message) : NULL;
        int r = kura_writer_event(w, "backup-shutdown", NULL, NULL);
        if (r == 0) {
                w->state = before == KURA_WS_UNKNOWN ? KURA_WS_STABLE : before;
                w->last_error = before_e;
                kura_wproc_stop(w->proc, KURA_MIN(w->conf->event_timeout_s, 5.0));
        } else if (before >= KURA_WS_FAILED_AT_IDENTIFY && before_m) {
                /* Keep the earlier, more telling failure. */
                w->state = before;
                w->last_error = before_e;
                free(w->message);
                w->message = TAKE_PTR(before_m);
        }
        w->proc = kura_wproc_free(w->proc);
}

void kura_writer_clear(KuraWriter *w) {
        if (!w)
                return;
        w->proc = kura_wproc_free(w->proc);
        free(w->not_started);
        kura_writer_components_free(w->components, w->ncomponents);
        free(w->message);
        free(w->last_log);
        json_decref(w->store);
        memset(w, 0, sizeof *w);
}
