"""Software versions and a device fingerprint (torch-free)."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

_PKGS = ("edgeft", "numpy", "torch", "torchvision", "torchaudio", "onnx", "onnxruntime", "onnxscript",
         "openvino", "nncf", "torch-pruning", "torchao", "tensorrt", "opencv-python-headless")


_MALLOC_TUNED: bool | None = None


def tune_malloc() -> bool:
    """Keep large allocations in glibc's heap instead of a fresh mmap per tensor. PyTorch on CPU allocates and
    frees activation-sized blocks (tens of MB) every layer; glibc serves each with mmap + page faults + munmap,
    which showed up as system time larger than the compute (measured, 2-core AMD EPYC: SSDLite eval at batch
    32, 16.0 s -> 7.3 s wall, sys 17.8 s -> 3.4 s; the detection demo's training and export likewise). The
    process keeps its peak heap instead of returning it. Linux/glibc only; EDGEFT_MALLOC=default leaves malloc
    alone. Idempotent; returns whether the setting is active."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED is not None:
        return _MALLOC_TUNED
    _MALLOC_TUNED = False
    if os.environ.get("EDGEFT_MALLOC", "").lower() == "default" or platform.system() != "Linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        _MALLOC_TUNED = bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):             # musl, or no libc.so.6: nothing to tune
        pass
    return _MALLOC_TUNED


def config_dir() -> Path:
    """edgeft's configuration folder (``EDGEFT_CONFIG_DIR``, default ~/.config/edgeft): devices, trusted keys."""
    return Path(os.environ.get("EDGEFT_CONFIG_DIR") or Path.home() / ".config" / "edgeft")


def versions(pkgs=_PKGS) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for p in pkgs:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return {k: v for k, v in out.items() if v is not None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def governors() -> list[str]:
    govs = []
    base = Path("/sys/devices/system/cpu")
    for p in sorted(base.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        try:
            govs.append(p.read_text().strip())
        except OSError:
            pass
    return sorted(set(govs))


def git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parents[2]
        r = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def fingerprint() -> dict:
    """What a benchmark number depends on: CPU, cores, governor, OS, accelerators."""
    import psutil

    from ..targets import cpu_features, host_target, real_cpu_features

    real, pol = real_cpu_features(), cpu_features()
    fp = {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "arch": platform.machine(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "governor": governors() or None,
        "isa": sorted(f for f in cpu_flags() if f in {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                                                     "amx_bf16", "avx512_bf16", "avx512_fp16", "fma", "neon",
                                                     "asimd"}),
        "cpu_features": sorted(real.features), "cpu_class": host_target(real).name,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "os": _os_name(),
    }
    try:
        freq = psutil.cpu_freq()
        if freq:
            fp["cpu_freq_mhz"] = {"current": round(freq.current), "min": round(freq.min), "max": round(freq.max)}
    except Exception:  # noqa: BLE001 - not available in many VMs
        pass
    if pol.simulated:
        fp["simulated_cpu_features"] = {"env": pol.simulated, "features": sorted(pol.features),
                                        "class": host_target(pol).name}
    fp["accelerator"] = _nvidia_gpu()
    return fp


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def _nvidia_gpu() -> str | None:
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
