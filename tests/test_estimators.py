"""Every model is a scikit-learn estimator (keyword-only parameters, get_params / set_params / clone),
and the network models train through the one shared Trainer (coarse_gpu.models.trainer)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, clone
from torch import nn

from coarse_gpu.models import (AutoCATE, Blend, CrossFitted, DoseLogit, DoseVC, DragonNet, DRLearner, GBSLearner,
                               GBTLearner, TARNet)
from coarse_gpu.models.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(hidden=8, n_repr_layers=1, n_head_layers=1, batch_size=64, max_epochs=4, patience=2, device="cpu",
            n_ensemble=1)
GB = dict(max_iter=10, max_leaf_nodes=4)
NETWORKS = {"tarnet": lambda **kw: TARNet(**TINY, **kw), "dragonnet": lambda **kw: DragonNet(**TINY, alpha=0.5, **kw),
            "dose_logit": lambda **kw: DoseLogit(**TINY, transforms="log1p", **kw),
            "dose_vc": lambda **kw: DoseVC(**TINY, n_basis=3, smoothness=0.1, **kw)}
MODELS = {**NETWORKS, "gb_s": lambda **kw: GBSLearner(**GB, **kw), "gb_t": lambda **kw: GBTLearner(**GB, **kw),
          "dr": lambda **kw: DRLearner(n_folds=2, **GB, **kw),
          "crossfit": lambda **kw: CrossFitted(TARNet(**TINY), n_folds=2, **kw),
          "auto": lambda **kw: AutoCATE(candidates=("gb_s", "gb_t"), n_folds=2, blend=False, **kw)}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 400
    X = rng.standard_normal((n, 3))
    t = rng.integers(0, 3, n)
    y = X[:, 0] + t * (1 + X[:, 1]) + 0.5 * rng.standard_normal(n)
    return X, t, y


def _fitted_state(model) -> list[str]:
    return sorted(k for k in vars(model) if k.endswith("_") and not k.startswith("_"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_clone_is_an_unfitted_estimator_with_equal_params(name, data):
    model = MODELS[name](seed=3)
    assert isinstance(model, BaseEstimator)
    model.fit(*data)
    assert _fitted_state(model)
    copy = clone(model)
    assert type(copy) is type(model) and not _fitted_state(copy)
    a, b = model.get_params(deep=False), copy.get_params(deep=False)
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], BaseEstimator):  # the wrapped model: a clone of its own
            assert b[k] is not a[k] and b[k].get_params() == a[k].get_params()
        else:
            assert b[k] == a[k], k
    assert "seed=3" in repr(copy)  # repr lists the parameters that differ from the defaults


def test_blend_clones_to_an_empty_blend(data):
    b = Blend.of([GBSLearner(**GB).fit(*data), GBTLearner(**GB).fit(*data)])
    copy = clone(b)
    assert copy.get_params() == b.get_params() and not _fitted_state(copy)


@pytest.mark.parametrize("make", [lambda: TARNet(64), lambda: DragonNet(64, 3), lambda: DoseLogit(64),
                                  lambda: DoseVC(64), lambda: GBSLearner(0.1), lambda: GBTLearner(0.1),
                                  lambda: DRLearner(5), lambda: AutoCATE(("gb_s",)), lambda: Blend("linear"),
                                  lambda: CrossFitted(TARNet(), 3)])
def test_positional_parameters_are_a_type_error(make):
    with pytest.raises(TypeError):
        make()


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_set_params_changes_the_fit_and_the_same_seed_reproduces_it(name, data):
    X, t, y = data
    T = np.c_[t.astype(float)] if name.startswith("dose") else t
    model = NETWORKS[name](seed=0)
    first = model.fit(X, T, y).predict_arms(X)
    other = model.set_params(seed=1).fit(X, T, y).predict_arms(X)
    assert not np.allclose(first, other)
    again = model.set_params(seed=0).fit(X, T, y).predict_arms(X)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(clone(model).fit(X, T, y).predict_arms(X), first)
    wider = model.set_params(hidden=12).fit(X, T, y)
    assert wider.n_parameters_ > clone(model).set_params(hidden=8).fit(X, T, y).n_parameters_


def test_ensemble_members_are_clones_with_their_own_seeds(data):
    m = TARNet(**{**TINY, "n_ensemble": 2}, seed=5).fit(*data)
    assert [e.seed for e in m.members_] == [5, 6] and all(e.n_ensemble == 1 for e in m.members_)
    assert all(e.get_params() == {**m.get_params(), "n_ensemble": 1, "seed": e.seed} for e in m.members_)


class HuberTARNet(TARNet):
    """A model of one's own, as in docs/models.md: TARNet with a Huber loss; training is the shared Trainer."""

    def _batch_loss(self, out, batch):
        loss = nn.functional.huber_loss(out["mu_obs"], batch["y"], delta=0.5)
        return loss, {"huber": loss}


def test_a_subclass_with_its_own_loss_trains_through_the_trainer(data):
    X, t, y = data
    base = TARNet(**TINY).fit(X, t, y)
    huber = HuberTARNet(**TINY).fit(X, t, y)
    assert huber.history_ and huber.best_epoch_ >= 1
    assert not np.allclose(huber.predict_arms(X), base.predict_arms(X))
    assert isinstance(clone(huber), HuberTARNet)


def test_trainer_on_a_plain_network():
    """The Trainer needs no CATE model: any module, a loss and metrics on dicts of row tensors."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 2, generator=gen)
    y = x @ torch.tensor([1.0, -2.0]) + 0.1 * torch.randn(600, generator=gen)
    data = {"x": x, "y": y}
    train, val = {k: v[:480] for k, v in data.items()}, {k: v[480:] for k, v in data.items()}
    torch.manual_seed(0)
    net = nn.Linear(2, 1)

    def mse(net, batch):
        return torch.mean((net(batch["x"])[:, 0] - batch["y"]) ** 2)

    trainer = Trainer(lr=0.05, weight_decay=0.0, batch_size=64, max_epochs=60, patience=5, name="linear")
    res = trainer.fit(net, mse, lambda net, b: {"val_loss": mse(net, b)}, train, val, gen)
    assert res.net is net and not res.net.training
    assert 1 <= res.best_epoch <= len(res.history) <= 60 and res.resumed_from_epoch == 0
    assert res.best_val_loss == min(h["val_loss"] for h in res.history) < 0.05
    np.testing.assert_allclose(net.weight.detach().numpy()[0], [1.0, -2.0], atol=0.1)
    # without validation rows: all epochs, the last weights
    res = Trainer(lr=0.05, weight_decay=0.0, batch_size=64, max_epochs=3, patience=1).fit(
        nn.Linear(2, 1), mse, None, train, {k: v[:0] for k, v in data.items()}, gen)
    assert len(res.history) == res.best_epoch == 3 and np.isnan(res.best_val_loss)
    with pytest.raises(ValueError, match="amp"):
        Trainer(lr=0.1, weight_decay=0.0, batch_size=8, max_epochs=1, patience=1, amp="bf16").fit(
            nn.Linear(2, 1), mse, None, train, val, gen)
