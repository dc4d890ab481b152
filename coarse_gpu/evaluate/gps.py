"""Estimated generalized propensity score f(t | x) for doses whose randomization density is unknown.

``BinnedDoseDensity`` cuts each dose dimension at its empirical quantiles into ``n_bins`` bins, learns
P(bin | x) with a multinomial logistic regression on the standardized covariates, and returns the
piecewise-constant density f(t | x) = P(bin(t) | x) / volume(bin(t)). Why this estimator: it makes no
shape assumption about f in t (a Gaussian-on-a-mean model would be badly wrong for the common uniform
design, whose density is flat with hard edges), it is consistent when the dose depends on x through
the bins' probabilities, and its density is bounded away from zero wherever the classifier is (the
kernel DR's weights K_h / f stay finite). The price: f is constant within a bin, so bins much wider
than the kernel bandwidth blur a density that varies quickly in t; and evaluated on its own training
rows the classifier's probability of each row's own bin is a little high (overfitting: about 2-5 %
at a few thousand rows and 16 features), which shrinks the kernel DR's correction by as much. Used with
``coarse_gpu.evaluate.kernel_dr.kernel_dr_scores``, whose overlap check refuses (or warns about)
windows resting on customers with a tiny estimated density.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from coarse_gpu.data.dose_design import UniformDoseDesign

__all__ = ["BinnedDoseDensity", "dose_density"]


class BinnedDoseDensity:
    """Histogram-of-bins conditional density of the dose given the covariates.

    n_bins : bins per dose dimension (quantile bins; the joint bins are their product, n_bins^d classes).
    C : inverse L2 penalty of the logistic regression. max_iter : its solver iterations.
    Learned: ``edges_`` (list of d arrays of n_bins + 1 edges), ``classifier_``, ``classes_``.
    """

    def __init__(self, *, n_bins: int = 10, C: float = 1.0, max_iter: int = 500) -> None:
        self.n_bins = n_bins
        self.C = C
        self.max_iter = max_iter

    def _bin(self, t: np.ndarray) -> np.ndarray:
        """(N,) joint bin index of doses (N, d) (doses beyond the edges go to the outer bins)."""
        idx = np.zeros(t.shape[0], dtype=np.int64)
        for j, e in enumerate(self.edges_):
            b = np.clip(np.searchsorted(e, t[:, j], side="right") - 1, 0, len(e) - 2)
            idx = idx * (len(e) - 1) + b
        return idx

    def _volume(self, joint: np.ndarray) -> np.ndarray:
        vol = np.ones(joint.shape[0])
        for e in reversed(self.edges_):
            k = len(e) - 1
            vol *= np.diff(e)[joint % k]
            joint = joint // k
        return vol

    @staticmethod
    def _doses(treatment, n: int) -> np.ndarray:
        t = np.asarray(treatment, dtype=np.float64)
        t = t[:, None] if t.ndim == 1 else t
        if t.ndim != 2 or t.shape[0] != n or not np.all(np.isfinite(t)):
            raise ValueError(f"treatment must be finite with shape ({n}, d) like X's rows, got {t.shape}")
        return t

    def fit(self, X, treatment) -> "BinnedDoseDensity":
        """X : (N, p) covariates; treatment : (N, d) or (N,) observed doses."""
        if int(self.n_bins) != self.n_bins or self.n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2, got {self.n_bins}")
        if not self.C > 0:
            raise ValueError(f"C must be > 0, got {self.C}")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must have shape (N, p), got {X.shape}")
        t = self._doses(treatment, X.shape[0])
        self.edges_ = []
        for j in range(t.shape[1]):
            e = np.unique(np.quantile(t[:, j], np.linspace(0, 1, int(self.n_bins) + 1)))
            if len(e) < 3:
                raise ValueError(f"treatment dimension {j} takes fewer than 2 distinct quantile bins: "
                                 f"not a continuously randomized dose")
            self.edges_.append(e)
        self.classifier_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter))
        self.classifier_.fit(X, self._bin(t))
        self.classes_ = self.classifier_.classes_
        return self

    def predict_density(self, X, treatment) -> np.ndarray:
        """(N,) estimated f(t_i | x_i) (1 / treatment units^d); 0 for a dose bin never observed in fit."""
        if not hasattr(self, "classifier_"):
            raise ValueError("BinnedDoseDensity: call fit before predict_density")
        X = np.asarray(X, dtype=np.float64)
        t = self._doses(treatment, X.shape[0])
        if t.shape[1] != len(self.edges_):
            raise ValueError(f"treatment must have {len(self.edges_)} columns as in fit, got {t.shape[1]}")
        proba = self.classifier_.predict_proba(X)
        joint = self._bin(t)
        col = np.searchsorted(self.classes_, joint)
        seen = (col < len(self.classes_)) & (self.classes_[np.minimum(col, len(self.classes_) - 1)] == joint)
        p = np.where(seen, proba[np.arange(len(joint)), np.minimum(col, len(self.classes_) - 1)], 0.0)
        return p / self._volume(joint)


def dose_density(data, *, n_bins: int = 10):
    """f(t | x) for an experiment's doses: a function (X (N, p), treatment (N, d)) -> (N,) densities.

    The declared design when ``data.meta["dose_design"]`` holds one (the simulator's, or a user's
    "uniform on [a, b]"), so the known density is used; otherwise a ``BinnedDoseDensity`` fitted on
    ``data.X`` and ``data.treatment``. Evaluate it at the received doses (the kernel DR's ``density``)
    and at the policy's doses (its ``policy_density``, the overlap check)."""
    design = data.meta.get("dose_design") if isinstance(getattr(data, "meta", None), dict) else None
    if design is not None:
        known = UniformDoseDesign.from_meta(design)
        return lambda X, treatment: known.density(treatment)
    est = BinnedDoseDensity(n_bins=n_bins).fit(data.X, data.treatment)
    return est.predict_density
