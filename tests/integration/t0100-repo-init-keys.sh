#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# init (encrypted and unencrypted), the config file, passphrases (environment,
# --password-file, wrong, missing), key add/list/remove, the last key slot
# refused, an unencrypted repository that never asks, and that an encrypted
# repository holds no plaintext.
. "$(dirname "$0")/lib.sh"

MiB=1048576
# A small volume with a recognisable marker in otherwise random data.
MARKER='KURA-PLAINTEXT-MARKER-0123456789abcdef'
vol=$T/vol.img
for i in $(seq 0 15); do
        rand_bytes "v$i" 262144
        printf '%s' "$MARKER"
done >"$vol"
truncate -s $((4 * MiB + 65536)) "$vol"
sha_vol=$(sha "$vol")

# ---- encrypted -------------------------------------------------------------------
export KURA_PASSWORD=pw-one
kok --repo "$REPO" init --kdf-memory 1M --kdf-passes 1
[ -f "$REPO/config" ] || fail "no $REPO/config after init"
jq -e . "$REPO/config" >/dev/null || fail "config is not JSON"
assert_eq 1 "$(jq -r .kura_repository "$REPO/config")" "config kura_repository"
assert_eq aes-256-gcm "$(jq -r .encryption "$REPO/config")" "config encryption"
assert_eq zstd "$(jq -r .compression "$REPO/config")" "config compression"
[[ "$(jq -r .id "$REPO/config")" =~ ^[0-9a-f]{64}$ ]] || fail "config id is not 64 hex digits: $(jq -r .id "$REPO/config")"
for d in keys data index versions locks; do
        [ -d "$REPO/$d" ] || fail "init did not create $REPO/$d"
done
assert_eq 1 "$(find "$REPO/keys" -type f | wc -l)" "key slots after init"
slot1=$(basename "$(find "$REPO/keys" -type f)")
[[ "$slot1" =~ ^[0-9a-f]{16}$ ]] || fail "key slot file name is not 16 hex digits: $slot1"
assert_eq 1048576 "$(jq -r .mem "$REPO/keys/$slot1")" "key slot mem from --kdf-memory 1M"
assert_eq 1 "$(jq -r .passes "$REPO/keys/$slot1")" "key slot passes from --kdf-passes 1"
assert_eq argon2id "$(jq -r .kdf "$REPO/keys/$slot1")" "key slot kdf"
assert_not_contains "$REPO/keys/$slot1" pw-one "key slot"

# init again refuses.
expect_fail 1 KURA-E-REPO-EXISTS --repo "$REPO" init --kdf-memory 1M --kdf-passes 1
# KURA_REPO works like --repo.
kok versions
kok backup --volume "$vol"
kok versions --json
assert_eq 1 "$(jq '.versions | length' "$T/out")" "versions after one backup"
if grep -rqF "$MARKER" "$REPO"; then fail "plaintext marker found in the encrypted repository"; fi

# Wrong and missing passphrases.
KURA_PASSWORD=wrong expect_fail 4 KURA-E-WRONG-PASSWORD versions
KURA_PASSWORD=wrong expect_fail 4 KURA-E-WRONG-PASSWORD restore --version latest --volume-to "$T/nope.img"
[ ! -e "$T/nope.img" ] || fail "restore with a wrong passphrase created its target"
grep -qF 'remedy:' "$T/err" || fail "error without a remedy line: $(cat "$T/err")"
grep -q '^kura: error: KURA-E-WRONG-PASSWORD: ' "$T/err" || fail "error line format: $(cat "$T/err")"
(unset KURA_PASSWORD; setsid -w "$KURA" versions </dev/null >"$T/out" 2>"$T/err"; echo $? >"$T/rc")
assert_eq 4 "$(cat "$T/rc")" "exit status without a passphrase and without a terminal"
assert_contains "$T/err" KURA-E-NO-PASSWORD

# --password-file (with and without a trailing newline).
printf 'pw-one' >"$T/pw-nonl"
printf 'pw-one\n' >"$T/pw-nl"
printf 'wrong\n' >"$T/pw-wrong"
(unset KURA_PASSWORD; kok --password-file "$T/pw-nonl" versions) || exit 1
(unset KURA_PASSWORD; kok --password-file "$T/pw-nl" versions) || exit 1
(unset KURA_PASSWORD; expect_fail 4 KURA-E-WRONG-PASSWORD --password-file "$T/pw-wrong" versions) || exit 1

# ---- key add / list / remove --------------------------------------------------------
KURA_NEW_PASSWORD=pw-two kok key add
assert_eq 2 "$(find "$REPO/keys" -type f | wc -l)" "key slots after key add"
slot2=$(find "$REPO/keys" -type f -printf '%f\n' | grep -v "^$slot1\$")
kok key list
assert_contains "$T/out" "$slot1" "key list"
assert_contains "$T/out" "$slot2" "key list"
kok key list --json
jq -e . "$T/out" >/dev/null || fail "key list --json is not JSON: $(cat "$T/out")"
assert_contains "$T/out" "$slot1" "key list --json"
assert_contains "$T/out" "$slot2" "key list --json"

# Both passphrases open the repository and decrypt the same data.
KURA_PASSWORD=pw-one kok versions
KURA_PASSWORD=pw-two kok versions
KURA_PASSWORD=pw-two kok restore --version latest --volume-to "$T/r-two.img"
assert_eq "$sha_vol" "$(sha "$T/r-two.img")" "restore with the added passphrase"

# Remove the first slot (opened with the second passphrase).
KURA_PASSWORD=pw-two kok key remove "$slot1"
assert_eq 1 "$(find "$REPO/keys" -type f | wc -l)" "key slots after key remove"
[ -f "$REPO/keys/$slot2" ] || fail "key remove deleted the wrong slot"
KURA_PASSWORD=pw-one expect_fail 4 KURA-E-WRONG-PASSWORD versions
KURA_PASSWORD=pw-two kok restore --version latest --volume-to "$T/r-two2.img"
assert_eq "$sha_vol" "$(sha "$T/r-two2.img")" "restore after removing the first slot"
# The last slot is refused, by prefix too.
KURA_PASSWORD=pw-two expect_fail 1 KURA-E-KEY-SLOT key remove "$slot2"
KURA_PASSWORD=pw-two expect_fail 1 KURA-E-KEY-SLOT key remove "${slot2:0:6}"
[ -f "$REPO/keys/$slot2" ] || fail "the last key slot was removed"
KURA_PASSWORD=pw-two kok check --read-data

# ---- unencrypted ---------------------------------------------------------------------
U=$T/plain
unset KURA_PASSWORD
kok --repo "$U" init --no-encryption
assert_eq none "$(jq -r .encryption "$U/config")" "config encryption of --no-encryption"
assert_eq 0 "$(find "$U/keys" -type f 2>/dev/null | wc -l)" "key slots of an unencrypted repository"
# Never asks: no KURA_PASSWORD, no terminal (setsid), stdin /dev/null.
for cmd in "versions" "backup --volume $vol" "versions --json" "check --read-data" "restore --version latest --volume-to $T/r-plain.img"; do
        # shellcheck disable=SC2086
        setsid -w timeout 60 "$KURA" --repo "$U" $cmd </dev/null >"$T/out" 2>"$T/err"
        rc=$?
        [ "$rc" = 0 ] || { show_output "$cmd"; fail "unencrypted: kura $cmd exited $rc"; }
        if grep -qi 'passphrase' "$T/err"; then fail "unencrypted: kura $cmd mentions a passphrase: $(cat "$T/err")"; fi
done
assert_eq "$sha_vol" "$(sha "$T/r-plain.img")" "restore from the unencrypted repository"
# Sanity of the marker test: the unencrypted repository does hold it.
grep -rqF "$MARKER" "$U/data" || fail "marker not found in the unencrypted repository (is the marker test meaningful?)"
# A passphrase set in the environment is ignored.
KURA_PASSWORD=whatever kok --repo "$U" versions
