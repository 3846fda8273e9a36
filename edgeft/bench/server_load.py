"""``edgeft bench --scenario server --url http://HOST:PORT/v1/models/NAME/predict``: load on an HTTP inference
server, in the style of MLPerf's Server scenario (torch-free, standard library HTTP).

- closed loop (default): ``--clients N`` clients, each sending its next request when the previous one answered;
- open loop (``--qps Q``): requests arrive as a seeded Poisson process at Q per second, whatever the server does;
  each is timed from its *scheduled* arrival, so a server that falls behind shows it in the latency (no
  coordinated omission).

The requests carry real samples of ``--data`` (images as PNG, clips as WAV) in turn. Reported: completed
requests, throughput, latency p50/p90/p99 (nearest rank) with the p99 early-stopping bound, errors by HTTP
status, whether the p99 latency bound held (``--latency-bound-ms``), and for classifiers the top-1 of the
served answers against the labels (what the server returns is checked, not only timed).
"""
from __future__ import annotations

import http.client
import io
import json
import queue
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from ..errors import DataError, DeviceError, UnsupportedError
from ..stats import early_stopping_bound, summarize

DURATIONS = {"smoke": 5.0, "quick": 10.0, "dev": 30.0, "report": 120.0}


def _conn(u):
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    return cls(u.hostname, u.port or (443 if u.scheme == "https" else 80), timeout=30)


def _get_json(url: str, headers: dict) -> dict:
    u = urlsplit(url)
    c = _conn(u)
    try:
        c.request("GET", u.path, headers=headers)
        r = c.getresponse()
        body = r.read()
    except OSError as e:
        raise DeviceError(f"--url {url}: cannot connect ({type(e).__name__}: {e})",
                          hint="start it with `edgeft serve BUNDLE` (or check host and port)") from None
    finally:
        c.close()
    if r.status in (401, 403):
        raise DeviceError(f"--url {url}: the server refused the key (HTTP {r.status})", hint="pass --api-key-file")
    if r.status != 200:
        raise DeviceError(f"--url {url}: HTTP {r.status} {body[:200]!r}", hint="check the model name in the URL")
    return json.loads(body)


def encode(task: str, raw) -> tuple[bytes, str]:
    if task == "kws":
        import wave

        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(np.asarray(raw), -1, 1) * 32767).astype("<i2").tobytes())
        return buf.getvalue(), "audio/wav"
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(raw, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue(), "image/png"


def server_bench(url: str, *, data: str | None, profile: str = "dev", clients: int = 8, qps: float | None = None,
                 duration: float | None = None, latency_bound_ms: float | None = None, api_key: str | None = None,
                 samples: int = 64, seed: int = 0) -> dict:
    from ..tasks import builtin_source_task
    from .data import load_samples

    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname or "/v1/models/" not in u.path \
            or not u.path.rstrip("/").endswith("/predict"):
        raise UnsupportedError(f"--url {url!r}: expected http://HOST:PORT/v1/models/NAME/predict",
                               hint="the predict URL `edgeft serve` prints")
    if clients < 1 or clients > 512:
        raise UnsupportedError(f"--clients {clients}: valid is 1..512")
    if qps is not None and not 0 < qps <= 100_000:
        raise UnsupportedError(f"--qps {qps:g}: valid is 0 < qps <= 100000")
    if latency_bound_ms is not None and latency_bound_ms <= 0:
        raise UnsupportedError(f"--latency-bound-ms {latency_bound_ms:g}: must be > 0")
    duration = duration or DURATIONS.get(profile, 30.0)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    name = u.path.split("/v1/models/")[1].split("/")[0]
    info = _get_json(f"{u.scheme}://{u.netloc}/v1/models/{name}", headers)
    active = next((v for v in info["versions"] if v["version"] == info.get("active_version")), info["versions"][0])
    task = active.get("task") or "image_cls"
    labels = list(active.get("labels") or [])
    src = active.get("source_data")
    if data is None and src and builtin_source_task(src):
        data = f"{src}:test"
    if data is None:
        raise DataError("--scenario server needs --data (the samples to send): the model was not trained on a "
                        "built-in set", hint="e.g. --data DIR (a folder of class folders)")
    if builtin_source_task(data.split(":")[0]) not in (None, task):
        raise DataError(f"--data {data!r} is {builtin_source_task(data.split(':')[0])} data; {name} is a {task} model")
    s = load_samples(data, task, labels, samples)
    bodies = [encode(task, s.raw(i)) for i in range(len(s))]
    targets = np.asarray(s.targets) if task != "detection" else None
    path = u.path + ("" if task == "detection" else ("&" if "?" in u.path else "?") + "top_k=1")

    recs: list[tuple[float, float, int, str | None, int]] = []   # (t_sched rel, latency ms, status, top1, idx)
    sends: list[float] = []                                       # open loop: how late each request left (ms)
    lock = threading.Lock()
    t0 = time.perf_counter() + 0.2

    def send(c, i: int):
        body, ctype = bodies[i % len(bodies)]
        c.request("POST", path, body=body, headers={**headers, "Content-Type": ctype})
        r = c.getresponse()
        out = r.read()
        top = None
        if r.status == 200 and task != "detection":
            try:
                top = json.loads(out)["predictions"][0]["top"][0]["label"]
            except (ValueError, KeyError, IndexError, TypeError):
                top = None
        return r.status, top

    def send_or_reconnect(c, i: int):
        """(connection, status, top-1): a failed connection counts as status 599 and is replaced."""
        try:
            return (c, *send(c, i))
        except (OSError, http.client.HTTPException):
            c.close()
            return _conn(u), 599, None

    def record(ts, lat, status, top, i):
        with lock:
            recs.append((ts, lat, status, top, i))

    if qps is None:          # closed loop
        def client(k: int):
            c = _conn(u)
            i = k
            while True:
                t = time.perf_counter()
                if t - t0 >= duration:
                    break
                if t < t0:
                    time.sleep(t0 - t)
                    continue
                c, st, top = send_or_reconnect(c, i)
                record(t - t0, (time.perf_counter() - t) * 1e3, st, top, i)
                i += clients
            c.close()

        ts = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    else:                    # open loop: seeded Poisson arrivals, timed from the schedule
        rng = np.random.default_rng(seed)
        n = int(qps * duration * 1.5) + 10
        arrivals = np.cumsum(rng.exponential(1 / qps, n))
        arrivals = arrivals[arrivals < duration]
        jobs: queue.Queue = queue.Queue()
        for i, a in enumerate(arrivals):
            jobs.put((i, a))
        # enough senders that none waits for a free one while the server answers within 1 s at this rate (a
        # sender that leaves late is counted: `late_sends`; its latency still runs from the schedule)
        workers = max(clients, min(512, int(qps * 1.0) + 8))

        def worker(_k: int):
            c = _conn(u)
            while True:
                try:
                    i, a = jobs.get_nowait()
                except queue.Empty:
                    break
                due = t0 + a
                now = time.perf_counter()
                if now < due:
                    time.sleep(due - now)
                late = (time.perf_counter() - due) * 1e3
                with lock:
                    sends.append(late)
                c, st, top = send_or_reconnect(c, i)
                record(a, (time.perf_counter() - due) * 1e3, st, top, i)
            c.close()

        ts = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = max(duration, max((r[0] + r[1] / 1e3 for r in recs), default=0.0))
    ok = [r for r in recs if r[2] == 200]
    lat = sorted(r[1] for r in ok)
    st = summarize(lat) if lat else {}
    errors: dict[str, int] = {}
    for r in recs:
        if r[2] != 200:
            errors[str(r[2])] = errors.get(str(r[2]), 0) + 1
    res = {"url": url, "model": name, "version": info.get("active_version"), "task": task,
           "mode": "closed loop" if qps is None else "open loop (Poisson)", "clients": clients,
           "target_qps": qps, "duration_s": duration, "requests": len(recs), "ok": len(ok), "errors": errors,
           "throughput_rps": len(ok) / wall if wall else 0.0,
           "latency_ms": {k: st.get(k) for k in ("p50", "p90", "p99", "mean", "max", "count")},
           "p99_ub99": early_stopping_bound(np.asarray(lat), 0.99) if len(lat) else None,
           "data": {"name": s.name, "samples": len(bodies)}}
    if qps is not None:
        res["offered_qps"] = len(recs) / duration
        res["late_sends"] = sum(1 for x in sends if x > 10.0)      # left > 10 ms after their scheduled time
        res["send_lateness_ms_p99"] = float(np.percentile(sends, 99)) if sends else None
    if latency_bound_ms is not None:
        p99 = st.get("p99")
        res["latency_bound_ms"] = latency_bound_ms
        res["bound_held"] = bool(p99 is not None and p99 <= latency_bound_ms and not errors)
    if targets is not None and labels:
        scored = [(r[3], labels[int(targets[r[4] % len(bodies)])]) for r in ok if r[3] is not None]
        if scored:
            res["served_top1"] = sum(a == b for a, b in scored) / len(scored)
            res["served_top1_n"] = len(scored)
    return res


def markdown(r: dict) -> str:
    lat = r["latency_ms"]
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    head = ("| model | mode | clients | target QPS | requests | ok | errors | throughput (req/s) | p50 | p90 | p99 | "
            "p99 ub99 | bound | served top-1 |")
    row = (f"| {r['model']} v{r['version']} | {r['mode']} | {r['clients']} | {f(r.get('target_qps'))} | {r['requests']} | "
           f"{r['ok']} | {sum(r['errors'].values()) or 0} {r['errors'] or ''} | {r['throughput_rps']:.1f} | {f(lat['p50'])} | "
           f"{f(lat['p90'])} | {f(lat['p99'])} | {f(r.get('p99_ub99'))} | "
           f"{'–' if 'bound_held' not in r else ('held' if r['bound_held'] else 'MISSED')} (≤ {r.get('latency_bound_ms', '–')} ms) | "
           f"{f(r.get('served_top1'))} |")
    return "\n".join([head, "|" + "---|" * 14, row]) + "\n"
