"""``camera``: each artifact on a fixed-rate frame stream (a producer on an absolute schedule, a bounded hand-off),
latency from the scheduled capture time, drops, deadline misses, jitter; sequential (a stream is one continuous
window). The mechanics are :mod:`edgeft.bench.camera`."""
from __future__ import annotations

from ...utils.log import info
from ..camera import camera_latency, decode_video, frames_from_samples, parse_handoff, run_camera, summarize_camera
from ..data import timed_pass
from ..harness import accuracy_run, load_ctx_samples
from . import Scenario

DURATIONS = {"smoke": 5.0, "quick": 20.0, "dev": 60.0, "report": 600.0}


class Camera(Scenario):
    name = "camera"
    tasks = ("image_cls", "detection")      # detection: decoding + NMS run inside each frame's end-to-end time
    interleaved = False

    def validate(self, cfg) -> None:
        parse_handoff(cfg.handoff)

    def run(self, ctx) -> list[dict]:
        import numpy as np

        cfg, prof = ctx.cfg, ctx.prof
        samples = load_ctx_samples(ctx)
        info(f"bench: {len(ctx.arts)} artifact(s), data {samples.name} (n={len(samples)}), scenario camera, "
             f"profile {cfg.profile}, {ctx.threads} thread(s)")
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.permutation(len(samples))[: min(cfg.perf_samples, len(samples))])
        rows = []
        for a in ctx.arts:
            a.open()
            a.set_batch(None)
            rows.append({"artifact": a, "accuracy": accuracy_run(a, samples, cfg.batch, keep)})
        duration = cfg.duration or DURATIONS[cfg.profile]
        if cfg.source:
            frames = decode_video(cfg.source)
            self._source = f"video {cfg.source} ({len(frames)} frames pre-decoded)"
        else:
            frames = frames_from_samples(samples, 300, size=None)
            self._source = f"{len(frames)} frames from {samples.name} (pre-decoded)"
        for r in rows:
            a = r["artifact"]
            a.set_batch(1)
            pre, post = a.pre(), a.device.postprocess

            def process(img, a=a, pre=pre, post=post):
                return timed_pass(pre, a.infer, post, [img])[2]

            for _ in range(prof.warmup_iters):
                process(frames[0])
            res = run_camera(process, frames, cfg.fps, duration, cfg.handoff, cfg.deadline_ms, warmup_s=prof.warmup_s)
            r["camera"] = summarize_camera(res)
            r["latency"] = camera_latency(res)
            r["startup"] = {"load_ms": a.load_ms, "first_inference_ms": a.first_inference_ms()}
            proc = [p for p in res.processed if p["k"] >= res.warmup_frames]
            r["_timeline"] = {"t": [p["t_sched"] for p in proc], "e2e": [p["e2e"] for p in proc],
                              "dropped_t": [k / cfg.fps for k in res.dropped if k >= res.warmup_frames]}
            r["_raw"] = r["_timeline"]["e2e"]
        return rows

    def header(self, ctx) -> dict:
        cfg = ctx.cfg
        return {"name": "camera", "fps": cfg.fps, "handoff": cfg.handoff,
                "deadline_ms": cfg.deadline_ms or 1e3 / cfg.fps, "source": getattr(self, "_source", None)}
