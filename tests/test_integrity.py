"""Runs and bundles users can trust: nothing lost, tampering refused, hostile input refused in one line.

Real files throughout: decompression bombs, 16-bit PNGs, traversal manifests, a full (tmpfs or size-limited)
disk, two processes racing, and fuzzed manifests and truncated bundles (hypothesis)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeft.bundle import digest, read_manifest, write_manifest
from edgeft.errors import BundleError, DataError
from edgeft.stages.export import export

from .conftest import ROOT, run_subprocess


@pytest.fixture(scope="module")
def ort_bundle(tiny_run, tmp_path_factory):
    b = tmp_path_factory.mktemp("integ") / "ort"
    export(tiny_run, format="onnxruntime", precision="fp32", out=b)
    return b


@pytest.fixture
def img(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray((np.arange(256).reshape(16, 16)).astype(np.uint8), "L").save(p)
    return p


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _redigest(b: Path, m: dict) -> None:
    """Rewrite a manifest with a valid digest: what someone who edits the folder can always do (no signature)."""
    m = {k: v for k, v in m.items() if k != "integrity"}
    m["integrity"] = {"algorithm": "sha256", "canonical": "json-sorted-compact-v1", "digest": digest(m)}
    (b / "manifest.json").write_text(json.dumps(m))


def one_line_error(r, needle=""):
    return r.code == 2 and r.err.startswith("error: ") and r.err.count("\n") == 1 and "Traceback" not in r.err \
        and needle in r.err


# ----------------------------------------------------------------------------------------------- 1. data loss
def test_force_never_replaces_a_run_or_foreign_files(cli, tiny_run, tmp_path, ort_bundle):
    run = _copy(tiny_run, tmp_path / "run")
    (run / "my_notes.txt").write_text("mine")
    before = sorted(p.name for p in run.iterdir())
    r = cli("export", run, "--format", "onnx", "--out", run, "--force")
    assert one_line_error(r, "is not an edgeft bundle") and "--force only replaces a bundle" in r.err
    assert sorted(p.name for p in run.iterdir()) == before and (run / "model.safetensors").is_file()
    user = tmp_path / "user"
    user.mkdir()
    (user / "photo.jpg").write_bytes(b"x")
    assert one_line_error(cli("export", run, "--format", "onnx", "--out", user, "--force"), "photo.jpg")
    assert (user / "photo.jpg").read_bytes() == b"x"
    b = _copy(ort_bundle, tmp_path / "b")            # a bundle with the user's file inside is not replaced either
    (b / "README.txt").write_text("mine")
    assert one_line_error(cli("export", run, "--format", "onnx", "--out", b, "--force"), "README.txt")
    (b / "README.txt").unlink()
    r = cli("export", run, "--format", "onnx", "--out", b, "--force")   # a real bundle: replaced
    assert r.code == 0, r.err
    assert read_manifest(b)["format"] == "onnx"
    assert not [p for p in b.parent.iterdir() if p.name.startswith(".")]   # no temp/lock/old folders left


# ----------------------------------------------------------------------------------------- 2. tampering
def test_edited_manifest_is_refused(cli, ort_bundle, tmp_path, img):
    b = _copy(ort_bundle, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["labels"] = list(reversed(m["labels"]))
    (b / "manifest.json").write_text(json.dumps(m))
    r = cli("predict", b, img)
    assert one_line_error(r, "was modified after export")


@pytest.mark.parametrize("evil", ["../../elsewhere/model.onnx", "/etc/shadow", "~/.ssh/id_rsa", "a\\..\\..\\b",
                                  "model.onnx/../../x"])
def test_paths_that_leave_the_bundle_are_refused(cli, ort_bundle, tmp_path, img, evil):
    b = _copy(ort_bundle, tmp_path / "b")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(b / "model.onnx", tmp_path / "elsewhere" / "model.onnx")
    m = json.loads((b / "manifest.json").read_text())
    entry = m["files"]["model.onnx"]
    m["files"] = {evil: entry}
    m["model_files"] = {"model": evil}
    _redigest(b, m)
    r = cli("predict", b, img)
    assert one_line_error(r, "points outside the bundle"), r.err
    assert "shadow" not in r.out


def test_symlink_out_of_the_bundle_is_refused(cli, ort_bundle, tmp_path, img):
    b = _copy(ort_bundle, tmp_path / "b")
    outside = tmp_path / "outside.onnx"
    shutil.move(b / "model.onnx", outside)
    (b / "model.onnx").symlink_to(outside)
    assert one_line_error(cli("predict", b, img), "is a link outside the bundle")


def test_signed_bundles_and_trusted_keys(cli, tiny_run, tmp_path, img, monkeypatch):
    monkeypatch.setenv("EDGEFT_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.delenv("EDGEFT_TRUSTED_KEYS", raising=False)
    assert cli("keygen", "--out", tmp_path / "k").code == 0
    assert cli("keygen", "--out", tmp_path / "other").code == 0
    assert oct((tmp_path / "k").stat().st_mode & 0o777) == "0o600"
    assert one_line_error(cli("keygen", "--out", tmp_path / "k"), "already exists")
    b = tmp_path / "b"
    r = cli("export", tiny_run, "--format", "onnxruntime", "--out", b, "--sign-key", tmp_path / "k")
    assert r.code == 0, r.err
    sig = read_manifest(b)["integrity"]["signature"]
    assert sig["algorithm"] == "ed25519" and len(sig["key_id"]) == 16
    assert cli("predict", b, img, "--trust", tmp_path / "k.pub").code == 0
    r = cli("predict", b, img, "--trust", tmp_path / "other.pub")
    assert one_line_error(r, f"signed by key {sig['key_id']}, which is not among your 1 trusted key(s)")
    # re-digested edit: the digest matches again, the signature does not
    m = json.loads((b / "manifest.json").read_text())
    m["labels"][0], m["labels"][1] = m["labels"][1], m["labels"][0]
    integ = m.pop("integrity")
    m["integrity"] = {**integ, "digest": digest(m)}
    (b / "manifest.json").write_text(json.dumps(m))
    assert one_line_error(cli("predict", b, img), "the signature does not verify")
    # an unsigned bundle where keys are trusted (config folder)
    u = tmp_path / "u"
    export(tiny_run, format="onnxruntime", precision="fp32", out=u)
    (tmp_path / "cfg" / "trusted_keys").mkdir(parents=True)
    shutil.copy(tmp_path / "k.pub", tmp_path / "cfg" / "trusted_keys" / "k.pub")
    assert one_line_error(cli("predict", u, img), "is not signed, and trusted keys are configured")
    assert cli("sign", u, "--key", tmp_path / "k").code == 0
    assert cli("predict", u, img).code == 0
    # an OpenSSH ed25519 key signs too; an RSA key is refused
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ssh")], check=True)
    assert cli("sign", u, "--key", tmp_path / "ssh").code == 0
    assert cli("predict", u, img, "--trust", tmp_path / "ssh.pub").code == 0
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(tmp_path / "rsa")], check=True)
    assert one_line_error(cli("sign", u, "--key", tmp_path / "rsa"), "not ed25519")
    assert one_line_error(cli("predict", u, img, "--trust", tmp_path / "nokey.pub"), "nokey.pub")


def test_a_borrowed_key_id_does_not_make_a_key_trusted(cli, tiny_run, tmp_path, img, monkeypatch):
    """An attacker signs with their own key but writes the trusted key's id into the signature block."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgeft.bundle import _raw_public, canonical_bytes, key_id

    monkeypatch.setenv("EDGEFT_CONFIG_DIR", str(tmp_path / "cfg"))
    assert cli("keygen", "--out", tmp_path / "k").code == 0
    b = tmp_path / "b"
    assert cli("export", tiny_run, "--format", "onnxruntime", "--out", b, "--sign-key", tmp_path / "k").code == 0
    m = json.loads((b / "manifest.json").read_text())
    trusted_id = m["integrity"]["signature"]["key_id"]
    m["labels"] = list(reversed(m["labels"]))
    evil = Ed25519PrivateKey.generate()
    raw = _raw_public(evil.public_key())
    body = {k: v for k, v in m.items() if k != "integrity"}
    m["integrity"] = {"algorithm": "sha256", "canonical": "json-sorted-compact-v1", "digest": digest(body),
                      "signature": {"algorithm": "ed25519", "public_key": base64.b64encode(raw).decode(),
                                    "key_id": trusted_id, "value": base64.b64encode(evil.sign(canonical_bytes(body))).decode()}}
    (b / "manifest.json").write_text(json.dumps(m))
    assert key_id(raw) != trusted_id
    r = cli("predict", b, img, "--trust", tmp_path / "k.pub")
    assert one_line_error(r), r.err


# ----------------------------------------------------------------------------------- 3. model vs manifest
def _gemm_onnx(path: Path, n_out: int, in_shape=("batch", 3, 16, 16)):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    flat = int(np.prod([d for d in in_shape[1:]]))
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((flat, n_out)).astype(np.float32), "w")
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [-1, flat])
    g = helper.make_graph([helper.make_node("Reshape", ["input", "s"], ["f"]),
                           helper.make_node("MatMul", ["f", "w"], ["logits"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])], [w, shape])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("n_out,in_shape,needle", [
    (5, ("batch", 3, 16, 16), "has 5 values per sample, but the manifest has 10 labels"),
    (20, ("batch", 3, 16, 16), "has 20 values per sample"),
    (10, ("batch", 3, 32, 32), "has shape [?, 3, 32, 32], the manifest says [?, 3, 16, 16]")])
def test_model_and_labels_that_disagree(cli, ort_bundle, tmp_path, img, n_out, in_shape, needle):
    b = _copy(ort_bundle, tmp_path / "b")
    _gemm_onnx(b / "model.onnx", n_out, in_shape)
    write_manifest(b, json.loads((b / "manifest.json").read_text()))   # checksums and digest of the new model
    assert one_line_error(cli("predict", b, img), needle)


# --------------------------------------------------------------------------------------- 4./5. images, names
def test_16_bit_png_is_scaled_not_clipped(cli, ort_bundle, tmp_path):
    from edgeft.data.images import open_image

    a8 = (np.arange(256).reshape(16, 16)).astype(np.uint8)
    Image.fromarray(a8, "L").save(tmp_path / "g8.png")
    import cv2

    cv2.imwrite(str(tmp_path / "g16.png"), a8.astype(np.uint16) * 257)      # the same picture at 16 bits
    got = np.asarray(open_image(tmp_path / "g16.png"))
    assert got.shape == (16, 16, 3) and np.abs(got[..., 0].astype(int) - a8).max() <= 1
    r8 = cli("predict", ort_bundle, tmp_path / "g8.png", "--json")
    r16 = cli("predict", ort_bundle, tmp_path / "g16.png", "--json")
    assert json.loads(r8.out)[0]["top"] == json.loads(r16.out)[0]["top"]
    f = np.full((4, 4), 0.5, np.float32)
    Image.fromarray(f, "F").save(tmp_path / "f.tiff")
    with pytest.raises(DataError, match="floating-point pixels"):
        open_image(tmp_path / "f.tiff")


def test_file_names_print_as_themselves(cli, ort_bundle, tmp_path, img):
    names = ["[bold]x.png", "a[/b].png", "[red]c[/red].png"]   # "a[/b].png": file "b].png" in folder "a["
    (tmp_path / "a[").mkdir()
    (tmp_path / "[red]c[").mkdir()
    for n in names:
        shutil.copy(img, tmp_path / n)
    r = cli("predict", ort_bundle, *[tmp_path / n for n in names])
    assert r.code == 0, r.err
    for n in names:
        assert f"{tmp_path / n}: " in r.out


# --------------------------------------------------------------------------------------------- 6. races
@pytest.mark.slow
def test_two_exports_to_one_out_at_once(tiny_run, tmp_path):
    out = tmp_path / "same"
    args = ("export", tiny_run, "--format", "openvino", "--int8", "--out", out)
    first = subprocess.Popen([sys.executable, "-m", "edgeft", *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "EDGEFT_QUIET": "1"})
    lock = tmp_path / ".same.edgeft-lock"
    for _ in range(1200):
        if lock.exists() or first.poll() is not None:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)      # hold the first export mid-way: the two overlap whatever the machine load
    try:
        second = run_subprocess(*args, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    o1, e1 = first.communicate(timeout=300)
    assert first.returncode == 0, e1
    assert second.returncode == 2 and "another edgeft process is writing" in second.stderr, second.stderr
    assert second.stderr.count("\n") == 1 and read_manifest(out)["status"] == "ok" and not lock.exists()


# ----------------------------------------------------------------------------------------- 7. tracebacks
def _bomb(path: Path):
    """A real decompression bomb: a tiny PNG that decodes to 20000 x 20000 pixels (400 MP, Pillow's limit is 89)."""
    import struct
    import zlib

    w = h = 20000
    raw = zlib.compress(b"".join(b"\x00" + bytes(w) for _ in range(64)), 9)   # the data is short; the header is not
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_decompression_bombs_are_skipped_and_counted(cli, ort_bundle, tmp_path, img, digits_folder):
    bomb = _bomb(tmp_path / "bomb.png")
    r = cli("predict", ort_bundle, img, bomb)
    assert r.code == 0 and f"{img}: " in r.out and "skipped 1 unreadable input(s)" in r.err and "decompression bomb" in r.err
    assert one_line_error(cli("predict", ort_bundle, bomb), "decompression bomb")
    data = _copy(digits_folder, tmp_path / "data")
    shutil.copy(bomb, data / "3" / "bomb.png")
    (data / "4" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    r = cli("bench", ort_bundle, "--data", data, "--profile", "smoke", "--data-limit", "400", "--out", tmp_path / "o")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    assert doc["data"]["skipped_unreadable"] >= 1 and "skipped" in r.err


def _export_on_small_disk(tiny_run, out: Path, preexec=None):
    return subprocess.run([sys.executable, "-m", "edgeft", "export", str(tiny_run), "--format", "openvino",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, preexec_fn=preexec,
                          timeout=300, env={**os.environ, "EDGEFT_QUIET": "1"})


@pytest.mark.slow
def test_disk_full_while_writing_a_bundle(tiny_run, tmp_path):
    """A real full disk: a 64 kB tmpfs (needs mount rights; skipped otherwise, the size-limit test below runs
    everywhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        r = _export_on_small_disk(tiny_run, mnt / "b")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "the disk is full" in r.stderr and "MB free there" in r.stderr
        assert "op ONNX cannot express" not in r.stderr and not list(mnt.iterdir())
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.slow
def test_file_size_limit_while_writing_a_bundle(tiny_run, tmp_path):
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # writes fail with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    r = _export_on_small_disk(tiny_run, tmp_path / "b", preexec=limit)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "the file size limit is exceeded" in r.stderr and "op ONNX cannot express" not in r.stderr
    assert not (tmp_path / "b").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".b")]


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: [m], "is a JSON list"), (lambda m: 42, "is a JSON int"),
    (lambda m: {k: v for k, v in m.items() if k != "preprocess"}, "field 'preprocess': field required"),
    (lambda m: {**m, "files": {k: {"sha256": v["sha256"]} for k, v in m["files"].items()}}, "bytes"),
    (lambda m: {**m, "format": "tflite"}, "field 'format'"),
    (lambda m: {**m, "labels": "cat,dog"}, "field 'labels'"),
    (lambda m: {**m, "schema_version": "1.0"}, "this edgeft reads 1.1")])
def test_malformed_manifests(cli, ort_bundle, tmp_path, img, mutate, needle):
    b = _copy(ort_bundle, tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    (b / "manifest.json").write_text(json.dumps(mutate(m)))
    assert one_line_error(cli("predict", b, img), needle), cli("predict", b, img).err


def test_report_on_a_result_with_wrong_types(cli, tmp_path, ort_bundle):
    r = cli("bench", ort_bundle, "--data", "digits:test", "--profile", "smoke", "--data-limit", "32", "--out",
            tmp_path / "o")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    doc["artifacts"][0]["accuracy"]["top1"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    assert one_line_error(cli("report", tmp_path / "bad.json"), "field 'artifacts.0.accuracy.top1'")
    doc["artifacts"] = "none"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    assert one_line_error(cli("report", tmp_path / "bad.json"), "artifacts")


def test_bench_checks_the_output_is_writable_before_any_work(cli, ort_bundle):
    if os.path.isdir("/sys/class") and subprocess.run(["mkdir", "/sys/edgeft-probe"], capture_output=True).returncode == 0:
        pytest.skip("/sys accepts new folders here")
    t = time.perf_counter()
    r = cli("bench", ort_bundle, "--data", "digits:test", "--out", "/sys/edgeft-out")
    assert one_line_error(r, "cannot write results under '/sys/edgeft-out'") and time.perf_counter() - t < 10
    r = run_subprocess("bench", ort_bundle, "--data", "digits:test", cwd="/sys")     # no --out: runs/bench under cwd
    assert r.returncode == 2 and "cannot write results under 'runs/bench'" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------------ 9. small things
def _default_sigint():
    """In the child: SIGINT back to its default disposition, as a terminal gives it (inside the full suite the
    pytest process has SIGINT ignored by then, and an ignored signal is inherited: Python then never raises
    KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_ctrl_c_and_a_killed_export_leave_nothing(tiny_run, tmp_path):
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "edgeft", "export", str(tiny_run), "--format", "openvino", "--int8", "--out", str(out)]
    # the signal must land mid-export; where the export finishes first (rc 0, or -2 when the signal lands during
    # interpreter shutdown) the bundle must be complete, and the next attempt signals sooner
    for delay in (0.3, 0.1, 0.0, 0.0, 0.0):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "EDGEFT_QUIET": ""}, preexec_fn=_default_sigint)
        while not any(x.name.startswith(".b.edgeft-tmp-") for x in tmp_path.iterdir()) and p.poll() is None:
            time.sleep(0.02)
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        if p.returncode == 130:
            break
        assert p.returncode in (0, -2) and (out / "manifest.json").is_file(), (p.returncode, err)
        shutil.rmtree(out)
    else:
        pytest.fail("the export always finished before SIGINT landed")
    assert err.strip().splitlines()[-1].startswith("interrupted: nothing half-written was kept"), err
    assert not out.exists() and not list(tmp_path.iterdir())
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    while not any(x.name.startswith(".b.edgeft-tmp-") for x in tmp_path.iterdir()) and p.poll() is None:
        time.sleep(0.05)
    p.kill()
    p.communicate()
    assert [x for x in tmp_path.iterdir() if x.name.startswith(".b.edgeft-tmp-")]      # SIGKILL: no cleanup possible
    r = run_subprocess("export", tiny_run, "--format", "onnx", "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["b"]                            # the next export cleaned up


def test_truncated_wav_is_refused(tmp_path):
    from edgeft.data.audio import read_wav, write_wav

    write_wav(tmp_path / "ok.wav", np.sin(np.linspace(0, 100, 16000)).astype(np.float32))
    assert read_wav(tmp_path / "ok.wav").shape == (16000,)
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError, match=r"truncated wav .* header says 32000 bytes of audio, the file holds 15978"):
        read_wav(tmp_path / "cut.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFX" + data[4:])
    with pytest.raises(DataError, match="unreadable wav .*not a WAV file"):
        read_wav(tmp_path / "junk.wav")


# --------------------------------------------------------------------------------------------------- fuzz
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=8)
FUZZ = {"accepted_garbage": 0, "tracebacks": 0, "cases": 0, "redigested_cases": 0, "redigested_ok": 0}


@pytest.fixture(scope="module", autouse=True)
def _fuzz_record(request):
    """The tally of generated cases, kept for the record: `pytest --cache-show edgeft/fuzz`."""
    yield
    if FUZZ["cases"]:
        request.config.cache.set("edgeft/fuzz", FUZZ)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate(m, path, value, delete):
    m = json.loads(json.dumps(m))
    if not path:
        return value
    cur = m
    for k in path[:-1]:
        cur = cur[k]
    if delete and isinstance(cur, dict):
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    return m


@pytest.fixture(scope="module")
def fuzz_env(ort_bundle, tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    img = d / "x.png"
    Image.fromarray(np.full((16, 16), 100, np.uint8), "L").save(img)
    orig = json.loads((ort_bundle / "manifest.json").read_text())
    return d, img, orig, sorted(set(_paths(orig)), key=str)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_fuzzed_manifests_never_traceback_nor_accept_garbage(cli, ort_bundle, fuzz_env, data):
    d, img, orig, paths = fuzz_env
    path = data.draw(st.sampled_from(paths))
    value = data.draw(JSON)
    delete = data.draw(st.booleans())
    m = _mutate(orig, path, value, delete)
    if m == orig:
        return
    b = d / "b"
    if b.exists():
        shutil.rmtree(b)
    shutil.copytree(ort_bundle, b)
    (b / "manifest.json").write_text(json.dumps(m))
    r = cli("predict", b, img, "--json")            # an edited manifest: always refused, in one line
    FUZZ["cases"] += 1
    FUZZ["tracebacks"] += "Traceback" in r.err or r.code not in (0, 2)
    FUZZ["accepted_garbage"] += r.code == 0
    assert r.code == 2 and r.err.count("\n") == 1, (path, value, r.err)
    if isinstance(m, dict) and path and path[0] != "integrity":
        _redigest(b, m)                              # the same edit by someone who recomputes the digest
        r = cli("predict", b, img, "--json")
        FUZZ["redigested_cases"] += 1
        FUZZ["redigested_ok"] += r.code == 0
        FUZZ["tracebacks"] += "Traceback" in r.err or r.code not in (0, 2)
        assert r.code in (0, 2) and (r.code == 0 or r.err.count("\n") == 1), (path, value, r.err)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_truncated_or_flipped_bundle_files_are_refused(cli, ort_bundle, fuzz_env, data):
    d, img, _, _ = fuzz_env
    b = d / "t"
    if b.exists():
        shutil.rmtree(b)
    shutil.copytree(ort_bundle, b)
    f = data.draw(st.sampled_from(sorted(p.name for p in b.iterdir())))
    raw = (b / f).read_bytes()
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        (b / f).write_bytes(raw[:cut])
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        new = raw[i] ^ data.draw(st.integers(1, 255))
        # JSON whitespace swapped for JSON whitespace leaves the same manifest (and digest): rightly accepted
        assume(not (f == "manifest.json" and raw[i] in b" \t\r\n" and new in b" \t\r\n"))
        (b / f).write_bytes(raw[:i] + bytes([new]) + raw[i + 1:])
    r = cli("predict", b, img)
    FUZZ["cases"] += 1
    FUZZ["tracebacks"] += "Traceback" in r.err
    FUZZ["accepted_garbage"] += r.code == 0
    assert r.code == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err, (f, r.err)




@pytest.mark.slow
def test_ctrl_c_works_when_the_parent_blocked_sigint(tiny_run, tmp_path):
    """A child inherits its parent's blocked-signal mask (the full test suite's process had SIGINT blocked: Ctrl-C
    stayed pending and the export finished with exit 0). The CLI unblocks SIGINT at start."""
    out = tmp_path / "b"
    cmd = [sys.executable, "-m", "edgeft", "export", str(tiny_run), "--format", "openvino", "--int8", "--out", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env={**os.environ, "EDGEFT_QUIET": ""},
                         preexec_fn=lambda: (_default_sigint(), signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})))
    while not any(x.name.startswith(".b.edgeft-tmp-") for x in tmp_path.iterdir()) and p.poll() is None:
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and not out.exists(), (p.returncode, err)


def test_ctrl_c_while_a_bundle_is_built_ends_the_process_cleanly(tmp_path):
    """From the console, Ctrl-C during a bundle build removes the unfinished bundle and its lock and exits 130 at
    once, wherever it lands (a KeyboardInterrupt raised in a callback from native code aborted the process: exit
    -6, its temporary folder left); after commit, Ctrl-C is a KeyboardInterrupt again."""
    code = f"""
import os, signal, sys, time
from pathlib import Path
import edgeft.bundle as b
b.HARD_INTERRUPT = True
w = b.BundleWriter(Path({str(tmp_path / 'b')!r}))
(w.tmp / "weights.bin").write_bytes(b"x" * 1000)
if sys.argv[1] == "commit":
    w.commit({{"schema_version": 1}})
    try:
        os.kill(os.getpid(), signal.SIGINT); time.sleep(5)
    except KeyboardInterrupt:
        print("KeyboardInterrupt after commit"); sys.exit(0)
os.kill(os.getpid(), signal.SIGINT)
time.sleep(5)
print("not interrupted")
"""
    r = subprocess.run([sys.executable, "-c", code, "build"], capture_output=True, text=True, cwd=ROOT,
                       preexec_fn=_default_sigint, timeout=60)
    assert r.returncode == 130 and r.stderr.startswith("interrupted: nothing half-written was kept"), r
    assert list(tmp_path.iterdir()) == []          # no bundle, no temporary folder, no lock file
    r = subprocess.run([sys.executable, "-c", code, "commit"], capture_output=True, text=True, cwd=ROOT,
                       preexec_fn=_default_sigint, timeout=60)
    assert r.returncode == 0 and "KeyboardInterrupt after commit" in r.stdout, r
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_calibrate_refuses_bad_arguments_before_touching_the_bundle(cli, ort_bundle, tmp_path):
    """`edgeft calibrate`'s arguments: each bad one is one line and exit 2, and the bundle is left byte for byte."""
    b = _copy(ort_bundle, tmp_path / "b")
    before = (b / "manifest.json").read_bytes()
    wav = tmp_path / "s.wav"
    from edgeft.data.audio import write_wav
    write_wav(wav, np.zeros(16000, np.float32))
    (tmp_path / "s.json").write_text('{"events": []}')
    for args, needle in (
            (["--target-fa-per-hour", "0"], "--target-fa-per-hour 0: it must be a number > 0"),
            (["--target-fa-per-hour", "inf"], "--target-fa-per-hour inf: it must be a number > 0"),
            (["--max-substitution-rate", "2"], "--max-substitution-rate 2: valid is 0 to 1"),
            (["--threads", "0"], "--threads"),
            (["--sign-key", tmp_path / "nokey"], "nokey")):
        assert one_line_error(cli("calibrate", b, "--stream", wav, *args), needle), (args, needle)
    assert one_line_error(cli("calibrate", tmp_path / "nope", "--stream", wav), "does not exist")
    assert one_line_error(cli("calibrate", b, "--stream", wav), "is a 'image_cls' bundle")
    r = cli("calibrate", b)
    assert r.code == 2 and "--stream" in r.err and r.err.count("\n") == 1, r.err
    assert (b / "manifest.json").read_bytes() == before
