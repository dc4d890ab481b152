"""A baseline carries its own assignment rule for saved policies (coarse_gpu/policy/rules.py): a new
baseline registered with its rule is saved, loaded and assigns new customers as its estimator does, with
no code in policy/io.py; a baseline class that declares no rule is refused when it is defined."""
from __future__ import annotations

import numpy as np
import pytest
from test_data_file import frame, spec

from coarse_gpu.data.file import experiment_from_frame
from coarse_gpu.models import TARNet
from coarse_gpu.policy.estimator import BASELINE_CLASSES, PolicyEstimator, policy_from_segments
from coarse_gpu.policy.io import deployable, load_policy, save_policy
from coarse_gpu.policy.profit_view import as_view
from coarse_gpu.policy.rules import RULES, AssignRule, register_rule

TOY = "toy_split"


def _split(model, xb, params, p_k) -> np.ndarray:
    """Segment 1 where model-matrix column ``cut[0]`` exceeds ``cut[1]``, else 0."""
    col, thr = int(params["cut"][0]), float(params["cut"][1])
    return (np.asarray(xb, dtype=np.float64)[:, col] > thr).astype(np.int64)


@pytest.fixture
def toy_baseline():
    """A two-segment baseline (split on one covariate at its median) and its rule, registered for the test."""
    register_rule(AssignRule(TOY, _split, {"cut": ("c",)}, lambda est: {"cut": np.array([est.column, est.cut_])}))

    class ToySplit(PolicyEstimator):
        policy_name = TOY
        saved_rule = TOY
        assign_input = "X"

        def __init__(self, *, column: int = 0):
            self.column = column

        def fit(self, profit, candidates, X=None):
            X = np.asarray(X, dtype=np.float64)
            self.cut_ = float(np.median(X[:, self.column]))
            labels = (X[:, self.column] > self.cut_).astype(np.int64)
            view = as_view(profit)
            return self._set_policy(policy_from_segments(TOY, labels, view, candidates, 2, {}), candidates)

        def _assign(self, X):
            return (np.asarray(X, dtype=np.float64)[:, self.column] > self.cut_).astype(np.int64)

    yield ToySplit
    del RULES[TOY]
    del BASELINE_CLASSES[TOY]


def test_a_registered_baseline_is_saved_and_reassigns_new_customers_like_its_estimator(toy_baseline, tmp_path):
    data = experiment_from_frame(frame(600, seed=0), spec())
    model = TARNet(hidden=8, max_epochs=2, device="cpu", seed=0).fit(data.X, data.treatment, data.outcome)
    cand = data.arms
    profit = model.predict_profit(data.X, cand)
    est = toy_baseline(column=1).fit(profit, cand, data.X)
    pol = est.policy_
    assert set(np.unique(pol.assignment)) == {0, 1}
    loaded = load_policy(save_policy(tmp_path / "toy", deployable(pol, model, data, cand)))
    assert loaded.rule == TOY and loaded.method == TOY
    np.testing.assert_array_equal(loaded.params["cut"], [1.0, est.cut_])
    np.testing.assert_array_equal(loaded.assign_matrix(data.X)[0], pol.assignment)
    new = frame(300, seed=7).drop(columns=["discount", "duration_weeks", "profit"])
    X_new = loaded.feature_schema.transform(new)
    seg, prof = loaded.assign_matrix(X_new)
    np.testing.assert_array_equal(seg, est.assign(X_new))
    # the predicted profit is the model's at each customer's own segment's treatment
    np.testing.assert_allclose(prof, model.predict_profit(X_new, pol.treatments)[np.arange(len(seg)), seg])


def test_a_baseline_class_must_declare_its_saved_rule():
    with pytest.raises(TypeError, match="sets policy_name='forgetful' but declares no saved_rule"):
        class Forgetful(PolicyEstimator):  # noqa: F841
            policy_name = "forgetful"
    assert "forgetful" not in BASELINE_CLASSES


def test_a_baseline_that_declares_no_rule_is_not_saved_and_an_unregistered_rule_is_refused(toy_baseline):
    data = experiment_from_frame(frame(600, seed=1), spec())
    model = TARNet(hidden=8, max_epochs=1, device="cpu", seed=0).fit(data.X, data.treatment, data.outcome)
    cand = data.arms
    est = toy_baseline(column=0).fit(model.predict_profit(data.X, cand), cand, data.X)
    toy_baseline.saved_rule = None
    with pytest.raises(NotImplementedError,
                       match=f"no assignment rule for new customers is defined for method '{TOY}'"):
        deployable(est.policy_, model, data, cand)
    toy_baseline.saved_rule = "no_such_rule"
    with pytest.raises(ValueError, match="saved_rule='no_such_rule' is not a registered rule"):
        deployable(est.policy_, model, data, cand)
