"""Stacking for ``model=auto``: the convex combination of the candidates that decides best.

The weights w (C,) on the simplex minimize the decision loss of the combined held-out predictions,

    min_w  mean_i mean_a ((Gamma_ia - mean_b Gamma_ib) - sum_c w_c (mu_c,ia - mean_b mu_c,ib))^2,
    w >= 0, sum_c w_c = 1,

against the doubly robust pseudo-outcomes Gamma (coarse_gpu.models.select): a least-squares fit on
the arm-centred predictions, the super learner of van der Laan, Polley & Hubbard (2007) with the
multi-arm tau-risk as its loss. Written through the (C, C) Gram matrix it is a tiny quadratic program,
solved by scipy's SLSQP. Convex weights (not free ones) because the members are estimates of the same
thing: they only trade errors off, and the combination can never extrapolate beyond them.

Why stacking rather than picking one candidate (measured, experiments/model_table.py, family
``contacts``, 5 replications; docs/models.md "auto stacks its candidates" for every family): the
candidates' decision losses differ by less than their standard errors, so the single winner changes
from one replication to the next and its decisions with it; the stack weighs every candidate by what it
adds and kept 92.40 ± 0.95 % of full personalization's increment at K=5 where the pick kept
91.43 ± 0.73 % (the best single learner, dose_vc, 92.64 ± 0.37 %). It is no better everywhere: on the
zero-inflated ``hurdle`` family at 20,000 customers it kept 50.5 % against the pick's 53.8 % (within
one standard error).

Honest scoring: the combination is itself fitted, so its loss on the rows that chose its weights is
optimistic. ``cross_fitted_stack`` refits the weights with each fold left out (the folds of the
cross-fitting) and predicts that fold's rows with them: every training customer's stacked prediction
uses weights that did not see her pseudo-outcome. The deployed weights are those fitted on all rows.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

__all__ = ["convex_weights", "cross_fitted_stack"]


def _centred(a: np.ndarray) -> np.ndarray:
    return a - a.mean(-1, keepdims=True)


def convex_weights(target: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """(C,) weights on the simplex minimizing the mean squared error of sum_c w_c preds[c] against target,
    both centred across arms. target (N, A) pseudo-outcomes; preds (C, N, A) the candidates' predictions."""
    g, m = _centred(np.asarray(target, dtype=np.float64)), _centred(np.asarray(preds, dtype=np.float64))
    c = m.shape[0]
    if c == 1:
        return np.ones(1)
    gram = np.einsum("cna,dna->cd", m, m) / g.size
    lin = np.einsum("cna,na->c", m, g) / g.size
    scale = max(float(np.trace(gram)) / c, 1e-300)  # profits^2 can be large: solve on unit scale
    gram, lin = gram / scale, lin / scale
    res = minimize(lambda w: w @ gram @ w - 2.0 * lin @ w, np.full(c, 1.0 / c),
                   jac=lambda w: 2.0 * (gram @ w - lin), method="SLSQP", bounds=[(0.0, 1.0)] * c,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(c)}],
                   options={"ftol": 1e-12, "maxiter": 500})
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def cross_fitted_stack(target: np.ndarray, preds: np.ndarray, fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(oof (N, A), weights (C,)): each fold's rows predicted with weights fitted on the other folds' rows,
    and the weights fitted on all rows. target (N, A); preds (C, N, A); fold (N,) fold index per row."""
    preds = np.asarray(preds, dtype=np.float64)
    out = np.empty(preds.shape[1:])
    for k in np.unique(fold):
        rest = fold != k
        w = convex_weights(target[rest], preds[:, rest])
        out[~rest] = np.tensordot(w, preds[:, ~rest], axes=1)
    return out, convex_weights(target, preds)
