#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# kura benchmark: kura against restic, borg and partclone+zstd on a 4 GiB ext4
# volume image holding ~2.5 GiB (a Debian root, logs/CSV, random data,
# duplicated files), then a ~1 % changed copy of it.  Full backup,
# incremental, restore; wall/CPU/RSS/repository size; the machine's compute
# limit; PASS/MISS against kura's targets.  See bench/README.md.
#
# Run as root:  bench/run.sh            (KURA=path/to/kura BENCH_DIR=... BENCH_TOOLS="kura restic")
# Exit status: 0 when every tool ran and every restore verified (targets
# missed or not: this is a benchmark), 1 when the data set could not be
# built, 2 when a tool failed or a restore did not match.

set -euo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/var/tmp/kura-bench}
KURA=${KURA:-$TOP/build/kura}
[[ -e $KURA ]] && KURA=$(readlink -f "$KURA")
BENCH_TOOLS=${BENCH_TOOLS:-"kura restic borg partclone"}
BENCH_ONLY_DATA=${BENCH_ONLY_DATA:-}  # set: build the data set and stop
BENCH_REUSE=${BENCH_REUSE:-}   # a results .tsv: take the rows of tools not run now from it
SEED=${BENCH_SEED:-20240601}
IMG_SIZE=4G
TEXT_MIB=${BENCH_TEXT_MIB:-1024}
DATA_VERSION="v1 seed=$SEED text=$TEXT_MIB size=$IMG_SIZE"
PASS=bench-passphrase-not-secret

W=$BENCH_DIR
MNT=$W/mnt
BASE=$W/base.img
CHANGED=$W/changed.img
RUN=$W/run            # repositories, restore outputs, per-run state; wiped each run
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=$W/results
REPORT=$RESULTS/$STAMP.txt

die() { echo "run.sh: $*" >&2; exit 1; }
say() { echo "== $*" | tee -a "$REPORT"; }
note() { echo "$*" | tee -a "$REPORT"; }

[[ $(id -u) == 0 ]] || die "run as root (loop mounts)"
for t in mkfs.ext4 dumpe2fs e2fsck fstrim openssl zstd python3 /usr/bin/time; do
        command -v "$t" >/dev/null || die "$t missing (apt-get install e2fsprogs util-linux openssl zstd python3 time)"
done
mkdir -p "$W" "$MNT" "$RESULTS"
: >"$REPORT"

cleanup() {
        if mountpoint -q "$MNT"; then umount "$MNT" || umount -l "$MNT" || true; fi
}
trap cleanup EXIT

T0=$(date +%s)

# ---- 1. the data set ---------------------------------------------------------

# The Debian mirror apt uses here (deb822 .sources or one-line .list), else deb.debian.org.
detect_mirror() {
        local m
        m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
                grep -E '^(deb |URIs:)' | grep -oE 'https?://[^ ]+' | grep -E '/debian/?$' | grep -v security | head -n1 || true)
        echo "${m:-http://deb.debian.org/debian}"
}

# A Debian root in $W/rootfs, kept across runs.  debootstrap's download is
# cached as a tarball; when debootstrap fails we copy a slice of this
# machine's /usr instead (and say so).
build_rootfs() {
        if [[ -e $W/rootfs/.kura-bench-done ]]; then
                ROOTFS_KIND=$(cat "$W/rootfs/.kura-bench-done")
                return
        fi
        local mirror tarball=$W/debootstrap-bookworm.tgz
        mirror=$(detect_mirror)
        rm -rf "$W/rootfs.tmp" "$W/debootstrap-work"
        if command -v debootstrap >/dev/null && {
                [[ -s $tarball ]] || {
                        say "debootstrap: downloading bookworm minbase from $mirror"
                        debootstrap --variant=minbase --make-tarball="$tarball.tmp" bookworm "$W/debootstrap-work" "$mirror" \
                                >"$W/debootstrap.log" 2>&1 && mv "$tarball.tmp" "$tarball"
                }
        } && debootstrap --variant=minbase --unpack-tarball="$tarball" bookworm "$W/rootfs.tmp" "$mirror" \
                >>"$W/debootstrap.log" 2>&1; then
                ROOTFS_KIND="debootstrap --variant=minbase bookworm ($mirror)"
        else
                say "WARNING: debootstrap failed (see $W/debootstrap.log): using ~256 MiB of this machine's /usr/share and /usr/lib instead"
                rm -rf "$W/rootfs.tmp"
                mkdir -p "$W/rootfs.tmp"
                find /usr/share /usr/lib -xdev -type f -printf '%s\t%p\n' 2>/dev/null | sort -t$'\t' -k2 |
                        awk -F'\t' '{ s += $1; if (s > 256 * 1048576) exit; print substr($2, 2) }' |
                        tar -C / --no-recursion -T - -cf - | tar -C "$W/rootfs.tmp" -xpf -
                ROOTFS_KIND="FALLBACK: copy of this machine's /usr/share + /usr/lib (debootstrap failed)"
        fi
        rm -rf "$W/debootstrap-work" "$W/rootfs"
        echo "$ROOTFS_KIND" >"$W/rootfs.tmp/.kura-bench-done"
        mv "$W/rootfs.tmp" "$W/rootfs"
}

build_text() {
        [[ -e $W/text/.done ]] && [[ $(cat "$W/text/.done") == "$SEED $TEXT_MIB" ]] && return
        say "generating $TEXT_MIB MiB of logs/CSV (seed $SEED)"
        rm -rf "$W/text"
        python3 "$HERE/gen-text.py" "$SEED" "$W/text" "$TEXT_MIB"
        echo "$SEED $TEXT_MIB" >"$W/text/.done"
}

# N MiB of AES-128-CTR keystream under a key and IV derived from the seed and a label.
random_file() {
        local label=$1 mib=$2 out=$3 key iv
        key=$(printf '%s/%s/key' "$SEED" "$label" | openssl dgst -sha256 -r | cut -c1-32)
        iv=$(printf '%s/%s/iv' "$SEED" "$label" | openssl dgst -sha256 -r | cut -c1-32)
        { openssl enc -aes-128-ctr -nosalt -K "$key" -iv "$iv" -in /dev/zero 2>/dev/null || true; } |
                head -c $((mib << 20)) >"$out"
}

build_base() {
        if [[ -s $BASE && -e $BASE.stamp && $(cat "$BASE.stamp") == "$DATA_VERSION" ]]; then return; fi
        build_rootfs
        build_text
        say "building $BASE ($IMG_SIZE ext4)"
        rm -f "$BASE" "$BASE.stamp" "$CHANGED" "$CHANGED.stamp" "$BASE.tmp"
        truncate -s "$IMG_SIZE" "$BASE.tmp"
        # Fixed UUID and hash seed; inode tables and journal written now, not
        # lazily by the kernel later, so the image does not change behind us.
        E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -L kura-bench -U 6b757261-6265-4e63-8800-000000000001 \
                -E hash_seed=6b757261-6265-4e63-8800-000000000002,lazy_itable_init=0,lazy_journal_init=0 "$BASE.tmp"
        mount -o loop "$BASE.tmp" "$MNT"
        tar -C "$W/rootfs" --exclude=./.kura-bench-done -cf - . | tar -C "$MNT" -xpf -
        echo "$ROOTFS_KIND" >"$MNT/KURA-BENCH-ROOTFS"
        mkdir -p "$MNT/srv/data" "$MNT/srv/blobs" "$MNT/var/backups/dup"
        cp -a "$W/text/logs" "$W/text/csv" "$MNT/srv/data/"
        # random data: 10 files, 40..88 MiB, 640 MiB in all
        local i sizes=(64 40 88 52 76 64 46 82 70 58)
        for i in "${!sizes[@]}"; do
                random_file "blob$i" "${sizes[$i]}" "$MNT/srv/blobs/blob-$i.bin"
        done
        # duplicated files (copies an admin leaves around): ~450 MiB
        cp -a "$MNT/srv/blobs/blob-0.bin" "$MNT/srv/blobs/blob-3.bin" "$MNT/srv/blobs/blob-7.bin" "$MNT/var/backups/dup/"
        mkdir -p "$MNT/var/backups/dup/logs-copy"
        cp -a "$MNT"/srv/data/logs/*-00?.log "$MNT/var/backups/dup/logs-copy/"
        mkdir -p "$MNT/var/backups/dup/usr-share"
        cp -a "$MNT/usr/share/." "$MNT/var/backups/dup/usr-share/"
        sync
        # free blocks read back as zeros (loop discard punches holes), so a
        # restore that writes zeros for free blocks is byte-identical
        fstrim "$MNT" >/dev/null 2>&1 || true
        umount "$MNT"
        e2fsck -fn "$BASE.tmp" >/dev/null 2>&1 || die "e2fsck found errors in the new $BASE.tmp"
        mv "$BASE.tmp" "$BASE"
        echo "$DATA_VERSION" >"$BASE.stamp"
}

build_changed() {
        if [[ -s $CHANGED && -e $CHANGED.stamp && $(cat "$CHANGED.stamp") == "$DATA_VERSION" ]]; then return; fi
        say "building $CHANGED (~1 % changed)"
        rm -f "$CHANGED.tmp"
        cp --sparse=always "$BASE" "$CHANGED.tmp"
        mount -o loop "$CHANGED.tmp" "$MNT"
        python3 "$HERE/mutate.py" "$SEED" "$MNT" >"$W/mutate.out"
        sync
        fstrim "$MNT" >/dev/null 2>&1 || true
        umount "$MNT"
        e2fsck -fn "$CHANGED.tmp" >/dev/null 2>&1 || die "e2fsck found errors in $CHANGED.tmp"
        mv "$CHANGED.tmp" "$CHANGED"
        echo "$DATA_VERSION" >"$CHANGED.stamp"
}

# used bytes of an ext4 image: (blocks - free blocks) * block size
ext4_used() {
        dumpe2fs -h "$1" 2>/dev/null | awk -F: '
                /^Block count/ { n = $2 } /^Free blocks/ { f = $2 } /^Block size/ { b = $2 }
                END { printf "%.0f\n", (n - f) * b }'
}

sha() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }

build_base
build_changed
if [[ -n ${BENCH_ONLY_DATA:-} ]]; then
        say "data set ready: $BASE, $CHANGED (BENCH_ONLY_DATA set: not running the tools)"
        exit 0
fi
ROOTFS_KIND=$(cat "$W/rootfs/.kura-bench-done" 2>/dev/null || echo unknown)
T_DATA=$(date +%s)

USED=$(ext4_used "$BASE")
USED2=$(ext4_used "$CHANGED")
MUTATED=$(cat "$W/mutate.out" 2>/dev/null || echo 0)
SHA_BASE=$(sha "$BASE")
SHA_CHANGED=$(sha "$CHANGED")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "-" }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# ---- 4. the machine's compute limit -----------------------------------------

# A 256 MiB sample of the image's non-zero MiBs, spread over the whole image.
python3 - "$BASE" "$RUN.sample" <<'EOF'
import sys
src, dst = sys.argv[1], sys.argv[2]
MB = 1 << 20
with open(src, "rb") as f:
        chunks = []
        zero = bytes(MB)
        i = 0
        while True:
                b = f.read(MB)
                if not b:
                        break
                if b != zero[:len(b)]:
                        chunks.append(i)
                i += 1
        step = max(1, len(chunks) // 256)
        with open(dst, "wb") as o:
                for k in chunks[::step][:256]:
                        f.seek(k * MB)
                        o.write(f.read(MB))
EOF
# openssl speed: last line "<name>  <N>k" in 1000s of bytes per second
ossl_speed() {
        openssl speed -evp "$1" -bytes 1048576 -seconds 2 2>/dev/null | tail -n1 | awk '{ v = $NF; sub(/k$/, "", v); printf "%.0f\n", v * 1000 }'
}
SHA_BPS=$(ossl_speed sha256)
AES_BPS=$(ossl_speed aes-256-gcm)
# zstd -b: per level, progress lines separated by \r, then " N#name"; the
# last progress line before it has the final ratio and speeds (MB = 10^6 B).
ZB=$(zstd -b1 -e3 -i2 "$RUN.sample" 2>/dev/null | tr '\r' '\n' | awk '
        /\(x[0-9.]+\), *[0-9.]+ MB\/s, *[0-9.]+ MB\/s/ { last = $0 }
        /^ *[0-9]+#/ { lv = $1; sub(/#.*/, "", lv); s = last; sub(/.*\(x/, "", s); gsub(/[),]|MB\/s/, " ", s)
                       split(s, a, " "); printf "%s %s %.0f %.0f\n", lv, a[1], a[2] * 1e6, a[3] * 1e6 }')
zstd_field() { # level, field: r (ratio), c (compress B/s), d (decompress B/s)
        echo "$ZB" | awk -v l="$1" -v f="$2" '$1 == l { print (f == "r" ? $2 : f == "c" ? $3 : $4) }'
}
Z1_BPS=$(zstd_field 1 c)
Z3_BPS=$(zstd_field 3 c)
Z1_RATIO=$(zstd_field 1 r)
Z3_RATIO=$(zstd_field 3 r)
rm -f "$RUN.sample"
limit() { awk -v u="$USED" -v s="$SHA_BPS" -v z="$1" -v a="$AES_BPS" 'BEGIN { printf "%.2f", u * (1/s + 1/z + 1/a) / 2 }'; }
LIMIT1=$(limit "$Z1_BPS")
LIMIT3=$(limit "$Z3_BPS")

# ---- 3. the tools ------------------------------------------------------------

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

rm -rf "$RUN"
mkdir -p "$RUN/repos" "$RUN/out" "$RUN/log" "$RUN/home"
export HOME=$RUN/home XDG_CACHE_HOME=$RUN/home/.cache XDG_CONFIG_HOME=$RUN/home/.config

declare -A WALL CPU RSS REPO ADDED STATUS
BENCH_TOOLS_REUSED=
FAILED_ANY=0

warm() { cat "$1" >/dev/null; }

# Every restore starts from the same cache state for every tool.  warm (the
# default): the whole repository is read first, as restic's and borg's are
# still cached after their backups while kura drops the packs it writes
# (lib/repo/pack.c); cold: every clean page is dropped (a repository on a
# backup disk or a share).
BENCH_RESTORE_CACHE=${BENCH_RESTORE_CACHE:-warm}
before_restore() { # repository path (file or directory)
        case $BENCH_RESTORE_CACHE in
        cold) sync; echo 3 >/proc/sys/vm/drop_caches ;;
        *) find "$1" -type f -exec cat {} + >/dev/null ;;
        esac
}

# run_phase TOOL PHASE CMD...: time CMD with GNU time; fills WALL/CPU/RSS.
# Peak RSS of a pipeline (run through bash -c) is that of its largest process.
run_phase() {
        local tool=$1 phase=$2 t
        shift 2
        t=$RUN/log/$tool.$phase.time
        if /usr/bin/time -f '%e %U %S %M' -o "$t" "$@" >"$RUN/log/$tool.$phase.out" 2>"$RUN/log/$tool.$phase.err"; then
                read -r e u s m <"$t"
                WALL[$tool.$phase]=$e
                CPU[$tool.$phase]=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
                RSS[$tool.$phase]=$(awk -v m="$m" 'BEGIN { printf "%.1f", m / 1024 }')
                return 0
        fi
        STATUS[$tool]="FAILED in $phase (see $RUN/log/$tool.$phase.err)"
        note "$tool $phase FAILED: $(tail -n 3 "$RUN/log/$tool.$phase.err" | tr '\n' ' ')"
        FAILED_ANY=1
        return 1
}

repo_size() { du -sb "$1" | cut -f1; }
after_phase() { # tool phase repo
        REPO[$1.$2]=$(repo_size "$3")
}

verify() { # tool out expected-sha
        local got
        got=$(sha "$2")
        if [[ $got != "$3" ]]; then
                STATUS[$1]="FAILED: restored image differs (sha256 $got, want $3)"
                note "${STATUS[$1]} [$1]"
                FAILED_ANY=1
        fi
        rm -f "$2"
}

bench_kura() {
        if [[ ! -x $KURA ]]; then
                STATUS[kura]="SKIPPED: no kura binary at $KURA (set KURA=)"
                return
        fi
        local R=$RUN/repos/kura O=$RUN/out/kura.img
        export KURA_REPO=$R KURA_PASSWORD=$PASS KURA_CACHE_DIR=$RUN/kura-cache KURA_STATE_DIR=$RUN/kura-state
        "$KURA" init >"$RUN/log/kura.init.out" 2>&1 || { STATUS[kura]="FAILED in init: $(tail -n2 "$RUN/log/kura.init.out" | tr '\n' ' ')"; FAILED_ANY=1; return; }
        local r0
        r0=$(repo_size "$R")
        warm "$BASE"
        run_phase kura full "$KURA" backup --volume "$BASE" --name disk || return
        after_phase kura full "$R"
        warm "$CHANGED"
        run_phase kura incr "$KURA" backup --volume "$CHANGED" --name disk || return
        after_phase kura incr "$R"
        ADDED[kura]=$((${REPO[kura.incr]} - ${REPO[kura.full]}))
        rm -f "$O"
        before_restore "$R"
        run_phase kura restore "$KURA" restore --version latest --volume disk --volume-to "$O" || return
        after_phase kura restore "$R"
        verify kura "$O" "$SHA_CHANGED"
        : "$r0"
        unset KURA_REPO KURA_PASSWORD
}

bench_restic() {
        local R=$RUN/repos/restic O=$RUN/out/restic
        export RESTIC_REPOSITORY=$R RESTIC_PASSWORD=$PASS RESTIC_CACHE_DIR=$RUN/restic-cache
        restic init >"$RUN/log/restic.init.out" 2>&1 || { STATUS[restic]="FAILED in init"; FAILED_ANY=1; return; }
        warm "$BASE"
        run_phase restic full bash -c 'restic backup --stdin --stdin-filename disk.img <"$1"' _ "$BASE" || return
        after_phase restic full "$R"
        warm "$CHANGED"
        run_phase restic incr bash -c 'restic backup --stdin --stdin-filename disk.img <"$1"' _ "$CHANGED" || return
        after_phase restic incr "$R"
        ADDED[restic]=$((${REPO[restic.incr]} - ${REPO[restic.full]}))
        before_restore "$R"
        run_phase restic restore restic restore latest --target "$O" || return
        after_phase restic restore "$R"
        verify restic "$O/disk.img" "$SHA_CHANGED"
        rm -rf "$O"
        unset RESTIC_REPOSITORY RESTIC_PASSWORD
}

bench_borg() {
        local R=$RUN/repos/borg O=$RUN/out/borg.img
        export BORG_PASSPHRASE=$PASS BORG_BASE_DIR=$RUN/borg-home BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
        borg init -e repokey "$R" >"$RUN/log/borg.init.out" 2>&1 || { STATUS[borg]="FAILED in init"; FAILED_ANY=1; return; }
        # borg 1.2 advises fixed-size chunking for disk images
        warm "$BASE"
        run_phase borg full borg create --compression lz4 --chunker-params fixed,4194304 "$R::a" "$BASE" || return
        after_phase borg full "$R"
        warm "$CHANGED"
        run_phase borg incr borg create --compression lz4 --chunker-params fixed,4194304 "$R::b" "$CHANGED" || return
        after_phase borg incr "$R"
        ADDED[borg]=$((${REPO[borg.incr]} - ${REPO[borg.full]}))
        before_restore "$R"
        run_phase borg restore bash -c 'borg extract --stdout "$1::b" >"$2"' _ "$R" "$O" || return
        after_phase borg restore "$R"
        verify borg "$O" "$SHA_CHANGED"
        unset BORG_PASSPHRASE
}

bench_partclone() {
        local R=$RUN/repos/partclone O=$RUN/out/partclone.img
        mkdir -p "$R"
        warm "$BASE"
        run_phase partclone full bash -c 'partclone.ext4 -c -s "$1" -o - -L "$3" | zstd -1 -T2 -q >"$2"' \
                _ "$BASE" "$R/full.zst" "$RUN/log/partclone.log" || return
        after_phase partclone full "$R"
        # no incremental: partclone images are always full
        truncate -s "$(stat -c %s "$BASE")" "$O"
        before_restore "$R"
        run_phase partclone restore bash -c 'zstd -dc -q "$1" | partclone.ext4 -r -s - -O "$2" -L "$3"' \
                _ "$R/full.zst" "$O" "$RUN/log/partclone.log" || return
        after_phase partclone restore "$R"
        # it restores what it backed up: the base image
        verify partclone "$O" "$SHA_BASE"
}

TOOLS=()
for tool in $BENCH_TOOLS; do
        case $tool in
        kura | restic | borg | partclone) ;;
        *) die "unknown tool '$tool' in BENCH_TOOLS" ;;
        esac
        TOOLS+=("$tool")
        say "running $tool"
        "bench_$tool" || true
done

if [[ -n $BENCH_REUSE ]]; then
        [[ -r $BENCH_REUSE ]] || die "BENCH_REUSE=$BENCH_REUSE: cannot read"
        while IFS=$'\t' read -r tool phase wall cpu rss repo added st; do
                [[ $tool == tool || " ${TOOLS[*]} " == *" $tool "* ]] && continue
                [[ " $BENCH_TOOLS_REUSED " == *" $tool "* ]] || { BENCH_TOOLS_REUSED+=" $tool"; }
                k=$tool.$phase
                [[ $wall != - ]] && WALL[$k]=$wall
                [[ $cpu != - ]] && CPU[$k]=$cpu
                [[ $rss != - ]] && RSS[$k]=$rss
                [[ $repo != - ]] && REPO[$k]=$repo
                [[ $added != - ]] && ADDED[$tool]=$added
                if [[ $st != ok* ]]; then STATUS[$tool]="$st (reused)"; else STATUS[$tool]="ok (reused from $(basename "$BENCH_REUSE"))"; fi
        done < <(awk -F'\t' -v OFS='\t' '{ for (i = 1; i <= 8; i++) if ($i == "") $i = "-"; print }' "$BENCH_REUSE")
        for tool in ${BENCH_TOOLS_REUSED:-}; do TOOLS+=("$tool"); done
fi

T_END=$(date +%s)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 5. the report -----------------------------------------------------------

{
echo
echo "kura benchmark, $(date -Is), $(nproc) CPUs, $(uname -r)"
echo "kura: $KURA ($("$KURA" --version 2>/dev/null || echo '?'))  restic $(restic version 2>/dev/null | awk '{print $2}')  $(borg --version)  partclone $(partclone.ext4 --version 2>&1 | awk '/Partclone/ {print $3}')  zstd $(zstd --version | grep -oE 'v[0-9.]+')"
echo
echo "data set ($BENCH_DIR): $IMG_SIZE ext4 image, rootfs: $ROOTFS_KIND"
echo "  used bytes: base $USED ($(mib "$USED") MiB), changed $USED2 ($(mib "$USED2") MiB); bytes written by the change: $MUTATED ($(mib "$MUTATED") MiB)"
echo "  sample compressibility (256 MiB of non-zero MiBs): zstd -1 x$Z1_RATIO, zstd -3 x$Z3_RATIO"
echo "restores start from a $BENCH_RESTORE_CACHE page cache for every tool (BENCH_RESTORE_CACHE=warm|cold)"
[[ -n ${REPO[partclone.full]:-} ]] && [[ ${STATUS[partclone]:-ok} == ok* ]] &&
        echo "  whole used data through partclone | zstd -1: $(mib "${REPO[partclone.full]}") MiB, x$(ratio "$USED" "${REPO[partclone.full]}")"
echo "  sha256 base $SHA_BASE"
echo "  sha256 changed $SHA_CHANGED"
echo
echo "compute limit (one pass of SHA-256 + zstd + AES-256-GCM over the used bytes, on $(nproc) cores... formula /2):"
printf '  SHA-256 %.0f MB/s, AES-256-GCM %.0f MB/s, zstd -1 %.0f MB/s, zstd -3 %.0f MB/s\n' \
        "$(awk -v x="$SHA_BPS" 'BEGIN{print x/1e6}')" "$(awk -v x="$AES_BPS" 'BEGIN{print x/1e6}')" \
        "$(awk -v x="$Z1_BPS" 'BEGIN{print x/1e6}')" "$(awk -v x="$Z3_BPS" 'BEGIN{print x/1e6}')"
echo "  limit with zstd -1 (kura's default level): $LIMIT1 s; with zstd -3: $LIMIT3 s"
echo
printf '%-10s %-8s %9s %9s %12s %10s %10s  %s\n' tool phase "wall s" "cpu s" "peakRSS MiB" "repo MiB" "added MiB" status
for tool in "${TOOLS[@]}"; do
        for phase in full incr restore; do
                k=$tool.$phase
                if [[ $tool == partclone && $phase == incr ]]; then
                        printf '%-10s %-8s %9s %9s %12s %10s %10s  %s\n' "$tool" "$phase" n/a n/a n/a n/a n/a "no incremental"
                        continue
                fi
                added=-
                [[ $phase == incr && -n ${ADDED[$tool]:-} ]] && added=$(mib "${ADDED[$tool]}")
                repo=-
                [[ -n ${REPO[$k]:-} ]] && repo=$(mib "${REPO[$k]}")
                printf '%-10s %-8s %9s %9s %12s %10s %10s  %s\n' "$tool" "$phase" "${WALL[$k]:--}" "${CPU[$k]:--}" \
                        "${RSS[$k]:--}" "$repo" "$added" "${STATUS[$tool]:-ok}"
        done
done
echo

# ratios and targets
check() { # label value limit [comment]
        local v=$2 lim=$3 verdict
        if [[ -z $v || $v == - ]]; then verdict="MISS (not measured)"
        elif awk -v v="$v" -v l="$lim" 'BEGIN { exit !(v <= l) }'; then verdict=PASS
        else verdict=MISS; fi
        printf '  %-44s %8s  (target <= %-3s)  %-4s  %s\n' "$1" "$v" "$lim" "$verdict" "${4:-}"
}
kura_ok=1
[[ ${STATUS[kura]:-ok} == ok* ]] || kura_ok=0
echo "ratios (wall time) and targets:"
if ((kura_ok)) && [[ " ${TOOLS[*]} " == *" kura "* ]]; then
        for phase in full incr restore; do
                for peer in restic borg; do
                        if [[ -n ${WALL[$peer.$phase]:-} && ${STATUS[$peer]:-ok} == ok* ]]; then
                                r=$(ratio "${WALL[kura.$phase]}" "${WALL[$peer.$phase]}")
                                rc=$(ratio "${CPU[kura.$phase]}" "${CPU[$peer.$phase]}")
                        else
                                r=-
                                rc=-
                        fi
                        case $phase.$peer in
                        full.restic) lim=0.3 ;; full.borg) lim=0.5 ;;
                        incr.restic) lim=0.2 ;; incr.borg) lim=0.3 ;;
                        restore.restic) lim=0.3 ;; restore.borg) lim=0.6 ;;
                        esac
                        check "$phase: kura/$peer" "$r" "$lim" "cpu ratio $rc"
                done
        done
        check "full: kura / compute limit (zstd -1)" "$(ratio "${WALL[kura.full]}" "$LIMIT1")" 2 \
                "cpu s / (2 x limit) $(ratio "${CPU[kura.full]}" "$(awk -v l="$LIMIT1" 'BEGIN { print 2 * l }')")"
        if [[ -n ${ADDED[restic]:-} ]]; then
                check "incr: kura added MiB / restic added MiB" "$(ratio "${ADDED[kura]}" "${ADDED[restic]}")" 1
        else
                check "incr: kura added MiB / restic added MiB" - 1
        fi
        maxrss=$(printf '%s\n' "${RSS[kura.full]:-0}" "${RSS[kura.incr]:-0}" "${RSS[kura.restore]:-0}" | sort -g | tail -n1)
        check "kura peak RSS MiB" "$maxrss" 128
else
        echo "  kura: ${STATUS[kura]:-not run} -- no ratios"
fi
echo
echo "load average at start of the tool runs: $LOAD_START, at the end: $LOAD_END"
if awk -v l="${LOAD_START%% *} ${LOAD_END%% *}" 'BEGIN { split(l, a, " "); exit !(a[1] > 0.7 || a[2] > 2.7) }'; then
        echo "WARNING: the machine was busy with other work: the times are not a clean measurement"
fi
echo "timing: data set $((T_DATA - T0)) s (0 when cached), whole run $((T_END - T0)) s"
echo "logs: $RUN/log; this report: $REPORT"
} | tee -a "$REPORT"

# machine-readable copy
{
        printf 'tool\tphase\twall_s\tcpu_s\tpeak_rss_mib\trepo_bytes\tadded_bytes\tstatus\n'
        for tool in "${TOOLS[@]}"; do
                for phase in full incr restore; do
                        k=$tool.$phase
                        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$phase" "${WALL[$k]:--}" "${CPU[$k]:--}" "${RSS[$k]:--}" \
                                "${REPO[$k]:--}" "$([[ $phase == incr ]] && echo "${ADDED[$tool]:--}" || echo -)" "${STATUS[$tool]:-ok}"
                done
        done
} >"$RESULTS/$STAMP.tsv"

rm -rf "$RUN/out"
((FAILED_ANY)) && exit 2
exit 0
