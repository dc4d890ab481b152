"""The Python API: ``CoarsePersonalizer`` fits, assigns, evaluates, saves and reloads on a DataFrame with a
categorical column and a 2-D treatment, and its saved folder is the CLI's policy format."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coarse_gpu import CoarsePersonalizer
from coarse_gpu.data import PromotionsSimulator
from coarse_gpu.policy.io import load_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _experiment(n, seed):
    d = PromotionsSimulator(n_customers=n, seed=seed, n_noise_features=0,
                            discount_levels=(0.0, 0.2, 0.4), duration_levels=(0.0, 4.0)).sample()
    return d.features, pd.DataFrame(d.treatment, columns=list(d.space.names)), d.outcome, d


def test_fit_assign_evaluate_save_reload_on_a_dataframe_with_a_categorical_and_a_2d_treatment(tmp_path):
    X, t, y, train = _experiment(3000, 0)
    assert not pd.api.types.is_numeric_dtype(X["tier"]) and t.shape[1] == 2  # strings: one-hot encoded
    cp = CoarsePersonalizer(k=3, model="gb_t", n_folds=3, seed=0).fit(X, t, y)
    assert cp.treatments_.shape == (3, 2) and len(np.unique(cp.treatments_, axis=0)) == 3
    assert set(cp.model_selection_["candidates"]) == {"gb_t"}
    Xn, tn, yn, new = _experiment(2000, 1)
    seg = cp.assign(Xn)
    assert seg.shape == (2000,) and seg.min() >= 0 and seg.max() < 3
    p = cp.predict_profit(Xn, cp.treatments_)
    np.testing.assert_array_equal(seg, p.argmax(1))  # each new customer gets its best of the K treatments
    # the K treatments are worth more than the best single arm under the TRUE profits of new customers
    true = new.truth.profit(cp.treatments_)[np.arange(2000), seg].mean()
    assert true > new.truth.profit(new.arms).mean(0).max()
    ev = cp.evaluate(Xn, tn, yn, n_boot=200)
    assert ev["dr_ci"][0] <= ev["dr_value"] <= ev["dr_ci"][1] and sum(ev["segment_sizes"]) == 2000
    assert abs(ev["dr_value"] - true) < 4 * ev["se"]  # the DR value is unbiased for the true value
    folder = cp.save(tmp_path / "gb_t_k3")
    again = CoarsePersonalizer.load(folder)
    np.testing.assert_array_equal(again.assign(Xn), seg)
    pol = load_policy(folder)  # the CLI's format: coarse-gpu-assign reads it
    assert pol.method == "ot" and pol.k == 3 and pol.treatment_names == ["discount", "duration_weeks"]
    with pytest.raises(ValueError, match="model_params: unknown model key 'hiden'"):
        CoarsePersonalizer(model="tarnet", model_params={"hiden": 4}).fit(X, t, y)


def test_arrays_work_too_and_errors_name_the_problem():
    X, t, y, _ = _experiment(1500, 2)
    num = X.select_dtypes("number").to_numpy()
    cp = CoarsePersonalizer(k=2, model="gb_s", n_folds=2).fit(num, t.to_numpy(), y)
    assert cp.treatment_names_ == ["t0", "t1"]
    assert cp.feature_names_in_ == [f"x{j}" for j in range(num.shape[1])]
    with pytest.raises(ValueError, match="y has 10 rows but X has 1500"):
        CoarsePersonalizer(k=2).fit(num, t, y[:10])
    with pytest.raises(RuntimeError, match="not fitted"):
        CoarsePersonalizer().assign(num)
    # bad input named before any training: a date column (not one-hot encoded as 1,500 "levels"), a
    # treatment of strings, an outcome that is not finite (named by its argument, y)
    dated = X.assign(signup=pd.date_range("2020-01-01", periods=len(X)))
    with pytest.raises(ValueError, match="feature column 'signup' holds dates or durations"):
        CoarsePersonalizer(k=2, model="gb_s").fit(dated, t, y)
    with pytest.raises(ValueError, match="k=9 exceeds the 6 distinct candidate treatments"):
        CoarsePersonalizer(k=9, model="gb_s").fit(num, t, y)
    with pytest.raises(ValueError, match="treatment must be numbers"):
        CoarsePersonalizer(k=2, model="gb_s").fit(num, np.array(["a"] * len(num)), y)
    bad_y = np.where(np.arange(len(y)) == 3, np.inf, y)
    with pytest.raises(ValueError, match="outcome column 'y': 1 row\\(s\\) are inf"):
        CoarsePersonalizer(k=2, model="gb_s").fit(num, t, bad_y)


def test_a_saved_auto_policy_reloads_and_assigns_identically(tmp_path):
    X, t, y, _ = _experiment(1500, 2)
    cp = CoarsePersonalizer(k=3, model="auto", n_folds=2, seed=0,
                            model_params={"candidates": ["gb_s", "gb_t"]}).fit(X, t, y)
    sel = cp.model_selection_
    assert set(sel["candidates"]) >= {"gb_s", "gb_t"} and sel["winner"] in sel["candidates"]
    Xn = _experiment(1000, 3)[0]
    seg = cp.assign(Xn)
    again = CoarsePersonalizer.load(cp.save(tmp_path / "auto_k3"))
    np.testing.assert_array_equal(again.assign(Xn), seg)
    np.testing.assert_array_equal(again.predict_profit(Xn, cp.treatments_), cp.predict_profit(Xn, cp.treatments_))


def test_a_budget_through_the_api_holds_exactly_and_costs_what_it_saves(tmp_path):
    from coarse_gpu.discretize import budget_constraint, treatment_costs

    X, t, y, _ = _experiment(1500, 4)
    free = CoarsePersonalizer(k=3, model="gb_t", n_folds=2, seed=0).fit(X, t, y)
    spend = free.treatments_[free.assignment_, 0].mean()  # mean discount the unconstrained policy gives
    assert spend > 0.02
    budget = 0.5 * spend
    # the CLI's discretizer.budget, built from arrays: the cost of a candidate is its discount (unit costs 1, 0)
    cp = CoarsePersonalizer(k=3, model="gb_t", n_folds=2, seed=0, constraints=lambda cand: [
        budget_constraint(treatment_costs(cand, [1.0, 0.0]), budget, len(X))]).fit(X, t, y)
    assert cp.candidates_.shape[1] == 2 and np.isin(cp.treatments_[:, 0], cp.candidates_[:, 0]).all()
    given = cp.treatments_[cp.assignment_, 0].mean()
    assert given <= budget + 1e-9  # exactly within the budget, on the rows it was fitted on
    assert given >= 0.9 * budget  # and it uses it: the budget binds
    rows = cp.policy_.constraints["rows"]
    assert rows[0]["name"] == "budget" and rows[0]["dual"] > 0  # one more unit of budget buys profit
    assert load_policy(cp.save(tmp_path / "budget")).constraints["rows"][0]["hi"] == pytest.approx(budget)

