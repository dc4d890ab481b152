"""The class a config's ``_target_`` names, imported with a one-line error naming the key."""
from __future__ import annotations

import importlib


def locate_class(target: str, key: str) -> type:
    """``module.Class`` -> the class; ValueError naming ``key`` (e.g. "model._target_") otherwise.

    importlib rather than ``hydra.utils.get_class``: that one also logs its failure as an ERROR over
    several lines, and a config error here is one line."""
    module, _, attr = str(target).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), attr) if module else None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{key}={target!r} is not an importable class: {err}") from None
    if not isinstance(cls, type):
        raise ValueError(f"{key}={target!r} is not an importable class (module.Class)")
    return cls


def class_path(cls: type) -> str:
    """The ``_target_`` string of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"
