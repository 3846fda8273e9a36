"""Per-layer INT8 sensitivity of a Q/DQ ONNX graph, torch-free (ONNX + ONNX Runtime).

For every quantized compute node (Conv, Gemm, MatMul) of the INT8 graph, a variant runs *that one node* in
float (its input Q/DQ pairs bypassed, its original FP32 weight and bias restored) and everything else in INT8,
on the same val samples. A layer's sensitivity is how much of the INT8 model's output error that one change
removes (normalised logit MSE against the FP32 model; top-1 agreement is kept too). Leave-one-out, the ranking
NNCF's accuracy control also uses, measured on the runtime that will run the model (ORT's real int8 kernels,
saturation included) rather than estimated from weights.

Example::

    from edgeft.optimize.sensitivity import layer_sensitivity
    rows = layer_sensitivity("model_fp32.onnx", "model_int8.onnx", feeds, threads=2)
    rows[0]["node"], rows[0]["gain"]        # the most sensitive layer
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def _session(model_bytes: bytes, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _run(sess, feeds: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    n = next(iter(feeds.values())).shape[0]
    outs = [sess.run(None, {k: v[s:s + batch] for k, v in feeds.items()})[0] for s in range(0, n, batch)]
    return np.concatenate(outs).reshape(n, -1).astype(np.float64)


def _error(y: np.ndarray, ref: np.ndarray) -> dict:
    scale = float(np.mean((ref - ref.mean(axis=1, keepdims=True)) ** 2)) or 1.0
    return {"nmse": float(np.mean((y - ref) ** 2) / scale),
            "agree": float(np.mean(np.argmax(y, 1) == np.argmax(ref, 1)))}


def quantized_nodes(qdq) -> list:
    """Compute nodes of a Q/DQ graph whose data input comes from a DequantizeLinear (i.e. that run in INT8)."""
    producer = {o: n for n in qdq.graph.node for o in n.output}
    out = []
    for n in qdq.graph.node:
        if n.op_type in COMPUTE_OPS and n.input and (p := producer.get(n.input[0])) is not None \
                and p.op_type == "DequantizeLinear":
            out.append(n)
    return out


def float_variant(qdq, node_name: str, fp32_inits: dict[str, np.ndarray]):
    """A copy of the Q/DQ model in which the node ``node_name`` computes in float. Activations: the
    QuantizeLinear's float input clamped to the quantizer's range without rounding (ORT's quantizer drops a
    ReLU/Clip that the range already applies, so a bare bypass would lose it); weights and bias: the FP32 graph's
    initializer (``W_quantized`` -> ``W``), else the dequantized value."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    nodes = []
    for n in m.graph.node:      # detached copies: the repeated field is rebuilt below
        c = onnx.NodeProto()
        c.CopyFrom(n)
        nodes.append(c)
    pos = next(i for i, n in enumerate(nodes) if n.name == node_name)
    node = nodes[pos]
    producer = {o: n for n in nodes for o in n.output}
    inits = {i.name: i for i in m.graph.initializer}
    tag = node.name or node.output[0]
    extra_nodes, extra_inits = [], []
    for k, name in enumerate(list(node.input)):
        d = producer.get(name)
        if d is None or d.op_type != "DequantizeLinear":
            continue
        src = d.input[0]
        q = producer.get(src)
        if q is not None and q.op_type == "QuantizeLinear":
            lo, hi = _q_range(q, inits)
            extra_inits += [numpy_helper.from_array(np.array(lo, np.float32), name=f"{tag}__float{k}_lo"),
                            numpy_helper.from_array(np.array(hi, np.float32), name=f"{tag}__float{k}_hi")]
            extra_nodes.append(helper.make_node("Clip", [q.input[0], f"{tag}__float{k}_lo", f"{tag}__float{k}_hi"],
                                                [f"{tag}__float{k}"], name=f"{tag}__float{k}_clip"))
            node.input[k] = f"{tag}__float{k}"
        elif src in inits:
            base = src[: -len("_quantized")] if src.endswith("_quantized") else src
            val = fp32_inits[base] if base in fp32_inits else _dequantize(d, inits)
            extra_inits.append(numpy_helper.from_array(np.asarray(val), name=f"{tag}__float{k}"))
            node.input[k] = f"{tag}__float{k}"
    del m.graph.node[:]
    m.graph.node.extend(nodes[:pos] + extra_nodes + [node] + nodes[pos + 1:])
    m.graph.initializer.extend(extra_inits)
    return m


def keep_float(qdq_path: str | Path, fp32_path: str | Path, names: list[str]) -> list[str]:
    """Rewrite a Q/DQ ONNX file so the nodes ``names`` compute in float exactly as :func:`float_variant` measured
    them (ORT's ``nodes_to_exclude`` alone leaves a Q/DQ pair on an excluded conv's input when its producer, a
    ReLU, is quantized). Returns the names found."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(qdq_path))
    fp32_inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32_path)).graph.initializer}
    present = {n.name for n in m.graph.node}
    done = []
    for name in names:
        if name in present:
            m = float_variant(m, name, fp32_inits)
            done.append(name)
    onnx.save(m, str(qdq_path))
    return done


def _q_range(q, inits) -> tuple[float, float]:
    """The float range a QuantizeLinear saturates to: [(qmin - zp) * s, (qmax - zp) * s]."""
    from onnx import numpy_helper

    s = float(np.asarray(numpy_helper.to_array(inits[q.input[1]])).reshape(-1)[0])
    if len(q.input) > 2 and q.input[2] in inits:
        z = numpy_helper.to_array(inits[q.input[2]])
        info = np.iinfo(z.dtype)
        zp = float(np.asarray(z).reshape(-1)[0])
    else:
        info, zp = np.iinfo(np.uint8), 0.0
    return (info.min - zp) * s, (info.max - zp) * s


def _dequantize(d, inits) -> np.ndarray:
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[d.input[0]]).astype(np.float64)
    s = numpy_helper.to_array(inits[d.input[1]]).astype(np.float64)
    z = numpy_helper.to_array(inits[d.input[2]]).astype(np.float64) if len(d.input) > 2 and d.input[2] else 0.0
    axis = next((a.i for a in d.attribute if a.name == "axis"), 1)
    if np.ndim(s) == 1 and s.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), np.reshape(z, shape) if np.ndim(z) else z
    return ((q - z) * s).astype(np.float32)


def layer_sensitivity(fp32_onnx: str | Path, qdq_onnx: str | Path, feeds: dict[str, np.ndarray],
                      threads: int | None = None, on_progress=None) -> dict:
    """Leave-one-out sensitivity of every INT8 compute layer; returns ``{"layers": [...] (most sensitive first),
    "int8": error of the all-INT8 model, "samples", "seconds"}``. Each layer row: node, op, nmse and agree of
    the variant with that layer in float, ``gain`` (INT8 nmse minus the variant's: the error it removes)."""
    import onnx
    from onnx import numpy_helper

    t0 = time.perf_counter()
    fp32 = onnx.load(str(fp32_onnx))
    qdq = onnx.load(str(qdq_onnx))
    fp32_inits = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    ref = _run(_session(fp32.SerializeToString(), threads), feeds)
    full = _error(_run(_session(qdq.SerializeToString(), threads), feeds), ref)
    nodes = quantized_nodes(qdq)
    rows = []
    for i, node in enumerate(nodes):
        variant = float_variant(qdq, node.name, fp32_inits)
        e = _error(_run(_session(variant.SerializeToString(), threads), feeds), ref)
        rows.append({"node": node.name, "op": node.op_type, "index": i, **e, "gain": full["nmse"] - e["nmse"],
                     "agree_gain": e["agree"] - full["agree"]})
        if on_progress:
            on_progress(i + 1, len(nodes))
    order = sorted(rows, key=lambda r: (-r["gain"], r["index"]))
    return {"layers": order, "int8": full, "samples": int(next(iter(feeds.values())).shape[0]),
            "method": "leave-one-out: each quantized layer in float alone, ONNX Runtime, normalised logit MSE vs "
                      "FP32", "seconds": round(time.perf_counter() - t0, 1)}
