/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Disk layouts: the partition table of a whole disk, read and re-created
 * through libfdisk, kept in bytes so that it moves between disks of other
 * sizes and logical sector sizes.  What a bare-metal restore needs beyond the
 * table — the MBR boot code and the gap before the first partition, where
 * GRUB's core.img lives on an MBR disk — is kept by the caller as the disk's
 * boot-area volume; here only its extent is computed.
 */
#include <blkid.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <libfdisk/libfdisk.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "kura/disk.h"

#define BOOT_AREA_MAX (16ULL << 20)

/* GPT type GUIDs kura gives a role to (upper case, as libfdisk prints them). */
#define GPT_ESP       "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
#define GPT_BIOS_BOOT "21686148-6449-6E6F-744E-656564454649"
#define GPT_SWAP      "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"
#define GPT_LVM       "E6D6D379-F507-44C2-A23C-238F2A3DF928"
#define GPT_RAID      "A19D880F-05FC-4D3B-A006-743F0F84911E"

static void fdisk_ctxp(struct fdisk_context **c) {
        if (*c) {
                fdisk_deassign_device(*c, 1);
                fdisk_unref_context(*c);
        }
}

static void copy_str(char *dst, size_t n, const char *src) {
        snprintf(dst, n, "%s", src ? src : "");
}

static void upcase(char *s) {
        for (; *s; s++)
                if (*s >= 'a' && *s <= 'z')
                        *s -= 'a' - 'A';
}

/* The filesystem (or other signature) libblkid finds in [off, off+size). */
static void probe_range(int fd, KuraPartition *p) {
        blkid_probe pr = blkid_new_probe();
        if (!pr)
                return;
        if (blkid_probe_set_device(pr, fd, (blkid_loff_t) p->start, (blkid_loff_t) p->size) == 0) {
                blkid_probe_enable_superblocks(pr, 1);
                blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_UUID | BLKID_SUBLKS_LABEL);
                if (blkid_do_safeprobe(pr) == 0) {
                        const char *v;
                        if (blkid_probe_lookup_value(pr, "TYPE", &v, NULL) == 0)
                                copy_str(p->fs, sizeof p->fs, v);
                        if (blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0)
                                copy_str(p->fs_uuid, sizeof p->fs_uuid, v);
                        if (blkid_probe_lookup_value(pr, "LABEL", &v, NULL) == 0)
                                copy_str(p->fs_label, sizeof p->fs_label, v);
                }
        }
        blkid_free_probe(pr);
}

static uint64_t be64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}
static uint32_t be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

/* Bytes the filesystem uses, from its primary superblock: what a smaller
 * target must hold at least (the counters of a cleanly unmounted
 * filesystem; of a mounted one, roughly).  0 when unknown. */
static uint64_t fs_used_bytes(int fd, KuraPartition *p) {
        uint8_t sb[4096];
        if (strcmp(p->fs, "vfat") == 0) {
                if (pread(fd, sb, 512, (off_t) p->start) == 512)
                        p->fs_block = get_le16(sb + 11);
                return 0;
        }
        if (strncmp(p->fs, "ext", 3) == 0) {
                if (pread(fd, sb, 1024, (off_t) (p->start + 1024)) != 1024 || get_le16(sb + 0x38) != 0xEF53)
                        return 0;
                uint32_t lbs = get_le32(sb + 0x18);
                if (lbs > 6)
                        return 0;
                uint64_t bs = 1024ULL << lbs;
                p->fs_block = (uint32_t) bs;
                uint64_t blocks = get_le32(sb + 0x04), freeb = get_le32(sb + 0x0C);
                if (get_le32(sb + 0x60) & 0x80) { /* INCOMPAT_64BIT */
                        blocks |= (uint64_t) get_le32(sb + 0x150) << 32;
                        freeb |= (uint64_t) get_le32(sb + 0x158) << 32;
                }
                return blocks > freeb ? (blocks - freeb) * bs : 0;
        }
        if (strcmp(p->fs, "xfs") == 0) {
                if (pread(fd, sb, 512, (off_t) p->start) != 512 || memcmp(sb, "XFSB", 4) != 0)
                        return 0;
                uint64_t bs = be32(sb + 4), dblocks = be64(sb + 8), fdblocks = be64(sb + 0x90);
                p->fs_block = (uint32_t) sb[102] << 8 | sb[103]; /* sb_sectsize */
                return dblocks > fdblocks && bs <= 65536 ? (dblocks - fdblocks) * bs : 0;
        }
        if (strcmp(p->fs, "btrfs") == 0) {
                if (pread(fd, sb, 4096, (off_t) (p->start + 65536)) != 4096 || memcmp(sb + 0x40, "_BHRfS_M", 8) != 0)
                        return 0;
                p->fs_block = get_le32(sb + 0x90); /* sectorsize */
                return get_le64(sb + 0x78);
        }
        return 0;
}

static void set_role(const char *label, KuraPartition *p, bool container) {
        const char *r = "data";
        bool gpt = strcmp(label, "gpt") == 0;
        if (container)
                r = "extended";
        else if (gpt && strcmp(p->type, GPT_ESP) == 0)
                r = "esp";
        else if (!gpt && strcasecmp(p->type, "0xef") == 0)
                r = "esp";
        else if (gpt && strcmp(p->type, GPT_BIOS_BOOT) == 0)
                r = "bios-boot";
        else if (strcmp(p->fs, "swap") == 0 || (gpt && strcmp(p->type, GPT_SWAP) == 0) ||
                 (!gpt && strcasecmp(p->type, "0x82") == 0))
                r = "swap";
        else if (strcmp(p->fs, "LVM2_member") == 0 || (gpt && strcmp(p->type, GPT_LVM) == 0))
                r = "lvm";
        else if (strcmp(p->fs, "crypto_LUKS") == 0)
                r = "luks";
        else if (strstr(p->fs, "raid") || (gpt && strcmp(p->type, GPT_RAID) == 0) ||
                 (!gpt && strcasecmp(p->type, "0xfd") == 0))
                r = "raid";
        copy_str(p->role, sizeof p->role, r);
}

static int cmp_part(const void *a, const void *b) {
        const KuraPartition *x = a, *y = b;
        return x->start < y->start ? -1 : x->start > y->start;
}

void kura_disk_layout_clear(KuraDiskLayout *l) {
        if (!l)
                return;
        free(l->parts);
        memset(l, 0, sizeof *l);
}

/* An image file gets the caller's sector size; a block device its own. */
static int new_context(const char *path, uint32_t hint, bool readonly, struct fdisk_context **ret, KuraErr *err) {
        struct stat st;
        if (stat(path, &st) < 0)
                return kura_err_errno(err, -errno, KURA_E_SOURCE_NOT_FOUND, "check the disk's path", "disk %s",
                                      path);
        struct fdisk_context *c = fdisk_new_context();
        if (!c)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        fdisk_disable_dialogs(c, 1);
        if (S_ISREG(st.st_mode)) {
                uint32_t ss = hint ? hint : 512;
                fdisk_save_user_sector_size(c, ss, ss);
        }
        int r = fdisk_assign_device(c, path, readonly);
        if (r < 0) {
                fdisk_unref_context(c);
                return kura_err_errno(err, r, readonly ? KURA_E_SOURCE_UNREADABLE : KURA_E_TARGET_IO,
                                      "run as root and check that the disk is attached", "cannot open disk %s",
                                      path);
        }
        *ret = c;
        return 0;
}

int kura_disk_layout_read(const char *path, uint32_t hint, KuraDiskLayout *ret, KuraErr *err) {
        memset(ret, 0, sizeof *ret);
        _cleanup_(fdisk_ctxp) struct fdisk_context *c = NULL;
        int r = new_context(path, hint, true, &c, err);
        if (r < 0)
                return r;
        if (!fdisk_has_label(c))
                return kura_err(err, EINVAL, KURA_E_DISK_LAYOUT,
                                "back a disk without a partition table up with --volume instead of --disk",
                                "disk %s has no GPT or MBR partition table", path);
        struct fdisk_label *lb = fdisk_get_label(c, NULL);
        const char *name = fdisk_label_get_name(lb);
        if (!name || (strcmp(name, "gpt") != 0 && strcmp(name, "dos") != 0))
                return kura_err(err, ENOTSUP, KURA_E_DISK_LAYOUT, "back its volumes up with --volume",
                                "disk %s has a %s partition table; kura rebuilds GPT and MBR (dos) tables", path,
                                name ? name : "unknown");
        copy_str(ret->label, sizeof ret->label, name);
        uint64_t ss = fdisk_get_sector_size(c);
        ret->sector_size = (uint32_t) ss;
        ret->physical_sector_size = (uint32_t) fdisk_get_physector_size(c);
        ret->size = (uint64_t) fdisk_get_nsectors(c) * ss;
        char *id = NULL;
        if (fdisk_get_disklabel_id(c, &id) == 0 && id) {
                copy_str(ret->id, sizeof ret->id, id);
                upcase(ret->id);
                if (strncmp(ret->id, "0X", 2) == 0)
                        ret->id[1] = 'x';
        }
        free(id);
        bool gpt = strcmp(name, "gpt") == 0;
        ret->first_usable = (uint64_t) fdisk_get_first_lba(c) * ss;
        ret->last_usable = ((uint64_t) fdisk_get_last_lba(c) + 1) * ss;
        if (gpt) {
                uint64_t ents = fdisk_get_npartitions(c);
                ret->table_end = 2 * ss + DIV_ROUND_UP(ents * 128, ss) * ss;
        } else {
                ret->table_end = ss;
                ret->first_usable = ss;
                ret->last_usable = ret->size;
        }

        struct fdisk_table *tb = NULL;
        r = fdisk_get_partitions(c, &tb);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_DISK_LAYOUT, "check the table with 'sfdisk -d'",
                                      "cannot read the partitions of %s", path);
        size_t n = fdisk_table_get_nents(tb);
        ret->parts = calloc(n ? n : 1, sizeof *ret->parts);
        if (!ret->parts) {
                fdisk_unref_table(tb);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct fdisk_iter *it = fdisk_new_iter(FDISK_ITER_FORWARD);
        struct fdisk_partition *pa;
        while (it && fdisk_table_next_partition(tb, it, &pa) == 0) {
                if (!fdisk_partition_is_used(pa) || !fdisk_partition_has_start(pa))
                        continue;
                KuraPartition *p = &ret->parts[ret->nparts++];
                p->number = (unsigned) fdisk_partition_get_partno(pa) + 1;
                p->start = (uint64_t) fdisk_partition_get_start(pa) * ss;
                p->size = (uint64_t) fdisk_partition_get_size(pa) * ss;
                struct fdisk_parttype *t = fdisk_partition_get_type(pa);
                if (t && gpt)
                        copy_str(p->type, sizeof p->type, fdisk_parttype_get_string(t));
                else if (t)
                        snprintf(p->type, sizeof p->type, "0x%02x", fdisk_parttype_get_code(t));
                upcase(p->type);
                if (!gpt && strncmp(p->type, "0X", 2) == 0)
                        p->type[1] = 'x';
                copy_str(p->uuid, sizeof p->uuid, fdisk_partition_get_uuid(pa));
                upcase(p->uuid);
                copy_str(p->name, sizeof p->name, fdisk_partition_get_name(pa));
                if (gpt) {
                        uint64_t a = 0;
                        if (fdisk_gpt_get_partition_attrs(c, p->number - 1, &a) == 0)
                                p->attrs = a;
                } else if (fdisk_partition_is_bootable(pa))
                        p->attrs = 0x80;
                bool container = fdisk_partition_is_container(pa);
                if (fd >= 0 && !container) {
                        probe_range(fd, p);
                        p->fs_used = fs_used_bytes(fd, p);
                }
                set_role(name, p, container);
        }
        fdisk_free_iter(it);
        fdisk_unref_table(tb);
        qsort(ret->parts, ret->nparts, sizeof *ret->parts, cmp_part);
        for (size_t i = 0; i < ret->nparts; i++)
                if (strcmp(ret->parts[i].role, "raid") == 0) {
                        kura_err(err, ENOTSUP, KURA_E_DISK_LAYOUT,
                                 "MD RAID is out of scope for bare-metal recovery so far: back the array's volume "
                                 "up with --volume",
                                 "disk %s partition %u is an MD RAID member", path, ret->parts[i].number);
                        kura_disk_layout_clear(ret);
                        return -ENOTSUP;
                }
        /* The boot area: everything before the first partition (boot code,
         * the tables, GRUB's core.img in an MBR gap), at most 16 MiB. */
        uint64_t first = ret->nparts ? ret->parts[0].start : ret->first_usable;
        ret->boot_area = KURA_MIN(first, BOOT_AREA_MAX);
        if (ret->boot_area < ss)
                ret->boot_area = ss;
        return 0;
}

/* ---- JSON ------------------------------------------------------------------ */

void *kura_disk_layout_to_json(const KuraDiskLayout *l) {
        json_t *parts = json_array();
        json_t *o = json_pack("{s:s, s:s, s:I, s:i, s:i, s:I, s:I, s:I, s:I}", "label", l->label, "id", l->id,
                              "size", (json_int_t) l->size, "sector_size", (int) l->sector_size,
                              "physical_sector_size", (int) l->physical_sector_size, "first_usable",
                              (json_int_t) l->first_usable, "last_usable", (json_int_t) l->last_usable, "table_end",
                              (json_int_t) l->table_end, "boot_area", (json_int_t) l->boot_area);
        if (!o || !parts)
                goto fail;
        for (size_t i = 0; i < l->nparts; i++) {
                const KuraPartition *p = &l->parts[i];
                json_t *pj = json_pack("{s:i, s:I, s:I, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:s}", "number",
                                       (int) p->number, "start", (json_int_t) p->start, "size", (json_int_t) p->size,
                                       "type", p->type, "uuid", p->uuid, "name", p->name, "attrs",
                                       (json_int_t) p->attrs, "fs", p->fs, "fs_uuid", p->fs_uuid, "fs_label",
                                       p->fs_label, "role", p->role);
                if (pj && p->fs_used && json_object_set_new(pj, "fs_used", json_integer((json_int_t) p->fs_used)) < 0)
                        goto fail;
                if (pj && p->fs_block && json_object_set_new(pj, "fs_block", json_integer(p->fs_block)) < 0)
                        goto fail;
                if (!pj || json_array_append_new(parts, pj) < 0)
                        goto fail;
        }
        if (json_object_set_new(o, "partitions", parts) < 0) {
                parts = NULL;
                goto fail;
        }
        return o;
fail:
        json_decref(parts);
        json_decref(o);
        return NULL;
}

static int get_str(json_t *o, const char *k, char *dst, size_t n) {
        json_t *v = json_object_get(o, k);
        if (!json_is_string(v) || strlen(json_string_value(v)) >= n)
                return -1;
        copy_str(dst, n, json_string_value(v));
        return 0;
}

static int get_u64(json_t *o, const char *k, uint64_t *dst) {
        json_t *v = json_object_get(o, k);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
                return -1;
        *dst = (uint64_t) json_integer_value(v);
        return 0;
}

int kura_disk_layout_from_json(const void *json, KuraDiskLayout *ret, KuraErr *err) {
        json_t *o = (json_t *) json;
        memset(ret, 0, sizeof *ret);
        uint64_t ss = 0, pss = 0;
        json_t *parts = json_object_get(o, "partitions");
        if (!json_is_object(o) || get_str(o, "label", ret->label, sizeof ret->label) < 0 ||
            get_str(o, "id", ret->id, sizeof ret->id) < 0 || get_u64(o, "size", &ret->size) < 0 ||
            get_u64(o, "sector_size", &ss) < 0 || get_u64(o, "physical_sector_size", &pss) < 0 ||
            get_u64(o, "first_usable", &ret->first_usable) < 0 || get_u64(o, "last_usable", &ret->last_usable) < 0 ||
            get_u64(o, "table_end", &ret->table_end) < 0 || get_u64(o, "boot_area", &ret->boot_area) < 0 ||
            !json_is_array(parts) || (ss != 512 && ss != 1024 && ss != 2048 && ss != 4096) || pss > (1u << 20) ||
            (strcmp(ret->label, "gpt") != 0 && strcmp(ret->label, "dos") != 0) || ret->boot_area > BOOT_AREA_MAX)
                goto bad;
        ret->sector_size = (uint32_t) ss;
        ret->physical_sector_size = (uint32_t) pss;
        size_t n = json_array_size(parts);
        if (n > 4096)
                goto bad;
        ret->parts = calloc(n ? n : 1, sizeof *ret->parts);
        if (!ret->parts)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        for (size_t i = 0; i < n; i++) {
                json_t *pj = json_array_get(parts, i);
                KuraPartition *p = &ret->parts[i];
                uint64_t num = 0;
                if (!json_is_object(pj) || get_u64(pj, "number", &num) < 0 || num < 1 || num > 4096 ||
                    get_u64(pj, "start", &p->start) < 0 || get_u64(pj, "size", &p->size) < 0 ||
                    get_str(pj, "type", p->type, sizeof p->type) < 0 ||
                    get_str(pj, "uuid", p->uuid, sizeof p->uuid) < 0 ||
                    get_str(pj, "name", p->name, sizeof p->name) < 0 || get_u64(pj, "attrs", &p->attrs) < 0 ||
                    get_str(pj, "fs", p->fs, sizeof p->fs) < 0 ||
                    get_str(pj, "fs_uuid", p->fs_uuid, sizeof p->fs_uuid) < 0 ||
                    get_str(pj, "fs_label", p->fs_label, sizeof p->fs_label) < 0 ||
                    get_str(pj, "role", p->role, sizeof p->role) < 0 || p->start > ret->size ||
                    p->size > ret->size - p->start)
                        goto bad;
                p->number = (unsigned) num;
                if (json_object_get(pj, "fs_used") && get_u64(pj, "fs_used", &p->fs_used) < 0)
                        goto bad;
                uint64_t fb = 0;
                if (json_object_get(pj, "fs_block") && (get_u64(pj, "fs_block", &fb) < 0 || fb > (1u << 20)))
                        goto bad;
                p->fs_block = (uint32_t) fb;
                ret->nparts++;
        }
        return 0;
bad:
        kura_disk_layout_clear(ret);
        return kura_err(err, EBADMSG, KURA_E_DAMAGED, "run 'kura check'",
                        "a disk layout in the version's manifest is malformed");
}

/* ---- writing --------------------------------------------------------------- */

int kura_disk_layout_write(const char *path, uint32_t hint, const KuraDiskLayout *l, const uint8_t *boot_code,
                           KuraErr *err) {
        _cleanup_(fdisk_ctxp) struct fdisk_context *c = NULL;
        int r = new_context(path, hint, false, &c, err);
        if (r < 0)
                return r;
        uint64_t ss = fdisk_get_sector_size(c);
        /* Start from a clean slate: old tables and signatures of the first
         * sectors are replaced, not merged. */
        r = fdisk_create_disklabel(c, l->label);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_TARGET_IO, "check the target disk",
                                      "cannot create a %s partition table on %s", l->label, path);
        struct fdisk_label *lb = fdisk_get_label(c, NULL);
        bool gpt = strcmp(l->label, "gpt") == 0;
        if (l->id[0] && (r = fdisk_set_disklabel_id_from_string(c, l->id)) < 0)
                return kura_err_errno(err, r, KURA_E_TARGET_IO, "", "cannot set disk identifier %s on %s", l->id,
                                      path);
        for (size_t i = 0; i < l->nparts; i++) {
                const KuraPartition *p = &l->parts[i];
                if (p->start % ss || p->size % ss)
                        return kura_err(err, EINVAL, KURA_E_DISK_LAYOUT,
                                        "this is a bug in the layout planning: report it",
                                        "partition %u (%" PRIu64 "+%" PRIu64 ") is not aligned to %s's %" PRIu64
                                        "-byte sectors",
                                        p->number, p->start, p->size, path, ss);
                struct fdisk_partition *pa = fdisk_new_partition();
                if (!pa)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                fdisk_partition_set_partno(pa, p->number - 1);
                fdisk_partition_set_start(pa, p->start / ss);
                fdisk_partition_set_size(pa, p->size / ss);
                struct fdisk_parttype *t = fdisk_label_parse_parttype(lb, gpt ? p->type : p->type + 2);
                if (t)
                        fdisk_partition_set_type(pa, t);
                if (gpt && p->uuid[0])
                        fdisk_partition_set_uuid(pa, p->uuid);
                if (gpt && p->name[0])
                        fdisk_partition_set_name(pa, p->name);
                size_t got = 0;
                r = fdisk_add_partition(c, pa, &got);
                fdisk_unref_partition(pa);
                fdisk_unref_parttype(t);
                if (r < 0)
                        return kura_err_errno(err, r, KURA_E_DISK_LAYOUT, "check the disk map and sizes",
                                              "cannot create partition %u at byte %" PRIu64 " (%" PRIu64
                                              " bytes) on %s",
                                              p->number, p->start, p->size, path);
                if (gpt && p->attrs && (r = fdisk_gpt_set_partition_attrs(c, got, p->attrs)) < 0)
                        return kura_err_errno(err, r, KURA_E_TARGET_IO, "", "cannot set attributes of partition %u",
                                              p->number);
                if (!gpt && (p->attrs & 0x80) && (r = fdisk_toggle_partition_flag(c, got, DOS_FLAG_ACTIVE)) < 0)
                        return kura_err_errno(err, r, KURA_E_TARGET_IO, "", "cannot mark partition %u active",
                                              p->number);
        }
        r = fdisk_write_disklabel(c);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_TARGET_IO, "check the target disk (dmesg)",
                                      "cannot write the partition table to %s", path);
        (void) fdisk_reread_partition_table(c);
        r = fdisk_deassign_device(c, 0);
        fdisk_unref_context(TAKE_PTR(c));
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_TARGET_IO, "", "cannot sync the partition table of %s", path);
        if (boot_code) {
                _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
                if (fd < 0 || pwrite(fd, boot_code, 440, 0) != 440 || fsync(fd) < 0)
                        return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot write the boot code to %s",
                                              path);
        }
        return 0;
}
