#!/usr/bin/env python3
"""Latency of a small append + fdatasync, by how the file's space was made.

  fsync_append.py [--dir DIR] [--count N] [--size BYTES] [--rounds R]

Modes, each on a fresh file in DIR (default: the current directory):
  append     the file grows with every write (a new RocksDB WAL);
  keepsize   space reserved with fallocate(FALLOC_FL_KEEP_SIZE), as RocksDB
             preallocates its WAL: the file's size still grows;
  written    the file's full length written and fsynced first, then
             overwritten from the start (a recycled WAL): its size does not
             change.

On a file system that must record a new size (an inode write) on each
fdatasync, the first two pay an extra I/O wait that the third does not.
"""

import argparse
import ctypes
import os
import time

FALLOC_FL_KEEP_SIZE = 1


def run(path, mode, count, size):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long,
                               ctypes.c_long]
    length = count * size + 4096
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if mode == "keepsize":
            if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, length) != 0:
                raise OSError(ctypes.get_errno(), "fallocate")
        elif mode == "written":
            os.write(fd, b"\0" * length)
            os.lseek(fd, 0, os.SEEK_SET)
        os.fsync(fd)
        buf = b"x" * size
        latencies = []
        start = time.perf_counter()
        for _ in range(count):
            t = time.perf_counter()
            os.write(fd, buf)
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        os.unlink(path)
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    print(f"{mode:9} {count / elapsed:8,.0f}/s  p50 {p(0.5) * 1e3:.3f} ms  "
          f"p99 {p(0.99) * 1e3:.3f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", default=".")
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    path = os.path.join(args.dir, f".fsync_append.{os.getpid()}")
    for _ in range(args.rounds):
        for mode in ("append", "keepsize", "written"):
            run(path, mode, args.count, args.size)


if __name__ == "__main__":
    main()
