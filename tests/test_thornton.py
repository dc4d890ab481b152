"""Real randomized continuous-dose experiment: Thornton (2008), cash incentives to learn HIV results.

Malawi, 2004: each person was offered a randomized incentive ``tinc`` (0 to 3 dollars, 27 levels)
for collecting their HIV test result; outcome ``got`` = collected it. Data from the ``causaldata``
package (``thornton_hiv``), loaded at test time, never committed. A 1-D varying-coefficient dose
model on tinc -> got (covariates: distance to the results centre, age, HIV status) must reproduce the
empirical take-up curve: in every incentive bin, the average fitted response at the bin's own doses
lies within the 95 % confidence interval of the bin's empirical take-up. A constant (no-dose-response)
model fails the same check, so the test can fail.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

causaldata = pytest.importorskip("causaldata", reason="causaldata is not installed (pip install causaldata, "
                                 "or the [real] extra) - it ships the Thornton data")

from coarse_gpu.models import DoseVC  # noqa: E402

#: bins: no incentive, then half-dollar steps up to 3 dollars
EDGES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])


@pytest.fixture(scope="module")
def thornton():
    df = causaldata.thornton_hiv.load_pandas().data
    df = df.dropna(subset=["got", "tinc", "distvct", "age", "hiv2004"])
    X = df[["distvct", "age", "hiv2004"]].to_numpy(np.float64)
    return X, df["tinc"].to_numpy(np.float64), df["got"].to_numpy(np.float64)


def _bins(t):
    """bin 0 = no incentive (t == 0); bin k = (EDGES[k-1], EDGES[k]]."""
    return np.where(t == 0, 0, np.searchsorted(EDGES, t, side="left"))


def _bin_check(t, y, fitted):
    """(bin, n, empirical take-up, fitted mean, within the 95% CI) per incentive bin."""
    rows = []
    b = _bins(t)
    for k in np.unique(b):
        s = b == k
        e = y[s].mean()
        se = np.sqrt(max(e * (1 - e), 1e-12) / s.sum())
        f = fitted[s].mean()
        rows.append((int(k), int(s.sum()), float(e), float(f), bool(abs(f - e) <= 1.96 * se)))
    return rows


def test_dose_response_curve_matches_empirical_takeup(thornton):
    X, t, y = thornton
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m = DoseVC(hidden=32, n_repr_layers=2, n_head_layers=1, batch_size=128, max_epochs=100, patience=10,
                   lr=3e-3, n_basis=8, knots="quantile", device="cpu", seed=0).fit(X, t, y)
    finally:
        torch.set_num_threads(n)
    assert m.arms_.shape[0] == np.unique(t).shape[0] and m.grid_ is not None  # 27 doses
    doses = m.arms_[:, 0]
    fitted = m.predict_profit(X, doses)[np.arange(len(y)), np.searchsorted(doses, t)]
    rows = _bin_check(t, y, fitted)
    assert len(rows) == 7
    bad = [r for r in rows if not r[4]]
    assert not bad, f"fitted take-up outside the 95% CI in bins {bad} (all: {rows})"
    # the no-dose-response model (overall mean take-up everywhere) fails the same check
    assert not all(r[4] for r in _bin_check(t, y, np.full(len(y), y.mean())))
    # Thornton's headline: a small incentive raises take-up a lot (0.34 with none, 0.71 at 0.47 dollars)
    p = m.predict_profit(X, [0.0, 0.5])
    assert 0.25 < float((p[:, 1] - p[:, 0]).mean()) < 0.5
    # and the average curve is increasing from 0 to 1 dollar
    curve = m.predict_profit(X, np.linspace(0, 1, 6)).mean(0)
    assert np.all(np.diff(curve) > -0.01), curve
