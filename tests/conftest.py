"""Shared fixtures: tiny real data (scikit-learn digits), tiny recipes, an in-process CLI runner."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ["EDGEFT_OFFLINE"] = "1"          # no test may download anything
os.environ.setdefault("EDGEFT_QUIET", "1")  # no progress bars in test logs
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, request):
    """Run `edgeft ARGS` in-process; returns exit code, stdout, stderr. An escaping exception (= a traceback
    for the user) fails the test. With EDGEFT_CLI_LOG=FILE every call is appended to FILE as a JSON line (test,
    arguments, exit code, first stderr line): the case -> exit code -> message table of the hostile-input tests."""
    import json

    from edgeft.cli import main
    from edgeft.utils import log

    record = os.environ.get("EDGEFT_CLI_LOG")

    def run(*args) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            log.set_quiet(bool(os.environ.get("EDGEFT_QUIET")))
        cap = capsys.readouterr()
        if record:
            with open(record, "a") as f:
                f.write(json.dumps({"test": request.node.name, "args": [str(a) for a in args], "code": code,
                                    "err": (cap.err.strip().splitlines() or [""])[0]}) + "\n")
        return CliResult(code, cap.out, cap.err)

    return run


def run_subprocess(*args, env=None, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """`python -m edgeft ARGS` in its own process group (killed whole on timeout: no orphans)."""
    import signal

    e = {**os.environ, **(env or {})}
    cmd = [sys.executable, "-m", "edgeft", *map(str, args)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e, cwd=cwd or ROOT,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(f"timed out after {timeout}s: {' '.join(cmd)}\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def write_digits_folder(root: Path, per_class: int = 30, classes=range(10), size: int = 16, split=None) -> Path:
    """Real handwritten digits (scikit-learn) as PNG files in class folders."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.round(d.images * (255 / 16)), 0, 255).astype(np.uint8)
    for c in classes:
        idx = np.flatnonzero(d.target == c)[:per_class]
        out = root / (split or "") / str(c)
        out.mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(x[i], "L").resize((size, size), Image.NEAREST).save(out / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    return write_digits_folder(tmp_path_factory.mktemp("digits"))


TINY_RECIPE = """
task: image_cls
model: {{name: {model}}}
data: {{source: {source}, val_fraction: 0.2, test_fraction: {test_fraction}}}
input: {{size: 16, resize: 16, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}}
augment: {{hflip: false, pad_crop: 2}}
train: {{epochs: {epochs}, batch_size: 32, lr: 0.01, warmup_epochs: 0, label_smoothing: 0.0}}
export: {{calib_size: 64, parity_samples: 64}}
bench: {{profile: smoke}}
"""


def write_recipe(path: Path, model="test_cnn", source="digits", epochs=2, test_fraction=0.2, extra: str = "") -> Path:
    path.write_text(TINY_RECIPE.format(model=model, source=source, epochs=epochs, test_fraction=test_fraction) + extra)
    return path


@pytest.fixture
def tiny_recipe(tmp_path) -> Path:
    return write_recipe(tmp_path / "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 3-epoch test_cnn run on digits (shared by export/bench/prune tests)."""
    from edgeft.stages.finetune import finetune

    d = tmp_path_factory.mktemp("tiny_run")
    recipe = write_recipe(d / "tiny.yaml", epochs=4)
    finetune(str(recipe), d / "run")
    return d / "run"


def make_quant_hostile_run(src: Path, dst: Path, factor: float = 1000.0, shift: bool = True) -> Path:
    """Copy a test_cnn run and rescale it so per-tensor INT8 activations lose the other channels: channel 0
    after the first BN+ReLU is `factor`x larger (the next conv divides it back, so FP32 is unchanged unless
    `shift` also keeps channel 0 always on)."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from edgeft.rundir import RunDir, load_model

    shutil.copytree(src, dst)
    model, _ = load_model(dst)
    with torch.no_grad():
        bn, conv = model.features[1], model.features[3]
        bn.weight[0] *= factor
        bn.bias[0] *= factor
        if shift:
            bn.bias[0] += 1.0 * factor  # keep channel 0 active so the outlier is always present
        conv.weight[:, 0] /= factor
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(RunDir(dst).weights))
    return dst
