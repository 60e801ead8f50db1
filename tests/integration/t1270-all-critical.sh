#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=1200
#
# `kura critical` and `kura backup --all-critical` inside a qemu guest, on
# the bootable GPT test disk's system mounted at /target (never on this
# host's own disks): the critical volumes are / and /boot/efi of /dev/vda,
# found from the mounts and the system's fstab; with / mounted read-write on
# a plain partition the backup is refused with KURA-E-CRITICAL-LIVE and the
# choices; mounted read-only it backs /dev/vda up whole; kura bmr in the
# guest restores the version onto the empty /dev/vdb, and that disk, booted
# on its own under UEFI with an empty NVRAM, shows the original's marker.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"
require_tool qemu-system-x86_64 sfdisk
[ -f /usr/share/ovmf/OVMF.fd ] || skip "ovmf is missing"

bmr_make_disk gpt "$T/vda.img"
bmr_marker_expected gpt >"$T/expected"
truncate -s "$(stat -c %s "$T/vda.img")" "$T/vdb.img"
mkdir -p "$T/share"
t=$SECONDS
"$SRCROOT/tests/vm/run.sh" --disk "$T/vda.img" --disk "$T/vdb.img" --share "$T/share" --timeout 900 --mem 1024 \
        --log "$T/console.log" -- bash "$SRCROOT/tests/vm/guest-all-critical.sh" "$T/share" >"$T/guest.out" 2>&1
rc=$?
cat "$T/guest.out"
info "guest: exit $rc after $((SECONDS - t)) s"
assert_eq 0 "$rc" "exit status of the guest"
S=$T/share
assert_contains "$S/rc" "critical: 0" "kura critical in the guest"
jq -e '[.critical[].mountpoint] | sort == ["/", "/boot/efi"]' "$S/critical.json" >/dev/null ||
        { cat "$S/critical.json" >&2; fail "critical volumes"; }
jq -e '.critical | map(.disks) | unique == ["/dev/vda"]' "$S/critical.json" >/dev/null || fail "critical disks"
jq -e '.critical[] | select(.mountpoint == "/") | (.device == "/dev/vda3" and (.why | tostring | test("fstab")) and (.consistency | test("^none")))' \
        "$S/critical.json" >/dev/null || { cat "$S/critical.json" >&2; fail "the root's reasons and consistency"; }

assert_contains "$S/rc" "live: 1" "--all-critical with a live root must fail"
assert_contains "$S/live.out" "KURA-E-CRITICAL-LIVE" "the live root's error code"
assert_contains "$S/live.out" "--crash-consistent" "the error names the choices"

assert_contains "$S/rc" "backup: 0" "--all-critical read-only"
jq -e '.versions | length == 1 and .[0].bmr == true and .[0].crash_consistent == false and (.[0].disks[0].path == "/dev/vda")' \
        "$S/versions.json" >/dev/null || { jq '.versions[0] | del(.disks)' "$S/versions.json" >&2; fail "the --all-critical version"; }
jq -e '[.versions[0].volumes[].name] == ["disk0-boot","disk0p1","disk0p2","disk0p3","disk0p5","disk0p6"]' \
        "$S/versions.json" >/dev/null || fail "the volumes of the --all-critical version"

assert_contains "$S/rc" "bmr: 0" "kura bmr in the guest"
cat "$S/bmr.out"
bmr_boot uefi "$T/vdb.img" "$T/marker" || fail "the disk restored in the guest does not boot"
bmr_assert_marker "$T/expected" "$T/marker" "disk restored from an --all-critical version"
info "the --all-critical version restored in the guest boots to the original's marker"
exit 0
