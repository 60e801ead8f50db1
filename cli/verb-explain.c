/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * kura explain CODE: the meaning and remedy of a kura code, and of the
 * Windows Server Backup / VSS codes an administrator coming from Windows
 * knows.  The kura entries mirror docs/ERRORS.md (cli/check-explain.sh checks
 * that every code of include/kura/errors.h is in both).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

const char verb_explain_help[] = "Usage: kura explain CODE [--json]\n"
                                 "       kura explain --list\n"
                                 "\n"
                                 "Explain a kura code (KURA-E-LOCKED, or just LOCKED) or a Windows Server Backup /\n"
                                 "VSS code (0x800423F4, ...): what it means, typical causes, what to do.\n";

typedef struct Explain {
        const char *code;
        const char *name; /* Windows symbolic name, NULL for kura codes */
        int status;       /* exit status; -1: warning (none), -2: not a kura code */
        const char *meaning;
        const char *causes;
        const char *remedy;
} Explain;

static const Explain table[] = {
        {KURA_E_USAGE, NULL, 2,
         "The command line is wrong: an unknown option, a missing argument, a required option left out (e.g. "
         "--volume-to), or a value out of range.",
         "A typo; an option of another command; no repository given (--repo DIR or KURA_REPO).",
         "Run 'kura COMMAND --help' and fix the command line."},
        {KURA_E_INTERNAL, NULL, 1, "kura hit a condition it did not expect: a bug.",
         "A bug in kura or in a library it uses.", "Run the command again with KURA_DEBUG=1 and report the output."},
        {KURA_E_NO_MEMORY, NULL, 1, "kura ran out of memory.",
         "Too many --threads with large chunks; a memory limit of the service (cgroup) or of the machine.",
         "Use fewer --threads or a smaller --chunk-size, or give kura more memory."},
        {KURA_E_REPO_NOT_FOUND, NULL, 1, "The repository path does not exist.",
         "A wrong --repo or KURA_REPO; the backup disk or network share is not mounted.",
         "Check the path and mount the disk or share; 'kura init' creates a new repository."},
        {KURA_E_NOT_A_REPO, NULL, 1, "The path exists but is not a kura repository (no readable 'config').",
         "The path names a parent or subdirectory of the repository, another program's directory, or the config file "
         "was lost.",
         "Point --repo at the directory that holds 'config', 'data', 'index' and 'versions'."},
        {KURA_E_REPO_EXISTS, NULL, 1, "'kura init' was given a directory that is not empty.",
         "A repository (or other files) already lives there.",
         "Use the existing repository, or give init a new or empty directory."},
        {KURA_E_REPO_VERSION, NULL, 1,
         "The repository uses a format version or an incompatible feature this kura does not know.",
         "The repository was created or upgraded by a newer kura.",
         "Upgrade kura on this machine; never edit 'config' by hand."},
        {KURA_E_REPO_FULL, NULL, 1, "Writing to the repository failed for lack of space or quota (ENOSPC, EDQUOT).",
         "The backup disk or share is full; retention keeps too many versions.",
         "Free space: 'kura forget ID... --prune' old versions, or move the repository to a larger disk. The "
         "interrupted backup left no version; 'kura prune' removes its leftovers."},
        {KURA_E_REPO_IO, NULL, 1, "Reading or writing a repository file failed.",
         "A failing disk, a network share that dropped, wrong permissions or ownership.",
         "Look at the kernel log (dmesg) and the mount, fix permissions, then run 'kura check'."},
        {KURA_E_REPO_READ_ONLY, NULL, 1,
         "The command has to write to the repository, but it is on read-only media (EROFS).",
         "The disk or share is mounted read-only, or was remounted read-only after errors.",
         "Remount it read-write. 'kura restore' and 'kura check' work on a read-only repository without a lock."},
        {KURA_E_NO_PASSWORD, NULL, 4, "The repository is encrypted and kura has no passphrase.",
         "KURA_PASSWORD is unset, no --password-file was given and there is no terminal to ask on (cron, systemd); an "
         "empty password file; the two prompts did not match.",
         "Set KURA_PASSWORD or pass --password-file FILE (the passphrase on its first line), or run on a terminal."},
        {KURA_E_WRONG_PASSWORD, NULL, 4, "The passphrase opens none of the repository's key slots.",
         "A typo; a password file with the wrong line first or stray spaces; the key slot of that passphrase was "
         "removed.",
         "Check the passphrase; with a working one 'kura key list' shows the slots and 'kura key add' adds one."},
        {KURA_E_KEY_SLOT, NULL, 1, "A key slot operation was refused or failed.",
         "Removing the last key slot; an unknown or ambiguous slot ID; an unreadable key slot file; 'key add' on an "
         "unencrypted repository.",
         "Run 'kura key list' to see the slots and their IDs; keep at least one slot."},
        {KURA_E_LOCKED, NULL, 5,
         "Another kura process holds a lock that conflicts with this command; the message names its host and process.",
         "A backup, prune or forget is running; a process that crashed left its lock behind.",
         "Wait for the other command to finish. If its process is gone, 'kura unlock' removes stale locks; 'kura "
         "unlock --all' only when you are sure nothing uses the repository."},
        {KURA_E_VERSION_NOT_FOUND, NULL, 1, "No version has that ID or ID prefix.",
         "A typo; the version was forgotten; the wrong repository.",
         "Run 'kura versions' to list the versions; 'latest' names the newest."},
        {KURA_E_VERSION_AMBIGUOUS, NULL, 1, "The ID prefix matches more than one version.", "The prefix is too short.",
         "Give more hex digits of the ID ('kura versions --json' shows full IDs)."},
        {KURA_E_VOLUME_NOT_FOUND, NULL, 1, "The version holds no volume of that name.",
         "A typo; the volume was given another --name at backup time.",
         "'kura versions' lists each version's volumes as name:size."},
        {KURA_E_VOLUME_REQUIRED, NULL, 1, "The version holds several volumes and the command needs to know which one.",
         "--volume NAME was left out.", "Add --volume NAME ('kura versions' shows the names)."},
        {KURA_E_SOURCE_NOT_FOUND, NULL, 1, "A --volume given to backup does not exist.",
         "A typo; a device name that changed (use /dev/disk/by-uuid/...); an image file that moved.",
         "Check the path; prefer stable names under /dev/disk/by-id or by-uuid."},
        {KURA_E_SOURCE_UNREADABLE, NULL, 1, "A volume to back up cannot be opened or read.",
         "Not running as root for a block device; a read error on a failing disk; the device went away.",
         "Run as root, look at the kernel log (dmesg), check the disk's health."},
        {KURA_E_SOURCE_MOUNTED, NULL, 1,
         "The volume is mounted read-write, so reading it would give an inconsistent image.",
         "Backing up a live filesystem that no snapshot provider can take with --snapshot auto (not an LVM logical "
         "volume, not an image file on xfs/btrfs); the message lists why each provider was passed over.",
         "Unmount it or remount it read-only; put it on LVM (thin); name '--snapshot fsfreeze' for a small or quiet "
         "volume (frozen for the whole copy); or pass --allow-mounted (or --snapshot none) to accept a "
         "crash-consistent copy. 'kura providers' lists the providers."},
        {KURA_E_TARGET_NOT_FOUND, NULL, 1,
         "The restore target does not exist (a device), or the directory for a new file is missing.",
         "A typo; a device name that changed; the target disk is not attached.",
         "Check the path given to --volume-to."},
        {KURA_E_TARGET_TOO_SMALL, NULL, 1, "The target block device is smaller than the volume.",
         "A smaller replacement disk or partition.",
         "Restore to a device at least as large as the volume (the size is in 'kura versions'), or to a file."},
        {KURA_E_TARGET_MOUNTED, NULL, 1,
         "The restore target is mounted (or a loop device backed by the target file is).",
         "Restoring over the running system or a mounted filesystem.",
         "Unmount the target first; restore the running system from the rescue image."},
        {KURA_E_TARGET_IO, NULL, 1, "Writing the restore target failed.",
         "No space left for a target file; a failing target disk.",
         "Free space or use another target; look at the kernel log (dmesg)."},
        {KURA_E_DAMAGED, NULL, 3,
         "Data in the repository is damaged or missing: a chunk failed its authentication tag or ID check, is not "
         "indexed, or a manifest is unreadable. The message names the chunk, pack or version.",
         "Disk or memory errors, files changed or deleted by hand, an incomplete copy of the repository.",
         "Run 'kura check --read-data' to see every damaged object and the versions it affects; 'kura restore "
         "--ignore-damage' recovers the rest of a volume; restore from another copy of the repository."},
        {KURA_E_CHECK_FAILED, NULL, 3, "'kura check' found errors (it lists each one).",
         "See the individual problems; usually KURA-E-DAMAGED objects.",
         "Read the problems above, 'kura explain' their codes, and keep the repository unchanged until the cause is "
         "known."},
        {KURA_E_INTERRUPTED, NULL, 130, "The command was interrupted (SIGINT or SIGTERM).",
         "Ctrl-C; a service stop or timeout.",
         "Run it again. An interrupted backup leaves no version; 'kura prune' removes its leftovers and 'kura unlock' "
         "its stale lock."},
        {KURA_E_WRITER_FAILED, NULL, 1,
         "A writer (the agent that quiesces one application, like a VSS writer: PostgreSQL, MariaDB, SQLite, script) "
         "failed, so the backup stopped; the message names the writer, its state and last error. kura sent abort to "
         "the other writers, thawed every filesystem and removed its snapshots. In 'restore --writers', a writer "
         "refusing pre-restore stops the restore before the target is touched; one failing post-restore is reported "
         "after the data was written. Windows: 0x800423F4 VSS_E_WRITERERROR_NONRETRYABLE.",
         "The application is stopped, busy or refuses (a wrong socket, port or user in the declaration's Exec= or "
         "User=); the writer's program is missing or not executable; a bad declaration in writers.d; a name in "
         "--writers that is not declared or cannot start; a 'retryable' failure still failing after RetryCount "
         "retries; writers.d unreadable or the state directory (writers.json) not writable. A writer failing at "
         "backup complete does not undo the version: it was saved.",
         "Run 'kura writers' (like 'vssadmin list writers'): state, last error and why a writer could not start. Fix "
         "the application or its declaration in $KURA_CONFIG_DIR/writers.d, then back up again; '--writers NAME,...' "
         "without it, or '--writers none', backs up without it (that application's data only crash-consistent)."},
        {KURA_E_WRITER_TIMEOUT, NULL, 1,
         "A writer missed a time limit (IdentifyTimeout, EventTimeout, or FreezeTimeout from freeze to thaw): kura "
         "killed it, sent abort to the other writers, thawed every filesystem, removed its snapshots and stopped the "
         "backup. Not retried.",
         "The application is slow to reach a consistent point (a long checkpoint, a long transaction or lock); an "
         "overloaded machine; a writer that hangs; a limit too small for this application.",
         "Run 'kura writers' (state Failed at ..., last error Timed out), look at the application's log, and back up "
         "at a quieter time or raise the timeout in the writer's declaration (e.g. EventTimeout=120)."},
        {KURA_E_INCONSISTENT_SNAPSHOT, NULL, 1,
         "A selected writer has a component with data on a volume that is not in the snapshot set, so its "
         "application could not be restored consistently; the message names the writer, component, path and volume. "
         "Nothing was snapshotted.",
         "A database whose data directory, WAL or tablespace lives on another volume than the one backed up.",
         "Back up that volume too (another --volume, or --add-writer-volumes), or leave the writer out with "
         "--writers."},
        {KURA_E_SNAPSHOT_SPACE, NULL, 1,
         "The snapshot's copy-on-write space (shadow storage) is too small or ran out: the volume group lacks free "
         "space for an LVM snapshot, an LVM snapshot was invalidated during the copy, or the thin pool is full. "
         "Windows: 0x80780119 and 0x8004231F VSS_E_INSUFFICIENT_STORAGE.",
         "Too little free space in the volume group or thin pool; the volume changes a lot during the backup; old "
         "snapshots kept in the pool.",
         "Look at 'kura shadowstorage list VOLUME' (like 'vssadmin list shadowstorage') and 'kura shadows list'; free "
         "or add space (vgextend, lvextend of the thin pool), delete old snapshots ('kura shadows delete ID'), set "
         "KURA_LVM_SNAPSHOT_SIZE for a larger (or smaller) LVM snapshot, or back up at a quieter time."},
        {KURA_E_NO_PROVIDER, NULL, 1,
         "No snapshot provider can take the volume as asked: the provider named by --snapshot is unknown, not "
         "available on this machine or cannot snapshot that volume; 'none' on a volume mounted read-write; or "
         "'kura shadows create' on a volume no persistent provider supports.",
         "A typo in --snapshot; LVM tools or device-mapper missing (lvm2, thin-provisioning-tools, dm-mod); the "
         "volume is not a logical volume (lvm, lvm-thin) or not an image file on xfs/btrfs (reflink); fsfreeze or "
         "none given to 'shadows create'.",
         "Run 'kura providers' (like 'vssadmin list providers'): it says which are available and why not. Use "
         "'--snapshot auto', name another provider, or for 'none' unmount the volume or pass --allow-mounted."},
        {KURA_E_PROVIDER_FAILED, NULL, 1,
         "The snapshot provider failed to create, read, record or remove a snapshot; the message carries the tool's "
         "output (lvcreate, lvs, FICLONE, fsfreeze). Windows: 0x80042306 VSS_E_PROVIDER_VETO.",
         "An lvcreate or lvremove error; a filesystem that cannot be frozen or was unmounted; the clone directory or "
         "the state directory not writable; a damaged shadows.json.",
         "Run 'kura providers' and check the volume group (vgs, lvs) and the kernel log (dmesg). A snapshot that "
         "could not be removed is in 'kura shadows list'; remove it with 'kura shadows delete ID'."},
        {KURA_E_FREEZE_LIMIT, NULL, 1,
         "A filesystem stayed frozen longer than allowed, so kura thawed it and stopped the backup: creating the "
         "snapshots took longer than the 10 s freeze window (like VSS's 10 s flush-and-hold), or with --snapshot "
         "fsfreeze the copy took longer than --fsfreeze-limit (default 120 s).",
         "A slow or unhealthy volume group or disk; a large or busy volume backed up with fsfreeze.",
         "For fsfreeze: use a snapshot provider (lvm-thin, lvm, reflink), or raise --fsfreeze-limit if the "
         "filesystem's users can wait that long. Otherwise check the volume group's health (vgs, dmesg) and retry."},
        {KURA_E_FREEZE_REFUSED, NULL, 1,
         "kura refused to freeze a filesystem: with --snapshot fsfreeze it holds the repository, or kura's state, "
         "cache, lock or temporary files, which kura writes to during the backup (freezing it would hang the "
         "backup); or too many filesystems to freeze at once; or the freeze watchdog could not start.",
         "The repository or KURA_STATE_DIR / KURA_CACHE_DIR / TMPDIR on the filesystem being backed up; a backup of "
         "very many volumes at once.",
         "Keep the repository and kura's state, cache and temporary files on another filesystem, use a snapshot "
         "provider that does not freeze for the whole copy (lvm-thin, lvm, reflink), or back up fewer volumes at "
         "once."},
        {KURA_E_SHADOW_NOT_FOUND, NULL, 1, "'kura shadows delete' was given an ID that is no shadow or shadow set.",
         "A typo; the shadow was already deleted; another KURA_STATE_DIR.",
         "Run 'kura shadows list' (like 'vssadmin list shadows') to see the shadow and shadow set IDs."},
        {KURA_E_DISK_LAYOUT, NULL, 1,
         "A disk's partition table cannot be read, or holds something kura cannot rebuild.",
         "No partition table (use --volume for a bare filesystem); a damaged GPT whose primary and backup copies "
         "disagree; MD RAID members (not supported for bare-metal recovery yet); --reinstall-bootloader bios "
         "with no room for a BIOS boot partition before the first partition, or onto 4096-byte sectors.",
         "Check the disk with 'sfdisk -d DEV' or 'gdisk -l DEV'; back the volume up with --volume instead of --disk."},
        {KURA_E_DISK_NOT_MAPPED, NULL, 1,
         "'kura bmr' does not know which target disk a backed-up disk goes to, or was given a disk the version lacks.",
         "--disk-map auto found no empty disk of a suitable size; a name in --disk-map that is not in the version.",
         "Give --disk-map disk0=/dev/sdX,... ('kura versions' lists each version's disks) or leave a disk out with "
         "--exclude-disk."},
        {KURA_E_NOT_BMR_COMPLETE, NULL, 1,
         "The version holds no disk layouts, so it cannot rebuild a machine (it was made with --volume only).",
         "The backup was not made with --all-critical or --disk.",
         "Restore single volumes with 'kura restore', or pick a version that 'kura versions' marks bmr."},
        {KURA_E_FS_RESIZE, NULL, 1, "Growing, shrinking or re-creating a restored filesystem failed.",
         "The filesystem does not fit the smaller partition; a resize tool failed (its output is shown); no room for "
         "the temporary copy used when shrinking.",
         "Read the tool's message; give a larger target disk or --tmpdir on a filesystem with more room; the restored "
         "partition is left as the tool left it, so re-run 'kura bmr' once the cause is fixed."},
        {KURA_E_VERIFY_FAILED, NULL, 3,
         "A restore test ('kura verify-restore') of the version failed: a disk could not be rebuilt from it, a "
         "restored filesystem's checker found errors, or the restored disk did not boot to the marker.",
         "Damaged chunks in the repository; a filesystem that was inconsistent when it was backed up (read live "
         "without a snapshot); a boot loader or kernel missing from the backed-up disks; a boot marker that the "
         "system never prints on its serial console.",
         "Do not rely on this version for a bare-metal restore.  Read the report (each partition and the boot); run "
         "'kura check --read-data'; make a new backup with --all-critical and test it again.  'kura versions' shows "
         "the version as VERIFY-FAILED until a later test passes."},
        {KURA_E_TOOL_MISSING, NULL, 1, "A program that kura runs for this step is not installed.",
         "A minimal system or rescue image without e2fsprogs, xfsprogs, btrfs-progs, mtools or util-linux.",
         "Install the package named in the message (scripts/setup.sh installs all of them), or use the kura rescue "
         "image, which holds every tool kura bmr calls."},
        {KURA_E_NOT_CONFIRMED, NULL, 1, "'kura bmr' would erase the target disks and was not confirmed.",
         "Not on a terminal and --yes was not given; or the answer at the prompt was not 'yes'.",
         "Read the plan it printed, then run again with --yes."},
        {KURA_E_CRITICAL_LIVE, NULL, 1,
         "A critical volume is mounted read-write and no snapshot provider can hold it still for a whole copy.",
         "The commonest server layout: / on plain ext4 on a partition (no LVM, no reflink image).",
         "Either pass --crash-consistent (read live; the version is marked crash-consistent, like a power cut), or "
         "boot the kura rescue image and back the disks up offline; for the future, put / on LVM (thin)."},
        {KURA_W_CRASH_CONSISTENT, NULL, -1,
         "The version was read from volumes in use without a snapshot: it is crash-consistent, like a power cut.",
         "--crash-consistent, --allow-mounted or --snapshot none on a mounted read-write volume.",
         "Restores are usually fine (journals replay) but applications may lose their last writes; prefer a "
         "snapshot provider or an offline backup from the rescue image."},
        {KURA_W_LEFTOVER, NULL, -1, "Temporary files or unindexed packs of an unfinished write were found.",
         "An interrupted or failed backup or prune.", "Harmless; 'kura prune' removes them."},
        {KURA_W_NO_LOCK, NULL, -1, "The repository is read-only, so restore or check goes on without taking a lock.",
         "The repository is on read-only media (a write-protected disk, a read-only share).",
         "Fine as long as nothing else writes to the repository at the same time."},
        {KURA_W_STALE_LOCK, NULL, -1,
         "A lock whose holder is gone: a dead process on this host, or a lock of another host older than the stale "
         "age.",
         "A kura process crashed or was killed; a host died during a backup.", "'kura unlock' removes stale locks."},
        {KURA_W_DAMAGE_SKIPPED, NULL, -1,
         "Damaged ranges were skipped: restore --ignore-damage wrote zeros where chunks were damaged (listed as "
         "offset+length, exit status 3), or versions left out unreadable manifests.",
         "Damaged or missing chunks or manifests (see KURA-E-DAMAGED).",
         "Check the restored data in the listed byte ranges (e.g. with debugfs icheck/ncheck); run 'kura check "
         "--read-data'."},
        {CLI_W_NO_CACHE, NULL, -1,
         "The fingerprint cache directory ($KURA_CACHE_DIR/fpcache) could not be created; the backup hashes every "
         "chunk.",
         "/var/cache/kura not writable (not root), a read-only /var.",
         "Run as root or set KURA_CACHE_DIR to a writable directory. The backup is still correct, only slower."},

        /* Windows Server Backup / VSS codes, in kura's terms. */
        {"0x800423F4", "VSS_E_WRITERERROR_NONRETRYABLE", -2,
         "Windows: a VSS writer (an application's quiesce agent, e.g. SqlServerWriter) reported a non-retryable error, "
         "so the backup failed.",
         "KURA-E-WRITER-FAILED: a writer (PostgreSQL, MariaDB, SQLite, script) failed in identify, "
         "prepare-for-backup, freeze or another event and is not retried; kura sends abort to the other writers, "
         "thaws every filesystem and removes its snapshots.",
         "Run 'kura writers' (like 'vssadmin list writers') for the writer in a Failed state and its last error, fix "
         "the application (its service, memory, permissions) or its declaration in writers.d, then back up again. "
         "'kura explain KURA-E-WRITER-FAILED'."},
        {"0x800423F3", "VSS_E_WRITERERROR_RETRYABLE", -2,
         "Windows: a VSS writer failed with a transient error; the same backup may succeed later.",
         "a writer answered 'retryable' (busy, e.g. a long transaction): kura repeats the whole writer sequence up to "
         "the declaration's RetryCount times, RetryDelay apart, and only then fails with KURA-E-WRITER-FAILED (last "
         "error Retryable error). A writer that misses a time limit is KURA-E-WRITER-TIMEOUT and is not retried.",
         "Run 'kura writers' (last error Retryable error or Timed out) and back up again, at a quieter time if need "
         "be; raise RetryCount or RetryDelay in the writer's declaration."},
        {"0x80780119", NULL, -2,
         "Windows Server Backup: not enough space for the shadow copy on the SOURCE volume (often the small System "
         "Reserved partition), not on the backup target.",
         "KURA-E-SNAPSHOT-SPACE: the snapshot's copy-on-write space (shadow storage) is too small: the volume group's "
         "free space for an LVM snapshot, an LVM snapshot that filled up during the copy, or a full thin pool.",
         "Run 'kura shadowstorage list VOLUME' (like 'vssadmin list shadowstorage') and 'kura providers'; give the "
         "volume group or thin pool more free space, delete old snapshots ('kura shadows list', 'kura shadows "
         "delete'), or set KURA_LVM_SNAPSHOT_SIZE. 'kura explain KURA-E-SNAPSHOT-SPACE'."},
        {"0x8004231F", "VSS_E_INSUFFICIENT_STORAGE", -2,
         "Windows: VSS found too little storage to create the shadow copy.",
         "KURA-E-SNAPSHOT-SPACE: the snapshot provider has no room for a snapshot (volume group or thin pool full).",
         "Run 'kura shadowstorage list VOLUME', free space in the volume group or pool ('kura shadows delete' old "
         "snapshots), then back up again."},
        {"0x80042306", "VSS_E_PROVIDER_VETO", -2,
         "Windows: the VSS provider vetoed the shadow copy (an error inside the provider).",
         "KURA-E-PROVIDER-FAILED: the snapshot provider (lvm-thin, lvm, reflink, fsfreeze) refused or failed to "
         "create the snapshot, e.g. an lvcreate error or a filesystem that cannot be frozen; KURA-E-NO-PROVIDER when "
         "no provider can take the volume at all.",
         "Run 'kura providers' (like 'vssadmin list providers') and read the provider's tool output in the error; "
         "check the kernel log (dmesg). 'kura explain KURA-E-PROVIDER-FAILED'."},
        {"0x80780166", NULL, -2,
         "Windows Server Backup: the backup target could not be found (an external disk whose drive letter changed or "
         "that is not attached).",
         "the repository path does not exist or is not mounted (KURA-E-REPO-NOT-FOUND, KURA-E-NOT-A-REPO).",
         "Check --repo / KURA_REPO and the mount of the backup disk; use a stable mount (by UUID in /etc/fstab). 'kura "
         "explain KURA-E-REPO-NOT-FOUND'."},
        {"0x807800C5", NULL, -2,
         "Windows Server Backup: failed to prepare the backup image on the target; the target (a NAS or network share) "
         "is unreachable or denies writing.",
         "the repository on a share cannot be written (KURA-E-REPO-IO, KURA-E-REPO-READ-ONLY) or reached; wrong share "
         "permissions or protocol version.",
         "Check that the share is mounted read-write and writable by root, then run 'kura check' on the repository."},
};

static void upcase(const char *in, char *out, size_t n) {
        size_t i = 0;
        for (; in[i] && i + 1 < n; i++)
                out[i] = (char)toupper((unsigned char)in[i]);
        out[i] = 0;
}

static const Explain *lookup(const char *arg) {
        char q[96], k[96];
        upcase(arg, q, sizeof q);
        const char *hex = !strncmp(q, "0X", 2) ? q + 2 : q;
        for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
                const Explain *e = &table[i];
                upcase(e->code, k, sizeof k);
                if (!strcmp(q, k) || (e->name && !strcmp(q, e->name)))
                        return e;
                if (!strncmp(k, "0X", 2) && !strcmp(hex, k + 2))
                        return e;
                /* "LOCKED" or "E-LOCKED" for KURA-E-LOCKED. */
                if (!strncmp(k, "KURA-", 5) && (!strcmp(q, k + 5) || !strcmp(q, k + 7)))
                        return e;
        }
        return NULL;
}

static const char *status_text(const Explain *e, char buf[static 48]) {
        if (e->status >= 0)
                snprintf(buf, 48, "exit status %d", e->status);
        else if (e->status == -1)
                snprintf(buf, 48, "warning, exit status unaffected");
        else
                snprintf(buf, 48, "Windows code, not raised by kura");
        return buf;
}

static void print_markdown(void) {
        char s[48];
        for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
                const Explain *e = &table[i];
                int kind = e->status >= 0 ? 0 : -e->status;
                if (i == 0 || kind != (table[i - 1].status >= 0 ? 0 : -table[i - 1].status))
                        printf("## %s\n\n", kind == 0   ? "Errors"
                                            : kind == 1 ? "Warnings"
                                                        : "Windows Server Backup and VSS codes");
                printf("### %s%s%s\n\n", e->code, e->name ? " " : "", e->name ? e->name : "");
                printf("- **Status:** %s\n- **Meaning:** %s\n- **%s:** %s\n- **Remedy:** %s\n\n", status_text(e, s),
                       e->meaning, e->status == -2 ? "In kura" : "Typical causes", e->causes, e->remedy);
        }
}

enum { OPT_LIST = OPT_VERB, OPT_MARKDOWN };

int verb_explain(Cli *c, int argc, char **argv, KuraErr *err) {
        static const struct option opts[] = {
                CLI_GLOBAL_OPTIONS,
                {"list", no_argument, NULL, OPT_LIST},
                {"markdown", no_argument, NULL, OPT_MARKDOWN}, /* regenerates docs/ERRORS.md's entries */
                {},
        };
        bool list = false, markdown = false;
        int r;
        while ((r = cli_next_opt(c, argc, argv, opts, err)) > 0) {
                if (r == OPT_LIST)
                        list = true;
                else if (r == OPT_MARKDOWN)
                        markdown = true;
        }
        if (r < 0)
                return r;
        if (c->help_shown)
                return 0;
        if (markdown) {
                print_markdown();
                return 0;
        }
        if (list) {
                for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
                        printf("%s%s%s\n", table[i].code, table[i].name ? " " : "", table[i].name ? table[i].name : "");
                return 0;
        }
        if (argc - optind != 1)
                return cli_usage_error(err, "explain needs exactly one code");

        const Explain *e = lookup(argv[optind]);
        if (!e)
                return kura_err(err, EINVAL, KURA_E_USAGE, "'kura explain --list' shows every known code",
                                "unknown code '%s'", argv[optind]);
        char s[48];
        if (c->json) {
                _cleanup_json_ json_t *j = json_pack("{s:s, s:s?, s:i, s:s, s:s, s:s}", "code", e->code, "name",
                                                     e->name, "exit_status", e->status >= 0 ? e->status : 0, "meaning",
                                                     e->meaning, "causes", e->causes, "remedy", e->remedy);
                cli_json_print(j);
                return 0;
        }
        printf("%s%s%s (%s)\n\n", e->code, e->name ? " " : "", e->name ? e->name : "", status_text(e, s));
        printf("Meaning: %s\n\n%s: %s\n\nRemedy: %s\n", e->meaning, e->status == -2 ? "In kura" : "Typical causes",
               e->causes, e->remedy);
        return 0;
}
