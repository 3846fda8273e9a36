"""Keyword-spotting models over log-mel or MFCC input (N, 1, n_mels or n_mfcc, frames).

- ``dscnn_s/m/l``: DS-CNN from "Hello Edge" / the MLPerf Tiny KWS reference (S: 64 ch x 4 DS blocks, M: 172 x 4,
  L: 276 x 5): a 2-D conv stem (stride 2) then depthwise-separable blocks, average pool, linear.
- ``ds_tcn`` (64 ch x 4 blocks) and ``ds_tcn_m`` (160 ch x 6 blocks): a depthwise-separable *temporal* conv
  net with causal, dilated, unpadded ("valid") 1-D convs and an average over the last frames. Because every
  layer only looks back in time, it has an exact streaming form (Rybakov et al. 2020, external state): each hop
  feeds only the new frames plus per-layer state, and the result equals re-running the whole window
  (``DSTCNStream``).
"""
from __future__ import annotations

from . import ModelSpec, register


def _dscnn(num_classes: int, width: int, blocks: int, dropout: float | None = None, n_mels: int = 40):
    import torch.nn as nn

    class DSCNN(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.Conv2d(1, width, (4, 10), stride=2, padding=(1, 4), bias=False), nn.BatchNorm2d(width),
                      nn.ReLU(inplace=True)]
            for _ in range(blocks):
                layers += [nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True), nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.drop = nn.Dropout(0.2 if dropout is None else dropout)
            self.classifier = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.classifier(self.drop(self.pool(self.features(x)).flatten(1)))

    return DSCNN()


TCN_KERNEL = 5
TCN_DILATIONS = (1, 2, 4, 8)


def _ds_tcn(num_classes: int, width: int = 64, dropout: float | None = None, n_mels: int = 40,
            kernel: int = TCN_KERNEL, dilations=TCN_DILATIONS):
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, c, k, d):
            super().__init__()
            self.k, self.d = k, d
            self.dw = nn.Conv1d(c, c, k, dilation=d, groups=c, bias=False)
            self.bn1 = nn.BatchNorm1d(c)
            self.pw = nn.Conv1d(c, c, 1, bias=False)
            self.bn2 = nn.BatchNorm1d(c)
            self.act = nn.ReLU(inplace=True)

        @property
        def context(self) -> int:
            return (self.k - 1) * self.d

        def forward(self, x):  # valid conv: output is `context` frames shorter, aligned to the newest frames
            y = self.act(self.bn1(self.dw(x)))
            y = self.bn2(self.pw(y))
            # crop time on a 4-D view: Torch-Pruning reads a slice of a 3-D tensor's last dim as a channel
            # slice (it assumes (N, L, C) layouts), which corrupts pruning of (N, C, T) conv nets
            return self.act(y + x.unsqueeze(2)[..., self.context:].squeeze(2))

    class DSTCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv1d(n_mels, width, 3, bias=False)
            self.stem_bn = nn.BatchNorm1d(width)
            self.act = nn.ReLU(inplace=True)
            self.blocks = nn.ModuleList(Block(width, kernel, d) for d in dilations)
            self.drop = nn.Dropout(0.1 if dropout is None else dropout)
            self.classifier = nn.Linear(width, num_classes)

        @property
        def receptive_field(self) -> int:
            return 3 + sum(b.context for b in self.blocks)

        def embed(self, feats):  # (N, n_mels, T) -> (N, C, T - receptive_field + 1)
            x = self.act(self.stem_bn(self.stem(feats)))
            for b in self.blocks:
                x = b(x)
            return x

        def forward(self, x):
            e = self.embed(x.flatten(1, 2) if x.dim() == 4 else x)
            return self.classifier(self.drop(e.mean(-1)))

    return DSTCN()


def streaming_wrapper(model, frames: int, new_frames: int):
    """The exact streaming form of a DS-TCN: new frames + state in, logits + new state out."""
    import torch
    import torch.nn as nn

    class DSTCNStream(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m.eval()
            self.pool_len = frames - m.receptive_field + 1
            self.new = new_frames

        def state_shapes(self) -> list[tuple[int, ...]]:
            c = self.m.classifier.in_features
            n_mels = self.m.stem.in_channels
            return [(1, n_mels, 2)] + [(1, c, b.context) for b in self.m.blocks] + [(1, c, self.pool_len)]

        def forward(self, feats, *states):
            x = torch.cat([states[0], feats], -1)          # (1, n_mels, 2 + F)
            out_states = [x[..., -2:]]
            x = self.m.act(self.m.stem_bn(self.m.stem(x)))  # (1, C, F)
            for b, s in zip(self.m.blocks, states[1:-1]):
                xx = torch.cat([s, x], -1)                   # (1, C, context + F)
                out_states.append(xx[..., -b.context:])
                y = b.act(b.bn1(b.dw(xx)))
                y = b.bn2(b.pw(y))
                x = b.act(y + x)                             # = xx[..., context:], without a Slice node
            ring = torch.cat([states[-1], x], -1)[..., -self.pool_len:]
            out_states.append(ring)
            return (self.m.classifier(ring.mean(-1)), *out_states)

    return DSTCNStream(model)


def audio_streaming_wrapper(stream, lm, hop_samples: int, smooth: int, n_labels: int):
    """One call per hop, everything inside the graph: ``hop_samples`` new audio samples in; the log-mel (or MFCC)
    frames they complete (``lm``'s maths: Hann-windowed DFT as a MatMul over the bins the mel filters use, power,
    mel, log, DCT), the streaming model ``stream`` (see :func:`streaming_wrapper`), its softmax and the trailing
    average of the last ``smooth`` posteriors out. The state: the last ``n_fft - hop`` samples, the model's
    states and the posterior ring. Equal to the numpy front end + the full-window model + the detector's
    smoothing, hop by hop (tested); a stream's first frames see ``n_fft - hop`` zeros before it (silence)."""
    import numpy as np
    import torch
    import torch.nn as nn

    from ..runtime.features import LOG_EPS

    w, fb, dct = lm._consts()
    fph = hop_samples // lm.hop
    pad = lm.n_fft - lm.hop
    used = np.flatnonzero(fb.any(1))                       # DFT bins with a mel weight (20 Hz..f_max)
    k = np.arange(used.min(), used.max() + 1)[None, :]
    n = np.arange(lm.n_fft)[:, None]
    ang = 2 * np.pi * n * k / lm.n_fft
    dft = np.concatenate([np.cos(ang) * w[:, None], -np.sin(ang) * w[:, None]], 1).astype(np.float32)

    class AudioStream(nn.Module):
        def __init__(self):
            super().__init__()
            self.stream = stream
            # frames x (n_fft, bins) products: a wide right-hand side, as GEMM kernels want (the transposed form,
            # (bins, n_fft) x (n_fft, 2 frames), measured 2x slower in OpenVINO); power and mel in one product:
            # re^2 fb + im^2 fb = [re, im]^2 [fb; fb]
            self.register_buffer("dft", torch.from_numpy(dft))                                    # (n_fft, 2 bins)
            self.register_buffer("fb2", torch.from_numpy(np.ascontiguousarray(np.concatenate([fb[k[0]]] * 2))))
            idx = np.arange(lm.n_fft)[None, :] + lm.hop * np.arange(fph)[:, None]     # the hop's frames, (fph, n_fft)
            self.register_buffer("idx", torch.from_numpy(idx))
            self.register_buffer("dct", None if dct is None else torch.from_numpy(dct))

        def io_spec(self) -> dict:
            st = [("audio_state", (1, pad))] + [(f"state{i}", s) for i, s in enumerate(stream.state_shapes())] + \
                 [("post_state", (smooth, n_labels))]
            return {"inputs": [("audio", (1, hop_samples))], "outputs": ["logits", "smoothed"], "states": st}

        def forward(self, audio, audio_state, *states):
            a = torch.cat([audio_state, audio], -1)                  # (1, pad + hop): exactly fph frames
            spec = a[:, self.idx] @ self.dft                         # (1, fph, 2 * bins): re, then im
            feats = torch.log((spec * spec) @ self.fb2 + LOG_EPS)    # (1, fph, n_mels)
            if self.dct is not None:
                feats = feats @ self.dct
            out = self.stream(feats.transpose(1, 2), *states[:-1])
            logits = out[0]
            ring = torch.cat([states[-1], torch.softmax(logits, -1)], 0)[1:]
            return (logits, ring.mean(0, keepdim=True), a[:, hop_samples:], *out[1:], ring)

    return AudioStream()


def _reg(name, build, desc, head="classifier"):
    register(ModelSpec(name=name, task="kws", build=build, head=head, family="kws", description=desc))


_reg("dscnn_s", lambda nc, dropout=None, n_mels=40: _dscnn(nc, 64, 4, dropout, n_mels),
     "DS-CNN-S (MLPerf Tiny KWS reference), ~23k params")
_reg("dscnn_m", lambda nc, dropout=None, n_mels=40: _dscnn(nc, 172, 4, dropout, n_mels), "DS-CNN-M, ~140k params")
_reg("dscnn_l", lambda nc, dropout=None, n_mels=40: _dscnn(nc, 276, 5, dropout, n_mels), "DS-CNN-L, ~420k params")
_reg("ds_tcn", lambda nc, dropout=None, n_mels=40: _ds_tcn(nc, 64, dropout, n_mels),
     "depthwise-separable temporal conv net (causal, dilated): has an exact streaming form, ~15k params")
_reg("ds_tcn_m", lambda nc, dropout=None, n_mels=40: _ds_tcn(nc, 160, dropout, n_mels, dilations=(1, 2, 4, 8, 1, 2)),
     "wider, deeper DS-TCN (160 channels, 6 blocks, 750 ms receptive field): streaming form, ~180k params")
_reg("test_kws", lambda nc, dropout=None, n_mels=40: _dscnn(nc, 8, 1, dropout, n_mels), "tiny DS-CNN for tests")
_reg("test_tcn", lambda nc, dropout=None, n_mels=40: _ds_tcn(nc, 8, dropout, n_mels, dilations=(1, 2)),
     "tiny streaming DS-TCN for tests")
