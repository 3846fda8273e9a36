"""`edgeft serve`: a real HTTP server (a subprocess on 127.0.0.1) in front of real bundles, and a real client.

Predictions equal the in-process runtime's; hostile requests get JSON 4xx and the server stays up; a version swap
under load fails no request; dynamic batching forms batches and changes no answer; the Triton repository parses
with Triton's own model-config protobuf."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgeft.stages.export import export

from .conftest import ROOT

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args, env=None):
        self.port = _free_port()
        cmd = [sys.executable, "-m", "edgeft", "serve", *map(str, args), "--port", str(self.port), "--threads", "1"]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                  start_new_session=True, env={**os.environ, **(env or {})})
        t0 = time.time()
        while time.time() - t0 < 60:
            if self.p.poll() is not None:
                raise AssertionError(f"server exited {self.p.returncode}: {self.p.stderr.read()[-2000:]}")
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError("server not ready within 60 s")

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
        finally:
            if conn is None:
                c.close()
        ctype = r.getheader("content-type", "")
        return r.status, (json.loads(data) if "json" in ctype else data.decode())

    def alive(self) -> bool:
        return self.p.poll() is None and self.request("GET", "/healthz")[0] == 200

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


KEY = "test-key-0123456789abcdef"
ADMIN = "admin-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    repo = d / "repo"
    export(tiny_run, format="onnxruntime", precision="fp32", out=repo / "tiny" / "1")
    export(tiny_run, format="openvino", precision="int8", out=repo / "tiny" / "2")
    (d / "keys.txt").write_text(f"# clients\n{KEY}\n")
    (d / "admin.txt").write_text(f"{ADMIN}\n")
    imgs = d / "img"
    from edgeft.data.images import export_builtin_images

    export_builtin_images("digits", imgs, "test", 12)
    files = sorted(imgs.rglob("*.png"))
    srv = Server("--repo", repo, "--api-key-file", d / "keys.txt", "--admin-key-file", d / "admin.txt",
                 "--max-body-mb", 1, "--timeout-ms", 10000)
    # the repository's newest version (2) is served first: make v1 active for the tests that compare with it
    st, body = srv.request("POST", "/v1/admin/models/tiny/load", json.dumps({"version": "1"}),
                           {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    assert st == 200, body
    yield srv, repo, files, d
    srv.stop()


def _predict(srv, name, f: Path, conn=None, version=None):
    path = f"/v1/models/{name}" + (f"/versions/{version}" if version else "") + "/predict?top_k=3"
    return srv.request("POST", path, f.read_bytes(), {**AUTH, "Content-Type": "image/png"}, conn=conn)


def test_predictions_equal_the_runtimes(served):
    from edgeft import runtime

    srv, repo, files, _ = served
    with runtime.load(repo / "tiny" / "1") as model:
        local = model.predict(files, top_k=3)
    for f, want in zip(files, local):
        st, body = _predict(srv, "tiny", f)
        assert st == 200 and body["version"] == "1", body
        got = body["predictions"][0]["top"]
        assert [g["label"] for g in got] == [w[0] for w in want]
        np.testing.assert_allclose([g["prob"] for g in got], [w[1] for w in want], atol=1e-5)
    # multipart upload and JSON (preprocessed tensors) give the same answer as the raw PNG body
    f = files[0]
    boundary = "edgeftboundary"
    mp = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
          f"Content-Type: image/png\r\n\r\n").encode() + f.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    st, body = srv.request("POST", "/v1/models/tiny/predict?top_k=3", mp,
                           {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert st == 200 and body["predictions"][0]["top"][0]["label"] == local[0][0][0], body
    with runtime.load(repo / "tiny" / "1") as model:
        x = model.prepare([f])["input"]
    st, body = srv.request("POST", "/v1/models/tiny/predict?top_k=3", json.dumps({"inputs": x.tolist()}),
                           {**AUTH, "Content-Type": "application/json"})
    assert st == 200 and body["predictions"][0]["top"][0]["label"] == local[0][0][0], body


def test_hostile_requests_get_json_4xx_and_the_server_stays_up(served):
    srv, _, files, _ = served
    png = files[0].read_bytes()
    cases = [
        ("garbage bytes", "POST", "/v1/models/tiny/predict", b"\x00garbage" * 100, {**AUTH, "Content-Type": "image/png"},
         400, "bad_input"),
        ("50 MB upload", "POST", "/v1/models/tiny/predict", b"\0" * (50 << 20), {**AUTH, "Content-Type": "image/png"},
         413, "payload_too_large"),
        ("wrong content type", "POST", "/v1/models/tiny/predict", png, {**AUTH, "Content-Type": "text/plain"},
         415, "unsupported_media_type"),
        ("no key", "POST", "/v1/models/tiny/predict", png, {"Content-Type": "image/png"}, 401, "unauthorized"),
        ("wrong key", "POST", "/v1/models/tiny/predict", png,
         {"Authorization": "Bearer wrong-key-0123456789", "Content-Type": "image/png"}, 403, "forbidden"),
        ("unknown model", "POST", "/v1/models/nope/predict", png, {**AUTH, "Content-Type": "image/png"}, 404,
         "not_found"),
        ("path in the model name", "POST", "/v1/models/..%2F..%2Fetc/predict", png,
         {**AUTH, "Content-Type": "image/png"}, 404, "not_found"),
        ("unknown version", "POST", "/v1/models/tiny/versions/9/predict", png, {**AUTH, "Content-Type": "image/png"},
         404, "not_found"),
        ("JSON of the wrong shape", "POST", "/v1/models/tiny/predict", json.dumps({"inputs": [[1, 2, 3]]}),
         {**AUTH, "Content-Type": "application/json"}, 400, "bad_input"),
        ("JSON not an object", "POST", "/v1/models/tiny/predict", "[1,2", {**AUTH, "Content-Type": "application/json"},
         400, "bad_input"),
        ("bad top_k", "POST", "/v1/models/tiny/predict?top_k=0", png, {**AUTH, "Content-Type": "image/png"}, 400,
         "bad_input"),
        ("admin without the admin key", "POST", "/v1/admin/models/tiny/load", json.dumps({"version": "2"}),
         {**AUTH, "Content-Type": "application/json"}, 403, "forbidden"),
        ("admin: a path as version", "POST", "/v1/admin/models/tiny/load", json.dumps({"version": "../../etc"}),
         {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}, 404, "not_found"),
        ("metrics without a key", "GET", "/metrics", None, {}, 401, "unauthorized"),
    ]
    for what, method, path, body, headers, status, kind in cases:
        st, resp = srv.request(method, path, body, headers)
        assert st == status and resp["error"]["kind"] == kind and resp["error"]["message"], (what, st, resp)
        assert srv.alive(), what
    # a 9000x9000 PNG of a few hundred KB (a decompression bomb): refused from its header, fast
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, format="PNG")
    t = time.perf_counter()
    st, resp = srv.request("POST", "/v1/models/tiny/predict", buf.getvalue(), {**AUTH, "Content-Type": "image/png"})
    assert st == 400 and "pixels is over" in resp["error"]["message"] and time.perf_counter() - t < 3, resp
    # a chunked body (no Content-Length) over the limit: 413, not 500
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    c.request("POST", "/v1/models/tiny/predict", body=(b"\0" * 65536 for _ in range(40)),
              headers={**AUTH, "Content-Type": "image/png"}, encode_chunked=True)
    r = c.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"]["kind"] == "payload_too_large"
    c.close()
    for body, ctype, what in (("[" * 100000, "application/json", "deep JSON"),
                              (png, "image/png; charset=binary", None)):
        st, resp = srv.request("POST", "/v1/models/tiny/predict?top_k=%C2%B2" if what is None else
                               "/v1/models/tiny/predict", body, {**AUTH, "Content-Type": ctype})
        assert st == 400 and resp["error"]["kind"] == "bad_input", (what, resp)
        assert srv.alive()
    st, body = _predict(srv, "tiny", files[0])          # still serving, same answers
    assert st == 200
    st, text = srv.request("GET", "/metrics", None, AUTH)
    assert st == 200 and 'edgeft_errors_total{kind="payload_too_large"} 2.0' in text
    assert 'edgeft_requests_total{model="tiny",status="415",version="1"}' in text
    assert "edgeft_request_duration_seconds_bucket" in text and "edgeft_requests_in_flight" in text


def test_hot_swap_and_rollback_under_load_fail_no_request(served):
    srv, _, files, _ = served
    stop = threading.Event()
    results: list[tuple[int, str]] = []

    def client(k):
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        i = k
        while not stop.is_set():
            st, body = _predict(srv, "tiny", files[i % len(files)], conn=c)
            results.append((st, body.get("version") if isinstance(body, dict) else None))
            i += 1
        c.close()

    ts = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    admin = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    time.sleep(1.0)
    st, body = srv.request("POST", "/v1/admin/models/tiny/load", json.dumps({"version": "2"}), admin)
    assert st == 200 and body["active_version"] == "2", body
    time.sleep(1.0)
    st, body = srv.request("POST", "/v1/admin/models/tiny/rollback", None, admin)
    assert st == 200 and body["active_version"] == "1", body
    time.sleep(1.0)
    stop.set()
    for t in ts:
        t.join()
    assert results and all(st == 200 for st, _ in results), [r for r in results if r[0] != 200][:5]
    versions = [v for _, v in results]
    assert "1" in versions and "2" in versions and versions[-1] == "1"
    st, body = srv.request("GET", "/v1/models/tiny", None, AUTH)
    assert body["active_version"] == "1"


def test_json_batches_on_a_static_batch_one_model(served):
    """OpenVINO compiled for batch 1 (no batching): a JSON body of several samples is run row by row."""
    from edgeft import runtime

    srv, repo, files, _ = served
    admin = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    with runtime.load(repo / "tiny" / "2") as model:
        x = model.prepare(files[:3])["input"]
        want = model.predict(files[:3], top_k=1)
    st, body = srv.request("POST", "/v1/models/tiny/versions/2/predict?top_k=1", json.dumps({"inputs": x.tolist()}),
                           {**AUTH, "Content-Type": "application/json"})
    if st == 404:      # version 2 not loaded at this point of the module: load it, then go back to 1
        assert srv.request("POST", "/v1/admin/models/tiny/load", json.dumps({"version": "2"}), admin)[0] == 200
        st, body = srv.request("POST", "/v1/models/tiny/versions/2/predict?top_k=1",
                               json.dumps({"inputs": x.tolist()}), {**AUTH, "Content-Type": "application/json"})
        assert srv.request("POST", "/v1/admin/models/tiny/rollback", None, admin)[0] == 200
    assert st == 200 and [p["top"][0]["label"] for p in body["predictions"]] == [w[0][0] for w in want], body


def test_a_tampered_version_is_refused_and_the_active_one_keeps_serving(served):
    srv, repo, files, _ = served
    bad = repo / "tiny" / "3"
    shutil.copytree(repo / "tiny" / "1", bad)
    with open(bad / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    admin = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    st, body = srv.request("POST", "/v1/admin/rescan", None, admin)
    assert st == 200 and "3" in body["models"]["tiny"]
    st, body = srv.request("POST", "/v1/admin/models/tiny/load", json.dumps({"version": "3"}), admin)
    assert st == 400 and "checksum" in body["error"]["message"], body
    assert _predict(srv, "tiny", files[0])[1]["version"] == "1"
    shutil.rmtree(bad)
    # a new version found by a rescan, swapped in, then rolled back (its folder already gone: loaded versions
    # are served from memory, the rollback target was kept loaded)
    good = repo / "tiny" / "4"
    shutil.copytree(repo / "tiny" / "1", good)
    assert srv.request("POST", "/v1/admin/rescan", None, admin)[0] == 200
    st, body = srv.request("POST", "/v1/admin/models/tiny/load", json.dumps({"version": "4"}), admin)
    assert st == 200 and srv.request("GET", "/v1/models/tiny", None, AUTH)[1]["active_version"] == "4", body
    shutil.rmtree(good)
    assert _predict(srv, "tiny", files[0])[1]["version"] == "4"
    st, body = srv.request("POST", "/v1/admin/models/tiny/rollback", None, admin)
    assert st == 200 and body["active_version"] == "1" and _predict(srv, "tiny", files[0])[1]["version"] == "1"


def test_dynamic_batching_forms_batches_and_changes_no_answer(tiny_run, served):
    _, repo, files, d = served
    srv = Server("tiny=" + str(repo / "tiny" / "1"), "--max-batch", 8, "--max-wait-ms", 50)
    try:
        want = {f: _predict(srv, "tiny", f)[1]["predictions"] for f in files}
        got: dict = {}

        def client(f):
            got[f] = _predict(srv, "tiny", f)[1]["predictions"]

        ts = [threading.Thread(target=client, args=(f,)) for f in files[:8]]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for f in files[:8]:
            assert got[f][0]["top"][0]["label"] == want[f][0]["top"][0]["label"]
            np.testing.assert_allclose(got[f][0]["top"][0]["prob"], want[f][0]["top"][0]["prob"], atol=1e-5)
        st, text = srv.request("GET", "/metrics")
        count = float(next(x.split()[-1] for x in text.splitlines() if x.startswith("edgeft_batch_size_count")))
        total = float(next(x.split()[-1] for x in text.splitlines() if x.startswith("edgeft_batch_size_sum")))
        assert total == len(files) + 8 and count < total, (count, total)      # some inferences ran > 1 sample
    finally:
        srv.stop()


def test_server_bench_closed_and_open_loop(served, cli, tmp_path):
    srv, _, _, d = served
    url = f"http://127.0.0.1:{srv.port}/v1/models/tiny/predict"
    r = cli("bench", "--scenario", "server", "--url", url, "--data", "digits:test", "--duration", 2, "--clients", 2,
            "--api-key-file", d / "keys.txt", "--profile", "smoke", "--out", tmp_path / "closed")
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "closed" / "result.json").read_text())
    assert res["ok"] == res["requests"] > 10 and not res["errors"] and res["latency_ms"]["p99"] > 0
    assert 0 <= res["served_top1"] <= 1 and res["served_top1_n"] == res["ok"]
    r = cli("bench", "--scenario", "server", "--url", url, "--data", "digits:test", "--duration", 2, "--qps", 20,
            "--latency-bound-ms", 5000, "--api-key-file", d / "keys.txt", "--out", tmp_path / "open")
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "open" / "result.json").read_text())
    assert res["mode"] == "open loop (Poisson)" and res["bound_held"] and 10 <= res["requests"] <= 80
    # a bound no server meets: written, exit 3
    r = cli("bench", "--scenario", "server", "--url", url, "--data", "digits:test", "--duration", 1, "--qps", 20,
            "--latency-bound-ms", 0.001, "--api-key-file", d / "keys.txt", "--out", tmp_path / "missed")
    assert r.code == 3 and "bound was missed" in r.err and (tmp_path / "missed" / "result.json").is_file()
    for args, needle in ((["--url", "http://127.0.0.1:1/v1/models/tiny/predict"], "cannot connect"),
                         (["--url", url.replace("/predict", "")], "expected http://HOST:PORT"),
                         (["--url", url, "--clients", 0], "--clients 0"),
                         (["--url", url], "refused the key")):
        r = cli("bench", "--scenario", "server", "--data", "digits:test", "--duration", 1, *args)
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, (args, r.err)
    for args, needle in ((["--qps", 0], "--qps 0"), (["--latency-bound-ms", -1], "--latency-bound-ms -1"),
                         (["--profile", "fast"], "unknown profile")):
        r = cli("bench", "--scenario", "server", "--url", url, "--data", "digits:test", "--api-key-file",
                d / "keys.txt", "--duration", 1, *args)
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, (args, r.err)
    r = cli("bench", "--url", url)
    assert r.code == 2 and "--url is for --scenario server" in r.err


def test_export_serving_writes_a_triton_repository_triton_parses(tiny_run, served, cli, tmp_path):
    pytest.importorskip("tritonclient.grpc")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    _, repo, _, _ = served
    for v, backend, files in (("1", "onnxruntime", ["1/model.onnx"]), ("2", "openvino", ["1/model.xml", "1/model.bin"])):
        r = cli("export-serving", repo / "tiny" / v, "--triton", tmp_path / "triton", "--name", f"tiny_v{v}",
                "--max-batch", 16)
        assert r.code == 0, r.err
        d = tmp_path / "triton" / f"tiny_v{v}"
        cfg = text_format.Parse((d / "config.pbtxt").read_text(), mc.ModelConfig())
        assert cfg.name == f"tiny_v{v}" and cfg.backend == backend and cfg.max_batch_size == 16
        assert [i.name for i in cfg.input] == ["input"] and list(cfg.input[0].dims) == [3, 16, 16]
        assert cfg.input[0].data_type == mc.TYPE_FP32 and list(cfg.output[0].dims) == [10]
        assert cfg.output[0].label_filename == "labels.txt" and (d / "labels.txt").read_text().count("\n") == 10
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 2000
        assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4, 8, 16]
        assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        for f in files:
            assert (d / f).is_file()
    ovms = json.loads((tmp_path / "triton" / "ovms_config.json").read_text())
    assert [c["config"]["name"] for c in ovms["model_config_list"]] == ["tiny_v1", "tiny_v2"]
    assert ovms["model_config_list"][1]["config"]["base_path"] == "/models/tiny_v2"
    r = cli("export-serving", repo / "tiny" / "1", "--triton", tmp_path / "triton", "--name", "tiny_v1")
    assert r.code == 2 and "already exists" in r.err
    r = cli("export-serving", tmp_path, "--triton", tmp_path / "t2")
    assert r.code == 2 and "manifest.json" in r.err
    r = cli("export-serving", repo / "tiny" / "1", "--triton", tmp_path / "t3", "--max-batch", 0)
    assert r.code == 2 and "--max-batch 0" in r.err and not (tmp_path / "t3").exists()
    (tmp_path / "t4").mkdir()
    (tmp_path / "t4" / "ovms_config.json").write_text("not json")
    r = cli("export-serving", repo / "tiny" / "1", "--triton", tmp_path / "t4")
    assert r.code == 2 and "not an OpenVINO Model Server config" in r.err
    assert (tmp_path / "t4" / "ovms_config.json").read_text() == "not json" and len(list((tmp_path / "t4").iterdir())) == 1


def test_serve_refuses_bad_settings_in_one_line(served, cli, tmp_path):
    _, repo, _, d = served
    b = repo / "tiny" / "1"
    (tmp_path / "short.txt").write_text("abc\n")
    for args, needle in (([b, "--host", "0.0.0.0"], "without --api-key-file"),
                         ([b, "--api-key-file", tmp_path / "short.txt"], "shorter than 16"),
                         ([b, "--api-key-file", tmp_path / "none.txt"], "cannot be read"),
                         ([b, "--max-batch", 0], "--max-batch 0"),
                         ([b, "--port", 70000], "--port 70000"),
                         ([b, "--max-body-mb", 0], "--max-body-mb 0"),
                         ([tmp_path], "not a bundle folder"),
                         ([f"bad/name={b}"], "model name"),
                         ([], "nothing to serve"),
                         (["--repo", tmp_path / "nope"], "is not a folder")):
        r = cli("serve", *args)
        assert r.code == 2 and needle in r.err and r.err.count("\n") == 1, (args, r.err)


def test_serving_side_is_torch_free(served):
    _, repo, _, _ = served
    code = ("import sys; from edgeft.serve import build; from edgeft.serve.app import create_app; "
            "import edgeft.serve.triton, edgeft.bench.server_load; "
            f"reg = build([{str(repo / 'tiny' / '1')!r}]); create_app(reg); reg.close(); "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.stdout.strip().splitlines()[-1] == "False", r.stderr[-2000:]


def test_registry_rollback_that_cannot_load_changes_nothing(served):
    from edgeft.serve.registry import Registry

    _, repo, _, _ = served
    reg = Registry()
    reg.sources = {"m": {"1": repo / "tiny" / "1", "2": repo / "tiny" / "2"}}
    try:
        reg.load("m", "1")
        reg.load("m", "2")
        assert reg.history["m"] == ["1", "2"] and set(reg.loaded["m"]) == {"1", "2"}

        def broken(name, version):
            raise OSError("disk gone")

        reg._ensure_loaded = broken
        with pytest.raises(OSError):
            reg.rollback("m")
        assert reg.active["m"] == "2" and reg.history["m"] == ["1", "2"]
    finally:
        reg.close()
