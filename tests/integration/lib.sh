# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=bash
#
# Shared helpers of kura's integration tests (tests/integration/tNNNN-*.sh).
# Every test sources this file first:   . "$(dirname "$0")/lib.sh"
#
# What it gives:
#   $KURA        absolute path of the kura binary under test
#   $T           the test's private temporary directory (removed at exit)
#   $REPO        $T/repo (exported as KURA_REPO)
#   kura ARGS    run "$KURA" ARGS (stdin from /dev/null, under a timeout)
#   kok ARGS     run kura, fail the test unless it exits 0; stdout in $T/out, stderr in $T/err
#   krun ARGS    run kura, never fail; status in $KRC, stdout $T/out, stderr $T/err
#   expect_fail STATUS CODE ARGS   run kura, require exit STATUS and CODE in its output
#   new_loop SIZE [NAME]           image file + loop device; echoes the device
#   kura_init_test_repo [DIR] [init options]   encrypted repo, cheap KDF, KURA_PASSWORD set
#   fill_tree DIR SEED [SCALE]     mixed data: text, random, zeros, links, xattrs, owners
#   tree_manifest DIR              sorted description of a tree (no atime)
#   change_percent DIR P [SEED]    rewrite ~P% of the file data in place, deterministically
#   rand_bytes SEED SIZE           deterministic pseudo-random bytes on stdout
#   assert_eq, assert_file_eq, assert_ne, assert_le, fail, skip, info
#
# Tests run as root on loop devices only, never on the machine's own disks.
# Debugging: KEEP_TMP=1 keeps $T of a failed test, KURA_VERBOSE=1 prints the
# time of every kura command, KURA_TRACE=1 traces the script with timestamps.

set -u -o pipefail
if [ -n "${KURA_TRACE:-}" ]; then
        # bash ignores PS4 from the environment when run as root.
        PS4='+${EPOCHREALTIME} ${FUNCNAME[0]:-main}: '
        set -x
fi

TESTNAME=$(basename "$0" .sh)
TESTDIR=$(cd "$(dirname "$0")" && pwd)
SRCROOT=$(cd "$TESTDIR/../.." && pwd)

info() { printf '[%s] %s\n' "$TESTNAME" "$*"; }
fail() {
        printf '[%s] FAIL: %s\n' "$TESTNAME" "$*" >&2
        exit 1
}
skip() {
        printf '[%s] SKIP: %s\n' "$TESTNAME" "$*" >&2
        exit 77
}

if [ "$(id -u)" != 0 ]; then
        skip "needs root (loop devices, mount)"
fi

# ---- the binary -------------------------------------------------------------

if [ -z "${KURA:-}" ]; then
        for k in "$SRCROOT/build/kura" "$SRCROOT/build/cli/kura"; do
                if [ -x "$k" ]; then
                        KURA=$k
                        break
                fi
        done
fi
[ -n "${KURA:-}" ] || fail "no kura binary: set KURA=/path/to/kura (tried build/kura, build/cli/kura)"
KURA=$(realpath "$KURA") || fail "KURA=$KURA does not exist"
[ -x "$KURA" ] || fail "KURA=$KURA is not executable"
export KURA

require_tool() {
        local t
        for t in "$@"; do
                command -v "$t" >/dev/null 2>&1 || skip "tool $t is missing"
        done
}
require_tool losetup mount umount truncate sha256sum openssl jq blkid findmnt

# ---- per-test temporary directory and cleanup ------------------------------

T=$(mktemp -d "/tmp/kura-itest-$TESTNAME.XXXXXX") || fail "mktemp"
LOOPS=()   # loop devices this test attached (only these are detached)
MOUNTS=()  # mount points this test mounted

_cleanup() {
        local rc=$? i m dev
        set +e
        cd /
        # Unmount everything this test mounted (also anything below $T), innermost first.
        for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
                m=${MOUNTS[i]}
                if mountpoint -q "$m" 2>/dev/null; then
                        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
                fi
        done
        while read -r m; do
                umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        done < <(findmnt -rn -o TARGET 2>/dev/null | grep "^$T/" | sort -r)
        [ -f "$T/loops" ] && mapfile -t -O "${#LOOPS[@]}" LOOPS <"$T/loops"
        # Newest first, so that a loop device over one of our loop devices goes
        # before it.  Only detach a device that still points at one of our
        # images, or at one of our loop devices.
        local ours=" ${LOOPS[*]} " back
        for ((i = ${#LOOPS[@]} - 1; i >= 0; i--)); do
                dev=${LOOPS[i]}
                back=$(losetup -n -O BACK-FILE "$dev" 2>/dev/null)
                if [[ "$back" == "$T/"* ]] || [[ -n "$back" && "$ours" == *" $back "* ]]; then
                        losetup -d "$dev" 2>/dev/null
                fi
        done
        if command -v btrfs >/dev/null 2>&1; then
                btrfs device scan --forget >/dev/null 2>&1
        fi
        if [ "${KEEP_TMP:-0}" = 1 ] && [ "$rc" != 0 ]; then
                echo "[$TESTNAME] keeping $T" >&2
        else
                rm -rf --one-file-system "$T"
        fi
        if [ "$rc" = 0 ]; then
                echo "[$TESTNAME] PASS ($SECONDS s, of which $KURA_SECONDS s in kura)"
        elif [ "$rc" = 77 ]; then
                :
        else
                echo "[$TESTNAME] FAILED (exit $rc)" >&2
        fi
        exit "$rc"
}
trap _cleanup EXIT
trap 'exit 130' INT TERM

export KURA_CONFIG_DIR=$T/config
export KURA_STATE_DIR=$T/state
export KURA_CACHE_DIR=$T/cache
mkdir -p "$KURA_CONFIG_DIR" "$KURA_STATE_DIR" "$KURA_CACHE_DIR"
unset KURA_PASSWORD KURA_NEW_PASSWORD KURA_DEBUG
REPO=$T/repo
export KURA_REPO=$REPO
export MTOOLS_SKIP_CHECK=1
KURA_TIMEOUT=${KURA_TIMEOUT:-120}

# ---- running kura -----------------------------------------------------------

kura() {
        timeout -k 5 "$KURA_TIMEOUT" "$KURA" "$@" </dev/null
}

KRC=0
KURA_SECONDS=0 # wall-clock time spent inside kura (shown at the end)
krun() {
        local t0=$EPOCHREALTIME t1
        echo "+ kura $*" >>"$T/commands.log"
        kura "$@" >"$T/out" 2>"$T/err"
        KRC=$?
        t1=$EPOCHREALTIME
        KURA_SECONDS=$(awk -v a="$KURA_SECONDS" -v b="$t0" -v c="$t1" 'BEGIN { printf "%.2f", a + c - b }')
        if [ -n "${KURA_VERBOSE:-}" ]; then
                awk -v b="$t0" -v c="$t1" -v cmd="$*" 'BEGIN { printf "  %.2f s: kura %s\n", c - b, cmd }' >&2
        fi
        cat "$T/err" >>"$T/commands.log"
        return 0
}

show_output() {
        echo "--- stdout of: kura $*" >&2
        head -c 4000 "$T/out" >&2
        echo "--- stderr:" >&2
        head -c 4000 "$T/err" >&2
        echo "---" >&2
}

# kok ARGS: kura must exit 0.
kok() {
        krun "$@"
        if [ "$KRC" != 0 ]; then
                show_output "$@"
                fail "kura $* exited $KRC, expected 0"
        fi
}

# expect_fail STATUS CODE ARGS: exit STATUS (may be "1|2") and CODE in stderr
# (or in stdout for --json, where errors are JSON on stdout).
expect_fail() {
        local status=$1 code=$2
        shift 2
        krun "$@"
        if ! [[ "$KRC" =~ ^($status)$ ]]; then
                show_output "$@"
                fail "kura $* exited $KRC, expected $status ($code)"
        fi
        if ! grep -qF -- "$code" "$T/err" "$T/out"; then
                show_output "$@"
                fail "kura $* exited $KRC but did not print $code"
        fi
        # Text mode: "kura: error: CODE: message" and "  remedy: ..." on stderr.
        if [[ " $* " != *" --json "* ]]; then
                if ! grep -q -- "^kura: error: $code: ." "$T/err" || ! grep -q '^  remedy: .' "$T/err"; then
                        show_output "$@"
                        fail "kura $*: stderr lacks 'kura: error: $code: <message>' and '  remedy: <text>'"
                fi
        fi
        info "ok: kura $* -> exit $KRC, $code"
}

# ---- asserts ------------------------------------------------------------------

assert_eq() { # expected actual what
        if [ "$1" != "$2" ]; then
                fail "${3:-value}: expected '$1', got '$2'"
        fi
}
assert_ne() {
        if [ "$1" = "$2" ]; then
                fail "${3:-value}: expected something other than '$1'"
        fi
}
assert_le() { # a b what: a <= b (integers)
        if ! [ "$1" -le "$2" ]; then
                fail "${3:-value}: expected $1 <= $2"
        fi
}
assert_file_eq() { # expected-file actual-file what
        if ! cmp -s "$1" "$2"; then
                echo "--- diff $1 $2 (first 60 lines):" >&2
                diff -u "$1" "$2" 2>&1 | head -60 >&2
                fail "${3:-files differ}: $1 != $2"
        fi
}
assert_contains() { # file string what
        if ! grep -qF -- "$2" "$1"; then
                echo "--- $1:" >&2
                head -c 3000 "$1" >&2
                fail "${3:-output}: expected to contain '$2'"
        fi
}
assert_not_contains() {
        if grep -qF -- "$2" "$1"; then
                echo "--- $1:" >&2
                head -c 3000 "$1" >&2
                fail "${3:-output}: expected NOT to contain '$2'"
        fi
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
dev_size() { blockdev --getsize64 "$1"; }

# ---- loop devices and mounts --------------------------------------------------

# new_loop SIZE [NAME]: create $T/NAME.img (sparse) of SIZE (truncate syntax),
# attach it, record it for cleanup (in $T/loops, so that dev=$(new_loop 64M)
# works from a subshell), and print the device.
new_loop() {
        local size=$1 name=${2:-} img dev
        if [ -z "$name" ]; then
                img=$(mktemp "$T/loop.XXXXXX.img") || fail "mktemp"
        else
                img=$T/$name.img
        fi
        truncate -s "$size" "$img" || fail "truncate $img"
        dev=$(losetup -f --show "$img") || fail "losetup $img"
        echo "$dev" >>"$T/loops"
        echo "$dev"
}
# Detach one of our loop devices early (e.g. before mounting a clone of it).
del_loop() {
        local dev=$1
        losetup -d "$dev" || fail "losetup -d $dev"
}

do_mount() { # [mount options...] DEV DIR
        local dir=${*: -1}
        mkdir -p "$dir"
        mount "$@" || fail "mount $*"
        MOUNTS+=("$dir")
}
do_umount() {
        sync
        umount "$1" || fail "umount $1"
}

# ---- data ---------------------------------------------------------------------

# rand_bytes SEED SIZE: SIZE deterministic pseudo-random bytes (AES-128-CTR
# keystream keyed from SEED).
rand_bytes() {
        local key
        key=$(printf 'kura-itest-%s' "$1" | sha256sum | cut -c1-32)
        head -c "$2" /dev/zero | openssl enc -aes-128-ctr -nosalt -K "$key" -iv 00000000000000000000000000000000
}

# text_file SEED LINES: deterministic text.
text_file() {
        awk -v seed="$1" -v n="$2" 'BEGIN {
                srand(seed);
                split("alpha beta gamma delta kura backup volume chunk pack index version restore check prune lorem ipsum dolor sit amet", w, " ");
                for (i = 0; i < n; i++) {
                        line = sprintf("%06d", i);
                        k = 3 + int(rand() * 12);
                        for (j = 0; j < k; j++) line = line " " w[1 + int(rand() * 19)];
                        print line;
                }
        }'
}

# fill_tree DIR SEED [SCALE] [FEATURES]
# Mixed data in DIR: text files, random files of various sizes (SCALE MiB of
# random data in total, default 16), runs of zeros, a sparse file, hard links,
# symlinks, xattrs, modes and owners.  FEATURES: "posix" (default) or "fat"
# (regular files and directories only; no links, xattrs, owners).
fill_tree() {
        local dir=$1 seed=$2 scale=${3:-16} features=${4:-posix}
        local i d
        mkdir -p "$dir"
        for d in etc usr/share/doc var/lib/data home/user/docs srv/blobs; do
                mkdir -p "$dir/$d" || fail "mkdir $dir/$d"
        done
        # Text files.
        for i in $(seq 1 24); do
                text_file "$((seed * 1000 + i))" "$((20 + i * 37))" >"$dir/etc/conf$i.txt"
        done
        for i in $(seq 1 8); do
                text_file "$((seed * 2000 + i))" "$((400 * i))" >"$dir/usr/share/doc/readme$i.txt"
        done
        # Random files: SCALE MiB in total, sizes from tiny to several MiB.
        local total=$((scale * 1048576)) used=0 sz n=0
        local sizes=(1 100 4095 4096 65536 300000 1048576 1500000 3000000 5242880)
        while [ "$used" -lt "$total" ]; do
                sz=${sizes[$((n % ${#sizes[@]}))]}
                [ $((used + sz)) -gt "$total" ] && sz=$((total - used))
                rand_bytes "$seed-r$n" "$sz" >"$dir/srv/blobs/blob$n.bin" || fail "write blob$n"
                used=$((used + sz))
                n=$((n + 1))
        done
        # Runs of zeros, and zeros between random data.
        head -c 2097152 /dev/zero >"$dir/var/lib/data/zeros.bin"
        { rand_bytes "$seed-z1" 100000; head -c 1048576 /dev/zero; rand_bytes "$seed-z2" 70000; } \
                >"$dir/var/lib/data/mixed.bin"
        # Empty file and empty directory.
        : >"$dir/home/user/empty"
        mkdir -p "$dir/home/user/emptydir"
        if [ "$features" = posix ]; then
                # Sparse file with a hole.
                truncate -s 3M "$dir/var/lib/data/sparse.bin"
                rand_bytes "$seed-sp" 5000 | dd of="$dir/var/lib/data/sparse.bin" bs=1 seek=1048576 conv=notrunc status=none
                # Hard links and symlinks.
                ln "$dir/etc/conf1.txt" "$dir/home/user/docs/hardlink-conf1.txt"
                ln "$dir/srv/blobs/blob1.bin" "$dir/home/user/docs/hardlink-blob1.bin"
                ln -s ../../etc/conf2.txt "$dir/home/user/docs/symlink-conf2"
                ln -s /nonexistent/target "$dir/home/user/docs/dangling"
                ln -s docs "$dir/home/user/docs-link"
                # Modes and owners.
                chmod 600 "$dir/etc/conf3.txt"
                chmod 4755 "$dir/etc/conf4.txt"
                chmod 1777 "$dir/var/lib/data"
                chmod 700 "$dir/home/user"
                chown 1234:5678 "$dir/home/user" "$dir/home/user/docs" 2>/dev/null
                chown -h 1234:5678 "$dir/home/user/docs/symlink-conf2" 2>/dev/null
                chown 65534:65534 "$dir/etc/conf5.txt"
                chown 0:100 "$dir/etc/conf6.txt"
                # xattrs where the filesystem supports them.
                if command -v setfattr >/dev/null 2>&1; then
                        setfattr -n user.kura -v "seed-$seed" "$dir/etc/conf7.txt" 2>/dev/null
                        setfattr -n user.big -v "0x$(rand_bytes "$seed-x" 200 | xxd -p | tr -d '\n')" \
                                "$dir/etc/conf8.txt" 2>/dev/null
                        setfattr -n trusted.kura -v trusted "$dir/etc/conf9.txt" 2>/dev/null
                fi
                # Fixed mtimes so the manifest is stable.
                touch -h -d '2021-02-03 04:05:06' "$dir/home/user/docs/dangling"
        fi
        sync
}

# tree_manifest DIR [--no-mtime]: one sorted line per entry:
#   path type mode uid gid size nlink mtime sha256|link-target
# followed by the xattrs (getfattr -d -m -), sorted.  No atime.
tree_manifest() {
        local dir=$1
        shift
        local with_mtime=1 a
        for a in "$@"; do
                case $a in
                --no-mtime) with_mtime=0 ;;
                esac
        done
        (
                cd "$dir" || exit 1
                find . -mindepth 1 \( -path ./lost+found -prune -o -print0 \) | sort -z |
                        while IFS= read -r -d '' p; do
                                local_line=$(stat -c '%F|%a|%u|%g|%s|%h|%Y' -- "$p") || exit 1
                                IFS='|' read -r type mode uid gid size nlink mtime <<<"$local_line"
                                [ "$with_mtime" = 1 ] || mtime=-
                                case $type in
                                "regular file" | "regular empty file")
                                        type=f
                                        extra=$(sha256sum <"$p" | cut -d' ' -f1)
                                        ;;
                                "symbolic link")
                                        type=l
                                        extra=$(readlink -- "$p")
                                        ;;
                                directory)
                                        type=d
                                        size=-   # directory sizes depend on the filesystem's history
                                        extra=-
                                        ;;
                                *)
                                        type=o
                                        extra=-
                                        ;;
                                esac
                                printf '%s %s %s %s %s %s %s %s %s\n' "$p" "$type" "$mode" "$uid" "$gid" "$size" "$nlink" "$mtime" "$extra"
                        done
                if command -v getfattr >/dev/null 2>&1; then
                        getfattr -R -h -d -m - -e hex . 2>/dev/null | awk '
                                /^# file: / { f = substr($0, 9); next }
                                /^$/ { next }
                                { print "xattr " f " " $0 }' | LC_ALL=C sort
                fi
        )
}

# fat_manifest DEV: extract a FAT filesystem with mtools and describe it.
fat_manifest() {
        local dev=$1 out
        out=$(mktemp -d "$T/fatx.XXXXXX")
        mcopy -s -n -m -i "$dev" '::/*' "$out/" >/dev/null 2>&1 || fail "mcopy from $dev"
        (
                cd "$out" || exit 1
                find . -mindepth 1 -print0 | sort -z | while IFS= read -r -d '' p; do
                        if [ -d "$p" ]; then
                                printf '%s d\n' "$p"
                        else
                                printf '%s f %s %s %s\n' "$p" "$(stat -c %s -- "$p")" "$(stat -c %Y -- "$p")" \
                                        "$(sha256sum <"$p" | cut -d' ' -f1)"
                        fi
                done
        )
        rm -rf "$out"
}

# change_percent DIR P [SEED]: rewrite ~P% of the regular-file bytes in place
# (same size, new content, contiguous pieces of up to 1 MiB in the largest
# files, chosen deterministically), and create one small new file.  Prints
# the number of bytes rewritten.  Writes the changed paths to $T/changed.
change_percent() {
        local dir=$1 p=$2 seed=${3:-changed}
        local total goal done_=0 f sz n len off
        total=$(find "$dir" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
        goal=$((total * p / 100))
        n=0
        : >"$T/changed"
        while IFS= read -r f; do
                [ "$done_" -ge "$goal" ] && break
                sz=$(stat -c %s -- "$f")
                [ "$sz" -gt 0 ] || continue
                len=$((goal - done_))
                [ "$len" -gt "$sz" ] && len=$sz
                [ "$len" -gt 1048576 ] && len=1048576
                off=$(((sz - len) / 3))
                rand_bytes "$seed-$n" "$len" | dd of="$f" bs=64K seek="$off" oflag=seek_bytes conv=notrunc status=none ||
                        fail "rewrite $f"
                echo "${f#"$dir"/}" >>"$T/changed"
                done_=$((done_ + len))
                n=$((n + 1))
        done < <(find "$dir" -type f -size +100k -printf '%s %p\n' | LC_ALL=C sort -k1,1nr -k2 | awk 'NR % 2 == 1 { sub(/^[0-9]+ /, ""); print }')
        text_file "$seed" 50 >"$dir/etc/new-after-change.txt"
        echo etc/new-after-change.txt >>"$T/changed"
        sync
        echo "$done_"
}

# ---- repositories ---------------------------------------------------------------

# kura_init_test_repo [DIR] [extra init options]: an encrypted repository
# with a cheap KDF, KURA_PASSWORD exported.
kura_init_test_repo() {
        local dir=${1:-$REPO}
        [ $# -gt 0 ] && shift
        export KURA_PASSWORD=${KURA_PASSWORD:-itest-passphrase-1}
        kok --repo "$dir" init --kdf-memory 1M --kdf-passes 1 "$@"
        [ -f "$dir/config" ] || fail "init did not create $dir/config"
}

# version_ids: the IDs of all versions, oldest first (one a line).
version_ids() {
        kok versions --json
        jq -er '.versions[].id' "$T/out" || { show_output versions --json; fail "versions --json: no .versions[].id"; }
}

# repo_size DIR: bytes used by the files of a repository.
repo_size() { du -sb "${1:-$REPO}" | cut -f1; }

# tree_sha DIR: one line per file: sha256 and path, sorted (to prove a
# directory is untouched).
tree_sha() {
        (cd "$1" && find . -printf '%y %p %s %m\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
}

# block_hashes FILE BS [NBLOCKS]: sha256 of each BS-sized block, one a line.
block_hashes() {
        local f=$1 bs=$2 n=${3:-} i
        if [ -z "$n" ]; then
                local size
                if [ -b "$f" ]; then size=$(dev_size "$f"); else size=$(stat -c %s "$f"); fi
                n=$(((size + bs - 1) / bs))
        fi
        for ((i = 0; i < n; i++)); do
                dd if="$f" bs="$bs" skip="$i" count=1 status=none | sha256sum | cut -d' ' -f1
        done
}

# ---- the filesystem backup scenario (t0200..t0230) ------------------------------

# fs_mkfs FS DEV
fs_mkfs() {
        case $1 in
        ext4) mkfs.ext4 -q -F -L kura-ext4 "$2" ;;
        xfs) mkfs.xfs -q -f -L kura-xfs "$2" ;;
        btrfs) mkfs.btrfs -q -f -L kura-btrfs "$2" >/dev/null ;;
        vfat) mkfs.vfat -n KURAFAT "$2" >/dev/null ;;
        *) fail "fs_mkfs: unknown fs $1" ;;
        esac || fail "mkfs.$1 $2"
}

# fs_fsck FS DEV-OR-FILE: the filesystem checker in no-change mode must be clean.
fs_fsck() {
        local fs=$1 dev=$2 rc
        case $fs in
        ext4) e2fsck -fn "$dev" >"$T/fsck.log" 2>&1 ;;
        xfs) xfs_repair -n "$dev" >"$T/fsck.log" 2>&1 ;;
        btrfs) btrfs check --readonly "$dev" >"$T/fsck.log" 2>&1 ;;
        vfat) fsck.vfat -n "$dev" >"$T/fsck.log" 2>&1 ;;
        esac
        rc=$?
        if [ "$rc" != 0 ]; then
                tail -30 "$T/fsck.log" >&2
                fail "fsck of $fs on $dev exited $rc"
        fi
        info "fsck $fs $dev clean"
}

# fs_manifest FS DEV: mount DEV read-only (not vfat: mtools), print its manifest, unmount.
fs_manifest() {
        local fs=$1 dev=$2 mnt=$T/mnt-manifest opts=ro
        if [ "$fs" = vfat ]; then
                fat_manifest "$dev"
                return
        fi
        [ "$fs" = xfs ] && opts=ro,nouuid
        if [ "$fs" = btrfs ]; then
                # Clones share the fsid: make the kernel forget unmounted devices first.
                btrfs device scan --forget >/dev/null 2>&1
        fi
        do_mount -o "$opts" "$dev" "$mnt" >&2
        local src
        src=$(findmnt -n -o SOURCE --target "$mnt")
        [ "$src" = "$dev" ] || fail "mounted $dev on $mnt but the kernel mounted $src"
        tree_manifest "$mnt" || fail "tree_manifest $mnt"
        do_umount "$mnt" >&2
}

# fs_fill FS DEV SEED SCALE: put mixed data on a fresh filesystem.
fs_fill() {
        local fs=$1 dev=$2 seed=$3 scale=$4
        if [ "$fs" = vfat ]; then
                fill_tree "$T/fatstage" "$seed" "$scale" fat
                (cd "$T/fatstage" && mcopy -s -m -i "$dev" ./* ::/ 2>"$T/mtools.err") || { cat "$T/mtools.err" >&2; fail "mcopy to $dev"; }
                return
        fi
        do_mount "$dev" "$T/mnt"
        fill_tree "$T/mnt" "$seed" "$scale"
        do_umount "$T/mnt"
}

# fs_change FS DEV P: rewrite ~P% of the data.
fs_change() {
        local fs=$1 dev=$2 p=$3 n f
        if [ "$fs" = vfat ]; then
                n=$(change_percent "$T/fatstage" "$p")
                while IFS= read -r f; do
                        mcopy -o -m -i "$dev" "$T/fatstage/$f" "::/$f" 2>"$T/mtools.err" || { cat "$T/mtools.err" >&2; fail "mcopy -o $f"; }
                done <"$T/changed"
                info "rewrote $n bytes in $(wc -l <"$T/changed") files (vfat, mtools)"
                return
        fi
        do_mount "$dev" "$T/mnt"
        n=$(change_percent "$T/mnt" "$p")
        info "rewrote $n bytes in $(wc -l <"$T/changed") files"
        do_umount "$T/mnt"
}

# check_versions_json N DEV FS: versions --json lists N versions whose single
# volume matches DEV (blkid TYPE/UUID, size).
check_versions_json() {
        local n=$1 dev=$2 fs=$3 got i want_uuid want_size
        kok versions --json
        cp "$T/out" "$T/versions.json"
        got=$(jq '.versions | length' "$T/versions.json") || { show_output versions --json; fail "versions --json is not JSON"; }
        assert_eq "$n" "$got" "number of versions"
        want_uuid=$(blkid -p -s UUID -o value "$dev" 2>/dev/null)
        want_size=$(dev_size "$dev")
        for ((i = 0; i < n; i++)); do
                assert_eq 1 "$(jq ".versions[$i].volumes | length" "$T/versions.json")" "version $i: number of volumes"
                assert_eq "$fs" "$(jq -r ".versions[$i].volumes[0].fs" "$T/versions.json")" "version $i: volume fs"
                assert_eq "$want_uuid" "$(jq -r ".versions[$i].volumes[0].uuid" "$T/versions.json")" "version $i: volume uuid"
                assert_eq "$want_size" "$(jq -r ".versions[$i].volumes[0].size" "$T/versions.json")" "version $i: volume size"
                assert_eq "$dev" "$(jq -r ".versions[$i].volumes[0].path" "$T/versions.json")" "version $i: volume path"
                local cs ch
                cs=$(jq -r ".versions[$i].volumes[0].chunk_size" "$T/versions.json")
                ch=$(jq -r ".versions[$i].volumes[0].chunks" "$T/versions.json")
                assert_eq $(((want_size + cs - 1) / cs)) "$ch" "version $i: chunks = ceil(size / chunk_size $cs)"
        done
}

# run_fs_backup_test FS SIZE SCALE: the whole t02x0 scenario.
run_fs_backup_test() {
        local fs=$1 size=$2 scale=$3
        local src r1 r2 s0 s1 s2 v1 v2 g1 g2

        src=$(new_loop "$size" src) || exit 1
        fs_mkfs "$fs" "$src"
        fs_fill "$fs" "$src" 1 "$scale"
        fs_manifest "$fs" "$src" >"$T/m1" || exit 1
        [ "$(wc -l <"$T/m1")" -gt 40 ] || fail "manifest of the source is too short: $(wc -l <"$T/m1") lines"

        kura_init_test_repo
        s0=$(repo_size)
        local t_start=$SECONDS
        kok backup --volume "$src"
        info "first backup took $((SECONDS - t_start)) s"
        s1=$(repo_size)

        fs_change "$fs" "$src" 1
        fs_manifest "$fs" "$src" >"$T/m2" || exit 1
        if cmp -s "$T/m1" "$T/m2"; then fail "change_percent changed nothing"; fi
        fs_fsck "$fs" "$src"

        kok backup --volume "$src"
        s2=$(repo_size)
        g1=$((s1 - s0))
        g2=$((s2 - s1))
        info "repository growth: first backup $g1 bytes, second backup $g2 bytes"
        [ "$g1" -gt $((scale * 1048576 / 2)) ] || fail "first backup stored only $g1 bytes for ~$scale MiB of random data"
        assert_le "$g2" $((g1 / 10)) "second backup growth (bytes) <= 10% of the first"

        check_versions_json 2 "$src" "$fs"
        v1=$(jq -r '.versions[0].id' "$T/versions.json")
        v2=$(jq -r '.versions[1].id' "$T/versions.json")
        assert_ne "$v1" "$v2" "version IDs"

        # v1 by a 12-digit prefix, v2 by "latest" onto fresh loop devices,
        # v2 again by full ID into a new regular file.
        r1=$(new_loop "$size" r1) || exit 1
        r2=$(new_loop "$size" r2) || exit 1
        kok restore --version "${v1:0:12}" --volume-to "$r1"
        kok restore --version latest --volume-to "$r2"
        kok restore --version "$v2" --volume-to "$T/r2-file.img"
        assert_eq "$(dev_size "$src")" "$(stat -c %s "$T/r2-file.img")" "size of the restored regular file"
        cmp "$r2" "$T/r2-file.img" || fail "version 2 restored to a device and to a file differ"
        if cmp -s "$r1" "$r2"; then fail "v1 and v2 restored to identical bytes"; fi

        if [ "$fs" = btrfs ]; then
                # Same fsid as the source: detach the source before mounting clones.
                del_loop "$src"
        fi
        fs_fsck "$fs" "$r1"
        fs_fsck "$fs" "$r2"
        fs_manifest "$fs" "$r1" >"$T/m1-restored" || exit 1
        assert_file_eq "$T/m1" "$T/m1-restored" "manifest of version 1 restored"
        fs_manifest "$fs" "$r2" >"$T/m2-restored" || exit 1
        assert_file_eq "$T/m2" "$T/m2-restored" "manifest of version 2 restored"
        info "both versions restored with identical trees; $fs clean"

        # The repository itself must check clean.
        kok check --read-data
}

# ---- pack files (unencrypted repositories) -------------------------------------

# le32 HEX8: little-endian 32-bit integer from 8 hex digits.
le32() { echo $((16#${1:6:2}${1:4:2}${1:2:2}${1:0:2})); }

# pack_entries PACK: "type id offset length" per blob, from the pack header of
# an UNENCRYPTED repository (docs/format/repository.md §4, §5).
pack_entries() {
        local p=$1 size hl hs hex count i e
        size=$(stat -c %s "$p")
        [ "$(tail -c 4 "$p")" = KPK1 ] || fail "pack $p does not end in KPK1"
        hl=$(le32 "$(xxd -p -s $((size - 8)) -l 4 "$p")")
        hs=$((size - 8 - hl))
        [ "$hs" -ge 0 ] || fail "pack $p: header length $hl larger than the pack"
        hex=$(xxd -p -s "$hs" -l "$hl" "$p" | tr -d '\n')
        [ "${hex:0:8}" = 4b504b48 ] || fail "pack $p: header does not start with KPKH (encrypted repository?)"
        count=$(le32 "${hex:16:8}")
        for ((i = 0; i < count; i++)); do
                e=${hex:$((24 + i * 82)):82}
                printf '%d %s %d %d\n' "$((16#${e:0:2}))" "${e:2:64}" "$(le32 "${e:66:8}")" "$(le32 "${e:74:8}")"
        done
}

# flip_byte FILE OFFSET: invert one byte in place.
flip_byte() {
        local f=$1 off=$2 b
        b=$(xxd -p -s "$off" -l 1 "$f")
        [ -n "$b" ] || fail "flip_byte: $f has no byte at $off"
        printf "\\x$(printf %02x $((0x$b ^ 0xff)))" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none || fail "flip_byte $f $off"
}
