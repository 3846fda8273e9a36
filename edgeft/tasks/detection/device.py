"""Object detection, device side (numpy + Pillow): the image preprocessing, SSD decoding + NMS in numpy (see
:mod:`.decode` for where it runs and why), COCO mAP with a bootstrap interval, and the parity rule (raw head
outputs, boxes matched at IoU >= 0.9, score differences, mAP)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.images import IMAGE_EXTS, Preprocess, open_image, preprocess_images
from ...errors import DataError
from ..base import Samples
from ..image_cls.device import _check_shape, check_image_preprocess
from .decode import match_fraction, ssd_postprocess
from .metric import MeanAP

TOLERANCE = {
    "fp32": {"max_abs_diff_rel": 1e-4, "boxes_matched_min": 0.99},
    "fp16": {"boxes_matched_min": 0.9},
    "bf16": {"boxes_matched_min": 0.9},
    "int8": {"gate": "--max-drop on validation mAP@[.5:.95] (points)"},
}


class DetectionDevice:
    name = "detection"
    title = "object detection"
    metric = "map"
    input_word = "images"
    input_exts = frozenset(IMAGE_EXTS)
    tolerance = TOLERANCE
    builtin_sources = ("objects-on-photos",)

    # ------------------------------------------------------------------------------ preprocessing
    def check_preprocess(self, manifest: dict) -> None:
        pp = manifest.get("preprocess") or {}
        want = check_image_preprocess(pp)
        _check_shape(manifest, want)
        d = manifest.get("detection") or {}
        if d.get("decoder") != "ssd" or not isinstance(d.get("anchors"), str):
            raise ValueError(f"detection.decoder = {d.get('decoder')!r} (this edgeft decodes 'ssd' heads with an "
                             f"anchors file)")
        for k, lo, hi in (("score_thresh", 0.0, 1.0), ("nms_iou", 0.0, 1.0)):
            v = d.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"detection.{k} = {v!r} (a number in {lo}..{hi})")
        for k in ("topk", "max_det"):
            v = d.get(k)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000:
                raise ValueError(f"detection.{k} = {v!r} (an integer in 1..10000)")

    def preprocessor(self, manifest: dict):
        p = Preprocess.from_dict(manifest["preprocess"])
        name = manifest["inputs"][0]["name"] if manifest.get("inputs") else "input"
        return lambda raws: {name: preprocess_images(raws, p)}

    def read(self, path) -> np.ndarray:
        return np.asarray(open_image(path))

    # ---------------------------------------------------------------------------- post-processing
    def bound(self, manifest: dict, bundle_dir=None) -> "DetectionDevice":
        """This task for one bundle (or, with ``manifest["_anchors"]``, one PyTorch model): decoding needs its
        anchors and settings."""
        b = DetectionDevice()
        d = manifest["detection"]
        if "_anchors" in manifest:
            b._anchors = np.asarray(manifest["_anchors"], np.float32)
        else:
            from ...bundle import safe_path

            b._anchors = np.load(safe_path(Path(bundle_dir), d["anchors"], "anchors file"), allow_pickle=False)
        b._cfg = {"size": int(manifest["preprocess"]["size"]), "score_thresh": float(d["score_thresh"]),
                  "nms_iou": float(d["nms_iou"]), "topk": int(d["topk"]), "max_det": int(d["max_det"])}
        return b

    def decode(self, outputs: dict) -> list[dict]:
        return ssd_postprocess(outputs["cls_logits"], outputs["bbox_regression"], self._anchors, **self._cfg)

    def postprocess(self, outputs: dict, k: int = 5) -> list[dict]:
        return self.decode(outputs)

    wants_input_sizes = True

    def predictions(self, outputs: dict, labels: list[str], top_k: int = 5, sizes=None) -> list[list[dict]]:
        """Per image: its detections, best first (label, score, box xyxy in the image's own pixels when ``sizes``
        ((w, h) per image) is given, else in the model's input pixels)."""
        s = self._cfg["size"]
        out = []
        for i, d in enumerate(self.decode(outputs)):
            w, h = sizes[i] if sizes is not None else (s, s)
            scale = np.array([w / s, h / s, w / s, h / s], np.float32)
            out.append([{"label": labels[int(lab)], "score": round(float(sc), 4),
                         "box": [round(float(v), 1) for v in b * scale]}
                        for b, sc, lab in zip(d["boxes"], d["scores"], d["labels"])])
        return out

    def format_prediction(self, pred) -> str:
        shown = [p for p in pred if p["score"] >= 0.3][:10]
        if not shown:
            return "no objects (score >= 0.3)"
        return "; ".join(f"{p['label']} {p['score']:.2f} [{', '.join(f'{v:.0f}' for v in p['box'])}]" for p in shown)

    def prediction_json(self, pred) -> dict:
        return {"detections": pred}

    # ------------------------------------------------------------------------------------- metric
    def accumulator(self, n_classes: int | None) -> "_Acc":
        return _Acc(self, n_classes)

    # ------------------------------------------------------------------------------------- parity
    def parity(self, ref: dict, got: dict) -> dict:
        out = {}
        for name in ("cls_logits", "bbox_regression"):
            r, g = np.asarray(ref[name], np.float32), np.asarray(got[name], np.float32)
            out[f"{name}_max_abs_diff"] = float(np.abs(g - r).max())
            out[f"{name}_ref_max_abs"] = float(np.abs(r).max())
        out["max_abs_diff"] = max(out["cls_logits_max_abs_diff"], out["bbox_regression_max_abs_diff"])
        # the reference's boxes that matter (score >= 0.3, and at least its 10 best per image, so an untrained
        # model is checked too) must each be found among the bundle's detections, same class, IoU >= 0.9
        rd, gd = self.decode(ref), self.decode(got)
        top = [{k: v[(d["scores"] >= 0.3) | (np.arange(len(d["scores"])) < 10)] for k, v in d.items()} for d in rd]
        frac, sdiff, n = match_fraction(top, gd, 0.9)
        out.update({"boxes_matched_iou90": frac, "score_mean_abs_diff": sdiff, "ref_boxes_checked": n})
        return out

    def parity_failure(self, par: dict, precision: str) -> str | None:
        t = self.tolerance[precision]
        if precision == "fp32":
            lim = t["max_abs_diff_rel"] * max(1.0, par["cls_logits_ref_max_abs"], par["bbox_regression_ref_max_abs"])
            if par["max_abs_diff"] > lim or par["boxes_matched_iou90"] < t["boxes_matched_min"]:
                return (f"FP32 max-abs-diff {par['max_abs_diff']:.2e} (limit {lim:.1e}), boxes matched at IoU>=0.9 "
                        f"{par['boxes_matched_iou90']:.3f}")
        elif "boxes_matched_min" in t and par["boxes_matched_iou90"] < t["boxes_matched_min"]:
            return f"{precision.upper()} boxes matched at IoU>=0.9 {par['boxes_matched_iou90']:.3f}"
        return None

    def summary_line(self, par: dict) -> str:
        return (f"max-abs-diff {par['max_abs_diff']:.2e}, boxes matched at IoU>=0.9 {par['boxes_matched_iou90']:.4f} "
                f"(score diff {par['score_mean_abs_diff']:.4f})")

    # -------------------------------------------------------------------------------------- data
    def samples(self, spec: str, labels: list[str], limit: int | None) -> Samples:
        from .data import BUILTIN_SCENES, Scenes, folder_split, read_folder

        name, _, split = spec.partition(":")
        if name == BUILTIN_SCENES:
            size = getattr(self, "_cfg", {}).get("size", 320)
            s = Scenes(split or "test", size=size)
            if list(s.classes) != list(labels):
                raise DataError(f"--data {spec!r}: its classes {s.classes} are not the model's labels {labels[:10]}")
            ds = s.split_view(limit)
        else:
            root = Path(spec).expanduser()
            if (root / "train").is_dir():      # a dataset folder: evaluate its held-out split, never train/
                held = [root / c for c in ("test", "val", "validation") if (root / c).is_dir()]
                if not held:
                    raise DataError(f"--data {spec!r} has train/ but no test/ or val/ to evaluate on",
                                    hint="pass the held-out split's folder")
                root = held[0]
            items, names, _ = read_folder(root, classes=list(labels))
            if limit:
                items = items[:limit]
            ds = folder_split(items, getattr(self, "_cfg", {}).get("size", 320), str(root))
        return Samples(ds.name, "detection", list(labels), ds.targets, ds.image, f"{ds.name}:{len(ds)}",
                       skipped=ds.skipped)


class _Acc:
    def __init__(self, dev: DetectionDevice, n_classes: int | None):
        self.dev = dev
        self.map = MeanAP(n_classes or 1)

    @property
    def metric(self):
        return "map"

    def update(self, outputs: dict, targets) -> None:
        self.map.add(self.dev.decode(outputs), list(targets))

    def result(self) -> dict:
        return self.map.result()


DEVICE = DetectionDevice()
