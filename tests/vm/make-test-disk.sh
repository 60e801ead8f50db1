#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build one of kura's bootable test disks (bare-metal-recovery tests).
# No loop device, no mount (only --sector-size 4096 attaches one loop device,
# with -b 4096, to let sfdisk partition it); never touches a real disk.
#
#   tests/vm/make-test-disk.sh --kind gpt|mbr|lvm --out IMG [--sector-size 512|4096]
#                              [--expected FILE]
#
#   gpt (900 MiB): p1 BIOS boot (GRUB i386-pc core.img), p2 ESP (vfat, GRUB EFI
#                  as \EFI\BOOT\BOOTX64.EFI and \EFI\debian\grubx64.efi), p3 ext4
#                  root (Debian kernel, busybox initramfs and userspace), p4 swap,
#                  p5 xfs data, p6 btrfs data (last).  BIOS and UEFI.
#   mbr (400 MiB): DOS label, p1 ext4 root (active; GRUB core.img in the gap
#                  before it), p2 ext4 data.  BIOS only.
#   lvm (256 MiB): p1 BIOS boot, p2 ESP (as gpt), p3 ext4 /boot (kernel,
#                  initramfs with lvm + cryptsetup, grub/grub.cfg), p4 LVM PV
#                  (VG kuravg, LV root: ext4 root), p5 LUKS2 (key file in the
#                  initramfs and on the root, opened at boot as "kuracrypt";
#                  ext4 inside).  BIOS and UEFI.  The PV and the LUKS volume
#                  are made in one qemu guest (tests/vm/run.sh running
#                  tests/vm/guest-make-lvm-disk.sh): the host has no
#                  device-mapper.  512-byte sectors only.
# Every UUID, GUID, name and file content is fixed.  The root's /sbin/init
# (disk-init.sh) prints the MARKER block described in tests/vm/README.md;
# --expected FILE writes the block this disk must print.
# Needs: the kernel cache of tests/vm/prepare.sh (run first), busybox-static,
# sfdisk, mkfs.ext4 (-d), mkfs.vfat + mtools, mkswap, mkfs.xfs (-p), mkfs.btrfs
# (--rootdir), grub-mkimage + grub-pc-bin + grub-efi-amd64-bin, openssl; for
# lvm also lvm2, cryptsetup and qemu (tests/vm/run.sh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${KURA_VM_CACHE:-/var/cache/kura-vm}
die() {
        echo "make-test-disk: $*" >&2
        exit 1
}
usage() {
        echo "usage: $0 --kind gpt|mbr|lvm --out IMG [--sector-size 512|4096] [--expected FILE]" >&2
        exit 2
}

kind='' out='' ss=512 expected=''
while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || usage
        case $1 in
        --kind) kind=$2 ;;
        --out) out=$2 ;;
        --sector-size) ss=$2 ;;
        --expected) expected=$2 ;;
        *) usage ;;
        esac
        shift 2
done
case $kind in gpt | mbr | lvm) ;; *) usage ;; esac
[ -n "$out" ] || usage
case $ss in 512 | 4096) ;; *) usage ;; esac
[ "$kind" = gpt ] || [ "$ss" = 512 ] || die "--sector-size 4096 is only for --kind gpt"
if [ "$kind" = lvm ]; then
        for t in lvm cryptsetup qemu-system-x86_64; do
                command -v "$t" >/dev/null 2>&1 || die "tool $t is missing (kind lvm)"
        done
fi

for t in sfdisk mkfs.ext4 mkfs.vfat mmd mcopy mkswap mkfs.xfs mkfs.btrfs grub-mkimage openssl cpio gzip modprobe depmod; do
        command -v "$t" >/dev/null 2>&1 || die "tool $t is missing"
done
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || die "/bin/busybox is not busybox-static"
GRUBPC=/usr/lib/grub/i386-pc
GRUBEFI=/usr/lib/grub/x86_64-efi
[ -f "$GRUBPC/boot.img" ] || die "$GRUBPC is missing (apt-get install grub-pc-bin)"
[ -f "$GRUBEFI/kernel.img" ] || die "$GRUBEFI is missing (apt-get install grub-efi-amd64-bin)"
[ -f "$CACHE/KVER" ] || die "no kernel in $CACHE: run tests/vm/prepare.sh first"
KVER=$(cat "$CACHE/KVER")
KROOT=$CACHE/$KVER/root
[ -f "$KROOT/boot/vmlinuz-$KVER" ] && [ -f "$KROOT/lib/modules/$KVER/modules.dep" ] ||
        die "$KROOT is incomplete: run tests/vm/prepare.sh"

# ---- the fixed identities ------------------------------------------------------------
MiB=1048576
T_BIOS=21686148-6449-6E6F-744E-656564454649
T_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
T_ROOT=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 # Linux root (x86-64)
T_SWAP=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F
T_DATA=0FC63DAF-8483-4772-8E79-3D69D8477DE4 # Linux filesystem
T_LVM=E6D6D379-F507-44C2-A23C-238F2A3DF928
if [ "$kind" = gpt ]; then
        DISK_SIZE=$((900 * MiB))
        DISK_GUID=6B757261-6469-736B-0000-000000000000
        ROOT_UUID=6b757261-726f-6f74-0000-000000000003
        ESP_ID=4B550002 ESP_UUID=4B55-0002
        SWAP_UUID=6b757261-7377-6170-0000-000000000004
        XFS_UUID=6b757261-7866-7300-0000-000000000005
        BTRFS_UUID=6b757261-6274-7266-0000-000000000006
        # n name start(MiB) size(MiB) type
        PARTS="1 bios-boot 1 1 $T_BIOS
2 esp 2 32 $T_ESP
3 root 34 200 $T_ROOT
4 swap 234 8 $T_SWAP
5 data-xfs 242 400 $T_DATA
6 data-btrfs 642 257 $T_DATA"
        pguid() { echo "6B757261-0000-4000-8000-00000000000$1"; }
elif [ "$kind" = lvm ]; then
        DISK_SIZE=$((256 * MiB))
        DISK_GUID=6B757261-6469-736B-6C76-6D0000000000
        ESP_ID=4B55004C ESP_UUID=4B55-004C
        BOOT_UUID=6b757261-6c76-6d62-0000-000000000003
        ROOT_UUID=6b757261-6c76-6d72-0000-000000000004 # ext4 in the LV kuravg/root
        PV_UUID=kuraPV-0000-0000-0000-0000-0000-000004 # LVM's 32-character form
        VG=kuravg LV=root LV_MIB=48
        LUKS_UUID=6b757261-6c75-6b73-0000-000000000005
        LUKSFS_UUID=6b757261-6c75-6b73-6673-000000000005 # ext4 inside the LUKS volume
        LUKS_NAME=kuracrypt
        LUKS_KEY=kura-test-disk-luks-key-0001 # the key file's bytes (no newline)
        PARTS="1 bios-boot 1 1 $T_BIOS
2 esp 2 32 $T_ESP
3 boot 34 64 $T_DATA
4 lvm 98 120 $T_LVM
5 crypt 218 36 $T_DATA"
        pguid() { echo "6B757261-0000-4000-8000-00000000004$1"; }
else
        DISK_SIZE=$((400 * MiB))
        DISK_ID=4b555241
        ROOT_UUID=6b757261-6d62-7200-0000-000000000001
        DATA_UUID=6b757261-6d62-7200-0000-000000000002
        PARTS="1 root 1 200 83
2 data 201 199 83"
fi
part_field() { echo "$PARTS" | awk -v n="$1" -v f="$2" '$1 == n { print $f }'; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kura-mkdisk.XXXXXX")
loopdev=
cleanup() {
        [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
        rm -rf "$work"
}
trap cleanup EXIT
export E2FSPROGS_FAKE_TIME=1600000000 SOURCE_DATE_EPOCH=1600000000 MTOOLS_SKIP_CHECK=1
FIXED_TIME=@1600000000

# rand SEED SIZE: deterministic bytes (AES-128-CTR keystream, as tests/integration/lib.sh)
rand() {
        head -c "$2" /dev/zero |
                openssl enc -aes-128-ctr -nosalt -K "$(printf 'kura-disk-%s' "$1" | sha256sum | cut -c1-32)" \
                        -iv 00000000000000000000000000000000
}
text() { # SEED LINES
        for ((i = 0; i < $2; i++)); do printf 'kura test disk %s line %05d: the quick brown fox\n' "$1" "$i"; done
}
# insmod order for MODULES... (dependencies first, each once) -> copies into DIR, names in DIR/order
copy_modules() {
        local dir=$1 m kw path rest b
        shift
        mkdir -p "$dir"
        : >"$dir/order"
        for m in "$@"; do
                while read -r kw path rest; do
                        [ "$kw" = insmod ] || continue
                        b=$(basename "$path")
                        grep -qx "$b" "$dir/order" && continue
                        cp "$path" "$dir/$b"
                        echo "$b" >>"$dir/order"
                done < <(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m")
        done
}

# ---- the initramfs: busybox + virtio + ext4, deliberately no ahci/nvme ---------------
ird=$work/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,newroot}
cp /bin/busybox "$ird/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$ird/bin/$a"; done
cp "$HERE/disk-initrd.sh" "$ird/init"
chmod 755 "$ird/init"
if [ "$kind" = lvm ]; then
        # LVM and LUKS at boot: the host's lvm and cryptsetup with their
        # libraries, device-mapper, dm-crypt and what aes-xts-plain64 needs
        # (aes is built in; xts on ecb; af_alg + algif_skcipher for the
        # keyslots, which cryptsetup decrypts through the kernel's crypto API).
        copy_modules "$ird/modules" virtio_pci virtio_blk crc32c_generic ext4 \
                dm-mod dm-crypt ecb xts af_alg algif_skcipher
        mkdir -p "$ird/sbin" "$ird/etc/lvm" "$ird/run" "$ird/lib64"
        for b in /sbin/lvm /sbin/cryptsetup; do
                cp -L "$b" "$ird$b"
                for l in $(ldd "$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
                        mkdir -p "$ird$(dirname "$l")"
                        cp -L "$l" "$ird$l"
                done
        done
        # glibc loads libgcc_s when a thread is cancelled.
        l=/lib/x86_64-linux-gnu/libgcc_s.so.1
        if [ -f "$l" ]; then cp -L "$l" "$ird$l"; fi
        cat >"$ird/etc/lvm/lvm.conf" <<EOF
# LVM without udev, lvmetad or lvmpolld (the kura test disk's initramfs)
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
devices { obtain_device_list_from_udev = 0 use_devicesfile = 0 }
global { use_lvmpolld = 0 }
backup { backup = 0 archive = 0 }
EOF
        echo "$LUKS_NAME UUID=$LUKS_UUID /etc/kura-luks.key luks" >"$ird/etc/crypttab"
        printf '%s' "$LUKS_KEY" >"$ird/etc/kura-luks.key"
        chmod 600 "$ird/etc/kura-luks.key"
else
        copy_modules "$ird/modules" virtio_pci virtio_blk crc32c_generic ext4
fi
find "$ird" -exec touch -h -d "$FIXED_TIME" {} +
(cd "$ird" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 --reproducible | gzip -1 -n) >"$work/initrd.img"

# ---- the root filesystem tree -----------------------------------------------------------
R=$work/root
mkdir -p "$R"/{bin,sbin,etc,boot,proc,sys,dev,tmp,mnt,root}
# The files under /boot: on the root (gpt, mbr) or in their own ext4 (lvm).
if [ "$kind" = lvm ]; then
        BT=$work/bootfs BP=''
else
        BT=$R/boot BP=/boot
fi
mkdir -p "$BT/grub"
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
cp "$HERE/disk-init.sh" "$R/sbin/init"
chmod 755 "$R/sbin/init"
# /sbin/kura-job: run by init before the marker when a disk labelled KURA-JOB is
# attached (t1270 runs kura itself on the booted test system this way).
cp "$HERE/disk-job.sh" "$R/sbin/kura-job"
chmod 755 "$R/sbin/kura-job"
cp "$KROOT/boot/vmlinuz-$KVER" "$BT/vmlinuz-$KVER"
cp "$work/initrd.img" "$BT/initrd.img-$KVER"
if [ "$kind" = lvm ]; then
        copy_modules "$R/lib/modules/$KVER/kura" crc32c_generic fat vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859-1
        text boot 30 >"$BT/kura-known.txt"
else
        copy_modules "$R/lib/modules/$KVER/kura" crc32c_generic fat vfat nls_cp437 nls_ascii nls_utf8 nls_iso8859-1 xfs btrfs
fi
# What the system's own update-initramfs needs (kura bmr --add-drivers runs it in a chroot).
mkdir -p "$R/usr/sbin" "$R/usr/share/kura-initramfs" "$R/etc/initramfs-tools"
cp "$HERE/disk-update-initramfs.sh" "$R/usr/sbin/update-initramfs"
chmod 755 "$R/usr/sbin/update-initramfs"
cp "$ird/init" "$R/usr/share/kura-initramfs/init"
cp -r "$ird/modules" "$R/usr/share/kura-initramfs/modules"
echo "# modules to put in the initramfs and load at boot (one a line)" >"$R/etc/initramfs-tools/modules"
rand root-known 262144 >"$R/etc/kura-known.bin"
text root 50 >"$R/etc/kura-known.txt"
CMDLINE="root=UUID=$ROOT_UUID ro console=ttyS0,115200 quiet panic=-1"
cat >"$BT/grub/grub.cfg" <<EOF
# kura test disk ($kind): read by GRUB's normal mode (prefix set by the early config)
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
set default=0
echo "KURA-GRUB: booting from \$root"
menuentry "kura test disk $kind" {
        linux $BP/vmlinuz-$KVER $CMDLINE
        initrd $BP/initrd.img-$KVER
}
EOF

# The system's fstab, as a Debian installer writes it (kura critical reads it).
if [ "$kind" = lvm ]; then
        # As Debian's installer writes it for LVM + a LUKS volume with a key file.
        cat >"$R/etc/fstab" <<EOF
/dev/mapper/$VG-$LV / ext4 errors=remount-ro 0 1
UUID=$BOOT_UUID /boot ext4 defaults 0 2
UUID=$ESP_UUID /boot/efi vfat umask=0077 0 1
/dev/mapper/$LUKS_NAME /srv/secret ext4 defaults 0 2
EOF
        echo "$LUKS_NAME UUID=$LUKS_UUID /etc/kura-luks.key luks" >"$R/etc/crypttab"
        printf '%s' "$LUKS_KEY" >"$R/etc/kura-luks.key"
        chmod 600 "$R/etc/kura-luks.key"
        mkdir -p "$R/boot/efi" "$R/srv/secret"
else
        echo "UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1" >"$R/etc/fstab"
fi
if [ "$kind" = gpt ]; then
        echo "UUID=$ESP_UUID /boot/efi vfat umask=0077 0 1" >>"$R/etc/fstab"
        mkdir -p "$R/boot/efi"
fi

# /etc/kura-marker.conf: NAME FSTYPE UUID PATH... (disk-init.sh checksums these files)
if [ "$kind" = gpt ]; then
        cat >"$R/etc/kura-marker.conf" <<EOF
esp vfat $ESP_UUID /KURA/KNOWN.TXT /EFI/BOOT/BOOTX64.EFI /EFI/debian/grubx64.efi
root ext4 - /etc/kura-known.bin /etc/kura-known.txt /boot/grub/grub.cfg /boot/vmlinuz-$KVER
xfs xfs $XFS_UUID /known.bin /dir/sub/known.txt
btrfs btrfs $BTRFS_UUID /known.bin /dir/known.txt
EOF
        mkdir -p "$R/mnt/esp" "$R/mnt/xfs" "$R/mnt/btrfs"
elif [ "$kind" = lvm ]; then
        cat >"$R/etc/kura-marker.conf" <<EOF
esp vfat $ESP_UUID /KURA/KNOWN.TXT /EFI/BOOT/BOOTX64.EFI /EFI/debian/grubx64.efi
boot ext4 $BOOT_UUID /kura-known.txt /grub/grub.cfg /vmlinuz-$KVER /initrd.img-$KVER
root ext4 - /etc/kura-known.bin /etc/kura-known.txt
luks ext4 $LUKSFS_UUID /known.bin /dir/known.txt
EOF
        mkdir -p "$R/mnt/esp" "$R/mnt/boot" "$R/mnt/luks"
else
        cat >"$R/etc/kura-marker.conf" <<EOF
root ext4 - /etc/kura-known.bin /etc/kura-known.txt /boot/grub/grub.cfg /boot/vmlinuz-$KVER
data ext4 $DATA_UUID /known.bin /dir/known.txt
EOF
        mkdir -p "$R/mnt/data"
fi
find "$R" "$BT" -exec touch -h -d "$FIXED_TIME" {} +

# ---- GRUB images: the embedded early config finds the root by its UUID -------------------
cat >"$work/early.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
search --no-floppy --fs-uuid --set=root ${BOOT_UUID:-$ROOT_UUID}
set prefix=(\$root)$BP/grub
EOF
# i386-pc: every module does not fit (0xb176b > the 0x78000 limit of core.img),
# so this list.  x86_64-efi: every module but GRUB's native disk drivers (with
# ahci, pata, ohci/uhci/ehci/usbms or nativedisk built in, GRUB takes the
# controllers from the firmware and "search" finds no disk under OVMF) and
# the self-tests.
PC_MODS="biosdisk part_gpt part_msdos ext2 fat xfs btrfs linux normal search search_fs_uuid
 search_fs_file search_label configfile echo serial terminal terminfo gzio test ls cat halt
 reboot minicmd boot sleep loadenv"
# shellcheck disable=SC2086
grub-mkimage -O i386-pc -c "$work/early.cfg" -p $BP/grub -o "$work/core.img" $PC_MODS
# shellcheck disable=SC2046
grub-mkimage -O x86_64-efi -c "$work/early.cfg" -p $BP/grub -o "$work/grubx64.efi" \
        $(cd "$GRUBEFI" && ls -- *.mod | sed 's/\.mod$//' |
                grep -Ev '^(ahci|pata|ata|ohci|uhci|ehci|usb.*|nativedisk|.*_test|functional_test|test_blockarg)$')

# ---- filesystems (each built in its own file, then copied into the disk) ---------------
mkext4() { # IMG SIZE(MiB) UUID LABEL [DIR]
        truncate -s "$2M" "$1"
        # 4 KiB blocks: mke2fs would choose 1 KiB for a "small" filesystem, which
        # cannot be mounted on a disk with 4096-byte sectors.
        mkfs.ext4 -q -F -b 4096 -U "$3" -E "hash_seed=$3,root_owner=0:0" -L "$4" ${5:+-d "$5"} "$1"
}
if [ "$kind" = lvm ]; then
        mkext4 "$work/p-root.img" "$LV_MIB" "$ROOT_UUID" kura-root "$R"
        mkext4 "$work/p-boot.img" 64 "$BOOT_UUID" kura-boot "$BT"
        # The LUKS volume's plaintext: its partition less the 16 MiB LUKS2 header.
        mkdir -p "$work/luks/dir"
        rand luks-known $MiB >"$work/luks/known.bin"
        text luks 100 >"$work/luks/dir/known.txt"
        find "$work/luks" -exec touch -h -d "$FIXED_TIME" {} +
        mkext4 "$work/p-luks.img" $(($(part_field 5 4) - 16)) "$LUKSFS_UUID" kura-secret "$work/luks"
        printf '%s' "$LUKS_KEY" >"$work/luks.key"
else
        mkext4 "$work/p-root.img" "$(part_field "$([ "$kind" = gpt ] && echo 3 || echo 1)" 4)" "$ROOT_UUID" kura-root "$R"
fi

if [ "$kind" != mbr ]; then
        # ESP: FAT (16 at this size), fixed volume id; 4096-byte sectors on a 4Kn disk.
        truncate -s 32M "$work/p-esp.img"
        mkfs.vfat -i "$ESP_ID" -n KURA-ESP -S "$ss" "$work/p-esp.img" >/dev/null
        text esp 40 >"$work/known-esp.txt"
        touch -d "$FIXED_TIME" "$work/grubx64.efi" "$work/known-esp.txt"
        E=(-i "$work/p-esp.img")
        mmd "${E[@]}" ::/EFI ::/EFI/BOOT ::/EFI/debian ::/KURA
        mcopy -m "${E[@]}" "$work/grubx64.efi" ::/EFI/BOOT/BOOTX64.EFI
        mcopy -m "${E[@]}" "$work/grubx64.efi" ::/EFI/debian/grubx64.efi
        mcopy -m "${E[@]}" "$work/known-esp.txt" ::/KURA/KNOWN.TXT
fi
if [ "$kind" = gpt ]; then
        truncate -s 8M "$work/p-swap.img"
        mkswap -q -U "$SWAP_UUID" -L kura-swap "$work/p-swap.img" >/dev/null

        mkdir -p "$work/xfs/dir/sub" "$work/btrfs/dir"
        rand xfs-known $MiB >"$work/xfs/known.bin"
        text xfs 100 >"$work/xfs/dir/sub/known.txt"
        rand btrfs-known $MiB >"$work/btrfs/known.bin"
        text btrfs 100 >"$work/btrfs/dir/known.txt"
        find "$work/xfs" "$work/btrfs" -exec touch -h -d "$FIXED_TIME" {} +
        cat >"$work/xfs.proto" <<EOF
/dev/null
0 0
d--755 0 0
known.bin ---644 0 0 $work/xfs/known.bin
dir d--755 0 0
sub d--755 0 0
known.txt ---644 0 0 $work/xfs/dir/sub/known.txt
\$
\$
\$
EOF
        truncate -s 400M "$work/p-xfs.img"
        xfs_ss=()
        [ "$ss" = 4096 ] && xfs_ss=(-s size=4096)
        mkfs.xfs -q -f -m uuid="$XFS_UUID" -L kura-xfs "${xfs_ss[@]}" -p "$work/xfs.proto" "$work/p-xfs.img"
        truncate -s 257M "$work/p-btrfs.img"
        mkfs.btrfs -q -f -U "$BTRFS_UUID" -L kura-btrfs --rootdir "$work/btrfs" "$work/p-btrfs.img" >/dev/null
elif [ "$kind" = mbr ]; then
        mkdir -p "$work/data/dir"
        rand data-known $MiB >"$work/data/known.bin"
        text data 100 >"$work/data/dir/known.txt"
        find "$work/data" -exec touch -h -d "$FIXED_TIME" {} +
        mkext4 "$work/p-data.img" 199 "$DATA_UUID" kura-data "$work/data"
fi

# ---- the disk: partition table, filesystems, boot code -----------------------------------
rm -f "$out"
truncate -s "$DISK_SIZE" "$out"
{
        if [ "$kind" != mbr ]; then
                echo "label: gpt"
                echo "label-id: $DISK_GUID"
                echo "$PARTS" | while read -r n name start size type; do
                        echo "start=${start}MiB, size=${size}MiB, type=$type, uuid=$(pguid "$n"), name=\"$name\""
                done
        else
                echo "label: dos"
                echo "label-id: 0x$DISK_ID"
                echo "start=1MiB, size=200MiB, type=83, bootable"
                echo "start=201MiB, size=199MiB, type=83"
        fi
} >"$work/sfdisk.in"
if [ "$ss" = 512 ]; then
        sfdisk -q --no-reread --no-tell-kernel "$out" <"$work/sfdisk.in" >/dev/null
else
        # sfdisk takes the sector size from the device: a loop device with 4096-byte sectors.
        loopdev=$(losetup -f --show -b "$ss" "$out")
        sfdisk -q --no-reread --no-tell-kernel "$loopdev" <"$work/sfdisk.in" >/dev/null
        sync
        losetup -d "$loopdev"
        loopdev=
fi
put() { # FILE OFFSET(MiB)
        dd if="$1" of="$out" bs=1M seek="$2" conv=notrunc,sparse status=none
}
if [ "$kind" = gpt ]; then
        put "$work/core.img" 1
        put "$work/p-esp.img" 2
        put "$work/p-root.img" 34
        put "$work/p-swap.img" 234
        put "$work/p-xfs.img" 242
        put "$work/p-btrfs.img" 642
        core_lba=$((MiB / ss))
elif [ "$kind" = lvm ]; then
        put "$work/core.img" 1
        put "$work/p-esp.img" 2
        put "$work/p-boot.img" 34
        core_lba=$((MiB / ss))
else
        # core.img in the gap after the MBR (sectors 1..2047)
        [ "$(stat -c %s "$work/core.img")" -le $((2047 * 512)) ] || die "core.img does not fit in the MBR gap"
        dd if="$work/core.img" of="$out" bs=512 seek=1 conv=notrunc status=none
        put "$work/p-root.img" 1
        put "$work/p-data.img" 201
        core_lba=1
fi
# What grub-bios-setup does: boot.img's 440 bytes of code into the MBR (the
# disk signature and the partition table stay), with the LBA of core.img at
# 0x5c (8 bytes LE) and the "buggy BIOS" drive check at 0x66 replaced by two
# NOPs; in core.img's first sector (diskboot.img) the first blocklist entry
# (0x1f4: start LBA, 8 bytes) points at the sector after it.
le64() { local v=$1 i; for ((i = 0; i < 8; i++)); do printf "\\x$(printf %02x $(((v >> (8 * i)) & 255)))"; done; }
cp "$GRUBPC/boot.img" "$work/boot.img"
le64 "$core_lba" | dd of="$work/boot.img" bs=1 seek=$((0x5c)) conv=notrunc status=none
printf '\x90\x90' | dd of="$work/boot.img" bs=1 seek=$((0x66)) conv=notrunc status=none
dd if="$work/boot.img" of="$out" bs=440 count=1 conv=notrunc status=none
le64 $((core_lba + 1)) | dd of="$out" bs=1 seek=$((core_lba * ss + 0x1f4)) conv=notrunc status=none

# ---- lvm: the PV (VG, LV root) and the LUKS volume, made in a qemu guest -----------------
if [ "$kind" = lvm ]; then
        "$HERE/run.sh" --disk "$out" --module dm_crypt --timeout 300 --log "$work/guest.log" -- \
                bash "$HERE/guest-make-lvm-disk.sh" "$work" "$PV_UUID" "$VG" "$LV" "$LV_MIB" \
                "$LUKS_UUID" "$LUKS_NAME" >"$work/guest.out" 2>&1 ||
                { cat "$work/guest.out" >&2; die "the guest that makes the LVM and LUKS parts failed"; }
        grep -q '^guest-mklvm: done' "$work/guest.out" || { cat "$work/guest.out" >&2; die "guest-make-lvm-disk.sh did not finish"; }
fi

# ---- the marker this disk must print ----------------------------------------------------
if [ -n "$expected" ]; then
        sumof() { sha256sum "$1" | cut -d' ' -f1; }
        {
                echo "KURA-MARKER-BEGIN"
                echo "KURA-MARKER root-uuid=$ROOT_UUID"
                if [ "$kind" = lvm ]; then
                        echo "KURA-MARKER table=gpt disk-guid=$DISK_GUID"
                        echo "$PARTS" | while read -r n name start size type; do
                                echo "KURA-MARKER part $n type=$type uuid=$(pguid "$n") name=$name"
                        done
                        echo "KURA-MARKER lvm part 4 pv-uuid=$PV_UUID vg=$VG lv=$LV"
                        echo "KURA-MARKER luks part 5 version=2 uuid=$LUKS_UUID open=$LUKS_NAME"
                        for f in /KURA/KNOWN.TXT:known-esp.txt /EFI/BOOT/BOOTX64.EFI:grubx64.efi /EFI/debian/grubx64.efi:grubx64.efi; do
                                echo "KURA-MARKER file esp:${f%%:*} sha256=$(sumof "$work/${f#*:}")"
                        done
                        for f in /kura-known.txt /grub/grub.cfg "/vmlinuz-$KVER" "/initrd.img-$KVER"; do
                                echo "KURA-MARKER file boot:$f sha256=$(sumof "$BT$f")"
                        done
                        for f in /etc/kura-known.bin /etc/kura-known.txt; do
                                echo "KURA-MARKER file root:$f sha256=$(sumof "$R$f")"
                        done
                        for f in /known.bin /dir/known.txt; do echo "KURA-MARKER file luks:$f sha256=$(sumof "$work/luks$f")"; done
                        echo "KURA-MARKER swap none"
                        echo "KURA-MARKER gpt-warnings=none"
                        echo "KURA-MARKER-END"
                        exit 0
                fi
                if [ "$kind" = gpt ]; then
                        echo "KURA-MARKER table=gpt disk-guid=$DISK_GUID"
                        echo "$PARTS" | while read -r n name start size type; do
                                echo "KURA-MARKER part $n type=$type uuid=$(pguid "$n") name=$name"
                        done
                        for f in /KURA/KNOWN.TXT:known-esp.txt /EFI/BOOT/BOOTX64.EFI:grubx64.efi /EFI/debian/grubx64.efi:grubx64.efi; do
                                echo "KURA-MARKER file esp:${f%%:*} sha256=$(sumof "$work/${f#*:}")"
                        done
                else
                        echo "KURA-MARKER table=dos disk-id=0x$DISK_ID"
                        echo "KURA-MARKER part 1 type=0x83 uuid=$DISK_ID-01 boot=yes"
                        echo "KURA-MARKER part 2 type=0x83 uuid=$DISK_ID-02 boot=no"
                fi
                for f in /etc/kura-known.bin /etc/kura-known.txt /boot/grub/grub.cfg "/boot/vmlinuz-$KVER"; do
                        echo "KURA-MARKER file root:$f sha256=$(sumof "$R$f")"
                done
                if [ "$kind" = gpt ]; then
                        for f in /known.bin /dir/sub/known.txt; do echo "KURA-MARKER file xfs:$f sha256=$(sumof "$work/xfs$f")"; done
                        for f in /known.bin /dir/known.txt; do echo "KURA-MARKER file btrfs:$f sha256=$(sumof "$work/btrfs$f")"; done
                        echo "KURA-MARKER swap uuid=$SWAP_UUID"
                else
                        for f in /known.bin /dir/known.txt; do echo "KURA-MARKER file data:$f sha256=$(sumof "$work/data$f")"; done
                        echo "KURA-MARKER swap none"
                fi
                echo "KURA-MARKER gpt-warnings=none"
                echo "KURA-MARKER-END"
        } >"$expected"
fi
exit 0
