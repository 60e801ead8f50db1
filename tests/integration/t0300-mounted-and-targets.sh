#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Sources and targets that must be refused (and leave every byte alone), and
# the ones that must work: a source mounted read-write (refused unless
# --allow-mounted, then crash_consistent), a read-only mounted source, restore
# targets too small / mounted / in a missing directory / held by a mounted
# loop device, a missing source, and a two-volume version.
. "$(dirname "$0")/lib.sh"
require_tool mkfs.ext4 e2fsck

MiB=1048576
kura_init_test_repo

# ---- a mounted ext4 source ------------------------------------------------------
src=$(new_loop 64M src) || exit 1
fs_mkfs ext4 "$src"
do_mount "$src" "$T/src"
fill_tree "$T/src" 3 8
tree_manifest "$T/src" >"$T/m-src" || fail manifest

expect_fail 1 KURA-E-SOURCE-MOUNTED backup --volume "$src"
assert_contains "$T/err" "$src" "the SOURCE-MOUNTED message names the device"
kok versions --json
assert_eq 0 "$(jq '.versions | length' "$T/out")" "no version after a refused backup"

kok backup --volume "$src" --allow-mounted
kok versions --json
assert_eq 1 "$(jq '.versions | length' "$T/out")" "versions after --allow-mounted"
assert_eq true "$(jq -r '.versions[0].crash_consistent' "$T/out")" "crash_consistent of an --allow-mounted backup"
v_rw=$(jq -r '.versions[0].id' "$T/out")

# Read-only mount: accepted without --allow-mounted, not crash-consistent.
mount -o remount,ro "$T/src" || fail "remount ro"
sync
kok backup --volume "$src"
kok versions --json
assert_eq 2 "$(jq '.versions | length' "$T/out")" "versions after the read-only backup"
assert_eq false "$(jq -r '.versions[1].crash_consistent' "$T/out")" "crash_consistent of a read-only source"
kok restore --version latest --volume-to "$T/ro.img"
fs_fsck ext4 "$T/ro.img"
ro_dev=$(losetup -f --show -r "$T/ro.img") || fail "losetup ro.img"
echo "$ro_dev" >>"$T/loops"
do_mount -o ro "$ro_dev" "$T/ro-mnt"
tree_manifest "$T/ro-mnt" >"$T/m-ro" || fail manifest
assert_file_eq "$T/m-src" "$T/m-ro" "tree of the read-only-mounted source restored"
do_umount "$T/ro-mnt"
do_umount "$T/src"

# The crash-consistent version restores to something e2fsck can at least
# read; the data files written and synced before the backup are all there.
kok restore --version "$v_rw" --volume-to "$T/rw.img"
assert_eq "$(dev_size "$src")" "$(stat -c %s "$T/rw.img")" "size of the crash-consistent restore"

# ---- restore targets that must be refused --------------------------------------
# Too small: a device 1 MiB smaller than the volume.
small=$(new_loop 63M small) || exit 1
rand_bytes small "$((63 * MiB))" | dd of="$small" bs=1M status=none
before=$(sha "$small")
expect_fail 1 KURA-E-TARGET-TOO-SMALL restore --version latest --volume-to "$small"
assert_eq "$before" "$(sha "$small")" "sha256 of a too-small target after the refused restore"

# Mounted (read-write) target of the right size.
tgt=$(new_loop 64M tgt) || exit 1
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$tgt" || fail "mkfs $tgt"
do_mount "$tgt" "$T/tgt"
echo "precious" >"$T/tgt/precious.txt"
sync
before=$(sha "$tgt")
expect_fail 1 KURA-E-TARGET-MOUNTED restore --version latest --volume-to "$tgt"
sync
assert_eq "$before" "$(sha "$tgt")" "sha256 of a mounted target after the refused restore"
assert_eq precious "$(cat "$T/tgt/precious.txt")" "file on the mounted target"
do_umount "$T/tgt"

# A regular file that backs a mounted loop device.
truncate -s 64M "$T/held.img"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$T/held.img" || fail "mkfs held.img"
held=$(losetup -f --show "$T/held.img") || fail "losetup held.img"
echo "$held" >>"$T/loops"
do_mount "$held" "$T/held"
sync
before=$(sha "$T/held.img")
expect_fail 1 KURA-E-TARGET-MOUNTED restore --version latest --volume-to "$T/held.img"
sync
assert_eq "$before" "$(sha "$T/held.img")" "sha256 of a file behind a mounted loop device"
do_umount "$T/held"

# Missing directory for a new file.
expect_fail 1 KURA-E-TARGET-NOT-FOUND restore --version latest --volume-to "$T/no/such/dir/x.img"
[ ! -e "$T/no" ] || fail "restore created the missing directory"

# Unknown version and volume.
expect_fail 1 KURA-E-VERSION-NOT-FOUND restore --version 0123456789abcdef --volume-to "$T/x.img"
expect_fail 1 KURA-E-VOLUME-NOT-FOUND restore --version latest --volume no-such-volume --volume-to "$T/x.img"

# ---- sources that do not exist ---------------------------------------------------
expect_fail 1 KURA-E-SOURCE-NOT-FOUND backup --volume /dev/kura-no-such-device
expect_fail 1 KURA-E-SOURCE-NOT-FOUND backup --volume "$T/no-such-image.img"
assert_contains "$T/err" "$T/no-such-image.img" "SOURCE-NOT-FOUND names the path"
kok versions --json
assert_eq 2 "$(jq '.versions | length' "$T/out")" "no version from failed backups"

# ---- two volumes in one version -----------------------------------------------------
a=$(new_loop 8M va) || exit 1
b=$(new_loop 12M vb) || exit 1
rand_bytes vol-a $((8 * MiB)) | dd of="$a" bs=1M status=none
{ rand_bytes vol-b $((5 * MiB)); head -c $((7 * MiB)) /dev/zero; } | dd of="$b" bs=1M status=none
sha_a=$(sha "$a") sha_b=$(sha "$b")
kok backup --volume "$a" --name alpha --volume "$b" --name beta
kok versions --json
assert_eq '["alpha","beta"]' "$(jq -c '[.versions[-1].volumes[].name] | sort' "$T/out")" "volume names of the two-volume version"
assert_eq "$((12 * MiB))" "$(jq -r '.versions[-1].volumes[] | select(.name == "beta") | .size' "$T/out")" "size of volume beta"
expect_fail "1|2" KURA-E-VOLUME-REQUIRED restore --version latest --volume-to "$T/two.img"
[ ! -e "$T/two.img" ] || fail "restore without --volume created its target"
kok restore --version latest --volume alpha --volume-to "$T/alpha.img"
kok restore --version latest --volume beta --volume-to "$T/beta.img"
assert_eq "$sha_a" "$(sha "$T/alpha.img")" "sha256 of volume alpha"
assert_eq "$sha_b" "$(sha "$T/beta.img")" "sha256 of volume beta"
# The beta target too small (the alpha-sized file is a device-less file: it
# grows, so use a device).
small8=$(new_loop 8M small8) || exit 1
before=$(sha "$small8")
expect_fail 1 KURA-E-TARGET-TOO-SMALL restore --version latest --volume beta --volume-to "$small8"
assert_eq "$before" "$(sha "$small8")" "sha256 of the too-small device"
# And the right one onto that device works.
kok restore --version latest --volume alpha --volume-to "$small8"
assert_eq "$sha_a" "$(sha "$small8")" "sha256 of alpha restored onto a device"

kok check
