#!/usr/bin/env python
"""Time every bundle of a run against PyTorch eager FP32, in one interleaved run, and print p50/p99 + ratio.

    .venv/bin/python benchmarks/bundles_vs_pytorch.py runs/default/finetune runs/default/bundles/* [--profile dev]

Uses the same harness as `edgeft bench` (accuracy run + interleaved performance windows, nearest-rank
percentiles, device fingerprint) and keeps the JSON under benchmarks/results/<date>_<host>_<run>.json.
"""
from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

from edgeft.bench.harness import BenchConfig, bench
from edgeft.bench.report import save_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="run directory (the PyTorch FP32 reference)")
    ap.add_argument("bundles", type=Path, nargs="*", help="bundles (default: RUN/bundles/* or RUN/../bundles/*)")
    ap.add_argument("--data", default=None, help="default: the run's built-in dataset, test split")
    ap.add_argument("--profile", default="dev", choices=["smoke", "dev", "report"])
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    bundles = a.bundles or sorted(p for p in list((a.run / "bundles").glob("*")) + list((a.run.parent / "bundles").glob("*"))
                                  if (p / "manifest.json").is_file())
    if not bundles:
        print(f"no bundles found for {a.run}; pass them explicitly", file=sys.stderr)
        return 2
    from edgeft.cli import _default_data

    cfg = BenchConfig(data=a.data or _default_data([a.run]), profile=a.profile, threads=a.threads,
                      command="benchmarks/bundles_vs_pytorch.py " + " ".join(sys.argv[1:]))
    doc = bench([str(a.run)] + [str(b) for b in bundles], cfg)
    dev = doc["device"]
    print(f"machine: {dev['cpu_model']}, {dev['cores_logical']} cores, {dev['os']}; threads {doc['settings']['threads']}; "
          f"profile {doc['profile']} ({doc['settings']['windows']} interleaved windows x >= "
          f"{doc['settings']['window']['min_s']} s); data {doc['data']['name']} n={doc['data']['n']}")
    print(f"{'artifact':34s} {'top-1':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'infer p50':>9s} {'p50 ratio':>10s} "
          f"{'speedup':>8s}")
    for x in doc["artifacts"]:
        e, i, vs = x["latency"]["e2e"], x["latency"]["infer"], x["vs_reference"]
        r = vs["p50_ratio"]
        print(f"{x['name']:34s} {x['accuracy']['top1']:7.4f} {e['p50']:8.3f} {e['p99']:8.3f} {i['p50']:9.3f} "
              f"{r['median']:10.3f} {vs['speedup_p50']:7.2f}x")
    out = Path(__file__).parent / "results" / f"{time.strftime('%Y-%m-%d')}_{socket.gethostname()}_{a.run.parent.name}-{a.run.name}.json"
    save_json(doc, out)
    print(f"valid: {doc['validity']['valid']}; saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
