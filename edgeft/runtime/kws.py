"""Keyword spotting on the device (torch-free): clip classification and a streaming detector.

The detector follows sherpa-onnx's shape: the model is shared, state lives in a stream::

    model = runtime.load("runs/kws/bundles/onnxruntime-fp32")
    det = KwsDetector(model, mode="streaming")     # or "window": re-run the whole 1 s window every hop
    s = det.create_stream()
    s.accept(samples)                               # any number of samples
    while s.ready():
        out = s.step()                              # one hop: new feature frames, inference, smoothing
        if out["detection"]: print(out["detection"])

In ``window`` mode each hop computes only the new feature frames (``StreamingLogMel``) and the last ``frames``
feature columns are classified. In ``streaming`` mode one call of the bundle's streaming graph does the whole hop:
the hop's audio in; the new frames, the model's streaming form and the smoothing inside; the state kept in the
runtime, one per stream (``Runner.state_session``). Both modes give the same posteriors (tested): a stream starts
after silence (``n_fft - hop`` zero samples, silence frames, a smoothing ring of the posterior of silence).
Bundles exported before the front end moved into the graph (a ``feats`` input) still stream, with numpy features.

The decision: the most probable keyword of the smoothed posteriors fires when it reaches the threshold, then not
again for ``refractory_s``. With ``confirm_ms`` > 0 (``stream.confirm_ms`` in the bundle) a keyword that reached
the threshold must still be at it ``confirm_ms`` later, and fires then: a word that only begins like a keyword
(Italian *nove*, *numero* for "no") falls back before the confirmation, a keyword said alone stays up.
``confirm_scores`` is that rule over a whole posterior array, for scoring, calibration and sweeps.
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
                 smooth_ms: float | None = None, threshold: float | None = None, refractory_s: float | None = None,
                 confirm_ms: float | None = None):
        if mode not in ("window", "streaming"):
            raise UnsupportedError(f"mode {mode!r}: valid are window, streaming")
        check_threshold(threshold)
        check_confirm(confirm_ms)
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
        # confirmation: the keyword must still be at the threshold this many hops after it reached it (0: off;
        # bundles before it have no stream.confirm_ms)
        confirm_ms = float(confirm_ms if confirm_ms is not None else sc.get("confirm_ms", 0.0))
        check_confirm(confirm_ms)                       # a hand-edited manifest too
        self.confirm = int(round(confirm_ms / self.hop_ms))
        keywords = sc.get("keywords") or [l for l in model.labels if not l.startswith("_")]
        self.kw_idx = [model.labels.index(k) for k in keywords if k in model.labels]
        model.open()
        # the smoothing ring starts full of the posterior of silence: the stream starts after silence, as the
        # window's frames and the streaming state do (the same in every mode and in window_posteriors)
        sil = np.repeat(model.lm.silence_column(), model.frames, 1)[None, None]
        self.p_silence = softmax(np.asarray(model.runner.infer(sil)["logits"], np.float32))[0]
        self.audio_graph = False
        if mode == "streaming":
            r = model.open_streaming()
            sm = model.streaming
            if int(sm["new_frames"]) != self.frames_per_hop:
                raise UnsupportedError(f"the streaming model consumes {sm['new_frames']} frames per call but the hop "
                                       f"gives {self.frames_per_hop}", hint=f"use hop_ms = {sm['new_frames'] * 10}")
            self.stream_runner = r
            # a hop's audio in, smoothed posteriors out (bundles since the front end moved into the graph)
            self.audio_graph = sm.get("input") == "audio"
            self.graph_smooths = self.audio_graph and int(sm["smooth_hops"]) == self.smooth

    def algorithmic_latency_ms(self) -> dict:
        """Delay from model/front end alone: hop quantisation (<= 1 hop) + trailing-average smoothing
        ((S-1)/2 hops on average) + model right context (0: causal windows) + the confirmation delay."""
        smooth = (self.smooth - 1) / 2 * self.hop_ms
        confirm = self.confirm * self.hop_ms
        return {"hop_quantisation_max_ms": self.hop_ms, "smoothing_ms": smooth, "model_right_context_ms": 0.0,
                "confirm_ms": confirm, "total_max_ms": self.hop_ms + smooth + confirm}

    def decision_scores(self, posteriors: np.ndarray) -> np.ndarray:
        """What this detector thresholds, per hop, from its smoothed posteriors (``replay(...)["posteriors"]``):
        the posteriors, or ``confirm_scores`` with its confirmation."""
        return confirm_scores(posteriors, self.kw_idx, self.confirm)

    def create_stream(self) -> "KwsStream":
        return KwsStream(self)


class KwsStream:
    def __init__(self, det: KwsDetector):
        self.det = det
        m = det.model
        # n_fft - hop zeros before the stream: each hop's samples complete exactly frames_per_hop frames, the
        # newest ending at the newest sample
        self.feat = StreamingLogMel(m.lm, pad=m.lm.n_fft - m.lm.hop)
        self.pending = np.zeros(0, np.float32)
        self.frames = np.repeat(m.lm.silence_column(), m.frames, 1)   # silence
        self.fbuf = np.zeros((m.lm.n_feat, 0), np.float32)
        self.post = deque([det.p_silence] * det.smooth)
        self.post_sum = det.p_silence.astype(np.float64) * det.smooth   # running sum of the last `smooth` posteriors
        self.kw_arr = np.asarray(det.kw_idx)
        self.samples_seen = 0
        self.hops = 0
        self.last_det_t = -1e9
        self.detections: list[dict] = []
        self.pending_kw = deque([None] * det.confirm)      # keyword posteriors of the last `confirm` hops
        if det.mode == "streaming":
            self.session = det.stream_runner.state_session()     # this stream's state, in the backend's buffers
            if det.audio_graph:                                  # zeros: silent audio, silence frames and posteriors
                silence = np.zeros((1, det.hop), np.float32)
                n_warm = m.frames // det.frames_per_hop + det.smooth + 1
            else:
                silence = np.repeat(m.lm.silence_column(), det.frames_per_hop, 1)[None]
                n_warm = m.frames // det.frames_per_hop + 1
            for _ in range(n_warm):   # warm state on silence = window mode's start
                self.session.step(silence)

    def accept(self, samples: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, np.asarray(samples, np.float32)])

    def ready(self) -> bool:
        return len(self.pending) >= self.det.hop

    def step(self) -> dict:
        """Consume one hop of audio; returns timings (ms), the smoothed posteriors and any detection."""
        d = self.det
        if d.audio_graph and len(self.pending) < d.hop:
            raise UnsupportedError(f"step() with {len(self.pending)} samples pending: the streaming graph takes a "
                                   f"whole hop ({d.hop} samples)", hint="call step() while ready()")
        t0 = time.perf_counter_ns()
        chunk, self.pending = self.pending[:d.hop], self.pending[d.hop:]
        self.samples_seen += len(chunk)
        if d.audio_graph:                                  # one call: features, model, smoothing in the graph
            return self._graph_step(chunk, t0)
        new = self.feat.accept(chunk)
        t1 = time.perf_counter_ns()
        logits = None
        # both modes consume feature frames in groups of frames_per_hop, so they see exactly the same frames
        fph = d.frames_per_hop
        fb = np.concatenate([self.fbuf, new], 1) if self.fbuf.shape[1] else new
        groups = fb.shape[1] // fph
        if groups:
            take = groups * fph
            g, self.fbuf = fb[:, :take], fb[:, take:]
            if d.mode == "window":
                self.frames = np.concatenate([self.frames[:, take:], g], 1)
                logits = d.model.runner.infer(self.frames[None, None])["logits"][0]
            else:
                for k in range(groups):
                    logits = self.session.step(g[None, :, k * fph:(k + 1) * fph])[0][0]
        else:
            self.fbuf = fb
        t2 = time.perf_counter_ns()
        t_s = self.samples_seen / d.model.lm.sample_rate
        if logits is not None:
            self._push(logits)
        smoothed = (self.post_sum / d.smooth).astype(np.float32)
        det = self._decide(smoothed, t_s)
        t3 = time.perf_counter_ns()
        self.hops += 1
        return {"t_s": t_s, "features_ms": (t1 - t0) / 1e6, "infer_ms": (t2 - t1) / 1e6, "post_ms": (t3 - t2) / 1e6,
                "compute_ms": (t3 - t0) / 1e6, "posteriors": smoothed, "detection": det}

    def _push(self, logits: np.ndarray) -> None:
        """The newest posterior into the trailing average (the ring is always full: it starts with silence)."""
        e = np.exp(logits - logits.max())
        p = e / e.sum()
        self.post.append(p)
        self.post_sum += p - self.post.popleft()

    def _decide(self, smoothed: np.ndarray, t_s: float) -> dict | None:
        d = self.det
        ks = smoothed[self.kw_arr]
        if d.confirm:           # the keyword most probable `confirm` hops ago, if it is still up now
            self.pending_kw.append(ks)
            prev = self.pending_kw.popleft()
            if prev is None:
                return None
            j = int(prev.argmax())
            val = min(float(prev[j]), float(ks[j]))
        else:
            j = int(ks.argmax())
            val = float(ks[j])
        if val >= d.threshold and t_s - self.last_det_t >= d.refractory_s:
            det = {"label": d.model.labels[int(self.kw_arr[j])], "t_s": round(t_s, 4), "score": val}
            self.last_det_t = t_s
            self.detections.append(det)
            return det
        return None

    def _graph_step(self, chunk: np.ndarray, t0: int) -> dict:
        d = self.det
        logits, smoothed = self.session.step(chunk[None])
        t1 = time.perf_counter_ns()
        if d.graph_smooths:
            smoothed = smoothed[0]
        else:                                   # a smoothing window other than the bundle's: here, as in window mode
            self._push(logits[0])
            smoothed = (self.post_sum / d.smooth).astype(np.float32)
        t_s = self.samples_seen / d.model.lm.sample_rate
        det = self._decide(smoothed, t_s)
        t2 = time.perf_counter_ns()
        self.hops += 1
        return {"t_s": t_s, "features_ms": 0.0, "infer_ms": (t1 - t0) / 1e6, "post_ms": (t2 - t1) / 1e6,
                "compute_ms": (t2 - t0) / 1e6, "posteriors": smoothed, "detection": det}


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
            "latency_ms": lat if realtime else None, "posteriors": post, "scores": det.decision_scores(post),
            "detections": list(s.detections),
            "wall_s": wall, "cpu_s": cpu, "max_backlog_ms": backlog if realtime else None}


def confirm_scores(post: np.ndarray, kw_idx: list[int], hops: int) -> np.ndarray:
    """The per-hop scores the detector thresholds: the smoothed posteriors themselves (``hops`` = 0), or with a
    confirmation ``hops`` later, at hop i the keyword k most probable at hop i - hops scores min(p[i - hops, k],
    p[i, k]) and every other keyword 0 (no keyword can fire in the first ``hops`` hops). A detection at threshold
    t happens exactly where this score is >= t, so thresholds, sweeps and calibration apply to it unchanged."""
    post = np.asarray(post)
    if hops <= 0:
        return post
    out = np.zeros_like(post)
    n = len(post) - hops
    if n <= 0:
        return out
    kw = np.asarray(kw_idx)
    prev = post[:n][:, kw]
    a = prev.argmax(1)
    r = np.arange(n)
    out[r + hops, kw[a]] = np.minimum(prev[r, a], post[hops:][r, kw[a]])
    return out


def check_confirm(ms: float | None) -> None:
    if ms is not None and not 0 <= float(ms) <= 2000:
        raise UnsupportedError(f"confirm_ms {ms:g}: the keyword's posterior is checked again this long after it "
                               "reached the threshold, valid is 0 <= confirm_ms <= 2000 (0: off)")


def check_streaming_manifest(m: dict) -> None:
    sm = m.get("streaming_model")
    if sm and sm.get("file") not in (m.get("model_files") or {}).values():
        raise BundleError("manifest: streaming_model.file is not one of the bundle's model files")


def window_logits(runner, manifest: dict):
    """``infer`` for ``window_posteriors`` from an open runner of a keyword bundle: a (B, 1, n_feat, frames) batch
    to its (B, classes) logits."""
    name = manifest["inputs"][0]["name"]

    def infer(x):
        out = runner.infer({name: x})
        return np.asarray(out["logits"] if "logits" in out else next(iter(out.values())))
    return infer


def window_posteriors(infer, lm: LogMel, frames: int, audio: np.ndarray, hop: int, smooth: int,
                      batch: int = 128) -> np.ndarray:
    """The smoothed posteriors ``replay`` gives (window mode = streaming mode), per hop, computed in batches: the
    same feature frames (``n_fft - hop`` zeros before the stream), the same windows (silence before the stream
    starts), the same trailing average (a ring that starts full of the posterior of silence); ``infer`` maps a
    (B, 1, n_feat, frames) batch to (B, classes) logits. For calibration and mining, where the per-hop schedule
    does not matter but the scores must be the detector's."""
    fph = hop // lm.hop
    hops = len(audio) // hop
    x = np.concatenate([np.zeros(lm.n_fft - lm.hop, np.float32), np.asarray(audio[:hops * hop], np.float32)])
    padded = np.concatenate([np.repeat(lm.silence_column(), frames, 1), lm.frames_from(x)], 1)   # hops * fph new
    starts = np.arange(hops + 1) * fph          # window 0: all silence; window j + 1: what hop j sees
    win = np.lib.stride_tricks.sliding_window_view(padded, frames, axis=1)      # (n_feat, T, frames), a view
    probs = []
    for s in range(0, len(starts), batch):
        xb = np.ascontiguousarray(win[:, starts[s:s + batch]].transpose(1, 0, 2))[:, None]
        probs.append(softmax(np.asarray(infer(xb), np.float32)))
    probs = np.concatenate(probs)
    return smooth_posteriors(probs[1:], probs[0], smooth)       # probs[0]: the all-silence window


def smooth_posteriors(raw: np.ndarray, p_start: np.ndarray, smooth: int) -> np.ndarray:
    """The detector's trailing average over ``smooth`` hops of per-hop posteriors ``raw``, the ring starting full
    of ``p_start`` (the posterior of silence), as KwsStream keeps it."""
    seq = np.concatenate([np.repeat(np.asarray(p_start)[None], smooth, 0), raw]).astype(np.float64)
    cs = np.concatenate([np.zeros((1, seq.shape[1])), np.cumsum(seq, 0)])
    j = np.arange(len(raw))
    return ((cs[j + smooth + 1] - cs[j + 1]) / smooth).astype(np.float32)
