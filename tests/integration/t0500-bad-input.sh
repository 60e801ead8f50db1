#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# Bad input: a missing repository, a directory that is not one, a newer
# format version (refused, repository untouched), no passphrase without a
# terminal, an unreadable source, usage errors (exit 2), and a repository on
# a small filesystem that fills up in the middle of a backup (KURA-E-REPO-FULL;
# the earlier version survives, no new version appears).
. "$(dirname "$0")/lib.sh"
require_tool mkfs.ext4

MiB=1048576

# ---- repositories that are not there or not repositories -------------------------
expect_fail 1 KURA-E-REPO-NOT-FOUND --repo "$T/no-such-repo" versions
assert_contains "$T/err" "$T/no-such-repo" "REPO-NOT-FOUND names the path"
[ ! -e "$T/no-such-repo" ] || fail "versions created the missing repository"
mkdir -p "$T/not-a-repo"
echo hello >"$T/not-a-repo/file.txt"
expect_fail 1 KURA-E-NOT-A-REPO --repo "$T/not-a-repo" versions
expect_fail 1 KURA-E-NOT-A-REPO --repo "$T/not-a-repo" backup --volume /dev/null
assert_eq "hello" "$(cat "$T/not-a-repo/file.txt")" "file in the non-repository"
assert_eq 1 "$(find "$T/not-a-repo" | wc -l | awk '{print $1 - 1}')" "entries in the non-repository"
# init refuses a non-empty directory.
expect_fail 1 KURA-E-REPO-EXISTS --repo "$T/not-a-repo" init --no-encryption
# No repository given at all.
(unset KURA_REPO; expect_fail 2 KURA-E-USAGE versions) || exit 1

# ---- a newer format version ----------------------------------------------------------
kura_init_test_repo
vol=$(new_loop 4M small-vol) || exit 1
rand_bytes small 4194304 | dd of="$vol" bs=1M status=none
kok backup --volume "$vol"
v1=$(version_ids) || exit 1
cp -a "$REPO" "$T/repo-v99"
sed -i 's/"kura_repository"[[:space:]]*:[[:space:]]*1\b/"kura_repository": 99/' "$T/repo-v99/config"
assert_eq 99 "$(jq -r .kura_repository "$T/repo-v99/config")" "edited config"
tree_sha "$T/repo-v99" >"$T/before"
expect_fail 1 KURA-E-REPO-VERSION --repo "$T/repo-v99" versions
expect_fail 1 KURA-E-REPO-VERSION --repo "$T/repo-v99" backup --volume "$vol"
expect_fail 1 KURA-E-REPO-VERSION --repo "$T/repo-v99" check --read-data
expect_fail 1 KURA-E-REPO-VERSION --repo "$T/repo-v99" prune
expect_fail 1 KURA-E-REPO-VERSION --repo "$T/repo-v99" restore --version latest --volume-to "$T/x.img"
expect_fail 1 KURA-E-REPO-VERSION --repo "$T/repo-v99" key add
tree_sha "$T/repo-v99" >"$T/after"
assert_file_eq "$T/before" "$T/after" "repository with a newer format version after refused commands"
# An unknown incompatible feature is refused the same way.
cp -a "$REPO" "$T/repo-feat"
jq '.features_incompat = ["from-the-future"]' "$REPO/config" >"$T/repo-feat/config"
expect_fail 1 KURA-E-REPO-VERSION --repo "$T/repo-feat" versions

# ---- passphrases -----------------------------------------------------------------------
(
        unset KURA_PASSWORD
        setsid -w timeout 30 "$KURA" versions </dev/null >"$T/out" 2>"$T/err"
        echo $? >"$T/rc"
)
assert_eq 4 "$(cat "$T/rc")" "exit status without a passphrase and without a terminal"
assert_contains "$T/err" KURA-E-NO-PASSWORD
(unset KURA_PASSWORD; expect_fail 4 KURA-E-NO-PASSWORD --password-file "$T/no-such-password-file" versions) || exit 1
: >"$T/empty-pw"
(unset KURA_PASSWORD; expect_fail 4 KURA-E-NO-PASSWORD --password-file "$T/empty-pw" versions) || exit 1

# ---- sources -----------------------------------------------------------------------------
mkdir -p "$T/a-directory"
expect_fail 1 KURA-E-SOURCE-UNREADABLE backup --volume "$T/a-directory"
expect_fail 1 KURA-E-SOURCE-NOT-FOUND backup --volume /dev/kura-no-such-device
# An image file nobody may read, with kura run as an unprivileged user who can
# use a copy of the repository.
if id nobody >/dev/null 2>&1; then
        cp -a "$REPO" "$T/repo-nobody"
        chown -R nobody "$T/repo-nobody" "$KURA_CACHE_DIR" "$KURA_STATE_DIR" "$KURA_CONFIG_DIR"
        chmod 755 "$T"
        rand_bytes secret 65536 >"$T/secret.img"
        chmod 000 "$T/secret.img"
        runuser -u nobody -- env KURA_PASSWORD="$KURA_PASSWORD" KURA_CACHE_DIR="$KURA_CACHE_DIR" \
                KURA_STATE_DIR="$KURA_STATE_DIR" KURA_CONFIG_DIR="$KURA_CONFIG_DIR" \
                timeout 30 "$KURA" --repo "$T/repo-nobody" backup --volume "$T/secret.img" </dev/null >"$T/out" 2>"$T/err"
        rc=$?
        [ "$rc" = 1 ] || { show_output backup as nobody; fail "unreadable source (as nobody): exit $rc, expected 1"; }
        assert_contains "$T/err" KURA-E-SOURCE-UNREADABLE "unreadable image as nobody"
        assert_contains "$T/err" "$T/secret.img" "SOURCE-UNREADABLE names the path"
fi
kok versions --json
assert_eq 1 "$(jq '.versions | length' "$T/out")" "versions after refused backups"

# ---- usage errors: exit 2 ---------------------------------------------------------------
expect_fail 2 KURA-E-USAGE
expect_fail 2 KURA-E-USAGE frobnicate
expect_fail 2 KURA-E-USAGE versions --no-such-option
expect_fail 2 KURA-E-USAGE backup
expect_fail 2 KURA-E-USAGE backup --volume "$vol" --chunk-size 1000
expect_fail 2 KURA-E-USAGE backup --volume "$vol" --chunk-size 64M
expect_fail 2 KURA-E-USAGE backup --volume "$vol" --chunk-size lots
expect_fail 2 KURA-E-USAGE restore --version latest
expect_fail 2 KURA-E-USAGE restore --volume-to "$T/x.img"
expect_fail 2 KURA-E-USAGE --repo "$T/r2" init --kdf-passes many
expect_fail 2 KURA-E-USAGE key frobnicate
expect_fail 2 KURA-E-USAGE forget
[ ! -e "$T/x.img" ] || fail "a usage error created a restore target"
[ ! -e "$T/r2" ] || fail "a usage error created a repository"
kok versions --json
assert_eq 1 "$(jq '.versions | length' "$T/out")" "versions after usage errors"
kok explain KURA-E-REPO-FULL
[ -s "$T/out" ] || fail "explain printed nothing"

# ---- the repository fills up ---------------------------------------------------------------
small=$(new_loop 24M repofs) || exit 1
mkfs.ext4 -q -F -m 0 "$small" || fail "mkfs $small"
do_mount "$small" "$T/smallfs"
SR=$T/smallfs/repo
kura_init_test_repo "$SR"
first=$(new_loop 4M first) || exit 1
{ rand_bytes first 3145728; head -c 1048576 /dev/zero; } | dd of="$first" bs=1M status=none
sha_first=$(sha "$first")
KURA_REPO=$SR kok backup --volume "$first"
KURA_REPO=$SR version_ids >"$T/ids-small" || exit 1
assert_eq 1 "$(wc -l <"$T/ids-small")" "versions in the small repository"
big=$(new_loop 64M big) || exit 1
rand_bytes big $((64 * MiB)) | dd of="$big" bs=1M status=none
KURA_REPO=$SR expect_fail 1 KURA-E-REPO-FULL backup --volume "$big"
df -k "$T/smallfs" | tail -1
KURA_REPO=$SR version_ids >"$T/ids-small2" || exit 1
assert_file_eq "$T/ids-small" "$T/ids-small2" "versions after the failed backup"
KURA_REPO=$SR kok check --read-data
rm -f "$T/first.img"
KURA_REPO=$SR kok restore --version latest --volume-to "$T/first-restored.img"
assert_eq "$sha_first" "$(sha "$T/first-restored.img")" "earlier version restored after REPO-FULL"
# prune clears what the failed backup left behind, then a small backup fits again.
KURA_REPO=$SR kok prune
KURA_REPO=$SR kok check --read-data
[ -z "$(find "$SR" -name '.tmp-*')" ] || fail "temporary files left after prune: $(find "$SR" -name '.tmp-*')"
KURA_REPO=$SR kok backup --volume "$first"
