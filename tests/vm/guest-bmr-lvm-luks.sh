#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs INSIDE the guest:
#   tests/vm/run.sh --disk SRC --disk DST --share OUT -- bash THIS OUT DATA
# SRC (/dev/vda) is a GPT disk made on the host with sfdisk: p1 Linux
# filesystem, p2 Linux LVM, p3 Linux filesystem; DST (/dev/vdb) an empty disk
# at least as large.  DATA (read through the host's 9p root) holds known
# files f1..f5 and the LUKS key file "key".  Builds: ext4 on p1; on p2 a PV,
# a VG "kbmr" with LVs "root" and "data" (ext4 each, known files) and free
# extents for the lvm snapshot provider; on p3 LUKS2 (the key file, cheap
# PBKDF) opened as "kcrypt" with ext4 and known files inside.  Then
#   kura backup --disk /dev/vda (repository on a tmpfs; --snapshot auto)
#   kura bmr onto /dev/vdb while kbmr is still visible: refused (two VGs of one name)
#   kura bmr --luks-key-file KEY onto /dev/vdb, with LVM seeing only /dev/vdb
# and checks on /dev/vdb: PV UUID, VG and LV names and sizes, the files in
# each LV and in the LUKS volume (sha256), the LUKS UUID, and that the old
# key opens it.  Results in OUT (the host test also reads them).
# LVM runs without udev (DM_DISABLE_UDEV=1, lvm.conf in $LVM_SYSTEM_DIR, which
# kura's lvm calls read too); it scans only the disk each step is about.
set -euo pipefail
OUT=${1:?usage: guest-bmr-lvm-luks.sh OUTDIR DATADIR}
DATA=${2:?usage: guest-bmr-lvm-luks.sh OUTDIR DATADIR}
SRC=/dev/vda DST=/dev/vdb VG=kbmr
KEY=$DATA/key
say() { echo "guest-bmr: [$(cut -d" " -f1 /proc/uptime)] $*"; }
fail() {
        echo "guest-bmr: FAIL: $*"
        trap - EXIT
        exit 1
}
trap 'rc=$?; [ "$rc" = 0 ] || echo "guest-bmr: FAIL: exit status $rc (the last command above failed)"' EXIT
trap 'echo "guest-bmr: line $LINENO failed: $BASH_COMMAND"' ERR

[ -b ${SRC}1 ] && [ -b ${SRC}2 ] && [ -b ${SRC}3 ] || fail "no ${SRC}1..3: the kernel did not parse the GPT"
[ -b $DST ] || fail "no $DST"
export DM_DISABLE_UDEV=1
export LVM_SYSTEM_DIR=/tmp/lvmsys
mkdir -p $LVM_SYSTEM_DIR
lvm_scan() { # DISK: LVM sees only the partitions of DISK
        cat >$LVM_SYSTEM_DIR/lvm.conf <<EOC
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
devices { obtain_device_list_from_udev = 0 use_devicesfile = 0 global_filter = [ "a|^$1[0-9]+\$|", "r|.*|" ] }
global { use_lvmpolld = 0 }
EOC
}
lvm_scan $SRC
sha() { sha256sum "$1" | cut -d' ' -f1; }
ck() { # DIR TAG: the files of DIR as "name sha" lines
        (cd "$1" && for f in *; do if [ -f "$f" ]; then echo "$f $(sha "$f")"; fi; done)
}

# ---- the source disk ---------------------------------------------------------------
mkfs.ext4 -q -L kboot ${SRC}1
lvm pvcreate -q -y -ff ${SRC}2 >/dev/null
lvm vgcreate -q $VG ${SRC}2 >/dev/null
lvm lvcreate -q -y -L 24M -n root $VG >/dev/null
lvm lvcreate -q -y -L 16M -n data $VG >/dev/null
mkfs.ext4 -q -L kroot /dev/$VG/root
mkfs.ext4 -q -L kdata /dev/$VG/data
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$KEY" ${SRC}3
cryptsetup open --key-file "$KEY" ${SRC}3 kcrypt
mkfs.ext4 -q -L kcrypt /dev/mapper/kcrypt
say "p1 ext4, p2 PV/VG $VG (root, data), p3 LUKS2 open as kcrypt: made"
mkdir -p /mnt/a
fill() { # DEV FILES...
        local dev=$1
        shift
        mount "$dev" /mnt/a
        for f in "$@"; do cp "$DATA/$f" /mnt/a/; done
        umount /mnt/a
}
fill ${SRC}1 f1
fill /dev/$VG/root f2 f3
fill /dev/$VG/data f4
fill /dev/mapper/kcrypt f5 f1
lvm pvs --noheadings -o pv_uuid ${SRC}2 | tr -d ' ' >"$OUT/pv_uuid"
cryptsetup luksUUID ${SRC}3 >"$OUT/luks_uuid"
lvm lvs --noheadings --units b --nosuffix -o lv_name,lv_size $VG | awk '{print $1, $2}' | sort >"$OUT/lvs.src"
say "files written; PV $(cat "$OUT/pv_uuid"), LUKS $(cat "$OUT/luks_uuid")"

# ---- kura backup ----------------------------------------------------------------------
export KURA_CONFIG_DIR=/tmp/kc KURA_STATE_DIR=/tmp/ks KURA_CACHE_DIR=/tmp/kk KURA_PASSWORD=guest-bmr-pass
mkdir -p /tmp/krepo "$KURA_CONFIG_DIR" "$KURA_STATE_DIR" "$KURA_CACHE_DIR"
mount -t tmpfs -o size=160m kurarepo /tmp/krepo
R=/tmp/krepo/repo
"$KURA" --repo $R init --kdf-memory 1M --kdf-passes 1 >/tmp/k.out 2>&1 || { cat /tmp/k.out; fail "kura init"; }
t0=$(cut -d" " -f1 /proc/uptime)
"$KURA" --repo $R backup --disk $SRC --snapshot auto >"$OUT/backup.out" 2>&1 || { cat "$OUT/backup.out"; fail "kura backup --disk $SRC"; }
t1=$(cut -d" " -f1 /proc/uptime)
cat "$OUT/backup.out"
say "kura backup --disk took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
"$KURA" --repo $R versions --json >"$OUT/versions.json" 2>&1 || { cat "$OUT/versions.json"; fail "kura versions"; }
# Nothing of kura's snapshots is left behind.
lvm lvs --noheadings -o lv_name $VG | awk '{print $1}' | sort | tr '\n' ' ' >"$OUT/lvs.after-backup"
say "LVs after the backup: $(cat "$OUT/lvs.after-backup")"

# ---- bmr while the source VG is visible: refused -------------------------------------
set +e
"$KURA" --repo $R bmr --version latest --disk-map disk0=$DST --yes --luks-key-file "$KEY" >"$OUT/bmr-dup.out" 2>&1
echo $? >"$OUT/bmr-dup.rc"
set -e
cat "$OUT/bmr-dup.out"

# ---- the "dead server": its disk is gone; LVM sees only the target -------------------------
cryptsetup close kcrypt
lvm vgchange -q -an $VG >/dev/null
lvm_scan $DST
# A wrong key is refused clearly (the header is written back first).
head -c 32 /dev/zero >/tmp/wrong.key
set +e
"$KURA" --repo $R bmr --version latest --disk-map disk0=$DST --yes --luks-key-file /tmp/wrong.key >"$OUT/bmr-wrongkey.out" 2>&1
echo $? >"$OUT/bmr-wrongkey.rc"
set -e
cat "$OUT/bmr-wrongkey.out"
# That run left the VG kbmr (inactive) on the target's p2: running kura bmr
# again overwrites it (it is on the target partition itself).
t0=$(cut -d" " -f1 /proc/uptime)
"$KURA" --repo $R bmr --version latest --disk-map disk0=$DST --yes --luks-key-file "$KEY" >"$OUT/bmr.out" 2>&1 ||
        { cat "$OUT/bmr.out"; fail "kura bmr onto $DST"; }
t1=$(cut -d" " -f1 /proc/uptime)
cat "$OUT/bmr.out"
say "kura bmr took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"

# ---- checks on the target ----------------------------------------------------------------
[ -z "$(dmsetup ls | grep -v 'No devices found' || true)" ] || { dmsetup ls; fail "dm devices left after kura bmr"; }
lvm pvs --noheadings -o pv_uuid,vg_name ${DST}2 | awk '{print $1}' >"$OUT/pv_uuid.dst"
lvm vgchange -q -ay $VG >/dev/null
lvm lvs --noheadings --units b --nosuffix -o lv_name,lv_size $VG | awk '{print $1, $2}' | sort >"$OUT/lvs.dst"
: >"$OUT/files.dst"
look() { # DEV TAG
        mount -o ro "$1" /mnt/a
        ck /mnt/a | sed "s/^/$2 /" >>"$OUT/files.dst"
        umount /mnt/a
        fsck.ext4 -fn "$1" >/dev/null 2>&1 || echo "$2 fsck-failed" >>"$OUT/files.dst"
}
look ${DST}1 p1
look /dev/$VG/root root
look /dev/$VG/data data
lvm vgchange -q -an $VG >/dev/null
cryptsetup luksUUID ${DST}3 >"$OUT/luks_uuid.dst"
cryptsetup open --key-file "$KEY" ${DST}3 kcheck
look /dev/mapper/kcheck luks
cryptsetup close kcheck
cat "$OUT/files.dst"
say "checks written to $OUT"
say "PASS"
