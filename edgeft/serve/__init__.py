"""``edgeft serve``: bundles behind an HTTP API (FastAPI + uvicorn), torch-free; see :mod:`edgeft.serve.app`.

Example::

    edgeft serve runs/r18/bundles/openvino-int8 --port 8000 --api-key-file keys.txt
    curl -H "Authorization: Bearer $(head -1 keys.txt)" -H "Content-Type: image/png" \\
         --data-binary @shoe.png http://127.0.0.1:8000/v1/models/r18-openvino-int8/predict

``edgeft export-serving BUNDLE --triton DIR`` writes the same bundle as a Triton Inference Server model
repository (and an OpenVINO Model Server config) for users who outgrow one box (:mod:`edgeft.serve.triton`).
"""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from ..errors import DataError, UnsupportedError


def read_keys(path: str | os.PathLike | None, what: str) -> list[str]:
    """One key per line (blank lines and # comments ignored); at least 16 characters each."""
    if path is None:
        return []
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{what} {str(path)!r} cannot be read ({type(e).__name__})",
                        hint="one key per line, e.g. made with: python -c 'import secrets; print(secrets.token_urlsafe(32))'") from None
    keys = [x.strip() for x in lines if x.strip() and not x.strip().startswith("#")]
    if not keys:
        raise DataError(f"{what} {str(path)!r} holds no key", hint="one key per line")
    short = [k for k in keys if len(k) < 16 or any(c.isspace() for c in k)]
    if short:
        raise DataError(f"{what} {str(path)!r}: {len(short)} key(s) shorter than 16 characters or with spaces",
                        hint="use long random keys: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return keys


def _loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(bundles, *, repo=None, threads=None, max_batch: int = 1, max_wait_ms: float = 2.0, trust=None):
    """The registry with every model loaded (verified, warmed up) and active."""
    from .registry import Registry

    if max_batch < 1 or max_batch > 256:
        raise UnsupportedError(f"--max-batch {max_batch}: valid is 1..256", hint="1 = no batching")
    if not 0 <= max_wait_ms <= 1000:
        raise UnsupportedError(f"--max-wait-ms {max_wait_ms:g}: valid is 0..1000")
    reg = Registry(threads=threads, max_batch=max_batch, max_wait_ms=max_wait_ms if max_batch > 1 else 0.0,
                   trust=trust)
    for b in bundles or ():
        reg.add_bundle(str(b))
    if repo is not None:
        reg.scan_repo(repo)
    if not reg.sources:
        raise DataError("nothing to serve", hint="edgeft serve BUNDLE... or --repo DIR (DIR/NAME/VERSION/)")
    for name in list(reg.sources):
        reg.load(name)
    return reg


def serve(bundles, *, repo=None, host: str = "127.0.0.1", port: int = 8000, api_key_file=None, admin_key_file=None,
          max_batch: int = 1, max_wait_ms: float = 2.0, max_body_mb: float = 8.0, timeout_ms: float = 5000.0,
          threads=None, trust=None, allow_unauthenticated: bool = False, on_ready=None) -> None:
    try:
        import uvicorn

        from .app import create_app
    except ImportError as e:
        from ..errors import BackendUnavailable

        raise BackendUnavailable(f"`edgeft serve` needs FastAPI and uvicorn ({e.name} is missing)",
                                 hint="pip install 'edgeft[serve]'") from None
    if not 0 < port < 65536:
        raise UnsupportedError(f"--port {port}: valid is 1..65535")
    if not 0 < max_body_mb <= 1024:
        raise UnsupportedError(f"--max-body-mb {max_body_mb:g}: valid is 0 < MB <= 1024")
    if not 0 < timeout_ms <= 600_000:
        raise UnsupportedError(f"--timeout-ms {timeout_ms:g}: valid is 0 < ms <= 600000")
    keys = read_keys(api_key_file, "--api-key-file")
    admin = read_keys(admin_key_file, "--admin-key-file")
    if not _loopback(host) and not keys and not allow_unauthenticated:
        raise UnsupportedError(f"--host {host}: serving beyond this machine without --api-key-file",
                               hint="add --api-key-file KEYS (or --allow-unauthenticated on a trusted network)")
    reg = build(bundles, repo=repo, threads=threads, max_batch=max_batch, max_wait_ms=max_wait_ms, trust=trust)
    app = create_app(reg, api_keys=keys, admin_keys=admin, max_body_bytes=int(max_body_mb * (1 << 20)),
                     timeout_s=timeout_ms / 1e3)
    wrapped = app
    if on_ready is not None:
        on_ready(reg)
    try:
        uvicorn.run(wrapped, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=5,
                    server_header=False)
    finally:
        reg.close()
