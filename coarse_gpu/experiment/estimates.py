"""Step 1's output (``ProfitEstimates``) and the profit oracles, re-exported from their home,
``coarse_gpu.policy.estimates`` (issue 28: the step-1 / step-2 contract is a domain type, below the app
layer, so the Python API uses it without importing the main job). The job's modules and older callers
import these names from here.

``DENSE_PROFIT_ENTRIES`` is read from its home at each access, and setting it here is an error naming
the home: ``ProfitEstimates.at_candidates`` reads the home's value at each call, so a limit patched here
would change a copy nobody reads and the run would silently stay dense. Patch
``coarse_gpu.policy.estimates.DENSE_PROFIT_ENTRIES``.
"""
from __future__ import annotations

import sys
import types

from coarse_gpu.policy import estimates as _home
from coarse_gpu.policy.estimates import (
    ArmsOracle,
    ProfitEstimates,
    first_model,
    fold_predictors,
    is_dose_model,
    oof_dose_oracle,
    oracle_rows,
)

# the names the job's modules imported before the move (pipeline, personalize, dose)
_first, _is_dose, _oof_dose_oracle = first_model, is_dose_model, oof_dose_oracle

_FORWARDED = ("DENSE_PROFIT_ENTRIES",)


class _Forwarding(types.ModuleType):
    """This module, with ``_FORWARDED`` names read from ``coarse_gpu.policy.estimates`` and not settable here."""

    def __getattr__(self, name: str):  # only called for names not defined here
        if name in _FORWARDED:
            return getattr(_home, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name in _FORWARDED:
            raise AttributeError(f"{self.__name__}.{name} is a re-export: set coarse_gpu.policy.estimates.{name} "
                                 "(ProfitEstimates.at_candidates reads it there)")
        else:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Forwarding

__all__ = ["DENSE_PROFIT_ENTRIES", "ArmsOracle", "ProfitEstimates", "first_model", "fold_predictors",  # noqa: F822
           "is_dose_model", "oof_dose_oracle", "oracle_rows"]
