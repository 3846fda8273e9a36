"""Tasks: each folder ``edgeft/tasks/<name>/`` owns everything about one task.

- ``recipe.py``: its recipe class (registered for ``task: <name>``), torch-free;
- ``device.py``: the torch-free half the runtime and the bench use: preprocessing from the manifest,
  post-processing, the metric (with its confidence interval), the parity rule, benchmark samples;
- ``task.py``: the training side: data, augmentation, model, loss, evaluation, example input, I/O spec.

``TASKS`` maps names to packages; adding a task is one folder plus one line here (or one
:func:`register_task` call for code outside edgeft). Nothing here imports torch.
"""
from __future__ import annotations

import importlib

from ..errors import UnknownNameError, did_you_mean

TASKS: dict[str, str] = {
    "image_cls": "edgeft.tasks.image_cls",
    "kws": "edgeft.tasks.kws",
    "detection": "edgeft.tasks.detection",
}


def register_task(name: str, package: str) -> None:
    if name in TASKS and TASKS[name] != package:
        raise ValueError(f"task {name!r} registered twice ({TASKS[name]} and {package})")
    TASKS[name] = package


def _package(name: str) -> str:
    if name not in TASKS:
        raise UnknownNameError(f"unknown task {name!r}.{did_you_mean(name, TASKS)} Valid: {', '.join(TASKS)}")
    return TASKS[name]


def task_names() -> list[str]:
    return list(TASKS)


def recipe_module(name: str):
    """Import the task's recipe module (it registers the recipe class)."""
    return importlib.import_module(f"{_package(name)}.recipe")


def device_task(name: str):
    """The torch-free half of a task (runtime, bench, serving)."""
    return importlib.import_module(f"{_package(name)}.device").DEVICE


def builtin_source_task(src: str | None) -> str | None:
    """The task whose built-in (offline, generated) dataset ``src`` is, or None for a folder."""
    for name in TASKS:
        try:
            if src in getattr(device_task(name), "builtin_sources", ()):
                return name
        except ImportError:
            continue
    return None


def get_task(name: str):
    """The training-side task (imports torch)."""
    return importlib.import_module(f"{_package(name)}.task").Task()
