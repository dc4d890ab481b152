"""Two-part (hurdle) learners: purchase and basket modelled apart, profit by the firm's accounting.

With a declared profit structure (coarse_gpu.data.accounting)

    profit = response * (value * margin(t) - cost_per_response(t)) - cost_per_customer(t)

the expected profit of customer x at arm a is

    pi_hat(x, a) = R_hat(x, a) * (V_hat(x, a) * margin(a) - cost_per_response(a)) - cost_per_customer(a)

with R_hat(x, a) = P_hat(buy | x, a) (a 0/1 response) or E_hat[response | x, a] (a count), and
V_hat(x, a) = E_hat[value | x, a, buy]. ``TwoPart`` fits both parts with learners of ONE family
(``base``: "tarnet", "dragonnet", "gb_s", "gb_t", "dose_vc", "dose_logit"):

* the response on every row, with its proper loss: cross-entropy for 0/1 (a classifier /
  a logit head), Poisson for counts (a log-link head);
* the value on the responders only, with a log link and the Poisson (Tweedie power 1)
  quasi-likelihood (``value_loss="poisson"``, the default), a Gamma deviance (``"gamma"``), or least
  squares on log(value) retransformed with Duan's smearing factor (``"log"``:
  E[value] = exp(f(x, a)) * mean_i exp(residual_i)).

Why Poisson by default (measured, not assumed): the accounting multiplies E[value | x, a, buy],
so a value model biased by a constant factor shifts every trade-off between the margin given away
and the per-order costs. With a log link, the Poisson score equation sum_i (v_i - mu_i) = 0 keeps
the fitted mean equal to the observed mean; the Gamma score equation sum_i (v_i - mu_i) / mu_i = 0
does not, and a flexible learner that fits some noise then shrinks the mean. On lognormal baskets
(sigma = 1, 2,400 buyers, default boosting, 20,000 new buyers; mean E[value] 21.05): Poisson predicts
a mean of 19.27 (RMSE 7.83), Gamma 16.54 (7.99), log-OLS with smearing 16.73 (7.82; the in-sample
residuals understate the variance), squared error 20.86 (8.91). Poisson is the least biased of
the log-link fits at the RMSE of the best, so it is the default; the others stay available.

Why it helps: most customers buy nothing and baskets are heavy-tailed; a model of the realized
profit spends its capacity on the basket's noise, while the response model sees a 0/1 signal whose
variance is bounded, and the value model sees only buyers' log-scale amounts. The treatment's
known parts (the margin left after a discount, per-order costs) enter exactly, not learned.

Tree size chosen by each part's own held-out deviance (``complexity="auto"``, boosting families):
a default-sized boosting model (31 leaves, 20 rows a leaf) fits the 0/1 purchase and the buyers'
heavy-tailed baskets with more structure than they carry, and what it fits of their noise becomes
spurious heterogeneity between customers. So each part picks its tree size from ``COMPLEXITY_GRID``
(31/20 down to 3 leaves of >= 200 rows) by its proper loss -- log loss for the purchase, Poisson /
Gamma deviance or squared log error for the basket -- on a held-out 20 % of its rows (stratified
by arm), every size with early stopping on the number of trees; the chosen size is refitted on all
rows. It is ordinary model selection on each part's likelihood: nothing about the decision or the
simulator enters it. Measured on the hurdle family (40,000 customers, 28,000 train, seeds 0-2,
``ot`` K=5 true share on 12,000 held-out customers; experiments/hurdle_diagnostic.py): default trees
53 / 52 / 54 %, sized by deviance 73 / 60 / 70 %; a practitioner's default scikit-learn pair
(classifier + squared-error regressor on buyers) 53 / 49 / 54 %; the truth 93 %. ``complexity="default"`` keeps the family's own defaults.

The per-arm profit is then interpolated between arms exactly like the one-part models
(``ArmModel``); dose-head bases are evaluated at the arms and interpolated the same way.

The behaviour travels with the outcome: ``fit(X, t, y, propensity=None, *, response=, value=)``, or
``y`` as the (N, 3) structured outcome [profit, response, value] (``stack_outcome``), which is how
``CrossFitted`` hands each fold its rows. ``value`` is ignored (NaN allowed) where response == 0.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import log_loss, mean_gamma_deviance, mean_poisson_deviance

from coarse_gpu.data.accounting import Accounting
from coarse_gpu.models.arms import ArmModel
from coarse_gpu.models.base import check_treatments, check_X
from coarse_gpu.models.boosting import GBSLearner, GBTLearner
from coarse_gpu.models.dose import DoseLogit, DoseVC
from coarse_gpu.models.dragonnet import DragonNet
from coarse_gpu.models.interpolate import METHODS
from coarse_gpu.models.outcome import stack_outcome, unstack_outcome
from coarse_gpu.models.tarnet import TARNet
from coarse_gpu.utils.params import check_params, choice

__all__ = ["BASES", "TwoPart", "stack_outcome", "unstack_outcome"]

#: The learner families a TwoPart can be built of.
BASES = {"tarnet": TARNet, "dragonnet": DragonNet, "gb_s": GBSLearner, "gb_t": GBTLearner,
         "dose_vc": DoseVC, "dose_logit": DoseLogit}
_NEURAL = ("tarnet", "dragonnet", "dose_vc", "dose_logit")
RESPONSE_LOSSES = ("auto", "bce", "poisson")
VALUE_LOSSES = ("poisson", "gamma", "log")
COMPLEXITIES = ("auto", "default")
#: Tree sizes (max_leaf_nodes, min_samples_leaf) a boosting part chooses among by held-out deviance,
#: from scikit-learn's default down to stumps-like trees on large leaves (module docstring).
COMPLEXITY_GRID = ((31, 20), (15, 50), (7, 100), (3, 200))
_BOOSTING = ("gb_s", "gb_t")
_TUNE_FRACTION = 0.2
_TUNE_MAX_ITER = 500  # an upper bound only: early stopping on held-out loss sets the number of trees


class TwoPart(ArmModel, BaseEstimator):
    """Response and value learners of one family combined by the accounting (module docstring).

    Parameters
    ----------
    base : learner family, a key of BASES.
    accounting : a ``coarse_gpu.data.Accounting`` (margin, cost_per_response, cost_per_customer as
        expressions in the treatment columns); None = margin 1 and no costs (profit = response x value).
    treatment_names : names of the d treatment columns the accounting's expressions use; None =
        the accounting's own bound names, else t0, t1, ...
    response_loss : "auto" (bce for a 0/1 response, poisson for counts), "bce" or "poisson".
    value_loss : "poisson" (default), "gamma" or "log" (log-value least squares with a smearing factor).
    complexity : "auto" (boosting families: each part's tree size chosen from COMPLEXITY_GRID by its
        held-out deviance, module docstring) or "default" (the family's defaults). Tree-size keys given
        in ``base_params`` are kept as given.
    base_params : {param: value} for both parts' learners (on top of the family's defaults).
    interpolation : "linear" | "spline", between arms.
    device, checkpoint_dir, verbose : for the neural families.  seed : both parts' seeds.

    Fitted attributes: arms_ (A, d), arm_counts_, grid_, n_features_in_, members_ ([response model,
    value model]), margin_arms_ / cost_per_response_arms_ / cost_per_customer_arms_ (A,), response_loss_,
    value_loss_, smear_ (1.0 unless value_loss="log"), response_rate_ (share of rows with a response),
    leaf_nodes_ (2,) int: the tree size (max_leaf_nodes) each part [response, value] uses (0 for a
    neural family).
    """

    #: Each parameter's allowed values, stated once (``fit`` and the config check of ``model.*`` read them).
    _parameter_constraints = {"base": choice(*sorted(BASES)), "response_loss": choice(*RESPONSE_LOSSES),
                              "value_loss": choice(*VALUE_LOSSES), "complexity": choice(*COMPLEXITIES),
                              "interpolation": choice(*METHODS)}

    def __init__(self, *, base: str = "gb_s", accounting=None, treatment_names=None, response_loss: str = "auto",
                 value_loss: str = "poisson", complexity: str = "auto", base_params: Optional[dict] = None, interpolation: str = "linear",
                 device: str = "auto", checkpoint_dir: Optional[str] = None, seed: int = 0,
                 verbose: bool = False) -> None:
        self.base = base
        self.accounting = accounting
        self.treatment_names = treatment_names
        self.response_loss = response_loss
        self.value_loss = value_loss
        self.complexity = complexity
        self.base_params = base_params
        self.interpolation = interpolation
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.seed = seed
        self.verbose = verbose

    def _check_params(self) -> None:
        check_params(self)  # the ranges in _parameter_constraints (coarse_gpu.utils.params)

    def _part(self, loss: str, salt: int, size: Optional[tuple] = None):
        """An unfitted learner of the base family with this outcome loss (and tree size ``size`` =
        (max_leaf_nodes, min_samples_leaf), early-stopped, for a boosting family)."""
        kw = dict(self.base_params or {})
        if size is not None:
            kw.setdefault("max_leaf_nodes", size[0])
            kw.setdefault("min_samples_leaf", size[1])
            kw.setdefault("max_iter", _TUNE_MAX_ITER)
            kw.setdefault("early_stopping", True)
        kw.update(loss=loss, seed=int(self.seed) + salt)
        if self.base in _NEURAL:
            kw.setdefault("device", self.device)
            kw.setdefault("verbose", self.verbose)
            if self.checkpoint_dir is not None:
                kw.setdefault("checkpoint_dir", self.checkpoint_dir)
        if self.base not in ("dose_vc", "dose_logit"):
            kw.setdefault("interpolation", self.interpolation)
        if self.base in ("gb_s", "gb_t") and salt == 1:
            # the value part early-stops on a held-out 10 % at any size: it sees only the buyers (often
            # under the 10,000 rows where "auto" would switch it on), and a log-link fit that chases the
            # basket's noise is biased low out of sample (hurdle family, seed 0: mean V_hat / E[value]
            # 0.88 without, 0.95 with). The response part keeps the learner's default, as one-part fits.
            kw.setdefault("early_stopping", True)
        return BASES[self.base](**kw)

    def _bound_accounting(self, d: int):
        acc = self.accounting if self.accounting is not None else Accounting()
        names = self.treatment_names or acc.names or [f"t{j}" for j in range(d)]
        if len(names) != d:
            raise ValueError(f"TwoPart: treatment_names {list(names)} do not match the {d} treatment columns")
        return acc.bind(list(names))

    def fit(self, X, t, y, propensity=None, *, response=None, value=None) -> "TwoPart":
        """Fit the response on every row and the value on the rows with a response.

        X (N, p); t (N,) or (N, d); y (N,) realized profit (unused by the fit: the accounting
        rebuilds it) or the (N, 3) structured outcome; response (N,) 0/1 or counts; value (N,) per
        response (NaN where none). Returns self.
        """
        self._check_params()
        X = check_X(X)
        n = X.shape[0]
        T = check_treatments(t, n)
        r, v = unstack_outcome(y, response, value, n)
        arm = self._set_arms(T)
        self.n_features_in_ = int(X.shape[1])
        parts = self._bound_accounting(T.shape[1]).evaluate(self.arms_)
        self.margin_arms_ = parts["margin"]
        self.cost_per_response_arms_ = parts["cost_per_response"]
        self.cost_per_customer_arms_ = parts["cost_per_customer"]
        binary = bool(np.all((r == 0) | (r == 1)))
        self.response_loss_ = ("bce" if binary else "poisson") if self.response_loss == "auto" else self.response_loss
        self.value_loss_ = self.value_loss
        self.response_rate_ = float((r > 0).mean())
        buyers = r > 0
        lacking = [a for a in range(self.n_arms_) if int((buyers & (arm == a)).sum()) < 2]
        if lacking:
            raise ValueError(f"TwoPart: arm {self.arms_[lacking[0]].tolist()} has fewer than 2 rows with a response; "
                             "the value model needs buyers in every arm")
        e = None if propensity is None else np.asarray(propensity, dtype=np.float64).reshape(-1)
        resp, r_leaves = self._fit_part(self.response_loss_, 0, X, T, r, e, arm)
        vb = v[buyers]
        v_loss = "mse" if self.value_loss_ == "log" else self.value_loss_
        target = np.log(vb) if self.value_loss_ == "log" else vb
        val, v_leaves = self._fit_part(v_loss, 1, X[buyers], T[buyers], target, None, arm[buyers])
        self.leaf_nodes_ = np.array([r_leaves, v_leaves], dtype=np.int64)
        if self.value_loss_ != "log":
            self.smear_ = 1.0
        else:
            own = np.einsum("na,na->n", val.predict_arms(X[buyers]), np.eye(self.n_arms_)[arm[buyers]])
            self.smear_ = float(np.mean(np.exp(np.log(vb) - own)))
        self.members_ = [resp, val]
        return self

    def _fit_part(self, loss: str, salt: int, X, T, y, e, arm) -> tuple:
        """(fitted learner, its max_leaf_nodes) for one part: the tree size of COMPLEXITY_GRID with the
        smallest held-out deviance (``complexity="auto"``, boosting families), refitted on all rows."""
        given = set(self.base_params or {}) & {"max_leaf_nodes", "min_samples_leaf"}
        if self.base not in _BOOSTING or self.complexity != "auto" or given:
            model = self._part(loss, salt).fit(X, T, y, propensity=e)
            return model, int(getattr(model, "max_leaf_nodes", 0) if self.base in _BOOSTING else 0)
        held = _held_out(arm, int(self.seed) + salt)
        fit = ~held
        scores = []
        for size in COMPLEXITY_GRID:
            m = self._part(loss, salt, size).fit(X[fit], T[fit], y[fit], propensity=None if e is None else e[fit])
            pred = m.predict_arms(X[held])[np.arange(int(held.sum())), arm[held]]
            scores.append(_deviance(loss, y[held], pred))
        size = COMPLEXITY_GRID[int(np.argmin(scores))]
        return self._part(loss, salt, size).fit(X, T, y, propensity=e), int(size[0])

    def _check_fitted(self) -> None:
        if not getattr(self, "members_", None):
            raise RuntimeError("this TwoPart is not fitted yet: call fit(X, t, y, response=..., value=...) first")

    def _at_arms(self, model, X: np.ndarray) -> np.ndarray:
        if np.array_equal(np.asarray(model.arms_), self.arms_):
            return model.predict_arms(X)
        return model.predict_profit(X, self.arms_)

    def predict_parts(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(R_hat (N, A), V_hat (N, A)): expected response and expected value per response at every arm."""
        self._check_fitted()
        x = check_X(X, self.n_features_in_)
        resp, val = self.members_
        r = self._at_arms(resp, x)
        v = self._at_arms(val, x)
        if self.value_loss_ == "log":
            v = np.exp(v) * self.smear_
        return r, v

    def predict_arms(self, X) -> np.ndarray:
        """(N, A) float64 expected profit at every arm by the accounting (module docstring)."""
        r, v = self.predict_parts(X)
        return (r * (v * self.margin_arms_[None, :] - self.cost_per_response_arms_[None, :])
                - self.cost_per_customer_arms_[None, :])


def _held_out(arm: np.ndarray, seed: int) -> np.ndarray:
    """(N,) bool: a random _TUNE_FRACTION of each arm's rows (every arm keeps most of its rows, so the
    learners fitted on the rest see every arm in the same order)."""
    rng = np.random.default_rng(seed)
    held = np.zeros(arm.shape[0], dtype=bool)
    for a in np.unique(arm):
        rows = np.flatnonzero(arm == a)
        k = int(_TUNE_FRACTION * rows.shape[0])
        held[rng.choice(rows, size=k, replace=False)] = True
    return held


def _deviance(loss: str, y: np.ndarray, mu: np.ndarray) -> float:
    """Mean held-out deviance of predictions mu for outcomes y under a part's loss (its own likelihood)."""
    if loss == "bce":
        return float(log_loss(y, np.clip(mu, 1e-6, 1 - 1e-6), labels=[0.0, 1.0]))
    if loss == "poisson":
        return float(mean_poisson_deviance(y, np.maximum(mu, 1e-12)))
    if loss == "gamma":
        return float(mean_gamma_deviance(y, np.maximum(mu, 1e-12)))
    return float(np.mean((y - mu) ** 2))
