"""``single_stream`` (one sample at a time, MLPerf's SingleStream) and ``offline`` (batches, throughput).

An accuracy run over the whole ``--data``, then a performance run in seeded interleaved rounds: each round
one window per artifact in a random order (machine drift hits all variants alike); windows end only when both
a minimum duration and count are met. A few logged outputs of the performance run are checked against the
accuracy run (MLPerf TEST01-style compliance)."""
from __future__ import annotations

import time

import numpy as np

from ...utils.log import info, progress
from ..data import timed_pass
from ..harness import accuracy_run, load_ctx_samples
from ..timing import pooled, run_window, warmup
from . import Scenario


class SingleStream(Scenario):
    name = "single_stream"
    roofline = True
    offline = False

    def run(self, ctx) -> list[dict]:
        cfg, prof = ctx.cfg, ctx.prof
        samples = load_ctx_samples(ctx)
        info(f"bench: {len(ctx.arts)} artifact(s), data {samples.name} (n={len(samples)}), scenario {cfg.scenario}, "
             f"profile {cfg.profile}, {ctx.threads} thread(s)")
        rng = np.random.default_rng(cfg.seed)
        perf_idx = np.sort(rng.permutation(len(samples))[: min(cfg.perf_samples, len(samples))])
        perf_raw = [samples.raw(int(i)) for i in perf_idx]
        log_n = min(len(perf_idx), max(32, len(perf_idx) // 100))
        log_pos = set(np.sort(rng.permutation(len(perf_idx))[:log_n]).tolist())
        rows = []
        for a in ctx.arts:
            a.open()
            a.set_batch(None)
            acc = accuracy_run(a, samples, cfg.batch, perf_idx)
            rows.append({"artifact": a, "accuracy": acc})
            m = acc["metric"]
            ci = acc.get(f"{m}_ci95")
            info(f"  accuracy {a.name}: {m} {acc[m]:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
        state, order = self.performance_run(ctx, perf_raw, log_pos)
        for r in rows:
            a = r["artifact"]
            st = state[a.name]
            lat = pooled(st["windows"])
            r["latency"] = lat
            r["windows"] = [w.summary() for w in st["windows"]]
            r["_windows"] = st["windows"]
            r["startup"] = {"load_ms": a.load_ms, "first_inference_ms": st["first_inference_ms"],
                            "warmup": st["warmup"]}
            per = cfg.batch if self.offline else 1
            total_n = sum(w.count for w in st["windows"]) * per
            total_s = sum(w.seconds for w in st["windows"])
            r["throughput"] = {"throughput_sps": total_n / total_s if total_s else None,
                               "inferred_from_mean_e2e_sps": (1000 / lat["e2e"]["mean"]) * per}
            r["compliance"] = compliance(r["accuracy"]["_outputs"], st["logged"], perf_idx, a.precision) \
                if not self.offline else {"logged": 0, "passed": True, "detail": "offline: batched outputs not logged"}
            r["_raw"] = [v for w in st["windows"] for v in w.samples["e2e"]]
        self._order = order
        return rows

    def header(self, ctx) -> dict:
        return {"name": self.name, **({"batch": ctx.cfg.batch} if self.offline else {})}

    def settings(self, ctx) -> dict:
        return {"round_order": getattr(self, "_order", None)}

    def performance_run(self, ctx, perf_raw: list, log_pos: set):
        cfg, prof, arts = ctx.cfg, ctx.prof, ctx.arts
        steps, state = {}, {}
        for a in arts:
            a.set_batch(None if self.offline else 1)
            pre, post = a.pre(), a.device.postprocess
            logged: dict[int, dict] = {}
            steps[a.name] = _offline_step(a, pre, post, perf_raw, cfg.batch) if self.offline else \
                _single_step(a, pre, post, perf_raw, log_pos, logged)
            # first inference + warm-up, bounded by time and count
            state[a.name] = {"logged": logged, "first_inference_ms": None}
            t = time.perf_counter()
            steps[a.name](0)
            state[a.name]["first_inference_ms"] = a.first_inference_ms() or (time.perf_counter() - t) * 1e3
            state[a.name]["warmup"] = warmup(lambda i, a=a: steps[a.name](i), prof.warmup_s, prof.warmup_iters)
            state[a.name]["windows"] = []
            state[a.name]["next_i"] = 0
        rng = np.random.default_rng(cfg.seed + 1)
        order_log = []
        total = prof.windows * len(arts)
        with progress() as prog:
            bar = prog.add_task("performance", total=total, status="")
            for rnd in range(prof.windows):
                order = [arts[i] for i in rng.permutation(len(arts))]
                order_log.append([a.name for a in order])
                for a in order:
                    st = state[a.name]
                    for j in range(prof.rewarm_iters):  # re-warm after the other runners ran (discarded)
                        steps[a.name](st["next_i"] + j)
                    w = run_window(steps[a.name], rnd, prof.window_s, prof.window_count,
                                   start_at=st["next_i"] + prof.rewarm_iters)
                    st["next_i"] += prof.rewarm_iters + w.count
                    st["windows"].append(w)
                    prog.update(bar, advance=1, status=f"round {rnd + 1}: {a.name} p50 {w.summary()['e2e']['p50']:.3f} ms")
        return state, order_log


class Offline(SingleStream):
    name = "offline"
    offline = True


def _single_step(a, pre, post, perf_raw, log_pos, logged):
    n = len(perf_raw)

    def step(i: int) -> dict:
        k = i % n
        y, _, st = timed_pass(pre, a.infer, post, [perf_raw[k]])
        if k in log_pos and k not in logged:
            logged[k] = {name: v[0].copy() for name, v in y.items()}
        c = a.compute_ms()
        if c is not None:
            st["compute"] = c
        return st

    return step


def _offline_step(a, pre, post, perf_raw, batch: int):
    n = len(perf_raw)

    def step(i: int) -> dict:
        return timed_pass(pre, a.infer, post, [perf_raw[(i * batch + j) % n] for j in range(batch)])[2]

    return step


COMPLIANCE_TOL = {"fp32": 1e-3, "fp16": 2e-2, "bf16": 2e-2, "int8": 5e-2}


def compliance(acc_outputs: dict, perf_logged: dict, perf_idx, precision: str) -> dict:
    """The performance run's logged outputs equal the accuracy run's for the same samples (relative max diff
    over every output; the argmax of the first output must agree)."""
    diffs, agree, n = [], 0, 0
    for pos, y in perf_logged.items():
        ref = acc_outputs.get(int(perf_idx[pos]))
        if ref is None:
            continue
        n += 1
        worst = 0.0
        for name, r in ref.items():
            scale = max(1.0, float(np.abs(r).max())) if np.size(r) else 1.0
            worst = max(worst, float(np.abs(r - y[name]).max()) / scale if np.size(r) else 0.0)
        diffs.append(worst)
        first = next(iter(ref))
        agree += int(np.argmax(ref[first]) == np.argmax(y[first]))
    tol = COMPLIANCE_TOL.get(precision, 5e-2)
    worst = max(diffs) if diffs else 0.0
    ok = n > 0 and worst <= tol and agree / max(n, 1) >= (0.97 if precision == "int8" else 1.0)
    return {"logged": n, "top1_mismatches": n - agree, "max_rel_diff": worst, "tolerance": tol, "passed": ok}
