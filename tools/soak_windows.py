#!/usr/bin/env python3
"""Ten-minute windows of a soak CSV (bench/soak's --out), as in reliability.md.

  python3 tools/soak_windows.py docs/img/soak.csv [--minutes 10]

Prints, per window, the median, lowest and highest sample of the server's
RSS and of the data directory's disk use, then the server's average CPU over
the run and the range of the backlog.
"""

import argparse
import csv
import statistics
import sys

MIB = 1 << 20


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--minutes", type=float, default=10)
    args = ap.parse_args(argv)
    with open(args.csv, newline="") as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    if not rows:
        print("no samples", file=sys.stderr)
        return 1
    width = args.minutes * 60
    print("| minutes | RSS median (min–max) | disk median (min–max) |")
    print("|---|---:|---:|")
    end = rows[-1]["elapsed_s"]
    start = 0.0
    while start < end:
        window = [r for r in rows if start <= r["elapsed_s"] < start + width]
        if window:
            def cell(key):
                values = [r[key] / MIB for r in window]
                return "%.1f (%.1f–%.1f) MiB" % (
                    statistics.median(values), min(values), max(values))
            print("| %g–%g | %s | %s |" % (start / 60, (start + width) / 60,
                                           cell("rss_bytes"), cell("disk_bytes")))
        start += width
    last = rows[-1]
    print()
    print("server CPU: %.0f s in %.0f s, %.2f of a core on average" % (
        last["server_cpu_s"], last["elapsed_s"],
        last["server_cpu_s"] / last["elapsed_s"]))
    backlog = [r["backlog"] for r in rows if r["elapsed_s"] > 0]
    print("backlog: %d–%d" % (min(backlog), max(backlog)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
