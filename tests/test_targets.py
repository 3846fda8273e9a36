"""Device classes: what a precision means on each kind of CPU, target-aware INT8, and the load-time check.

Every test runs on any CPU: the policy side is driven by EDGEFT_CPU_FEATURES (both kinds simulated), and the
numerical side is checked against what the runtime really compiled on this machine."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgeft import runtime
from edgeft.backends.base import support_table
from edgeft.bundle import read_manifest, write_manifest
from edgeft.errors import BundleError, UnsupportedError
from edgeft.stages.export import export
from edgeft.targets import (FEATURE_ENV, TARGETS, check_bundle, cpu_features, host_target, real_cpu_features,
                            resolve)

REAL = real_cpu_features()
HAS_BF16 = REAL.has("bf16")
HAS_VNNI = REAL.has("vnni")


@pytest.fixture
def simulate(monkeypatch):
    def set_(name: str | None):
        if name is None:
            monkeypatch.delenv(FEATURE_ENV, raising=False)
        else:
            monkeypatch.setenv(FEATURE_ENV, name)
    return set_


@pytest.mark.parametrize("name", ["x86-avx2", "x86-vnni", "x86-bf16", "x86-amx", "arm64"])
def test_simulated_features_pick_the_class(simulate, name):
    simulate(name)
    f = cpu_features()
    assert f.simulated == name and host_target(f).name == name and resolve(None).name == name


def test_feature_flags_and_bad_values(simulate, cli):
    simulate("avx2,fma,avx512f,avx512_vnni")
    assert host_target().name == "x86-vnni"
    simulate("avx2,fma,avx512f,avx512_vnni,avx512_bf16")
    assert host_target().name == "x86-bf16"
    simulate("asimd,asimdhp")
    assert host_target().name == "arm64" and cpu_features().has("fp16")
    simulate("avx2,fmaa")
    r = cli("doctor")
    assert r.code == 2 and r.err.count("\n") == 1 and "unknown CPU flag(s) fmaa" in r.err and "'fma'" in r.err
    simulate(None)
    assert cpu_features() == REAL and not REAL.simulated


def test_doctor_states_the_class_and_native_precisions(simulate, cli):
    simulate("x86-amx")
    r = cli("doctor")
    assert r.code == 0, r.err
    assert f"cpu class: {host_target(REAL).name}" in r.out and "simulated: EDGEFT_CPU_FEATURES=x86-amx" in r.out
    row = next(line for line in r.out.splitlines() if line.startswith("openvino "))
    assert row.split()[1:] == ["yes", "f32", "fast", "fast"]          # fp32, fp16 (f32 compute), bf16, int8
    assert "peak GMAC/s" in r.out and "f32 " in r.out and "int8 " in r.out
    # tools installed in this environment are found even when it is not activated (PATH without .venv/bin)
    import importlib.util
    import sysconfig

    bapp = Path(sysconfig.get_path("scripts")) / "benchmark_app"
    line = next(x for x in r.out.splitlines() if x.startswith("tool benchmark_app"))
    assert ("not found" not in line) == (bapp.exists() or shutil.which("benchmark_app") is not None), line
    if importlib.util.find_spec("tensorrt") is None:   # not installed: nothing in its row says yes
        trt = next(x for x in r.out.splitlines() if x.startswith("tensorrt "))
        assert "yes" not in trt and "fast" not in trt and "backend tensorrt     unavailable" in r.out, trt
    assert support_table(TARGETS["x86-avx2"]).splitlines()[3].split()[1:] == ["yes", "f32", "no", "7bit"]
    assert support_table(TARGETS["arm64"]).splitlines()[3].split()[1:] == ["yes", "fast", "no", "fast"]


def test_target_names_and_combinations_are_checked_before_work(tiny_run, tmp_path, cli):
    r = cli("export", tiny_run, "--format", "openvino", "--int8", "--target", "x86-vnn", "--out", tmp_path / "a")
    assert r.code == 2 and r.err.count("\n") == 1 and "Did you mean: 'x86-vnni'" in r.err
    r = cli("export", tiny_run, "--format", "openvino", "--int8", "--target", "tensorrt", "--out", tmp_path / "b")
    assert r.code == 2 and "--format onnxruntime --int8 --target tensorrt" in r.err
    r = cli("export", tiny_run, "--format", "onnxruntime", "--bf16", "--out", tmp_path / "c")
    assert r.code == 2 and "no bf16" in r.err and "--format openvino --bf16" in r.err
    r = cli("export", tiny_run, "--format", "openvino", "--fp16", "--bf16", "--out", tmp_path / "d")
    assert r.code == 2 and "--fp16 and --bf16 are mutually exclusive" in r.err
    r = cli("export", tiny_run, "--format", "openvino", "--bf16", "--target", "x86-avx2", "--out", tmp_path / "e")
    assert r.code == 2 and "bf16 is not native on target x86-avx2" in r.err and "--target x86-bf16" in r.err
    assert not any((tmp_path / n).exists() for n in "abcde")


@pytest.fixture(scope="module")
def int8_bundles(tiny_run, tmp_path_factory):
    """INT8 bundles built for both kinds of x86 CPU, whatever this one is."""
    import os

    d = tmp_path_factory.mktemp("targets")
    out = {}
    before = os.environ.get(FEATURE_ENV)     # set when the whole suite runs with simulated features
    for t in ("x86-avx2", "x86-vnni"):
        for fmt in ("onnxruntime", "openvino"):
            out[(fmt, t)] = export(tiny_run, format=fmt, precision="int8", target=t, out=d / f"{fmt}-{t}")
    assert os.environ.get(FEATURE_ENV) == before                     # exporting for a target leaks no override
    return d, out


@pytest.mark.parametrize("fmt", ["onnxruntime", "openvino"])
def test_int8_weight_range_follows_the_target(int8_bundles, fmt):
    _, b = int8_bundles
    seven, full = b[(fmt, "x86-avx2")], b[(fmt, "x86-vnni")]
    assert seven["target"]["name"] == "x86-avx2" and seven["target"]["int8_weights"] == "7-bit"
    assert seven["target"]["requires"] == [] and full["target"]["requires"] == ["int8_full_range"]
    assert full["target"]["requested"] == "x86-vnni" and full["target"]["built_on"]["class"] == host_target(REAL).name
    q7, q8 = seven["quantization"], full["quantization"]
    if fmt == "onnxruntime":
        assert q7["reduce_range"] is True and q8["reduce_range"] is False
    else:
        assert q7["overflow_fix"] == "enable" and q8["overflow_fix"] == "first_layer_only"
    for m in (seven, full):        # verified with exact int8 arithmetic, natively or simulated
        assert m["status"] == "ok" and m["parity"]["top1_agreement"] >= 0.9, m["parity"]
    simulated = "simulated in float" in full["parity"]["runtime"]
    assert simulated == (not HAS_VNNI), full["parity"]["runtime"]     # a CPU without VNNI cannot run it natively
    assert "simulated" not in seven["parity"]["runtime"]


def test_full_range_int8_refused_without_vnni_and_warned_the_other_way(int8_bundles, simulate, cli, tmp_path):
    d, _ = int8_bundles
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (16, 16), 128).save(img)
    simulate("x86-avx2")
    for fmt in ("onnxruntime", "openvino"):
        with pytest.raises(BundleError, match="full-range INT8 weights, and this CPU has no VNNI"):
            runtime.load(d / f"{fmt}-x86-vnni").open()
        r = cli("predict", d / f"{fmt}-x86-vnni", img)
        assert r.code == 2 and r.err.count("\n") == 1 and "re-export with --target x86-avx2" in r.err, r.err
        with runtime.load(d / f"{fmt}-x86-avx2") as m:      # 7-bit weights run anywhere
            assert m.warnings == [] and m.predict([img])[0]
    simulate("x86-vnni")
    with runtime.load(d / "openvino-x86-avx2") as m:       # costs accuracy headroom, not correctness: a warning
        assert len(m.warnings) == 1 and "--target x86-vnni keeps full 8-bit weights" in m.warnings[0]
    simulate("arm64")
    with runtime.load(d / "openvino-x86-vnni") as m:
        assert "built for x86-vnni (x86_64), running on aarch64" in m.warnings[0]


def test_bench_refuses_and_warns_by_target(int8_bundles, simulate, tmp_path, cli):
    d, _ = int8_bundles
    simulate("x86-avx2")
    r = cli("bench", d / "openvino-x86-avx2", d / "onnxruntime-x86-vnni", "--data", "digits:test", "--profile",
            "smoke", "--out", tmp_path / "b1")
    assert r.code == 2 and "no VNNI" in r.err and "--target x86-avx2" in r.err
    simulate("x86-vnni")
    r = cli("bench", d / "openvino-x86-avx2", "--data", "digits:test", "--profile", "smoke", "--data-limit", "64",
            "--out", tmp_path / "b2")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "b2" / "result.json").read_text())
    a = doc["artifacts"][0]
    assert a["target"]["name"] == "x86-avx2" and "full 8-bit weights" in a["target"]["warnings"][0]
    assert "(runs int8 + f32)" in r.out and "warning: " in r.out and "full 8-bit weights" in r.out
    assert doc["device"]["simulated_cpu_features"]["class"] == "x86-vnni"


def test_legacy_manifest_without_target_is_judged_by_its_quantization(int8_bundles, simulate, tmp_path):
    d, _ = int8_bundles
    for src, refused in (("onnxruntime-x86-vnni", True), ("onnxruntime-x86-avx2", False)):
        b = tmp_path / src
        shutil.copytree(d / src, b)
        m = json.loads((b / "manifest.json").read_text())
        m.pop("target")
        m.pop("files")
        write_manifest(b, m)
        simulate("x86-avx2")
        if refused:
            with pytest.raises(BundleError, match="no VNNI"):
                check_bundle(read_manifest(b), str(b))
        else:
            assert check_bundle(read_manifest(b), str(b)) == []


def test_unknown_requirement_is_refused(int8_bundles, tmp_path):
    d, _ = int8_bundles
    b = tmp_path / "b"
    shutil.copytree(d / "onnxruntime-x86-avx2", b)
    m = json.loads((b / "manifest.json").read_text())
    m["target"]["requires"] = ["int4_tensor_cores"]
    m.pop("files")
    write_manifest(b, m)
    with pytest.raises(BundleError, match="requires 'int4_tensor_cores', which this edgeft does not know"):
        runtime.load(b).open()


def test_fp32_openvino_is_pinned_to_f32(tiny_run, tmp_path, simulate):
    """OpenVINO's CPU plugin would compute an "fp32" bundle in bf16 on AVX512_BF16/AMX CPUs."""
    m = export(tiny_run, format="openvino", precision="fp32", out=tmp_path / "ov")
    assert m["target"]["compute_precision"] == "f32" and m["status"] == "ok"
    assert m["parity"]["max_abs_diff"] <= 1e-4 * max(1, m["parity"]["ref_max_abs_logit"])
    for sim in (None, "x86-amx", "x86-avx2"):
        simulate(sim)
        with runtime.load(tmp_path / "ov") as model:
            model.infer(np.zeros((1, 3, 16, 16), np.float32))
            assert model.runner.info["runs"] == "f32" and "32" in model.runner.info["inference_precision_hint"]


def _fake_bf16(src, dst):
    """An fp32 OpenVINO bundle relabelled as bf16 (checksums recomputed): what a bf16 export writes."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m.pop("files")
    m["precision"] = "bf16"
    m["target"] = {**m["target"], "name": "x86-bf16", "compute_precision": "bf16", "requires": ["bf16"]}
    write_manifest(dst, m)
    return dst


def test_bf16_is_refused_where_it_is_not_what_runs(tiny_run, tmp_path, simulate, cli):
    export(tiny_run, format="openvino", precision="fp32", out=tmp_path / "ov")
    b = _fake_bf16(tmp_path / "ov", tmp_path / "ov-bf16")
    simulate("x86-avx2")
    with pytest.raises(BundleError, match="computes in bf16, and this CPU has neither AVX512_BF16 nor AMX"):
        runtime.load(b).open()
    r = cli("export", tiny_run, "--format", "openvino", "--bf16", "--out", tmp_path / "x")
    assert r.code == 2 and "bf16 is not native on target x86-avx2" in r.err and not (tmp_path / "x").exists()
    simulate("x86-bf16")     # the policy allows it; what the real CPU compiles decides
    if HAS_BF16:
        with runtime.load(b) as m:
            m.infer(np.zeros((1, 3, 16, 16), np.float32))
            assert m.runner.info["runs"] == "bf16"
    else:
        with pytest.raises(BundleError, match="OpenVINO compiles it in f32 on this CPU"):
            runtime.load(b).open()
        r = cli("export", tiny_run, "--format", "openvino", "--bf16", "--out", tmp_path / "y")
        assert r.code == 2 and "this CPU cannot compute bf16" in r.err and not (tmp_path / "y").exists()


@pytest.mark.skipif(not (HAS_BF16 and cpu_features().has("bf16")),
                    reason="needs a CPU with AVX512_BF16 or AMX, not simulated away (the refusal paths run everywhere)")
def test_bf16_export_on_a_bf16_cpu(tiny_run, tmp_path):
    m = export(tiny_run, format="openvino", precision="bf16", out=tmp_path / "bf16")
    assert m["status"] == "ok" and m["target"]["compute_precision"] == "bf16" and m["target"]["requires"] == ["bf16"]
    par = m["parity"]
    assert par["cosine_min"] >= 0.999 and par["top1_agreement"] >= 0.98 and par["tolerance"]["cosine_min"] == 0.999
    with runtime.load(tmp_path / "bf16") as model:
        model.infer(np.zeros((2, 3, 16, 16), np.float32))
        assert model.runner.info["runs"] == "bf16"


def test_qat_weights_are_for_one_target(tiny_run, tmp_path, cli):
    from edgeft import qat

    m = qat(tiny_run, out=tmp_path / "q", epochs=0, calib_size=64, target="x86-vnni")
    assert m["target"] == "x86-vnni" and m["quantization"]["overflow_fix"] == "first_layer_only"
    r = cli("export", tmp_path / "q", "--format", "onnxruntime", "--int8", "--target", "x86-avx2",
            "--out", tmp_path / "b")
    assert r.code == 2 and "trained for x86-vnni" in r.err and "--target x86-avx2" in r.err
    b = export(tmp_path / "q", format="onnxruntime", precision="int8", out=tmp_path / "b2")
    assert b["target"]["name"] == "x86-vnni" and b["target"]["requires"] == ["int8_full_range"]
    r = cli("qat", tiny_run, "--target", "x86-avx3", "--out", tmp_path / "q3")
    assert r.code == 2 and "Did you mean" in r.err and not (tmp_path / "q3").exists()


def test_roofline_reports_each_precision_against_its_own_peak():
    from edgeft.bench.roofline import peak_for

    roof = {"peaks": {"f32": {"gmacs": 50.0}, "bf16": {"unavailable": "no"}, "int8": {"gmacs": 120.0}}}
    assert peak_for(roof, "int8") == 120.0 and peak_for(roof, "f32") == 50.0 and peak_for(roof, "bf16") is None
    assert peak_for({"gmacs": 40.0}, "f32") == 40.0 and peak_for({"gmacs": 40.0}, "int8") is None
