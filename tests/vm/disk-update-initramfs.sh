#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /usr/sbin/update-initramfs of kura's bootable test disks (busybox only), so
# that `kura bmr --add-drivers` can regenerate the initramfs in a chroot the
# way it does on Debian: `update-initramfs -u -k all` rebuilds
# /boot/initrd.img-KVER from the disk's initramfs skeleton
# (/usr/share/kura-initramfs: its /init and the modules it always loads)
# plus every module named in /etc/initramfs-tools/modules, with its
# dependencies from /lib/modules/KVER/modules.dep, loaded in that order.
set -e
case " $* " in
*" -u "*) ;;
*) echo "usage: update-initramfs -u [-k all|KVER]" >&2; exit 2 ;;
esac
skel=/usr/share/kura-initramfs
for kdir in /lib/modules/*; do
        [ -d "$kdir" ] || continue
        kver=${kdir##*/}
        w=/tmp/initramfs.$$
        rm -rf "$w"
        mkdir -p "$w/bin" "$w/dev" "$w/proc" "$w/sys" "$w/newroot" "$w/modules"
        cp /bin/busybox "$w/bin/busybox"
        for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$w/bin/$a"; done
        cp "$skel/init" "$w/init"
        cp "$skel/modules/"* "$w/modules/"
        # add_one PATH (relative to $kdir): copy it and append it to the load order, once.
        add_one() {
                grep -qx "${1##*/}" "$w/modules/order" && return 0
                cp "$kdir/$1" "$w/modules/${1##*/}"
                echo "${1##*/}" >>"$w/modules/order"
        }
        for m in $(grep -v '^#' /etc/initramfs-tools/modules 2>/dev/null | cut -d' ' -f1); do
                n=$(echo "$m" | tr - _)
                line=$(while IFS= read -r l; do
                        q=${l%%:*}
                        b=$(basename "$q" | sed 's/\.ko.*$//' | tr - _)
                        [ "$b" = "$n" ] && { echo "$l"; break; }
                done <"$kdir/modules.dep")
                [ -n "$line" ] || { echo "update-initramfs: module $m not found in $kdir" >&2; exit 1; }
                # modules.dep lists every dependency, the one to load first last.
                deps=
                for d in ${line#*:}; do deps="$d $deps"; done
                for d in $deps; do add_one "$d"; done
                add_one "${line%%:*}"
        done
        (cd "$w" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"/boot/initrd.img-$kver.new"
        mv "/boot/initrd.img-$kver.new" "/boot/initrd.img-$kver"
        echo "update-initramfs: generated /boot/initrd.img-$kver ($(wc -l <"$w/modules/order") modules)"
        rm -rf "$w"
done
