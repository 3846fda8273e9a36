"""Bundles: a folder with model file(s) and ``manifest.json`` (torch-free).

The manifest says everything a device needs to run and trust the model: task, labels, preprocessing,
input/output specs, format and precision, quantization details, where it came from (run, recipe hash),
software versions, the parity report, and the sha256 of every file. Loading refuses, with one line:

- a manifest that is not the schema (validated with pydantic: a list, a scalar, a missing ``preprocess``,
  a file entry without ``bytes``, an unknown format...);
- a manifest edited after export: ``integrity.digest`` is the sha256 of its canonical JSON, and, when the
  bundle is signed (``edgeft export --sign-key`` / ``edgeft sign``), an ed25519 signature over the same
  bytes, checked against the user's trusted keys when they have any (``--trust``, ``EDGEFT_TRUSTED_KEYS``,
  ``~/.config/edgeft/trusted_keys/``). The digest catches accidents and naive edits; only a signature from
  a key the user trusts stops someone who can rewrite the whole folder;
- any path that leaves the bundle (absolute, ``..``, or a symlink pointing out);
- a missing, truncated or modified file.
"""
from __future__ import annotations

import base64
import contextlib
import contextvars
import errno
import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BundleError
from .utils.io import atomic_write_json, default_mode, exit_now, sha256_file

SCHEMA_VERSION = "1.1"          # 1.1: integrity digest (and optional signature) required
MANIFEST = "manifest.json"
STATUS_OK = "ok"
CANONICAL = "json-sorted-compact-v1"
TRUST_ENV = "EDGEFT_TRUSTED_KEYS"


# ------------------------------------------------------------------------------------------- schema
class _M(BaseModel):
    model_config = ConfigDict(extra="allow")


class FileEntry(_M):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class TensorSpec(_M):
    name: str
    shape: list[Union[int, str]]


class Signature(_M):
    algorithm: Literal["ed25519"]
    public_key: str
    key_id: str
    value: str


class Integrity(_M):
    algorithm: Literal["sha256"]
    canonical: Literal["json-sorted-compact-v1"]
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    signature: Optional[Signature] = None


class TargetRecord(_M):
    name: str
    compute_precision: Literal["f32", "f16", "bf16", "int8"] = "f32"
    requires: list[str] = []


class Manifest(_M):
    """What the device side relies on; everything else in the manifest is information."""

    schema_version: str
    task: str
    labels: list[str] = Field(min_length=1)
    preprocess: dict[str, Any]
    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    format: str
    precision: Literal["fp32", "fp16", "bf16", "int8"]
    model_files: dict[str, str] = Field(min_length=1)
    files: dict[str, FileEntry]
    status: str = STATUS_OK
    target: Optional[TargetRecord] = None
    streaming_model: Optional[dict[str, Any]] = None
    integrity: Integrity

    @field_validator("task")
    @classmethod
    def _known_task(cls, v):
        from .tasks import TASKS

        if v not in TASKS:
            raise ValueError(f"unknown task; this edgeft knows {', '.join(TASKS)}")
        return v

    @field_validator("format")
    @classmethod
    def _known_format(cls, v):
        from .backends import formats

        if v not in formats():
            raise ValueError(f"unknown format; this edgeft runs {', '.join(formats())}")
        return v


def _schema_error(mp: Path, e: ValidationError) -> BundleError:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
    got = err.get("input")
    got_s = json.dumps(got)[:60] if not isinstance(got, dict) else "an object"
    return BundleError(f"{mp}: manifest field {loc!r}: {err['msg'].lower()} (got {got_s}); "
                       f"{len(e.errors())} problem(s) in all", hint="re-export the bundle with `edgeft export`")


# ----------------------------------------------------------------------------------------- integrity
def canonical_bytes(m: dict) -> bytes:
    return json.dumps({k: v for k, v in m.items() if k != "integrity"}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def digest(m: dict) -> str:
    return hashlib.sha256(canonical_bytes(m)).hexdigest()


def load_private_key(path: str | os.PathLike):
    """An ed25519 private key: PEM (``edgeft keygen``) or OpenSSH (``ssh-keygen -t ed25519``), unencrypted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BundleError(f"signing key {str(p)!r}: {e.strerror or e}", hint="pass an ed25519 private key file") from None
    try:
        key = (serialization.load_ssh_private_key(data, None) if b"OPENSSH PRIVATE KEY" in data
               else serialization.load_pem_private_key(data, None))
    except (ValueError, TypeError) as e:
        raise BundleError(f"signing key {str(p)!r} is not an unencrypted ed25519 private key ({e})",
                          hint="make one with `edgeft keygen --out KEY` (or ssh-keygen -t ed25519 -N '')") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"signing key {str(p)!r} is a {type(key).__name__.replace('_', '')}, not ed25519",
                          hint="make one with `edgeft keygen --out KEY`")
    return key


def _raw_public(pub) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:16]


def load_public_key(path: str | os.PathLike) -> bytes:
    """Raw ed25519 public key bytes from a PEM or OpenSSH (``ssh-ed25519 AAAA...``) public key file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
        pub = (serialization.load_ssh_public_key(data) if data.lstrip().startswith(b"ssh-")
               else serialization.load_pem_public_key(data))
    except (OSError, ValueError, TypeError) as e:
        raise BundleError(f"trusted key {str(p)!r} is not a readable ed25519 public key ({e})",
                          hint="pass the .pub file written by `edgeft keygen` (or an ssh-ed25519 public key)") from None
    if not isinstance(pub, Ed25519PublicKey):
        raise BundleError(f"trusted key {str(p)!r} is not an ed25519 key")
    return _raw_public(pub)


def trusted_keys(extra=()) -> dict[str, bytes]:
    """{key id: raw public key} from ``--trust`` files, EDGEFT_TRUSTED_KEYS (':'-separated) and the config folder."""
    paths = [Path(p) for p in extra]
    paths += [Path(p) for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]
    from .utils.env import config_dir

    d = config_dir() / "trusted_keys"
    if d.is_dir():
        paths += sorted(d.glob("*.pub"))
    out = {}
    for p in paths:
        raw = load_public_key(p)
        out[key_id(raw)] = raw
    return out


_TRUST: contextvars.ContextVar = contextvars.ContextVar("edgeft_trusted_keys", default=None)


@contextlib.contextmanager
def trusting(paths):
    """Within this block, bundles must be signed by one of ``paths`` (public key files) or the configured keys."""
    token = _TRUST.set(trusted_keys(paths))
    try:
        yield
    finally:
        _TRUST.reset(token)


def sign_manifest(m: dict, key) -> dict:
    """Add integrity.digest and an ed25519 signature over the canonical manifest (files table included)."""
    m = {k: v for k, v in m.items() if k != "integrity"}
    raw = _raw_public(key.public_key())
    sig = key.sign(canonical_bytes(m))
    m["integrity"] = {"algorithm": "sha256", "canonical": CANONICAL, "digest": digest(m),
                      "signature": {"algorithm": "ed25519", "public_key": base64.b64encode(raw).decode(),
                                    "key_id": key_id(raw), "value": base64.b64encode(sig).decode()}}
    return m


def _verify_integrity(mp: Path, m: dict, trust: dict[str, bytes] | None) -> None:
    integ = m["integrity"]
    if digest(m) != integ["digest"]:
        raise BundleError(f"{mp} was modified after export (its digest does not match its content)",
                          hint="copy the bundle again or re-export it; never edit manifest.json by hand")
    sig = integ.get("signature")
    keys = trust if trust is not None else (_TRUST.get() if _TRUST.get() is not None else trusted_keys())
    if sig is None:
        if keys:
            raise BundleError(f"{mp.parent} is not signed, and trusted keys are configured "
                              f"({len(keys)} key(s): only signed bundles are accepted)",
                              hint="sign it with `edgeft sign BUNDLE --key KEY`, or remove the trust settings")
        return
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(sig["public_key"], validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(base64.b64decode(sig["value"], validate=True),
                                                       canonical_bytes(m))
    except (InvalidSignature, ValueError) as e:
        raise BundleError(f"{mp}: the signature does not verify ({type(e).__name__})",
                          hint="the manifest or its files were changed after signing; copy or re-export it") from None
    if key_id(raw) != sig["key_id"]:
        raise BundleError(f"{mp}: signature key id {sig['key_id']!r} does not match its public key")
    if keys and keys.get(sig["key_id"]) != raw:   # the whole key, not only its 64-bit id
        raise BundleError(f"{mp.parent} is signed by key {sig['key_id']}, which is not among your "
                          f"{len(keys)} trusted key(s) ({', '.join(keys)})",
                          hint="get the bundle from its publisher, or trust the key (--trust KEY.pub)")


# -------------------------------------------------------------------------------------------- paths
def safe_path(d: Path, rel: str, what: str) -> Path:
    """``d/rel`` if it stays inside the bundle folder (no absolute paths, no '..', no symlink out)."""
    pp = PurePosixPath(rel)
    if not rel or "\\" in rel or "\0" in rel or pp.is_absolute() or ".." in pp.parts or rel.startswith("~"):
        raise BundleError(f"bundle {str(d)!r}: {what} {rel!r} points outside the bundle",
                          hint="the manifest was tampered with; use a bundle from `edgeft export`")
    p = d / rel
    root = d.resolve()
    if not p.resolve().is_relative_to(root):
        raise BundleError(f"bundle {str(d)!r}: {what} {rel!r} is a link outside the bundle",
                          hint="the bundle was tampered with; copy it without links (or re-export it)")
    return p


def file_table(bundle_dir: Path) -> dict[str, dict]:
    out = {}
    for p in sorted(Path(bundle_dir).rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
            rel = p.relative_to(bundle_dir).as_posix()
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def write_manifest(bundle_dir: Path, manifest: dict, sign_key=None, files: dict | None = None) -> dict:
    """Write manifest.json with the files table (computed now, or ``files`` already verified) and the integrity
    digest (and a signature with ``sign_key``)."""
    manifest = {**{k: v for k, v in manifest.items() if k not in ("files", "integrity", "schema_version")},
                "schema_version": SCHEMA_VERSION, "files": files if files is not None else file_table(bundle_dir)}
    if sign_key is not None:
        manifest = sign_manifest(manifest, sign_key)
    else:
        manifest["integrity"] = {"algorithm": "sha256", "canonical": CANONICAL, "digest": digest(manifest)}
    atomic_write_json(Path(bundle_dir) / MANIFEST, manifest)
    return manifest


def read_manifest(bundle_dir: str | os.PathLike, verify: bool = True, trust: dict[str, bytes] | None = None) -> dict:
    """The bundle's manifest, validated; ``verify`` also checks the digest, signature, paths and every file."""
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BundleError(f"{mp}: unreadable manifest ({type(e).__name__}: {str(e)[:120]})",
                          hint="re-export the bundle") from None
    if not isinstance(m, dict):
        raise BundleError(f"{mp}: the manifest is a JSON {type(m).__name__}, not an object",
                          hint="re-export the bundle with `edgeft export`")
    if not _schema_ok(m.get("schema_version")):
        raise BundleError(f"{mp}: manifest schema {m.get('schema_version')!r}; this edgeft reads {SCHEMA_VERSION} "
                          f"(tamper-evident manifests)", hint="re-export the bundle with this edgeft version "
                                                              "(or upgrade edgeft on the device)")
    try:
        Manifest.model_validate(m)
    except ValidationError as e:
        raise _schema_error(mp, e) from None
    except RecursionError:
        raise BundleError(f"{mp}: the manifest is nested too deeply") from None
    if verify:
        _verify_integrity(mp, m, trust)
        verify_files(d, m)
    return m


def _schema_ok(v) -> bool:
    """Same major version, and at least this minor (1.0 manifests had no integrity digest)."""
    try:
        got = tuple(int(x) for x in str(v).split(".")[:2])
    except ValueError:
        return False
    want = tuple(int(x) for x in SCHEMA_VERSION.split("."))
    return len(got) == 2 and got[0] == want[0] and got[1] >= want[1]


def verify_files(d: Path, m: dict) -> None:
    files = m.get("files") or {}
    for rel in files:
        safe_path(d, rel, "file")
    named = list((m.get("model_files") or {}).values())
    if m.get("streaming_model"):
        named.append(str(m["streaming_model"].get("file", "")))
    for must in named:
        safe_path(d, must, "model file")
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


def is_bundle(d: Path) -> bool:
    """True when ``d`` is, verifiably, an edgeft bundle and nothing else: a valid manifest whose files are all
    the folder holds. Only such a folder may be replaced by ``--force``."""
    try:
        m = read_manifest(d, verify=False)
    except BundleError:
        return False
    listed = set(m["files"]) | {MANIFEST}
    for p in Path(d).rglob("*"):
        if p.is_symlink() or (p.is_file() and p.relative_to(d).as_posix() not in listed):
            return False
    return True


# ------------------------------------------------------------------------------------------- writer
_TMP_TAG = ".edgeft-tmp-"
# Set by the console entry point (never by in-process use, where a Ctrl-C must not end the caller's interpreter):
# while a bundle is being built, Ctrl-C removes the unfinished bundle and ends the process at once (exit 130).
# KeyboardInterrupt is not safe there: raised inside a Python callback that a native library (pybind11: NNCF,
# OpenVINO) called, it cannot unwind through C++ and the process aborts (exit -6, a temporary folder left behind).
HARD_INTERRUPT = False
INTERRUPTED_MSG = "interrupted: nothing half-written was kept (finished outputs are untouched)\n"


def _hard_interrupt_handler(writer: "BundleWriter"):
    def handler(signum, frame):   # noqa: ARG001 - signal handler signature
        shutil.rmtree(writer.tmp, ignore_errors=True)
        writer.lock.release()
        exit_now(INTERRUPTED_MSG, 130)
    return handler


class BundleWriter:
    """Build a bundle in a temporary sibling folder and move it into place only when complete.

    - ``out`` must be empty or missing; ``force`` replaces only a folder that is verifiably an edgeft bundle
      (a training run, or any folder with other files, is never deleted);
    - a lock (``flock`` on a sibling lock file, released by the kernel if the process dies) makes a second
      writer of the same ``out`` fail at once with one line;
    - temporary folders left by a killed writer (dead pid in their name) are removed by the next one."""

    def __init__(self, out: Path, force: bool = False):
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FolderLock(self.out)
        self.lock.acquire()
        try:
            self._clean_stale()
            if self.out.exists() or self.out.is_symlink():
                if self.out.is_symlink() or not self.out.is_dir():
                    raise BundleError(f"--out {str(self.out)!r} exists and is not a folder",
                                      hint="pass --out NEW_DIR")
                if any(self.out.iterdir()):
                    if not force:
                        raise BundleError(f"{str(self.out)!r} already exists",
                                          hint="pass --force to replace it (bundles only) or --out NEW_DIR")
                    if not is_bundle(self.out):
                        raise BundleError(f"{str(self.out)!r} is not an edgeft bundle (it holds "
                                          f"{_some_files(self.out)}): --force only replaces a bundle, never a run "
                                          f"or other files", hint="pass --out NEW_DIR (e.g. RUN/bundles/NAME)")
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}{_TMP_TAG}{os.getpid()}-", dir=self.out.parent))
            os.chmod(self.tmp, default_mode(0o777))   # mkdtemp makes 0700: a bundle is readable like any folder
        except BaseException:
            self.lock.release()
            raise
        self._prev_sigint = None
        if HARD_INTERRUPT and threading.current_thread() is threading.main_thread():
            self._prev_sigint = signal.signal(signal.SIGINT, _hard_interrupt_handler(self))

    def _restore_sigint(self) -> None:
        """From here on, Ctrl-C is a KeyboardInterrupt again (commit's own rollback handles it)."""
        if self._prev_sigint is not None:
            signal.signal(signal.SIGINT, self._prev_sigint)
            self._prev_sigint = None

    def _clean_stale(self) -> None:
        """Under the lock, every temporary folder of this ``out`` belongs to a writer that died; a previous bundle
        parked by a commit that died half-way is put back first."""
        for p in sorted(self.out.parent.glob(f".{self.out.name}{_TMP_TAG}*")):
            if not p.is_dir() or p.is_symlink():
                continue
            if "-old-" in p.name and (p / "b").is_dir() and not self.out.exists():
                os.replace(p / "b", self.out)
            shutil.rmtree(p, ignore_errors=True)

    def commit(self, manifest: dict, sign_key=None) -> dict:
        self._restore_sigint()
        try:
            m = write_manifest(self.tmp, manifest, sign_key=sign_key)
            old = None
            if self.out.exists():
                if any(self.out.iterdir()) and not is_bundle(self.out):   # changed while we worked
                    raise BundleError(f"{str(self.out)!r} changed while the bundle was built and is no longer a "
                                      f"bundle; nothing replaced", hint="pass --out NEW_DIR")
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}{_TMP_TAG}{os.getpid()}-old-",
                                            dir=self.out.parent))
                os.replace(self.out, old / "b")
            try:
                os.replace(self.tmp, self.out)
            except BaseException:
                if old is not None:          # put the previous bundle back
                    os.replace(old / "b", self.out)
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            return m
        finally:
            self.lock.release()

    def abort(self) -> None:
        self._restore_sigint()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.lock.release()


def _some_files(d: Path, n: int = 3) -> str:
    names = sorted(p.name for p in Path(d).iterdir())
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


class FolderLock:
    """An exclusive, non-blocking lock for writing ``target``: ``flock`` on ``.NAME.edgeft-lock`` beside it.
    The lock file is removed on release while still locked (and re-checked on acquire), the safe pattern."""

    def __init__(self, target: Path):
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.edgeft-lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        if not self.path.parent.is_dir():
            raise BundleError(f"{str(self.target)!r}: its folder {str(self.path.parent)!r} does not exist")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    owner = ""
                    try:
                        owner = f" (pid {self.path.read_text().strip()})"
                    except OSError:
                        pass
                    raise BundleError(f"another edgeft process is writing {str(self.target)!r}{owner}",
                                      hint="wait for it to finish, or pass another --out") from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self.fd = fd
                return
            os.close(fd)   # the file was removed by its previous holder: lock the new one

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


def streaming_view(m: dict) -> dict:
    """The manifest as seen by the runner of a bundle's streaming model (an FP32 graph in INT8 bundles)."""
    sm = m["streaming_model"]
    prec = sm.get("precision", "fp32")
    t = dict(m.get("target") or {})
    t.update(requires=[r for r in t.get("requires") or [] if r != "int8_full_range"], int8_weights=None,
             qdq_flavour=None, compute_precision="f32" if prec == "fp32" else t.get("compute_precision", "f32"))
    ns = len(sm["states"])        # the outputs: the data outputs, then each state's next value, in state order
    stateful = {"input": sm["inputs"][0], "outputs": sm["outputs"][:-ns],
                "states": [{**s, "output": o} for s, o in zip(sm["states"], sm["outputs"][-ns:])]}
    return {**m, "model_files": {"model": m["model_files"]["stream"]}, "precision": prec, "target": t,
            "quantization": None, "inputs": None, "stateful": stateful}


def describe(m: dict) -> str:
    q = m.get("quantization") or {}
    flav = f" {q.get('qdq_flavour')}" if q.get("qdq_flavour") else ""
    return f"{m.get('format')}/{m.get('precision')}{flav} ({m.get('task')}, {len(m.get('labels', []))} labels)"
