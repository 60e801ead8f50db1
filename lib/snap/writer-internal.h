/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * Private to lib/snap: writers (docs/format/writer-protocol.md) as the
 * coordinator sees them.
 *
 *   writer-config.c  writers.d/NAME.conf declarations (§1)
 *   writer-proc.c    the writer process: start, bounded line I/O with
 *                    deadlines, kill, and one request/reply exchange (§2, §4)
 *   writer-proto.c   the JSON-lines codec; every byte from a writer is
 *                    untrusted and validated here (§3–§6)
 *   writer-state.c   writers.json persistence, kura_writers_status(), names
 *   coordinator.c    KuraSnapSet: the backup sequence (§5, §7)
 */
#include <jansson.h>
#include <sys/types.h>

#include "snap/snap-internal.h"

/* ---- limits (writer bytes are untrusted) -------------------------------- */

#define KURA_WRITER_LINE_MAX 65536        /* one JSON line including '\n' (§2) */
#define KURA_WRITER_STDERR_RING 4096      /* last stderr bytes kept */
#define KURA_WRITER_NAME_MAX 256          /* Name=, writer and component names */
#define KURA_WRITER_MESSAGE_MAX 4096      /* reply messages and log lines are cut here */
#define KURA_WRITER_COMPONENTS_MAX 1024
#define KURA_WRITER_PATHS_MAX 1024        /* per component */
#define KURA_WRITER_STORE_MAX 65536       /* serialized `store` per writer (§5) */
#define KURA_WRITER_ARGS_MAX 64           /* Exec= words */
#define KURA_WRITER_ENV_MAX 64            /* Environment= lines */
#define KURA_WRITER_CONF_MAX (64 * 1024)  /* a declaration file */

/* ---- declarations (writer-config.c) ------------------------------------- */

typedef struct KuraWriterConf {
        char *conf_path;
        char *name;                /* Name=, or the file's base name when bad */
        char *class_id;            /* ClassId= (lower case), "" when bad */
        char **argv;               /* Exec= split, NULL-terminated */
        char *user;                /* User=, NULL: stay root */
        char **env;                /* Environment=, NULL-terminated */
        double identify_timeout_s, event_timeout_s, freeze_timeout_s, retry_delay_s;
        unsigned retry_count;
        char *bad;                 /* "bad declaration: <why>, line N"; NULL when good */
} KuraWriterConf;

/* Parse one declaration from text.  Returns 0 with *ret filled; a file that
 * does not parse still yields a conf with ->bad set (never stops the others).
 * Only -ENOMEM is an error. */
int kura_writer_conf_parse(const char *conf_path, const char *text, size_t len, KuraWriterConf **ret);
/* Read and parse one file (unreadable: ->bad set). */
int kura_writer_conf_load(const char *conf_path, KuraWriterConf **ret);
/* Every config_dir/writers.d/NAME.conf in lexical order; a missing directory is
 * zero writers.  Duplicate Name=: the later file is bad.  Caller frees with
 * kura_writer_confs_free(). */
int kura_writer_confs_load(const char *config_dir, KuraWriterConf ***ret, size_t *ret_n, KuraErr *err);
KuraWriterConf *kura_writer_conf_free(KuraWriterConf *c);
void kura_writer_confs_free(KuraWriterConf **c, size_t n);

/* ---- writer metadata (writer-proto.c) ----------------------------------- */

typedef struct KuraWriterComponent {
        char *name;
        char *logical_path;        /* "" if none */
        char *usage;               /* bootable-system-state | system-service | user-data | other */
        char *restore_method;
        bool log_truncation, selectable;
        char **paths;              /* absolute; npaths of them */
        size_t npaths;
} KuraWriterComponent;

void kura_writer_components_free(KuraWriterComponent *c, size_t n);

typedef struct KuraWriterHello {
        int version;
        char name[KURA_WRITER_NAME_MAX + 1];
        char class_id[40];
        char instance_id[40];
        bool cap_restore, cap_backup_type;
} KuraWriterHello;

typedef enum KuraWriterReplyStatus {
        KURA_WR_OK,
        KURA_WR_RETRYABLE,
        KURA_WR_NON_RETRYABLE,
} KuraWriterReplyStatus;

typedef struct KuraWriterMsg {
        bool is_log;
        /* log */
        char level[16];
        /* reply */
        uint64_t id;
        KuraWriterReplyStatus status;
        json_t *result;            /* owned; an object ({} when absent) for ok, NULL otherwise */
        /* reply message or log text, cut at KURA_WRITER_MESSAGE_MAX, control characters replaced */
        char *text;
} KuraWriterMsg;

void kura_writer_msg_clear(KuraWriterMsg *m);

/* The coordinator's handshake line (with '\n'), malloc'ed. */
char *kura_wproto_hello_line(void);
/* A request line {"id":N,"event":E,"args":args} with '\n' (args borrowed; NULL: {}). */
char *kura_wproto_request_line(uint64_t id, const char *event, json_t *args);
/* Validate the writer's handshake.  0, or -EPROTO with why filled
 * ("unsupported version", "not a JSON object", ...). */
int kura_wproto_parse_hello(const char *line, size_t len, KuraWriterHello *ret, char *why, size_t whyn);
/* Validate a log line or the reply to request expect_id.  0, or -EPROTO with why. */
int kura_wproto_parse_msg(const char *line, size_t len, uint64_t expect_id, KuraWriterMsg *ret, char *why,
                          size_t whyn);
/* The identify result's components (§6).  0 or -EPROTO with why. */
int kura_wproto_parse_components(json_t *result, KuraWriterComponent **ret, size_t *ret_n, char *why, size_t whyn);
/* result.store if present: a borrowed object, or NULL; -EPROTO if it is not
 * an object or larger than KURA_WRITER_STORE_MAX once serialized. */
int kura_wproto_get_store(json_t *result, json_t **ret, char *why, size_t whyn);
bool kura_wproto_is_uuid(const char *s);

/* ---- the writer process (writer-proc.c) --------------------------------- */

typedef struct KuraWriterProc KuraWriterProc;

/* fork+exec conf->argv as conf->user, stdin/stdout on a socket pair, stderr
 * into a ring, own session.  On failure returns <0 and why says what the
 * user should read ("program /x is missing", "permission denied: /x",
 * "user postgres does not exist", ...). */
int kura_wproc_start(const KuraWriterConf *conf, KuraWriterProc **ret, char *why, size_t whyn);
/* Write all of line before deadline (kura_mono() seconds).  -ETIMEDOUT, -EPIPE. */
int kura_wproc_send(KuraWriterProc *p, const char *line, size_t len, double deadline);
/* Next complete line (without '\n'; borrowed until the next call).
 * -ETIMEDOUT at the deadline, -EPIPE when the writer closed its output,
 * -EMSGSIZE for a line longer than KURA_WRITER_LINE_MAX. */
int kura_wproc_recv(KuraWriterProc *p, double deadline, const char **ret, size_t *ret_len);
/* SIGKILL the process group and reap.  Idempotent. */
void kura_wproc_kill(KuraWriterProc *p);
/* Wait up to grace_s for the writer to exit by itself, then kill; reap. */
void kura_wproc_stop(KuraWriterProc *p, double grace_s);
/* Exit description after it died ("exited with status 3", "killed by signal 11"), "" if alive. */
const char *kura_wproc_exit_str(KuraWriterProc *p);
/* The last stderr output (up to 4 KiB), NUL-terminated, borrowed. */
const char *kura_wproc_stderr(KuraWriterProc *p);
pid_t kura_wproc_pid(const KuraWriterProc *p);
KuraWriterProc *kura_wproc_free(KuraWriterProc *p);

/* ---- a writer in one run ------------------------------------------------- */

typedef struct KuraWriter {
        KuraWriterConf *conf;      /* borrowed from the loaded list */
        KuraWriterProc *proc;      /* NULL when not running */
        char *not_started;         /* why it could not start, NULL otherwise */
        KuraWriterHello hello;
        KuraWriterComponent *components;
        size_t ncomponents;
        KuraWriterState state;
        KuraWriterError last_error;
        char *message;             /* last failure message ("" none) */
        char *last_log;            /* last log line, for diagnosis */
        uint64_t next_id;
        double freeze_sent;        /* kura_mono() when freeze was sent, 0 otherwise */
        bool selected;             /* takes part after identify */
        bool prepared;             /* got prepare-for-backup (abort needed on failure) */
        json_t *store;             /* merged `store` results */
        int64_t time_ns;
} KuraWriter;

/* Start the process and run the handshake within IdentifyTimeout.  On failure
 * w->not_started is set and the process is gone.  0 or negative errno. */
int kura_writer_start(KuraWriter *w);
/* One request and its reply.  timeout_s: the event's limit; the freeze
 * window (freeze_sent + FreezeTimeout) is applied on top for freeze/thaw.
 * Returns 0 (ok; *ret_result, if given, gets the result reference),
 * -EAGAIN (retryable), -EPERM (non-retryable), -ETIMEDOUT, -EPROTO
 * (garbage, crash, closed output).  On every failure the writer's state is
 * "Failed at <event>", last_error and message are set, and unless the
 * writer only answered retryable/non-retryable, it has been killed. */
int kura_writer_event(KuraWriter *w, const char *event, json_t *args, json_t **ret_result);
/* backup-shutdown (if running) and stop. */
void kura_writer_shutdown(KuraWriter *w);
void kura_writer_clear(KuraWriter *w);
/* State for a failure at event ("freeze" -> KURA_WS_FAILED_AT_FREEZE). */
KuraWriterState kura_writer_failed_state(const char *event);

/* ---- persistence (writer-state.c) ---------------------------------------- */

/* Merge the states of ws[] into state_dir/writers.json (crash-safe). */
int kura_writers_persist(const char *state_dir, KuraWriter *const *ws, size_t n, KuraErr *err);
/* Read state_dir/writers.json: *ret is a JSON object keyed by writer name
 * (new reference; {} when missing).  A corrupt file reads as {}. */
int kura_writers_load_states(const char *state_dir, json_t **ret);

/* ---- emergency cleanup registry (coordinator.c) -------------------------- */

/* Record what kura_snap_emergency_cleanup() must undo: mount points this
 * process froze, writer process groups.  Fixed-size static tables; the
 * add functions return -ENOSPC when full (the caller then refuses to
 * freeze / start).  Providers that freeze (fsfreeze) should register too. */
int kura_snap_emergency_add_frozen(const char *mountpoint);
void kura_snap_emergency_del_frozen(const char *mountpoint);
int kura_snap_emergency_add_pgid(pid_t pgid);
void kura_snap_emergency_del_pgid(pid_t pgid);

/* Tests only: replace kura_provider_table() (NULL restores it). */
void kura_snap_set_provider_table_for_tests(const KuraProviderOps *const *table);
