#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Build a job disk for kura's bootable test disks: an ext4 image labelled
# KURA-JOB that the test disk's init runs (tests/vm/disk-job.sh, as
# /sbin/kura-job) on the booted system before printing its marker.  Made with
# mkfs.ext4 -d: no loop device, no mount.
#
#   tests/vm/make-job-disk.sh --out IMG --run RUN.SH [--kura KURA] [--tool PROG]...
#                             [--module M]... [--size SIZE]
#
# The image holds:
#   run.sh              RUN.SH (run with sh in the job's directory)
#   bin/kura            a wrapper running libexec/kura through the bundled loader
#   bin/PROG            the same for each --tool PROG (looked up in PATH)
#   libexec/            the real programs
#   lib/                every library ldd lists for them, and the loader
#                       (the test disk's root is busybox only: no libc)
#   modules/            the --module kernel modules (default: loop, which kura
#                       needs for a disk's boot area) with their dependencies,
#                       from the kernel cache of tests/vm/prepare.sh, and
#                       modules/order (insmod order)
#   out/                empty: for the job's results
# SIZE (truncate syntax, default 256M) leaves room for results such as a kura
# repository: a backup of the 900 MiB gpt test disk takes ~20 MiB.  The image
# is sparse.  Read results back without mounting:
#   debugfs -R 'rdump /out DIR' IMG
set -euo pipefail

die() {
        echo "make-job-disk: $*" >&2
        exit 1
}
usage() {
        echo "usage: $0 --out IMG --run RUN.SH [--kura KURA] [--tool PROG]... [--module M]... [--size SIZE]" >&2
        exit 2
}

out='' run='' kura=${KURA:-} size=256M
tools=() modules=(loop)
while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || usage
        case $1 in
        --out) out=$2 ;;
        --run) run=$2 ;;
        --kura) kura=$2 ;;
        --tool) tools+=("$2") ;;
        --module) modules+=("$2") ;;
        --size) size=$2 ;;
        *) usage ;;
        esac
        shift 2
done
[ -n "$out" ] && [ -n "$run" ] && [ -n "$kura" ] || usage
[ -f "$run" ] || die "--run $run does not exist"
[ -x "$kura" ] || die "kura binary $kura is not executable (--kura or KURA)"
for t in mkfs.ext4 ldd modprobe; do
        command -v "$t" >/dev/null 2>&1 || die "tool $t is missing"
done
CACHE=${KURA_VM_CACHE:-/var/cache/kura-vm}
KVER=$(cat "$CACHE/KVER" 2>/dev/null) || die "no kernel in $CACHE (run tests/vm/prepare.sh)"
KROOT=$CACHE/$KVER/root
[ -d "$KROOT/lib/modules/$KVER" ] || die "no modules for $KVER in $KROOT"

work=$(mktemp -d /tmp/kura-job-disk.XXXXXX)
trap 'rm -rf "$work"' EXIT
J=$work/job
mkdir -p "$J/bin" "$J/libexec" "$J/lib" "$J/modules" "$J/out"
loader=

# add_prog PATH NAME: the program, its libraries, the loader, a wrapper
add_prog() {
        local p=$1 name=$2 lib l
        cp -L "$p" "$J/libexec/$name"
        chmod 755 "$J/libexec/$name"
        if ldd "$p" >/dev/null 2>&1; then
                for lib in $(ldd "$p" | awk '/=> \// { print $3 } /^\t\/.*ld-linux/ { print $1 }'); do
                        cp -L "$lib" "$J/lib/$(basename "$lib")"
                        case $lib in */ld-linux*) l=$(basename "$lib") ;; esac
                done
        else
                l='' # static
        fi
        if [ -n "${l:-}" ]; then
                loader=$l
                cat >"$J/bin/$name" <<EOF
#!/bin/sh
# $name from the job disk, through the bundled loader and libraries.
J=\${KURA_JOB:-\${0%/bin/*}}
exec "\$J/lib/$l" --library-path "\$J/lib" "\$J/libexec/$name" "\$@"
EOF
        else
                # shellcheck disable=SC2016 # the wrapper's own variables
                printf '#!/bin/sh\nJ=${KURA_JOB:-${0%%/bin/*}}\nexec "$J/libexec/%s" "$@"\n' "$name" >"$J/bin/$name"
        fi
        chmod 755 "$J/bin/$name"
}

add_prog "$kura" kura
[ -n "$loader" ] || echo "make-job-disk: note: $kura is static" >&2
for t in "${tools[@]}"; do
        p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$t") || die "tool $t (--tool) is missing"
        add_prog "$p" "$(basename "$t")"
done

: >"$J/modules/order"
for m in "${modules[@]}"; do
        # Built into the kernel: nothing to load (modprobe prints "builtin").
        deps=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>/dev/null) || die "no module $m in $KVER"
        while read -r kw path _; do
                [ "$kw" = insmod ] || continue
                b=$(basename "$path")
                grep -qx "$b" "$J/modules/order" && continue
                case $b in
                *.ko) cp "$path" "$J/modules/$b" ;;
                *.ko.xz) xz -dc "$path" >"$J/modules/${b%.xz}"; b=${b%.xz} ;;
                *.ko.zst) zstd -qdc "$path" >"$J/modules/${b%.zst}"; b=${b%.zst} ;;
                *) die "module $path: unknown compression" ;;
                esac
                echo "$b" >>"$J/modules/order"
        done <<<"$deps"
done

cp "$run" "$J/run.sh"
chmod 755 "$J/run.sh"

rm -f "$out"
truncate -s "$size" "$out"
mkfs.ext4 -q -F -b 4096 -L KURA-JOB -m 0 -E root_owner=0:0 -d "$J" "$out" >/dev/null ||
        die "mkfs.ext4 -d $J $out failed"
