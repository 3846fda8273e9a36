"""COCO mAP for detection (torch-free): pycocotools' ``COCOeval`` matches detections to ground truth once per image;
the precision/recall accumulation is then repeated on bootstrap resamples of the images (percentile 95% CI) and
per class. ``accumulate`` reproduces ``COCOeval.accumulate`` for area "all" and 100 detections (tested equal)."""
from __future__ import annotations

import contextlib
import io

import numpy as np

REC_THRS = np.linspace(0.0, 1.0, 101)
IOU_THRS = np.linspace(0.5, 0.95, 10)


def coco_eval(preds: list[dict], targets: list[dict], n_classes: int):
    """pycocotools' per-image matching of ``preds`` (boxes xyxy, scores, labels 0..C-1) against ``targets``."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        from ...errors import BackendUnavailable

        raise BackendUnavailable("detection mAP needs pycocotools", hint="pip install 'edgeft[runtime]'") from None
    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1, "width": 1, "height": 1})
        for b, lab in zip(np.asarray(t["boxes"], np.float64).reshape(-1, 4), np.asarray(t["labels"]).ravel()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(lab) + 1,
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s, lab in zip(np.asarray(p["boxes"], np.float64).reshape(-1, 4), np.asarray(p["scores"]).ravel(),
                             np.asarray(p["labels"]).ravel()):
            dets.append({"image_id": i + 1, "category_id": int(lab) + 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "score": float(s)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:
            dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        e = COCOeval(gt, dt, "bbox")
        e.evaluate()
    return e


def accumulate(e, img_sample: np.ndarray | None = None) -> np.ndarray:
    """precision[T, R, K] (area all, 100 detections) over ``img_sample`` (indices into the evaluated images, with
    repeats for a bootstrap); -1 where a class has no ground truth in the sample."""
    p = e.params
    n_img, n_area = len(p.imgIds), len(p.areaRng)
    sample = np.arange(n_img) if img_sample is None else np.asarray(img_sample)
    max_det = p.maxDets[-1]
    out = -np.ones((len(p.iouThrs), len(p.recThrs), len(p.catIds)))
    for k in range(len(p.catIds)):
        es = [e.evalImgs[k * n_area * n_img + i] for i in sample]
        es = [x for x in es if x is not None]
        if not es:
            continue
        scores = np.concatenate([x["dtScores"][:max_det] for x in es])
        order = np.argsort(-scores, kind="mergesort")
        dtm = np.concatenate([x["dtMatches"][:, :max_det] for x in es], axis=1)[:, order]
        dtig = np.concatenate([x["dtIgnore"][:, :max_det] for x in es], axis=1)[:, order]
        gtig = np.concatenate([x["gtIgnore"] for x in es])
        npig = int(np.count_nonzero(gtig == 0))
        if npig == 0:
            continue
        tps = np.logical_and(dtm, np.logical_not(dtig))
        fps = np.logical_and(np.logical_not(dtm), np.logical_not(dtig))
        tp_sum = np.cumsum(tps, axis=1).astype(float)
        fp_sum = np.cumsum(fps, axis=1).astype(float)
        for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
            out[t, :, k] = _precision_at(tp, fp, npig, p.recThrs)
    return out


def _precision_at(tp: np.ndarray, fp: np.ndarray, npig: float, rec_thrs: np.ndarray) -> np.ndarray:
    """COCOeval.accumulate's interpolated precision at the recall thresholds, from cumulative TP/FP counts."""
    rc = tp / npig
    pr = tp / (fp + tp + np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
    inds = np.searchsorted(rc, rec_thrs, side="left")
    q = np.zeros(len(rec_thrs))
    valid = inds < len(pr)
    q[valid] = pr[inds[valid]]
    return q


class _Boot:
    """The per-class matching of one evaluation, pre-sorted once, so a bootstrap resample (image counts) is a few
    weighted cumulative sums: an image drawn c times contributes its detections and ground truth c times."""

    def __init__(self, e):
        p = e.params
        n_img, n_area = len(p.imgIds), len(p.areaRng)
        self.rec_thrs, self.n_img, self.n_thr = p.recThrs, n_img, len(p.iouThrs)
        max_det = p.maxDets[-1]
        self.cls = []
        for k in range(len(p.catIds)):
            es = [(i, e.evalImgs[k * n_area * n_img + i]) for i in range(n_img)]
            es = [(i, x) for i, x in es if x is not None]
            if not es:
                self.cls.append(None)
                continue
            scores = np.concatenate([x["dtScores"][:max_det] for _, x in es])
            img = np.concatenate([np.full(len(x["dtScores"][:max_det]), i) for i, x in es]).astype(np.int64)
            order = np.argsort(-scores, kind="mergesort")
            dtm = np.concatenate([x["dtMatches"][:, :max_det] for _, x in es], axis=1)[:, order]
            dtig = np.concatenate([x["dtIgnore"][:, :max_det] for _, x in es], axis=1)[:, order]
            npig = np.zeros(n_img)
            for i, x in es:
                npig[i] = np.count_nonzero(np.asarray(x["gtIgnore"]) == 0)
            tps = np.logical_and(dtm, np.logical_not(dtig)).astype(float)
            fps = np.logical_and(np.logical_not(dtm), np.logical_not(dtig)).astype(float)
            self.cls.append((img[order], tps, fps, npig))

    def precision(self, counts: np.ndarray) -> np.ndarray:
        out = -np.ones((self.n_thr, len(self.rec_thrs), len(self.cls)))
        for k, c in enumerate(self.cls):
            if c is None:
                continue
            img, tps, fps, npig_img = c
            npig = float(counts @ npig_img)
            if npig == 0:
                continue
            w = counts[img]
            tp_sum, fp_sum = np.cumsum(tps * w, axis=1), np.cumsum(fps * w, axis=1)
            for t in range(self.n_thr):
                out[t, :, k] = _precision_at(tp_sum[t], fp_sum[t], npig, self.rec_thrs)
        return out


def summarize(prec: np.ndarray) -> tuple[float, float]:
    """(mAP@[.5:.95], mAP@.5) from precision[T, R, K]."""
    def mean(x):
        x = x[x > -1]
        return float(x.mean()) if x.size else 0.0
    return mean(prec), mean(prec[0])


class MeanAP:
    """Accumulates per-image predictions and targets; ``result()`` is COCO mAP@[.5:.95] ("map", the primary
    metric) and mAP@.5 with bootstrap 95% intervals over images, and AP per class."""

    metric = "map"

    def __init__(self, n_classes: int, labels: list[str] | None = None, boots: int = 200, seed: int = 0):
        self.n_classes, self.labels, self.boots, self.seed = n_classes, labels, boots, seed
        self.preds: list[dict] = []
        self.targets: list[dict] = []

    def add(self, preds: list[dict], targets: list[dict]) -> None:
        self.preds += list(preds)
        self.targets += list(targets)

    def result(self) -> dict:
        n = len(self.targets)
        if n == 0:
            return {"metric": "map", "map": 0.0, "map50": 0.0, "n": 0}
        e = coco_eval(self.preds, self.targets, self.n_classes)
        prec = accumulate(e)
        m, m50 = summarize(prec)
        rng = np.random.default_rng(self.seed)
        b = _Boot(e)
        boot = np.array([summarize(b.precision(np.bincount(rng.integers(0, n, n), minlength=n).astype(float)))
                         for _ in range(self.boots)])
        per_class = {}
        for k in range(self.n_classes):
            x = prec[:, :, k]
            name = self.labels[k] if self.labels else str(k)
            per_class[name] = round(float(x[x > -1].mean()), 4) if (x > -1).any() else None
        ci = lambda col: [float(np.percentile(boot[:, col], 2.5)), float(np.percentile(boot[:, col], 97.5))]  # noqa: E731
        return {"metric": "map", "map": m, "map50": m50, "n": n, "map_ci95": ci(0), "map50_ci95": ci(1),
                "ci_method": f"bootstrap over images ({self.boots} resamples, percentile)",
                "boxes": int(sum(len(t["labels"]) for t in self.targets)),
                "detections": int(sum(len(p["labels"]) for p in self.preds)), "ap_per_class": per_class}
