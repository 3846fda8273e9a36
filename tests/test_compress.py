"""Pruning and QAT on tiny models: round trips, clear errors, the TensorRT Q/DQ rules, accuracy gates."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgeft.errors import RunError, UnsupportedError
from edgeft.qdq import tensorrt_violations
from edgeft.rundir import load_model
from edgeft import export, prune, qat

from .conftest import make_quant_hostile_run


@pytest.fixture(scope="module")
def pruned(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("pruned") / "p"
    m = prune(tiny_run, out=out, ratio=0.5, round_to=8, epochs=1, iterative=2, distill=0.5)
    return out, m


def test_prune_save_load_export_round_trip(pruned, tiny_run, tmp_path):
    out, m = pruned
    assert m["after"]["params"] < m["before"]["params"] and m["macs_ratio"] < 0.6
    assert m["before"]["latency_ms_ort"] > 0 and m["after"]["latency_ms_ort"] > 0
    # timed in 5 interleaved rounds (parent and pruned model alike): the speedup comes with its range
    sp = m["latency_speedup_ort_range"]
    assert sp["rounds"] == 5 and sp["min"] <= sp["median"] <= sp["max"] and len(m["after"]["latency_rounds_ms_ort"]) == 5
    assert m["latency_speedup_ort"] == sp["median"] and m["target_latency_met"] is None
    desc = json.loads((out / "model.json").read_text())
    assert desc["pruned"]["ratio"] == 0.5 and desc["pruned"]["iterative"] == 2
    assert desc["shapes"]["features.0"][0] == 8                         # 16 -> 8 channels, a multiple of 8
    ck = torch.load(out / "last.pt", weights_only=True)                # safe formats only
    assert ck["stage"] == "prune1"
    model, _ = load_model(out)                                          # rebuilt from shapes, no unpickling
    assert model.features[0].out_channels == 8 and model(torch.zeros(2, 3, 16, 16)).shape == (2, 10)
    b = export(out, format="onnxruntime", precision="fp32", out=tmp_path / "b")
    assert b["status"] == "ok" and b["source"]["pruned"]["ratio"] == 0.5
    assert b["parity"]["max_abs_diff"] < 1e-4 * max(1, b["parity"]["ref_max_abs_logit"])


def test_ratio_that_empties_a_layer_is_a_clear_error(tiny_run, tmp_path, cli):
    with pytest.raises(UnsupportedError, match=r"would remove all 16 channels of layer 'features.0'.*--ratio <= 0.50"):
        prune(tiny_run, out=tmp_path / "x", ratio=0.9, round_to=8, epochs=0)
    assert not (tmp_path / "x").exists()
    r = cli("prune", tiny_run, "--ratio", "0.97", "--round-to", "1", "--epochs", "0", "--out", tmp_path / "y")
    assert r.code == 2 and "would remove all" in r.err and r.err.count("\n") == 1
    r = cli("prune", tiny_run, "--method", "magnitud", "--out", tmp_path / "z")
    assert r.code == 2 and "Did you mean: 'magnitude'" in r.err


def test_prune_ratio_search_for_a_mac_target(tiny_run, tmp_path):
    m = prune(tiny_run, out=tmp_path / "s", ratio=None, target_macs=0.5, round_to=0, epochs=0)
    assert m["search"]["target"] == pytest.approx(0.5 * m["before"]["macs"])
    assert m["after"]["macs"] <= 0.5 * m["before"]["macs"] and 0 < m["config"]["ratio"] < 0.9


@pytest.fixture(scope="module")
def qat_runs(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("qat")
    return {fl: (d / fl, qat(tiny_run, out=d / fl, epochs=1, flavour=fl, calib_size=64)) for fl in ("cpu", "tensorrt")}


def test_qat_runs_export_to_runtimes_without_requantizing(qat_runs, tmp_path):
    out, m = qat_runs["cpu"]
    assert m["val_top1"] >= m["ptq_val_top1"] and m["quantization"]["batchnorm_folded"] == 3
    with pytest.raises(RunError, match="is a QAT run"):
        load_model(out)
    for fmt in ("onnxruntime", "openvino", "onnx"):
        b = export(out, format=fmt, precision="int8", out=tmp_path / fmt)
        assert b["quantization"]["method"] == "qat" and b["parity"]["reference"].startswith("pytorch fake-quant")
        assert b["parity"]["top1_agreement"] >= 0.95 and b["status"] == "ok"
        assert "calibration" not in b["quantization"]                      # consumed, not re-quantized
    # the ORT and onnx bundles store the weights as int8 constants (folded QuantizeLinear: int8 -> DequantizeLinear,
    # the pre-quantized weight pattern TensorRT parses too), with the same outputs as the run's Q/DQ graph
    import onnxruntime as ort

    raw = out / "model_qdq.onnx"
    for fmt in ("onnxruntime", "onnx"):
        ob = json.loads((tmp_path / fmt / "manifest.json").read_text())
        assert ob["quantization"]["weights_stored"].startswith("int8 constants")
        folded = tmp_path / fmt / "model.onnx"
        assert folded.stat().st_size < raw.stat().st_size / 2
        x = np.random.default_rng(0).standard_normal((4, *ob["inputs"][0]["shape"][1:])).astype(np.float32)
        ya, yb = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                  for p in (folded, raw))
        np.testing.assert_allclose(ya, yb, atol=1e-5)


def test_symmetric_qdq_passes_tensorrt_rules_and_cpu_flavour_does_not(qat_runs):
    trt = onnx.load(str(qat_runs["tensorrt"][0] / "model_qdq.onnx"))
    assert tensorrt_violations(trt) == []
    zps = [numpy_helper.to_array(i) for i in trt.graph.initializer if any(
        n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] == i.name for n in trt.graph.node)]
    assert zps and all(z.dtype.name == "int8" and not z.any() for z in zps)
    v = tensorrt_violations(qat_runs["cpu"][0] / "model_qdq.onnx")
    assert v and any("uint8" in x for x in v)                            # u8 activations: not TensorRT's rules
    assert qat_runs["tensorrt"][1]["quantization"]["tensorrt_rules"] == "pass"


def test_tensorrt_rules_catch_each_violation():
    w = numpy_helper.from_array(torch.randn(4, 3, 3, 3).numpy(), "w")
    ws = numpy_helper.from_array(torch.rand(4).numpy() + 0.1, "ws")
    xs = numpy_helper.from_array(torch.tensor(0.1).numpy(), "xs")
    z8 = numpy_helper.from_array(torch.zeros((), dtype=torch.int8).numpy(), "z8")
    zw = numpy_helper.from_array(torch.zeros(4, dtype=torch.int8).numpy(), "zw")
    zu = numpy_helper.from_array(torch.tensor(3, dtype=torch.uint8).numpy(), "zu")

    def model(x_zp="z8", w_axis=0, conv_from_dq=True):
        nodes = [helper.make_node("QuantizeLinear", ["x", "xs", x_zp], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "xs", x_zp], ["xd"]),
                 helper.make_node("QuantizeLinear", ["w", "ws", "zw"], ["wq"], axis=w_axis),
                 helper.make_node("DequantizeLinear", ["wq", "ws", "zw"], ["wd"], axis=w_axis),
                 helper.make_node("Conv", ["xd" if conv_from_dq else "x", "wd"], ["y"])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, ws, xs, z8, zw, zu])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    assert tensorrt_violations(model()) == []
    assert any("uint8" in v and "non-zero" not in v for v in tensorrt_violations(model(x_zp="zu")))
    assert any("non-zero zero point" in v for v in tensorrt_violations(model(x_zp="zu")))
    assert any("expected axis 0" in v for v in tensorrt_violations(model(w_axis=1)))
    assert any("data input is not produced by DequantizeLinear" in v for v in tensorrt_violations(model(conv_from_dq=False)))
    # DQ -> MaxPool -> Conv is fine (TensorRT moves the DQ past the max pooling: ResNet's stem); average pooling
    # does not commute with quantization, so DQ -> AveragePool -> Conv leaves the Conv's input unquantized
    for pool, ok in (("MaxPool", True), ("AveragePool", False)):
        m = model()
        conv = m.graph.node[-1]
        m.graph.node.insert(4, helper.make_node(pool, ["xd"], ["xp"], kernel_shape=[2, 2]))
        conv.input[0] = "xp"
        assert (tensorrt_violations(m) == []) is ok, pool


def test_tensorrt_flavour_qat_graph_of_a_real_resnet18_follows_the_rules(tmp_path):
    """The newcomer's report: `qat --flavour tensorrt` on a plain ResNet-18 failed TensorRT's rules after training
    (the stem's MaxPool sits between a DequantizeLinear and layer1's first Conv)."""
    import torchvision

    from edgeft.stages.qat import build_qat_model, strip_and_export

    torch.manual_seed(0)
    fp32 = torchvision.models.resnet18(num_classes=10).eval()
    q, meta = build_qat_model(fp32, [torch.randn(8, 3, 32, 32)], "tensorrt", "tensorrt")
    exp = strip_and_export(q, torch.randn(2, 3, 32, 32), tmp_path / "r18.onnx")
    assert exp["tensorrt_rule_violations"] == [] and meta["qdq_flavour"] == "s8s8_sym"
    assert "MaxPool" in {n.op_type for n in onnx.load(str(tmp_path / "r18.onnx")).graph.node}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86-avx2", "x86-vnni"])
def test_qat_beats_ptq_on_a_quantization_hostile_toy(tiny_run, tmp_path, target):
    """State of the claim: on this toy (one activation channel 30x larger than the rest, so per-tensor INT8
    steps are coarse for the others) QAT *improves* on PTQ with 7-bit weights (x86-avx2); with full 8-bit
    weights (x86-vnni) PTQ already keeps most of the accuracy. By construction QAT never returns a model worse
    than its PTQ start. The target is explicit: the weight range, not the CPU the test runs on, decides."""
    hostile = make_quant_hostile_run(tiny_run, tmp_path / "h", factor=30, shift=False)
    m = qat(hostile, out=tmp_path / "hq", epochs=3, lr=0.003, calib_size=128, target=target)
    assert m["target"] == target
    assert m["val_top1"] >= m["ptq_val_top1"]                            # never worse than its PTQ start
    if target == "x86-avx2":
        # 7-bit weights: PTQ loses accuracy on the tiny_run trained on AVX2 and AMX CPUs, not on a Zen 4 one (the
        # FP32 run itself differs by CPU); where it loses, QAT wins it back
        assert m["ptq_val_top1"] <= m["val_top1_fp32_parent"] + 1e-9
        if m["ptq_val_top1"] < m["val_top1_fp32_parent"]:
            assert m["val_top1"] > m["ptq_val_top1"]
    else:   # full 8-bit weights: PTQ keeps most of it (equal to FP32 on some CPUs' tiny_run: no strict loss asserted)
        assert m["ptq_val_top1"] >= m["val_top1_fp32_parent"] - 0.05


def test_qat_gate_reports_the_worst_layers(tiny_run, tmp_path, cli):
    hostile = make_quant_hostile_run(tiny_run, tmp_path / "h", factor=100, shift=False)
    r = cli("qat", hostile, "--epochs", "0", "--calib-size", "64", "--max-drop", "1", "--out", tmp_path / "q")
    assert r.code == 3 and "layers with the largest fake-quant error" in r.err and "features." in r.err, r.err
    m = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert m["status"] == "failed_gate" and len(m["worst_layers"]) >= 3
    assert (tmp_path / "q" / "model_qdq.onnx").is_file()                  # files kept, marked failed
    r = cli("qat", tmp_path / "q")
    assert r.code == 2 and "already a QAT run" in r.err
    r = cli("qat", tiny_run, "--flavour", "gpu", "--out", tmp_path / "q2")
    assert r.code == 2 and "valid are cpu, tensorrt" in r.err


@pytest.mark.slow
def test_run_pipeline_prune_qat_export_and_cache(cli, tmp_path):
    """`edgeft run` chains finetune -> prune -> qat -> export; a re-run keeps every stage, a changed
    compression setting is refused for the same folder (the finished stages are kept)."""
    from .conftest import write_recipe

    recipe = write_recipe(tmp_path / "c.yaml", epochs=1)
    recipe.write_text(recipe.read_text().replace(
        "export: {calib_size: 64, parity_samples: 64}",
        "export: {calib_size: 64, parity_samples: 64, targets: [{format: onnxruntime, precision: int8}]}")
        + "compress:\n  prune: {ratio: 0.5, round_to: 8, epochs: 1}\n  qat: {epochs: 1, calib_size: 64}\n")
    out = tmp_path / "p"
    r = cli("run", recipe, "--out", out, "--threads", 1, "--until", "export")
    assert r.code == 0, r.err
    for stage in ("finetune", "prune", "qat", "export onnxruntime-int8-qat"):
        assert f"| {stage} | done |" in r.out, (stage, r.out)
    m = json.loads((out / "bundles/onnxruntime-int8-qat/manifest.json").read_text())
    assert m["quantization"]["method"] == "qat"
    again = cli("run", recipe, "--out", out, "--threads", 1, "--until", "export")
    assert again.code == 0 and again.out.count("| cached |") == 4, again.out
    changed = cli("run", recipe, "--out", out, "--until", "export", "--set", "compress.prune.ratio=0.25")
    assert changed.code == 2 and "other inputs" in changed.err and (out / "qat/model.safetensors").is_file()
