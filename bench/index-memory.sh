#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
#
# Memory of kura's in-memory chunk index with millions of entries.
# Compiles bench/index-memory.c against a built libkura.a and runs it in
# three modes (each in its own process, so VmHWM is that mode's peak):
#   add   entries added one by one (a backup session)
#   bulk  entries loaded pack by pack (opening a repository)
#   repo  "add" inside a real unencrypted repository (repo object overhead included)
#
#   bench/index-memory.sh [N]     N default 4000000; LIBKURA=build-x/lib/libkura.a
# Target: <= 64 bytes per entry (docs: 44-byte entries plus bounded overhead).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
N=${1:-4000000}
LIBKURA=${LIBKURA:-}
if [[ -z $LIBKURA ]]; then
        for b in "$TOP/build-bench" "$TOP/build"; do
                [[ -f $b/lib/libkura.a ]] && { LIBKURA=$b/lib/libkura.a; break; }
        done
fi
[[ -f ${LIBKURA:-} ]] || { echo "no libkura.a: build with 'meson setup build-bench && ninja -C build-bench' or set LIBKURA=" >&2; exit 1; }

OUT=$(mktemp -d /tmp/kura-index-memory-XXXXXX)
trap 'rm -rf "$OUT"' EXIT
PKGS="libcrypto libsodium libzstd blkid ext2fs com_err jansson libxxhash"
# shellcheck disable=SC2046
cc -std=gnu17 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 \
        -I"$TOP/include" -I"$TOP/lib" $(pkg-config --cflags $PKGS) \
        -o "$OUT/index-memory" "$HERE/index-memory.c" "$LIBKURA" $(pkg-config --libs $PKGS) -lpthread

echo "kura index memory, N=$N entries ($LIBKURA)"
rc=0
for mode in add bulk repo; do
        if line=$("$OUT/index-memory" "$mode" "$N" 2>"$OUT/err"); then
                status=ok
        else
                status="FAILED: $(tr '\n' ' ' <"$OUT/err")"
                rc=1
        fi
        [[ -n ${line:-} ]] || { echo "$mode: $status"; continue; }
        # shellcheck disable=SC2086
        echo "$line" | tr ' ' '\n' | awk -F= -v st="$status" '
                { v[$1] = $2 }
                END {
                        printf "%-5s %9d entries, %6d packs: RSS %6.1f -> %6.1f MiB, peak %6.1f MiB; index heap %6.1f MiB\n",
                                v["mode"], v["entries"], v["packs"], v["rss_before_kib"] / 1024, v["rss_after_kib"] / 1024,
                                v["hwm_kib"] / 1024, v["index_heap_bytes"] / 1048576
                        printf "      bytes/entry: %.1f (RSS growth), %.1f (peak), %.1f (heap)  %s\n",
                                v["bytes_per_entry_rss"], v["bytes_per_entry_hwm"], v["bytes_per_entry_heap"],
                                v["bytes_per_entry_hwm"] <= 64 ? "PASS (<= 64)" : "MISS (> 64)"
                        printf "      per CPU second: insert %.2f M, lookup hit %.2f M, miss %.2f M  [%s]\n",
                                v["insert_per_s"] / 1e6, v["lookup_hit_per_s"] / 1e6, v["lookup_miss_per_s"] / 1e6, st
                }'
        line=
done
exit $rc
