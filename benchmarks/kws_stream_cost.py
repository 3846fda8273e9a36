"""Where a keyword detector's per-hop time goes: features, inference, smoothing (streaming vs full window).

    python benchmarks/kws_stream_cost.py BUNDLE [BUNDLE ...] [--seconds 30] [--repeats 5] [--json OUT]

Feeds real speech (the test-only recordings of ``real_speech_files``, else noise) hop by hop through each bundle's
detector on 1 thread, after a 2 s warm-up: per-hop compute p50/p99 (what ``edgeft bench --scenario audio_stream``
reports as hop p50/p99) and the p50 of each part (a streaming graph with the front end inside reports features
as part of inference). Modes: ``streaming`` when the bundle has a streaming model, and ``window``.

Per-hop times of ~0.1 ms move by +-30% from run to run on a shared VM, so each (bundle, mode) runs ``--repeats``
times, the runs of all bundles and modes interleaved (round r runs them in a rotated order); the table gives the
median over the runs of each run's p50 and p99, and the range of the p50s. To compare runtimes, run it under
another checkout (``PYTHONPATH=/path/to/old/checkout python ...``), alternating the two processes.
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from edgeft import runtime
from edgeft.data.audio import read_wav, real_speech_files
from edgeft.errors import DataError
from edgeft.runtime.kws import KwsDetector, replay
from edgeft.utils.env import cpu_model


def audio_for(seconds: float) -> np.ndarray:
    parts, n = [], 0
    for f in real_speech_files():
        try:
            x = read_wav(f)
        except DataError:
            continue
        parts.append(x)
        n += len(x)
        if n >= seconds * 16000:
            break
    if not parts:
        return (np.random.default_rng(0).standard_normal(int(seconds * 16000)) * 0.05).astype(np.float32)
    return np.concatenate(parts)[: int(seconds * 16000)]


def one_run(det: KwsDetector, audio: np.ndarray) -> dict:
    replay(det, audio[:32000])                                   # warm-up, discarded
    s = det.create_stream()
    rows = []
    for j in range(len(audio) // det.hop):
        s.accept(audio[j * det.hop:(j + 1) * det.hop])
        o = s.step()
        rows.append((o["compute_ms"], o["features_ms"], o["infer_ms"], o["post_ms"]))
    a = np.asarray(rows)
    p = lambda v, q: float(np.percentile(v, q, method="inverted_cdf"))  # noqa: E731  nearest rank
    return {"p50": p(a[:, 0], 50), "p99": p(a[:, 0], 99), "features_p50": p(a[:, 1], 50),
            "inference_p50": p(a[:, 2], 50), "smoothing_p50": p(a[:, 3], 50)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="write the per-run figures here")
    a = ap.parse_args()
    audio = audio_for(a.seconds)
    print(f"machine: {cpu_model()}, 1 thread; {len(audio) / 16000:.0f} s of audio per run, {a.repeats} runs each")
    models = [runtime.load(b, threads=1) for b in a.bundles]
    dets = {}
    for b, m in zip(a.bundles, models):
        for mode in (["streaming"] if m.streaming else []) + ["window"]:
            dets[(b, mode)] = KwsDetector(m, mode)
    runs: dict = {k: [] for k in dets}
    keys = list(dets)
    for r in range(a.repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            runs[k].append(one_run(dets[k], audio))
    for m in models:
        m.close()
    print("| bundle | mode | hop p50 ms (median of runs) [range] | hop p99 ms | RTF | "
          "features / inference / smoothing p50 ms |")
    print("|---|---|---|---|---|---|")
    for (b, mode), rs in runs.items():
        med = {f: float(np.median([x[f] for x in rs])) for f in rs[0]}
        lo, hi = min(x["p50"] for x in rs), max(x["p50"] for x in rs)
        hop_ms = dets[(b, mode)].hop_ms
        print(f"| {b} | {mode} | {med['p50']:.4f} [{lo:.4f}, {hi:.4f}] | {med['p99']:.4f} | "
              f"{med['p50'] / hop_ms:.4f} | "
              f"{med['features_p50']:.4f} / {med['inference_p50']:.4f} / {med['smoothing_p50']:.4f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": cpu_model(), "runs": {f"{b}|{mode}": rs for (b, mode), rs in runs.items()}}, f,
                      indent=1)


if __name__ == "__main__":
    main()
