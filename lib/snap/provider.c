/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The provider table, filesystem freeze/thaw, UUIDs, and running the
 * external tools (LVM) the system providers drive.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>

#include "snap-internal.h"

/* Best first: "auto" takes the first that supports a volume. */
static const KuraProviderOps *const providers[] = {
        &kura_provider_lvm_thin, &kura_provider_lvm, &kura_provider_reflink,
        &kura_provider_fsfreeze, &kura_provider_none, NULL,
};

const KuraProviderOps *const *kura_provider_table(void) {
        return providers;
}

const KuraProviderOps *kura_provider_find(const char *name) {
        if (!name)
                return NULL;
        for (size_t i = 0; providers[i]; i++)
                if (!strcmp(providers[i]->name, name))
                        return providers[i];
        return NULL;
}

int kura_providers_list(KuraProviderInfo **ret, size_t *ret_n) {
        size_t n = ELEMENTSOF(providers) - 1;
        KuraProviderInfo *v = calloc(n, sizeof *v);
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                v[i].name = providers[i]->name;
                v[i].id = providers[i]->id;
                v[i].type = providers[i]->type;
                v[i].description = providers[i]->description;
                v[i].available = providers[i]->available(v[i].why, sizeof v[i].why);
                if (v[i].available)
                        v[i].why[0] = 0;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int kura_fs_freeze(const char *mountpoint, KuraErr *err) {
        _cleanup_close_ int fd = open(mountpoint, O_RDONLY | O_CLOEXEC | O_DIRECTORY);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_PROVIDER_FAILED, "Check that the filesystem is still mounted.",
                                      "cannot open mount point %s to freeze it", mountpoint);
        if (ioctl(fd, FIFREEZE, 0) < 0) {
                int r = -errno;
                return kura_err_errno(err, r, KURA_E_PROVIDER_FAILED,
                                      r == -EBUSY ? "Another program froze this filesystem: thaw it (fsfreeze -u) or "
                                                    "wait for it to finish, then retry."
                                                  : "Use a filesystem that supports freezing (ext4, xfs, btrfs) or "
                                                    "another snapshot provider.",
                                      "cannot freeze the filesystem mounted at %s", mountpoint);
        }
        return 0;
}

int kura_fs_thaw(const char *mountpoint, KuraErr *err) {
        _cleanup_close_ int fd = open(mountpoint, O_RDONLY | O_CLOEXEC | O_DIRECTORY);
        if (fd < 0)
                return kura_err_errno(err, -errno, KURA_E_PROVIDER_FAILED,
                                      "Thaw it by hand: fsfreeze -u MOUNTPOINT.",
                                      "cannot open mount point %s to thaw it", mountpoint);
        /* EINVAL: it was not frozen, which is what we want. */
        if (ioctl(fd, FITHAW, 0) < 0 && errno != EINVAL)
                return kura_err_errno(err, -errno, KURA_E_PROVIDER_FAILED, "Thaw it by hand: fsfreeze -u %s.",
                                      "cannot thaw the filesystem mounted at %s", mountpoint);
        return 0;
}

void kura_uuid_text(char out[40]) {
        uint8_t u[16];
        size_t got = 0;
        while (got < sizeof u) {
                ssize_t k = getrandom(u + got, sizeof u - got, 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        /* getrandom cannot fail on a kernel that has it (>= 3.17, with
                         * flags 0 it blocks until seeded); a weak fallback beats an
                         * abort for an identifier that is not a secret. */
                        struct timespec ts;
                        clock_gettime(CLOCK_REALTIME, &ts);
                        uint64_t x = (uint64_t) ts.tv_nsec ^ ((uint64_t) ts.tv_sec << 30) ^ (uint64_t) getpid() << 48;
                        for (size_t i = got; i < sizeof u; i++) {
                                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                                u[i] = (uint8_t) (x >> 56);
                        }
                        break;
                }
                got += (size_t) k;
        }
        u[6] = (u[6] & 0x0f) | 0x40; /* version 4 */
        u[8] = (u[8] & 0x3f) | 0x80; /* RFC 4122 variant */
        snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                 u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

bool kura_provider_tool(const char *name, char *buf, size_t n) {
        if (strchr(name, '/')) {
                snprintf(buf, n, "%s", name);
                return access(buf, X_OK) == 0;
        }
        const char *path = getenv("PATH");
        char dirs[4096];
        snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/sbin:/usr/bin:/bin", path ? path : "");
        char *save = NULL;
        for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                if (!*d)
                        continue;
                int k = snprintf(buf, n, "%s/%s", d, name);
                if (k > 0 && (size_t) k < n && access(buf, X_OK) == 0)
                        return true;
        }
        return false;
}

extern char **environ;

int kura_provider_run(const char *const *argv, unsigned timeout_s, char *out, size_t outsz, char *errout,
                      size_t errsz) {
        char prog[PATH_MAX];
        if (out && outsz)
                out[0] = 0;
        if (errout && errsz)
                errout[0] = 0;
        if (!kura_provider_tool(argv[0], prog, sizeof prog))
                return -ENOENT;

        /* The environment is built before fork: only async-signal-safe calls
         * happen in the child. */
        size_t ne = 0;
        while (environ && environ[ne])
                ne++;
        _cleanup_free_ char **envp = calloc(ne + 3, sizeof *envp);
        if (!envp)
                return -ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < ne; i++)
                if (strncmp(environ[i], "LVM_SUPPRESS_FD_WARNINGS=", 25) && strncmp(environ[i], "LC_ALL=", 7))
                        envp[k++] = environ[i];
        envp[k++] = (char *) "LVM_SUPPRESS_FD_WARNINGS=1";
        envp[k++] = (char *) "LC_ALL=C";

        int po[2], pe[2];
        if (pipe2(po, O_CLOEXEC) < 0)
                return -errno;
        if (pipe2(pe, O_CLOEXEC) < 0) {
                int r = -errno;
                close(po[0]);
                close(po[1]);
                return r;
        }
        pid_t pid = fork();
        if (pid < 0) {
                int r = -errno;
                close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
                return r;
        }
        if (pid == 0) {
                int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (nul < 0 || dup2(nul, 0) < 0 || dup2(po[1], 1) < 0 || dup2(pe[1], 2) < 0)
                        _exit(127);
                setpgid(0, 0);
                execve(prog, (char *const *) argv, envp);
                _exit(127);
        }
        close(po[1]);
        close(pe[1]);
        size_t no = 0, nerr = 0;
        char ebuf[2048];
        struct pollfd pf[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
        double deadline = kura_mono() + timeout_s;
        int r = 0;
        while (pf[0].fd >= 0 || pf[1].fd >= 0) {
                double left = deadline - kura_mono();
                if (left <= 0) {
                        r = -ETIMEDOUT;
                        break;
                }
                int p = poll(pf, 2, (int) (left * 1000) + 1);
                if (p < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                for (int i = 0; i < 2; i++) {
                        if (pf[i].fd < 0 || !pf[i].revents)
                                continue;
                        char tmp[4096];
                        ssize_t got = read(pf[i].fd, tmp, sizeof tmp);
                        if (got < 0 && errno == EINTR)
                                continue;
                        if (got <= 0) {
                                close(pf[i].fd);
                                pf[i].fd = -1;
                                continue;
                        }
                        if (i == 0 && out && outsz > 1) {
                                size_t c = KURA_MIN((size_t) got, outsz - 1 - no);
                                memcpy(out + no, tmp, c);
                                no += c;
                                out[no] = 0;
                        } else if (i == 1) {
                                /* keep the last bytes of stderr: the error is at the end */
                                for (ssize_t j = 0; j < got; j++) {
                                        if (nerr == sizeof ebuf) {
                                                memmove(ebuf, ebuf + 1024, sizeof ebuf - 1024);
                                                nerr -= 1024;
                                        }
                                        ebuf[nerr++] = tmp[j];
                                }
                        }
                }
        }
        for (int i = 0; i < 2; i++)
                if (pf[i].fd >= 0)
                        close(pf[i].fd);
        if (r < 0)
                kill(-pid, SIGKILL), kill(pid, SIGKILL);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR) {
                        st = 0;
                        break;
                }
        if (errout && errsz) {
                size_t c = KURA_MIN(nerr, errsz - 1);
                memcpy(errout, ebuf + nerr - c, c);
                errout[c] = 0;
                /* one line for messages: newlines become "; " */
                for (char *e = errout; *e; e++)
                        if (*e == '\n')
                                *e = e[1] ? ';' : 0;
                        else if ((unsigned char) *e < 0x20)
                                *e = ' ';
        }
        if (r < 0)
                return r;
        if (WIFEXITED(st))
                return WEXITSTATUS(st) == 127 ? -ENOEXEC : WEXITSTATUS(st);
        return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
