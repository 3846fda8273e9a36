"""edgeft bench / report / run / camera on tiny artifacts (smoke profile: numbers are never asserted)."""
import json
import shutil

import pytest

from edgeft.bench.harness import BenchConfig, bench
from edgeft.bench.report import load_json, markdown, merge, save_json
from edgeft.bundle import write_manifest
from edgeft.errors import DataError
from edgeft.stages.export import export

from .conftest import write_digits_folder, write_recipe


@pytest.fixture(scope="module")
def arts(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_bundles")
    ort = d / "ort"
    ov8 = d / "ov8"
    export(tiny_run, format="onnxruntime", precision="fp32", out=ort)
    export(tiny_run, format="openvino", precision="int8", out=ov8)
    return tiny_run, ort, ov8


@pytest.fixture(scope="module")
def result(arts, tmp_path_factory):
    run, ort, ov8 = arts
    doc = bench([str(run), str(ort), str(ov8)], BenchConfig(data="digits:test", profile="smoke", threads=1,
                                                           data_limit=400))
    return doc


def test_result_document(result):
    d = result
    assert d["schema_version"] == "1.0" and d["scenario"]["name"] == "single_stream"
    assert d["device"]["cpu_model"] and d["settings"]["threads"] == 1 and d["settings"]["interleaved"]
    assert len(d["settings"]["round_order"]) == 1 and d["reference"].endswith("pytorch-fp32")
    names = [a["name"] for a in d["artifacts"]]
    assert len(set(names)) == 3
    for a in d["artifacts"]:
        lat = a["latency"]
        for stage in ("pre", "infer", "post", "e2e"):
            for k in ("count", "min", "mean", "p50", "p90", "p95", "p99", "p999", "max", "p90_ub99", "p99_ub99"):
                assert k in lat[stage]
        assert lat["e2e"]["count"] >= 64 and lat["e2e"]["p90_ub99"] is not None
        assert a["accuracy"]["n"] == 400 and 0 <= a["accuracy"]["top1"] <= a["accuracy"]["top5"] <= 1
        assert a["accuracy"]["top1_ci95"][0] <= a["accuracy"]["top1"] <= a["accuracy"]["top1_ci95"][1]
        assert a["compliance"]["logged"] >= 32 and a["compliance"]["passed"], a["compliance"]
        assert a["startup"]["load_ms"] > 0 and a["startup"]["first_inference_ms"] > 0
        assert a["startup"]["warmup"]["iterations"] >= 10
        assert a["throughput"]["throughput_sps"] > 0 and a["bytes"] > 0
        checks = {c["name"] for c in a["validity"]["checks"]}
        assert {"min_count_met", "min_duration_met", "compliance_outputs_match", "threads_as_requested"} <= checks
    ref = next(a for a in d["artifacts"] if a["reference"])
    other = next(a for a in d["artifacts"] if not a["reference"])
    assert ref["vs_reference"]["p50_ratio"]["median"] == 1.0 and other["vs_reference"]["speedup_p50"] > 0
    peaks = d["roofline"]["peaks"]
    assert peaks["f32"]["gmacs"] > 0 and peaks["int8"]["gmacs"] > 0
    assert ("gmacs" in peaks["bf16"]) or "bf16" in peaks["bf16"]["unavailable"]
    for a in d["artifacts"]:  # every artifact against the peak of the precision it computes in
        roof = a["roofline"]
        want = "int8" if a["precision"] == "int8" else "f32"
        assert roof["peak_precision"] == want and roof["peak_gmacs"] == peaks[want]["gmacs"], (a["name"], roof)
        assert roof["pct_of_peak"] == pytest.approx(100 * roof["achieved_gmacs"] / roof["peak_gmacs"], abs=0.1)
        assert a["target"]["runs"] and a["target"]["name"]
    int8 = next(a for a in d["artifacts"] if a["precision"] == "int8")
    assert int8["target"]["runs"] == "int8 + f32" and int8["target"]["requires"] == (
        ["int8_full_range"] if int8["target"]["name"] != "x86-avx2" else [])


def test_json_roundtrip_markdown_and_merge(result, tmp_path):
    p = tmp_path / "r.json"
    side = save_json(result, p)
    assert side.is_file()
    back = load_json(p)
    assert back["artifacts"] == json.loads(json.dumps(result["artifacts"]))
    other = json.loads(p.read_text())
    other["device"]["cpu_model"] = "Other CPU"
    (tmp_path / "o.json").write_text(json.dumps(other))
    docs = merge([p, tmp_path / "o.json"])
    md = markdown(docs)
    assert "| device |" in md and "Other CPU" in md and md.count("pytorch/fp32") == 2
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    with pytest.raises(DataError, match="not an edgeft bench result"):
        load_json(tmp_path / "bad.json")
    other["schema_version"] = "2.0"
    (tmp_path / "v2.json").write_text(json.dumps(other))
    with pytest.raises(DataError, match="schema 2.0"):
        load_json(tmp_path / "v2.json")


def test_bench_cli_writes_json_md_plots(cli, arts, tmp_path):
    run, ort, _ = arts
    r = cli("bench", run, ort, "--profile", "smoke", "--threads", 1, "--data-limit", 200, "--out", tmp_path / "o")
    assert r.code == 0, r.err
    assert "speedup vs ref" in r.out and "edgeft report" in r.out
    assert (tmp_path / "o" / "result.json").is_file() and (tmp_path / "o" / "result.md").is_file()
    assert (tmp_path / "o" / "plots" / "pareto.png").is_file() and (tmp_path / "o" / "plots" / "latency_cdf.png").is_file()
    r = cli("report", tmp_path / "o" / "result.json", "--md", tmp_path / "m.md")
    assert r.code == 0 and (tmp_path / "m.md").read_text().startswith("### ")


def test_offline_scenario(arts):
    run, ort, _ = arts
    d = bench([str(ort)], BenchConfig(data="digits:test", scenario="offline", profile="smoke", threads=1,
                                      data_limit=200, batch=16))
    a = d["artifacts"][0]
    assert d["scenario"]["batch"] == 16 and a["throughput"]["throughput_sps"] > 0


def test_bad_inputs(cli, arts, tmp_path):
    run, ort, ov8 = arts
    r = cli("bench")
    assert r.code == 2 and "no artifacts" in r.err
    # data whose labels are not the model's labels
    write_digits_folder(tmp_path / "letters", per_class=2, classes=range(2))
    (tmp_path / "letters" / "0").rename(tmp_path / "letters" / "A")
    r = cli("bench", ort, "--data", tmp_path / "letters", "--profile", "smoke")
    assert r.code == 2 and "do not match the model's labels" in r.err and r.err.count("\n") == 1
    # mixed tasks
    kws = tmp_path / "kws"
    shutil.copytree(ort, kws)
    m = json.loads((kws / "manifest.json").read_text())
    m["task"] = "kws"
    m["preprocess"] = {"kind": "logmel", "sample_rate": 16000, "n_fft": 512, "win": 400, "hop": 160, "n_mels": 40,
                       "f_min": 20.0, "f_max": 8000.0, "clip_samples": 16000, "frames": 97}
    m["inputs"] = [{"name": "input", "shape": ["batch", 1, 40, 97]}]
    m.pop("files")
    write_manifest(kws, m)
    r = cli("bench", ort, kws, "--profile", "smoke")
    assert r.code == 2 and "mixed tasks" in r.err
    r = cli("bench", ort, "--scenario", "realtime")
    assert r.code == 2 and "unknown scenario" in r.err
    r = cli("bench", tmp_path / "nothing")
    assert r.code == 2 and "does not exist" in r.err
    r = cli("report", tmp_path / "missing.json")
    assert r.code == 2 and "does not exist" in r.err
    # a built-in dataset has official train/test splits only: anything else (a typo of test, a run's val)
    # is refused instead of silently benchmarking on the training images
    r = cli("bench", ort, "--data", "digits:val", "--profile", "smoke")
    assert r.code == 2 and "valid are train, test" in r.err and r.err.count("\n") == 1, r.err
    r = cli("data", "export-images", "digits", "--out", tmp_path / "imgs", "--split", "dev")
    assert r.code == 2 and "valid are train, test" in r.err and not (tmp_path / "imgs").exists()
    # every setting is checked before any work (no accuracy pass first), whatever the scenario
    for scenario in ("camera", "single_stream"):
        for opt, val, needle in (("--handoff", "lifo", "valid are latest, fifo:N, block"),
                                 ("--handoff", "fifo:0", "fifo needs a size >= 1"),
                                 ("--deadline-ms", "0", "--deadline-ms 0: must be > 0"),
                                 ("--fps", "0", "--fps 0: must be > 0"), ("--duration", "-1", "must be > 0"),
                                 ("--replay", "sometimes", "valid are realtime, asfast, both"),
                                 ("--threshold", "2", "valid is 0 < t < 1"), ("--profile", "fast", "unknown profile")):
            r = cli("bench", ort, "--scenario", scenario, "--profile", "smoke", opt, val)
            assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, (scenario, opt, r.err)
            assert "accuracy" not in r.out, r.out
    r = cli("camera", ort, "--source", tmp_path / "none.mp4", "--fps", "0")
    assert r.code == 2 and "Invalid value for '--fps'" in r.err and r.err.count("\n") == 1
    # typer's own usage errors are one line too
    r = cli("bench", ort, "--threads", "0")
    assert r.code == 2 and r.err.startswith("error: Invalid value for '--threads'") and r.err.count("\n") == 1
    r = cli("bench", ort, "--no-such-option")
    assert r.code == 2 and "No such option" in r.err and "edgeft bench --help" in r.err


@pytest.mark.slow
def test_run_pipeline_and_resume(cli, tmp_path):
    recipe = write_recipe(tmp_path / "p.yaml", epochs=1, extra=(
        "export:\n  calib_size: 64\n  parity_samples: 64\n  targets: [{format: onnxruntime, precision: fp32}, "
        "{format: openvino, precision: int8}]\nbench: {profile: smoke, data_limit: 200}\n"))
    r = cli("run", recipe, "--out", tmp_path / "p", "--threads", 1)
    assert r.code == 0, r.err
    assert "| finetune | done |" in r.out and "| bench | done |" in r.out and "speedup vs ref" in r.out
    nxt = r.out.split("Next:", 1)[1]  # the hint names a bundle that exists, not a placeholder
    assert "edgeft predict" in nxt and "openvino-int8" in nxt and "<FORMAT" not in nxt, nxt
    for f in ("pipeline.json", "summary.md", "bench/result.json", "bundles/onnxruntime-fp32/manifest.json",
              "bundles/openvino-int8/manifest.json", "finetune/model.safetensors"):
        assert (tmp_path / "p" / f).is_file(), f
    again = cli("run", recipe, "--out", tmp_path / "p", "--threads", 1)
    assert again.code == 0 and again.out.count("| cached |") == 4
    changed = cli("run", recipe, "--out", tmp_path / "p", "--set", "train.lr=0.5")
    assert changed.code == 2 and "different recipe" in changed.err


@pytest.mark.slow
def test_make_video_and_camera(cli, arts, tmp_path):
    pytest.importorskip("cv2")
    _, ort, _ = arts
    vid = tmp_path / "v.mp4"
    r = cli("data", "make-video", vid, "--data", "digits:test", "--seconds", 1, "--size", 64)
    assert r.code == 0 and vid.stat().st_size > 0, r.err
    r = cli("camera", ort, "--source", vid, "--duration", 1.5, "--fps", 30, "--no-display", "--json", tmp_path / "c.json")
    assert r.code == 0, r.err
    c = json.loads((tmp_path / "c.json").read_text())["camera"]
    assert c["offered_frames"] == 45 and c["accounted"]
    d = bench([str(ort)], BenchConfig(data="digits:test", scenario="camera", profile="smoke", threads=1,
                                      duration=2.0, source=str(vid), data_limit=100))
    cam = d["artifacts"][0]["camera"]
    assert cam["offered_frames"] == 60 and cam["processed_frames"] + cam["dropped_frames"] == 60
    assert "e2e" in d["artifacts"][0]["latency"]
    r = cli("camera", ort, "--source", tmp_path / "nope.mp4", "--duration", 1)
    assert r.code == 2 and "cannot open video" in r.err


def test_export_images_for_devices(cli, tmp_path):
    r = cli("data", "export-images", "digits", "--out", tmp_path / "img", "--limit", 30)
    assert r.code == 0 and len(list((tmp_path / "img").rglob("*.png"))) == 30
