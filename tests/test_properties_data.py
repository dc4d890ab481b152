"""Properties of data=file (coarse_gpu.data.file): invariances and one-sided declared ranges.

Examples check one input; these check a rule over many: the experiment a frame becomes depends on the
columns' NAMES, never on their order in the file or on the frame's index labels, and a treatment range
declared on one side only is still enforced on that side. ``scripts/mutation_check.py`` plants the bugs
they catch (classes "d12".."d15").
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from coarse_gpu.data.file import DataSchemaError, FeatureSchema, experiment_from_frame, load_experiment

from test_data_file import frame, spec

# Few examples, no deadline (a contended CI core), reproducible, no shrinking (a failing example is
# reported as found: shrinking a planted bug's counterexample costs minutes in scripts/mutation_check.py).
FAST = settings(max_examples=8, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def base():
    df = frame(400, seed=1)
    return df, experiment_from_frame(df, spec(min_per_arm=2))


def _same_experiment(a, b) -> None:
    assert a.feature_names == b.feature_names
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.treatment, b.treatment)
    np.testing.assert_array_equal(a.arm, b.arm)
    np.testing.assert_array_equal(a.outcome, b.outcome)
    np.testing.assert_array_equal(a.propensity, b.propensity)
    np.testing.assert_array_equal(a.meta["ids"], b.meta["ids"])
    assert a.space == b.space


@FAST
@given(order=st.permutations(list(range(12))))
def test_the_order_of_the_files_columns_changes_nothing(base, order):
    """X's columns follow data.features (by name), whatever order the file holds them in."""
    df, ref = base
    assert df.shape[1] == 12
    _same_experiment(experiment_from_frame(df[[df.columns[i] for i in order]], spec(min_per_arm=2)), ref)


def test_a_csv_with_its_columns_in_another_order_loads_to_the_same_experiment(base, tmp_path):
    """The data=file path end to end: the same customers written with the columns reversed."""
    df, ref = base
    df[df.columns[::-1]].to_csv(tmp_path / "reversed.csv", index=False)
    df.to_csv(tmp_path / "plain.csv", index=False)
    a = load_experiment(tmp_path / "reversed.csv", spec(min_per_arm=2))
    b = load_experiment(tmp_path / "plain.csv", spec(min_per_arm=2))
    _same_experiment(a, b)
    np.testing.assert_allclose(a.X, ref.X, rtol=1e-6)  # the CSV round trip keeps the values


@FAST
@given(seed=st.integers(0, 2 ** 16), kind=st.sampled_from(["permuted", "strings", "offset", "duplicated"]))
def test_the_frames_index_labels_change_nothing(base, seed, kind):
    """Rows are paired by position: a shuffled, textual, shifted or even duplicated index is only a label."""
    df, ref = base
    n = len(df)
    labels = {"permuted": np.random.default_rng(seed).permutation(n), "strings": [f"r{i}" for i in range(n)],
              "offset": np.arange(n) + 10_000 + seed, "duplicated": np.arange(n) // 2}[kind]
    renamed = df.set_axis(pd.Index(labels, name="whatever"), axis=0)
    _same_experiment(experiment_from_frame(renamed, spec(min_per_arm=2)), ref)


@FAST
@given(side=st.sampled_from(["low", "high"]), column=st.sampled_from([0, 1]), seed=st.integers(0, 2 ** 16))
def test_a_range_declared_on_one_side_is_enforced_on_that_side(side, column, seed):
    """treatment_high alone (or treatment_low alone) still refuses a row beyond it, by column name and row."""
    df = frame(300, seed=seed % 7)
    names = ["discount", "duration_weeks"]
    observed = df[names].agg(["min", "max"])
    bounds = [float(observed.loc["max" if side == "high" else "min", c]) for c in names]
    row = int(np.random.default_rng(seed).integers(len(df)))
    c = names[column]
    step = 0.5 * (observed.loc["max", c] - observed.loc["min", c])
    df.loc[row, c] = bounds[column] + (step if side == "high" else -step)  # beyond the declared side
    kw = {"treatment_high" if side == "high" else "treatment_low": bounds}
    with pytest.raises(DataSchemaError) as err:
        experiment_from_frame(df, spec(min_per_arm=1, **kw))
    hits = [p for p in err.value.problems if f"'{c}'" in p and "range" in p]
    assert hits, err.value.problems
    # the same bound with every row inside it is accepted, and becomes the space's bound on that side
    df.loc[row, c] = bounds[column]
    data = experiment_from_frame(df, spec(min_per_arm=1, **kw))
    assert (data.space.high if side == "high" else data.space.low) == tuple(bounds)


@FAST
@given(order=st.permutations(list(range(8))), seed=st.integers(0, 2 ** 16))
def test_a_schema_transforms_by_column_name(order, seed):
    """FeatureSchema.transform reads columns by name: new customers' columns in any order (and with
    extra columns) give the same model matrix."""
    df = frame(120, seed=seed % 5)
    feats = df[["recency", "frequency", "monetary", "tenure", "age", "channel", "region", "tier"]]
    schema = FeatureSchema.fit(feats, ["channel", "region", "tier"])
    ref = schema.transform(feats)
    shuffled = feats[[feats.columns[i] for i in order]].assign(unused=np.arange(len(feats)))
    np.testing.assert_array_equal(schema.transform(shuffled), ref)
    assert ref.shape[1] == len(schema.names)
