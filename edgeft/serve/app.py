"""The HTTP API (FastAPI), torch-free: models and versions, predict, health, Prometheus metrics, admin swaps.

| method | path | what |
|---|---|---|
| GET | /healthz | liveness (the process answers) |
| GET | /readyz | readiness: 200 once every model has a loaded, warmed-up active version, else 503 |
| GET | /metrics | Prometheus text: requests, latency histogram per model and version, in-flight, errors by kind, batch sizes |
| GET | /v1/models | models, their versions and the active one |
| POST | /v1/models/{name}/predict | the active version; body: an image (image/png, image/jpeg...), a wav (audio/wav), a multipart upload (field ``file``) or JSON ``{"inputs": [...]}`` (preprocessed tensors) |
| POST | /v1/models/{name}/versions/{version}/predict | a given loaded version |
| POST | /v1/admin/models/{name}/load | JSON ``{"version": "2"}``: load, verify, warm up, then switch atomically |
| POST | /v1/admin/models/{name}/rollback | back to the previously active version |
| POST | /v1/admin/rescan | re-read the model repository (``--repo``) for new versions |

Every error is JSON ``{"error": {"status", "kind", "message"}}`` with a 4xx status for anything the client
sent (401 no key, 403 wrong key, 404 unknown model/version, 413 too large, 415 wrong content type, 400 an input
that is not valid) and 504 when the inference did not finish within the request timeout.
"""

import asyncio
import hmac
import io
import json
import os
import tempfile
import time

import numpy as np

from ..errors import DataError

IMAGE_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/bmp", "image/webp", "image/tiff", "image/gif"}
WAV_TYPES = {"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}
KINDS = ("unauthorized", "forbidden", "not_found", "payload_too_large", "unsupported_media_type", "bad_input",
         "timeout", "unavailable", "internal")


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str):
        self.status, self.kind, self.message = status, kind, message
        super().__init__(message)


def error_body(status: int, kind: str, message: str) -> dict:
    return {"error": {"status": status, "kind": kind, "message": message}}


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("edgeft_requests", "Predict requests by model, version and HTTP status",
                                ["model", "version", "status"], registry=self.registry)
        self.latency = Histogram("edgeft_request_duration_seconds", "Predict request latency (server side)",
                                 ["model", "version"], registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        self.inflight = Gauge("edgeft_requests_in_flight", "Requests being handled", registry=self.registry)
        self.errors = Counter("edgeft_errors", "Error responses by kind", ["kind"], registry=self.registry)
        self.batch = Histogram("edgeft_batch_size", "Samples per inference batch", ["model", "version"],
                               registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64))
        for k in KINDS:
            self.errors.labels(k)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class BodyLimit:
    """ASGI middleware: requests over ``limit`` bytes get a JSON 413 (Content-Length checked before anything is
    read; a chunked body is counted as it arrives). The declared body is drained, so the client reads the 413
    instead of a reset connection."""

    def __init__(self, app, limit: int, metrics: Metrics):
        self.app, self.limit, self.metrics = app, limit, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        cl = headers.get(b"content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                return await self._reject(send, 400, "bad_input", "Content-Length is not a number")
            if n > self.limit:
                more = True
                while more:                      # drain what the client is sending, keep nothing
                    msg = await receive()
                    more = msg.get("more_body", False) and msg["type"] == "http.request"
                return await self._reject(send, 413, "payload_too_large",
                                          f"request body of {n} bytes is over the limit of {self.limit} bytes")
        seen = 0
        started = False

        async def rcv():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return msg

        async def snd(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, rcv, snd)
        except _TooLarge:
            if not started:
                await self._reject(send, 413, "payload_too_large", f"request body is over the limit of {self.limit} "
                                                                   f"bytes")

    async def _reject(self, send, status, kind, message):
        self.metrics.errors.labels(kind).inc()
        body = json.dumps(error_body(status, kind, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(ApiError):
    """Raised from ``receive`` when a body without (or beyond) its Content-Length passes the limit: an ApiError,
    so the app's own handler answers 413 (not Starlette's 500 for an unknown exception)."""

    def __init__(self, limit: int = 0):
        super().__init__(413, "payload_too_large", f"request body is over the limit of {limit} bytes")


def create_app(registry, *, api_keys=None, admin_keys=None, max_body_bytes: int = 8 << 20,
               timeout_s: float = 5.0, default_top_k: int = 5):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .. import __version__

    metrics = Metrics()
    api_keys = [k.encode() for k in (api_keys or [])]
    admin_keys = [k.encode() for k in (admin_keys or [])]
    app = FastAPI(title="edgeft serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.registry = registry
    app.state.metrics = metrics
    app.add_middleware(BodyLimit, limit=max_body_bytes, metrics=metrics)
    decode_slots = asyncio.Semaphore(max(2, (os.cpu_count() or 2)))   # bounded decode memory and CPU
    for vers in registry.loaded.values():
        for v in vers.values():
            _hook_batch_metrics(v, metrics)

    def fail(status: int, kind: str, message: str):
        raise ApiError(status, kind, message)

    def check_key(request: Request, keys: list[bytes], what: str) -> None:
        if not keys:
            if what == "admin":
                fail(403, "forbidden", "admin endpoints are off: start the server with --admin-key-file")
            return
        got = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if got is None and auth.lower().startswith("bearer "):
            got = auth[7:].strip()
        if not got:
            fail(401, "unauthorized", "missing API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        g = got.encode()
        ok = False
        for k in keys:                      # every key compared, whatever matched: no early exit to time
            ok |= hmac.compare_digest(g, k)
        if not ok:
            fail(403, "forbidden", f"the {what} key is not valid")

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        metrics.errors.labels(e.kind).inc()
        return JSONResponse(error_body(e.status, e.kind, e.message), status_code=e.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e):
        kind = {404: "not_found", 405: "bad_input", 401: "unauthorized", 403: "forbidden"}.get(e.status_code,
                                                                                             "bad_input")
        metrics.errors.labels(kind).inc()
        return JSONResponse(error_body(e.status_code, kind, str(e.detail)), status_code=e.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, e):
        metrics.errors.labels("bad_input").inc()
        first = e.errors()[0] if e.errors() else {}
        return JSONResponse(error_body(400, "bad_input", f"{first.get('msg', 'invalid request')} at "
                                                         f"{'.'.join(map(str, first.get('loc', [])))}"), 400)

    @app.exception_handler(Exception)
    async def _internal(request, e):
        metrics.errors.labels("internal").inc()
        return JSONResponse(error_body(500, "internal", f"{type(e).__name__}: {e}"[:300]), status_code=500)

    # --------------------------------------------------------------------------------------- probes
    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        missing = [n for n in registry.sources if n not in registry.active]
        body = {"ready": not missing and bool(registry.active), "models": {n: registry.active.get(n)
                                                                          for n in registry.sources}}
        return JSONResponse(body, status_code=200 if not missing else 503)

    @app.get("/metrics")
    async def metrics_endpoint(request: Request):
        check_key(request, api_keys, "API")
        return Response(metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # --------------------------------------------------------------------------------------- models
    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request, api_keys, "API")
        return {"models": registry.listing()}

    @app.get("/v1/models/{name}")
    async def get_model(name: str, request: Request):
        check_key(request, api_keys, "API")
        for m in registry.listing():
            if m["name"] == name:
                return m
        fail(404, "not_found", f"no model {name!r}; GET /v1/models lists them")

    async def _predict(name: str, version: str | None, request: Request):
        check_key(request, api_keys, "API")
        t0 = time.perf_counter()
        try:
            v = registry.acquire(name, version)
        except KeyError:
            fail(404, "not_found", f"no loaded model {name!r}" + (f" version {version!r}" if version else "")
                 + "; GET /v1/models lists them")
        status = 500
        fut = None
        metrics.inflight.inc()
        try:
            model = v.model
            body, ctype, top_k = await _read_body(request, v, default_top_k)
            deadline = t0 + timeout_s

            def prepare():   # decode + preprocess: in the thread pool, bounded, inside the request's timeout
                got = _decode(body, ctype, v)
                if isinstance(got, dict):
                    return got, None
                return model.preprocessor(got), [np.asarray(r).shape[1::-1] for r in got]

            try:
                async with decode_slots:
                    feeds, sizes = await asyncio.wait_for(run_in_threadpool(prepare),
                                                          timeout=max(0.001, deadline - time.perf_counter()))
                fut = v.batcher.submit(feeds)
                y = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=max(0.001, deadline - time.perf_counter()))
            except asyncio.TimeoutError:
                if fut is not None:
                    fut.cancel()
                fail(504, "timeout", f"the request did not finish within {timeout_s * 1e3:.0f} ms")
            if getattr(model.task, "wants_input_sizes", False) and sizes is not None:
                preds = model.task.predictions(y, model.labels, top_k, sizes=sizes)
            else:
                preds = model.task.predictions(y, model.labels, top_k)
            status = 200
            return {"model": name, "version": v.version, "task": model.task_name,
                    "predictions": [model.task.prediction_json(p) for p in preds],
                    "server_ms": round((time.perf_counter() - t0) * 1e3, 3)}
        except ApiError as e:
            status = e.status
            raise
        finally:
            metrics.inflight.dec()
            metrics.requests.labels(name, v.version, str(status)).inc()
            if status == 200:
                metrics.latency.labels(name, v.version).observe(time.perf_counter() - t0)
            if fut is not None and not fut.done():       # still running in the worker: keep the version alive
                fut.add_done_callback(lambda _f, v=v: registry.release(v))
            else:
                registry.release(v)

    @app.post("/v1/models/{name}/predict")
    async def predict(name: str, request: Request):
        return await _predict(name, None, request)

    @app.post("/v1/models/{name}/versions/{version}/predict")
    async def predict_version(name: str, version: str, request: Request):
        return await _predict(name, version, request)

    # ---------------------------------------------------------------------------------------- admin
    @app.post("/v1/admin/models/{name}/load")
    async def admin_load(name: str, request: Request):
        check_key(request, admin_keys, "admin")
        try:
            body = await request.json()
            version = str(body["version"])
        except (ValueError, KeyError, TypeError):
            fail(400, "bad_input", 'send JSON {"version": "N"}')
        if name not in registry.sources or version not in registry.sources[name]:
            known = sorted(registry.sources.get(name, {}))
            fail(404, "not_found", f"no version {version!r} of {name!r} in the repository (known: {known}); "
                                   f"POST /v1/admin/rescan after adding one")
        t = time.perf_counter()
        try:
            v = await run_in_threadpool(registry.load, name, version)
        except Exception as e:  # noqa: BLE001 - a bad bundle is refused, the active version keeps serving
            fail(400, "bad_input", f"version {version!r} of {name!r} was not loaded: {e}"[:400])
        _hook_batch_metrics(v, metrics)
        return {"model": name, "active_version": version, "load_ms": round((time.perf_counter() - t) * 1e3, 1),
                "sha256": v.sha256}

    @app.post("/v1/admin/models/{name}/rollback")
    async def admin_rollback(name: str, request: Request):
        check_key(request, admin_keys, "admin")
        try:
            prev = await run_in_threadpool(registry.rollback, name)
        except KeyError as e:
            fail(409 if name in registry.sources else 404, "bad_input" if name in registry.sources else "not_found",
                 str(e).strip("'\""))
        except Exception as e:  # noqa: BLE001 - the earlier version cannot be loaded: nothing changed
            fail(409, "bad_input", f"rollback of {name!r} failed, the active version is unchanged: {e}"[:400])
        for vv in registry.loaded.get(name, {}).values():
            _hook_batch_metrics(vv, metrics)
        return {"model": name, "active_version": prev}

    @app.post("/v1/admin/rescan")
    async def admin_rescan(request: Request):
        check_key(request, admin_keys, "admin")
        if registry.repo is None:
            fail(400, "bad_input", "no model repository: start the server with --repo DIR")
        found = await run_in_threadpool(registry.scan_repo, registry.repo)
        for n in found:                 # a model new to the server is loaded now (readiness stays true)
            if n not in registry.active:
                try:
                    _hook_batch_metrics(await run_in_threadpool(registry.load, n), metrics)
                except Exception as e:  # noqa: BLE001
                    fail(400, "bad_input", f"new model {n!r} was not loaded: {e}"[:400])
        return {"models": {n: sorted(registry.sources[n]) for n in found}}

    return app


def _hook_batch_metrics(v, metrics: Metrics) -> None:
    if v.batcher is not None:
        h = metrics.batch.labels(v.name, v.version)
        v.batcher.on_batch = h.observe


async def _read_body(request, v, default_top_k: int):
    """The request's body, its content type and top_k (reading only: decoding happens in the thread pool)."""
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    top_k = default_top_k
    q = request.query_params.get("top_k")
    if q is not None:
        if not (q.isascii() and q.isdigit()) or not 1 <= int(q) <= 100:
            raise ApiError(400, "bad_input", f"top_k={q!r}: must be an integer 1..100")
        top_k = int(q)
    if ctype == "multipart/form-data":
        form = await request.form()
        up = form.get("file")
        if up is None or not hasattr(up, "read"):
            raise ApiError(400, "bad_input", "multipart body without a 'file' field")
        data = await up.read()
        ctype = (up.content_type or "").split(";")[0].strip().lower()
        if ctype in ("", "application/octet-stream"):
            ext = os.path.splitext(up.filename or "")[1].lower()      # used for the type only, never as a path
            ctype = "audio/wav" if ext == ".wav" else "image/png" if ext in (".png", ".jpg", ".jpeg", ".bmp") else ctype
        return data, ctype, top_k
    return await request.body(), ctype, top_k


def _decode(data: bytes, ctype: str, v):
    """Body -> raw samples (images, clips) or preprocessed feeds (JSON). Runs in the thread pool."""
    task = v.model.task_name
    if ctype == "application/json":
        try:
            body = json.loads(data)
            rows = body["inputs"]
            if not isinstance(rows, list) or not 1 <= len(rows) <= 64:
                raise ValueError("inputs must be a list of 1..64 samples")
            spec = v.model.manifest["inputs"][0]
            per = int(np.prod([d for d in spec["shape"][1:] if isinstance(d, int)] or [1]))
            if len(data) > 32 * per * len(rows) + 4096:     # far more text than numbers the shape can hold
                raise ValueError("body larger than the input shape allows")
            arr = np.asarray(rows, dtype=np.float32)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise ApiError(400, "bad_input", f'JSON body must be {{"inputs": [[...]]}} (1..64 preprocessed inputs): '
                                             f'{type(e).__name__}: {str(e)[:120]}') from None
        want = list(spec["shape"][1:])
        if arr.ndim != len(spec["shape"]) or any(isinstance(w, int) and w != g for w, g in zip(want, arr.shape[1:])):
            raise ApiError(400, "bad_input", f"inputs have shape {list(arr.shape)}; this model takes "
                                             f"[batch, {', '.join(map(str, want))}]")
        if not np.isfinite(arr).all():
            raise ApiError(400, "bad_input", "inputs: finite numbers only")
        return {spec["name"]: np.ascontiguousarray(arr)}
    if task == "kws":
        if ctype not in WAV_TYPES:
            raise ApiError(415, "unsupported_media_type", f"content type {ctype or 'none'!r}: a keyword-spotting "
                                                          f"model takes audio/wav or application/json")
        return [_decode_wav(v.model, data)]
    if ctype not in IMAGE_TYPES:
        raise ApiError(415, "unsupported_media_type", f"content type {ctype or 'none'!r}: this model takes "
                                                      f"{', '.join(sorted(IMAGE_TYPES))}, multipart/form-data or "
                                                      f"application/json")
    return [_decode_image(data)]


MAX_PIXELS = 16_000_000     # 16 MP: a camera frame is far smaller; a 9000x9000 PNG bomb of 236 KB is refused
MAX_AUDIO_S = 60.0


def _decode_image(data: bytes) -> np.ndarray:
    from ..data.images import open_image

    if not data:
        raise ApiError(400, "bad_input", "empty body")
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:       # the header only: refuse huge images before decoding
            w, h = im.size
        if w * h > MAX_PIXELS:
            raise ApiError(400, "bad_input", f"image of {w}x{h} = {w * h} pixels is over the server's limit of "
                                             f"{MAX_PIXELS}; resize it first")
    except ApiError:
        raise
    except Exception:  # noqa: BLE001 - not an image header: open_image says why, in its words
        pass
    try:
        return np.asarray(open_image(io.BytesIO(data)))
    except DataError as e:
        import re

        msg = re.sub(r"'?<_io\.BytesIO object at 0x[0-9a-fA-F]+>'?", "the upload", e.message)
        raise ApiError(400, "bad_input", msg[:300]) from None


def _decode_wav(model, data: bytes) -> np.ndarray:
    """A wav body, decoded with the same checks as a file (truncated, not RIFF...): written to a private temporary
    file whose name the server makes up (nothing from the request names a path)."""
    if not data:
        raise ApiError(400, "bad_input", "empty body")
    fd, tmp = tempfile.mkstemp(prefix="edgeft-serve-", suffix=".wav")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _check_wav_header(data)
        return model.task.read(tmp)
    except DataError as e:
        raise ApiError(400, "bad_input", e.message.replace(tmp, "the upload")[:300]) from None
    except (ValueError, OSError, EOFError) as e:
        raise ApiError(400, "bad_input", f"unreadable wav: {type(e).__name__}: {str(e).replace(tmp, 'the upload')}"[:300]) \
            from None
    finally:
        os.unlink(tmp)


def _check_wav_header(data: bytes) -> None:
    """Rate and length from the header before decoding: a 4 KB wav claiming 1 Hz would resample to gigabytes."""
    import wave

    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            sr, n = w.getframerate(), w.getnframes()
    except Exception:  # noqa: BLE001 - not a plain PCM header: the reader's checks say why
        return
    if not 8000 <= sr <= 96000:
        raise ApiError(400, "bad_input", f"wav sample rate {sr} Hz: valid is 8000..96000")
    if n / sr > MAX_AUDIO_S:
        raise ApiError(400, "bad_input", f"wav of {n / sr:.1f} s: the server takes clips up to {MAX_AUDIO_S:g} s")
