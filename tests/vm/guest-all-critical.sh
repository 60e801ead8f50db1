#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Inside a tests/vm/run.sh guest (t1270): /dev/vda is a bootable test disk
# (tests/vm/make-test-disk.sh), /dev/vdb an empty disk of the same size, $1 a
# writable share for the repository and the results.  The test disk's system
# is mounted at /target as a rescue system would; kura finds its critical
# volumes, refuses a live root without a snapshot, backs the critical disks
# up (read-only mounts) and restores them onto /dev/vdb with kura bmr.
set -u
S=$1
KURA=${KURA:?}
export KURA_PASSWORD=guest-pass KURA_REPO=$S/repo
cd /
r() { echo "+ kura $*" >&2; "$KURA" "$@"; }

# The system's own fstab names / and /boot/efi by UUID (the test disk has none).
mkdir -p /target
mount /dev/vda3 /target || exit 10
mkdir -p /target/boot/efi
root_uuid=$(blkid -p -o value -s UUID /dev/vda3)
esp_uuid=$(blkid -p -o value -s UUID /dev/vda2)
printf 'UUID=%s / ext4 defaults 0 1\nUUID=%s /boot/efi vfat umask=0077 0 1\n' "$root_uuid" "$esp_uuid" >/target/etc/fstab
mount -t vfat -o ro /dev/vda2 /target/boot/efi || exit 11

r critical --root /target --json >"$S/critical.json" 2>"$S/critical.err"
echo "critical: $?" >>"$S/rc"
r init --kdf-memory 1M --kdf-passes 1 >/dev/null || exit 12

# / mounted read-write on a plain partition: no provider can hold it still.
r backup --all-critical --root /target >"$S/live.out" 2>&1
echo "live: $?" >>"$S/rc"

# Read-only (what a rescue system does): consistent, offline.
mount -o remount,ro /target || exit 13
r backup --all-critical --root /target --json >"$S/backup.json" 2>"$S/backup.err"
echo "backup: $?" >>"$S/rc"
r versions --json >"$S/versions.json"
umount /target/boot/efi /target || exit 14

r bmr --version latest --disk-map disk0=/dev/vdb --yes --tmpdir /tmp >"$S/bmr.out" 2>&1
echo "bmr: $?" >>"$S/rc"
sync
cat "$S/rc"
