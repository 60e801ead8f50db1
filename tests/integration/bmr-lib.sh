# SPDX-License-Identifier: GPL-2.0-or-later
# shellcheck shell=bash
#
# Bootable test disks for the bare-metal-recovery tests (issue 4).  Source it
# after lib.sh:   . "$(dirname "$0")/lib.sh"; . "$(dirname "$0")/bmr-lib.sh"
# The disks and the marker format: tests/vm/README.md, "Bootable test disks".
#
#   bmr_make_disk KIND IMG [SECTOR]
#       KIND gpt|mbr|lvm, SECTOR 512 (default) or 4096 (gpt only).  lvm is
#       built partly in a qemu guest (tests/vm/guest-make-lvm-disk.sh).  Writes a fresh
#       pristine disk to IMG (sparse copy of a cached build, see below).
#   bmr_marker_expected KIND [SECTOR]
#       prints the marker block (KURA-MARKER-BEGIN .. KURA-MARKER-END, in the
#       order the guest prints it) that a pristine disk of that kind boots to.
#   bmr_boot FIRMWARE IMG OUT [--sector-size N] [--bus B] [--timeout S] [--log FILE] [boot-disk.sh options...]
#       boots IMG (bios|uefi) with tests/vm/boot-disk.sh (snapshot=on: IMG is
#       never changed) until KURA-MARKER-END, or until a failure is certain
#       (a GRUB prompt, the UEFI shell, "No bootable device", the initramfs's
#       KURA-BOOT-FAILED, a kernel panic).  Writes the marker lines, in the
#       order printed, '\r' removed, to OUT (empty when there was none), the
#       console to FILE (default OUT.console); returns boot-disk.sh's status
#       (0 marker seen, 1 guest failed or stopped, 124 timeout, 126 usage).
#       Default timeout 180 s.
#   bmr_assert_marker EXPECTED-FILE OUT WHAT
#       fails the test (with a diff) unless OUT equals EXPECTED-FILE.
#   bmr_part_range IMG N [SECTOR]
#       prints "START_BYTES SIZE_BYTES" of partition N of IMG (sfdisk -J;
#       SECTOR 4096 reads the table through a 4096-byte-sector loop device).
#
# Cache: $KURA_VM_CACHE/test-disks/<kind>-<sector>-<key>.{img,expected}, key =
# checksum of make-test-disk.sh, disk-init.sh, disk-initrd.sh, the other
# scripts copied onto the disks, guest-make-lvm-disk.sh, the kernel version,
# busybox, GRUB's images and (in the lvm disk's initramfs) lvm and cryptsetup.  KURA_BMR_NO_CACHE=1 always builds.

BMR_VM=$SRCROOT/tests/vm
BMR_CACHE=${KURA_VM_CACHE:-/var/cache/kura-vm}/test-disks
# A console line that shows the boot has failed for good.
BMR_FAIL_REGEX='KURA-BOOT-FAILED|grub( rescue)?> *$|Shell> |No bootable device|No bootable option|Kernel panic'

_bmr_key() { # KIND SECTOR
        {
                echo "$1 $2"
                cat "$BMR_VM/make-test-disk.sh" "$BMR_VM/disk-init.sh" "$BMR_VM/disk-initrd.sh" "$BMR_VM/disk-update-initramfs.sh" "$BMR_VM/disk-job.sh"
                cat "${KURA_VM_CACHE:-/var/cache/kura-vm}/KVER" 2>/dev/null
                cksum /bin/busybox /usr/lib/grub/i386-pc/kernel.img /usr/lib/grub/x86_64-efi/kernel.img 2>/dev/null | cut -d' ' -f1,2
                if [ "$1" = lvm ]; then
                        cat "$BMR_VM/guest-make-lvm-disk.sh"
                        cksum /sbin/lvm /sbin/cryptsetup 2>/dev/null | cut -d' ' -f1,2
                fi
        } | sha256sum | cut -c1-16
}

# _bmr_cached KIND SECTOR: builds the cache entry if needed; prints its base path.
_bmr_cached() {
        local kind=$1 ss=$2 key base t0
        "$BMR_VM/prepare.sh" >&2 || fail "tests/vm/prepare.sh failed"
        key=$(_bmr_key "$kind" "$ss")
        base=$BMR_CACHE/$kind-$ss-$key
        mkdir -p "$BMR_CACHE" || fail "mkdir $BMR_CACHE"
        (
                flock 9
                if [ ! -f "$base.expected" ] || [ ! -f "$base.img" ]; then
                        t0=$SECONDS
                        rm -f "$BMR_CACHE/$kind-$ss-"*
                        "$BMR_VM/make-test-disk.sh" --kind "$kind" --sector-size "$ss" \
                                --out "$base.img.new" --expected "$base.expected.new" >&2 || exit 1
                        mv "$base.img.new" "$base.img" && mv "$base.expected.new" "$base.expected" || exit 1
                        info "built the $kind test disk ($ss-byte sectors) in $((SECONDS - t0)) s" >&2
                fi
        ) 9>"$BMR_CACHE/.lock" || fail "make-test-disk.sh --kind $kind --sector-size $ss failed"
        echo "$base"
}

bmr_make_disk() { # KIND IMG [SECTOR]
        local kind=$1 img=$2 ss=${3:-512} base
        if [ "${KURA_BMR_NO_CACHE:-0}" = 1 ]; then
                "$BMR_VM/prepare.sh" >&2 || fail "tests/vm/prepare.sh failed"
                "$BMR_VM/make-test-disk.sh" --kind "$kind" --sector-size "$ss" --out "$img" ||
                        fail "make-test-disk.sh --kind $kind --sector-size $ss failed"
                return 0
        fi
        base=$(_bmr_cached "$kind" "$ss") || exit 1
        rm -f "$img"
        cp --sparse=always "$base.img" "$img" || fail "cp $base.img $img"
}

bmr_marker_expected() { # KIND [SECTOR]
        local base
        base=$(_bmr_cached "$1" "${2:-512}") || exit 1
        cat "$base.expected"
}

bmr_boot() { # FIRMWARE IMG OUT [options]
        local fw=$1 img=$2 out=$3 log='' timeout=180 rc
        shift 3
        local extra=()
        while [ $# -gt 0 ]; do
                case $1 in
                --log) log=$2; shift 2 ;;
                --timeout) timeout=$2; shift 2 ;;
                *) extra+=("$1"); shift ;;
                esac
        done
        [ -n "$log" ] || log=$out.console
        "$BMR_VM/boot-disk.sh" --firmware "$fw" --disk "$img" --marker '^KURA-MARKER-END$' \
                --fail-marker "$BMR_FAIL_REGEX" --timeout "$timeout" --log "$log" "${extra[@]}"
        rc=$?
        tr -d '\r' <"$log" | sed -n '/^KURA-MARKER-BEGIN$/,/^KURA-MARKER-END$/p' | grep -a '^KURA-MARKER' >"$out"
        return "$rc"
}

bmr_assert_marker() { # EXPECTED-FILE OUT WHAT
        if ! cmp -s "$1" "$2"; then
                echo "--- diff expected actual ($3):" >&2
                diff -u "$1" "$2" | head -60 >&2
                fail "$3: the marker differs from the expected one"
        fi
}

bmr_part_range() { # IMG N [SECTOR]
        local img=$1 n=$2 ss=${3:-512} dev=$1 loop='' json
        if [ "$ss" != 512 ]; then
                loop=$(losetup -f --show -r -b "$ss" "$img") || fail "losetup -b $ss $img"
                dev=$loop
        fi
        json=$(sfdisk -J "$dev")
        [ -n "$loop" ] && losetup -d "$loop"
        jq -r --argjson n "$n" --argjson ss "$ss" \
                '.partitiontable.partitions[$n - 1] | "\(.start * $ss) \(.size * $ss)"' <<<"$json"
}
