"""Tasks hold all domain knowledge (data, augmentation, preprocessing spec, metrics); stages stay generic.

``get_task(name)`` imports the task module lazily (torch is imported by the training-side tasks only).
"""
from __future__ import annotations

import importlib

from ..errors import UnknownNameError, did_you_mean

_TASKS = {"image_cls": "edgeft.tasks.image_cls:ImageClsTask", "kws": "edgeft.tasks.kws:KwsTask"}


def get_task(name: str):
    if name not in _TASKS:
        raise UnknownNameError(f"unknown task {name!r}.{did_you_mean(name, _TASKS)} Valid: {', '.join(_TASKS)}")
    mod, _, cls = _TASKS[name].partition(":")
    return getattr(importlib.import_module(mod), cls)()


def task_names() -> list[str]:
    return list(_TASKS)
