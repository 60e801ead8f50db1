#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Runs INSIDE the guest (tests/vm/run.sh --disk IMG -- bash THIS):
# device-mapper and LVM work with Debian's kernel and the host's lvm2 tools.
#   /dev/vda (a <= 256 MiB image) becomes a PV and a VG "kvmt" with
#   - a classic LV "classic" and a COW snapshot "csnap" of it,
#   - a thin pool "pool", a thin LV "thin1" and a thin snapshot "tsnap";
#   known bytes are written, snapshots taken, the origins changed, and the
#   snapshots must still read the old bytes; lvs and thin_delta must report
#   what happened.  If $KURA is set, kura backs up the classic snapshot to a
#   repository on tmpfs and restores it byte-identically.
# Prints "guest-lvm: ..." lines; exits non-zero on the first failure.
set -euo pipefail
DEV=${1:-/dev/vda}
VG=kvmt
MiB=1048576
say() { echo "guest-lvm: [$(cut -d" " -f1 /proc/uptime)] $*"; }
fail() {
        echo "guest-lvm: FAIL: $*"
        trap - EXIT
        exit 1
}
on_exit() {
        local rc=$?
        [ "$rc" = 0 ] || echo "guest-lvm: FAIL: exit status $rc (the last command above failed)"
}
trap on_exit EXIT
# Known data: deterministic files made once (openssl under TCG is slow: keep them small).
# GDATA: a directory where the host made them already (same names, same bytes).
GDATA=${GDATA:-/tmp/gdata}
mkdir -p "$GDATA" 2>/dev/null || true
gen() { # SEED MIB
        local key
        [ "$(stat -c %s "$GDATA/$1" 2>/dev/null)" = $(($2 * MiB)) ] && return 0
        key=$(printf 'kura-vm-%s' "$1" | sha256sum | cut -c1-32)
        head -c $(($2 * MiB)) /dev/zero |
                openssl enc -aes-128-ctr -nosalt -K "$key" -iv 00000000000000000000000000000000 >"$GDATA/$1"
}
put() { # DEV OFFSET-MIB SEED
        dd if="$GDATA/$3" of="$1" bs=1M seek="$2" oflag=direct conv=notrunc status=none
}
shasum_of() { # DEV OFFSET-MIB SIZE-MIB
        dd if="$1" bs=1M skip="$2" count="$3" iflag=direct status=none | sha256sum | cut -d' ' -f1
}
want() { # SEED [SKIP-MIB COUNT-MIB]: sha256 of (part of) a data file
        if [ $# = 1 ]; then
                sha256sum "$GDATA/$1" | cut -d' ' -f1
        else
                dd if="$GDATA/$1" bs=1M skip="$2" count="$3" status=none | sha256sum | cut -d' ' -f1
        fi
}
gen A 4
gen B 4
gen C 1
gen D 4
gen E 1

[ -b "$DEV" ] || fail "no block device $DEV"
size=$(blockdev --getsize64 "$DEV")
[ "$size" -le $((256 * MiB)) ] || fail "$DEV is $size bytes: guest volumes must be <= 256 MiB"
say "kernel $(uname -r), $DEV $((size / MiB)) MiB"
grep -q device-mapper /proc/misc || fail "no device-mapper in the guest kernel"

# LVM without udev: create the /dev nodes itself, do not wait for udev.
export DM_DISABLE_UDEV=1
# Under TCG every LVM command costs seconds: scan only the test disk, no
# dmeventd monitoring or lvmpolld (nothing runs them here).
LVMCFG="activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
devices { obtain_device_list_from_udev = 0 global_filter = [ \"a|^$DEV\$|\", \"r|.*|\" ] }
global { use_lvmpolld = 0 }"
lvm() { command lvm "$1" --config "$LVMCFG" "${@:2}"; }

lvm pvcreate -q -y -ff "$DEV" >/dev/null
lvm vgcreate -q "$VG" "$DEV" >/dev/null
say "PV and VG made"

# ---- classic LV + COW snapshot -------------------------------------------------
lvm lvcreate -q -y -L 24M -n classic "$VG" >/dev/null
C=/dev/$VG/classic
[ -b "$C" ] || fail "$C missing after lvcreate"
put "$C" 0 A
put "$C" 8 B
sync
lvm lvcreate -q -y -s -L 8M -n csnap "$VG/classic" >/dev/null
S=/dev/$VG/csnap
put "$C" 2 C # change the origin under the snapshot
sync
[ "$(shasum_of "$S" 0 4)" = "$(want A)" ] || fail "COW snapshot lost the old bytes"
[ "$(shasum_of "$S" 8 4)" = "$(want B)" ] || fail "COW snapshot: unchanged region differs"
[ "$(shasum_of "$C" 2 1)" = "$(want C)" ] || fail "origin does not read the new bytes"
[ "$(shasum_of "$C" 0 2)" = "$(want A 0 2)" ] || fail "origin: unchanged head differs"
[ "$(shasum_of "$C" 3 1)" = "$(want A 3 1)" ] || fail "origin: unchanged bytes after the change differ"
say "classic snapshot keeps the old bytes"

# ---- thin pool, thin LV, thin snapshot ----------------------------------------------
lvm lvcreate -q -y -L 32M -T "$VG/pool" >/dev/null
lvm lvcreate -q -y -V 48M -T "$VG/pool" -n thin1 >/dev/null
TH=/dev/$VG/thin1
put "$TH" 0 D
put "$TH" 40 B
sync
lvm lvcreate -q -y -s -n tsnap "$VG/thin1" >/dev/null
lvm lvchange -q -ay -K "$VG/tsnap" >/dev/null
TS=/dev/$VG/tsnap
[ -b "$TS" ] || fail "$TS missing after activation"
put "$TH" 1 E
sync
[ "$(shasum_of "$TS" 0 4)" = "$(want D)" ] || fail "thin snapshot lost the old bytes"
[ "$(shasum_of "$TS" 40 4)" = "$(want B)" ] || fail "thin snapshot: data at 40 MiB differs"
[ "$(shasum_of "$TH" 1 1)" = "$(want E)" ] || fail "thin origin does not read the new bytes"
[ "$(shasum_of "$TH" 2 2)" = "$(want D 2 2)" ] || fail "thin origin: unchanged bytes differ"
say "thin snapshot keeps the old bytes"

# lvs sees all five LVs with the right kinds.
lvm lvs --noheadings --separator : -o lv_name,lv_attr,origin,pool_lv "$VG" >/tmp/lvs.out
cat /tmp/lvs.out
grep -Eq '^ *classic:o' /tmp/lvs.out || fail "lvs: classic is not an origin"
grep -Eq '^ *csnap:s[^:]*:classic:' /tmp/lvs.out || fail "lvs: csnap is not a snapshot of classic"
grep -Eq '^ *pool:t' /tmp/lvs.out || fail "lvs: pool is not a thin pool"
grep -Eq '^ *thin1:V[^:]*::pool$' /tmp/lvs.out || fail "lvs: thin1 is not a thin LV in pool"
grep -Eq '^ *tsnap:V[^:]*:thin1:pool$' /tmp/lvs.out || fail "lvs: tsnap is not a thin snapshot of thin1"

# thin_delta on a metadata snapshot of the live pool: the 1 MiB written after
# the snapshot (at 1 MiB) must show up as different, and nothing outside it.
id1=$(lvm lvs --noheadings -o thin_id "$VG/thin1" | tr -d ' ')
id2=$(lvm lvs --noheadings -o thin_id "$VG/tsnap" | tr -d ' ')
chunk=$(lvm lvs --noheadings --units s --nosuffix -o chunk_size "$VG/pool" | tr -d ' ')
tpool=$(dmsetup ls | awk '/-tpool\t|-tpool /{print $1}' | grep "^$VG-pool-tpool" | head -1)
[ -n "$tpool" ] || tpool=$VG-pool-tpool
dmsetup message "$tpool" 0 reserve_metadata_snap
thin_delta -m --snap1 "$id2" --snap2 "$id1" "/dev/mapper/$VG-pool_tmeta" >/tmp/delta.xml
dmsetup message "$tpool" 0 release_metadata_snap
cat /tmp/delta.xml
# Ranges are in data blocks of $chunk sectors.
awk -v cs="$chunk" '
        /<different|<left_only|<right_only/ {
                b = $0; sub(/.*begin="/, "", b); sub(/".*/, "", b)
                l = $0; sub(/.*length="/, "", l); sub(/".*/, "", l)
                s = b * cs * 512; e = (b + l) * cs * 512
                if (s < 1048576 || e > 2 * 1048576) { print "range outside the write: " s "-" e; bad = 1 }
                n += l * cs * 512
        }
        END { if (bad || n != 1048576) { print "changed bytes " n ", expected 1048576"; exit 1 } }
' /tmp/delta.xml || fail "thin_delta does not report exactly the 1 MiB changed at 1 MiB"
say "lvs and thin_delta agree (thin ids $id2 -> $id1, chunk $chunk sectors)"

# ---- kura from the host build -------------------------------------------------------
if [ -n "${KURA:-}" ]; then
        "$KURA" --version >/tmp/kv.out 2>&1 || { cat /tmp/kv.out; fail "$KURA --version"; }
        say "$(head -1 /tmp/kv.out)"
        export KURA_CONFIG_DIR=/tmp/kc KURA_STATE_DIR=/tmp/ks KURA_CACHE_DIR=/tmp/kk
        export KURA_PASSWORD=guest-vm-pass
        mkdir -p /tmp/krepo-parent "$KURA_CONFIG_DIR" "$KURA_STATE_DIR" "$KURA_CACHE_DIR"
        mount -t tmpfs -o size=96m kurarepo /tmp/krepo-parent
        R=/tmp/krepo-parent/repo
        "$KURA" --repo "$R" init --kdf-memory 1M --kdf-passes 1 </dev/null >/tmp/k.out 2>&1 || { cat /tmp/k.out; fail "kura init"; }
        "$KURA" --repo "$R" backup --volume "$S" </dev/null >/tmp/k.out 2>&1 || { cat /tmp/k.out; fail "kura backup $S"; }
        "$KURA" --repo "$R" restore --version latest --volume-to /tmp/krepo-parent/restored.img </dev/null >/tmp/k.out 2>&1 ||
                { cat /tmp/k.out; fail "kura restore"; }
        cmp "$S" /tmp/krepo-parent/restored.img || fail "kura restore of the snapshot differs from $S"
        say "kura backed up $S and restored it byte-identically"
fi

# Tear down (also proves the LVs are not stuck open).
lvm vgchange -q -an "$VG" >/dev/null
[ -z "$(dmsetup ls | grep "^$VG-" || true)" ] || fail "dm devices left after vgchange -an"
say "PASS"
