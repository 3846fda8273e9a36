"""What CI and newcomers rely on: one exit-code rule (0 ok, 2 bad input, 3 a gate or validity check failed),
"Next:" commands that run exactly as printed, `report` that never mixes incompatible results silently, a smoke
profile that is quick, unfinished QAT runs that never export, progress lines when stderr is not a terminal."""
import json
import shlex
import shutil

import pytest

from edgeft.bench.harness import BenchConfig, bench
from edgeft.bench.report import markdown, merge, save_json
from edgeft.stages.export import export

from .conftest import make_quant_hostile_run, write_recipe


def next_commands(out: str) -> list[list[str]]:
    """The printed `Next:` commands as argv lists (a trailing "  (comment)" is not part of the command)."""
    cmds = []
    for line in out.splitlines():
        if line.startswith("Next: "):
            cmd = line[len("Next: "):].split("  (")[0].strip()
            assert "<" not in cmd and "BUNDLE" not in cmd and "..." not in cmd, f"placeholder in {cmd!r}"
            argv = shlex.split(cmd)
            assert argv[0] == "edgeft", cmd
            cmds.append(argv[1:])
    return cmds


def run_all(cli, out: str, skip=()) -> list[str]:
    ran = []
    for argv in next_commands(out):
        if argv[0] in skip:
            continue
        r = cli(*argv)
        assert r.code == 0, f"`edgeft {shlex.join(argv)}` -> {r.code}: {r.err}"
        ran.append(shlex.join(argv))
    return ran


@pytest.fixture(scope="module")
def ort_bundle(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    export(tiny_run, format="onnxruntime", precision="fp32", out=d / "ort")
    return d / "ort"


# ------------------------------------------------------------------------------------------- exit codes
def test_exit_code_rule_export(cli, tiny_run, tmp_path):
    assert cli("export", tiny_run, "--format", "onnx", "--out", tmp_path / "ok").code == 0
    r = cli("export", tiny_run, "--format", "onnyx")
    assert r.code == 2 and "onnyx" in r.err                       # bad input: 2
    hostile = make_quant_hostile_run(tiny_run, tmp_path / "hostile")
    r = cli("export", hostile, "--format", "onnxruntime", "--int8", "--max-drop", "1", "--out", tmp_path / "gated")
    assert r.code == 3 and "failed_gate" in r.err                 # gate failed, bundle written and marked: 3
    assert json.loads((tmp_path / "gated" / "manifest.json").read_text())["status"] == "failed_gate"


def test_exit_code_rule_bench(cli, tiny_run, ort_bundle, tmp_path):
    r = cli("bench", ort_bundle, "--data", "digits:test", "--profile", "smoke", "--threads", 1, "--out", tmp_path / "b")
    assert r.code == 0 and "valid: YES" in r.out, r.err
    r = cli("bench", ort_bundle, "--data", "digits:test", "--profile", "smokey")
    assert r.code == 2
    # 100,000 offered frames per second: no producer keeps that schedule, the result is not valid -> 3, files kept
    r = cli("bench", ort_bundle, "--data", "digits:test", "--scenario", "camera", "--fps", 100000, "--duration", 0.5,
            "--profile", "smoke", "--threads", 1, "--out", tmp_path / "cam")
    assert r.code == 3 and "not valid" in r.err and "producer_on_time" in r.err, (r.code, r.err)
    assert "valid: NO" in r.out and (tmp_path / "cam" / "result.json").is_file()


def test_exit_code_rule_run(cli, tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path / "p.yaml", epochs=1, extra=(
        "export:\n  calib_size: 32\n  parity_samples: 32\n  targets: [{format: onnxruntime, precision: fp32}]\n"))
    # a stage that fails its gate: the pipeline still writes everything, then exits 3 (smoke profile included)
    import edgeft.stages.export as ex

    monkeypatch.setattr(ex, "judge", lambda *a, **k: ("failed_gate", "forced by the test"))
    r = cli("run", recipe, "--out", tmp_path / "p", "--profile", "smoke", "--until", "export")
    assert r.code == 3 and "failed step" in r.err and "export onnxruntime-fp32" in r.err, (r.code, r.err)
    assert (tmp_path / "p" / "summary.md").is_file() and "| failed_gate |" in r.out
    monkeypatch.undo()
    r = cli("run", recipe, "--out", tmp_path / "p", "--profile", "smoke", "--until", "export")
    assert r.code == 0, r.err
    assert cli("run", recipe, "--until", "nowhere", "--out", tmp_path / "p").code == 2


# ----------------------------------------------------------------------------------------- Next: lines
def test_next_commands_after_export_run_as_printed(cli, tiny_run, tmp_path):
    r = cli("export", tiny_run, "--format", "onnxruntime", "--out", tmp_path / "b")
    assert r.code == 0, r.err
    ran = run_all(cli, r.out)
    assert any(c.startswith("data export-images digits") for c in ran)
    assert any(c.startswith("predict") for c in ran) and any(c.startswith("bench") for c in ran), ran


def test_next_commands_after_run_keep_what_was_typed(cli, tmp_path):
    recipe = write_recipe(tmp_path / "p.yaml", epochs=1, extra=(
        "export:\n  calib_size: 32\n  parity_samples: 32\n  targets: [{format: onnxruntime, precision: fp32}]\n"))
    r = cli("run", recipe, "--out", tmp_path / "my run", "--until", "export", "--set", "train.lr=0.02")
    assert r.code == 0, r.err
    again = [c for c in next_commands(r.out) if c[0] == "run"]
    assert again and "--out" in again[0] and str(tmp_path / "my run") in again[0]
    assert again[0][again[0].index("--set") + 1] == "train.lr=0.02" and "--until" in again[0]
    ran = run_all(cli, r.out)
    assert any(c.startswith("predict") for c in ran) and any(c.startswith("run") for c in ran), ran


def test_models_next_command_trains_the_listed_model(cli):
    from edgeft.recipe import load_recipe

    r = cli("models", "mobilenet*")
    assert r.code == 0
    (argv,) = next_commands(r.out)
    first = r.out.split()[0]
    assert argv[0] == "finetune" and first.startswith("mobilenet")
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert load_recipe(argv[argv.index("--recipe") + 1], sets).model.name == first, argv


def test_make_kws_next_command_uses_the_folder(cli, tmp_path, monkeypatch):
    import edgeft.data.audio as audio

    d = tmp_path / "kws data"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"tts_clips": 1, "silence": 1, "real_unknown_clips": 0}))
    monkeypatch.setattr(audio, "make_kws_tts", lambda out, seed=0: d)
    r = cli("data", "make-kws", "--out", d)
    (argv,) = next_commands(r.out)
    assert argv[:3] == ["finetune", "--recipe", "kws/ds_tcn_m"] and argv[argv.index("--data") + 1] == str(d)


def test_kws_bundle_next_commands_listen_and_stream(tmp_path):
    from edgeft import nextsteps

    b = tmp_path / "kws" / "bundles" / "onnx-fp32"
    b.mkdir(parents=True)
    (b / "manifest.json").write_text(json.dumps({"task": "kws", "source": {"data": "speech-commands-tts"}}))
    cmds = nextsteps.after_export(tmp_path / "kws", b)
    assert any(c.startswith("edgeft data make-stream") for c in cmds)
    assert any(c.startswith(f"edgeft listen {b}") and "stream_positive.wav" in c for c in cmds)
    assert any("--scenario audio_stream" in c for c in cmds)
    assert not any("predict" in c or "<" in c for c in cmds), cmds


# ------------------------------------------------------------------------------------------------ report
def test_report_shows_each_files_context_and_warns_on_other_data(tiny_run, ort_bundle, tmp_path):
    a = bench([str(tiny_run), str(ort_bundle)], BenchConfig(data="digits:test", profile="smoke", threads=1,
                                                              data_limit=100))
    b = bench([str(ort_bundle)], BenchConfig(data="digits:test", profile="quick", threads=1, data_limit=100))
    for name, d in (("a", a), ("b", b)):
        save_json(d, tmp_path / f"{name}.json")
    docs = merge([tmp_path / "a.json", tmp_path / "b.json"])
    md = markdown(docs)
    assert "- #1: profile smoke" in md and "- #2: profile quick" in md
    assert "1.00 (ref #1)" in md and "1.00 (ref #2)" in md and "(ref)" not in md.replace("(ref #", "")
    assert "different samples" not in md
    c = bench([str(ort_bundle)], BenchConfig(data="digits:test", profile="smoke", threads=1, data_limit=50))
    save_json(c, tmp_path / "c.json")
    md = markdown(merge([tmp_path / "a.json", tmp_path / "c.json"]))
    assert "**warning**: the files measured accuracy on different samples" in md and "(n=50)" in md and "(n=100)" in md


def test_smoke_profile_bounds_the_accuracy_pass(ort_bundle, monkeypatch):
    from edgeft.bench import timing

    monkeypatch.setitem(timing.PROFILES, "smoke", timing.PROFILES["smoke"].__class__(
        **{**timing.PROFILES["smoke"].__dict__, "accuracy_limit": 40}))
    d = bench([str(ort_bundle)], BenchConfig(data="digits:test", profile="smoke", threads=1))
    assert d["data"]["n"] == 40 and d["data"]["limited_by"] == "profile smoke: first 40 samples"
    assert "accuracy bounded by profile smoke: first 40 samples" in markdown([d])
    d = bench([str(ort_bundle)], BenchConfig(data="digits:test", profile="smoke", threads=1, data_limit=30))
    assert d["data"]["n"] == 30 and d["data"]["limited_by"] == "--data-limit 30"


# ------------------------------------------------------------------------------------------------ QAT
def test_unfinished_qat_run_never_exports(cli, tiny_run, tmp_path, monkeypatch):
    import edgeft.stages.qat as qat_mod

    def boom(*a, **k):
        raise RuntimeError("simulated crash during QAT training")

    monkeypatch.setattr(qat_mod, "fit", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        qat_mod.qat(tiny_run, out=tmp_path / "q", epochs=1, lr=None, flavour="cpu", target=None, calib_size=32,
                    max_drop=None, resume=False, threads=None)
    m = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert m["status"] == "failed" and "simulated crash" in m["status_reason"]
    r = cli("export", tmp_path / "q", "--format", "onnxruntime", "--int8")
    assert r.code == 2 and "unfinished QAT run (status: failed" in r.err, r.err
    assert not (tmp_path / "q" / "bundles").exists()
    # a process killed mid-training leaves "running": refused the same way
    (tmp_path / "q" / "metrics.json").write_text(json.dumps({"status": "running", "stage": "qat"}))
    r = cli("export", tmp_path / "q", "--format", "onnx")
    assert r.code == 2 and "status: running" in r.err


# -------------------------------------------------------------------------------------------- progress
def test_progress_lines_when_not_a_terminal(capsys):
    from edgeft.utils import log

    p = log._LineProgress(every=10.0, first=3.0)
    t = [0.0]
    p._now = lambda: t[0]
    i = p.add_task("accuracy of X", total=100, status="")
    p.update(i, advance=10)              # 0 s: nothing yet (short tasks stay silent)
    t[0] = 4.0
    p.update(i, advance=10)              # 4 s: first line
    t[0] = 8.0
    p.update(i, advance=10)              # 4 s after the last line: still quiet
    t[0] = 15.0
    p.update(i, advance=70)
    p.remove_task(i)
    lines = [x for x in capsys.readouterr().err.splitlines() if x]
    assert lines == ["accuracy of X: 20/100 (20%)  4s", "accuracy of X: 100/100 (100%)  15s",
                     "accuracy of X: 100/100 (100%)  15s done"], lines


# ------------------------------------------------------------------ what benchmark_app / Ultralytics users look for
def test_throughput_scenario_streams_batches_and_layer_profiles(cli, tiny_run, ort_bundle, tmp_path):
    ov = tmp_path / "ov8"
    export(tiny_run, format="openvino", precision="int8", out=ov)
    r = cli("bench", ov, ort_bundle, "--scenario", "throughput", "--streams", "1,2", "--batches", "1,4",
            "--profile", "smoke", "--data", "digits:test", "--data-limit", 64, "--threads", 2,
            "--profile-layers", "--out", tmp_path / "tp")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "tp" / "result.json").read_text())
    rows = {a["name"]: a for a in doc["artifacts"]}
    assert len(rows) == 8 and doc["scenario"]["streams"] == [1, 2] and doc["scenario"]["batches"] == [1, 4]
    for a in rows.values():
        t = a["throughput"]
        assert t["throughput_sps"] > 0 and t["min_sps"] <= t["throughput_sps"] <= t["max_sps"]
        assert t["batch"] in (1, 4) and t["streams"] >= 1 and a["latency"]["e2e"]["count"] > 0
    assert rows["ov8 [streams 2, batch 4]"]["throughput"]["requests_in_flight"] >= 2
    for name in ("ov8", "ort"):
        prof = json.loads((tmp_path / "tp" / f"layers_{name}.json").read_text())
        assert prof["layers"] and abs(sum(x["share"] for x in prof["layers"]) - 1) < 1e-6
        assert any(x["type"] in ("Convolution", "Conv") for x in prof["layers"]), prof["layers"][:3]
    assert "| layer | type | kernel |" in r.out
    for opt, val in (("--streams", "0"), ("--streams", "two"), ("--batches", "auto")):
        r = cli("bench", ov, "--scenario", "throughput", opt, val, "--data", "digits:test")
        assert r.code == 2 and opt in r.err and r.err.count("\n") == 1, r.err


def test_predict_on_a_class_folder_tree_reports_accuracy(cli, ort_bundle, tmp_path):
    r = cli("data", "export-images", "digits", "--out", tmp_path / "img", "--limit", 40)
    assert r.code == 0, r.err
    r = cli("predict", ort_bundle, tmp_path / "img", "--top-k", 3)
    assert r.code == 0, r.err
    line = next(x for x in r.out.splitlines() if x.startswith("accuracy against the class folders"))
    k, n = (int(v) for v in line.split("(")[1].split(")")[0].split("/"))
    preds = [x for x in r.out.splitlines() if x.startswith(str(tmp_path))]
    right = sum(x.split(": ", 1)[1].split()[0] == x.split("/")[-2] for x in preds)
    assert n == 40 == len(preds) and k == right and "top-3" in line
    r = cli("predict", ort_bundle, next((tmp_path / "img").rglob("*.png")))
    assert "accuracy against" not in r.out                       # a single file: nothing to score


def test_camera_saves_the_annotated_video_and_json_lines(cli, ort_bundle, tmp_path):
    cv2 = pytest.importorskip("cv2")
    vid = tmp_path / "v.mp4"
    assert cli("data", "make-video", vid, "--data", "digits:test", "--seconds", 1, "--size", 64).code == 0
    r = cli("camera", ort_bundle, "--source", vid, "--duration", 1, "--fps", 20, "--no-display",
            "--save", tmp_path / "out.mp4", "--jsonl", tmp_path / "frames.jsonl", "--json", tmp_path / "c.json")
    assert r.code == 0, r.err
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    rep = json.loads((tmp_path / "c.json").read_text())
    c = rep["camera"]           # one line per processed frame, warm-up frames included
    assert c["processed_frames"] <= len(lines) <= c["processed_frames"] + c["warmup_frames"]
    assert [x["frame"] for x in lines] == sorted({x["frame"] for x in lines})
    assert all({"frame", "t_sched_s", "e2e_ms", "label", "score"} <= set(x) for x in lines)
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    assert ok and n == rep["saved_video"]["frames"] == len(lines) and frame.shape[:2] == (64, 64)
    assert not list(tmp_path.glob(".out.tmp-*")) and not list(tmp_path.glob(".frames.tmp-*"))
    r = cli("camera", ort_bundle, "--source", vid, "--duration", 1, "--no-display", "--save", tmp_path / "out.gif")
    assert r.code == 2 and "--save" in r.err and ".mp4" in r.err
    before = (tmp_path / "out.mp4").read_bytes()
    r = cli("camera", ort_bundle, "--source", vid, "--duration", 1, "--no-display", "--save", tmp_path / "out.mp4")
    assert r.code == 2 and "already exists" in r.err and (tmp_path / "out.mp4").read_bytes() == before
    r = cli("camera", ort_bundle, "--source", vid, "--duration", 1, "--no-display", "--jsonl", tmp_path / "no" / "f.jsonl")
    assert r.code == 2 and "does not exist" in r.err


def test_pareto_front_and_indistinguishable_points():
    from edgeft.bench.report import indistinguishable, pareto_front

    def pt(name, x, lo, hi, y, ylo, yhi):
        return {"name": name, "x": x, "x_lo": lo, "x_hi": hi, "y": y, "y_lo": ylo, "y_hi": yhi}

    pts = [pt("int8", 0.28, 0.20, 0.31, 0.592, 0.570, 0.613),     # faster, accuracy within the others' CI
           pt("ov32", 0.42, 0.35, 0.59, 0.599, 0.577, 0.620),
           pt("ort32", 0.43, 0.39, 0.46, 0.599, 0.577, 0.620),     # same as ov32 on both axes, a hair slower
           pt("torch", 5.0, 4.8, 5.1, 0.599, 0.577, 0.620),
           pt("big", 9.0, 8.9, 9.1, 0.700, 0.690, 0.710)]          # slower but clearly more accurate
    front = pareto_front(pts)
    assert front == {"int8", "ov32", "big"}
    tied = indistinguishable(front, pts)
    # int8 vs ov32: accuracy CIs overlap (the front's step is noise); ort32 sits inside ov32's box; big's step is real
    assert tied == {"int8", "ov32", "ort32"}
