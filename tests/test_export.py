"""edgeft export: bundles per format with parity, checksums, gates, errors before work, torch-free use."""
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeft.bundle import read_manifest, write_manifest
from edgeft.errors import BundleError, UnsupportedError
from edgeft.stages.export import export

from .conftest import make_quant_hostile_run

FORMATS = [("onnx", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
           ("openvino", "fp16"), ("openvino", "int8")]


@pytest.fixture(scope="module")
def bundles(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("bundles")
    return {(f, p): (d / f"{f}-{p}", export(tiny_run, format=f, precision=p, out=d / f"{f}-{p}"))
            for f, p in FORMATS}


@pytest.mark.parametrize("fmt,prec", FORMATS)
def test_bundle_has_manifest_with_parity(bundles, fmt, prec):
    path, m = bundles[(fmt, prec)]
    assert read_manifest(path) == m
    assert m["format"] == fmt and m["precision"] == prec and m["status"] == "ok"
    assert m["labels"] == [str(i) for i in range(10)] and m["task"] == "image_cls"
    assert m["inputs"][0]["shape"] == ["batch", 3, 16, 16] and m["preprocess"]["size"] == 16
    assert m["source"]["recipe_hash"] and m["export"]["exporter"].startswith(("torchscript", "dynamo"))
    assert m["export"]["opset"] >= 17
    par = m["parity"]
    assert par["samples"] > 0 and par["accuracy"]["n"] > 0
    if prec == "fp32":
        assert par["max_abs_diff"] <= 1e-4 * max(1, par["ref_max_abs_logit"]) and par["top1_agreement"] == 1.0
    if prec == "int8":
        q = m["quantization"]
        assert q["method"] == "ptq" and q["calibration"]["size"] > 0 and q["calibration"]["sha256"]
        assert q["qdq_flavour"] in ("u8s8", "openvino_fq")
    for rel in m["model_files"].values():
        assert rel in m["files"] and m["files"][rel]["sha256"]


def test_tampered_and_truncated_bundles_are_refused(bundles, tmp_path):
    src, _ = bundles[("openvino", "fp32")]
    b = tmp_path / "b"
    shutil.copytree(src, b)
    data = bytearray((b / "model.bin").read_bytes())
    data[100] ^= 0xFF
    (b / "model.bin").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch for 'model.bin'"):
        read_manifest(b)
    (b / "model.bin").write_bytes(bytes(data[:-10]))
    with pytest.raises(BundleError, match="truncated or replaced"):
        read_manifest(b)
    (b / "model.bin").unlink()
    with pytest.raises(BundleError, match="missing 'model.bin'"):
        read_manifest(b)


def test_unsupported_combinations_fail_before_any_work(tiny_run, tmp_path):
    t = time.perf_counter()
    for fmt, prec, needle in [("onnxruntime", "fp16", "no fast FP16 kernels"), ("onnx", "fp16", "openvino --fp16"),
                              ("onnx", "int8", "needs a QAT run"), ("onnnx", "fp32", "Did you mean: 'onnx'")]:
        with pytest.raises(UnsupportedError, match=needle):
            export(tiny_run, format=fmt, precision=prec, out=tmp_path / "x")
    assert not (tmp_path / "x").exists() and time.perf_counter() - t < 5


def test_cli_errors_are_one_line(cli, tiny_run, tmp_path):
    r = cli("export", tiny_run, "--format", "openvino", "--fp16", "--int8")
    assert r.code == 2 and "mutually exclusive" in r.err
    r = cli("export", tiny_run, "--format", "openvino", "--int8", "--calib-data", tmp_path / "nope")
    assert r.code == 2 and r.err.startswith("error: --calib-data") and r.err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    r = cli("export", tiny_run, "--format", "openvino", "--int8", "--calib-data", tmp_path / "empty")
    assert r.code == 2 and "contains no images" in r.err
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    r = cli("export", tmp_path / "m.onnx", "--format", "openvino")
    assert r.code == 2 and "is an ONNX file" in r.err
    r = cli("export", tmp_path / "norun", "--format", "onnx")
    assert r.code == 2 and "does not exist" in r.err
    r = cli("export", tiny_run, "--format", "tensorrt")
    assert r.code == 2 and "tensorrt" in r.err and "pip install 'edgeft[tensorrt]'" in r.err


def test_max_drop_gate_fails_keeps_files_marked(tiny_run, tmp_path, cli):
    hostile = make_quant_hostile_run(tiny_run, tmp_path / "hostile")
    out = tmp_path / "gated"
    r = cli("export", hostile, "--format", "onnxruntime", "--int8", "--max-drop", "1", "--out", out)
    assert r.code == 3 and "drop" in r.err and "edgeft qat" in r.err, r.err
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "failed_gate" and m["parity"]["accuracy"]["drop_points"] > 1
    from edgeft import runtime

    with pytest.raises(BundleError, match="marked 'failed_gate'"):
        runtime.load(out)
    with runtime.load(out, allow_failed=True) as model:
        assert model.infer(np.zeros((1, 3, 16, 16), np.float32))["logits"].shape == (1, 10)


def test_onnx_file_that_is_not_a_model(bundles, tmp_path, cli):
    src, _ = bundles[("onnx", "fp32")]
    b = tmp_path / "bad"
    shutil.copytree(src, b)
    (b / "model.onnx").write_bytes(b"\x08\x07 this is not a protobuf model")
    m = json.loads((b / "manifest.json").read_text())
    m.pop("files")
    write_manifest(b, m)                      # checksums of the garbage: only the loader can tell
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (16, 16)).save(img)
    r = cli("predict", b, img)
    assert r.code == 2 and r.err.startswith("error: cannot load model.onnx") and r.err.count("\n") == 1


def test_predict_without_torch(bundles, digits_folder):
    path, _ = bundles[("openvino", "int8")]
    imgs = sorted((digits_folder / "3").glob("*.png"))[:2]
    code = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked")
sys.meta_path.insert(0, Block())
from edgeft.cli import main
main(["predict", {str(path)!r}, {str(imgs[0])!r}, {str(imgs[1])!r}, "--json", "--top-k", "3"])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out) == 2 and len(out[0]["top"]) == 3 and abs(sum(t["prob"] for t in out[0]["top"])) <= 1.0001


def test_runtime_import_is_torch_free():
    code = "import sys, edgeft.runtime, edgeft.bundle, edgeft.backends.onnxruntime, edgeft.backends.openvino, " \
           "edgeft.bench.kws_calibrate, edgeft.bench.audio_data; print('torch' in sys.modules)"    # `edgeft calibrate`
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr
