#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (--csv --page raw, metric gpu__time_duration.sum)
by kernel name: total microseconds, launches and share, largest first."""
import collections
import csv
import sys


def main(path):
    lines = [line for line in open(path, errors="replace") if line.startswith('"')]
    rows = list(csv.reader(lines))
    if len(rows) < 3:
        print(f"{path}: no kernel rows")
        return
    header = rows[0]
    name_col, time_col = header.index("Kernel Name"), header.index("gpu__time_duration.sum")
    unit = rows[1][time_col]
    scale = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "msecond": 1e3, "ms": 1e3}.get(unit, 1e-3)
    totals = collections.defaultdict(lambda: [0.0, 0])
    for row in rows[2:]:
        name = row[name_col].split("(")[0][:70]
        totals[name][0] += float(row[time_col].replace(",", "")) * scale
        totals[name][1] += 1
    grand = sum(t for t, _ in totals.values())
    print(f"{grand / 1e3:.2f} ms in {sum(n for _, n in totals.values())} kernels")
    for name, (t, n) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"{t:10.1f} us {n:5d} x {100 * t / grand:5.1f}%  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
