"""Atomic file writes and hashing: nothing already written is lost when a process dies mid-write."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import shutil
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def cache_dir(*parts: str) -> Path:
    """edgeft's cache folder (``EDGEFT_CACHE``, default ~/.cache/edgeft), joined with ``parts``."""
    return Path(os.environ.get("EDGEFT_CACHE") or Path.home() / ".cache" / "edgeft").joinpath(*parts)


def existing_parent(p: str | os.PathLike) -> Path:
    """``p`` itself, or its nearest ancestor that exists."""
    p = Path(p).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def default_mode(base: int = 0o666) -> int:
    """``base`` under the process umask: what a normally created file (0o666) or folder (0o777) gets."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def build_once(dest: Path, build: Callable[[Path], None]) -> Path:
    """Build a cached folder once: ``build(tmp)`` fills a sibling temp folder that is renamed to ``dest`` with a
    ``.complete`` marker; an interrupted build is never mistaken for a finished one."""
    import tempfile

    if (dest / ".complete").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text("ok\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsync'ed and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, default_mode())  # mkstemp creates 0600; final files get normal permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path) as tmp:
        writer(tmp)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_DISK = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
         errno.EFBIG: "the file size limit is exceeded", errno.EROFS: "the file system is read-only",
         errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}
_IO_WORDS = __import__("re").compile(r"iostream|ostream|write|flush|i/o|input/output", __import__("re").I)
_DISK_TEXT = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
              "File too large": errno.EFBIG, "Read-only file system": errno.EROFS}


def disk_error(e: BaseException, where: str | os.PathLike | None = None):
    """An OSError about the disk (full, quota, size limit, read-only, permissions) anywhere in ``e``'s chain -- also
    when a library wrapped it in its own exception -- as one user-facing line; None for anything else."""
    from ..errors import DiskError, EdgeftError

    if isinstance(e, EdgeftError):   # already a user-facing error with its own cause
        return None
    seen, cur, code, fname = 0, e, None, None
    while cur is not None and seen < 12:
        if isinstance(cur, OSError) and cur.errno in _DISK:
            code, fname = cur.errno, cur.filename
            break
        text = str(cur)
        hit = next((c for t, c in _DISK_TEXT.items() if t in text), None)
        if hit is not None:
            code = hit
            break
        cur, seen = cur.__cause__ or cur.__context__, seen + 1
    target = str(fname or where or "the output")
    p = existing_parent(target)
    if code is None and where is not None and _IO_WORDS.search(str(e)):
        # some writers lose the errno (OpenVINO's save_model: "basic_ios::clear: iostream error"): judge by the disk
        import resource

        with contextlib.suppress(OSError):
            if shutil.disk_usage(p).free < (1 << 20):
                code = errno.ENOSPC
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if code is None and soft != resource.RLIM_INFINITY:
            code = errno.EFBIG
    if code is None:
        return None
    free = ""
    with contextlib.suppress(OSError):
        free = f"; {shutil.disk_usage(p).free / 1e6:.1f} MB free there"
    full = code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    hint = "free some space, or pass --out on another disk" if full else "pass --out to a folder you can write"
    return DiskError(f"cannot {'write' if full or code == errno.EROFS else 'access'} {target!r}: {_DISK[code]}{free}",
                     hint=hint)


def say_flushed(msg: str) -> None:
    """Write ``msg`` to stderr and flush both streams (a closed pipe is ignored): the last words before an exit."""
    sys.stderr.write(msg)
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # noqa: BLE001 - a closed pipe must not turn an exit into a traceback
            pass


def exit_now(msg: str, code: int) -> None:
    """``say_flushed(msg)``, then end the process at once (no unwinding: nothing a native library is in the middle
    of can turn this into an abort or change the exit code)."""
    say_flushed(msg)
    os._exit(code)
