#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs INSIDE the guest (tests/vm/run.sh --disk IMG --share OUT -- bash THIS OUT):
# IMG is a GPT disk made on the host with sfdisk (p1 Linux filesystem, p2 LVM);
# the guest kernel parsed it into /dev/vda1 and /dev/vda2.  Builds a "server"
# on it the way an installer would: ext4 on p1 for /boot, a PV on p2 with a VG
# "kcrit" holding an ext4 LV "root" for /; mounts them at /target and
# /target/boot like a rescue system does, writes /target/etc/fstab naming
# them by UUID (plus swap and a /data line), and runs
#   kura critical --root /target --json   -> OUT/critical.json
#   kura critical --root /target          -> OUT/critical.txt
#   kura critical --json (this guest's own "/", with a root= bound over
#   /proc/cmdline)                        -> OUT/self.json
# The host test (t1230-critical.sh) checks the results.  Only /dev/vda is
# touched: LVM scans nothing else (global_filter) and runs without udev.
set -euo pipefail
OUT=${1:?usage: guest-critical-lvm.sh OUTDIR}
DEV=/dev/vda
say() { echo "guest-critical: [$(cut -d" " -f1 /proc/uptime)] $*"; }
trap 'rc=$?; [ "$rc" = 0 ] || echo "guest-critical: FAIL: exit status $rc"' EXIT

[ -b ${DEV}1 ] && [ -b ${DEV}2 ] || { say "no ${DEV}1/${DEV}2: the kernel did not parse the GPT"; exit 1; }
export DM_DISABLE_UDEV=1
mkdir -p /tmp/lvmsys
cat >/tmp/lvmsys/lvm.conf <<EOC
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
devices { obtain_device_list_from_udev = 0 global_filter = [ "a|^${DEV}2\$|", "r|.*|" ] }
global { use_lvmpolld = 0 }
EOC
# kura's lvm provider runs lvs: it must see the same configuration.
export LVM_SYSTEM_DIR=/tmp/lvmsys

mkfs.ext4 -q -L kboot ${DEV}1
pvcreate -q -y -ff ${DEV}2 >/dev/null
vgcreate -q kcrit ${DEV}2 >/dev/null
lvcreate -q -y -L 48M -n root kcrit >/dev/null
lvcreate -q -y -L 8M -n swap kcrit >/dev/null
mkfs.ext4 -q -L kroot /dev/kcrit/root
mkswap -q /dev/kcrit/swap >/dev/null 2>&1 || mkswap /dev/kcrit/swap >/dev/null
say "partitions, PV, VG, LVs and filesystems made"

mkdir -p /target
mount /dev/kcrit/root /target
mkdir -p /target/boot /target/etc /target/data
mount ${DEV}1 /target/boot
uroot=$(blkid -o value -s UUID /dev/kcrit/root)
uboot=$(blkid -o value -s UUID ${DEV}1)
cat >/target/etc/fstab <<EOF2
# /etc/fstab of the guest's "server"
UUID=$uroot / ext4 errors=remount-ro 0 1
UUID=$uboot /boot ext4 defaults 0 2
/dev/kcrit/swap none swap sw 0 0
UUID=00000000-0000-4000-8000-00000000da7a /data ext4 defaults,nofail 0 2
EOF2
printf '%s\n%s\n' "$uroot" "$uboot" >"$OUT/uuids"
cat /proc/self/mountinfo | grep /target >"$OUT/mountinfo" || true
say "mounted at /target and /target/boot"

t0=$(cut -d" " -f1 /proc/uptime)
"$KURA" critical --root /target --json >"$OUT/critical.json" 2>"$OUT/critical.err"
echo $? >"$OUT/critical.rc"
t1=$(cut -d" " -f1 /proc/uptime)
"$KURA" critical --root /target >"$OUT/critical.txt" 2>>"$OUT/critical.err" || true
cat "$OUT/critical.json" "$OUT/critical.txt" "$OUT/critical.err"
say "kura critical took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"

# The running system (root "/", here the guest's overlay) with a kernel
# command line naming the LV: a file bound over /proc/cmdline (guest only).
printf 'BOOT_IMAGE=/vmlinuz root=/dev/sda9 ro root=UUID=%s quiet\n' "$uroot" >/tmp/fake-cmdline
mount --bind /tmp/fake-cmdline /proc/cmdline
"$KURA" critical --json >"$OUT/self.json" 2>>"$OUT/critical.err"
echo $? >"$OUT/self.rc"
umount /proc/cmdline
cat "$OUT/self.json"

umount /target/boot /target
vgchange -q -an kcrit >/dev/null
say "PASS"
