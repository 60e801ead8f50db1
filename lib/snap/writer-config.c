/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * writers.d/NAME.conf declarations (docs/format/writer-protocol.md §1).
 *
 * Strict: an unknown key, a duplicate key, a second section, a malformed
 * value or a missing required key makes the file a *bad declaration*.  A bad
 * file never stops other writers: it yields a conf with ->bad set
 * ("bad declaration: <why>, line N") that `kura writers` shows as not started.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/kcommon.h"
#include "common/kio.h"
#include "snap/writer-internal.h"

static void strv_free(char **v) {
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

KuraWriterConf *kura_writer_conf_free(KuraWriterConf *c) {
        if (!c)
                return NULL;
        free(c->conf_path);
        free(c->name);
        free(c->class_id);
        strv_free(c->argv);
        free(c->user);
        strv_free(c->env);
        free(c->bad);
        free(c);
        return NULL;
}

void kura_writer_confs_free(KuraWriterConf **c, size_t n) {
        if (!c)
                return;
        for (size_t i = 0; i < n; i++)
                kura_writer_conf_free(c[i]);
        free(c);
}

static int strv_push(char ***v, size_t *n, char *s) {
        char **nv = realloc(*v, (*n + 2) * sizeof(char *));
        if (!nv) {
                free(s);
                return -ENOMEM;
        }
        nv[(*n)++] = s;
        nv[*n] = NULL;
        *v = nv;
        return 0;
}

/* Exec= split at spaces; "..." quotes a word with spaces, \" and \\ inside
 * quotes stand for themselves.  0, -EINVAL (why filled) or -ENOMEM. */
static int split_exec(const char *s, char ***ret, char *why, size_t whyn) {
        char **v = NULL;
        size_t n = 0;
        int r;
        const char *p = s;

        for (;;) {
                while (*p == ' ' || *p == '\t')
                        p++;
                if (!*p)
                        break;
                if (n >= KURA_WRITER_ARGS_MAX) {
                        snprintf(why, whyn, "Exec= has more than %d words", KURA_WRITER_ARGS_MAX);
                        r = -EINVAL;
                        goto fail;
                }
                KuraBuf b = {0};
                bool quoted = false, any = false;
                while (*p && (quoted || (*p != ' ' && *p != '\t'))) {
                        char ch = *p++;
                        any = true;
                        if (ch == '"') {
                                quoted = !quoted;
                                continue;
                        }
                        if (quoted && ch == '\\' && (*p == '"' || *p == '\\'))
                                ch = *p++;
                        if (kura_buf_append(&b, &ch, 1) < 0) {
                                kura_buf_free(&b);
                                r = -ENOMEM;
                                goto fail;
                        }
                }
                if (quoted) {
                        kura_buf_free(&b);
                        snprintf(why, whyn, "Exec= has an unterminated quote");
                        r = -EINVAL;
                        goto fail;
                }
                (void)any;
                char z = 0;
                if (kura_buf_append(&b, &z, 1) < 0) {
                        kura_buf_free(&b);
                        r = -ENOMEM;
                        goto fail;
                }
                if ((r = strv_push(&v, &n, (char *)b.data)) < 0)
                        goto fail;
        }
        if (n == 0) {
                snprintf(why, whyn, "Exec= is empty");
                r = -EINVAL;
                goto fail;
        }
        if (v[0][0] != '/') {
                snprintf(why, whyn, "Exec= program '%.200s' is not an absolute path", v[0]);
                r = -EINVAL;
                goto fail;
        }
        *ret = v;
        return 0;
fail:
        strv_free(v);
        return r;
}

/* Seconds: a decimal number (fractions allowed, for tests) in [min, max]. */
static int parse_seconds(const char *s, double min, double max, double *ret) {
        char *end = NULL;
        if (!*s || !(isdigit((unsigned char)s[0]) || s[0] == '.'))
                return -EINVAL;
        errno = 0;
        double v = strtod(s, &end);
        if (errno || *end || !isfinite(v) || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static bool valid_text(const char *s, size_t max) {
        size_t n = strlen(s);
        if (n == 0 || n > max)
                return false;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

static bool valid_user(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 32)
                return false;
        for (const char *p = s; *p; p++)
                if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-' || *p == '.' || (*p == '$' && !p[1])))
                        return false;
        return s[0] != '-';
}

static bool valid_env(const char *s) {
        const char *eq = strchr(s, '=');
        if (!eq || eq == s)
                return false;
        if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
                return false;
        for (const char *p = s; p < eq; p++)
                if (!(isalnum((unsigned char)*p) || *p == '_'))
                        return false;
        return true;
}

static char *base_name_of(const char *path) {
        const char *b = strrchr(path, '/');
        b = b ? b + 1 : path;
        size_t n = strlen(b);
        if (n > 5 && !strcmp(b + n - 5, ".conf"))
                n -= 5;
        return strndup(b, n);
}

static int set_bad(KuraWriterConf *c, unsigned line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_bad(KuraWriterConf *c, unsigned line, const char *fmt, ...) {
        char why[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof why, fmt, ap);
        va_end(ap);
        free(c->bad);
        c->bad = line ? kura_asprintf("bad declaration: %s, line %u", why, line)
                      : kura_asprintf("bad declaration: %s", why);
        return c->bad ? 0 : -ENOMEM;
}

static void lower(char *s) {
        for (; *s; s++)
                *s = (char)tolower((unsigned char)*s);
}

/* Parse the text; on a syntax or value error set c->bad and return 1. */
static int parse_into(KuraWriterConf *c, const char *text, size_t len) {
        enum { K_NAME, K_CLASS, K_EXEC, K_USER, K_ENV, K_IDT, K_EVT, K_FRT, K_RC, K_RD, K_MAX };
        static const char *const keys[K_MAX] = {"Name",         "ClassId",      "Exec",          "User",
                                                "Environment",  "IdentifyTimeout", "EventTimeout", "FreezeTimeout",
                                                "RetryCount",   "RetryDelay"};
        unsigned seen_line[K_MAX] = {0};
        size_t nenv = 0;
        bool in_section = false;
        unsigned lineno = 0;
        char why[256];
        int r;

        if (memchr(text, 0, len))
                return set_bad(c, 0, "the file contains a NUL byte") < 0 ? -ENOMEM : 1;

        const char *p = text, *end = text + len;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *le = nl ? nl : end;
                lineno++;
                _cleanup_free_ char *line = strndup(p, (size_t)(le - p));
                p = nl ? nl + 1 : end;
                if (!line)
                        return -ENOMEM;
                /* trim */
                char *s = line;
                while (*s == ' ' || *s == '\t')
                        s++;
                size_t sl = strlen(s);
                while (sl > 0 && (s[sl - 1] == ' ' || s[sl - 1] == '\t' || s[sl - 1] == '\r'))
                        s[--sl] = 0;
                if (!*s || *s == '#' || *s == ';')
                        continue;
                if (*s == '[') {
                        if (strcmp(s, "[Writer]"))
                                return set_bad(c, lineno, "unknown section %.100s", s) < 0 ? -ENOMEM : 1;
                        if (in_section)
                                return set_bad(c, lineno, "a second [Writer] section") < 0 ? -ENOMEM : 1;
                        in_section = true;
                        continue;
                }
                char *eq = strchr(s, '=');
                if (!eq)
                        return set_bad(c, lineno, "expected Key=Value") < 0 ? -ENOMEM : 1;
                if (!in_section)
                        return set_bad(c, lineno, "Key=Value before the [Writer] section") < 0 ? -ENOMEM : 1;
                char *k = s, *v = eq + 1;
                char *ke = eq;
                while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
                        ke--;
                *ke = 0;
                while (*v == ' ' || *v == '\t')
                        v++;
                int key = -1;
                for (int i = 0; i < K_MAX; i++)
                        if (!strcmp(k, keys[i]))
                                key = i;
                if (key < 0)
                        return set_bad(c, lineno, "unknown key %.100s", k) < 0 ? -ENOMEM : 1;
                if (key != K_ENV && seen_line[key])
                        return set_bad(c, lineno, "%s= given twice (first on line %u)", keys[key], seen_line[key]) < 0
                                       ? -ENOMEM
                                       : 1;
                seen_line[key] = lineno;
                switch (key) {
                case K_NAME:
                        if (!valid_text(v, KURA_WRITER_NAME_MAX))
                                return set_bad(c, lineno, "Name= must be 1 to %d printable characters",
                                               KURA_WRITER_NAME_MAX) < 0 ? -ENOMEM : 1;
                        free(c->name);
                        if (!(c->name = strdup(v)))
                                return -ENOMEM;
                        break;
                case K_CLASS:
                        if (!kura_wproto_is_uuid(v))
                                return set_bad(c, lineno, "ClassId= '%.64s' is not a UUID", v) < 0 ? -ENOMEM : 1;
                        free(c->class_id);
                        if (!(c->class_id = strdup(v)))
                                return -ENOMEM;
                        lower(c->class_id);
                        break;
                case K_EXEC:
                        r = split_exec(v, &c->argv, why, sizeof why);
                        if (r == -ENOMEM)
                                return r;
                        if (r < 0)
                                return set_bad(c, lineno, "%s", why) < 0 ? -ENOMEM : 1;
                        break;
                case K_USER:
                        if (!valid_user(v))
                                return set_bad(c, lineno, "User= '%.64s' is not a valid user name", v) < 0 ? -ENOMEM
                                                                                                         : 1;
                        if (!(c->user = strdup(v)))
                                return -ENOMEM;
                        break;
                case K_ENV:
                        if (!valid_env(v))
                                return set_bad(c, lineno, "Environment= must be KEY=VALUE") < 0 ? -ENOMEM : 1;
                        if (nenv >= KURA_WRITER_ENV_MAX)
                                return set_bad(c, lineno, "more than %d Environment= lines", KURA_WRITER_ENV_MAX) < 0
                                               ? -ENOMEM
                                               : 1;
                        char *dup = strdup(v);
                        if (!dup || strv_push(&c->env, &nenv, dup) < 0)
                                return -ENOMEM;
                        break;
                case K_IDT:
                case K_EVT:
                case K_FRT: {
                        double d;
                        if (parse_seconds(v, 0.001, 86400, &d) < 0)
                                return set_bad(c, lineno, "%s= '%.32s' is not a number of seconds in (0, 86400]",
                                               keys[key], v) < 0 ? -ENOMEM : 1;
                        *(key == K_IDT ? &c->identify_timeout_s
                                       : key == K_EVT ? &c->event_timeout_s : &c->freeze_timeout_s) = d;
                        break;
                }
                case K_RD:
                        if (parse_seconds(v, 0, 3600, &c->retry_delay_s) < 0)
                                return set_bad(c, lineno, "RetryDelay= '%.32s' is not a number of seconds in [0, 3600]",
                                               v) < 0 ? -ENOMEM : 1;
                        break;
                case K_RC: {
                        char *e = NULL;
                        errno = 0;
                        unsigned long x = isdigit((unsigned char)v[0]) ? strtoul(v, &e, 10) : 1000;
                        if (errno || !e || *e || x > 100)
                                return set_bad(c, lineno, "RetryCount= '%.32s' is not a count in [0, 100]", v) < 0
                                               ? -ENOMEM
                                               : 1;
                        c->retry_count = (unsigned)x;
                        break;
                }
                }
        }
        if (!in_section)
                return set_bad(c, 0, "no [Writer] section") < 0 ? -ENOMEM : 1;
        if (!seen_line[K_NAME])
                return set_bad(c, 0, "Name= is missing") < 0 ? -ENOMEM : 1;
        if (!seen_line[K_CLASS])
                return set_bad(c, 0, "ClassId= is missing") < 0 ? -ENOMEM : 1;
        if (!seen_line[K_EXEC])
                return set_bad(c, 0, "Exec= is missing") < 0 ? -ENOMEM : 1;
        return 0;
}

int kura_writer_conf_parse(const char *conf_path, const char *text, size_t len, KuraWriterConf **ret) {
        KuraWriterConf *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->identify_timeout_s = 30;
        c->event_timeout_s = 60;
        c->freeze_timeout_s = 60;
        c->retry_count = 3;
        c->retry_delay_s = 10;
        if (!(c->conf_path = strdup(conf_path))) {
                kura_writer_conf_free(c);
                return -ENOMEM;
        }
        int r = len > KURA_WRITER_CONF_MAX ? set_bad(c, 0, "the file is larger than %d bytes", KURA_WRITER_CONF_MAX)
                                           : parse_into(c, text, len);
        if (r < 0) {
                kura_writer_conf_free(c);
                return r;
        }
        if (c->bad) {
                /* Keep a name to show; nothing else of a bad file is used. */
                free(c->name);
                c->name = base_name_of(conf_path);
                free(c->class_id);
                c->class_id = strdup("");
                strv_free(c->argv);
                c->argv = NULL;
                if (!c->name || !c->class_id) {
                        kura_writer_conf_free(c);
                        return -ENOMEM;
                }
        }
        *ret = c;
        return 0;
}

int kura_writer_conf_load(const char *conf_path, KuraWriterConf **ret) {
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        int r = kio_read_file(conf_path, KURA_WRITER_CONF_MAX + 1, &data, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                int rr = kura_writer_conf_parse(conf_path, "", 0, ret);
                if (rr < 0)
                        return rr;
                if (r == -EFBIG)
                        return set_bad(*ret, 0, "the file is larger than %d bytes", KURA_WRITER_CONF_MAX) < 0 ? -ENOMEM
                                                                                                             : 0;
                return set_bad(*ret, 0, "cannot read the file: %s", strerror(-r)) < 0 ? -ENOMEM : 0;
        }
        return kura_writer_conf_parse(conf_path, (const char *)data, len, ret);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

int kura_writer_confs_load(const char *config_dir, KuraWriterConf ***ret, size_t *ret_n, KuraErr *err) {
        _cleanup_free_ char *dir = kura_path_join(config_dir, "writers.d");
        if (!dir)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
        DIR *d = opendir(dir);
        if (!d) {
                if (errno == ENOENT || errno == ENOTDIR) {
                        *ret = NULL;
                        *ret_n = 0;
                        return 0;
                }
                return kura_err_errno(err, -errno, KURA_E_WRITER_FAILED,
                                      "check the permissions of the writers.d directory",
                                      "cannot read writer declarations in %s", dir);
        }
        char **names = NULL;
        size_t nn = 0;
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t l = strlen(de->d_name);
                if (de->d_name[0] == '.' || l <= 5 || strcmp(de->d_name + l - 5, ".conf"))
                        continue;
                char *s = strdup(de->d_name);
                if (!s || (r = strv_push(&names, &nn, s)) < 0) {
                        free(s);
                        r = -ENOMEM;
                        break;
                }
        }
        closedir(d);
        KuraWriterConf **cs = NULL;
        size_t n = 0;
        if (r == 0 && nn > 0) {
                qsort(names, nn, sizeof(char *), cmp_str);
                cs = calloc(nn, sizeof *cs);
                if (!cs)
                        r = -ENOMEM;
        }
        for (size_t i = 0; r == 0 && i < nn; i++) {
                _cleanup_free_ char *path = kura_path_join(dir, names[i]);
                if (!path || (r = kura_writer_conf_load(path, &cs[n])) < 0) {
                        r = -ENOMEM;
                        break;
                }
                KuraWriterConf *c = cs[n++];
                if (c->bad)
                        continue;
                for (size_t j = 0; j + 1 < n; j++)
                        if (!cs[j]->bad && !strcmp(cs[j]->name, c->name)) {
                                char first[300];
                                snprintf(first, sizeof first, "%s", cs[j]->conf_path);
                                if (set_bad(c, 0, "Name=%.256s is already declared by %s", c->name, first) < 0)
                                        r = -ENOMEM;
                                break;
                        }
        }
        strv_free(names);
        if (r < 0) {
                kura_writer_confs_free(cs, n);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "free some memory and retry", "out of memory");
        }
        *ret = cs;
        *ret_n = n;
        return 0;
}
