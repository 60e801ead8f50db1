#!/usr/bin/env bash
# Make the seed corpora of the fuzz targets from real repository files
# written by the real `kura` CLI (docs/format/repository.md is the format):
#   fuzz-config       config of an unencrypted and an encrypted repository
#   fuzz-index-file   index file plaintexts (sealed unencrypted: plaintext || 16-byte tag)
#   fuzz-pack-header  pack header plaintexts (at the end of each pack, before the trailer)
#   fuzz-list         list blob plaintexts (type 1 blobs, zstd-decompressed when comp = 1)
#   fuzz-manifest     manifest JSON (sealed plaintext is a zstd frame of it)
#   fuzz-keyslot      key slots (keys/*) of an encrypted repository
#   fuzz-unseal       sealed objects as stored (both modes)
#   fuzz-fpcache      fingerprint cache files, prefixed by the harness's flag byte
# Usage: fuzz/make-corpus.sh [path/to/kura]   (default: build/kura)
# Writes into fuzz/corpus/<target>/ as seed-<name>; existing files are kept.
# Needs python3 and zstd.  Runs in a private temporary directory, no root needed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kura=$(realpath "${1:-$here/../build/kura}")
[ -x "$kura" ] || { echo "no kura binary at $kura" >&2; exit 1; }
corpus=$here/corpus
# Seeds are named after file IDs that differ each run: replace the old ones
# (inputs the fuzzer found are not named seed-* and are kept).
rm -f "$corpus"/*/seed-*
tmp=$(mktemp -d /tmp/kura-make-corpus.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export KURA_CACHE_DIR=$tmp/cache KURA_CONFIG_DIR=$tmp/config KURA_STATE_DIR=$tmp/state
unset KURA_REPO KURA_PASSWORD KURA_NEW_PASSWORD

# Two small volumes: some random data, some text (compressible), some zeros,
# so there are data blobs stored raw and compressed, zero chunks and several
# list entries.  Deterministic content: the same seeds each run.
python3 - "$tmp" <<'PY'
import random, sys
d = sys.argv[1]
rnd = random.Random(1234)
a = bytearray()
a += bytes(rnd.getrandbits(8) for _ in range(256 * 1024))
a += (b"kura fuzz seed line\n" * 20000)[: 512 * 1024]
a += bytes(512 * 1024)
a += bytes(rnd.getrandbits(8) for _ in range(100 * 1024))
open(d + "/vol-a.img", "wb").write(a)
b = bytes(rnd.getrandbits(8) for _ in range(300 * 1024)) + bytes(300 * 1024)
open(d + "/vol-b.img", "wb").write(b)
PY

plain=$tmp/plain
"$kura" --repo "$plain" init --no-encryption >/dev/null
"$kura" --repo "$plain" backup --volume "$tmp/vol-a.img" --name a --volume "$tmp/vol-b.img" --name b \
        --chunk-size 256K --tag seed --tag first --threads 1 >/dev/null
# A second backup after a change: incremental, uses the fingerprint cache, has a parent.
printf 'changed' | dd of="$tmp/vol-a.img" bs=1 seek=300000 conv=notrunc status=none
"$kura" --repo "$plain" backup --volume "$tmp/vol-a.img" --name a --chunk-size 256K --threads 1 >/dev/null

enc=$tmp/enc
echo "fuzz-password" >"$tmp/pw"
"$kura" --repo "$enc" --password-file "$tmp/pw" init --kdf-memory 64K --kdf-passes 1 >/dev/null
"$kura" --repo "$enc" --password-file "$tmp/pw" backup --volume "$tmp/vol-b.img" --name b \
        --chunk-size 256K --threads 1 >/dev/null

python3 - "$plain" "$enc" "$corpus" "$KURA_CACHE_DIR" <<'PY'
import glob, os, struct, subprocess, sys
plain, enc, corpus, cache = sys.argv[1:5]
TAG = 16

def put(target, name, data, limit=64 * 1024):
    if len(data) > limit:
        return
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    with open(os.path.join(corpus, target, "seed-" + name), "wb") as f:
        f.write(data)

def zstd_d(b):
    return subprocess.run(["zstd", "-d", "-q", "-c"], input=b, check=True, stdout=subprocess.PIPE).stdout

def short(path):
    return os.path.basename(path)[:12]

put("fuzz-config", "plain", open(plain + "/config", "rb").read())
put("fuzz-config", "enc", open(enc + "/config", "rb").read())
for p in sorted(glob.glob(enc + "/keys/*")):
    put("fuzz-keyslot", "cli-" + short(p), open(p, "rb").read())

for p in sorted(glob.glob(plain + "/index/*")):
    b = open(p, "rb").read()
    put("fuzz-index-file", short(p), b[:-TAG])
    put("fuzz-unseal", "plain-index-" + short(p), b)
for p in sorted(glob.glob(enc + "/index/*")):
    put("fuzz-unseal", "enc-index-" + short(p), open(p, "rb").read())

for p in sorted(glob.glob(plain + "/versions/*")):
    b = open(p, "rb").read()
    put("fuzz-manifest", short(p), zstd_d(b[:-TAG]))
    put("fuzz-unseal", "plain-version-" + short(p), b)
for p in sorted(glob.glob(enc + "/versions/*")):
    put("fuzz-unseal", "enc-version-" + short(p), open(p, "rb").read())

for p in sorted(glob.glob(plain + "/data/*/*")):
    b = open(p, "rb").read()
    assert b[-4:] == b"KPK1"
    (hlen,) = struct.unpack("<I", b[-8:-4])
    sealed = b[-8 - hlen:-8]
    hdr = sealed[:-TAG]
    put("fuzz-pack-header", short(p), hdr)
    put("fuzz-unseal", "plain-packhdr-" + short(p), sealed)
    magic, ver, count = struct.unpack("<4sII", hdr[:12])
    for i in range(count):
        t, bid, off, ln = struct.unpack("<B32sII", hdr[12 + 41 * i:12 + 41 * (i + 1)])
        if t != 1:
            continue
        payload = b[off:off + ln][:-TAG]
        body = payload[1:] if payload[0] == 0 else zstd_d(payload[1:])
        put("fuzz-list", bid.hex()[:12], body)

# Fingerprint caches: the harness reads flags(u8) || file; 0x02 = take chunk
# size and count from the file (the success path), 0x03 = also fix the checksum.
for p in sorted(glob.glob(cache + "/fpcache/*/*.fpc")):
    b = open(p, "rb").read()
    put("fuzz-fpcache", short(p) + "-hdr", b"\x02" + b)
    put("fuzz-fpcache", short(p) + "-fixsum", b"\x03" + b)
    put("fuzz-fpcache", short(p) + "-fixed", b"\x00" + b)
PY
for d in "$corpus"/*/; do
        printf '%-20s %3d files %6d bytes\n' "$(basename "$d")" "$(ls "$d" | wc -l)" "$(cat "$d"/* | wc -c)"
done
