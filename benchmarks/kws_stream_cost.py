"""Where a keyword detector's per-hop time goes: features, inference, smoothing (streaming vs full window).

    python benchmarks/kws_stream_cost.py BUNDLE [--seconds 30]

Feeds real speech (the test-only recordings of ``real_speech_files``, else noise) hop by hop through the bundle's
detector on 1 thread, after a 2 s warm-up: per-hop compute p50/p99 (what ``edgeft bench --scenario audio_stream``
reports as hop p50/p99) and the p50 of each part. Modes: ``streaming`` when the bundle has a streaming model, and
``window``. To compare runtimes, run it under another checkout: ``PYTHONPATH=/path/to/old/checkout python ...``.
"""
from __future__ import annotations

import argparse

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    audio = audio_for(a.seconds)
    print(f"machine: {cpu_model()}, 1 thread; {len(audio) / 16000:.0f} s of audio")
    with runtime.load(a.bundle, threads=1) as m:
        for mode in (["streaming"] if m.streaming else []) + ["window"]:
            det = KwsDetector(m, mode)
            replay(det, audio[:32000])                                   # warm-up, discarded
            s = det.create_stream()
            comp, feat, inf, post = [], [], [], []
            for j in range(len(audio) // det.hop):
                s.accept(audio[j * det.hop:(j + 1) * det.hop])
                o = s.step()
                comp.append(o["compute_ms"])
                feat.append(o["features_ms"])
                inf.append(o["infer_ms"])
                post.append(o["post_ms"])
            p = lambda v, q: float(np.percentile(v, q, method="inverted_cdf"))  # noqa: E731  nearest rank
            print(f"{mode:9s} per {det.hop_ms:g} ms hop: p50 {p(comp, 50):.4f} ms, p99 {p(comp, 99):.4f} ms "
                  f"(RTF {p(comp, 50) / det.hop_ms:.4f}); p50 of features {p(feat, 50):.4f}, inference "
                  f"{p(inf, 50):.4f}, smoothing {p(post, 50):.4f} ms")


if __name__ == "__main__":
    main()
