"""Where a keyword detector's per-hop time goes: features, inference, smoothing (streaming vs full window).

    python benchmarks/kws_stream_cost.py BUNDLE [BUNDLE ...] [--seconds 30] [--repeats 3]
        [--before-checkout DIR --before-bundle OLD_BUNDLE] [--json OUT]

Feeds real speech (the test-only recordings of ``real_speech_files``, else noise) hop by hop through each bundle's
detector on 1 thread: per-hop compute p50/p99 (what ``edgeft bench --scenario audio_stream`` reports as hop
p50/p99) and the p50 of each part (a streaming graph with the front end inside reports features as part of
inference). Modes: ``streaming`` when the bundle has a streaming model, and ``window``.

Per-hop times of ~0.1 ms move by 2x within minutes on a shared VM, so all detectors run in one process on the same
audio, their repeats interleaved (repeat r runs them in a rotated order; each run is 30 s of hops as fast as
possible, the first 2 s discarded, or paced at real time with ``--realtime``, the CPU idle between hops as on a
device); the table gives the median over repeats of each run's p50 and p99, and the range of the p50s. (Interleaving
hop by hop instead puts every call on cold caches: all variants then cost ~0.3 ms.) ``--before-checkout`` adds
another version's runtime to the same process: its ``edgeft`` package is copied to a temporary folder as
``edgeft_before`` and opens ``--before-bundle`` (a bundle that version exported).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edgeft import runtime
from edgeft.data.audio import read_wav, real_speech_files
from edgeft.errors import DataError
from edgeft.runtime.kws import KwsDetector
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


def one_run(det, audio: np.ndarray, hop: int, realtime: bool, warm: int = 100) -> dict:
    """One detector over the audio, hop by hop: as fast as possible, or each hop when it would arrive."""
    s = det.create_stream()
    rows = []
    t0 = time.perf_counter()
    for j in range(len(audio) // hop):
        if realtime:
            while time.perf_counter() < t0 + (j + 1) * hop / 16000:
                time.sleep(0.0005)
        s.accept(audio[j * hop:(j + 1) * hop])
        o = s.step()
        if j >= warm:
            rows.append((o["compute_ms"], o["features_ms"], o["infer_ms"], o["post_ms"]))
    r = np.asarray(rows)
    p = lambda v, q: float(np.percentile(v, q, method="inverted_cdf"))  # noqa: E731  nearest rank
    return {"p50": p(r[:, 0], 50), "p99": p(r[:, 0], 99), "features_p50": p(r[:, 1], 50),
            "inference_p50": p(r[:, 2], 50), "smoothing_p50": p(r[:, 3], 50)}


def before_runtime(checkout: str):
    """Import another checkout's runtime next to this one: its package copied as ``edgeft_before``."""
    import re
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp(prefix="edgeft-before-"))
    shutil.copytree(Path(checkout) / "edgeft", tmp / "edgeft_before")
    for f in (tmp / "edgeft_before").rglob("*.py"):
        f.write_text(re.sub(r"\bedgeft(?=[. ])", "edgeft_before", f.read_text()))
    sys.path.insert(0, str(tmp))
    import edgeft_before.runtime as rt
    import edgeft_before.runtime.kws as kws

    return rt, kws.KwsDetector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--realtime", action="store_true", help="pace the hops at real time (20 ms apart)")
    ap.add_argument("--before-checkout")
    ap.add_argument("--before-bundle")
    ap.add_argument("--json", help="write the per-repeat figures here")
    a = ap.parse_args()
    audio = audio_for(a.seconds)
    print(f"machine: {cpu_model()}, 1 thread; {len(audio) / 16000:.0f} s of audio per run, {a.repeats} repeats, "
          f"runs interleaved; {'real-time pacing' if a.realtime else 'as fast as possible'}")
    opened = [(b, runtime.load(b, threads=1), KwsDetector) for b in a.bundles]
    if a.before_checkout:
        rt, det_cls = before_runtime(a.before_checkout)
        opened.append((f"before: {a.before_bundle}", rt.load(a.before_bundle, threads=1), det_cls))
    dets = {}
    for name, m, det_cls in opened:
        for mode in (["streaming"] if m.streaming else []) + ["window"]:
            dets[(name, mode)] = det_cls(m, mode)
    keys = list(dets)
    hop = {dets[k].hop for k in keys}
    assert len(hop) == 1, f"the bundles have different hops: {hop}"
    hop = hop.pop()
    runs: dict = {k: [] for k in keys}
    for r in range(a.repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            runs[k].append(one_run(dets[k], audio, hop, a.realtime))
    for _, m, _ in opened:
        m.close()
    print("| bundle | mode | hop p50 ms (median of repeats) [range] | hop p99 ms | RTF | "
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
