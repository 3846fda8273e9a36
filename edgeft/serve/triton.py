"""``edgeft export-serving BUNDLE --triton DIR``: a bundle as a Triton Inference Server model repository, plus the
configuration OpenVINO Model Server reads, for users who outgrow one box.

Written (atomically: a temporary folder renamed into place)::

    DIR/NAME/config.pbtxt          Triton: backend, inputs/outputs from the manifest, dynamic batching, instances
    DIR/NAME/1/model.onnx|.xml+.bin|.plan   the bundle's model files, unchanged (sha256 checked first)
    DIR/NAME/labels.txt            label_filename of a classifier's output (Triton returns class names)
    DIR/NAME/edgeft_manifest.json  the bundle's manifest: the preprocessing a client must apply
    DIR/ovms_config.json           OpenVINO Model Server: the same model (ONNX or IR), its plugin config

Triton and OVMS serve tensors: the client sends preprocessed inputs (resize, normalise: the manifest's
``preprocess``), exactly what ``POST /v1/models/NAME/predict`` of ``edgeft serve`` takes as JSON.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import DataError, UnsupportedError

DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
          "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "bool": "TYPE_BOOL"}
BACKENDS = {"onnx": ("backend", "onnxruntime", "model.onnx"), "onnxruntime": ("backend", "onnxruntime", "model.onnx"),
            "openvino": ("backend", "openvino", "model.xml"), "tensorrt": ("platform", "tensorrt_plan", "model.plan")}


def _dims(shape) -> list[int]:
    return [int(d) if isinstance(d, int) else -1 for d in shape[1:]]     # batch excluded (max_batch_size > 0)


def triton_config(name: str, m: dict, max_batch: int = 8, max_delay_us: int = 2000, instances: int = 1,
                  labels_file: str | None = "labels.txt") -> str:
    fmt = m["format"]
    if fmt not in BACKENDS:
        raise UnsupportedError(f"format {fmt!r} has no Triton backend here; valid: {', '.join(BACKENDS)}")
    key, value, default_file = BACKENDS[fmt]
    lines = [f'name: "{name}"', f'{key}: "{value}"', f"max_batch_size: {int(max_batch)}"]
    if fmt == "tensorrt":
        lines.append(f'default_model_filename: "{default_file}"')

    def tensors(kind: str, items, with_labels: bool) -> None:
        lines.append(f"{kind} [")
        for i, t in enumerate(items):
            dt = DTYPES.get(t.get("dtype", "float32"))
            if dt is None:
                raise UnsupportedError(f"{kind} {t['name']!r}: dtype {t.get('dtype')!r} has no Triton type")
            extra = f' label_filename: "{labels_file}"' if with_labels and i == 0 and labels_file else ""
            sep = "," if i < len(items) - 1 else ""
            lines.append(f'  {{ name: "{t["name"]}" data_type: {dt} dims: {json.dumps(_dims(t["shape"]))}{extra} }}{sep}')
        lines.append("]")

    classifier = m.get("task") in ("image_cls", "kws") and len(m["outputs"]) == 1
    tensors("input", m["inputs"], False)
    tensors("output", m["outputs"], classifier)
    prefs = [b for b in (2, 4, 8, 16, 32) if b <= max_batch]
    if max_batch > 1:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {int(max_delay_us)}"
                     + (f" preferred_batch_size: {json.dumps(prefs)}" if prefs else "") + " }")
    kind = "KIND_GPU" if fmt == "tensorrt" else "KIND_CPU"
    lines.append(f"instance_group [ {{ kind: {kind} count: {int(instances)} }} ]")
    if fmt == "openvino":
        from ..targets import bundle_compute

        hint = {"f32": "f32", "bf16": "bf16", "f16": "f16"}.get(bundle_compute(m), "f32")
        lines.append(f'parameters [ {{ key: "INFERENCE_PRECISION_HINT" value: {{ string_value: "{hint}" }} }} ]')
    return "\n".join(lines) + "\n"


def ovms_config(name: str, m: dict, base_path: str) -> dict:
    cfg = {"name": name, "base_path": base_path, "batch_size": "auto" if m["format"] != "openvino" else None,
           "plugin_config": {"PERFORMANCE_HINT": "LATENCY"}}
    if m["format"] == "openvino":
        from ..targets import bundle_compute

        cfg["plugin_config"]["INFERENCE_PRECISION_HINT"] = {"bf16": "bf16", "f16": "f16"}.get(bundle_compute(m), "f32")
    return {"model_config_list": [{"config": {k: v for k, v in cfg.items() if v is not None}}]}


def export_serving(bundle: str | os.PathLike, out: str | os.PathLike, *, name: str | None = None, max_batch: int = 8,
                   max_delay_us: int = 2000, instances: int = 1, ovms_base: str = "/models") -> dict:
    from ..bundle import read_manifest
    from .registry import NAME_RE

    b = Path(bundle)
    m = read_manifest(b)               # every file's sha256 before anything is copied
    if m["format"] == "tensorrt" and not (b / m["model_files"]["model"]).name.endswith((".plan", ".engine")):
        raise UnsupportedError("this TensorRT bundle has no engine file", hint="`edgeft build BUNDLE` on the GPU first")
    name = name or (f"{b.parent.parent.name}-{b.name}" if b.parent.name == "bundles" else b.name)
    if not NAME_RE.match(name):
        raise DataError(f"--name {name!r}: use letters, digits, '.', '_' or '-'", hint="pass --name NAME")
    if not 1 <= max_batch <= 1024:
        raise UnsupportedError(f"--max-batch {max_batch}: valid is 1..1024")
    eng_max = (((m.get("engine") or {}).get("profile") or {}).get("max"))
    if m["format"] == "tensorrt" and eng_max:
        top = int(eng_max[0] if isinstance(eng_max, (list, tuple)) else eng_max)
        if max_batch > top:
            raise UnsupportedError(f"--max-batch {max_batch}: this TensorRT engine was built for batches up to {top}",
                                   hint=f"use --max-batch {top}, or rebuild the engine with a larger profile")
    if m["format"] not in BACKENDS:
        raise UnsupportedError(f"format {m['format']!r} has no Triton backend; valid: {', '.join(BACKENDS)}")
    out = Path(out)
    final = out / name
    if final.exists():
        raise DataError(f"{final} already exists", hint="remove it, or pass --name for another model name")
    ovms_p = out / "ovms_config.json"
    cfg = {"model_config_list": []}
    if ovms_p.is_file() and m["format"] != "tensorrt":      # merged, never replaced: read it before writing anything
        try:
            cfg = json.loads(ovms_p.read_text())
            if not isinstance(cfg.get("model_config_list"), list):
                raise ValueError("no model_config_list")
        except (OSError, ValueError, AttributeError) as e:
            raise DataError(f"{ovms_p} exists and is not an OpenVINO Model Server config ({type(e).__name__}: {e})",
                            hint="move it away or pass another --triton folder") from None
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "1").mkdir(parents=True)
        _, _, default_file = BACKENDS[m["format"]]
        files = []
        for role, f in m["model_files"].items():
            src = b / f
            dst_name = f
            if role == "model":
                dst_name = default_file if m["format"] != "openvino" else "model.xml"
            elif role == "weights" and m["format"] == "openvino":
                dst_name = "model.bin"
            shutil.copyfile(src, tmp / "1" / dst_name)
            files.append(f"1/{dst_name}")
        (tmp / "labels.txt").write_text("\n".join(m["labels"]) + "\n")
        (tmp / "edgeft_manifest.json").write_text(json.dumps(m, indent=1))
        (tmp / "config.pbtxt").write_text(triton_config(name, m, max_batch, max_delay_us, instances))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if m["format"] == "tensorrt":            # OpenVINO Model Server does not run TensorRT engines
        return {"model": name, "path": str(final), "files": files, "config": str(final / "config.pbtxt"),
                "ovms_config": "(none: OVMS does not serve TensorRT engines)", "backend": BACKENDS[m["format"]][1]}
    cfg["model_config_list"] = [c for c in cfg.get("model_config_list", []) if c.get("config", {}).get("name") != name]
    cfg["model_config_list"] += ovms_config(name, m, f"{ovms_base.rstrip('/')}/{name}")["model_config_list"]
    from ..utils.io import atomic_write_json

    atomic_write_json(ovms_p, cfg)
    return {"model": name, "path": str(final), "files": files, "config": str(final / "config.pbtxt"),
            "ovms_config": str(ovms_p), "backend": BACKENDS[m["format"]][1]}
