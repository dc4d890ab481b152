"""One registry of CATE learners: ``register_model`` is all a new learner needs.

One call makes a class known everywhere a learner is looked up by name:

* saving and loading fitted models (``coarse_gpu.models.serialize``: the only classes a saved policy
  may instantiate),
* the command line's ``model=<name>`` (``experiment.model_build.MODELS`` and the CLI's allowed values
  are views of this registry; a learner without a ``configs/model/<name>.yaml`` gets a config node built
  from the ``ModelConfig`` schema, ``experiment.config.register_configs``),
* ``model=auto``'s candidates (``coarse_gpu.models.select.CANDIDATES``, a view; ``candidate=True``),
* the continuous-dose learners (``dose=True``: fits raw doses, ``coarse_gpu.experiment.dose``),
* the docs' list of learners (``model_table``: name, class and its docstring's first paragraph).

Plugins: a learner outside this package registers when its module is imported. Every lookup here first
imports the modules named in ``$COARSE_GPU_PLUGINS`` and in installed packages' ``coarse_gpu.plugins``
entry points (``coarse_gpu.utils.plugins``), so ``COARSE_GPU_PLUGINS=my_learner coarse-gpu model=my`` runs
the learner ``my_learner.py`` registers (docs/extending.md).
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from coarse_gpu.models.serialize import register as register_state
from coarse_gpu.utils.plugins import load_plugins

__all__ = ["ModelEntry", "RegistryView", "get_model", "model_entries", "model_table", "register_model"]
#: A model name: what follows ``model=`` on the command line and names a config file.
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class ModelEntry:
    """One registered learner: its ``model=`` name, its class, whether ``model=auto`` may choose it
    (``candidate``), whether it fits raw doses (``dose``) and the further candidate names it serves
    (``variants``, e.g. TwoPart's ``twopart_<family>``)."""

    name: str
    cls: type
    candidate: bool = True
    dose: bool = False
    variants: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """The class path (a config's ``_target_``)."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    @property
    def summary(self) -> str:
        """The first paragraph of the class's docstring on one line (the docs' list)."""
        doc = (inspect.getdoc(self.cls) or "").split("\n\n")[0]
        return " ".join(doc.split()).rstrip(":")


_ENTRIES: dict[str, ModelEntry] = {}


def _check_class(name: str, cls: type, candidate: bool) -> None:
    """A one-line error naming what a registered learner lacks."""
    if not isinstance(cls, type):
        raise TypeError(f"register_model({name!r}, ...): expected a class, got {cls!r}")
    missing = [m for m in ("fit", "predict_arms", "predict_profit", "get_params") if not callable(getattr(cls, m, None))]
    if missing:
        raise TypeError(f"register_model({name!r}, {cls.__name__}): the class has no {missing}; a learner is a "
                        "scikit-learn estimator with fit(X, t, y, propensity=None) and predict_arms(X) "
                        "(coarse_gpu.models.arms.ArmModel gives predict_profit)")
    if candidate and "seed" not in inspect.signature(cls.__init__).parameters:
        raise TypeError(f"register_model({name!r}, {cls.__name__}): a model=auto candidate takes a 'seed' parameter "
                        "(cross-fitting sets it per fold); add it or pass candidate=False")


def register_model(name: str, cls: Optional[type] = None, *, candidate: bool = True, dose: bool = False,
                   variants: Sequence[str] = ()):
    """Make the learner ``cls`` known as ``model=<name>`` (module docstring); returns ``cls``, so it also
    decorates: ``@register_model("toy")``.

    name : lower-case letters, digits and ``_``. Registering the same class again under its name is a
        no-op; another class under a taken name is an error (a learner's name is what configs and saved
        results refer to).
    candidate : ``model=auto`` may choose it (needs a ``seed`` parameter).  dose : it fits raw doses (a
        continuously randomized treatment) as well as arms.  variants : further candidate names this
        class serves (its parameters then come from the candidate's name; see TwoPart).
    """
    if cls is None:
        return lambda c: register_model(name, c, candidate=candidate, dose=dose, variants=variants)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"register_model: name {name!r} must be lower-case letters, digits and '_' (a model= value)")
    _check_class(name, cls, candidate)
    entry = ModelEntry(name, cls, bool(candidate), bool(dose), tuple(variants))
    old = _ENTRIES.get(name)
    if old is not None and old != entry:
        raise ValueError(f"register_model: the name {name!r} is taken by {old.target}; choose another name for "
                         f"{entry.target}")
    taken = {v: e.name for e in _ENTRIES.values() for v in e.variants if e.name != name}
    clash = [v for v in (name, *entry.variants) if v in taken]
    if clash:
        raise ValueError(f"register_model: {clash} already name(s) candidates of model={taken[clash[0]]}")
    register_state(cls)
    _ENTRIES[name] = entry
    return cls


def model_entries() -> list[ModelEntry]:
    """Every registered learner, in registration order (plugins loaded first)."""
    load_plugins()
    return list(_ENTRIES.values())


def get_model(name: str) -> type:
    """The class registered as ``name``; ValueError naming it and the available names."""
    load_plugins()
    if name not in _ENTRIES:
        raise ValueError(f"model={name!r} is not a registered model; available: {sorted(_ENTRIES)}")
    return _ENTRIES[name].cls


def model_table() -> str:
    """A markdown table of the registered learners: ``model=`` name, class, its docstring's summary."""
    rows = [f"| `{e.name}` | `{e.cls.__name__}` | {e.summary} |" for e in model_entries()]
    return "\n".join(["| `model=` | class | what it is |", "| --- | --- | --- |", *rows])


class RegistryView(Mapping):
    """A read-only, live ``{name: class}`` view of the registry (the old ``MODELS`` / ``CANDIDATES``
    dicts): ``select(entry)`` gives the names an entry contributes."""

    def __init__(self, select: Callable[[ModelEntry], Sequence[str]]) -> None:
        self._select = select

    def _items(self) -> dict[str, type]:
        return {n: e.cls for e in model_entries() for n in self._select(e)}

    def __getitem__(self, name: str) -> type:
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return f"RegistryView({sorted(self._items())})"
