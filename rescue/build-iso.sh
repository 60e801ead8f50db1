#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build the kura rescue image: a hybrid ISO (CD or USB stick; BIOS and UEFI)
# holding a Debian kernel and an initramfs with kura, every tool `kura bmr`
# calls, and storage, filesystem and network drivers.  `kura rescue build`
# runs this script; see rescue/README.md for the image and its boot keys.
#
#   rescue/build-iso.sh OUT.iso --kura BIN [--kernel VMLINUZ] [--modules DIR]
#                       [--append "KEY=VALUE ..."] [--keyfile FILE] [--timeout S]
#                       [--compress gzip|zstd|xz] [--work DIR] [--cache DIR]
#
# --cache DIR keeps the compressed initramfs between builds, keyed by
# everything that goes into it (this script, init.sh, kura, the kernel modules,
# the installed packages): a second ISO with other --append keys takes seconds.
#
# --modules DIR is a lib/modules/KVER directory (depmod'd or not); the kernel
# release is its base name.  The defaults are the running system's kernel and
# modules.  Exit status: 0 ok, 1 failure, 2 usage.  Failures are printed as
# "kura: error: CODE: message" and "  remedy: ..." like the rest of kura.
set -euo pipefail
umask 022

HERE=$(cd "$(dirname "$0")" && pwd)
PROG="kura rescue build"

usage() {
        cat >&2 <<'EOF'
Usage: kura rescue build OUT.iso [--kernel VMLINUZ] [--modules DIR] [--append ARGS]
                         [--keyfile FILE] [--timeout S] [--compress gzip|zstd|xz]
EOF
        exit 2
}
die() { # CODE remedy message...
        local code=$1 remedy=$2
        shift 2
        printf 'kura: error: %s: %s\n  remedy: %s\n' "$code" "$*" "$remedy" >&2
        exit 1
}
say() { [ -n "${KURA_RESCUE_QUIET:-}" ] || printf '%s: %s\n' "$PROG" "$*" >&2; }

out='' kura='' kernel='' modules='' append='' keyfile='' timeout='' compress=zstd work='' cache=''
while [ $# -gt 0 ]; do
        case $1 in
        --kura | --kernel | --modules | --append | --keyfile | --timeout | --compress | --work | --cache)
                [ $# -ge 2 ] || usage
                v=$2
                case $1 in
                --kura) kura=$v ;;
                --kernel) kernel=$v ;;
                --modules) modules=$v ;;
                --append) append=$v ;;
                --keyfile) keyfile=$v ;;
                --timeout) timeout=$v ;;
                --compress) compress=$v ;;
                --work) work=$v ;;
                --cache) cache=$v ;;
                esac
                shift 2
                ;;
        -h | --help) usage ;;
        -*) echo "kura: error: KURA-E-USAGE: unknown option '$1'" >&2; usage ;;
        *)
                [ -z "$out" ] || { echo "kura: error: KURA-E-USAGE: unexpected argument '$1'" >&2; usage; }
                out=$1
                shift
                ;;
        esac
done
[ -n "$out" ] || usage
[ -n "$kura" ] || kura=$(command -v kura || true)
[ -n "$kura" ] && [ -x "$kura" ] || die KURA-E-TOOL-MISSING "pass --kura /path/to/kura" "no kura binary to put in the image"
[ -n "$modules" ] || modules=/lib/modules/$(uname -r)
modules=${modules%/}
[ -d "$modules/kernel" ] || die KURA-E-TOOL-MISSING \
        "pass --modules DIR (a lib/modules/KVER directory of a Debian kernel package)" \
        "$modules holds no kernel modules"
KVER=$(basename "$modules")
[ -n "$kernel" ] || kernel=/boot/vmlinuz-$KVER
[ -f "$kernel" ] || die KURA-E-TOOL-MISSING "pass --kernel VMLINUZ (the kernel of $KVER)" "kernel $kernel does not exist"
case $compress in
gzip) compressor=(gzip -6 -n) ;;
zstd) compressor=(zstd -q -T0 -3) ;; # fast to make, fast to unpack under TCG
xz) compressor=(xz -q -T0 --check=crc32 -6) ;;
*) echo "kura: error: KURA-E-USAGE: --compress gzip|zstd|xz" >&2; usage ;;
esac
[ -z "$timeout" ] || [[ "$timeout" =~ ^[0-9]+$ ]] || { echo "kura: error: KURA-E-USAGE: --timeout takes seconds" >&2; usage; }
[ -z "$keyfile" ] || [ -f "$keyfile" ] || die KURA-E-TOOL-MISSING "pass an existing file to --keyfile" "key file $keyfile does not exist"
case $append in
*\"* | *\;* | *\$* | *\\*) die KURA-E-USAGE "write the keys without quotes, ';', '\$' or '\\'" "--append '$append' would break grub.cfg" ;;
esac
case $append in
*kura.password* | *kura.passphrase*) die KURA-E-USAGE "use kura.keyfile= (a file on the rescue medium or the share) or the prompt" \
        "a passphrase never goes on the kernel command line" ;;
esac

for t in grub-mkrescue xorriso mformat cpio "${compressor[0]}" depmod modinfo ldd; do
        command -v "$t" >/dev/null 2>&1 || die KURA-E-TOOL-MISSING \
                "apt-get install grub-common grub-pc-bin grub-efi-amd64-bin xorriso mtools cpio kmod zstd xz-utils" \
                "tool $t is missing"
done
[ -d /usr/lib/grub/i386-pc ] && [ -d /usr/lib/grub/x86_64-efi ] || die KURA-E-TOOL-MISSING \
        "apt-get install grub-pc-bin grub-efi-amd64-bin" "GRUB's i386-pc or x86_64-efi modules are missing: no hybrid image"
BUSYBOX=/bin/busybox
if [ ! -x "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
        die KURA-E-TOOL-MISSING "apt-get install busybox-static" "$BUSYBOX is not busybox-static"
fi

if [ -z "$work" ]; then
        work=$(mktemp -d /tmp/kura-rescue.XXXXXX)
        trap 'rm -rf "$work"' EXIT
else
        rm -rf "$work"
        mkdir -p "$work"
fi
R=$work/initramfs
ISO=$work/iso
mkdir -p "$ISO/boot/grub" "$ISO/kura"

build_initramfs() {
        mkdir -p "$R"/usr/{bin,sbin,lib,lib64} "$R"/{dev,proc,sys,run,tmp,etc,root,mnt,var}
        # The same merged-/usr layout as Debian 12: /bin, /sbin, /lib, /lib64 are links.
        for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done
        ln -s ../run "$R/var/run"

        # ---- programs and the libraries they load ----------------------------------------

        # Required: what `kura bmr` and this image's init call.  Optional: copied when the
        # build machine has them (LVM, LUKS, more partitioners, network-share helpers).
        REQUIRED="e2fsck resize2fs mke2fs mkfs.ext4 tune2fs dumpe2fs mkfs.xfs xfs_growfs xfs_repair xfs_db btrfs mkfs.btrfs
         mkfs.vfat mkfs.fat fsck.vfat fatlabel mcopy mmd mdir mformat mtools losetup mount umount blkid mkswap sfdisk fdisk partx
         wipefs blockdev lsblk findmnt efibootmgr grub-install grub-mkimage grub-probe grub-editenv kmod bash jq"
        OPTIONAL="mount.cifs mount.nfs mount.nfs4 lvm dmsetup cryptsetup thin_delta sgdisk gdisk parted fsfreeze xfs_admin
         mkfs.ext2 mkfs.ext3 e2label xfs_io udevadm setfont loadkeys"

        # copy_path PATH: PATH into the initramfs at the same place (through the links
        # above), dereferenced.
        copy_path() {
                local p=$1 dst=$R$1
                [ -e "$dst" ] && return 0
                mkdir -p "$(dirname "$dst")"
                cp -L "$p" "$dst"
        }
        # copy_prog PROG: a program and every library ldd lists, plus the loader.
        copy_prog() {
                local p=$1 lib
                copy_path "$p"
                if ldd "$p" >/dev/null 2>&1; then
                        for lib in $(ldd "$p" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }'); do
                                copy_path "$lib"
                        done
                fi
        }
        missing=()
        for prog in $REQUIRED; do
                p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$prog" || true)
                [ -n "$p" ] || { missing+=("$prog"); continue; }
                copy_prog "$p"
        done
        [ ${#missing[@]} -eq 0 ] || die KURA-E-TOOL-MISSING \
                "apt-get install e2fsprogs xfsprogs btrfs-progs dosfstools mtools util-linux fdisk efibootmgr grub-common grub-pc-bin grub-efi-amd64-bin kmod bash jq" \
                "the rescue image needs tools this machine lacks: ${missing[*]}"
        optional_missing=()
        for prog in $OPTIONAL; do
                p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$prog" || true)
                if [ -n "$p" ]; then copy_prog "$p"; else optional_missing+=("$prog"); fi
        done
        [ ${#optional_missing[@]} -eq 0 ] || say "not on this machine, left out: ${optional_missing[*]}"
        # kura goes to /usr/bin/kura wherever it was built; its libraries where ldd says.
        cp -L "$kura" "$R/usr/bin/kura"
        for lib in $(ldd "$kura" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }'); do
                copy_path "$lib"
        done
        # kmod's personalities; mtools' programs are links to mtools.
        for a in modprobe insmod rmmod lsmod depmod modinfo; do ln -sf kmod "$R/usr/bin/$a"; done
        [ -e "$R/usr/sbin/modprobe" ] || ln -sf ../bin/kmod "$R/usr/sbin/modprobe"
        # Everything else comes from busybox, where no real program of that name exists.
        cp "$BUSYBOX" "$R/usr/bin/busybox"
        for a in $("$BUSYBOX" --list); do
                [ -e "$R/usr/bin/$a" ] || [ -e "$R/usr/sbin/$a" ] || ln -s busybox "$R/usr/bin/$a"
        done
        # GRUB's platform modules (grub-install, grub-mkimage) and its data.
        for d in /usr/lib/grub/i386-pc /usr/lib/grub/x86_64-efi /usr/lib/grub/x86_64-efi-signed /usr/lib/shim /usr/share/grub; do
                [ -d "$d" ] || continue
                mkdir -p "$R$(dirname "$d")"
                cp -a "$d" "$R$d"
        done
        # grub-install runs grub-bios-setup from the i386-pc directory: its libraries too.
        for p in /usr/lib/grub/i386-pc/grub-bios-setup /usr/lib/grub/i386-pc/grub-ntldr-img; do
                [ -x "$p" ] && copy_prog "$p"
        done
        # Name resolution for share host names (glibc's files and dns backends).
        for lib in /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libnss_dns.so.2 /lib/x86_64-linux-gnu/libresolv.so.2; do
                [ -e "$lib" ] && copy_path "$lib"
        done
        printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$R/etc/nsswitch.conf"
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
        printf 'root:x:0:\n' >"$R/etc/group"
        printf '127.0.0.1 localhost\n' >"$R/etc/hosts"
        : >"$R/etc/fstab"
        ln -sf /proc/self/mounts "$R/etc/mtab"

        # ---- kernel modules -------------------------------------------------------------

        # Storage controllers (incl. RAID HBAs, USB, MMC), device-mapper/MD, filesystems,
        # network cards and the share clients; then whatever these depend on.
        MODDIRS="drivers/block drivers/ata drivers/scsi drivers/nvme drivers/virtio drivers/md drivers/cdrom
         drivers/usb/storage drivers/usb/host drivers/usb/common drivers/usb/core drivers/mmc drivers/message
         drivers/hid drivers/input/keyboard drivers/input/serio drivers/net/ethernet drivers/net/virtio_net.ko
         drivers/net/vmxnet3 drivers/net/mii.ko drivers/net/mdio drivers/net/phy drivers/firmware/qemu_fw_cfg.ko
         drivers/char/virtio_console.ko drivers/hv drivers/xen
         fs/ext4 fs/jbd2 fs/mbcache.ko fs/xfs fs/btrfs fs/fat fs/nls fs/isofs fs/udf fs/squashfs fs/overlayfs
         fs/smb fs/cifs fs/nfs fs/nfs_common fs/lockd fs/fscache fs/netfs fs/efivarfs fs/fuse
         net/sunrpc net/dns_resolver net/packet crypto lib arch"
        KM=$R/lib/modules/$KVER
        mkdir -p "$KM"
        for d in $MODDIRS; do
                [ -e "$modules/kernel/$d" ] || continue
                mkdir -p "$KM/kernel/$(dirname "$d")"
                cp -a "$modules/kernel/$d" "$KM/kernel/$d"
        done
        for f in modules.builtin modules.builtin.modinfo modules.order; do
                [ -f "$modules/$f" ] && cp "$modules/$f" "$KM/"
        done
        # Dependency closure: modinfo names each module's dependencies; find them by
        # name in the full tree until nothing new is needed.
        find "$modules/kernel" -name '*.ko*' | awk '{ n = $0; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n); print n " " $0 }' \
                | sort -k1,1 >"$work/all-modules"
        while :; do
                find "$KM/kernel" -name '*.ko*' | awk '{ n = $0; sub(/.*\//, "", n); sub(/\.ko.*$/, "", n); gsub(/-/, "_", n); print n }' \
                        | sort -u >"$work/have"
                find "$KM/kernel" -name '*.ko*' -print0 | xargs -0 -r modinfo -F depends 2>/dev/null | tr ',' '\n' | sed '/^$/d' \
                        | tr '-' '_' | sort -u >"$work/want"
                comm -23 "$work/want" "$work/have" >"$work/need"
                [ -s "$work/need" ] || break
                n=0
                while read -r name; do
                        src=$(awk -v n="$name" '$1 == n { print $2; exit }' "$work/all-modules")
                        [ -n "$src" ] || continue
                        rel=${src#"$modules"/}
                        mkdir -p "$KM/$(dirname "$rel")"
                        cp "$src" "$KM/$rel"
                        n=$((n + 1))
                done <"$work/need"
                [ "$n" -gt 0 ] || break
        done
        depmod -b "$R" "$KVER" || die KURA-E-TOOL-MISSING "check --modules $modules" "depmod failed on the image's modules"
        nmods=$(find "$KM/kernel" -name '*.ko*' | wc -l)

        # ---- init and identity ------------------------------------------------------------

        cp "$HERE/init.sh" "$R/init"
        chmod 755 "$R/init"
        # The medium is found again at boot by this ID (the ISO holds the same file).
        build_id=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
        echo "$build_id" >"$R/etc/kura-rescue.id"
        echo "$build_id" >"$work/rescue.id"
        echo "$KVER" >"$R/etc/kura-rescue.kver"
        "$kura" --version >"$R/etc/kura-rescue.version" 2>/dev/null || true

        ( cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 ) | "${compressor[@]}" >"$work/initrd.img"
}

stamp=''
if [ -n "$cache" ]; then
        mkdir -p "$cache"
        stamp=$( {
                cat "$0" "$HERE/init.sh" "$kura"
                echo "$KVER $compress"
                find "$modules" -printf '%P %s %T@\n' | LC_ALL=C sort
                dpkg-query -W 2>/dev/null
        } | sha256sum | cut -c1-16)
fi
if [ -n "$stamp" ] && [ -f "$cache/initrd-$stamp.img" ] && [ -f "$cache/initrd-$stamp.id" ]; then
        say "initramfs from the cache ($cache/initrd-$stamp.img)"
        cp "$cache/initrd-$stamp.img" "$ISO/boot/initrd.img"
        cp "$cache/initrd-$stamp.id" "$ISO/kura/rescue.id"
        nmods=cached
else
        build_initramfs
        mv "$work/initrd.img" "$ISO/boot/initrd.img"
        cp "$work/rescue.id" "$ISO/kura/rescue.id"
        if [ -n "$stamp" ]; then
                rm -f "$cache"/initrd-*.img "$cache"/initrd-*.id # one cached image at a time
                cp "$ISO/boot/initrd.img" "$cache/initrd-$stamp.img.tmp"
                cp "$work/rescue.id" "$cache/initrd-$stamp.id"
                mv "$cache/initrd-$stamp.img.tmp" "$cache/initrd-$stamp.img"
        fi
fi
if [ -n "$keyfile" ]; then
        install -m 0600 "$keyfile" "$ISO/kura/keyfile"
fi
cp "$kernel" "$ISO/boot/vmlinuz"

# ---- GRUB: one menu for BIOS and UEFI, on the serial port and the screen --------------

if [ -n "$append" ]; then
        default_timeout=${timeout:-5}
else
        default_timeout=${timeout:-30}
fi
base="console=tty0 console=ttyS0,115200 panic=30"
{
        cat <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=$default_timeout
set default=0
EOF
        if [ -n "$append" ]; then
                cat <<EOF
menuentry "kura rescue: unattended ($append)" {
        linux /boot/vmlinuz $base kura.unattended=1 $append
        initrd /boot/initrd.img
}
EOF
        fi
        cat <<EOF
menuentry "kura rescue: interactive restore" {
        linux /boot/vmlinuz $base
        initrd /boot/initrd.img
}
menuentry "kura rescue: shell" {
        linux /boot/vmlinuz $base kura.shell=1
        initrd /boot/initrd.img
}
EOF
} >"$ISO/boot/grub/grub.cfg"

mkdir -p "$(dirname "$out")"
# grub-mkrescue: El Torito for BIOS (i386-pc) and UEFI (an EFI system partition
# image), plus an MBR and partition entries so a USB stick boots the same bytes.
if ! grub-mkrescue -o "$out.tmp" "$ISO" -- -volid KURA_RESCUE >"$work/mkrescue.log" 2>&1; then
        tail -20 "$work/mkrescue.log" >&2
        rm -f "$out.tmp"
        die KURA-E-TOOL-MISSING "apt-get install xorriso mtools grub-pc-bin grub-efi-amd64-bin" "grub-mkrescue failed"
fi
mv "$out.tmp" "$out"
say "$out: $(du -h "$out" | cut -f1), kernel $KVER, $nmods modules, initramfs $(du -h "$ISO/boot/initrd.img" | cut -f1) ($compress)"
