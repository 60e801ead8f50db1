#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /init of the kura rescue image (rescue/build-iso.sh puts it there).
#
# Sets up /proc, /sys, /dev, loads the drivers the machine needs, then either
# restores unattended from the kura.* keys of the kernel command line, or runs
# a text menu on the console.  rescue/README.md documents every key.
#
# The console shows these markers, one a line (tests and scripts wait for them):
#   KURA-RESCUE-READY <firmware> <kernel>     drivers loaded, about to restore or ask
#   KURA-RESCUE-RUN: <command>                the restore command about to run
#   KURA-RESCUE-RESULT: PASS <version>        the restore succeeded (data synced)
#   KURA-RESCUE-RESULT: FAIL <status> <why>   it did not
#
# The passphrase never comes from the command line: kura.keyfile= names a file
# on the rescue medium, the share or a disk, else it is asked on the console and
# kept in a tmpfs file that is removed right after use.
# busybox ash: 'local' is supported.
# shellcheck disable=SC3043
export PATH=/usr/sbin:/usr/bin
export HOME=/root TERM=${TERM:-linux}
umask 077

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
[ -d /sys/firmware/efi ] && mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
mkdir -p /run/kura /var/tmp # kura bmr's default --tmpdir is /var/tmp (RAM here)
exec </dev/console >/dev/console 2>&1
echo 0 >/proc/sys/kernel/printk 2>/dev/null # keep driver chatter off the menu

LOG=/run/kura/rescue.log
# Messages go to stderr (the console), so that helpers can print results on stdout.
say() { echo "kura-rescue: $*" | tee -a "$LOG" >&2; }
FIRMWARE=bios
[ -d /sys/firmware/efi ] && FIRMWARE=uefi

# ---- the kernel command line ----------------------------------------------------

K_REPO='' K_VERSION=latest K_DISKMAP=auto K_KEYFILE='' K_SHARE='' K_SHARE_OPTS='' K_SHARE_CREDS=''
K_IP=dhcp K_IFACE='' K_POWEROFF=0 K_REBOOT=0 K_UNATTENDED='' K_SHELL=0 K_MODE=auto K_EXCLUDE=''
K_MODULES='' K_WAIT=30 K_DEBUG=0 K_ARGS=''
for w in $(cat /proc/cmdline); do
        v=${w#*=}
        case $w in
        kura.repo=*) K_REPO=$v ;;
        kura.version=*) K_VERSION=$v ;;
        kura.disk-map=*) K_DISKMAP=$v ;;
        kura.keyfile=*) K_KEYFILE=$v ;;
        kura.share=*) K_SHARE=$v ;;
        kura.share-opts=*) K_SHARE_OPTS=$v ;;
        kura.share-creds=*) K_SHARE_CREDS=$v ;;
        kura.ip=*) K_IP=$v ;;
        kura.iface=*) K_IFACE=$v ;;
        kura.poweroff=*) K_POWEROFF=$v ;;
        kura.reboot=*) K_REBOOT=$v ;;
        kura.unattended=*) K_UNATTENDED=$v ;;
        kura.shell=*) K_SHELL=$v ;;
        kura.mode=*) K_MODE=$v ;;
        kura.exclude-disk=*) K_EXCLUDE=$v ;;
        kura.modules=*) K_MODULES=$v ;;
        kura.wait=*) K_WAIT=$v ;;
        kura.debug=*) K_DEBUG=$v ;;
        kura.args=*) K_ARGS=$(echo "$v" | tr ',' ' ') ;;
        esac
done
# A repository or a share on the command line means unattended, unless kura.unattended=0.
if [ -z "$K_UNATTENDED" ]; then
        if [ -n "$K_REPO$K_SHARE" ]; then K_UNATTENDED=1; else K_UNATTENDED=0; fi
fi
export KURA_STATE_DIR=/run/kura/state KURA_CACHE_DIR=/run/kura/cache KURA_CONFIG_DIR=/run/kura/config
if [ "$K_DEBUG" = 1 ]; then
        export KURA_DEBUG=1
        echo 7 >/proc/sys/kernel/printk
        set -x
fi

# ---- drivers ------------------------------------------------------------------------

# Coldplug without udev: every device's modalias, a few rounds (a bus driver
# reveals new devices: virtio_pci -> virtio_blk, ahci -> disks, usb -> storage).
coldplug() {
        local i
        for i in 1 2 3; do
                find /sys/devices -name modalias -type f 2>/dev/null | xargs -r cat 2>/dev/null | sort -u |
                        xargs -r modprobe -qab 2>/dev/null
        done
}
modprobe -qa virtio_pci virtio_blk virtio_scsi virtio_net ahci ata_piix nvme sd_mod sr_mod usb_storage uas \
        xhci_pci ehci_pci ohci_pci uhci_hcd usbhid hid_generic atkbd 2>/dev/null
coldplug
modprobe -qa ext4 xfs btrfs vfat isofs nls_cp437 nls_utf8 nls_iso8859_1 loop dm_mod efivarfs 2>/dev/null
for m in $(echo "$K_MODULES" | tr ',' ' '); do modprobe -q "$m" || say "cannot load module $m"; done
[ -d /sys/firmware/efi/efivars ] && ! grep -q ' /sys/firmware/efi/efivars ' /proc/mounts &&
        mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
echo "KURA-RESCUE-READY $FIRMWARE $(uname -r)"
say "$(cat /etc/kura-rescue.version 2>/dev/null), kernel $(uname -r), booted by $FIRMWARE firmware"

if [ "$K_SHELL" = 1 ]; then
        say "kura.shell=1: a shell (exit to continue)"
        setsid sh -c 'exec sh </dev/console >/dev/console 2>&1'
fi

# ---- helpers --------------------------------------------------------------------------

# is_mounted DIR: DIR is a mount point (the mount table, not a variable: the
# helpers below also run in subshells).
is_mounted() { awk -v d="$1" '$2 == d { f = 1 } END { exit !f }' /proc/mounts; }

fail() { # STATUS WHY...
        local st=$1
        shift
        say "FAILED: $*"
        echo "KURA-RESCUE-RESULT: FAIL $st $*"
        finish "$st"
}

# finish STATUS: unmount what we mounted (flushes the share and the repository
# disk), then power off, reboot or offer a shell, as the keys say.
finish() {
        sync
        rm -f /run/kura/passphrase
        for m in $(awk '$2 ~ /^\/run\/kura\// { print $2 }' /proc/mounts | sort -r); do
                umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        done
        sync
        if [ "$K_POWEROFF" = 1 ]; then
                say "powering off"
                poweroff -f
        elif [ "$K_REBOOT" = 1 ]; then
                say "rebooting"
                reboot -f
        fi
        while :; do
                printf '\n[r]eboot, [p]ower off, or [s]hell? '
                read -r a || a=s
                case $a in
                r*) reboot -f ;;
                p*) poweroff -f ;;
                *) setsid sh -c 'exec sh </dev/console >/dev/console 2>&1' ;;
                esac
        done
}

# wait_dev SPEC: block until a device named /dev/X, LABEL=, UUID=, PARTUUID= or
# PARTLABEL= exists (kura.wait seconds); prints its /dev path.
wait_dev() {
        local spec=$1 i=0 d
        while [ "$i" -le "$K_WAIT" ]; do
                case $spec in
                /dev/*) [ -b "$spec" ] && { echo "$spec"; return 0; } ;;
                *=*) d=$(blkid -l -o device -t "$spec" 2>/dev/null) && [ -n "$d" ] && { echo "$d"; return 0; } ;;
                *) [ -b "/dev/$spec" ] && { echo "/dev/$spec"; return 0; } ;;
                esac
                [ $((i % 5)) = 4 ] && coldplug
                sleep 1
                i=$((i + 1))
        done
        return 1
}

# mount_dev SPEC [ro]: mount a device under /run/kura/disk/NAME once; prints the
# mount point.  Read-write by default (kura takes locks in a repository).
mount_dev() {
        local dev mp opt=${2:-rw}
        dev=$(wait_dev "$1") || return 1
        mp=$(awk -v d="$dev" '$1 == d && $2 ~ /^\/run\/kura\// { print $2; exit }' /proc/mounts)
        [ -n "$mp" ] && { echo "$mp"; return 0; }
        mp=/run/kura/disk/$(basename "$dev")
        mkdir -p "$mp"
        mount -o "$opt" "$dev" "$mp" 2>>"$LOG" || mount -o ro "$dev" "$mp" 2>>"$LOG" || return 1
        echo "$mp"
}

# find_medium: mount the rescue medium (the CD or USB stick this image came
# from: it holds /kura/rescue.id equal to ours); prints the mount point.
MEDIUM=''
find_medium() {
        local d
        mkdir -p /run/kura/medium
        if is_mounted /run/kura/medium; then
                MEDIUM=/run/kura/medium
                echo "$MEDIUM"
                return 0
        fi
        # Only ISO 9660, UDF and FAT filesystems are looked at: mounting any
        # other (even read-only: ext4 replays its journal) could change a disk.
        for d in /dev/sr0 /dev/sr1 $(blkid -o device 2>/dev/null); do
                [ -b "$d" ] || continue
                case $(blkid -o value -s TYPE "$d" 2>/dev/null) in
                iso9660 | udf | vfat) ;;
                *) continue ;;
                esac
                mount -o ro "$d" /run/kura/medium 2>/dev/null || continue
                if cmp -s /run/kura/medium/kura/rescue.id /etc/kura-rescue.id; then
                        MEDIUM=/run/kura/medium
                        echo "$MEDIUM"
                        return 0
                fi
                umount /run/kura/medium
        done
        return 1
}

# ---- network and shares ----------------------------------------------------------------

net_up() {
        local ifs i n addr gw dns
        [ -f /run/kura/net.up ] && return 0
        ip link set lo up
        i=0
        while [ "$i" -le "$K_WAIT" ]; do
                ifs=$(ls /sys/class/net | grep -v '^lo$')
                [ -n "$ifs" ] && break
                coldplug
                sleep 1
                i=$((i + 1))
        done
        [ -n "$K_IFACE" ] && ifs=$K_IFACE
        [ -n "$ifs" ] || { say "no network interface (is the card's driver in the image?)"; return 1; }
        cat >/run/kura/udhcpc.script <<'EOF'
#!/bin/sh
case $1 in
bound | renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        : >/etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
        ;;
esac
exit 0
EOF
        chmod 755 /run/kura/udhcpc.script
        for n in $ifs; do
                ip link set "$n" up
                if [ "$K_IP" = dhcp ]; then
                        udhcpc -i "$n" -n -q -t 6 -T 2 -s /run/kura/udhcpc.script >>"$LOG" 2>&1 || continue
                else
                        # kura.ip=ADDR/PREFIX[,GATEWAY[,DNS]]
                        addr=$(echo "$K_IP" | cut -d, -f1)
                        gw=$(echo "$K_IP" | cut -s -d, -f2)
                        dns=$(echo "$K_IP" | cut -s -d, -f3)
                        ip addr add "$addr" dev "$n" || continue
                        [ -n "$gw" ] && ip route add default via "$gw" dev "$n"
                        [ -n "$dns" ] && echo "nameserver $dns" >/etc/resolv.conf
                fi
                say "network: $n $(ip -4 -o addr show dev "$n" | awk '{ print $4 }')"
                : >/run/kura/net.up
                return 0
        done
        say "no interface got an address (kura.ip=$K_IP)"
        return 1
}

# mount_share URL: smb://[USER@]HOST[:PORT]/SHARE[/DIR], //HOST/SHARE[/DIR],
# nfs://HOST[:PORT]/EXPORT[/DIR] or HOST:/EXPORT, at /run/kura/share.
SHARE=''
mount_share() {
        local url=$1 rest user='' hostport host port='' path opts=$K_SHARE_OPTS creds
        mkdir -p /run/kura/share
        # (also called in subshells: the mount table, not a variable, says if done)
        if is_mounted /run/kura/share; then
                SHARE=/run/kura/share
                return 0
        fi
        net_up || return 1
        case $url in
        smb://* | cifs://* | //*)
                rest=${url#*//}
                case $rest in *@*) user=${rest%%@*}; rest=${rest#*@} ;; esac
                hostport=${rest%%/*}
                path=${rest#*/}
                host=${hostport%%:*}
                [ "$hostport" != "$host" ] && port=${hostport#*:}
                opts=${opts:+$opts,}${port:+port=$port,}
                if [ -n "$K_SHARE_CREDS" ]; then
                        creds=$(resolve_loc "$K_SHARE_CREDS") || { say "share credentials $K_SHARE_CREDS not found"; return 1; }
                        opts=${opts}credentials=$creds
                elif [ -n "$user" ]; then
                        opts=${opts}username=$user
                        if [ -z "${PASSWD:-}" ]; then
                                # mount.cifs reads PASSWD; ask here (never the command line).
                                printf 'Password for %s on //%s/%s: ' "$user" "$host" "${path%%/*}" >&2
                                stty -echo 2>/dev/null
                                read -r PASSWD
                                stty echo 2>/dev/null
                                echo >&2
                                export PASSWD
                        fi
                else
                        opts=${opts}guest
                fi
                modprobe -q cifs
                say "mounting //$host/$path (cifs, ${opts%%credentials=*})"
                mount -t cifs "//$host/$path" /run/kura/share -o "$opts" >>"$LOG" 2>&1 ||
                        { tail -3 "$LOG"; unset PASSWD; return 1; }
                unset PASSWD
                ;;
        nfs://* | *:/*)
                case $url in
                nfs://*)
                        rest=${url#nfs://}
                        hostport=${rest%%/*}
                        path=/${rest#*/}
                        host=${hostport%%:*}
                        [ "$hostport" != "$host" ] && port=${hostport#*:}
                        ;;
                *) host=${url%%:*} path=${url#*:} ;;
                esac
                # nolock: no rpc.statd in the image (NFSv3); NFSv4 needs none.
                opts=${opts:+$opts,}${port:+port=$port,}nolock
                modprobe -qa nfs nfsv3 nfsv4
                say "mounting $host:$path (nfs, $opts)"
                mount -t nfs "$host:$path" /run/kura/share -o "$opts" >>"$LOG" 2>&1 || { tail -3 "$LOG"; return 1; }
                ;;
        *)
                say "kura.share=$url: expected smb://HOST/SHARE, //HOST/SHARE, nfs://HOST/EXPORT or HOST:/EXPORT"
                return 1
                ;;
        esac
        SHARE=/run/kura/share
}

# resolve_loc LOC: a file or directory named as medium:/PATH, share:/PATH,
# DEV:/PATH (DEV = /dev/X, LABEL=, UUID=...) or /PATH; mounts what it needs
# and prints the path in this system.
resolve_loc() {
        local loc=$1 where path mp
        case $loc in
        *://*) echo "$loc"; return 0 ;;
        /dev/*:* | *=*:* | medium:* | share:*) where=${loc%%:*} path=${loc#*:} ;;
        /*) echo "$loc"; return 0 ;;
        *:*) where=${loc%%:*} path=${loc#*:} ;;
        *) say "$loc: expected medium:/PATH, share:/PATH, DEV:/PATH or /PATH"; return 1 ;;
        esac
        case $where in
        medium) mp=$(find_medium) || { say "the rescue medium was not found"; return 1; } ;;
        share)
                [ -n "$K_SHARE" ] || { say "$loc names the share but kura.share= is not set"; return 1; }
                mount_share "$K_SHARE" || return 1
                mp=$SHARE
                ;;
        *) mp=$(mount_dev "$where") || { say "device $where not found or not mountable"; return 1; } ;;
        esac
        echo "$mp/${path#/}"
}

# ---- the restore ---------------------------------------------------------------------

kura_q() { # kura with the repository and the passphrase file
        kura --repo "$REPO" --password-file /run/kura/passphrase "$@"
}

get_passphrase() {
        local kf pw
        if [ -n "$K_KEYFILE" ]; then
                kf=$(resolve_loc "$K_KEYFILE") && [ -f "$kf" ] || { say "key file $K_KEYFILE not found"; return 1; }
                cp "$kf" /run/kura/passphrase
                say "passphrase from the key file $K_KEYFILE"
                return 0
        fi
        if kf=$(find_medium 2>/dev/null) && [ -f "$kf/kura/keyfile" ]; then
                cp "$kf/kura/keyfile" /run/kura/passphrase
                say "passphrase from the rescue medium's key file"
                return 0
        fi
        printf 'Passphrase of the repository %s: ' "$REPO"
        stty -echo 2>/dev/null
        read -r pw || pw=''
        stty echo 2>/dev/null
        echo
        [ -n "$pw" ] || return 1
        printf '%s\n' "$pw" >/run/kura/passphrase
        pw=''
}

# locate_repo: sets REPO from kura.repo / kura.share.
locate_repo() {
        if [ -n "$K_SHARE" ]; then
                mount_share "$K_SHARE" || return 1
                REPO=$SHARE/$(echo "${K_REPO#share:}" | sed 's,^/*,,')
                REPO=${REPO%/}
        else
                REPO=$(resolve_loc "$K_REPO") || return 1
        fi
        case $REPO in
        *://*) ;;
        *) [ -f "$REPO/config" ] || { say "no kura repository at $REPO (kura.repo=$K_REPO)"; return 1; } ;;
        esac
        say "repository: $REPO"
}

# The disks a restore may write: not the medium's, the repository's or the
# share's; no loop, ram, rom or zero-sized device.
busy_disks() {
        awk '$1 ~ /^\/dev\// { print $1 }' /proc/mounts | while read -r d; do
                d=$(basename "$d")
                if [ -e "/sys/class/block/$d/partition" ]; then
                        basename "$(readlink -f "/sys/class/block/$d/..")"
                else
                        echo "$d"
                fi
        done | sort -u
}
target_disks() {
        local busy d
        busy=" $(busy_disks | tr '\n' ' ') "
        for d in /sys/block/*; do
                d=${d##*/}
                case $d in loop* | ram* | sr* | fd* | zram* | dm-* | md*) continue ;; esac
                [ "$(cat "/sys/block/$d/size")" -gt 0 ] || continue
                case $busy in *" $d "*) continue ;; esac
                echo "/dev/$d"
        done
}
disk_bytes() { echo $(($(cat "/sys/class/block/${1#/dev/}/size") * 512)); }

# restore_volumes VERSION MAP: the stand-in for `kura bmr` until it exists (and
# for versions without disks): `kura restore` of each volume.  MAP is
# NAME=DEV,... or auto (each volume, in order, onto the smallest empty target
# disk that holds it).
restore_volumes() {
        local ver=$1 map=$2 vols n name size dst used='' d best bs pair
        kura_q versions --json >/run/kura/versions.json || return 1
        vols=$(jq -r --arg v "$ver" '.versions | (if $v == "latest" then [last] else map(select(.id | startswith($v))) end)
                | .[0].volumes[] | "\(.name) \(.size)"' /run/kura/versions.json) || return 1
        [ -n "$vols" ] || { say "version $ver has no volumes"; return 1; }
        if [ "$map" = auto ]; then
                map=''
                while read -r name size; do
                        best='' bs=''
                        for d in $(target_disks); do
                                case " $used " in *" $d "*) continue ;; esac
                                blkid -p "$d" >/dev/null 2>&1 && continue # holds something: not empty
                                n=$(disk_bytes "$d")
                                [ "$n" -ge "$size" ] || continue
                                if [ -z "$bs" ] || [ "$n" -lt "$bs" ]; then best=$d bs=$n; fi
                        done
                        [ -n "$best" ] || { say "no empty disk of at least $size bytes for volume $name"; return 1; }
                        used="$used $best"
                        map=${map:+$map,}$name=$best
                done <<EOF
$vols
EOF
                say "disk map (auto): $map"
        fi
        for pair in $(echo "$map" | tr ',' ' '); do
                name=${pair%%=*} dst=${pair#*=}
                echo "KURA-RESCUE-RUN: kura restore --version $ver --volume $name --volume-to $dst"
                kura_q restore --version "$ver" --volume "$name" --volume-to "$dst" || return 1
        done
}

have_bmr() { kura bmr --help >/dev/null 2>&1; }
# version_is_bmr VERSION: the version records disks (a bare-metal version).
version_is_bmr() {
        kura_q versions --json >/run/kura/versions.json 2>/dev/null || return 1
        jq -e --arg v "$1" '.versions | (if $v == "latest" then [last] else map(select(.id | startswith($v))) end)
                | .[0] | if has("bmr") then .bmr else ((.disks // []) | length > 0) end' /run/kura/versions.json >/dev/null 2>&1
}

# run_restore VERSION MAP: `kura bmr` when it exists and the version is a
# bare-metal one (kura.mode=auto), else volume by volume.
run_restore() {
        local ver=$1 map=$2 mode=$K_MODE
        if [ "$mode" = auto ]; then
                if have_bmr && version_is_bmr "$ver"; then mode=bmr; else mode=restore; fi
        fi
        if [ "$mode" = bmr ]; then
                set -- --version "$ver" --disk-map "$map" --yes
                for d in $(echo "$K_EXCLUDE" | tr ',' ' '); do set -- "$@" --exclude-disk "$d"; done
                # shellcheck disable=SC2086
                set -- "$@" $K_ARGS
                echo "KURA-RESCUE-RUN: kura bmr $*"
                kura_q bmr "$@"
        else
                restore_volumes "$ver" "$map"
        fi
}

resolve_version() { # VERSION -> full ID
        kura_q versions --json >/run/kura/versions.json || return 1
        jq -er --arg v "$1" '.versions | (if $v == "latest" then [last] else map(select(.id | startswith($v))) end)
                | if length == 1 then .[0].id else error("no unique version") end' /run/kura/versions.json 2>/dev/null
}

unattended() {
        local ver rc
        say "unattended restore: repo=$K_REPO share=$K_SHARE version=$K_VERSION disk-map=$K_DISKMAP"
        locate_repo || fail 1 "repository not found"
        get_passphrase || fail 1 "no passphrase (kura.keyfile=$K_KEYFILE)"
        ver=$(resolve_version "$K_VERSION") || fail 1 "version $K_VERSION not found in $REPO"
        say "version $ver"
        run_restore "$ver" "$K_DISKMAP"
        rc=$?
        sync
        [ "$rc" = 0 ] || fail "$rc" "restore of $ver exited $rc"
        echo "KURA-RESCUE-RESULT: PASS $ver"
        say "restore of version $ver done"
        finish 0
}

# ---- the text menu ---------------------------------------------------------------------

ask() { # PROMPT DEFAULT -> REPLY
        printf '%s [%s]: ' "$1" "$2"
        read -r REPLY || REPLY=''
        [ -n "$REPLY" ] || REPLY=$2
}

list_sources() {
        echo
        echo "Disks and partitions:"
        blkid -o list 2>/dev/null || blkid
        echo
}

interactive() {
        local i n ver map d id
        while :; do
                echo
                echo "=== kura rescue: restore this machine from a kura repository ==="
                echo "  1) repository on a local disk (DEV:/PATH, e.g. /dev/sdb1:/backups/srv or LABEL=usb:/kura)"
                echo "  2) repository on a network share (smb://HOST/SHARE/PATH or nfs://HOST/EXPORT/PATH)"
                echo "  3) repository path or URL (/PATH on the rescue medium: medium:/PATH)"
                echo "  4) shell"
                echo "  5) power off"
                ask "Choice" 1
                case $REPLY in
                1)
                        list_sources
                        ask "Repository (DEV:/PATH)" "${K_REPO:-/dev/sdb1:/}"
                        K_REPO=$REPLY K_SHARE=''
                        ;;
                2)
                        ask "Share URL" "${K_SHARE:-smb://10.0.2.2/kura}"
                        K_SHARE=$REPLY
                        ask "Repository path inside the share" "/"
                        K_REPO=$REPLY
                        ;;
                3)
                        ask "Repository" "${K_REPO:-medium:/repo}"
                        K_REPO=$REPLY K_SHARE=''
                        ;;
                4) setsid sh -c 'exec sh </dev/console >/dev/console 2>&1'; continue ;;
                5) poweroff -f ;;
                *) continue ;;
                esac
                locate_repo || continue
                ask "Key file (medium:/PATH, share:/PATH, DEV:/PATH; empty: type the passphrase)" "$K_KEYFILE"
                K_KEYFILE=$REPLY
                get_passphrase || { say "no passphrase"; continue; }
                kura_q versions --json >/run/kura/versions.json || { say "cannot list the versions"; continue; }
                n=$(jq '.versions | length' /run/kura/versions.json)
                [ "$n" -gt 0 ] || { say "the repository holds no version"; continue; }
                echo
                echo "Versions (newest last):"
                jq -r '.versions | to_entries[] | "  \(.key + 1)) \(.value.id[0:12])  \(.value.time // .value.date // "")  \([.value.volumes[]? | "\(.name):\(.size)"] | join(" "))"' \
                        /run/kura/versions.json
                ask "Version number" "$n"
                i=$REPLY
                ver=$(jq -r --argjson i "$i" '.versions[$i - 1].id // empty' /run/kura/versions.json 2>/dev/null)
                [ -n "$ver" ] || { say "no version number $i"; continue; }
                echo
                echo "Disks this restore may overwrite:"
                i=1
                for d in $(target_disks); do
                        id=$(blkid -p -o export "$d" 2>/dev/null | tr '\n' ' ')
                        printf '  %d) %s  %s bytes  %s\n' "$i" "$d" "$(disk_bytes "$d")" "${id:-(empty)}"
                        i=$((i + 1))
                done
                echo "Volumes of the version:"
                jq -r --arg v "$ver" '.versions[] | select(.id == $v) | .volumes[]? | "  \(.name)  \(.size) bytes  \(.fs // "")"' \
                        /run/kura/versions.json
                ask "Disk map (auto, or SRC=/dev/X,...)" "$K_DISKMAP"
                map=$REPLY
                echo
                echo "Version $ver will be restored with disk map '$map'."
                echo "EVERYTHING on the target disks will be overwritten."
                ask "Type YES to go on" no
                [ "$REPLY" = YES ] || continue
                if run_restore "$ver" "$map"; then
                        sync
                        echo "KURA-RESCUE-RESULT: PASS $ver"
                        say "restore of version $ver done; remove the rescue medium and reboot"
                        finish 0
                else
                        echo "KURA-RESCUE-RESULT: FAIL 1 restore of $ver failed"
                        say "the restore failed; see the messages above ($LOG)"
                fi
        done
}

if [ "$K_UNATTENDED" = 1 ]; then
        unattended
else
        interactive
fi
finish 0
