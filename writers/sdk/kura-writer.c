/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The writer side of docs/format/writer-protocol.md: framing, handshake,
 * dispatch, replies, logs, and the safety nets (dead peer, signals, freeze
 * watchdog) described in kura-writer.h.
 */
#include "kura-writer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

const char *kw_program = "kura-writer";

static bool peer_gone;                  /* stdout broke: stop writing to it */
static volatile sig_atomic_t got_signal;

static void on_signal(int sig) { got_signal = sig; }

/* Write all of buf to fd 1; a broken peer only sets peer_gone (SIGPIPE is ignored). */
static int write_out(const char *buf, size_t n) {
        while (n > 0 && !peer_gone) {
                ssize_t w = write(STDOUT_FILENO, buf, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        peer_gone = true;
                        return -errno;
                }
                buf += w;
                n -= (size_t) w;
        }
        return peer_gone ? -EPIPE : 0;
}

/* One JSON object as one line.  Steals o. */
static int send_json(json_t *o) {
        char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(o);
        if (!s)
                return -ENOMEM;
        size_t n = strlen(s);
        int r;
        if (n + 1 > KW_LINE_MAX) {
                /* Never send a line kura must reject: say so instead. */
                free(s);
                return -E2BIG;
        }
        s[n] = '\n';
        r = write_out(s, n + 1);
        free(s);
        return r;
}

void kw_log(const char *level, const char *fmt, ...) {
        char text[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        fprintf(stderr, "%s: %s: %s\n", kw_program, level, text);
        if (!peer_gone)
                (void) send_json(json_pack("{s:s,s:s}", "log", text, "level", level));
}

KwStatus kw_fail(KwRequest *req, KwStatus s, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(req->message, sizeof(req->message), fmt, ap);
        va_end(ap);
        return s;
}

const char *kw_args_str(const json_t *args, const char *key) {
        json_t *v = json_object_get(args, key);
        return json_is_string(v) ? json_string_value(v) : NULL;
}

json_t *kw_component(const char *name, const char *logical_path, const char *usage, const char *restore_method,
                     const char *const *paths) {
        json_t *c = json_object(), *p = json_array();
        if (!c || !p) {
                json_decref(c);
                json_decref(p);
                return NULL;
        }
        for (size_t i = 0; paths && paths[i]; i++)
                json_array_append_new(p, json_string(paths[i]));
        json_object_set_new(c, "name", json_string(name));
        json_object_set_new(c, "logical_path", json_string(logical_path));
        json_object_set_new(c, "usage", json_string(usage));
        json_object_set_new(c, "paths", p);
        json_object_set_new(c, "restore_method", json_string(restore_method));
        json_object_set_new(c, "log_truncation", json_false());
        json_object_set_new(c, "selectable", json_true());
        return c;
}

int kw_parse_seconds(const char *s, unsigned *ret) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (errno || end == s || *end || v > 86400 * 7 || s[0] == '-')
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the bounded line reader --------------------------------------------- */

typedef struct LineReader {
        char buf[KW_LINE_MAX];
        size_t len;             /* bytes in buf */
        size_t consumed;        /* bytes of the previous line to drop before the next */
        bool eof;
} LineReader;

enum { LINE_OK = 0, LINE_EOF = -1, LINE_TOO_LONG = -2, LINE_ERROR = -3, LINE_SIGNAL = -4, LINE_TIMEOUT = -5 };

/* Next line (without '\n', NUL-terminated in place) into *ret and its length into *ret_n.
 * deadline_ms < 0: wait for ever (but a signal always ends the wait). */
static int read_line(LineReader *lr, char **ret, size_t *ret_n, int64_t deadline_ms) {
        if (lr->consumed) {
                memmove(lr->buf, lr->buf + lr->consumed, lr->len - lr->consumed);
                lr->len -= lr->consumed;
                lr->consumed = 0;
        }
        for (;;) {
                char *nl = memchr(lr->buf, '\n', lr->len);
                if (nl) {
                        *nl = '\0';
                        *ret = lr->buf;
                        *ret_n = (size_t) (nl - lr->buf);
                        lr->consumed = *ret_n + 1;
                        return LINE_OK;
                }
                if (lr->len >= sizeof(lr->buf))
                        return LINE_TOO_LONG;
                if (lr->eof)
                        return LINE_EOF; /* a partial last line is dropped */
                if (got_signal)
                        return LINE_SIGNAL;
                int timeout = -1;
                if (deadline_ms >= 0) {
                        int64_t left = deadline_ms - now_ms();
                        if (left <= 0)
                                return LINE_TIMEOUT;
                        timeout = left > INT_MAX ? INT_MAX : (int) left;
                }
                struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
                int r = poll(&pfd, 1, timeout);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return LINE_ERROR;
                }
                if (r == 0)
                        continue; /* the deadline check above ends it */
                ssize_t n = read(STDIN_FILENO, lr->buf + lr->len, sizeof(lr->buf) - lr->len);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return LINE_ERROR;
                }
                if (n == 0)
                        lr->eof = true;
                lr->len += (size_t) n;
        }
}

static void make_uuid(char out[37]) {
        uint8_t b[16];
        size_t got = 0;
        while (got < sizeof(b)) {
                ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        /* No randomness at all: still unique enough per start. */
                        uint64_t t = (uint64_t) now_ms() ^ ((uint64_t) getpid() << 32);
                        memcpy(b, &t, sizeof(t));
                        break;
                }
                got += (size_t) n;
        }
        b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40);
        b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80);
        snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
                 b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static void do_undo(const KwWriterDesc *d, const char *why) {
        if (d->undo)
                d->undo(d->userdata, why);
}

static int handshake(const KwWriterDesc *d, LineReader *lr) {
        char *line;
        size_t n;
        int r = read_line(lr, &line, &n, -1);
        if (r == LINE_EOF || r == LINE_SIGNAL)
                return -EPIPE;
        if (r != LINE_OK) {
                kw_log("error", "protocol error: no handshake line");
                return -EPROTO;
        }
        json_error_t jerr;
        json_t *h = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
        bool ok = false;
        if (json_is_object(h) && json_is_string(json_object_get(h, "protocol")) &&
            strcmp(json_string_value(json_object_get(h, "protocol")), "kura-writer") == 0) {
                json_t *v, *vs = json_object_get(h, "versions");
                size_t i;
                json_array_foreach(vs, i, v) {
                        if (json_is_integer(v) && json_integer_value(v) == 1)
                                ok = true;
                }
        }
        json_decref(h);
        if (!ok) {
                send_json(json_pack("{s:s,s:s}", "protocol", "kura-writer", "error", "unsupported version"));
                return -EPROTONOSUPPORT;
        }
        char uuid[37];
        make_uuid(uuid);
        json_t *caps = json_array();
        for (size_t i = 0; d->capabilities && d->capabilities[i]; i++)
                json_array_append_new(caps, json_string(d->capabilities[i]));
        return send_json(json_pack("{s:s,s:i,s:s,s:s,s:s,s:o}", "protocol", "kura-writer", "version", 1, "name",
                                   d->name, "class_id", d->class_id, "instance_id", uuid, "capabilities", caps));
}

int kw_run(const KwWriterDesc *d) {
        static LineReader lr; /* 64 KiB: not on the stack */
        struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: poll returns EINTR */
        bool frozen = false;
        int64_t freeze_deadline = -1;

        signal(SIGPIPE, SIG_IGN);
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        /* The protocol owns stdout: nothing else may write to it unbuffered or not. */
        setvbuf(stderr, NULL, _IOLBF, 0);

        int r = handshake(d, &lr);
        if (r == -EPIPE)
                return 0;
        if (r < 0)
                return 1;

        for (;;) {
                char *line;
                size_t n;
                r = read_line(&lr, &line, &n, frozen && d->freeze_limit_s ? freeze_deadline : -1);
                if (r == LINE_TIMEOUT) {
                        kw_log("warning", "no thaw within %u s of the freeze: thawing on my own", d->freeze_limit_s);
                        do_undo(d, "freeze limit passed");
                        frozen = false;
                        continue;
                }
                if (r == LINE_EOF || r == LINE_ERROR) {
                        do_undo(d, "kura closed the connection");
                        return 0;
                }
                if (r == LINE_SIGNAL) {
                        fprintf(stderr, "%s: signal %d: undoing and exiting\n", kw_program, (int) got_signal);
                        do_undo(d, "terminated by a signal");
                        return 1;
                }
                if (r == LINE_TOO_LONG) {
                        kw_log("error", "protocol error: a request longer than %d bytes", KW_LINE_MAX);
                        do_undo(d, "protocol error");
                        return 1;
                }

                json_error_t jerr;
                json_t *req = json_loadb(line, n, JSON_REJECT_DUPLICATES, &jerr);
                json_t *jid = json_object_get(req, "id"), *jev = json_object_get(req, "event");
                if (!json_is_object(req) || !json_is_integer(jid) || !json_is_string(jev)) {
                        kw_log("error", "protocol error: not a request: %.200s", line);
                        json_decref(req);
                        do_undo(d, "protocol error");
                        return 1;
                }
                json_int_t id = json_integer_value(jid);
                char event[128];
                snprintf(event, sizeof(event), "%s", json_string_value(jev));
                json_t *args = json_object_get(req, "args");
                json_t *own_args = NULL;
                if (!json_is_object(args))
                        args = own_args = json_object();

                KwRequest kr = { .event = event, .args = args, .result = json_object() };
                KwStatus st = d->handle ? d->handle(d->userdata, &kr) : KW_OK;
                json_t *reply;
                if (st == KW_OK)
                        reply = json_pack("{s:I,s:s,s:O}", "id", (json_int_t) id, "status", "ok", "result", kr.result);
                else
                        reply = json_pack("{s:I,s:s,s:s}", "id", (json_int_t) id, "status",
                                          st == KW_RETRYABLE ? "retryable" : "non-retryable", "message",
                                          kr.message[0] ? kr.message : "failed");
                json_decref(kr.result);
                json_decref(own_args);
                json_decref(req);
                r = send_json(reply);
                if (r == -E2BIG) {
                        /* The result (a store) is too big for one line: fail the event instead. */
                        send_json(json_pack("{s:I,s:s,s:s}", "id", (json_int_t) id, "status", "non-retryable",
                                            "message", "reply larger than 65536 bytes"));
                }

                if (strcmp(event, "freeze") == 0 && st == KW_OK) {
                        frozen = true;
                        freeze_deadline = now_ms() + (int64_t) d->freeze_limit_s * 1000;
                } else if (strcmp(event, "thaw") == 0 || strcmp(event, "abort") == 0) {
                        frozen = false;
                }
                if (strcmp(event, "backup-shutdown") == 0)
                        return 0;
                if (peer_gone) {
                        do_undo(d, "kura closed the connection");
                        return 0;
                }
        }
}
