/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Provider "lvm-thin": snapshots of thin logical volumes.  They cost nothing
 * until the origin changes and slow nothing down, so a successful backup
 * keeps its snapshot (recorded in state_dir/shadows.json) as the base of the
 * next one, and changed() asks the pool which blocks differ between the two:
 *
 *   dmsetup message VG-POOL-tpool 0 reserve_metadata_snap
 *   thin_delta -m --snap1 OLD_ID --snap2 NEW_ID /dev/mapper/VG-POOL_tmeta
 *   dmsetup message VG-POOL-tpool 0 release_metadata_snap
 *
 * (reading the live metadata device is only safe through the metadata
 * snapshot).  thin_delta reports ranges of pool blocks (data_block_size
 * sectors each) as same / different / left_only / right_only; all but "same"
 * are changed bytes of the volume.
 */
#include <inttypes.h>
#include <limits.h>

#include "snap-internal.h"

#define THIN_TIMEOUT_S 300
#define THIN_CHECK_INTERVAL_S 2.0

typedef struct ThinPriv {
        char vg[128], lv[128], pool[128], snap[128];
        bool created;
        double last_check;
} ThinPriv;

static bool thin_available(char *why, size_t n) {
        return kura_lvm_available(why, n);
}

static int thin_supports(const char *volume, const KuraVolumeProbe *p, char *why, size_t n) {
        KuraLvInfo li;
        int r = kura_lvm_supports_lv(volume, p, &li, why, n);
        if (r <= 0)
                return r;
        if (strcmp(li.segtype, "thin")) {
                snprintf(why, n, "%s/%s is not a thin volume (segment type %s)", li.vg, li.lv, li.segtype);
                return 0;
        }
        return 1;
}

static int thin_prepare(KuraShadow *s, const KuraSnapOpts *o, KuraErr *err) {
        (void) o;
        KuraLvInfo li, pool;
        char e[512];
        int r = kura_lvm_info(s->volume, &li, e, sizeof e);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "Check the volume with lvs.",
                                      "cannot query the logical volume %s (%s)", s->volume, e);
        ThinPriv *pv = calloc(1, sizeof *pv);
        if (!pv)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        free(s->priv);
        s->priv = pv;
        snprintf(pv->vg, sizeof pv->vg, "%s", li.vg);
        snprintf(pv->lv, sizeof pv->lv, "%s", li.lv);
        snprintf(pv->pool, sizeof pv->pool, "%s", li.pool);
        snprintf(pv->snap, sizeof pv->snap, "kura-snap-%.8s", s->id);
        char pname[260];
        snprintf(pname, sizeof pname, "%s/%s", li.vg, li.pool);
        if (li.pool[0] && kura_lvm_info(pname, &pool, NULL, 0) >= 0 && pool.percent >= 100.0)
                return kura_err(err, ENOSPC, KURA_E_SNAPSHOT_SPACE,
                                "Extend the thin pool (lvextend) or remove old snapshots (kura shadows list).",
                                "thin pool %s is full: no room for changes to %s/%s while a snapshot exists",
                                pname, li.vg, li.lv);
        free(s->device);
        s->device = kura_asprintf("/dev/%s/%s", pv->vg, pv->snap);
        if (!s->device)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        return 0;
}

static int thin_create(KuraShadow *s, KuraErr *err) {
        ThinPriv *pv = s->priv;
        if (!pv)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "lvm-thin: create() before prepare() for %s",
                                s->volume);
        char origin[260], e[512];
        snprintf(origin, sizeof origin, "%s/%s", pv->vg, pv->lv);
        /* thin snapshots are created with the activation-skip flag: -K activates
         * it anyway, --setactivationskip n keeps it activatable after a reboot. */
        const char *argv[] = {"lvcreate", "-q", "-y", "-s", "-n", pv->snap, "-ay", "-K", "--setactivationskip", "n",
                              "--addtag", "kura", origin, NULL};
        bool refreeze = kura_lvm_thaw_if_frozen(s->probe.mountpoint);
        int r = kura_provider_run(argv, THIN_TIMEOUT_S, NULL, 0, e, sizeof e);
        if (refreeze)
                (void) kura_fs_freeze(s->probe.mountpoint, NULL);
        if (r != 0)
                return kura_err_errno(err, r < 0 ? r : -EIO, KURA_E_PROVIDER_FAILED,
                                      "Check the thin pool (lvs -a) and the kernel log.",
                                      "lvcreate of a thin snapshot of %s failed: %s", origin, e);
        pv->created = true;
        return 0;
}

static int thin_check(KuraShadow *s, KuraErr *err) {
        ThinPriv *pv = s->priv;
        if (!pv || !pv->created || !pv->pool[0])
                return 0;
        double now = kura_mono();
        if (now - pv->last_check < THIN_CHECK_INTERVAL_S)
                return 0;
        pv->last_check = now;
        char pname[260];
        snprintf(pname, sizeof pname, "%s/%s", pv->vg, pv->pool);
        KuraLvInfo pool;
        if (kura_lvm_info(pname, &pool, NULL, 0) >= 0 && pool.percent >= 100.0)
                return kura_err(err, ENOSPC, KURA_E_SNAPSHOT_SPACE,
                                "Extend the thin pool (lvextend) or remove old snapshots (kura shadows list).",
                                "thin pool %s holding the snapshot of %s/%s ran out of space (shadow storage) "
                                "during the copy; like Windows error 0x80780119",
                                pname, pv->vg, pv->lv);
        return 0;
}

static int thin_release(KuraShadow *s, bool retain, KuraErr *err) {
        ThinPriv *pv = s->priv;
        int r = 0;
        if (pv && pv->created && retain && s->state_dir) {
                KuraShadowInfo old;
                bool have_old = kura_shadow_record_retained(s->state_dir, s->volume, "lvm-thin", &old) == 0;
                r = kura_shadow_record_add(s->state_dir, s, true);
                if (r < 0) {
                        kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "Check that the state directory is writable.",
                                       "cannot record the retained snapshot %s in %s", s->device, s->state_dir);
                        (void) kura_lvm_remove_device(s->device, NULL);
                } else if (have_old && strcmp(old.id, s->id)) {
                        if (kura_lvm_remove_device(old.device, NULL) >= 0)
                                (void) kura_shadow_record_remove(s->state_dir, old.id);
                }
        } else if (pv && pv->created) {
                r = kura_lvm_remove_device(s->device, err);
        } else if (!pv && s->device)
                r = kura_lvm_remove_device(s->device, err);
        free(pv);
        s->priv = NULL;
        return r;
}

/* device-mapper name of VG/LV: every '-' doubled, joined by '-'. */
static void dm_name(const char *vg, const char *lv, const char *suffix, char *buf, size_t n) {
        size_t k = 0;
        const char *parts[2] = {vg, lv};
        for (int i = 0; i < 2; i++) {
                if (i && k + 1 < n)
                        buf[k++] = '-';
                for (const char *c = parts[i]; *c && k + 2 < n; c++) {
                        buf[k++] = *c;
                        if (*c == '-')
                                buf[k++] = '-';
                }
        }
        buf[k] = 0;
        snprintf(buf + k, n - k, "%s", suffix);
}

static int xml_attr_u64(const char *s, const char *name, uint64_t *ret) {
        char key[64];
        snprintf(key, sizeof key, " %s=\"", name);
        const char *p = strstr(s, key);
        if (!p)
                return -EBADMSG;
        p += strlen(key);
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno || end == p || *end != '"')
                return -EBADMSG;
        *ret = v;
        return 0;
}

/* Parse thin_delta's XML into byte ranges, clamped to size. */
static int parse_delta(char *xml, uint64_t size, KuraExtent **ret, size_t *ret_n) {
        uint64_t bs = 0;
        char *sb = strstr(xml, "<superblock");
        if (!sb || xml_attr_u64(sb, "data_block_size", &bs) < 0 || bs == 0 || bs > (1u << 22))
                return KURA_CORRUPT();
        bs *= 512;
        _cleanup_free_ KuraExtent *v = NULL;
        size_t n = 0, cap = 0;
        char *save = NULL;
        for (char *line = strtok_r(xml, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                while (*line == ' ' || *line == '\t')
                        line++;
                bool changed = !strncmp(line, "<different", 10) || !strncmp(line, "<left_only", 10) ||
                               !strncmp(line, "<right_only", 11);
                if (!changed)
                        continue;
                uint64_t b, len = 1;
                if (xml_attr_u64(line, "begin", &b) < 0)
                        return KURA_CORRUPT();
                (void) xml_attr_u64(line, "length", &len); /* --verbose lines have none */
                if (b > size / bs + 1 || len > size / bs + 1)
                        return KURA_CORRUPT();
                uint64_t off = b * bs, l = len * bs;
                if (off >= size)
                        continue;
                if (l > size - off)
                        l = size - off;
                if (n > 0 && v[n - 1].off + v[n - 1].len >= off) {
                        uint64_t end = KURA_MAX(v[n - 1].off + v[n - 1].len, off + l);
                        v[n - 1].len = end - v[n - 1].off;
                        continue;
                }
                if (n == cap) {
                        size_t nc = cap ? cap * 2 : 64;
                        KuraExtent *nv = reallocarray(v, nc, sizeof *nv);
                        if (!nv)
                                return -ENOMEM;
                        v = nv;
                        cap = nc;
                }
                v[n++] = (KuraExtent) {.off = off, .len = l};
        }
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

static int thin_changed(KuraShadow *s, KuraExtent **ret, size_t *ret_n, KuraErr *err) {
        ThinPriv *pv = s->priv;
        if (!pv || !pv->created || !s->state_dir || !pv->pool[0])
                return -ENODATA;
        KuraShadowInfo old;
        if (kura_shadow_record_retained(s->state_dir, s->volume, "lvm-thin", &old) < 0 || !strcmp(old.id, s->id))
                return -ENODATA;
        KuraLvInfo a, b;
        char snapname[260];
        snprintf(snapname, sizeof snapname, "%s/%s", pv->vg, pv->snap);
        if (strncmp(old.device, "/dev/", 5) || kura_lvm_info(old.device + 5, &a, NULL, 0) < 0 || a.thin_id < 0 ||
            strcmp(a.pool, pv->pool))
                return -ENODATA; /* the base is gone or elsewhere: read everything */
        if (kura_lvm_info(snapname, &b, NULL, 0) < 0 || b.thin_id < 0)
                return -ENODATA;

        char tpool[300], tmeta[300], meta_dev[320], id1[24], id2[24], e[512];
        dm_name(pv->vg, pv->pool, "-tpool", tpool, sizeof tpool);
        dm_name(pv->vg, pv->pool, "_tmeta", tmeta, sizeof tmeta);
        snprintf(meta_dev, sizeof meta_dev, "/dev/mapper/%s", tmeta);
        snprintf(id1, sizeof id1, "%ld", a.thin_id);
        snprintf(id2, sizeof id2, "%ld", b.thin_id);

        const char *reserve[] = {"dmsetup", "message", tpool, "0", "reserve_metadata_snap", NULL};
        const char *release[] = {"dmsetup", "message", tpool, "0", "release_metadata_snap", NULL};
        int r = kura_provider_run(reserve, THIN_TIMEOUT_S, NULL, 0, e, sizeof e);
        if (r != 0) {
                /* a stale metadata snapshot from a killed run: release and retry once */
                (void) kura_provider_run(release, THIN_TIMEOUT_S, NULL, 0, NULL, 0);
                r = kura_provider_run(reserve, THIN_TIMEOUT_S, NULL, 0, e, sizeof e);
        }
        if (r != 0)
                return kura_err_errno(err, r < 0 ? r : -EIO, KURA_E_PROVIDER_FAILED,
                                      "The backup reads the whole volume instead.",
                                      "cannot reserve a metadata snapshot of thin pool %s: %s", tpool, e);
        size_t cap = 64u << 20;
        _cleanup_free_ char *xml = malloc(cap);
        if (!xml) {
                (void) kura_provider_run(release, THIN_TIMEOUT_S, NULL, 0, NULL, 0);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        const char *delta[] = {"thin_delta", "-m", "--snap1", id1, "--snap2", id2, meta_dev, NULL};
        r = kura_provider_run(delta, THIN_TIMEOUT_S, xml, cap, e, sizeof e);
        (void) kura_provider_run(release, THIN_TIMEOUT_S, NULL, 0, NULL, 0);
        if (r != 0)
                return kura_err_errno(err, r < 0 ? r : -EIO, KURA_E_PROVIDER_FAILED,
                                      "The backup reads the whole volume instead (apt-get install "
                                      "thin-provisioning-tools if thin_delta is missing).",
                                      "thin_delta between snapshots %s and %s of pool %s failed: %s", id1, id2, tpool,
                                      e);
        if (strlen(xml) >= cap - 1)
                return -ENODATA; /* too many differences to list: read everything */
        uint64_t size = b.size ? b.size : s->probe.size;
        r = parse_delta(xml, size, ret, ret_n);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "The backup reads the whole volume instead.",
                                      "cannot parse the output of thin_delta for pool %s", tpool);
        return 0;
}

static int thin_space(const char *volume, const KuraVolumeProbe *p, KuraShadowStorage *ret, KuraErr *err) {
        (void) p;
        KuraLvInfo li, pool;
        char e[512], pname[260];
        int r = kura_lvm_info(volume, &li, e, sizeof e);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "", "cannot query %s (%s)", volume, e);
        snprintf(pname, sizeof pname, "%s/%s", li.vg, li.pool);
        r = kura_lvm_info(pname, &pool, e, sizeof e);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "", "cannot query thin pool %s (%s)", pname, e);
        memset(ret, 0, sizeof *ret);
        snprintf(ret->volume, sizeof ret->volume, "%s", volume);
        snprintf(ret->provider, sizeof ret->provider, "lvm-thin");
        ret->allocated = pool.size;
        ret->used = (uint64_t) ((double) pool.size * (pool.percent > 0 ? pool.percent : 0) / 100.0);
        ret->maximum = pool.size;
        return 0;
}

const KuraProviderOps kura_provider_lvm_thin = {
        .name = "lvm-thin",
        .id = "9d1c34e6-6a0f-4b1e-9f3e-2b5c8a7e0005",
        .type = "system",
        .description = "LVM thin snapshots, kept between backups; changes found with thin_delta",
        .available = thin_available,
        .supports = thin_supports,
        .prepare = thin_prepare,
        .create = thin_create,
        .check = thin_check,
        .release = thin_release,
        .changed = thin_changed,
        .space = thin_space,
};
