#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=600
# The lvm and lvm-thin providers, inside a qemu guest (the host kernel has no
# device-mapper; tests/vm/run.sh boots Debian's kernel over the host's root).
# A small driver (t1020-snap-lvm-driver.c, linked against the build's
# libkura.a) makes one backup's worth of provider calls:
#   - lvm: a COW snapshot of a mounted ext4 LV, created while the coordinator
#     would hold the filesystem frozen; the snapshot is a clean filesystem with
#     the old file; overflowing its 4 MiB copy-on-write area makes check()
#     fail with KURA-E-SNAPSHOT-SPACE; release removes it.
#   - lvm-thin: a retained thin snapshot, then changed() after known writes
#     (thin_delta on a metadata snapshot) covers exactly those blocks; the
#     older retained snapshot is removed.
#   - the CLI: providers, shadows create/list/delete, shadowstorage list;
#     kura backup --snapshot auto|lvm-thin of mounted ext4 LVs, restored clean.
. "$(dirname "$0")/lib.sh"
require_tool qemu-system-x86_64 cc
VM=$SRCROOT/tests/vm/run.sh
[ -x "$VM" ] || skip "no qemu harness at $VM"

BUILD=$(dirname "$KURA")
LIB=$BUILD/lib/libkura.a
[ -f "$LIB" ] || fail "no $LIB next to $KURA"
cc -std=gnu17 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I"$SRCROOT/include" -I"$SRCROOT/lib" \
        "$TESTDIR/t1020-snap-lvm-driver.c" "$LIB" -o "$T/driver" \
        -lcrypto -lsodium -lzstd -lblkid -lext2fs -lcom_err -ljansson -lxxhash -lpthread -lm 2>"$T/cc.log" ||
        { cat "$T/cc.log" >&2; fail "cannot build the driver"; }

truncate -s 256M "$T/disk.img"
cat >"$T/guest.sh" <<'EOF'
set -u
say() { echo "guest-t1020: $*"; }
fail() { say "FAIL: $*"; exit 1; }
D=$T/driver
DEV=/dev/vda
export DM_DISABLE_UDEV=1
mkdir -p /tmp/lvmsys /tmp/st /mnt/c
cat >/tmp/lvmsys/lvm.conf <<EOC
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
devices { obtain_device_list_from_udev = 0 global_filter = [ "a|^$DEV\$|", "r|.*|" ] }
global { use_lvmpolld = 0 }
EOC
export LVM_SYSTEM_DIR=/tmp/lvmsys
pvcreate -q -y -ff $DEV >/dev/null && vgcreate -q kt $DEV >/dev/null || fail "pv/vg"

# ---- classic ------------------------------------------------------------------
lvcreate -q -y -L 32M -n classic kt >/dev/null || fail lvcreate
mkfs.ext4 -q /dev/kt/classic && mount /dev/kt/classic /mnt/c || fail "mkfs/mount"
head -c 2M /dev/urandom >/mnt/c/data && sync
old=$(sha256sum </mnt/c/data | cut -d' ' -f1)
hook='e2fsck -fn $SNAPDEV >/tmp/fsck.log 2>&1 && echo snapfsck=ok; debugfs -R "cat /data" $SNAPDEV 2>/dev/null | sha256sum | sed "s/ .*//;s/^/snapsha=/"; head -c 2M /dev/urandom >/mnt/c/data; sync; head -c 12M /dev/urandom >/mnt/c/big; sync'
KURA_LVM_SNAPSHOT_SIZE=4M FREEZE_MNT=/mnt/c $D /dev/kt/classic lvm /tmp/st 0 "$hook" >/tmp/c.out 2>&1
cat /tmp/c.out
grep -q '^supports=1' /tmp/c.out || fail "lvm does not support a classic LV"
grep -q '^device=/dev/kt/kura-snap-' /tmp/c.out || fail "no snapshot device"
grep -q '^check=0' /tmp/c.out || fail "check of a fresh snapshot"
grep -q '^snapfsck=ok' /tmp/c.out || fail "the snapshot of a frozen ext4 is not clean"
grep -q "^snapsha=$old" /tmp/c.out || fail "the snapshot does not hold the old file"
grep -q '^check2=-28 KURA-E-SNAPSHOT-SPACE' /tmp/c.out || fail "overflowed COW not reported"
grep -q '^release=0' /tmp/c.out || fail "release"
lvs --noheadings -o lv_name kt | grep -q kura-snap && fail "classic snapshot left behind"
timeout 10 sh -c 'echo x >/mnt/c/probe && sync' || fail "/mnt/c left frozen"
say "lvm ok"

# ---- thin -----------------------------------------------------------------------
lvcreate -q -y -L 64M -T kt/pool >/dev/null && lvcreate -q -y -V 48M -T kt/pool -n thin1 >/dev/null || fail "thin"
head -c 8M /dev/urandom | dd of=/dev/kt/thin1 bs=1M oflag=direct status=none
$D /dev/kt/thin1 lvm-thin /tmp/st 1 >/tmp/t1.out 2>&1
cat /tmp/t1.out
grep -q '^supports=1' /tmp/t1.out || fail "lvm-thin does not support a thin LV"
grep -q '^changed=-61' /tmp/t1.out || fail "first changed() must be -ENODATA"
grep -q '^release=0' /tmp/t1.out || fail "release (retain)"
first=$(sed -n 's/^device=//p' /tmp/t1.out)
[ -b "$first" ] || fail "retained thin snapshot $first missing"
head -c 64K /dev/urandom | dd of=/dev/kt/thin1 bs=64K seek=48 oflag=direct status=none   # 3 MiB
head -c 1M /dev/urandom | dd of=/dev/kt/thin1 bs=1M seek=20 oflag=direct status=none    # 20 MiB
$D /dev/kt/thin1 lvm-thin /tmp/st 1 'cmp -s $SNAPDEV /dev/kt/thin1 && echo same=1' >/tmp/t2.out 2>&1
cat /tmp/t2.out
grep -q '^changed=0' /tmp/t2.out || fail "second changed()"
grep -q '^same=1' /tmp/t2.out || fail "the thin snapshot differs from its quiet origin"
awk '/^range=/ { split($0, a, "[= ]"); o = a[2]; l = a[3]; tot += l
        if (o <= 3145728 && o + l >= 3145728 + 65536) c1 = 1
        if (o <= 20971520 && o + l >= 20971520 + 1048576) c2 = 1 }
     END { if (!c1 || !c2 || tot > 4194304) { print "bad ranges total " tot; exit 1 } }' /tmp/t2.out ||
        fail "thin_delta ranges do not match the writes"
lvs --noheadings -o lv_name kt >/tmp/lvs.out
[ "$(grep -c kura-snap /tmp/lvs.out)" = 1 ] || { cat /tmp/lvs.out; fail "exactly one retained thin snapshot expected"; }
[ -b "$first" ] && fail "older retained snapshot $first not removed"
say "lvm-thin ok"

# ---- CLI ------------------------------------------------------------------------
export KURA_STATE_DIR=/tmp/st
$KURA providers --json >/tmp/p.json || fail "kura providers"
[ "$(jq -r '.providers[] | select(.name == "lvm-thin") | .available' /tmp/p.json)" = true ] || fail "lvm-thin unavailable"
$KURA shadows create --provider lvm-thin /dev/kt/thin1 --json >/tmp/s.json || fail "shadows create"
set=$(jq -r .set_id /tmp/s.json)
$KURA shadows list --json >/tmp/l.json || fail "shadows list"
dev=$(jq -r --arg s "$set" '.shadows[] | select(.set_id == $s) | .device' /tmp/l.json)
[ -b "$dev" ] || fail "persistent thin snapshot $dev missing"
$KURA shadowstorage list /dev/kt/thin1 --json >/tmp/ss.json || fail "shadowstorage"
[ "$(jq -r '.shadowstorage[0].provider' /tmp/ss.json)" = lvm-thin ] || fail "shadowstorage provider"
$KURA shadows delete "$set" || fail "shadows delete"
[ -b "$dev" ] && fail "shadows delete left $dev"
say "cli ok"
# ---- kura backup end to end: auto picks lvm-thin for a mounted thin LV, lvm for
# a mounted classic LV; every restore is a clean filesystem with the file ----
export KURA_PASSWORD=guest-pass KURA_CONFIG_DIR=/tmp/kc KURA_CACHE_DIR=/tmp/kk
mkdir -p /tmp/kc /tmp/kk /tmp/krp
mount -t tmpfs -o size=160m krepo /tmp/krp || fail "tmpfs"
R=/tmp/krp/repo
$KURA --repo $R init --kdf-memory 1M --kdf-passes 1 >/tmp/k.out 2>&1 || { cat /tmp/k.out; fail "kura init"; }
lvcreate -q -y -V 40M -T kt/pool -n thin2 >/dev/null || fail "thin2"
mkdir -p /mnt/t && mkfs.ext4 -q /dev/kt/thin2 && mount /dev/kt/thin2 /mnt/t || fail "mkfs thin2"
head -c 3M /dev/urandom >/mnt/t/f1 && sync
kb() { # VOLUME PROVIDER -> restored image /tmp/krp/r.img; checks the file f1 against /mnt/X/f1
        $KURA --repo $R backup --volume "$1" --snapshot "$2" --writers none >/tmp/k.out 2>&1 ||
                { cat /tmp/k.out; fail "kura backup $1 --snapshot $2"; }
        rm -f /tmp/krp/r.img
        $KURA --repo $R restore --version latest --volume-to /tmp/krp/r.img >/tmp/k.out 2>&1 ||
                { cat /tmp/k.out; fail "kura restore"; }
        e2fsck -fn /tmp/krp/r.img >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; fail "restore of $1 not clean"; }
}
kb /dev/kt/thin2 auto
[ "$(debugfs -R 'cat /f1' /tmp/krp/r.img 2>/dev/null | sha256sum)" = "$(sha256sum </mnt/t/f1)" ] || fail "f1 of thin2"
$KURA shadows list --json >/tmp/l.json
[ "$(jq '[.shadows[] | select(.volume == "/dev/kt/thin2" and .retained_for_backup)] | length' /tmp/l.json)" = 1 ] ||
        { cat /tmp/l.json; fail "a backup of a thin LV must retain one snapshot"; }
head -c 1M /dev/urandom >/mnt/t/f2 && sync
kb /dev/kt/thin2 lvm-thin
[ "$(debugfs -R 'cat /f2' /tmp/krp/r.img 2>/dev/null | sha256sum)" = "$(sha256sum </mnt/t/f2)" ] || fail "f2 of thin2"
lvs --noheadings -o lv_name,origin kt >/tmp/lvs.out
[ "$(awk '$1 ~ /^kura-snap/ && $2 == "thin2"' /tmp/lvs.out | wc -l)" = 1 ] || { cat /tmp/lvs.out; fail "one retained thin snapshot after two backups"; }
timeout 10 sh -c 'echo x >/mnt/t/probe && sync' || fail "/mnt/t left frozen"
lvremove -q -f kt/classic >/dev/null 2>&1; umount /mnt/c 2>/dev/null
lvremove -q -f kt/classic >/dev/null || fail "lvremove classic"
lvcreate -q -y -L 24M -n classic2 kt >/dev/null && mkfs.ext4 -q /dev/kt/classic2 && mount /dev/kt/classic2 /mnt/c ||
        fail "classic2"
head -c 2M /dev/urandom >/mnt/c/f1 && sync
kb /dev/kt/classic2 auto
[ "$(debugfs -R 'cat /f1' /tmp/krp/r.img 2>/dev/null | sha256sum)" = "$(sha256sum </mnt/c/f1)" ] || fail "f1 of classic2"
lvs --noheadings -o lv_name,origin kt 2>/dev/null | awk '$1 ~ /^kura-snap/ && $2 == "classic2"' | grep -q . &&
        fail "classic snapshot left after backup"
timeout 10 sh -c 'echo x >/mnt/c/probe && sync' || fail "/mnt/c left frozen"
say "kura backup ok"
# ---- change tracking through kura: the incremental of a raw thin LV reads only
# the chunks covering the offsets the test wrote (kura's own bytes_read) ----
lvcreate -q -y -V 16M -T kt/pool -n thin3 >/dev/null || fail "thin3"
head -c 16M /dev/urandom | dd of=/dev/kt/thin3 bs=1M oflag=direct status=none
$KURA --repo $R backup --volume /dev/kt/thin3 --snapshot lvm-thin --writers none --json >/tmp/k1.json 2>/tmp/k.err ||
        { cat /tmp/k.err; fail "kura backup thin3"; }
[ "$(jq .bytes_read /tmp/k1.json)" = 16777216 ] || fail "first backup of thin3 read $(jq .bytes_read /tmp/k1.json)"
head -c 4K /dev/urandom | dd of=/dev/kt/thin3 bs=4K seek=$((3 * 256 + 1)) oflag=direct status=none   # chunk 3
head -c 4K /dev/urandom | dd of=/dev/kt/thin3 bs=4K seek=$((11 * 256 + 7)) oflag=direct status=none  # chunk 11
$KURA --repo $R backup --volume /dev/kt/thin3 --snapshot lvm-thin --writers none --json >/tmp/k2.json 2>/tmp/k.err ||
        { cat /tmp/k.err; fail "kura backup thin3 (incremental)"; }
[ "$(jq .bytes_read /tmp/k2.json)" = 2097152 ] ||
        fail "incremental of thin3 read $(jq .bytes_read /tmp/k2.json) bytes, expected the 2 chunks written"
rm -f /tmp/krp/r.img
$KURA --repo $R restore --version latest --volume-to /tmp/krp/r.img >/tmp/k.out 2>&1 || { cat /tmp/k.out; fail "restore thin3"; }
cmp /tmp/krp/r.img /dev/kt/thin3 || fail "restore of the change-tracked incremental of thin3 differs"
say "lvm-thin change tracking through kura ok"
umount /mnt/c /mnt/t /tmp/krp
vgchange -q -an kt >/dev/null
say PASS
EOF
export T
KURA_VM_ENV="T" "$VM" --disk "$T/disk.img" --module dm-snapshot --module dm-thin-pool --module dm-bufio \
        --module dm-persistent-data --timeout 560 -- bash "$T/guest.sh" >"$T/guest.out" 2>&1
rc=$?
cat "$T/guest.out"
[ $rc = 0 ] || fail "guest exited $rc"
grep -q '^guest-t1020: PASS' "$T/guest.out" || fail "guest did not pass"
