#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura backup --snapshot fsfreeze (and auto, none) on mounted, written-to filesystems:
# an ext4 loop device, an xfs loop device, and an ext4 image file mounted
# through a loop device (the volume is the file).  Each backup restores to a
# clean filesystem with the tree as it was; a filesystem that holds the
# repository is never frozen (KURA-E-FREEZE-REFUSED); and after every backup,
# failed or not, the filesystem takes a write at once (never left frozen).
. "$(dirname "$0")/lib.sh"
require_tool mkfs.ext4 mkfs.xfs e2fsck xfs_repair

kura backup --help >"$T/backup-help" 2>&1
grep -q -- '--snapshot' "$T/backup-help" || skip "kura backup has no --snapshot option yet"

# writable MOUNTPOINT: a write + fsync must finish within 10 s.
# The loop device of an image on the xfs keeps that xfs busy: lib.sh would
# only lazy-unmount it and leave both loop devices behind.  Detach it first.
inner_cleanup() {
        local rc=$?
        if [ -n "${inner:-}" ]; then
                umount "$T/inner" 2>/dev/null
                losetup -d "$inner" 2>/dev/null
        fi
        (exit "$rc") # _cleanup reads the test's status from $?
        _cleanup
}
trap inner_cleanup EXIT

writable() {
        timeout -k 2 10 sh -c "echo probe >'$1/.probe' && sync -f '$1/.probe' && rm -f '$1/.probe'" ||
                fail "$1 does not take a write: left frozen?"
}

kura_init_test_repo

check_one() { # FS VOLUME MOUNTPOINT NAME
        local fs=$1 vol=$2 mnt=$3 name=$4
        fill_tree "$mnt" 5 4
        sync
        tree_manifest "$mnt" >"$T/m-$name" || fail manifest
        # A writer that keeps appending outside the tree while kura runs.
        (while :; do date >>"$mnt/.busy"; sleep 0.05; done) &
        local busy=$!
        kok backup --volume "$vol" --snapshot fsfreeze --writers none
        kill "$busy"
        wait "$busy" 2>/dev/null
        writable "$mnt"
        kok versions --json
        assert_eq false "$(jq -r '.versions[-1].crash_consistent' "$T/out")" "crash_consistent of a frozen $name"
        kok restore --version latest --volume-to "$T/r-$name.img"
        local r
        if [ "$fs" = xfs ]; then
                # A frozen xfs keeps its log dirty (a raw O_DIRECT copy of one
                # does too): like any snapshot it is consistent after log
                # replay, which a mount does.  Then the checker must be clean.
                r=$(losetup -f --show "$T/r-$name.img") || fail "losetup"
                echo "$r" >>"$T/loops"
                do_mount -o nouuid "$r" "$T/r-$name"
                do_umount "$T/r-$name"
                losetup -d "$r"
        fi
        fs_fsck "$fs" "$T/r-$name.img"
        r=$(losetup -f --show -r "$T/r-$name.img") || fail "losetup"
        echo "$r" >>"$T/loops"
        if [ "$fs" = xfs ]; then
                do_mount -o ro,nouuid "$r" "$T/r-$name"
        else
                do_mount -o ro "$r" "$T/r-$name"
        fi
        tree_manifest "$T/r-$name" | grep -v '\.busy' >"$T/m-r-$name" || fail manifest
        grep -v '\.busy' "$T/m-$name" >"$T/m-$name.f"
        assert_file_eq "$T/m-$name.f" "$T/m-r-$name" "tree of $name restored from a frozen backup"
        do_umount "$T/r-$name"
        writable "$mnt"
}

# ---- ext4 on a loop device ----------------------------------------------------
e4=$(new_loop 64M e4) || exit 1
fs_mkfs ext4 "$e4"
do_mount "$e4" "$T/e4"
check_one ext4 "$e4" "$T/e4" ext4

# auto never picks fsfreeze: with no LVM here nothing can snapshot a mounted
# ext4 device, so it is refused (and left writable)
expect_fail 1 KURA-E-SOURCE-MOUNTED backup --volume "$e4" --snapshot auto --writers none
writable "$T/e4"
# --snapshot none said out loud reads it live: crash-consistent only
kok backup --volume "$e4" --snapshot none --writers none
kok versions --json
assert_eq true "$(jq -r '.versions[-1].crash_consistent' "$T/out")" "crash_consistent of --snapshot none on a rw mount"
writable "$T/e4"

# ---- xfs on a loop device -----------------------------------------------------
x=$(new_loop 320M xfs) || exit 1
fs_mkfs xfs "$x"
do_mount "$x" "$T/xfs"
check_one xfs "$x" "$T/xfs" xfs

# ---- an ext4 image file mounted through a loop device ---------------------------
truncate -s 48M "$T/xfs/inner.img"
mkfs.ext4 -q -F "$T/xfs/inner.img" || fail "mkfs inner.img"
inner=$(losetup -f --show "$T/xfs/inner.img") || fail "losetup inner"
echo "$inner" >>"$T/loops"
do_mount "$inner" "$T/inner"
check_one ext4 "$T/xfs/inner.img" "$T/inner" inner
writable "$T/xfs"

# ---- the filesystem of the repository is never frozen ----------------------------
other=$T/e4/repo2
kura_init_test_repo "$other"
krun backup --repo "$other" --volume "$e4" --snapshot fsfreeze --writers none
writable "$T/e4"
if [ "$KRC" = 0 ]; then
        fail "backup froze the filesystem that holds its own repository"
fi
cat "$T/out" "$T/err" >"$T/refusal"
assert_contains "$T/refusal" KURA-E-FREEZE-REFUSED "error code when the repository is on the volume"
assert_contains "$T/refusal" "$T/e4" "the refusal names the filesystem"

writable "$T/e4"
writable "$T/xfs"
writable "$T/inner"
