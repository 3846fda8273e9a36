"""The backend contract, torch-free: a :class:`Backend` declares what it can build and run (format x precision,
and why not otherwise), builds a bundle's model file from ONNX, and opens a :class:`Runner` that maps named
inputs to named outputs (Polygraphy's runner shape). Adding a backend is one module with one ``Backend``
subclass plus one line in :data:`edgeft.backends.BACKENDS`.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from ..errors import UnsupportedError


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


PRECISIONS = tuple(p.value for p in Precision)


@dataclass
class BuildConfig:
    """What ``Backend.build`` gets: the bundle's format, precision and target, INT8 calibration feeds (a list of
    ``{input name: batch}``), the QAT facts of the run, and backend-specific options (TensorRT: workspace...)."""

    format: str
    precision: Precision
    target: Any                                   # edgeft.targets.Target
    calib: list[dict[str, np.ndarray]] | None = None
    from_qat: bool = False
    qat_quantization: dict | None = None
    options: dict = field(default_factory=dict)

    @property
    def input_name(self) -> str:
        return next(iter(self.calib[0])) if self.calib else "input"


class Backend:
    """One runtime. Subclasses set the class attributes and implement ``build``; ``Runner`` runs a bundle."""

    name: ClassVar[str] = ""
    package: ClassVar[str] = ""                     # the Python package it imports (lazily)
    install: ClassVar[str] = ""                     # how to get it, for the "unavailable" message
    # format -> {precision: None when supported, else why not and what to use instead}
    formats: ClassVar[dict[str, dict[str, str | None]]] = {}
    Runner: ClassVar[type] = None                   # type: ignore[assignment]

    def unavailable_reason(self) -> str | None:
        try:
            importlib.import_module(self.package)
        except ImportError as e:
            return f"{e}"
        return None

    def version(self) -> str:
        mod = importlib.import_module(self.package)
        return getattr(mod, "__version__", None) or mod.get_version()

    def build(self, onnx_path: Path, out_dir: Path, cfg: BuildConfig) -> dict:  # pragma: no cover - abstract
        """Write the model file(s) into ``out_dir``; return manifest details (``model_files``, ``quantization``)."""
        raise NotImplementedError

    def convert_extra(self, onnx_path: Path, out_dir: Path, stem: str, precision: str) -> str:
        """An auxiliary FP32 graph (a streaming model) in this backend's file format; returns its file name."""
        raise UnsupportedError(f"backend {self.name!r} cannot ship an auxiliary graph")

    def load(self, bundle_dir, manifest: dict, **kw) -> "Runner":
        """A Runner for the bundle (use it as a context manager)."""
        return self.Runner(bundle_dir, manifest, **kw)


def _fmt(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class Runner:
    """Context manager over a loaded model: ``with runner: outputs = runner.infer({"input": x})``.

    ``infer`` takes named inputs (a bare array for a one-input model) and returns ``{output name: array}`` in the
    model's output order. Subclasses implement ``_load()``, ``_run(feeds) -> dict`` and ``io()``; the base
    checks the bundle's target against this CPU before loading (:func:`edgeft.targets.check_bundle`: a
    mismatch that changes results is refused, one that costs speed lands in ``warnings``;
    ``check_target=False`` is for callers that chose a faithful way to run it themselves, the export's parity
    check), checks the loaded model's I/O against the manifest, and records load and first-inference time."""

    def __init__(self, bundle_dir, manifest: dict, threads: int | None = None, device: str | None = None,
                 check_target: bool = True):
        self.bundle_dir = bundle_dir
        self.manifest = manifest
        self.threads = threads
        self.device = device
        self.check_target = check_target
        self.load_ms: float | None = None
        self.first_inference_ms: float | None = None
        self.info: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.input_names: list[str] = []
        self.output_names: list[str] = []

    def __enter__(self):
        from ..errors import BundleError, EdgeftError

        if self.check_target and not (self.device or "").startswith("cuda"):
            from ..targets import check_bundle

            self.warnings = check_bundle(self.manifest, str(self.bundle_dir))
        t = time.perf_counter()
        try:
            self._load()
        except EdgeftError:
            raise
        except Exception as e:  # noqa: BLE001 - a model file the runtime cannot read is a bundle problem
            files = ", ".join((self.manifest.get("model_files") or {}).values())
            raise BundleError(f"cannot load {files} from {self.bundle_dir} with {type(self).__module__.split('.')[-1]}: "
                              f"{type(e).__name__}: {' '.join(str(e).split())[:200]}",
                              hint="the model file is not a valid model for this backend; re-export the bundle") from None
        self.load_ms = (time.perf_counter() - t) * 1e3
        try:
            io = self.io()
            if io is not None:
                self.input_names = [n for n, _ in io[0]]
                self.output_names = [n for n, _ in io[1]]
            self._check_io(io)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        pass

    def infer(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            if len(self.input_names) != 1:
                raise UnsupportedError(f"this model has inputs {self.input_names}: pass a dict of named inputs")
            feeds = {self.input_names[0]: feeds}
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        if self.first_inference_ms is None:
            t = time.perf_counter()
            y = self._run(feeds)
            self.first_inference_ms = (time.perf_counter() - t) * 1e3
            return y
        return self._run(feeds)

    def state_session(self) -> "StateSession":
        """One stream's own state over a stateful model (a manifest with ``stateful``: the model's data input and
        output, and each state input with the output that carries its next value; see
        :func:`edgeft.bundle.streaming_view`). Backends override it with a faster one (no state copies)."""
        return StateSession(self)

    def _check_io(self, io) -> None:
        """The model file must be the model the manifest describes: every static dim the manifest declares for
        its inputs and outputs (a classifier's output: one value per label)."""
        from ..errors import BundleError

        if io is None:
            return
        m = self.manifest
        where = f"bundle {str(self.bundle_dir)!r}"
        n = len(m.get("labels") or [])
        for kind, specs, got in (("input", m.get("inputs"), io[0]), ("output", m.get("outputs"), io[1])):
            for i, spec in enumerate(specs or []):
                if i >= len(got):
                    raise BundleError(f"{where}: the manifest lists {len(specs)} {kind}s, the model has {len(got)}",
                                      hint="the model file was replaced; re-export the bundle")
                name, g = got[i]
                w = [d if isinstance(d, int) else None for d in spec["shape"]]
                if len(g) == len(w) and all(a is None or b is None or a == b for a, b in zip(g[1:], w[1:])):
                    continue
                if kind == "output" and len(w) == len(g) == 2 and w[-1] == n and isinstance(g[-1], int):
                    raise BundleError(f"{where}: the model's output {name!r} has {g[-1]} values per sample, but the "
                                      f"manifest has {n} labels (model and labels disagree)",
                                      hint="the model file or the labels were replaced; re-export the bundle")
                raise BundleError(f"{where}: the model's {kind} {name!r} has shape {_fmt(g)}, the manifest says "
                                  f"{_fmt(w)}", hint="the model file was replaced; re-export the bundle")

    # -- for backends
    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def io(self):
        """([(name, [dim or None, ...])], [...]) of the loaded model's inputs and outputs; None if unknown."""
        return None

    def compute_ms(self) -> float | None:
        """Device compute time of the last call when the backend can tell (TensorRT); else None."""
        return None


# ---------------------------------------------------------------------------------------- the table
def support_table(target=None, installed=None) -> str:
    """The format x precision table, from every backend's declaration; with a CPU target, each supported cell
    says whether it is native here, and with ``installed`` (backend names), formats whose backend is missing
    show '–'."""
    from . import format_backend, formats

    rows = ["format       " + "".join(f"{p:8s}" for p in PRECISIONS)]
    for f in formats():
        b = format_backend(f)
        cells = []
        for p in PRECISIONS:
            if b.formats[f].get(p, "not supported") is not None:
                cells.append("no")
            elif installed is not None and b.name not in installed:
                cells.append("–")
            elif target is not None and f != "tensorrt":
                cells.append(_native(target, p))
            else:
                cells.append("yes")
        rows.append(f"{f:12s} " + "".join(f"{c:8s}" for c in cells))
    return "\n".join(rows)


def _native(target, precision: str) -> str:
    """'fast' (native on this CPU class), '7bit'/'f32' (runs, little gain) or 'no' (refused on this CPU)."""
    if precision not in target.precisions:
        return "no"
    if precision == "fp16":
        return "fast" if target.compute_precision("fp16") == "f16" else "f32"  # x86: FP16 weights, f32 compute
    if precision == "int8" and not target.int8_full_range:
        return "7bit"   # works (7-bit weights), small gain without VNNI
    if precision in ("bf16", "int8"):
        return "fast"
    return "yes"


def check_supported(fmt: str, precision: str, *, from_qat: bool = False, qat_flavour: str | None = None) -> None:
    """Raise UnsupportedError (before any work) for combinations a backend rules out."""
    from ..errors import did_you_mean
    from . import format_backend, formats

    if fmt not in formats():
        raise UnsupportedError(f"unknown format {fmt!r}.{did_you_mean(fmt, formats())} Valid: {', '.join(formats())}")
    if precision not in PRECISIONS:
        raise UnsupportedError(f"unknown precision {precision!r}. Valid: {', '.join(PRECISIONS)}")
    why = format_backend(fmt).formats[fmt].get(precision, "not supported")
    if why:
        ok = [f"{f}/{p}" for f in formats() for p, w in format_backend(f).formats[f].items()
              if w is None and p == precision]
        raise UnsupportedError(f"--format {fmt} does not support {precision}: {why}",
                               hint=f"supported for {precision}: {', '.join(ok)}")
    if fmt == "onnx" and precision == "int8" and not from_qat:
        raise UnsupportedError("--format onnx --int8 needs a QAT run (its Q/DQ graph is the model); post-training "
                               "INT8 is built for a runtime",
                               hint="use --format onnxruntime --int8 or --format openvino --int8, or run `edgeft qat` first")
    if fmt == "tensorrt" and from_qat and qat_flavour not in (None, "tensorrt"):
        raise UnsupportedError(f"this QAT run is the {qat_flavour!r} flavour: its Q/DQ graph has uint8 activations and "
                               f"7-bit weights, which TensorRT's explicit quantization does not accept",
                               hint="run `edgeft qat PARENT --flavour tensorrt` (symmetric int8) and export that run")
    if from_qat and precision in ("fp16", "bf16"):
        raise UnsupportedError(f"a QAT run exports an INT8 Q/DQ graph; {precision.upper()} of it makes no sense",
                               hint="export the QAT run with --int8 (or export its FP32 parent with --fp16)")


class StateSession:
    """``step(x) -> [outputs]`` with the model's state carried from call to call (zeros after ``reset()``): the
    generic form, each state a numpy array through ``infer``. Many sessions may share one runner."""

    def __init__(self, runner: Runner):
        from ..errors import BundleError

        spec = runner.manifest.get("stateful")
        if not spec:
            raise BundleError(f"{runner.bundle_dir}: this model has no state (the manifest view has no 'stateful')")
        self.runner, self.spec = runner, spec
        self.input, self.outputs = spec["input"], list(spec["outputs"])
        self.states = [(s["name"], s["output"], tuple(s["shape"])) for s in spec["states"]]
        self.reset()

    def reset(self) -> None:
        self.values = {n: np.zeros(shape, np.float32) for n, _, shape in self.states}

    def step(self, x: np.ndarray) -> list[np.ndarray]:
        """One call: the model's data outputs (not its states), in order."""
        outs = self.runner.infer({self.input: x, **self.values})
        self.values = {n: np.asarray(outs[o]) for n, o, _ in self.states}
        return [np.asarray(outs[o]) for o in self.outputs]
