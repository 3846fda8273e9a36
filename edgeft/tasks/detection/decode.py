"""SSD post-processing in numpy (torch-free): softmax scores, box decoding against the anchors
(torchvision's BoxCoder with weights (10, 10, 5, 5)), per-class score threshold and top-k, class-aware NMS.
The same arithmetic as ``torchvision.models.detection.SSD.postprocess_detections`` (tested equal), so the
device runs what PyTorch evaluated."""
from __future__ import annotations

import math

import numpy as np

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
_CLIP = math.log(1000.0 / 16)


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def decode_boxes(rel: np.ndarray, anchors: np.ndarray, weights=BOX_WEIGHTS) -> np.ndarray:
    """(A, 4) regression deltas + (A, 4) xyxy anchors -> (A, 4) xyxy boxes."""
    wx, wy, ww, wh = weights
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    cx = anchors[:, 0] + 0.5 * widths
    cy = anchors[:, 1] + 0.5 * heights
    dx, dy = rel[:, 0] / wx, rel[:, 1] / wy
    dw, dh = np.minimum(rel[:, 2] / ww, _CLIP), np.minimum(rel[:, 3] / wh, _CLIP)
    pcx, pcy = dx * widths + cx, dy * heights + cy
    pw, ph = np.exp(dw) * widths, np.exp(dh) * heights
    return np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 4) x (m, 4) xyxy -> (n, m) IoU."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):    # two empty boxes: NaN, never "overlapping" (as torch)
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS: indices kept, best score first (torchvision.ops.nms semantics). One IoU matrix, then a walk
    that only does work for the boxes it keeps."""
    order = np.argsort(-scores, kind="stable")
    if order.size <= 1:
        return order.astype(np.int64)
    over = box_iou(boxes[order], boxes[order]) > iou
    removed = np.zeros(order.size, bool)
    keep = []
    for i in range(order.size):
        if removed[i]:
            continue
        keep.append(i)
        removed |= over[i]
    return order[np.asarray(keep, np.int64)]


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float,
                max_keep: int | None = None) -> np.ndarray:
    """Class-aware NMS (torchvision.ops.batched_nms): NMS within each class, kept indices best score first;
    ``max_keep`` stops after that many (the same as slicing the full result: whether a box is kept depends only on
    the higher-scored boxes of its class, and they are visited first). One walk in global score order with one
    IoU row per kept box, against its own class only: a few hundred pairs per kept box instead of a full IoU
    matrix per class."""
    if boxes.size == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    members = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
    removed = np.zeros(scores.size, bool)
    limit = scores.size if max_keep is None else max_keep
    keep: list[int] = []
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    for i in order.tolist():
        if removed[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        idx = members[int(labels[i])]
        w = np.minimum(x1[idx], x1[i]) - np.maximum(x0[idx], x0[i])
        h = np.minimum(y1[idx], y1[i]) - np.maximum(y0[idx], y0[i])
        inter = np.maximum(w, 0) * np.maximum(h, 0)
        with np.errstate(invalid="ignore", divide="ignore"):   # two empty boxes: NaN, never "overlapping" (as torch)
            removed[idx[inter / (areas[idx] + areas[i] - inter) > iou]] = True
    return np.asarray(keep, np.int64)


def ssd_postprocess(cls_logits: np.ndarray, bbox_regression: np.ndarray, anchors: np.ndarray, size: int,
                    score_thresh: float = 0.01, nms_iou: float = 0.55, topk: int = 300, max_det: int = 100) -> list[dict]:
    """Per image: {"boxes" (n, 4) xyxy in input pixels, "scores" (n,), "labels" (n,) 0..C-1}."""
    out = []
    for logits, rel in zip(cls_logits, bbox_regression):
        scores = softmax(logits.astype(np.float32))
        boxes = np.clip(decode_boxes(rel.astype(np.float32), anchors), 0, size)
        bb, ss, ll = [], [], []
        for c in range(1, scores.shape[1]):
            s = scores[:, c]
            keep = np.flatnonzero(s > score_thresh)
            if keep.size > topk:
                keep = keep[np.argsort(-s[keep], kind="stable")[:topk]]
            bb.append(boxes[keep])
            ss.append(s[keep])
            ll.append(np.full(keep.size, c - 1, np.int64))
        b, s, lab = np.concatenate(bb), np.concatenate(ss), np.concatenate(ll)
        k = batched_nms(b, s, lab, nms_iou, max_keep=max_det)
        out.append({"boxes": b[k], "scores": s[k], "labels": lab[k]})
    return out


def match_fraction(ref: list[dict], got: list[dict], iou: float = 0.9) -> tuple[float, float, int]:
    """Parity of detections: (fraction of reference boxes matched by a box of the same class at IoU >= ``iou``,
    mean absolute score difference of the matched pairs, reference boxes)."""
    matched, diffs, total = 0, [], 0
    for r, g in zip(ref, got):
        total += len(r["labels"])
        used = np.zeros(len(g["labels"]), bool)
        for b, s, lab in zip(r["boxes"], r["scores"], r["labels"]):
            cand = np.flatnonzero((g["labels"] == lab) & ~used)
            if cand.size == 0:
                continue
            gb = g["boxes"][cand]
            lt = np.maximum(b[:2], gb[:, :2])
            rb = np.minimum(b[2:], gb[:, 2:])
            inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
            ov = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1]) - inter + 1e-9)
            j = int(np.argmax(ov))
            if ov[j] >= iou:
                used[cand[j]] = True
                matched += 1
                diffs.append(abs(float(s) - float(g["scores"][cand[j]])))
    return (matched / total if total else 1.0), (float(np.mean(diffs)) if diffs else 0.0), total
