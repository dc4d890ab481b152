#!/usr/bin/env python
"""Step-1 model table: every learner on six benchmark families, estimation error and decision value.

Families (each replication draws new data; the models never see the held-out part):
  ihdp_a, ihdp_b   IHDP response surfaces A and B (econml.data.dgps; 747 children, 25 covariates,
                   binary treatment), the published out-of-sample protocol: 90 % fit / 10 % held out.
  nw_rct           Nie & Wager's randomized-trial setup (causalml.dataset.regression.synthetic_data
                   mode 2: 2,000 rows, 8 covariates, sigma 1); 70 / 30. Needs causalml: it is loaded
                   from an installed ``pip install --no-deps causalml`` (only that numpy module is
                   used), else the family is skipped.
  promo_t8         the built-in promotions simulator (20,000 customers, 15 arms on a 5 x 3 grid),
                   outcome averaged over 8 trips; 70 / 30.
  promo_t1         the same with ONE purchase occasion per customer (n_trips=1): 8x the noise.
  contacts         a second simulator of our own with another response shape (``contacts_family``):
                   6 contact frequencies, a saturating response with fatigue, zero-inflated
                   lognormal spend; 20,000 customers; 70 / 30.
  hurdle           the zero-inflated promotions family (coarse_gpu.data.hurdle, ``data=hurdle``): 24
                   arms over discount x free shipping x bonus items, stratified propensities, 57 %
                   buy nothing, lognormal baskets (sigma 1), 28 of 36 covariates irrelevant, the
                   firm's accounting declared; ``--hurdle-n`` customers (default 20,000); 70 / 30.
  hurdle_60k       the same at 60,000 customers (42,000 fitted, 18,000 held out): the size of the
                   held-out field experiment issue 26 measured, kept apart from the 20,000 cells.

One-part vs two-part: ``twopart_<family>`` (coarse_gpu.models.twopart) models purchase and basket
apart and applies the accounting; it runs only on families that declare the profit structure (the
promotions simulators and hurdle). ``arm_means`` is the no-heterogeneity model; ``auto`` is
``model=auto`` as it is now (its default candidates -- two-part ones where the structure is declared,
the dose heads, arm means -- stacked, with the one-standard-error rule; cells auto_v5_stack.jsonl);
``auto_select`` the default before the stack (EARLIER_CANDIDATES, combine="select": the single best or
an average of the best; its cells are the earlier ``auto`` / ``auto_twopart_tarnet`` ones,
auto_select_v4.jsonl); ``auto_onepart`` the default before that (tarnet, gb_s, gb_t on the realized
profit only); ``auto_twopart_tarnet`` and ``auto_dose_vc`` were measurements toward the earlier
default (EARLIER_CANDIDATES; with dose_vc added). ``true_ceiling`` is not a
learner: its "estimates" are the held-out customers' true profits, so its K=5 share is what K
treatments can keep with no estimation error, and the table divides every model's share by it per
replication ("÷ the K=5 ceiling": the share of the ceiling's increment).

Metrics on the held-out customers: binary families sqrt(PEHE); multi-arm families the RMSE of the
estimated profit at the arms; and for every family the TRUE-profit share of full personalization's
incremental profit kept by the ``ot`` K=5 policy chosen on the model's estimates (K = 2 for a binary
treatment: then it is the per-customer argmax; binary families charge the average effect as the
treatment's cost, so that about half of the units should be treated and the share measures targeting).

    python experiments/model_table.py --families ihdp_b --reps 10          # appends to --out
    python experiments/model_table.py --table                              # mean +- se table from --out
    python experiments/model_table.py --table --cells a.jsonl b.jsonl      # several files; later rows win
Results are appended one line per (family, model, replication) to --out (JSON lines) and cells
already there are skipped, so a killed run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coarse_gpu.data.hurdle import HurdlePromotionsSimulator  # noqa: E402
from coarse_gpu.data.simulator import PromotionsSimulator  # noqa: E402
from coarse_gpu.discretize import discretize  # noqa: E402
from coarse_gpu.evaluate.oracle import share_of_full  # noqa: E402
from coarse_gpu.models import (  # noqa: E402
    ArmMeans,
    AutoCATE,
    DoseLogit,
    DoseVC,
    DragonNet,
    DRLearner,
    GBSLearner,
    GBTLearner,
    TARNet,
    TwoPart,
)
from coarse_gpu.models.twopart import BASES as TWO_PART_BASES  # noqa: E402

CEILING = "true_ceiling"  # not a learner: the ot K=5 policy on the true profits (share of the ceiling)
MODELS = {"tarnet": TARNet, "dragonnet": DragonNet, "dose_logit": DoseLogit, "dose_vc": DoseVC,
          "gb_s": GBSLearner, "gb_t": GBTLearner, "dr": DRLearner, "auto": AutoCATE, "arm_means": ArmMeans,
          "auto_onepart": AutoCATE, "auto_twopart_tarnet": AutoCATE, "auto_dose_vc": AutoCATE, "auto_select": AutoCATE,
          **{f"twopart_{b}": TwoPart for b in TWO_PART_BASES}, CEILING: None}
NEURAL = ("tarnet", "dragonnet", "dose_logit", "dose_vc", "auto", "auto_onepart", "auto_twopart_tarnet", "auto_dose_vc",
          "auto_select",
          *(f"twopart_{b}" for b in TWO_PART_BASES))
#: model=auto's default candidates before the stack (and before dose_vc joined them)
EARLIER_CANDIDATES = ("tarnet", "gb_s", "gb_t", "arm_means", "dose_logit", "twopart_gb_s", "twopart_tarnet")
HURDLE_N = 20_000
HURDLE_FIELD_N = 60_000  # the size of the held-out field experiment of issue 26 (its 80.9 % was at 60,000)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "model_table" / "cells.jsonl"


# ---- families: (X, t (N, d), y, truth(X rows) -> true profit at arms (N, A), arms (A, d), split) ----
def ihdp(surface: str, rep: int):
    from econml.data.dgps import ihdp_surface_A, ihdp_surface_B

    Y, T, X, tau = (ihdp_surface_A if surface == "a" else ihdp_surface_B)(random_state=rep)
    X = np.asarray(X, dtype=np.float64)[:, 1:]  # column 0 is econml's intercept
    t = np.asarray(T, dtype=np.float64).reshape(-1, 1)
    tau = np.asarray(tau, dtype=np.float64).reshape(-1)
    return _binary(X, t, np.asarray(Y, dtype=np.float64).reshape(-1), tau, rep, test_fraction=0.1)


def nw_rct(rep: int):
    spec = importlib.util.find_spec("causalml")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("causalml is not installed (pip install --no-deps causalml)")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "regression.py"
    mod_spec = importlib.util.spec_from_file_location("causalml_dataset_regression", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    np.random.seed(rep)  # the DGP draws from numpy's global RNG
    y, X, w, tau, b, e = mod.synthetic_data(mode=2, n=2000, p=8, sigma=1.0)
    return _binary(X, np.asarray(w, dtype=np.float64).reshape(-1, 1), y, tau, rep, test_fraction=0.3)


def _binary(X, t, y, tau, rep, test_fraction):
    """A binary family: the truth is known only up to the untreated level, which every policy shares;
    profit = y - c t with c = the average effect (so the decision is whom to treat)."""
    c = float(tau.mean())
    y = y - c * t[:, 0]
    arms = np.array([[0.0], [1.0]])
    true = np.column_stack([np.zeros_like(tau), tau - c])  # pi(0) := 0: shares and PEHE need differences only
    test, train = _split(len(y), rep, test_fraction)
    return {"X": X, "t": t, "y": y, "true_arms": true, "arms": arms, "candidates": arms, "train": train,
            "test": test, "binary": True}


def promo(rep: int, n_trips: int):
    sim = PromotionsSimulator(n_customers=20_000, n_trips=n_trips, seed=rep, declare_structure=True)
    d = sim.sample()
    test, train = _split(len(d), rep, 0.3)
    cand = d.space.grid([26, 21])
    return {"X": d.X.astype(np.float64), "t": d.treatment, "y": d.outcome, "true_arms": d.truth.profit(d.arms),
            "arms": d.arms, "candidates": cand, "true_cand": lambda rows: d.truth.profit(cand, rows),
            "train": train, "test": test, "binary": False, **_structure(d)}


def hurdle(rep: int, n: Optional[int] = None):
    d = HurdlePromotionsSimulator(n_customers=int(n or HURDLE_N), seed=rep).sample()
    test, train = _split(len(d), rep, 0.3)
    return {"X": d.X.astype(np.float64), "t": d.treatment, "y": d.outcome, "true_arms": d.truth.profit(d.arms),
            "arms": d.arms, "candidates": d.arms, "propensity": d.propensity, "train": train, "test": test,
            "binary": False, **_structure(d)}


def _structure(d) -> dict:
    """The declared profit structure of a simulated experiment (what the two-part learners need)."""
    return {"response": d.response, "value": d.value, "accounting": d.accounting} if d.structured else {}


def contacts_family(rep: int, n: int = 20_000):
    """6 e-mail contact frequencies f in {0, 1, 2, 4, 6, 8} per month. Expected profit
        pi_i(f) = A_i (1 - exp(-f / s_i)) - c_i f,
    A_i = the customer's incremental spend at saturation, s_i = how fast it saturates, c_i = fatigue
    (unsubscribes, complaints); all three from covariates through smooth and sharp links. Realized
    profit: a purchase with probability q_i(f) = 0.3 (1 - exp(-f/s_i)) + 0.05 times a lognormal basket
    (heavy-tailed, sd 0.9 on the log scale), minus the fatigue cost: zero-inflated and skewed."""
    rng = np.random.default_rng(50_000 + rep)
    X = rng.standard_normal((n, 10))
    X[:, 6] = np.exp(X[:, 6])  # a skewed covariate (past spend)
    basket = 40.0 * np.exp(0.3 * X[:, 0] + 0.2 * np.log1p(X[:, 6]))
    s = 1.0 + 4.0 / (1.0 + np.exp(-3.0 * (X[:, 1] - 0.5 * X[:, 2])))
    fatigue = 0.4 + 0.6 * (X[:, 3] > 0.3) + 0.3 * np.tanh(X[:, 4] * X[:, 5])
    levels = np.array([0.0, 1.0, 2.0, 4.0, 6.0, 8.0])

    def q(f):
        return 0.3 * (1.0 - np.exp(-f[None, :] / s[:, None])) + 0.05

    true = basket[:, None] * q(levels) - fatigue[:, None] * levels[None, :]
    a = rng.integers(0, levels.size, n)
    bought = rng.random(n) < q(levels)[np.arange(n), a]
    spend = basket * rng.lognormal(-0.405, 0.9, n)  # mean 1 multiplier
    y = bought * spend - fatigue * levels[a]
    test, train = _split(n, rep, 0.3)
    cand = levels[:, None]
    return {"X": X, "t": levels[a][:, None], "y": y, "true_arms": true, "arms": levels[:, None], "candidates": cand,
            "train": train, "test": test, "binary": False}


def _split(n: int, rep: int, test_fraction: float):
    perm = np.random.default_rng(1000 + rep).permutation(n)
    k = int(round(test_fraction * n))
    return np.sort(perm[:k]), np.sort(perm[k:])


FAMILIES = {"ihdp_a": lambda r: ihdp("a", r), "ihdp_b": lambda r: ihdp("b", r), "nw_rct": nw_rct,
            "promo_t8": lambda r: promo(r, 8), "promo_t1": lambda r: promo(r, 1), "contacts": contacts_family,
            "hurdle": hurdle, "hurdle_60k": lambda r: hurdle(r, HURDLE_FIELD_N)}


# ---- one cell -----------------------------------------------------------------------------------------
def fit_predict(name: str, fam: dict, rep: int):
    if name == CEILING:
        return None, *_true_profits(fam)
    cls = MODELS[name]
    kw = {"seed": rep}
    if name in NEURAL:
        kw["device"] = "cpu"
    if name == "dose_vc" and fam["binary"]:
        kw["n_basis"] = 2
    if name == "auto_onepart":
        kw["candidates"] = ("tarnet", "gb_s", "gb_t")
    if name == "auto_twopart_tarnet":
        kw["candidates"] = EARLIER_CANDIDATES
    if name == "auto_dose_vc":
        kw["candidates"] = (*EARLIER_CANDIDATES, "dose_vc")
    if name == "auto_select":  # the default before the stack: the single best (or an average of the best)
        kw.update(candidates=EARLIER_CANDIDATES, combine="select")
    tr, te = fam["train"], fam["test"]
    fit_kw = {"propensity": fam["propensity"][tr]} if "propensity" in fam else {}
    if name.startswith("twopart_"):
        kw.update(base=name[len("twopart_"):], accounting=fam["accounting"])
        fit_kw.update(response=fam["response"][tr], value=fam["value"][tr])
    elif name in ("auto", "auto_twopart_tarnet", "auto_dose_vc", "auto_select") and "response" in fam:
        fit_kw.update(response=fam["response"][tr], value=fam["value"][tr], accounting=fam["accounting"])
    model = cls(**kw).fit(fam["X"][tr], fam["t"][tr], fam["y"][tr], **fit_kw)
    p_arms = model.predict_profit(fam["X"][te], fam["arms"])
    p_cand = p_arms if fam["candidates"] is fam["arms"] else model.predict_profit(fam["X"][te], fam["candidates"])
    return model, p_arms, p_cand


def _true_profits(fam: dict):
    """The held-out customers' TRUE profits at the arms and at the candidates: the 'model' whose
    K=5 policy is the true-profit ceiling (what K treatments can keep with no estimation error)."""
    te = fam["test"]
    p_arms = fam["true_arms"][te]
    return p_arms, (fam["true_cand"](te) if "true_cand" in fam else p_arms)


def score(fam: dict, p_arms: np.ndarray, p_cand: np.ndarray, rep: int) -> dict:
    te = fam["test"]
    true = fam["true_arms"][te]
    out = {}
    if fam["binary"]:
        out["sqrt_pehe"] = float(np.sqrt(np.mean(((p_arms[:, 1] - p_arms[:, 0]) - (true[:, 1] - true[:, 0])) ** 2)))
    else:
        out["rmse_profit"] = float(np.sqrt(np.mean((p_arms - true) ** 2)))
    k = min(5, p_cand.shape[1])
    res = discretize(p_cand, k, candidates=fam["candidates"], seed=rep, device="cpu")
    true_cand = fam["true_cand"](te) if "true_cand" in fam else fam["true_arms"][te]
    # no refinement here: the K treatments are candidates, res.candidate_index says which
    value = float(true_cand[np.arange(len(te)), res.candidate_index[res.assignment]].mean())
    control = float(true_cand[:, 0].mean())
    full = float(true_cand.max(1).mean())
    # no share where targeting cannot matter (IHDP surface A: the same effect for everyone)
    out["ot_k5_true_share"] = share_of_full(value, control, full) if full - control > 1e-9 * max(1.0, abs(full)) \
        else None
    return out


# ---- driver -----------------------------------------------------------------------------------------------
def done_cells(path: Path) -> set:
    if not path.is_file():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.add((r["family"], r["model"], r["rep"]))
    return out


def run(families, models, reps, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_cells(out)
    for family in families:
        for rep in reps:
            todo = [m for m in models if (family, m, rep) not in done]
            if not todo:
                continue
            try:
                fam = FAMILIES[family](rep)
            except ModuleNotFoundError as err:
                print(f"{family}: skipped ({err})", flush=True)
                break
            for name in todo:
                if name.startswith("twopart_") and "response" not in fam:
                    continue  # no declared profit structure in this family
                t0 = time.perf_counter()
                model, p_arms, p_cand = fit_predict(name, fam, rep)
                rec = {"family": family, "model": name, "rep": rep, **score(fam, p_arms, p_cand, rep),
                       "fit_s": round(time.perf_counter() - t0, 2), "selected": getattr(model, "selected_", None),
                       "n_train": int(len(fam["train"]))}
                with out.open("a") as fh:  # one line per cell: a killed run keeps every finished cell
                    fh.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)


def read_cells(paths) -> list:
    """The cells of one or more JSON-lines files. A (family, model) row found in a later file replaces
    that row of the earlier files as a whole (a re-run with newer code: its replications are not mixed
    with the old ones); within one file a repeated (family, model, rep) cell keeps its last line."""
    rows: dict = {}
    for path in [paths] if isinstance(paths, (str, Path)) else paths:
        mine: dict = {}
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                mine.setdefault((r["family"], r["model"]), {})[r["rep"]] = r
        rows.update(mine)
    return [r for row in rows.values() for r in row.values()]


def table(paths) -> str:
    """Markdown: per family, each model's error and K=5 true share as mean +- se over replications, and
    where the family has ``true_ceiling`` cells the share of the ceiling's increment (the model's share
    over the ceiling's, per replication); bold = best mean, * = within one se of the best (the ceiling
    is not a model: it is never best)."""
    rows = read_cells(paths)
    lines = []
    for family in FAMILIES:
        cells = [r for r in rows if r["family"] == family]
        if any(r["model"] != CEILING for r in cells):  # a ceiling alone is no table
            lines += _family_table(family, cells)
    return "\n".join(lines)


def _family_table(family: str, cells: list) -> list:
    metric = "sqrt_pehe" if "sqrt_pehe" in cells[0] else "rmse_profit"
    ceiling = {r["rep"]: r["ot_k5_true_share"] for r in cells if r["model"] == CEILING}
    n_reps = len({r["rep"] for r in cells if r["model"] != CEILING})
    lines = [f"\n**{family}** ({metric}: lower is better; ot K=5 true share: higher is better; "
             f"{n_reps} replications)", "",
             "| model | " + metric + " | ot K=5 true share | ÷ the K=5 ceiling | fit s | auto chose |",
             "| --- | --- | --- | --- | --- | --- |"]
    stats = {}
    for m in MODELS:
        mine = [r for r in cells if r["model"] == m]
        if mine:
            stats[m] = {key: _mean_se([r[key] for r in mine if r[key] is not None])
                        for key in (metric, "ot_k5_true_share", "fit_s")}
            stats[m]["of_ceiling"] = _mean_se([r["ot_k5_true_share"] / ceiling[r["rep"]] for r in mine
                                               if r["ot_k5_true_share"] is not None and ceiling.get(r["rep"])])
            stats[m]["chose"] = sorted({r["selected"] for r in mine if r.get("selected")})
    models = {m: v for m, v in stats.items() if m != CEILING}
    best_err = min(v[metric][0] for v in models.values()) if models else None
    shares = [v["ot_k5_true_share"][0] for v in models.values() if v["ot_k5_true_share"][0] is not None]
    best_share = max(shares) if shares else None
    for m, v in stats.items():
        e, es = v[metric]
        e_txt = f"{e:.3f} ± {es:.3f}"
        if m != CEILING:
            e_txt = f"**{e_txt}**" if e == best_err else (e_txt + " *" if e - es <= best_err else e_txt)
        s, ss = v["ot_k5_true_share"]
        if s is None:
            s_txt = "— (one effect for all)"
        else:
            s_txt = f"{100 * s:.2f} ± {100 * ss:.2f} %"
            if m != CEILING:
                s_txt = f"**{s_txt}**" if s == best_share else (s_txt + " *" if s + ss >= best_share else s_txt)
        c, cs = v["of_ceiling"]
        c_txt = "" if c is None or m == CEILING else f"{100 * c:.1f} ± {100 * cs:.1f} %"
        chose = ", ".join(v["chose"]) if v["chose"] else ""
        lines.append(f"| {m} | {e_txt} | {s_txt} | {c_txt} | {v['fit_s'][0]:.1f} | {chose} |")
    return lines


def _mean_se(v):
    a = np.asarray(v, dtype=np.float64)
    if a.size == 0:
        return None, None
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else 0.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--reps", type=int, default=5, help="replications 0..reps-1")
    p.add_argument("--rep-from", type=int, default=0,
                   help="skip the replications below this one (two processes can split one family's replications)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON-lines file the cells go to")
    p.add_argument("--cells", type=Path, nargs="+",
                   help="with --table: the files to tabulate (default --out); a (family, model) row of a "
                        "later file replaces that row of the earlier ones")
    p.add_argument("--threads", type=int, default=1,
                   help="torch and OpenMP (boosting) threads; 1 on a shared machine, where OpenMP threads "
                        "waiting on busy cores made the hurdle family's gb_s fits take 43-108 s")
    p.add_argument("--hurdle-n", type=int, default=HURDLE_N, help="customers of the hurdle family")
    p.add_argument("--table", action="store_true", help="print the table of --out and exit")
    a = p.parse_args(argv)
    if a.table:
        print(table(a.cells or a.out))
        return 0
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(a.threads)
    FAMILIES["hurdle"] = lambda r: hurdle(r, a.hurdle_n)
    with threadpool_limits(a.threads):
        run(a.families, a.models, range(a.rep_from, a.reps), a.out)
    print(table(a.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
