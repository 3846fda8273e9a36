#!/usr/bin/env python
"""Where should a detector's box decoding and NMS run: in the graph (ONNX ``NonMaxSuppression``, run by ONNX
Runtime or OpenVINO) or in edgeft's torch-free runtime (numpy)? Measured on a real detection bundle's outputs.

    .venv/bin/python benchmarks/detection_postprocess.py runs/detection-default/bundles/onnxruntime-fp32 [--n 300]

For each of N held-out scenes the bundle's raw head outputs (cls_logits, bbox_regression) are computed once;
then, interleaved per frame, the same post-processing runs three ways: numpy (edgeft's runtime), a post-processing
ONNX graph (softmax, box decoding, per-class NonMaxSuppression, top-k) in ONNX Runtime, and the same graph in
OpenVINO. Reported: p50/p99 per frame and whether the kept boxes agree with numpy's (IoU >= 0.99, same class).
The graph runs NMS per class without a pre-NMS top-k, so it does more work than the numpy path on a weak
detector's many low-score candidates; both keep max_det boxes by score.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def nms_graph(n_anchors: int, n_cls: int, anchors: np.ndarray, cfg: dict):
    """ONNX graph: (cls_logits [1,A,C+1], bbox_regression [1,A,4]) -> boxes [K,4], scores [K], labels [K]."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    w = np.array([10.0, 10.0, 5.0, 5.0], np.float32)
    a = anchors.astype(np.float32)
    wh = a[:, 2:] - a[:, :2]
    ctr = a[:, :2] + 0.5 * wh
    inits = [
        h.make_tensor("ctr", T.FLOAT, [1, n_anchors, 2], ctr.ravel()),
        h.make_tensor("wh", T.FLOAT, [1, n_anchors, 2], wh.ravel()),
        h.make_tensor("w_xy", T.FLOAT, [2], w[:2]), h.make_tensor("w_wh", T.FLOAT, [2], w[2:]),
        h.make_tensor("clip", T.FLOAT, [], [float(np.log(1000.0 / 16))]),
        h.make_tensor("half", T.FLOAT, [], [0.5]), h.make_tensor("zero", T.FLOAT, [], [0.0]),
        h.make_tensor("size", T.FLOAT, [], [float(cfg["size"])]),
        h.make_tensor("s0", T.INT64, [1], [0]), h.make_tensor("s1", T.INT64, [1], [1]),
        h.make_tensor("s2", T.INT64, [1], [2]), h.make_tensor("s4", T.INT64, [1], [4]),
        h.make_tensor("sbig", T.INT64, [1], [1 << 30]), h.make_tensor("ax2", T.INT64, [1], [2]),
        h.make_tensor("maxc", T.INT64, [1], [cfg["topk"]]),
        h.make_tensor("iou", T.FLOAT, [1], [cfg["nms_iou"]]),
        h.make_tensor("sth", T.FLOAT, [1], [cfg["score_thresh"]]),
        h.make_tensor("kmax", T.INT64, [1], [cfg["max_det"]]),
        h.make_tensor("c1", T.INT64, [1], [1]), h.make_tensor("c2", T.INT64, [1], [2]),
        h.make_tensor("ax1", T.INT64, [1], [1]),
    ]
    nodes = [
        h.make_node("Softmax", ["cls_logits"], ["prob"], axis=2),
        h.make_node("Slice", ["prob", "s1", "sbig", "ax2"], ["fg"]),                  # drop the background
        h.make_node("Transpose", ["fg"], ["scores"], perm=[0, 2, 1]),                  # [1, C, A]
        h.make_node("Slice", ["bbox_regression", "s0", "s2", "ax2"], ["dxy"]),
        h.make_node("Slice", ["bbox_regression", "s2", "s4", "ax2"], ["dwh"]),
        h.make_node("Div", ["dxy", "w_xy"], ["dxy_w"]), h.make_node("Div", ["dwh", "w_wh"], ["dwh_w"]),
        h.make_node("Min", ["dwh_w", "clip"], ["dwh_c"]),
        h.make_node("Mul", ["dxy_w", "wh"], ["off"]), h.make_node("Add", ["off", "ctr"], ["pc"]),
        h.make_node("Exp", ["dwh_c"], ["e"]), h.make_node("Mul", ["e", "wh"], ["pwh"]),
        h.make_node("Mul", ["pwh", "half"], ["hwh"]),
        h.make_node("Sub", ["pc", "hwh"], ["lt"]), h.make_node("Add", ["pc", "hwh"], ["rb"]),
        h.make_node("Concat", ["lt", "rb"], ["b_raw"], axis=2),
        h.make_node("Clip", ["b_raw", "zero", "size"], ["boxes"]),                     # [1, A, 4]
        h.make_node("NonMaxSuppression", ["boxes", "scores", "maxc", "iou", "sth"], ["sel"]),   # [K, 3]
        h.make_node("Slice", ["sel", "s1", "s2", "ax1"], ["cls_col"]),
        h.make_node("Slice", ["sel", "s2", "s4", "ax1"], ["box_col"]),
        h.make_node("Squeeze", ["cls_col", "ax1"], ["cls_k"]),
        h.make_node("Squeeze", ["box_col", "ax1"], ["box_k"]),
        h.make_node("Squeeze", ["scores", "s0"], ["scores2"]),                         # [C, A]
        h.make_node("Unsqueeze", ["cls_k", "ax1"], ["cls_k_u"]),
        h.make_node("Unsqueeze", ["box_k", "ax1"], ["box_k_u"]),
        h.make_node("Concat", ["cls_k_u", "box_k_u"], ["ij"], axis=1),
        h.make_node("GatherND", ["scores2", "ij"], ["sc_k"]),
        h.make_node("Shape", ["sc_k"], ["nk"]), h.make_node("Min", ["nk", "kmax"], ["k"]),
        h.make_node("TopK", ["sc_k", "k"], ["out_scores", "order"], axis=0),
        h.make_node("Gather", ["cls_k", "order"], ["out_labels"]),
        h.make_node("Gather", ["box_k", "order"], ["bk"]),
        h.make_node("Squeeze", ["boxes", "s0"], ["boxes2"]),
        h.make_node("Gather", ["boxes2", "bk"], ["out_boxes"]),
    ]
    g = h.make_graph(nodes, "ssd_postprocess",
                     [h.make_tensor_value_info("cls_logits", T.FLOAT, [1, n_anchors, n_cls + 1]),
                      h.make_tensor_value_info("bbox_regression", T.FLOAT, [1, n_anchors, 4])],
                     [h.make_tensor_value_info("out_boxes", T.FLOAT, None),
                      h.make_tensor_value_info("out_scores", T.FLOAT, None),
                      h.make_tensor_value_info("out_labels", T.INT64, None)], initializer=inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m)
    return m


def agree(ref: dict, boxes, scores, labels) -> float:
    from edgeft.tasks.detection.decode import match_fraction

    return match_fraction([ref], [{"boxes": boxes, "scores": scores, "labels": labels}], 0.99)[0]


def pct(x, q):
    x = np.sort(np.asarray(x))
    return float(x[min(len(x) - 1, int(np.ceil(q / 100 * len(x))) - 1)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/detection_postprocess.json"))
    a = ap.parse_args()

    import onnxruntime as ort
    import openvino as ov

    import edgeft
    from edgeft.utils.env import cpu_model as cpu_name

    model = edgeft.load(a.bundle, threads=a.threads, batch=1)
    dev = model.task
    samples = dev.samples("objects-on-photos:test", model.labels, a.n)
    outs = []
    with model:
        for i in range(len(samples)):
            outs.append(model.infer(model.prepare([samples.raw(i)])))
    cfg = dict(dev._cfg)
    A, C1 = outs[0]["cls_logits"].shape[1:]
    g = nms_graph(A, C1 - 1, dev._anchors, cfg)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    sess = ort.InferenceSession(g.SerializeToString(), so, providers=["CPUExecutionProvider"])
    core = ov.Core()
    cm = core.compile_model(core.read_model(g.SerializeToString(), b""), "CPU",
                            {"INFERENCE_NUM_THREADS": a.threads, "PERFORMANCE_HINT": "LATENCY",
                             "INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    times = {"numpy": [], "onnxruntime_graph": [], "openvino_graph": []}
    agreement = {"onnxruntime_graph": [], "openvino_graph": []}
    for rep in range(3):                       # interleaved: every frame through all three, 3 passes
        for o in outs:
            t0 = time.perf_counter_ns()
            ref = dev.decode(o)[0]
            t1 = time.perf_counter_ns()
            b, s, lab = sess.run(None, o)
            t2 = time.perf_counter_ns()
            r = req.infer(o)
            t3 = time.perf_counter_ns()
            times["numpy"].append((t1 - t0) / 1e6)
            times["onnxruntime_graph"].append((t2 - t1) / 1e6)
            times["openvino_graph"].append((t3 - t2) / 1e6)
            if rep == 0:
                agreement["onnxruntime_graph"].append(agree(ref, b, s, lab))
                vb, vs, vl = (r[cm.output(i)] for i in range(3))
                agreement["openvino_graph"].append(agree(ref, vb, vs, vl))
    n_det = float(np.mean([len(dev.decode(o)[0]["scores"]) for o in outs]))
    doc = {"bundle": str(a.bundle), "machine": f"{cpu_name()}, {a.threads} thread(s)", "python": platform.python_version(),
           "frames": len(outs), "passes": 3, "anchors": int(A), "classes": int(C1 - 1), "settings": cfg,
           "mean_detections_kept": round(n_det, 1),
           "per_frame_ms": {k: {"p50": round(pct(v, 50), 3), "p99": round(pct(v, 99), 3)} for k, v in times.items()},
           "kept_boxes_agree_with_numpy_iou99": {k: round(float(np.mean(v)), 4) for k, v in agreement.items()}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    sys.exit(main())
