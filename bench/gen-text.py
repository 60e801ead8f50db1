#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Write compressible text (web/app logs and CSV tables) for the benchmark.

Usage: gen-text.py SEED OUTDIR TOTAL_MIB

Every file gets its own random.Random(seed, name) so the output is the same
bytes on every run and does not depend on the order files are written in.
The text looks like what servers hold: access logs, application logs with
stack traces, CSV exports.  It compresses roughly 4-8x with zstd -1.
"""
import multiprocessing
import os
import random
import sys

WORDS = ("request handled user session cache miss hit timeout retry backend "
         "connection pool opened closed failed succeeded payload order invoice "
         "customer account sync worker queue job started finished scheduled "
         "delayed token refresh expired config reload shard replica leader "
         "election vote commit rollback transaction deadlock index scan").split()
PATHS = ["/api/v1/items", "/api/v1/orders", "/api/v2/users", "/static/js/app.js",
         "/static/css/site.css", "/login", "/logout", "/healthz", "/metrics",
         "/api/v1/search", "/images/logo.png", "/api/v2/cart", "/admin/reports"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
          "curl/7.88.1", "Prometheus/2.45.0", "python-requests/2.31.0",
          "Go-http-client/1.1", "kube-probe/1.28"]
STATUS = [200] * 40 + [201, 204, 301, 302, 304, 304, 400, 401, 403, 404, 404, 500, 502, 503]
LEVELS = ["INFO"] * 12 + ["DEBUG"] * 6 + ["WARN"] * 2 + ["ERROR"]
SERVICES = ["api", "worker", "scheduler", "auth", "billing", "search", "mailer"]
CITIES = ["Tokyo", "Osaka", "Berlin", "Paris", "Lyon", "Madrid", "Oslo", "Austin",
          "Denver", "Lagos", "Lima", "Quito", "Perth", "Hanoi", "Seoul", "Porto"]


def access_log(r, size):
        out = []
        n = 0
        t = 1_700_000_000 + r.randrange(86400 * 30)
        while n < size:
                t += r.randrange(3)
                ip = "10.%d.%d.%d" % (r.randrange(4), r.randrange(256), r.randrange(1, 255))
                line = '%s - - [%d] "%s %s/%d HTTP/1.1" %d %d "-" "%s" rt=%.3f\n' % (
                        ip, t, "GET" if r.random() < 0.8 else "POST", r.choice(PATHS),
                        r.randrange(100000), r.choice(STATUS), r.randrange(200, 90000),
                        r.choice(AGENTS), r.random() * 2)
                out.append(line)
                n += len(line)
        return "".join(out)


def app_log(r, size):
        out = []
        n = 0
        t = 1_700_000_000_000 + r.randrange(86400 * 30 * 1000)
        while n < size:
                t += r.randrange(50)
                lvl = r.choice(LEVELS)
                svc = r.choice(SERVICES)
                msg = " ".join(r.choice(WORDS) for _ in range(r.randrange(4, 14)))
                line = "%d.%03d %-5s [%s-%d] %s id=%08x user=%d\n" % (
                        t // 1000, t % 1000, lvl, svc, r.randrange(16), msg,
                        r.getrandbits(32), r.randrange(1, 50000))
                if lvl == "ERROR":
                        line += "".join("    at com.example.%s.%s(%s.java:%d)\n" % (
                                svc, r.choice(WORDS), svc.capitalize(), r.randrange(20, 900))
                                for _ in range(r.randrange(3, 12)))
                out.append(line)
                n += len(line)
        return "".join(out)


def csv_table(r, size):
        out = ["id,created,customer,city,amount,currency,status,note\n"]
        n = len(out[0])
        i = r.randrange(1_000_000)
        t = 1_600_000_000 + r.randrange(10_000_000)
        while n < size:
                i += 1
                t += r.randrange(600)
                line = "%d,%d,cust-%06d,%s,%d.%02d,%s,%s,%s\n" % (
                        i, t, r.randrange(200000), r.choice(CITIES), r.randrange(10000),
                        r.randrange(100), r.choice(("EUR", "USD", "JPY")),
                        r.choice(("paid", "open", "refunded", "paid", "paid")),
                        r.choice(WORDS) if r.random() < 0.3 else "")
                out.append(line)
                n += len(line)
        return "".join(out)


KINDS = [("logs/access-%03d.log", access_log), ("logs/app-%03d.log", app_log),
         ("csv/orders-%03d.csv", csv_table)]


def write_one(job):
        seed, outdir, file_size, k = job
        pattern, fn = KINDS[k % len(KINDS)]
        name = pattern % (k // len(KINDS))
        r = random.Random("%d/%s" % (seed, name))
        # files vary in size (8..24 MiB) so chunk boundaries do not line up
        size = file_size // 2 + r.randrange(file_size)
        data = fn(r, size).encode()
        path = os.path.join(outdir, name)
        with open(path + ".tmp", "wb") as f:
                f.write(data)
        os.rename(path + ".tmp", path)


def main():
        seed = int(sys.argv[1])
        outdir = sys.argv[2]
        total = int(sys.argv[3]) << 20
        file_size = 16 << 20
        nfiles = total // file_size
        for sub in ("logs", "csv"):
                os.makedirs(os.path.join(outdir, sub), exist_ok=True)
        jobs = [(seed, outdir, file_size, k) for k in range(nfiles)]
        with multiprocessing.Pool(os.cpu_count() or 1) as pool:
                pool.map(write_one, jobs, chunksize=1)


if __name__ == "__main__":
        main()
