#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Tests of the kura command's own behaviour (option parsing, passphrases,
# error rendering, exit statuses, JSON shapes) on image files under /tmp.
# Usage: cli/test-cli.sh PATH-TO-KURA      (exit 0 = pass)
set -u -o pipefail
K=${1:?usage: $0 PATH-TO-KURA}
T=$(mktemp -d /tmp/kura-cli-test.XXXXXX)
trap 'rm -rf "$T"' EXIT
export KURA_CACHE_DIR=$T/cache
unset KURA_REPO KURA_PASSWORD KURA_NEW_PASSWORD
n=0
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { n=$((n + 1)); }
# st EXPECTED-STATUS ARGS...: run kura (stdin /dev/null, no terminal), check the status
st() {
        local want=$1; shift
        setsid "$K" "$@" </dev/null >"$T/out" 2>"$T/err"
        local got=$?
        [ "$got" = "$want" ] || { cat "$T/out" "$T/err" >&2; fail "kura $* -> $got, want $want"; }
        ok
}
json() { python3 -c "import json,sys; d=json.load(open('$T/out')); $1" || { cat "$T/out" >&2; fail "json check: $1"; }; ok; }

# --- help, version, usage errors (status 2, one error line with a remedy)
st 0 --help; grep -q '^Usage: kura' "$T/out" || fail "--help"
st 0 --version; grep -qx 'kura [0-9.]*' "$T/out" || fail "--version"
st 0 backup --help; grep -q -- '--volume SRC' "$T/out" || fail "backup --help"
st 0 help restore; grep -q -- '--volume-to' "$T/out" || fail "help restore"
st 2; grep -q '^kura: error: KURA-E-USAGE: no command given' "$T/err" || fail "no command"
st 2 frobnicate; grep -q "unknown command 'frobnicate'" "$T/err" || fail "unknown command"
st 2 --bogus versions; grep -q "unknown option '--bogus'" "$T/err" || fail "unknown global option"
st 2 versions --bogus; grep -q "unknown option '--bogus'" "$T/err" || fail "unknown verb option"
st 2 --repo "$T/r" backup --volume; grep -q "option '--volume' needs an argument" "$T/err" || fail "missing arg"
st 2 --repo "$T/r" restore --version latest; grep -q -- "--volume-to is required" "$T/err" || fail "volume-to"
grep -q "^  remedy: see 'kura restore --help'" "$T/err" || fail "usage remedy"
st 2 --repo "$T/r" backup --name x --volume /dev/null; grep -q -- "--name must follow" "$T/err" || fail "--name order"
st 2 --repo "$T/r" backup --volume a/x --volume b/x; grep -q "two volumes are named 'x'" "$T/err" || fail "dup names"
st 2 --repo "$T/r" backup --volume x --chunk-size 3M; grep -q "power of two" "$T/err" || fail "chunk size"
st 2 --repo "$T/r" init --kdf-memory 12Q; grep -q "not a size" "$T/err" || fail "size parse"
st 2 versions; grep -q "no repository given" "$T/err" || fail "no repo"
# --json errors go to stdout as one object
st 2 --json restore --version latest
json 'e=d["error"]; assert e["code"]=="KURA-E-USAGE" and e["errno"]==22 and "volume-to" in e["message"] and e["remedy"]'
[ ! -s "$T/err" ] || fail "json error also on stderr"

# --- explain
st 0 explain 0x800423f4; grep -q "VSS_E_WRITERERROR_NONRETRYABLE" "$T/out" && grep -q "kura writers" "$T/out" || fail explain
st 0 explain 80780119; grep -q "shadowstorage" "$T/out" || fail "explain without 0x"
st 0 explain locked; grep -q "^KURA-E-LOCKED (exit status 5)" "$T/out" || fail "explain short name"
st 0 --json explain KURA-E-DAMAGED; json 'assert d["code"]=="KURA-E-DAMAGED" and d["exit_status"]==3'
st 2 explain 0xDEADBEEF; grep -q "unknown code '0xDEADBEEF'" "$T/err" || fail "unknown code"

# --- an unencrypted repository never asks for a passphrase; options after the verb
head -c 3M /dev/urandom >"$T/src.img"
head -c 1M /dev/zero >>"$T/src.img"
st 0 init --repo "$T/plain" --no-encryption
grep -Eq '^created repository [0-9a-f]{64} at ' "$T/out" || fail "init output"
st 0 backup --volume "$T/src.img" --name disk --tag a --tag b --repo "$T/plain" --json
json 'assert d["volumes"][0]["name"]=="disk" and d["tags"]==["a","b"] and d["volumes"][0]["size"]==4<<20 and d["parent"] is None and isinstance(d["bytes_new"],int)'
[ ! -s "$T/err" ] || { cat "$T/err"; fail "backup printed on stderr without a terminal"; }
[ -d "$T/cache/fpcache" ] && [ "$(stat -c %a "$T/cache/fpcache")" = 700 ] || fail "fpcache dir"
id1=$(python3 -c "import json; print(json.load(open('$T/out'))['id'])")
KURA_REPO=$T/plain st 0 backup --volume "$T/src.img" --name disk
grep -q "^version [0-9a-f]\{64\}$" "$T/out" && grep -q "^  volume disk " "$T/out" && grep -q "throughput" "$T/out" || fail "backup summary"
KURA_REPO=$T/nonexistent st 0 --repo "$T/plain" versions --json   # --repo wins over KURA_REPO
json "v=d['versions']; assert len(v)==2 and v[0]['id']=='$id1' and v[1]['parent']=='$id1' and v[1]['bytes_new']==0 and v[0]['time'].endswith('Z')"
st 0 --repo "$T/plain" versions
[ "$(wc -l <"$T/out")" = 3 ] && grep -q "^${id1:0:12}  [0-9-]* [0-9:]*  disk:4.0 MiB" "$T/out" || fail "versions table"
st 0 --repo "$T/plain" restore --version "${id1:0:8}" --volume-to "$T/out.img"
cmp -s "$T/src.img" "$T/out.img" || fail "restored image differs"
st 0 --repo "$T/plain" check --json; json 'assert d["errors"]==0 and d["versions"]==2 and d["problems"]==[]'
st 0 --repo "$T/plain" unlock; grep -q "no locks" "$T/out" || fail unlock
st 1 --repo "$T/plain" restore --version ffff --volume-to "$T/x.img"; grep -q "KURA-E-VERSION-NOT-FOUND" "$T/err" || fail "bad version"

# --- passphrases: environment, file (first line only), none (status 4), wrong (status 4)
printf 'pw-one\nsecond line\n' >"$T/pw"
printf 'pw-two\n' >"$T/pw2"
st 0 --repo "$T/enc" --password-file "$T/pw" init --kdf-memory 8M --kdf-passes 1
st 4 --repo "$T/enc" versions; grep -q "KURA-E-NO-PASSWORD" "$T/err" || fail "no password"
KURA_PASSWORD=pw-one st 0 --repo "$T/enc" versions
KURA_PASSWORD=wrong st 4 --repo "$T/enc" versions; grep -q "KURA-E-WRONG-PASSWORD" "$T/err" || fail "wrong password"
: >"$T/empty"
st 4 --repo "$T/enc" --password-file "$T/empty" versions; grep -q "is empty" "$T/err" || fail "empty file"
KURA_PASSWORD=pw-one KURA_NEW_PASSWORD=pw-two st 0 --repo "$T/enc" key add --kdf-memory 8M --kdf-passes 1
st 0 --repo "$T/enc" --password-file "$T/pw2" key list --json
json 'k=d["keys"]; assert len(k)==2 and sum(x["current"] for x in k)==1'
KURA_PASSWORD=pw-one st 0 --repo "$T/enc" backup --volume "$T/src.img"
st 0 --repo "$T/enc" --password-file "$T/pw2" restore --version latest --volume-to "$T/out2.img"
cmp -s "$T/src.img" "$T/out2.img" || fail "restored encrypted image differs"

echo "cli tests: $n checks passed"
