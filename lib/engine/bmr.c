/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Bare-metal recovery: rebuild whole disks from a version that holds their
 * layouts ("format and repartition disks").
 *
 * Everything is decided before the first byte is written: which target each
 * disk goes to, that no target is mounted or holds the repository, the new
 * partition sizes (growing one partition onto a larger disk; shrinking
 * filesystems that can shrink onto a smaller one, from what the backup
 * recorded as used), and — when it cannot fit — by how many bytes it misses.
 * Then, per disk: the partition table (same disk ID, partition GUIDs, types,
 * names, attributes; GPT backup header at the new end), the MBR boot code and
 * the gap before the first partition (GRUB's core.img on MBR disks), each
 * partition restored through its own block device (the kernel's node or a
 * loop device with an offset), filesystems grown or shrunk, swap re-made with
 * its UUID, and on a UEFI disk the removable-path loader so that a machine
 * with empty NVRAM boots it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "common/kio.h"
#include "engine-internal.h"
#include "kura/disk.h"
#include "kura/engine.h"

#define MIB (1ULL << 20)

typedef struct PartPlan {
        const KuraPartition *src;
        const KuraVolume *vol;     /* NULL: not copied (swap, extended) */
        uint64_t new_start, new_size;
        uint64_t min_size;         /* smallest it may become */
        const char *action;        /* "restore", "restore+grow", "shrink", "re-create xfs", "mkswap", "table only" */
} PartPlan;

typedef struct DiskPlan {
        char name[32];
        char src_path[256];
        const char *target;
        KuraDiskLayout src;        /* as backed up */
        KuraDiskLayout dst;        /* as it will be written (parts point into plans' order) */
        PartPlan *parts;
        const KuraVolume *boot_vol;
        uint64_t tgt_size;
        uint32_t tgt_ss;
        bool is_blk;
        json_t *json;              /* the disk's object in the manifest (borrowed) */
        bool add_esp;              /* --reinstall-bootloader uefi on a disk without an ESP */
        KuraPartition new_esp;     /* the ESP made for it (start/size on the target) */
        const char *esp_taken;     /* where its space came from */
        bool add_bios;             /* --reinstall-bootloader bios on a GPT disk without a BIOS boot partition */
        KuraPartition new_bios;    /* the BIOS boot partition made for it, in the gap before the first partition */
        bool grow_matched;         /* --grow names one of its partitions */
} DiskPlan;


void kura_bmr_result_clear(KuraBmrResult *r) {
        if (!r)
                return;
        free(r->plan);
        free(r->report);
        memset(r, 0, sizeof *r);
}

static const KuraVolume *find_volume(const KuraVersion *v, const char *name) {
        for (size_t i = 0; i < v->nvolumes; i++)
                if (strcmp(v->volumes[i].name, name) == 0)
                        return &v->volumes[i];
        return NULL;
}

static bool fs_is(const char *fs, const char *a) {
        return strcmp(fs, a) == 0;
}
static bool fs_ext(const char *fs) {
        return fs_is(fs, "ext2") || fs_is(fs, "ext3") || fs_is(fs, "ext4");
}

/* The bytes a filesystem will need at least, from what the backup read
 * (everything not recorded as free); generous margins because resize tools
 * need room for metadata moves. */
static uint64_t min_size_of(const KuraPartition *p, const KuraVolume *vol) {
        if (!vol)
                return strcmp(p->role, "swap") == 0 ? KURA_MIN(p->size, 64 * MIB) : p->size;
        uint64_t freeb = vol->chunks_free * (uint64_t) vol->chunk_size;
        uint64_t used = vol->size > freeb ? vol->size - freeb : 0;
        /* The superblock's count, where the backup read the volume whole. */
        if (p->fs_used && p->fs_used < used)
                used = p->fs_used;
        uint64_t m;
        if (fs_ext(p->fs))
                m = used + used / 10 + 32 * MIB;
        else if (fs_is(p->fs, "btrfs"))
                m = KURA_MAX(used + used / 4 + 96 * MIB, 256 * MIB); /* the kernel resizes btrfs to >= 256 MiB */
        else if (fs_is(p->fs, "xfs"))
                m = KURA_MAX(used + used / 5 + 64 * MIB, 300 * MIB);
        else
                return p->size; /* vfat, raw, LVM, LUKS...: kept whole */
        m = DIV_ROUND_UP(m, MIB) * MIB;
        return KURA_MIN(m, p->size);
}

/* One past the last byte a partition may use on a disk of this size. */
static uint64_t avail_end(const char *label, uint64_t size, uint32_t ss) {
        uint64_t end = size;
        if (strcmp(label, "gpt") == 0)
                end -= ss + DIV_ROUND_UP(128 * 128, ss) * ss; /* backup entries + header */
        return end / MIB * MIB;
}

static int target_probe(const char *path, uint64_t *ret_size, uint32_t *ret_ss, bool *ret_blk, KuraErr *err) {
        struct stat st;
        if (stat(path, &st) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_NOT_FOUND,
                                      "check the target disk's name (lsblk); an image file must exist with its size",
                                      "target disk %s", path);
        *ret_blk = S_ISBLK(st.st_mode);
        *ret_ss = 512;
        if (S_ISREG(st.st_mode)) {
                *ret_size = (uint64_t) st.st_size;
                return 0;
        }
        if (!S_ISBLK(st.st_mode))
                return kura_err(err, EINVAL, KURA_E_TARGET_NOT_FOUND, "name a whole disk such as /dev/sdb",
                                "target %s is neither a block device nor an image file", path);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        int ss = 0;
        if (fd < 0 || ioctl(fd, BLKGETSIZE64, ret_size) < 0 || ioctl(fd, BLKSSZGET, &ss) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "run as root", "cannot open target disk %s",
                                      path);
        *ret_ss = (uint32_t) ss;
        /* A partition is not a disk. */
        char sys[96];
        snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u/partition", major(st.st_rdev), minor(st.st_rdev));
        if (access(sys, F_OK) == 0)
                return kura_err(err, EINVAL, KURA_E_USAGE, "name the whole disk (e.g. /dev/sdb, not /dev/sdb1)",
                                "target %s is a partition", path);
        return 0;
}

/* Refuse a target that is mounted (itself, a partition, a loop device over
 * the image file), used by device-mapper (LVM, LUKS), or holds the
 * repository. */
static int target_check_free(const char *path, const char *repo_path, KuraErr *err) {
        KuraVolumeProbe p = {0};
        if (kura_mount_state(path, &p) == 0 && p.mounted)
                return kura_err(err, EBUSY, KURA_E_TARGET_MOUNTED,
                                "unmount it first; never restore over the running system (boot the rescue image)",
                                "target disk %s is mounted (at %s)", path, p.mountpoint[0] ? p.mountpoint : "?");
        struct stat st, rs;
        if (stat(path, &st) < 0)
                return 0;
        if (S_ISBLK(st.st_mode)) {
                char dir[64];
                snprintf(dir, sizeof dir, "/sys/dev/block/%u:%u", major(st.st_rdev), minor(st.st_rdev));
                DIR *d = opendir(dir);
                struct dirent *de;
                bool busy = false;
                char who[256] = "";
                while (d && !busy && (de = readdir(d))) {
                        if (de->d_name[0] == '.')
                                continue;
                        _cleanup_free_ char *h = kura_asprintf("%s/%s/holders", dir, de->d_name);
                        if (strcmp(de->d_name, "holders") == 0)
                                h = (free(h), kura_asprintf("%s/holders", dir));
                        DIR *hd = h ? opendir(h) : NULL;
                        struct dirent *he;
                        while (hd && (he = readdir(hd)))
                                if (he->d_name[0] != '.') {
                                        busy = true;
                                        snprintf(who, sizeof who, "%s", he->d_name);
                                        break;
                                }
                        if (hd)
                                closedir(hd);
                }
                if (d)
                        closedir(d);
                if (busy)
                        return kura_err(err, EBUSY, KURA_E_TARGET_MOUNTED,
                                        "deactivate it first (vgchange -an, cryptsetup close)",
                                        "target disk %s is in use by device-mapper (%s)", path, who);
                if (repo_path && stat(repo_path, &rs) == 0) {
                        unsigned pma = major(rs.st_dev), pmi = minor(rs.st_dev);
                        char pdir[96], real[PATH_MAX], rdisk[PATH_MAX];
                        snprintf(pdir, sizeof pdir, "/sys/dev/block/%u:%u", pma, pmi);
                        if (realpath(pdir, real) && realpath(dir, rdisk) &&
                            (strcmp(real, rdisk) == 0 ||
                             (strncmp(real, rdisk, strlen(rdisk)) == 0 && real[strlen(rdisk)] == '/')))
                                return kura_err(err, EBUSY, KURA_E_TARGET_MOUNTED,
                                                "put the repository on another disk or a share",
                                                "target disk %s holds the repository %s", path, repo_path);
                }
        }
        return 0;
}

/* The partition's object in the manifest (same order: sorted by start). */
static json_t *part_json(const DiskPlan *d, const KuraPartition *p) {
        json_t *a = d->json ? json_object_get(d->json, "partitions") : NULL;
        size_t i;
        json_t *pe;
        json_array_foreach(a, i, pe) {
                if (json_integer_value(json_object_get(pe, "number")) == (json_int_t) p->number)
                        return pe;
        }
        return NULL;
}

/* ---- planning -------------------------------------------------------------- */

/* Filesystem blocks smaller than the target's sectors: made anew (see recreate_copy). */
static bool needs_recreate(const PartPlan *pp, uint32_t ss) {
        return pp->vol && pp->src->fs_block && pp->src->fs_block < ss &&
               (strcmp(pp->src->fs, "vfat") == 0 || strcmp(pp->src->fs, "xfs") == 0 ||
                strncmp(pp->src->fs, "ext", 3) == 0);
}


#define NEW_ESP_SIZE (64 * MIB)
/* GRUB's core.img with the modules of bios_mods[] is ~210 KiB. */
#define NEW_BIOS_MIN (256U * 1024)
#define BIOS_BOOT_GUID "21686148-6449-6E6F-744E-656564454649"
/* GRUB for BIOS (grub-pc-bin): grub-mkimage's modules and boot.img. */
#define GRUB_PC_DIR "/usr/lib/grub/i386-pc"

static int plan_disk(DiskPlan *d, const KuraVersion *v, const char *grow, KuraErr *err) {
        const KuraDiskLayout *s = &d->src;
        size_t n = s->nparts;
        d->parts = calloc(n + 1, sizeof *d->parts);
        d->dst = *s;
        d->dst.parts = calloc(n + 1, sizeof *d->dst.parts);
        if (!d->parts || !d->dst.parts)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        memcpy(d->dst.parts, s->parts, n * sizeof *s->parts);
        d->dst.size = d->tgt_size;
        d->dst.sector_size = d->tgt_ss;

        for (size_t i = 0; i < n; i++) {
                PartPlan *pp = &d->parts[i];
                pp->src = &s->parts[i];
                char vn[48];
                snprintf(vn, sizeof vn, "%sp%u", d->name, pp->src->number);
                pp->vol = find_volume(v, vn);
                pp->new_start = pp->src->start;
                pp->new_size = pp->src->size;
                pp->min_size = min_size_of(pp->src, pp->vol);
                if (kura_disk_stack_present(part_json(d, pp->src)))
                        pp->min_size = pp->src->size; /* LVM/LUKS: not shrunk */
                if (pp->src->start % d->tgt_ss || pp->src->size % d->tgt_ss)
                        return kura_err(err, EINVAL, KURA_E_DISK_LAYOUT,
                                        "restore onto a disk with the original sector size",
                                        "%s partition %u (byte %" PRIu64 ") is not aligned to the target's %u-byte "
                                        "sectors",
                                        d->name, pp->src->number, pp->src->start, d->tgt_ss);
        }
        /* The partition that takes the difference: --grow, else the last one. */
        ssize_t g = n ? (ssize_t) n - 1 : -1;
        if (grow) {
                g = -1;
                /* By volume name, or by its aliases: the partition's path at backup
                 * time, or its filesystem UUID (bare or as UUID=...). */
                const char *gu = strncmp(grow, "UUID=", 5) == 0 ? grow + 5 : grow;
                for (size_t i = 0; i < n; i++) {
                        char vn[48];
                        snprintf(vn, sizeof vn, "%sp%u", d->name, s->parts[i].number);
                        const KuraVolume *pv = d->parts[i].vol;
                        if (strcmp(vn, grow) == 0 || (pv && pv->path && strcmp(pv->path, grow) == 0) ||
                            (s->parts[i].fs_uuid[0] && strcasecmp(s->parts[i].fs_uuid, gu) == 0))
                                g = (ssize_t) i;
                }
                d->grow_matched = g >= 0;
                bool ours = strncmp(grow, d->name, strlen(d->name)) == 0 && grow[strlen(d->name)] == 'p';
                if (g < 0 && ours)
                        return kura_err(err, ENOENT, KURA_E_VOLUME_NOT_FOUND, "'kura versions' lists the partitions",
                                        "--grow %s: %s has no such partition", grow, d->name);
                if (g < 0)
                        g = n ? (ssize_t) n - 1 : -1;
        }
        uint64_t src_end = n ? s->parts[n - 1].start + s->parts[n - 1].size : 0;
        uint64_t src_avail = avail_end(s->label, s->size, s->sector_size);
        uint64_t tgt_avail = avail_end(s->label, d->tgt_size, d->tgt_ss);
        uint64_t esp_end = tgt_avail;
        if (d->add_esp) {
                /* Room for the new ESP at the end: free space of a larger disk
                 * first, else taken from the partitions that can shrink. */
                if (tgt_avail < NEW_ESP_SIZE + MIB)
                        return kura_err(err, ENOSPC, KURA_E_TARGET_TOO_SMALL, "use a larger disk",
                                        "target %s has no room for an ESP", d->target);
                tgt_avail -= NEW_ESP_SIZE;
                d->esp_taken = src_end <= tgt_avail ? "free space at the end of the disk"
                                                     : "space of the last partitions, shrunk";
        }
        bool same = d->tgt_size == s->size && d->tgt_ss == s->sector_size && !d->add_esp;
        if (n == 0 || same)
                goto done;
        if (tgt_avail > src_avail && src_end <= src_avail) {
                /* Larger: partition g grows, the ones after it move. */
                uint64_t delta = tgt_avail - src_avail;
                d->parts[g].new_size += delta;
                for (size_t i = (size_t) g + 1; i < n; i++)
                        d->parts[i].new_start += delta;
        } else if (src_end > tgt_avail) {
                /* Smaller: shrink g first, then the others from the last. */
                uint64_t deficit = src_end - tgt_avail;
                size_t order[4096];
                size_t no = 0;
                order[no++] = (size_t) g;
                for (size_t i = n; i-- > 0 && no < ELEMENTSOF(order);)
                        if (i != (size_t) g)
                                order[no++] = i;
                for (size_t k = 0; k < no && deficit; k++) {
                        PartPlan *pp = &d->parts[order[k]];
                        uint64_t room = pp->new_size > pp->min_size ? pp->new_size - pp->min_size : 0;
                        room = room / MIB * MIB;
                        uint64_t take = KURA_MIN(room, DIV_ROUND_UP(deficit, MIB) * MIB);
                        pp->new_size -= take;
                        deficit = take >= deficit ? 0 : deficit - take;
                }
                if (deficit)
                        return kura_err(err, ENOSPC, KURA_E_TARGET_TOO_SMALL,
                                        "use a disk at least that much larger, or leave a disk out with --exclude-disk",
                                        "target %s (%" PRIu64 " bytes) is %" PRIu64 " bytes too small for %s: its "
                                        "data needs at least %" PRIu64 " bytes",
                                        d->target, d->tgt_size, deficit, d->name, d->tgt_size + deficit);
                /* Re-place them one after another, keeping the original gaps. */
                uint64_t shift = 0;
                for (size_t i = 0; i < n; i++) {
                        PartPlan *pp = &d->parts[i];
                        pp->new_start = pp->src->start - shift;
                        shift += pp->src->size - pp->new_size;
                }
        }
done:
        /* An MBR extended partition is a container: it follows its logical
         * partitions (grown, shrunk or moved above), keeping the original
         * room before the first one (its EBR) and after the last. */
        for (size_t i = 0; i < n; i++) {
                PartPlan *e = &d->parts[i];
                if (strcmp(e->src->role, "extended") != 0)
                        continue;
                uint64_t lo = UINT64_MAX, hi = 0, slo = UINT64_MAX, shi = 0;
                for (size_t k = 0; k < n; k++) {
                        const PartPlan *l = &d->parts[k];
                        if (l->src->number < 5)
                                continue;
                        lo = KURA_MIN(lo, l->new_start);
                        hi = KURA_MAX(hi, l->new_start + l->new_size);
                        slo = KURA_MIN(slo, l->src->start);
                        shi = KURA_MAX(shi, l->src->start + l->src->size);
                }
                if (hi == 0)
                        continue; /* no logical partitions: kept as it is */
                uint64_t head = slo - e->src->start;
                uint64_t tail = e->src->start + e->src->size > shi ? e->src->start + e->src->size - shi : 0;
                uint64_t end = KURA_MIN(hi + tail, KURA_MAX(hi, avail_end(s->label, d->tgt_size, d->tgt_ss)));
                e->new_start = lo - head;
                e->new_size = end - e->new_start;
                for (size_t k = 0; k < n; k++) {
                        const PartPlan *l = &d->parts[k];
                        if (l->src->number >= 5 &&
                            (l->new_start < e->new_start + head || l->new_start + l->new_size > end))
                                return kura_err(err, EINVAL, KURA_E_INTERNAL, "report this",
                                                "layout planning put %sp%u outside its extended partition",
                                                d->name, l->src->number);
                }
        }
        for (size_t i = 0; i < n; i++) {
                PartPlan *pp = &d->parts[i];
                d->dst.parts[i].start = pp->new_start;
                d->dst.parts[i].size = pp->new_size;
                bool swap = strcmp(pp->src->role, "swap") == 0;
                if (kura_disk_stack_present(part_json(d, pp->src)))
                        pp->action = "re-create LVM/LUKS and restore its volumes";
                else if (!pp->vol)
                        pp->action = swap ? "mkswap" : "table only";
                else if (needs_recreate(pp, d->tgt_ss))
                        pp->action = "re-create for the sector size and copy files";
                else if (pp->new_size == pp->src->size)
                        pp->action = "restore";
                else if (pp->new_size > pp->src->size)
                        pp->action = "restore+grow";
                else if (fs_is(pp->src->fs, "xfs"))
                        pp->action = "re-create xfs and copy files";
                else
                        pp->action = "shrink";
        }
        if (n && d->dst.parts[n - 1].start + d->dst.parts[n - 1].size > tgt_avail &&
            d->dst.parts[n - 1].start + d->dst.parts[n - 1].size > avail_end(s->label, d->tgt_size, d->tgt_ss) + MIB)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "report this", "layout planning overran %s", d->target);
        d->dst.last_usable = 0; /* libfdisk computes it for the target */
        if (d->add_esp) {
                unsigned num = 0;
                for (size_t i = 0; i < n; i++)
                        num = KURA_MAX(num, s->parts[i].number);
                bool gpt = strcmp(s->label, "gpt") == 0;
                if (!gpt && num >= 4)
                        return kura_err(err, ENOSPC, KURA_E_DISK_LAYOUT,
                                        "free a primary partition slot, or convert the disk to GPT first",
                                        "%s: an MBR table with 4 primary partitions has no slot for an ESP", d->name);
                KuraPartition *e = &d->new_esp;
                memset(e, 0, sizeof *e);
                e->number = num + 1;
                e->start = esp_end - NEW_ESP_SIZE;
                e->size = NEW_ESP_SIZE;
                snprintf(e->type, sizeof e->type, "%s", gpt ? "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" : "0xEF");
                snprintf(e->name, sizeof e->name, "%s", gpt ? "EFI System" : "");
                snprintf(e->fs, sizeof e->fs, "vfat");
                snprintf(e->role, sizeof e->role, "esp");
                d->dst.parts[n] = *e;
                d->dst.nparts = n + 1;
        }
        if (d->add_bios) {
                /* GRUB's core.img goes into a BIOS boot partition in the gap
                 * between the GPT's entries and the first partition (1 MiB on
                 * every disk partitioned with 1 MiB alignment: ~1007 KiB). */
                unsigned num = 0;
                for (size_t i = 0; i < n; i++)
                        num = KURA_MAX(num, s->parts[i].number);
                uint64_t start = DIV_ROUND_UP(KURA_MAX(s->first_usable, s->table_end), d->tgt_ss) * d->tgt_ss;
                uint64_t end = n ? d->dst.parts[0].start : start;
                for (size_t i = 0; i < n; i++)
                        end = KURA_MIN(end, d->dst.parts[i].start);
                if (end < start + NEW_BIOS_MIN)
                        return kura_err(err, ENOSPC, KURA_E_DISK_LAYOUT,
                                        "install GRUB for BIOS by hand (grub-install in a chroot), or restore it onto a "
                                        "UEFI machine",
                                        "%s: only %" PRIu64 " bytes before its first partition, too few for a BIOS boot "
                                        "partition (at least %u); nothing was written",
                                        d->name, end > start ? end - start : 0, NEW_BIOS_MIN);
                KuraPartition *b = &d->new_bios;
                memset(b, 0, sizeof *b);
                b->number = num + 1;
                b->start = start;
                b->size = (end - start) / d->tgt_ss * d->tgt_ss;
                snprintf(b->type, sizeof b->type, "%s", BIOS_BOOT_GUID);
                snprintf(b->name, sizeof b->name, "BIOS boot");
                snprintf(b->role, sizeof b->role, "bios-boot");
                d->dst.parts[n] = *b;
                d->dst.nparts = n + 1;
        }
        return 0;
}

/* ---- the disk map ---------------------------------------------------------- */

static bool excluded(const KuraBmrOpts *o, const char *name, const char *path) {
        for (size_t i = 0; i < o->nexclude; i++)
                if (strcmp(o->exclude[i], name) == 0 || strcmp(o->exclude[i], path) == 0)
                        return true;
        return false;
}

/* Auto: the disks in /sys/block that are empty (no partition table, no
 * signature), not mounted, not the repository's, large enough; in name
 * order. */
static int auto_candidates(char ***ret, size_t *ret_n) {
        *ret = NULL;
        *ret_n = 0;
        DIR *d = opendir("/sys/block");
        if (!d)
                return -errno;
        struct dirent *de;
        while ((de = readdir(d))) {
                const char *nm = de->d_name;
                if (nm[0] == '.' || !strncmp(nm, "loop", 4) || !strncmp(nm, "ram", 3) || !strncmp(nm, "zram", 4) ||
                    !strncmp(nm, "sr", 2) || !strncmp(nm, "dm-", 3) || !strncmp(nm, "md", 2) ||
                    !strncmp(nm, "fd", 2))
                        continue;
                char *dev = kura_asprintf("/dev/%s", nm);
                char **n = dev ? realloc(*ret, (*ret_n + 1) * sizeof *n) : NULL;
                if (!n) {
                        free(dev);
                        break;
                }
                *ret = n;
                (*ret)[(*ret_n)++] = dev;
        }
        closedir(d);
        for (size_t i = 0; i + 1 < *ret_n; i++)
                for (size_t k = i + 1; k < *ret_n; k++)
                        if (strcmp((*ret)[k], (*ret)[i]) < 0) {
                                char *t = (*ret)[i];
                                (*ret)[i] = (*ret)[k];
                                (*ret)[k] = t;
                        }
        return 0;
}

static bool disk_is_empty(const char *dev) {
        KuraVolumeProbe p;
        if (kura_volume_probe(dev, &p, NULL) < 0 || p.mounted || p.fs[0])
                return false;
        KuraDiskLayout l;
        if (kura_disk_layout_read(dev, 0, &l, NULL) == 0) {
                kura_disk_layout_clear(&l);
                return false;
        }
        return true;
}

/* ---- executing ------------------------------------------------------------- */

static int run_tool(const char *const argv[], const char *code, const char *what, KuraErr *err) {
        _cleanup_free_ char *out = NULL;
        int r = kura_engine_run(argv, &out);
        if (r == -ENOENT)
                return kura_err(err, ENOENT, KURA_E_TOOL_MISSING, "install it (scripts/setup.sh, or the rescue image)",
                                "%s: the program %s is not installed", what, argv[0]);
        if (r != 0) {
                char *last = out ? out : (char *) "";
                size_t l = strlen(last);
                while (l && last[l - 1] == '\n')
                        last[--l] = 0;
                char *nl = strrchr(last, '\n');
                return kura_err(err, EIO, code, "read the tool's message; fix the cause and run kura bmr again",
                                "%s: %s exited with %d: %s", what, argv[0], r, nl ? nl + 1 : last);
        }
        return 0;
}

int kura_bmr_restore_volume(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, const char *vol,
                            const char *target, uint64_t *written, KuraErr *err) {
        KuraRestoreOpts ro = {.version = v->id,
                              .volume = vol,
                              .target = target,
                              .threads = o->threads,
                              .progress = o->progress,
                              .userdata = o->progress_userdata};
        KuraRestoreResult res = {0};
        int r = kura_restore_run(repo, &ro, &res, err);
        if (r >= 0)
                *written += res.bytes_written;
        kura_restore_result_clear(&res);
        return r;
}

static const char *tmpdir_of(const KuraBmrOpts *o) {
        if (o->tmpdir)
                return o->tmpdir;
        const char *t = getenv("TMPDIR");
        return t && *t ? t : "/var/tmp";
}

int64_t kura_boot_gap_write(int fd, const KuraDiskLayout *src, uint64_t first_start, const uint8_t *boot,
                            uint64_t boot_size) {
        uint64_t end = KURA_MIN(boot_size, first_start);
        if (end <= src->table_end)
                return 0;
        size_t len = (size_t) (end - src->table_end);
        if (pwrite(fd, boot + src->table_end, len, (off_t) src->table_end) != (ssize_t) len)
                return -(errno ? errno : EIO);
        return (int64_t) len;
}

/* The boot area of the backup, read back into memory (at most 16 MiB). */
static int load_boot_area(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, const DiskPlan *d,
                          uint8_t **ret, KuraErr *err) {
        *ret = NULL;
        if (!d->boot_vol)
                return 0;
        _cleanup_free_ char *tmp = kura_asprintf("%s/kura-bmr-boot.XXXXXX", tmpdir_of(o));
        if (!tmp)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "give --tmpdir a writable directory",
                                      "cannot create a temporary file in %s", tmpdir_of(o));
        uint64_t w = 0;
        int r = kura_bmr_restore_volume(repo, o, v, d->boot_vol->name, tmp, &w, err);
        uint8_t *buf = r >= 0 ? calloc(1, d->boot_vol->size) : NULL;
        if (r >= 0 && !buf)
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (r >= 0 && pread(fd, buf, d->boot_vol->size, 0) != (ssize_t) d->boot_vol->size)
                r = kura_err_errno(err, -EIO, KURA_E_TARGET_IO, "", "cannot read back the boot area of %s", d->name);
        close(fd);
        unlink(tmp);
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret = buf;
        return 0;
}

/* An ESP on a machine whose NVRAM is empty is booted through the removable
 * path \EFI\BOOT\BOOTX64.EFI only; make sure it is there, copied from the
 * system's own (signed) loader chain: shim first, else GRUB. */
static int esp_fallback(const char *dev, char **report, KuraErr *err) {
        const char *probe[] = {"mdir", "-i", dev, "::/EFI/BOOT/BOOTX64.EFI", NULL};
        _cleanup_free_ char *out = NULL;
        int r = kura_engine_run(probe, &out);
        if (r == -ENOENT) {
                kura_appendf(report, "  ESP %s: mtools is not installed, the removable-path loader was not checked\n", dev);
                return 0;
        }
        if (r == 0) {
                kura_appendf(report, "  ESP: \\EFI\\BOOT\\BOOTX64.EFI present\n");
                return 0;
        }
        /* Find \EFI\<vendor>\shimx64.efi or grubx64.efi. */
        const char *ls[] = {"mdir", "-b", "-/", "-i", dev, "::/EFI", NULL};
        free(out);
        out = NULL;
        if (kura_engine_run(ls, &out) != 0 || !out) {
                kura_appendf(report, "  ESP: no \\EFI directory; nothing to boot on an empty NVRAM\n");
                return 0;
        }
        char shim[256] = "", grub[256] = "", mm[256] = "";
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
                const char *b = strrchr(line, '/');
                b = b ? b + 1 : line;
                if (!strcasecmp(b, "shimx64.efi") && !shim[0] && !strcasestr(line, "/EFI/BOOT/"))
                        snprintf(shim, sizeof shim, "%s", line);
                else if (!strcasecmp(b, "grubx64.efi") && !grub[0] && !strcasestr(line, "/EFI/BOOT/"))
                        snprintf(grub, sizeof grub, "%s", line);
                else if (!strcasecmp(b, "mmx64.efi") && !mm[0])
                        snprintf(mm, sizeof mm, "%s", line);
        }
        const char *loader = shim[0] ? shim : grub;
        if (!loader[0]) {
                kura_appendf(report, "  ESP: no shimx64.efi or grubx64.efi found to use as \\EFI\\BOOT\\BOOTX64.EFI\n");
                return 0;
        }
        const char *md[] = {"mmd", "-D", "s", "-i", dev, "::/EFI/BOOT", NULL};
        (void) kura_engine_run(md, NULL);
        _cleanup_free_ char *tmp = kura_asprintf("/tmp/kura-esp.%d", (int) getpid());
        const char *pairs[3][2] = {{loader, "::/EFI/BOOT/BOOTX64.EFI"}, {NULL, NULL}, {NULL, NULL}};
        if (shim[0] && grub[0])
                pairs[1][0] = grub, pairs[1][1] = "::/EFI/BOOT/grubx64.efi";
        if (shim[0] && mm[0])
                pairs[2][0] = mm, pairs[2][1] = "::/EFI/BOOT/mmx64.efi";
        for (int i = 0; i < 3; i++) {
                if (!pairs[i][0])
                        continue;
                _cleanup_free_ char *srcp = strncmp(pairs[i][0], "::", 2) == 0 ? strdup(pairs[i][0])
                                                                                : kura_asprintf("::%s", pairs[i][0]);
                const char *get[] = {"mcopy", "-o", "-i", dev, srcp, tmp, NULL};
                const char *put[] = {"mcopy", "-o", "-i", dev, tmp, pairs[i][1], NULL};
                int r1 = run_tool(get, KURA_E_TARGET_IO, "copying the UEFI loader", err);
                if (r1 >= 0)
                        r1 = run_tool(put, KURA_E_TARGET_IO, "copying the UEFI loader", err);
                unlink(tmp);
                if (r1 < 0)
                        return r1;
        }
        kura_appendf(report, "  ESP: copied %s to \\EFI\\BOOT\\BOOTX64.EFI (removable path, for an empty NVRAM)%s\n", loader,
                shim[0] ? " with grubx64.efi beside it (signed chain kept)" : "");
        return 0;
}

/* A filesystem whose blocks (FAT/xfs sectors, ext blocks) are smaller than
 * the target's logical sectors cannot be used there raw (512e -> 4Kn): it
 * is made anew with the same UUID and label and filled file by file from
 * the restored copy src. */
static int recreate_copy(const char *src, const KuraPartition *p, const char *dev, uint32_t ss, const char *tmpd,
                         KuraErr *err) {
        char bs[16];
        snprintf(bs, sizeof bs, "%u", ss < 4096 ? 4096 : ss);
        _cleanup_free_ char *work = kura_asprintf("%s/kura-bmr-copy.XXXXXX", tmpd);
        if (!work || !mkdtemp(work))
                return kura_err_errno(err, work ? -errno : -ENOMEM, KURA_E_TARGET_IO, "give --tmpdir a writable directory",
                                      "cannot make a scratch directory in %s", tmpd);
        _cleanup_free_ char *from = kura_asprintf("%s/from", work), *to = kura_asprintf("%s/to", work);
        int r = 0;
        if (!from || !to || mkdir(from, 0700) < 0 || mkdir(to, 0700) < 0) {
                r = kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot make directories in %s", work);
                goto out_dir;
        }
        if (strcmp(p->fs, "vfat") == 0) {
                /* FAT: mtools on both sides, no mount needed. */
                char serial[16] = "";
                for (const char *q = p->fs_uuid; *q && strlen(serial) < 8; q++)
                        if (*q != '-')
                                serial[strlen(serial)] = *q;
                char ssz[16];
                snprintf(ssz, sizeof ssz, "%u", ss);
                const char *mk[16] = {"mkfs.vfat", "-I", "-S", ssz};
                int a = 4;
                if (serial[0])
                        mk[a++] = "-i", mk[a++] = serial;
                if (p->fs_label[0])
                        mk[a++] = "-n", mk[a++] = p->fs_label;
                mk[a++] = dev;
                mk[a] = NULL;
                r = run_tool(mk, KURA_E_FS_RESIZE, "re-creating the FAT filesystem", err);
                _cleanup_free_ char *star = kura_asprintf("%s/", from);
                const char *get[] = {"mcopy", "-s", "-p", "-m", "-n", "-i", src, "::/", star, NULL};
                if (r >= 0)
                        r = run_tool(get, KURA_E_FS_RESIZE, "reading the FAT filesystem", err);
                /* mcopy -s of ::/ puts the tree under from/ directly. */
                DIR *d = r >= 0 ? opendir(from) : NULL;
                struct dirent *de;
                while (d && r >= 0 && (de = readdir(d))) {
                        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                                continue;
                        _cleanup_free_ char *one = kura_asprintf("%s/%s", from, de->d_name);
                        const char *put[] = {"mcopy", "-s", "-p", "-m", "-i", dev, one, "::/", NULL};
                        r = run_tool(put, KURA_E_FS_RESIZE, "filling the FAT filesystem", err);
                }
                if (d)
                        closedir(d);
                const char *rm[] = {"rm", "-rf", "--one-file-system", from, NULL};
                (void) kura_engine_run(rm, NULL);
                goto out_dir;
        }
        const char *mk[16];
        int a = 0;
        if (strncmp(p->fs, "ext", 3) == 0) {
                static char mkname[48];
                snprintf(mkname, sizeof mkname, "mkfs.%s", p->fs);
                mk[a++] = mkname, mk[a++] = "-F", mk[a++] = "-q", mk[a++] = "-b", mk[a++] = bs;
                if (p->fs_uuid[0])
                        mk[a++] = "-U", mk[a++] = p->fs_uuid;
        } else if (strcmp(p->fs, "xfs") == 0) {
                static char uu[96], ssopt[32];
                snprintf(uu, sizeof uu, "uuid=%s", p->fs_uuid);
                snprintf(ssopt, sizeof ssopt, "size=%u", ss);
                mk[a++] = "mkfs.xfs", mk[a++] = "-f", mk[a++] = "-q", mk[a++] = "-s", mk[a++] = ssopt;
                if (p->fs_uuid[0])
                        mk[a++] = "-m", mk[a++] = uu;
        } else {
                r = kura_err(err, ENOTSUP, KURA_E_DISK_LAYOUT, "restore onto a disk with the original sector size",
                             "%s filesystem with %u-byte blocks cannot live on %u-byte sectors and kura cannot "
                             "re-create it",
                             p->fs, p->fs_block, ss);
                goto out_dir;
        }
        if (p->fs_label[0])
                mk[a++] = "-L", mk[a++] = p->fs_label;
        mk[a++] = dev;
        mk[a] = NULL;
        r = run_tool(mk, KURA_E_FS_RESIZE, "re-creating the filesystem", err);
        if (r < 0)
                goto out_dir;
        char *sdev = NULL;
        int sloop = -1;
        struct stat st;
        if (stat(src, &st) < 0 || (r = kura_partdev_attach(src, 0, (uint64_t) st.st_size, false, &sdev, &sloop, err)) < 0) {
                r = r < 0 ? r : kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "scratch copy %s", src);
                goto out_dir;
        }
        bool xfs = strcmp(p->fs, "xfs") == 0;
        if (mount(sdev, from, p->fs, MS_RDONLY, xfs ? "nouuid,norecovery" : "noload") < 0)
                r = kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "", "cannot mount the restored copy of %s", p->fs);
        else {
                if (mount(dev, to, p->fs, 0, xfs ? "nouuid" : NULL) < 0)
                        r = kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "", "cannot mount the new %s on %s", p->fs,
                                           dev);
                else {
                        _cleanup_free_ char *f = kura_asprintf("%s/.", from), *t = kura_asprintf("%s/", to);
                        const char *cp[] = {"cp", "-a", "--sparse=always", f, t, NULL};
                        r = run_tool(cp, KURA_E_FS_RESIZE, "copying the files", err);
                        if (umount2(to, 0) < 0 && r >= 0)
                                r = kura_err_errno(err, -errno, KURA_E_FS_RESIZE, "", "cannot unmount %s", to);
                }
                (void) umount2(from, MNT_DETACH);
        }
        free(sdev);
        kura_partdev_release(sloop);
out_dir:
        if (from)
                rmdir(from);
        if (to)
                rmdir(to);
        rmdir(work);
        return r;
}

/* Under UEFI, register the restored disk's loader in NVRAM (a replacement
 * machine's is empty; the removable path is the fallback).  Only for a real
 * disk of this machine: never for an image file. */
static void register_efi_boot(const DiskPlan *d, const KuraPartition *esp, char **report) {
        if (access("/sys/firmware/efi/efivars", F_OK) < 0 || !d->is_blk)
                return;
        char part[16];
        snprintf(part, sizeof part, "%u", esp->number);
        const char *argv[] = {"efibootmgr", "--quiet", "--create", "--disk", d->target, "--part", part,
                              "--label", "kura restored system", "--loader", "\\EFI\\BOOT\\BOOTX64.EFI", NULL};
        _cleanup_free_ char *out = NULL;
        int r = kura_engine_run(argv, &out);
        if (r == 0)
                kura_appendf(report, "  UEFI: boot entry \"kura restored system\" registered for %s partition %u\n",
                        d->target, esp->number);
        else
                kura_appendf(report, "  UEFI: efibootmgr could not register a boot entry (%s); the removable path "
                        "\\EFI\\BOOT\\BOOTX64.EFI still boots\n",
                        r == -ENOENT ? "efibootmgr is not installed" : out ? out : "failed");
}

static int restore_partition(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, DiskPlan *d, PartPlan *pp,
                             const char *dev, KuraBmrResult *res, KuraErr *err) {
        const char *tmpd = tmpdir_of(o);
        json_t *pe = part_json(d, pp->src);
        if (kura_disk_stack_present(pe)) {
                int h = kura_disk_stack_restore(repo, o, v, pe, dev, pp->new_size, &res->bytes_written, &res->report,
                                                err);
                return h < 0 ? h : 0;
        }
        if (!pp->vol) {
                if (strcmp(pp->src->role, "swap") != 0)
                        return 0;
                const char *argv[8] = {"mkswap", "-f"};
                int a = 2;
                if (pp->src->fs_uuid[0])
                        argv[a++] = "-U", argv[a++] = pp->src->fs_uuid;
                if (pp->src->fs_label[0])
                        argv[a++] = "-L", argv[a++] = pp->src->fs_label;
                argv[a++] = dev;
                argv[a] = NULL;
                return run_tool(argv, KURA_E_TARGET_IO, "re-making swap", err);
        }
        bool recreate = needs_recreate(pp, d->tgt_ss);
        if (pp->new_size >= pp->src->size && !recreate) {
                int r = kura_bmr_restore_volume(repo, o, v, pp->vol->name, dev, &res->bytes_written, err);
                if (r < 0 || pp->new_size == pp->src->size)
                        return r;
                r = kura_fs_grow(dev, pp->src->fs, tmpd, err);
                if (r == -ENOTSUP)
                        return 0;
                return r;
        }
        /* Smaller: restore into a sparse scratch file, then shrink onto dev. */
        _cleanup_free_ char *tmp = kura_asprintf("%s/kura-bmr-%s.XXXXXX", tmpd, pp->vol->name);
        if (!tmp)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "give --tmpdir a writable directory with room "
                                      "for the used data",
                                      "cannot create a scratch file in %s", tmpd);
        close(fd);
        int r = kura_bmr_restore_volume(repo, o, v, pp->vol->name, tmp, &res->bytes_written, err);
        if (r >= 0 && recreate)
                r = recreate_copy(tmp, pp->src, dev, d->tgt_ss, tmpd, err);
        else if (r >= 0)
                r = kura_fs_shrink_onto(tmp, pp->src->fs, dev, tmpd, err);
        unlink(tmp);
        return r;
}

static int run_disk(KuraRepo *repo, const KuraBmrOpts *o, const KuraVersion *v, DiskPlan *d, KuraBmrResult *res,
                    KuraErr *err) {
        _cleanup_free_ uint8_t *boot = NULL;
        int r = load_boot_area(repo, o, v, d, &boot, err);
        if (r < 0)
                return r;
        r = kura_disk_layout_write(d->target, d->tgt_ss, &d->dst, boot && d->boot_vol->size >= 440 ? boot : NULL, err);
        if (r < 0)
                return r;
        /* The gap after the table goes back raw when the sectors are the
         * same size; else its LBAs would be wrong anyway. */
        if (boot && d->tgt_ss == d->src.sector_size) {
                _cleanup_close_ int fd = open(d->target, O_WRONLY | O_CLOEXEC);
                int64_t len = fd < 0 ? -errno
                                     : kura_boot_gap_write(fd, &d->src, d->src.nparts ? d->dst.parts[0].start : UINT64_MAX,
                                                           boot, d->boot_vol->size);
                if (len < 0 || fsync(fd) < 0)
                        return kura_err_errno(err, len < 0 ? (int) len : -errno, KURA_E_TARGET_IO, "",
                                              "cannot write the boot area of %s", d->target);
                if (len > 0)
                        kura_appendf(&res->report,
                                     "  %s: boot code and %" PRId64 " bytes before the first partition written\n",
                                     d->target, len);
        }
        for (size_t i = 0; i < d->src.nparts; i++) {
                PartPlan *pp = &d->parts[i];
                if (!pp->vol && strcmp(pp->src->role, "swap") != 0 && !kura_disk_stack_present(part_json(d, pp->src)))
                        continue;
                char *dev = NULL;
                int loop = -1;
                r = kura_partdev_attach(d->target, pp->new_start, pp->new_size, true, &dev, &loop, err);
                if (r < 0)
                        return r;
                r = restore_partition(repo, o, v, d, pp, dev, res, err);
                if (r >= 0 && strcmp(pp->src->role, "esp") == 0 && fs_is(pp->src->fs, "vfat"))
                        r = esp_fallback(dev, &res->report, err);
                free(dev);
                kura_partdev_release(loop);
                if (r < 0)
                        return r;
                kura_appendf(&res->report, "  %sp%u: %s done\n", d->name, pp->src->number, pp->action);
        }
        for (size_t i = 0; i < d->src.nparts; i++)
                if (strcmp(d->src.parts[i].role, "esp") == 0) {
                        register_efi_boot(d, &d->src.parts[i], &res->report);
                        break;
                }
        return 0;
}

/* ---- dissimilar hardware: drivers into the restored system ------------------- */

static int copy_file(const char *from, const char *to) {
        _cleanup_close_ int in = open(from, O_RDONLY | O_CLOEXEC);
        if (in < 0)
                return -errno;
        _cleanup_close_ int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out < 0)
                return -errno;
        char buf[65536];
        for (;;) {
                ssize_t n = read(in, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break;
                if (write(out, buf, (size_t) n) != n)
                        return -EIO;
        }
        return fsync(out) < 0 ? -errno : 0;
}

/* Put the modules of dir into the system mounted at root and regenerate its
 * initramfs there.  Returns the number of kernels handled. */
static int inject_drivers(const char *root, const char *dir, char **report, KuraErr *err) {
        DIR *dd = opendir(dir);
        if (!dd)
                return kura_err_errno(err, -errno, KURA_E_USAGE, "give --add-drivers a directory of kernel modules",
                                      "cannot read --add-drivers %s", dir);
        char mods[64][256];
        size_t nmods = 0;
        struct dirent *de;
        while ((de = readdir(dd)) && nmods < ELEMENTSOF(mods))
                if (strstr(de->d_name, ".ko") && de->d_name[0] != '.')
                        snprintf(mods[nmods++], sizeof mods[0], "%s", de->d_name);
        closedir(dd);
        if (nmods == 0)
                return kura_err(err, ENOENT, KURA_E_USAGE, "put the .ko files of the new hardware's drivers there",
                                "--add-drivers %s holds no kernel module (*.ko, *.ko.xz, *.ko.zst)", dir);
        _cleanup_free_ char *mdir = kura_asprintf("%s/lib/modules", root);
        DIR *kd = mdir ? opendir(mdir) : NULL;
        if (!kd)
                return kura_err(err, ENOENT, KURA_E_DISK_LAYOUT, "", "the restored system has no /lib/modules");
        int nk = 0, r = 0;
        while (r >= 0 && (de = readdir(kd))) {
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_free_ char *up = kura_asprintf("%s/%s/updates", mdir, de->d_name);
                _cleanup_free_ char *dst = kura_asprintf("%s/%s/updates/kura", mdir, de->d_name);
                if (!up || !dst)
                        return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                (void) mkdir(up, 0755);
                if (mkdir(dst, 0755) < 0 && errno != EEXIST) {
                        r = kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot create %s", dst);
                        break;
                }
                for (size_t i = 0; i < nmods && r >= 0; i++) {
                        _cleanup_free_ char *f = kura_asprintf("%s/%s", dir, mods[i]);
                        _cleanup_free_ char *t = kura_asprintf("%s/%s", dst, mods[i]);
                        int c = f && t ? copy_file(f, t) : -ENOMEM;
                        if (c < 0)
                                r = kura_err_errno(err, c, KURA_E_TARGET_IO, "", "cannot copy %s into the restored "
                                                   "system", mods[i]);
                }
                const char *dm[] = {"depmod", "-b", root, de->d_name, NULL};
                if (r >= 0)
                        r = run_tool(dm, KURA_E_TOOL_MISSING, "indexing the added drivers", err);
                nk++;
        }
        closedir(kd);
        if (r < 0)
                return r;
        /* Name them for the initramfs (Debian's initramfs-tools; dracut reads
         * its own config and is run with --add-drivers below). */
        _cleanup_free_ char *itd = kura_asprintf("%s/etc/initramfs-tools", root);
        _cleanup_free_ char *mf = kura_asprintf("%s/etc/initramfs-tools/modules", root);
        char names[2048] = "";
        for (size_t i = 0; i < nmods; i++) {
                char n[256];
                snprintf(n, sizeof n, "%.*s", 250, mods[i]);
                char *ko = strstr(n, ".ko");
                if (ko)
                        *ko = 0;
                size_t l = strlen(names);
                snprintf(names + l, sizeof names - l, "%s%s", l ? " " : "", n);
        }
        if (itd && mf && access(itd, F_OK) == 0) {
                FILE *f = fopen(mf, "ae");
                if (!f)
                        return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot update %s", mf);
                fprintf(f, "# added by kura bmr --add-drivers\n");
                for (const char *q = names; *q;) {
                        size_t l = strcspn(q, " ");
                        fprintf(f, "%.*s\n", (int) l, q);
                        q += l + (q[l] == ' ');
                }
                if (fclose(f) != 0)
                        return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot update %s", mf);
        }
        /* The system's own tool, in a chroot with /dev, /proc and /sys. */
        const char *binds[] = {"dev", "proc", "sys"};
        bool bound[3] = {false, false, false};
        for (int i = 0; i < 3; i++) {
                _cleanup_free_ char *t = kura_asprintf("%s/%s", root, binds[i]);
                _cleanup_free_ char *src = kura_asprintf("/%s", binds[i]);
                if (t && src) {
                        (void) mkdir(t, 0755);
                        bound[i] = mount(src, t, NULL, MS_BIND | MS_REC, NULL) == 0;
                }
        }
        _cleanup_free_ char *ui = kura_asprintf("%s/usr/sbin/update-initramfs", root);
        _cleanup_free_ char *ui2 = kura_asprintf("%s/sbin/update-initramfs", root);
        _cleanup_free_ char *dr = kura_asprintf("%s/usr/bin/dracut", root);
        _cleanup_free_ char *out = NULL;
        int rc;
        const char *tool;
        if ((ui && access(ui, X_OK) == 0) || (ui2 && access(ui2, X_OK) == 0)) {
                const char *argv[] = {"chroot", root, "update-initramfs", "-u", "-k", "all", NULL};
                tool = "update-initramfs";
                rc = kura_engine_run(argv, &out);
        } else if (dr && access(dr, X_OK) == 0) {
                const char *argv[] = {"chroot", root, "dracut", "--force", "--regenerate-all", "--add-drivers", names,
                                      NULL};
                tool = "dracut";
                rc = kura_engine_run(argv, &out);
        } else {
                tool = NULL;
                rc = -ENOENT;
        }
        for (int i = 2; i >= 0; i--)
                if (bound[i]) {
                        _cleanup_free_ char *t = kura_asprintf("%s/%s", root, binds[i]);
                        if (t)
                                (void) umount2(t, MNT_DETACH);
                }
        if (!tool)
                return kura_err(err, ENOENT, KURA_E_TOOL_MISSING,
                                "install initramfs-tools or dracut in the system before its backup, or add the drivers "
                                "by hand",
                                "the restored system has neither update-initramfs nor dracut to regenerate its "
                                "initramfs with the added drivers");
        if (rc != 0)
                return kura_err(err, EIO, KURA_E_TOOL_MISSING, "read the tool's output above",
                                "%s in the restored system failed (exit %d): %s", tool, rc, out ? out : "");
        kura_appendf(report, "  drivers: %s added for %d kernel%s, initramfs regenerated with %s\n", names, nk,
                nk == 1 ? "" : "s", tool);
        return nk;
}

/* The restored root filesystem (one with /etc and /lib/modules) among the
 * restored partitions: mounted under tmpdir for inject_drivers(). */
static int add_drivers(const KuraBmrOpts *o, DiskPlan *plans, size_t nplans, char **report, KuraErr *err) {
        _cleanup_free_ char *mnt = kura_asprintf("%s/kura-bmr-root.XXXXXX", tmpdir_of(o));
        if (!mnt || !mkdtemp(mnt))
                return kura_err_errno(err, mnt ? -errno : -ENOMEM, KURA_E_TARGET_IO, "give --tmpdir a writable directory",
                                      "cannot make a mount point in %s", tmpdir_of(o));
        int r = 0;
        bool done = false;
        for (size_t i = 0; i < nplans && !done && r >= 0; i++) {
                DiskPlan *d = &plans[i];
                for (size_t k = 0; k < d->src.nparts && !done && r >= 0; k++) {
                        const PartPlan *pp = &d->parts[k];
                        const char *fs = pp->src->fs;
                        if (!pp->vol || !(fs_ext(fs) || fs_is(fs, "xfs") || fs_is(fs, "btrfs")))
                                continue;
                        char *dev = NULL;
                        int loop = -1;
                        r = kura_partdev_attach(d->target, pp->new_start, pp->new_size, true, &dev, &loop, err);
                        if (r < 0)
                                break;
                        if (mount(dev, mnt, fs, 0, fs_is(fs, "xfs") ? "nouuid" : NULL) == 0) {
                                _cleanup_free_ char *etc = kura_asprintf("%s/etc", mnt);
                                _cleanup_free_ char *lm = kura_asprintf("%s/lib/modules", mnt);
                                if (etc && lm && access(etc, F_OK) == 0 && access(lm, F_OK) == 0) {
                                        kura_appendf(report, "  drivers: the restored system's root is %sp%u\n", d->name,
                                                pp->src->number);
                                        r = inject_drivers(mnt, o->add_drivers, report, err);
                                        done = true;
                                }
                                if (umount2(mnt, 0) < 0 && r >= 0)
                                        r = kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot unmount %s", mnt);
                        }
                        free(dev);
                        kura_partdev_release(loop);
                }
        }
        rmdir(mnt);
        if (r >= 0 && !done)
                r = kura_err(err, ENOENT, KURA_E_DISK_LAYOUT,
                             "add the drivers by hand (a root on LVM or LUKS is not searched yet)",
                             "--add-drivers: no restored filesystem holds a system (/etc and /lib/modules)");
        return r < 0 ? r : 0;
}

/* ---- BIOS -> UEFI: a new ESP with GRUB for UEFI ------------------------------ */

/* Which restored filesystem holds GRUB's configuration (/boot/grub/grub.cfg,
 * or /grub/grub.cfg on a separate /boot)?  Mounts each candidate read-only
 * at mnt in turn; root_uuid stays empty when none does. */
static void find_grub_root(DiskPlan *plans, size_t nplans, const char *mnt, char *root_uuid, size_t uuid_size,
                           char *prefix, size_t prefix_size, const DiskPlan **ret_disk, const PartPlan **ret_part) {
        root_uuid[0] = prefix[0] = 0;
        for (size_t i = 0; i < nplans && !root_uuid[0]; i++) {
                DiskPlan *d = &plans[i];
                for (size_t k = 0; k < d->src.nparts && !root_uuid[0]; k++) {
                        const PartPlan *pp = &d->parts[k];
                        const char *fs = pp->src->fs;
                        if (!pp->vol || !pp->src->fs_uuid[0] || !(fs_ext(fs) || fs_is(fs, "xfs") || fs_is(fs, "btrfs")))
                                continue;
                        char *dev = NULL;
                        int loop = -1;
                        if (kura_partdev_attach(d->target, pp->new_start, pp->new_size, false, &dev, &loop, NULL) < 0)
                                continue;
                        if (mount(dev, mnt, fs, MS_RDONLY, fs_is(fs, "xfs") ? "nouuid,norecovery" : NULL) == 0) {
                                _cleanup_free_ char *a = kura_asprintf("%s/boot/grub/grub.cfg", mnt);
                                _cleanup_free_ char *b = kura_asprintf("%s/grub/grub.cfg", mnt);
                                if (a && access(a, F_OK) == 0)
                                        snprintf(prefix, prefix_size, "/boot/grub");
                                else if (b && access(b, F_OK) == 0)
                                        snprintf(prefix, prefix_size, "/grub");
                                if (prefix[0]) {
                                        snprintf(root_uuid, uuid_size, "%s", pp->src->fs_uuid);
                                        *ret_disk = d;
                                        *ret_part = pp;
                                }
                                (void) umount2(mnt, 0);
                        }
                        free(dev);
                        kura_partdev_release(loop);
                }
        }
}

/* GRUB built for the restored system by grub-mkimage (FORMAT x86_64-efi or
 * i386-pc), its early config finding the restored /boot/grub by filesystem
 * UUID, in a scratch directory under --tmpdir (mnt: an empty mount point
 * there).  grub_build_done() removes it all. */
typedef struct GrubBuild {
        char *work, *mnt, *cfg, *img;
        char root_uuid[64], prefix[32];
        const DiskPlan *root_disk;
        const PartPlan *root_part;
} GrubBuild;

static void grub_build_done(GrubBuild *g) {
        if (g->img)
                unlink(g->img);
        if (g->cfg)
                unlink(g->cfg);
        if (g->mnt)
                rmdir(g->mnt);
        if (g->work)
                rmdir(g->work);
        free(g->img);
        free(g->cfg);
        free(g->mnt);
        free(g->work);
        memset(g, 0, sizeof *g);
}

static int grub_build(const KuraBmrOpts *o, DiskPlan *plans, size_t nplans, const char *format,
                      const char *const mods[], const char *firmware, const char *package, GrubBuild *g,
                      KuraErr *err) {
        const char *tmpd = tmpdir_of(o);
        g->work = kura_asprintf("%s/kura-bmr-grub.XXXXXX", tmpd);
        if (!g->work || !mkdtemp(g->work)) {
                int r = kura_err_errno(err, g->work ? -errno : -ENOMEM, KURA_E_TARGET_IO,
                                       "give --tmpdir a writable directory", "cannot make a scratch directory in %s",
                                       tmpd);
                free(g->work);
                g->work = NULL;
                return r;
        }
        g->mnt = kura_asprintf("%s/m", g->work);
        g->cfg = kura_asprintf("%s/early.cfg", g->work);
        g->img = kura_asprintf("%s/grub.img", g->work);
        if (!g->mnt || !g->cfg || !g->img || mkdir(g->mnt, 0700) < 0)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        find_grub_root(plans, nplans, g->mnt, g->root_uuid, sizeof g->root_uuid, g->prefix, sizeof g->prefix,
                       &g->root_disk, &g->root_part);
        if (!g->root_uuid[0])
                return kura_err(err, ENOENT, KURA_E_DISK_LAYOUT, "install GRUB by hand (grub-install in a chroot)",
                                "--reinstall-bootloader: no restored filesystem holds /boot/grub/grub.cfg");
        FILE *f = fopen(g->cfg, "we");
        if (!f)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot write %s", g->cfg);
        fprintf(f, "search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)%s\n", g->root_uuid, g->prefix);
        if (fclose(f) != 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot write %s", g->cfg);
        const char *mk[64] = {"grub-mkimage", "-O", format, "-p", g->prefix, "-c", g->cfg, "-o", g->img};
        int a = 9;
        for (int i = 0; mods[i] && a < 62; i++)
                mk[a++] = mods[i];
        mk[a] = NULL;
        char what[96];
        snprintf(what, sizeof what, "building GRUB for %s (%s)", firmware, package);
        return run_tool(mk, KURA_E_TOOL_MISSING, what, err);
}

/* GRUB for UEFI, built from this system's GRUB modules (grub-efi-amd64-bin)
 * with an early config that finds the restored /boot/grub by filesystem UUID.
 * It is not signed: Secure Boot must be off for it (the report says so). */
static const char *const efi_mods[] = {
        "part_gpt", "part_msdos", "fat", "ext2", "xfs", "btrfs", "search", "search_fs_uuid", "search_label",
        "normal", "configfile", "linux", "echo", "test", "gzio", "serial", "terminal", "terminfo", "all_video",
        "font", "gfxterm", "ls", "cat", "halt", "reboot", "minicmd", "loadenv", "sleep", "boot", NULL};

static int install_uefi(const KuraBmrOpts *o, DiskPlan *esp_disk, DiskPlan *plans, size_t nplans, char **report,
                        KuraErr *err) {
        GrubBuild g = {0};
        int r = grub_build(o, plans, nplans, "x86_64-efi", efi_mods, "UEFI", "grub-efi-amd64-bin", &g, err);
        if (r < 0)
                goto out;
        const char *img = g.img, *mnt = g.mnt, *root_uuid = g.root_uuid;
        const DiskPlan *root_disk = g.root_disk;
        const PartPlan *root_part = g.root_part;
        /* The new ESP: FAT32, the loader on the removable path and beside it. */
        char *dev = NULL;
        int loop = -1;
        r = kura_partdev_attach(esp_disk->target, esp_disk->new_esp.start, esp_disk->new_esp.size, true, &dev, &loop,
                                err);
        if (r < 0)
                goto out;
        const char *mkfs[] = {"mkfs.vfat", "-I", "-F", "32", "-n", "EFI", dev, NULL};
        const char *md[] = {"mmd", "-i", dev, "::/EFI", "::/EFI/BOOT", "::/EFI/kura", NULL};
        const char *c1[] = {"mcopy", "-i", dev, img, "::/EFI/BOOT/BOOTX64.EFI", NULL};
        const char *c2[] = {"mcopy", "-i", dev, img, "::/EFI/kura/grubx64.efi", NULL};
        r = run_tool(mkfs, KURA_E_TOOL_MISSING, "making the ESP (dosfstools)", err);
        if (r >= 0)
                r = run_tool(md, KURA_E_TOOL_MISSING, "filling the ESP (mtools)", err);
        if (r >= 0)
                r = run_tool(c1, KURA_E_TOOL_MISSING, "filling the ESP (mtools)", err);
        if (r >= 0)
                r = run_tool(c2, KURA_E_TOOL_MISSING, "filling the ESP (mtools)", err);
        KuraVolumeProbe vp;
        if (r >= 0 && kura_volume_probe(dev, &vp, NULL) >= 0)
                snprintf(esp_disk->new_esp.fs_uuid, sizeof esp_disk->new_esp.fs_uuid, "%s", vp.uuid);
        free(dev);
        kura_partdev_release(loop);
        if (r < 0)
                goto out;
        kura_appendf(report, "  %sp%u: new ESP (%s) made from %s; GRUB for UEFI installed as \\EFI\\BOOT\\BOOTX64.EFI, "
                "finding /boot/grub on UUID %s (unsigned: Secure Boot must be off)\n",
                esp_disk->name, esp_disk->new_esp.number, esp_disk->new_esp.fs_uuid, esp_disk->esp_taken, root_uuid);
        register_efi_boot(esp_disk, &esp_disk->new_esp, report);
        /* fstab stays true: the system mounts its new ESP at /boot/efi. */
        if (root_part && esp_disk->new_esp.fs_uuid[0]) {
                char *rdev = NULL;
                int rloop = -1;
                const char *fs = root_part->src->fs;
                if (kura_partdev_attach(root_disk->target, root_part->new_start, root_part->new_size, true, &rdev, &rloop,
                                        NULL) >= 0) {
                        if (mount(rdev, mnt, fs, 0, fs_is(fs, "xfs") ? "nouuid" : NULL) == 0) {
                                _cleanup_free_ char *fst = kura_asprintf("%s/etc/fstab", mnt);
                                _cleanup_free_ char *be = kura_asprintf("%s/boot/efi", mnt);
                                FILE *ff = fst && access(fst, F_OK) == 0 ? fopen(fst, "ae") : NULL;
                                if (ff) {
                                        fprintf(ff, "# the ESP made by kura bmr --reinstall-bootloader uefi\n"
                                                    "UUID=%s /boot/efi vfat umask=0077 0 1\n",
                                                esp_disk->new_esp.fs_uuid);
                                        if (fclose(ff) == 0)
                                                kura_appendf(report, "  fstab: /boot/efi on UUID=%s added\n",
                                                        esp_disk->new_esp.fs_uuid);
                                        if (be)
                                                (void) mkdir(be, 0755);
                                }
                                (void) umount2(mnt, 0);
                        }
                        free(rdev);
                        kura_partdev_release(rloop);
                }
        }
out:
        grub_build_done(&g);
        return r;
}

/* ---- UEFI -> BIOS: GRUB for BIOS in a new BIOS boot partition ----------------- */

static const char *const bios_mods[] = {
        "biosdisk", "part_gpt", "part_msdos", "ext2", "fat", "xfs", "btrfs", "linux", "normal", "search",
        "search_fs_uuid", "search_fs_file", "search_label", "configfile", "echo", "serial", "terminal", "terminfo",
        "gzio", "test", "ls", "cat", "halt", "reboot", "minicmd", "boot", "sleep", "loadenv", NULL};

/* What grub-install does for a GPT disk on BIOS, without grub-bios-setup
 * (which needs the running system's device map): core.img (GRUB i386-pc
 * with an early config that finds /boot/grub by filesystem UUID) into the
 * BIOS boot partition, its first sector's blocklist pointing at the sector
 * after it; boot.img's 440 bytes of code into the protective MBR (the
 * table stays), with core.img's LBA at 0x5c and the drive check at 0x66
 * replaced by two NOPs (some BIOSes pass a wrong drive number). */
static int install_bios(const KuraBmrOpts *o, DiskPlan *d, DiskPlan *plans, size_t nplans, char **report,
                        KuraErr *err) {
        _cleanup_free_ uint8_t *core = NULL;
        uint8_t boot[512];
        GrubBuild g = {0};
        int r = grub_build(o, plans, nplans, "i386-pc", bios_mods, "BIOS", "grub-pc-bin", &g, err);
        if (r < 0)
                goto out;
        size_t clen = 0;
        r = kio_read_file(g.img, 1U << 20, &core, &clen);
        if (r >= 0) {
                _cleanup_close_ int bfd = open(GRUB_PC_DIR "/boot.img", O_RDONLY | O_CLOEXEC);
                r = bfd < 0 ? -errno : kio_pread_full(bfd, boot, sizeof boot, 0);
                if (r < 0) {
                        r = kura_err_errno(err, r, KURA_E_TOOL_MISSING, "install grub-pc-bin",
                                           "cannot read " GRUB_PC_DIR "/boot.img");
                        goto out;
                }
        } else {
                r = kura_err_errno(err, r, KURA_E_TARGET_IO, "", "cannot read %s", g.img);
                goto out;
        }
        if (clen < 512 || clen > d->new_bios.size) {
                r = kura_err(err, ENOSPC, KURA_E_DISK_LAYOUT, "install GRUB for BIOS by hand (grub-install in a chroot)",
                             "GRUB's core.img (%zu bytes) does not fit the new BIOS boot partition (%" PRIu64 " bytes)",
                             clen, d->new_bios.size);
                goto out;
        }
        uint64_t core_lba = d->new_bios.start / 512;
        put_le64(core + 0x1f4, core_lba + 1);
        put_le64(boot + 0x5c, core_lba);
        boot[0x66] = 0x90;
        boot[0x67] = 0x90;
        {
                _cleanup_close_ int fd = open(d->target, O_WRONLY | O_CLOEXEC);
                if (fd < 0 || pwrite(fd, core, clen, (off_t) d->new_bios.start) != (ssize_t) clen ||
                    pwrite(fd, boot, 440, 0) != 440 || fsync(fd) < 0) {
                        r = kura_err_errno(err, -errno, KURA_E_TARGET_IO, "check the disk",
                                           "cannot write GRUB's boot code to %s", d->target);
                        goto out;
                }
        }
        kura_appendf(report, "  %sp%u: new BIOS boot partition (%" PRIu64 " bytes at byte %" PRIu64 ", in the gap "
                "before the first partition); GRUB for BIOS (i386-pc) installed there and in the MBR, finding "
                "%s on UUID %s\n",
                d->name, d->new_bios.number, d->new_bios.size, d->new_bios.start, g.prefix, g.root_uuid);
out:
        grub_build_done(&g);
        return r;
}

int kura_bmr_run(KuraRepo *repo, const KuraBmrOpts *o, KuraBmrResult *res, KuraErr *err) {
        memset(res, 0, sizeof *res);
        double t0 = kura_mono();
        KuraVersion *v = NULL;
        int r = kura_version_find(repo, o->version ? o->version : "latest", &v, err);
        if (r < 0)
                return r;
        json_t *disks = v->extra ? json_object_get(v->extra, "disks") : NULL;
        size_t nd = json_is_array(disks) ? json_array_size(disks) : 0;
        DiskPlan *plans = NULL;
        char **cands = NULL;
        size_t ncands = 0;
        if (nd == 0) {
                r = kura_err(err, EINVAL, KURA_E_NOT_BMR_COMPLETE,
                             "pick a version that 'kura versions' marks bmr, or restore volumes with 'kura restore'",
                             "version %.12s holds no disk layouts (made with --volume only)", v->id);
                goto out;
        }
        plans = calloc(nd, sizeof *plans);
        if (!plans) {
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                goto out;
        }
        const char *map = o->disk_map ? o->disk_map : "auto";
        bool automap = strcmp(map, "auto") == 0;
        if (automap)
                (void) auto_candidates(&cands, &ncands);
        size_t nplans = 0;
        for (size_t i = 0; i < nd; i++) {
                json_t *dj = json_array_get(disks, i);
                DiskPlan *d = &plans[nplans];
                const char *nm = json_string_value(json_object_get(dj, "name"));
                const char *sp = json_string_value(json_object_get(dj, "path"));
                const char *bv = json_string_value(json_object_get(dj, "boot_volume"));
                if (!nm || !sp) {
                        r = kura_err(err, EBADMSG, KURA_E_DAMAGED, "run 'kura check'",
                                     "version %.12s: disk %zu has no name or path", v->id, i);
                        goto out;
                }
                if (excluded(o, nm, sp))
                        continue;
                snprintf(d->name, sizeof d->name, "%s", nm);
                snprintf(d->src_path, sizeof d->src_path, "%s", sp);
                d->json = dj;
                r = kura_disk_layout_from_json(dj, &d->src, err);
                if (r < 0)
                        goto out;
                nplans++;
                d->boot_vol = bv ? find_volume(v, bv) : NULL;
        }
        if (nplans == 0) {
                r = kura_err(err, EINVAL, KURA_E_DISK_NOT_MAPPED, "leave fewer disks out", "every disk was excluded");
                goto out;
        }
        /* Every map entry must name a disk of the version. */
        if (!automap) {
                _cleanup_free_ char *m = strdup(map);
                if (!m) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                        goto out;
                }
                char *save = NULL;
                for (char *tok = strtok_r(m, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                        char *eq = strchr(tok, '=');
                        if (!eq || eq == tok || !eq[1]) {
                                r = kura_err(err, EINVAL, KURA_E_USAGE, "write --disk-map disk0=/dev/sdb,disk1=/dev/sdc",
                                             "--disk-map entry '%s' is not SRC=DST", tok);
                                goto out;
                        }
                        *eq = 0;
                        bool found = false;
                        for (size_t i = 0; i < nplans; i++)
                                if (strcmp(plans[i].name, tok) == 0 || strcmp(plans[i].src_path, tok) == 0) {
                                        plans[i].target = map + (eq + 1 - m);
                                        found = true;
                                }
                        if (!found) {
                                r = kura_err(err, ENOENT, KURA_E_DISK_NOT_MAPPED,
                                             "'kura versions --json' lists the version's disks (disk0, disk1...)",
                                             "--disk-map names '%s', which is no disk of version %.12s (or was excluded)",
                                             tok, v->id);
                                goto out;
                        }
                }
        }
        /* Targets: each mapped, distinct, free, large enough. */
        for (size_t i = 0; i < nplans; i++) {
                DiskPlan *d = &plans[i];
                if (automap) {
                        for (size_t c = 0; c < ncands && !d->target; c++) {
                                if (!cands[c] || !disk_is_empty(cands[c]))
                                        continue;
                                uint64_t sz;
                                uint32_t ss;
                                bool blk;
                                if (target_probe(cands[c], &sz, &ss, &blk, NULL) < 0 ||
                                    target_check_free(cands[c], kura_repo_path(repo), NULL) < 0)
                                        continue;
                                uint64_t need = 0;
                                for (size_t k = 0; k < d->src.nparts; k++) {
                                        char vn[48];
                                        snprintf(vn, sizeof vn, "%sp%u", d->name, d->src.parts[k].number);
                                        need += min_size_of(&d->src.parts[k], find_volume(v, vn));
                                }
                                if (sz < need)
                                        continue;
                                d->target = cands[c];
                                cands[c] = NULL; /* taken (freed with plans) */
                        }
                        if (!d->target) {
                                r = kura_err(err, ENOENT, KURA_E_DISK_NOT_MAPPED,
                                             "attach an empty disk large enough, or give --disk-map",
                                             "--disk-map auto found no empty, unmounted disk for %s (%s, %" PRIu64
                                             " bytes)",
                                             d->name, d->src_path, d->src.size);
                                goto out;
                        }
                } else if (!d->target) {
                        r = kura_err(err, ENOENT, KURA_E_DISK_NOT_MAPPED,
                                     "add it to --disk-map or leave it out with --exclude-disk",
                                     "%s (%s, %" PRIu64 " bytes) has no target in --disk-map", d->name, d->src_path,
                                     d->src.size);
                        goto out;
                }
                for (size_t k = 0; k < i; k++)
                        if (strcmp(plans[k].target, d->target) == 0) {
                                r = kura_err(err, EINVAL, KURA_E_USAGE, "map every disk to its own target",
                                             "%s and %s both map to %s", plans[k].name, d->name, d->target);
                                goto out;
                        }
                r = target_probe(d->target, &d->tgt_size, &d->tgt_ss, &d->is_blk, err);
                if (r < 0)
                        goto out;
                r = target_check_free(d->target, kura_repo_path(repo), err);
                if (r < 0)
                        goto out;
                if (o->reinstall_bootloader) {
                        const char *fw = o->reinstall_bootloader;
                        if (!strcmp(fw, "auto"))
                                fw = access("/sys/firmware/efi", F_OK) == 0 ? "uefi" : "bios";
                        bool has_esp = false, has_bios = strcmp(d->src.label, "dos") == 0;
                        for (size_t k = 0; k < d->src.nparts; k++) {
                                has_esp |= !strcmp(d->src.parts[k].role, "esp");
                                has_bios |= !strcmp(d->src.parts[k].role, "bios-boot");
                        }
                        if (!strcmp(fw, "uefi") && !has_esp && i == 0)
                                d->add_esp = true;
                        else if (!strcmp(fw, "bios") && !has_bios && i == 0) {
                                if (d->tgt_ss != 512) {
                                        r = kura_err(err, ENOTSUP, KURA_E_DISK_LAYOUT,
                                                     "restore it onto a disk with 512-byte sectors, or onto a UEFI "
                                                     "machine",
                                                     "%s: BIOS firmware cannot boot %s with %u-byte sectors; nothing "
                                                     "was written",
                                                     d->name, d->target, d->tgt_ss);
                                        goto out;
                                }
                                d->add_bios = true;
                        } else if (strcmp(fw, "uefi") && strcmp(fw, "bios")) {
                                r = kura_err(err, EINVAL, KURA_E_USAGE, "use uefi, bios or auto",
                                             "--reinstall-bootloader %s", o->reinstall_bootloader);
                                goto out;
                        }
                }
                r = plan_disk(d, v, o->grow, err);
                if (r < 0)
                        goto out;
                for (size_t k = 0; k < d->src.nparts && r >= 0; k++)
                        r = kura_disk_stack_check(o, part_json(d, &d->src.parts[k]), d->target, err);
                if (r < 0)
                        goto out;
        }
        if (o->grow) {
                bool matched = false;
                for (size_t i = 0; i < nplans; i++)
                        matched |= plans[i].grow_matched;
                if (!matched) {
                        r = kura_err(err, ENOENT, KURA_E_VOLUME_NOT_FOUND,
                                     "name a partition as 'kura versions' lists it (disk0p3), by its path at backup "
                                     "time or by its filesystem UUID",
                                     "--grow %s: no partition of version %.12s has that name, path or UUID; nothing "
                                     "was written",
                                     o->grow, v->id);
                        goto out;
                }
        }
        /* The plan, for the person at the console. */
        for (size_t i = 0; i < nplans; i++) {
                DiskPlan *d = &plans[i];
                char a[32], b[32];
                kura_format_bytes(d->src.size, a, sizeof a);
                kura_format_bytes(d->tgt_size, b, sizeof b);
                kura_appendf(&res->plan, "%s (%s, %s, %s, %u-byte sectors) -> %s (%s, %u-byte sectors): ERASED and "
                        "repartitioned\n",
                        d->name, d->src_path, a, d->src.label, d->src.sector_size, d->target, b, d->tgt_ss);
                for (size_t k = 0; k < d->src.nparts; k++) {
                        PartPlan *pp = &d->parts[k];
                        kura_format_bytes(pp->src->size, a, sizeof a);
                        kura_format_bytes(pp->new_size, b, sizeof b);
                        kura_appendf(&res->plan, "  %sp%u %-9s %-11s %s -> %s at byte %" PRIu64 ": %s\n", d->name,
                                pp->src->number, pp->src->role, pp->src->fs[0] ? pp->src->fs : "-", a, b,
                                pp->new_start, pp->action);
                }
        }
        for (size_t i = 0; i < nplans; i++) {
                /* Partitions kura adds for --reinstall-bootloader. */
                const DiskPlan *d = &plans[i];
                const KuraPartition *np = d->add_bios ? &d->new_bios : d->add_esp ? &d->new_esp : NULL;
                if (!np)
                        continue;
                const char *fw = d->add_bios ? "BIOS" : "UEFI";
                char a[32];
                kura_format_bytes(np->size, a, sizeof a);
                kura_appendf(&res->plan, "  %sp%u %-9s %-11s new %s at byte %" PRIu64 ": made for %s (%s%s), GRUB for "
                        "%s installed there\n",
                        d->name, np->number, np->role, d->add_bios ? "-" : "vfat", a, np->start, fw,
                        d->add_bios ? "in the gap before the first partition" : "from ", d->add_bios ? "" : d->esp_taken,
                        fw);
        }
        if (o->add_drivers) {
                /* The drivers are checked before the disks are touched. */
                DIR *dd = opendir(o->add_drivers);
                size_t nko = 0;
                struct dirent *de;
                while (dd && (de = readdir(dd)))
                        nko += strstr(de->d_name, ".ko") != NULL;
                if (dd)
                        closedir(dd);
                if (!dd || nko == 0) {
                        r = kura_err(err, ENOENT, KURA_E_USAGE, "give --add-drivers a directory of kernel modules (*.ko)",
                                     "--add-drivers %s: %s; nothing was written", o->add_drivers,
                                     dd ? "no kernel module in it" : "cannot open it");
                        goto out;
                }
                kura_appendf(&res->plan, "drivers: %zu kernel module(s) from %s go into the restored system's initramfs\n",
                        nko, o->add_drivers);
        }
        if (o->dry_run) {
                r = 0;
                goto out;
        }
        if (o->confirm && !o->confirm(o->userdata, res->plan)) {
                r = kura_err(err, ECANCELED, KURA_E_NOT_CONFIRMED, "run again with --yes after reading the plan",
                             "bare-metal restore not confirmed; nothing was written");
                goto out;
        }
        for (size_t i = 0; i < nplans; i++) {
                kura_appendf(&res->report, "%s -> %s\n", plans[i].name, plans[i].target);
                r = run_disk(repo, o, v, &plans[i], res, err);
                if (r < 0)
                        goto out;
        }
        if (o->add_drivers) {
                r = add_drivers(o, plans, nplans, &res->report, err);
                if (r < 0)
                        goto out;
        }
        for (size_t i = 0; i < nplans; i++)
                if (plans[i].add_esp) {
                        r = install_uefi(o, &plans[i], plans, nplans, &res->report, err);
                        if (r < 0)
                                goto out;
                }
        for (size_t i = 0; i < nplans; i++)
                if (plans[i].add_bios) {
                        r = install_bios(o, &plans[i], plans, nplans, &res->report, err);
                        if (r < 0)
                                goto out;
                }
        sync();
        r = 0;
out:
        res->duration_s = kura_mono() - t0;
        if (plans)
                for (size_t i = 0; i < nd; i++) {
                        kura_disk_layout_clear(&plans[i].src);
                        free(plans[i].dst.parts);
                        free(plans[i].parts);
                        if (automap && plans[i].target)
                                free((char *) plans[i].target);
                }
        free(plans);
        for (size_t c = 0; c < ncands; c++)
                free(cands[c]);
        free(cands);
        kura_version_free(v);
        return r;
}
