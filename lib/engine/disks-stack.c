/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * LVM and LUKS under a partition of a whole-disk backup (bare-metal recovery).
 *
 * LVM: a partition that is a physical volume is not copied raw.  Its volume
 * group's metadata (vgcfgbackup: the PV UUIDs, the LVs and their extents) goes
 * into the partition's JSON object ("lvm"), and each active logical volume
 * becomes a volume of its own (/dev/VG/LV), so that the snapshot coordinator
 * can make each consistent (providers lvm, lvm-thin).  bmr re-creates the PV
 * with its old UUID (pvcreate --restorefile), restores the metadata
 * (vgcfgrestore), activates the VG and restores every LV into it.  Only
 * single-PV volume groups with linear or striped LVs: thin pools, COW
 * snapshots, RAID and cache LVs are refused at backup time (vgcfgrestore
 * cannot rebuild a thin pool's own metadata, nor a snapshot's exception store).
 *
 * LUKS: the header (cryptsetup luksHeaderBackup: the key slots, encrypted by
 * the passphrases) becomes a small volume of its own and the data is read in
 * plaintext through the open mapping (/dev/mapper/NAME), then encrypted by
 * kura like any volume.  bmr writes the header back (luksHeaderRestore: the
 * same passphrases, keys and UUID as before), opens it with a key of the old
 * volume (KuraBmrOpts.luks_key_file) under a temporary mapping name and
 * restores the plaintext through it.  A LUKS partition that is not open cannot
 * be read in plaintext: the backup refuses it.
 *
 * LVM or LUKS nested inside the other (LVM on LUKS, LUKS on an LV) is read as
 * the inner block device: its content is copied raw.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "engine-internal.h"
#include "kura/disk.h"
#include "kura/engine.h"
#include "kura/image.h"



static const char *tmpdir(const KuraBmrOpts *o) {
        if (o && o->tmpdir)
                return o->tmpdir;
        const char *t = getenv("TMPDIR");
        return t && *t ? t : "/var/tmp";
}

/* The last line of a tool's output, for an error message. */
static const char *last_line(char *out) {
        if (!out)
                return "";
        size_t l = strlen(out);
        while (l && (out[l - 1] == '\n' || out[l - 1] == ' '))
                out[--l] = 0;
        char *nl = strrchr(out, '\n');
        return nl ? nl + 1 : out;
}

/* Run a tool; on failure fill err with code, naming what and the tool's last line. */
static int tool(const char *const argv[], char **ret_out, const char *code, const char *remedy, const char *what,
                KuraErr *err) {
        _cleanup_free_ char *out = NULL;
        /* LVM warns on stderr (which is captured with stdout) about every
         * inherited descriptor: not about our volumes. */
        setenv("LVM_SUPPRESS_FD_WARNINGS", "1", 0);
        int r = kura_engine_run(argv, &out);
        if (r == -ENOENT)
                return kura_err(err, ENOENT, KURA_E_TOOL_MISSING,
                                "install it (lvm2, cryptsetup-bin; the rescue image has them)",
                                "%s: the program %s is not installed", what, argv[0]);
        if (r < 0)
                return kura_err_errno(err, r, code, remedy, "%s: cannot run %s", what, argv[0]);
        if (r != 0)
                return kura_err(err, EIO, code, remedy, "%s: %s %s exited with %d: %s", what, argv[0],
                                argv[1] ? argv[1] : "", r, last_line(out));
        if (ret_out)
                *ret_out = TAKE_PTR(out);
        return 0;
}

static char *trim(char *s) {
        while (*s == ' ' || *s == '\t' || *s == '\n')
                s++;
        size_t l = strlen(s);
        while (l && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\n'))
                s[--l] = 0;
        return s;
}

/* Names that go into paths and argv: LVM's own character set. */
static bool name_ok(const char *s) {
        if (!s || !*s || *s == '-' || strlen(s) > 127)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                      strchr("+_.-", *s)))
                        return false;
        return true;
}

static int read_small_file(const char *path, size_t max, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if ((uint64_t) st.st_size > max)
                return -EFBIG;
        char *b = malloc((size_t) st.st_size + 1);
        if (!b)
                return -ENOMEM;
        /* Up to EOF: sysfs attributes claim 4096 bytes and hold fewer. */
        size_t n = 0;
        while (n < (size_t) st.st_size) {
                ssize_t k = read(fd, b + n, (size_t) st.st_size - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        int e = -errno;
                        free(b);
                        return e;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        b[n] = 0;
        *ret = b;
        if (ret_len)
                *ret_len = n;
        return 0;
}

/* A private scratch directory (mode 0700: LUKS headers and VG metadata pass through it). */
static char *scratch_dir(const KuraBmrOpts *o, KuraErr *err) {
        char *d = kura_asprintf("%s/kura-stack.XXXXXX", tmpdir(o));
        if (!d) {
                kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                return NULL;
        }
        if (!mkdtemp(d)) {
                kura_err_errno(err, -errno, KURA_E_TARGET_IO, "set TMPDIR (or bmr --tmpdir) to a writable directory",
                               "cannot make a scratch directory in %s", tmpdir(o));
                free(d);
                return NULL;
        }
        return d;
}

/* LUKS header copies made during a backup, removed when the process ends. */
static char *scratch_files[64], *scratch_dirs[64];
static size_t nscratch;

static void remove_scratch(void) {
        for (size_t i = 0; i < nscratch; i++) {
                unlink(scratch_files[i]);
                rmdir(scratch_dirs[i]);
                free(scratch_files[i]);
                free(scratch_dirs[i]);
        }
        nscratch = 0;
}

static int remove_scratch_at_exit(const char *file, const char *dir) {
        static bool registered;
        if (nscratch == ELEMENTSOF(scratch_files))
                return -ENOSPC;
        if (!registered && atexit(remove_scratch) != 0)
                return -ENOMEM;
        registered = true;
        char *f = strdup(file), *dd = strdup(dir);
        if (!f || !dd) {
                free(f);
                free(dd);
                return -ENOMEM;
        }
        scratch_files[nscratch] = f;
        scratch_dirs[nscratch++] = dd;
        return 0;
}

/* ---- backup: LVM ------------------------------------------------------------ */

static int lvm_backup(const char *disk_name, const KuraPartition *p, const char *dev, json_t *pe, KuraDiskBackup *d,
                      KuraErr *err) {
        char part[48];
        snprintf(part, sizeof part, "%sp%u", disk_name, p->number);
        _cleanup_free_ char *out = NULL;
        const char *pvs[] = {"lvm", "pvs", "--noheadings", "--separator", "|", "--units", "b", "--nosuffix",
                             "-o", "vg_name,pv_uuid,pv_count,pv_size", dev, NULL};
        int r = tool(pvs, &out, KURA_E_SOURCE_UNREADABLE, "check the PV with pvs; fix LVM's configuration",
                     "reading the LVM physical volume", err);
        if (r < 0)
                return r;
        /* The answer is the line with separators: LVM may warn on other lines. */
        char *line = NULL, *lsv = NULL;
        for (char *l = strtok_r(out, "\n", &lsv); l && !line; l = strtok_r(NULL, "\n", &lsv))
                if (strchr(l, '|'))
                        line = trim(l);
        if (!line)
                return 0; /* not a PV after all: copied raw */
        char *f[4] = {0};
        char *save = NULL;
        for (int i = 0; i < 4; i++)
                f[i] = strtok_r(i ? NULL : line, "|", &save);
        for (int i = 0; i < 4; i++)
                f[i] = f[i] ? trim(f[i]) : NULL;
        if (!f[0] || !*f[0])
                return 0; /* a PV in no VG: nothing to describe, copied raw */
        if (!name_ok(f[0]) || !f[1] || !f[2] || !f[3])
                return kura_err(err, EIO, KURA_E_SOURCE_UNREADABLE, "check the PV with pvs",
                                "%s (%s): unexpected answer from pvs: %s", part, dev, line);
        _cleanup_free_ char *vg = strdup(f[0]);
        _cleanup_free_ char *pv_uuid = strdup(f[1]);
        unsigned long npv = strtoul(f[2], NULL, 10);
        uint64_t pv_size = strtoull(f[3], NULL, 10);
        if (!vg || !pv_uuid)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (npv != 1)
                return kura_err(err, ENOTSUP, KURA_E_DISK_LAYOUT,
                                "back up its logical volumes with --volume /dev/VG/LV, or the disks without --disk",
                                "%s (%s): volume group %s spans %lu physical volumes; kura bmr re-creates "
                                "single-PV volume groups only",
                                part, dev, vg, npv);

        /* The LVs: linear and striped only (see the top of this file). */
        free(out);
        out = NULL;
        const char *lvs[] = {"lvm", "lvs", "--noheadings", "--separator", "|", "--units", "b", "--nosuffix",
                             "-o", "lv_name,lv_size,lv_attr,segtype", vg, NULL};
        r = tool(lvs, &out, KURA_E_SOURCE_UNREADABLE, "check the volume group with lvs", "listing logical volumes",
                 err);
        if (r < 0)
                return r;
        json_t *arr = json_array();
        json_t *lj = json_pack("{s:s, s:s, s:I, s:o}", "vg", vg, "pv_uuid", pv_uuid, "pv_size", (json_int_t) pv_size,
                               "lvs", arr);
        if (!lj || json_object_set_new(pe, "lvm", lj) < 0)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        char *lsave = NULL;
        for (char *l = strtok_r(out, "\n", &lsave); l; l = strtok_r(NULL, "\n", &lsave)) {
                char *fs[4] = {0}, *s2 = NULL;
                l = trim(l);
                if (!strchr(l, '|'))
                        continue; /* a warning, not an LV */
                for (int i = 0; i < 4; i++)
                        fs[i] = strtok_r(i ? NULL : l, "|", &s2);
                if (!fs[3])
                        return kura_err(err, EIO, KURA_E_SOURCE_UNREADABLE, "check the volume group with lvs",
                                        "%s: unexpected line from lvs: %s", vg, l);
                const char *name = trim(fs[0]), *attr = trim(fs[2]), *seg = trim(fs[3]);
                uint64_t size = strtoull(trim(fs[1]), NULL, 10);
                if (!name_ok(name))
                        return kura_err(err, EIO, KURA_E_SOURCE_UNREADABLE, "rename the LV (lvrename)",
                                        "%s: logical volume name '%s' is not usable", vg, name);
                if (strcmp(seg, "linear") != 0 && strcmp(seg, "striped") != 0)
                        return kura_err(err, ENOTSUP, KURA_E_DISK_LAYOUT,
                                        "remove it (or its snapshots) first, or back up its LVs with --volume "
                                        "/dev/VG/LV and leave the disk out of --disk",
                                        "%s (%s): logical volume %s/%s is of type %s; kura bmr re-creates linear and "
                                        "striped LVs only (no thin pools, COW snapshots, RAID or cache)",
                                        part, dev, vg, name, seg);
                bool active = strlen(attr) > 4 && attr[4] == 'a';
                char vname[256];
                snprintf(vname, sizeof vname, "%s-%s", part, name);
                _cleanup_free_ char *path = kura_asprintf("/dev/%s/%s", vg, name);
                if (!path)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                KuraVolumeProbe probe = {0};
                if (active)
                        (void) kura_volume_probe(path, &probe, NULL);
                json_t *e = json_pack("{s:s, s:I, s:s, s:o, s:s, s:s}", "name", name, "size", (json_int_t) size,
                                      "path", path, "volume", active ? json_string(vname) : json_null(), "fs",
                                      probe.fs, "fs_uuid", probe.uuid);
                if (!e || json_array_append_new(arr, e) < 0)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                /* Inactive LVs are recorded (re-created empty by bmr), not read:
                 * activating them is not a backup's business. */
                if (active && (r = kura_disk_backup_add_source(d, path, vname, path, err)) < 0)
                        return r;
        }

        /* The VG metadata last: it must describe the LVs just listed. */
        _cleanup_free_ char *dir = scratch_dir(NULL, err);
        if (!dir)
                return -EIO;
        _cleanup_free_ char *file = kura_asprintf("%s/%s.vg", dir, vg);
        _cleanup_free_ char *meta = NULL;
        if (!file) {
                rmdir(dir);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        const char *cfg[] = {"lvm", "vgcfgbackup", "-f", file, vg, NULL};
        r = tool(cfg, NULL, KURA_E_SOURCE_UNREADABLE, "check the volume group with vgs",
                 "saving the volume group metadata", err);
        if (r >= 0 && (r = read_small_file(file, 16 << 20, &meta, NULL)) < 0)
                r = kura_err_errno(err, r, KURA_E_SOURCE_UNREADABLE, "", "cannot read %s", file);
        unlink(file);
        rmdir(dir);
        if (r < 0)
                return r;
        if (json_object_set_new(lj, "metadata", json_string(meta)) < 0)
                return kura_err(err, EIO, KURA_E_SOURCE_UNREADABLE, "", "%s: volume group metadata is not UTF-8", vg);
        return 1;
}

/* ---- backup: LUKS ----------------------------------------------------------- */

/* The device-mapper device that holds dev open as a dm-crypt mapping: its name. */
static int luks_mapping_of(const char *dev, char *ret, size_t n) {
        char rp[PATH_MAX];
        if (!realpath(dev, rp))
                return -errno;
        const char *b = strrchr(rp, '/');
        b = b ? b + 1 : rp;
        _cleanup_free_ char *hd = kura_asprintf("/sys/class/block/%s/holders", b);
        DIR *dd = hd ? opendir(hd) : NULL;
        if (!dd)
                return -ENOENT;
        struct dirent *de;
        int r = -ENOENT;
        while ((de = readdir(dd))) {
                if (strncmp(de->d_name, "dm-", 3) != 0)
                        continue;
                _cleanup_free_ char *up = kura_asprintf("/sys/class/block/%s/dm/uuid", de->d_name);
                _cleanup_free_ char *np = kura_asprintf("/sys/class/block/%s/dm/name", de->d_name);
                _cleanup_free_ char *uuid = NULL, *name = NULL;
                if (!up || !np || read_small_file(up, 4096, &uuid, NULL) < 0 ||
                    read_small_file(np, 4096, &name, NULL) < 0)
                        continue;
                if (strncmp(uuid, "CRYPT-LUKS", 10) != 0)
                        continue;
                snprintf(ret, n, "%s", trim(name));
                r = 0;
                break;
        }
        closedir(dd);
        return r;
}

static int luks_backup(const char *disk_name, const KuraPartition *p, const char *dev, json_t *pe, KuraDiskBackup *d,
                       KuraErr *err) {
        char part[48], mapping[256];
        snprintf(part, sizeof part, "%sp%u", disk_name, p->number);
        if (luks_mapping_of(dev, mapping, sizeof mapping) < 0)
                return kura_err(err, ENXIO, KURA_E_SOURCE_UNREADABLE,
                                "open it with cryptsetup open first (cryptsetup open DEVICE NAME), then back up again",
                                "%s (%s) is a LUKS volume (UUID %s) that is not open: kura reads LUKS volumes in "
                                "plaintext through their open mapping",
                                part, dev, p->fs_uuid[0] ? p->fs_uuid : "?");
        if (!name_ok(mapping))
                return kura_err(err, EINVAL, KURA_E_SOURCE_UNREADABLE, "rename the mapping (dmsetup rename)",
                                "%s: LUKS mapping name '%s' is not usable", part, mapping);

        /* The header goes into a scratch file that must stay readable until
         * the backup has read it, i.e. until this process ends: nothing else
         * would delete it (see remove_scratch_at_exit). */
        _cleanup_free_ char *dir = scratch_dir(NULL, err);
        if (!dir)
                return -EIO;
        _cleanup_free_ char *file = kura_asprintf("%s/header", dir);
        if (!file || remove_scratch_at_exit(file, dir) < 0) {
                rmdir(dir);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        const char *hb[] = {"cryptsetup", "luksHeaderBackup", dev, "--header-backup-file", file, NULL};
        int r = tool(hb, NULL, KURA_E_SOURCE_UNREADABLE, "check the volume with cryptsetup luksDump",
                     "saving the LUKS header", err);
        if (r < 0)
                return r;
        struct stat st;
        if (stat(file, &st) < 0)
                return kura_err_errno(err, -errno, KURA_E_SOURCE_UNREADABLE, "",
                                      "cannot read the LUKS header backup of %s", part);
        uint64_t hlen = (uint64_t) st.st_size;
        char hname[64], hrec[96], vname[64], mpath[300];
        snprintf(hname, sizeof hname, "%s-luks-header", part);
        snprintf(hrec, sizeof hrec, "%s#%s-luks-header", disk_name, part + strlen(disk_name));
        snprintf(vname, sizeof vname, "%s-luks", part);
        snprintf(mpath, sizeof mpath, "/dev/mapper/%s", mapping);
        KuraVolumeProbe probe = {0};
        (void) kura_volume_probe(mpath, &probe, NULL);
        json_t *lj = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:s}", "uuid", p->fs_uuid, "header_volume", hname,
                               "header_size", (json_int_t) hlen, "volume", vname, "mapping_name", mapping, "fs",
                               probe.fs, "fs_uuid", probe.uuid);
        if (!lj || json_object_set_new(pe, "luks", lj) < 0)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        r = kura_disk_backup_add_source(d, file, hname, hrec, err);
        if (r >= 0)
                r = kura_disk_backup_add_source(d, mpath, vname, mpath, err);
        return r < 0 ? r : 1;
}

int kura_disk_stack_backup(const char *disk_name, const KuraPartition *p, const char *dev, json_t *pe,
                           KuraDiskBackup *d, KuraErr *err) {
        if (!dev || !pe)
                return 0;
        if (strcmp(p->role, "lvm") == 0)
                return lvm_backup(disk_name, p, dev, pe, d, err);
        if (strcmp(p->role, "luks") == 0)
                return luks_backup(disk_name, p, dev, pe, d, err);
        return 0;
}

bool kura_disk_stack_present(const json_t *pe) {
        return pe && (json_is_object(json_object_get(pe, "lvm")) || json_is_object(json_object_get(pe, "luks")));
}

/* ---- restore ---------------------------------------------------------------- */

/* Is the block device pv (a resolved path) disk itself or one of its
 * partitions (sysfs: /sys/class/block/<pv> has a "partition" file and its
 * parent directory is the disk)? */
static bool pv_on_disk(const char *pv, const char *disk) {
        char drp[PATH_MAX];
        if (!realpath(disk, drp))
                return false;
        if (strcmp(pv, drp) == 0)
                return true;
        const char *pn = strrchr(pv, '/'), *dn = strrchr(drp, '/');
        if (!pn || !dn || strncmp(drp, "/dev/", 5) != 0)
                return false;
        _cleanup_free_ char *link = kura_asprintf("/sys/class/block/%s", pn + 1);
        char sys[PATH_MAX];
        if (!link || !realpath(link, sys))
                return false;
        char *slash = strrchr(sys, '/');
        if (!slash)
                return false;
        *slash = 0;
        const char *parent = strrchr(sys, '/');
        return parent && strcmp(parent + 1, dn + 1) == 0;
}

/* Is a volume group named vg already on this machine, on a PV other than
 * same_pv (an earlier, interrupted kura bmr onto the same partition: it is
 * overwritten; it cannot be active, or bmr would have refused the target) or
 * than any partition of same_disk (the target disk, before it is written)?
 * Two volume groups of one name confuse LVM and the restored system's boot:
 * KURA-E-TARGET-MOUNTED. */
static int vg_name_taken(const char *vg, const char *same_pv, const char *same_disk, const char *suffix,
                         KuraErr *err) {
        const char *pvs[] = {"lvm", "pvs", "--noheadings", "--separator", "|", "-o", "pv_name,vg_name", NULL};
        _cleanup_free_ char *vout = NULL;
        setenv("LVM_SUPPRESS_FD_WARNINGS", "1", 0);
        int r = kura_engine_run(pvs, &vout);
        if (r == -ENOENT)
                return kura_err(err, ENOENT, KURA_E_TOOL_MISSING, "install lvm2 (the rescue image has it)",
                                "restoring volume group %s: lvm is not installed", vg);
        bool other = false;
        char *ls = NULL;
        for (char *l = r == 0 && vout ? strtok_r(vout, "\n", &ls) : NULL; l; l = strtok_r(NULL, "\n", &ls)) {
                char *bar = strchr(l, '|');
                if (!bar)
                        continue;
                *bar = 0;
                if (strcmp(trim(bar + 1), vg) != 0)
                        continue;
                char prp[PATH_MAX];
                const char *pn = trim(l);
                const char *pv = realpath(pn, prp) ? prp : pn;
                if (same_pv && strcmp(pv, same_pv) == 0)
                        continue;
                if (same_disk && pv_on_disk(pv, same_disk))
                        continue;
                other = true;
        }
        if (other)
                return kura_err(err, EEXIST, KURA_E_TARGET_MOUNTED,
                                "deactivate it and hide its disks (vgchange -an, or an LVM filter), or rename it "
                                "(vgrename), then run kura bmr again",
                                "a volume group named %s already exists on this machine: restoring another beside "
                                "it would give two volume groups of one name%s",
                                vg, suffix);
        return 0;
}

static int lvm_restore(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, const json_t *lj,
                       const char *dev, uint64_t *written, char **report, KuraErr *err) {
        const char *vg = json_string_value(json_object_get(lj, "vg"));
        const char *uuid = json_string_value(json_object_get(lj, "pv_uuid"));
        const char *meta = json_string_value(json_object_get(lj, "metadata"));
        json_t *lvs = json_object_get(lj, "lvs");
        if (!name_ok(vg) || !uuid || !meta || !json_is_array(lvs))
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, "run 'kura check'",
                                "version %.12s: the LVM description of a partition is incomplete", v->id);
        /* Checked before anything is written (kura_disk_stack_check); again
         * here, the PV being about to be written. */
        char drp[PATH_MAX];
        if (!realpath(dev, drp))
                snprintf(drp, sizeof drp, "%s", dev);
        int r = vg_name_taken(vg, drp, NULL, "", err);
        if (r < 0)
                return r;
        _cleanup_free_ char *dir = scratch_dir(o, err);
        if (!dir)
                return -EIO;
        _cleanup_free_ char *file = kura_asprintf("%s/%s.vg", dir, vg);
        if (!file) {
                rmdir(dir);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        {
                _cleanup_close_ int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                size_t len = strlen(meta);
                if (fd < 0 || write(fd, meta, len) != (ssize_t) len) {
                        r = kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot write %s", file);
                        goto out;
                }
        }
        const char *pvc[] = {"lvm", "pvcreate", "-q", "-y", "-ff", "--uuid", uuid, "--restorefile", file, dev, NULL};
        r = tool(pvc, NULL, KURA_E_TARGET_IO, "read the tool's message; fix the cause and run kura bmr again",
                 "re-creating the LVM physical volume", err);
        const char *vgr[] = {"lvm", "vgcfgrestore", "-q", "-f", file, vg, NULL};
        if (r >= 0)
                r = tool(vgr, NULL, KURA_E_TARGET_IO, "read the tool's message; fix the cause and run kura bmr again",
                         "restoring the volume group metadata", err);
        /* A larger partition: the PV takes it all (the LVs keep their sizes). */
        const char *pvr[] = {"lvm", "pvresize", "-q", dev, NULL};
        if (r >= 0)
                r = tool(pvr, NULL, KURA_E_TARGET_IO, "", "resizing the LVM physical volume", err);
        const char *act[] = {"lvm", "vgchange", "-q", "-ay", vg, NULL};
        if (r >= 0)
                r = tool(act, NULL, KURA_E_TARGET_IO, "read the tool's message; fix the cause and run kura bmr again",
                         "activating the restored volume group", err);
        if (r < 0)
                goto out;
        kura_appendf(report, "  LVM: physical volume %s (UUID %s) and volume group %s restored\n", dev, uuid, vg);
        size_t i;
        json_t *e;
        json_array_foreach(lvs, i, e) {
                const char *name = json_string_value(json_object_get(e, "name"));
                const char *vol = json_string_value(json_object_get(e, "volume"));
                if (!name_ok(name)) {
                        r = kura_err(err, EBADMSG, KURA_E_DAMAGED, "run 'kura check'",
                                     "version %.12s: volume group %s has an LV without a usable name", v->id, vg);
                        break;
                }
                if (!vol) {
                        kura_appendf(report, "  LVM: %s/%s was not active at backup time: re-created, left empty\n", vg,
                                name);
                        continue;
                }
                _cleanup_free_ char *path = kura_asprintf("/dev/%s/%s", vg, name);
                if (!path) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                        break;
                }
                r = kura_bmr_restore_volume(repo, o, v, vol, path, written, err);
                if (r < 0)
                        break;
                kura_appendf(report, "  LVM: %s restored onto %s\n", vol, path);
        }
        /* Deactivated even after a failure: the target must be free again. */
        const char *deact[] = {"lvm", "vgchange", "-q", "-an", vg, NULL};
        int r2 = tool(deact, NULL, KURA_E_TARGET_IO, "deactivate it by hand (vgchange -an)",
                      "deactivating the restored volume group", r < 0 ? NULL : err);
        if (r >= 0 && r2 < 0)
                r = r2;
out:
        unlink(file);
        rmdir(dir);
        return r;
}

static int luks_restore(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, const json_t *lj,
                        const char *dev, uint64_t *written, char **report, KuraErr *err) {
        const char *uuid = json_string_value(json_object_get(lj, "uuid"));
        const char *hvol = json_string_value(json_object_get(lj, "header_volume"));
        const char *vol = json_string_value(json_object_get(lj, "volume"));
        if (!hvol || !vol)
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, "run 'kura check'",
                                "version %.12s: the LUKS description of a partition is incomplete", v->id);
        if (!o->luks_key_file)
                return kura_err(err, ENOKEY, KURA_E_NO_PASSWORD,
                                "give --luks-key-file FILE: a passphrase (without a newline at its end) or key file "
                                "that opened the volume when it was backed up",
                                "LUKS volume %s (UUID %s) needs a key to be restored", vol, uuid ? uuid : "?");
        if (access(o->luks_key_file, R_OK) < 0)
                return kura_err_errno(err, -errno, KURA_E_NO_PASSWORD, "check the path given to --luks-key-file",
                                      "cannot read LUKS key file %s", o->luks_key_file);
        _cleanup_free_ char *dir = scratch_dir(o, err);
        if (!dir)
                return -EIO;
        _cleanup_free_ char *file = kura_asprintf("%s/header", dir);
        char mapping[64];
        snprintf(mapping, sizeof mapping, "kura-bmr-%d-%.8s", (int) getpid(), uuid ? uuid : "luks");
        for (char *c = mapping; *c; c++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_.-", *c))
                        *c = '_';
        bool opened = false;
        int r = 0;
        /* Before the first goto: the cleanup at `out` must never see it uninitialised. */
        _cleanup_free_ char *out = NULL;
        _cleanup_close_ int fd = file ? open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
        if (fd < 0) {
                r = kura_err_errno(err, file ? -errno : -ENOMEM, KURA_E_TARGET_IO, "", "cannot create %s",
                                   file ? file : dir);
                goto out;
        }
        uint64_t hw = 0;
        r = kura_bmr_restore_volume(repo, o, v, hvol, file, &hw, err);
        if (r < 0)
                goto out;
        const char *hr[] = {"cryptsetup", "luksHeaderRestore", "-q", "--batch-mode", dev, "--header-backup-file",
                            file, NULL};
        r = tool(hr, NULL, KURA_E_TARGET_IO, "read the tool's message; fix the cause and run kura bmr again",
                 "writing the LUKS header back", err);
        if (r < 0)
                goto out;
        *written += hw;
        kura_appendf(report, "  LUKS: header of %s (UUID %s) written back onto %s\n", vol, uuid ? uuid : "?", dev);
        const char *op[] = {"cryptsetup", "open", "--type", "luks", "--key-file", o->luks_key_file, dev, mapping,
                            NULL};
        r = kura_engine_run(op, &out);
        if (r == 2) {
                /* cryptsetup: 2 = no key available with this passphrase. */
                r = kura_err(err, EACCES, KURA_E_WRONG_PASSWORD,
                             "give a passphrase or key file of the volume as it was backed up (the restored header "
                             "keeps its key slots); a passphrase file must not end with a newline",
                             "the key file %s does not open the restored LUKS volume %s (UUID %s)",
                             o->luks_key_file, vol, uuid ? uuid : "?");
                goto out;
        }
        if (r != 0) {
                r = r < 0 ? kura_err_errno(err, r, r == -ENOENT ? KURA_E_TOOL_MISSING : KURA_E_TARGET_IO,
                                           "install cryptsetup-bin", "opening the restored LUKS volume")
                          : kura_err(err, EIO, KURA_E_TARGET_IO, "read the tool's message",
                                     "opening the restored LUKS volume %s: cryptsetup exited with %d: %s", vol, r,
                                     last_line(out));
                goto out;
        }
        opened = true;
        {
                _cleanup_free_ char *mpath = kura_asprintf("/dev/mapper/%s", mapping);
                r = mpath ? kura_bmr_restore_volume(repo, o, v, vol, mpath, written, err)
                          : kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                if (r >= 0)
                        kura_appendf(report, "  LUKS: %s restored in plaintext through %s\n", vol, mpath);
        }
out:
        if (opened) {
                const char *cl[] = {"cryptsetup", "close", mapping, NULL};
                int r2 = tool(cl, NULL, KURA_E_TARGET_IO, "close it by hand (cryptsetup close)",
                              "closing the restored LUKS volume", r < 0 ? NULL : err);
                if (r >= 0 && r2 < 0)
                        r = r2;
        }
        if (file)
                unlink(file);
        rmdir(dir);
        return r;
}

int kura_disk_stack_restore(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, const json_t *pe,
                            const char *dev, uint64_t new_size, uint64_t *written, char **report, KuraErr *err) {
        (void) new_size; /* never smaller (bmr plans these partitions at their size or larger) */
        json_t *lj = pe ? json_object_get(pe, "lvm") : NULL;
        int r;
        if (json_is_object(lj)) {
                r = lvm_restore(repo, o, v, lj, dev, written, report, err);
                return r < 0 ? r : 1;
        }
        lj = pe ? json_object_get(pe, "luks") : NULL;
        if (json_is_object(lj)) {
                r = luks_restore(repo, o, v, lj, dev, written, report, err);
                return r < 0 ? r : 1;
        }
        return 0;
}

int kura_disk_stack_check(const KuraBmrOpts *o, const json_t *pe, const char *target, KuraErr *err) {
        const json_t *vj = json_object_get(pe, "lvm");
        if (json_is_object(vj)) {
                const char *vg = json_string_value(json_object_get(vj, "vg"));
                if (name_ok(vg)) {
                        int r = vg_name_taken(vg, NULL, target, "; nothing was written", err);
                        if (r < 0)
                                return r;
                }
        }
        const json_t *lj = json_object_get(pe, "luks");
        if (!json_is_object(lj))
                return 0;
        const char *vol = json_string_value(json_object_get(lj, "volume"));
        const char *uuid = json_string_value(json_object_get(lj, "uuid"));
        if (!o->luks_key_file)
                return kura_err(err, ENOKEY, KURA_E_NO_PASSWORD,
                                "give --luks-key-file FILE: a passphrase (without a newline at its end) or key file "
                                "that opened the volume when it was backed up",
                                "LUKS volume %s (UUID %s) needs a key to be restored; nothing was written",
                                vol ? vol : "?", uuid ? uuid : "?");
        if (access(o->luks_key_file, R_OK) < 0)
                return kura_err_errno(err, -errno, KURA_E_NO_PASSWORD, "check the path given to --luks-key-file",
                                      "cannot read LUKS key file %s; nothing was written", o->luks_key_file);
        return 0;
}
