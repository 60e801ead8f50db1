/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The writer protocol's JSON-lines codec (docs/format/writer-protocol.md
 * §3–§6).  Every line comes from a writer process, which is untrusted: each
 * field's type, length and value is checked, unknown keys are ignored, and a
 * violation is -EPROTO with a one-line reason (never an assert).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/kcommon.h"
#include "snap/writer-internal.h"

static int proto_err(char *why, size_t whyn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int proto_err(char *why, size_t whyn, const char *fmt, ...) {
        if (why && whyn) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(why, whyn, fmt, ap);
                va_end(ap);
        }
        return -EPROTO;
}

bool kura_wproto_is_uuid(const char *s) {
        if (strlen(s) != 36)
                return false;
        for (int i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return false;
                } else if (!isxdigit((unsigned char)s[i]))
                        return false;
        }
        return true;
}

/* A copy of s, cut at max bytes (on a UTF-8 boundary), control characters
 * replaced by spaces: writer text ends up in terminals and JSON files. */
static char *sanitize(const char *s, size_t max) {
        size_t n = strlen(s);
        if (n > max) {
                n = max;
                while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
                        n--;
        }
        char *r = strndup(s, n);
        if (!r)
                return NULL;
        for (unsigned char *p = (unsigned char *)r; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        *p = ' ';
        return r;
}

static bool printable(const char *s) {
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

/* Decode one line: a JSON object, nothing else.  New reference or NULL. */
static json_t *load_object(const char *line, size_t len, char *why, size_t whyn) {
        if (len >= KURA_WRITER_LINE_MAX) {
                proto_err(why, whyn, "a line longer than %d bytes", KURA_WRITER_LINE_MAX);
                return NULL;
        }
        if (memchr(line, 0, len)) {
                proto_err(why, whyn, "a NUL byte in a line");
                return NULL;
        }
        json_error_t je;
        json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
        if (!j) {
                proto_err(why, whyn, "not JSON (%.100s)", je.text);
                return NULL;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                proto_err(why, whyn, "not a JSON object");
                return NULL;
        }
        return j;
}

char *kura_wproto_hello_line(void) {
        return strdup("{\"protocol\":\"kura-writer\",\"versions\":[1],\"capabilities\":[\"restore\",\"backup-type\"]}\n");
}

char *kura_wproto_request_line(uint64_t id, const char *event, json_t *args) {
        json_t *a = args ? json_incref(args) : json_object();
        if (!a)
                return NULL;
        json_t *j = json_pack("{s:I, s:s, s:o}", "id", (json_int_t)id, "event", event, "args", a);
        if (!j)
                return NULL;
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
        json_decref(j);
        if (!s)
                return NULL;
        char *line = kura_asprintf("%s\n", s);
        free(s);
        return line;
}

int kura_wproto_parse_hello(const char *line, size_t len, KuraWriterHello *ret, char *why, size_t whyn) {
        json_t *j = load_object(line, len, why, whyn);
        if (!j)
                return -EPROTO;
        int r = -EPROTO;
        memset(ret, 0, sizeof *ret);
        json_t *proto = json_object_get(j, "protocol");
        if (!json_is_string(proto) || strcmp(json_string_value(proto), "kura-writer")) {
                proto_err(why, whyn, "\"protocol\" is not \"kura-writer\"");
                goto out;
        }
        json_t *e = json_object_get(j, "error");
        if (e) {
                _cleanup_free_ char *t = json_is_string(e) ? sanitize(json_string_value(e), 200) : NULL;
                proto_err(why, whyn, "the writer refused: %s", t ? t : "(no reason)");
                goto out;
        }
        json_t *v = json_object_get(j, "version");
        if (!json_is_integer(v)) {
                proto_err(why, whyn, "\"version\" is missing or not an integer");
                goto out;
        }
        if (json_integer_value(v) != 1) {
                proto_err(why, whyn, "the writer chose version %lld, which kura did not offer",
                          (long long)json_integer_value(v));
                goto out;
        }
        ret->version = 1;
        json_t *name = json_object_get(j, "name");
        if (!json_is_string(name) || json_string_length(name) == 0 ||
            json_string_length(name) > KURA_WRITER_NAME_MAX || !printable(json_string_value(name))) {
                proto_err(why, whyn, "\"name\" must be 1 to %d printable characters", KURA_WRITER_NAME_MAX);
                goto out;
        }
        snprintf(ret->name, sizeof ret->name, "%s", json_string_value(name));
        static const char *const ids[] = {"class_id", "instance_id"};
        for (int i = 0; i < 2; i++) {
                json_t *u = json_object_get(j, ids[i]);
                if (!json_is_string(u) || !kura_wproto_is_uuid(json_string_value(u))) {
                        proto_err(why, whyn, "\"%s\" is not a UUID", ids[i]);
                        goto out;
                }
                char *dst = i == 0 ? ret->class_id : ret->instance_id;
                snprintf(dst, 40, "%s", json_string_value(u));
                for (char *q = dst; *q; q++)
                        *q = (char)tolower((unsigned char)*q);
        }
        json_t *caps = json_object_get(j, "capabilities");
        if (caps) {
                if (!json_is_array(caps) || json_array_size(caps) > 64) {
                        proto_err(why, whyn, "\"capabilities\" is not an array of strings");
                        goto out;
                }
                size_t i;
                json_t *c;
                json_array_foreach(caps, i, c) {
                        if (!json_is_string(c)) {
                                proto_err(why, whyn, "\"capabilities\" is not an array of strings");
                                goto out;
                        }
                        if (!strcmp(json_string_value(c), "restore"))
                                ret->cap_restore = true;
                        else if (!strcmp(json_string_value(c), "backup-type"))
                                ret->cap_backup_type = true;
                }
        }
        r = 0;
out:
        json_decref(j);
        return r;
}

void kura_writer_msg_clear(KuraWriterMsg *m) {
        if (!m)
                return;
        json_decref(m->result);
        free(m->text);
        memset(m, 0, sizeof *m);
}

int kura_wproto_parse_msg(const char *line, size_t len, uint64_t expect_id, KuraWriterMsg *ret, char *why,
                          size_t whyn) {
        memset(ret, 0, sizeof *ret);
        json_t *j = load_object(line, len, why, whyn);
        if (!j)
                return -EPROTO;
        int r = -EPROTO;
        json_t *log = json_object_get(j, "log");
        json_t *id = json_object_get(j, "id");
        if (log && !id) {
                if (!json_is_string(log)) {
                        proto_err(why, whyn, "\"log\" is not a string");
                        goto out;
                }
                json_t *lv = json_object_get(j, "level");
                const char *level = "info";
                if (lv) {
                        if (!json_is_string(lv) ||
                            (strcmp(json_string_value(lv), "info") && strcmp(json_string_value(lv), "warning") &&
                             strcmp(json_string_value(lv), "error"))) {
                                proto_err(why, whyn, "\"level\" is not info, warning or error");
                                goto out;
                        }
                        level = json_string_value(lv);
                }
                ret->is_log = true;
                snprintf(ret->level, sizeof ret->level, "%s", level);
                if (!(ret->text = sanitize(json_string_value(log), KURA_WRITER_MESSAGE_MAX))) {
                        r = -ENOMEM;
                        goto out;
                }
                r = 0;
                goto out;
        }
        if (!json_is_integer(id)) {
                proto_err(why, whyn, "a message that is neither a log line nor a reply with an integer \"id\"");
                goto out;
        }
        if (json_integer_value(id) < 0 || (uint64_t)json_integer_value(id) != expect_id) {
                proto_err(why, whyn, "a reply with id %lld where %llu was expected", (long long)json_integer_value(id),
                          (unsigned long long)expect_id);
                goto out;
        }
        ret->id = expect_id;
        json_t *st = json_object_get(j, "status");
        const char *s = json_is_string(st) ? json_string_value(st) : "";
        if (!strcmp(s, "ok"))
                ret->status = KURA_WR_OK;
        else if (!strcmp(s, "retryable"))
                ret->status = KURA_WR_RETRYABLE;
        else if (!strcmp(s, "non-retryable"))
                ret->status = KURA_WR_NON_RETRYABLE;
        else {
                proto_err(why, whyn, "\"status\" is not ok, retryable or non-retryable");
                goto out;
        }
        json_t *msg = json_object_get(j, "message");
        if (msg && !json_is_string(msg)) {
                proto_err(why, whyn, "\"message\" is not a string");
                goto out;
        }
        if (!(ret->text = sanitize(msg ? json_string_value(msg) : "", KURA_WRITER_MESSAGE_MAX))) {
                r = -ENOMEM;
                goto out;
        }
        if (ret->status == KURA_WR_OK) {
                json_t *res = json_object_get(j, "result");
                if (res && !json_is_object(res)) {
                        proto_err(why, whyn, "\"result\" is not an object");
                        goto out;
                }
                ret->result = res ? json_incref(res) : json_object();
                if (!ret->result) {
                        r = -ENOMEM;
                        goto out;
                }
        }
        r = 0;
out:
        json_decref(j);
        if (r < 0)
                kura_writer_msg_clear(ret);
        return r;
}

void kura_writer_components_free(KuraWriterComponent *c, size_t n) {
        if (!c)
                return;
        for (size_t i = 0; i < n; i++) {
                free(c[i].name);
                free(c[i].logical_path);
                free(c[i].usage);
                free(c[i].restore_method);
                for (size_t k = 0; k < c[i].npaths; k++)
                        free(c[i].paths[k]);
                free(c[i].paths);
        }
        free(c);
}

static bool one_of(const char *s, const char *const *set) {
        for (; *set; set++)
                if (!strcmp(s, *set))
                        return true;
        return false;
}

/* An optional string field: default when absent, -EPROTO when not a string
 * of at most max printable bytes or not one of set. */
static int get_str(json_t *o, const char *key, const char *def, size_t max, const char *const *set, char **ret,
                   char *why, size_t whyn, size_t ci) {
        json_t *v = json_object_get(o, key);
        const char *s = def;
        if (v) {
                if (!json_is_string(v) || json_string_length(v) > max || !printable(json_string_value(v)))
                        return proto_err(why, whyn, "component %zu: \"%s\" is not a string of at most %zu characters",
                                         ci, key, max);
                s = json_string_value(v);
        }
        if (!s)
                return proto_err(why, whyn, "component %zu: \"%s\" is missing", ci, key);
        if (set && !one_of(s, set))
                return proto_err(why, whyn, "component %zu: \"%s\" has an unknown value '%.64s'", ci, key, s);
        if (!(*ret = strdup(s)))
                return -ENOMEM;
        return 0;
}

static int get_bool(json_t *o, const char *key, bool def, bool *ret, char *why, size_t whyn, size_t ci) {
        json_t *v = json_object_get(o, key);
        if (!v) {
                *ret = def;
                return 0;
        }
        if (!json_is_boolean(v))
                return proto_err(why, whyn, "component %zu: \"%s\" is not a boolean", ci, key);
        *ret = json_is_true(v);
        return 0;
}

int kura_wproto_parse_components(json_t *result, KuraWriterComponent **ret, size_t *ret_n, char *why, size_t whyn) {
        static const char *const usages[] = {"bootable-system-state", "system-service", "user-data", "other", NULL};
        static const char *const methods[] = {"restore-if-not-there", "restore-if-can-replace", "stop-restore-start",
                                              "restore-to-alternate", "custom", NULL};
        json_t *a = json_is_object(result) ? json_object_get(result, "components") : NULL;
        if (!json_is_array(a))
                return proto_err(why, whyn, "the identify result has no \"components\" array");
        size_t n = json_array_size(a);
        if (n > KURA_WRITER_COMPONENTS_MAX)
                return proto_err(why, whyn, "more than %d components", KURA_WRITER_COMPONENTS_MAX);
        KuraWriterComponent *cs = calloc(n ? n : 1, sizeof *cs);
        if (!cs)
                return -ENOMEM;
        int r = 0;
        for (size_t i = 0; i < n && r == 0; i++) {
                json_t *o = json_array_get(a, i);
                KuraWriterComponent *c = &cs[i];
                if (!json_is_object(o)) {
                        r = proto_err(why, whyn, "component %zu is not an object", i);
                        break;
                }
                if ((r = get_str(o, "name", NULL, KURA_WRITER_NAME_MAX, NULL, &c->name, why, whyn, i)) < 0 ||
                    (r = get_str(o, "logical_path", "", PATH_MAX, NULL, &c->logical_path, why, whyn, i)) < 0 ||
                    (r = get_str(o, "usage", "other", 64, usages, &c->usage, why, whyn, i)) < 0 ||
                    (r = get_str(o, "restore_method", "restore-if-can-replace", 64, methods, &c->restore_method, why,
                                 whyn, i)) < 0 ||
                    (r = get_bool(o, "log_truncation", false, &c->log_truncation, why, whyn, i)) < 0 ||
                    (r = get_bool(o, "selectable", true, &c->selectable, why, whyn, i)) < 0)
                        break;
                if (!*c->name) {
                        r = proto_err(why, whyn, "component %zu has an empty name", i);
                        break;
                }
                for (size_t k = 0; k < i; k++)
                        if (!strcmp(cs[k].name, c->name)) {
                                r = proto_err(why, whyn, "component name '%.64s' given twice", c->name);
                                break;
                        }
                if (r < 0)
                        break;
                json_t *ps = json_object_get(o, "paths");
                if (!json_is_array(ps) || json_array_size(ps) > KURA_WRITER_PATHS_MAX) {
                        r = proto_err(why, whyn, "component '%.64s': \"paths\" is not an array of at most %d paths",
                                      c->name, KURA_WRITER_PATHS_MAX);
                        break;
                }
                size_t np = json_array_size(ps);
                c->paths = calloc(np ? np : 1, sizeof(char *));
                if (!c->paths) {
                        r = -ENOMEM;
                        break;
                }
                for (size_t k = 0; k < np; k++) {
                        json_t *pv = json_array_get(ps, k);
                        if (!json_is_string(pv) || json_string_length(pv) >= PATH_MAX ||
                            json_string_value(pv)[0] != '/' || !printable(json_string_value(pv))) {
                                r = proto_err(why, whyn, "component '%.64s': path %zu is not an absolute path",
                                              c->name, k);
                                break;
                        }
                        if (!(c->paths[k] = strdup(json_string_value(pv)))) {
                                r = -ENOMEM;
                                break;
                        }
                        c->npaths++;
                }
        }
        if (r < 0) {
                kura_writer_components_free(cs, n);
                return r;
        }
        *ret = cs;
        *ret_n = n;
        return 0;
}

int kura_wproto_get_store(json_t *result, json_t **ret, char *why, size_t whyn) {
        *ret = NULL;
        json_t *st = json_is_object(result) ? json_object_get(result, "store") : NULL;
        if (!st)
                return 0;
        if (!json_is_object(st))
                return proto_err(why, whyn, "\"store\" is not an object");
        char *s = json_dumps(st, JSON_COMPACT);
        if (!s)
                return -ENOMEM;
        size_t n = strlen(s);
        free(s);
        if (n > KURA_WRITER_STORE_MAX)
                return proto_err(why, whyn, "\"store\" is larger than %d bytes", KURA_WRITER_STORE_MAX);
        *ret = st;
        return 0;
}
