#!/usr/bin/env python3
"""Summarises a `serve --step-trace` CSV: where an engine's time went.

    python3 tools/device/step_trace.py trace.csv [--skip-s 2]

Steps are grouped by kind (decodes only, prompt tokens only, both) and by
how many sequences decode; for each group: steps, mean forward ms, mean
tokens, and its share of the wall time. Gaps are the time between one step's
end and the next one's start (the engine loop outside step()). --skip-s drops
the first seconds (warm-up, the first prompts arriving together)."""
import csv
import sys
from collections import defaultdict


def main():
    args = sys.argv[1:]
    skip_s = 0.0
    if "--skip-s" in args:
        i = args.index("--skip-s")
        skip_s = float(args[i + 1])
        del args[i:i + 2]
    rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(args[0]))]
    if skip_s > 0 and rows:
        t0 = rows[0]["start_ms"] + skip_s * 1000
        rows = [r for r in rows if r["start_ms"] >= t0]
    if len(rows) < 2:
        print("too few steps")
        return
    wall = rows[-1]["start_ms"] + rows[-1]["plan_ms"] + rows[-1]["forward_ms"] + rows[-1]["after_ms"] - rows[0]["start_ms"]
    total = defaultdict(float)
    gaps = 0.0
    for a, b in zip(rows, rows[1:]):
        gaps += b["start_ms"] - (a["start_ms"] + a["plan_ms"] + a["forward_ms"] + a["after_ms"])
    for r in rows:
        for k in ("plan_ms", "forward_ms", "after_ms", "decodes", "prefill_tokens"):
            total[k] += r[k]
    print(f"{len(rows)} steps over {wall / 1000:.2f} s: forward {100 * total['forward_ms'] / wall:.1f}%, "
          f"plan {100 * total['plan_ms'] / wall:.1f}%, after {100 * total['after_ms'] / wall:.1f}%, "
          f"between steps {100 * gaps / wall:.1f}%")
    print(f"decoded tokens {total['decodes']:.0f} ({1000 * total['decodes'] / wall:.0f}/s), prompt tokens "
          f"{total['prefill_tokens']:.0f} ({1000 * total['prefill_tokens'] / wall:.0f}/s)")
    groups = defaultdict(list)
    for r in rows:
        kind = "decode" if r["prefill_tokens"] == 0 else ("prompt" if r["decodes"] == 0 else "mixed")
        d = int(r["decodes"])
        bucket = d if d <= 8 else (d // 8) * 8
        groups[(kind, bucket)].append(r)
    print(f"{'kind':7} {'decodes':>7} {'steps':>6} {'fwd ms':>8} {'prompt tok':>10} {'plan ms':>8} {'after ms':>8} {'wall %':>7}")
    for (kind, bucket), rs in sorted(groups.items()):
        n = len(rs)
        fwd = sum(r["forward_ms"] for r in rs)
        print(f"{kind:7} {bucket:>7} {n:>6} {fwd / n:>8.2f} {sum(r['prefill_tokens'] for r in rs) / n:>10.0f} "
              f"{sum(r['plan_ms'] for r in rs) / n:>8.3f} {sum(r['after_ms'] for r in rs) / n:>8.3f} "
              f"{100 * fwd / wall:>6.1f}%")


if __name__ == "__main__":
    main()
