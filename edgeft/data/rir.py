"""Simulated room impulse responses for reverberation augmentation (pyroomacoustics), seeded and cached.

Rooms are shoeboxes of random size (3-10 m x 3-8 m x 2.4-4 m) with a uniform wall absorption from Sabine's
formula for a target RT60; source and microphone at random positions at least 0.5 m from the walls; the
hybrid simulator (image sources up to order 3, ray tracing for the tail, air absorption) gives the late
reverberation that image sources alone cut short. Each response is aligned so that its direct path is at
sample 0 (the speech does not move in the clip) and scaled to unit energy.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

RIR_VERSION = 1


def rir_bank(n: int = 160, rt60=(0.15, 0.9), seed: int = 0, sr: int = 16000, max_len_s: float = 1.0) -> list[np.ndarray]:
    from ..utils.io import atomic_write_with, cache_dir

    key = f"n{n}-rt{rt60[0]:g}-{rt60[1]:g}-s{seed}-sr{sr}-v{RIR_VERSION}"
    f = cache_dir("rir") / f"{key}.npz"
    if f.is_file():
        z = np.load(f)
        return [z[k] for k in sorted(z.files, key=lambda s: int(s[1:]))]
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise DataError("reverberation augmentation (augment_audio.reverb_prob > 0) needs pyroomacoustics",
                        hint="pip install pyroomacoustics (in edgeft[train]), or set augment_audio.reverb_prob: 0") \
            from None
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.4, 4)])
        t60 = float(rng.uniform(*rt60))
        try:
            e_abs, _ = pra.inverse_sabine(t60, dims)
        except ValueError:          # the room is too large for that RT60 with any absorption
            continue
        room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(e_abs), max_order=3, ray_tracing=True,
                           air_absorption=True)
        room.set_ray_tracing(receiver_radius=0.5, n_rays=1000, energy_thres=1e-5)
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        h = np.asarray(room.rir[0][0], np.float64)
        h = h[int(np.argmax(np.abs(h))):][: int(max_len_s * sr)]
        out.append((h / (np.sqrt(np.sum(h ** 2)) + 1e-12)).astype(np.float32))
    def write(p):
        with open(p, "wb") as fh:       # a file object: np.savez would append .npz to the temporary name
            np.savez(fh, **{f"r{i}": h for i, h in enumerate(out)})

    atomic_write_with(f, write)
    return out
