"""``throughput``: samples per second with several inference streams in flight and a batch sweep (what
OpenVINO's ``benchmark_app -hint throughput`` and MLPerf's Offline/Server ask: how much a device serves, not how
fast one request is).

Per artifact and per configuration (streams x batch):

- OpenVINO: the model compiled with ``PERFORMANCE_HINT=THROUGHPUT`` and ``NUM_STREAMS`` (a number, or the
  plugin's own choice for ``auto``), a static batch, and an ``AsyncInferQueue`` holding the plugin's optimal
  number of requests: requests are started as fast as they complete.
- ONNX Runtime: ``N`` threads calling one session concurrently, each stream with ``threads / N`` intra-op threads
  (``auto``: one stream per thread).

The accuracy pass is the single-stream one (same samples, same metric). The timed part runs in interleaved rounds
(each configuration one window per round, the order shuffled per round); a row reports the median of the rounds'
samples/s with their range, and the latency of each request (start -> completion, a batch counts once). A
PyTorch run folder gets its accuracy row only (it is the reference, not a deployment).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from ...errors import UnsupportedError
from ...stats import summarize
from ...utils.log import info, progress
from ..harness import accuracy_run, load_ctx_samples
from . import Scenario


def parse_list(text: str, opt: str, allow_auto: bool) -> list:
    out = []
    for tok in str(text).split(","):
        tok = tok.strip()
        if allow_auto and tok == "auto":
            out.append("auto")
            continue
        try:
            v = int(tok)
        except ValueError:
            v = 0
        if v < 1:
            raise UnsupportedError(f"{opt} {text!r}: expected comma-separated integers >= 1"
                                   f"{' or auto' if allow_auto else ''}", hint=f"e.g. {opt} 1,2" +
                                   (",auto" if allow_auto else ",8"))
        out.append(v)
    return list(dict.fromkeys(out))


class _OpenVinoPool:
    def __init__(self, a, threads: int | None, streams, batch: int):
        import openvino as ov

        from ...backends.openvino import _HINT
        from ...targets import bundle_compute

        core = ov.Core()
        model = core.read_model(str(a.path / a.manifest["model_files"]["model"]))
        model.reshape({model.inputs[0]: [batch] + [int(d) for d in a.manifest["inputs"][0]["shape"][1:]]})
        cfg = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": _HINT[bundle_compute(a.manifest)]}
        if streams != "auto":
            cfg["NUM_STREAMS"] = int(streams)
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", cfg)
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self.queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self._lat: list[float] = []
        self.queue.set_callback(lambda req, t0: self._lat.append((time.perf_counter() - t0) * 1e3))

    def window(self, x: np.ndarray, seconds: float) -> tuple[int, float, list[float]]:
        import openvino as ov

        self._lat = []
        t0 = time.perf_counter()
        n = 0
        while time.perf_counter() - t0 < seconds:
            self.queue.start_async({0: ov.Tensor(x, shared_memory=True)}, time.perf_counter())
            n += 1
        self.queue.wait_all()
        return n, time.perf_counter() - t0, list(self._lat)

    def close(self):
        self.queue = None
        self.compiled = None


class _OrtPool:
    def __init__(self, a, threads: int | None, streams, batch: int):
        import os

        import onnxruntime as ort

        total = threads or os.cpu_count() or 1
        self.streams = total if streams == "auto" else int(streams)
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, total // self.streams)
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        self.sess = ort.InferenceSession(str(a.path / a.manifest["model_files"]["model"]), so,
                                         providers=["CPUExecutionProvider"])
        self.requests = self.streams
        self.name = self.sess.get_inputs()[0].name

    def window(self, x: np.ndarray, seconds: float) -> tuple[int, float, list[float]]:
        lat: list[list[float]] = [[] for _ in range(self.streams)]
        t0 = time.perf_counter()

        def worker(k: int) -> None:
            while time.perf_counter() - t0 < seconds:
                t = time.perf_counter()
                self.sess.run(None, {self.name: x})
                lat[k].append((time.perf_counter() - t) * 1e3)

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(self.streams)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        flat = [v for v in lat for v in v]
        return len(flat), time.perf_counter() - t0, flat

    def close(self):
        self.sess = None


POOLS = {"openvino": _OpenVinoPool, "onnxruntime": _OrtPool, "onnx": _OrtPool}


class Throughput(Scenario):
    name = "throughput"
    roofline = False
    interleaved = True

    def validate(self, cfg) -> None:
        parse_list(cfg.streams, "--streams", True)
        parse_list(cfg.batches, "--batches", False)

    def run(self, ctx) -> list[dict]:
        cfg, prof = ctx.cfg, ctx.prof
        samples = load_ctx_samples(ctx)
        streams = parse_list(cfg.streams, "--streams", True)
        batches = parse_list(cfg.batches, "--batches", False)
        info(f"bench: {len(ctx.arts)} artifact(s), scenario throughput (streams {streams}, batches {batches}), "
             f"profile {cfg.profile}, {ctx.threads} thread(s)")
        rows, configs = [], []
        for a in ctx.arts:
            a.open()
            a.set_batch(None)
            acc = accuracy_run(a, samples, cfg.batch, np.arange(0))
            if a.kind != "bundle" or a.fmt not in POOLS:
                rows.append({"artifact": a, "accuracy": acc, "name": a.name})
                continue
            pre = a.pre()
            for b in batches:
                x = next(iter(pre([samples.raw(i % len(samples)) for i in range(b)]).values()))
                x = np.ascontiguousarray(x)
                for s in streams:
                    pool = POOLS[a.fmt](a, ctx.threads, s, b)
                    pool.window(x, min(0.5, prof.warmup_s))   # warm-up (discarded)
                    row = {"artifact": a, "accuracy": acc, "name": f"{a.name} [streams {s}, batch {b}]",
                           "_pool": pool, "_x": x, "_sps": [], "_lat": [], "_cfg": (s, pool.streams, pool.requests, b)}
                    rows.append(row)
                    configs.append(row)
        rng = np.random.default_rng(cfg.seed + 2)
        order_log = []
        with progress() as prog:
            bar = prog.add_task("throughput", total=prof.windows * len(configs), status="")
            for rnd in range(prof.windows):
                order = [configs[i] for i in rng.permutation(len(configs))]
                order_log.append([r["name"] for r in order])
                for r in order:
                    n, sec, lat = r["_pool"].window(r["_x"], prof.window_s)
                    r["_sps"].append(n * r["_cfg"][3] / sec)
                    r["_lat"] += lat
                    prog.update(bar, advance=1, status=f"round {rnd + 1}: {r['name']} {r['_sps'][-1]:.0f} samples/s")
        for r in configs:
            asked, used, reqs, b = r.pop("_cfg")
            r.pop("_x")
            r.pop("_pool").close()
            sps, lat = r.pop("_sps"), r.pop("_lat")
            r["latency"] = {"e2e": summarize(lat)}
            r["throughput"] = {"throughput_sps": float(np.median(sps)), "rounds_sps": [round(v, 2) for v in sps],
                               "min_sps": float(min(sps)), "max_sps": float(max(sps)), "streams_asked": asked,
                               "streams": used, "requests_in_flight": reqs, "batch": b,
                               "latency_is": "per request (a batch counts once), start -> completion"}
            ref_name = None

            def ratios(ref_r, r=r, ref_name=ref_name):
                ref_t = (ref_r.get("throughput") or {}).get("throughput_sps")
                mine = r["throughput"]["throughput_sps"]
                return {"throughput_ratio": mine / ref_t} if ref_t else {}

            r["ratios"] = ratios
        self._order = order_log
        best = max(configs, key=lambda r: r["throughput"]["throughput_sps"], default=None)
        if best is not None:
            info(f"highest throughput: {best['name']} {best['throughput']['throughput_sps']:.0f} samples/s")
        return rows

    def header(self, ctx) -> dict:
        return {"name": self.name, "streams": parse_list(ctx.cfg.streams, "--streams", True),
                "batches": parse_list(ctx.cfg.batches, "--batches", False)}

    def settings(self, ctx) -> dict:
        return {"round_order": getattr(self, "_order", None)}
