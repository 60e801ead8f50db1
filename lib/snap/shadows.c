/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Recorded shadows (state_dir/shadows.json): the snapshots kept for change
 * tracking by successful backups (retained_for_backup) and the persistent
 * ones `kura shadows create` made; shadow storage of volumes.
 *
 * shadows.json:  {"version":1,"shadows":[{"id","set_id","volume","device",
 *                 "provider","created_ns","retained_for_backup"}, ...]}
 * Written whole through kio (temporary file, fsync, rename).
 */
#include <inttypes.h>
#include <jansson.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>

#include "common/kio.h"
#include "kura/image.h"
#include "snap-internal.h"
#include "writer-internal.h"

#define SHADOWS_FILE "shadows.json"
#define SHADOWS_MAX_BYTES (16u << 20)

static void shadows_json_decrefp(json_t **j) {
        if (*j)
                json_decref(*j);
}

static void copy_str(char *dst, size_t n, json_t *o, const char *key) {
        const char *v = json_string_value(json_object_get(o, key));
        snprintf(dst, n, "%s", v ? v : "");
}

int kura_shadow_records_load(const char *state_dir, KuraShadowInfo **ret, size_t *ret_n) {
        *ret = NULL;
        *ret_n = 0;
        if (!state_dir)
                return 0;
        _cleanup_free_ char *path = kura_path_join(state_dir, SHADOWS_FILE);
        if (!path)
                return -ENOMEM;
        _cleanup_free_ uint8_t *buf = NULL;
        size_t len = 0;
        int r = kio_read_file(path, SHADOWS_MAX_BYTES, &buf, &len);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        json_error_t je;
        _cleanup_(shadows_json_decrefp) json_t *root = json_loadb((const char *) buf, len, 0, &je);
        json_t *arr = root ? json_object_get(root, "shadows") : NULL;
        if (!json_is_array(arr))
                return KURA_CORRUPT();
        size_t n = json_array_size(arr);
        _cleanup_free_ KuraShadowInfo *v = calloc(n ? n : 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
                json_t *o = json_array_get(arr, i);
                if (!json_is_object(o))
                        continue;
                copy_str(v[k].id, sizeof v[k].id, o, "id");
                copy_str(v[k].set_id, sizeof v[k].set_id, o, "set_id");
                copy_str(v[k].volume, sizeof v[k].volume, o, "volume");
                copy_str(v[k].device, sizeof v[k].device, o, "device");
                copy_str(v[k].provider, sizeof v[k].provider, o, "provider");
                v[k].created_ns = json_integer_value(json_object_get(o, "created_ns"));
                v[k].retained_for_backup = json_is_true(json_object_get(o, "retained_for_backup"));
                if (!v[k].id[0] || !v[k].device[0])
                        continue;
                k++;
        }
        *ret = TAKE_PTR(v);
        *ret_n = k;
        return 0;
}

int kura_shadow_records_save(const char *state_dir, const KuraShadowInfo *v, size_t n) {
        if (!state_dir)
                return -EINVAL;
        _cleanup_(shadows_json_decrefp) json_t *arr = json_array();
        if (!arr)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:b}", "id", v[i].id, "set_id", v[i].set_id,
                                      "volume", v[i].volume, "device", v[i].device, "provider", v[i].provider,
                                      "created_ns", (json_int_t) v[i].created_ns, "retained_for_backup",
                                      (int) v[i].retained_for_backup);
                if (!o || json_array_append_new(arr, o) < 0)
                        return -ENOMEM;
        }
        _cleanup_(shadows_json_decrefp) json_t *root = json_pack("{s:i, s:O}", "version", 1, "shadows", arr);
        if (!root)
                return -ENOMEM;
        _cleanup_free_ char *text = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
        if (!text)
                return -ENOMEM;
        int r = kio_mkdir(state_dir, 0700);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = kura_path_join(state_dir, SHADOWS_FILE);
        if (!path)
                return -ENOMEM;
        return kio_write_file(path, text, strlen(text));
}

/* Read-modify-write of shadows.json under an exclusive flock, so that two
 * backups finishing at once do not lose each other's records.  -1 (no lock)
 * is tolerated: the state directory may not exist yet. */
static int records_lock(const char *state_dir) {
        if (!state_dir || kio_mkdir(state_dir, 0700) < 0)
                return -1;
        _cleanup_free_ char *p = kura_path_join(state_dir, SHADOWS_FILE ".lock");
        if (!p)
                return -1;
        int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0)
                while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
                        ;
        return fd;
}

int kura_shadow_record_add(const char *state_dir, const KuraShadow *s, bool retained_for_backup) {
        _cleanup_close_ int lk = records_lock(state_dir); /* held until return */
        (void) lk;
        _cleanup_free_ KuraShadowInfo *v = NULL;
        size_t n = 0;
        int r = kura_shadow_records_load(state_dir, &v, &n);
        if (r < 0 && r != -EBADMSG)
                return r;
        KuraShadowInfo *nv = reallocarray(v, n + 1, sizeof *nv);
        if (!nv)
                return -ENOMEM;
        v = nv;
        KuraShadowInfo *e = &v[n];
        memset(e, 0, sizeof *e);
        snprintf(e->id, sizeof e->id, "%s", s->id);
        snprintf(e->set_id, sizeof e->set_id, "%s", s->set_id);
        snprintf(e->volume, sizeof e->volume, "%s", s->volume);
        snprintf(e->device, sizeof e->device, "%s", s->device ? s->device : "");
        snprintf(e->provider, sizeof e->provider, "%s", s->ops ? s->ops->name : "");
        e->created_ns = s->created_ns ? s->created_ns : kura_now_ns();
        e->retained_for_backup = retained_for_backup;
        return kura_shadow_records_save(state_dir, v, n + 1);
}

int kura_shadow_record_remove(const char *state_dir, const char *id) {
        _cleanup_close_ int lk = records_lock(state_dir); /* held until return */
        (void) lk;
        _cleanup_free_ KuraShadowInfo *v = NULL;
        size_t n = 0, k = 0;
        int r = kura_shadow_records_load(state_dir, &v, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (strcmp(v[i].id, id))
                        v[k++] = v[i];
        if (k == n)
                return 0;
        return kura_shadow_records_save(state_dir, v, k);
}

int kura_shadow_record_retained(const char *state_dir, const char *volume, const char *provider,
                                KuraShadowInfo *ret) {
        _cleanup_free_ KuraShadowInfo *v = NULL;
        size_t n = 0;
        int r = kura_shadow_records_load(state_dir, &v, &n);
        if (r < 0)
                return r;
        /* the newest one wins if there are several */
        for (size_t i = n; i-- > 0;)
                if (v[i].retained_for_backup && !strcmp(v[i].volume, volume) && !strcmp(v[i].provider, provider)) {
                        *ret = v[i];
                        return 0;
                }
        return -ENOENT;
}

/* ---- public: kura shadows list|create|delete ---------------------------- */

int kura_shadows_list(const char *state_dir, KuraShadowInfo **ret, size_t *ret_n, KuraErr *err) {
        int r = kura_shadow_records_load(state_dir, ret, ret_n);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED,
                                      r == -EBADMSG ? "Move the damaged file away; recorded snapshots must then be "
                                                      "removed by hand (lvremove, rm)."
                                                    : "Check the permissions of the state directory.",
                                      "cannot read %s/%s", state_dir ? state_dir : "", SHADOWS_FILE);
        return 0;
}

static bool persistent_provider(const KuraProviderOps *ops) {
        return ops->changed != NULL; /* lvm-thin, reflink */
}

static int create_one(const char *state_dir, const KuraProviderOps *want, const char *volume, const char *set_id,
                      KuraShadow *s, KuraErr *err) {
        int r = kura_volume_probe(volume, &s->probe, err);
        if (r < 0)
                return r;
        const KuraProviderOps *ops = NULL;
        char why[512] = "";
        const KuraProviderOps *const *t = kura_provider_table();
        for (size_t i = 0; t[i]; i++) {
                if (want ? t[i] != want : (!persistent_provider(t[i]) && t[i] != &kura_provider_lvm))
                        continue;
                char w[256] = "";
                if (!t[i]->available(w, sizeof w)) {
                        snprintf(why + strlen(why), sizeof why - strlen(why), "%s%s: %s", why[0] ? "; " : "",
                                 t[i]->name, w);
                        continue;
                }
                r = t[i]->supports(volume, &s->probe, w, sizeof w);
                if (r > 0) {
                        ops = t[i];
                        break;
                }
                snprintf(why + strlen(why), sizeof why - strlen(why), "%s%s: %s", why[0] ? "; " : "", t[i]->name,
                         r < 0 ? strerror(-r) : w);
        }
        if (!ops)
                return kura_err(err, ENOTSUP, KURA_E_NO_PROVIDER,
                                "Persistent shadows need an LVM logical volume (lvm, lvm-thin) or an image file on "
                                "xfs/btrfs (reflink).",
                                "no provider can make a persistent shadow of %s (%s)", volume, why);
        if (ops == &kura_provider_fsfreeze || ops == &kura_provider_none)
                return kura_err(err, ENOTSUP, KURA_E_NO_PROVIDER,
                                "Use lvm, lvm-thin or reflink for persistent shadows.",
                                "provider %s makes no snapshot that outlives the backup", ops->name);
        kura_uuid_text(s->id);
        snprintf(s->set_id, sizeof s->set_id, "%s", set_id);
        s->volume = strdup(volume);
        if (!s->volume)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        s->ops = ops;
        s->state_dir = state_dir;
        s->created_ns = kura_now_ns();
        KuraSnapOpts o = {.state_dir = state_dir};
        r = ops->prepare(s, &o, err);
        if (r < 0)
                return r;
        /* A clone of a mounted image needs its filesystem still for the
         * instant of the clone (LVM freezes by itself when it suspends). */
        bool freeze = ops == &kura_provider_reflink && s->probe.mounted_rw && s->probe.mountpoint[0];
        if (freeze && (r = kura_fs_freeze(s->probe.mountpoint, err)) < 0)
                return r;
        if (freeze)
                (void) kura_snap_emergency_add_frozen(s->probe.mountpoint);
        r = ops->create(s, err);
        if (freeze) {
                int q = kura_fs_thaw(s->probe.mountpoint, err);
                kura_snap_emergency_del_frozen(s->probe.mountpoint);
                if (r >= 0 && q < 0) {
                        (void) ops->release(s, false, NULL);
                        return q;
                }
        }
        return r;
}

static void shadow_clear(KuraShadow *s) {
        free(s->volume);
        free(s->device);
        free(s->priv);
        memset(s, 0, sizeof *s);
}

int kura_shadows_create(const char *state_dir, const char *provider, const char *const *volumes, size_t n,
                        char ret_set_id[40], KuraErr *err) {
        const KuraProviderOps *want = NULL;
        if (provider && strcmp(provider, "auto")) {
                want = kura_provider_find(provider);
                if (!want)
                        return kura_err(err, EINVAL, KURA_E_NO_PROVIDER, "`kura providers` lists them.",
                                        "unknown snapshot provider '%s'", provider);
        }
        if (n == 0)
                return kura_err(err, EINVAL, KURA_E_USAGE, "Name at least one volume.", "no volume given");
        char set_id[40];
        kura_uuid_text(set_id);
        KuraShadow *made = calloc(n, sizeof *made);
        if (!made)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        int r = 0;
        size_t i;
        for (i = 0; i < n; i++) {
                r = create_one(state_dir, want, volumes[i], set_id, &made[i], err);
                if (r < 0)
                        break;
                r = kura_shadow_record_add(state_dir, &made[i], false);
                if (r < 0) {
                        kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "Check the state directory.",
                                       "cannot record the shadow of %s in %s", volumes[i], state_dir);
                        i++;
                        break;
                }
        }
        if (r < 0) {
                /* all or nothing: remove what this set made so far */
                for (size_t j = 0; j < n && j <= i; j++) {
                        if (!made[j].ops)
                                continue;
                        if (made[j].ops->release)
                                (void) made[j].ops->release(&made[j], false, NULL);
                        (void) kura_shadow_record_remove(state_dir, made[j].id);
                }
        } else
                snprintf(ret_set_id, 40, "%s", set_id);
        for (size_t j = 0; j < n; j++)
                shadow_clear(&made[j]);
        free(made);
        return r;
}

int kura_shadows_delete(const char *state_dir, const char *id_or_set_id, KuraErr *err) {
        _cleanup_free_ KuraShadowInfo *v = NULL;
        size_t n = 0;
        int r = kura_shadows_list(state_dir, &v, &n, err);
        if (r < 0)
                return r;
        size_t hit = 0;
        int first = 0;
        for (size_t i = 0; i < n; i++) {
                if (strcmp(v[i].id, id_or_set_id) && strcmp(v[i].set_id, id_or_set_id))
                        continue;
                hit++;
                const KuraProviderOps *ops = kura_provider_find(v[i].provider);
                KuraShadow s = {.volume = v[i].volume, .device = v[i].device, .ops = ops, .state_dir = state_dir};
                snprintf(s.id, sizeof s.id, "%s", v[i].id);
                r = ops && ops->release ? ops->release(&s, false, first < 0 ? NULL : err) : 0;
                if (r < 0) {
                        if (first == 0)
                                first = r;
                        continue; /* keep the record of what could not be removed */
                }
                r = kura_shadow_record_remove(state_dir, v[i].id);
                if (r < 0 && first == 0)
                        first = kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "Check the state directory.",
                                               "cannot update %s/%s", state_dir, SHADOWS_FILE);
        }
        if (hit == 0)
                return kura_err(err, ENOENT, KURA_E_SHADOW_NOT_FOUND, "`kura shadows list` shows the shadow IDs.",
                                "no shadow or shadow set with ID %s", id_or_set_id);
        return first;
}

/* ---- shadow storage ------------------------------------------------------ */

static int storage_one(const char *volume, KuraShadowStorage *ret, bool *ret_found, KuraErr *err) {
        KuraVolumeProbe p;
        *ret_found = false;
        int r = kura_volume_probe(volume, &p, err);
        if (r < 0)
                return r;
        const KuraProviderOps *const *t = kura_provider_table();
        for (size_t i = 0; t[i]; i++) {
                char w[256];
                if (!t[i]->space || !t[i]->available(w, sizeof w) || t[i]->supports(volume, &p, w, sizeof w) <= 0)
                        continue;
                r = t[i]->space(volume, &p, ret, err);
                if (r < 0)
                        return r;
                *ret_found = true;
                return 0;
        }
        return 0;
}

int kura_shadowstorage_list(const char *const *volumes, size_t n, KuraShadowStorage **ret, size_t *ret_n,
                            KuraErr *err) {
        _cleanup_free_ KuraShadowStorage *v = NULL;
        size_t k = 0;
        _cleanup_free_ char **known = NULL;
        size_t nknown = 0;
        _cleanup_free_ KuraShadowInfo *recs = NULL;
        size_t nrec = 0;
        _cleanup_free_ char *lvs = NULL;

        if (n == 0) {
                /* All known volumes: those with recorded shadows, and every LV. */
                const char *sd = getenv("KURA_STATE_DIR");
                (void) kura_shadow_records_load(sd ? sd : "/var/lib/kura", &recs, &nrec);
                char why[256];
                size_t cap = nrec + 1;
                if (kura_provider_lvm.available(why, sizeof why)) {
                        lvs = malloc(1 << 16);
                        const char *argv[] = {"lvs", "--noheadings", "-o", "lv_path,lv_attr", NULL};
                        if (lvs && kura_provider_run(argv, 30, lvs, 1 << 16, NULL, 0) != 0)
                                lvs[0] = 0;
                        for (const char *c = lvs; c && *c; c++)
                                cap += *c == '\n';
                }
                known = calloc(cap, sizeof *known);
                if (!known)
                        return -ENOMEM;
                for (size_t i = 0; i < nrec; i++) {
                        bool dup = false;
                        for (size_t j = 0; j < nknown; j++)
                                dup |= !strcmp(known[j], recs[i].volume);
                        if (!dup)
                                known[nknown++] = recs[i].volume;
                }
                char *save = NULL;
                for (char *line = lvs ? strtok_r(lvs, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
                        char path[4096], attr[32];
                        if (sscanf(line, " %4095s %31s", path, attr) != 2 || attr[0] == 's' || attr[0] == 'S' ||
                            attr[0] == 't' || attr[0] == 'e')
                                continue; /* skip snapshots, pools and their hidden parts */
                        /* lv_path lives in lvs[], which outlives the loop */
                        char *p = strstr(line, path);
                        p[strlen(path)] = 0;
                        bool dup = false;
                        for (size_t j = 0; j < nknown; j++)
                                dup |= !strcmp(known[j], p);
                        if (!dup && nknown < cap)
                                known[nknown++] = p;
                }
                volumes = (const char *const *) known;
                n = nknown;
        }
        v = calloc(n ? n : 1, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                bool found;
                KuraErr e1 = {0};
                int r = storage_one(volumes[i], &v[k], &found, known ? &e1 : err);
                if (r < 0 && !known)
                        return r;
                if (r >= 0 && found)
                        k++;
        }
        *ret = TAKE_PTR(v);
        *ret_n = k;
        return 0;
}
