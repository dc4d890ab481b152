"""coarse_gpu.policy.estimates (ProfitEstimates, the step-1 / step-2 contract) in its home below the app
layer, and coarse_gpu.experiment.estimates re-exporting it: the same objects, and the dense-size limit
patched where ``at_candidates`` reads it (patching the re-export is an error, not a silent no-op)."""
from __future__ import annotations

import numpy as np
import pytest

from coarse_gpu.discretize import FactoredProfit
from coarse_gpu.experiment import estimates as job_estimates
from coarse_gpu.policy import estimates


def _estimates(n=6, a=3):
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(n, a))
    weights = lambda T: np.eye(a)[np.asarray(T, dtype=int)[:, 0]]  # noqa: E731  candidate m = arm T[m]
    return ProfitEstimates(mu, lambda T: mu @ weights(T).T, weights, None, "held-out", weights), mu


ProfitEstimates = estimates.ProfitEstimates


def test_the_job_module_reexports_the_same_objects():
    for name in ("ProfitEstimates", "ArmsOracle", "fold_predictors", "oracle_rows"):
        assert getattr(job_estimates, name) is getattr(estimates, name)
    assert job_estimates._first is estimates.first_model  # the names the job's modules import
    assert job_estimates._oof_dose_oracle is estimates.oof_dose_oracle
    assert job_estimates.DENSE_PROFIT_ENTRIES == estimates.DENSE_PROFIT_ENTRIES == 2**26


def test_at_candidates_reads_the_limit_at_its_home(monkeypatch):
    est, mu = _estimates()
    cand = np.array([[2], [0]])
    dense = est.at_candidates(cand)
    assert isinstance(dense, np.ndarray)
    np.testing.assert_array_equal(dense, mu[:, [2, 0]])
    monkeypatch.setattr(estimates, "DENSE_PROFIT_ENTRIES", 11)  # 6 x 2 = 12 entries: above it
    assert job_estimates.DENSE_PROFIT_ENTRIES == 11  # the re-export reads the home
    fac = est.at_candidates(cand)
    assert isinstance(fac, FactoredProfit)
    np.testing.assert_array_equal(fac.V @ fac.W.T, dense)


def test_setting_the_limit_on_the_reexport_names_the_home():
    with pytest.raises(AttributeError, match="set coarse_gpu.policy.estimates.DENSE_PROFIT_ENTRIES"):
        job_estimates.DENSE_PROFIT_ENTRIES = 1000
    assert estimates.DENSE_PROFIT_ENTRIES == 2**26
