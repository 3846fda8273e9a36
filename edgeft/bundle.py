"""Bundles: a folder with model file(s) and ``manifest.json`` (torch-free).

The manifest says everything a device needs to run and trust the model: task, labels, preprocessing,
input/output specs, format and precision, quantization details, where it came from (run, recipe hash),
software versions, the parity report, and the sha256 of every file. Loading verifies the checksums, so
a tampered or truncated bundle is a clear error rather than wrong predictions.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import BundleError
from .utils.io import atomic_write_json, sha256_file

SCHEMA_VERSION = "1.0"
MANIFEST = "manifest.json"
STATUS_OK = "ok"


def file_table(bundle_dir: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(Path(bundle_dir).rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
            rel = p.relative_to(bundle_dir).as_posix()
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def write_manifest(bundle_dir: Path, manifest: dict) -> dict:
    manifest = {"schema_version": SCHEMA_VERSION, **manifest, "files": file_table(bundle_dir)}
    atomic_write_json(Path(bundle_dir) / MANIFEST, manifest)
    return manifest


def read_manifest(bundle_dir: str | os.PathLike, verify: bool = True) -> dict:
    d = Path(bundle_dir)
    if not d.is_dir():
        raise BundleError(f"bundle {str(d)!r} does not exist or is not a folder",
                          hint="pass the folder written by `edgeft export`")
    mp = d / MANIFEST
    if not mp.is_file():
        raise BundleError(f"{str(d)!r} is not an edgeft bundle (no {MANIFEST})",
                          hint="pass the folder written by `edgeft export`")
    try:
        m = json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{mp}: unreadable manifest ({e})", hint="re-export the bundle") from None
    major = str(m.get("schema_version", "0")).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise BundleError(f"{mp}: manifest schema {m.get('schema_version')!r}, this edgeft reads {SCHEMA_VERSION}",
                          hint="re-export with this edgeft version or upgrade edgeft on the device")
    if verify:
        verify_files(d, m)
    return m


def verify_files(d: Path, m: dict) -> None:
    files = m.get("files") or {}
    for must in (m.get("model_files") or {}).values():
        if must not in files:
            raise BundleError(f"{d}: manifest lists model file {must!r} without a checksum", hint="re-export the bundle")
    for rel, meta in files.items():
        p = d / rel
        if not p.is_file():
            raise BundleError(f"bundle {str(d)!r} is missing {rel!r}", hint="copy the whole bundle folder again")
        size = p.stat().st_size
        if size != meta["bytes"]:
            raise BundleError(f"bundle {str(d)!r}: {rel!r} is {size} bytes, the manifest says {meta['bytes']} "
                              f"(truncated or replaced)", hint="copy the bundle again or re-export it")
        if sha256_file(p) != meta["sha256"]:
            raise BundleError(f"bundle {str(d)!r}: checksum mismatch for {rel!r} (the file was modified)",
                              hint="copy the bundle again or re-export it")


class BundleWriter:
    """Build a bundle in a temporary sibling folder and move it into place only when complete."""

    def __init__(self, out: Path, force: bool = False):
        self.out = Path(out)
        if self.out.exists() and any(self.out.iterdir()) and not force:
            raise BundleError(f"{str(self.out)!r} already exists", hint="pass --force to replace it or --out NEW_DIR")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))

    def commit(self, manifest: dict) -> dict:
        m = write_manifest(self.tmp, manifest)
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return m

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def streaming_view(m: dict) -> dict:
    """The manifest as seen by the runner of a bundle's streaming model (an FP32 graph in INT8 bundles)."""
    sm = m["streaming_model"]
    prec = sm.get("precision", "fp32")
    t = dict(m.get("target") or {})
    t.update(requires=[r for r in t.get("requires") or [] if r != "int8_full_range"], int8_weights=None,
             qdq_flavour=None, compute_precision="f32" if prec == "fp32" else t.get("compute_precision", "f32"))
    return {**m, "model_files": {"model": m["model_files"]["stream"]}, "precision": prec, "target": t,
            "quantization": None}


def describe(m: dict) -> str:
    q = m.get("quantization") or {}
    flav = f" {q.get('qdq_flavour')}" if q.get("qdq_flavour") else ""
    return f"{m.get('format')}/{m.get('precision')}{flav} ({m.get('task')}, {len(m.get('labels', []))} labels)"
