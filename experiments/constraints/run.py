#!/usr/bin/env python
"""The constraints firms face, on the built-in promotions simulator with its TRUE profits.

No model is trained: the discretizer runs on the simulator's true profit pi_i(t) at an 11 x 9 grid of
(discount, weeks), so what the tables show is what each constraint costs, not estimation error. Costs
are the main job's (``data.meta["treatment_unit_cost"]``: discount x mean revenue per customer +
contact cost x weeks, coarse_gpu.data.simulator).

  1. budget sweep at K = --k-sweep: the mean cost per customer bounded by a share of what the
     unconstrained policy spends; profit, cost and the budget's dual per customer (the profit one
     more unit of budget per customer buys);
  2. price of constraints at K = 2..8: a budget (--budget-share of the unconstrained K=5 spend) and a
     region-parity band (the mean weeks of any two regions within --max-gap), each alone and together;
     constrained profit next to the unconstrained one (the customers the policy is built on);
  3. interpretability at K = 2..8: ot (each held-out customer takes its best of the K treatments: needs
     the profit model), ot_tree (the same K treatments, a depth ceil(log2 K)+1 tree distilled from the OT
     assignment; and variant="policy", an EconML policy tree on the K treatments' profits) and
     policy_tree (EconML, over all candidates, depth floor(log2 K)), as the share of full personalization's
     incremental true profit on held-out customers.

    python experiments/constraints/run.py                 # 4,000 + 4,000 customers (a few minutes, 1 core)
    python experiments/constraints/run.py --quick         # 1,500 + 1,500, K = 2, 4

Writes --out/results.json, table.md, price_of_constraints.png and budget_sweep.png.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from coarse_gpu.data.simulator import PromotionsSimulator  # noqa: E402
from coarse_gpu.data.treatments import product_grid  # noqa: E402
from coarse_gpu.discretize import Constraint, discretize  # noqa: E402
from coarse_gpu.experiment.report import _save_figure, plot_price_of_constraints  # noqa: E402
from coarse_gpu.policy.ot_tree import ot_tree  # noqa: E402
from coarse_gpu.policy.tree import apply_tree, policy_tree  # noqa: E402
from coarse_gpu.utils.io import atomic_write_json, atomic_write_text  # noqa: E402


def solve(P, cand, k, constraints, seed):
    """(Discretization, seconds) of the grid OT at K under the constraints."""
    t0 = time.perf_counter()
    res = discretize(P, k, candidates=cand, constraints=constraints or None, n_restarts=4, seed=seed, device="cpu")
    return res, time.perf_counter() - t0


def budget_constraint(n, cost, budget):
    return Constraint(np.full(n, 1.0 / n), cost, hi=budget, name="budget")


def parity_constraints(region, cand_weeks, gap):
    """Pairwise bands: |mean weeks(g) - mean weeks(h)| <= gap for every pair of regions."""
    levels = sorted(set(region.tolist()))
    out = []
    for a in range(len(levels)):
        for b in range(a + 1, len(levels)):
            ga, gb = region == levels[a], region == levels[b]
            w = ga / ga.sum() - gb / gb.sum()
            out.append(Constraint(w, cand_weeks, lo=-gap, hi=gap, name=f"parity region={levels[a]} vs {levels[b]}"))
    return out


def row(res, n, cost, names=None):
    """One policy's per-customer profit and mean cost, and its constraints' values and duals per customer."""
    cols = np.asarray(res.candidate_index)
    rows = [{**r, "dual_per_customer": r["dual"] / n} for r in res.info.get("constraints", [])]
    return {"profit": res.objective / n, "mean_cost": float(cost[cols][res.assignment].mean()),
            "treatments": res.treatments.tolist(), "constraints": rows}


def budget_sweep(P, cand, cost, k, shares, seed):
    n = P.shape[0]
    free, _ = solve(P, cand, k, None, seed)
    spend = row(free, n, cost)["mean_cost"]
    out = {"k": k, "unconstrained": row(free, n, cost), "points": []}
    for s in shares:
        res, dt = solve(P, cand, k, [budget_constraint(n, cost, s * spend)], seed)
        r = row(res, n, cost)
        out["points"].append({"budget_share": s, "budget": s * spend, **r, "seconds": dt})
        print(f"budget {100 * s:3.0f}% of {spend:.3f}: profit {r['profit']:.4f} (unconstrained "
              f"{out['unconstrained']['profit']:.4f}), dual/customer {r['constraints'][0]['dual_per_customer']:.4f}, "
              f"{dt:.1f}s", flush=True)
    return out


def price_table(P, cand, cost, region, ks, budget, gap, seed):
    """{case: {K: {constrained, unconstrained, cost, constraints}}} with the figure's layout."""
    n = P.shape[0]
    cases = {"budget": [budget_constraint(n, cost, budget)],
             "parity": parity_constraints(region, cand[:, 1], gap)}
    cases["budget+parity"] = cases["budget"] + cases["parity"]
    out = {c: {} for c in cases}
    for k in ks:
        free, _ = solve(P, cand, k, None, seed)
        fr = row(free, n, cost)
        for case, cons in cases.items():
            res, dt = solve(P, cand, k, cons, seed)
            r = row(res, n, cost)
            out[case][str(k)] = {"constrained": {"oracle_profit": r["profit"], "mean_cost": r["mean_cost"]},
                                 "unconstrained": {"oracle_profit": fr["profit"], "mean_cost": fr["mean_cost"]},
                                 "cost": {"oracle_profit": fr["profit"] - r["profit"]},
                                 "constraints": r["constraints"], "seconds": dt}
            print(f"K={k} {case:<14} profit {r['profit']:.4f} vs {fr['profit']:.4f} ({dt:.1f}s)", flush=True)
    return out


def interpretability(data, P, cand, ks, tr, te, seed):
    """Held-out share of full personalization's incremental true profit: ot, ot_tree, policy_tree."""
    Pte = P[te]
    base = float(data.truth.profit(np.zeros((1, 2)))[te, 0].mean())
    full = float(Pte.max(1).mean())
    share = lambda v: (v - base) / (full - base)  # noqa: E731
    out = {}
    for k in ks:
        res, _ = solve(P[tr], cand, k, None, seed)
        cols = np.asarray(res.candidate_index)
        tree = ot_tree(data.X[tr], P[tr], cand, k, discretization=res, seed=seed, feature_names=data.feature_names)
        tree_p = ot_tree(data.X[tr], P[tr], cand, k, variant="policy", discretization=res, seed=seed,
                         feature_names=data.feature_names)
        ptree = policy_tree(data.X[tr], P[tr], cand, k, seed=seed, feature_names=data.feature_names)
        rows_te = np.arange(te.size)
        ot_v = float(Pte[:, cols].max(1).mean())
        tree_v = float(Pte[:, cols][rows_te, apply_tree(data.X[te], tree.info["tree"])].mean())
        tree_pv = float(Pte[:, cols][rows_te, apply_tree(data.X[te], tree_p.info["tree"])].mean())
        pcols = np.array([int(np.flatnonzero(np.isclose(cand, t).all(1))[0]) for t in ptree.treatments])
        ptree_v = float(Pte[:, pcols][rows_te, apply_tree(data.X[te], ptree.info["tree"])].mean())
        out[str(k)] = {"ot": share(ot_v), "ot_tree": share(tree_v), "ot_tree_policy": share(tree_pv),
                       "policy_tree": share(ptree_v),
                       "ot_tree_cost_vs_ot": ot_v - tree_v, "rules": tree.info["rules"]}
        print(f"K={k}: ot {100 * share(ot_v):.2f}%  ot_tree {100 * share(tree_v):.2f}%  ot_tree(policy) "
              f"{100 * share(tree_pv):.2f}%  policy_tree "
              f"{100 * share(ptree_v):.2f}%", flush=True)
    return out


def sweep_figure(sweep, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sweep["points"]
    fig, (ax, axd) = plt.subplots(1, 2, figsize=(10, 3.8))
    b = [p["budget"] for p in pts]
    ax.plot(b, [p["profit"] for p in pts], marker="o", color="tab:red", label="with the budget")
    ax.axhline(sweep["unconstrained"]["profit"], color="black", ls="--", label="unconstrained")
    ax.set_xlabel("budget: mean cost per customer")
    ax.set_ylabel("true profit per customer")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"Budget sweep, K={sweep['k']}", fontsize=9)
    axd.plot(b, [p["constraints"][0]["dual_per_customer"] for p in pts], marker="o")
    axd.set_xlabel("budget: mean cost per customer")
    axd.set_ylabel("dual: profit per unit of budget")
    axd.grid(alpha=0.3)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)


def markdown(res) -> str:
    lines = ["# Constraints on the promotions simulator (true profits)", "",
             f"{res['n_fit']} customers to build the policies on, {res['n_held_out']} held out; "
             f"runtime {res['seconds']:.0f} s.", "", f"## Budget sweep at K={res['sweep']['k']}", "",
             "| budget (share of unconstrained spend) | budget | profit / customer | unconstrained | dual / customer |",
             "| --- | --- | --- | --- | --- |"]
    for p in res["sweep"]["points"]:
        lines.append(f"| {100 * p['budget_share']:.0f} % | {p['budget']:.3f} | {p['profit']:.4f} | "
                     f"{res['sweep']['unconstrained']['profit']:.4f} | {p['constraints'][0]['dual_per_customer']:.4f} |")
    for case, by_k in res["price"].items():
        lines += ["", f"## Price of `{case}` (profit per customer)", "",
                  "| K | constrained | unconstrained | cost | binding duals / customer |", "| --- | --- | --- | --- | --- |"]
        for k, p in by_k.items():
            duals = ", ".join(f"{r['name']}: {r['dual_per_customer']:.3g}" for r in p["constraints"] if r["binding"])
            lines.append(f"| {k} | {p['constrained']['oracle_profit']:.4f} | {p['unconstrained']['oracle_profit']:.4f} | "
                         f"{p['cost']['oracle_profit']:.4f} | {duals or 'none'} |")
    lines += ["", "## Interpretability: held-out share of full personalization's incremental profit", "",
              "| K | ot | ot_tree (distilled) | ot_tree (policy tree on the K) | policy_tree | ot_tree cost vs ot "
              "(profit / customer) |", "| --- | --- | --- | --- | --- | --- |"]
    for k, r in res["interpretability"].items():
        lines.append(f"| {k} | {100 * r['ot']:.2f} % | {100 * r['ot_tree']:.2f} % | {100 * r['ot_tree_policy']:.2f} % | "
                     f"{100 * r['policy_tree']:.2f} % | "
                     f"{r['ot_tree_cost_vs_ot']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=4000, help="customers to build the policies on (as many held out)")
    p.add_argument("--k", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8])
    p.add_argument("--k-sweep", type=int, default=5)
    p.add_argument("--budget-share", type=float, default=0.5, help="budget = this share of the K=5 spend")
    p.add_argument("--max-gap", type=float, default=0.25, help="largest gap in mean weeks between two regions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="1,500 customers, K = 2, 4")
    p.add_argument("--out", default="experiments/results/constraints")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.k, a.k_sweep = 1500, [2, 4], 4
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = PromotionsSimulator(n_customers=2 * a.n, seed=a.seed).sample()
    cand = product_grid([np.linspace(0.0, 0.5, 11), np.linspace(0.0, 4.0, 9)])
    cost = cand @ np.asarray(data.meta["treatment_unit_cost"])
    P = data.truth.profit(cand)
    tr, te = np.arange(a.n), np.arange(a.n, 2 * a.n)
    region = data.features["region"].astype(str).to_numpy()[tr]
    sweep = budget_sweep(P[tr], cand, cost, a.k_sweep, [0.25, 0.5, 0.75, 1.0], a.seed)
    spend5 = row(solve(P[tr], cand, 5, None, a.seed)[0], a.n, cost)["mean_cost"]
    price = price_table(P[tr], cand, cost, region, a.k, a.budget_share * spend5, a.max_gap, a.seed)
    interp = interpretability(data, P, cand, a.k, tr, te, a.seed)
    res = {"n_fit": a.n, "n_held_out": a.n, "seed": a.seed, "unit_cost": data.meta["treatment_unit_cost"],
           "budget": a.budget_share * spend5, "max_gap_weeks": a.max_gap, "sweep": sweep, "price": price,
           "interpretability": interp, "seconds": time.perf_counter() - t0}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", res)
    atomic_write_text(out / "table.md", markdown(res))
    plot_price_of_constraints({"price_of_constraints": price["budget+parity"]}, out / "price_of_constraints.png")
    sweep_figure(sweep, out / "budget_sweep.png")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
