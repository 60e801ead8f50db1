#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=900
#
# Dissimilar hardware (the seeds' DISM driver injection).  The bootable GPT
# test disk's initramfs has virtio drivers only.  Restored by kura bmr and
# attached to an AHCI (SATA) controller, it cannot find its root
# (KURA-BOOT-FAILED from its initramfs).  Restored with --add-drivers DIR
# (ahci, sd_mod and their dependencies from Debian's kernel), kura puts the
# modules into the restored system, runs depmod, names them in
# /etc/initramfs-tools/modules and regenerates the initramfs in a chroot with
# the system's own update-initramfs: the same disk on AHCI boots to the
# original's marker.  A directory without modules is refused before writing.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"
require_tool qemu-system-x86_64 sfdisk modprobe depmod chroot
[ -f /usr/share/ovmf/OVMF.fd ] || skip "ovmf is missing"
export KURA_TIMEOUT=600

bmr_make_disk gpt "$T/gpt.img"
bmr_marker_expected gpt >"$T/expected"
SIZE=$(stat -c %s "$T/gpt.img")
kura_init_test_repo
kok backup --disk "$T/gpt.img" --snapshot none
rm -f "$T/gpt.img"

# The drivers of the new controller, with their dependencies, from Debian's kernel.
KVER=$(cat "${KURA_VM_CACHE:-/var/cache/kura-vm}/KVER")
KROOT=${KURA_VM_CACHE:-/var/cache/kura-vm}/$KVER/root
mkdir -p "$T/drivers"
for m in ahci sd_mod; do
        modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | sort -u | while read -r f; do cp "$f" "$T/drivers/"; done
ls "$T/drivers" | grep -q '^ahci\.ko' || fail "no ahci module gathered"

# Without the drivers: the initramfs finds no root on AHCI.
truncate -s "$SIZE" "$T/plain.img"
kok bmr --version latest --disk-map "disk0=$T/plain.img" --yes --tmpdir "$T"
bmr_boot uefi "$T/plain.img" "$T/marker" --bus sata
rc=$?
assert_ne 0 "$rc" "boot on AHCI without the drivers"
assert_contains "$T/marker.console" "KURA-BOOT-FAILED: root UUID=" "the initramfs's failure on AHCI"
info "without --add-drivers the restored disk on AHCI does not find its root"

# A directory without modules: refused, nothing written.
mkdir -p "$T/empty"
truncate -s "$SIZE" "$T/drv.img"
before=$(sha "$T/drv.img")
expect_fail 2 KURA-E-USAGE bmr --version latest --disk-map "disk0=$T/drv.img" --yes --add-drivers "$T/empty"
assert_eq "$before" "$(sha "$T/drv.img")" "a refused --add-drivers wrote to the target"

kok bmr --version latest --disk-map "disk0=$T/drv.img" --yes --tmpdir "$T" --add-drivers "$T/drivers"
cat "$T/out"
grep -q 'initramfs regenerated with update-initramfs' "$T/out" || fail "bmr did not report the initramfs"
bmr_boot uefi "$T/drv.img" "$T/marker" --bus sata || fail "the restored disk with --add-drivers does not boot on AHCI"
bmr_assert_marker "$T/expected" "$T/marker" "restore with --add-drivers on AHCI"
info "with --add-drivers the restored disk boots on AHCI to the original's marker"
exit 0
