"""The camera scenario: a fixed-rate producer thread, a bounded hand-off, latency from the scheduled capture time.

Producer: frame k is scheduled at ``t0 + k / fps`` on an absolute timeline (never "sleep one period after
work", which drifts); it sleeps until ~2 ms before, spins, stamps ``t_pub`` and publishes. Hand-off:
``latest`` (one-slot mailbox: an unconsumed frame that is overwritten is a drop), ``fifo:N`` (bounded queue,
the oldest frame is evicted and counted as a drop), ``block`` (the producer waits: no drops, not real time).
Every offered frame ends up exactly once as processed or dropped. Torch-free.
"""
from __future__ import annotations

import collections
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import BackendUnavailable, DataError, UnsupportedError
from ..stats import summarize


@dataclass
class Frame:
    k: int
    image: np.ndarray
    t_sched: float
    t_pub: float = 0.0


def parse_handoff(policy: str) -> tuple[str, int]:
    """``latest`` | ``block`` | ``fifo:N`` -> (kind, capacity); anything else is a clear error."""
    if policy in ("latest", "block"):
        return policy, 1
    if policy.startswith("fifo:"):
        try:
            cap = int(policy.split(":", 1)[1])
        except ValueError:
            cap = 0
        if cap < 1:
            raise UnsupportedError(f"--handoff {policy!r}: fifo needs a size >= 1, e.g. fifo:4")
        return "fifo", cap
    raise UnsupportedError(f"--handoff {policy!r}: valid are latest, fifo:N, block")


class Handoff:
    """Bounded hand-off between the producer and the consumer, counting drops exactly."""

    def __init__(self, policy: str):
        self.cv = threading.Condition()
        self.closed = False
        self.dropped: list[int] = []
        self.kind, self.cap = parse_handoff(policy)
        self.q: collections.deque[Frame] = collections.deque()

    def put(self, f: Frame) -> None:
        with self.cv:
            if self.kind == "block":
                while len(self.q) >= self.cap and not self.closed:
                    self.cv.wait()
            elif len(self.q) >= self.cap:
                self.dropped.append(self.q.popleft().k)   # overwritten (latest) / evicted (fifo)
            self.q.append(f)
            self.cv.notify_all()

    def get(self, timeout: float = 0.5) -> Frame | None:
        with self.cv:
            end = time.perf_counter() + timeout
            while not self.q:
                if self.closed:
                    return None
                left = end - time.perf_counter()
                if left <= 0:
                    return None
                self.cv.wait(left)
            f = self.q.popleft()
            self.cv.notify_all()
            return f

    def close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()


@dataclass
class CameraResult:
    fps: float
    offered: int
    processed: list[dict] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    lateness_ms: list[float] = field(default_factory=list)
    t0: float = 0.0
    handoff: str = "latest"
    deadline_ms: float = 0.0
    warmup_frames: int = 0


def run_camera(process: Callable[[np.ndarray], dict], frames: list[np.ndarray], fps: float, duration_s: float,
               handoff: str = "latest", deadline_ms: float | None = None, warmup_s: float = 0.0,
               on_result: Callable[[dict], None] | None = None, clock=time.perf_counter) -> CameraResult:
    """Offer ``fps * duration_s`` frames on schedule to ``process(image) -> {pre, infer, post}`` (ms) and
    account for each. The first ``warmup_s`` seconds of frames are processed but left out of the results."""
    if fps <= 0:
        raise UnsupportedError(f"--fps {fps}: must be > 0")
    if not frames:
        raise DataError("no frames to play")
    period = 1.0 / fps
    n_warm = int(round(warmup_s * fps))
    total = n_warm + max(int(round(duration_s * fps)), 1)
    ho = Handoff(handoff)
    res = CameraResult(fps=fps, offered=total, handoff=handoff, deadline_ms=deadline_ms or 1e3 * period,
                       warmup_frames=n_warm)
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # let the producer thread in promptly while the consumer holds the GIL
    t0 = clock() + 0.05
    res.t0 = t0

    def producer():
        for k in range(total):
            ts = t0 + k * period
            while True:
                left = ts - clock()
                if left <= 0:
                    break
                if left > 0.002:
                    time.sleep(left - 0.002)
            f = Frame(k, frames[k % len(frames)], ts, clock())
            res.lateness_ms.append((f.t_pub - ts) * 1e3)
            ho.put(f)
        ho.close()

    th = threading.Thread(target=producer, name="edgeft-camera-producer", daemon=True)
    th.start()
    try:
        consume(ho, process, t0, res, on_result, clock)
    finally:
        ho.close()
        th.join(timeout=5)
        sys.setswitchinterval(old_switch)
    res.dropped = sorted(ho.dropped)
    return res


def consume(ho: Handoff, process, t0: float, res: CameraResult, on_result=None, clock=time.perf_counter) -> None:
    """The consumer: dequeue -> process (pre, infer, post) -> record, until the producer closes the hand-off."""
    while True:
        f = ho.get()
        if f is None:
            if ho.closed and not ho.q:
                break
            continue
        t_deq = clock()
        st = process(f.image)
        t_done = clock()
        rec = {"k": f.k, "t_sched": f.t_sched - t0, "queue_wait": (t_deq - f.t_pub) * 1e3,
               "staleness": (t_deq - f.t_sched) * 1e3, "e2e": (t_done - f.t_sched) * 1e3,
               "t_done": t_done - t0, **{s: st[s] for s in ("pre", "infer", "post") if s in st}}
        if "label" in st:
            rec["label"] = st["label"]
        res.processed.append(rec)
        if on_result:
            on_result(rec)


def summarize_camera(res: CameraResult) -> dict:
    """Metrics over the measured (post-warm-up) frames; drops and misses are per offered frame."""
    w = res.warmup_frames
    proc = [r for r in res.processed if r["k"] >= w]
    dropped = [k for k in res.dropped if k >= w]
    offered = res.offered - w
    lat = res.lateness_ms[w:]
    period_ms = 1e3 / res.fps
    e2e = [r["e2e"] for r in proc]
    miss = sum(1 for v in e2e if v > res.deadline_ms)
    done = sorted(r["t_done"] for r in proc)
    intervals = np.diff(done) * 1e3 if len(done) > 1 else np.array([])
    dset = set(dropped)
    run = best = 0
    for k in range(w, res.offered):
        run = run + 1 if k in dset else 0
        best = max(best, run)
    span = (done[-1] - proc[0]["t_sched"]) if proc else 0.0
    lat_s = summarize(lat) if lat else {"p99": 0.0}
    limit = min(1.0, 0.05 * period_ms)
    not_rt = res.handoff == "block"
    return {
        "offered_frames": offered, "processed_frames": len(proc), "dropped_frames": len(dropped),
        "accounted": len(proc) + len(dropped) == offered,
        "offered_fps": res.fps, "sustained_fps": len(proc) / span if span > 0 else None,
        "drop_rate": len(dropped) / offered if offered else 0.0,
        "deadline_ms": res.deadline_ms, "deadline_miss_rate": (miss + len(dropped)) / offered if offered else 0.0,
        "max_consecutive_drops": best,
        "jitter_ms": float(np.percentile(np.abs(intervals - period_ms), 99, method="inverted_cdf"))
        if len(intervals) else None,
        "staleness": summarize([r["staleness"] for r in proc]), "producer_lateness": lat_s,
        "producer_on_time": bool(not_rt or lat_s["p99"] <= limit), "producer_lateness_limit_ms": limit,
        "not_realtime": not_rt, "handoff": res.handoff, "warmup_frames": w,
    }


def camera_latency(res: CameraResult) -> dict:
    w = res.warmup_frames
    proc = [r for r in res.processed if r["k"] >= w]
    return {k: summarize([r[k] for r in proc if k in r]) for k in ("e2e", "queue_wait", "pre", "infer", "post")
            if any(k in r for r in proc)}


# ------------------------------------------------------------------------------------ frame sources
def decode_video(path: str, max_frames: int = 300) -> list[np.ndarray]:
    """Pre-decode up to ``max_frames`` RGB frames (untimed, like MLPerf's in-memory samples)."""
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"cannot open video {path!r}", hint="pass a readable video file (mp4/avi) or a camera index")
    frames = []
    while len(frames) < max_frames:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    cap.release()
    if not frames:
        raise DataError(f"video {path!r} has no decodable frames")
    return frames


def _cv2():
    try:
        import cv2
    except ImportError:
        raise BackendUnavailable("video files and cameras need OpenCV", hint="pip install 'edgeft[camera]'") from None
    return cv2


def make_video(out: str, frames: list[np.ndarray], fps: float = 30.0) -> int:
    """Write RGB frames to a video with OpenCV's VideoWriter (mp4v for .mp4, MJPG otherwise)."""
    cv2 = _cv2()
    h, w = frames[0].shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("mp4v" if str(out).endswith(".mp4") else "MJPG"))
    vw = cv2.VideoWriter(str(out), fourcc, fps, (w, h))
    if not vw.isOpened():
        raise DataError(f"OpenCV cannot write {out!r}", hint="use a .mp4 or .avi file name")
    for f in frames:
        vw.write(np.ascontiguousarray(f[..., ::-1]))
    vw.release()
    return len(frames)


def frames_from_samples(samples, n: int = 300, size: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """Camera-like RGB frames from a dataset (optionally upscaled to size x size)."""
    from PIL import Image

    idx = np.random.default_rng(seed).permutation(len(samples))[:n]
    out = []
    for i in idx:
        im = samples.raw(int(i))
        if size:
            im = np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
        out.append(im)
    return out
