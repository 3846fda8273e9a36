"""`edgeft optimize`: the search on tiny real runs (digits), its layer sensitivity, resume, time budget, recipe
section and bad input. Latency numbers are never asserted (they are the harness's business), only that every
candidate got one from the same interleaved run."""
import json
import shutil

import numpy as np
import pytest

from edgeft.errors import RunError, UnsupportedError
from edgeft.optimize import OptimizeSettings, optimize, parse_duration

from .conftest import make_quant_hostile_run, write_recipe

FAST = dict(profile="smoke", report_profile="smoke", bench_samples=48, sensitivity_samples=64, ac_val_samples=200)


@pytest.fixture(scope="module")
def hostile(tiny_run, tmp_path_factory):
    """A run whose FP32 model is fine but whose plain INT8 collapses (one activation channel 1000x the others)."""
    return make_quant_hostile_run(tiny_run, tmp_path_factory.mktemp("opt") / "hostile")


@pytest.fixture(scope="module")
def searched(hostile):
    st = optimize(hostile, settings=OptimizeSettings(max_drop=1.0, prune=False, qat=False, **FAST))
    return hostile, st


def _png(p):
    return p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_recovers_int8_by_mixed_precision_and_chooses_within_budget(searched):
    run, st = searched
    c = st["candidates"]
    # plain PTQ collapses on both runtimes, the user's NNCF default too
    for name in ("onnxruntime-int8", "openvino-int8", "openvino-int8-nncf-default"):
        assert c[name]["status"] == "ok" and c[name]["val_drop"] > 20, name
    # mixed precision recovers it: NNCF accuracy control (OpenVINO) and the top sensitive layer in float (ORT)
    ac, f1 = c["openvino-int8-ac"], c["onnxruntime-int8-float1"]
    assert ac["kind"] == f1["kind"] == "mixed"
    assert ac["val_drop"] <= 1.0 and 0 < ac["float_layers"] < ac["compute_layers"]
    assert f1["val_drop"] <= 1.0 and f1["float_layers"] == 1
    assert f1["options"]["exclude"] == ["/features/features.3/Conv"]        # the layer the outlier feeds
    m = json.loads((run / "optimize/candidates/onnxruntime-int8-float1/manifest.json").read_text())
    assert m["quantization"]["float_layers"] == ["/features/features.3/Conv"] and m["status"] == "ok"
    # every built candidate was timed in the one latency run; the choice is the fastest within budget
    timed = [x for x in c.values() if x.get("status") == "ok" and not x.get("hidden")]
    assert timed and all(x.get("p50_ms", 0) > 0 and x["p50_lo"] <= x["p50_ms"] <= x["p50_hi"] for x in timed)
    # the paired statistics: recomputed per image against the FP32 bundle, equal to the manifest's drop (one
    # image = 0.28 points here), the upper bound above the point estimate, 0 flips -> bound 0
    for x in timed:
        assert abs(x["val_drop_paired"] - x["val_drop"]) <= 0.3 and x["val_drop_ub95"] >= x["val_drop_paired"]
        assert (x["val_flips"] == 0) == (x["val_drop_ub95"] == 0)
    ch = st["choice"]
    within = [x for x in timed if x["val_drop_ub95"] <= 1.0 and x["kind"] != "peer"]
    assert ch["name"] == min(within, key=lambda x: x["p50_ms"])["name"]
    assert c[ch["name"]]["kind"] != "peer" and "fastest p50" in ch["why"]
    # bf16/fp16: tried only where this target computes them natively, else recorded with the reason
    for name in ("openvino-bf16", "openvino-fp16"):
        assert c[name]["status"] in ("ok", "skipped", "failed")
        if c[name]["status"] == "skipped":
            assert "target" in c[name]["reason"]


def test_outputs_plots_report_and_chosen_bundle(searched):
    run, st = searched
    o = run / "optimize"
    assert _png(o / "pareto.png") and _png(o / "sensitivity.png")
    table = (o / "pareto.md").read_text()
    assert "**(chosen)**" in table and "openvino-int8-nncf-default" in table and "Test split" in table
    assert json.loads((o / "chosen/manifest.json").read_text())["status"] == "ok"
    rep = st["report"]
    names = set(rep["rows"])
    assert any(n.endswith("pytorch-fp32") for n in names) and "chosen" in names
    assert "openvino-fp32" in names and "openvino-int8-nncf-default" in names
    assert rep["speedup_vs_nncf_default"] > 0 and rep["speedup_vs_openvino_fp32"] > 0
    assert abs(rep["test_drop_points"]) < 5            # chosen on val; the test split only reports
    assert st["wall_s"] > 0 and json.loads((o / "optimize.json").read_text())["wall_s"] == st["wall_s"]


def test_sensitivity_ranks_the_layer_that_breaks_int8(searched):
    run, _ = searched
    sens = json.loads((run / "optimize/sensitivity.json").read_text())
    top = sens["layers"][0]
    assert top["node"] == "/features/features.3/Conv"
    assert top["gain"] > 0.9 * sens["int8"]["nmse"] and top["agree"] > 0.9 > sens["int8"]["agree"]
    assert all(r["gain"] < 0.1 * sens["int8"]["nmse"] for r in sens["layers"][1:])


def test_float_variant_of_every_layer_moves_int8_to_fp32(tiny_run, tmp_path):
    """All quantized compute layers in float -> closer to the FP32 model's outputs; what is left is the Q/DQ of
    the non-compute ops (the pooled features and the logits themselves): the surgery restores the right weights
    and bypasses the right quantizers."""
    import onnx
    from onnx import numpy_helper

    from edgeft import export
    from edgeft.optimize.sensitivity import _error, _run, _session, float_variant, quantized_nodes

    export(tiny_run, format="onnxruntime", precision="fp32", out=tmp_path / "f")
    export(tiny_run, format="onnxruntime", precision="int8", out=tmp_path / "q")
    q = onnx.load(str(tmp_path / "q/model.onnx"))
    f = onnx.load(str(tmp_path / "f/model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in f.graph.initializer}
    from edgeft.recipe import load_recipe
    from edgeft.tasks import get_task

    recipe = load_recipe(tiny_run / "recipe.yaml")
    task = get_task(recipe.task)
    x = task.eval_inputs(task.load_data(recipe).val, recipe, np.arange(128))   # real samples, as calibrated
    ref = _run(_session(f.SerializeToString(), 1), x)
    e8 = _error(_run(_session(q.SerializeToString(), 1), x), ref)
    n = len(quantized_nodes(q))
    assert n == 4
    for node in quantized_nodes(q):
        q = float_variant(q, node.name, inits)
    assert not quantized_nodes(q)
    ef = _error(_run(_session(q.SerializeToString(), 1), x), ref)
    assert ef["nmse"] < 0.75 * e8["nmse"] and ef["agree"] >= e8["agree"]


def test_resume_reuses_finished_steps_and_refuses_without_resume(searched, tmp_path):
    run, st = searched
    o = run / "optimize"
    with pytest.raises(RunError, match="already holds an optimize search"):
        optimize(run, settings=OptimizeSettings(max_drop=1.0, prune=False, qat=False, **FAST))
    before = {n: (o / "candidates" / n / "manifest.json").stat().st_mtime_ns for n in ("onnxruntime-int8",
                                                                                      "openvino-int8-ac")}
    st2 = optimize(run, settings=OptimizeSettings(max_drop=1.0, prune=False, qat=False, **FAST), resume=True)
    after = {n: (o / "candidates" / n / "manifest.json").stat().st_mtime_ns for n in before}
    assert before == after                                   # nothing re-exported
    assert st2["choice"]["name"] == st["choice"]["name"]
    # another budget on the same folder: same measurements, a new choice rule applied
    st3 = optimize(run, settings=OptimizeSettings(max_drop=100.0, prune=False, qat=False, **FAST), resume=True)
    assert st3["candidates"][st3["choice"]["name"]]["val_drop"] <= 100


def test_interrupted_search_resumes_where_it_stopped(hostile, tmp_path, monkeypatch):
    from edgeft.optimize import Search

    out = tmp_path / "o"
    real = Search.candidate
    calls = []

    def flaky(self, name, *a, **k):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, name, *a, **k)

    monkeypatch.setattr(Search, "candidate", flaky)
    s = OptimizeSettings(max_drop=100.0, prune=False, qat=False, mixed=False, backends=("onnxruntime",), **FAST)
    with pytest.raises(KeyboardInterrupt):
        optimize(hostile, out=out, settings=s)
    state = json.loads((out / "optimize.json").read_text())
    done = [n for n, c in state["candidates"].items() if c["status"] == "ok"]
    assert done == ["onnxruntime-fp32"] and "baseline" not in state["steps"]
    monkeypatch.setattr(Search, "candidate", real)
    mtimes = {n: (out / "candidates" / n / "manifest.json").stat().st_mtime_ns for n in done}
    st = optimize(hostile, out=out, settings=s, resume=True)
    assert {n: (out / "candidates" / n / "manifest.json").stat().st_mtime_ns for n in done} == mtimes
    assert st["choice"]["name"] and st["steps"]["baseline"]["status"] == "done"


def test_time_budget_skips_steps_with_the_reason(hostile, tmp_path):
    s = OptimizeSettings(max_drop=1.0, time_budget_s=5, backends=("onnxruntime",), **FAST)
    st = optimize(hostile, out=tmp_path / "o", settings=s)
    steps = st["steps"]
    for name in ("mixed", "prune"):
        assert steps[name]["status"] == "skipped" and "time budget" in steps[name]["reason"], name
    assert "qat" not in steps or steps["qat"]["status"] == "skipped"
    assert not (tmp_path / "o/prune").exists() and not (tmp_path / "o/qat").exists()
    # the float candidates still give a choice within budget
    assert st["candidates"][st["choice"]["name"]]["val_drop"] <= 1.0
    # resumed without the budget, the skipped mixed-precision step runs (the finished ones are reused)
    st = optimize(hostile, out=tmp_path / "o", settings=OptimizeSettings(max_drop=1.0, prune=False, qat=False,
                                                                        backends=("onnxruntime",), **FAST),
                  resume=True)
    assert st["steps"]["mixed"]["status"] == "done" and st["candidates"]["onnxruntime-int8-float1"]["val_drop"] <= 1


@pytest.mark.slow
def test_qat_when_no_post_training_int8_meets_the_budget(hostile, tmp_path):
    st = optimize(hostile, out=tmp_path / "o", settings=OptimizeSettings(max_drop=1.0, prune=False, mixed=False,
                                                                        qat_epochs=1, **FAST))
    assert st["steps"]["qat"]["status"] == "done"
    m = json.loads((tmp_path / "o/qat/metrics.json").read_text())
    assert m["status"] == "complete" and m["val_top1"] >= m["ptq_val_top1"]     # QAT never ends below its PTQ start
    for b in ("onnxruntime", "openvino"):
        q = st["candidates"][f"{b}-int8-qat"]
        assert q["kind"] == "qat" and q["status"] == "ok" and q["p50_ms"] > 0
        assert q["val_drop"] <= st["candidates"][f"{b}-int8"]["val_drop"] + 1.0
    # this toy's outlier is beyond what 1 QAT epoch repairs: the float candidates are chosen, within budget
    assert st["candidates"][st["choice"]["name"]]["val_drop"] <= 1.0


@pytest.mark.slow
def test_pruning_ratio_is_bisected_against_the_budget(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    st = optimize(run, settings=OptimizeSettings(max_drop=25.0, qat=False, mixed=False, prune_epochs=1,
                                                 max_probes=2, **FAST))
    pr = st["prune"]
    assert 1 <= len(pr["probes"]) <= 2
    assert pr["fp32_budget"] <= 25.0
    for p in pr["probes"]:
        assert p["ok"] == (p.get("val_drop", 1e9) <= pr["fp32_budget"])
    if pr["best_ratio"]:
        tag = f"pruned{int(round(pr['best_ratio'] * 100))}"
        c = st["candidates"][f"onnxruntime-int8-{tag}"]
        assert c["kind"] == "pruned" and c["macs"] < st["candidates"]["onnxruntime-fp32"]["macs"]


def test_parse_duration():
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("900") == 900 and parse_duration(None) is None
    for bad in ("abc", "", "0", "-5m", "5 minutes"):
        with pytest.raises(UnsupportedError):
            parse_duration(bad)


def test_cli_optimize_and_bad_input(hostile, tmp_path, cli):
    out = tmp_path / "o"
    base = [hostile, "--out", out, "--no-prune", "--no-qat", "--profile", "smoke", "--report-profile", "smoke"]
    for args, msg in ((["--max-drop", "-1"], "--max-drop"), (["--backend", "openvin"], "Did you mean: 'openvino'"),
                      (["--time-budget", "abc"], "--time-budget"), (["--max-ratio", "1.5"], "--max-ratio"),
                      (["--profile", "fast"], "--profile"), (["--target", "x86-nope"], "--target"),
                      (["--prune-epochs", "-1"], "--prune-epochs"), (["--max-probes", "0"], "--max-probes"),
                      (["--distill", "2"], "--distill"), (["--qat-epochs", "-1"], "--qat-epochs"),
                      (["--report-profile", "x"], "--report-profile"), (["--report-data", tmp_path / "nope"],
                                                                          "--report-data"),
                      (["--report-data", "digits:val"], "--report-data"), (["--device", "nosuch"], "unknown device"),
                      (["--select", "mean"], "--select")):
        r = cli("optimize", *base, *args)
        assert r.code == 2 and msg in r.err and r.err.strip().count("\n") <= 1, (args, r.err)
    assert not out.exists()
    r = cli("optimize", tmp_path / "nope", "--out", out)
    assert r.code == 2 and "does not exist" in r.err
    r = cli("optimize", *base, "--max-drop", "2", "--backend", "onnxruntime", "--no-mixed")
    assert r.code == 0, r.err
    assert "Next: edgeft predict" in r.out and (out / "chosen/manifest.json").is_file()
    r = cli("optimize", *base, "--max-drop", "2", "--backend", "onnxruntime")
    assert r.code == 2 and "--resume" in r.err
    # nothing within budget: everything written, exit 3
    r = cli("optimize", hostile, "--out", tmp_path / "o2", "--max-drop", "0", "--no-prune", "--no-qat", "--no-mixed",
            "--backend", "onnxruntime", "--profile", "smoke", "--threads", "1")
    st = json.loads((tmp_path / "o2/optimize.json").read_text())
    if not any(c.get("val_drop", 1) <= 0 for c in st["candidates"].values() if c.get("status") == "ok"):
        assert r.code == 3 and "no candidate is within" in r.err
    else:
        assert r.code == 0


def test_qat_run_is_refused(tmp_path):
    run = tmp_path / "q"
    run.mkdir()
    for f in ("recipe.yaml", "labels.txt", "model.safetensors"):
        (run / f).write_text("x")
    (run / "model.json").write_text(json.dumps({"name": "test_cnn", "qat": {"parent": {}}}))
    with pytest.raises(UnsupportedError, match="QAT run"):
        optimize(run)


def test_recipe_optimize_section_ends_the_pipeline(tmp_path, cli):
    extra = ("optimize: {max_drop: 50.0, prune: false, qat: false, mixed: false, backends: [onnxruntime], "
             "profile: smoke, report_profile: smoke}\n")
    recipe = write_recipe(tmp_path / "r.yaml", epochs=1, extra=extra)
    r = cli("run", recipe, "--out", tmp_path / "p", "--profile", "smoke")
    assert r.code == 0, r.err
    assert (tmp_path / "p/optimize/chosen/manifest.json").is_file()
    state = json.loads((tmp_path / "p/pipeline.json").read_text())
    assert state["stages"]["optimize"]["status"] == "done" and "chose onnxruntime" in \
        state["stages"]["optimize"]["detail"]
    bench = json.loads((tmp_path / "p/bench/result.json").read_text())
    assert any(a["path"].endswith("optimize/chosen") for a in bench["artifacts"])
    r = cli("run", recipe, "--out", tmp_path / "p", "--profile", "smoke")
    assert r.code == 0 and "| optimize | cached |" in r.out
    bad = write_recipe(tmp_path / "bad.yaml", extra="optimize: {max_drop: -1}\n")
    r = cli("run", bad, "--out", tmp_path / "b")
    assert r.code == 2 and "max_drop" in r.err
    bad = write_recipe(tmp_path / "bad2.yaml", extra="optimize: {time_budget: soon}\n")
    r = cli("run", bad, "--out", tmp_path / "b2")
    assert r.code == 2 and "time_budget" in r.err
