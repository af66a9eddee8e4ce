#!/usr/bin/env python3
"""Sums an Nsight Compute CSV (--csv, --page raw or details; metric gpu__time_duration.sum)
by kernel name: total microseconds, launches and share, largest first.
Usage: kernel_times.py FILE.csv [--after NAME]
  --after NAME  count only the launches after the last one whose kernel name
                contains NAME (e.g. prefill_attention: the decode steps that
                follow a prompt)."""
import collections
import csv
import sys


def main(path, after=None):
    lines = [line for line in open(path, errors="replace") if line.startswith('"')]
    rows = list(csv.reader(lines))
    if len(rows) < 3:
        print(f"{path}: no kernel rows")
        return
    header = rows[0]
    name_col = header.index("Kernel Name")
    units = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "msecond": 1e3, "ms": 1e3}
    if "gpu__time_duration.sum" in header:
        # --page raw: a column per metric, the units in the second row.
        time_col = header.index("gpu__time_duration.sum")
        scale = units.get(rows[1][time_col], 1e-3)
        body = rows[2:]
    else:
        # --page details (the default): a row per metric, its unit beside it.
        metric_col, unit_col = header.index("Metric Name"), header.index("Metric Unit")
        time_col = header.index("Metric Value")
        body = [row for row in rows[1:] if row[metric_col] == "gpu__time_duration.sum"]
        scale = units.get(body[0][unit_col], 1e-3) if body else 1e-3
    if after:
        last = max((i for i, row in enumerate(body) if after in row[name_col]), default=-1)
        body = body[last + 1:]
    totals = collections.defaultdict(lambda: [0.0, 0])
    for row in body:
        name = row[name_col].split("(")[0][:70]
        totals[name][0] += float(row[time_col].replace(",", "")) * scale
        totals[name][1] += 1
    grand = sum(t for t, _ in totals.values())
    print(f"{grand / 1e3:.2f} ms in {sum(n for _, n in totals.values())} kernels")
    for name, (t, n) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"{t:10.1f} us {n:5d} x {100 * t / grand:5.1f}%  {name}")


if __name__ == "__main__":
    args = sys.argv[1:]
    after = None
    if "--after" in args:
        i = args.index("--after")
        after = args[i + 1]
        del args[i:i + 2]
    main(args[0], after)
