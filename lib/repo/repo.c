/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Creating and opening repositories: config (§2), the first key slot (§3),
 * unlocking the master key, taking the lock, loading the index.
 */
#include <dirent.h>
#include <pwd.h>
#include <sys/stat.h>

#include "repo-internal.h"

/* ---- config (§2) ----------------------------------------------------------- */

int kura_config_encode(const KuraRepoConfig *c, int64_t created_ns, KuraBuf *out) {
        char created[64];
        kura_format_time(created_ns, created, sizeof created);
        json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:i, s:[], s:[], s:[], s:s}", "kura_repository", c->version, "id",
                              c->id, "encryption", c->encrypted ? "aes-256-gcm" : "none", "compression", "zstd",
                              "zstd_level", c->zstd_level, "features_compat", "features_ro_compat",
                              "features_incompat", "created", created);
        if (!o)
                return -ENOMEM;
        char *s = kura_json_dumps_checked(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (!s)
                return -ENOMEM;
        int r = kura_buf_append(out, s, strlen(s));
        if (r >= 0)
                r = kura_buf_u8(out, '\n');
        free(s);
        return r;
}

/* An array of strings (absent = empty).  Returns its length, or -EBADMSG. */
static int feature_array(json_t *o, const char *key) {
        json_t *a = json_object_get(o, key);
        if (!a)
                return 0;
        if (!json_is_array(a))
                return KURA_CORRUPT();
        size_t i;
        json_t *v;
        json_array_foreach(a, i, v)
                if (!json_is_string(v))
                        return KURA_CORRUPT();
        return (int) KURA_MIN(json_array_size(a), (size_t) INT32_MAX);
}

int kura_config_decode(const uint8_t *p, size_t n, KuraRepoConfig *ret) {
        json_error_t jerr;
        json_t *o = json_loadb((const char *) p, n, JSON_REJECT_DUPLICATES, &jerr);
        if (!o)
                return KURA_CORRUPT();
        int r = 0;
        KuraRepoConfig c = {0};
        json_t *v = json_object_get(o, "kura_repository");
        const char *s;
        if (!json_is_object(o) || !json_is_integer(v) || json_integer_value(v) < 1) {
                r = KURA_CORRUPT();
                goto out;
        }
        /* A newer version may change any other field: refuse before looking at them. */
        if (json_integer_value(v) > KURA_FORMAT_VERSION) {
                r = -EPROTONOSUPPORT;
                goto out;
        }
        c.version = (int) json_integer_value(v);
        r = feature_array(o, "features_incompat");
        if (r > 0)
                r = -EPROTONOSUPPORT; /* version 1 defines no features */
        if (r < 0)
                goto out;
        r = feature_array(o, "features_ro_compat");
        if (r < 0)
                goto out;
        c.ro_compat_unknown = r > 0;
        r = feature_array(o, "features_compat");
        if (r < 0)
                goto out;
        r = 0;
        s = json_string_value(json_object_get(o, "id"));
        if (!s || strlen(s) != 64 || !kura_is_hex(s)) {
                r = KURA_CORRUPT();
                goto out;
        }
        for (size_t i = 0; i < 64; i++)
                c.id[i] = (char) (s[i] >= 'A' && s[i] <= 'F' ? s[i] - 'A' + 'a' : s[i]);
        c.id[64] = 0;
        s = json_string_value(json_object_get(o, "encryption"));
        if (!s) {
                r = KURA_CORRUPT();
                goto out;
        }
        if (strcmp(s, "aes-256-gcm") == 0)
                c.encrypted = true;
        else if (strcmp(s, "none") == 0)
                c.encrypted = false;
        else {
                r = -EPROTONOSUPPORT;
                goto out;
        }
        s = json_string_value(json_object_get(o, "compression"));
        if (!s) {
                r = KURA_CORRUPT();
                goto out;
        }
        if (strcmp(s, "zstd") != 0) {
                r = -EPROTONOSUPPORT;
                goto out;
        }
        v = json_object_get(o, "zstd_level");
        if (!v)
                c.zstd_level = KURA_DEFAULT_ZSTD_LEVEL;
        else if (!json_is_integer(v) || json_integer_value(v) < -7 || json_integer_value(v) > 22) {
                r = KURA_CORRUPT();
                goto out;
        } else
                c.zstd_level = (int) json_integer_value(v);
        *ret = c;
out:
        json_decref(o);
        return r;
}

/* ---- init ------------------------------------------------------------------ */

static bool dir_is_empty(const char *path, int *ret_errno) {
        DIR *d = opendir(path);
        if (!d) {
                *ret_errno = -errno;
                return false;
        }
        struct dirent *de;
        bool empty = true;
        while ((de = readdir(d)))
                if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
                        empty = false;
                        break;
                }
        closedir(d);
        *ret_errno = 0;
        return empty;
}

void kura_host_user(char host[128], char user[64]) {
        if (gethostname(host, 128) < 0)
                snprintf(host, 128, "unknown");
        host[127] = 0;
        struct passwd pw, *res = NULL;
        char buf[1024];
        if (getpwuid_r(getuid(), &pw, buf, sizeof buf, &res) == 0 && res)
                snprintf(user, 64, "%s", res->pw_name);
        else
                snprintf(user, 64, "%u", (unsigned) getuid());
}

/* Write a key slot file for mk under password; *ret_id gets the slot ID. */
int kura_keyslot_write(const char *repo_path, const char *repo_id, const KuraMasterKey *mk, const char *password,
                       uint64_t kdf_mem, uint32_t kdf_passes, char ret_id[17], KuraErr *err) {
        KuraKdfParams kp = {
                .mem_bytes = kdf_mem ? kdf_mem : KURA_KDF_DEFAULT_MEM,
                .passes = kdf_passes ? kdf_passes : KURA_KDF_DEFAULT_PASSES,
        };
        json_t *slot = NULL;
        int r = kura_keyslot_wrap(mk, password, &kp, repo_id, &slot);
        if (r < 0)
                return kura_err_errno(err, r, r == -EINVAL ? KURA_E_USAGE : KURA_E_INTERNAL,
                                      "check the key derivation parameters", "cannot create a key slot");
        uint8_t rnd[8];
        char id[17], host[128], user[64], created[64];
        r = kura_random(rnd, sizeof rnd);
        if (r < 0) {
                json_decref(slot);
                return kura_err_errno(err, r, KURA_E_INTERNAL, "", "no random numbers");
        }
        kura_hex(rnd, sizeof rnd, id);
        kura_host_user(host, user);
        kura_format_time(kura_now_ns(), created, sizeof created);
        if (json_object_set_new(slot, "id", json_string(id)) < 0 ||
            json_object_set_new(slot, "created", json_string(created)) < 0 ||
            json_object_set_new(slot, "host", json_string(host)) < 0 ||
            json_object_set_new(slot, "user", json_string(user)) < 0 ||
            json_object_set_new(slot, "access", json_string("full")) < 0) {
                json_decref(slot);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "creating a key slot");
        }
        char *s = kura_json_dumps_checked(slot, JSON_INDENT(2));
        json_decref(slot);
        if (!s)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "creating a key slot");
        _cleanup_free_ char *path = kura_asprintf("%s/keys/%s", repo_path, id);
        if (!path) {
                free(s);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "creating a key slot");
        }
        r = kio_write_file_excl(path, s, strlen(s));
        free(s);
        if (r < 0)
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                      "check free space and permissions of the repository", "cannot write key slot %s",
                                      path);
        memcpy(ret_id, id, 17);
        return 0;
}

int kura_repo_init(const char *path, const KuraRepoInitOpts *opts, char **ret_repo_id, KuraErr *err) {
        static const KuraRepoInitOpts defaults = {.encrypted = true};
        if (!opts)
                opts = &defaults;
        if (opts->encrypted && (!opts->password || !*opts->password))
                return kura_err(err, EINVAL, KURA_E_NO_PASSWORD, "give a passphrase for the new repository",
                                "an encrypted repository needs a passphrase");
        int level = opts->zstd_level ? opts->zstd_level : KURA_DEFAULT_ZSTD_LEVEL;
        if (level < -7 || level > 22)
                return kura_err(err, EINVAL, KURA_E_USAGE, "use a level from 1 to 19", "invalid zstd level %d", level);

        struct stat st;
        if (stat(path, &st) == 0) {
                int e;
                if (!S_ISDIR(st.st_mode))
                        return kura_err(err, EEXIST, KURA_E_REPO_EXISTS, "choose a new or empty directory",
                                        "%s exists and is not a directory", path);
                if (!dir_is_empty(path, &e)) {
                        if (e < 0)
                                return kura_err_errno(err, e, KURA_E_REPO_IO, "", "cannot read %s", path);
                        return kura_err(err, EEXIST, KURA_E_REPO_EXISTS, "choose a new or empty directory",
                                        "%s is not empty", path);
                }
        } else {
                int r = kio_mkdir(path, 0700);
                if (r < 0)
                        return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                              "check that the parent directory exists and is writable",
                                              "cannot create %s", path);
        }
        static const char *const subdirs[] = {"keys", "data", "index", "versions", "locks"};
        for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
                _cleanup_free_ char *p = kura_path_join(path, subdirs[i]);
                if (!p)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "creating %s", path);
                int r = kio_mkdir(p, 0700);
                if (r < 0)
                        return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                              "check free space and permissions", "cannot create %s", p);
        }

        KuraRepoConfig c = {.version = KURA_FORMAT_VERSION, .encrypted = opts->encrypted, .zstd_level = level};
        uint8_t rid[32];
        int r = kura_random(rid, sizeof rid);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "", "no random numbers");
        kura_hex(rid, sizeof rid, c.id);

        if (opts->encrypted) {
                KuraMasterKey mk;
                char slot[17];
                r = kura_master_key_generate(&mk);
                if (r < 0)
                        return kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot generate the master key");
                r = kura_keyslot_write(path, c.id, &mk, opts->password, opts->kdf_mem, opts->kdf_passes, slot, err);
                kura_master_key_wipe(&mk);
                if (r < 0)
                        return r;
        }

        /* config last: its presence is what makes the directory a repository */
        KuraBuf b = {0};
        r = kura_config_encode(&c, kura_now_ns(), &b);
        if (r < 0) {
                kura_buf_free(&b);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "writing the config");
        }
        _cleanup_free_ char *cpath = kura_path_join(path, "config");
        r = cpath ? kio_write_file(cpath, b.data, b.len) : -ENOMEM;
        kura_buf_free(&b);
        if (r < 0)
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r), "check free space and permissions",
                                      "cannot write %s/config", path);
        if (ret_repo_id) {
                *ret_repo_id = strdup(c.id);
                if (!*ret_repo_id)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "creating %s", path);
        }
        return 0;
}

/* ---- open ------------------------------------------------------------------ */

static void wipe_password(char **pw) {
        if (*pw)
                kura_free_secret(*pw, strlen(*pw));
}

/* Try the password against every key slot. */
static int unlock_master_key(KuraRepo *repo, const KuraRepoOpenOpts *opts, KuraErr *err) {
        if (!opts->password_fn)
                return kura_err(err, ENOKEY, KURA_E_NO_PASSWORD, "give the repository's passphrase",
                                "repository %s is encrypted and no passphrase was given", repo->path);
        _cleanup_(wipe_password) char *pw = NULL;
        int r = opts->password_fn(opts->password_userdata, &pw);
        if (r < 0 || !pw)
                return kura_err(err, ENOKEY, KURA_E_NO_PASSWORD, "give the repository's passphrase",
                                "no passphrase for repository %s", repo->path);

        _cleanup_free_ char *kdir = kura_repo_subpath(repo, "keys", NULL);
        if (!kdir)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "opening %s", repo->path);
        DIR *d = opendir(kdir);
        if (!d)
                return kura_err_errno(err, -errno, KURA_E_NOT_A_REPO, "check the repository path",
                                      "cannot read key slots in %s", kdir);
        size_t nslots = 0, nbad = 0;
        bool ok = false;
        struct dirent *de;
        r = 0;
        while (!ok && (de = readdir(d))) {
                if (strlen(de->d_name) != 16 || !kura_is_hex(de->d_name))
                        continue;
                nslots++;
                _cleanup_free_ char *p = kura_path_join(kdir, de->d_name);
                _cleanup_free_ uint8_t *data = NULL;
                size_t n;
                if (!p || kio_read_file(p, 1 << 20, &data, &n) < 0) {
                        nbad++;
                        continue;
                }
                json_t *slot = json_loadb((const char *) data, n, 0, NULL);
                if (!slot) {
                        nbad++;
                        continue;
                }
                int k = kura_keyslot_unwrap(slot, pw, repo->id, &repo->mk);
                json_decref(slot);
                if (k == 0) {
                        ok = true;
                        snprintf(repo->slot_id, sizeof repo->slot_id, "%.16s", de->d_name);
                } else if (k == -ENOMEM) {
                        r = k;
                        break;
                } else if (k != -EKEYREJECTED)
                        nbad++;
        }
        closedir(d);
        if (r == -ENOMEM)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "unlocking %s", repo->path);
        if (ok)
                return 0;
        if (nslots == 0)
                return kura_err(err, ENOKEY, KURA_E_KEY_SLOT, "restore the keys/ directory from a copy",
                                "repository %s is encrypted but has no key slots", repo->path);
        if (nbad == nslots)
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, "restore the keys/ directory from a copy",
                                "no key slot of repository %s is readable", repo->path);
        return kura_err(err, EKEYREJECTED, KURA_E_WRONG_PASSWORD,
                        "check the passphrase (another key slot's passphrase works too)",
                        "the passphrase does not open any key slot of repository %s", repo->path);
}

int kura_repo_open(const char *path, const KuraRepoOpenOpts *opts, KuraRepo **ret, KuraErr *err) {
        static const KuraRepoOpenOpts defaults = {.lock = KURA_LOCK_SHARED};
        if (!opts)
                opts = &defaults;
        struct stat st;
        if (stat(path, &st) < 0) {
                int r = -errno;
                if (r == -ENOENT)
                        return kura_err(err, ENOENT, KURA_E_REPO_NOT_FOUND,
                                        "check the path, or create a repository with `kura init`",
                                        "no repository at %s", path);
                return kura_err_errno(err, r, KURA_E_REPO_IO, "check the path and its permissions", "cannot access %s",
                                      path);
        }
        if (!S_ISDIR(st.st_mode))
                return kura_err(err, ENOTDIR, KURA_E_NOT_A_REPO, "check the path", "%s is not a kura repository",
                                path);
        _cleanup_free_ char *cpath = kura_path_join(path, "config");
        if (!cpath)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "opening %s", path);
        _cleanup_free_ uint8_t *cdata = NULL;
        size_t cn = 0;
        int r = kio_read_file(cpath, 1 << 20, &cdata, &cn);
        if (r == -ENOENT || r == -EFBIG)
                return kura_err(err, ENOENT, KURA_E_NOT_A_REPO, "check the path",
                                "%s is not a kura repository (no config)", path);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_REPO_IO, "check the permissions", "cannot read %s", cpath);
        KuraRepoConfig c;
        r = kura_config_decode(cdata, cn, &c);
        if (r == -EPROTONOSUPPORT)
                return kura_err(err, EPROTONOSUPPORT, KURA_E_REPO_VERSION, "upgrade kura",
                                "repository %s uses a newer format or a feature this kura does not know", path);
        if (r < 0)
                return kura_err(err, EBADMSG, KURA_E_NOT_A_REPO, "check the path; if it is a repository, its config is damaged",
                                "%s is not a kura repository (config unreadable)", path);
        if (c.ro_compat_unknown && (opts->lock == KURA_LOCK_SHARED || opts->lock == KURA_LOCK_EXCLUSIVE))
                return kura_err(err, EPROTONOSUPPORT, KURA_E_REPO_VERSION, "upgrade kura to write to it",
                                "repository %s uses a feature this kura can read but not write", path);

        KuraRepo *repo = calloc(1, sizeof *repo);
        if (!repo)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "opening %s", path);
        pthread_mutex_init(&repo->meta_lock, NULL);
        pthread_mutex_init(&repo->index_lock, NULL);
        pthread_mutex_init(&repo->pack_lock, NULL);
        repo->path = strdup(path);
        memcpy(repo->id, c.id, sizeof repo->id);
        repo->encrypted = c.encrypted;
        repo->zstd_level = c.zstd_level;
        repo->read_only_compat = c.ro_compat_unknown;
        repo->stale_lock_age_s = opts->stale_lock_age_s > 0 ? opts->stale_lock_age_s : KURA_STALE_LOCK_AGE_DEFAULT;
        if (!repo->path || kura_index_new(&repo->index) < 0) {
                kura_repo_close(repo);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "opening %s", path);
        }

        if (repo->encrypted) {
                r = unlock_master_key(repo, opts, err);
        } else {
                /* fp key = SHA-256("kura-fp\0" ‖ repository ID as hex ASCII) */
                uint8_t in[8 + 64];
                memcpy(in, "kura-fp", 8);
                memcpy(in + 8, repo->id, 64);
                r = kura_sha256(in, sizeof in, repo->mk.fp);
                if (r < 0)
                        r = kura_err_errno(err, r, KURA_E_INTERNAL, "", "SHA-256 failed");
        }
        if (r >= 0) {
                r = kura_sealer_new(repo->encrypted ? repo->mk.enc : NULL, &repo->meta_sealer);
                if (r < 0)
                        r = kura_err_errno(err, r, KURA_E_INTERNAL, "", "cannot set up encryption");
        }
        if (r >= 0)
                r = kura_lock_take(repo, opts->lock, err);
        if (r >= 0)
                /* Tolerant: an unreadable index file must not keep the
                 * undamaged versions from restoring or check from naming
                 * the damage; its chunks simply look missing.  Prune
                 * refuses to run while one is unreadable. */
                r = kura_repo_load_index(repo, true, &repo->index_files_damaged, err);
        if (r < 0) {
                kura_repo_close(repo);
                return r;
        }
        *ret = repo;
        return 0;
}

typedef struct DumpCtx {
        KuraBuf b;
        bool failed;
} DumpCtx;

static int dump_cb(const char *buf, size_t n, void *ud) {
        DumpCtx *d = ud;
        if (kura_buf_append(&d->b, buf, n) < 0) {
                d->failed = true;
                return -1;
        }
        return 0;
}

char *kura_json_dumps_checked(const json_t *o, size_t flags) {
        /* Our own output callback records any failure, which jansson may
         * otherwise ignore while writing an object key. */
        DumpCtx d = {0};
        if (json_dump_callback(o, dump_cb, &d, flags) < 0 || d.failed || kura_buf_u8(&d.b, 0) < 0) {
                kura_buf_free(&d.b);
                return NULL;
        }
        return (char *) d.b.data;
}

size_t kura_repo_index_files_damaged(const KuraRepo *repo) { return repo->index_files_damaged; }

KuraRepo *kura_repo_close(KuraRepo *repo) {
        if (!repo)
                return NULL;
        if (repo->pw)
                kura_pack_writer_abort(repo, TAKE_PTR(repo->pw));
        kura_lock_release(repo);
        kura_sealer_free(repo->meta_sealer);
        kura_index_free(repo->index);
        for (size_t i = 0; i < repo->nindex_files; i++)
                free(repo->index_files[i]);
        free(repo->index_files);
        kura_pack_entries_free(repo->session_packs, repo->nsession_packs);
        kura_master_key_wipe(&repo->mk);
        pthread_mutex_destroy(&repo->meta_lock);
        pthread_mutex_destroy(&repo->index_lock);
        pthread_mutex_destroy(&repo->pack_lock);
        free(repo->lock_file);
        free(repo->path);
        kura_memzero(repo, sizeof *repo);
        free(repo);
        return NULL;
}

const char *kura_repo_path(const KuraRepo *repo) { return repo->path; }
const char *kura_repo_id(const KuraRepo *repo) { return repo->id; }
bool kura_repo_encrypted(const KuraRepo *repo) { return repo->encrypted; }
bool kura_repo_unlocked(const KuraRepo *repo) { return repo->unlocked; }
const uint8_t *kura_repo_fp_key(const KuraRepo *repo) { return repo->mk.fp; }

uint64_t kura_repo_index_count(const KuraRepo *repo) {
        KuraRepo *r = (KuraRepo *) repo; /* the lock is not part of the logical state */
        pthread_mutex_lock(&r->index_lock);
        uint64_t n = kura_index_count(r->index);
        pthread_mutex_unlock(&r->index_lock);
        return n;
}
