/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * kio: every write libkura makes to a repository goes through here, so that
 * (1) the crash-safety rules live in one place — never modify in place; write
 * a temporary file, fsync it, rename it over the final name, fsync the
 * directory — and (2) tests can inject faults.
 *
 * Fault injection (tests only, read from the environment once):
 *   KURA_FAULT_CRASH_AT=N   simulate a power loss at the Nth I/O event
 *                           (write, fsync, rename, directory fsync, unlink,
 *                           mkdir — each counts one): every write not yet made
 *                           durable is dropped (files truncated to their last
 *                           fsynced length, files and renames whose directory was
 *                           not fsynced undone), then the process _exit()s with
 *                           status KIO_CRASH_EXIT.
 *   KURA_FAULT_COUNT=FILE   at exit, write the number of I/O events seen to FILE
 *                           (so a test knows how many crash points there are).
 *   KURA_FAULT_ENOSPC_AFTER=BYTES  writes fail with ENOSPC once BYTES have been
 *                           written in total.
 * Without these variables kio is a thin pass-through.
 */
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KIO_CRASH_EXIT 86

typedef struct KioFile KioFile;

/* Create a new temporary file (O_EXCL, O_CLOEXEC, mode 0600) named
 * "DIR/.tmp-<random>".  *ret is owned by the caller: finish it with
 * kio_commit() or kio_abort().  Returns 0 or a negative errno. */
int kio_create_tmp(const char *dir, KioFile **ret);
/* Append all n bytes (retries short writes and EINTR). */
int kio_write(KioFile *f, const void *p, size_t n);
/* Bytes written so far. */
uint64_t kio_size(const KioFile *f);
/* The underlying fd (borrowed; valid until commit/abort). */
int kio_fd(const KioFile *f);
int kio_fsync(KioFile *f);
/* fsync, close, rename to final_path (which must be in the same directory or
 * at least the same filesystem), fsync the final directory.  Frees f in every
 * case; on failure the temporary file is removed. */
int kio_commit(KioFile *f, const char *final_path);
/* Close and unlink the temporary file; frees f.  Accepts NULL. */
void kio_abort(KioFile *f);

/* Whole-file helper: kio_create_tmp(dirname(path)) + write + commit. */
int kio_write_file(const char *path, const void *p, size_t n);
/* Like kio_write_file() but fails with -EEXIST if path exists (link(2)-based). */
int kio_write_file_excl(const char *path, const void *p, size_t n);
/* unlink + fsync of the directory. */
int kio_unlink(const char *path);
/* mkdir (0700 unless mode given) + fsync of the parent; EEXIST is success. */
int kio_mkdir(const char *path, mode_t mode);
int kio_fsync_dir(const char *dir);

/* Read a whole file into a fresh buffer (max bytes; -EFBIG beyond). */
int kio_read_file(const char *path, size_t max, uint8_t **ret, size_t *ret_len);
/* pread exactly n bytes; -EBADMSG (via KURA_CORRUPT) on a short file. */
int kio_pread_full(int fd, void *p, size_t n, uint64_t off);
