#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the kura test guest (busybox ash, pid 1).  prepare.sh copies it
# into the initramfs; run.sh passes kura.conf=PATH on the kernel command line,
# PATH being a shell fragment on the host (seen through the 9p share) that sets
#   VM_KDIR     the cache directory of this kernel (its root/lib/modules/KVER)
#   VM_SCRIPT   the script to run (host path), as root, with /bin/sh
#   VM_SHARES   "tag path ..." pairs: writable 9p shares mounted at path
#   VM_MODULES  modules to load before the script
# The result goes to the serial console as "KURA-VM-RESULT: PASS" or
# "KURA-VM-RESULT: FAIL <rc>"; a guest that cannot set itself up prints
# "KURA-VM-BOOT-FAILED: <why>".  Then the guest powers off.
export PATH=/bin:/sbin

/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/null >/dev/console 2>&1

off() {
        sync
        poweroff -f
        sleep 5
        echo o >/proc/sysrq-trigger
}
boot_fail() {
        echo
        echo "KURA-VM-BOOT-FAILED: $*"
        off
}

KVER=$(cat /etc/kver)
while read -r m; do
        insmod "/modules/$m" || boot_fail "insmod $m"
done </modules/order

conf=
for a in $(cat /proc/cmdline); do
        case $a in
        kura.conf=*) conf=${a#kura.conf=} ;;
        esac
done
[ -n "$conf" ] || boot_fail "no kura.conf= on the kernel command line"

# The host's root, read-only.  cache=loose: the host does not change what the
# guest reads while it runs (run.sh writes the script before the boot).
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /host ||
        boot_fail "cannot mount the host root over 9p"
[ -f "/host$conf" ] || boot_fail "no $conf on the host root"
# shellcheck disable=SC1090
. "/host$conf"

# A writable view of it: overlay with a tmpfs upper layer.
mount -t tmpfs -o mode=755 rw /rw || boot_fail "tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
        boot_fail "cannot mount overlay over the 9p root"
R=/newroot
mount -t proc proc $R/proc || boot_fail "proc"
mount -t sysfs sysfs $R/sys || boot_fail "sysfs"
mount -o bind /dev $R/dev || boot_fail "dev"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t tmpfs -o mode=755 run $R/run || boot_fail "run"
mkdir -p $R/run/lock $R/run/lvm
# The guest kernel's modules (the host's /lib/modules holds none for it).
mkdir -p "$R/lib/modules/$KVER"
mount -o bind "/host$VM_KDIR/root/lib/modules/$KVER" "$R/lib/modules/$KVER" || boot_fail "modules"
# Modules the kernel asks for (fs-xfs, crypto-...) come from there too.
printf '#!/bin/sh\nexec /bin/chroot /newroot /sbin/modprobe "$@"\n' >/sbin/modprobe
chmod 755 /sbin/modprobe
echo /sbin/modprobe >/proc/sys/kernel/modprobe

set -- $VM_SHARES
while [ $# -ge 2 ]; do
        mkdir -p "$R$2"
        mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 "$1" "$R$2" ||
                boot_fail "cannot mount share $1 on $2"
        shift 2
done
if [ -n "$VM_MODULES" ]; then
        chroot $R /sbin/modprobe -a $VM_MODULES || boot_fail "modprobe $VM_MODULES"
fi
# Quiet the kernel while the test runs (its own messages stay in dmesg).
echo 1 >/proc/sys/kernel/printk

echo "KURA-VM-BEGIN $(cut -d' ' -f1 /proc/uptime)"
chroot $R /bin/sh "$VM_SCRIPT" </dev/null
rc=$?
echo
sync
set -- $VM_SHARES
while [ $# -ge 2 ]; do
        umount "$R$2" 2>/dev/null
        shift 2
done
if [ "$rc" = 0 ]; then
        echo "KURA-VM-RESULT: PASS"
else
        echo "KURA-VM-RESULT: FAIL $rc"
fi
off
