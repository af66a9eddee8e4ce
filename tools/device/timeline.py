#!/usr/bin/env python3
"""Where a step's GPU time goes, from a kernel timeline (bench/kernel_timeline.cpp).

    python3 tools/device/timeline.py kernels.csv [--step-kernel embed_kernel] [--last N] [--device D]

A step runs from one launch of --step-kernel (the first kernel of every
forward step: the embedding lookup) to the next. Over the last N steps,
for each kernel (name and grid) it prints how often it runs a step, its
mean duration, and what it adds to the step's span: the time by which its
end passes the latest end before it. Kernels that overlap their
predecessor (programmatic dependent launch) add less than they last; the
added times and the gaps in which no kernel runs sum to the span. With
several GPUs (tensor parallelism), --device picks one GPU's kernels (CUPTI's
device id; the default 0).
"""
import argparse
import csv
import re
import sys
from collections import OrderedDict


def short_name(name):
    # "void tandem::cuda::(anonymous namespace)::f<A; B>(args)" -> "f<A; B>"
    name = re.sub(r"^void ", "", name)
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the argument list: the first '(' outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not name[:i].endswith("anonymous namespace") and name[i:i + 10] != "(anonymous":
            cut = i
            break
    name = name[:cut]
    name = re.sub(r"\(anonymous namespace\)::", "", name)
    name = re.sub(r"\b[a-z_]+::", "", name)
    name = re.sub(r"\(tandem::WeightFormat\)|\(WeightFormat\)", "fmt", name)
    return name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--step-kernel", default="embed_kernel", help="name (substring) of a step's first kernel")
    ap.add_argument("--last", type=int, default=32, help="steps summed, the last ones of the run")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--device", type=int, default=0, help="the GPU whose kernels are summed")
    args = ap.parse_args()

    with open(args.csv) as f:
        rows = [dict(r) for r in csv.DictReader(f) if int(r.get("device", 0)) == args.device]
    for r in rows:
        r["start"], r["end"] = int(r["start_ns"]), int(r["end_ns"])
        r["label"] = f"{short_name(r['name'])} [{r['grid']}]"
    rows.sort(key=lambda r: r["start"])
    marks = [i for i, r in enumerate(rows) if args.step_kernel in r["name"]]
    if len(marks) < 2:
        sys.exit(f"fewer than two launches of {args.step_kernel!r} in {len(rows)} kernels")
    # Whole steps only: from each mark to the next; the last mark's step ends with the run.
    steps = [(marks[i], marks[i + 1]) for i in range(len(marks) - 1)]
    steps = steps[-args.last:]

    per = OrderedDict()
    spans, gaps_in, gaps_before = [], [], []
    for a, b in steps:
        ks = rows[a:b]
        frontier = ks[0]["start"]
        gap = 0
        for k in ks:
            if k["start"] > frontier:
                gap += k["start"] - frontier
            added = max(0, k["end"] - max(frontier, k["start"]))
            e = per.setdefault(k["label"], {"n": 0, "dur": 0, "added": 0})
            e["n"] += 1
            e["dur"] += k["end"] - k["start"]
            e["added"] += added
            frontier = max(frontier, k["end"])
        spans.append(frontier - ks[0]["start"])
        gaps_in.append(gap)
        prev_end = max(r["end"] for r in rows[max(0, a - 200):a]) if a > 0 else ks[0]["start"]
        gaps_before.append(max(0, ks[0]["start"] - prev_end))
    n = len(steps)
    us = lambda ns: ns / 1000.0 / n
    print(f"{n} steps of {sum(b - a for a, b in steps) / n:.0f} kernels: span {us(sum(spans)):.1f} us a step, "
          f"{us(sum(gaps_in)):.1f} us of it with no kernel running; {us(sum(gaps_before)):.1f} us idle before each step")
    print(f"{'kernel [grid]':70s} {'a step':>6s} {'mean us':>8s} {'us a step':>10s} {'adds us':>8s}")
    order = sorted(per.items(), key=lambda kv: -kv[1]["added"])
    for label, e in order[: args.top]:
        print(f"{label[:70]:70s} {e['n'] / n:6.1f} {e['dur'] / e['n'] / 1000:8.2f} {e['dur'] / 1000 / n:10.1f} "
              f"{e['added'] / 1000 / n:8.1f}")


if __name__ == "__main__":
    main()
