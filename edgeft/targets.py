"""Device classes a bundle is built for, the CPU features of the machine at hand, and the load-time check that
a bundle runs here with the numbers it was verified with (torch-free).

The machine that exports is rarely the one that runs. What changes *results* between CPUs:

- INT8 weight range. x86 CPUs without VNNI multiply u8 x s8 with ``vpmaddubsw``, whose int16 pair sums
  saturate for full-range weights (measured: DS-CNN top-1 agreement 0.06); 7-bit weights (ORT
  ``reduce_range``, NNCF ``overflow_fix=enable``) avoid it. With VNNI (``vpdpbusd``, int32 sums) full 8-bit
  weights are exact and a little more accurate.
- Inference precision. OpenVINO's CPU plugin silently computes in BF16 on AVX512_BF16/AMX CPUs and in FP16 on
  ARM unless told otherwise, so an "fp32" bundle is pinned to f32 and a bf16 one needs a CPU that has it.

What changes only *speed*: symmetric s8s8 Q/DQ (TensorRT's) run by ONNX Runtime on a CPU, or a bundle built for
another CPU class. Those are warnings.

``EDGEFT_CPU_FEATURES`` overrides the detected features (a target name such as ``x86-avx2``, or a comma list
of /proc/cpuinfo flags), so tests and users can check either kind of CPU from one machine. The override
decides policy (which target ``host`` means, what is refused); a native run whose numbers the real CPU
cannot reproduce is still detected by reading back what the runtime compiled.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BundleError, UnsupportedError, did_you_mean

FEATURE_ENV = "EDGEFT_CPU_FEATURES"

# /proc/cpuinfo flags -> the abstract features precision decisions depend on
_FLAG_FEATURES = {
    "avx2": "avx2", "fma": "fma", "avx512f": "avx512",
    "avx512_vnni": "vnni", "avx_vnni": "vnni", "avx_vnni_int8": "vnni", "amx_int8": "vnni",
    "avx512_bf16": "bf16", "amx_bf16": "bf16",
    "amx_tile": "amx",
    "avx512_fp16": "fp16", "asimdhp": "fp16", "fphp": "fp16",
    "asimd": "neon", "neon": "neon", "asimddp": "dotprod",
}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    arch: str                                  # x86_64 | aarch64 | any
    features: frozenset[str] = frozenset()     # what the class guarantees
    int8_full_range: bool = True               # False: 7-bit weights (x86 without VNNI)
    qdq_flavour: str = "u8s8"                  # u8s8 | s8s8_sym (TensorRT explicit quantization)
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    compute: dict = field(default_factory=dict)  # precision -> what the CPU computes in (OpenVINO)

    def compute_precision(self, precision: str) -> str:
        return self.compute.get(precision, {"fp32": "f32", "fp16": "f32", "bf16": "bf16", "int8": "int8"}[precision])


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("x86-avx2", "x86-64 with AVX2/FMA, no VNNI: INT8 with 7-bit weights", "x86_64",
           frozenset({"avx2", "fma"}), int8_full_range=False),
    Target("x86-vnni", "x86-64 with AVX-512 VNNI or AVX-VNNI: full-range INT8", "x86_64",
           frozenset({"avx2", "fma", "vnni"})),
    Target("x86-bf16", "x86-64 with AVX512_BF16 + VNNI (e.g. AMD Zen 4, Intel Cooper Lake): BF16 and INT8", "x86_64",
           frozenset({"avx2", "fma", "avx512", "vnni", "bf16"}), precisions=("fp32", "fp16", "bf16", "int8")),
    Target("x86-amx", "x86-64 with AMX (Intel Sapphire Rapids and later): BF16 and INT8 on AMX tiles", "x86_64",
           frozenset({"avx2", "fma", "avx512", "vnni", "bf16", "amx"}), precisions=("fp32", "fp16", "bf16", "int8")),
    Target("arm64", "64-bit ARM (NEON): FP16 compute in OpenVINO, full-range INT8", "aarch64",
           frozenset({"neon"}), compute={"fp16": "f16"}),
    Target("tensorrt", "NVIDIA GPU / Jetson through TensorRT: symmetric s8s8 Q/DQ, FP16", "any",
           qdq_flavour="s8s8_sym"),
)}
HOST = "host"
TARGET_NAMES = (HOST, *TARGETS)


# ------------------------------------------------------------------------------------------ features
@dataclass(frozen=True)
class CpuFeatures:
    arch: str
    features: frozenset[str]
    flags: frozenset[str]
    simulated: str | None = None   # the EDGEFT_CPU_FEATURES value when overridden

    @property
    def x86(self) -> bool:
        return self.arch in ("x86_64", "amd64", "i686")

    def has(self, f: str) -> bool:
        return f in self.features

    def describe(self) -> str:
        s = f"{self.arch} [{', '.join(sorted(self.features)) or 'baseline'}]"
        return s + (f" (simulated by {FEATURE_ENV}={self.simulated})" if self.simulated else "")


def _from_flags(arch: str, flags: set[str], simulated: str | None = None) -> CpuFeatures:
    feats = {_FLAG_FEATURES[f] for f in flags if f in _FLAG_FEATURES}
    if arch == "aarch64":
        feats.add("neon")
    return CpuFeatures(arch, frozenset(feats), frozenset(flags), simulated)


def real_cpu_features() -> CpuFeatures:
    """What this CPU has, from /proc/cpuinfo (x86 ``flags``, ARM ``Features``)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip().lower()
            if key in ("flags", "features"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    arch = platform.machine().lower()
    return _from_flags("aarch64" if arch in ("arm64", "aarch64") else arch, flags)


def cpu_features() -> CpuFeatures:
    """The features policy decisions use: the real ones, or ``EDGEFT_CPU_FEATURES`` when set."""
    spec = os.environ.get(FEATURE_ENV, "").strip()
    if not spec:
        return real_cpu_features()
    if spec in TARGETS and spec != "tensorrt":
        t = TARGETS[spec]
        return CpuFeatures(t.arch, t.features, frozenset(), spec)
    flags = {f.strip().lower() for f in spec.split(",") if f.strip()}
    unknown = sorted(f for f in flags if f not in _FLAG_FEATURES and f not in ("aarch64", "x86_64"))
    if unknown:
        cpu_names = [n for n in TARGETS if n != "tensorrt"]
        raise UnsupportedError(f"{FEATURE_ENV}={spec!r}: unknown CPU flag(s) {', '.join(unknown)}."
                               f"{did_you_mean(unknown[0], [*cpu_names, *_FLAG_FEATURES])}",
                               hint=f"use a target name ({', '.join(cpu_names)}) or /proc/cpuinfo flags such as "
                                    f"avx2,fma,avx512_vnni,avx512_bf16; unset it to use the real CPU")
    arch = "aarch64" if ("aarch64" in flags or flags & {"asimd", "neon"}) else "x86_64"
    return _from_flags(arch, flags - {"aarch64", "x86_64"}, spec)



def host_target(feats: CpuFeatures | None = None) -> Target:
    """The most capable CPU class this machine belongs to."""
    f = feats or cpu_features()
    if not f.x86:
        return TARGETS["arm64"]
    for name in ("x86-amx", "x86-bf16", "x86-vnni"):
        if TARGETS[name].features <= f.features:
            return TARGETS[name]
    return TARGETS["x86-avx2"]


def resolve(name: str | None, fmt: str | None = None) -> Target:
    """``--target`` -> a Target (``host``/None = this machine's class; TensorRT bundles are always tensorrt)."""
    if fmt == "tensorrt":
        if name not in (None, HOST, "tensorrt"):
            raise UnsupportedError(f"--target {name!r} with --format tensorrt: a TensorRT engine is built for the GPU "
                                   f"it runs on", hint="omit --target (or use --target tensorrt)")
        return TARGETS["tensorrt"]
    if name in (None, HOST):
        return host_target()
    if name not in TARGETS:
        raise UnsupportedError(f"--target {name!r}: unknown device class.{did_you_mean(name, TARGET_NAMES)} "
                               f"Valid: {', '.join(TARGET_NAMES)}",
                               hint="host = this machine's CPU class; see `edgeft doctor` for what this CPU is")
    t = TARGETS[name]
    if t.name == "tensorrt" and fmt not in (None, "onnxruntime", "onnx"):
        raise UnsupportedError(f"--target tensorrt with --format {fmt}: the TensorRT target means the symmetric s8s8 "
                               f"Q/DQ graph of --format onnxruntime, or a --format tensorrt engine",
                               hint="use --format onnxruntime --int8 --target tensorrt, or --format tensorrt")
    return t


def check_precision(t: Target, fmt: str, precision: str) -> None:
    """Refuse a precision the target cannot run natively, before any work."""
    if precision == "bf16":
        if fmt != "openvino":
            raise UnsupportedError(f"--format {fmt} has no bf16: ONNX Runtime's CPU kernels are fp32/int8, TensorRT "
                                   f"uses fp16", hint="use --format openvino --bf16")
        if "bf16" not in t.precisions:
            ok = [n for n, x in TARGETS.items() if "bf16" in x.precisions]
            raise UnsupportedError(f"bf16 is not native on target {t.name} ({t.description}): OpenVINO would compute "
                                   f"in f32, so the bundle would not be what it says",
                                   hint=f"bf16 needs {' or '.join(ok)} (AVX512_BF16 or AMX); use fp32 or --int8 here, "
                                        f"or --target {ok[0]} to build for such a CPU")


# ----------------------------------------------------------------------------------- bundle records
def requirements(t: Target, fmt: str, precision: str) -> tuple[str, list[str]]:
    """(compute precision, what a CPU must have to reproduce the verified numbers) of a bundle."""
    requires: list[str] = []
    if precision == "int8" and t.int8_full_range and fmt != "tensorrt":
        requires.append("int8_full_range")   # u8s8 and s8s8 alike: x86 CPUs without VNNI saturate on them
    cp = t.compute_precision(precision) if fmt == "openvino" else {"fp16": "f16", "int8": "int8"}.get(precision, "f32")
    if cp in ("bf16", "f16") and fmt == "openvino":
        requires.append(cp)
    return cp, requires


def bundle_target(t: Target, fmt: str, precision: str, requested: str | None) -> dict:
    """The manifest's ``target`` section: what the bundle was built for and what it needs to run as verified."""
    real = real_cpu_features()
    pol = cpu_features()
    cp, requires = requirements(t, fmt, precision)
    return {"name": t.name, "requested": requested or HOST, "description": t.description, "arch": t.arch,
            "compute_precision": cp,
            "int8_weights": ("8-bit" if t.int8_full_range else "7-bit") if precision == "int8" else None,
            "qdq_flavour": t.qdq_flavour if precision == "int8" else None, "requires": requires,
            "built_on": {"cpu": _cpu_model(), "features": sorted(real.features), "class": host_target(real).name,
                         **({"policy_features": sorted(pol.features), "simulated": pol.simulated}
                            if pol.simulated else {})}}


def qat_target_name(qat: dict) -> str:
    """The target of a QAT run (runs made before targets: from the flavour and the overflow fix)."""
    if qat.get("target"):
        return qat["target"]
    if qat.get("flavour") == "tensorrt":
        return "tensorrt"
    return "x86-avx2" if (qat.get("quantization") or {}).get("overflow_fix") == "enable" else "x86-vnni"


def legacy_target(m: dict) -> dict:
    """A target section for manifests written before targets existed (the weight range from the quantization)."""
    q = m.get("quantization") or {}
    req: list[str] = []
    full = None
    if m.get("precision") == "int8" and m.get("format") != "tensorrt":
        full = q.get("qdq_flavour") == "s8s8_sym" or not (
            q.get("reduce_range") or q.get("overflow_fix") == "enable" or "7-bit" in str(q.get("weights", "")))
        if full:
            req.append("int8_full_range")
    return {"name": "unknown (manifest before targets)", "requires": req,
            "int8_weights": None if full is None else ("8-bit" if full else "7-bit"),
            "qdq_flavour": q.get("qdq_flavour"), "compute_precision": "f32" if m.get("precision") != "int8" else "int8"}


def bundle_compute(m: dict) -> str:
    """What a bundle computes in (f32, f16, bf16, int8): its target's record, or (older manifests) f32 for
    everything but INT8."""
    t = m.get("target") if isinstance(m.get("target"), dict) else {}
    return t.get("compute_precision") or ("int8" if m.get("precision") == "int8" else "f32")


_REQ = {
    "int8_full_range": (lambda f: not f.x86 or f.has("vnni"),
                        "holds full-range INT8 weights, and this CPU has no VNNI: its int8 kernels saturate and the "
                        "outputs change", "re-export with --target x86-avx2 (7-bit weights), or run it on a CPU with "
                                          "VNNI"),
    "bf16": (lambda f: f.has("bf16"), "computes in bf16, and this CPU has neither AVX512_BF16 nor AMX (OpenVINO would "
                                      "silently compute in f32)",
             "use the fp32 or int8 bundle here, or run it on an x86-bf16/x86-amx CPU"),
    "f16": (lambda f: f.has("fp16") or not f.x86, "computes in f16, and this CPU has no native FP16 arithmetic",
            "re-export with --target x86-avx2 (f32 compute, FP16 weights), or run it on arm64"),
}


def check_bundle(m: dict, where: str, feats: CpuFeatures | None = None) -> list[str]:
    """Refuse (BundleError) a bundle whose results would change on this CPU; return speed-only warnings."""
    f = feats or cpu_features()
    t = m.get("target") if isinstance(m.get("target"), dict) else legacy_target(m)
    here = host_target(f).name if m.get("format") != "tensorrt" else "tensorrt"
    for req in t.get("requires") or []:
        if req not in _REQ:   # from a newer edgeft (or an edited manifest): what it needs cannot be checked here
            raise BundleError(f"bundle {where!r} requires {req!r}, which this edgeft does not know",
                              hint="upgrade edgeft on this machine, or re-export the bundle with this version")
        ok, why, hint = _REQ[req]
        if not ok(f):
            raise BundleError(f"bundle {where!r} (built for {t.get('name')}) {why} (this CPU: {f.describe()})",
                              hint=hint)
    warnings = []
    if t.get("qdq_flavour") == "s8s8_sym" and m.get("format") in ("onnx", "onnxruntime"):
        warnings.append("symmetric s8s8 Q/DQ is made for TensorRT; ONNX Runtime runs it slowly on a CPU "
                        "(export --target host for the CPU flavour)")
    name = t.get("name")
    if name in TARGETS and name not in ("tensorrt", here) and m.get("format") != "tensorrt":
        tt = TARGETS[name]
        if tt.arch != "any" and tt.arch != f.arch:
            warnings.append(f"built for {name} ({tt.arch}), running on {f.arch}: re-export with --target {here} for "
                            f"this CPU's fast paths")
        elif m.get("precision") == "int8" and not tt.int8_full_range and TARGETS[here].int8_full_range:
            warnings.append(f"built for {name} (7-bit INT8 weights); this CPU is {here}: --target {here} keeps full "
                            f"8-bit weights")
    return warnings


def _cpu_model() -> str:
    from .utils.env import cpu_model

    return cpu_model()
