"""A toy backend in one file: ONNX's own reference evaluator (pure numpy) as a runtime, format "onnx_reference".
The check that a new backend is one file plus one registry line (``edgeft.backends.register_backend``)."""
from __future__ import annotations

import shutil
from pathlib import Path

from edgeft.backends.base import Backend, BuildConfig, Runner as _Runner

class Runner(_Runner):
    def _load(self) -> None:
        import onnx
        from onnx.reference import ReferenceEvaluator

        path = Path(self.bundle_dir) / self.manifest["model_files"]["model"]
        self.graph = onnx.load(str(path)).graph
        self.sess = ReferenceEvaluator(str(path))
        self.info = {"backend": "onnx_reference", "version": onnx.__version__, "runs": "f32 (numpy)"}

    def _run(self, feeds):
        return dict(zip(self.output_names, self.sess.run(None, feeds)))

    def io(self):
        def dims(v):
            return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        return [(v.name, dims(v)) for v in self.graph.input], [(v.name, dims(v)) for v in self.graph.output]

class ReferenceBackend(Backend):
    name = "onnx_reference"
    package = "onnx"
    install = "pip install onnx"
    formats = {"onnx_reference": {"fp32": None, "fp16": "the reference evaluator computes in fp32",
                                  "bf16": "the reference evaluator computes in fp32",
                                  "int8": "not in this toy"}}
    Runner = Runner

    def build(self, onnx_path: Path, out_dir: Path, cfg: BuildConfig) -> dict:
        shutil.copyfile(onnx_path, out_dir / "model.onnx")
        return {"model_files": {"model": "model.onnx"}, "quantization": None}
