"""The served models: names, versions, the active version, atomic swaps and rollbacks (torch-free).

A model is served from bundles. ``NAME=BUNDLE`` (or a bundle folder, named after it) is version "1"; a model
repository folder (``--repo DIR``, Triton's layout ``DIR/NAME/VERSION/manifest.json``) gives every version found
there. Loading a version goes through :func:`edgeft.runtime.load`: every file's sha256 is checked against the
manifest (and the signature, with ``--trust``) before anything is served from it; the version is warmed up with
one inference; only then does the active pointer move, under a lock. Requests hold the version they started
with (a reference count), so a swap never fails an in-flight request, and a version that is replaced is closed
once its last request is done. A request can only name a model and a version that the server has listed: no
request ever carries a file-system path.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BundleError, DataError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Version:
    name: str
    version: str
    path: Path
    model: object                  # edgeft.runtime.Model, open
    batcher: object = None         # edgeft.serve.batching.Batcher
    refs: int = 0
    retired: bool = False
    sha256: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def describe(self) -> dict:
        m = self.model.manifest
        return {"version": self.version, "task": m.get("task"), "format": m["format"], "precision": m["precision"],
                "labels": list(m["labels"]), "inputs": m["inputs"], "outputs": m["outputs"], "sha256": self.sha256,
                "preprocess": m.get("preprocess"), "source_model": (m.get("source") or {}).get("model"),
                "source_data": (m.get("source") or {}).get("data")}


class Registry:
    def __init__(self, threads: int | None = None, max_batch: int = 1, max_wait_ms: float = 0.0, trust=None):
        self.threads, self.max_batch, self.max_wait_ms, self.trust = threads, max_batch, max_wait_ms, trust
        self.sources: dict[str, dict[str, Path]] = {}     # name -> version -> bundle folder (what may be loaded)
        self.loaded: dict[str, dict[str, Version]] = {}
        self.active: dict[str, str] = {}
        self.history: dict[str, list[str]] = {}           # activation order, for rollback
        self.repo: Path | None = None
        self._lock = threading.RLock()
        self._model_locks: dict[str, threading.Lock] = {}

    # ------------------------------------------------------------------------------------------ sources
    def add_bundle(self, spec: str) -> str:
        name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
        p = Path(path).expanduser()
        if not (p / "manifest.json").is_file():
            raise BundleError(f"{path!r} is not a bundle folder (no manifest.json)",
                              hint="pass bundle folders from `edgeft export`, NAME=BUNDLE, or --repo DIR")
        name = name or (f"{p.parent.parent.name}-{p.name}" if p.parent.name == "bundles" else p.name)
        if not NAME_RE.match(name):
            raise DataError(f"model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)",
                            hint="name it explicitly: NAME=BUNDLE")
        if name in self.sources:
            raise DataError(f"model name {name!r} given twice", hint="name them: A=BUNDLE1 B=BUNDLE2")
        self.sources[name] = {"1": p}
        return name

    def scan_repo(self, repo: str | Path) -> list[str]:
        """Triton's layout: REPO/NAME/VERSION/ (a bundle). Returns the model names found (server-side only)."""
        self.repo = Path(repo).expanduser()
        if not self.repo.is_dir():
            raise DataError(f"--repo {str(repo)!r} is not a folder", hint="REPO/NAME/VERSION/manifest.json")
        found = []
        for d in sorted(self.repo.iterdir()):
            if not d.is_dir() or not NAME_RE.match(d.name):
                continue
            vers = {v.name: v for v in d.iterdir() if v.is_dir() and NAME_RE.match(v.name)
                    and (v / "manifest.json").is_file()}
            if vers:
                with self._lock:
                    self.sources.setdefault(d.name, {}).update(vers)
                found.append(d.name)
        if not found and not self.sources:
            raise DataError(f"--repo {str(repo)!r} holds no NAME/VERSION/manifest.json", hint="export bundles into it")
        return found

    @staticmethod
    def _order(v: str):
        return (0, int(v), "") if v.isdigit() else (1, 0, v)

    # ------------------------------------------------------------------------------------------- loading
    def _model_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._model_locks.setdefault(name, threading.Lock())

    def load(self, name: str, version: str | None = None, activate: bool = True) -> Version:
        """Load (verify, open, warm up) a version and make it active; the previous one keeps serving until then.
        One load per model at a time (a second waits, then finds the version loaded); versions that are neither
        active nor the rollback target are retired in the same step."""
        vers = self.sources.get(name)
        if not vers:
            raise KeyError(name)
        version = version or max(vers, key=self._order)
        if version not in vers:
            raise KeyError(f"{name}/{version}")
        with self._model_lock(name):
            v = self._ensure_loaded(name, version)
            if activate:
                with self._lock:
                    self.active[name] = version
                    h = self.history.setdefault(name, [])
                    if not h or h[-1] != version:
                        h.append(version)
                self._unload_inactive(name)
        return v

    def _ensure_loaded(self, name: str, version: str) -> Version:
        from .. import runtime
        from .batching import Batcher

        with self._lock:
            have = self.loaded.get(name, {}).get(version)
        if have is not None and not have.retired:
            return have
        path = self.sources[name][version]
        static = self.max_batch <= 1
        model = runtime.load(path, threads=self.threads, batch=1 if static else None, trust=self.trust)
        try:
            model.open()
            _warm_up(model)
        except BaseException:
            model.close()
            raise
        first = next(iter(model.manifest["model_files"].values()))
        v = Version(name, version, path, model, sha256=model.manifest["files"][first]["sha256"])
        v.batcher = Batcher(v, self.max_batch, self.max_wait_ms, static_batch_one=static)
        with self._lock:
            self.loaded.setdefault(name, {})[version] = v
        return v

    def rollback(self, name: str) -> str:
        """Back to the previously active version; nothing changes if it cannot be loaded."""
        with self._model_lock(name):
            with self._lock:
                h = self.history.get(name, [])
                if len(h) < 2:
                    raise KeyError(f"{name}: no earlier version to roll back to")
                prev = h[-2]
            self._ensure_loaded(name, prev)          # may raise: history and the active version untouched
            with self._lock:
                h.pop()
                self.active[name] = prev
            self._unload_inactive(name)
        return prev

    def _unload_inactive(self, name: str) -> None:
        """Retire versions that are neither active nor the rollback target; closed once no request holds them."""
        with self._lock:
            keep = {self.active.get(name)} | set(self.history.get(name, [])[-2:])
            for ver, v in list(self.loaded.get(name, {}).items()):
                if ver not in keep:
                    v.retired = True
                    del self.loaded[name][ver]
                    self._maybe_close(v)

    # ------------------------------------------------------------------------------------------ requests
    def acquire(self, name: str, version: str | None) -> Version:
        with self._lock:
            if name not in self.active:
                raise KeyError(name)
            ver = version or self.active[name]
            v = self.loaded.get(name, {}).get(ver)
            if v is None:
                raise KeyError(f"{name}/{ver}")
            v.refs += 1
            return v

    def release(self, v: Version) -> None:
        with self._lock:
            v.refs -= 1
            self._maybe_close(v)

    def _maybe_close(self, v: Version) -> None:
        if v.retired and v.refs <= 0:
            if v.batcher is not None:
                v.batcher.close()
            v.model.close()

    def listing(self) -> list[dict]:
        with self._lock:
            out = []
            for name in sorted(self.sources):
                loaded = self.loaded.get(name, {})
                out.append({"name": name, "active_version": self.active.get(name),
                            "versions": [loaded[v].describe() if v in loaded else {"version": v, "loaded": False}
                                         for v in sorted(self.sources[name], key=self._order)]})
            return out

    def close(self) -> None:
        with self._lock:
            for vers in self.loaded.values():
                for v in vers.values():
                    v.retired = True
                    if v.batcher is not None:
                        v.batcher.close()
                    v.model.close()
            self.loaded.clear()


def _warm_up(model) -> None:
    """One inference on zeros of the input's shape (first-inference costs are paid before serving)."""
    spec = model.manifest["inputs"][0]
    shape = [1] + [int(d) if isinstance(d, int) or str(d).isdigit() else 1 for d in spec["shape"][1:]]
    model.infer({spec["name"]: np.zeros(shape, np.float32)})
