"""Console output: logs and progress on stderr, results on stdout; ``--quiet`` silences progress.

Messages are plain text, never rich markup: they carry user data (file names, labels, paths), and a name such as
``[bold]x.png`` or ``a[/b].png`` must print as itself (only edgeft's own prefixes are styled)."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from rich.console import Console

_state = {"quiet": bool(os.environ.get("EDGEFT_QUIET"))}
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def set_quiet(q: bool) -> None:
    _state["quiet"] = q


def quiet() -> bool:
    return _state["quiet"]


def _styled(prefix: str, style: str, msg: str):
    from rich.text import Text

    return Text.assemble((prefix, style), str(msg))


def info(msg: str) -> None:
    if not _state["quiet"]:
        err.print(str(msg), markup=False)


def warn(msg: str) -> None:
    err.print(_styled("warning: ", "yellow", msg))


def result(msg: str) -> None:
    """Results always print (to stdout), quiet or not."""
    out.print(str(msg), markup=False)


def next_step(*commands: str) -> None:
    """Print the next useful command(s): every command ends with this."""
    for c in commands:
        out.print(_styled("Next: ", "bold", c))


class _NullProgress:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass

    def remove_task(self, *a, **k):
        pass


class _LineProgress:
    """Progress as plain lines for logs and CI (stderr is not a terminal): one line when a task has run for a few
    seconds, then at most one every ``every`` seconds, and a last one when it ends; nothing for short tasks."""

    def __init__(self, every: float = 10.0, first: float = 3.0):
        import time

        self._now = time.monotonic
        self.every, self.first = every, first
        self.tasks: dict[int, dict] = {}

    def add_task(self, description: str, total=None, **fields) -> int:
        i = len(self.tasks) + 1
        self.tasks[i] = {"desc": description, "total": total, "done": 0, "status": fields.get("status", ""),
                         "t0": self._now(), "last": None}
        return i

    def _line(self, t: dict, final: bool = False) -> None:
        el = self._now() - t["t0"]
        of = f"/{t['total']}" if t["total"] else ""
        pct = f" ({100 * t['done'] / t['total']:.0f}%)" if t["total"] else ""
        st = f"  {t['status']}" if t["status"] else ""
        err.print(f"{t['desc']}: {t['done']}{of}{pct}{st}  {el:.0f}s{' done' if final else ''}", markup=False)
        t["last"] = self._now()

    def update(self, i: int, advance: float = 0, completed=None, status=None, **_k) -> None:
        t = self.tasks.get(i)
        if t is None:
            return
        t["done"] = completed if completed is not None else t["done"] + advance
        if status is not None:
            t["status"] = status
        now = self._now()
        if (t["last"] is None and now - t["t0"] >= self.first) or (t["last"] is not None and now - t["last"] >= self.every):
            self._line(t)

    def advance(self, i: int, advance: float = 1) -> None:
        self.update(i, advance=advance)

    def remove_task(self, i: int) -> None:
        t = self.tasks.pop(i, None)
        if t is not None and t["last"] is not None:   # it printed progress: say it finished
            self._line(t, final=True)


@contextlib.contextmanager
def step(label: str, min_s: float = 2.0) -> Iterator[None]:
    """A step of a command: "label ..." before it, "label: N s" after it when it took longer than ``min_s``, so a
    long silent step is never mistaken for a hang (plain lines, terminal or not; nothing with --quiet)."""
    import time

    info(f"{label} ...")
    t0 = time.perf_counter()
    yield
    dt = time.perf_counter() - t0
    if dt >= min_s:
        info(f"{label}: done in {dt:.0f} s")


@contextlib.contextmanager
def progress(transient: bool = True) -> Iterator:
    """A rich Progress on a terminal; plain progress lines otherwise (logs, CI; see :class:`_LineProgress`);
    a no-op one with --quiet."""
    if _state["quiet"]:
        yield _NullProgress()
        return
    if not err.is_terminal and not os.environ.get("EDGEFT_PROGRESS"):
        lp = _LineProgress()
        yield lp
        for i in list(lp.tasks):
            lp.remove_task(i)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}", markup=False),   # descriptions carry artifact and file names
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        TimeElapsedColumn(),
        console=err,
        transient=transient,
    ) as p:
        yield p


def is_tty() -> bool:
    return sys.stdout.isatty()


@contextlib.contextmanager
def captured(label: str = "") -> Iterator[None]:
    """Silence a noisy third-party call (progress bars, warnings); replay its output if it fails."""
    import io
    import logging
    import warnings

    buf = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(buf)
    old_level = root.level
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        text = buf.getvalue().strip()
        if text:
            err.print(_styled("", "dim", f"{label} output:\n{text[-4000:]}"))
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
