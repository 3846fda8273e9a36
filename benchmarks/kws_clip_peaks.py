"""Which clips of a split push a keyword bundle's threshold up? Every clip said alone, through the bundle's own
detector (window posteriors, its smoothing), as `edgeft export`'s calibration scores them (`clip_peaks`).

    python benchmarks/kws_clip_peaks.py RUN/bundles/onnxruntime-fp32 [--split val|test] [--data SPEC]

Printed per bundle: for each kind of negative clip (real speakers, near-miss words, phrase cuts, other unknown
words, silence), the share whose highest keyword posterior is above 0.5 / 0.7 / 0.9 / 0.95 / 0.98, the worst
near-miss words, and for the keywords themselves (their own label's peak) the same shares and the median peak
per voice engine (es: espeak-ng, fl: flite, fv: festival, kl: real klettres recordings, hw: hedgewars actors).
RESULTS.md §15c.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from edgeft.bench.kws_scoring import clip_peaks
from edgeft.data.audio import SILENCE, UNKNOWN, is_near_miss, near_miss_word, read_wav
from edgeft.recipe import load_recipe
from edgeft.runtime.features import LogMel
from edgeft.runtime.kws import window_logits, window_posteriors
from edgeft.stages.parity import parity_runner
from edgeft.tasks.kws.device import kws_files
from edgeft.utils.env import cpu_model

CUTS = (0.5, 0.7, 0.9, 0.95, 0.98)


def kind(it) -> str:
    if it.label == SILENCE:
        return "silence"
    if it.label != UNKNOWN:
        return "keyword"
    if it.path.parent.name == "_real_unknown_":
        return "real speaker"
    if is_near_miss(it.path):
        return "near-miss word"
    return "phrase cut" if "__phrase" in it.path.name else "other unknown word"


def main(bundle: Path, split: str, data: str | None) -> None:
    man = json.loads((bundle / "manifest.json").read_text())
    rec = load_recipe(bundle.parent.parent / "recipe.yaml")
    labels, st = man["labels"], man["stream"]
    files, sp = kws_files(f"{data or rec.data.source}:{split}", labels, rec.val_percent, rec.test_percent)
    lm = LogMel.from_spec(man["preprocess"])
    frames = lm.frames(lm.clip_samples)
    hop = int(round(st["hop_ms"] * lm.sample_rate / 1000))
    smooth = max(1, int(round(st["smooth_ms"] / st["hop_ms"])))
    kw = [labels.index(k) for k in st["keywords"]]
    items = files.splits[sp]
    runner_cls, _ = parity_runner(man)
    with runner_cls(bundle, man) as r:
        infer = window_logits(r, man)
        post_of = lambda a: window_posteriors(infer, lm, frames, a, hop, smooth)  # noqa: E731
        by_kind = defaultdict(list)
        for k in sorted({kind(it) for it in items}):
            sel = [it for it in items if kind(it) == k]
            if k == "keyword":      # a keyword's peak on its own label
                for it in sel:
                    (p, _), = clip_peaks(post_of, [read_wav(it.path)], [labels.index(it.label)], hop)
                    by_kind[k].append((p, it.path.name, it.label))
            else:
                peaks = clip_peaks(post_of, [read_wav(it.path) for it in sel], kw, hop)
                by_kind[k] += [(p, it.path.name, labels[j]) for (p, j), it in zip(peaks, sel)]
    print(f"## {bundle} — {split} split, threshold {st['threshold']}, {cpu_model()}")
    print("| clips | n | " + " | ".join(f"> {c}" for c in CUTS) + " |")
    print("|---|---|" + "---|" * len(CUTS))
    for k, v in by_kind.items():
        s = np.array([p for p, _, _ in v])
        print(f"| {k} | {len(s)} | " + " | ".join(f"{np.mean(s > c):.3f}" for c in CUTS) + " |")
    worst = sorted(by_kind.get("near-miss word", []), reverse=True)[:8]
    print("worst near-miss words: " + ", ".join(f"{near_miss_word(n)} -> {w} {p:.3f}" for p, n, w in worst))
    eng = defaultdict(list)
    for p, n, _ in by_kind.get("keyword", []):
        eng[n.split("-")[0]].append(p)
    print("keyword peaks by voice engine (median): " + ", ".join(f"{e} {np.median(v):.2f} (n={len(v)})"
                                                                  for e, v in sorted(eng.items())))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--data", default=None, help="the run's recipe data source unless given")
    a = ap.parse_args()
    for b in a.bundles:
        main(b, a.split, a.data)
