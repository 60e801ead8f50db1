#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs INSIDE the guest:
#   tests/vm/run.sh --disk SRC --disk DST --share OUT --module dm_crypt -- bash THIS OUT KEY
# SRC (/dev/vda) is the bootable lvm test disk (tests/vm/make-test-disk.sh
# --kind lvm): p1 BIOS boot, p2 ESP, p3 ext4 /boot, p4 LVM PV (VG kuravg, LV
# root), p5 LUKS2 opened with the key file KEY (read through the 9p root).
# DST (/dev/vdb) is an empty disk at least as large.  As on a running server:
# the VG is active and the LUKS volume open as "kuracrypt"; then
#   kura backup --disk /dev/vda (repository on a tmpfs; --snapshot auto)
#   kura bmr onto /dev/vdb while kuravg is still visible: refused (two VGs of one name)
#   the "dead server": the mapping closed, the VG deactivated, LVM sees only /dev/vdb
#   kura bmr --luks-key-file WRONG: refused
#   kura bmr --luks-key-file KEY onto /dev/vdb
# and records in OUT, for the host test: PV UUID, LVs and sizes, LUKS UUID
# (before and after), fsck of the restored root LV and LUKS filesystem, that
# the key opens the restored LUKS volume, and no dm device left by kura.  The
# host then boots DST under UEFI and BIOS (the marker checks every file).
# LVM runs without udev (DM_DISABLE_UDEV=1, lvm.conf in $LVM_SYSTEM_DIR, which
# kura's lvm calls read too); it scans only the disk each step is about.
set -euo pipefail
OUT=${1:?usage: guest-bmr-lvm-luks.sh OUTDIR KEYFILE}
KEY=${2:?usage: guest-bmr-lvm-luks.sh OUTDIR KEYFILE}
SRC=/dev/vda DST=/dev/vdb VG=kuravg MAP=kuracrypt
say() { echo "guest-bmr: [$(cut -d" " -f1 /proc/uptime)] $*"; }
fail() {
        echo "guest-bmr: FAIL: $*"
        trap - EXIT
        exit 1
}
trap 'rc=$?; [ "$rc" = 0 ] || echo "guest-bmr: FAIL: exit status $rc (the last command above failed)"' EXIT
trap 'echo "guest-bmr: line $LINENO failed: $BASH_COMMAND"' ERR
since() { awk -v a="$1" -v b="$(cut -d" " -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }'; }

[ -b ${SRC}4 ] && [ -b ${SRC}5 ] || fail "no ${SRC}4/${SRC}5: the kernel did not parse the GPT"
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

# ---- the running "server" ---------------------------------------------------------
lvm_scan $SRC
lvm vgchange -q -ay $VG >/dev/null
cryptsetup open --key-file "$KEY" ${SRC}5 $MAP
lvm pvs --noheadings -o pv_uuid ${SRC}4 | tr -d ' ' >"$OUT/pv_uuid"
cryptsetup luksUUID ${SRC}5 >"$OUT/luks_uuid"
lvm lvs --noheadings --units b --nosuffix -o lv_name,lv_size $VG | awk '{print $1, $2}' | sort >"$OUT/lvs.src"
say "VG $VG active, ${SRC}5 open as $MAP; PV $(cat "$OUT/pv_uuid"), LUKS $(cat "$OUT/luks_uuid")"

# ---- kura backup ----------------------------------------------------------------------
export KURA_CONFIG_DIR=/tmp/kc KURA_STATE_DIR=/tmp/ks KURA_CACHE_DIR=/tmp/kk KURA_PASSWORD=guest-bmr-pass
mkdir -p /tmp/krepo "$KURA_CONFIG_DIR" "$KURA_STATE_DIR" "$KURA_CACHE_DIR"
mount -t tmpfs -o size=200m kurarepo /tmp/krepo
R=/tmp/krepo/repo
"$KURA" --repo $R init --kdf-memory 1M --kdf-passes 1 >/tmp/k.out 2>&1 || { cat /tmp/k.out; fail "kura init"; }
t0=$(cut -d" " -f1 /proc/uptime)
"$KURA" --repo $R backup --disk $SRC --snapshot auto >"$OUT/backup.out" 2>&1 || { cat "$OUT/backup.out"; fail "kura backup --disk $SRC"; }
cat "$OUT/backup.out"
say "kura backup --disk took $(since "$t0") s"
"$KURA" --repo $R versions --json >"$OUT/versions.json" 2>&1 || { cat "$OUT/versions.json"; fail "kura versions"; }
# Nothing of kura's snapshots is left behind.
lvm lvs --noheadings -o lv_name $VG | awk '{print $1}' | sort | tr '\n' ' ' >"$OUT/lvs.after-backup"
say "LVs after the backup: $(cat "$OUT/lvs.after-backup")"

# ---- bmr while the source VG is visible: refused -------------------------------------
rc=0
"$KURA" --repo $R bmr --version latest --disk-map disk0=$DST --yes --luks-key-file "$KEY" >"$OUT/bmr-dup.out" 2>&1 || rc=$?
echo $rc >"$OUT/bmr-dup.rc"
cat "$OUT/bmr-dup.out"
# Refused before anything was written: the target's first MiB is still zeros.
if cmp -s -n 1048576 "$DST" /dev/zero; then echo untouched; else echo written; fi >"$OUT/bmr-dup.target"

# ---- the "dead server": its disk is gone; LVM sees only the target -------------------------
cryptsetup close $MAP
lvm vgchange -q -an $VG >/dev/null
lvm_scan $DST
# A wrong key is refused clearly.
head -c 32 /dev/zero >/tmp/wrong.key
rc=0
"$KURA" --repo $R bmr --version latest --disk-map disk0=$DST --yes --luks-key-file /tmp/wrong.key >"$OUT/bmr-wrongkey.out" 2>&1 || rc=$?
echo $rc >"$OUT/bmr-wrongkey.rc"
cat "$OUT/bmr-wrongkey.out"
# That run may have left a VG kuravg (inactive) on the target's p4: kura bmr
# overwrites it (it is on the target partition itself).
t0=$(cut -d" " -f1 /proc/uptime)
"$KURA" --repo $R bmr --version latest --disk-map disk0=$DST --yes --luks-key-file "$KEY" >"$OUT/bmr.out" 2>&1 ||
        { cat "$OUT/bmr.out"; fail "kura bmr onto $DST"; }
cat "$OUT/bmr.out"
say "kura bmr took $(since "$t0") s"

# ---- checks on the target (files: the host boots it and compares the marker) -----------
dmsetup ls 2>/dev/null | grep -v 'No devices found' >"$OUT/dm.after-bmr" || true
lvm pvs --noheadings -o pv_uuid,vg_name ${DST}4 | awk '{print $1}' >"$OUT/pv_uuid.dst"
lvm vgchange -q -ay $VG >/dev/null
lvm lvs --noheadings --units b --nosuffix -o lv_name,lv_size $VG | awk '{print $1, $2}' | sort >"$OUT/lvs.dst"
: >"$OUT/fsck.dst"
fsck.ext4 -fn /dev/$VG/root >/dev/null 2>&1 && echo "root clean" >>"$OUT/fsck.dst" || echo "root NOT clean" >>"$OUT/fsck.dst"
lvm vgchange -q -an $VG >/dev/null
cryptsetup luksUUID ${DST}5 >"$OUT/luks_uuid.dst"
cryptsetup open --key-file "$KEY" ${DST}5 kcheck
fsck.ext4 -fn /dev/mapper/kcheck >/dev/null 2>&1 && echo "luks clean" >>"$OUT/fsck.dst" || echo "luks NOT clean" >>"$OUT/fsck.dst"
cryptsetup close kcheck
cat "$OUT/fsck.dst"
sync
say "checks written to $OUT"
say "PASS"
