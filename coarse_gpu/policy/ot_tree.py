"""``ot_tree``: the OT discretizer's K treatments, assigned by a depth-limited tree on the covariates.

The OT solution (``coarse_gpu.discretize.discretize``) picks K treatments and assigns every customer
to its best one, a rule that needs the profit model to score a new customer. ``ot_tree`` keeps the K
treatments and replaces the assignment by a tree of threshold rules on the covariates, which a
marketer can read and which assigns new customers without the model. Two ways to grow the tree:

``variant="distill"`` (default): a classification tree (scikit-learn ``DecisionTreeClassifier``,
    ``max_depth``) fitted to the OT assignment, each customer weighted by what a wrong leaf costs it
    (its profit at its OT treatment minus its mean profit over the K), then every leaf relabelled with
    the treatment of largest total profit among its customers (never lowers the in-sample profit).
``variant="policy"``: a policy tree (EconML ``PolicyTree``, greedy welfare-maximizing splits, as the
    ``policy_tree`` baseline) whose "welfare" is the (N, K) profit of the K OT treatments.

Measured (``python -m coarse_gpu.policy.ot_tree``, the built-in promotions simulator, 12,000
customers fitted and 12,000 held out, true profits, depth ceil(log2 K) + 1, min_samples_leaf 50):
share of the OT policy's incremental profit over no promotion that the tree keeps on held-out customers,

    K              2       3       4       5       6       8
    distill    87.7 %  87.8 %  88.5 %  89.8 %  89.4 %  89.4 %
    policy     87.3 %  85.2 %  87.5 %  88.7 %  89.0 %  89.4 %

(the rest of the gap to 100 % is the price of reading the segments off 20 model-matrix columns with at most
2**depth leaves), so the default is ``distill``: it keeps as much or more at every K.

The stored tree (``Policy.info["tree"]``) has the arrays format of ``policy_tree`` (feature, threshold,
left, right, leaf_slot per node; ``coarse_gpu.policy.tree.apply_tree``), so the saved-policy "tree"
rule (``coarse_gpu.policy.io``) assigns new customers with it; ``tree_rules`` prints it as text.

``OTTree`` is the estimator (``coarse_gpu.policy.estimator``: fit(profit, candidates, X), assign(X) = the
stored tree, policy_), ``ot_tree`` the function that returns its Policy. The profit may be a
``FactoredProfit`` (the tree only reads the (N, K) profits of the K treatments); above ``max_fit_rows``
customers the tree is grown on a seeded sample (``coarse_gpu.policy.baselines``, "Large N").
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from coarse_gpu.discretize import discretize
from coarse_gpu.policy.clustering import MAX_FIT_ROWS, sample_rows
from coarse_gpu.policy.estimator import PolicyEstimator
from coarse_gpu.policy.policy import Policy
from coarse_gpu.policy.tree import apply_tree, check_tree_inputs

VARIANTS = ("distill", "policy")


def default_depth(k: int) -> int:
    """ceil(log2 K) + 1: deep enough that every one of the K treatments can own a leaf, with one level
    to spare for customers the first splits separate badly (at most 2**depth leaves)."""
    return int(math.ceil(math.log2(max(2, int(k))))) + 1


class OTTree(PolicyEstimator):
    """The OT's K treatments with a tree assignment (module docstring).

    k : number of treatments. variant : "distill" | "policy". depth : tree depth (default
    ``default_depth(k)``). min_samples_leaf : smallest segment. feature_names : names of the covariates
    for the rules. max_fit_rows : above it the tree is grown on a seeded sample of the customers and
    its leaves relabelled on all of them (``coarse_gpu.policy.baselines``, "Large N").
    discretize_options : keyword arguments of ``discretize`` when fit runs it (e.g. min_share,
    constraints, solver).
    fit(profit (N, M) dense or factored, candidates (M, d), X (N, p), discretization=None): an existing
    ``Discretization`` of this profit (else ``discretize`` runs with ``seed`` and ``discretize_options``).
    The Policy "ot_tree": treatments (K, d) = the OT's, assignment = the tree's leaf slot; info holds
    "tree" (arrays), "rules" (text), "variant", "depth", "ot_objective" (the OT assignment's estimated
    profit), "tree_objective" (the tree's), "candidate_index" (K,).
    Fitted: tree_ (arrays), depth_, rules_, candidate_index_, treatments_, labels_, policy_.
    assign(X (n, p)) -> ``apply_tree(X, tree_)``.
    """

    policy_name = "ot_tree"
    saved_rule = "tree"
    assign_input = "X"

    def __init__(self, *, k: int = 5, variant: str = "distill", depth: Optional[int] = None,
                 min_samples_leaf: int = 50, seed: int = 0, feature_names: Optional[Sequence[str]] = None,
                 max_fit_rows: Optional[int] = MAX_FIT_ROWS, discretize_options: Optional[dict] = None):
        self.k = k
        self.variant = variant
        self.depth = depth
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed
        self.feature_names = feature_names
        self.max_fit_rows = max_fit_rows
        self.discretize_options = discretize_options

    def fit(self, profit, candidates, X=None, discretization=None) -> "OTTree":
        if self.variant not in VARIANTS:
            raise ValueError(f"ot_tree: variant must be one of {VARIANTS}, got {self.variant!r}")
        view, x, c = check_tree_inputs("ot_tree", X, profit, candidates)
        depth = default_depth(self.k) if self.depth is None else int(self.depth)
        if depth < 1:
            raise ValueError(f"ot_tree: depth must be >= 1, got {depth}")
        res = discretization if discretization is not None else \
            discretize(view.source(), self.k, candidates=c, seed=self.seed, device="cpu",
                       **(self.discretize_options or {}))
        cols = np.asarray(res.candidate_index, dtype=np.int64)
        if np.any(cols < 0):
            raise ValueError("ot_tree: the discretization's treatments must lie on the candidate grid")
        U = view.columns(cols)  # (N, K) profit of each customer at each OT treatment
        rows = sample_rows(x.shape[0], self.max_fit_rows, self.seed)
        if self.variant == "distill":
            arrays = _distilled_tree(x, U, res.assignment, depth, self.min_samples_leaf, self.seed, rows)
        else:
            arrays = _policy_tree(x, U, depth, self.min_samples_leaf, self.seed, rows)
        slot = apply_tree(x, arrays)
        n = np.arange(x.shape[0])
        info = {"variant": self.variant, "depth": depth, "min_samples_leaf": int(self.min_samples_leaf),
                "tree": arrays, "rules": tree_rules(arrays, res.treatments, self.feature_names),
                "ot_objective": float(U[n, res.assignment].sum()), "tree_objective": float(U[n, slot].sum()),
                "candidate_index": cols.tolist()}
        if rows is not None:
            info["n_fit_rows"] = int(rows.size)
        self.tree_, self.depth_, self.rules_ = arrays, depth, info["rules"]
        return self._set_policy(Policy("ot_tree", res.treatments, slot, info), c)

    def _assign(self, X) -> np.ndarray:
        return apply_tree(X, self.tree_)


def ot_tree(X, profit, candidates, k: int, variant: str = "distill", depth: Optional[int] = None,
            min_samples_leaf: int = 50, seed: int = 0, feature_names: Optional[Sequence[str]] = None,
            discretization=None, max_fit_rows: Optional[int] = MAX_FIT_ROWS, **discretize_kwargs) -> Policy:
    """The OT's K treatments with a tree assignment (``OTTree``, which documents the arguments).

    X : (N, p) covariates (the model matrix). profit : (N, M) estimated profit at the M candidates, dense
    or factored. candidates : (M, d). discretize_kwargs : ``OTTree(discretize_options=...)``.
    Returns the Policy "ot_tree".
    """
    est = OTTree(k=k, variant=variant, depth=depth, min_samples_leaf=min_samples_leaf, seed=seed,
                 feature_names=feature_names, max_fit_rows=max_fit_rows, discretize_options=discretize_kwargs or None)
    return est.fit(profit, candidates, X, discretization=discretization).policy_


def _arrays(tr, leaf_slot: np.ndarray) -> dict:
    """A fitted tree's structure (sklearn ``tree_`` layout) in the stored-tree format, with every split
    whose two sides end in the same treatment collapsed into a leaf (the relabelled leaves often agree:
    such splits change nobody's treatment and only lengthen the rules)."""
    feature = np.asarray(tr.feature).astype(int)
    threshold = np.asarray(tr.threshold, dtype=np.float64)
    left = np.asarray(tr.children_left).astype(int)
    right = np.asarray(tr.children_right).astype(int)
    slot = np.asarray(leaf_slot).astype(int).copy()

    def collapse(node: int) -> None:
        if left[node] < 0:
            return
        collapse(left[node])
        collapse(right[node])
        lc, rc = left[node], right[node]
        if left[lc] < 0 and left[rc] < 0 and slot[lc] == slot[rc]:
            left[node] = right[node] = -1
            feature[node], threshold[node], slot[node] = -2, -2.0, slot[lc]

    collapse(0)
    return {"feature": feature.tolist(), "threshold": threshold.tolist(), "left": left.tolist(),
            "right": right.tolist(), "leaf_slot": slot.tolist()}


def _best_per_leaf(leaves: np.ndarray, U: np.ndarray, n_nodes: int) -> np.ndarray:
    """(n_nodes,) slot of largest total profit among each leaf's customers (-1 for inner nodes)."""
    S = np.zeros((n_nodes, U.shape[1]))
    np.add.at(S, leaves, U)
    out = np.full(n_nodes, -1, dtype=np.int64)
    used = np.unique(leaves)
    out[used] = S[used].argmax(1)
    return out


def _distilled_tree(x, U, assignment, depth, min_samples_leaf, seed, rows=None) -> dict:
    """Classification tree fitted to the OT assignment (on ``rows`` only, when given), leaves relabelled
    with their best treatment over every customer."""
    # what putting a customer in the wrong leaf costs, on average over the other treatments
    weight = U[np.arange(U.shape[0]), assignment] - U.mean(1)
    weight = np.maximum(weight, 0.0) + 1e-9 * (np.abs(U).mean() + 1.0)
    clf = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=min_samples_leaf, random_state=seed)
    if rows is None:
        clf.fit(x, assignment, sample_weight=weight)
    else:
        clf.fit(x[rows], np.asarray(assignment)[rows], sample_weight=weight[rows])
    leaves = clf.apply(x)
    return _arrays(clf.tree_, _best_per_leaf(leaves, U, clf.tree_.node_count))


def _policy_tree(x, U, depth, min_samples_leaf, seed, rows=None) -> dict:
    try:
        from econml.policy import PolicyTree  # here: econml is an optional extra ([real]), said below
    except ImportError as err:  # pragma: no cover - econml is in the [real] and [all] extras
        raise ImportError("ot_tree(variant='policy') needs econml (pip install 'coarse_gpu[real]' or econml)") from err
    tree = PolicyTree(max_depth=depth, min_samples_leaf=min_samples_leaf, honest=False, random_state=seed)
    if rows is None:
        tree.fit(x, U)
    else:
        tree.fit(x[rows], U[rows])
    leaves = np.asarray(tree.apply(x), dtype=np.int64)
    # each leaf's slot: the policy tree's own choice is the leaf's best total welfare, recomputed here
    return _arrays(tree.tree_, _best_per_leaf(leaves, U, tree.tree_.node_count))


def tree_rules(tree: dict, treatments=None, feature_names: Optional[Sequence[str]] = None,
               treatment_names: Optional[Sequence[str]] = None, precision: int = 4) -> str:
    """The stored tree as indented text: one "if <feature> <= <threshold>:" / "else:" per split and
    "-> segment s: <treatment>" per leaf. ``treatments`` (K, d) labels the leaves; feature_names
    and treatment_names (d,) name the covariates and the treatment dimensions."""
    feature, threshold = tree["feature"], tree["threshold"]
    left, right, slot = tree["left"], tree["right"], tree["leaf_slot"]
    T = None if treatments is None else np.asarray(treatments, dtype=np.float64)

    def fname(j: int) -> str:
        return str(feature_names[j]) if feature_names is not None else f"x[{j}]"

    def leaf(s: int) -> str:
        if T is None or s < 0:
            return f"-> segment {s}"
        if treatment_names is not None:
            desc = ", ".join(f"{n}={v:.{precision}g}" for n, v in zip(treatment_names, T[s]))
        else:
            desc = "[" + ", ".join(f"{v:.{precision}g}" for v in T[s]) + "]"
        return f"-> segment {s}: {desc}"

    lines: list[str] = []

    def walk(node: int, indent: int) -> None:
        pad = "    " * indent
        if left[node] < 0:
            lines.append(pad + leaf(int(slot[node])))
            return
        lines.append(f"{pad}if {fname(int(feature[node]))} <= {threshold[node]:.{precision}g}:")
        walk(int(left[node]), indent + 1)
        lines.append(f"{pad}else:  # {fname(int(feature[node]))} > {threshold[node]:.{precision}g}")
        walk(int(right[node]), indent + 1)

    walk(0, 0)
    return "\n".join(lines)


def _measure(n: int = 12000, ks=(2, 3, 4, 5, 6, 8), seed: int = 0) -> dict:
    """The module docstring's table: held-out share of the OT policy's incremental true profit kept."""
    # here: only this measurement needs the simulator (coarse_gpu.data loads pandas; the policy does not)
    from coarse_gpu.data.simulator import PromotionsSimulator
    from coarse_gpu.data.treatments import product_grid

    sim = PromotionsSimulator(n_customers=2 * n, seed=seed)
    data = sim.sample()
    cand = product_grid([np.linspace(0.0, 0.5, 11), np.linspace(0.0, 4.0, 9)])
    P = data.truth.profit(cand)
    tr, te = np.arange(n), np.arange(n, 2 * n)
    base = data.truth.profit(np.zeros((1, 2)))[te, 0].sum()
    out: dict = {}
    for k in ks:
        pol = {v: ot_tree(data.X[tr], P[tr], cand, k, variant=v, seed=seed) for v in VARIANTS}
        cols = np.asarray(pol["distill"].info["candidate_index"])
        Ute = P[te][:, cols]
        ot_val = Ute.max(1).sum()  # the OT rule on new customers: each takes its best of the K
        for v, p in pol.items():
            val = Ute[np.arange(te.size), apply_tree(data.X[te], p.info["tree"])].sum()
            out[(v, k)] = (val - base) / (ot_val - base)
    return out


if __name__ == "__main__":  # pragma: no cover - the measurement behind the module docstring
    res = _measure()
    for v in VARIANTS:
        print(v, " ".join(f"K={k}: {100 * res[(v, k)]:.1f}%" for (vv, k) in res if vv == v))
