#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# xfs (320 MiB: mkfs.xfs needs >= 300 MiB; clones mount with -o nouuid).
# Back up a xfs filesystem on a loop device twice (mixed data, then ~1 % changed),
# restore both versions onto fresh loop devices (and v2 into a new file),
# fsck them, and compare their trees with the manifests taken at backup time.
# The second backup must add at most 10 % of what the first stored.
. "$(dirname "$0")/lib.sh"
require_tool mkfs.xfs xfs_repair
run_fs_backup_test xfs 320M 96
