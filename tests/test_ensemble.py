"""The batched ensemble trainer (coarse_gpu.models.ensemble) against the sequential Trainer."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from coarse_gpu.models import CrossFitted, DoseVC, DragonNet, TARNet
from coarse_gpu.models.ensemble import BatchedTrainer, TrainJob, _BatchedAdamW, fit_batched
from coarse_gpu.models.serialize import from_state, to_state
from coarse_gpu.models.trainer import training_hook

FAST = dict(hidden=16, n_repr_layers=2, n_head_layers=2, device="cpu", batch_size=64, n_ensemble=1)


@pytest.fixture(autouse=True)
def _one_batch(one_torch_thread, monkeypatch):
    """Every member in one batched module (on a 2-core machine fit_batched would split them in two)."""
    from coarse_gpu.models import ensemble

    monkeypatch.setattr(ensemble, "usable_cpus", lambda: 1)
    yield


def _data(n: int, n_arms: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    arm = rng.integers(0, n_arms, n)
    y = X[:, 0] + arm * X[:, 1] + 0.5 * rng.standard_normal(n)
    return X, arm.astype(float), y


def _assert_same_fit(a, b, tol=2e-5):
    """The same training run: the same epochs, validation losses, best epoch and predictions."""
    ha, hb = [h["val_loss"] for h in a.history_], [h["val_loss"] for h in b.history_]
    assert len(ha) == len(hb)
    np.testing.assert_allclose(hb, ha, rtol=tol, atol=tol)
    assert a.best_epoch_ == b.best_epoch_
    X = np.random.default_rng(9).standard_normal((50, 4))
    np.testing.assert_allclose(b.predict_arms(X), a.predict_arms(X), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls,n_arms,extra", [
    (TARNet, 2, {}),                       # separate heads (the dense gather path under vmap)
    (TARNet, 5, {"ema": 0.9}),             # conditioned head, EMA weights validated and returned
    (DragonNet, 3, {}),                    # propensity head + targeted regularization
    (DoseVC, 4, {"n_basis": 3}),           # a dose network: the "arm" slot holds doses
])
def test_batched_equals_sequential_members(cls, n_arms, extra):
    """Members fitted in one batched module equal the same models fitted one by one: same initial
    weights (each model builds its own), same batches (each draws its own permutations), so the same
    histories and networks up to float rounding. Different row counts per member exercise the ragged
    last batch; patience=2 with 12 epochs makes early stopping end members at different epochs."""
    X, t, y = _data(700, n_arms)
    rows = [np.arange(0, 600), np.arange(90, 700), np.arange(30, 650)]
    params = dict(FAST, max_epochs=12, patience=2, **extra)
    make = lambda: [cls(seed=s, **params) for s in range(len(rows))]  # noqa: E731
    data = [(X[r], t[r], y[r], None) for r in rows]
    sequential = [m.fit(X[r], t[r], y[r]) for m, r in zip(make(), rows)]
    batched = fit_batched(make(), data)
    for a, b in zip(sequential, batched):
        _assert_same_fit(a, b)


def test_nested_ensembles_train_in_one_batch():
    """A fold model that is itself an ensemble (n_ensemble=2) records both members' runs; all four
    networks of two such models go through one BatchedTrainer and come out as the sequential fits."""
    X, t, y = _data(500, 3)
    params = dict(FAST, n_ensemble=2, max_epochs=3)
    runs = []
    with training_hook(lambda *a: runs.append(a) or _stub(a)):
        TARNet(seed=0, **params).fit(X, t, y)
    assert len(runs) == 2
    seq = [TARNet(seed=s, **params).fit(X, t, y) for s in (0, 7)]
    bat = fit_batched([TARNet(seed=s, **params) for s in (0, 7)], [(X, t, y, None)] * 2)
    for a, b in zip(seq, bat):
        for ma, mb in zip(a.members_, b.members_):
            _assert_same_fit(ma, mb)


def _stub(args):
    from coarse_gpu.models.trainer import TrainResult

    return TrainResult(net=args[1], history=args[7], best_epoch=0, best_val_loss=float("nan"))


def _jobs(models, data):
    jobs = []

    def record(trainer, net, loss, metrics, train, val, generator, history):
        jobs.append(TrainJob(trainer, net, loss, metrics, train, val, generator, history, train["x"].shape[0]))
        return _stub((trainer, net, loss, metrics, train, val, generator, history))

    with training_hook(record):
        for m, (X, t, y) in zip(models, data):
            m.fit(X, t, y)
    return jobs


def test_early_stopping_freezes_exactly_the_stalled_members():
    """Member 0 learns pure noise (its validation loss stalls at once), member 1 a strong signal (it
    keeps improving): member 0 stops after ``patience`` stale epochs and takes no optimizer step after,
    member 1 trains on; each stops exactly when its sequential twin does."""
    rng = np.random.default_rng(1)
    n = 600
    X = rng.standard_normal((n, 4))
    t = rng.integers(0, 2, n).astype(float)
    noise = rng.standard_normal(n)
    signal = 3 * np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(n)
    params = dict(FAST, max_epochs=25, patience=3, lr=3e-3)
    data = [(X, t, noise), (X, t, signal)]
    jobs = _jobs([TARNet(seed=s, **params) for s in (0, 1)], data)
    bt = BatchedTrainer(jobs)
    results = bt.run()
    epochs = [len(r.history) for r in results]
    seq = [TARNet(seed=s, **params).fit(*d) for s, d in zip((0, 1), data)]
    assert epochs == [len(m.history_) for m in seq]
    assert epochs[0] < epochs[1]
    val = [h["val_loss"] for h in results[0].history]
    best = int(np.argmin(val)) + 1
    assert epochs[0] == best + 3  # stopped after exactly `patience` epochs without improvement
    assert results[0].best_epoch == best
    n_batches = [bt.trainer._batch_plan(j.n_train, 0, 1)[3] for j in jobs]
    assert bt.steps_ == [e * nb for e, nb in zip(epochs, n_batches)]  # no step after a member stopped


@pytest.mark.parametrize("n_threads", [1, 2])
def test_a_member_never_sees_its_held_out_fold(n_threads, monkeypatch):
    """Fold 0's model is the same whatever the outcomes of fold 0's rows are (replaced by huge values),
    while the other folds' models, which train on those rows, change: no row of a member's own
    held-out fold reaches its training, scaling or early stopping, and padding leaks nothing (members
    in one module, and split over two threads as on a 2-core CPU)."""
    from coarse_gpu.models import ensemble

    monkeypatch.setattr(ensemble, "usable_cpus", lambda: n_threads)
    X, t, y = _data(600, 3)
    cf = CrossFitted(TARNet(seed=0, **dict(FAST, max_epochs=3)), n_folds=3, seed=0)
    a = cf.fit(X, t, y)
    fold0 = a.fold_ == 0
    poisoned = y.copy()
    poisoned[fold0] = 1e6 * np.random.default_rng(3).standard_normal(int(fold0.sum()))
    b = CrossFitted(TARNet(seed=0, **dict(FAST, max_epochs=3)), n_folds=3, seed=0).fit(X, t, poisoned)
    ref = a.models_[0][0].predict_arms(X)
    np.testing.assert_allclose(b.models_[0][0].predict_arms(X), ref, rtol=1e-6, atol=1e-6)
    assert not np.allclose(b.models_[1][0].predict_arms(X), a.models_[1][0].predict_arms(X), atol=1e-3)


def test_batched_crossfit_saves_and_loads_as_ordinary_fold_models():
    """The batched CrossFitted is per-fold TARNets: saved and restored, it predicts the same."""
    X, t, y = _data(400, 3)
    cf = CrossFitted(TARNet(seed=0, **dict(FAST, max_epochs=2)), n_folds=2, seed=0).fit(X, t, y)
    assert all(type(m) is TARNet and hasattr(m, "network_") for m in cf.members())
    back = from_state(*to_state(cf))
    np.testing.assert_allclose(back.predict_arms(X), cf.predict_arms(X), rtol=1e-6, atol=1e-6)
    seq = CrossFitted(TARNet(seed=0, **dict(FAST, max_epochs=2)), n_folds=2, seed=0, batched=False).fit(X, t, y)
    np.testing.assert_allclose(cf.predict_arms_oof(), seq.predict_arms_oof(), rtol=1e-4, atol=1e-4)


def test_batched_adamw_is_torch_adamw_per_member():
    """Each member's update equals torch.optim.AdamW on that member alone, with its own lr, and a
    member left out of a step is not touched (no weight decay, no momentum)."""
    torch.manual_seed(0)
    stacked = {"w": torch.randn(3, 4, 5, requires_grad=True), "b": torch.randn(3, 5, requires_grad=True)}
    refs = [{k: v[m].detach().clone().requires_grad_(True) for k, v in stacked.items()} for m in range(3)]
    opts = [torch.optim.AdamW([{"params": [r["w"]], "weight_decay": 0.1}, {"params": [r["b"]], "weight_decay": 0.0}],
                              lr=lr) for r, lr in zip(refs, (1e-2, 5e-3, 1e-2))]
    opt = _BatchedAdamW(stacked, {"w": 0.1, "b": 0.0})
    for step in range(4):
        grads = {k: torch.randn_like(v) for k, v in stacked.items()}
        members = [0, 1, 2] if step != 2 else [0, 2]
        before = {k: v[1].detach().clone() for k, v in stacked.items()}
        opt.step(grads, members, [1e-2, 5e-3, 1e-2])
        for m in members:
            for k in stacked:
                refs[m][k].grad = grads[k][m].clone()
            opts[m].step()
        if step == 2:
            for k in stacked:
                assert torch.equal(stacked[k][1].detach(), before[k])
    for m in range(3):
        for k in stacked:
            torch.testing.assert_close(stacked[k][m].detach(), refs[m][k].detach(), rtol=1e-6, atol=1e-6)


def test_batched_checkpoint_resumes_a_killed_run_exactly(tmp_path, monkeypatch):
    """A batched run killed after epoch 2 resumes from its batch checkpoint and ends with the models
    of an uninterrupted run; a finished run is restored without training."""
    from coarse_gpu.models import ensemble

    X, t, y = _data(500, 3)
    params = dict(FAST, max_epochs=4, patience=10)
    data = [(X[:400], t[:400], y[:400], None), (X[100:], t[100:], y[100:], None)]
    ref = fit_batched([TARNet(seed=s, **params) for s in (0, 1)], data)

    class Killed(Exception):
        pass

    save = ensemble.BatchedTrainer._save

    def save_then_die(self, state, epoch, finished):
        save(self, state, epoch, finished)
        if epoch == 2:
            raise Killed

    make = lambda: [TARNet(seed=s, checkpoint_dir=str(tmp_path), **params) for s in (0, 1)]  # noqa: E731
    monkeypatch.setattr(ensemble.BatchedTrainer, "_save", save_then_die)
    with pytest.raises(Killed):
        fit_batched(make(), data)
    monkeypatch.setattr(ensemble.BatchedTrainer, "_save", save)
    names = [p.name for p in tmp_path.iterdir()]
    assert names and all(n.startswith("Batch") and n.endswith(".pt") for n in names), names  # batch files only
    resumed = fit_batched(make(), data)
    for a, b in zip(ref, resumed):
        assert [h["val_loss"] for h in a.history_] == [h["val_loss"] for h in b.history_]
        for k, v in a.network_.state_dict().items():
            assert torch.equal(v, b.network_.state_dict()[k])
    monkeypatch.setattr(ensemble.BatchedTrainer, "_epoch", lambda *a: pytest.fail("a finished run trained again"))
    again = fit_batched(make(), data)
    assert again[1].best_epoch_ == resumed[1].best_epoch_
