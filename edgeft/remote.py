"""``edgeft bench ART... --device ssh://user@host[:port]``: the same bench, run on the device, from the workstation.

Example::

    edgeft devices add jetson ssh://ubuntu@192.168.1.20 --identity ~/.ssh/id_ed25519
    edgeft bench runs/r18/bundles/* --device jetson --device ssh://pi@rpi5.local --profile dev

What happens per device (several ``--device`` run in parallel):

1. one SSH call probes the device: its Python, platform and which runtime packages it has;
2. edgeft itself travels as a wheel built here from the installed package (pure Python, so one wheel fits
   every device); it is unpacked into the device's work folder and run with the device's Python. A device
   whose Python lacks the runtime packages gets a virtual environment made from a wheelhouse downloaded
   *here* for *its* platform (``pip download``), so the device needs no internet;
3. bundles and the evaluation data are copied content-addressed (a re-run copies nothing new), each into a
   ``.part`` folder renamed when complete, so an interrupted copy never looks finished;
4. ``edgeft bench`` runs there (torch-free), and the result JSON, raw samples, table and plots come back.
   The result carries the device's own fingerprint; ``edgeft report`` merges machines into one table.

Transport is the system's OpenSSH client in batch mode with strict host-key checking: an unknown host key,
a refused key, a closed port or a device without Python is one clear line (exit 2), never a prompt.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import DataError, DeviceError, EdgeftError, UnsupportedError, did_you_mean
from .utils.env import config_dir
from .utils.io import atomic_write_json, build_once, cache_dir, sha256_bytes, sha256_file
from .utils.log import info

DEFAULT_WORKDIR = ".cache/edgeft-device"   # relative to the login folder on the device
CONNECT_TIMEOUT_S = 10
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_URL_RE = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>\d+))?/?$")
# what the device needs per bundle format (import names), beyond edgeft's base dependencies
_BASE_MODULES = ("numpy", "PIL", "pydantic", "typer", "rich", "yaml", "psutil", "cryptography")
_SUBDIRS = ("lib", "bundles", "data", "files", "wheels")   # what edgeft writes in the work folder
STALE_PART_MIN = 120   # a .part folder untouched this long is an interrupted copy (never a running one)


# ----------------------------------------------------------------------------------------- devices
@dataclass
class Device:
    name: str
    url: str
    identity: str | None = None       # private key file (default: the user's ssh config / agent)
    known_hosts: str | None = None    # known_hosts file (default: ~/.ssh/known_hosts)
    python: str | None = None         # Python on the device (default: python3 on its PATH)
    workdir: str | None = None        # work folder on the device (default: ~/.cache/edgeft-device)

    @property
    def user(self) -> str | None:
        return parse_url(self.url)[0]

    @property
    def host(self) -> str:
        return parse_url(self.url)[1]

    @property
    def port(self) -> int:
        return parse_url(self.url)[2]

    @property
    def wd(self) -> str:
        return self.workdir or DEFAULT_WORKDIR

    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def ssh_argv(self, command: str) -> list[str]:
        argv = [os.environ.get("EDGEFT_SSH", "ssh"), "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                "-o", "ServerAliveInterval=15", "-o", "LogLevel=ERROR"]
        if self.identity:   # ssh expands %-tokens in these paths: escape them; quote the config value
            argv += ["-i", _pct(Path(self.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            argv += ["-o", f'UserKnownHostsFile="{_pct(Path(self.known_hosts).expanduser())}"']
        return argv + ["--", self.target(), command]   # "--": a host can never be read as an option


def _pct(p: Path) -> str:
    s = str(p)
    if '"' in s:
        raise DataError(f"path {s!r} contains a double quote, which ssh cannot take", hint="rename the file")
    return s.replace("%", "%%")


def parse_url(url: str) -> tuple[str | None, str, int]:
    m = _URL_RE.match(url.strip())
    if not m:
        raise DataError(f"device {url!r} is not an ssh:// URL or a known device name",
                        hint="use ssh://USER@HOST[:PORT], or a name from `edgeft devices list` "
                             "(add one with `edgeft devices add NAME ssh://USER@HOST`)")
    port = int(m.group("port") or 22)
    user, host = m.group("user"), m.group("host").strip("[]")
    if (user or "").startswith("-") or host.startswith("-"):
        raise DataError(f"device {url!r}: a user or host name cannot start with '-'",
                        hint="use ssh://USER@HOST[:PORT] with the device's real user and address")
    if not 1 <= port <= 65535:
        raise DataError(f"device {url!r}: port {port} is out of range", hint="ports are 1-65535")
    return user, host, port


def _devices_file() -> Path:
    return config_dir() / "devices.json"


def load_devices() -> dict[str, Device]:
    p = _devices_file()
    if not p.is_file():
        return {}
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        return {n: Device(**{**d, "name": n}) for n, d in raw["devices"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{p}: unreadable device list ({type(e).__name__}: {e})",
                        hint="fix or delete the file, then `edgeft devices add` again") from None


def _save_devices(devs: dict[str, Device]) -> None:
    atomic_write_json(_devices_file(), {"schema_version": "1.0", "devices": {
        n: {k: v for k, v in asdict(d).items() if k != "name" and v is not None} for n, d in sorted(devs.items())}})


def add_device(name: str, url: str, *, identity: str | None = None, known_hosts: str | None = None,
               python: str | None = None, workdir: str | None = None, force: bool = False) -> Device:
    if not _NAME_RE.match(name):
        raise DataError(f"device name {name!r}: use letters, digits, '.', '_' or '-' (up to 64, no spaces)")
    parse_url(url)
    for opt, v in (("--identity", identity), ("--known-hosts", known_hosts)):
        if v is not None and not Path(v).expanduser().is_file():
            raise DataError(f"{opt} {v!r} does not exist", hint=f"pass an existing file for {opt}")
    if workdir is not None and (not workdir.strip() or "\n" in workdir):
        raise DataError(f"--workdir {workdir!r} is not a usable folder name")
    devs = load_devices()
    if name in devs and not force:
        raise DataError(f"device {name!r} already exists ({devs[name].url})",
                        hint="pass --force to replace it, or `edgeft devices remove` it first")
    devs[name] = Device(name, url, identity=identity and str(Path(identity).expanduser().resolve()),
                        known_hosts=known_hosts and str(Path(known_hosts).expanduser().resolve()),
                        python=python, workdir=workdir)
    _save_devices(devs)
    return devs[name]


def remove_device(name: str) -> Device:
    devs = load_devices()
    if name not in devs:
        raise DataError(f"unknown device {name!r}.{did_you_mean(name, devs)} Known: {', '.join(devs) or 'none'}")
    d = devs.pop(name)
    _save_devices(devs)
    return d


def resolve_device(spec: str) -> Device:
    """A device name from the list, or an ad-hoc ssh:// URL."""
    if spec.startswith("ssh://"):
        user, host, port = parse_url(spec)
        return Device(name=f"{host}{'' if port == 22 else f'-{port}'}", url=spec)
    devs = load_devices()
    if spec in devs:
        return devs[spec]
    raise DataError(f"unknown device {spec!r}.{did_you_mean(spec, devs)} Known: {', '.join(devs) or 'none'}",
                    hint="pass ssh://USER@HOST[:PORT], or add it: edgeft devices add NAME ssh://USER@HOST")


# --------------------------------------------------------------------------------------- transport
def ssh(dev: Device, command: str, *, stdin=None, timeout: float | None = 600, what: str = "", check: bool = True):
    """Run ``command`` (POSIX sh) on the device; its stdout, or DeviceError with the reason in one line
    (``check=False``: the CompletedProcess, for a caller that reads the remote error itself)."""
    argv = dev.ssh_argv(command)
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise DeviceError(f"no ssh client here ({argv[0]!r} not found)",
                          hint="install OpenSSH's client (Debian: apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{dev.name}: {what or 'command'} did not finish within {timeout:.0f}s",
                          hint="check the device is responsive (`edgeft devices check NAME`)") from None
    if not check:
        return p
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace")
        if stdin is not None and p.returncode != 255:
            last = next((l.strip() for l in reversed(err.strip().splitlines()) if l.strip()), "no output")
            raise DeviceError(f"{dev.name} ({dev.url}): {what} failed ({last[:160]}): the copy was interrupted or "
                              f"refused; the partial copy on the device is removed at the next connection, and nothing "
                              f"was written here", hint="check the network and the device's free disk, then run again")
        raise ssh_error(dev, p.returncode, err, what)
    return p.stdout


def ssh_error(dev: Device, rc: int, err: str, what: str = "") -> DeviceError:
    """OpenSSH's failure modes as one line each: what happened, and what to do."""
    e = " ".join(err.split())
    where = f"{dev.name} ({dev.url})"
    if rc == 255:
        if "Host key verification failed" in e or "host key is known" in e or "REMOTE HOST IDENTIFICATION" in e:
            kh = dev.known_hosts or "~/.ssh/known_hosts"
            return DeviceError(f"{where}: the device's host key is not known (or changed), so the connection was "
                               f"refused", hint=f"verify its fingerprint, then add it: ssh-keyscan -p {dev.port} "
                                                f"{dev.host} >> {kh}")
        if "Permission denied" in e:
            return DeviceError(f"{where}: the device refused the key (Permission denied)",
                               hint=f"authorize your public key there (ssh-copy-id -p {dev.port} {dev.target()}), "
                                    f"or pass the right one with `edgeft devices add ... --identity KEY`")
        if "Connection refused" in e:
            return DeviceError(f"{where}: connection refused (nothing listens on port {dev.port})",
                               hint="check the port and that sshd runs on the device")
        if "timed out" in e or "No route to host" in e or "Network is unreachable" in e:
            return DeviceError(f"{where}: unreachable ({e[:120]})", hint="check the address and the network")
        if "Could not resolve hostname" in e:
            return DeviceError(f"{where}: unknown host name {dev.host!r}", hint="check the spelling or use an IP address")
        return DeviceError(f"{where}: ssh failed ({e[:200]})", hint="try `ssh` to the device by hand to see why")
    return DeviceError(f"{where}: {what or 'remote command'} failed with exit code {rc}: {e[-300:] or 'no output'}")


def _q(s: str) -> str:
    """Quote for the remote shell; a leading ~/ stays expandable."""
    return s if s == "~" else ("~/" + shlex.quote(s[2:]) if s.startswith("~/") else shlex.quote(s))


# ------------------------------------------------------------------------------------------- probe
_PROBE = r"""
import importlib.util, json, os, platform, sys, sysconfig
wd = sys.argv[1]
mods = sys.argv[2].split(",")
lib = os.path.join(wd, "lib")
def has(m):
    try:
        return importlib.util.find_spec(m) is not None
    except Exception:
        return False
print(json.dumps({"python": list(sys.version_info[:3]), "executable": sys.executable, "machine": platform.machine(),
                  "platform": sysconfig.get_platform(), "missing": [m for m in mods if not has(m)],
                  "libs": sorted(os.listdir(lib)) if os.path.isdir(lib) else [],
                  "bundles": sorted(os.listdir(os.path.join(wd, "bundles"))) if os.path.isdir(os.path.join(wd, "bundles")) else [],
                  "data": sorted(os.listdir(os.path.join(wd, "data"))) if os.path.isdir(os.path.join(wd, "data")) else []}))
"""


def probe(dev: Device, modules: list[str], python: str | None = None) -> dict:
    py = python or dev.python or "python3"
    subs = " ".join(_q(f"{dev.wd}/{d}") for d in _SUBDIRS)
    cmd = (f"mkdir -p {subs} && find {subs} -mindepth 1 -maxdepth 1 -name '*.part-*' -mmin +{STALE_PART_MIN} "
           f"-exec rm -rf {{}} + ; "
           f"command -v {_q(py)} >/dev/null 2>&1 || {{ echo 'edgeft: no python' >&2; exit 127; }}; "
           f"{_q(py)} -c {shlex.quote(_PROBE)} {_q(dev.wd)} {','.join(modules)}")
    try:
        out = ssh(dev, cmd, timeout=60, what="probe")
    except DeviceError as e:
        if "edgeft: no python" in e.message or "exit code 127" in e.message:
            raise DeviceError(f"{dev.name} ({dev.url}): no Python at {py!r} on the device",
                              hint="install Python 3.10-3.12 there (Debian: apt-get install python3), or point "
                                   "`edgeft devices add NAME URL --python /path/to/python3` at one") from None
        raise
    try:
        res = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeviceError(f"{dev.name}: unexpected answer from the device's Python: {out[-200:]!r}") from None
    if tuple(res["python"][:2]) < (3, 10):
        raise DeviceError(f"{dev.name}: Python {'.'.join(map(str, res['python']))} at {py!r} is too old",
                          hint="edgeft needs Python >= 3.10 on the device; pass --python to a newer one")
    return res


# ------------------------------------------------------------------------------------------- wheel
def build_wheel(cache: Path | None = None) -> Path:
    """This edgeft as a pure-Python wheel, built from the installed package (no source tree, pip or network
    needed) and cached by content: what the device runs is exactly what runs here."""
    import edgeft
    from importlib import metadata

    pkg = Path(edgeft.__file__).resolve().parent
    files = sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix in (".py", ".typed", ".json", ".yaml", ".txt"))
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(pkg).as_posix().encode() + b"\0" + p.read_bytes())
    digest = h.hexdigest()[:16]
    ver = edgeft.__version__
    cache = cache or cache_dir("wheels", digest)
    whl = cache / f"edgeft-{ver}-py3-none-any.whl"
    if whl.is_file():
        return whl
    try:
        meta = metadata.distribution("edgeft").read_text("METADATA")
    except metadata.PackageNotFoundError:
        meta = None
    meta = meta or f"Metadata-Version: 2.1\nName: edgeft\nVersion: {ver}\n"
    di = f"edgeft-{ver}.dist-info"
    entries = [(f"edgeft/{p.relative_to(pkg).as_posix()}", p.read_bytes()) for p in files]
    entries += [(f"{di}/METADATA", meta.encode()),
                (f"{di}/WHEEL", b"Wheel-Version: 1.0\nGenerator: edgeft (from the installed package)\n"
                                b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
                (f"{di}/entry_points.txt", b"[console_scripts]\nedgeft = edgeft.cli:main\n")]
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},"
                     f"{len(b)}\n" for n, b in entries) + f"{di}/RECORD,,\n"
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".whl.", dir=cache)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for n, b in [*entries, (f"{di}/RECORD", record.encode())]:
                zi = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
                zi.external_attr = 0o644 << 16
                z.writestr(zi, b)
        os.replace(tmp, whl)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return whl


def _runtime_requirements(formats: set[str]) -> list[str]:
    """edgeft's base requirements plus the extras the bundles' formats need (from the installed metadata)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    extras = {"runtime"} | ({"openvino"} if "openvino" in formats else set())
    out = []
    for r in metadata.requires("edgeft") or []:
        req = Requirement(r)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
            if req.name != "edgeft":
                out.append(str(Requirement(f"{req.name}{req.specifier}")))
    return out


def _wheelhouse(res: dict, reqs: list[str]) -> Path:
    """Wheels of ``reqs`` for the device's Python and platform, downloaded here (the device needs no internet)."""
    if os.environ.get("EDGEFT_OFFLINE"):
        raise DeviceError(f"the device's Python lacks {', '.join(res['missing'])} and EDGEFT_OFFLINE=1 forbids "
                          f"downloading wheels for it here",
                          hint="install edgeft[runtime,openvino]'s dependencies on the device, point --python at an "
                               "environment that has them, or unset EDGEFT_OFFLINE")
    py = "".join(map(str, res["python"][:2]))
    arch = res["machine"]
    plats = [f"manylinux{v}_{arch}" for v in ("2014", "_2_17", "_2_28", "_2_31", "_2_34")] + [f"linux_{arch}"]
    key = sha256_bytes(json.dumps([py, plats, reqs]).encode())[:16]

    def download(tmp: Path) -> None:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", py,
               "-d", str(tmp), *sum((["--platform", p] for p in plats), []), *reqs]
        info(f"downloading wheels for the device (Python {py}, {arch}): {' '.join(reqs)}")
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise DeviceError(f"cannot download wheels for the device (Python {py}, {arch}): "
                              f"{' '.join(p.stderr.split())[-240:]}",
                              hint="install the runtime packages on the device (pip install "
                                   "'edgeft[runtime,openvino]' dependencies), or pass --python to an environment "
                                   "that has them")

    return build_once(cache_dir("wheelhouse", key), download)


def _provision_venv(dev: Device, res: dict, formats: set[str]) -> str:
    """A virtual environment on the device from wheels downloaded here for its platform; returns its Python."""
    reqs = _runtime_requirements(formats)
    wh = _wheelhouse(res, reqs)
    remote_wh = f"{dev.wd}/wheels/{wh.name}"
    info(f"{dev.name}: its Python lacks {', '.join(res['missing'])}; making {dev.wd}/venv from "
         f"{sum(1 for _ in wh.glob('*.whl'))} wheels copied from here")
    upload_dir(dev, wh, remote_wh, what="the wheelhouse")
    py, venv = dev.python or "python3", f"{dev.wd}/venv"
    remote_atomic(dev, venv, f"{_q(py)} -m venv \"$P\" && \"$P\"/bin/python -m pip install -q --no-index --find-links "
                             f"{_q(remote_wh)} {' '.join(shlex.quote(r) for r in reqs)}",
                  what="making the device environment", timeout=1800, replace=True)
    return f"{venv}/bin/python"


def remote_atomic(dev: Device, final: str, script: str, *, what: str, stdin=None, timeout: float = 600,
                  replace: bool = False) -> None:
    """Make ``final`` on the device with ``script`` working in a unique ``.part`` folder ``$P``, renamed into
    place only when the script succeeded: an interrupted step never looks finished. An existing ``final`` is
    kept (content-addressed folders) unless ``replace``."""
    part = f"{final}.part-{uuid.uuid4().hex[:12]}"
    keep = "" if replace else f"test -e {_q(final)} && exit 0; "
    ssh(dev, f"{keep}P={_q(part)}; rm -rf \"$P\" && mkdir -p \"$P\" && {script} && "
             f"{{ rm -rf {_q(final)}; mv \"$P\" {_q(final)}; }}", stdin=stdin, timeout=timeout, what=what)


# ------------------------------------------------------------------------------------------ upload
def _bundle_rel(b: Path) -> str:
    """Where a bundle sits inside its content-addressed folder: RUN/bundles/NAME keeps that tail, so the bench on
    the device names the row as the bench here does (RUN/NAME), and `edgeft report` lines machines up."""
    b = Path(b).resolve()
    return f"{b.parent.parent.name}/bundles/{b.name}" if b.parent.name == "bundles" else b.name


def upload_dir(dev: Device, src: Path, remote: str, *, what: str, sub: str = "") -> None:
    """Copy a local folder to ``remote`` (or ``remote/sub``), streamed as tar through one SSH connection into a
    ``.part`` folder renamed when complete. Links are followed (a linked dataset arrives as files)."""
    part = f"{remote}.part-{uuid.uuid4().hex[:12]}"
    cmd = (f"test -d {_q(remote)} && exit 0; P={_q(part)}; rm -rf \"$P\" && mkdir -p \"$P\" && "
           f"tar -C \"$P\" -xf - && mv \"$P\" {_q(remote)}")
    argv = dev.ssh_argv(cmd)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise DeviceError(f"no ssh client here ({argv[0]!r} not found)",
                          hint="install OpenSSH's client (Debian: apt-get install openssh-client)") from None
    err_box: list[bytes] = []
    reader = threading.Thread(target=lambda: err_box.append(proc.stderr.read()), daemon=True)
    reader.start()
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT, dereference=True) as t:
            for p in sorted(src.rglob("*")):
                if p.is_file() and not p.name.startswith("."):
                    t.add(p, arcname=(f"{sub}/" if sub else "") + p.relative_to(src).as_posix(), recursive=False)
    except (BrokenPipeError, ConnectionResetError):
        pass                # the far end stopped reading: its exit status says why
    finally:
        try:
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
    proc.stdout.read()
    rc = proc.wait()
    reader.join()
    err = (err_box[0] if err_box else b"").decode(errors="replace")
    if rc != 0:         # (a broken pipe with status 0: the device already had this folder)
        if rc == 255:
            raise ssh_error(dev, rc, err, f"copying {what}")
        last = next((l.strip() for l in reversed(err.strip().splitlines()) if l.strip()), "no output")
        raise DeviceError(f"{dev.name} ({dev.url}): copying {what} failed ({last[:160]}): the copy was interrupted "
                          f"or refused; the partial copy on the device is removed later, and nothing was written "
                          f"here", hint="check the network and the device's free disk, then run again")


def bundle_key(path: Path) -> str:
    """Content (the manifest holds every file's checksum) and place (how the row is named) of a bundle."""
    return sha256_bytes(sha256_file(Path(path) / "manifest.json").encode() + b"\0" +
                        _bundle_rel(path).encode())[:16]


def data_folder(spec: str, limit: int | None) -> tuple[Path, str]:
    """The evaluation data as a local folder to copy: a folder as is, a built-in set exported once to PNGs."""
    from .data.images import BUILTIN, export_builtin_images

    name, _, split = spec.partition(":")
    if name in BUILTIN:
        split = split or "test"

        def export(tmp: Path) -> None:
            export_builtin_images(name, tmp, split, limit)
            for c in [c for c in tmp.iterdir() if c.is_dir() and not any(c.iterdir())]:
                c.rmdir()   # a class absent from the first N images

        d = build_once(cache_dir("device-data", f"{name}-{split}-{limit or 'all'}"), export)
        return d, f"{name}:{split}" + (f" (first {limit})" if limit else "")
    p = Path(spec).expanduser()
    if not p.is_dir():
        raise DataError(f"--data {spec!r} is neither a built-in dataset ({', '.join(BUILTIN)}[:split]) nor a folder",
                        hint="pass a folder of class sub-folders (it is copied to the device)")
    return p, str(p)


def _dir_key(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            h.update(p.relative_to(d).as_posix().encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()[:16]


def check(spec: str) -> dict:
    """`edgeft devices check`: connect, and say what the device has (Python, platform, runtimes, CPU)."""
    dev = resolve_device(spec)
    res = probe(dev, [*_BASE_MODULES, "onnxruntime", "openvino", "matplotlib", "torch"])
    cpu = ssh(dev, "grep -m1 -E '^(model name|Hardware|Model)' /proc/cpuinfo || uname -m", timeout=30,
              what="reading the CPU").decode(errors="replace").split(":", 1)[-1].strip()
    return {"device": dev.name, "url": dev.url, "cpu": cpu, **res}


# --------------------------------------------------------------------------------------------- bench
_PASS = (("scenario", "--scenario"), ("profile", "--profile"), ("threads", "--threads"), ("batch", "--batch"),
         ("fps", "--fps"), ("duration", "--duration"), ("handoff", "--handoff"), ("deadline_ms", "--deadline-ms"),
         ("replay", "--replay"), ("threshold", "--threshold"))


def bench_remote(paths: list[str], cfg, devices: list[str], out: Path) -> list[dict]:
    """Run the bench on every device in parallel; returns the result documents (written under ``out``)."""
    from .bench.report import save_json

    devs = [resolve_device(s) for s in devices]
    names = [d.name for d in devs]
    if len(set(names)) != len(names):
        raise DataError(f"--device given twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}",
                        hint="each device runs the bench once; name two entries differently to use one host twice")
    bundles = _check_bundles(paths)
    if cfg.scenario == "audio_stream":
        raise UnsupportedError("--scenario audio_stream with --device is not supported yet (its streams are built "
                               "from the speech tools and LibriVox files of this machine)",
                               hint="run `edgeft bench ... --scenario audio_stream` on the device itself")
    source = None
    if cfg.source is not None and not str(cfg.source).isdigit():   # a camera index stays a camera on the device
        source = Path(cfg.source)
        if not source.is_file():
            raise DataError(f"--source {cfg.source!r} does not exist", hint="pass a video file for --source")
    data_dir, data_name = data_folder(cfg.data, cfg.data_limit)
    wheel = build_wheel()
    results: dict[str, dict] = {}
    errors: dict[str, BaseException] = {}

    def one(dev: Device) -> None:
        try:
            results[dev.name] = _bench_one(dev, bundles, cfg, data_dir, data_name, source, wheel, out / dev.name)
        except BaseException as e:  # noqa: BLE001 - reported per device below
            errors[dev.name] = e

    threads = [threading.Thread(target=one, args=(d,), daemon=True) for d in devs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in devs:
        if d.name in results:
            save_json(results[d.name], out / d.name / "result.json")
    bug = next((e for e in errors.values() if not isinstance(e, EdgeftError)), None)
    if bug is not None:
        raise bug           # a bug keeps its traceback (the other devices' results are saved)
    if errors:
        done = f" (the results of {', '.join(results)} are in {out})" if results else ""
        raise DeviceError(f"bench failed on {len(errors)} of {len(devs)} device(s): "
                          f"{'; '.join(e.one_line() for e in errors.values())}{done}")
    return [results[d.name] for d in devs]


def _check_bundles(paths: list[str]) -> list[Path]:
    from .bundle import read_manifest

    out = []
    for p in map(Path, paths):
        if not (p / "manifest.json").is_file():
            if (p / "model.json").is_file():
                raise UnsupportedError(f"{str(p)!r} is a run folder: its PyTorch reference row needs torch, which "
                                       f"device environments do not have", hint="bench run folders here, and only "
                                                                                 "bundles with --device")
            raise DataError(f"artifact {str(p)!r} is not a bundle", hint="pass bundle folders from `edgeft export`")
        read_manifest(p)   # checksums (and signatures) before copying anything
        out.append(p)
    return out


def _bench_args(cfg, remote_bundles: list[str], data: str, rdir: str, source: str | None, builtin: bool) -> list[str]:
    args = ["bench", *remote_bundles, "--data", data, "--out", rdir]
    for attr, opt in _PASS:
        v = getattr(cfg, attr)
        if v is not None and not (attr == "scenario" and v == "single_stream"):
            args += [opt, str(v)]
    if cfg.data_limit and not builtin:   # a built-in set was exported with the limit already
        args += ["--data-limit", str(cfg.data_limit)]
    if source is not None:
        args += ["--source", source]
    elif cfg.source is not None:
        args += ["--source", str(cfg.source)]
    return args + (["--allow-failed"] if cfg.allow_failed else []) + (["--allow-dvfs"] if cfg.allow_dvfs else [])


def _bench_one(dev: Device, bundles: list[Path], cfg, data_dir: Path, data_name: str, source: Path | None,
               wheel: Path, out: Path) -> dict:
    from .backends import format_backend
    from .bundle import read_manifest

    t0 = time.perf_counter()
    formats = {read_manifest(b, verify=False)["format"] for b in bundles}
    mods = list(_BASE_MODULES) + sorted({format_backend(f).package for f in formats})
    res = probe(dev, mods)
    py = dev.python or "python3"
    venv_py = f"{dev.wd}/venv/bin/python"
    if res["missing"]:
        try:                       # a venv made earlier by edgeft?
            res2 = probe(dev, mods, python=venv_py)
            if not res2["missing"]:
                res, py = res2, venv_py
        except DeviceError:
            pass
    if res["missing"]:
        py = _provision_venv(dev, res, formats)
    lib = f"{dev.wd}/lib/{wheel.parent.name}"
    if wheel.parent.name not in res["libs"]:
        info(f"{dev.name}: installing edgeft ({wheel.name}) into {lib}")
        remote_atomic(dev, lib, f"cat > \"$P\"/{wheel.name} && {_q(py)} -m zipfile -e \"$P\"/{wheel.name} \"$P\" && "
                                f"rm \"$P\"/{wheel.name}", stdin=wheel.read_bytes(), what=f"copying edgeft ({wheel.name})")
    remote_b = []
    for b in bundles:
        k = bundle_key(b)
        if k not in res["bundles"]:
            size = sum(f.stat().st_size for f in b.rglob("*") if f.is_file())
            info(f"{dev.name}: copying bundle {b} ({size / 1e6:.1f} MB)")
            upload_dir(dev, b, f"{dev.wd}/bundles/{k}", what=f"bundle {b}", sub=_bundle_rel(b))
        remote_b.append((b, f"{dev.wd}/bundles/{k}/{_bundle_rel(b)}"))
    dk = _dir_key(data_dir)
    if dk not in res["data"]:
        info(f"{dev.name}: copying data {data_name} ({sum(1 for f in data_dir.rglob('*') if f.is_file())} files)")
        upload_dir(dev, data_dir, f"{dev.wd}/data/{dk}", what=f"data {data_name}")
    remote_source = None
    if source is not None:
        fk = sha256_bytes(sha256_file(source).encode() + source.name.encode())[:16]
        tmp = Path(tempfile.mkdtemp(prefix=".edgeft-up."))
        try:
            shutil.copyfile(source, tmp / source.name)
            upload_dir(dev, tmp, f"{dev.wd}/files/{fk}", what=f"--source {source}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        remote_source = f"{dev.wd}/files/{fk}/{source.name}"
    rdir = f"{dev.wd}/runs/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    builtin = data_name.split(":")[0] in _builtin_names()
    args = _bench_args(cfg, [r for _, r in remote_b], f"{dev.wd}/data/{dk}", rdir, remote_source, builtin)
    cmd = (f"mkdir -p {_q(rdir)} && cd && PYTHONPATH={_q(lib)} EDGEFT_QUIET=1 {_q(py)} -m edgeft "
           f"{' '.join(_q(a) for a in args)}")
    info(f"{dev.name}: running edgeft bench on {res['machine']} (Python {'.'.join(map(str, res['python']))}) ...")
    p = ssh(dev, cmd, timeout=None, what="edgeft bench", check=False)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        line = next((l for l in reversed(err) if l.startswith("error: ")), None)
        if p.returncode == 2 and line:
            raise DeviceError(f"{dev.name}: {line[len('error: '):]}")
        raise ssh_error(dev, p.returncode, "\n".join(err[-5:]), "edgeft bench")
    blob = ssh(dev, f"cd {_q(rdir)} && tar -cf - .", timeout=600, what="fetching results")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch.", dir=out))
    try:
        _safe_extract(blob, tmp)
        doc = json.loads((tmp / "result.json").read_text())
        doc["remote"] = {"device": dev.name, "url": dev.url, "workdir": dev.wd, "run_dir": rdir,
                         "python": res["executable"], "platform": res["platform"],
                         "bundles": {str(b): r for b, r in remote_b}, "data": data_name,
                         "seconds_total": round(time.perf_counter() - t0, 1)}
        doc["data"]["name"] = f"{data_name} (copied to the device)"
        import numpy as np

        side = tmp / "result.samples.npz"
        if side.is_file():
            with np.load(side) as z:
                doc["_raw"] = {k.split("::", 1)[1]: z[k] for k in z.files}
        if (tmp / "plots").is_dir():
            if (out / "plots").exists():
                shutil.rmtree(out / "plots")
            os.replace(tmp / "plots", out / "plots")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return doc


def _builtin_names() -> tuple[str, ...]:
    from .data.images import BUILTIN

    return tuple(BUILTIN)


def _safe_extract(blob: bytes, dest: Path) -> None:
    """Untar the device's results: plain files and folders only, nothing outside ``dest`` (Pythons without
    tarfile's "data" filter included)."""
    with tarfile.open(fileobj=io.BytesIO(blob)) as t:
        for m in t.getmembers():
            name = Path(m.name)
            if not (m.isfile() or m.isdir()) or name.is_absolute() or ".." in name.parts:
                raise DeviceError(f"unexpected entry {m.name!r} in the results sent back by the device")
        if hasattr(tarfile, "data_filter"):
            t.extractall(dest, filter="data")
        else:   # pragma: no cover - Python < 3.10.12 / 3.11.4
            t.extractall(dest)
