#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Change about 1 % of the benchmark volume, deterministically.

Usage: mutate.py SEED MOUNTPOINT

What a day on a server looks like: a few large files rewritten in place
(database-like blocks), scattered small row updates in CSV tables, logs that
grow, a few new files.  Nothing is deleted, so no block is freed: the used
data of the changed image is the old data plus these changes.
Prints the number of bytes written.
"""
import importlib.util
import os
import random
import sys

here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("gentext", os.path.join(here, "gen-text.py"))
gentext = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gentext)


def files(root, sub, suffix):
        d = os.path.join(root, sub)
        return sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(suffix))


def main():
        seed = int(sys.argv[1])
        root = sys.argv[2]
        r = random.Random("mutate/%d" % seed)
        written = 0

        # 1. in-place rewrites: 3 x 4 MiB inside random blobs
        blobs = files(root, "srv/blobs", ".bin")
        for path in r.sample(blobs, min(3, len(blobs))):
                size = os.path.getsize(path)
                off = r.randrange(0, size - (4 << 20)) & ~4095
                with open(path, "r+b") as f:
                        f.seek(off)
                        f.write(r.randbytes(4 << 20))
                written += 4 << 20

        # 2. scattered row updates: 64 x 4 KiB in 4 CSV tables
        tables = files(root, "srv/data/csv", ".csv")
        for path in r.sample(tables, min(4, len(tables))):
                size = os.path.getsize(path)
                with open(path, "r+b") as f:
                        for _ in range(16):
                                f.seek(r.randrange(0, size - 4096))
                                f.write(gentext.csv_table(r, 4096).encode()[:4096])
                                written += 4096

        # 3. logs grow: 1 MiB appended to 8 logs
        logs = files(root, "srv/data/logs", ".log")
        for path in r.sample(logs, min(8, len(logs))):
                data = gentext.app_log(r, 1 << 20).encode()
                with open(path, "ab") as f:
                        f.write(data)
                written += len(data)

        # 4. new files: a 4 MiB log and a 2 MiB random file
        data = gentext.app_log(r, 4 << 20).encode()
        with open(os.path.join(root, "srv/data/logs/new-app.log"), "wb") as f:
                f.write(data)
        written += len(data)
        with open(os.path.join(root, "srv/blobs/new-upload.bin"), "wb") as f:
                f.write(r.randbytes(2 << 20))
        written += 2 << 20
        print(written)


if __name__ == "__main__":
        main()
