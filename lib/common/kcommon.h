/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * lib/common: the helpers every other part of libkura uses.  Depends on
 * nothing but libc.  Private to libkura (not installed).
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kura/errors.h"

/* ---- ownership ---------------------------------------------------------- */

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void freep(void *p) { free(*(void **) p); }
static inline void closep(int *fd) { if (*fd >= 0) { int e = errno; close(*fd); errno = e; } }
static inline void fclosep(FILE **f) { if (*f) fclose(*f); }

#define _cleanup_free_  _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Hand ownership out of a _cleanup_ local. */
#define TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })
#define TAKE_FD(fd) ({ int _fd = (fd); (fd) = -1; _fd; })

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define KURA_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KURA_MAX(a, b) ((a) > (b) ? (a) : (b))
#define DIV_ROUND_UP(a, b) (((a) + (b) - 1) / (b))

/* Wipe secrets so the compiler cannot elide it. */
void kura_memzero(void *p, size_t n);
/* free() after wiping n bytes; accepts NULL. */
void kura_free_secret(void *p, size_t n);

/* ---- little-endian fields of on-disk structures ------------------------- */

static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static inline void put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static inline uint16_t get_le16(const uint8_t *p) { return (uint16_t) (p[0] | p[1] << 8); }
static inline uint32_t get_le32(const uint8_t *p) {
        return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p) { return (uint64_t) get_le32(p) | (uint64_t) get_le32(p + 4) << 32; }

/* ---- bounded reader: every read of outside bytes checks the length ------ */

typedef struct KuraBufReader {
        const uint8_t *p;
        size_t left;
} KuraBufReader;

static inline void kura_br_init(KuraBufReader *br, const void *p, size_t n) { br->p = p; br->left = n; }
/* Each returns 0, or -EBADMSG when fewer bytes are left than asked for. */
int kura_br_u8(KuraBufReader *br, uint8_t *ret);
int kura_br_le32(KuraBufReader *br, uint32_t *ret);
int kura_br_le64(KuraBufReader *br, uint64_t *ret);
int kura_br_bytes(KuraBufReader *br, void *ret, size_t n);
/* Borrow n bytes in place (valid as long as the underlying buffer). */
int kura_br_ptr(KuraBufReader *br, const uint8_t **ret, size_t n);

/* Growable write buffer. */
typedef struct KuraBuf {
        uint8_t *data;
        size_t len, cap;
} KuraBuf;
int kura_buf_reserve(KuraBuf *b, size_t extra);
int kura_buf_append(KuraBuf *b, const void *p, size_t n);
int kura_buf_le32(KuraBuf *b, uint32_t v);
int kura_buf_le64(KuraBuf *b, uint64_t v);
int kura_buf_u8(KuraBuf *b, uint8_t v);
void kura_buf_free(KuraBuf *b);

/* ---- corruption choke point --------------------------------------------- */

/* Every parser that rejects bytes from disk or network returns
 * KURA_CORRUPT(), which records where the corruption was first seen (for
 * debugging; `KURA_DEBUG=1` prints it to stderr from the CLI) and yields
 * -EBADMSG. */
int kura_corrupt_at(const char *file, int line);
#define KURA_CORRUPT() kura_corrupt_at(__FILE__, __LINE__)
const char *kura_corrupt_last(void);

/* ---- strings, hex, time -------------------------------------------------- */

void kura_hex(const void *p, size_t n, char *out /* 2n+1 */);
/* Parse exactly 2n hex digits.  Returns 0 or -EINVAL. */
int kura_unhex(const char *s, void *out, size_t n);
bool kura_is_hex(const char *s);
/* printf into a fresh string; NULL on ENOMEM. */
char *kura_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Append to a growing report string *s (NULL at first); on ENOMEM the text is dropped. */
void kura_appendf(char **s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "/a/b" + "c" -> "/a/b/c" (NULL on ENOMEM). */
char *kura_path_join(const char *a, const char *b);
/* Wall-clock seconds/ns since the epoch; monotonic seconds. */
int64_t kura_now_ns(void);
double kura_mono(void);
/* RFC 3339 UTC with nanoseconds: buf >= 40 bytes. */
void kura_format_time(int64_t ns, char *buf, size_t n);
/* Parse what kura_format_time() writes.  0 or -EINVAL. */
int kura_parse_time(const char *s, int64_t *ret_ns);
/* "1.5 GiB" style, buf >= 32. */
void kura_format_bytes(uint64_t v, char *buf, size_t n);
/* Parse "64M", "1MiB", "4096", "2G"... into bytes.  0 or -EINVAL/-ERANGE. */
int kura_parse_size(const char *s, uint64_t *ret);

/* Random bytes from the kernel (getrandom).  0 or negative errno. */
int kura_random(void *p, size_t n);
