#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=900
#
# `kura critical` and `kura backup --all-critical` on a system BOOTED from a
# test disk (never on this host's own disks): the GPT test disk (bmr-lib.sh)
# boots under UEFI to its own busybox system (/ = /dev/vda3 ext4 mounted
# read-only by its initramfs, /etc/fstab naming / and /boot/efi by UUID);
# its init runs a job disk (tests/vm/make-job-disk.sh: this build's kura with
# its libraries and loader, loop.ko, run.sh below; attached writable, the
# test disk itself stays snapshot=on) before printing its marker.  On that
# system:
#   - kura critical finds / (/dev/vda3: mounted and in fstab, consistency
#     offline while read-only; none while read-write) and /boot/efi (from
#     fstab only: not mounted), both on the disk /dev/vda;
#   - with / remounted read-write (a plain partition: no snapshot provider)
#     backup --all-critical is refused with KURA-E-CRITICAL-LIVE naming
#     --crash-consistent;
#   - with / read-only again, backup --all-critical backs /dev/vda up whole:
#     a bmr version, not crash-consistent, volumes disk0-boot and every
#     partition but the swap (p4 recorded in the layout, not copied).
# The job does not change the test disk: that boot still prints the disk's
# expected marker.  Then on the host, the repository read out of the job
# disk (debugfs, no mount) is restored with kura bmr onto an empty image of
# the same size, and that image boots under UEFI (empty NVRAM) to the same
# marker: the version taken on the running system restores and boots.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/bmr-lib.sh"
require_tool qemu-system-x86_64 sfdisk mkfs.ext4 debugfs
[ -f /usr/share/ovmf/OVMF.fd ] || skip "ovmf is missing"

bmr_make_disk gpt "$T/vda.img"
bmr_marker_expected gpt >"$T/expected"

# The job, run by the booted system's init (busybox sh, in the job disk's
# directory, kura on PATH through the bundled loader).  Results in out/.
cat >"$T/run.sh" <<'EOF'
O=$KURA_JOB/out
export KURA_PASSWORD=guest-pass KURA_REPO=$O/repo
export KURA_CONFIG_DIR=/tmp/kura-config KURA_STATE_DIR=/tmp/kura-state KURA_CACHE_DIR=/tmp/kura-cache
st() { echo "$1: $2" >>"$O/rc"; echo "job: $1: $2"; }
echo "job: $(cat /proc/uptime) s since boot"
cat /proc/self/mountinfo >"$O/mountinfo"
kura critical --json >"$O/critical.json" 2>"$O/critical.err"
st critical $?
kura init --kdf-memory 1M --kdf-passes 1 >"$O/init.out" 2>&1
st init $?
# / read-write on a plain partition: no provider can hold it still.
mount -o remount,rw /
st remount-rw $?
kura critical --json >"$O/critical-rw.json" 2>"$O/critical-rw.err"
st critical-rw $?
kura backup --all-critical >"$O/live.out" 2>&1
st live $?
mount -o remount,ro /
st remount-ro $?
# Read-only: consistent, offline.
t=$(cut -d' ' -f1 /proc/uptime)
kura backup --all-critical --json >"$O/backup.json" 2>"$O/backup.err"
st backup $?
echo "job: backup from $t to $(cut -d' ' -f1 /proc/uptime) s"
kura versions --json >"$O/versions.json" 2>"$O/versions.err"
st versions $?
cat "$O/rc"
for f in critical.err live.out backup.err; do echo "--- $f"; tail -n 5 "$O/$f"; done
EOF
"$SRCROOT/tests/vm/make-job-disk.sh" --out "$T/job.img" --run "$T/run.sh" --kura "$KURA" --size 256M ||
        fail "make-job-disk.sh"

t=$SECONDS
bmr_boot uefi "$T/vda.img" "$T/job-marker" --disk-rw "$T/job.img" --timeout 420 --log "$T/job.console"
rc=$?
info "boot with the job: exit $rc after $((SECONDS - t)) s"
tr -d '\r' <"$T/job.console" | sed -n '/^KURA-JOB-BEGIN$/,/^KURA-JOB-END/p'
[ "$rc" = 0 ] || fail "the test disk with the job did not reach its marker (exit $rc)"
tr -d '\r' <"$T/job.console" | grep -qx 'KURA-JOB-END rc=0' || fail "the job did not end with rc=0"
bmr_assert_marker "$T/expected" "$T/job-marker" "the test disk booted with the job"

# The results, read from the image without mounting it.
mkdir -p "$T/job"
debugfs -R "rdump /out $T/job" "$T/job.img" >/dev/null 2>"$T/debugfs.err" || { cat "$T/debugfs.err" >&2; fail "debugfs rdump"; }
S=$T/job/out
[ -f "$S/rc" ] || fail "the job wrote no results"
for k in critical init remount-rw critical-rw remount-ro backup versions; do
        assert_contains "$S/rc" "$k: 0" "$k in the booted system"
done

# kura critical on the booted system, / read-only.
J=$S/critical.json
jq -e '[.critical[].mountpoint] == ["/", "/boot/efi"]' "$J" >/dev/null || { cat "$J" >&2; fail "critical volumes"; }
jq -e '[.critical[].disks] | unique == ["/dev/vda"]' "$J" >/dev/null || { cat "$J" >&2; fail "critical disks"; }
jq -e '.critical[0] | .device == "/dev/vda3" and .fs == "ext4" and .stack == "partition"
        and (.why | any(test("^mounted at / \\(read-only\\)")))
        and (.why | any(test("^fstab: UUID=6b757261-726f-6f74-0000-000000000003 / ext4")))
        and (.why | any(test("^kernel command line root=UUID=")))
        and .consistency == "offline (not mounted read-write)"' "$J" >/dev/null ||
        { cat "$J" >&2; fail "the root's device, reasons and consistency"; }
jq -e '.critical[1] | .device == "/dev/vda2" and .fs == "vfat"
        and .why == ["fstab: UUID=4B55-0002 /boot/efi vfat"]
        and .consistency == "offline (not mounted read-write)"' "$J" >/dev/null ||
        { cat "$J" >&2; fail "/boot/efi: from fstab only"; }
# ... and read-write: nothing can hold it still.
jq -e '.critical[0] | (.why | any(test("^mounted at /$"))) and (.consistency | test("^none: mounted read-write"))' \
        "$S/critical-rw.json" >/dev/null || { cat "$S/critical-rw.json" >&2; fail "the read-write root's consistency"; }

grep -q '^live: 1$' "$S/rc" || fail "--all-critical with a read-write root must fail with status 1"
assert_contains "$S/live.out" "KURA-E-CRITICAL-LIVE" "the live root's error code"
assert_contains "$S/live.out" "--crash-consistent" "the error names the choices"

V=$S/versions.json
jq -e '.versions | length == 1 and .[0].bmr == true and .[0].crash_consistent == false and
        (.[0].disks | length == 1) and .[0].disks[0].path == "/dev/vda"' "$V" >/dev/null ||
        { jq '.versions[0] | del(.disks)' "$V" >&2; fail "the --all-critical version"; }
jq -e '[.versions[0].volumes[].name] == ["disk0-boot","disk0p1","disk0p2","disk0p3","disk0p5","disk0p6"]' \
        "$V" >/dev/null || { jq '[.versions[0].volumes[].name]' "$V" >&2; fail "the volumes of the --all-critical version"; }
jq -e '.versions[0].disks[0].partitions | map(select(.number == 4))[0] | .role == "swap" and .volume == null' \
        "$V" >/dev/null || { jq '.versions[0].disks[0].partitions' "$V" >&2; fail "the swap partition: recorded, not copied"; }
info "on the booted system: critical volumes, the live refusal and the read-only backup as expected"

# Restore on the host onto an empty image, boot it.
export KURA_PASSWORD=guest-pass KURA_REPO=$S/repo
truncate -s "$(stat -c %s "$T/vda.img")" "$T/restored.img"
kok bmr --version latest --disk-map "disk0=$T/restored.img" --yes --tmpdir "$T"
t=$SECONDS
bmr_boot uefi "$T/restored.img" "$T/marker" --timeout 240 || fail "the restored disk does not boot"
bmr_assert_marker "$T/expected" "$T/marker" "disk restored from an --all-critical version of the booted system"
info "the version taken on the booted system restores and boots to the original's marker ($((SECONDS - t)) s)"
exit 0
