"""``model="auto"``: choose the CATE model by how well its held-out estimates would decide.

``AutoCATE`` cross-fits every candidate learner on the same folds (``CrossFitted``), so each
customer gets an out-of-fold prediction mu_hat_c(x_i, a) (N, A) from every candidate c. It then
scores the candidates on doubly robust pseudo-outcomes built from those held-out predictions:

    Gamma_ia = mu_ref(x_i, a) + 1{a_i = a} / e_i * (y_i - mu_ref(x_i, a)),   mu_ref = mean_c mu_hat_c

E[Gamma_ia | x_i] = pi_i(a) for every arm when the propensities e are right (by design in an
experiment), whatever mu_ref is, so

    decision loss  l_c = mean_i mean_a ((Gamma_ia - mean_b Gamma_ib) - (mu_hat_c,ia - mean_b mu_hat_c,ib))^2

estimates the error of candidate c's *profit differences between arms* -- what decides who gets
which treatment -- plus a constant that is the same for every candidate (the pseudo-outcomes'
noise). It is the multi-arm tau-risk (a DR-loss), centred across arms so that no arm is the
reference. The candidate with the smallest loss wins. Also reported, per candidate: the doubly
robust value of its per-customer argmax policy, mean_i Gamma_{i, argmax_a mu_hat_c,ia} (what its
estimates would earn if every customer got its estimated best arm), each with a standard error
over customers, and the standard error of the paired loss difference against the winner.

How the candidates become one model (``combine``):

* ``"stack"`` (the default): the convex combination of the learners with the smallest decision loss
  (coarse_gpu.models.stack, the super learner), its weights cross-fitted so that its loss is honest.
  Candidates whose losses differ by less than their standard errors -- the usual case -- then share the
  decision instead of one of them winning by noise; a useless candidate gets weight ~0.
* ``"select"``: the single candidate with the smallest loss; with ``blend=True`` the mean of the two
  best and of all learners compete too (the earlier default).

``arm_means`` is never combined in (it would only shrink the effects).

Nothing to personalize: the candidate ``arm_means`` (coarse_gpu.models.arm_means) has effects that do
not vary with x. A ONE-STANDARD-ERROR rule picks it whenever its loss is within one standard error
of the paired difference to the best loss (of every learner and combination): heterogeneity must decide
measurably better than arm means to be used -- and under ``combine="stack"`` the stack then uses it.
Simplicity has two levels only: ``arm_means`` < every other learner. A two-part learner is not
"simpler" than a one-part one (it fits two models; the accounting only removes what is known), so
one-part and two-part candidates compete on the loss alone.

Two-part candidates (``twopart_<family>``, coarse_gpu.models.twopart) take part only when ``fit``
receives the behaviour (``response=``, ``value=``) and the firm's ``accounting=``; without them they
are skipped (logged), so the same candidate list serves data with and without a declared structure.
The criterion always uses the realized profit y: the structure can change the estimates, never the
yardstick.

The fitted model is the winner's cross-fitted ensemble (every fold's model, so every customer
trained some of it): ``predict_arms(X)`` averages them for new customers, and ``oof_arms_`` keeps
the winner's out-of-fold predictions for the training customers (what the discretizer and the DR
evaluation should use for them). No model is refitted on all rows.

Propensities: the probability of each row's received arm; None estimates it with a cross-fitted
multinomial logistic regression on the features (clipped to >= ``PROPENSITY_FLOOR``), so that
the criterion stays right on observational data; in a randomized experiment pass the design
probabilities (the pipeline does).
"""
from __future__ import annotations

import inspect
import logging
import time
from typing import Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression

from coarse_gpu.models.arms import ArmModel
from coarse_gpu.models.base import check_inputs, check_X
from coarse_gpu.models.crossfit import CrossFitted, fold_indices
from coarse_gpu.models.registry import RegistryView
from coarse_gpu.models.scores import pseudo_outcomes
from coarse_gpu.models.stack import cross_fitted_stack
from coarse_gpu.models.twopart import BASES as TWO_PART_BASES
from coarse_gpu.models.twopart import TwoPart

__all__ = ["AutoCATE", "Blend", "CANDIDATES", "COMBINE", "DEFAULT_CANDIDATES", "PROPENSITY_FLOOR", "SIMPLER",
           "decision_losses", "is_two_part", "make_candidate", "one_se_choice", "param_class", "pseudo_outcomes", "selection_report"]

#: The learners ``AutoCATE`` can choose among (all predict at the arms and interpolate between them):
#: one-part learners of the realized profit, the no-heterogeneity ``arm_means`` and the two-part
#: learners ``twopart_<family>`` (used only with a declared profit structure). A live view of the
#: model registry: every ``register_model(..., candidate=True)`` learner (coarse_gpu.models.registry).
CANDIDATES = RegistryView(lambda e: ((e.name,) if e.candidate else ()) + e.variants)
#: model=auto's default candidates (the two-part ones take part only with a declared structure, the
#: dose heads only with a numeric treatment).
DEFAULT_CANDIDATES = ("tarnet", "gb_s", "gb_t", "arm_means", "dose_logit", "dose_vc", "twopart_gb_s",
                      "twopart_tarnet")
#: How AutoCATE turns its candidates into one model (module docstring).
COMBINE = ("stack", "select")
#: Candidates that read the treatment as numbers (a dose response): skipped when a treatment dimension
#: is categorical (codes of labels have no order to fit a curve along).
DOSE = ("dose_logit", "dose_vc")
#: Candidates simpler than every other learner, preferred by the one-standard-error rule.
SIMPLER = ("arm_means",)
PROPENSITY_FLOOR = 0.02

log = logging.getLogger("coarse_gpu")


def _uses_dose(name: str) -> bool:
    return name in DOSE or name in tuple(f"twopart_{d}" for d in DOSE)


def is_two_part(name: str) -> bool:
    return name.startswith("twopart_")


def _drop(names: list, predicate, why: str, *, what: str) -> list:
    """The candidate names for which predicate(name) is false (``what`` names those it removes, e.g. "a
    dose model"); logs the skipped ones with the reason ``why`` and raises a ValueError saying both when
    no candidate is left."""
    kept = [c for c in names if not predicate(c)]
    skipped = [c for c in names if predicate(c)]
    if skipped:
        log.info("auto: %s: %s skipped", why, skipped)
    if not kept:
        raise ValueError(f"AutoCATE: every candidate is {what}, but {why}")
    return kept


def param_class(name: str) -> type:
    """The class whose constructor parameters a candidate takes from the model config: a two-part
    candidate's both parts are learners of its family (``twopart_gb_s`` -> GBSLearner)."""
    if is_two_part(name):
        return TWO_PART_BASES[name[len("twopart_"):]]
    return CANDIDATES[name]


def make_candidate(name: str, seed: int, device: str = "auto", checkpoint_dir: Optional[str] = None,
                   params: Optional[dict] = None, accounting=None):
    """An unfitted candidate learner ``name`` (a key of CANDIDATES) with ``params`` on top of its defaults
    (a two-part candidate: ``params`` go to both parts' learners, ``accounting`` to the combination)."""
    if name not in CANDIDATES:
        raise ValueError(f"unknown candidate model {name!r}; available: {sorted(CANDIDATES)}")
    kw = dict(params or {})
    if is_two_part(name):
        return TwoPart(base=name[len("twopart_"):], accounting=accounting, base_params=kw or None,
                       device=device, checkpoint_dir=checkpoint_dir, seed=int(seed))
    cls = CANDIDATES[name]
    accepted = inspect.signature(cls.__init__).parameters  # the networks' (a registered learner's too)
    if "device" in accepted:
        kw.setdefault("device", device)
    if checkpoint_dir is not None and "checkpoint_dir" in accepted:
        kw.setdefault("checkpoint_dir", checkpoint_dir)
    return cls(seed=int(seed), **kw)


def decision_losses(gamma: np.ndarray, mu_hat: np.ndarray) -> np.ndarray:
    """(N,) per-customer decision loss: mean over arms of the squared error of the arm-centred
    predictions against the arm-centred pseudo-outcomes (module docstring)."""
    g = gamma - gamma.mean(1, keepdims=True)
    m = mu_hat - mu_hat.mean(1, keepdims=True)
    return ((g - m) ** 2).mean(1)


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.shape[0])) if v.shape[0] > 1 else 0.0


def estimate_propensity(X: np.ndarray, arm: np.ndarray, n_arms: int, n_folds: int, seed: int) -> np.ndarray:
    """(N,) cross-fitted probability of each row's received arm (multinomial logistic regression)."""
    mu, sd = X.mean(0), X.std(0)
    z = (X - mu) / np.where(sd > 0, sd, 1.0)
    fold = fold_indices(X.shape[0], n_folds, seed, arm)
    e = np.empty(X.shape[0])
    for k in range(n_folds):
        tr, te = fold != k, fold == k
        clf = LogisticRegression(max_iter=2000).fit(z[tr], arm[tr])
        p = np.full((int(te.sum()), n_arms), 0.0)
        p[:, clf.classes_] = clf.predict_proba(z[te])
        e[te] = p[np.arange(p.shape[0]), arm[te]]
    return np.maximum(e, PROPENSITY_FLOOR)


def one_se_choice(losses: dict) -> tuple[str, str]:
    """(chosen, best by loss) among per-customer losses {name: (N,)}: the best, unless a SIMPLER candidate's
    mean loss is within one standard error of its paired difference to the best (module docstring)."""
    best = min(losses, key=lambda c: float(losses[c].mean()))
    if best in SIMPLER:
        return best, best
    for c in SIMPLER:
        if c in losses:
            diff = losses[c] - losses[best]
            if float(diff.mean()) <= _mean_se(diff)[1]:
                return c, best
    return best, best


def selection_report(gamma: np.ndarray, oof: dict, members: dict, times: dict, winner: str, n_folds: int,
                     source: str, best_by_loss: Optional[str] = None) -> dict:
    """The model_selection block: per candidate (name -> (N, A) held-out predictions in ``oof``) its
    decision loss against the pseudo-outcomes ``gamma`` (N, A) with its standard error and the paired
    standard error of its difference to ``winner``, the DR value of its per-customer argmax policy,
    the models it averages and their fit time; plus the criterion, folds, propensity source, winner."""
    rows = np.arange(gamma.shape[0])
    losses = {c: decision_losses(gamma, mu) for c, mu in oof.items()}
    out = {}
    for c, loss in losses.items():
        value = gamma[rows, oof[c].argmax(1)]
        mean, se = _mean_se(loss)
        out[c] = {"decision_loss": mean, "se": se, "se_diff_vs_winner": _mean_se(loss - losses[winner])[1],
                  "policy_value": _mean_se(value)[0], "policy_value_se": _mean_se(value)[1],
                  "members": list(members[c]), "fit_s": float(sum(times.get(m, 0.0) for m in members[c]))}
    report = {"criterion": "decision_loss", "n_folds": int(n_folds), "propensity": source, "candidates": out,
              "winner": winner}
    if any(c in SIMPLER for c in oof):
        report["rule"] = "one-standard-error toward arm_means (no heterogeneity)"
        report["best_by_loss"] = best_by_loss or winner
    return report


class Blend(ArmModel, BaseEstimator):
    """The weighted average of fitted per-arm models' predictions (members share the arms).

    Fitted attributes: members_ (list of models), weights_ (len(members_),), arms_, grid_.
    """

    def __init__(self, *, interpolation: str = "linear") -> None:
        self.interpolation = interpolation

    @classmethod
    def of(cls, models: Sequence, weights: Optional[Sequence[float]] = None) -> "Blend":
        b = cls(interpolation=getattr(models[0], "interpolation", "linear"))
        b.members_ = list(models)
        w = np.full(len(models), 1.0 / len(models)) if weights is None else np.asarray(weights, dtype=np.float64)
        b.weights_ = w / w.sum()
        b._set_arms_from(models[0])
        return b

    def _set_arms_from(self, model) -> None:
        self.arms_ = np.asarray(model.arms_)
        self.n_arms_ = int(self.arms_.shape[0])
        self.grid_ = getattr(model, "grid_", None)

    def _check_fitted(self) -> None:
        if not getattr(self, "members_", None):
            raise RuntimeError("this Blend has no members")

    def predict_arms(self, X) -> np.ndarray:
        self._check_fitted()
        return sum(w * m.predict_arms(X) for w, m in zip(self.weights_, self.members_))


class AutoCATE(ArmModel, BaseEstimator):
    """Cross-validated choice among candidate CATE learners by decision loss (module docstring).

    Parameters
    ----------
    candidates : names from CANDIDATES, fitted in this order (DEFAULT_CANDIDATES by default; the
        ``twopart_*`` ones only when ``fit`` gets the behaviour and the accounting).
    n_folds : folds of the cross-fitting (>= 2); every candidate uses the same folds.
    combine : "stack" (the cross-fitted convex combination of the learners) or "select" (the best one).
    blend : with combine="select", also score the average of the two best candidates and of all of them.
    candidate_params : {name: {param: value}} on top of each candidate's own defaults.
    interpolation : "linear" | "spline", from per-arm predictions to any treatment.
    device, checkpoint_dir : for the neural candidates (checkpoints per fold model).
    seed : folds and every candidate's seeds.  verbose : progress bars.
    batched : the neural candidates' folds as one batched module (``CrossFitted``'s parameter).

    Fitted attributes: selected_ (the winner's name, e.g. "stack(tarnet+gb_s)", "gb_t" or "arm_means"),
    model_ (its CrossFitted ensemble, or a weighted Blend of them), oof_arms_ (N, A) its out-of-fold
    predictions for the training rows, model_selection_ (dict: criterion, candidates with their losses,
    standard errors, policy values and fit times, winner; ``stack_weights`` {learner: weight} under
    combine="stack"), arms_, grid_, n_features_in_.
    """

    def __init__(self, *, candidates: Sequence[str] = DEFAULT_CANDIDATES, n_folds: int = 5,
                 combine: str = "stack", blend: bool = True, candidate_params: Optional[dict] = None,
                 interpolation: str = "linear",
                 device: str = "auto", checkpoint_dir: Optional[str] = None, seed: int = 0,
                 verbose: bool = False, batched: bool = True) -> None:
        self.candidates = candidates
        self.n_folds = n_folds
        self.combine = combine
        self.blend = blend
        self.candidate_params = candidate_params
        self.interpolation = interpolation
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.verbose = verbose
        self.batched = batched

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this AutoCATE is not fitted yet: call fit(X, t, y) first")

    def _validate_params(self) -> list[str]:
        names = list(self.candidates)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"AutoCATE: candidates must be distinct names, got {names}")
        bad = [c for c in names if c not in CANDIDATES]
        if bad:
            raise ValueError(f"AutoCATE: unknown candidate(s) {bad}; available: {sorted(CANDIDATES)}")
        extra = sorted(set(self.candidate_params or {}) - set(names))
        if extra:
            raise ValueError(f"AutoCATE: candidate_params for {extra}, which are not among the candidates {names}")
        if self.combine not in COMBINE:
            raise ValueError(f"AutoCATE: combine must be one of {list(COMBINE)}, got {self.combine!r}")
        if not isinstance(self.n_folds, (int, np.integer)) or self.n_folds < 2:
            raise ValueError(f"AutoCATE: n_folds must be an integer >= 2, got {self.n_folds!r}")
        return names

    def fit(self, X, t, y, propensity=None, *, response=None, value=None, accounting=None,
            numeric_treatment: bool = True) -> "AutoCATE":
        """Cross-fit every candidate and choose (module docstring). response / value (N,) and accounting
        (a ``coarse_gpu.data.Accounting`` bound to the treatment column names): the declared profit
        structure, which lets the two-part candidates take part. numeric_treatment=False (a categorical
        treatment dimension): the dose candidates (DOSE) are skipped."""
        names = self._validate_params()
        if not numeric_treatment:
            names = _drop(names, _uses_dose, "the treatment is categorical", what="a dose model")
        X, T, y, e = check_inputs(X, t, y, propensity)
        if response is None or value is None or accounting is None:
            names = _drop(names, is_two_part, "fit got no response, value and accounting",
                          what="a two-part learner")
        n = X.shape[0]
        arm = self._set_arms(T)
        self.n_features_in_ = int(X.shape[1])
        if self.n_folds > n // 2:
            raise ValueError(f"AutoCATE: n_folds={self.n_folds} is too many for {n} rows")
        source = "given"
        if e is None:
            e, source = estimate_propensity(X, arm, self.n_arms_, self.n_folds, int(self.seed)), "estimated"
        fitted, oof, times = self._fit_candidates(names, X, T, y, propensity, response, value, accounting)
        # The reference mu of the pseudo-outcomes and the combinations: the learners (arm means would only shrink)
        learners = [c for c in names if c not in SIMPLER] or names
        gamma = pseudo_outcomes(y, arm, e, np.mean([oof[c] for c in learners], axis=0))
        losses, members, weights, stack = self._combine(gamma, oof, learners, fitted[learners[0]].fold_)
        losses.update({c: decision_losses(gamma, oof[c]) for c in names if c in SIMPLER})
        winner, best = one_se_choice(losses)
        if stack is not None and winner not in SIMPLER:
            winner = stack[0]  # some learner's heterogeneity decides measurably better: the stack uses it
        self.model_selection_ = selection_report(gamma, oof, {c: members.get(c, [c]) for c in oof}, times, winner,
                                                 int(self.n_folds), source, best_by_loss=best)
        if stack is not None:
            self.model_selection_["stack_weights"] = stack[1]
        self.selected_ = winner
        group, w = members.get(winner, [winner]), weights.get(winner)
        self.model_ = fitted[group[0]] if len(group) == 1 else Blend.of([fitted[c] for c in group], w)
        self.oof_arms_ = oof[winner]
        log.info("auto: %s", "; ".join(f"{c} {r['decision_loss']:.4g} (se {r['se']:.2g})" for c, r in
                                       self.model_selection_["candidates"].items()) + f" -> {winner}")
        return self

    def _fit_candidates(self, names, X, T, y, propensity, response, value, accounting):
        """({name: fitted CrossFitted}, {name: (N, A) out-of-fold predictions}, {name: seconds})."""
        fitted, oof, times = {}, {}, {}
        for name in names:
            t0 = time.perf_counter()
            base = make_candidate(name, int(self.seed), self.device, self.checkpoint_dir,
                                  (self.candidate_params or {}).get(name), accounting=accounting)
            cf = CrossFitted(base, n_folds=int(self.n_folds), seed=int(self.seed), verbose=self.verbose,
                             batched=self.batched)
            extra = {"response": response, "value": value} if is_two_part(name) else {}
            fitted[name] = cf.fit(X, T, y, propensity=propensity, **extra)
            oof[name] = cf.predict_arms_oof()
            times[name] = time.perf_counter() - t0
            log.info("auto: %s cross-fitted on %d folds in %.1fs", name, self.n_folds, times[name])
        return fitted, oof, times

    def _combine(self, gamma, oof, learners, fold):
        """The learners' losses and their combinations (``combine``), added to ``oof`` (name -> (N, A)).
        Returns (losses {name: (N,)}, members {name: [learners]}, weights {name: (len(members),)}, and
        (the stack's name, {learner: weight}) or None)."""
        losses = {c: decision_losses(gamma, oof[c]) for c in learners}
        members, weights, stack = {}, {}, None
        if self.combine == "stack" and len(learners) >= 2:
            mu, w = cross_fitted_stack(gamma, np.stack([oof[c] for c in learners]), fold)
            keep = sorted((i for i in range(len(learners)) if w[i] > 1e-3), key=lambda i: -w[i])
            key = f"stack({'+'.join(learners[i] for i in keep)})"
            oof[key], losses[key] = mu, decision_losses(gamma, mu)
            members[key], weights[key] = [learners[i] for i in keep], w[keep]
            stack = key, dict(zip(learners, map(float, w)))
        elif self.blend and len(learners) >= 2:
            ranked = sorted(learners, key=lambda c: float(losses[c].mean()))
            for group in ([ranked[:2]] + ([learners] if len(learners) >= 3 else [])):
                key = f"blend({'+'.join(group)})"
                oof[key] = np.mean([oof[c] for c in group], axis=0)
                losses[key], members[key] = decision_losses(gamma, oof[key]), list(group)
        return losses, members, weights, stack

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) the selected model's ensemble prediction at every arm ``arms_``."""
        self._check_fitted()
        return self.model_.predict_arms(check_X(X, self.n_features_in_))

    def predict_arms_oof(self) -> np.ndarray:
        """(N, A) out-of-fold predictions of the selected model for the training rows."""
        self._check_fitted()
        return self.oof_arms_

    def predict_profit_oof(self, T) -> np.ndarray:
        """(N, M) out-of-fold predictions for the training rows at treatments T."""
        return self.oof_arms_ @ self.treatment_weights(T).T
