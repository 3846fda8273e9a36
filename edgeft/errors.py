"""Errors users can act on.

Every :class:`EdgeftError` is printed by the CLI as one line (what was given, what is valid, what to do),
without a traceback. Anything else escaping is a bug in edgeft and keeps its traceback.

Exit codes (one rule for every command, so CI can gate on them):

- 0: the command did what was asked and every check it ran passed;
- 1: a bug in edgeft (a traceback);
- 2: bad input or environment: nothing usable was produced (:class:`EdgeftError`);
- 3: the command ran to the end and wrote its outputs, but a gate or validity check failed: an accuracy gate
  (``--max-drop``), a parity check, a bench result that is not valid, a pipeline stage that failed
  (:class:`CheckFailed`; outputs are kept and marked);
- 130: interrupted (Ctrl-C); finished outputs are kept.
"""
from __future__ import annotations


class EdgeftError(Exception):
    """A user-facing error: bad input, missing data, unsupported combination, failed gate."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message.strip()
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        msg = " ".join(self.message.split())
        if self.hint:
            msg += f" — {' '.join(self.hint.split())}"
        return msg


class RecipeError(EdgeftError):
    """The recipe (YAML or --set) is invalid."""


class DataError(EdgeftError):
    """The dataset is missing, empty, corrupt or inconsistent."""


class UnknownNameError(EdgeftError):
    """A name (model, dataset, format, method...) is not registered."""


class UnsupportedError(EdgeftError):
    """A combination (format x precision, task x scenario...) is not supported."""


class BackendUnavailable(EdgeftError):
    """A backend's Python package or hardware is not available here."""


class BundleError(EdgeftError):
    """A bundle is missing files, tampered with, or was built for another device."""


class CheckFailed(EdgeftError):
    """The work was done and its outputs written, but a gate or validity check failed (exit code 3)."""

    exit_code = 3


class GateFailed(CheckFailed):
    """An accuracy gate (--max-drop) failed; the artifacts are kept but marked failed."""


class DeviceError(EdgeftError):
    """A remote device cannot be reached, refused us, or lacks what the bench needs."""


class DiskError(EdgeftError):
    """Writing an output failed: the disk is full, a quota or size limit was hit, or it is read-only."""


class RunError(EdgeftError):
    """A run directory is missing, incomplete, or incompatible with the request."""


def did_you_mean(name: str, choices, n: int = 3) -> str:
    """Return ' Did you mean: 'a', 'b'?' for close matches of ``name`` in ``choices`` (or '')."""
    import difflib

    name = str(name)
    low = name.lower()
    tokens = set(low.replace("-", "_").split("_"))
    scored = []
    for c in (str(c) for c in choices):
        cl = c.lower()
        score = difflib.SequenceMatcher(None, low, cl).ratio()
        if cl in tokens or low.startswith(cl) or cl.startswith(low):
            score = max(score, 0.9)
        elif low and (low in cl or cl in low):
            score = max(score, 0.75)
        if score >= 0.55:
            scored.append((-score, c))
    close = [c for _, c in sorted(scored)[:n]]
    return f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""


class Interrupted(Exception):
    """Ctrl-C during a resumable stage: what is on disk and how to continue (exit code 130)."""

    def __init__(self, path, epoch: int, resume_cmd: str):
        self.path, self.epoch, self.resume_cmd = str(path), epoch, resume_cmd
        super().__init__(f"interrupted; {epoch} completed epoch(s) saved in {path}")
