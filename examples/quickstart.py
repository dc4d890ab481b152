"""coarse_gpu from Python on the example CSV: fit both steps, look at the K treatments, score new
customers, check the policy's value on a held-out part of the experiment, save and reload.

    .venv/bin/python scripts/make_example_csv.py --out outputs/example/promotions.csv
    .venv/bin/python examples/quickstart.py outputs/example/promotions.csv
"""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from coarse_gpu import CoarsePersonalizer

FEATURES = ["recency", "frequency", "monetary", "tenure", "age", "browse_1", "browse_2", "browse_3", "browse_4",
            "browse_5", "channel", "region", "tier"]
TREATMENT = ["discount", "duration_weeks"]


def main(path: str) -> None:
    df = pd.read_csv(path)
    test = np.random.default_rng(0).random(len(df)) < 0.3  # a randomized hold-out to check the policy on
    fit, held = df[~test], df[test]
    cp = CoarsePersonalizer(k=3, model="auto", seed=0)
    cp.fit(fit[FEATURES], fit[TREATMENT], fit["profit"])       # string columns are one-hot encoded
    print("step 1 chose", cp.model_selection_["winner"])
    print(pd.DataFrame(cp.treatments_, columns=cp.treatment_names_))
    print(f"{cp.effective_k_} of the k=3 segments hold training customers")  # (a warning when fewer)
    seg = cp.assign(held[FEATURES])
    print("segment sizes of the held-out customers:", np.bincount(seg, minlength=3).tolist())
    # rows pair by position, treatment columns by name: the columns in another order give the same value
    ev = cp.evaluate(held[FEATURES], held[TREATMENT[::-1]], held["profit"])
    print(f"doubly robust value per customer {ev['dr_value']:.3f} [{ev['dr_ci'][0]:.3f}, {ev['dr_ci'][1]:.3f}], "
          f"{ev['effective_k']} segments in use")
    # the profit at a treatment beyond the experiment's arms is refused unless asked for by name
    far = pd.DataFrame({"discount": [0.2], "duration_weeks": [12.0]})
    try:
        cp.predict_profit(held[FEATURES].head(3), far)
    except ValueError as err:
        print("refused:", str(err).split(";")[0])
    folder = cp.save("outputs/example/quickstart_policy")     # coarse-gpu-assign policy=<folder> reads it
    assert (CoarsePersonalizer.load(folder).assign(held[FEATURES]) == seg).all()
    print("saved and reloaded:", folder)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/example/promotions.csv")
