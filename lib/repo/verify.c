/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Restore-test records (docs/format/repository.md §11): the result of the
 * last `kura verify-restore` of a version, kept beside the version and not
 * in it.
 *
 * A manifest cannot carry the result: it is immutable and named by the hash
 * of its bytes, so it would get a new ID.  Instead REPO/verify/<version-id>
 * holds one sealed JSON object, replaced as a whole (temporary file, fsync,
 * rename, directory fsync through kio) by the next test of that version.
 * The record is sealed with the context "kura-verify\0" followed by the
 * version ID in hex, so that a record moved to another version's name (by
 * anyone who can write to the repository) fails authentication rather than
 * marking the wrong version verified.
 */
#include <dirent.h>
#include <jansson.h>

#include "repo/repo-internal.h"

#define KURA_AAD_VERIFY "kura-verify"
#define VERIFY_DIR "verify"
#define VERIFY_RECORD_MAX (1U << 20)
#define VERIFY_FORMAT 1

static const char *const remedy_record =
        "run `kura verify-restore` again for this version (it replaces the record), or delete the file";

static bool id_hex_ok(const char *s) {
        if (!s || strlen(s) != 2 * KURA_ID_LEN)
                return false;
        for (const char *c = s; *c; c++)
                if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
                        return false;
        return true;
}

/* The AAD: "kura-verify\0" followed by the 64 hex digits of the version ID. */
static size_t verify_aad(const char *id, uint8_t out[sizeof KURA_AAD_VERIFY + 2 * KURA_ID_LEN]) {
        memcpy(out, KURA_AAD_VERIFY, sizeof KURA_AAD_VERIFY); /* with its NUL */
        memcpy(out + sizeof KURA_AAD_VERIFY, id, 2 * KURA_ID_LEN);
        return sizeof KURA_AAD_VERIFY + 2 * KURA_ID_LEN;
}

static int check_id(const char *id, KuraErr *err) {
        if (!id_hex_ok(id))
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "report this bug",
                                "'%s' is not a full version ID (64 lowercase hex digits)", id ? id : "");
        return 0;
}

/* The checks a record must pass (§11): an object, "format" 1, "version" the
 * ID it is filed under, "ok" a boolean, "time" a string. */
static int record_validate(const json_t *j, const char *id) {
        if (!json_is_object(j))
                return KURA_CORRUPT();
        json_t *f = json_object_get(j, "format"), *v = json_object_get(j, "version");
        json_t *ok = json_object_get(j, "ok"), *t = json_object_get(j, "time");
        if (!json_is_integer(f) || !json_is_string(v) || !json_is_boolean(ok) || !json_is_string(t))
                return KURA_CORRUPT();
        if (json_integer_value(f) != VERIFY_FORMAT)
                return -EPROTONOSUPPORT;
        if (strcmp(json_string_value(v), id) != 0)
                return KURA_CORRUPT();
        return 0;
}

int kura_verify_record_save(KuraRepo *repo, const char *version_id, const char *json_text, KuraErr *err) {
        int r = check_id(version_id, err);
        if (r < 0)
                return r;
        size_t n = json_text ? strlen(json_text) : 0;
        json_error_t jerr;
        json_t *j = n ? json_loadb(json_text, n, JSON_REJECT_DUPLICATES, &jerr) : NULL;
        r = j ? record_validate(j, version_id) : -EINVAL;
        json_decref(j);
        if (r < 0 || n > VERIFY_RECORD_MAX)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "report this bug",
                                "refusing to write an invalid restore-test record for version %.12s", version_id);

        uint8_t aad[sizeof KURA_AAD_VERIFY + 2 * KURA_ID_LEN];
        size_t alen = verify_aad(version_id, aad);
        KuraBuf sealed = {0};
        pthread_mutex_lock(&repo->meta_lock);
        size_t over = kura_seal_overhead(repo->meta_sealer);
        r = kura_buf_reserve(&sealed, n + over);
        if (r >= 0)
                r = kura_seal(repo->meta_sealer, aad, alen, json_text, n, sealed.data);
        pthread_mutex_unlock(&repo->meta_lock);
        if (r < 0) {
                kura_buf_free(&sealed);
                return kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot seal the restore-test record");
        }
        sealed.len = n + over;

        _cleanup_free_ char *dir = kura_repo_subpath(repo, VERIFY_DIR, NULL);
        _cleanup_free_ char *path = kura_repo_subpath(repo, VERIFY_DIR, version_id);
        if (!dir || !path) {
                kura_buf_free(&sealed);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        /* Repositories made before restore tests existed have no verify/. */
        r = kio_mkdir(dir, 0700);
        if (r >= 0)
                r = kio_write_file(path, sealed.data, sealed.len);
        kura_buf_free(&sealed);
        if (r < 0)
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                      "check free space and permissions of the repository",
                                      "cannot write the restore-test record %s", path);
        return 0;
}

int kura_verify_record_load(KuraRepo *repo, const char *version_id, char **ret_json_text, KuraErr *err) {
        *ret_json_text = NULL;
        int r = check_id(version_id, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = kura_repo_subpath(repo, VERIFY_DIR, version_id);
        if (!path)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        r = kio_read_file(path, VERIFY_RECORD_MAX + 64, &data, &len);
        if (r == -ENOENT)
                return -ENOENT; /* never tested: not an error for the caller to show */
        if (r == -ENOMEM)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (r < 0)
                return kura_err_errno(err, r == -EFBIG ? -EBADMSG : r, KURA_E_DAMAGED, remedy_record,
                                      "cannot read the restore-test record %s", path);
        uint8_t aad[sizeof KURA_AAD_VERIFY + 2 * KURA_ID_LEN];
        size_t alen = verify_aad(version_id, aad);
        KuraBuf plain = {0};
        pthread_mutex_lock(&repo->meta_lock);
        size_t over = kura_seal_overhead(repo->meta_sealer), plen = 0;
        r = len < over ? KURA_CORRUPT() : kura_buf_reserve(&plain, len - over + 1);
        if (r >= 0)
                r = kura_unseal(repo->meta_sealer, aad, alen, data, len, plain.data, &plen);
        pthread_mutex_unlock(&repo->meta_lock);
        if (r < 0) {
                kura_buf_free(&plain);
                if (r == -ENOMEM)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_record,
                                "restore-test record %s cannot be authenticated (damaged, moved from another "
                                "version, or another repository's)",
                                path);
        }
        json_error_t jerr;
        json_t *j = json_loadb((const char *) plain.data, plen, JSON_REJECT_DUPLICATES, &jerr);
        r = j ? record_validate(j, version_id) : KURA_CORRUPT();
        json_decref(j);
        if (r < 0) {
                kura_buf_free(&plain);
                if (r == -EPROTONOSUPPORT)
                        return kura_err(err, EPROTONOSUPPORT, KURA_E_REPO_VERSION, "upgrade kura",
                                        "restore-test record %s was written by a newer kura", path);
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, remedy_record, "restore-test record %s is malformed",
                                path);
        }
        plain.data[plen] = 0;
        *ret_json_text = (char *) plain.data; /* the buffer's bytes are now the caller's */
        return 0;
}

int kura_verify_record_forget(KuraRepo *repo, const char *version_id, KuraErr *err) {
        int r = check_id(version_id, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = kura_repo_subpath(repo, VERIFY_DIR, version_id);
        if (!path)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        r = kio_unlink(path);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r), "check the repository's permissions",
                                      "cannot remove %s", path);
        return 1;
}

int kura_verify_records_prune(KuraRepo *repo, size_t *ret_removed, KuraErr *err) {
        size_t removed = 0;
        if (ret_removed)
                *ret_removed = 0;
        if (repo->lock_mode != KURA_LOCK_EXCLUSIVE)
                return kura_err(err, EPERM, KURA_E_INTERNAL, "open the repository with KURA_LOCK_EXCLUSIVE",
                                "removing restore-test records needs the exclusive lock on %s", repo->path);
        _cleanup_free_ char *dir = kura_repo_subpath(repo, VERIFY_DIR, NULL);
        if (!dir)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        DIR *d = opendir(dir);
        if (!d) {
                if (errno == ENOENT)
                        return 0;
                return kura_err_errno(err, -errno, KURA_E_REPO_IO, "check the repository's permissions",
                                      "cannot list %s", dir);
        }
        int r = 0;
        struct dirent *de;
        while (r >= 0 && (de = readdir(d))) {
                const char *nm = de->d_name;
                if (nm[0] == '.' && strncmp(nm, ".tmp-", 5) != 0)
                        continue;
                if (nm[0] != '.' && !id_hex_ok(nm))
                        continue; /* not ours: left alone */
                if (nm[0] != '.') {
                        _cleanup_free_ char *man = kura_repo_subpath(repo, "versions", nm);
                        if (!man) {
                                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                                break;
                        }
                        if (access(man, F_OK) == 0 || errno != ENOENT)
                                continue;
                }
                /* A record of a forgotten version, or a leftover of an interrupted write. */
                _cleanup_free_ char *p = kura_repo_subpath(repo, VERIFY_DIR, nm);
                int u = p ? kio_unlink(p) : -ENOMEM;
                if (u < 0 && u != -ENOENT)
                        r = kura_err_errno(err, u, kura_err_code_for_repo_write(u),
                                           "check the repository's permissions", "cannot remove %s/%s", dir, nm);
                else
                        removed++;
        }
        closedir(d);
        if (ret_removed)
                *ret_removed = removed;
        return r < 0 ? r : 0;
}
