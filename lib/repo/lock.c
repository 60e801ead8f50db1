/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Repository locks (§8): one small JSON file per holder in REPO/locks/.
 *
 * Taking a lock: write our file (atomically, temp + rename), then list the
 * directory; a conflicting live lock makes us remove ours and fail.  Two
 * lockers racing may both fail, never both succeed.  Locks of this host
 * whose process is gone are removed on the way (holder_dead(): the PID is
 * gone, or the lock is from an earlier boot, or the PID was reused);
 * locks of other hosts are only removed by `kura unlock` (kura_lock_remove).
 */
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include "repo-internal.h"

/* This boot's ID ("" if the kernel does not say): a lock written under
 * another boot of this host belongs to a process that is gone. */
static void boot_id(char *buf, size_t n) {
        buf[0] = 0;
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re"); /* proc files have no size: not kio_read_file */
        if (!f)
                return;
        if (!fgets(buf, (int) n, f))
                buf[0] = 0;
        fclose(f);
        buf[strcspn(buf, "\n ")] = 0;
}

/* Field 22 of /proc/PID/stat: when the process started, in clock ticks
 * after boot; 0 if unknown.  A PID reused by a newer process has another. */
static uint64_t proc_start(int pid) {
        char path[64], text[1024];
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return 0;
        size_t len = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[len] = 0;
        char *p = strrchr(text, ')'); /* the command name may hold spaces and parentheses */
        if (!p)
                return 0;
        p++;
        for (int field = 3; field < 22; field++) {
                p = strchr(p + 1, ' ');
                if (!p)
                        return 0;
        }
        char *end = NULL;
        unsigned long long v = strtoull(p + 1, &end, 10);
        return end && end != p + 1 ? (uint64_t) v : 0;
}

/* Is the holder of a lock of this host gone?  Its process is gone, or it
 * ran under an earlier boot, or its PID now belongs to a process started
 * at another time (after a reboot or a wrap, PIDs are reused). */
static bool holder_dead(const KuraLockInfo *li) {
        if (li->pid <= 0 || (kill(li->pid, 0) < 0 && errno == ESRCH))
                return true;
        char now[40];
        boot_id(now, sizeof now);
        if (li->boot_id[0] && now[0] && strcmp(li->boot_id, now) != 0)
                return true;
        if (li->start) {
                uint64_t st = proc_start(li->pid);
                if (st && st != li->start)
                        return true;
        }
        return false;
}

static void format_age(int64_t s, char *buf, size_t n) {
        if (s < 0)
                s = 0;
        if (s < 120)
                snprintf(buf, n, "%llds", (long long) s);
        else if (s < 7200)
                snprintf(buf, n, "%lldm", (long long) (s / 60));
        else if (s < 172800)
                snprintf(buf, n, "%lldh%02lldm", (long long) (s / 3600), (long long) (s % 3600 / 60));
        else
                snprintf(buf, n, "%lldd", (long long) (s / 86400));
}

int kura_lock_parse(const uint8_t *data, size_t n, KuraLockInfo *li) {
        json_t *o = json_loadb((const char *) data, n, 0, NULL);
        if (!o)
                return KURA_CORRUPT();
        int r = 0;
        const char *host = json_string_value(json_object_get(o, "host"));
        const char *time = json_string_value(json_object_get(o, "time"));
        json_t *pid = json_object_get(o, "pid"), *ex = json_object_get(o, "exclusive");
        if (!host || !time || !json_is_integer(pid) || !json_is_boolean(ex) || json_integer_value(pid) <= 0 ||
            json_integer_value(pid) > INT32_MAX || kura_parse_time(time, &li->time_ns) < 0)
                r = KURA_CORRUPT();
        else {
                snprintf(li->host, sizeof li->host, "%s", host);
                li->pid = (int) json_integer_value(pid);
                li->exclusive = json_is_true(ex);
                /* Optional (kura >= 0.3): who exactly holds it. */
                const char *bid = json_string_value(json_object_get(o, "boot_id"));
                json_t *st = json_object_get(o, "start");
                if (bid && strlen(bid) < sizeof li->boot_id)
                        snprintf(li->boot_id, sizeof li->boot_id, "%s", bid);
                if (json_is_integer(st) && json_integer_value(st) > 0)
                        li->start = (uint64_t) json_integer_value(st);
        }
        json_decref(o);
        return r;
}

static int lock_read(const char *dir, const char *name, KuraLockInfo *li) {
        _cleanup_free_ char *p = kura_path_join(dir, name);
        if (!p)
                return -ENOMEM;
        _cleanup_free_ uint8_t *data = NULL;
        size_t n;
        memset(li, 0, sizeof *li);
        snprintf(li->name, sizeof li->name, "%s", name);
        int r = kio_read_file(p, 64 << 10, &data, &n);
        if (r == -EFBIG)
                return KURA_CORRUPT();
        if (r < 0)
                return r;
        return kura_lock_parse(data, n, li);
}

static bool is_lock_name(const char *name) { return name[0] != '.' && strlen(name) < sizeof(((KuraLockInfo *) 0)->name); }

int kura_lock_take(KuraRepo *repo, KuraLockMode mode, KuraErr *err) {
        if (mode == KURA_LOCK_NONE)
                return 0;
        bool exclusive = mode == KURA_LOCK_EXCLUSIVE;
        char host[128], user[64], time[64], rnd_hex[9];
        uint8_t rnd[4];
        kura_host_user(host, user);
        int r = kura_random(rnd, sizeof rnd);
        if (r < 0)
                return kura_err_errno(err, r, KURA_E_INTERNAL, "", "no random numbers");
        kura_hex(rnd, sizeof rnd, rnd_hex);
        int64_t now = kura_now_ns();
        kura_format_time(now, time, sizeof time);

        _cleanup_free_ char *dir = kura_repo_subpath(repo, "locks", NULL);
        /* "<host>-<pid>-<random>", host cut so that the name fits KuraLockInfo.name */
        _cleanup_free_ char *name = kura_asprintf("%.48s-%d-%s", host, (int) getpid(), rnd_hex);
        char bid[40];
        boot_id(bid, sizeof bid);
        json_t *o = json_pack("{s:s, s:i, s:b, s:s, s:s, s:I}", "host", host, "pid", (int) getpid(), "exclusive",
                              exclusive, "time", time, "boot_id", bid, "start", (json_int_t) proc_start(getpid()));
        char *s = o ? kura_json_dumps_checked(o, 0) : NULL;
        json_decref(o);
        if (!dir || !name || !s) {
                free(s);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "locking %s", repo->path);
        }
        for (char *c = name; *c; c++)
                if (*c == '/')
                        *c = '_';
        _cleanup_free_ char *path = kura_path_join(dir, name);
        r = path ? kio_write_file(path, s, strlen(s)) : -ENOMEM;
        free(s);
        if (r < 0) {
                if (mode == KURA_LOCK_SHARED_OR_NONE && (r == -EROFS || r == -EACCES || r == -EPERM)) {
                        repo->unlocked = true;
                        repo->lock_mode = KURA_LOCK_NONE;
                        return 0;
                }
                return kura_err_errno(err, r, kura_err_code_for_repo_write(r),
                                      "check that the repository is writable", "cannot create lock file in %s", dir);
        }

        DIR *d = opendir(dir);
        if (!d) {
                r = -errno;
                (void) kio_unlink(path);
                return kura_err_errno(err, r, KURA_E_REPO_IO, "", "cannot list %s", dir);
        }
        struct dirent *de;
        KuraLockInfo conflict = {0};
        bool found = false;
        while ((de = readdir(d))) {
                if (!is_lock_name(de->d_name) || strcmp(de->d_name, name) == 0)
                        continue;
                KuraLockInfo li;
                if (lock_read(dir, de->d_name, &li) < 0)
                        continue; /* vanished meanwhile, or junk: `kura unlock` removes junk */
                if (strcmp(li.host, host) == 0 && holder_dead(&li)) {
                        _cleanup_free_ char *p = kura_path_join(dir, de->d_name);
                        if (p)
                                (void) kio_unlink(p);
                        continue;
                }
                if (exclusive || li.exclusive) {
                        conflict = li;
                        found = true;
                        break;
                }
        }
        closedir(d);
        if (found) {
                (void) kio_unlink(path);
                char age[32], since[64];
                format_age((now - conflict.time_ns) / 1000000000LL, age, sizeof age);
                kura_format_time(conflict.time_ns, since, sizeof since);
                return kura_err(err, EBUSY, KURA_E_LOCKED,
                                "wait, or if that process is gone run `kura unlock`",
                                "repository %s is locked (%s) by process %d on %s since %s (%s ago)", repo->path,
                                conflict.exclusive ? "exclusive" : "shared", conflict.pid, conflict.host, since, age);
        }
        repo->lock_file = TAKE_PTR(path);
        repo->lock_mode = mode;
        return 0;
}

void kura_lock_release(KuraRepo *repo) {
        if (!repo->lock_file)
                return;
        (void) kio_unlink(repo->lock_file);
        free(repo->lock_file);
        repo->lock_file = NULL;
}

int kura_lock_list(const char *repo_path, int64_t stale_age_s, KuraLockInfo **ret, size_t *ret_n, KuraErr *err) {
        _cleanup_free_ char *dir = kura_path_join(repo_path, "locks");
        if (!dir)
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "listing locks");
        DIR *d = opendir(dir);
        if (!d) {
                int r = -errno;
                if (r == -ENOENT)
                        return kura_err(err, ENOENT, KURA_E_REPO_NOT_FOUND, "check the path",
                                        "no repository at %s", repo_path);
                return kura_err_errno(err, r, KURA_E_REPO_IO, "", "cannot list %s", dir);
        }
        if (stale_age_s <= 0)
                stale_age_s = KURA_STALE_LOCK_AGE_DEFAULT;
        char host[128], user[64];
        kura_host_user(host, user);
        int64_t now = kura_now_ns();
        KuraLockInfo *v = NULL;
        size_t n = 0;
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d))) {
                if (!is_lock_name(de->d_name))
                        continue;
                KuraLockInfo li;
                int k = lock_read(dir, de->d_name, &li);
                if (k == -ENOENT)
                        continue;
                if (k == -ENOMEM) {
                        r = k;
                        break;
                }
                if (k < 0)
                        li.stale = true; /* not a lock: junk that `kura unlock` may remove */
                else if (strcmp(li.host, host) == 0)
                        li.stale = holder_dead(&li);
                else
                        li.stale = now - li.time_ns > stale_age_s * 1000000000LL;
                KuraLockInfo *nv = realloc(v, (n + 1) * sizeof *nv);
                if (!nv) {
                        r = -ENOMEM;
                        break;
                }
                v = nv;
                v[n++] = li;
        }
        closedir(d);
        if (r < 0) {
                free(v);
                return kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "listing locks");
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int kura_lock_remove(const char *repo_path, int64_t stale_age_s, bool all, size_t *ret_removed, KuraErr *err) {
        KuraLockInfo *v = NULL;
        size_t n = 0, removed = 0;
        int r = kura_lock_list(repo_path, stale_age_s, &v, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (!all && !v[i].stale)
                        continue;
                _cleanup_free_ char *p = kura_asprintf("%s/locks/%s", repo_path, v[i].name);
                if (!p) {
                        r = kura_err(err, ENOMEM, KURA_E_NO_MEMORY, "", "removing locks");
                        break;
                }
                int k = kio_unlink(p);
                if (k == -ENOENT)
                        continue;
                if (k < 0) {
                        r = kura_err_errno(err, k, kura_err_code_for_repo_write(k), "check the permissions",
                                           "cannot remove lock %s", p);
                        break;
                }
                removed++;
        }
        free(v);
        if (ret_removed)
                *ret_removed = removed;
        return r < 0 ? r : 0;
}
