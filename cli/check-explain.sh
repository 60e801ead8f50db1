#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Every code of include/kura/errors.h must be explained by `kura explain` and
# documented in docs/ERRORS.md, and the Windows codes must be known.
# Usage: cli/check-explain.sh PATH-TO-KURA
set -u
kura=${1:?usage: $0 PATH-TO-KURA}
top=$(cd "$(dirname "$0")/.." && pwd)
bad=0
for c in $(grep -o '"KURA-[EW]-[A-Z-]*"' "$top/include/kura/errors.h" | tr -d '"'); do
        grep -q "^### $c\$" "$top/docs/ERRORS.md" || { echo "not in docs/ERRORS.md: $c"; bad=1; }
        "$kura" explain "$c" >/dev/null || { echo "not explained: $c"; bad=1; }
done
for c in 0x800423F4 0x80780119 0x800423F3 0x8004231F 0x80042306 0x80780166 0x807800C5 800423f4; do
        "$kura" explain "$c" | grep -q "kura " || { echo "not explained: $c"; bad=1; }
done
"$kura" explain KURA-E-NO-SUCH-CODE >/dev/null 2>&1
[ $? -eq 2 ] || { echo "unknown code does not exit 2"; bad=1; }
# The generated entries in docs/ERRORS.md must match the compiled table.
"$kura" explain --markdown | diff -u - "$top/docs/ERRORS.md" | grep -q '^-[^-]' && { echo "docs/ERRORS.md out of date: regenerate with kura explain --markdown"; bad=1; }
exit $bad
