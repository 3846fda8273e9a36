#!/usr/bin/env python
"""Cross-check edgeft's OpenVINO timing against OpenVINO's own benchmark_app on the same IR.

    .venv/bin/python benchmarks/benchmark_app_compare.py runs/default/bundles/openvino-int8 [--seconds 30]

benchmark_app runs `-hint latency -api sync -nireq 1` with a static batch-1 shape and random inputs (inference
only); edgeft's number is the `infer` stage of `edgeft bench` (set input + infer + read output) on the same IR
with the same thread count. benchmark_app reports the request latency measured inside OpenVINO; edgeft's wall
time around the Python call adds the binding overhead (tens of microseconds), which matters for sub-ms models,
so the script reports both edgeft's wall p50 and the in-runtime latency of the same calls. Both run in this one script,
alternating, so machine drift hits both alike.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def benchmark_app(xml: Path, shape: list[int], seconds: int, threads: int | None) -> dict:
    """benchmark_app -hint latency (its own thread choice), or, with threads given, the equivalent fine-tune
    options (benchmark_app refuses -nthreads together with a hint): -hint none -nstreams 1 -nthreads N."""
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    tune = ["-hint", "latency"] if threads is None else ["-hint", "none", "-nstreams", "1", "-nthreads", str(threads)]
    with tempfile.TemporaryDirectory() as d:
        cmd = [exe, "-m", str(xml), "-d", "CPU", *tune, "-api", "sync", "-nireq", "1", "-t", str(seconds),
               "-shape", f"[{','.join(map(str, shape))}]", "-report_type", "no_counters", "-report_folder", d]
        r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"benchmark_app failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    out = {}
    text = r.stdout + r.stderr
    for key in ("median", "average", "min", "max"):      # printed in ms, or in us below 1 ms
        m = re.search(rf"{key.capitalize()}:\s+([\d.]+) (ms|us)", text)
        out[key] = (float(m.group(1)) / (1000.0 if m.group(2) == "us" else 1.0)) if m else None
    for key, pat in (("fps", r"Throughput:\s+([\d.]+) FPS"), ("count", r"Count:\s+(\d+) iterations"),
                     ("threads", r"INFERENCE_NUM_THREADS:\s+(\d+)")):
        m = re.search(pat, text)
        out[key] = float(m.group(1)) if m else None
    if out["median"] is None:
        raise SystemExit(f"could not read benchmark_app's median latency:\n{r.stdout[-3000:]}\n{r.stderr[-2000:]}")
    return out


def edgeft_infer(bundle: Path, seconds: float, threads: int) -> dict:
    from edgeft.bench.timing import run_window, warmup
    from edgeft.bundle import read_manifest
    from edgeft.backends.openvino import Runner
    from edgeft.stats import summarize

    m = read_manifest(bundle)
    shape = [1] + [int(d) for d in m["inputs"][0]["shape"][1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    import time

    with Runner(bundle, m, threads=threads, batch=1) as r:
        warmup(lambda i: r.infer(x), 2.0, 20)

        def step(i):
            t = time.perf_counter_ns()
            r.infer(x)
            # OpenVINO's own request latency (measured inside the runtime, as benchmark_app reports it)
            return {"infer": (time.perf_counter_ns() - t) / 1e6, "e2e": float(r.req.latency)}

        w = run_window(step, 0, seconds, 100)
        s = summarize(w.samples["infer"])
        s["ov_internal"] = summarize(w.samples["e2e"])
        s["info"] = r.info
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    from edgeft.bench.harness import default_threads
    from edgeft.bundle import read_manifest
    from edgeft.utils.env import cpu_model

    # without --threads benchmark_app picks its own count under -hint latency; edgeft then uses the count it
    # reported (so both run the same thread count), or edgeft's default when it printed none
    threads = a.threads
    m = read_manifest(a.bundle)
    if m["format"] != "openvino":
        print("needs an OpenVINO bundle", file=sys.stderr)
        return 2
    shape = [1] + [int(d) for d in m["inputs"][0]["shape"][1:]]
    rows = []
    for rnd in range(a.rounds):
        ba = benchmark_app(a.bundle / m["model_files"]["model"], shape, a.seconds, threads)
        ours = edgeft_infer(a.bundle, a.seconds, threads or int(ba.get("threads") or default_threads()))
        rows.append((ba, ours))
        print(f"round {rnd + 1}: benchmark_app median {ba['median']:.3f} ms (n={ba['count']:.0f}) | edgeft infer "
              f"p50 {ours['p50']:.3f} ms (n={ours['count']}) p99 {ours['p99']:.3f}, of which inside OpenVINO p50 "
              f"{ours['ov_internal']['p50']:.3f} | ratio {ours['p50'] / ba['median']:.3f} (wall), "
              f"{ours['ov_internal']['p50'] / ba['median']:.3f} (inside OpenVINO)")
    ba_med = float(np.median([r[0]["median"] for r in rows]))
    our_med = float(np.median([r[1]["p50"] for r in rows]))
    our_int = float(np.median([r[1]["ov_internal"]["p50"] for r in rows]))
    print(json.dumps({"machine": cpu_model(), "threads": threads or rows[-1][0].get("threads"),
                      "benchmark_app_mode": "-hint latency" if threads is None else f"-hint none -nthreads {threads}", "bundle": str(a.bundle), "precision": m["precision"],
                      "benchmark_app_median_ms": ba_med, "edgeft_infer_p50_ms": our_med,
                      "ratio": round(our_med / ba_med, 4), "edgeft_inside_openvino_p50_ms": our_int,
                      "ratio_inside_openvino": round(our_int / ba_med, 4),
                      "python_call_overhead_ms": round(our_med - our_int, 4), "edgeft_runtime": rows[-1][1]["info"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
