"""The seam: a task with two outputs (tests/toy_task/, one folder) and a backend (tests/toy_backend.py, one
file) plug in with one registry line each, and go through finetune -> export -> load/predict -> bench."""
import json

import numpy as np
import pytest

import edgeft
from edgeft.backends import BACKENDS, _instances, register_backend, support_table
from edgeft.tasks import TASKS, register_task

TOY_RECIPE = """
task: toy_two_heads
model: {name: toy_two_heads_net}
data: {source: digits, val_fraction: 0.2, test_fraction: 0.2}
input: {size: 16, resize: 16, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}
augment: {hflip: false, pad_crop: 0}
train: {epochs: 4, batch_size: 32, lr: 0.01, warmup_epochs: 0}
export: {parity_samples: 64}
embedding_weight: 0.01
"""


@pytest.fixture
def plugged(monkeypatch):
    monkeypatch.setitem(TASKS, "toy_two_heads", TASKS.get("toy_two_heads", "tests.toy_task"))
    register_task("toy_two_heads", "tests.toy_task")                           # the task's one line
    monkeypatch.setitem(BACKENDS, "onnx_reference", "tests.toy_backend:ReferenceBackend")
    register_backend("onnx_reference", "tests.toy_backend:ReferenceBackend")    # the backend's one line
    yield
    monkeypatch.undo()
    _instances.cache_clear()


@pytest.mark.slow
def test_a_two_output_task_and_a_new_backend_plug_in(plugged, tmp_path, cli):
    (tmp_path / "toy.yaml").write_text(TOY_RECIPE)
    run = tmp_path / "run"
    m = edgeft.finetune(str(tmp_path / "toy.yaml"), out=run)
    assert m["val_top1"] > 0.5 and m["test_top1"] > 0.5                        # it learned something real
    bundles = {}
    for fmt in ("onnx_reference", "onnxruntime", "openvino"):
        b = tmp_path / fmt
        man = edgeft.export(run, format=fmt, out=b)
        assert [o["name"] for o in man["outputs"]] == ["logits", "embedding"] and man["status"] == "ok"
        assert man["parity"]["embedding_max_abs_diff"] < 1e-4 and man["parity"]["top1_agreement"] == 1.0
        assert man["parity"]["accuracy"]["top1"] == man["parity"]["accuracy"]["top1_pytorch_fp32"]
        bundles[fmt] = b
    assert "onnx_reference" in support_table() and "toy" not in support_table()
    with edgeft.load(bundles["onnx_reference"]) as model:
        out = model.infer(model.prepare([np.full((16, 16, 3), 200, np.uint8)]))
        assert sorted(out) == ["embedding", "logits"] and out["embedding"].shape == (1, 4)
        assert model.runner.info["backend"] == "onnx_reference"
    from PIL import Image

    Image.fromarray(np.full((16, 16), 90, np.uint8), "L").save(tmp_path / "x.png")
    r = cli("predict", bundles["onnx_reference"], tmp_path / "x.png", "--json")
    assert r.code == 0 and json.loads(r.out)[0]["top"][0]["label"] in [str(i) for i in range(10)], r.err
    doc = edgeft.bench([run, bundles["onnx_reference"], bundles["onnxruntime"]], data="digits:test", profile="smoke",
                       data_limit=96, threads=1)
    rows = {a["name"]: a for a in doc["artifacts"]}
    assert set(rows) == {"run/pytorch-fp32", "onnx_reference", "onnxruntime"}
    for a in rows.values():
        assert a["compliance"]["passed"] and a["accuracy"]["n"] == 96, a["compliance"]
        assert a["accuracy"]["top1"] == rows["run/pytorch-fp32"]["accuracy"]["top1"]
    r = cli("export", run, "--format", "onnx_reference", "--int8", "--out", tmp_path / "i8")
    assert r.code == 2 and "does not support int8: not in this toy" in r.err
    r = cli("export", run, "--format", "onnx_referenc", "--out", tmp_path / "x")
    assert r.code == 2 and "Did you mean: 'onnx_reference'" in r.err


def test_registries_refuse_a_second_registration_of_a_name():
    with pytest.raises(ValueError, match="registered twice"):
        register_task("image_cls", "somewhere.else")
    with pytest.raises(ValueError, match="registered twice"):
        register_backend("openvino", "somewhere:Else")
