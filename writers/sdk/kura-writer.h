/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * writers/sdk: the small library kura's reference writers link.  It speaks
 * docs/format/writer-protocol.md version 1 over standard input and output:
 * the handshake, reading requests through a bounded line buffer (65536 bytes
 * a line, longer is a protocol error), dispatching each event to the
 * writer's handler, replying, and logging through {"log":...} lines.
 *
 * It also keeps the promises every writer must keep whatever its handler
 * does: an unknown event is answered ok when the handler says nothing else,
 * a dead peer (EOF, read error, SIGTERM/SIGINT/SIGHUP) makes it call the
 * writer's undo hook and exit instead of hanging, and a freeze that is not
 * followed by thaw/abort within freeze_limit_s seconds is undone by the
 * writer itself (a stuck coordinator must not keep an application frozen).
 *
 * Single-threaded; one writer per process.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define KW_LINE_MAX 65536

typedef enum KwStatus {
        KW_OK = 0,
        KW_RETRYABLE,
        KW_NON_RETRYABLE,
} KwStatus;

typedef struct KwRequest {
        const char *event;      /* borrowed, valid during the handler */
        json_t *args;           /* borrowed; an empty object when the request had none */
        json_t *result;         /* the reply's result object: the handler adds keys (owned by the SDK) */
        char message[1024];     /* the reply's message for retryable / non-retryable */
} KwRequest;

struct KwWriterDesc {
        const char *name;       /* "SQLite Writer" */
        const char *class_id;   /* a stable UUID for this kind of writer */
        const char *const *capabilities; /* NULL-terminated list, or NULL for none */
        /* Handles one request; the default case must return KW_OK (unknown
         * events are answered ok).  backup-shutdown and abort also reach it. */
        KwStatus (*handle)(void *userdata, KwRequest *req);
        /* Undo whatever the writer holds (locks, backup mode): called when the
         * peer went away, on a terminating signal, and when the freeze
         * watchdog fires.  why is a short text.  May be NULL. */
        void (*undo)(void *userdata, const char *why);
        void *userdata;
        unsigned freeze_limit_s; /* 0 = no watchdog */
};

typedef struct KwWriterDesc KwWriterDesc;

/* Runs the writer until backup-shutdown, EOF or a fatal protocol error;
 * returns the process exit status (0 after backup-shutdown or a clean EOF). */
int kw_run(const KwWriterDesc *d);

/* A {"log":…} line to kura (dropped when the peer is gone); level is "info",
 * "warning" or "error".  Also copied to standard error. */
void kw_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Fill req->message and return s (for `return kw_fail(req, KW_RETRYABLE, …)`). */
KwStatus kw_fail(KwRequest *req, KwStatus s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Program name for messages ("kura-writer-sqlite"); set by the writer's main. */
extern const char *kw_program;

/* ---- small helpers the writers share ----------------------------------- */

/* args[key] as a string, or NULL. */
const char *kw_args_str(const json_t *args, const char *key);
/* A component object for identify's result (paths: NULL-terminated). */
json_t *kw_component(const char *name, const char *logical_path, const char *usage, const char *restore_method,
                     const char *const *paths);
/* Parse a non-negative number of seconds ("30"); -EINVAL on garbage. */
int kw_parse_seconds(const char *s, unsigned *ret);
