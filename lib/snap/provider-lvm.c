/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Provider "lvm": classic copy-on-write LVM snapshots of a (non-thin) logical
 * volume.  lvcreate -s -L SIZE -n kura-snap-<id> VG/LV, the backup reads
 * /dev/VG/kura-snap-<id>, lvremove -f afterwards.  The copy-on-write area is
 * this volume's shadow storage: 20 % of the origin, or KURA_LVM_SNAPSHOT_SIZE;
 * when writes to the origin fill it during the copy the snapshot becomes
 * invalid and check() fails with KURA-E-SNAPSHOT-SPACE.
 *
 * Freezing: LVM suspends the origin with lockfs (the kernel freezes the
 * filesystem itself), and on kernels before 6.8 that suspend fails when the
 * filesystem was already frozen from user space.  create() therefore thaws a
 * filesystem the coordinator froze for the instant of lvcreate and freezes it
 * again afterwards, so that the coordinator's window stays as it expects.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

#include "snap-internal.h"

#define LVM_TIMEOUT_S 120
#define LVM_CHECK_INTERVAL_S 2.0

typedef struct LvmPriv {
        char vg[128], lv[128], snap[128];
        uint64_t cow_bytes;
        bool created;
        double last_check;
} LvmPriv;

bool kura_lvm_available(char *why, size_t n) {
        static const char *const tools[] = {"lvcreate", "lvs", "lvremove", "vgs"};
        char p[4096];
        for (size_t i = 0; i < ELEMENTSOF(tools); i++)
                if (!kura_provider_tool(tools[i], p, sizeof p)) {
                        snprintf(why, n, "%s is missing (apt-get install lvm2)", tools[i]);
                        return false;
                }
        if (access("/dev/mapper/control", F_OK) < 0) {
                snprintf(why, n, "device-mapper is not available (no /dev/mapper/control): the kernel lacks dm-mod");
                return false;
        }
        return true;
}

/* Split s at sep into at most max fields (in place); returns the count. */
static size_t split(char *s, char sep, char **f, size_t max) {
        size_t k = 0;
        while (k < max) {
                while (*s == ' ' || *s == '\t')
                        s++;
                f[k++] = s;
                char *e = strchr(s, sep);
                char *end = e ? e : s + strlen(s);
                while (end > s && (end[-1] == ' ' || end[-1] == '\n' || end[-1] == '\t'))
                        end--;
                if (!e) {
                        *end = 0;
                        break;
                }
                *end = 0;
                s = e + 1;
        }
        return k;
}

int kura_lvm_info(const char *path_or_name, KuraLvInfo *ret, char *errout, size_t errsz) {
        char out[4096], e[512];
        const char *argv[] = {"lvs",         "--noheadings",
                              "--nosuffix",  "--units",
                              "b",           "--separator",
                              "|",           "-o",
                              "vg_name,lv_name,segtype,lv_attr,lv_size,pool_lv,thin_id,origin,snap_percent,data_percent",
                              "--",          path_or_name,
                              NULL};
        int r = kura_provider_run(argv, LVM_TIMEOUT_S, out, sizeof out, e, sizeof e);
        if (errout)
                snprintf(errout, errsz, "%s", e);
        if (r < 0)
                return r;
        if (r != 0)
                return -ENODEV;
        char *line = out;
        while (*line == '\n' || *line == ' ')
                line++;
        char *nl = strchr(line, '\n');
        if (nl)
                *nl = 0;
        char *f[10];
        if (split(line, '|', f, 10) < 10 || !f[0][0] || !f[1][0])
                return -ENODEV;
        memset(ret, 0, sizeof *ret);
        snprintf(ret->vg, sizeof ret->vg, "%s", f[0]);
        snprintf(ret->lv, sizeof ret->lv, "%s", f[1]);
        snprintf(ret->segtype, sizeof ret->segtype, "%s", f[2]);
        snprintf(ret->attr, sizeof ret->attr, "%s", f[3]);
        ret->size = strtoull(f[4], NULL, 10);
        snprintf(ret->pool, sizeof ret->pool, "%s", f[5]);
        ret->thin_id = f[6][0] ? strtol(f[6], NULL, 10) : -1;
        snprintf(ret->origin, sizeof ret->origin, "%s", f[7]);
        ret->percent = f[8][0] ? strtod(f[8], NULL) : f[9][0] ? strtod(f[9], NULL) : -1;
        return 0;
}

bool kura_lvm_thaw_if_frozen(const char *mountpoint) {
        if (!mountpoint || !mountpoint[0])
                return false;
        _cleanup_close_ int fd = open(mountpoint, O_RDONLY | O_CLOEXEC | O_DIRECTORY);
        return fd >= 0 && ioctl(fd, FITHAW, 0) == 0;
}

int kura_lvm_supports_lv(const char *volume, const KuraVolumeProbe *p, KuraLvInfo *ret, char *why, size_t n) {
        if (!p->is_blockdev) {
                snprintf(why, n, "%s is not a block device", volume);
                return 0;
        }
        if (!kura_lvm_available(why, n))
                return 0;
        int r = kura_lvm_info(volume, ret, NULL, 0);
        if (r == -ENODEV) {
                snprintf(why, n, "%s is not an LVM logical volume", volume);
                return 0;
        }
        return r < 0 ? r : 1;
}

static bool lvm_available(char *why, size_t n) {
        return kura_lvm_available(why, n);
}

static int lvm_supports(const char *volume, const KuraVolumeProbe *p, char *why, size_t n) {
        KuraLvInfo li;
        int r = kura_lvm_supports_lv(volume, p, &li, why, n);
        if (r <= 0)
                return r;
        if (!strcmp(li.segtype, "thin")) {
                snprintf(why, n, "%s/%s is a thin volume: provider lvm-thin snapshots it", li.vg, li.lv);
                return 0;
        }
        if (li.attr[0] == 's' || li.attr[0] == 'S' || li.origin[0]) {
                snprintf(why, n, "%s/%s is itself a snapshot", li.vg, li.lv);
                return 0;
        }
        return 1;
}

static int vg_free(const char *vg, uint64_t *ret) {
        char out[256];
        const char *argv[] = {"vgs", "--noheadings", "--nosuffix", "--units", "b", "-o", "vg_free", "--", vg, NULL};
        int r = kura_provider_run(argv, LVM_TIMEOUT_S, out, sizeof out, NULL, 0);
        if (r < 0)
                return r;
        if (r != 0)
                return -EIO;
        *ret = strtoull(out, NULL, 10);
        return 0;
}

static uint64_t cow_size(uint64_t origin) {
        const char *e = getenv("KURA_LVM_SNAPSHOT_SIZE");
        uint64_t v;
        if (e && *e && kura_parse_size(e, &v) >= 0 && v > 0)
                return v;
        v = origin / 5;
        return v < (4u << 20) ? (4u << 20) : v;
}

static int lvm_prepare(KuraShadow *s, const KuraSnapOpts *o, KuraErr *err) {
        (void) o;
        KuraLvInfo li;
        char e[512];
        int r = kura_lvm_info(s->volume, &li, e, sizeof e);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "Check the volume with lvs.",
                                      "cannot query the logical volume %s (%s)", s->volume, e);
        LvmPriv *pv = calloc(1, sizeof *pv);
        if (!pv)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        free(s->priv);
        s->priv = pv;
        snprintf(pv->vg, sizeof pv->vg, "%s", li.vg);
        snprintf(pv->lv, sizeof pv->lv, "%s", li.lv);
        snprintf(pv->snap, sizeof pv->snap, "kura-snap-%.8s", s->id);
        pv->cow_bytes = cow_size(li.size ? li.size : s->probe.size);
        uint64_t fr = 0;
        r = vg_free(li.vg, &fr);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "Check the volume group with vgs.",
                                      "cannot query the free space of volume group %s", li.vg);
        if (fr < pv->cow_bytes)
                return kura_err(err, ENOSPC, KURA_E_SNAPSHOT_SPACE,
                                "Free space in the volume group (vgextend, lvreduce), or set a smaller "
                                "KURA_LVM_SNAPSHOT_SIZE if the volume changes little during a backup.",
                                "volume group %s has %" PRIu64 " bytes free, the snapshot of %s/%s needs %" PRIu64
                                " bytes of copy-on-write space (shadow storage)",
                                li.vg, fr, li.vg, li.lv, pv->cow_bytes);
        free(s->device);
        s->device = kura_asprintf("/dev/%s/%s", pv->vg, pv->snap);
        if (!s->device)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        return 0;
}

static int lvm_create(KuraShadow *s, KuraErr *err) {
        LvmPriv *pv = s->priv;
        if (!pv)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "lvm: create() before prepare() for %s", s->volume);
        char size[32], origin[260], e[512];
        snprintf(size, sizeof size, "%" PRIu64 "k", DIV_ROUND_UP(pv->cow_bytes, 1024));
        snprintf(origin, sizeof origin, "%s/%s", pv->vg, pv->lv);
        const char *argv[] = {"lvcreate", "-q", "-y", "-s", "-L", size, "-n", pv->snap, "--addtag", "kura", origin,
                              NULL};
        bool refreeze = kura_lvm_thaw_if_frozen(s->probe.mountpoint);
        int r = kura_provider_run(argv, LVM_TIMEOUT_S, NULL, 0, e, sizeof e);
        if (refreeze)
                (void) kura_fs_freeze(s->probe.mountpoint, NULL);
        if (r != 0)
                return kura_err_errno(err, r < 0 ? r : -EIO, KURA_E_PROVIDER_FAILED,
                                      "Check the volume group (vgs) and the kernel log.",
                                      "lvcreate of a snapshot of %s failed: %s", origin, e);
        pv->created = true;
        return 0;
}

static int lvm_check(KuraShadow *s, KuraErr *err) {
        LvmPriv *pv = s->priv;
        if (!pv || !pv->created)
                return 0;
        double now = kura_mono();
        if (now - pv->last_check < LVM_CHECK_INTERVAL_S)
                return 0;
        pv->last_check = now;
        char name[260];
        snprintf(name, sizeof name, "%s/%s", pv->vg, pv->snap);
        KuraLvInfo li;
        int r = kura_lvm_info(name, &li, NULL, 0);
        bool dead = r == -ENODEV || (r >= 0 && (li.attr[0] == 'S' || li.attr[4] == 'I' || li.percent >= 100.0));
        if (r < 0 && !dead)
                return 0; /* lvs itself failed: the read errors will tell */
        if (dead)
                return kura_err(err, ENOSPC, KURA_E_SNAPSHOT_SPACE,
                                "Give the snapshot more copy-on-write space (KURA_LVM_SNAPSHOT_SIZE, free space in "
                                "the volume group), back up at a quieter time, or use a thin volume (lvm-thin).",
                                "the snapshot of %s/%s ran out of its copy-on-write space (shadow storage) and was "
                                "invalidated during the copy; like Windows error 0x80780119",
                                pv->vg, pv->lv);
        return 0;
}

/* lvremove -f VG/NAME, from priv or from the recorded device /dev/VG/NAME. */
static int lvm_remove(const char *vg_name, KuraErr *err) {
        char e[512];
        const char *argv[] = {"lvremove", "-q", "-f", vg_name, NULL};
        int r = kura_provider_run(argv, LVM_TIMEOUT_S, NULL, 0, e, sizeof e);
        if (r != 0)
                return kura_err_errno(err, r < 0 ? r : -EIO, KURA_E_PROVIDER_FAILED,
                                      "Remove it by hand: lvremove -f VG/kura-snap-…",
                                      "cannot remove the snapshot %s: %s", vg_name, e);
        return 0;
}

int kura_lvm_remove_device(const char *device, KuraErr *err) {
        if (!device || strncmp(device, "/dev/", 5) || !strchr(device + 5, '/'))
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "", "not an LVM snapshot path: %s",
                                device ? device : "(null)");
        return lvm_remove(device + 5, err);
}

static int lvm_release(KuraShadow *s, bool retain, KuraErr *err) {
        (void) retain; /* classic snapshots slow the origin down: never kept by a backup */
        LvmPriv *pv = s->priv;
        int r = 0;
        if (pv && pv->created) {
                char name[260];
                snprintf(name, sizeof name, "%s/%s", pv->vg, pv->snap);
                r = lvm_remove(name, err);
        } else if (!pv && s->device)
                r = kura_lvm_remove_device(s->device, err);
        free(pv);
        s->priv = NULL;
        return r;
}

static int lvm_space(const char *volume, const KuraVolumeProbe *p, KuraShadowStorage *ret, KuraErr *err) {
        (void) p;
        KuraLvInfo li;
        char e[512];
        int r = kura_lvm_info(volume, &li, e, sizeof e);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED, "", "cannot query %s (%s)", volume, e);
        memset(ret, 0, sizeof *ret);
        snprintf(ret->volume, sizeof ret->volume, "%s", volume);
        snprintf(ret->provider, sizeof ret->provider, "lvm");
        _cleanup_free_ char *out = malloc(1 << 16);
        if (!out)
                return -ENOMEM;
        const char *argv[] = {"lvs", "--noheadings", "--nosuffix", "--units", "b", "--separator", "|", "-o",
                              "origin,lv_size,snap_percent", "--", li.vg, NULL};
        r = kura_provider_run(argv, LVM_TIMEOUT_S, out, 1 << 16, NULL, 0);
        if (r != 0)
                return kura_err_errno(err, r < 0 ? r : -EIO, KURA_E_PROVIDER_FAILED, "", "lvs %s failed", li.vg);
        char *save = NULL;
        for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *f[3];
                if (split(line, '|', f, 3) < 3 || strcmp(f[0], li.lv))
                        continue;
                uint64_t sz = strtoull(f[1], NULL, 10);
                ret->allocated += sz;
                ret->used += (uint64_t) ((double) sz * strtod(f[2], NULL) / 100.0);
        }
        uint64_t fr = 0;
        if (vg_free(li.vg, &fr) < 0)
                fr = 0;
        ret->maximum = ret->allocated + fr;
        return 0;
}

const KuraProviderOps kura_provider_lvm = {
        .name = "lvm",
        .id = "9d1c34e6-6a0f-4b1e-9f3e-2b5c8a7e0004",
        .type = "system",
        .description = "LVM copy-on-write snapshots of logical volumes (lvcreate -s -L)",
        .available = lvm_available,
        .supports = lvm_supports,
        .prepare = lvm_prepare,
        .create = lvm_create,
        .check = lvm_check,
        .release = lvm_release,
        .changed = NULL,
        .space = lvm_space,
};
