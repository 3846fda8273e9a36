"""Do keyword bundles fire on real human keywords? (the few that exist offline; none is ever trained on)

    python benchmarks/kws_real_voices.py BUNDLE [BUNDLE...]

The clips: the three real human "no" recordings offline (Debian klettres-data en and en_GB, asterisk-core-sounds-en-wav
vm-no), the six ALSA channel-test phrases whose last word is a keyword ("Front Left", "Side Right", ...; one
speaker, Debian alsa-utils) and the keyword lines ("Nooo", "Yessir", "Enemydown") of the hedgewars-data voice
actor whom the speaker hash puts in the test split (the other actors' lines are training data since set v6). Each clip, with 0.5 s of silence before and after, runs through the bundle's own
streaming detector (window mode, the bundle's calibrated threshold, smoothing and refractory period). Printed per
bundle: how many clips produce a detection of their keyword, and the highest smoothed posterior of that keyword
per clip. Twelve clips from six speakers: a smoke check of real voices, not an accuracy figure.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np

from edgeft import runtime
from edgeft.data.audio import KEYWORDS, decode_with_sox, real_keyword_clips
from edgeft.errors import EdgeftError
from edgeft.runtime.kws import KwsDetector, replay
from edgeft.utils.env import cpu_model


def clips() -> list[tuple[str, str, Path]]:
    return real_keyword_clips(KEYWORDS)


def main(bundles: list[str]) -> None:
    with contextlib.ExitStack() as stack:
        models = [(b, stack.enter_context(runtime.load(b, threads=1))) for b in bundles]   # all open first
        cs = clips()
        if not cs:
            print("error: no real keyword recording is installed (none of klettres-data's, "
                  "asterisk-core-sounds-en-wav's, alsa-utils' or hedgewars-data's): apt-get install those packages "
                  "and run it again", file=sys.stderr)
            sys.exit(2)
        print(f"machine: {cpu_model()}, 1 thread; {len(cs)} clips: " + ", ".join(c[0] for c in cs))
        for b, m in models:
            det = KwsDetector(m, "window")
            hits, cells = 0, []
            for name, want, path in cs:
                x = decode_with_sox(path)
                x = np.concatenate([np.zeros(8000, np.float32), x, np.zeros(8000, np.float32)])
                r = replay(det, x)
                p = float(r["scores"][:, m.labels.index(want)].max())   # confirmed, if the bundle confirms
                ok = any(d["label"] == want for d in r["detections"])
                hits += ok
                cells.append(f"{name} {p:.2f}{' (detected)' if ok else ''}")
            print(f"{b}: threshold {det.threshold:.3f}; detected {hits}/{len(cs)}; max P(keyword): " + "; ".join(cells))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", metavar="BUNDLE", help="keyword-spotting bundles written by edgeft export")
    args = ap.parse_args()
    try:
        main(args.bundles)
    except EdgeftError as e:          # a missing or broken bundle: one line, exit 2
        ap.error(str(e).splitlines()[0])
