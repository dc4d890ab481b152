"""Reports of a run: results.json (atomic), the terminal table, and the figures.

results.json keys that later tooling reads (keep stable):
``config, n_customers, k_values, full_personalization.oracle_profit,
methods.<method>.<K>.{treatments, oracle_profit, share_of_full, dr_value, dr_ci, segment_sizes, effective_k},
timings_s.{train, discretize, ...}, device, versions``. A cell's numbers are the run's metrics
(``evaluation.metrics``, coarse_gpu.evaluate.metrics); a metric beyond the built-ins adds its keys to each
cell, is listed under ``extra_metrics`` and gets a table of its own.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from coarse_gpu.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

# Display order and labels of the methods (the keys are the results.json contract).
METHOD_LABELS = {
    "ot": "OT discretizer",
    "ot_tree": "OT treatments, tree segments",
    "kmeans_features": "k-means on features",
    "kmeans_preferences": "k-means on preferences",
    "kmeans_profiles": "k-means on profit vectors",
    "policy_tree": "policy tree (depth log2 K)",
    "grid": "grid search (arms)",
    "single_best": "one treatment for all",
}
#: the row / line of the discretizer run on the TRUE profits (results.json "true_profit_ceiling")
CEILING_LABEL = "true-profit ceiling"


def write_results(path: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write results.json atomically (a reader or a killed run never sees half a file)."""
    return atomic_write_json(path, results)


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike,
                 echo: bool = True) -> tuple[Path, Path | None, int]:
    """table.txt (also printed when ``echo``) and the figures into ``out_dir``: share_vs_k.png,
    treatments_k<K>.png (K = 5 if run, else the largest) and, with constraints, price_of_constraints.png.
    Returns (share png, treatments png or None, the K plotted). The CLI and ``CoarsePersonalizer.run``."""
    out_dir = Path(out_dir)
    table = format_table(results)
    atomic_write_text(out_dir / "table.txt", table + "\n")
    if echo:
        print("\n" + table + "\n", flush=True)
    share_png = plot_share_vs_k(results, out_dir / "share_vs_k.png")
    plot_price_of_constraints(results, out_dir / "price_of_constraints.png")  # None without constraints
    k_plot = 5 if 5 in results["k_values"] else max(results["k_values"])
    return share_png, plot_treatments(results, out_dir / f"treatments_k{k_plot}.png", k_plot), k_plot


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
    who = ("all customers, out-of-fold estimates" if results.get("estimates") == "out-of-fold"
           else "held-out customers")
    lines.extend(_selection_lines(results))
    lines.append(f"Share of full personalization's incremental profit recovered (true profits, {who})")
    lines.append(f"{'method':<{width}} " + " ".join(f"{'K=' + k:>8}" for k in k_values))
    lines.extend(_method_rows(results, methods, k_values, width, _share_cell("share_of_full")))
    ceiling = (results.get("true_profit_ceiling") or {}).get("share_of_full") or {}
    if ceiling:
        cells = [f"{100 * ceiling[k]:7.2f}%" if k in ceiling else f"{'-':>8}" for k in k_values]
        lines.append(f"{CEILING_LABEL:<{width}} " + " ".join(cells))
    if fp.get("oracle_profit") is None and fp.get("dr_value") is not None:  # no simulator (your own data)
        lines.append(f"(no true profits without a simulator: see the doubly robust values below; full "
                     f"personalization {fp['dr_value']:.4f}, everyone at control {fp.get('control_dr_value', float('nan')):.4f})")
    if fp.get("oracle_profit") is not None:
        lines.append(
            f"(full personalization: {fp['oracle_profit']:.4f} per customer; no treatment: "
            f"{fp.get('control_oracle_profit', float('nan')):.4f}; the model's own per-customer argmax keeps "
            f"{100 * fp.get('estimated_policy_share_of_full', float('nan')):.2f}%)"
        )
    if ceiling:
        lines.append(f"({CEILING_LABEL}: the OT discretizer on the simulator's TRUE profits, what K treatments can "
                     f"keep at best; no model behind it)")
    if any(r.get("expected_share_of_full") is not None for m in methods for r in results["methods"][m].values()):
        lines.append("")
        lines.append("Share of expected incremental profit (the paper's measure: the model's estimates for the policy, "
                     "no treatment and full personalization)")
        lines.append(f"{'method':<{width}} " + " ".join(f"{'K=' + k:>8}" for k in k_values))
        lines.extend(_method_rows(results, methods, k_values, width, _share_cell("expected_share_of_full")))
    lines.append("")
    lines.append("Doubly robust value per customer from the randomized data, held-out estimates [95% CI] "
                 "(no simulator needed)")
    lines.append(f"{'method':<{width}} " + " ".join(f"{'K=' + k:>22}" for k in k_values))
    lines.extend(_method_rows(results, methods, k_values, width, _dr_cell))
    lines.extend(_effective_k_lines(results, methods, k_values))
    lines.extend(_extra_metric_lines(results, methods, k_values, width))
    lines.extend(_labelled_lines(results, methods, k_values))
    lines.extend(_comparison_lines(results, k_values, width))
    lines.extend(_price_lines(results, k_values))
    lines.extend(_tree_lines(results, k_values))
    return "\n".join(lines)


def _share_cell(key: str):
    """A table cell printing ``key`` of a result cell as a percentage, "-" where it is missing."""
    def cell(r) -> str:
        v = r.get(key) if r else None
        return f"{100 * v:7.2f}%" if v is not None else f"{'-':>8}"
    return cell


def _dr_cell(r) -> str:
    if r and r.get("dr_value") is not None:
        lo, hi = r["dr_ci"]
        return f"{r['dr_value']:7.3f} [{lo:6.3f},{hi:6.3f}]"
    return f"{'-':>22}"


def _extra_metric_lines(results: Mapping[str, Any], methods: list, k_values: list[str], width: int) -> list[str]:
    """A table per metric beyond the built-ins (``evaluation.metrics``; results.json "extra_metrics" names
    each one's keys): its value per method and K, with its CI where it has one."""
    out: list[str] = []
    for name, rec in (results.get("extra_metrics") or {}).items():
        key, ci_key = rec["keys"][0], rec["keys"][1] if len(rec["keys"]) > 1 else None

        def cell(r, key=key, ci_key=ci_key) -> str:
            v = r.get(key) if r else None
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return f"{'-':>22}"
            ci = r.get(ci_key) if ci_key else None
            return f"{v:7.3f} [{ci[0]:6.3f},{ci[1]:6.3f}]" if ci else f"{v:22.4f}"
        out += ["", f"Metric {name}" + (f": {rec['description']}" if rec.get("description") else ""),
                f"{'method':<{width}} " + " ".join(f"{'K=' + k:>22}" for k in k_values)]
        out.extend(_method_rows(results, methods, k_values, width, cell))
    return out


def _method_rows(results: Mapping[str, Any], methods: list, k_values: list, width: int, cell) -> list[str]:
    """One line per method: its label, then ``cell(result cell or None)`` for every K."""
    return [f"{METHOD_LABELS.get(m, m):<{width}} " + " ".join(cell(results["methods"][m].get(k)) for k in k_values)
            for m in methods]


def effective_k(cell: Mapping[str, Any]) -> int | None:
    """Non-empty segments of a result cell: ``effective_k``, else counted from ``segment_sizes`` (runs
    written before the key existed); None without either."""
    if cell.get("effective_k") is not None:
        return int(cell["effective_k"])
    sizes = cell.get("segment_sizes")
    return None if sizes is None else int(np.count_nonzero(np.asarray(sizes)))


def _labelled_lines(results: Mapping[str, Any], methods: list, k_values: list[str]) -> list[str]:
    """The OT treatments in the user's labels when a dimension is categorical, and a flag for every policy
    that offers a combination no customer received (data.allow_unseen_combinations=true: extrapolated)."""
    lines = []
    kinds = results.get("treatment_kinds") or []
    if any(d.get("kind") == "categorical" for d in kinds):
        names = [d["name"] for d in kinds]
        for k in k_values:
            cell = results["methods"].get("ot", {}).get(k)
            if cell and cell.get("treatments_labelled"):
                shown = "; ".join(", ".join(f"{n}={v}" for n, v in zip(names, t)) for t in cell["treatments_labelled"])
                lines.append(f"(OT treatments at K={k}: {shown})")
    flagged = [f"{METHOD_LABELS.get(m, m)} K={k}" for m in methods for k in k_values
               if (results["methods"][m].get(k) or {}).get("extrapolated")]
    if flagged:
        unseen = results.get("unseen_combinations") or {}
        lines.append(f"(EXTRAPOLATED: data.allow_unseen_combinations=true, and {', '.join(flagged)} offer a "
                     f"combination no customer received, of {unseen.get('candidates')}: their profits are the "
                     "model's extrapolation and their doubly robust values the model's estimate alone)")
    return [""] + lines if lines else []


def _effective_k_lines(results: Mapping[str, Any], methods: list, k_values: list[str]) -> list[str]:
    """A flag for every policy that leaves segments empty: it offers fewer treatments than its K."""
    short = []
    for m in methods:
        for k in k_values:
            cell = results["methods"][m].get(k)
            eff = effective_k(cell) if cell else None
            if eff is not None and eff < int(k):
                short.append(f"{METHOD_LABELS.get(m, m)} K={k}: {eff}")
    if not short:
        return []
    return [f"(empty segments: effective K, the number of segments that serve someone, is below K for "
            f"{'; '.join(short)})"]


def _measure(cell: Mapping[str, Any]) -> str:
    """The per-customer profit a comparison uses: true profit on simulated data, else the DR value."""
    return "oracle_profit" if cell.get("oracle_profit") is not None else "dr_value"


def _price_lines(results: Mapping[str, Any], k_values: list[str]) -> list[str]:
    """Per K: the constrained OT policy's profit next to the unconstrained one, and each constraint's
    value and dual multiplier per customer (the profit one more unit of its bound buys)."""
    price = results.get("price_of_constraints") or {}
    if not price:
        return []
    first = next(iter(price.values()))
    m = _measure(first["constrained"])
    what = "true profit" if m == "oracle_profit" else "doubly robust value"
    out = ["", f"Price of the constraints (OT discretizer, {what} per customer; dual = profit per customer one "
               "more unit of the bound buys)"]
    for k in k_values:
        p = price.get(k)
        if not p:
            continue
        con, unc, cost = p["constrained"][m], p["unconstrained"][m], p["cost"][m]
        duals = ", ".join(f"{r['name']}: value {r['value']:.4g}, dual {r['dual_per_customer']:.4g}"
                          for r in p["constraints"] if r.get("binding") or r["name"] == "budget")
        out.append(f"  K={k}: constrained {con:.4f}, unconstrained {unc:.4f}, cost {cost:.4f}"
                   + (f"; {duals}" if duals else "; no constraint binds"))
    return out


def _tree_lines(results: Mapping[str, Any], k_values: list[str]) -> list[str]:
    """ot_tree: the profit it gives up against ot at every K, then its rules."""
    cells = results.get("methods", {}).get("ot_tree") or {}
    if not cells:
        return []
    out = ["", "Segments a marketer can read (ot_tree): profit per customer given up against the OT assignment"]
    for k in k_values:
        c = cells.get(k)
        if c and c.get("cost_vs_ot"):
            cost = c["cost_vs_ot"]
            m = "oracle_profit" if cost.get("oracle_profit") is not None else "dr_value"
            out.append(f"  K={k}: {cost[m]:.4f} ({'true profit' if m == 'oracle_profit' else 'DR value'}), "
                       f"{cost['expected_profit']:.4f} (estimated)")
    for k in k_values:
        c = cells.get(k)
        if c and c.get("rules"):
            out.append(f"ot_tree rules at K={k}:")
            out.extend("  " + line for line in c["rules"].splitlines())
    return out


def _selection_lines(results: Mapping[str, Any]) -> list[str]:
    """The step-1 model choice: each candidate's held-out decision loss (lower is better) with its se."""
    sel = results.get("model_selection") or {}
    cands = sel.get("candidates") or {}
    if not cands:
        return []
    what = sel.get("criterion_text") or ("decision loss on out-of-fold estimates, {n} folds; lower is better; DR "
                                          "value of each candidate's per-customer argmax policy")
    out = [f"Step 1 model: {sel.get('winner')} ({what.format(n=sel.get('n_folds'))})"]
    width = max(len(c) for c in cands) + 2
    for c, r in sorted(cands.items(), key=lambda kv: kv[1]["decision_loss"]):
        mark = " <- chosen" if c == sel.get("winner") else ""
        if c != sel.get("winner") and c == sel.get("best_by_loss"):
            mark = " <- lowest loss"
        value = "" if r.get("policy_value") is None else \
            f"   argmax value {r['policy_value']:.4f} (se {r['policy_value_se']:.2g})"
        out.append(f"  {c:<{width}} loss {r['decision_loss']:.5g} (se {r['se']:.2g}, vs chosen "
                   f"{r['se_diff_vs_winner']:.2g}){value}{mark}")
    if sel.get("rule"):
        best = sel.get("best_by_loss")
        why = (f"{sel['winner']} is within one standard error of the lowest loss ({best}): nothing to personalize"
               if best and best != sel.get("winner") else "the lowest loss is more than one standard error better")
        out.append(f"  rule: {sel['rule']}; {why}")
    return out + [""]


def _comparison_lines(results: Mapping[str, Any], k_values: list[str], width: int) -> list[str]:
    """ot minus each baseline, DR value per customer with a paired bootstrap CI."""
    comp = results.get("comparisons") or {}
    pairs = sorted({p for k in k_values for p in (comp.get(k) or {})})
    if not pairs:
        return []
    out = ["", "OT minus each baseline: doubly robust value per customer [95% paired CI]",
           f"{'baseline':<{width}} " + " ".join(f"{'K=' + k:>22}" for k in k_values)]
    for p in pairs:
        cells = []
        for k in k_values:
            c = (comp.get(k) or {}).get(p)
            cells.append(f"{c['dr_value']:7.3f} [{c['dr_ci'][0]:6.3f},{c['dr_ci'][1]:6.3f}]" if c else f"{'-':>22}")
        m = p[len("ot_minus_"):]
        out.append(f"{METHOD_LABELS.get(m, m):<{width}} " + " ".join(cells))
    return out


def _pyplot():
    """matplotlib.pyplot on the Agg backend (the figures go to files; no display is needed)."""
    import matplotlib  # here: matplotlib loads only to draw figures (the results table needs none)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use(): pyplot takes its backend when first imported

    return plt


def _save_figure(fig, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_share_vs_k(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """PNG: share of full personalization's incremental profit recovered vs K, one line per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.6, 4.2))
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
        # The paper's method on top: where a baseline ties it (grid, whenever the estimates put every
        # segment's optimum on an arm) the baseline shows as a wide pale band under the OT line.
        style = {"lw": 2.2, "zorder": 5} if m == "ot" else \
            ({"lw": 5, "alpha": 0.35, "zorder": 3} if m == "grid" else {"lw": 1.3, "zorder": 4})
        ax.plot(ks, [100 * s for s in shares], marker=markers.get(m, "x"), label=label, **style)
    ceiling = (results.get("true_profit_ceiling") or {}).get("share_of_full") or {}
    if ceiling:  # what K treatments can keep at best (true profits): the gap below it is the model's cost
        ck = sorted((int(k), v) for k, v in ceiling.items())
        ax.plot([k for k, _ in ck], [100 * v for _, v in ck], color="black", lw=1.0, ls="-.", marker=".",
                ms=5, zorder=2, label=f"{CEILING_LABEL} (OT on true profits)")
    argmax = (results.get("full_personalization") or {}).get("estimated_policy_share_of_full")
    if argmax is not None and math.isfinite(argmax):
        ax.axhline(100 * argmax, color="tab:blue", lw=0.9, ls=(0, (1, 2)), zorder=2,
                   label="model's per-customer argmax (any K)")
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
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # off the data
    fig.tight_layout()
    out = _save_figure(fig, path)
    plt.close(fig)
    return out


def plot_treatments(results: Mapping[str, Any], path: str | os.PathLike, k: int) -> Path | None:
    """PNG: the K treatments the methods chose at K, over the heatmap of where the customers' estimated
    best treatments lie (marker area and label = segment share), and each method's segment sizes.

    Left panel: the OT discretizer and the two strongest baselines (k-means on preferences, grid) over
    the heatmap of ``results["ideal_treatments"]``. Right panel: every method's segment shares at K as
    stacked bars. Returns None when the treatment space is not 2-D or no method has that K.
    """
    names = results.get("treatment_names") or []
    kinds = results.get("treatment_kinds") or []
    cat = [j for j, r in enumerate(kinds) if r.get("kind") == "categorical" and r.get("labels")]
    if cat and len(names) in (2, 3):  # labels are no axis: one panel per label
        return plot_treatment_panels(results, path, k, cat[0])
    if len(names) != 2:
        return None
    rows = []
    for m in _method_order(results):
        r = results["methods"][m].get(str(k)) or (results["methods"][m].get("1") if m == "single_best" else None)
        if r:
            rows.append((m, r))
    if not rows:
        return None
    plt = _pyplot()
    fig, (ax, axb) = plt.subplots(1, 2, figsize=(11.5, 4.6), gridspec_kw={"width_ratios": [1.35, 1.0]})
    hist = results.get("ideal_treatments")
    if hist:
        counts = np.asarray(hist["counts"], dtype=float)
        share = counts / max(counts.sum(), 1.0)
        masked = np.ma.masked_where(share <= 0, share)
        from matplotlib.colors import LogNorm  # here: as matplotlib itself, only to draw

        # log colours: the mass is usually concentrated on a few cells, and the tails are what matter
        norm = LogNorm(vmin=float(share[share > 0].min()), vmax=float(share.max())) if (share > 0).sum() > 1 else None
        mesh = ax.pcolormesh(hist["x_edges"], hist["y_edges"], masked.T, cmap="Greys", alpha=0.85, shading="flat",
                             norm=norm)
        fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.02).set_label(
            "share of customers whose estimated best is here (log)", fontsize=7)
    arms = results.get("arms")
    if arms is not None and len(arms):
        ax.scatter([a[0] for a in arms], [a[1] for a in arms], marker="+", color="tab:grey", s=30,
                   label="experimental arms", zorder=2)
    _draw_chosen_treatments(ax, rows)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    _label_fixed_axes(ax, results)
    ax.margins(0.07)  # room for the markers and labels on the box's edges
    ax.set_title(f"Treatments at K={k} over the customers' estimated best treatments", fontsize=9)
    leg = ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    for h in leg.legend_handles:  # legend markers at one readable size, whatever the segment shares
        if hasattr(h, "set_sizes"):
            h.set_sizes([40])
    # segment sizes: one stacked bar per method, largest segment first
    labels = []
    for i, (m, r) in enumerate(rows):
        sizes = np.sort(np.asarray(r.get("segment_sizes") or [1], dtype=float))[::-1]
        frac = 100 * sizes / max(sizes.sum(), 1.0)
        left = 0.0
        for j, f in enumerate(frac):
            axb.barh(i, f, left=left, color=plt.cm.tab10(j % 10), edgecolor="white", height=0.7)
            if f >= 8:
                axb.text(left + f / 2, i, f"{f:.0f}", ha="center", va="center", fontsize=6, color="white")
            left += f
        labels.append(METHOD_LABELS.get(m, m))
    axb.set_yticks(range(len(rows)), labels, fontsize=7)
    axb.invert_yaxis()
    axb.set_xlim(0, 100)
    axb.set_xlabel("share of customers per segment (largest first, %)")
    axb.set_title(f"Segment sizes at K={k}", fontsize=9)
    fig.tight_layout()
    out = _save_figure(fig, path)
    plt.close(fig)
    return out


def plot_treatment_panels(results: Mapping[str, Any], path: str | os.PathLike, k: int, c: int) -> Path | None:
    """PNG: the K treatments at K of OT and the strongest baselines, one panel per label of the categorical
    dimension ``c`` (a label is no axis: never a creative "1.37"); inside a panel the other one or two
    dimensions are the axes (with one, the methods are the rows), the experiment's arms with that label
    are grey crosses, marker area = segment share. None when no drawn method has that K."""
    names = list(results.get("treatment_names") or [])
    labels = results["treatment_kinds"][c]["labels"]
    rest = [j for j in range(len(names)) if j != c]
    rows = [(m, results["methods"][m][str(k)]) for m in _TREATMENT_STYLES
            if m in results.get("methods", {}) and results["methods"][m].get(str(k))]
    if not rows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels) + 0.6, 3.8), sharex=True, sharey=True,
                             squeeze=False)
    arms = np.asarray(results.get("arms") or np.empty((0, len(names))), dtype=float).reshape(-1, len(names))
    for p_, (ax, lab) in enumerate(zip(axes[0], labels)):
        here = arms[np.isclose(arms[:, c], p_)] if arms.size else arms
        if len(rest) == 2 and len(here):
            ax.scatter(here[:, rest[0]], here[:, rest[1]], marker="+", color="tab:grey", s=30,
                       label="experimental arms" if p_ == 0 else None, zorder=2)
        for i, (m, r) in enumerate(rows):
            t = np.asarray(r["treatments"], dtype=float).reshape(-1, len(names))
            sizes = np.asarray(r.get("segment_sizes") or [1] * len(t), dtype=float)
            keep = np.isclose(t[:, c], p_)
            mk, col, scale = _TREATMENT_STYLES[m]
            ys = t[keep, rest[1]] if len(rest) == 2 else np.full(int(keep.sum()), i)
            ax.scatter(t[keep, rest[0]], ys, s=scale * (25 + 700 * sizes[keep] / max(sizes.sum(), 1.0)), marker=mk,
                       facecolors="none", edgecolors=col, linewidths=1.6, zorder=3,
                       label=METHOD_LABELS.get(m, m) if p_ == 0 else None, clip_on=False)
        ax.set_title(f"{names[c]} = {lab}", fontsize=9)
        ax.set_xlabel(names[rest[0]])
        sub = {"treatment_kinds": [results["treatment_kinds"][j] for j in rest],
               "arms": arms[:, rest].tolist() if arms.size else []}
        _label_fixed_axes(ax, sub if len(rest) == 2 else {**sub, "treatment_kinds": sub["treatment_kinds"][:1]})
        ax.margins(0.12)
    if len(rest) == 2:
        axes[0][0].set_ylabel(names[rest[1]])
    else:
        axes[0][0].set_yticks(range(len(rows)), [METHOD_LABELS.get(m, m) for m, _ in rows], fontsize=7)
    fig.legend(loc="lower center", ncol=4, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Treatments at K={k}, one panel per {names[c]} (marker area = segment share)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out = _save_figure(fig, path)
    plt.close(fig)
    return out


def _label_fixed_axes(ax, results: Mapping[str, Any]) -> None:
    """A categorical dimension's axis shows its labels at its codes (never a numeric axis with 1.37 on it);
    a discrete one its observed values only."""
    kinds = results.get("treatment_kinds") or []
    arms = np.asarray(results.get("arms") or [], dtype=float)
    for j, (rec, axis) in enumerate(zip(kinds, (ax.xaxis, ax.yaxis))):
        if rec.get("kind") == "categorical" and rec.get("labels"):
            axis.set_ticks(range(len(rec["labels"])), [str(v) for v in rec["labels"]], fontsize=7)
        elif rec.get("kind") == "discrete" and arms.ndim == 2 and arms.shape[0]:
            levels = np.unique(arms[:, j])
            axis.set_ticks(levels, [f"{v:g}" for v in levels])


#: marker, colour and size scale of the methods drawn over the heatmap (OT last: it is never hidden)
_TREATMENT_STYLES = {"kmeans_preferences": ("^", "tab:blue", 0.55), "grid": ("D", "tab:green", 0.75),
                     "ot": ("o", "tab:red", 1.0)}


def _same_treatments(a, b) -> bool:
    ta, tb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return ta.shape == tb.shape and bool(np.allclose(np.sort(ta, axis=0), np.sort(tb, axis=0)))


def _draw_chosen_treatments(ax, rows) -> None:
    """The K treatments of OT and the two strongest baselines: marker area = segment share, OT drawn on
    top and labelled with its shares; a baseline that chose the same K treatments as OT says so in the
    legend (its smaller marker sits inside OT's), so a tie is visible rather than hidden."""
    by_method = dict(rows)
    ot = by_method.get("ot")
    for m in _TREATMENT_STYLES:
        r = by_method.get(m)
        if r is None:
            continue
        sizes = list(r.get("segment_sizes") if r.get("segment_sizes") is not None else [1] * len(r["treatments"]))
        total = max(sum(sizes), 1)
        mk, col, scale = _TREATMENT_STYLES[m]
        xs, ys = [t[0] for t in r["treatments"]], [t[1] for t in r["treatments"]]
        label = METHOD_LABELS.get(m, m)
        if m != "ot" and ot is not None and _same_treatments(r["treatments"], ot["treatments"]):
            label += " (= OT's treatments)"
        ax.scatter(xs, ys, s=[scale * (25 + 700 * s_ / total) for s_ in sizes], marker=mk, facecolors="none",
                   edgecolors=col, linewidths=1.8 if m == "ot" else 1.3, label=label, zorder=4 if m == "ot" else 3,
                   clip_on=False)
        if m == "ot":
            ymax = max(ys)
            for x, y, s_ in zip(xs, ys, sizes):
                # labels below the points on the top edge, above elsewhere: never outside the axes
                ax.annotate(f"{100 * s_ / total:.0f}%", (x, y), textcoords="offset points",
                            xytext=(7, -11 if y == ymax else 6), fontsize=7, color=col, zorder=5)


def plot_price_of_constraints(results: Mapping[str, Any], path: str | os.PathLike) -> Path | None:
    """PNG: per K, the constrained OT policy's profit per customer next to the unconstrained one (left)
    and each binding constraint's dual multiplier per customer (right). None without constraints."""
    price = results.get("price_of_constraints") or {}
    if not price:
        return None
    plt = _pyplot()
    ks = sorted(int(k) for k in price)
    m = _measure(price[str(ks[0])]["constrained"])
    fig, (ax, axd) = plt.subplots(1, 2, figsize=(10.5, 4.0))
    ax.plot(ks, [price[str(k)]["unconstrained"][m] for k in ks], marker="o", color="black", label="unconstrained")
    ax.plot(ks, [price[str(k)]["constrained"][m] for k in ks], marker="s", color="tab:red", label="constrained")
    ax.set_xlabel("number of distinct treatments K")
    ax.set_ylabel(("true profit" if m == "oracle_profit" else "doubly robust value") + " per customer")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("OT policy with and without the constraints", fontsize=9)
    names = [r["name"] for r in price[str(ks[0])]["constraints"]]
    for name in names:
        duals = [next((r["dual_per_customer"] for r in price[str(k)]["constraints"] if r["name"] == name), 0.0)
                 for k in ks]
        if any(duals):
            axd.plot(ks, duals, marker="o", label=name)
    axd.axhline(0.0, color="grey", lw=0.8)
    axd.set_xlabel("number of distinct treatments K")
    axd.set_ylabel("dual multiplier per customer")
    axd.set_xticks(ks)
    axd.grid(alpha=0.3)
    if axd.get_legend_handles_labels()[0]:
        axd.legend(fontsize=7)
    axd.set_title("profit one more unit of each bound buys", fontsize=9)
    fig.tight_layout()
    out = _save_figure(fig, path)
    plt.close(fig)
    return out
