/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <ctype.h>
#include <stdarg.h>
#include <sys/random.h>
#include <time.h>

#include "kcommon.h"

void kura_memzero(void *p, size_t n) {
        if (!p || n == 0)
                return;
        explicit_bzero(p, n);
}

void kura_free_secret(void *p, size_t n) {
        if (!p)
                return;
        kura_memzero(p, n);
        free(p);
}

int kura_br_u8(KuraBufReader *br, uint8_t *ret) {
        if (br->left < 1)
                return KURA_CORRUPT();
        *ret = br->p[0];
        br->p++, br->left--;
        return 0;
}

int kura_br_le32(KuraBufReader *br, uint32_t *ret) {
        if (br->left < 4)
                return KURA_CORRUPT();
        *ret = get_le32(br->p);
        br->p += 4, br->left -= 4;
        return 0;
}

int kura_br_le64(KuraBufReader *br, uint64_t *ret) {
        if (br->left < 8)
                return KURA_CORRUPT();
        *ret = get_le64(br->p);
        br->p += 8, br->left -= 8;
        return 0;
}

int kura_br_bytes(KuraBufReader *br, void *ret, size_t n) {
        if (br->left < n)
                return KURA_CORRUPT();
        memcpy(ret, br->p, n);
        br->p += n, br->left -= n;
        return 0;
}

int kura_br_ptr(KuraBufReader *br, const uint8_t **ret, size_t n) {
        if (br->left < n)
                return KURA_CORRUPT();
        *ret = br->p;
        br->p += n, br->left -= n;
        return 0;
}

int kura_buf_reserve(KuraBuf *b, size_t extra) {
        if (b->len + extra <= b->cap)
                return 0;
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap < b->len + extra) {
                if (ncap > SIZE_MAX / 2)
                        return -ENOMEM;
                ncap *= 2;
        }
        uint8_t *n = realloc(b->data, ncap);
        if (!n)
                return -ENOMEM;
        b->data = n;
        b->cap = ncap;
        return 0;
}

int kura_buf_append(KuraBuf *b, const void *p, size_t n) {
        int r = kura_buf_reserve(b, n);
        if (r < 0)
                return r;
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        return 0;
}

int kura_buf_u8(KuraBuf *b, uint8_t v) { return kura_buf_append(b, &v, 1); }
int kura_buf_le32(KuraBuf *b, uint32_t v) { uint8_t x[4]; put_le32(x, v); return kura_buf_append(b, x, 4); }
int kura_buf_le64(KuraBuf *b, uint64_t v) { uint8_t x[8]; put_le64(x, v); return kura_buf_append(b, x, 8); }

void kura_buf_free(KuraBuf *b) {
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
}

static __thread char corrupt_where[256];

int kura_corrupt_at(const char *file, int line) {
        if (!corrupt_where[0])
                snprintf(corrupt_where, sizeof corrupt_where, "%s:%d", file, line);
        if (getenv("KURA_DEBUG"))
                fprintf(stderr, "kura: corrupt data detected at %s:%d\n", file, line);
        return -EBADMSG;
}

const char *kura_corrupt_last(void) { return corrupt_where; }

void kura_hex(const void *p, size_t n, char *out) {
        static const char d[] = "0123456789abcdef";
        const uint8_t *b = p;
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = d[b[i] >> 4];
                out[2 * i + 1] = d[b[i] & 15];
        }
        out[2 * n] = 0;
}

static int hexval(char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
}

int kura_unhex(const char *s, void *out, size_t n) {
        uint8_t *b = out;
        if (!s || strlen(s) != 2 * n)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
                if (hi < 0 || lo < 0)
                        return -EINVAL;
                b[i] = (uint8_t) (hi << 4 | lo);
        }
        return 0;
}

bool kura_is_hex(const char *s) {
        if (!s || !*s)
                return false;
        for (; *s; s++)
                if (hexval(*s) < 0)
                        return false;
        return true;
}

char *kura_asprintf(const char *fmt, ...) {
        va_list ap;
        char *s = NULL;
        va_start(ap, fmt);
        int r = vasprintf(&s, fmt, ap);
        va_end(ap);
        return r < 0 ? NULL : s;
}

char *kura_path_join(const char *a, const char *b) {
        size_t la = strlen(a);
        while (la > 1 && a[la - 1] == '/')
                la--;
        return kura_asprintf("%.*s/%s", (int) la, a, b);
}

int64_t kura_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

double kura_mono(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

void kura_format_time(int64_t ns, char *buf, size_t n) {
        time_t s = (time_t) (ns / 1000000000LL);
        long frac = (long) (ns % 1000000000LL);
        struct tm tm;
        gmtime_r(&s, &tm);
        char base[32];
        strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf, n, "%s.%09ldZ", base, frac);
}

int kura_parse_time(const char *s, int64_t *ret_ns) {
        struct tm tm = {0};
        const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
        if (!p)
                return -EINVAL;
        long frac = 0;
        if (*p == '.') {
                p++;
                int digits = 0;
                while (isdigit((unsigned char) *p)) {
                        if (digits < 9) {
                                frac = frac * 10 + (*p - '0');
                                digits++;
                        }
                        p++;
                }
                while (digits++ < 9)
                        frac *= 10;
        }
        if (strcmp(p, "Z") != 0)
                return -EINVAL;
        time_t t = timegm(&tm);
        /* int64 nanoseconds cover 1678..2262; refuse what would overflow. */
        if (t == (time_t) -1 || t < -9223372035LL || t > 9223372035LL)
                return -ERANGE;
        *ret_ns = (int64_t) t * 1000000000LL + frac;
        return 0;
}

void kura_format_bytes(uint64_t v, char *buf, size_t n) {
        static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
        double d = (double) v;
        size_t i = 0;
        while (d >= 1024 && i + 1 < ELEMENTSOF(u)) {
                d /= 1024;
                i++;
        }
        if (i == 0)
                snprintf(buf, n, "%llu B", (unsigned long long) v);
        else
                snprintf(buf, n, "%.1f %s", d, u[i]);
}

int kura_parse_size(const char *s, uint64_t *ret) {
        char *end;
        errno = 0;
        if (!s || !isdigit((unsigned char) *s))
                return -EINVAL;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno)
                return -ERANGE;
        uint64_t mul = 1;
        if (*end) {
                switch (toupper((unsigned char) *end)) {
                case 'K': mul = 1ULL << 10; break;
                case 'M': mul = 1ULL << 20; break;
                case 'G': mul = 1ULL << 30; break;
                case 'T': mul = 1ULL << 40; break;
                default: return -EINVAL;
                }
                end++;
                if (*end == 'i' || *end == 'I')
                        end++;
                if (*end == 'B' || *end == 'b')
                        end++;
                if (*end)
                        return -EINVAL;
        }
        if (v > UINT64_MAX / mul)
                return -ERANGE;
        *ret = v * mul;
        return 0;
}

int kura_random(void *p, size_t n) {
        uint8_t *b = p;
        while (n > 0) {
                ssize_t k = getrandom(b, n, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                b += k;
                n -= (size_t) k;
        }
        return 0;
}

void kura_appendf(char **s, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        char *add = NULL;
        if (vasprintf(&add, fmt, ap) < 0)
                add = NULL;
        va_end(ap);
        if (!add)
                return;
        char *n = kura_asprintf("%s%s", *s ? *s : "", add);
        free(add);
        if (n) {
                free(*s);
                *s = n;
        }
}
