"""Keyword spotting on the device (torch-free): clip classification and a streaming detector.

The detector follows sherpa-onnx's shape: the model is shared, state lives in a stream::

    model = runtime.load("runs/kws/bundles/onnxruntime-fp32")
    det = KwsDetector(model, mode="streaming")     # or "window": re-run the whole 1 s window every hop
    s = det.create_stream()
    s.accept(samples)                               # any number of samples
    while s.ready():
        out = s.step()                              # one hop: new feature frames, inference, smoothing
        if out["detection"]: print(out["detection"])

Each hop computes only the new feature frames (a ring buffer of audio inside ``StreamingLogMel``). In
``window`` mode a ring of the last ``frames`` feature columns is classified every hop; in ``streaming``
mode the bundle's stateful model sees only the new frames (exactly equal outputs, far less compute).
"""
from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import numpy as np

from ..errors import BundleError, UnsupportedError
from . import Model, softmax
from .features import LOG_EPS, LogMel, StreamingLogMel


class KwsModel(Model):
    """A loaded keyword-spotting bundle: clip classification plus what the detector needs."""

    def __init__(self, path: Path, manifest: dict, threads=None, device=None, batch=None):
        super().__init__(path, manifest, threads=threads, device=device, batch=batch)
        self.lm = LogMel.from_spec(manifest["preprocess"])
        self.frames = int(manifest["preprocess"]["frames"])
        self.stream_cfg = dict(manifest.get("stream") or {})
        self.streaming = manifest.get("streaming_model")
        self.stream_runner = None

    def open_streaming(self):
        if self.streaming is None:
            raise UnsupportedError(f"bundle {self.path} has no streaming model ({self.manifest['source']['model']} "
                                   f"is not streamable)", hint="use mode='window', or a ds_tcn model")
        if self.stream_runner is None:
            from ..bundle import streaming_view

            m = streaming_view(self.manifest)
            self.stream_runner = self.backend.Runner(self.path, m, threads=self.threads, device=self.device)
            self.stream_runner.__enter__()
        return self.stream_runner

    def close(self) -> None:
        super().close()
        if self.stream_runner is not None:
            self.stream_runner.__exit__(None, None, None)
            self.stream_runner = None


def check_threshold(t: float | None) -> None:
    """A detection threshold is a smoothed posterior: 0 < t < 1 (None = the bundle's default)."""
    if t is not None and not 0 < t < 1:
        raise UnsupportedError(f"--threshold {t:g}: a smoothed posterior, valid is 0 < t < 1")


class KwsDetector:
    """Posterior smoothing + threshold + refractory period over a hop-by-hop stream."""

    def __init__(self, model: KwsModel, mode: str = "window", hop_ms: float | None = None,
                 smooth_ms: float | None = None, threshold: float | None = None, refractory_s: float | None = None):
        if mode not in ("window", "streaming"):
            raise UnsupportedError(f"mode {mode!r}: valid are window, streaming")
        check_threshold(threshold)
        sc = model.stream_cfg
        self.model, self.mode = model, mode
        self.hop_ms = float(hop_ms or sc.get("hop_ms", 20.0))
        self.hop = int(round(self.hop_ms * model.lm.sample_rate / 1000))
        if self.hop % model.lm.hop:
            raise UnsupportedError(f"hop {self.hop_ms} ms is not a multiple of the feature hop "
                                   f"({1000 * model.lm.hop / model.lm.sample_rate:g} ms)")
        self.frames_per_hop = self.hop // model.lm.hop
        self.smooth = max(1, int(round(float(smooth_ms if smooth_ms is not None else sc.get("smooth_ms", 100)) / self.hop_ms)))
        self.threshold = float(threshold if threshold is not None else sc.get("threshold", 0.7))
        self.refractory_s = float(refractory_s if refractory_s is not None else sc.get("refractory_s", 1.0))
        keywords = sc.get("keywords") or [l for l in model.labels if not l.startswith("_")]
        self.kw_idx = [model.labels.index(k) for k in keywords if k in model.labels]
        model.open()
        if mode == "streaming":
            r = model.open_streaming()
            sm = model.streaming
            if int(sm["new_frames"]) != self.frames_per_hop:
                raise UnsupportedError(f"the streaming model consumes {sm['new_frames']} frames per call but the hop "
                                       f"gives {self.frames_per_hop}", hint=f"use hop_ms = {sm['new_frames'] * 10}")
            self.stream_runner = r

    def algorithmic_latency_ms(self) -> dict:
        """Delay from model/front end alone: hop quantisation (<= 1 hop) + trailing-average smoothing
        ((S-1)/2 hops on average) + model right context (0: causal windows)."""
        smooth = (self.smooth - 1) / 2 * self.hop_ms
        return {"hop_quantisation_max_ms": self.hop_ms, "smoothing_ms": smooth, "model_right_context_ms": 0.0,
                "total_max_ms": self.hop_ms + smooth}

    def create_stream(self) -> "KwsStream":
        return KwsStream(self)


class KwsStream:
    def __init__(self, det: KwsDetector):
        self.det = det
        m = det.model
        self.feat = StreamingLogMel(m.lm)
        self.pending = np.zeros(0, np.float32)
        self.frames = np.repeat(m.lm.silence_column(), m.frames, 1)   # silence
        self.fbuf = np.zeros((m.lm.n_feat, 0), np.float32)
        self.post = deque()
        self.post_sum = np.zeros(len(m.labels), np.float64)     # running sum of the last `smooth` posteriors
        self.kw_arr = np.asarray(det.kw_idx)
        self.samples_seen = 0
        self.hops = 0
        self.last_det_t = -1e9
        self.detections: list[dict] = []
        if det.mode == "streaming":
            self.states = [np.zeros(s["shape"], np.float32) for s in m.streaming["states"]]
            self.state_names = [s["name"] for s in m.streaming["states"]]
            self.out_names = None
            silence = np.repeat(m.lm.silence_column(), det.frames_per_hop, 1)[None]
            for _ in range(m.frames // det.frames_per_hop + 1):   # warm state on silence = window mode's start
                self._stream_infer(silence)

    def accept(self, samples: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, np.asarray(samples, np.float32)])

    def ready(self) -> bool:
        return len(self.pending) >= self.det.hop

    def _stream_infer(self, new: np.ndarray) -> np.ndarray:
        feeds = {"feats": new, **{n: s for n, s in zip(self.state_names, self.states)}}
        outs = self.det.stream_runner.infer(feeds)
        self.states = [np.asarray(outs[n + "_out"]) for n in self.state_names]
        return np.asarray(outs["logits"])

    def step(self) -> dict:
        """Consume one hop of audio; returns timings (ms), the smoothed posteriors and any detection."""
        d = self.det
        t0 = time.perf_counter_ns()
        chunk, self.pending = self.pending[:d.hop], self.pending[d.hop:]
        self.samples_seen += len(chunk)
        new = self.feat.accept(chunk)
        t1 = time.perf_counter_ns()
        logits = None
        # both modes consume feature frames in groups of frames_per_hop, so they see exactly the same frames
        self.fbuf = np.concatenate([self.fbuf, new], 1)
        groups = self.fbuf.shape[1] // d.frames_per_hop
        if groups:
            take = groups * d.frames_per_hop
            g, self.fbuf = self.fbuf[:, :take], self.fbuf[:, take:]
            if d.mode == "window":
                self.frames = np.concatenate([self.frames[:, take:], g], 1)
                logits = d.model.runner.infer(self.frames[None, None])["logits"][0]
            else:
                for k in range(groups):
                    logits = self._stream_infer(g[None, :, k * d.frames_per_hop:(k + 1) * d.frames_per_hop])[0]
        t2 = time.perf_counter_ns()
        det = None
        t_s = self.samples_seen / d.model.lm.sample_rate
        if logits is not None:
            p = softmax(logits)
            self.post.append(p)
            self.post_sum += p
            if len(self.post) > d.smooth:
                self.post_sum -= self.post.popleft()
        smoothed = (self.post_sum / len(self.post)).astype(np.float32) if self.post else \
            np.zeros(len(d.model.labels), np.float32)
        if self.post:
            kw = int(self.kw_arr[np.argmax(smoothed[self.kw_arr])])
            if smoothed[kw] >= d.threshold and t_s - self.last_det_t >= d.refractory_s:
                det = {"label": d.model.labels[kw], "t_s": round(t_s, 4), "score": float(smoothed[kw])}
                self.last_det_t = t_s
                self.detections.append(det)
        t3 = time.perf_counter_ns()
        self.hops += 1
        return {"t_s": t_s, "features_ms": (t1 - t0) / 1e6, "infer_ms": (t2 - t1) / 1e6, "post_ms": (t3 - t2) / 1e6,
                "compute_ms": (t3 - t0) / 1e6, "posteriors": smoothed, "detection": det}


def replay(det: KwsDetector, audio: np.ndarray, realtime: bool = False, on_step=None,
           max_seconds: float | None = None) -> dict:
    """Feed audio hop by hop (as fast as possible, or on a real-time schedule: hop j is available at
    t0 + (j+1) * hop). Returns per-hop timings, posteriors and detections."""
    s = det.create_stream()
    hop = det.hop
    sr = det.model.lm.sample_rate
    n = len(audio) if max_seconds is None else min(len(audio), int(max_seconds * sr))
    hops = n // hop
    comp, lat, post = np.empty(hops), np.empty(hops), np.empty((hops, len(det.model.labels)), np.float32)
    infer = np.empty(hops)
    cpu0, t0 = time.process_time(), time.perf_counter()
    backlog = 0.0
    for j in range(hops):
        if realtime:
            avail = t0 + (j + 1) * hop / sr
            now = time.perf_counter()
            if now < avail:
                time.sleep(max(avail - now - 0.0005, 0))
                while time.perf_counter() < avail:
                    pass
        s.accept(audio[j * hop:(j + 1) * hop])
        out = s.step()
        comp[j] = out["compute_ms"]
        infer[j] = out["infer_ms"]
        post[j] = out["posteriors"]
        if realtime:
            done = time.perf_counter()
            lat[j] = (done - (t0 + (j + 1) * hop / sr)) * 1e3
            backlog = max(backlog, lat[j])
        if on_step:
            on_step(out)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return {"hops": hops, "audio_s": hops * hop / sr, "compute_ms": comp, "infer_ms": infer,
            "latency_ms": lat if realtime else None, "posteriors": post, "detections": list(s.detections),
            "wall_s": wall, "cpu_s": cpu, "max_backlog_ms": backlog if realtime else None}


def check_streaming_manifest(m: dict) -> None:
    sm = m.get("streaming_model")
    if sm and sm.get("file") not in (m.get("model_files") or {}).values():
        raise BundleError("manifest: streaming_model.file is not one of the bundle's model files")


def window_posteriors(infer, lm: LogMel, frames: int, audio: np.ndarray, hop: int, smooth: int,
                      batch: int = 128) -> np.ndarray:
    """The smoothed posteriors ``replay`` gives in window mode, per hop, computed in batches: the same feature
    frames, the same windows (silence before the stream starts), the same trailing average; ``infer`` maps a
    (B, 1, n_feat, frames) batch to (B, classes) logits. For calibration and mining, where the per-hop schedule
    does not matter but the scores must be the detector's."""
    fph = hop // lm.hop
    hops = len(audio) // hop
    x = np.asarray(audio[:hops * hop], np.float32)
    padded = np.concatenate([np.repeat(lm.silence_column(), frames, 1), lm.frames_from(x)], 1)
    n_samp = (np.arange(hops) + 1) * hop
    produced = np.where(n_samp >= lm.n_fft, 1 + (n_samp - lm.n_fft) // lm.hop, 0)
    groups = produced // fph * fph
    new = np.flatnonzero(np.diff(np.concatenate([[0], groups])) > 0)
    starts = groups[new]
    probs = []
    win = np.lib.stride_tricks.sliding_window_view(padded, frames, axis=1)      # (n_feat, T, frames), a view
    for s in range(0, len(new), batch):
        xb = np.ascontiguousarray(win[:, starts[s:s + batch]].transpose(1, 0, 2))[:, None]
        probs.append(softmax(np.asarray(infer(xb), np.float32)))
    probs = np.concatenate(probs) if probs else np.zeros((0, 1), np.float32)
    ncls = probs.shape[1] if len(probs) else 1
    cs = np.concatenate([np.zeros((1, ncls)), np.cumsum(probs.astype(np.float64), 0)])
    out = np.zeros((hops, ncls), np.float32)
    k = np.searchsorted(new, np.arange(hops), side="right")      # logits computed up to and including hop j
    have = k > 0
    lo = np.maximum(k - smooth, 0)
    out[have] = ((cs[k[have]] - cs[lo[have]]) / (k[have] - lo[have])[:, None]).astype(np.float32)
    return out
