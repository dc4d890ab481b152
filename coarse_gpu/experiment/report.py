"""Reports of a run: results.json (atomic), the terminal table, and the figures.

results.json keys that later tooling reads (keep stable):
``config, n_customers, k_values, full_personalization.oracle_profit,
methods.<method>.<K>.{treatments, oracle_profit, share_of_full, dr_value, dr_ci, segment_sizes},
timings_s.{train, discretize, ...}, device, versions``.
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from coarse_gpu.utils.io import atomic_write_bytes, atomic_write_json

# Display order and labels of the methods (the keys are the results.json contract).
METHOD_LABELS = {
    "ot": "OT discretizer",
    "kmeans_features": "k-means on features",
    "kmeans_preferences": "k-means on preferences",
    "kmeans_profiles": "k-means on profit vectors",
    "policy_tree": "policy tree (depth log2 K)",
    "grid": "grid search (arms)",
    "single_best": "one treatment for all",
}


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write results.json atomically (a reader or a killed run never sees half a file)."""
    return atomic_write_json(path, results)


def load_results(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _method_order(results: Mapping[str, Any]) -> list[str]:
    known = [m for m in METHOD_LABELS if m in results.get("methods", {})]
    return known + sorted(m for m in results.get("methods", {}) if m not in METHOD_LABELS)


def format_table(results: Mapping[str, Any]) -> str:
    """Plain-text table: share of full personalization's incremental profit (oracle) per method and K,
    then the doubly robust value (mean profit per customer) with its CI."""
    k_values = [str(k) for k in results.get("k_values", [])]
    methods = _method_order(results)
    width = max([len(METHOD_LABELS.get(m, m)) for m in methods] + [24])
    lines = []
    fp = results.get("full_personalization", {})
    head = "Share of full personalization's incremental profit recovered (true profits, held-out customers)"
    lines.append(head)
    lines.append(f"{'method':<{width}} " + " ".join(f"{'K=' + k:>8}" for k in k_values))
    for m in methods:
        cells = []
        for k in k_values:
            r = results["methods"][m].get(k)
            cells.append(f"{100 * r['share_of_full']:7.2f}%" if r and r.get("share_of_full") is not None else f"{'-':>8}")
        lines.append(f"{METHOD_LABELS.get(m, m):<{width}} " + " ".join(cells))
    if fp.get("oracle_profit") is None and fp.get("dr_value") is not None:  # no simulator (your own data)
        lines.append(f"(no true profits without a simulator: see the doubly robust values below; full "
                     f"personalization {fp['dr_value']:.4f}, everyone at control {fp.get('control_dr_value', float('nan')):.4f})")
    if fp.get("oracle_profit") is not None:
        lines.append(
            f"(full personalization: {fp['oracle_profit']:.4f} per customer; no treatment: "
            f"{fp.get('control_oracle_profit', float('nan')):.4f}; the model's own per-customer argmax keeps "
            f"{100 * fp.get('estimated_policy_share_of_full', float('nan')):.2f}%)"
        )
    if any(r.get("expected_share_of_full") is not None for m in methods for r in results["methods"][m].values()):
        lines.append("")
        lines.append("Share of expected incremental profit (the paper's measure: the model's estimates for the policy, "
                     "no treatment and full personalization)")
        lines.append(f"{'method':<{width}} " + " ".join(f"{'K=' + k:>8}" for k in k_values))
        for m in methods:
            cells = []
            for k in k_values:
                r = results["methods"][m].get(k)
                v = r.get("expected_share_of_full") if r else None
                cells.append(f"{100 * v:7.2f}%" if v is not None else f"{'-':>8}")
            lines.append(f"{METHOD_LABELS.get(m, m):<{width}} " + " ".join(cells))
    lines.append("")
    lines.append("Doubly robust value per customer from held-out randomized data [95% CI] (no simulator needed)")
    lines.append(f"{'method':<{width}} " + " ".join(f"{'K=' + k:>22}" for k in k_values))
    for m in methods:
        cells = []
        for k in k_values:
            r = results["methods"][m].get(k)
            if r and r.get("dr_value") is not None:
                lo, hi = r["dr_ci"]
                cells.append(f"{r['dr_value']:7.3f} [{lo:6.3f},{hi:6.3f}]")
            else:
                cells.append(f"{'-':>22}")
        lines.append(f"{METHOD_LABELS.get(m, m):<{width}} " + " ".join(cells))
    return "\n".join(lines)


def _save_figure(fig, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_share_vs_k(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """PNG: share of full personalization's incremental profit recovered vs K, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    markers = {"ot": "o", "kmeans_features": "s", "kmeans_preferences": "^", "grid": "D"}
    for m in _method_order(results):
        pts = sorted((int(k), r["share_of_full"]) for k, r in results["methods"][m].items()
                     if r.get("share_of_full") is not None)
        if not pts:
            continue
        label = METHOD_LABELS.get(m, m)
        if m == "single_best":
            ax.axhline(100 * pts[0][1], color="grey", ls=":", lw=1.2, label=f"{label} (K=1)")
            continue
        ks, shares = zip(*pts)
        ax.plot(ks, [100 * s for s in shares], marker=markers.get(m, "x"), lw=2 if m == "ot" else 1.3,
                label=label)
    ax.axhline(100.0, color="black", lw=0.8, ls="--", label="full personalization")
    ax.set_xlabel("number of distinct treatments K")
    ax.set_ylabel("% of full personalization's incremental profit")
    ks_all = [int(k) for k in results.get("k_values", [])]
    if ks_all:
        ax.set_xticks(ks_all)
    lows = [100 * r["share_of_full"] for m in results["methods"] for r in results["methods"][m].values()
            if r.get("share_of_full") is not None and math.isfinite(r["share_of_full"])]
    if lows:
        ax.set_ylim(max(0.0, min(lows) - 5.0), 101.5)
    n = results.get("n_eval") or results.get("n_customers")
    ax.set_title(f"Coarse personalization: profit kept vs K ({n} held-out customers)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out = _save_figure(fig, path)
    plt.close(fig)
    return out


def plot_treatments(results: Mapping[str, Any], path: str | os.PathLike, k: int) -> Path | None:
    """PNG: the K treatments each method chose in a 2-D treatment space, marker area = segment share.

    Returns None when the treatment space is not 2-D or no method has that K.
    """
    names = results.get("treatment_names") or []
    if len(names) != 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.4))
    arms = results.get("arms")
    if arms is not None and len(arms):
        ax.scatter([a[0] for a in arms], [a[1] for a in arms], marker="+", color="grey", s=40,
                   label="experimental arms")
    markers = {"ot": "o", "kmeans_features": "s", "kmeans_preferences": "^", "grid": "D", "single_best": "*"}
    drawn = False
    for m in _method_order(results):
        r = results["methods"][m].get(str(k)) or (results["methods"][m].get("1") if m == "single_best" else None)
        if not r:
            continue
        sizes = list(r.get("segment_sizes") if r.get("segment_sizes") is not None else [1] * len(r["treatments"]))
        total = max(sum(sizes), 1)
        ax.scatter([t[0] for t in r["treatments"]], [t[1] for t in r["treatments"]],
                   s=[20 + 600 * s / total for s in sizes], marker=markers.get(m, "x"), alpha=0.55,
                   label=METHOD_LABELS.get(m, m))
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"Treatments chosen at K={k} (area = share of customers)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", markerscale=0.6)
    out = _save_figure(fig, path)
    plt.close(fig)
    return out
