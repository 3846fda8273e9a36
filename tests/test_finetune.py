"""edgeft finetune: outputs, exact resume after a kill, DDP on CPU, and one-line bad-input errors."""
import json

import pytest
import torch

from edgeft.rundir import RunDir, load_model

from .conftest import run_subprocess, write_digits_folder, write_recipe


def test_finetune_cli_writes_a_complete_run(cli, tiny_recipe, tmp_path):
    out = tmp_path / "run"
    r = cli("finetune", "--recipe", tiny_recipe, "--out", out, "--epochs", 2)
    assert r.code == 0, r.err
    assert "test top-1" in r.out and f"edgeft export {out}" in r.out          # result + next command
    assert f"edgeft bench {out} --data " in r.out
    rd = RunDir(out)
    for f in ("recipe.yaml", "labels.txt", "model.json", "model.safetensors", "last.pt", "metrics.json",
              "confusion_matrix.png", "split.json"):
        assert (out / f).is_file(), f
    m = json.loads((out / "metrics.json").read_text())
    assert m["status"] == "complete" and m["epochs"] == 2 and len(m["history"]) == 2
    assert 0 <= m["val_top1"] <= 1 and m["val_loss"] > 0 and m["train_time_s"] >= 0 and m["images_per_s"] > 0
    assert "test_top1" in m and len(m["confusion_matrix"]) == 10
    assert rd.read_labels() == [str(i) for i in range(10)]
    ck = torch.load(out / "last.pt", weights_only=True)                      # safe to load
    assert ck["epoch"] == 2 and "optimizer" in ck and "scheduler" in ck
    model, desc = load_model(out)
    assert desc["name"] == "test_cnn" and model(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
    # the run's resolved recipe reproduces it
    assert "epochs: 2" in (out / "recipe.yaml").read_text()
    # nothing is overwritten
    again = cli("finetune", "--recipe", tiny_recipe, "--out", out)
    assert again.code == 2 and "already holds a complete run" in again.err and "--resume" in again.err


@pytest.mark.slow
def test_resume_after_kill_mid_epoch_matches_uninterrupted(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", model="test_resnet", epochs=3,
                          extra="model: {name: test_resnet, dropout: 0.2}\n")
    a = run_subprocess("-q", "finetune", "--recipe", recipe, "--out", tmp_path / "a")
    assert a.returncode == 0, a.stderr
    killed = run_subprocess("-q", "finetune", "--recipe", recipe, "--out", tmp_path / "b",
                            env={"EDGEFT_FAULT": "finetune:epoch=1:batch=5"})
    assert killed.returncode == -9                                             # SIGKILL mid-epoch 2
    mid = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert mid["status"] == "running" and mid["epochs"] == 1
    resumed = run_subprocess("-q", "finetune", "--resume", "--out", tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert mb["epochs"] == ma["epochs"] == 3
    for ra, rb in zip(ma["history"], mb["history"]):
        assert ra["train_loss"] == rb["train_loss"] and ra["val_top1"] == rb["val_top1"]
    assert ma["val_top1"] == mb["val_top1"] and ma["test_top1"] == mb["test_top1"]
    wa, wb = load_model(tmp_path / "a")[0].state_dict(), load_model(tmp_path / "b")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_ddp_two_processes_gloo_one_run_dir(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", epochs=2)
    r = run_subprocess("-q", "finetune", "--recipe", recipe, "--out", tmp_path / "ddp", "--devices", 2, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["status"] == "complete" and m["world_size"] == 2 and m["epochs"] == 2
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.suffix in {".pt", ".safetensors"}) == \
        ["last.pt", "model.safetensors"]
    assert r.stdout.count("finetune done") == 1                                 # only rank 0 reports


def test_resume_with_different_classes_is_an_error(cli, tmp_path):
    data = write_digits_folder(tmp_path / "d", per_class=8, classes=range(4))
    recipe = write_recipe(tmp_path / "r.yaml", source=str(data), epochs=1, test_fraction=0.0)
    assert cli("finetune", "--recipe", recipe, "--out", tmp_path / "run").code == 0
    other = write_digits_folder(tmp_path / "d2", per_class=8, classes=range(5))
    r = cli("finetune", "--resume", "--out", tmp_path / "run", "--data", other, "--epochs", 2)
    assert r.code == 2 and r.err.count("\n") == 1
    assert "classes differ from the run's labels.txt" in r.err


@pytest.mark.parametrize("case", ["missing_dir", "empty_dir", "corrupt_strict", "unknown_model", "unknown_key",
                                  "wrong_type", "resume_nothing", "bad_epochs"])
def test_bad_input_one_line_exit_2(cli, tmp_path, case):
    recipe = write_recipe(tmp_path / "r.yaml")
    args = ["finetune", "--recipe", recipe, "--out", tmp_path / "run"]
    expect = {
        "missing_dir": (["--data", tmp_path / "nope"], "neither a built-in dataset"),
        "empty_dir": (["--data", tmp_path], "no class sub-folders"),
        "corrupt_strict": (["--data", "CORRUPT", "--strict"], "unreadable image"),
        "unknown_model": (["--set", "model.name=resnet81"], "unknown model 'resnet81'. Did you mean: 'resnet18'"),
        "unknown_key": (["--set", "train.epoch=3"], "unknown key 'train.epoch'. Did you mean: 'epochs'"),
        "wrong_type": (["--set", "train.lr=fast"], "train.lr: Input should be a valid number"),
        "resume_nothing": (["--resume"], "run directory"),
        "bad_epochs": (["--epochs", "0"], "Invalid value"),
    }[case]
    extra, needle = expect
    if "CORRUPT" in extra:
        d = write_digits_folder(tmp_path / "c", per_class=4, classes=range(2))
        (d / "1" / "bad.png").write_bytes(b"garbage")
        extra = ["--data", d, *extra[2:]]
    (tmp_path / "r.yaml").touch()
    r = cli(*args, *extra)
    assert r.code == 2, (r.out, r.err)
    assert needle in r.err, r.err
    assert "Traceback" not in r.err
    assert r.err.startswith("error: ") and r.err.count("\n") == 1   # typer's usage errors too


def test_ema_weights_are_what_is_validated_and_kept(cli, tiny_recipe, tmp_path):
    """train.ema_decay: the EMA of the weights is validated each epoch, and the best EMA is the saved model (its
    val top-1 recomputed from the saved weights equals the recorded one)."""
    from edgeft.recipe import load_recipe
    from edgeft.stages.trainer import evaluate
    from edgeft.tasks import get_task

    out = tmp_path / "ema"
    r = cli("finetune", "--recipe", tiny_recipe, "--out", out, "--epochs", 2, "--set", "train.ema_decay=0.9")
    assert r.code == 0, r.err
    m = json.loads((out / "metrics.json").read_text())
    model, _ = load_model(out)
    recipe = load_recipe(out / "recipe.yaml")
    task = get_task(recipe.task)
    val = evaluate(model, task, task.load_data(recipe).val, recipe, torch.device("cpu"), num_classes=10)
    assert val["top1"] == pytest.approx(m["val_top1"], abs=1e-9)
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["ema"] is not None and int(ck["ema"]["n_averaged"]) > 0


def test_cpu_autocast_is_refused_where_the_cpu_cannot_compute_it(cli, tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFT_CPU_FEATURES", "x86-avx2")
    r = cli("finetune", "--recipe", tiny_recipe, "--out", tmp_path / "a", "--epochs", 1, "--set", "train.amp=bf16")
    assert r.code == 2 and "AVX512_BF16" in r.err and r.err.count("\n") == 1, r.err
    r = cli("finetune", "--recipe", tiny_recipe, "--out", tmp_path / "b", "--epochs", 1, "--set", "train.amp=fp16")
    assert r.code == 2 and "bf16 only" in r.err, r.err
    monkeypatch.setenv("EDGEFT_CPU_FEATURES", "x86-amx")
    from edgeft.sections import TrainCfg
    from edgeft.stages.trainer import amp_dtype

    assert amp_dtype(TrainCfg(amp="bf16"), torch.device("cpu")) == torch.bfloat16
    assert amp_dtype(TrainCfg(amp="auto"), torch.device("cpu")) is None          # measured slower: fp32 on CPUs
