#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Turn a GPT test disk (make-test-disk.sh --kind gpt) into one that boots with
# Secure Boot on: its ESP gets Debian's signed chain — shim (signed by
# Microsoft's UEFI CA) as \EFI\BOOT\BOOTX64.EFI with Debian's signed GRUB and
# MokManager beside it (also under \EFI\debian) and a grub.cfg that finds the
# root by UUID.  Debian's kernel in the test disk is signed already.  The
# packages are downloaded once (apt-get download, never installed) into
# $KURA_VM_CACHE/secureboot.
#   tests/vm/make-sb-disk.sh IMG
set -euo pipefail
img=$1
cache=${KURA_VM_CACHE:-/var/cache/kura-vm}/secureboot
if [ ! -f "$cache/x/usr/lib/shim/shimx64.efi.signed" ]; then
        mkdir -p "$cache"
        (
                cd "$cache"
                apt-get download shim-signed grub-efi-amd64-signed shim-helpers-amd64-signed >/dev/null 2>&1 ||
                        { apt-get update -q >/dev/null && apt-get download shim-signed grub-efi-amd64-signed shim-helpers-amd64-signed >/dev/null; }
                for d in *.deb; do dpkg -x "$d" x; done
        )
fi
shim=$cache/x/usr/lib/shim/shimx64.efi.signed
mm=$cache/x/usr/lib/shim/mmx64.efi.signed
grub=$cache/x/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed
for f in "$shim" "$mm" "$grub"; do [ -f "$f" ] || { echo "make-sb-disk: $f is missing" >&2; exit 1; }; done
read -r start root_start < <(sfdisk -J "$img" | jq -r '.partitiontable.partitions | "\(.[1].start * 512) \(.[2].start * 512)"')
root_uuid=$(blkid -p -O "$root_start" -o value -s UUID "$img")
esp="$img@@$start"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/grub.cfg" <<EOC
search --no-floppy --fs-uuid --set=root $root_uuid
set prefix=(\$root)/boot/grub
configfile (\$root)/boot/grub/grub.cfg
EOC
export MTOOLS_SKIP_CHECK=1
for dir in BOOT debian; do
        mcopy -o -i "$esp" "$grub" "::/EFI/$dir/grubx64.efi"
        mcopy -o -i "$esp" "$mm" "::/EFI/$dir/mmx64.efi"
        mcopy -o -i "$esp" "$work/grub.cfg" "::/EFI/$dir/grub.cfg"
done
mcopy -o -i "$esp" "$shim" ::/EFI/BOOT/BOOTX64.EFI
mcopy -o -i "$esp" "$shim" ::/EFI/debian/shimx64.efi
