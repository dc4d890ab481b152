#!/usr/bin/env python
"""Where the two-part model's K=5 share goes on the hurdle family, and a practitioner's baseline.

For one hurdle experiment (``--n`` customers, seed = replication, the model table's 70 / 30 split) it
fits on the training customers and scores the held-out ones:
  prac        scikit-learn's HistGradientBoostingClassifier for "bought" and
              HistGradientBoostingRegressor (squared error) for the spend of buyers, treatment
              columns as features, defaults: what a practitioner who knows his accounting would fit;
  tpdef       TwoPart(base="gb_s", complexity="default"): the same learner family, default trees;
  tp          TwoPart(base="gb_s"): each part's tree size chosen by its held-out deviance;
  tp_gamma / tp_log   tp with the Gamma / log-OLS + smearing value loss;
and for each: profit by the firm's accounting at the 24 arms, the ``ot`` K=5 policy chosen on those
estimates (the model table's step), and its TRUE-profit share of full personalization's increment
(``share``); ``share_trueM`` / ``share_trueP`` swap in the true basket / true purchase probability
(which part costs more); ``truth`` is the ceiling of K=5 arms.

    python experiments/hurdle_diagnostic.py --n 40000 --reps 3 --models prac tpdef tp
Results are appended as JSON lines to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coarse_gpu.data.hurdle import ACCOUNTING, HurdlePromotionsSimulator  # noqa: E402
from coarse_gpu.models import TwoPart  # noqa: E402
from experiments.model_table import hurdle, score  # noqa: E402

MODELS = ("prac", "tpdef", "tp", "tp_gamma", "tp_log")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "model_table" / "hurdle_diagnostic.jsonl"


def practitioner(fam: dict, rep: int) -> tuple[np.ndarray, np.ndarray]:
    """(P (n_test, A), M (n_test, A)) from default scikit-learn boosting on [x, t]."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    tr, te, X, t, arms, r, v = (fam[k] for k in ("train", "test", "X", "t", "arms", "response", "value"))
    clf = HistGradientBoostingClassifier(random_state=rep).fit(np.hstack([X[tr], t[tr]]), r[tr])
    b = tr[r[tr] > 0]
    reg = HistGradientBoostingRegressor(random_state=rep).fit(np.hstack([X[b], t[b]]), v[b])
    P, M = np.empty((len(te), len(arms))), np.empty((len(te), len(arms)))
    for a, arm in enumerate(arms):
        Z = np.hstack([X[te], np.repeat(arm[None], len(te), 0)])
        P[:, a], M[:, a] = clf.predict_proba(Z)[:, 1], reg.predict(Z)
    return P, M


def two_part(fam: dict, rep: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    tr = fam["train"]
    vl = name.split("_")[1] if "_" in name else "poisson"
    m = TwoPart(base="gb_s", accounting=fam["accounting"], seed=rep, value_loss=vl,
                complexity="default" if name == "tpdef" else "auto")
    m.fit(fam["X"][tr], fam["t"][tr], fam["y"][tr], propensity=fam["propensity"][tr], response=fam["response"][tr],
          value=fam["value"][tr])
    return m.predict_parts(fam["X"][fam["test"]])


def one(n: int, rep: int, models, out: Path) -> None:
    fam = hurdle(rep, n)
    arms = fam["arms"]
    truth = HurdlePromotionsSimulator(n_customers=n, seed=rep).sample().truth.subset(fam["test"])
    Pt, Mt = truth.parts(arms)

    def share(P, M):
        pa = ACCOUNTING.expected_profit(P, M, arms)
        return score(fam, pa, pa, rep)["ot_k5_true_share"]

    for name in list(models) + ["truth"]:
        t0 = time.perf_counter()
        P, M = (Pt, Mt) if name == "truth" else practitioner(fam, rep) if name == "prac" else two_part(fam, rep, name)
        rec = {"model": name, "n": n, "rep": rep, "share": share(P, M), "share_trueM": share(P, Mt),
               "share_trueP": share(Pt, M), "basket_mean_ratio": float(M.mean() / Mt.mean()),
               "rmse_P": float(np.sqrt(np.mean((P - Pt) ** 2))), "rmse_M": float(np.sqrt(np.mean((M - Mt) ** 2))),
               "fit_s": round(time.perf_counter() - t0, 1)}
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=40_000, help="customers (70 %% train)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--models", nargs="+", default=["prac", "tpdef", "tp"], choices=MODELS)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    a.out.parent.mkdir(parents=True, exist_ok=True)
    with threadpool_limits(1):
        for rep in range(a.reps):
            one(a.n, rep, a.models, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
