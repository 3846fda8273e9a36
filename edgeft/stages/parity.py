"""Parity of a bundle against PyTorch, through the runtime a device uses: the task's output comparison on real
validation samples, the task's metric on the whole validation split for the artifact and for PyTorch FP32, and
the verdict (parity tolerance per precision, ``--max-drop`` gate on the metric)."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ..bundle import STATUS_OK
from ..errors import UnsupportedError
from ..runtime.features import fit_length


def parity_report(bundle_dir: Path, manifest: dict, ref_model, fp32_model, task, recipe, data, precision: str,
                  n: int, batch: int = 32, ref_cache: Path | None = None) -> dict:
    """Run the artifact through the device runtime and compare with PyTorch on real validation data.
    ``ref_cache``: a JSON file keeping PyTorch FP32's validation metric per (weights, recipe, split), so the
    bundles of one run do not each re-run PyTorch over the whole split."""
    dev = task.device.bound(manifest, bundle_dir)
    val = data.val
    rng = np.random.default_rng(0)
    idx = np.sort(rng.permutation(len(val))[: min(n, len(val))])
    feeds = task.eval_inputs(val, recipe, idx)
    ref = _concat([task.torch_outputs(ref_model, _slice(feeds, s, batch)) for s in range(0, len(idx), batch)])
    runner_cls, how = parity_runner(manifest)
    with runner_cls(bundle_dir, manifest) as runner:
        got = _concat([runner.infer(_slice(feeds, s, batch)) for s in range(0, len(idx), batch)])
        acc_art = split_metric(runner.infer, task, recipe, val, batch, dev, len(manifest["labels"]),
                               label=f"accuracy of the {manifest['format']}/{manifest['precision']} bundle")
    acc_ref = _cached(ref_cache, f"{manifest['source']['model_sha256']}-{recipe.hash()}-val-{len(val)}",
                      lambda: split_metric(lambda f: task.torch_outputs(fp32_model, f), task, recipe, val, batch, dev,
                                           len(manifest["labels"]), label="accuracy of PyTorch FP32"))
    m = dev.metric
    return {
        "samples": int(len(idx)), "split": "val",
        "reference": "pytorch fp32" if ref_model is fp32_model else "pytorch fake-quant (QAT)",
        **dev.parity(ref, got),
        "accuracy": {"split": "val", "metric": m, "n": acc_art["n"], m: acc_art[m], f"{m}_pytorch_fp32": acc_ref[m],
                     "drop_points": round((acc_ref[m] - acc_art[m]) * 100, 3)},
        "tolerance": dev.tolerance[precision], "runtime": how,
    }


def _cached(path: Path | None, key: str, compute) -> dict:
    from ..utils.io import atomic_write_json, read_json

    try:
        known = read_json(path) if path is not None and path.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), dict):
        return known[key]
    val = compute()
    if path is not None:
        try:
            atomic_write_json(path, {**known, key: val})
        except (OSError, TypeError, ValueError):
            pass                        # a read-only run folder: recompute next time
    return val


def _slice(feeds: dict, s: int, batch: int) -> dict:
    return {k: v[s:s + batch] for k, v in feeds.items()}


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def split_metric(infer, task, recipe, split, batch: int, dev=None, n_classes: int | None = None,
                 label: str = "accuracy") -> dict:
    """The task's metric over a whole split, from ``infer(feeds) -> outputs`` (artifact or PyTorch)."""
    from ..utils.log import progress

    acc = (dev or task.device).accumulator(n_classes)
    n = len(split)
    with progress() as prog:
        bar = prog.add_task(f"{label} on the val split", total=n, status="")
        for s in range(0, n, 256):
            idx = np.arange(s, min(s + 256, n))
            feeds = task.eval_inputs(split, recipe, idx)
            out = _concat([infer(_slice(feeds, i, batch)) for i in range(0, len(idx), batch)])
            acc.update(out, split.targets[idx])
            prog.update(bar, advance=len(idx))
        prog.remove_task(bar)
    return acc.result()


def parity_runner(manifest: dict):
    """The runner that checks a bundle: natively when this CPU computes what the target's CPU computes, else a
    faithful simulation. Full-range INT8 (u8s8 for VNNI CPUs, s8s8 for TensorRT) saturates in the int8 kernels
    of x86 CPUs without VNNI, so there it is checked with Q/DQ (ONNX Runtime) or FakeQuantize (OpenVINO) run
    as float maths: the integer arithmetic a VNNI CPU or TensorRT performs."""
    from ..backends import backend_for
    from ..errors import BundleError
    from ..targets import check_bundle, real_cpu_features

    fmt = manifest["format"]
    real = real_cpu_features()
    try:
        check_bundle(manifest, "parity", feats=real)
        return partial(backend_for(fmt).Runner, check_target=False), fmt
    except BundleError as e:
        why = f"this CPU cannot run it natively ({real.describe()})"
        if "int8_full_range" not in manifest["target"]["requires"]:
            raise UnsupportedError(f"cannot verify the bundle here: {e.message}") from None
    if fmt in ("onnx", "onnxruntime"):
        from ..backends.onnxruntime import Runner

        return partial(Runner, exact_qdq=True, check_target=False), \
            f"onnxruntime, Q/DQ simulated in float (exact int8 arithmetic; {why})"
    from ..backends.openvino import Runner

    return partial(Runner, exact_int8=True, check_target=False), \
        f"openvino, FakeQuantize simulated in float (exact int8 arithmetic; {why})"


def judge(task, par: dict, precision: str, max_drop: float | None) -> tuple[str, str | None]:
    why = task.device.parity_failure(par, precision)
    if why:
        return "failed_parity", why
    a = par["accuracy"]
    if max_drop is not None and a["drop_points"] > max_drop:
        m = a.get("metric", "top1")
        return "failed_gate", (f"val {_metric_name(m)} {a[m]:.4f} vs PyTorch FP32 {a[f'{m}_pytorch_fp32']:.4f}: drop "
                               f"{a['drop_points']:.2f} points > --max-drop {max_drop}")
    return STATUS_OK, None


def _metric_name(m: str) -> str:
    return {"top1": "top-1", "map": "mAP"}.get(m, m)


def streaming_parity(bundle_dir: Path, manifest: dict, model, task, recipe, data, n: int = 32) -> dict:
    """Final logits after streaming a clip's audio hop by hop through the bundle's streaming graph (front end
    included) vs the full-window PyTorch model on the same clip's features."""
    from ..backends import backend_for
    from ..bundle import streaming_view

    sm = manifest["streaming_model"]
    lm = recipe.features.logmel()
    hop = int(sm["hop_samples"])
    idx = np.arange(min(n, len(data.val)))
    feeds = task.eval_inputs(data.val, recipe, idx)
    x = next(iter(feeds.values()))                        # (n, 1, n_feat, T)
    ref = task.torch_outputs(model, feeds)["logits"]
    end = (x.shape[-1] - 1) * lm.hop + lm.n_fft           # the clip's last frame ends here
    lead = (-end) % hop                                   # zeros first, so that a hop ends exactly there
    got = []
    with backend_for(manifest["format"]).Runner(bundle_dir, streaming_view(manifest), check_target=False) as r:
        sess = r.state_session()           # the device's path: the state in the backend's own buffers
        for i in idx:
            clip = fit_length(data.val.clips[i] / 32767.0, lm.clip_samples)[:end]
            clip = np.concatenate([np.zeros(lead, np.float32), clip])
            sess.reset()
            for t in range(0, len(clip), hop):
                logits = sess.step(clip[None, t:t + hop])[0]
            got.append(logits[0])
    got = np.stack(got)
    return {"clips": int(len(idx)), "max_abs_diff": float(np.abs(got - ref).max()),
            "top1_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "reference": "full-window PyTorch model on the same clip (the stream: its audio, hop by hop)"}