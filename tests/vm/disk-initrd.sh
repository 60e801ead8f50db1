#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the initramfs of kura's bootable test disks (tests/vm/make-test-disk.sh).
# busybox-static only.  Loads virtio + ext4 (deliberately no AHCI, NVMe or
# SCSI driver: a disk on another controller must fail to find its root), waits
# for root=UUID=... from the kernel command line, mounts it read-only and
# switch_root's to its /sbin/init (tests/vm/disk-init.sh).
# When the initramfs holds /sbin/lvm and /sbin/cryptsetup (kind lvm), it also
# opens the LUKS volumes of /etc/crypttab (NAME UUID=... KEYFILE luks; found by
# the LUKS header's UUID) and activates every VG (vgchange -ay), without udev,
# while it waits for the root; a LUKS volume it cannot open is reported with a
# KURA-INFO line and left closed (the root still boots).
# Failures print "KURA-BOOT-FAILED: <why>" on the console and power off.
PATH=/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

failed() {
        echo "KURA-BOOT-FAILED: $*" >/dev/console
        echo "KURA-INFO block devices: $(ls /sys/class/block 2>/dev/null | tr '\n' ' ')" >/dev/console
        sync
        poweroff -f
        sleep 60
}

for m in $(cat /modules/order); do
        insmod "/modules/$m" 2>/dev/null
done

# ---- device-mapper (only when this initramfs has the tools) --------------------
export DM_DISABLE_UDEV=1 LVM_SYSTEM_DIR=/etc/lvm
[ -x /sbin/lvm ] || [ -x /sbin/cryptsetup ] && mkdir -p /run/lock/lvm /run/lvm /run/cryptsetup
# The block device whose LUKS header carries UUID $1 (busybox findfs does not
# read LUKS headers): magic "LUKS\xba\xbe" at 0, the UUID text at 168.
luks_dev() {
        for b in /sys/class/block/*; do
                d=/dev/${b##*/}
                [ -b "$d" ] || continue
                [ "$(dd if="$d" bs=1 count=6 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 4c554b53babe ] || continue
                [ "$(dd if="$d" bs=1 skip=168 count=36 2>/dev/null)" = "$1" ] && { echo "$d"; return 0; }
        done
        return 1
}
open_crypttab() { # $1=report: say which entry could not be opened
        [ -x /sbin/cryptsetup ] && [ -f /etc/crypttab ] || return 0
        while read -r name src key _; do
                case $name in '' | '#'*) continue ;; esac
                [ -b "/dev/mapper/$name" ] && continue
                d=
                case $src in UUID=*) d=$(luks_dev "${src#UUID=}") ;; /dev/*) d=$src ;; esac
                if [ -z "$d" ]; then
                        [ -n "$1" ] && echo "KURA-INFO crypttab $name: no LUKS volume $src" >/dev/console
                        continue
                fi
                /sbin/cryptsetup open --key-file "$key" "$d" "$name" >/run/cs.err 2>&1 ||
                        { [ -n "$1" ] && echo "KURA-INFO crypttab $name: cryptsetup open $d failed: $(cat /run/cs.err)" >/dev/console; }
        done </etc/crypttab
}
activate_lvm() {
        [ -x /sbin/lvm ] && /sbin/lvm vgchange -q -ay >/dev/null 2>&1
}

uuid=
for a in $(cat /proc/cmdline); do
        case $a in
        root=UUID=*) uuid=${a#root=UUID=} ;;
        esac
done
[ -n "$uuid" ] || failed "no root=UUID=... on the kernel command line: $(cat /proc/cmdline)"

# Devices appear while the drivers probe; 15 s is plenty under TCG for virtio.
i=0
dev=
while :; do
        dev=$(findfs "UUID=$uuid" 2>/dev/null) && [ -b "$dev" ] && break
        # Every second: LUKS volumes and volume groups whose disks have appeared.
        if [ $((i % 5)) = 0 ] && { [ -x /sbin/lvm ] || [ -x /sbin/cryptsetup ]; }; then
                open_crypttab
                activate_lvm
        fi
        i=$((i + 1))
        [ "$i" -le 75 ] || failed "root UUID=$uuid not found (no driver for this disk controller?)"
        sleep 0.2
done
open_crypttab report
mkdir -p /newroot
mount -t ext4 -o ro "$dev" /newroot || failed "cannot mount the root $dev (UUID=$uuid)"
[ -x /newroot/sbin/init ] || failed "no /sbin/init on the root $dev"
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /sbin/init
failed "switch_root failed"
