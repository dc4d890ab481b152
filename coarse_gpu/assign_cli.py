"""``coarse-gpu-assign``: score new customers with a saved policy.

    coarse-gpu-assign policy=outputs/<date>/<time>/policies/ot_k5 data.path=new_customers.csv out=assignments.csv

Arguments are ``key=value`` tokens (the same spelling as ``coarse-gpu``'s overrides):

  policy=PATH        a policy folder written by a run (``<run dir>/policies/<method>_k<K>``)   [required]
  data.path=PATH     new customers, CSV or Parquet, with the policy's feature columns            [required]
  out=PATH           the assignments, CSV (or Parquet if it ends in .parquet)                   [required]
  data.id=COLUMN     id column copied to the output (default: the training id column if the file has
                     it, else a ``row`` number)
  data.features=[..], data.categorical=[..], data.treatment=[..]  optional; when given they must match
                     the policy (a run's column options can be pasted as they are);
                     data.outcome / data.propensity are accepted and ignored (not needed to assign)
  chunk_rows=N       rows per block (default 1,000,000): memory stays O(chunk_rows x treatments)
  device=cpu|cuda|auto

Output columns: the id column, ``segment`` (0..K-1), one column per treatment dimension named as in
the training data, ``predicted_profit`` (the model's estimated profit at the assigned treatment).
The output is written to a temp file next to ``out`` and renamed into place when complete.
"""
from __future__ import annotations

import difflib
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

KEYS = ("policy", "data.path", "out", "data.id", "data.features", "data.categorical", "data.treatment",
        "data.outcome", "data.propensity", "chunk_rows", "device")
REQUIRED = ("policy", "data.path", "out")


class UsageError(ValueError):
    """Bad command-line arguments (unknown key, missing value, malformed token)."""


def _list(v: str) -> list[str]:
    v = v.strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    return [x.strip().strip("'\"") for x in v.split(",") if x.strip()]


def parse_args(argv: Sequence[str]) -> dict:
    """``key=value`` tokens -> dict; unknown keys fail with the closest known key named."""
    out: dict = {}
    for tok in argv:
        if tok in ("-h", "--help"):
            raise SystemExit(__doc__)
        key, sep, value = tok.partition("=")
        key = key.lstrip("+")
        if not sep:
            raise UsageError(f"argument {tok!r} is not key=value (e.g. policy=outputs/.../policies/ot_k5)")
        if key not in KEYS:
            near = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else ""
            raise UsageError(f"unknown key '{key}'{hint} Known keys: {', '.join(KEYS)}")
        out[key] = value
    missing = [k for k in REQUIRED if not out.get(k)]
    if missing:
        raise UsageError(f"missing required argument(s) {', '.join(k + '=...' for k in missing)}; "
                         "usage: coarse-gpu-assign policy=<policy folder> data.path=<new.csv> out=<assignments.csv>")
    return out


def run_assign(args: dict) -> Path:
    """Score ``data.path`` with ``policy`` into ``out`` (atomically). Returns the output path."""
    import pandas as pd

    from coarse_gpu.data.file import DataSchemaError, iter_table
    from coarse_gpu.policy.io import iter_assignments, load_policy

    pol = load_policy(args["policy"], device=args.get("device", "cpu") or "cpu")
    schema = pol.feature_schema
    source = args["data.path"]
    if "data.features" in args and _list(args["data.features"]) != schema.columns:
        raise DataSchemaError([f"data.features={_list(args['data.features'])} does not match the policy's feature "
                               f"schema {schema.columns}: the policy was trained on different features"], source)
    if "data.categorical" in args and sorted(_list(args["data.categorical"])) != sorted(schema.categorical):
        raise DataSchemaError([f"data.categorical={_list(args['data.categorical'])} does not match the policy's "
                               f"categorical columns {sorted(schema.categorical)}"], source)
    if "data.treatment" in args and _list(args["data.treatment"]) != pol.treatment_names:
        raise DataSchemaError([f"data.treatment={_list(args['data.treatment'])} does not match the policy's "
                               f"treatment columns {pol.treatment_names}"], source)
    chunk = int(args.get("chunk_rows", 1_000_000))
    if chunk < 1:
        raise UsageError(f"chunk_rows must be >= 1, got {chunk}")
    id_col: Optional[str] = args.get("data.id") or None
    wanted = list(schema.columns)
    if id_col is None and pol.id_column:
        head = next(iter_table(source, None, chunk_rows=5))
        id_col = pol.id_column if pol.id_column in head.columns else None
    if id_col:
        wanted.append(id_col)
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    parquet = out.name.lower().endswith((".parquet", ".pq"))
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    n = 0
    writer = None
    try:
        for i, table in enumerate(iter_assignments(pol, iter_table(source, wanted, chunk), id_col, source)):
            if parquet:
                import pyarrow as pa
                import pyarrow.parquet as pq

                t = pa.Table.from_pandas(table, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, t.schema)
                writer.write_table(t)
            else:
                table.to_csv(tmp, mode="w" if i == 0 else "a", header=i == 0, index=False)
            n += len(table)
        if writer is not None:
            writer.close()
            writer = None
        if n == 0:
            raise DataSchemaError([f"file '{source}' has no data rows"], source)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"coarse-gpu-assign: {n} customers -> {out} ({pol.method}, K={pol.k}, treatments "
          f"{pol.treatment_names})", flush=True)
    _ = pd  # pandas is imported for iter_table's frames
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from coarse_gpu.data.file import DataSchemaError
    from coarse_gpu.policy.io import PolicyFileError

    try:
        run_assign(parse_args(argv))
    except (UsageError, DataSchemaError, PolicyFileError) as err:
        print(f"coarse-gpu-assign: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
