"""One conformance template every backend passes (NNCF's cross-framework test templates): a subclass per
backend is a few lines. The model is a tiny two-output ONNX graph built here, so the contract is checked on
named multi-output I/O, not only on classifiers."""
import shutil

import numpy as np
import pytest

from edgeft.backends import BuildConfig, Precision, get_backend
from edgeft.backends.base import PRECISIONS
from edgeft.errors import BundleError
from edgeft.targets import resolve


def _model(path, n_in=8, n_out=3, n_emb=2, seed=0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((n_in, 16)).astype(np.float32)
    w2, w3 = rng.standard_normal((16, n_out)).astype(np.float32), rng.standard_normal((16, n_emb)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Relu", ["h0"], ["h"]),
         helper.make_node("MatMul", ["h", "w2"], ["logits"]), helper.make_node("MatMul", ["h", "w3"], ["emb"])],
        "two_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out]),
         helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", n_emb])],
        [numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return lambda x: {"logits": np.maximum(x @ w1, 0) @ w2, "emb": np.maximum(x @ w1, 0) @ w3}


def _manifest(built: dict, fmt: str, precision: str, n_out=3) -> dict:
    from edgeft.targets import bundle_target

    return {"task": "image_cls", "labels": [f"c{i}" for i in range(n_out)], "format": fmt, "precision": precision,
            "model_files": built["model_files"], "quantization": built.get("quantization"),
            "inputs": [{"name": "x", "shape": ["batch", 8]}],
            "outputs": [{"name": "logits", "shape": ["batch", n_out]}, {"name": "emb", "shape": ["batch", 2]}],
            "target": bundle_target(resolve(None, fmt), fmt, precision, None)}


class BackendConformance:
    """Subclass with ``backend = NAME`` (and ``fmt`` when the backend builds several formats)."""

    backend: str = ""
    fmt: str | None = None

    @pytest.fixture
    def b(self):
        b = get_backend(self.backend)
        if b.unavailable_reason():
            pytest.skip(f"backend {self.backend} unavailable here: {b.unavailable_reason()}")
        return b

    @property
    def format(self) -> str:
        return self.fmt or self.backend

    def test_declares_what_it_supports(self):
        b = get_backend(self.backend)
        assert b.name == self.backend and b.install and b.package
        table = b.formats[self.format]
        assert set(table) == set(PRECISIONS) and table["fp32"] is None      # every precision: yes, or why not
        assert all(w is None or len(w) > 10 for w in table.values())

    def test_build_load_infer_named_outputs(self, b, tmp_path):
        ref = _model(tmp_path / "m.onnx")
        out = tmp_path / "bundle"
        out.mkdir()
        built = b.build(tmp_path / "m.onnx", out, BuildConfig(format=self.format, precision=Precision.FP32,
                                                              target=resolve(None, self.format)))
        m = _manifest(built, self.format, "fp32")
        x = np.random.default_rng(1).standard_normal((5, 8)).astype(np.float32)
        with b.Runner(out, m) as r:
            assert r.input_names == ["x"] and r.output_names == ["logits", "emb"]
            y = r.infer({"x": x})
            assert list(y) == ["logits", "emb"] and r.load_ms > 0 and r.first_inference_ms > 0
            for k, v in ref(x).items():
                np.testing.assert_allclose(y[k], v, rtol=1e-4, atol=1e-4)
            y1 = r.infer(x[:1])                                             # a bare array for a one-input model
            np.testing.assert_allclose(y1["logits"], y["logits"][:1], rtol=1e-4, atol=1e-4)

    def test_int8_when_supported(self, b, tmp_path):
        if b.formats[self.format].get("int8") is not None or self.format == "onnx":
            pytest.skip(f"{self.format} builds no post-training int8")
        ref = _model(tmp_path / "m.onnx")
        out = tmp_path / "q"
        out.mkdir()
        rng = np.random.default_rng(2)
        calib = [{"x": rng.standard_normal((16, 8)).astype(np.float32)} for _ in range(8)]
        tgt = resolve("x86-avx2" if self.format != "tensorrt" else None, self.format)
        built = b.build(tmp_path / "m.onnx", out, BuildConfig(format=self.format, precision=Precision.INT8,
                                                              target=tgt, calib=calib))
        assert built["quantization"]["method"] == "ptq"
        m = _manifest(built, self.format, "int8")
        m["target"]["requires"] = []
        x = rng.standard_normal((64, 8)).astype(np.float32)
        with b.Runner(out, m) as r:
            y, want = r.infer({"x": x}), ref(x)
        agree = (y["logits"].argmax(1) == want["logits"].argmax(1)).mean()
        rel = {k: float(np.sqrt(((y[k] - want[k]) ** 2).mean() / (want[k] ** 2).mean())) for k in want}
        # measured on this toy: ONNX Runtime 2-5% relative RMS error, OpenVINO (NNCF PTQ) ~20%; broken int8
        # (saturating kernels, wrong scales) is far above 30%
        assert agree >= 0.85 and max(rel.values()) < 0.3, (agree, rel)

    def test_refuses_a_model_that_is_not_the_manifests(self, b, tmp_path):
        _model(tmp_path / "m.onnx", n_out=5)
        out = tmp_path / "bundle"
        out.mkdir()
        built = b.build(tmp_path / "m.onnx", out, BuildConfig(format=self.format, precision=Precision.FP32,
                                                              target=resolve(None, self.format)))
        with pytest.raises(BundleError, match="has 5 values per sample, but the manifest has 3 labels"):
            b.Runner(out, _manifest(built, self.format, "fp32", n_out=3)).__enter__()

    def test_unreadable_model_file_is_a_bundle_error(self, b, tmp_path):
        _model(tmp_path / "m.onnx")
        out = tmp_path / "bundle"
        out.mkdir()
        built = b.build(tmp_path / "m.onnx", out, BuildConfig(format=self.format, precision=Precision.FP32,
                                                              target=resolve(None, self.format)))
        f = out / built["model_files"]["model"]
        f.write_bytes(b"\x00garbage" * 10)
        with pytest.raises(BundleError, match="cannot load"):
            b.Runner(out, _manifest(built, self.format, "fp32")).__enter__()


class TestOnnxRuntime(BackendConformance):
    backend = "onnxruntime"


class TestOnnx(BackendConformance):
    backend, fmt = "onnxruntime", "onnx"


@pytest.mark.openvino
class TestOpenVino(BackendConformance):
    backend = "openvino"


@pytest.mark.tensorrt
@pytest.mark.gpu
class TestTensorRt(BackendConformance):
    backend = "tensorrt"


class TestToyReference(BackendConformance):
    """The one-file toy backend of test_seam passes the same template."""

    backend = "onnx_reference"
    fmt = "onnx_reference"

    @pytest.fixture(autouse=True)
    def _plug(self, monkeypatch):
        from edgeft.backends import BACKENDS, _instances

        monkeypatch.setitem(BACKENDS, "onnx_reference", "tests.toy_backend:ReferenceBackend")
        _instances.cache_clear()
        yield
        monkeypatch.undo()
        _instances.cache_clear()
