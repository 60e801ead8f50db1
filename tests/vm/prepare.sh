#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Prepare the qemu guest of tests/vm/run.sh: Debian's kernel (it has the
# device-mapper, 9p, vfat... modules this host's kernel lacks) and a small
# busybox initramfs that mounts the host's root filesystem over 9p.
#
#   tests/vm/prepare.sh            idempotent; prints nothing when the cache is current
#
# Cache: $KURA_VM_CACHE (default /var/cache/kura-vm)
#   KVER                       the kernel version run.sh boots
#   <KVER>/root/               the unpacked linux-image-<KVER> package (not installed),
#                              with modules.dep made by depmod -b
#   <KVER>/vmlinuz, initrd.img
# The kernel is the linux-image-6.1.0-NN-amd64 package that linux-image-amd64
# depends on (not the cloud flavour).  KURA_VM_KERNEL_DEB=/path/to.deb uses a
# given package instead of apt-get download.
# Needs: apt-get, dpkg, kmod (depmod, modprobe), cpio, gzip, busybox-static.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${KURA_VM_CACHE:-/var/cache/kura-vm}

die() {
        echo "vm/prepare: $*" >&2
        exit 1
}
say() { [ "${KURA_VM_QUIET:-0}" = 1 ] || echo "vm/prepare: $*" >&2; }

for t in dpkg depmod modprobe cpio gzip xz od; do
        command -v "$t" >/dev/null 2>&1 || die "tool $t is missing (apt-get install kmod cpio gzip xz-utils dpkg coreutils)"
done
BUSYBOX=/bin/busybox
if [ ! -x "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
        # Only the static build runs inside the initramfs (no libc there).
        die "$BUSYBOX is not busybox-static (apt-get install busybox-static)"
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9

# ---- which kernel ----------------------------------------------------------------

deb_kver() { # the version of a linux-image-<KVER> package file
        dpkg-deb -f "$1" Package | sed -n 's/^linux-image-\(.*\)$/\1/p' | sed 's/-unsigned$//'
}

if [ "${KURA_VM_USE_CACHED:-0}" = 1 ] && [ -f "$CACHE/KVER" ] && [ -z "${KURA_VM_KERNEL_DEB:-}" ]; then
        # run.sh: the kernel prepared last time (prepare.sh alone looks for a newer one).
        KVER=$(cat "$CACHE/KVER")
elif [ -n "${KURA_VM_KERNEL_DEB:-}" ]; then
        KVER=$(deb_kver "$KURA_VM_KERNEL_DEB")
        [ -n "$KVER" ] || die "$KURA_VM_KERNEL_DEB is not a linux-image package"
else
        want_pkg() {
                apt-cache depends linux-image-amd64 2>/dev/null |
                        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | grep -v cloud | head -1
        }
        PKG=$(want_pkg || true)
        if [ -z "$PKG" ] && [ ! -f "$CACHE/KVER" ]; then
                say "apt-cache knows no linux-image-amd64: apt-get update"
                apt-get update -q >/dev/null 2>&1 || true
                PKG=$(want_pkg || true)
        fi
        if [ -n "$PKG" ]; then
                KVER=${PKG#linux-image-}
        elif [ -f "$CACHE/KVER" ]; then
                KVER=$(cat "$CACHE/KVER") # offline: keep what we have
        else
                die "cannot tell which kernel linux-image-amd64 depends on (apt-cache depends linux-image-amd64)"
        fi
fi
KDIR=$CACHE/$KVER
ROOT=$KDIR/root

# ---- unpack the kernel package ------------------------------------------------------

if [ ! -f "$KDIR/.unpacked" ]; then
        rm -rf "$KDIR"
        mkdir -p "$KDIR/dl"
        if [ -n "${KURA_VM_KERNEL_DEB:-}" ]; then
                deb=$KURA_VM_KERNEL_DEB
        else
                say "downloading linux-image-$KVER"
                # _apt cannot write into a root-only directory: that is only a warning.
                (cd "$KDIR/dl" && apt-get download -q "linux-image-$KVER" >/dev/null 2>"$KDIR/dl/apt.err") ||
                        { cat "$KDIR/dl/apt.err" >&2; die "apt-get download linux-image-$KVER failed"; }
                deb=$(ls "$KDIR"/dl/linux-image-*.deb)
        fi
        say "unpacking $(basename "$deb")"
        dpkg -x "$deb" "$ROOT"
        rm -rf "$KDIR/dl"
        [ -f "$ROOT/boot/vmlinuz-$KVER" ] || die "no boot/vmlinuz-$KVER in the package"
        [ -d "$ROOT/lib/modules/$KVER" ] || die "no lib/modules/$KVER in the package"
        # The .deb carries no modules.dep: the postinst would make it.
        depmod -b "$ROOT" "$KVER"
        ln -sf "root/boot/vmlinuz-$KVER" "$KDIR/vmlinuz"
        touch "$KDIR/.unpacked"
fi

# The uncompressed ELF kernel: qemu boots it through its PVH entry point with
# no firmware and no decompression (~6 s instead of ~24 s to /init under TCG).
# The bzImage payload's place is in its setup header (boot protocol 2.08+).
if [ ! -f "$KDIR/vmlinux" ]; then
        bz=$ROOT/boot/vmlinuz-$KVER
        u() { od -An -t "u$2" -j "$1" -N "$2" "$bz" | tr -d ' '; }
        sects=$(u 497 1)
        [ "$sects" != 0 ] || sects=4
        pl_off=$(((sects + 1) * 512 + $(u $((0x248)) 4)))
        pl_len=$(u $((0x24c)) 4)
        if dd if="$bz" bs=1M iflag=skip_bytes,count_bytes skip="$pl_off" count="$pl_len" status=none | xz -dc --single-stream >"$KDIR/vmlinux.new" 2>/dev/null &&
                [ "$(head -c 4 "$KDIR/vmlinux.new" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
                mv "$KDIR/vmlinux.new" "$KDIR/vmlinux"
        else
                # run.sh then boots the bzImage (slower, same result).
                rm -f "$KDIR/vmlinux.new"
                say "could not extract vmlinux from $bz (not xz?): booting the bzImage"
        fi
fi

# ---- the initramfs ---------------------------------------------------------------------

# Only what is needed to reach the host's root; every other module is loaded
# later from the shared root (the guest's /sbin/modprobe runs the host's kmod
# on <KVER>/root/lib/modules).
INITRD_MODULES="virtio_pci virtio_blk 9pnet_virtio 9p overlay"
stamp=$( (cat "$0" "$HERE/init.sh"; echo "$INITRD_MODULES"; cksum "$BUSYBOX") | sha256sum | cut -c1-16)
if [ ! -f "$KDIR/initrd.img" ] || [ "$(cat "$KDIR/initrd.stamp" 2>/dev/null)" != "$stamp" ]; then
        say "building the initramfs"
        tmp=$(mktemp -d "$KDIR/initrd.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        mkdir -p "$tmp"/{bin,sbin,dev,proc,sys,host,rw,newroot,modules,etc}
        cp "$BUSYBOX" "$tmp/bin/busybox"
        for a in $("$BUSYBOX" --list); do
                [ "$a" = busybox ] || ln -s busybox "$tmp/bin/$a"
        done
        rm -f "$tmp/bin/modprobe"
        cp "$HERE/init.sh" "$tmp/init"
        chmod 755 "$tmp/init"
        # modules in load order, dependencies first, each once
        : >"$tmp/modules/order"
        for m in $INITRD_MODULES; do
                modprobe -d "$ROOT" -S "$KVER" --show-depends "$m" | while read -r kw path _; do
                        [ "$kw" = insmod ] || continue
                        b=$(basename "$path")
                        grep -qx "$b" "$tmp/modules/order" && continue
                        cp "$path" "$tmp/modules/$b"
                        echo "$b" >>"$tmp/modules/order"
                done
        done
        echo "$KVER" >"$tmp/etc/kver"
        (cd "$tmp" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$KDIR/initrd.img.new"
        mv "$KDIR/initrd.img.new" "$KDIR/initrd.img"
        echo "$stamp" >"$KDIR/initrd.stamp"
        rm -rf "$tmp"
        trap - EXIT
fi

if [ "$(cat "$CACHE/KVER" 2>/dev/null)" != "$KVER" ]; then
        echo "$KVER" >"$CACHE/KVER.new"
        mv "$CACHE/KVER.new" "$CACHE/KVER"
        # Older kernels are no longer booted.
        for d in "$CACHE"/*/; do
                d=${d%/}
                [ "$(basename "$d")" = "$KVER" ] || { [ -f "$d/.unpacked" ] && rm -rf "$d"; } || true
        done
fi
exit 0
