/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Restore tests ("kura verify-restore"): prove that a version would rebuild
 * its machine, without touching the machine.
 *
 * Every disk of the version is rebuilt into a scratch image file of the
 * original size in a private directory: the partition table written by
 * kura_disk_layout_write() (which works on regular files), the MBR boot code
 * and the gap before the first partition from the disk's boot-area volume,
 * and each partition restored into its own scratch file, checked there by the
 * filesystem's own checker in no-change mode, then copied into the image at
 * the partition's offset.  Nothing is ever attached to the host: no loop
 * device, no mount.  A restored copy next to the live system carries the same
 * filesystem and LVM UUIDs, which confuses btrfs, LVM and xfs on the host;
 * this is also why kura_bmr_run() (loop devices) is not used here.
 *
 * With boot, each bootable image is started in a qemu guest (TCG, no network,
 * the image attached with snapshot=on so the guest never changes it) and the
 * serial console is watched for a marker line.  The only change ever made to
 * a restored byte is optional and made on the scratch copy: " console=ttyS0"
 * appended to the kernel lines of GRUB's grub.cfg on an ext2/3/4 partition
 * (debugfs, no mount), so that a guest that logs to a graphical console
 * also talks on the serial line.
 *
 * The outcome is saved as the version's restore-test record
 * (kura_verify_record_save(), docs/format/repository.md §11).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/kcommon.h"
#include "engine-internal.h"
#include "kura/disk.h"
#include "kura/engine.h"

#define MIB (1ULL << 20)
#define BOOT_AREA_MAX (16 * MIB)
#define VERIFY_TIMEOUT_DEFAULT 300
/* Console lines that show a boot has failed for good (no need to wait for
 * the timeout): GRUB's rescue prompt, SeaBIOS or OVMF without a loader, the
 * UEFI shell, a panic, the test disks' own failure line. */
#define VERIFY_FAIL_REGEX                                                                                      \
        "grub rescue> *$|No bootable device|No bootable option|Shell> |Kernel panic - not syncing|KURA-BOOT-FAILED"

typedef struct Ctx {
        KuraRepo *repo;
        const KuraVerifyOpts *o;
        KuraVersion *v;
        char *work;               /* the private scratch directory */
        char *report;
        bool ok;
        char first_fail[600];
} Ctx;


/* A check failed: the test goes on (to report everything) but will fail. */
static void failed(Ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failed(Ctx *c, const char *fmt, ...) {
        c->ok = false;
        if (c->first_fail[0])
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->first_fail, sizeof c->first_fail, fmt, ap);
        va_end(ap);
}

void kura_verify_result_clear(KuraVerifyResult *r) {
        if (!r)
                return;
        free(r->report);
        free(r->record);
        free(r->workdir);
        memset(r, 0, sizeof *r);
}

static const char *tmpdir_of(const KuraVerifyOpts *o) {
        if (o->tmpdir)
                return o->tmpdir;
        const char *t = getenv("TMPDIR");
        return t && *t ? t : "/var/tmp";
}

static const KuraVolume *find_volume(const KuraVersion *v, const char *name) {
        for (size_t i = 0; i < v->nvolumes; i++)
                if (strcmp(v->volumes[i].name, name) == 0)
                        return &v->volumes[i];
        return NULL;
}

static bool fs_ext(const char *fs) {
        return strcmp(fs, "ext2") == 0 || strcmp(fs, "ext3") == 0 || strcmp(fs, "ext4") == 0;
}

/* The last non-empty line of a tool's output (modified in place). */
static const char *last_line(char *out) {
        if (!out)
                return "";
        size_t l = strlen(out);
        while (l && (out[l - 1] == '\n' || out[l - 1] == '\r'))
                out[--l] = 0;
        char *nl = strrchr(out, '\n');
        return nl ? nl + 1 : out;
}

static char *work_path(const Ctx *c, const char *name) {
        return kura_asprintf("%s/%s", c->work, name);
}

/* A new, empty scratch file of size bytes (sparse). */
static int scratch_create(const char *path, uint64_t size, KuraErr *err) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t) size) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO,
                                      "give --tmpdir a writable directory with room for the largest partition",
                                      "cannot create the scratch file %s", path);
        return 0;
}

static bool all_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

/* Copy the first size bytes of the file src into dst_fd at offset off.
 * Holes (SEEK_DATA/SEEK_HOLE) and all-zero blocks are skipped, and the
 * destination range is punched first, so the image stays as sparse as the
 * data allows and holds no stale bytes. */
static int copy_into(const char *src, int dst_fd, uint64_t off, uint64_t size, KuraErr *err) {
        _cleanup_close_ int fd = open(src, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot open the scratch file %s", src);
        (void) fallocate(dst_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) off, (off_t) size);
        _cleanup_free_ uint8_t *buf = malloc(MIB);
        if (!buf)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        uint64_t pos = 0;
        while (pos < size) {
                off_t d = lseek(fd, (off_t) pos, SEEK_DATA);
                if (d < 0 && errno == ENXIO)
                        break; /* only a hole is left */
                if (d < 0)
                        d = (off_t) pos; /* no SEEK_DATA here: copy all */
                off_t h = lseek(fd, d, SEEK_HOLE);
                if (h < 0)
                        h = (off_t) size;
                uint64_t end = KURA_MIN((uint64_t) h, size);
                for (uint64_t p = (uint64_t) d; p < end;) {
                        size_t want = (size_t) KURA_MIN(end - p, (uint64_t) MIB);
                        ssize_t k = pread(fd, buf, want, (off_t) p);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0)
                                return kura_err_errno(err, k < 0 ? -errno : -EIO, KURA_E_TARGET_IO, "",
                                                      "cannot read the scratch file %s", src);
                        if (!all_zero(buf, (size_t) k)) {
                                size_t w = 0;
                                while (w < (size_t) k) {
                                        ssize_t x = pwrite(dst_fd, buf + w, (size_t) k - w, (off_t) (off + p + w));
                                        if (x < 0 && errno == EINTR)
                                                continue;
                                        if (x <= 0)
                                                return kura_err_errno(err, x < 0 ? -errno : -EIO, KURA_E_TARGET_IO,
                                                                      "give --tmpdir a directory with more room",
                                                                      "cannot write the disk image");
                                        w += (size_t) x;
                                }
                        }
                        p += (uint64_t) k;
                }
                pos = end;
        }
        return 0;
}

/* Restore one volume of the version into the file path.  A damaged version
 * is a test result (returns 1 with *why), anything else an error. */
static int restore_vol(Ctx *c, const char *vol, const char *path, uint64_t *ret_bytes, char *why, size_t whylen,
                       KuraErr *err) {
        KuraRestoreOpts ro = {.version = c->v->id,
                              .volume = vol,
                              .target = path,
                              .threads = c->o->threads,
                              .progress = c->o->progress,
                              .userdata = c->o->progress_userdata};
        KuraRestoreResult res = {0};
        KuraErr lerr = {0};
        int r = kura_restore_run(c->repo, &ro, &res, &lerr);
        *ret_bytes = res.bytes_written + res.bytes_zeroed;
        kura_restore_result_clear(&res);
        if (r >= 0)
                return 0;
        if (lerr.code && strcmp(lerr.code, KURA_E_DAMAGED) == 0) {
                snprintf(why, whylen, "%s: %.600s", lerr.code, lerr.message);
                return 1;
        }
        if (err && !err->code)
                *err = lerr;
        return r;
}

/* Check a restored filesystem image with its own checker, changing nothing.
 * Sets "check" and "result" in pj; returns false when the checker found
 * errors. */
static bool fs_check(const char *fs, const char *path, json_t *pj, char *note, size_t notelen) {
        const char *argv[8] = {NULL};
        if (fs_ext(fs))
                argv[0] = "e2fsck", argv[1] = "-fn", argv[2] = path;
        else if (strcmp(fs, "xfs") == 0)
                argv[0] = "xfs_repair", argv[1] = "-n", argv[2] = "-f", argv[3] = path;
        else if (strcmp(fs, "btrfs") == 0)
                argv[0] = "btrfs", argv[1] = "check", argv[2] = "--readonly", argv[3] = path;
        else if (strcmp(fs, "vfat") == 0)
                argv[0] = "fsck.vfat", argv[1] = "-n", argv[2] = path;
        if (!argv[0]) {
                snprintf(note, notelen, "not checked (%s%s)", fs[0] ? "no checker for " : "no filesystem",
                         fs[0] ? fs : "");
                json_object_set_new(pj, "check", json_null());
                json_object_set_new(pj, "result", json_string(note));
                return true;
        }
        char cmd[64] = "";
        for (int i = 0; argv[i] && argv[i] != path; i++)
                snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "%s%s", i ? " " : "", argv[i]);
        json_object_set_new(pj, "check", json_string(cmd));
        _cleanup_free_ char *out = NULL;
        int r = kura_engine_run(argv, &out);
        if (r == -ENOENT) {
                snprintf(note, notelen, "not checked (%s is not installed)", argv[0]);
                json_object_set_new(pj, "result", json_string(note));
                return true;
        }
        if (r == 0) {
                snprintf(note, notelen, "%s: clean", cmd);
                json_object_set_new(pj, "result", json_string("clean"));
                return true;
        }
        snprintf(note, notelen, "%s exited with %d: %s", cmd, r, last_line(out));
        json_object_set_new(pj, "result", json_string(note));
        return false;
}

/* With --boot: make the guest's kernel talk on the serial line.  On an
 * ext2/3/4 scratch copy holding GRUB's grub.cfg (/boot/grub, or /grub on a
 * separate /boot), append " console=ttyS0" to every linux line that has no
 * console=ttyS0 yet.  debugfs edits the image file: nothing is mounted.
 * Returns a note for the report, or NULL when there is no grub.cfg. */
static char *console_edit(Ctx *c, const char *img, const char *vol) {
        static const char *const dirs[] = {"/boot/grub", "/grub"};
        _cleanup_free_ char *orig = work_path(c, "grub.cfg.orig"), *mod = work_path(c, "grub.cfg.new"),
                            *cmds = work_path(c, "debugfs.cmds");
        if (!orig || !mod || !cmds)
                return NULL;
        for (size_t d = 0; d < ELEMENTSOF(dirs); d++) {
                unlink(orig);
                _cleanup_free_ char *req = kura_asprintf("dump %s/grub.cfg %s", dirs[d], orig);
                const char *dump[] = {"debugfs", "-R", req, img, NULL};
                if (!req || kura_engine_run(dump, NULL) != 0)
                        continue;
                struct stat st;
                if (stat(orig, &st) < 0 || st.st_size <= 0 || st.st_size > (off_t) (4 * MIB))
                        continue;
                FILE *in = fopen(orig, "re"), *outf = fopen(mod, "we");
                if (!in || !outf) {
                        if (in)
                                fclose(in);
                        if (outf)
                                fclose(outf);
                        return kura_asprintf("%s: %s/grub.cfg found but could not be edited", vol, dirs[d]);
                }
                char *line = NULL;
                size_t cap = 0;
                ssize_t k;
                unsigned changed = 0, lines = 0;
                while ((k = getline(&line, &cap, in)) > 0) {
                        bool nl = line[k - 1] == '\n';
                        if (nl)
                                line[--k] = 0;
                        const char *p = line + strspn(line, " \t");
                        bool is_linux = (!strncmp(p, "linux", 5) && (p[5] == ' ' || p[5] == '\t')) ||
                                        (!strncmp(p, "linuxefi", 8) && (p[8] == ' ' || p[8] == '\t')) ||
                                        (!strncmp(p, "linux16", 7) && (p[7] == ' ' || p[7] == '\t'));
                        if (is_linux) {
                                lines++;
                                if (!strstr(p, "console=ttyS0")) {
                                        fprintf(outf, "%s console=ttyS0%s", line, nl ? "\n" : "");
                                        changed++;
                                        continue;
                                }
                        }
                        fprintf(outf, "%s%s", line, nl ? "\n" : "");
                }
                free(line);
                fclose(in);
                bool wok = fclose(outf) == 0;
                unlink(orig);
                if (!wok)
                        return kura_asprintf("%s: %s/grub.cfg could not be edited", vol, dirs[d]);
                if (changed == 0) {
                        unlink(mod);
                        return kura_asprintf("%s: %s/grub.cfg: %u linux line%s already with console=ttyS0, not "
                                             "changed",
                                             vol, dirs[d], lines, lines == 1 ? "" : "s");
                }
                FILE *cf = fopen(cmds, "we");
                if (!cf)
                        return kura_asprintf("%s: could not write the debugfs commands", vol);
                fprintf(cf, "cd %s\nrm grub.cfg\nwrite %s grub.cfg\n", dirs[d], mod);
                fclose(cf);
                const char *wr[] = {"debugfs", "-w", "-f", cmds, img, NULL};
                _cleanup_free_ char *out = NULL;
                int r = kura_engine_run(wr, &out);
                unlink(cmds);
                unlink(mod);
                if (r != 0)
                        return kura_asprintf("%s: debugfs could not rewrite %s/grub.cfg (%d): %s", vol, dirs[d], r,
                                             last_line(out));
                return kura_asprintf("%s: appended console=ttyS0 to %u linux line%s of %s/grub.cfg (scratch copy "
                                     "only, the repository is unchanged)",
                                     vol, changed, changed == 1 ? "" : "s", dirs[d]);
        }
        return NULL;
}

/* ---- one disk ---------------------------------------------------------------- */

typedef struct DiskRun {
        char name[32];
        char *img;
        KuraDiskLayout l;
        bool ok;               /* restored and checked without failure */
        bool has_esp, bootable;
        char *console_note;    /* what console_edit did, if anything */
} DiskRun;

static int boot_area_load(Ctx *c, const KuraVolume *bv, uint8_t **ret, json_t *dj, KuraErr *err) {
        *ret = NULL;
        if (bv->size > BOOT_AREA_MAX) {
                json_object_set_new(dj, "boot_area", json_string("damaged: larger than 16 MiB"));
                failed(c, "%s: the boot area is %" PRIu64 " bytes (at most 16 MiB expected)", bv->name, bv->size);
                return 0;
        }
        _cleanup_free_ char *p = kura_asprintf("%s/%s.raw", c->work, bv->name);
        if (!p)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        int r = scratch_create(p, 0, err);
        if (r < 0)
                return r;
        char why[700] = "";
        uint64_t bytes = 0;
        r = restore_vol(c, bv->name, p, &bytes, why, sizeof why, err);
        if (r < 0) {
                unlink(p);
                return r;
        }
        if (r > 0) {
                unlink(p);
                json_object_set_new(dj, "boot_area", json_string(why));
                kura_appendf(&c->report, "  %s: boot area NOT restored: %s\n", bv->name, why);
                failed(c, "%s: %s", bv->name, why);
                return 0;
        }
        uint8_t *buf = calloc(1, bv->size ? bv->size : 1);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (!buf || fd < 0 || pread(fd, buf, bv->size, 0) != (ssize_t) bv->size) {
                free(buf);
                unlink(p);
                return kura_err_errno(err, fd < 0 ? -errno : -EIO, KURA_E_TARGET_IO, "",
                                      "cannot read back the boot area %s", p);
        }
        unlink(p);
        json_object_set_new(dj, "boot_area", json_string("restored"));
        *ret = buf;
        return 0;
}

static int run_partition(Ctx *c, DiskRun *d, const KuraPartition *p, int img_fd, json_t *parts, KuraErr *err) {
        char vn[48], note[800] = "";
        snprintf(vn, sizeof vn, "%sp%u", d->name, p->number);
        const KuraVolume *vol = find_volume(c->v, vn);
        json_t *pj = json_pack("{s:I, s:s, s:s, s:I, s:I}", "number", (json_int_t) p->number, "role", p->role, "fs",
                               p->fs, "start", (json_int_t) p->start, "size", (json_int_t) p->size);
        if (!pj || json_array_append_new(parts, pj) < 0)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        json_object_set_new(pj, "volume", vol ? json_string(vn) : json_null());
        bool swap = strcmp(p->role, "swap") == 0;
        if (!vol && !swap) {
                json_object_set_new(pj, "ok", json_true());
                json_object_set_new(pj, "result", json_string("table only (not backed up)"));
                kura_appendf(&c->report, "  %s %-9s table only\n", vn, p->role);
                return 0;
        }
        _cleanup_free_ char *scratch = kura_asprintf("%s/%s.part", c->work, vn);
        if (!scratch)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        int r = scratch_create(scratch, p->size, err);
        if (r < 0)
                return r;
        bool ok = true;
        if (swap) {
                const char *argv[10] = {"mkswap", "-f"};
                int a = 2;
                if (p->fs_uuid[0])
                        argv[a++] = "-U", argv[a++] = p->fs_uuid;
                if (p->fs_label[0])
                        argv[a++] = "-L", argv[a++] = p->fs_label;
                argv[a++] = scratch;
                argv[a] = NULL;
                _cleanup_free_ char *out = NULL;
                r = kura_engine_run(argv, &out);
                if (r == 0)
                        snprintf(note, sizeof note, "swap re-made with UUID %s", p->fs_uuid[0] ? p->fs_uuid : "(new)");
                else
                        snprintf(note, sizeof note, "swap not re-made (%s)",
                                 r == -ENOENT ? "mkswap is not installed" : last_line(out));
                json_object_set_new(pj, "result", json_string(note));
                r = 0; /* swap holds nothing to verify */
        } else if (vol->size != p->size) {
                ok = false;
                snprintf(note, sizeof note, "volume %s holds %" PRIu64 " bytes, the partition %" PRIu64, vn,
                         vol->size, p->size);
                json_object_set_new(pj, "result", json_string(note));
                failed(c, "%s", note);
        } else {
                uint64_t bytes = 0;
                char why[700] = "";
                double t0 = kura_mono();
                r = restore_vol(c, vn, scratch, &bytes, why, sizeof why, err);
                if (r < 0)
                        goto out;
                json_object_set_new(pj, "restored", json_boolean(r == 0));
                json_object_set_new(pj, "restore_seconds", json_real(kura_mono() - t0));
                if (r > 0) {
                        ok = false;
                        snprintf(note, sizeof note, "NOT restored: %s", why);
                        json_object_set_new(pj, "result", json_string(why));
                        failed(c, "%s: %s", vn, why);
                        r = 0;
                } else {
                        ok = fs_check(p->fs, scratch, pj, note, sizeof note);
                        if (!ok)
                                failed(c, "%s (%s): %s", vn, p->fs, note);
                        if (ok && c->o->boot && fs_ext(p->fs)) {
                                char *cn = console_edit(c, scratch, vn);
                                if (cn) {
                                        json_object_set_new(pj, "console_edit", json_string(cn));
                                        if (!d->console_note)
                                                d->console_note = cn;
                                        else
                                                free(cn);
                                }
                        }
                }
        }
        if (r >= 0 && ok)
                r = copy_into(scratch, img_fd, p->start, p->size, err);
        if (r >= 0) {
                json_object_set_new(pj, "ok", json_boolean(ok));
                kura_appendf(&c->report, "  %s %-9s %-6s %s\n", vn, p->role, p->fs[0] ? p->fs : "-", note);
                if (!ok)
                        d->ok = false;
        }
out:
        if (!c->o->keep || r < 0)
                unlink(scratch);
        return r;
}

static int run_disk(Ctx *c, json_t *dsrc, DiskRun *d, json_t *disks_out, KuraErr *err) {
        const char *nm = json_string_value(json_object_get(dsrc, "name"));
        const char *sp = json_string_value(json_object_get(dsrc, "path"));
        const char *bvn = json_string_value(json_object_get(dsrc, "boot_volume"));
        if (!nm || !sp || strlen(nm) >= sizeof d->name || strchr(nm, '/') || nm[0] == '.')
                return kura_err(err, EBADMSG, KURA_E_DAMAGED, "run 'kura check'",
                                "version %.12s: a disk has no usable name or path", c->v->id);
        snprintf(d->name, sizeof d->name, "%s", nm);
        d->ok = true;
        int r = kura_disk_layout_from_json(dsrc, &d->l, err);
        if (r < 0)
                return r;
        json_t *dj = json_pack("{s:s, s:s, s:I, s:s, s:I}", "name", nm, "path", sp, "size", (json_int_t) d->l.size,
                               "label", d->l.label, "sector_size", (json_int_t) d->l.sector_size);
        json_t *parts = json_array();
        if (!dj || !parts) {
                json_decref(dj);
                json_decref(parts);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        if (json_array_append_new(disks_out, dj) < 0) { /* dj is released by jansson */
                json_decref(parts);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        }
        json_object_set_new(dj, "partitions", parts);
        char sz[32];
        kura_format_bytes(d->l.size, sz, sizeof sz);
        kura_appendf(&c->report, "%s (%s, %s, %s, %u-byte sectors):\n", nm, sp, sz, d->l.label, d->l.sector_size);

        d->img = kura_asprintf("%s/%s.img", c->work, nm);
        if (!d->img)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        r = scratch_create(d->img, d->l.size, err);
        if (r < 0)
                return r;
        json_object_set_new(dj, "image", c->o->keep ? json_string(d->img) : json_null());

        const KuraVolume *bv = bvn ? find_volume(c->v, bvn) : NULL;
        _cleanup_free_ uint8_t *boot = NULL;
        if (bv) {
                r = boot_area_load(c, bv, &boot, dj, err);
                if (r < 0)
                        return r;
                if (!boot)
                        d->ok = false;
        } else
                json_object_set_new(dj, "boot_area", json_string("not backed up"));

        /* The table, as bmr writes it onto a disk of the same size. */
        KuraDiskLayout dst = d->l;
        dst.last_usable = 0; /* libfdisk computes it for the target */
        r = kura_disk_layout_write(d->img, d->l.sector_size, &dst, boot && bv->size >= 440 ? boot : NULL, err);
        if (r < 0) {
                /* The layout comes from the version: a table that cannot be written is a failed test. */
                d->ok = false;
                json_object_set_new(dj, "table", json_string(err && err->code ? err->message : "cannot be written"));
                failed(c, "%s: the partition table cannot be written: %s", nm,
                       err && err->code ? err->message : "?");
                kura_appendf(&c->report, "  partition table NOT written: %s\n", err && err->code ? err->message : "?");
                if (err)
                        kura_err_clear(err);
                return 0;
        }
        json_object_set_new(dj, "table", json_string("written"));
        _cleanup_close_ int fd = open(d->img, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot open the disk image %s", d->img);
        /* The gap after the table and before the first partition (GRUB's
         * core.img on an MBR disk), as kura bmr writes it. */
        if (boot) {
                int64_t len = kura_boot_gap_write(fd, &d->l, d->l.nparts ? d->l.parts[0].start : UINT64_MAX, boot,
                                                  bv->size);
                if (len < 0)
                        return kura_err_errno(err, (int) len, KURA_E_TARGET_IO, "",
                                              "cannot write the boot area into %s", d->img);
                if (len > 0)
                        kura_appendf(&c->report,
                                     "  boot code and %" PRId64 " bytes before the first partition restored\n", len);
        }
        d->bootable = boot && bv->size >= 440 && !all_zero(boot, 440);
        for (size_t i = 0; i < d->l.nparts; i++) {
                const KuraPartition *p = &d->l.parts[i];
                if (strcmp(p->role, "esp") == 0)
                        d->has_esp = d->bootable = true;
                if (strcmp(p->role, "bios-boot") == 0)
                        d->bootable = true;
                r = run_partition(c, d, p, fd, parts, err);
                if (r < 0)
                        return r;
        }
        if (fsync(fd) < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot write the disk image %s", d->img);
        json_object_set_new(dj, "ok", json_boolean(d->ok));
        return 0;
}

/* ---- booting -------------------------------------------------------------------- */

/* qemu's option syntax: a comma in a value is written twice. */
static char *qemu_escape(const char *s) {
        size_t n = strlen(s), k = 0;
        char *o = malloc(2 * n + 1);
        if (!o)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                o[k++] = s[i];
                if (s[i] == ',')
                        o[k++] = ',';
        }
        o[k] = 0;
        return o;
}

static bool in_path(const char *prog) {
        const char *path = getenv("PATH");
        _cleanup_free_ char *dup = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
        char *save = NULL;
        for (char *dir = dup ? strtok_r(dup, ":", &save) : NULL; dir; dir = strtok_r(NULL, ":", &save)) {
                _cleanup_free_ char *p = kura_asprintf("%s/%s", dir, prog);
                if (p && access(p, X_OK) == 0)
                        return true;
        }
        return false;
}

/* One guest at a time on the machine, as tests/vm/boot-disk.sh does: the
 * lock is held until qemu is gone.  Waits as long as the other guests run. */
static int vm_lock(const KuraVerifyOpts *o, int *ret_fd, KuraErr *err) {
        const char *dir = o->vm_lock_dir;
        if (!dir) {
                const char *e = getenv("KURA_VM_CACHE");
                dir = e && *e ? e : "/var/cache/kura-vm";
        }
        (void) mkdir(dir, 0755);
        _cleanup_free_ char *p = kura_asprintf("%s/.boot.lock", dir);
        int fd = p ? open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644) : -1;
        if (fd < 0)
                return kura_err_errno(err, p ? -errno : -ENOMEM, KURA_E_TARGET_IO,
                                      "set KURA_VM_CACHE to a writable directory", "cannot open the guest lock %s",
                                      p ? p : dir);
        /* Blocking: a waiter queued in the kernel is served when the lock is
         * released, where polling would starve behind a series of boots. */
        while (flock(fd, LOCK_EX) < 0) {
                if (errno != EINTR) {
                        int e = -errno;
                        close(fd);
                        return kura_err_errno(err, e, KURA_E_TARGET_IO, "", "cannot lock %s", p);
                }
        }
        *ret_fd = fd;
        return 0;
}

typedef struct Console {
        int fd;
        char line[4096];
        size_t len;
        char matched[256];
        bool ok, bad;
        char tail[8][160];    /* the last lines, for the report */
        unsigned ntail;
} Console;

static void console_line(Console *cs, const regex_t *marker, const regex_t *fail) {
        cs->line[cs->len] = 0;
        size_t n = cs->len;
        while (n && (cs->line[n - 1] == '\r'))
                cs->line[--n] = 0;
        /* Strip the other carriage returns and the terminal escape
         * sequences (ESC [ ... letter) of firmware output, for matching
         * and for the report. */
        char *w = cs->line;
        for (char *r = cs->line; *r; r++) {
                if (*r == '\r')
                        continue;
                if (*r == 0x1b && r[1] == '[') {
                        r += 2;
                        while (*r && !((*r >= 'A' && *r <= 'Z') || (*r >= 'a' && *r <= 'z')))
                                r++;
                        if (!*r)
                                break;
                        continue;
                }
                *w++ = *r;
        }
        *w = 0;
        if (cs->line[0]) {
                snprintf(cs->tail[cs->ntail % 8], sizeof cs->tail[0], "%.159s", cs->line);
                cs->ntail++;
        }
        if (!cs->ok && !cs->bad && regexec(marker, cs->line, 0, NULL, 0) == 0) {
                cs->ok = true;
                snprintf(cs->matched, sizeof cs->matched, "%.255s", cs->line);
        } else if (!cs->ok && !cs->bad && regexec(fail, cs->line, 0, NULL, 0) == 0) {
                cs->bad = true;
                snprintf(cs->matched, sizeof cs->matched, "%.255s", cs->line);
        }
        cs->len = 0;
}

/* Read what the guest printed since the last call.  With final, a last line
 * without a newline counts too (e.g. a "login: " prompt). */
static void console_poll(Console *cs, const regex_t *marker, const regex_t *fail, bool final) {
        char buf[4096];
        ssize_t k;
        while ((k = read(cs->fd, buf, sizeof buf)) > 0)
                for (ssize_t i = 0; i < k; i++) {
                        if (buf[i] == '\n' || cs->len == sizeof cs->line - 1) {
                                console_line(cs, marker, fail);
                                if (buf[i] == '\n')
                                        continue;
                        }
                        cs->line[cs->len++] = buf[i];
                }
        /* A prompt ("login: ") waits without a newline: match the partial
         * line as it is, without consuming it. */
        if (cs->len && !cs->ok && !cs->bad) {
                char tmp[sizeof cs->line];
                size_t k2 = 0;
                for (size_t i = 0; i < cs->len; i++) {
                        if (cs->line[i] == 0x1b && i + 1 < cs->len && cs->line[i + 1] == '[') {
                                /* ESC [ ... letter: a terminal control, not text */
                                for (i += 2; i < cs->len; i++)
                                        if ((cs->line[i] >= 'A' && cs->line[i] <= 'Z') ||
                                            (cs->line[i] >= 'a' && cs->line[i] <= 'z'))
                                                break;
                                continue;
                        }
                        if (cs->line[i] != '\r')
                                tmp[k2++] = cs->line[i];
                }
                tmp[k2] = 0;
                if (regexec(marker, tmp, 0, NULL, 0) == 0) {
                        cs->ok = true;
                        snprintf(cs->matched, sizeof cs->matched, "%.255s", tmp);
                } else if (regexec(fail, tmp, 0, NULL, 0) == 0) {
                        /* e.g. the UEFI shell's prompt, drawn with cursor moves and no newline */
                        cs->bad = true;
                        snprintf(cs->matched, sizeof cs->matched, "%.255s", tmp + (k2 > 255 ? k2 - 255 : 0));
                } else if (final)
                        console_line(cs, marker, fail);
        }
}

/* Start the guest (holding the one-guest-at-a-time lock), watch its
 * console until the marker, a failure line, its end or the timeout, and
 * record the outcome in boots. */
static int run_guest(Ctx *c, DiskRun *d, const char *fw, const char *const *argv, const char *log, const char *qout,
                     const regex_t *marker, const regex_t *fail, json_t *boots, KuraErr *err) {
        const KuraVerifyOpts *o = c->o;
        int lockfd = -1;
        int r = vm_lock(o, &lockfd, err);
        if (r < 0)
                return r;
        _cleanup_close_ int lk = lockfd; /* the boot lock, held until return */
        (void) lk;
        Console cs = {.fd = -1};
        int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (logfd >= 0)
                close(logfd);
        cs.fd = open(log, O_RDONLY | O_CLOEXEC);
        if (cs.fd < 0)
                return kura_err_errno(err, -errno, KURA_E_TARGET_IO, "", "cannot create the console log %s", log);
        double t0 = kura_mono();
        pid_t pid = fork();
        if (pid < 0) {
                r = kura_err_errno(err, -errno, KURA_E_INTERNAL, "", "cannot start qemu");
                close(cs.fd);
                return r;
        }
        if (pid == 0) {
                /* qemu never outlives kura (killed kura: no orphan guest). */
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int nul = open("/dev/null", O_RDONLY);
                int of = open(qout, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                if (nul >= 0)
                        dup2(nul, 0);
                if (of >= 0) {
                        dup2(of, 1);
                        dup2(of, 2);
                }
                execvp(argv[0], (char *const *) argv);
                _exit(127);
        }
        unsigned timeout = o->timeout_s ? o->timeout_s : VERIFY_TIMEOUT_DEFAULT;
        int status = 0;
        bool exited = false, timed_out = false;
        for (;;) {
                console_poll(&cs, marker, fail, false);
                if (cs.ok || cs.bad)
                        break;
                pid_t w = waitpid(pid, &status, WNOHANG);
                if (w == pid) {
                        exited = true;
                        console_poll(&cs, marker, fail, true);
                        break;
                }
                if (kura_mono() - t0 > timeout) {
                        timed_out = true;
                        break;
                }
                usleep(250000);
        }
        double secs = kura_mono() - t0;
        if (!exited) {
                kill(pid, SIGKILL);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                        ;
        }
        close(cs.fd);
        if (exited && WIFEXITED(status) && WEXITSTATUS(status) == 127 && !cs.ok)
                return kura_err(err, ENOENT, KURA_E_TOOL_MISSING, "install qemu-system-x86",
                                "qemu-system-x86_64 could not be started (see %s)", qout);
        char why[400];
        if (cs.ok)
                snprintf(why, sizeof why, "marker seen after %.1f s: %s", secs, cs.matched);
        else if (cs.bad)
                snprintf(why, sizeof why, "the boot failed after %.1f s: %s", secs, cs.matched);
        else if (timed_out)
                snprintf(why, sizeof why, "no console line matched /%s/ within %u s",
                         o->boot_marker ? o->boot_marker : KURA_VERIFY_MARKER_DEFAULT, timeout);
        else
                snprintf(why, sizeof why, "the guest stopped after %.1f s without printing the marker", secs);
        json_t *bj = json_pack("{s:s, s:s, s:b, s:f, s:s}", "disk", d->name, "firmware", fw, "ok", (int) cs.ok,
                               "seconds", secs, "result", why);
        if (!bj || json_array_append_new(boots, bj) < 0)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
        if (o->keep)
                json_object_set_new(bj, "console_log", json_string(log));
        kura_appendf(&c->report, "boot %s (%s, TCG, no network): %s\n", d->name, fw, why);
        if (!cs.ok) {
                failed(c, "%s did not boot (%s): %s", d->name, fw, why);
                unsigned first = cs.ntail > 8 ? cs.ntail - 8 : 0;
                for (unsigned i = first; i < cs.ntail; i++)
                        kura_appendf(&c->report, "  | %s\n", cs.tail[i % 8]);
        }
        return 0;
}

static int boot_one(Ctx *c, DiskRun *disks, size_t nd, size_t which, const regex_t *marker, json_t *boots,
                    KuraErr *err) {
        const KuraVerifyOpts *o = c->o;
        DiskRun *d = &disks[which];
        const char *fw = o->firmware && strcmp(o->firmware, "auto") != 0 ? o->firmware
                                                                           : (d->has_esp ? "uefi" : "bios");
        const char *ovmf = getenv("KURA_VM_OVMF");
        if (!ovmf || !*ovmf)
                ovmf = "/usr/share/ovmf/OVMF.fd";
        if (strcmp(fw, "uefi") == 0 && access(ovmf, R_OK) < 0)
                return kura_err(err, ENOENT, KURA_E_TOOL_MISSING, "install the ovmf package (apt-get install ovmf)",
                                "UEFI firmware %s is missing", ovmf);
        regex_t fail;
        if (regcomp(&fail, VERIFY_FAIL_REGEX, REG_EXTENDED | REG_NOSUB) != 0)
                return kura_err(err, EINVAL, KURA_E_INTERNAL, "report this bug", "bad built-in regex");
        _cleanup_free_ char *log = kura_asprintf("%s/%s-console.log", c->work, d->name);
        _cleanup_free_ char *qout = kura_asprintf("%s/%s-qemu.out", c->work, d->name);
        _cleanup_free_ char *serial = log ? kura_asprintf("file:%s", log) : NULL;
        char *drives[16] = {NULL};
        const char *argv[64] = {"qemu-system-x86_64", "-accel", "tcg", "-smp", "1", "-m", "512", "-nodefaults",
                                "-display", "none", "-vga", "none", "-nic", "none", "-no-reboot", "-serial", serial};
        int a = 17, r = 0;
        if (strcmp(fw, "uefi") == 0)
                argv[a++] = "-bios", argv[a++] = ovmf;
        /* The disk to boot first, then the version's other disks (a root on
         * a second disk), each read-only through snapshot=on. */
        size_t ndr = 0;
        for (size_t k = 0; k < nd && ndr < ELEMENTSOF(drives); k++) {
                size_t i = k == 0 ? which : (k <= which ? k - 1 : k);
                if (!disks[i].img)
                        continue;
                _cleanup_free_ char *esc = qemu_escape(disks[i].img);
                drives[ndr] = esc ? kura_asprintf("file=%s,format=raw,snapshot=on,if=virtio", esc) : NULL;
                if (!drives[ndr]) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                        goto out;
                }
                argv[a++] = "-drive", argv[a++] = drives[ndr++];
        }
        argv[a] = NULL;
        if (!log || !qout || !serial) {
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                goto out;
        }
        r = run_guest(c, d, fw, argv, log, qout, marker, &fail, boots, err);
out:
        regfree(&fail);
        for (size_t i = 0; i < ELEMENTSOF(drives); i++)
                free(drives[i]);
        return r;
}

/* ---- the job ------------------------------------------------------------------ */

static void remove_workdir(const char *dir) {
        DIR *d = opendir(dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d)))
                        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                                (void) unlinkat(dirfd(d), de->d_name, 0);
                closedir(d);
        }
        (void) rmdir(dir);
}

int kura_verify_restore_run(KuraRepo *repo, const KuraVerifyOpts *o, KuraVerifyResult *res, KuraErr *err) {
        memset(res, 0, sizeof *res);
        double t0 = kura_mono();
        Ctx c = {.repo = repo, .o = o, .ok = true};
        DiskRun *disks = NULL;
        size_t nd = 0;
        json_t *rec = NULL;
        regex_t marker;
        bool have_marker = false;
        int r = 0;

        if (o->firmware && strcmp(o->firmware, "auto") && strcmp(o->firmware, "bios") && strcmp(o->firmware, "uefi"))
                return kura_err(err, EINVAL, KURA_E_USAGE, "use --firmware bios, uefi or auto",
                                "unknown firmware '%s'", o->firmware);
        if (o->boot) {
                const char *m = o->boot_marker ? o->boot_marker : KURA_VERIFY_MARKER_DEFAULT;
                if (regcomp(&marker, m, REG_EXTENDED | REG_NOSUB) != 0)
                        return kura_err(err, EINVAL, KURA_E_USAGE, "give a POSIX extended regular expression",
                                        "--boot-marker '%s' is not a valid regular expression", m);
                have_marker = true;
                if (!in_path("qemu-system-x86_64")) {
                        r = kura_err(err, ENOENT, KURA_E_TOOL_MISSING, "install qemu-system-x86 (apt-get install "
                                                                       "qemu-system-x86), or run without --boot",
                                     "--boot needs qemu-system-x86_64, which is not installed");
                        goto out;
                }
        }
        r = kura_version_find(repo, o->version ? o->version : "latest", &c.v, err);
        if (r < 0)
                goto out;
        snprintf(res->version_id, sizeof res->version_id, "%s", c.v->id);
        json_t *dsrc = c.v->extra ? json_object_get(c.v->extra, "disks") : NULL;
        size_t ndsrc = json_is_array(dsrc) ? json_array_size(dsrc) : 0;
        if (ndsrc == 0) {
                r = kura_err(err, EINVAL, KURA_E_NOT_BMR_COMPLETE,
                             "test a version that 'kura versions' marks bmr (made with --disk or --all-critical)",
                             "version %.12s holds no disk layouts: there is no machine to rebuild", c.v->id);
                goto out;
        }
        c.work = kura_asprintf("%s/kura-verify-%.12s.XXXXXX", tmpdir_of(o), c.v->id);
        if (!c.work || !mkdtemp(c.work)) {
                r = kura_err_errno(err, c.work ? -errno : -ENOMEM, KURA_E_TARGET_IO,
                                   "give --tmpdir a writable directory with room for the disks (sparse files)",
                                   "cannot make a scratch directory in %s", tmpdir_of(o));
                free(c.work);
                c.work = NULL;
                goto out;
        }
        disks = calloc(ndsrc, sizeof *disks);
        rec = json_object();
        json_t *jdisks = json_array(), *boots = json_array();
        if (!disks || !rec || !jdisks || !boots) {
                json_decref(jdisks);
                json_decref(boots);
                r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                goto out;
        }
        json_object_set_new(rec, "disks", jdisks);
        for (size_t i = 0; i < ndsrc; i++) {
                nd++;
                r = run_disk(&c, json_array_get(dsrc, i), &disks[i], jdisks, err);
                if (r < 0) {
                        json_decref(boots);
                        goto out;
                }
                if (!disks[i].ok)
                        kura_appendf(&c.report, "  %s: FAILED\n", disks[i].name);
        }
        if (o->boot) {
                json_object_set_new(rec, "boot", boots);
                bool any = false;
                for (size_t i = 0; i < nd; i++) {
                        if (!disks[i].bootable)
                                continue;
                        any = true;
                        if (disks[i].console_note)
                                kura_appendf(&c.report, "console: %s\n", disks[i].console_note);
                        if (!disks[i].ok) {
                                kura_appendf(&c.report, "boot %s: not tried, the disk did not restore cleanly\n",
                                        disks[i].name);
                                continue;
                        }
                        r = boot_one(&c, disks, nd, i, &marker, boots, err);
                        if (r < 0)
                                goto out;
                }
                if (!any) {
                        kura_appendf(&c.report, "boot: no disk of the version has a boot loader (ESP, BIOS boot "
                                           "partition or MBR boot code)\n");
                        failed(&c, "--boot: no disk of version %.12s has a boot loader", c.v->id);
                }
        } else {
                json_decref(boots);
                json_object_set_new(rec, "boot", json_null());
        }

        /* The record. */
        {
                char t[40];
                time_t now = time(NULL);
                struct tm tm;
                gmtime_r(&now, &tm);
                strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
                char host[256] = "";
                (void) gethostname(host, sizeof host - 1);
                res->duration_s = kura_mono() - t0;
                json_object_set_new(rec, "format", json_integer(1));
                json_object_set_new(rec, "version", json_string(c.v->id));
                json_object_set_new(rec, "ok", json_boolean(c.ok));
                json_object_set_new(rec, "time", json_string(t));
                json_object_set_new(rec, "host", json_string(host));
                json_object_set_new(rec, "kura_version", json_string(o->kura_version ? o->kura_version : "unknown"));
                json_object_set_new(rec, "duration", json_real(res->duration_s));
                json_object_set_new(rec, "booted", json_boolean(o->boot));
                json_object_set_new(rec, "error", c.ok ? json_null() : json_string(c.first_fail));
                res->record = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
                if (!res->record) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "out of memory");
                        goto out;
                }
        }
        res->ok = c.ok;
        if (!o->no_record) {
                KuraErr serr = {0};
                r = kura_verify_record_save(repo, c.v->id, res->record, &serr);
                if (r >= 0)
                        res->recorded = true;
                else if (c.ok) {
                        if (err && !err->code)
                                *err = serr;
                        goto out;
                } else
                        kura_appendf(&c.report, "the result could not be recorded: %s\n", serr.message);
        }
        if (c.ok)
                r = 0;
        else
                r = kura_err(err, EIO, KURA_E_VERIFY_FAILED,
                             "do not rely on this version for a bare-metal restore: read the report, run 'kura check "
                             "--read-data', and make a new backup (kura backup --all-critical)",
                             "restore test of version %.12s failed: %s", c.v->id, c.first_fail);
out:
        if (have_marker)
                regfree(&marker);
        for (size_t i = 0; i < nd; i++) {
                kura_disk_layout_clear(&disks[i].l);
                free(disks[i].img);
                free(disks[i].console_note);
        }
        free(disks);
        json_decref(rec);
        if (c.work) {
                if (o->keep)
                        res->workdir = TAKE_PTR(c.work);
                else
                        remove_workdir(c.work);
        }
        free(c.work);
        res->report = c.report;
        res->duration_s = kura_mono() - t0;
        kura_version_free(c.v);
        return r;
}
