#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# ext4 (128 MiB).
# Back up a ext4 filesystem on a loop device twice (mixed data, then ~1 % changed),
# restore both versions onto fresh loop devices (and v2 into a new file),
# fsck them, and compare their trees with the manifests taken at backup time.
# The second backup must add at most 10 % of what the first stored.
. "$(dirname "$0")/lib.sh"
require_tool mkfs.ext4 e2fsck
run_fs_backup_test ext4 128M 48
