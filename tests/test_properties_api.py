"""Invariances of the Python API (``CoarsePersonalizer``): the rows of X, treatment and y are paired by
POSITION, so index labels -- shuffled, textual, shifted -- change nothing, whether the arguments are
DataFrames, Series or arrays; and new customers' columns are read by name.

A fit that paired X with treatment and y by index label would silently mispair every row of a frame
whose index is not 0..N-1 (after a ``sample``, a ``train_test_split``, a filter). Written against the
public API only, so it holds whatever the API's validation looks like. ``scripts/mutation_check.py``
plants the bugs these catch ("a1".."a4").
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from coarse_gpu import CoarsePersonalizer
from coarse_gpu.data import PromotionsSimulator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KW = dict(k=2, model="gb_s", n_folds=2, seed=0, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_openmp_thread():
    with threadpool_limits(1):  # boosted trees on a shared machine: OpenMP threads contend
        yield


def _experiment(n: int, seed: int):
    d = PromotionsSimulator(n_customers=n, seed=seed, n_noise_features=0,
                            discount_levels=(0.0, 0.2, 0.4), duration_levels=(0.0, 4.0)).sample()
    # a profit whose best treatment depends on the customer, so that the two segments differ
    app = (d.features["channel"] == "app").to_numpy()
    y = d.outcome + np.where(app, 40.0, -25.0) * d.treatment[:, 0] + np.where(app, -2.0, 2.0) * d.treatment[:, 1]
    return d.features, pd.DataFrame(d.treatment, columns=list(d.space.names)), y


@pytest.fixture(scope="module")
def base():
    X, t, y = _experiment(900, 0)
    cp = CoarsePersonalizer(**KW).fit(X, t, y)
    assert len(np.unique(cp.treatments_, axis=0)) == 2 and np.bincount(cp.assignment_).min() > 40  # a real split
    Xn, _, _ = _experiment(200, 1)
    return X, t, y, cp, Xn


def _same_fit(a: CoarsePersonalizer, b: CoarsePersonalizer, Xn: pd.DataFrame) -> None:
    np.testing.assert_array_equal(a.treatments_, b.treatments_)
    np.testing.assert_array_equal(a.assignment_, b.assignment_)
    np.testing.assert_array_equal(a.assign(Xn), b.assign(Xn))
    np.testing.assert_allclose(a.predict_profit(Xn, a.treatments_), b.predict_profit(Xn, a.treatments_))


LABELS = {"permuted": lambda n: np.random.default_rng(5).permutation(n),
          "strings": lambda n: np.array([f"cust{i:05d}" for i in range(n)])[np.random.default_rng(6).permutation(n)]}


@pytest.mark.parametrize("labels", sorted(LABELS))
@pytest.mark.parametrize("kind", ["frames", "arrays"])
def test_index_labels_of_the_arguments_change_nothing(base, labels, kind):
    """The same rows in the same order, under other index labels: the same fit, row for row."""
    X, t, y, ref, Xn = base
    idx = pd.Index(LABELS[labels](len(X)))
    Xl = X.set_axis(idx, axis=0)
    if kind == "frames":  # every argument a pandas object with the same (non-default) labels
        args = (Xl, t.set_axis(idx, axis=0), pd.Series(y, index=idx, name="profit"))
    else:  # X labelled, treatment and y plain arrays: position is the only pairing there is
        args = (Xl, t.to_numpy(), np.asarray(y))
    _same_fit(ref, CoarsePersonalizer(**KW).fit(*args), Xn)


def test_a_labelled_one_dimensional_treatment_pairs_by_position(base):
    """A 1-D treatment as a Series with shifted labels, y as a Series with the same labels."""
    X, t, y, _, Xn = base
    ref = CoarsePersonalizer(**KW).fit(X, t["discount"].to_numpy(), y)
    idx = pd.Index(np.arange(len(X))[::-1] + 10_000)
    got = CoarsePersonalizer(**KW).fit(X.set_axis(idx, axis=0), t["discount"].set_axis(idx), pd.Series(y, index=idx))
    assert got.treatment_names_ == ["discount"]
    _same_fit(ref, got, Xn)


def test_new_customers_are_read_by_column_name_and_position(base):
    _, _, _, cp, Xn = base
    ref = cp.assign(Xn)
    cols = list(Xn.columns)[::-1]
    np.testing.assert_array_equal(cp.assign(Xn[cols]), ref)
    shuffled_labels = Xn.set_axis(pd.Index(np.random.default_rng(2).permutation(len(Xn)) + 3), axis=0)
    np.testing.assert_array_equal(cp.assign(shuffled_labels), ref)  # row i's segment is row i's
