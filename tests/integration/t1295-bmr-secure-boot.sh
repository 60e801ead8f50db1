#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=900
#
# Secure Boot keeps working after a bare-metal restore.  The GPT test disk
# with Debian's signed chain on its ESP (tests/vm/make-sb-disk.sh: shim signed
# by Microsoft's UEFI CA, Debian's signed GRUB, Debian's signed kernel) boots
# under OVMF with Microsoft's keys and Secure Boot on (q35 + SMM, a fresh
# variable store); the same disk with the unsigned GRUB does not (so the
# firmware really enforces it).  Backed up with --disk and restored with
# kura bmr onto a larger empty disk, it boots with Secure Boot on to the same
# marker, and the guest reads SecureBoot=1 from its EFI variables.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"
require_tool qemu-system-x86_64 sfdisk mcopy apt-get dpkg
[ -f /usr/share/OVMF/OVMF_CODE_4M.ms.fd ] || skip "ovmf is missing"
export KURA_TIMEOUT=600
MiB=1048576

bmr_make_disk gpt "$T/plain.img"
bmr_boot uefi-sb "$T/plain.img" "$T/marker" --timeout 120
rc=$?
assert_ne 0 "$rc" "the unsigned GRUB with Secure Boot on"
info "the unsigned chain does not boot with Secure Boot on"
rm -f "$T/plain.img"

bmr_make_disk gpt "$T/sb.img"
"$SRCROOT/tests/vm/make-sb-disk.sh" "$T/sb.img" || fail "make-sb-disk.sh"
bmr_boot uefi-sb "$T/sb.img" "$T/expected" || fail "the signed test disk does not boot with Secure Boot on"
assert_contains "$T/expected.console" "KURA-INFO secure-boot=on" "Secure Boot state in the guest (original)"
SIZE=$(stat -c %s "$T/sb.img")
kura_init_test_repo
kok backup --disk "$T/sb.img" --snapshot none
rm -f "$T/sb.img"

truncate -s $((SIZE + 200 * MiB)) "$T/restored.img"
kok bmr --version latest --disk-map "disk0=$T/restored.img" --yes --tmpdir "$T"
grep -q 'BOOTX64.EFI present' "$T/out" || { cat "$T/out" >&2; fail "bmr must keep the signed BOOTX64.EFI"; }
bmr_boot uefi-sb "$T/restored.img" "$T/marker" || fail "the restored disk does not boot with Secure Boot on"
bmr_assert_marker "$T/expected" "$T/marker" "restored signed disk with Secure Boot on"
assert_contains "$T/marker.console" "KURA-INFO secure-boot=on" "Secure Boot state in the guest (restored)"
info "the restored disk boots with Secure Boot on to the original's marker"
exit 0
