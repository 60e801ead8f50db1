#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /sbin/init of the root filesystem of kura's bootable test disks
# (tests/vm/make-test-disk.sh); the initramfs (disk-initrd.sh) switch_root's
# here with / mounted read-only.  busybox only.
#
# Prints one MARKER block on the console (format: tests/vm/README.md, "Bootable
# test disks"), then powers off.  Every line is derived from the disk's bytes
# (never from time or from the order devices appeared), so two boots of the
# same disk print the same block.  Whatever cannot be read gives a line that
# says so, never a crash.
# shellcheck disable=SC3057 # busybox ash has ${var:offset:length}
PATH=/bin:/sbin
export PATH
[ -e /proc/self ] || mount -t proc proc /proc
[ -e /sys/block ] || mount -t sysfs sysfs /sys
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp # / is read-only
# Kernel messages (xfs, btrfs mounting) must not cut marker lines in two.
echo "1 4 1 7" >/proc/sys/kernel/printk 2>/dev/null

KVER=$(uname -r)
for m in $(cat "/lib/modules/$KVER/kura/order" 2>/dev/null); do
        insmod "/lib/modules/$KVER/kura/$m" 2>/dev/null
done

# A job disk (label KURA-JOB) runs its commands on this booted system first
# (tests/vm/disk-job.sh); without one this returns at once.
[ -x /sbin/kura-job ] && /sbin/kura-job

OUT=
out() { OUT="$OUT$*
"; }

# hexdump of COUNT bytes at byte OFFSET of DEV, one string, no spaces
hexat() { # DEV OFFSET COUNT
        dd if="$1" bs=1 skip="$2" count="$3" 2>/dev/null | od -An -v -tx1 | tr -d ' \n'
}
# little-endian hex string -> decimal
le() {
        h=$1 r=
        while [ -n "$h" ]; do
                r=${h%"${h#??}"}$r
                h=${h#??}
        done
        echo $((0x${r:-0}))
}
# 16 bytes as hex -> GUID text; $2=mixed: GPT/EFI byte order (first three fields little-endian)
guid() {
        h=$1
        if [ "${2:-}" = mixed ]; then
                echo "${h:6:2}${h:4:2}${h:2:2}${h:0:2}-${h:10:2}${h:8:2}-${h:14:2}${h:12:2}-${h:16:4}-${h:20:12}"
        else
                echo "${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"
        fi
}
upper() { echo "$1" | tr a-f A-F; }

# ---- the root and its disk ---------------------------------------------------
rootdev=
majmin=$(awk '$5 == "/" { m = $3 } END { print m }' /proc/self/mountinfo 2>/dev/null)
[ -n "$majmin" ] && rootdev=$(sed -n 's/^DEVNAME=//p' "/sys/dev/block/$majmin/uevent" 2>/dev/null)
disk=
# A root on device-mapper (an LV, a LUKS mapping): follow its slaves down to a
# partition; the boot disk is that partition's parent.
rootpart=$rootdev
while [ -n "$rootpart" ] && [ -d "/sys/block/$rootpart/slaves" ]; do
        s=$(ls "/sys/block/$rootpart/slaves" 2>/dev/null | head -n 1)
        [ -n "$s" ] || break
        rootpart=$s
done
[ -n "$rootpart" ] && disk=$(basename "$(dirname "$(readlink -f "/sys/class/block/$rootpart")")")
[ -b "/dev/$disk" ] || disk=
ss=512
[ -n "$disk" ] && ss=$(cat "/sys/block/$disk/queue/logical_block_size")
partdev() { # partition number -> /dev node on the boot disk
        for p in /sys/block/"$disk"/"$disk"*; do
                [ "$(cat "$p/partition" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return 0; }
        done
        return 1
}

# LVM and LUKS on partition $1 (/dev node $2), read from its bytes; appends
# to STACK the lines "lvm part N pv-uuid=... vg=... lv=..." (LVs: the active
# dm devices on it, by name, "none" if none) and "luks part N version=V
# uuid=... open=NAME|no".
STACK=
stack_lines() { # N DEV
        [ -n "$2" ] && [ -b "$2" ] || return 0
        p=${2#/dev/}
        holders=
        for h in /sys/class/block/"$p"/holders/*; do
                [ -f "$h/dm/name" ] && holders="$holders $(cat "$h/dm/name") "
        done
        if [ "$(hexat "$2" 512 8)" = 4c4142454c4f4e45 ] && [ "$(hexat "$2" 536 8)" = 4c564d3220303031 ]; then
                # LABELONE at sector 1; pv_header (UUID, 32 characters) at 512 + 32.
                u=$(dd if="$2" bs=1 skip=544 count=32 2>/dev/null)
                u="${u:0:6}-${u:6:4}-${u:10:4}-${u:14:4}-${u:18:4}-${u:22:4}-${u:26:6}"
                # The VG's name opens its metadata text ("NAME {"), in the first MiB.
                vg=$(dd if="$2" bs=4096 skip=1 count=255 2>/dev/null | strings |
                        sed -n 's/^\([A-Za-z0-9_.+-][A-Za-z0-9_.+-]*\) {$/\1/p' | head -n 1)
                lvs=
                for n in $holders; do
                        # dm name VG-LV, dashes inside either doubled
                        case $n in "${vg:-?}-"*) lvs="$lvs,$(echo "${n#"$vg"-}" | sed 's/--/-/g')" ;; esac
                done
                lvs=$(echo "${lvs#,}" | tr , '\n' | sort | tr '\n' , | sed 's/,$//')
                STACK="${STACK}KURA-MARKER lvm part $1 pv-uuid=$u vg=${vg:-unreadable} lv=${lvs:-none}
"
        fi
        if [ "$(hexat "$2" 0 6)" = 4c554b53babe ]; then
                v=$((0x$(hexat "$2" 6 2))) # big-endian
                u=$(dd if="$2" bs=1 skip=168 count=36 2>/dev/null)
                o=
                for h in /sys/class/block/"$p"/holders/*; do
                        case $(cat "$h/dm/uuid" 2>/dev/null) in CRYPT-LUKS*) o=$(cat "$h/dm/name") ;; esac
                done
                STACK="${STACK}KURA-MARKER luks part $1 version=$v uuid=$u open=${o:-no}
"
        fi
}

out "KURA-MARKER-BEGIN"
if [ -n "$rootdev" ] && [ "$(hexat "/dev/$rootdev" 1080 2)" = 53ef ]; then
        out "KURA-MARKER root-uuid=$(guid "$(hexat "/dev/$rootdev" 1128 16)")"
else
        out "KURA-MARKER root-uuid=unreadable (root device '${rootdev}' is not ext4)"
fi

# ---- the partition table (read from the disk, not from the kernel) ---------------
swapdev=
table=none
if [ -z "$disk" ]; then
        out "KURA-MARKER table=unreadable (no disk under the root device '$rootdev')"
elif [ "$(hexat "/dev/$disk" "$ss" 8)" = 4546492050415254 ]; then
        table=gpt
        h=$(hexat "/dev/$disk" "$ss" 92)
        out "KURA-MARKER table=gpt disk-guid=$(upper "$(guid "${h:112:32}" mixed)")"
        elba=$(le "${h:144:16}")
        n=$(le "${h:160:8}")
        esz=$(le "${h:168:8}")
        if [ "$n" -gt 1024 ] || [ "$esz" -lt 128 ] || [ "$esz" -gt 4096 ]; then
                out "KURA-MARKER part table unreadable (entries=$n size=$esz)"
                n=0
        fi
        i=0
        dd if="/dev/$disk" bs="$ss" skip="$elba" count=$(((n * esz + ss - 1) / ss)) 2>/dev/null |
                od -An -v -tx1 -w"$esz" | tr -d ' ' | head -n "$n" >/tmp/gpt-entries 2>/dev/null ||
                : >/tmp/gpt-entries
        while read -r e; do
                i=$((i + 1))
                case ${e:0:32} in
                00000000000000000000000000000000) continue ;;
                esac
                type=$(upper "$(guid "${e:0:32}" mixed)")
                name='' nh=${e:112:144}
                while [ -n "$nh" ] && [ "${nh:0:4}" != 0000 ]; do
                        if [ "${nh:2:2}" = 00 ]; then
                                # shellcheck disable=SC2059
                                name=$name$(printf "\\$(printf %o "0x${nh:0:2}")")
                        else
                                name="$name?"
                        fi
                        nh=${nh:4}
                done
                out "KURA-MARKER part $i type=$type uuid=$(upper "$(guid "${e:32:32}" mixed)") name=$name"
                [ "$type" = 0657FD6D-A4AB-43C4-84E5-0933C84B4F4F ] && swapdev=$(partdev "$i")
                stack_lines "$i" "$(partdev "$i")"
        done </tmp/gpt-entries
        rm -f /tmp/gpt-entries
        [ -n "$STACK" ] && OUT="$OUT$STACK"
elif [ "$(hexat "/dev/$disk" 510 2)" = 55aa ]; then
        table=dos
        sig=$(le "$(hexat "/dev/$disk" 440 4)")
        sig=$(printf %08x "$sig")
        out "KURA-MARKER table=dos disk-id=0x$sig"
        h=$(hexat "/dev/$disk" 446 64)
        for i in 1 2 3 4; do
                e=${h:$(((i - 1) * 32)):32}
                t=${e:8:2}
                [ "$t" = 00 ] && continue
                boot=no
                [ "${e:0:2}" = 80 ] && boot=yes
                out "KURA-MARKER part $i type=0x$t uuid=$sig-0$i boot=$boot"
                [ "$t" = 82 ] && swapdev=$(partdev "$i")
        done
else
        out "KURA-MARKER table=unreadable (no GPT header and no MBR signature on /dev/$disk)"
fi

# ---- known files -----------------------------------------------------------------
# /etc/kura-marker.conf:  NAME FSTYPE UUID PATH...   (UUID "-": the root itself)
while read -r name fstype uuid paths; do
        case $name in '' | '#'*) continue ;; esac
        dir=/
        why=
        if [ "$uuid" != - ]; then
                dir=/mnt/$name
                dev=$(findfs "UUID=$uuid" 2>/dev/null)
                if [ -z "$dev" ]; then
                        why="no filesystem UUID=$uuid"
                else
                        opts=ro
                        [ "$fstype" = xfs ] && opts=ro,norecovery
                        mount -t "$fstype" -o "$opts" "$dev" "$dir" 2>/dev/null ||
                                why="cannot mount $fstype UUID=$uuid"
                fi
        fi
        for p in $paths; do
                if [ -n "$why" ]; then
                        out "KURA-MARKER file $name:$p unreadable ($why)"
                elif s=$(sha256sum <"$dir$p" 2>/dev/null); then
                        out "KURA-MARKER file $name:$p sha256=${s%% *}"
                else
                        out "KURA-MARKER file $name:$p unreadable (no such file or read error)"
                fi
        done
        [ "$dir" != / ] && umount "$dir" 2>/dev/null
done </etc/kura-marker.conf

# ---- swap ----------------------------------------------------------------------------
if [ -z "$swapdev" ]; then
        out "KURA-MARKER swap none"
elif [ "$(hexat "$swapdev" 4086 10)" = 53574150535041434532 ]; then
        out "KURA-MARKER swap uuid=$(guid "$(hexat "$swapdev" 1036 16)")"
else
        out "KURA-MARKER swap unreadable (no SWAPSPACE2 signature on $swapdev)"
fi

# ---- what the kernel said about the GPT -------------------------------------------------
w=$(dmesg | sed 's/^\[[^]]*\] *//' | grep -a 'GPT' | tr '\n' '|' | sed 's/|$//; s/|/ | /g')
out "KURA-MARKER gpt-warnings=${w:-none}"
out "KURA-MARKER-END"

echo "KURA-INFO disk=$disk root=$rootdev$([ "$rootpart" != "$rootdev" ] && echo " root-partition=$rootpart") table=$table logical-sector-size=$ss kernel=$KVER" >/dev/console
# Firmware and Secure Boot state (not part of the marker: it differs between firmwares).
sb=no-uefi
if [ -d /sys/firmware/efi ]; then
        # Debian's kernel locks itself down when booted with Secure Boot on.
        mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
        case "$(cat /sys/kernel/security/lockdown 2>/dev/null) $(dmesg | grep -i 'secure boot')" in
        *"[integrity]"* | *"[confidentiality]"* | *"locked down from EFI Secure Boot"* | *"Secure boot enabled"*) sb=on ;;
        *"[none]"*) sb=off ;;
        *) sb=unknown ;;
        esac
fi
echo "KURA-INFO secure-boot=$sb" >/dev/console
printf '%s' "$OUT" >/dev/console
sync
poweroff -f
sleep 60
