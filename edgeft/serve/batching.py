"""One inference worker per served model version, with optional dynamic batching.

Requests are preprocessed in the server's thread pool, then queued here. The worker takes the first queued
request, waits up to ``max_wait_ms`` for more (never past ``max_batch`` samples), runs them as one batch and
hands each request its own rows. ``max_batch=1`` is plain one-at-a-time serving (no waiting). One worker per
version means one inference at a time per model, each using all the runtime's threads: on a CPU that is the
fastest way to serve, and OpenVINO's infer request is not shared between threads.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np


class Batcher:
    def __init__(self, version, max_batch: int = 1, max_wait_ms: float = 0.0, static_batch_one: bool = False):
        self.v = version
        self.static_one = static_batch_one         # the model was compiled for batch 1: run rows one by one
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1e3
        self.q: queue.Queue = queue.Queue()
        self.batches = 0
        self.samples = 0
        self.last_batch_sizes: list[int] = []
        self.on_batch = None                      # callback(size) for the metrics
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"edgeft-serve-{version.name}-{version.version}",
                                       daemon=True)
        self.thread.start()

    def submit(self, feeds: dict[str, np.ndarray]) -> Future:
        f: Future = Future()
        self.q.put((feeds, f))
        return f

    def close(self) -> None:
        self._stop.set()
        self.q.put(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            item = self.q.get()
            if item is None:
                break
            items = [item]
            n = _rows(item[0])
            deadline = time.perf_counter() + self.max_wait
            while n < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    nxt = self.q.get(timeout=left) if left > 0 else self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._stop.set()
                    break
                if n + _rows(nxt[0]) > self.max_batch:
                    self.q.put(nxt)           # does not fit: it starts the next batch (order kept within 1)
                    break
                items.append(nxt)
                n += _rows(nxt[0])
            self._infer(items)
        while True:                            # closing: fail what is still queued (the server is stopping)
            try:
                item = self.q.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].set_exception(RuntimeError("model version unloaded"))

    def _infer(self, items) -> None:
        live = [(feeds, f) for feeds, f in items if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            if len(live) == 1 and self.static_one and _rows(live[0][0]) > 1:
                fd = live[0][0]
                parts = [self.v.model.infer({k: x[i:i + 1] for k, x in fd.items()}) for i in range(_rows(fd))]
                outs = [{k: np.concatenate([p[k] for p in parts]) for k in parts[0]}]
            elif len(live) == 1:
                outs = [self.v.model.infer(live[0][0])]
            else:
                names = list(live[0][0])
                feeds = {k: np.concatenate([fd[k] for fd, _ in live]) for k in names}
                y = self.v.model.infer(feeds)
                outs, s = [], 0
                for fd, _ in live:
                    r = _rows(fd)
                    outs.append({k: v[s:s + r] for k, v in y.items()})
                    s += r
            size = sum(_rows(fd) for fd, _ in live)
            self.batches += 1
            self.samples += size
            if self.on_batch is not None:
                self.on_batch(size)
            for (_, f), o in zip(live, outs):
                f.set_result(o)
        except Exception as e:  # noqa: BLE001 - every waiting request learns the failure
            for _, f in live:
                if not f.done():
                    f.set_exception(e)


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0])
