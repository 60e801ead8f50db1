#!/usr/bin/env bash
# Install every Debian package kura's build, tests and benchmarks need, then build.
# Run as root on a fresh Debian 12 machine:  ./scripts/setup.sh
# Set KURA_SETUP_NO_APT=1 to skip the package installation (already done).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # build
  meson ninja-build pkg-config gcc clang libc6-dev
  libssl-dev libsodium-dev libzstd-dev libblkid-dev libext2fs-dev uuid-dev
  libjansson-dev libxxhash-dev libcmocka-dev libfdisk-dev libmount-dev
  # fuzzing (libFuzzer) and sanitizer runtimes
  libclang-rt-14-dev libfuzzer-14-dev
  # tests: filesystems, partitions, loop devices, checks
  util-linux e2fsprogs xfsprogs btrfs-progs dosfstools mtools attr acl
  zstd openssl coreutils findutils diffutils procps kmod python3 jq time
  # qemu guests (tests/vm/): Debian's kernel runs what this host's kernel lacks
  qemu-system-x86 qemu-utils busybox-static cpio xz-utils ovmf seabios
  lvm2 thin-provisioning-tools fdisk
  # bare-metal recovery: boot loaders for the test disks and for re-installs, NVRAM entries
  grub-efi-amd64-bin grub-pc-bin grub-common efibootmgr cryptsetup-bin
  # the rescue image (kura rescue build) and its test: ISO, share clients inside it, an SMB server
  xorriso cifs-utils nfs-common samba
  # reference writers and their tests: real databases from Debian
  libpq-dev libmariadb-dev libsqlite3-dev sqlite3 postgresql postgresql-contrib mariadb-server mariadb-client
  # benchmarks (bench/): the peers and the data set
  restic borgbackup partclone debootstrap
)

if [ "${KURA_SETUP_NO_APT:-0}" != 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root to install packages (or set KURA_SETUP_NO_APT=1)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

if [ ! -f build/build.ninja ]; then
  meson setup build --buildtype=debugoptimized
fi
ninja -C build
echo "setup.sh: built $(pwd)/build/kura"
