#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: timeout=600
# Filesystems after a bare-metal restore (lib/image/fsresize.c), through a
# small driver (t1150-fsresize-driver.c) linked against the build's
# libkura.a (the ASan one in the ASan pass).  For ext4, xfs and btrfs, a
# filesystem with known files (fill_tree: text, random, zeros, a sparse file,
# hard links, symlinks, owners, modes, xattrs, an ACL) is
#   (a) grown: copied into a larger image, kura_fs_grow() on its loop
#       device; the superblock's size grew to the device's, fsck is clean,
#       the tree (sha256 of every file, modes, owners, links, xattrs) is
#       unchanged.  xfs: the source stays mounted meanwhile (same UUID:
#       kura must mount with nouuid).
#   (b) shrunk: kura_fs_shrink_onto() from a full-size image onto a smaller
#       loop device that held stale bytes; UUID and label are the same
#       (blkid -p), fsck is clean, the tree is identical, the new size fits
#       the device; ext4/btrfs: no stale byte survives (holes are zeroed).
#   (c) too small: a target smaller than the data fails with
#       KURA-E-FS-RESIZE and a number of missing bytes; ext4/btrfs fail
#       before writing the target.
#   (d) kura_fs_min_size(): more than the data, less than the filesystem
#       (xfs: -ENOTSUP with the bytes in use).  ext4: a target of exactly
#       that size takes the shrunk filesystem.
. "$(dirname "$0")/lib.sh"
require_tool cc nm mkfs.ext4 e2fsck dumpe2fs resize2fs mkfs.xfs xfs_repair xfs_db xfs_growfs mkfs.btrfs btrfs \
        setfattr getfattr setfacl

BUILD=$(dirname "$KURA")
LIB=$BUILD/lib/libkura.a
[ -f "$LIB" ] || fail "no $LIB next to $KURA"
SAN=()
# (grep without -q: an early exit would kill nm with SIGPIPE, failing the pipe)
if nm "$LIB" 2>/dev/null | grep ' U __asan_' >/dev/null; then
        SAN=("-fsanitize=address,undefined")
fi
cc -std=gnu17 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 "${SAN[@]}" -I"$SRCROOT/include" -I"$SRCROOT/lib" \
        "$TESTDIR/t1150-fsresize-driver.c" "$LIB" -o "$T/driver" \
        -lcrypto -lsodium -lzstd -lblkid -lfdisk -lmount -lext2fs -lcom_err -ljansson -lxxhash -lpthread -lm \
        2>"$T/cc.log" || { cat "$T/cc.log" >&2; fail "cannot build the driver"; }
info "driver built${SAN:+ with ${SAN[*]}}"

MiB=1048576
# drv ARGS: run the driver; its output in $T/drv.out, exit status in $DRC.
DRC=0
drv() {
        local t0=$EPOCHREALTIME
        echo "+ driver $*" >>"$T/commands.log"
        timeout -k 5 300 "$T/driver" "$@" >"$T/drv.out" 2>&1
        DRC=$?
        cat "$T/drv.out" >>"$T/commands.log"
        info "  driver $1 $3: exit $DRC in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }') s"
}
drv_ok() {
        drv "$@"
        if [ "$DRC" != 0 ] || ! grep -q '^rc=0$' "$T/drv.out"; then
                cat "$T/drv.out" >&2
                fail "driver $* failed (exit $DRC)"
        fi
}
drv_val() { sed -n "s/^$1=//p" "$T/drv.out" | head -1; }

# fs_bytes FS DEV: the filesystem's size from its superblock (unmounted).
fs_bytes() {
        case $1 in
        ext4) dumpe2fs -h "$2" 2>/dev/null | awk -F: '/^Block count:/ { c = $2 } /^Block size:/ { s = $2 } END { printf "%d\n", c * s }' ;;
        xfs) xfs_db -r -c 'sb 0' -c 'p dblocks' -c 'p blocksize' "$2" | awk '/^dblocks/ { c = $3 } /^blocksize/ { s = $3 } END { printf "%d\n", c * s }' ;;
        btrfs) btrfs inspect-internal dump-super "$2" | awk '$1 == "total_bytes" { print $2; exit }' ;;
        esac
}
fs_id() { blkid -p -s UUID -s LABEL -o export "$1" | grep -E '^(UUID|LABEL)=' | sort; }

# stale DEV SIZE: fill a target with a recognisable pattern.
stale() { { yes KURA-STALE-BYTES || :; } | head -c "$2" | dd of="$1" bs=1M iflag=fullblock oflag=direct status=none || fail "fill $1"; }

# drv_nopath ARGS: the driver with an empty PATH directory (no tools).
drv_nopath() {
        mkdir -p "$T/nobin"
        echo "+ PATH=$T/nobin driver $*" >>"$T/commands.log"
        env PATH="$T/nobin" "$T/driver" "$@" >"$T/drv.out" 2>&1
        DRC=$?
        cat "$T/drv.out" >>"$T/commands.log"
        assert_eq 1 "$DRC" "driver $1 $3 without tools: exit status"
}

# no_leftovers WHAT: no mount, mount directory or loop device of kura's is left.
no_leftovers() {
        if findmnt -rn -o TARGET | grep -q "^$T/kura-fsresize"; then fail "$1: a mount of kura left behind"; fi
        if ls -d "$T"/kura-fsresize.* >/dev/null 2>&1; then fail "$1: a mount directory of kura left behind"; fi
        if losetup -a | grep -v -F -f <(sed 's/$/:/' "$T/loops" 2>/dev/null) | grep -q "$T/"; then
                losetup -a >&2
                fail "$1: a loop device of kura left attached"
        fi
}

# run_fs FS SRC_SIZE BIG_SIZE SHRINK_SIZE SMALL_SIZE
run_fs() {
        local fs=$1 src_size=$2 big_size=$3 shrink_size=$4 small_size=$5
        local src g t before after id0 min data t0=$SECONDS p

        # ---- the source filesystem ------------------------------------------------
        src=$(new_loop "$src_size" "src-$fs") || exit 1
        fs_mkfs "$fs" "$src"
        do_mount "$src" "$T/mnt"
        fill_tree "$T/mnt" 11 6
        setfacl -m u:4321:rw "$T/mnt/etc/conf10.txt" || fail "setfacl"
        data=$(du -sB1 "$T/mnt" | cut -f1) # allocated bytes
        do_umount "$T/mnt"
        fs_manifest "$fs" "$src" >"$T/m-$fs" || exit 1
        grep -q 'system.posix_acl_access' "$T/m-$fs" || fail "$fs: no ACL in the manifest"
        grep -q 'user.kura=' "$T/m-$fs" || fail "$fs: no xattr in the manifest"
        grep -q 'hardlink-blob1.bin f .* 2 ' "$T/m-$fs" || fail "$fs: no hard link in the manifest"
        id0=$(fs_id "$src")
        grep -q "^UUID=." <<<"$id0" && grep -q "^LABEL=kura-$fs" <<<"$id0" || fail "$fs: blkid of the source: $id0"
        before=$(fs_bytes "$fs" "$src")
        info "$fs: source $src_size, fs $before bytes, $data bytes of files"
        del_loop "$src"

        # ---- (d) minimum size --------------------------------------------------------
        cp --sparse=always "$T/src-$fs.img" "$T/min-$fs.img"
        drv minsize "$T/min-$fs.img" "$fs" "$T"
        min=$(drv_val min)
        if [ "$fs" = xfs ]; then
                assert_eq "rc=-95" "$(head -1 "$T/drv.out")" "xfs min_size: -ENOTSUP"
        else
                assert_eq 0 "$DRC" "$fs min_size exit"
                assert_eq "rc=0" "$(head -1 "$T/drv.out")" "$fs min_size rc"
        fi
        [ -n "$min" ] || { cat "$T/drv.out" >&2; fail "$fs: min_size gave no number"; }
        [ "$min" -gt "$data" ] || fail "$fs: min_size $min is not more than the $data bytes of data"
        [ "$min" -lt "$before" ] || fail "$fs: min_size $min is not less than the filesystem's $before bytes"
        [ "$fs" = btrfs ] && { [ "$min" -ge $((256 * MiB)) ] || fail "btrfs min_size $min below the kernel's 256 MiB"; }
        info "$fs: min_size $min bytes (data $data, fs $before)"
        if [ "$fs" = ext4 ]; then
                # A target of exactly the estimate takes the shrunk filesystem.
                p=$(( (min + MiB - 1) / MiB * MiB ))
                t=$(new_loop "$p" "minfit-$fs") || exit 1
                drv_ok shrink "$T/min-$fs.img" "$fs" "$t" "$T"
                fs_fsck "$fs" "$t"
                fs_manifest "$fs" "$t" >"$T/m-minfit-$fs" || exit 1
                assert_file_eq "$T/m-$fs" "$T/m-minfit-$fs" "$fs tree on a target of min_size"
                del_loop "$t"
        fi
        rm -f "$T/min-$fs.img"

        # ---- (a) grow -------------------------------------------------------------------
        p=$SECONDS
        cp --sparse=always "$T/src-$fs.img" "$T/grow-$fs.img"
        g=$(new_loop "$big_size" "grow-$fs") || exit 1
        if [ "$fs" = xfs ]; then
                # The source stays attached and mounted: same UUID as the copy.
                src=$(new_loop "$src_size" "src-$fs") || exit 1
                do_mount -o ro "$src" "$T/orig"
        fi
        if [ "$fs" = btrfs ]; then
                # btrfs-progs missing: the mount made for it is undone.
                drv_nopath grow "$g" "$fs" "$T"
                assert_eq "code=KURA-E-TOOL-MISSING" "$(grep '^code=' "$T/drv.out")" "btrfs missing"
                assert_contains "$T/drv.out" "btrfs-progs" "the package of the missing tool"
                no_leftovers "$fs: missing tool"
        fi
        drv_ok grow "$g" "$fs" "$T"
        if [ "$fs" = xfs ]; then
                do_umount "$T/orig"
                del_loop "$src"
        fi
        after=$(fs_bytes "$fs" "$g")
        [ "$after" -gt "$before" ] || fail "$fs: grow left the size at $after (was $before)"
        assert_le "$after" "$(dev_size "$g")" "$fs grown size <= device size"
        assert_le $(( $(dev_size "$g") * 98 / 100 )) "$after" "$fs grown size >= 98% of the device"
        fs_fsck "$fs" "$g"
        assert_eq "$id0" "$(fs_id "$g")" "$fs UUID and label after grow"
        fs_manifest "$fs" "$g" >"$T/m-grow-$fs" || exit 1
        assert_file_eq "$T/m-$fs" "$T/m-grow-$fs" "$fs tree after grow"
        del_loop "$g"
        rm -f "$T/grow-$fs.img"
        info "$fs: grew $before -> $after bytes, tree unchanged ($((SECONDS - p)) s)"

        # ---- (b) shrink onto a smaller device -------------------------------------------
        p=$SECONDS
        cp --sparse=always "$T/src-$fs.img" "$T/shr-src-$fs.img"
        t=$(new_loop "$shrink_size" "shr-$fs") || exit 1
        stale "$t" "$(dev_size "$t")"
        drv_ok shrink "$T/shr-src-$fs.img" "$fs" "$t" "$T"
        assert_eq "$id0" "$(fs_id "$t")" "$fs UUID and label after shrink"
        after=$(fs_bytes "$fs" "$t")
        assert_le "$after" "$(dev_size "$t")" "$fs shrunk size <= target size"
        assert_le $(( $(dev_size "$t") * 95 / 100 )) "$after" "$fs shrunk size >= 95% of the target"
        if [ "$fs" != xfs ]; then
                # The copy zeroes what is a hole in the image: no stale byte left.
                assert_eq 0 "$(grep -a -c KURA-STALE-BYTES "$t")" "$fs: lines of stale bytes left on the target"
        fi
        fs_fsck "$fs" "$t"
        fs_manifest "$fs" "$t" >"$T/m-shr-$fs" || exit 1
        assert_file_eq "$T/m-$fs" "$T/m-shr-$fs" "$fs tree after shrink"
        del_loop "$t"
        rm -f "$T/shr-src-$fs.img" "$T/shr-$fs.img"
        info "$fs: $src_size -> $shrink_size target, fs $after bytes, same UUID/label/tree ($((SECONDS - p)) s)"

        # ---- (c) a target smaller than the data --------------------------------------------
        p=$SECONDS
        local srcimg=$T/src-$fs.img
        if [ "$fs" = xfs ]; then
                # xfs cannot be smaller than 300 MB: more data than that instead.
                srcimg=$T/big-xfs.img
                truncate -s 400M "$srcimg"
                mkfs.xfs -q -f -L kura-big "$srcimg" || fail "mkfs.xfs $srcimg"
                src=$(new_loop 400M big-xfs) || exit 1
                do_mount "$src" "$T/mnt"
                rand_bytes big 290M >"$T/mnt/big.bin" || fail "write big.bin"
                do_umount "$T/mnt"
                del_loop "$src"
        else
                cp --sparse=always "$T/src-$fs.img" "$T/small-src-$fs.img"
                srcimg=$T/small-src-$fs.img
        fi
        t=$(new_loop "$small_size" "small-$fs") || exit 1
        stale "$t" "$(dev_size "$t")"
        local sum0
        sum0=$(sha "$t")
        drv shrink "$srcimg" "$fs" "$t" "$T"
        assert_eq 1 "$DRC" "$fs: driver exit for a too small target"
        assert_eq "code=KURA-E-FS-RESIZE" "$(grep '^code=' "$T/drv.out")" "$fs: error code for a too small target"
        assert_eq "rc=-28" "$(head -1 "$T/drv.out")" "$fs: -ENOSPC for a too small target"
        grep -Eq '^message=.*[ (][0-9]+ bytes missing' "$T/drv.out" || { cat "$T/drv.out" >&2; fail "$fs: no missing bytes in the message"; }
        info "$fs: too small: $(grep '^message=' "$T/drv.out")"
        if [ "$fs" != xfs ]; then
                assert_eq "$sum0" "$(sha "$t")" "$fs: a too small target is not written"
        fi
        del_loop "$t"
        rm -f "$srcimg" "$T/small-$fs.img"
        no_leftovers "$fs"
        info "$fs: too small refused ($((SECONDS - p)) s); $fs done in $((SECONDS - t0)) s"
        rm -f "$T/src-$fs.img"
}

# Sizes: xfs needs >= 300 MB; the kernel shrinks no btrfs below 256 MiB.
run_fs ext4 64M 128M 40M 4M
run_fs xfs 400M 600M 300M 300M
run_fs btrfs 512M 768M 300M 64M

# btrfs over 256 MiB that still does not fit: the resize itself fails, and
# min-dev-size says by how much.
p=$SECONDS
src=$(new_loop 1G big-btrfs) || exit 1
mkfs.btrfs -q -f -L kura-big "$src" >/dev/null || fail "mkfs.btrfs $src"
do_mount "$src" "$T/mnt"
rand_bytes big 280M >"$T/mnt/big.bin" || fail "write big.bin"
do_umount "$T/mnt"
del_loop "$src"
btrfs device scan --forget >/dev/null 2>&1
t=$(new_loop 260M small-btrfs) || exit 1
stale "$t" "$(dev_size "$t")"
sum0=$(sha "$t")
drv shrink "$T/big-btrfs.img" btrfs "$t" "$T"
assert_eq 1 "$DRC" "btrfs 280M onto 260M: driver exit"
assert_eq "code=KURA-E-FS-RESIZE" "$(grep '^code=' "$T/drv.out")" "btrfs 280M onto 260M: code"
assert_eq "rc=-28" "$(head -1 "$T/drv.out")" "btrfs 280M onto 260M: -ENOSPC"
grep -Eq '^message=.*needs [0-9]+ bytes.*[ (][0-9]+ bytes missing' "$T/drv.out" ||
        { cat "$T/drv.out" >&2; fail "btrfs 280M onto 260M: no missing bytes in the message"; }
assert_eq "$sum0" "$(sha "$t")" "btrfs: a too small target is not written"
info "btrfs 280M onto 260M: $(grep '^message=' "$T/drv.out") ($((SECONDS - p)) s)"
del_loop "$t"
no_leftovers "btrfs 280M onto 260M"
rm -f "$T/big-btrfs.img"

# ext4 tools missing: KURA-E-TOOL-MISSING naming the tool and its package.
truncate -s 16M "$T/e.img" && mkfs.ext4 -q -F "$T/e.img" || fail "mkfs.ext4 $T/e.img"
drv_nopath grow "$T/e.img" ext4 "$T"
assert_eq "code=KURA-E-TOOL-MISSING" "$(grep '^code=' "$T/drv.out")" "e2fsck missing"
grep -q '^message=e2fsck .*e2fsprogs' "$T/drv.out" || { cat "$T/drv.out" >&2; fail "no e2fsck/e2fsprogs in the message"; }

# Filesystems with nothing to grow, and one kura cannot shrink.
drv_ok grow /dev/null vfat "$T"
drv shrink /dev/null vfat /dev/null "$T"
assert_eq "code=KURA-E-FS-RESIZE" "$(grep '^code=' "$T/drv.out")" "vfat cannot be shrunk"
