#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: timeout=600
#
# An MBR disk with an extended partition and two logical ones (p5, p6; ext4
# each, as old Debian installers made them) backed up with --disk and
# restored with kura bmr onto an empty disk of the same size, a larger one
# (the last logical partition grows and the extended container with it) and
# a smaller one (the last logical partition shrinks, the container too).
# Each time: the table (types, starts, sizes), fsck-clean filesystems with
# the original labels, UUIDs and file contents.  Then --grow by the
# filesystem UUID of p5 (p6 moves), and a --grow that names nothing (refused
# before writing).  On the host, no boot: the
# boot path of MBR disks is t1220's.
. "$(dirname "$0")/lib.sh"
require_tool sfdisk mkfs.ext4 e2fsck debugfs jq

MiB=1048576
truncate -s 128M "$T/src.img"
printf 'label: dos\nlabel-id: 0x4b4c4f47\n,32M,L,*\n,,E\n,40M,L\n,,L\n' | sfdisk -q "$T/src.img" || fail "sfdisk"
part() { # IMG NODE-NUMBER -> START SIZE (bytes)
        sfdisk -J "$1" | jq -r --arg n "$1$2" '.partitiontable.partitions[] | select(.node == $n) | "\(.start * 512) \(.size * 512)"'
}
for n in 1 5 6; do
        read -r s z < <(part "$T/src.img" "$n")
        truncate -s "$z" "$T/p$n.img"
        mkfs.ext4 -q -F -L "part$n" -U "$(printf '6b6c6f67-0000-4000-8000-00000000000%d' "$n")" "$T/p$n.img"
        rand_bytes "logical-$n" $((3 * MiB)) >"$T/r$n"
        printf 'logical partition test, partition %d\n' "$n" >"$T/t$n"
        debugfs -w -R "write $T/r$n /r" "$T/p$n.img" >/dev/null 2>&1
        debugfs -w -R "write $T/t$n /t" "$T/p$n.img" >/dev/null 2>&1
        e2fsck -fn "$T/p$n.img" >/dev/null 2>&1 || fail "the source p$n is not clean"
        dd if="$T/p$n.img" of="$T/src.img" bs=1M seek="$s" oflag=seek_bytes conv=notrunc status=none
        rm -f "$T/p$n.img"
done
kura_init_test_repo
kok backup --disk "$T/src.img" --snapshot none
kok versions --json
jq -e '.versions[0].bmr == true and ([.versions[0].volumes[].name] == ["disk0-boot","disk0p1","disk0p5","disk0p6"])' \
        "$T/out" >/dev/null || { cat "$T/out" >&2; fail "the version's volumes (the extended partition is recorded, not copied)"; }

check_restore() { # SIZE WHAT P6-SIZE-CHANGE(same|grown|shrunk)
        local img=$T/t.img
        rm -f "$img"
        truncate -s "$1" "$img"
        kok bmr --version latest --disk-map "disk0=$img" --yes --tmpdir "$T"
        sfdisk -J "$img" >"$T/table.json" || fail "$2: no partition table on the restored disk"
        jq -e '.partitiontable.id == "0x4b4c4f47" and ([.partitiontable.partitions[].type] == ["83","5","83","83"])' \
                "$T/table.json" >/dev/null || { cat "$T/table.json" >&2; fail "$2: table id or types"; }
        read -r es ez < <(part "$img" 2)
        read -r s6 z6 < <(part "$img" 6)
        read -r s5 z5 < <(part "$img" 5)
        [ "$s5" -gt "$es" ] && [ $((s6 + z6)) -le $((es + ez)) ] || fail "$2: the logical partitions are not inside the extended one"
        case $3 in
        same) assert_eq 55574528 "$z6" "$2: size of p6" ;;
        grown) [ "$z6" -gt 55574528 ] || fail "$2: p6 did not grow ($z6)" ;;
        shrunk) [ "$z6" -lt 55574528 ] || fail "$2: p6 did not shrink ($z6)" ;;
        esac
        for n in 1 5 6; do
                read -r s z < <(part "$img" "$n")
                dd if="$img" of="$T/x.img" bs=1M skip="$s" count="$z" iflag=skip_bytes,count_bytes status=none
                e2fsck -fn "$T/x.img" >/dev/null 2>&1 || fail "$2: p$n is not fsck-clean"
                assert_eq "6b6c6f67-0000-4000-8000-00000000000$n part$n" \
                        "$(blkid -p -o value -s UUID "$T/x.img") $(blkid -p -o value -s LABEL "$T/x.img")" "$2: p$n UUID and label"
                debugfs -R "cat /r" "$T/x.img" 2>/dev/null >"$T/got"
                assert_file_eq "$T/r$n" "$T/got" "$2: p$n /r"
                debugfs -R "cat /t" "$T/x.img" 2>/dev/null >"$T/got"
                assert_file_eq "$T/t$n" "$T/got" "$2: p$n /t"
                if [ "$n" = 6 ]; then
                        bs=$(dumpe2fs -h "$T/x.img" 2>/dev/null | awk -F: '/^Block size/ { print $2 + 0 }')
                        bc=$(dumpe2fs -h "$T/x.img" 2>/dev/null | awk -F: '/^Block count/ { print $2 + 0 }')
                        assert_eq "$z" $((bs * bc)) "$2: p6's filesystem fills its partition"
                fi
        done
        info "$2: table, filesystems and files as backed up (p6 $3: $z6 bytes)"
}
check_restore 128M "same size" same
check_restore 200M "larger disk" grown
check_restore 124M "smaller disk" shrunk

# --grow by an alias: p5 named by its filesystem UUID grows, p6 keeps its size
# and moves (the extended partition follows both).  A --grow that names
# nothing is refused before anything is written.
rm -f "$T/t.img"
truncate -s 200M "$T/t.img"
expect_fail 1 KURA-E-VOLUME-NOT-FOUND bmr --version latest --disk-map "disk0=$T/t.img" --yes --grow UUID=00000000-0000-4000-8000-000000000000
assert_contains "$T/err" "nothing was written" "the unmatched --grow is refused before writing"
assert_eq 0 "$(cmp -s -n 209715200 "$T/t.img" /dev/zero; echo $?)" "the target after the refused --grow (all zeros)"
kok bmr --version latest --disk-map "disk0=$T/t.img" --yes --tmpdir "$T" --grow UUID=6b6c6f67-0000-4000-8000-000000000005
read -r s5 z5 < <(part "$T/t.img" 5)
read -r s6 z6 < <(part "$T/t.img" 6)
read -r es ez < <(part "$T/t.img" 2)
assert_eq $((40 * MiB + 72 * MiB)) "$z5" "--grow UUID=: p5 grew by the size difference"
assert_eq 55574528 "$z6" "--grow UUID=: p6 kept its size"
[ $((s6 + z6)) -le $((es + ez)) ] && [ "$s6" -ge $((s5 + z5)) ] || fail "--grow UUID=: p6 is not after p5 inside the extended partition"
for n in 5 6; do
        read -r s z < <(part "$T/t.img" "$n")
        dd if="$T/t.img" of="$T/x.img" bs=1M skip="$s" count="$z" iflag=skip_bytes,count_bytes status=none
        e2fsck -fn "$T/x.img" >/dev/null 2>&1 || fail "--grow UUID=: p$n is not fsck-clean"
        debugfs -R "cat /r" "$T/x.img" 2>/dev/null >"$T/got"
        assert_file_eq "$T/r$n" "$T/got" "--grow UUID=: p$n /r"
done
info "--grow UUID=<p5's filesystem>: p5 grew, p6 moved intact"
exit 0
