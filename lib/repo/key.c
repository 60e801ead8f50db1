/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Key slots (§3): add, list, remove.  The wrapping itself is lib/crypto's
 * (kura_keyslot_wrap); the file is written by kura_keyslot_write() in repo.c
 * with link(2) so an existing slot is never overwritten.
 */
#include <dirent.h>

#include "repo-internal.h"

int kura_key_add(KuraRepo *repo, const char *password, uint64_t kdf_mem, uint32_t kdf_passes, char ret_id[17],
                 KuraErr *err) {
        if (!repo->encrypted)
                return kura_err(err, EINVAL, KURA_E_KEY_SLOT, "an unencrypted repository has no passphrases",
                                "repository %s is not encrypted", repo->path);
        if (!password || !*password)
                return kura_err(err, EINVAL, KURA_E_NO_PASSWORD, "give the new passphrase",
                                "no passphrase for the new key slot");
        char id[17];
        int r = kura_keyslot_write(repo->path, repo->id, &repo->mk, password, kdf_mem, kdf_passes, id, err);
        if (r < 0)
                return r;
        if (ret_id)
                memcpy(ret_id, id, 17);
        return 0;
}

static int slot_parse(const uint8_t *data, size_t n, KuraKeySlotInfo *ki) {
        json_t *o = json_loadb((const char *) data, n, 0, NULL);
        if (!o)
                return KURA_CORRUPT();
        int r = 0;
        const char *s;
        if (!json_is_object(o)) {
                r = KURA_CORRUPT();
                goto out;
        }
        if ((s = json_string_value(json_object_get(o, "created"))) && kura_parse_time(s, &ki->created_ns) < 0)
                ki->created_ns = 0;
        if ((s = json_string_value(json_object_get(o, "host"))))
                snprintf(ki->host, sizeof ki->host, "%s", s);
        if ((s = json_string_value(json_object_get(o, "user"))))
                snprintf(ki->user, sizeof ki->user, "%s", s);
        s = json_string_value(json_object_get(o, "access"));
        snprintf(ki->access, sizeof ki->access, "%s", s ? s : "full");
        json_t *v = json_object_get(o, "mem");
        if (json_is_integer(v) && json_integer_value(v) > 0)
                ki->kdf_mem = (uint64_t) json_integer_value(v);
        v = json_object_get(o, "passes");
        if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= UINT32_MAX)
                ki->kdf_passes = (uint32_t) json_integer_value(v);
out:
        json_decref(o);
        return r;
}

static int info_cmp(const void *a, const void *b) {
        const KuraKeySlotInfo *x = a, *y = b;
        if (x->created_ns != y->created_ns)
                return x->created_ns < y->created_ns ? -1 : 1;
        return strcmp(x->id, y->id);
}

int kura_key_list(KuraRepo *repo, KuraKeySlotInfo **ret, size_t *ret_n, KuraErr *err) {
        _cleanup_free_ char *dir = kura_repo_subpath(repo, "keys", NULL);
        if (!dir)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "listing key slots");
        DIR *d = opendir(dir);
        if (!d)
                return kura_err_errno(err, -errno, KURA_E_REPO_IO, "", "cannot list %s", dir);
        KuraKeySlotInfo *v = NULL;
        size_t n = 0;
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strlen(de->d_name) != 16 || !kura_is_hex(de->d_name))
                        continue;
                _cleanup_free_ char *p = kura_path_join(dir, de->d_name);
                _cleanup_free_ uint8_t *data = NULL;
                size_t len;
                if (!p) {
                        r = -ENOMEM;
                        break;
                }
                KuraKeySlotInfo ki = {0};
                snprintf(ki.id, sizeof ki.id, "%.16s", de->d_name);
                int k = kio_read_file(p, 1 << 20, &data, &len);
                if (k == -ENOENT)
                        continue;
                if (k >= 0)
                        k = slot_parse(data, len, &ki);
                if (k == -ENOMEM) {
                        r = k;
                        break;
                }
                if (k < 0)
                        snprintf(ki.access, sizeof ki.access, "damaged");
                ki.current = strcmp(ki.id, repo->slot_id) == 0;
                KuraKeySlotInfo *nv = realloc(v, (n + 1) * sizeof *nv);
                if (!nv) {
                        r = -ENOMEM;
                        break;
                }
                v = nv;
                v[n++] = ki;
        }
        closedir(d);
        if (r < 0) {
                free(v);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "listing key slots");
        }
        if (n > 1)
                qsort(v, n, sizeof *v, info_cmp);
        *ret = v;
        *ret_n = n;
        return 0;
}

int kura_key_remove(KuraRepo *repo, const char *id_prefix, KuraErr *err) {
        if (!id_prefix || !*id_prefix)
                return kura_err(err, EINVAL, KURA_E_USAGE, "name the key slot (see `kura key list`)",
                                "no key slot given");
        if (repo->lock_mode != KURA_LOCK_EXCLUSIVE)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "removing a key slot needs the exclusive lock");
        KuraKeySlotInfo *v = NULL;
        size_t n = 0;
        int r = kura_key_list(repo, &v, &n, err);
        if (r < 0)
                return r;
        size_t matches = 0, which = 0, plen = strlen(id_prefix);
        for (size_t i = 0; i < n; i++)
                if (strncasecmp(v[i].id, id_prefix, plen) == 0) {
                        matches++;
                        which = i;
                }
        if (matches == 0)
                r = kura_err(err, ENOENT, KURA_E_KEY_SLOT, "see `kura key list`", "no key slot %s in %s", id_prefix,
                             repo->path);
        else if (matches > 1)
                r = kura_err(err, EINVAL, KURA_E_KEY_SLOT, "give more digits of the slot ID",
                             "%zu key slots of %s start with %s", matches, repo->path, id_prefix);
        else if (n == 1)
                r = kura_err(err, EPERM, KURA_E_KEY_SLOT,
                             "add another key slot first (`kura key add`); without one the data cannot be read",
                             "key slot %s is the last one of %s", v[which].id, repo->path);
        else {
                _cleanup_free_ char *p = kura_asprintf("%s/keys/%s", repo->path, v[which].id);
                r = p ? kio_unlink(p) : -ENOMEM;
                if (r < 0)
                        r = kura_err_errno(err, r, kura_err_code_for_repo_write(r), "check the permissions",
                                           "cannot remove key slot %s", p ? p : v[which].id);
        }
        free(v);
        return r < 0 ? r : 0;
}
