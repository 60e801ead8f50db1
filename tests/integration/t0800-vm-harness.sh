#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test markers (read by scripts/test.sh):
# kura-test: no-asan
# kura-test: timeout=400
#
# The qemu guest harness (tests/vm/): Debian's kernel booted under TCG with
# the host root shared over 9p.  Inside one guest: device-mapper, a PV/VG on
# a 128 MiB disk image, a classic LV with a COW snapshot, a thin pool with a
# thin LV and a thin snapshot (the snapshots keep the old bytes after the
# origins change; lvs and thin_delta report it), and this build of kura backs
# up the snapshot and restores it byte-identically.  Harness self-tests: a
# failing command gives FAIL and its exit status, a --share is writable from
# the guest, a hung command times out with 124, and boot-disk.sh boots a BIOS
# disk (a hand-made MBR that prints a marker) and a UEFI disk (OVMF shell ->
# startup.nsh -> Debian's kernel + busybox initramfs) without changing them.
# Boots run one at a time.  Never runs LVM on the host (no device-mapper here).
. "$(dirname "$0")/lib.sh"

VM=$SRCROOT/tests/vm
require_tool qemu-system-x86_64 lvm thin_delta dmsetup cpio xz mkfs.vfat mcopy
[ -f /usr/share/ovmf/OVMF.fd ] || skip "ovmf is missing (scripts/setup.sh installs it)"
[ -x /bin/busybox ] || skip "busybox-static is missing"

t=$SECONDS
"$VM/prepare.sh" || fail "tests/vm/prepare.sh failed"
info "prepare.sh took $((SECONDS - t)) s"

# ---- the LVM / device-mapper guest ---------------------------------------------
# The known data is made here, at native speed; the guest reads it through 9p.
mkdir -p "$T/gdata"
for s in A:4 B:4 C:1 D:4 E:1; do
        rand_bytes "kura-vm-${s%:*}-x" $((${s#*:} * 1048576)) >"$T/gdata/${s%:*}" || fail "gdata"
done
truncate -s 128M "$T/pv.img"
t=$SECONDS
GDATA=$T/gdata KURA_VM_ENV=GDATA "$VM/run.sh" --disk "$T/pv.img" --timeout 300 --log "$T/lvm-console.log" \
        -- bash "$VM/guest-lvm-selftest.sh" /dev/vda >"$T/lvm.out" 2>"$T/lvm.err"
rc=$?
cat "$T/lvm.out" "$T/lvm.err"
info "LVM guest: exit $rc after $((SECONDS - t)) s"
assert_eq 0 "$rc" "exit status of the LVM guest"
assert_contains "$T/lvm-console.log" "KURA-VM-RESULT: PASS" "console marker"
for l in "classic snapshot keeps the old bytes" "thin snapshot keeps the old bytes" \
        "lvs and thin_delta agree" "kura backed up /dev/kvmt/csnap and restored it byte-identically" "] PASS"; do
        assert_contains "$T/lvm.out" "$l" "guest output"
done
assert_contains "$T/lvm.err" "guest booted in" "run.sh summary"
grep -o 'guest booted in [0-9.]* s' "$T/lvm.err" | sed "s/^/[$TESTNAME] /"
# The guest's writes reached the image (and only the image): an LVM PV now.
assert_eq LVM2_member "$(blkid -p -o value -s TYPE "$T/pv.img")" "blkid of the disk image after the guest"

# ---- self-test: failure status, writable share -------------------------------------
mkdir -p "$T/share"
t=$SECONDS
"$VM/run.sh" --share "$T/share" --timeout 150 --log "$T/false-console.log" \
        -- bash -c 'echo "written in the guest $(uname -r)" >"$1/from-guest"; echo guest-says-hello; false' _ "$T/share" \
        >"$T/false.out" 2>"$T/false.err"
rc=$?
cat "$T/false.err"
info "failing guest: exit $rc after $((SECONDS - t)) s"
assert_eq 1 "$rc" "exit status of run.sh for a guest command 'false'"
assert_contains "$T/false-console.log" "KURA-VM-RESULT: FAIL 1" "console marker"
assert_not_contains "$T/false-console.log" "KURA-VM-RESULT: PASS" "console marker"
assert_contains "$T/false.out" "guest-says-hello" "the command's output on run.sh's stdout"
[ -f "$T/share/from-guest" ] || fail "the guest could not write into --share $T/share"
assert_contains "$T/share/from-guest" "written in the guest 6." "file written through the share"
# ...but the shared root stays read-only for the host: the overlay took the write.
[ ! -e "$SRCROOT/from-guest" ] || fail "a guest write reached the host root"

# ---- self-test: timeout -------------------------------------------------------------
t=$SECONDS
"$VM/run.sh" --timeout 4 -- sleep 600 >"$T/to.out" 2>"$T/to.err"
rc=$?
info "hung guest: exit $rc after $((SECONDS - t)) s"
assert_eq 124 "$rc" "exit status of run.sh when the guest does not finish in time"
assert_contains "$T/to.err" "TIMEOUT after 4 s" "run.sh message"
# (Time spent waiting for another test's guest to finish does not count.)
if ! grep -q "waiting for another guest" "$T/to.err"; then
        assert_le $((SECONDS - t)) 30 "seconds for a 4 s timeout"
fi
pgrep -f "kura-vm\.[A-Za-z0-9]*/guest.conf" >/dev/null && fail "qemu still running after the timeout"

# ---- boot-disk.sh: a BIOS disk ---------------------------------------------------------
# A 1 MiB disk whose MBR code writes a marker to COM1 and halts:
#   xor ax,ax; mov ds,ax; cld; mov si,msg; mov dx,0x3f8
#   l: lodsb; test al,al; jz h; out dx,al; jmp l;  h: hlt; jmp h;  msg: ...
truncate -s 1M "$T/mbr.img"
{
        printf '\x31\xc0\x8e\xd8\xfc\xbe\x16\x7c\xba\xf8\x03\xac\x84\xc0\x74\x03\xee\xeb\xf8\xf4\xeb\xfd'
        printf 'KURA-BIOS-MARKER-0800\r\n\0'
} | dd of="$T/mbr.img" conv=notrunc status=none
printf '\x55\xaa' | dd of="$T/mbr.img" bs=1 seek=510 conv=notrunc status=none
before=$(sha "$T/mbr.img")
t=$SECONDS
"$VM/boot-disk.sh" --firmware bios --disk "$T/mbr.img" --marker '^KURA-BIOS-MARKER-[0-9]+$' --timeout 120 \
        --log "$T/bios-console.log" 2>"$T/bios.err"
rc=$?
cat "$T/bios.err"
info "BIOS disk boot: exit $rc after $((SECONDS - t)) s"
assert_eq 0 "$rc" "boot-disk.sh --firmware bios exit status"
assert_eq "$before" "$(sha "$T/mbr.img")" "the disk image after a snapshot=on boot"
# The same disk without its boot signature: SeaBIOS finds nothing to boot.
cp "$T/mbr.img" "$T/nosig.img"
printf '\0\0' | dd of="$T/nosig.img" bs=1 seek=510 conv=notrunc status=none
"$VM/boot-disk.sh" --firmware bios --disk "$T/nosig.img" --marker '^KURA-BIOS-MARKER' --timeout 10 2>"$T/nosig.err"
rc=$?
assert_ne 0 "$rc" "boot-disk.sh on a disk without a boot signature"
info "unbootable disk: exit $rc (no marker)"

# ---- boot-disk.sh: a UEFI disk -----------------------------------------------------------
# A FAT disk (no partition table: OVMF maps it as FS0) without BOOTX64.EFI, so
# OVMF falls back to its shell, which runs startup.nsh: Debian's kernel (an EFI
# stub) with a command line and a busybox initramfs that prints a marker.
KDIR=${KURA_VM_CACHE:-/var/cache/kura-vm}/$(cat "${KURA_VM_CACHE:-/var/cache/kura-vm}/KVER")
mkdir -p "$T/ird/bin" "$T/ird/dev"
cp /bin/busybox "$T/ird/bin/"
printf '#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs d /dev\necho KURA-UEFI-MARKER-$(/bin/busybox uname -r) >/dev/ttyS0\n/bin/busybox poweroff -f\n' >"$T/ird/init"
chmod 755 "$T/ird/init"
(cd "$T/ird" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$T/uefi-initrd.img" || fail "cpio"
printf 'fs0:\r\n\\linux.efi console=ttyS0 quiet panic=-1 initrd=\\initrd.img\r\n' >"$T/startup.nsh"
truncate -s 40M "$T/esp.img"
mkfs.vfat -n KURAESP "$T/esp.img" >/dev/null || fail "mkfs.vfat"
mcopy -i "$T/esp.img" "$KDIR/vmlinuz" ::/linux.efi || fail "mcopy"
mcopy -i "$T/esp.img" "$T/uefi-initrd.img" ::/initrd.img || fail "mcopy"
mcopy -i "$T/esp.img" "$T/startup.nsh" ::/startup.nsh || fail "mcopy"
before=$(sha "$T/esp.img")
t=$SECONDS
"$VM/boot-disk.sh" --firmware uefi --disk "$T/esp.img" --marker '^KURA-UEFI-MARKER-6\.' --timeout 150 \
        --log "$T/uefi-console.log" 2>"$T/uefi.err"
rc=$?
cat "$T/uefi.err"
info "UEFI disk boot: exit $rc after $((SECONDS - t)) s"
assert_eq 0 "$rc" "boot-disk.sh --firmware uefi exit status"
assert_contains "$T/uefi-console.log" "EFI Internal Shell" "OVMF console"
assert_eq "$before" "$(sha "$T/esp.img")" "the ESP image after a snapshot=on boot"
