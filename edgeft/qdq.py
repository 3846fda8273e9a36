"""Static checks of Q/DQ ONNX graphs against TensorRT's explicit-quantization rules (needs only `onnx`).

TensorRT (explicit quantization) wants: int8 QuantizeLinear/DequantizeLinear with zero point 0 (symmetric),
per-channel weight scales along the output-channel axis (Conv: axis 0; Gemm with transB=1: axis 0), per-tensor
activation scales, Q/DQ on both the data and the weight input of every Conv/Gemm/MatMul, and opset >= 13.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
# TensorRT propagates a DequantizeLinear forward across ops that commute with quantization, so a DQ before them
# still quantizes the consumer: shape-only ops, and max pooling (max(s*q) = s*max(q) for a positive scale s;
# ResNet's stem Conv-ReLU-MaxPool-Conv is quantized at the ReLU output, before the MaxPool).
SHAPE_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "MaxPool", "GlobalMaxPool")


def tensorrt_violations(model_or_path) -> list[str]:
    """Return human-readable rule violations (empty list = the graph follows TensorRT's rules)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    g = m.graph
    out: list[str] = []
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        out.append(f"opset {opset} < 13 (per-channel Q/DQ needs 13)")
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts = {}
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    values = {**inits, **consts}
    producer = {o: n for n in g.node for o in n.output}
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return ["no QuantizeLinear/DequantizeLinear nodes: not a Q/DQ graph"]
    for n in qdq:
        if len(n.input) < 3:
            out.append(f"{n.op_type} {n.name or n.output[0]}: no zero point (defaults to uint8)")
            continue
        zp = values.get(n.input[2])
        if zp is None:
            out.append(f"{n.op_type} {n.name or n.output[0]}: zero point is not a constant")
            continue
        if zp.dtype != np.int8:
            out.append(f"{n.op_type} {n.name or n.output[0]}: zero point dtype {zp.dtype} (TensorRT needs int8)")
        if np.any(zp != 0):
            out.append(f"{n.op_type} {n.name or n.output[0]}: non-zero zero point (TensorRT needs symmetric)")
    for n in g.node:
        if n.op_type not in COMPUTE_OPS:
            continue
        name = n.name or n.output[0]
        for pos, role in ((0, "data"), (1, "weight")):
            if len(n.input) <= pos:
                continue
            src = producer.get(n.input[pos])
            while src is not None and src.op_type in SHAPE_OPS:
                src = producer.get(src.input[0])
            if src is None or src.op_type != "DequantizeLinear":
                out.append(f"{n.op_type} {name}: {role} input is not produced by DequantizeLinear")
                continue
            scale = values.get(src.input[1])
            if scale is None:
                continue
            axis = next((a.i for a in src.attribute if a.name == "axis"), 1)
            if role == "data" and scale.size != 1:
                out.append(f"{n.op_type} {name}: activation scale is per-channel ({scale.size}); TensorRT wants per-tensor")
            if role == "weight" and scale.size > 1:
                want = 0
                if n.op_type == "Gemm":
                    trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
                    want = 0 if trans_b else 1
                elif n.op_type == "MatMul":
                    want = 1
                elif n.op_type == "ConvTranspose":
                    want = 1
                if axis != want:
                    out.append(f"{n.op_type} {name}: weight scales on axis {axis}, expected axis {want} (output channels)")
    return out


def fold_constant_casts(model):
    """Replace Cast(constant) and Identity(constant) by initializers of the resulting value.

    The TorchScript exporter emits Q/DQ zero points as Cast/Identity of constants; TensorRT's parser (and the
    rules above) want plain constants of the final dtype. Returns the number of folded nodes."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    folded = 0
    while True:
        known = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        known[n.output[0]] = numpy_helper.to_array(a.t)
        graph_outputs = {o.name for o in g.output}
        todo = [n for n in g.node if n.op_type in ("Cast", "Identity") and n.input[0] in known
                and n.output[0] not in graph_outputs]
        if not todo:
            break
        for n in todo:
            v = np.asarray(known[n.input[0]])
            if n.op_type == "Cast":
                to = next(a.i for a in n.attribute if a.name == "to")
                v = v.astype(helper.tensor_dtype_to_np_dtype(to))
            g.initializer.append(numpy_helper.from_array(v, n.output[0]))
            g.node.remove(n)
            folded += 1
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for n in [n for n in g.node if n.op_type == "Constant" and n.output[0] not in used]:
        g.node.remove(n)
    keep = [i for i in g.initializer if i.name in used]
    if len(keep) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)
    onnx.checker.check_model(model)
    return folded


def fold_weight_quantizers(src, dst) -> dict:
    """Replace QuantizeLinear(constant FP32 weight) with the int8/uint8 constant it computes.

    A QAT export keeps FP32 weights behind QuantizeLinear nodes; runtimes fold them at load, but the file stays
    4x larger than a PTQ bundle and every load repeats the work. The folded tensor is exactly what the runtime
    would compute (ONNX QuantizeLinear: saturate(round_half_to_even(x / scale) + zero_point)), so the graph's
    output does not change. Returns {"folded": N, "bytes_before": .., "bytes_after": ..}.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    keep, new_inits, dropped, folded = [], [], set(), 0
    for n in g.node:
        if (n.op_type == "QuantizeLinear" and n.domain in ("", "ai.onnx") and len(n.input) == 3
                and all(i in inits for i in n.input)):
            x = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            zp = numpy_helper.to_array(inits[n.input[2]])
            if zp.dtype not in (np.int8, np.uint8):
                keep.append(n)
                continue
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and scale.size > 1:
                shape = [1] * x.ndim
                shape[axis % x.ndim] = -1
                scale, zpv = scale.reshape(shape), zp.astype(np.int32).reshape(shape)
            else:
                zpv = zp.astype(np.int32)
            info = np.iinfo(zp.dtype)
            q = np.clip(np.rint(x / scale) + zpv, info.min, info.max).astype(zp.dtype)
            new_inits.append(numpy_helper.from_array(q, n.output[0]))
            folded += 1
            if uses.get(n.input[0], 0) == 1:
                dropped.add(n.input[0])
            continue
        keep.append(n)
    if folded:
        del g.node[:]
        g.node.extend(keep)
        kept = [i for i in g.initializer if i.name not in dropped]
        del g.initializer[:]
        g.initializer.extend(kept + new_inits)
    before = Path(src).stat().st_size
    onnx.save(m, str(dst))
    return {"folded": folded, "bytes_before": before, "bytes_after": Path(dst).stat().st_size}
