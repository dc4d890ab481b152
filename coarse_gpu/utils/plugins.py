"""Plugins: the user's own modules imported before a run, so their registrations (a metric, ...) exist.

A plugin is any importable module whose import registers something, e.g. ``register_metric(Metric(...))``
(coarse_gpu.evaluate.metrics). The command line imports the modules named in the environment variable
``COARSE_GPU_PLUGINS`` (comma-separated, before the config is composed) and in the config key
``plugins=[...]`` (before the config is validated); a module must be importable (on ``PYTHONPATH``,
or installed). In Python, import the module yourself.

    COARSE_GPU_PLUGINS=my_metrics coarse-gpu evaluation.metrics=[true_profit,dr,dr_share,expected,segments,mine]
    coarse-gpu plugins=[my_metrics] evaluation.metrics=[...]
"""
from __future__ import annotations

import importlib
import os
from typing import Iterable, Optional

__all__ = ["ENV", "load_plugins", "plugin_names"]

#: The environment variable listing plugin modules (comma-separated).
ENV = "COARSE_GPU_PLUGINS"


def plugin_names(names: Optional[Iterable[str]] = None, environ: Optional[dict] = None) -> list[tuple[str, str]]:
    """[(module, where it was named)] from ``COARSE_GPU_PLUGINS`` then ``names`` (the config's ``plugins``),
    each once, in that order."""
    env = os.environ if environ is None else environ
    out: list[tuple[str, str]] = []
    for name in (env.get(ENV) or "").split(","):
        if name.strip():
            out.append((name.strip(), ENV))
    for name in names or ():
        out.append((str(name).strip(), "plugins"))
    seen: set[str] = set()
    return [(n, w) for n, w in out if not (n in seen or seen.add(n))]


def load_plugins(names: Optional[Iterable[str]] = None, environ: Optional[dict] = None) -> list[str]:
    """Import every plugin module (``plugin_names``); returns their names. A module that fails to import is
    a ValueError naming it and where it was listed (an import error inside it keeps its traceback)."""
    loaded = []
    for name, where in plugin_names(names, environ):
        if not name.replace(".", "_").isidentifier():
            raise ValueError(f"{where}: {name!r} is not a module name (e.g. my_metrics or mypkg.metrics)")
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and (name == err.name or name.startswith(err.name + ".")):  # the plugin itself, not one of its imports
                raise ValueError(f"{where}: cannot import plugin module {name!r} (put its folder on PYTHONPATH "
                                 "or install it)") from None
            raise
        loaded.append(name)
    return loaded
