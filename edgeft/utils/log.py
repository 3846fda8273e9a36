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


@contextlib.contextmanager
def progress(transient: bool = True) -> Iterator:
    """A rich Progress (or a no-op one when quiet / not a terminal and EDGEFT_PROGRESS unset)."""
    if _state["quiet"] or (not err.is_terminal and not os.environ.get("EDGEFT_PROGRESS")):
        yield _NullProgress()
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
