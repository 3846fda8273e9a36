"""`edgeft serve` under load, one run: what HTTP costs over the same bundle in-process, what dynamic batching buys
at the same offered load, and a version swap + rollback under load (failed requests counted).

    .venv/bin/python benchmarks/serve_load.py BUNDLE [--duration 30] [--clients 8] [--qps Q] [--json OUT]

Phases (each server is a subprocess on 127.0.0.1; the load generator is `edgeft bench --scenario server`'s, so
client and server share this machine's cores: the numbers are for this machine, stated in the output):

1. in-process: the same PNG samples through `runtime.load(BUNDLE).predict` (decode + preprocess + infer + post),
   8 threads sharing the model behind a lock (one inference at a time, as the server does) and 1 thread;
2. closed loop, `--clients` clients for `--duration` s: batching off (`--max-batch 1`) and on (`--max-batch 8
   --max-wait-ms 2`);
3. open loop (Poisson) at the same offered QPS (default: 80% of phase 2's unbatched throughput) for both servers;
4. hot swap: a repository with versions 1 and 2 of the bundle; under the closed-loop load, load v2, then roll
   back to v1; every response's status and version recorded.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"
ADMIN = "bench-admin-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (workdir / "keys.txt").write_text(KEY + "\n")
    (workdir / "admin.txt").write_text(ADMIN + "\n")
    cmd = [sys.executable, "-m", "edgeft", "serve", *map(str, args), "--port", str(port),
           "--api-key-file", str(workdir / "keys.txt"), "--admin-key-file", str(workdir / "admin.txt")]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         start_new_session=True)
    for _ in range(300):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return p, port
        except OSError:
            pass
        if p.poll() is not None:
            raise SystemExit(p.stderr.read())
        time.sleep(0.2)
    raise SystemExit("server did not become ready")


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
        p.wait(20)


def in_process(bundle: Path, data: str, duration: float, threads: int) -> dict:
    from edgeft import runtime
    from edgeft.bench.data import load_samples
    from edgeft.bench.server_load import encode
    from edgeft.data.images import open_image
    import io

    lock = threading.Lock()
    with runtime.load(bundle) as model:
        s = load_samples(data, model.task_name, model.labels, 64)
        bodies = [encode(model.task_name, s.raw(i))[0] for i in range(len(s))]
        lat, t0 = [], time.perf_counter() + 0.1
        stop_at = t0 + duration

        def work(k):
            i = k
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                raw = np.asarray(open_image(io.BytesIO(bodies[i % len(bodies)])))
                with lock:
                    model.predict([raw], top_k=1)
                lat.append((time.perf_counter() - t) * 1e3)
                i += threads

        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    v = np.sort(lat)
    return {"mode": f"in-process, {threads} thread(s), one inference at a time", "requests": len(v),
            "throughput_rps": len(v) / duration, "p50": float(np.percentile(v, 50, method="inverted_cdf")),
            "p99": float(np.percentile(v, 99, method="inverted_cdf"))}


def load(url, data, duration, clients=8, qps=None):
    from edgeft.bench.server_load import server_bench

    r = server_bench(url, data=data, clients=clients, qps=qps, duration=duration, api_key=KEY)
    return {"mode": r["mode"], "clients": clients, "target_qps": qps, "requests": r["requests"], "ok": r["ok"],
            "errors": r["errors"], "throughput_rps": r["throughput_rps"], "p50": r["latency_ms"]["p50"],
            "p99": r["latency_ms"]["p99"], "served_top1": r.get("served_top1")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--data", default=None)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--qps", type=float, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    from edgeft.bundle import read_manifest
    from edgeft.utils.env import fingerprint

    m = read_manifest(a.bundle)
    data = a.data or f"{m['source']['data']}:test"
    fp = fingerprint()
    print(f"machine: {fp['cpu_model']} ({fp['cores_logical']} cores); bundle {a.bundle} ({m['format']}/{m['precision']}); "
          f"data {data}; client and server on this machine")
    out = {"machine": fp, "bundle": str(a.bundle), "data": data, "duration_s": a.duration, "phases": {}}
    ph = out["phases"]
    ph["in_process_8"] = in_process(a.bundle, data, a.duration, a.clients)
    ph["in_process_1"] = in_process(a.bundle, data, a.duration, 1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        repo = d / "repo"
        shutil.copytree(a.bundle, repo / "m" / "1")
        shutil.copytree(a.bundle, repo / "m" / "2")
        servers = {}
        for tag, extra in (("batch_off", ["--max-batch", "1"]), ("batch_on", ["--max-batch", "8", "--max-wait-ms", "2"])):
            w = d / tag
            w.mkdir()
            servers[tag] = start([f"m={a.bundle}", *extra], w)
        try:
            for tag, (_, port) in servers.items():
                ph[f"closed_{tag}"] = load(f"http://127.0.0.1:{port}/v1/models/m/predict", data, a.duration, a.clients)
            qps = a.qps or round(0.8 * ph["closed_batch_off"]["throughput_rps"])
            for tag, (_, port) in servers.items():
                ph[f"open_{tag}"] = load(f"http://127.0.0.1:{port}/v1/models/m/predict", data, a.duration, a.clients, qps)
        finally:
            for p, _ in servers.values():
                stop(p)
        # hot swap under load
        w = d / "swap"
        w.mkdir()
        p, port = start(["--repo", repo], w)
        try:
            results = []
            stop_evt = threading.Event()
            body = None
            from edgeft.bench.data import load_samples
            from edgeft.bench.server_load import encode

            s = load_samples(data, m["task"], m["labels"], 16)
            bodies = [encode(m["task"], s.raw(i)) for i in range(len(s))]

            def client(k):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                i = k
                while not stop_evt.is_set():
                    b, ctype = bodies[i % len(bodies)]
                    c.request("POST", "/v1/models/m/predict", b, {"Authorization": f"Bearer {KEY}", "Content-Type": ctype})
                    r = c.getresponse()
                    j = json.loads(r.read())
                    results.append((time.perf_counter(), r.status, j.get("version")))
                    i += a.clients
                c.close()

            ts = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
            for t in ts:
                t.start()
            events = []
            admin = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
            for action, path, payload in (("load v1", "/v1/admin/models/m/load", {"version": "1"}),
                                          ("load v2", "/v1/admin/models/m/load", {"version": "2"}),
                                          ("rollback", "/v1/admin/models/m/rollback", None)):
                time.sleep(a.duration / 4)
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                t = time.perf_counter()
                c.request("POST", path, json.dumps(payload) if payload else None, admin)
                r = c.getresponse()
                events.append({"action": action, "status": r.status, "response": json.loads(r.read()),
                               "ms": round((time.perf_counter() - t) * 1e3, 1)})
            time.sleep(a.duration / 4)
            stop_evt.set()
            for t in ts:
                t.join()
            del body
            ph["hot_swap"] = {"requests": len(results), "failed": sum(st != 200 for _, st, _ in results),
                              "by_version": {v: sum(1 for *_, x in results if x == v) for v in ("1", "2")},
                              "events": events}
        finally:
            stop(p)
    for k, v in ph.items():
        if k == "hot_swap":
            print(f"{k:18s} {v['requests']} requests, {v['failed']} failed, by version {v['by_version']}; "
                  + "; ".join(f"{e['action']} HTTP {e['status']} in {e['ms']} ms" for e in v["events"]))
        else:
            print(f"{k:18s} {v['mode']:36s} {v['requests']:6d} req  {v['throughput_rps']:8.1f} req/s  p50 {v['p50']:7.2f} ms"
                  f"  p99 {v['p99']:7.2f} ms" + (f"  errors {v['errors']}" if v.get("errors") else "")
                  + (f"  target {v['target_qps']} qps" if v.get("target_qps") else ""))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
        print(f"written: {a.json}")


if __name__ == "__main__":
    main()
