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
