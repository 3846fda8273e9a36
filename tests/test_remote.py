"""`edgeft bench --device ssh://...`: a real sshd on 127.0.0.1 (generated keys) and a device Python without torch."""
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeft.stages.export import export

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").is_file() else None)
pytestmark = pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                                reason="needs OpenSSH (server and client): apt-get install openssh-server "
                                       "(scripts/setup.sh does it as root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """sshd on 127.0.0.1:<free port>, key-only, with its own host key and a known_hosts file naming it."""
    d = tmp_path_factory.mktemp("sshd")
    host, client, other = _keygen(d / "host"), _keygen(d / "client"), _keygen(d / "other")
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host}
AuthorizedKeysFile {d}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PidFile {d}/sshd.pid
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)   # privilege separation directory
    p = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                         stderr=open(d / "sshd.log", "w"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if p.poll() is not None:
                pytest.skip(f"sshd did not start: {(d / 'sshd.log').read_text()[-300:]}")
            time.sleep(0.1)
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join((d / 'host.pub').read_text().split()[:2])}\n")
    (d / "empty_known_hosts").write_text("")
    yield {"port": port, "client": client, "other": other, "known_hosts": d / "known_hosts",
           "empty_known_hosts": d / "empty_known_hosts", "url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "dir": d}
    p.terminate()
    p.wait(10)


@pytest.fixture(scope="module")
def device_python(tmp_path_factory):
    """A separate venv that has the runtime packages (numpy, onnxruntime, openvino, ...) but no torch and no edgeft:
    what a device has. Its site-packages points at this environment's (no download) and blocks torch."""
    import site
    import sysconfig

    d = tmp_path_factory.mktemp("devpy")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(d / "venv")], check=True)
    py = d / "venv" / "bin" / "python"
    sp = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip())
    (sp / "_edgeft_no_torch.py").write_text(
        "import importlib.abc, sys\n"
        "class _NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'torchvision', 'torchaudio'):\n"
        "            raise ImportError(f'{name} is not installed on this device')\n"
        "sys.meta_path.insert(0, _NoTorch())\n")
    here = sysconfig.get_paths()["purelib"]
    assert here in site.getsitepackages() or here in sys.path
    (sp / "device_runtime.pth").write_text(f"{here}\nimport _edgeft_no_torch\n")
    r = subprocess.run([str(py), "-c", "import onnxruntime, openvino, numpy\n"
                        "try:\n import torch\nexcept ImportError: print('no torch')\n"
                        "try:\n import edgeft\nexcept ImportError: print('no edgeft')"],
                       capture_output=True, text=True, cwd=d)
    assert r.stdout.split() == ["no", "torch", "no", "edgeft"], r.stderr
    return py


@pytest.fixture
def devices(sshd, device_python, tmp_path, monkeypatch):
    """EDGEFT_CONFIG_DIR in tmp; `add(name, **kw)` registers a device on the test sshd."""
    from edgeft.remote import add_device

    monkeypatch.setenv("EDGEFT_CONFIG_DIR", str(tmp_path / "config"))

    def add(name, **kw):
        args = {"identity": str(sshd["client"]), "known_hosts": str(sshd["known_hosts"]),
                "python": str(device_python), "workdir": str(tmp_path / f"dev-{name}"), **kw}
        return add_device(name, kw.pop("url", sshd["url"]), **{k: v for k, v in args.items() if k != "url"})
    return add


@pytest.fixture(scope="module")
def two_bundles(tiny_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("rb") / "run" / "bundles"
    for fmt, prec in (("onnxruntime", "fp32"), ("openvino", "int8")):
        export(tiny_run, format=fmt, precision=prec, target="x86-avx2", out=d / f"{fmt}-{prec}")
    return [d / "onnxruntime-fp32", d / "openvino-int8"]


BENCH = ("--data", "digits:test", "--data-limit", "64", "--profile", "smoke", "--threads", "1")


def test_devices_add_list_remove_and_bad_input(cli, tmp_path, monkeypatch, sshd):
    monkeypatch.setenv("EDGEFT_CONFIG_DIR", str(tmp_path / "cfg"))
    r = cli("devices", "add", "pi", "ssh://pi@rpi5.local:2200", "--identity", sshd["client"])
    assert r.code == 0 and "device pi: ssh://pi@rpi5.local:2200" in r.out
    r = cli("devices", "list")
    assert "pi" in r.out and "ssh://pi@rpi5.local:2200" in r.out and str(sshd["client"]) in r.out
    for args, needle in [(("pi", "ssh://x@y"), "already exists"), (("b ad", "ssh://x@y"), "device name 'b ad'"),
                         (("x", "http://x"), "is not an ssh:// URL"), (("x", "ssh://h:70000"), "port 70000 is out of range"),
                         (("x", "ssh://h", "--identity", tmp_path / "nokey"), "--identity"),
                         (("x", "ssh://h", "--known-hosts", tmp_path / "nokh"), "--known-hosts")]:
        r = cli("devices", "add", *args)
        assert r.code == 2 and r.err.count("\n") == 1 and needle in r.err, (args, r.err)
    r = cli("devices", "remove", "pii")
    assert r.code == 2 and "Did you mean: 'pi'" in r.err
    assert cli("devices", "remove", "pi").code == 0 and "no devices yet" in cli("devices", "list").out
    (tmp_path / "cfg" / "devices.json").write_text("{not json")
    r = cli("devices", "list")
    assert r.code == 2 and "unreadable device list" in r.err


@pytest.mark.slow
def test_bench_on_a_device_matches_the_local_bench(cli, devices, two_bundles, tmp_path):
    dev = devices("dev1")
    r = cli("devices", "check", "dev1")
    assert r.code == 0 and "runtime packages: all present; torch absent" in r.out, r.out + r.err
    r = cli("bench", *two_bundles, *BENCH, "--out", tmp_path / "local")
    assert r.code == 0, r.err
    local = json.loads((tmp_path / "local" / "result.json").read_text())
    r = cli("-q", "bench", *two_bundles, *BENCH, "--device", "dev1", "--out", tmp_path / "remote")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "remote" / "dev1" / "result.json").read_text())
    assert (tmp_path / "remote" / "dev1" / "result.samples.npz").is_file()
    assert (tmp_path / "remote" / "dev1" / "plots").is_dir() and (tmp_path / "remote" / "result.md").is_file()
    assert doc["remote"]["device"] == "dev1" and doc["remote"]["python"] == dev.python
    assert doc["remote"]["run_dir"].startswith(dev.workdir + "/runs/") and doc["software"]["torch_imported"] is False
    assert doc["device"]["cpu_model"] and doc["device"]["hostname"]     # the fingerprint written on the device
    # the same rows, the same data, the same predictions (same runtimes on the same CPU)
    assert [a["name"] for a in doc["artifacts"]] == [a["name"] for a in local["artifacts"]]
    for a, b in zip(doc["artifacts"], local["artifacts"]):
        assert a["accuracy"]["n"] == b["accuracy"]["n"] == 64 and a["accuracy"]["top1"] == b["accuracy"]["top1"]
        assert a["latency"]["e2e"]["p50"] > 0
    # a second run copies nothing new
    r = cli("bench", *two_bundles, *BENCH, "--device", "dev1", "--out", tmp_path / "remote2")
    assert r.code == 0 and "copying" not in r.err and "installing edgeft" not in r.err, r.err
    r = cli("report", tmp_path / "local" / "result.json", tmp_path / "remote2" / "dev1" / "result.json")
    assert r.code == 0 and sum(l.startswith("| ") and "| run/openvino-int8 |" in l for l in r.out.splitlines()) == 2


@pytest.mark.slow
def test_device_python_has_no_torch(devices, two_bundles, tmp_path, cli):
    devices("dev1")
    r = cli("-q", "bench", two_bundles[0], *BENCH, "--device", "dev1", "--out", tmp_path / "o")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "o" / "dev1" / "result.json").read_text())
    assert doc["software"]["torch_imported"] is False and "torch" not in doc["remote"]["python"]


def test_connection_failures_are_one_line(cli, devices, sshd, two_bundles, tmp_path):
    devices("unknown-key", known_hosts=str(sshd["empty_known_hosts"]))
    devices("wrong-key", identity=str(sshd["other"]))
    devices("closed", url=f"ssh://{getpass.getuser()}@127.0.0.1:{_free_port()}")
    devices("no-python", python="/nonexistent/bin/python3")
    for name, needle in (("unknown-key", "host key is not known"), ("wrong-key", "refused the key"),
                         ("closed", "connection refused"), ("no-python", "no Python at '/nonexistent/bin/python3'")):
        out = tmp_path / f"o-{name}"
        r = cli("bench", two_bundles[0], *BENCH, "--device", name, "--out", out)
        assert r.code == 2 and r.err.strip().count("\n") == 0 and needle in r.err, (name, r.err)
        assert "Traceback" not in r.err and not (out / name).exists()
    r = cli("devices", "check", "wrong-key")
    assert r.code == 2 and "ssh-copy-id" in r.err


@pytest.mark.slow
def test_an_interrupted_copy_leaves_nothing_and_the_next_run_recovers(cli, devices, two_bundles, tmp_path,
                                                                      monkeypatch):
    dev = devices("cut")
    cut = tmp_path / "cut-ssh"   # the real ssh whose input stops after 20 kB: a network cut mid-copy
    cut.write_text('#!/bin/sh\nhead -c 20000 | ssh "$@"\n')
    cut.chmod(0o755)
    monkeypatch.setenv("EDGEFT_SSH", str(cut))
    r = cli("bench", *two_bundles, *BENCH, "--device", "cut", "--out", tmp_path / "o")
    assert r.code == 2 and "the copy was interrupted" in r.err and "nothing was written here" in r.err, r.err
    assert not (tmp_path / "o" / "cut").exists()
    parts = list(Path(dev.workdir).glob("*/*.part-*"))
    assert parts                                       # the half copy exists only under a .part name
    monkeypatch.delenv("EDGEFT_SSH")
    r = cli("bench", *two_bundles, *BENCH, "--device", "cut", "--out", tmp_path / "o")
    assert r.code == 0, r.err                          # a fresh copy; the recent .part is left alone (it could be
    assert all(p.exists() for p in parts)              # another bench's copy in progress) ...
    old = time.time() - 3 * 3600
    for p in parts:
        os.utime(p, (old, old))
    r = cli("bench", *two_bundles, *BENCH, "--device", "cut", "--out", tmp_path / "o2")
    assert r.code == 0, r.err                          # ... and removed once it is hours old
    assert not list(Path(dev.workdir).glob("*/*.part-*"))


@pytest.mark.slow
def test_two_devices_in_parallel_and_refusals(cli, devices, two_bundles, tmp_path, tiny_run):
    devices("a")
    devices("b")
    r = cli("-q", "bench", *two_bundles, *BENCH, "--device", "a", "--device", "b", "--out", tmp_path / "o")
    assert r.code == 0, r.err
    merged = (tmp_path / "o" / "result.md").read_text()
    rows = [l for l in merged.splitlines() if l.startswith("| ") and "| run/openvino-int8 |" in l]
    assert len(rows) == 2 and (tmp_path / "o" / "a" / "result.json").is_file()
    assert (tmp_path / "o" / "b" / "result.json").is_file()
    r = cli("bench", tiny_run, two_bundles[0], *BENCH, "--device", "a", "--out", tmp_path / "p")
    assert r.code == 2 and "is a run folder" in r.err and "needs torch" in r.err
    r = cli("bench", two_bundles[0], *BENCH, "--device", "a", "--device", "a", "--out", tmp_path / "q")
    assert r.code == 2 and "--device given twice" in r.err
    r = cli("bench", two_bundles[0], *BENCH, "--device", "ssh://nobody@", "--out", tmp_path / "r")
    assert r.code == 2 and "not an ssh:// URL" in r.err


@pytest.mark.slow
def test_hostile_device_entries_and_odd_work_folders(cli, devices, two_bundles, tmp_path, sshd):
    marker = tmp_path / "pwned"
    for url in (f"ssh://-oProxyCommand=touch${{IFS}}{marker}@127.0.0.1:{sshd['port']}", "ssh://-Fevil",
                f"ssh://user@-oProxyCommand=x:{sshd['port']}"):
        r = cli("bench", two_bundles[0], *BENCH, "--device", url, "--out", tmp_path / "o")
        assert r.code == 2 and one_line(r), r.err
        assert "cannot start with '-'" in r.err or "is not an ssh:// URL" in r.err, r.err
        assert "cannot start with '-'" in r.err or url != "ssh://-Fevil"
    r = cli("devices", "add", "evil", "ssh://-oProxyCommand=x@h")
    assert r.code == 2 and "cannot start with '-'" in r.err
    assert not marker.exists()
    odd = str(tmp_path / "work dir 'q' $(touch x) ;")     # quoting: spaces, quotes, command substitution
    devices("odd", workdir=odd)
    r = cli("-q", "bench", two_bundles[0], *BENCH, "--device", "odd", "--out", tmp_path / "o2")
    assert r.code == 0, r.err
    assert Path(odd, "bundles").is_dir() and not (Path.home() / "x").exists() and not Path("x").exists()


@pytest.mark.slow
def test_renamed_bundles_and_folder_data_with_a_limit(cli, devices, two_bundles, tmp_path, digits_folder):
    devices("d")
    r = cli("-q", "bench", two_bundles[0], *BENCH, "--device", "d", "--out", tmp_path / "o1")
    assert r.code == 0, r.err
    moved = tmp_path / "other" / "bundles" / "renamed"      # same content, another place and row name
    shutil.copytree(two_bundles[0], moved)
    r = cli("-q", "bench", moved, "--data", digits_folder, "--data-limit", "50", "--profile", "smoke",
            "--device", "d", "--out", tmp_path / "o2")
    assert r.code == 0, r.err
    doc = json.loads((tmp_path / "o2" / "d" / "result.json").read_text())
    assert doc["artifacts"][0]["name"] == "other/renamed" and doc["artifacts"][0]["accuracy"]["n"] == 50


def one_line(r) -> bool:
    return r.err.startswith("error: ") and r.err.count("\n") == 1 and "Traceback" not in r.err


def test_a_device_without_the_runtime_packages_needs_wheels_from_here(cli, devices, two_bundles, tmp_path):
    """The device's Python lacks onnxruntime & co: edgeft would make a venv there from wheels downloaded here,
    which the offline test run (EDGEFT_OFFLINE=1) forbids with a clear line."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    devices("bare", python=str(bare / "bin" / "python"))
    assert os.environ.get("EDGEFT_OFFLINE") == "1"
    r = cli("bench", two_bundles[0], *BENCH, "--device", "bare", "--out", tmp_path / "o")
    assert r.code == 2 and "lacks numpy" in r.err and "EDGEFT_OFFLINE=1 forbids" in r.err, r.err


@pytest.mark.slow
def test_optimize_times_the_candidates_on_the_device(cli, devices, tiny_run, tmp_path):
    """`edgeft optimize --device`: every candidate is timed in one bench run on the device (its fingerprint in the
    state), the report runs there too (bundles only: the device has no torch)."""
    devices("dev1")
    out = tmp_path / "o"
    r = cli("optimize", tiny_run, "--out", out, "--device", "dev1", "--backend", "onnxruntime", "--no-prune",
            "--no-qat", "--no-mixed", "--max-drop", "5", "--profile", "smoke", "--report-profile", "smoke",
            "--threads", "1")
    assert r.code == 0, r.err
    st = json.loads((out / "optimize.json").read_text())
    lat = json.loads((out / "latency" / "dev1" / "result.json").read_text())
    assert lat["remote"]["device"] == "dev1" and lat["software"]["torch_imported"] is False
    for name in ("onnxruntime-fp32", "onnxruntime-int8"):
        assert st["candidates"][name]["p50_ms"] > 0
    rep = st["report"]
    assert "chosen" in rep["rows"] and not any(n.endswith("pytorch-fp32") for n in rep["rows"])
