#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs INSIDE a qemu guest for tests/vm/make-test-disk.sh --kind lvm (the host
# has no device-mapper):
#   tests/vm/run.sh --disk IMG --module dm_crypt -- bash THIS WORK PV_UUID VG LV LV_MIB LUKS_UUID LUKS_NAME
# IMG (/dev/vda) is the partitioned test disk; WORK (the host's work directory,
# read through the 9p root) holds p-root.img (the root ext4, LV_MIB MiB),
# p-luks.img (the ext4 to put inside the LUKS volume) and luks.key.  Makes
#   /dev/vda4: PV with the fixed UUID PV_UUID, VG VG, linear LV LV of LV_MIB MiB
#              holding p-root.img (the rest of the VG stays free: room for
#              snapshots);
#   /dev/vda5: LUKS2 with the fixed UUID LUKS_UUID, the key file as keyslot 0
#              (pbkdf2, 1000 iterations: cheap to open under TCG), p-luks.img
#              written through the mapping LUKS_NAME.
# Prints "guest-mklvm: done" when everything is written and closed.
set -euo pipefail
WORK=$1 PV_UUID=$2 VG=$3 LV=$4 LV_MIB=$5 LUKS_UUID=$6 LUKS_NAME=$7
DEV=/dev/vda
say() { echo "guest-mklvm: [$(cut -d" " -f1 /proc/uptime)] $*"; }
trap 'echo "guest-mklvm: line $LINENO failed: $BASH_COMMAND"' ERR

[ -b ${DEV}4 ] && [ -b ${DEV}5 ] || { say "no ${DEV}4/${DEV}5: the kernel did not parse the GPT"; exit 1; }
# LVM without udev; it scans only the PV partition.
export DM_DISABLE_UDEV=1 LVM_SYSTEM_DIR=/tmp/lvmsys
mkdir -p $LVM_SYSTEM_DIR
cat >$LVM_SYSTEM_DIR/lvm.conf <<EOC
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
devices { obtain_device_list_from_udev = 0 use_devicesfile = 0 global_filter = [ "a|^${DEV}4\$|", "r|.*|" ] }
global { use_lvmpolld = 0 }
backup { backup = 0 archive = 0 }
EOC
lvm pvcreate -q -y -ff --uuid "$PV_UUID" --norestorefile ${DEV}4 >/dev/null
lvm vgcreate -q "$VG" ${DEV}4 >/dev/null
lvm lvcreate -q -y -W n -Z n -L "${LV_MIB}M" -n "$LV" "$VG" >/dev/null
dd if="$WORK/p-root.img" of="/dev/$VG/$LV" bs=1M conv=fsync status=none
lvm vgchange -q -an "$VG" >/dev/null
say "PV $PV_UUID, VG $VG, LV $LV ($LV_MIB MiB) written"

cryptsetup luksFormat -q --type luks2 --uuid "$LUKS_UUID" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --key-file "$WORK/luks.key" ${DEV}5
cryptsetup open --key-file "$WORK/luks.key" ${DEV}5 "$LUKS_NAME"
size=$(blockdev --getsize64 "/dev/mapper/$LUKS_NAME")
[ "$size" = "$(stat -c %s "$WORK/p-luks.img")" ] ||
        { say "the LUKS mapping has $size bytes, p-luks.img $(stat -c %s "$WORK/p-luks.img")"; exit 1; }
dd if="$WORK/p-luks.img" of="/dev/mapper/$LUKS_NAME" bs=1M conv=fsync status=none
cryptsetup close "$LUKS_NAME"
say "LUKS2 $LUKS_UUID written"
sync
echo "guest-mklvm: done"
