"""``edgeft bench --profile-layers``: where a bundle spends its time, layer by layer, from the runtime's own
counters (OpenVINO's performance counters, ONNX Runtime's profiler), torch-free.

Per layer: the mean time per inference over ``iters`` single-sample inferences of a real preprocessed sample,
the runtime's kernel (OpenVINO ``exec_type``, e.g. ``brgconv_avx512_amx_I8``, which shows whether a layer really
runs in int8/bf16), and its share of the summed layer time. Counter overhead makes the sum larger than the
bench's latency: read the shares, not the absolute total.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..utils.io import atomic_write_json, atomic_write_text


def profile_layers(bundle: str | Path, feeds: dict[str, np.ndarray], threads: int | None = None,
                   iters: int = 50) -> dict:
    from ..bundle import read_manifest

    bundle = Path(bundle)
    m = read_manifest(bundle)
    fmt = m["format"]
    if fmt == "openvino":
        rows, how = _openvino(bundle, m, feeds, threads, iters)
    elif fmt in ("onnx", "onnxruntime"):
        rows, how = _onnxruntime(bundle, m, feeds, threads, iters)
    else:
        return {"bundle": str(bundle), "format": fmt, "layers": [], "note": f"no per-layer profiler for {fmt} here"
                " (TensorRT: trtexec --dumpProfile on the device)"}
    total = sum(r["ms"] for r in rows) or 1e-12
    rows.sort(key=lambda r: -r["ms"])
    for r in rows:
        r["share"] = r["ms"] / total
    return {"bundle": str(bundle), "format": fmt, "precision": m["precision"], "iters": iters, "threads": threads,
            "profiler": how, "sum_ms": total, "layers": rows}


def _openvino(bundle, m, feeds, threads, iters):
    import openvino as ov

    from ..backends.openvino import _HINT
    from ..targets import bundle_compute

    core = ov.Core()
    model = core.read_model(str(bundle / m["model_files"]["model"]))
    x = next(iter(feeds.values()))
    model.reshape({model.inputs[0]: list(x.shape)})
    cfg = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _HINT[bundle_compute(m)]}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    req = core.compile_model(model, "CPU", cfg).create_infer_request()
    acc: dict[str, dict] = {}
    for i in range(iters + 5):
        req.infer({0: x})
        if i < 5:      # warm-up
            continue
        for p in req.profiling_info:
            if str(p.status).endswith("NOT_RUN"):
                continue
            r = acc.setdefault(p.node_name, {"layer": p.node_name, "type": p.node_type, "kernel": p.exec_type,
                                             "ms": 0.0})
            r["ms"] += p.real_time.total_seconds() * 1e3 / iters
    return list(acc.values()), "OpenVINO performance counters (PERF_COUNT), real_time per node"


def _onnxruntime(bundle, m, feeds, threads, iters):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgeft-ortprof-") as d:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "prof")
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
        sess = ort.InferenceSession(str(bundle / m["model_files"]["model"]), so, providers=["CPUExecutionProvider"])
        for _ in range(5 + iters):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, list] = {}
    for e in events:       # chronological: each node's last `iters` runs are the measured ones (5 warm-up first)
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        per.setdefault(e["name"][: -len("_kernel_time")], []).append(e)
    rows = []
    for name, evs in per.items():
        args = evs[-1].get("args") or {}
        rows.append({"layer": name, "type": args.get("op_name", "?"),
                     "kernel": args.get("provider", "CPUExecutionProvider"),
                     "ms": sum(float(e.get("dur", 0)) for e in evs[-iters:]) / 1e3 / iters})
    return rows, "ONNX Runtime profiler (enable_profiling), kernel time per node"


def markdown(prof: dict, top: int = 15) -> str:
    if not prof["layers"]:
        return f"{prof['bundle']}: {prof.get('note', 'no layers')}\n"
    lines = [f"#### layers of {prof['bundle']} ({prof['format']}/{prof['precision']}, {prof['iters']} inferences, "
             f"{prof['threads'] or 'default'} thread(s); {prof['profiler']}; sum {prof['sum_ms']:.3f} ms)", "",
             "| layer | type | kernel | ms / inference | share |", "|---|---|---|---|---|"]
    for r in prof["layers"][:top]:
        lines.append(f"| {r['layer']} | {r['type']} | {r['kernel']} | {r['ms']:.4f} | {100 * r['share']:.1f}% |")
    rest = prof["layers"][top:]
    if rest:
        lines.append(f"| ({len(rest)} more) | | | {sum(r['ms'] for r in rest):.4f} | "
                     f"{100 * sum(r['share'] for r in rest):.1f}% |")
    return "\n".join(lines) + "\n"


def write(prof: dict, out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    atomic_write_json(out_dir / f"layers_{safe}.json", prof)
    p = out_dir / f"layers_{safe}.md"
    atomic_write_text(p, markdown(prof))
    return p
