"""``edgeft camera``: a bundle on a live camera or a video, with an on-screen or terminal overlay (torch-free)."""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from .. import runtime
from ..errors import DataError
from ..utils.log import err, quiet
from .camera import (CameraResult, Frame, Handoff, _cv2, camera_latency, consume, decode_video, run_camera,
                     summarize_camera)
from .data import timed_pass


def _gui(display: bool):
    if not display or not os.environ.get("DISPLAY"):
        return None
    try:
        cv2 = _cv2()
        cv2.namedWindow("edgeft", cv2.WINDOW_NORMAL)
        return cv2
    except Exception:  # noqa: BLE001 - headless OpenCV builds have no GUI: fall back to the terminal
        return None


class _Outputs:
    """``--save`` (the frames with their results drawn, as a video) and ``--jsonl`` (one JSON line per processed
    frame), written under temporary names and moved into place at the end: an interrupted run leaves no
    half-written file under the final name. They are written after each frame's timing ends, in the consumer, so
    they can delay the next frame: bench without them."""

    def __init__(self, save: str | None, jsonl: str | None, fps: float):
        from pathlib import Path

        self.save = Path(save) if save else None
        self.jsonl = Path(jsonl) if jsonl else None
        for p, exts, opt in ((self.save, (".mp4", ".avi"), "--save"), (self.jsonl, None, "--jsonl")):
            if p is None:
                continue
            if exts and p.suffix.lower() not in exts:
                raise DataError(f"{opt} {str(p)!r}: valid are {' / '.join(exts)} files",
                                hint="e.g. --save out.mp4")
            if not p.parent.is_dir():
                raise DataError(f"{opt} {str(p)!r}: folder {str(p.parent)!r} does not exist",
                                hint="create it first, or write somewhere else")
            if p.exists():
                raise DataError(f"{opt} {str(p)!r} already exists", hint="pick a new file name (nothing is overwritten)")
        self.fps = fps
        self.vw = None
        self.frames = 0
        self._tmp = {p: p.with_name(f".{p.stem}.tmp-{os.getpid()}{p.suffix}") for p in (self.save, self.jsonl) if p}
        self.fh = open(self._tmp[self.jsonl], "w") if self.jsonl else None

    def write(self, view_rgb: np.ndarray | None, record: dict) -> None:
        if self.fh is not None:
            import json

            self.fh.write(json.dumps(record) + "\n")
        if self.save is not None and view_rgb is not None:
            cv2 = _cv2()
            if self.vw is None:
                h, w = view_rgb.shape[:2]
                fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.save.suffix.lower() == ".mp4" else "MJPG"))
                self.vw = cv2.VideoWriter(str(self._tmp[self.save]), fourcc, self.fps, (w, h))
                if not self.vw.isOpened():
                    raise DataError(f"OpenCV cannot write {str(self.save)!r}", hint="use a .mp4 or .avi file name")
            self.vw.write(np.ascontiguousarray(view_rgb[..., ::-1]))
            self.frames += 1

    def close(self, ok: bool) -> None:
        if self.fh is not None:
            self.fh.close()
        if self.vw is not None:
            self.vw.release()
        for final, tmp in self._tmp.items():
            if ok and tmp.exists():
                os.replace(tmp, final)
            elif tmp.exists():
                tmp.unlink()


def _draw(cv2, img: np.ndarray, shown: list, size: int, text: str) -> np.ndarray:
    """The frame (RGB) with the boxes and a status line drawn."""
    view = np.ascontiguousarray(img.copy())
    sx, sy = img.shape[1] / size, img.shape[0] / size          # boxes are in the model's input pixels
    for d in shown:
        x0, y0, x1, y1 = (int(round(v)) for v in (d["box"][0] * sx, d["box"][1] * sy, d["box"][2] * sx,
                                                  d["box"][3] * sy))
        cv2.rectangle(view, (x0, y0), (x1, y1), (0, 255, 0), 2)
        cv2.putText(view, f"{d['label']} {d['score']:.2f}", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 255, 0), 1)
    cv2.putText(view, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 0), 2)
    return view


def live_camera(bundle, source: str, fps: float = 30.0, duration: float = 30.0, handoff: str = "latest",
                threads: int | None = None, display: bool = True, save: str | None = None,
                jsonl: str | None = None) -> dict:
    outputs = _Outputs(save, jsonl, fps)
    ok = False
    try:
        rep = _live_camera(bundle, source, fps, duration, handoff, threads, display, outputs)
        ok = True
    finally:
        outputs.close(ok)
    if outputs.save is not None:
        rep["saved_video"] = {"path": str(outputs.save), "frames": outputs.frames}
    if outputs.jsonl is not None:
        rep["jsonl"] = str(outputs.jsonl)
    return rep


def _live_camera(bundle, source, fps, duration, handoff, threads, display, outputs: _Outputs) -> dict:
    model = runtime.load(bundle, threads=threads, batch=1)
    if model.task_name not in ("image_cls", "detection"):
        raise DataError(f"`edgeft camera` runs image classifiers and detectors; {bundle} is a {model.task_name} "
                        f"bundle", hint="use `edgeft listen` for keyword spotting")
    pre = model.preprocessor
    gui = _gui(display)
    stats = {"n": 0, "t": time.perf_counter(), "fps": 0.0, "label": "", "p": 0.0, "e2e": 0.0}
    lock = threading.Lock()
    size = int(model.manifest["preprocess"]["size"])
    detect = model.task_name == "detection"
    last: dict = {}
    post = (lambda y: model.task.predictions(y, model.labels)[0]) if detect else \
        (lambda y: model.task.postprocess(y, 1))

    def process(img: np.ndarray) -> dict:
        _, out, st = timed_pass(pre, model.infer, post, [img])
        if detect:
            shown = [d for d in out if d["score"] >= 0.3]
            label = f"{len(shown)} object(s)" + (f", {shown[0]['label']}" if shown else "")
            prob = shown[0]["score"] if shown else 0.0
        else:
            top, p = out
            label, prob = model.labels[int(top[0, 0])], float(p[0, top[0, 0]])
            shown = []
        with lock:
            stats.update(label=label, p=prob)
        last["img"], last["shown"], last["label"], last["p"] = img, shown, label, prob
        if gui is not None:
            txt = f"{label} {prob:.2f} | {stats['fps']:.1f} fps | e2e {stats['e2e']:.1f} ms"
            gui.imshow("edgeft", np.ascontiguousarray(_draw(gui, img, shown, size, txt)[..., ::-1]))
            gui.waitKey(1)
        return {**st, "label": label, **({"detections": shown} if detect else {})}

    def on_result(rec: dict) -> None:
        if outputs.save is not None or outputs.fh is not None:   # after the frame's timing: not in its e2e
            view = None
            if outputs.save is not None:
                view = _draw(_cv2(), last["img"], last["shown"], size,
                             f"{last['label']} {last['p']:.2f} | e2e {rec['e2e']:.1f} ms")
            line = {"frame": rec["k"], "t_sched_s": round(rec["t_sched"], 6), "e2e_ms": round(rec["e2e"], 3),
                    "label": last["label"], "score": round(float(last["p"]), 6)}
            if detect:
                line["detections"] = [{"label": d["label"], "score": round(float(d["score"]), 6),
                                       "box": [round(float(v), 2) for v in d["box"]]} for d in last["shown"]]
            outputs.write(view, line)
        now = time.perf_counter()
        with lock:
            stats["n"] += 1
            stats["e2e"] = rec["e2e"]
            if now - stats["t"] >= 0.5:
                stats["fps"] = stats["n"] / (now - stats["t"])
                stats["n"], stats["t"] = 0, now
                if gui is None and not quiet():
                    err.print(f"\r{stats['label']:>14s} {stats['p']:.2f} | {stats['fps']:5.1f} fps | "
                              f"e2e {stats['e2e']:6.2f} ms", end="")

    with model:
        r = model.manifest["preprocess"].get("resize") or size
        process(np.zeros((r, r, 3), np.uint8))  # first inference
        if source.isdigit():
            res = _run_live(int(source), process, duration, handoff, on_result)
            kind = "app_arrival"
        else:
            frames = decode_video(source)
            res = run_camera(process, frames, fps, duration, handoff, on_result=on_result)
            kind = "scheduled"
    if gui is None and not quiet():
        err.print("")
    out = {"source": source, "capture_timestamp_kind": kind, "camera": summarize_camera(res),
           "latency": camera_latency(res), "bundle": str(bundle), "format": model.manifest["format"],
           "precision": model.manifest["precision"]}
    if gui is not None:
        gui.destroyAllWindows()
    return out


def _run_live(index: int, process, duration: float, handoff: str, on_result) -> CameraResult:
    """A real camera: a reader thread publishes each frame as it arrives (t_sched = arrival time)."""
    cv2 = _cv2()
    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise DataError(f"cannot open camera {index}", hint="check the device (ls /dev/video*) or pass a video file")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    ho = Handoff(handoff)
    res = CameraResult(fps=fps, offered=0, handoff=handoff, deadline_ms=1e3 / fps)
    t0 = time.perf_counter()
    res.t0 = t0
    stop = threading.Event()

    def reader():
        k = 0
        while not stop.is_set() and time.perf_counter() - t0 < duration:
            ok, bgr = cap.read()
            if not ok:
                break
            t = time.perf_counter()
            res.lateness_ms.append(0.0)
            ho.put(Frame(k, np.ascontiguousarray(bgr[..., ::-1]), t, t))
            k += 1
        res.offered = k
        ho.close()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    try:
        consume(ho, process, t0, res, on_result)
    finally:
        stop.set()
        th.join(timeout=5)
        cap.release()
    res.dropped = sorted(ho.dropped)
    return res
