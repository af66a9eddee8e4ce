#!/usr/bin/env python3
"""Where a decode step's time goes, from an nsys GPU trace.

Usage: step_trace.py TRACE.csv [--steps N]

TRACE.csv is `nsys stats --report cuda_gpu_trace --format csv` of a run whose
decode graphs were traced node by node (`--cuda-graph-trace=node`), as
`gpu_suite.sh trace` makes it. A step is the kernels up to and including the
argmax that ends it; the last N steps are averaged. Per kernel name it prints
launches a step, mean duration, and the time it alone holds the GPU's
timeline (its end past the latest end before it: with programmatic launches a
kernel starts before its predecessor ends, so durations overlap). Idle is the
time inside a step when no kernel runs; host is the time between steps.
"""
import csv
import re
import sys
from collections import OrderedDict


def column(header, word):
    for i, h in enumerate(header):
        if h.startswith(word):
            return i
    raise SystemExit(f"no '{word}' column in {header}")


def short(name):
    name = re.sub(r"^void ", "", name)
    name = re.sub(r"\(.*$", "", name)  # arguments
    base = name.split("<")[0].split("::")[-1]
    return base + ("<" + name.split("<", 1)[1] if "<" in name else "")[:60]


def main():
    args = sys.argv[1:]
    n_steps = 16
    if "--steps" in args:
        i = args.index("--steps")
        n_steps = int(args[i + 1])
        del args[i : i + 2]
    rows = list(csv.reader(open(args[0])))
    header, rows = rows[0], rows[1:]
    c_start, c_dur, c_name = column(header, "Start"), column(header, "Duration"), column(header, "Name")
    kernels = []
    for r in rows:
        if len(r) <= c_name or r[c_name].startswith("[CUDA"):
            continue
        kernels.append((int(r[c_start]), int(r[c_dur]), r[c_name]))
    kernels.sort()
    steps, current = [], []
    for k in kernels:
        current.append(k)
        if "argmax" in k[2]:
            steps.append(current)
            current = []
    if len(steps) < 2:
        raise SystemExit(f"{len(steps)} steps found (no argmax kernels?)")
    chosen = steps[-n_steps:]
    per = OrderedDict()
    idle = wall = host = 0.0
    prev_end = None
    for step in chosen:
        if prev_end is not None:
            host += step[0][0] - prev_end
        latest = step[0][0]
        for start, dur, name in step:
            key = short(name)
            end = start + dur
            own = max(0, end - max(start, latest))
            idle += max(0, start - latest)
            d = per.setdefault(key, [0, 0.0, 0.0])
            d[0] += 1
            d[1] += dur
            d[2] += own
            latest = max(latest, end)
        wall += latest - step[0][0]
        prev_end = latest
    n = len(chosen)
    print(f"{n} steps: {wall / n / 1e3:.1f} us a step on the GPU, idle inside {idle / n / 1e3:.1f} us, "
          f"between steps {host / max(1, n - 1) / 1e3:.1f} us")
    print(f"{'kernel':62} {'a step':>6} {'mean us':>8} {'sum us':>8} {'alone us':>9}")
    for key, (count, dur, own) in sorted(per.items(), key=lambda kv: -kv[1][2]):
        print(f"{key:62} {count / n:6.0f} {dur / count / 1e3:8.2f} {dur / n / 1e3:8.1f} {own / n / 1e3:9.1f}")


if __name__ == "__main__":
    main()
