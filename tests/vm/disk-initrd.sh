#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the initramfs of kura's bootable test disks (tests/vm/make-test-disk.sh).
# busybox-static only.  Loads virtio + ext4 (deliberately no AHCI, NVMe or
# SCSI driver: a disk on another controller must fail to find its root), waits
# for root=UUID=... from the kernel command line, mounts it read-only and
# switch_root's to its /sbin/init (tests/vm/disk-init.sh).
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
        i=$((i + 1))
        [ "$i" -le 75 ] || failed "root UUID=$uuid not found (no driver for this disk controller?)"
        sleep 0.2
done
mkdir -p /newroot
mount -t ext4 -o ro "$dev" /newroot || failed "cannot mount the root $dev (UUID=$uuid)"
[ -x /newroot/sbin/init ] || failed "no /sbin/init on the root $dev"
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /sbin/init
failed "switch_root failed"
