/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Writer states: names (VSS wording), persistence in
 * $KURA_STATE_DIR/writers.json, and kura_writers_status() for `kura writers`.
 *
 * writers.json (written with kio_write_file: temp file, fsync, rename):
 *   {"version":1,"writers":{"<Name>":{"class_id":"…","instance_id":"…",
 *     "conf":"/etc/kura/writers.d/x.conf","state":9,"last_error":3,
 *     "message":"…","not_started":null|"why","time":"RFC 3339"}}}
 * Each run merges its writers into what is there (writers of other runs stay).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/kcommon.h"
#include "common/kio.h"
#include "snap/writer-internal.h"

#define STATE_FILE "writers.json"
#define STATE_FILE_MAX (16 * 1024 * 1024)

const char *kura_writer_state_str(KuraWriterState s) {
        static const char *const names[] = {
                [KURA_WS_UNKNOWN] = "Unknown",
                [KURA_WS_STABLE] = "Stable",
                [KURA_WS_WAITING_FOR_FREEZE] = "Waiting for freeze",
                [KURA_WS_WAITING_FOR_THAW] = "Waiting for thaw",
                [KURA_WS_WAITING_FOR_POST_SNAPSHOT] = "Waiting for post snapshot",
                [KURA_WS_WAITING_FOR_BACKUP_COMPLETE] = "Waiting for backup complete",
                [KURA_WS_FAILED_AT_IDENTIFY] = "Failed at identify",
                [KURA_WS_FAILED_AT_PREPARE_BACKUP] = "Failed at prepare backup",
                [KURA_WS_FAILED_AT_PREPARE_SNAPSHOT] = "Failed at prepare snapshot",
                [KURA_WS_FAILED_AT_FREEZE] = "Failed at freeze",
                [KURA_WS_FAILED_AT_THAW] = "Failed at thaw",
                [KURA_WS_FAILED_AT_POST_SNAPSHOT] = "Failed at post snapshot",
                [KURA_WS_FAILED_AT_BACKUP_COMPLETE] = "Failed at backup complete",
                [KURA_WS_FAILED_AT_PRE_RESTORE] = "Failed at pre restore",
                [KURA_WS_FAILED_AT_POST_RESTORE] = "Failed at post restore",
                [KURA_WS_FAILED_AT_BACKUP_SHUTDOWN] = "Failed at backup shutdown",
        };
        if ((unsigned)s >= ELEMENTSOF(names) || !names[s])
                return "Unknown";
        return names[s];
}

const char *kura_writer_error_str(KuraWriterError e) {
        static const char *const names[] = {
                [KURA_WE_NONE] = "No error",
                [KURA_WE_RETRYABLE] = "Retryable error",
                [KURA_WE_NON_RETRYABLE] = "Non-retryable error",
                [KURA_WE_TIMED_OUT] = "Timed out",
                [KURA_WE_UNEXPECTED] = "Unexpected error",
                [KURA_WE_INCONSISTENT_SHADOW] = "Inconsistent shadow copy",
                [KURA_WE_OUT_OF_RESOURCES] = "Out of resources",
        };
        if ((unsigned)e >= ELEMENTSOF(names) || !names[e])
                return "Unexpected error";
        return names[e];
}

int kura_writers_load_states(const char *state_dir, json_t **ret) {
        _cleanup_free_ char *path = kura_path_join(state_dir, STATE_FILE);
        if (!path)
                return -ENOMEM;
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        json_t *ws = NULL;
        if (kio_read_file(path, STATE_FILE_MAX, &data, &len) == 0) {
                json_t *j = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, NULL);
                json_t *w = json_is_object(j) ? json_object_get(j, "writers") : NULL;
                if (json_is_object(w))
                        ws = json_incref(w);
                json_decref(j);
        }
        if (!ws && !(ws = json_object()))
                return -ENOMEM;
        *ret = ws;
        return 0;
}

int kura_writers_persist(const char *state_dir, KuraWriter *const *ws, size_t n, KuraErr *err) {
        if (!state_dir || n == 0)
                return 0;
        json_t *all = NULL;
        int r = kura_writers_load_states(state_dir, &all);
        if (r < 0)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
        for (size_t i = 0; i < n; i++) {
                const KuraWriter *w = ws[i];
                char t[40];
                kura_format_time(w->time_ns ? w->time_ns : kura_now_ns(), t, sizeof t);
                json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s, s:s?, s:s}", "class_id",
                                      w->conf->class_id ? w->conf->class_id : "", "instance_id", w->hello.instance_id,
                                      "conf", w->conf->conf_path, "state", (int)w->state, "last_error",
                                      (int)w->last_error, "message", w->message ? w->message : "", "not_started",
                                      w->not_started, "time", t);
                if (!o || json_object_set_new(all, w->conf->name, o) < 0) {
                        json_decref(all);
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
                }
        }
        json_t *doc = json_pack("{s:i, s:o}", "version", 1, "writers", all);
        char *text = doc ? json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
        json_decref(doc);
        if (!text)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
        _cleanup_free_ char *path = kura_path_join(state_dir, STATE_FILE);
        (void)kio_mkdir(state_dir, 0700);
        r = path ? kio_write_file(path, text, strlen(text)) : -ENOMEM;
        free(text);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_WRITER_FAILED, "check that the state directory is writable",
                                      "cannot record writer states in %s/%s", state_dir, STATE_FILE);
        return 0;
}

void kura_writer_info_free(KuraWriterInfo *w, size_t n) {
        if (!w)
                return;
        for (size_t i = 0; i < n; i++) {
                free(w[i].conf_path);
                free(w[i].name);
                free(w[i].class_id);
                free(w[i].instance_id);
                free(w[i].not_started);
                free(w[i].last_message);
        }
        free(w);
}

static char *dup_or_empty(const char *s) {
        return strdup(s ? s : "");
}

/* Probe one writer: start, handshake, identify, backup-shutdown. */
static void probe_writer(const KuraWriterConf *c, KuraWriterInfo *info) {
        KuraWriter w = {.conf = (KuraWriterConf *)c};
        if (kura_writer_start(&w) < 0) {
                info->started = false;
                free(info->not_started);
                info->not_started = dup_or_empty(w.not_started);
                kura_writer_clear(&w);
                return;
        }
        free(info->instance_id);
        info->instance_id = dup_or_empty(w.hello.instance_id);
        json_t *res = NULL;
        int r = kura_writer_event(&w, "identify", NULL, &res);
        if (r == 0) {
                char why[256];
                KuraWriterComponent *cs = NULL;
                size_t nc = 0;
                if (kura_wproto_parse_components(res, &cs, &nc, why, sizeof why) < 0) {
                        w.state = KURA_WS_FAILED_AT_IDENTIFY;
                        w.last_error = KURA_WE_UNEXPECTED;
                        free(w.message);
                        w.message = kura_asprintf("%s: protocol error during identify: %s", c->name, why);
                        r = -EPROTO;
                }
                kura_writer_components_free(cs, nc);
        }
        json_decref(res);
        if (r < 0) {
                /* The probe's failure is news: show it over the persisted state. */
                info->state = w.state;
                info->last_error = w.last_error;
                free(info->last_message);
                info->last_message = dup_or_empty(w.message);
                info->time_ns = w.time_ns;
        }
        kura_writer_shutdown(&w);
        kura_writer_clear(&w);
}

int kura_writers_status(const char *config_dir, const char *state_dir, bool probe, KuraWriterInfo **ret,
                        size_t *ret_n, KuraErr *err) {
        KuraWriterConf **cs = NULL;
        size_t n = 0;
        int r = kura_writer_confs_load(config_dir, &cs, &n, err);
        if (r < 0)
                return r;
        json_t *states = NULL;
        if (kura_writers_load_states(state_dir, &states) < 0) {
                kura_writer_confs_free(cs, n);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
        }
        KuraWriterInfo *out = calloc(n ? n : 1, sizeof *out);
        if (!out) {
                json_decref(states);
                kura_writer_confs_free(cs, n);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
        }
        bool oom = false;
        for (size_t i = 0; i < n; i++) {
                const KuraWriterConf *c = cs[i];
                KuraWriterInfo *w = &out[i];
                w->conf_path = dup_or_empty(c->conf_path);
                w->name = dup_or_empty(c->name);
                w->class_id = dup_or_empty(c->class_id);
                w->state = KURA_WS_STABLE;
                w->last_error = KURA_WE_NONE;
                w->started = true;
                json_t *st = c->bad ? NULL : json_object_get(states, c->name);
                const char *inst = "", *msg = "";
                if (json_is_object(st)) {
                        json_t *v;
                        if (json_is_integer(v = json_object_get(st, "state")) && json_integer_value(v) >= 1 &&
                            json_integer_value(v) <= KURA_WS_FAILED_AT_BACKUP_SHUTDOWN)
                                w->state = (KuraWriterState)json_integer_value(v);
                        if (json_is_integer(v = json_object_get(st, "last_error")) && json_integer_value(v) >= 0 &&
                            json_integer_value(v) <= KURA_WE_OUT_OF_RESOURCES)
                                w->last_error = (KuraWriterError)json_integer_value(v);
                        if (json_is_string(v = json_object_get(st, "instance_id")))
                                inst = json_string_value(v);
                        if (json_is_string(v = json_object_get(st, "message")))
                                msg = json_string_value(v);
                        if (json_is_string(v = json_object_get(st, "time")))
                                (void)kura_parse_time(json_string_value(v), &w->time_ns);
                        if (!probe && json_is_string(v = json_object_get(st, "not_started"))) {
                                w->started = false;
                                w->not_started = dup_or_empty(json_string_value(v));
                        }
                }
                w->instance_id = dup_or_empty(inst);
                w->last_message = dup_or_empty(msg);
                if (c->bad) {
                        w->started = false;
                        free(w->not_started);
                        w->not_started = dup_or_empty(c->bad);
                } else if (probe)
                        probe_writer(c, w);
                if (!w->conf_path || !w->name || !w->class_id || !w->instance_id || !w->last_message ||
                    (!w->started && !w->not_started))
                        oom = true;
        }
        json_decref(states);
        kura_writer_confs_free(cs, n);
        if (oom) {
                kura_writer_info_free(out, n);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
        }
        *ret = out;
        *ret_n = n;
        return 0;
}
