/* SPDX-License-Identifier: GPL-2.0-or-later */
#pragma once
/*
 * kura error objects.
 *
 * Every libkura function that can fail returns int: >= 0 on success, a
 * negative errno on failure.  Where the caller needs context it also takes a
 * `KuraErr *reterr` (may be NULL) as its last parameter; on failure the library
 * fills it with a stable user-facing code (one of the KURA_E_* strings below,
 * documented in docs/ERRORS.md, never renamed or reused), a one-line message
 * naming the object, and a remedy.  The first error recorded wins: later
 * kura_err_set() calls on an already-set object are ignored, so the deepest,
 * most specific cause is what the user sees.
 */
#include <stdarg.h>
#include <stdbool.h>

#define KURA_E_USAGE               "KURA-E-USAGE"
#define KURA_E_INTERNAL            "KURA-E-INTERNAL"
#define KURA_E_NO_MEMORY           "KURA-E-NO-MEMORY"
#define KURA_E_REPO_NOT_FOUND      "KURA-E-REPO-NOT-FOUND"
#define KURA_E_NOT_A_REPO          "KURA-E-NOT-A-REPO"
#define KURA_E_REPO_EXISTS         "KURA-E-REPO-EXISTS"
#define KURA_E_REPO_VERSION        "KURA-E-REPO-VERSION"
#define KURA_E_REPO_FULL           "KURA-E-REPO-FULL"
#define KURA_E_REPO_IO             "KURA-E-REPO-IO"
#define KURA_E_REPO_READ_ONLY      "KURA-E-REPO-READ-ONLY"
#define KURA_E_NO_PASSWORD         "KURA-E-NO-PASSWORD"
#define KURA_E_WRONG_PASSWORD      "KURA-E-WRONG-PASSWORD"
#define KURA_E_KEY_SLOT            "KURA-E-KEY-SLOT"
#define KURA_E_LOCKED              "KURA-E-LOCKED"
#define KURA_E_VERSION_NOT_FOUND   "KURA-E-VERSION-NOT-FOUND"
#define KURA_E_VERSION_AMBIGUOUS   "KURA-E-VERSION-AMBIGUOUS"
#define KURA_E_VOLUME_NOT_FOUND    "KURA-E-VOLUME-NOT-FOUND"
#define KURA_E_VOLUME_REQUIRED     "KURA-E-VOLUME-REQUIRED"
#define KURA_E_SOURCE_NOT_FOUND    "KURA-E-SOURCE-NOT-FOUND"
#define KURA_E_SOURCE_UNREADABLE   "KURA-E-SOURCE-UNREADABLE"
#define KURA_E_SOURCE_MOUNTED      "KURA-E-SOURCE-MOUNTED"
#define KURA_E_TARGET_NOT_FOUND    "KURA-E-TARGET-NOT-FOUND"
#define KURA_E_TARGET_TOO_SMALL    "KURA-E-TARGET-TOO-SMALL"
#define KURA_E_TARGET_MOUNTED      "KURA-E-TARGET-MOUNTED"
#define KURA_E_TARGET_IO           "KURA-E-TARGET-IO"
#define KURA_E_DAMAGED             "KURA-E-DAMAGED"
#define KURA_E_CHECK_FAILED        "KURA-E-CHECK-FAILED"
#define KURA_E_INTERRUPTED         "KURA-E-INTERRUPTED"

/* Snapshots and writers (include/kura/snap.h, lib/snap/). */
#define KURA_E_WRITER_FAILED          "KURA-E-WRITER-FAILED"
#define KURA_E_WRITER_TIMEOUT         "KURA-E-WRITER-TIMEOUT"
#define KURA_E_INCONSISTENT_SNAPSHOT  "KURA-E-INCONSISTENT-SNAPSHOT"
#define KURA_E_SNAPSHOT_SPACE         "KURA-E-SNAPSHOT-SPACE"
#define KURA_E_NO_PROVIDER            "KURA-E-NO-PROVIDER"
#define KURA_E_PROVIDER_FAILED        "KURA-E-PROVIDER-FAILED"
#define KURA_E_FREEZE_LIMIT           "KURA-E-FREEZE-LIMIT"
#define KURA_E_FREEZE_REFUSED         "KURA-E-FREEZE-REFUSED"
#define KURA_E_SHADOW_NOT_FOUND       "KURA-E-SHADOW-NOT-FOUND"

/* Disks and bare-metal recovery (include/kura/disk.h, lib/image/disk*.c, lib/engine/bmr.c). */
#define KURA_E_DISK_LAYOUT            "KURA-E-DISK-LAYOUT"
#define KURA_E_DISK_NOT_MAPPED        "KURA-E-DISK-NOT-MAPPED"
#define KURA_E_NOT_BMR_COMPLETE       "KURA-E-NOT-BMR-COMPLETE"
#define KURA_E_FS_RESIZE              "KURA-E-FS-RESIZE"
#define KURA_E_TOOL_MISSING           "KURA-E-TOOL-MISSING"
#define KURA_E_NOT_CONFIRMED          "KURA-E-NOT-CONFIRMED"
#define KURA_E_CRITICAL_LIVE          "KURA-E-CRITICAL-LIVE"
#define KURA_E_VERIFY_FAILED          "KURA-E-VERIFY-FAILED"

/* Warnings (printed, exit status unaffected). */
#define KURA_W_LEFTOVER            "KURA-W-LEFTOVER"
#define KURA_W_NO_LOCK             "KURA-W-NO-LOCK"
#define KURA_W_STALE_LOCK          "KURA-W-STALE-LOCK"
#define KURA_W_DAMAGE_SKIPPED      "KURA-W-DAMAGE-SKIPPED"
#define KURA_W_NO_CACHE            "KURA-W-NO-CACHE"
#define KURA_W_CRASH_CONSISTENT    "KURA-W-CRASH-CONSISTENT"

typedef struct KuraErr {
        const char *code;       /* static string, NULL while unset */
        int errnum;             /* positive errno of the failure */
        char message[768];      /* one line naming the object */
        char remedy[512];       /* what the user can do */
} KuraErr;

/* Fill *err (if err != NULL and not yet set).  Returns -errnum so that
 * callers can write `return kura_err(err, ENOENT, KURA_E_..., "remedy", "fmt", ...);`. */
int kura_err(KuraErr *err, int errnum, const char *code, const char *remedy,
             const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Like kura_err() but with errnum taken as a negative errno (r < 0), the
 * strerror text appended to the message. */
int kura_err_errno(KuraErr *err, int r, const char *code, const char *remedy,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static inline bool kura_err_isset(const KuraErr *err) { return err && err->code; }
void kura_err_clear(KuraErr *err);

/* Map a negative errno from a repository write to the right code
 * (ENOSPC/EDQUOT -> KURA-E-REPO-FULL, EROFS -> KURA-E-REPO-READ-ONLY, else KURA-E-REPO-IO). */
const char *kura_err_code_for_repo_write(int r);
