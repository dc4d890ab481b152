"""Plugins: modules outside coarse_gpu that register their own classes (a CATE learner, a metric, ...) on import.

``load_plugins()`` imports, once per process, the modules named in ``$COARSE_GPU_PLUGINS``
(comma-separated) and those installed packages list under the entry-point group ``coarse_gpu.plugins``
(``[project.entry-points."coarse_gpu.plugins"] my_learner = "my_package.learner"``). The registries call it
before a lookup by name, so the command line, ``model=auto`` and the loading of a saved policy (in a
fresh process) see a plugin's classes without any other step (docs/extending.md). ``load_plugins(names)``
also imports the modules of the config key ``plugins=[...]`` (the command line does so before it checks
the config, so that ``evaluation.metrics`` knows a plugin's metric).
"""
from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points
from typing import Iterable

__all__ = ["PLUGIN_ENV", "PLUGIN_GROUP", "load_plugins", "plugin_modules"]

#: Environment variable: comma-separated modules to import.
PLUGIN_ENV = "COARSE_GPU_PLUGINS"
#: Entry-point group an installed package lists its registering modules under.
PLUGIN_GROUP = "coarse_gpu.plugins"

_loaded = False


def plugin_modules() -> list[tuple[str, str]]:
    """(module, where it is listed) for every plugin, the environment variable's first."""
    listed = [(m.strip(), f"${PLUGIN_ENV}") for m in os.environ.get(PLUGIN_ENV, "").split(",") if m.strip()]
    for ep in entry_points(group=PLUGIN_GROUP):
        listed.append((ep.value.split(":")[0].strip(), f"entry point {ep.name!r} of group {PLUGIN_GROUP!r}"))
    return listed


def _import(module: str, where: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"plugin module {module!r} (listed in {where}) cannot be imported: {err}") from err


def load_plugins(names: Iterable[str] = ()) -> None:
    """Import the plugin modules (``plugin_modules``, once) and the modules ``names`` (the config key
    ``plugins``; importing one again is a no-op); an ImportError names the module and where it was listed."""
    global _loaded
    if not _loaded:
        _loaded = True  # first: a plugin's own registrations look names up, which must not re-enter
        for module, where in plugin_modules():
            try:
                _import(module, where)
            except ImportError:
                _loaded = False  # a fixed environment may try again
                raise
    for module in names:
        _import(str(module).strip(), "the config key plugins")
