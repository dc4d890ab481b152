"""``coarse-gpu-assign``: score new customers with a saved policy.

    coarse-gpu-assign policy=outputs/<date>/<time>/policies/ot_k5 data.path=new_customers.csv out=assignments.csv

Arguments are ``key=value`` tokens (the same spelling as ``coarse-gpu``'s overrides):

  policy=PATH        a policy folder written by a run (``<run dir>/policies/<method>_k<K>``)   [required]
  data.path=PATH     new customers, CSV or Parquet, with the policy's feature columns            [required]
  out=PATH           the assignments: .csv, .csv.gz, .tsv, .parquet or .pq                      [required]
                     (never the input file, a file inside the policy folder or an existing folder)
  data.id=COLUMN     id column copied to the output (default: the training id column if the file has
                     it, else a ``row`` number)
  data.features=[..], data.categorical=[..], data.treatment=[..]  optional; when given they must match
                     the policy (a run's column options can be pasted as they are);
                     data.outcome / data.propensity are accepted and ignored (not needed to assign)
  chunk_rows=N       rows per block (default 1,000,000): memory stays O(chunk_rows x treatments)
  device=cpu|cuda|auto

Output columns: the id column, ``segment`` (0..K-1), one column per treatment dimension named as in
the training data, ``predicted_profit`` (the model's estimated profit at the assigned treatment).
The output is written to a temp file next to ``out`` and renamed into place only when every row
was scored: rows that cannot be scored are ALL reported (each with its 0-based row number in the
file, the first 20 per column and problem listed) and nothing is written. Rows whose numeric
features lie far outside the training range are scored, with a ``feature_out_of_range`` warning.
Exit status: 0 done, 2 bad input (one error line per problem), 1 a system error (disk full, ...);
set COARSE_GPU_DEBUG=1 for the traceback.
"""
from __future__ import annotations

import difflib
import gzip
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

KEYS = ("policy", "data.path", "out", "data.id", "data.features", "data.categorical", "data.treatment",
        "data.outcome", "data.propensity", "chunk_rows", "device")
REQUIRED = ("policy", "data.path", "out")
#: Output formats by file name ending (checked before any work: ``out=x.xlsx`` must not get CSV text).
OUT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".parquet", ".pq")


class UsageError(ValueError):
    """Bad command-line arguments (unknown key, missing value, malformed token, unsafe ``out``)."""


class HelpRequested(Exception):
    """``-h`` / ``--help``: print the usage and exit 0."""


def _list(v: str) -> list[str]:
    v = v.strip()
    if v.startswith("[") and v.endswith("]"):
        v = v[1:-1]
    return [x.strip().strip("'\"") for x in v.split(",") if x.strip()]


def parse_args(argv: Sequence[str]) -> dict:
    """``key=value`` tokens -> dict; unknown keys fail with the closest known key named."""
    out: dict = {}
    for tok in argv:
        if tok in ("-h", "--help", "help"):
            raise HelpRequested()
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


def _policy_folder(policy: str) -> Path:
    p = Path(policy)
    return p.parent if p.name == "policy.json" and not p.is_dir() else p


def check_output(out: Path, source: Path, policy: Path) -> None:
    """Refuse an ``out`` that would destroy what the user owns or that cannot be written as asked:
    an existing folder, an unsupported extension, the input file (same resolved path or the same
    file under another name), anything inside the policy folder. UsageError naming the reason."""
    real = out.resolve()
    if real == source.resolve() or (out.exists() and source.exists() and os.path.samefile(out, source)):
        raise UsageError(f"out={out} is the input file data.path={source}: writing the assignments there would "
                         "destroy the customers' data; choose another out=")
    folder = policy.resolve()
    inside = real == folder or folder in real.parents
    if not inside and out.exists() and policy.is_dir():
        inside = any(f.is_file() and os.path.samefile(out, f) for f in policy.iterdir())
    if inside:
        raise UsageError(f"out={out} lies inside the policy folder {policy}: writing there could destroy the policy; "
                         "choose another out=")
    if out.is_dir():
        raise UsageError(f"out={out} is an existing folder; give the assignments file, e.g. out={out / 'assignments.csv'}")
    if not out.name.lower().endswith(OUT_SUFFIXES):
        raise UsageError(f"out={out}: cannot write '{''.join(out.suffixes) or out.name}' files; the assignments are "
                         f"written as {', '.join(OUT_SUFFIXES)}")


class _Writer:
    """Appends assignment tables to a temp file in ``out``'s folder in ``out``'s format; ``commit``
    fsyncs it, gives it the permissions the umask allows and renames it over ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.name = out.name.lower()
        fd, self.tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        self.fh = None
        self.pq = None
        self.rows = 0

    def write(self, table) -> None:
        if self.name.endswith((".parquet", ".pq")):
            # here: pyarrow loads only for a Parquet output (this module imports nothing heavy: --help is quick)
            import pyarrow as pa
            import pyarrow.parquet as pq

            t = pa.Table.from_pandas(table, preserve_index=False)
            if self.pq is None:
                self.pq = pq.ParquetWriter(self.tmp, t.schema)
            self.pq.write_table(t)
        else:
            if self.fh is None:
                opener = gzip.open if self.name.endswith(".gz") else open
                self.fh = opener(self.tmp, "wt", newline="", encoding="utf-8")
            table.to_csv(self.fh, header=self.rows == 0, index=False, sep="\t" if self.name.endswith(".tsv") else ",")
        self.rows += len(table)

    def close(self) -> None:
        for h in (self.pq, self.fh):
            if h is not None:
                h.close()
        self.pq = self.fh = None

    def commit(self) -> None:
        self.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(self.tmp, 0o666 & ~mask)
        os.replace(self.tmp, self.out)

    def discard(self) -> None:
        self.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def run_assign(args: dict) -> Path:
    """Score ``data.path`` with ``policy`` into ``out`` (atomically). Returns the output path."""
    # here: these load torch; this module imports nothing heavy, so --help and a typo answer at once
    from coarse_gpu.data.file import DataSchemaError, RowTally, duplicate_columns, iter_table, raw_header
    from coarse_gpu.policy.io import iter_assignments, load_policy

    try:
        chunk = int(args.get("chunk_rows", 1_000_000))
    except ValueError as err:
        raise UsageError(f"chunk_rows must be a whole number, got {args['chunk_rows']!r}") from err
    if chunk < 1:
        raise UsageError(f"chunk_rows must be >= 1, got {chunk}")
    source, out, folder = Path(args["data.path"]), Path(args["out"]), _policy_folder(args["policy"])
    check_output(out, source, folder)
    header = raw_header(source)  # also: the file exists, is a regular file and its header parses
    pol = load_policy(folder, device=args.get("device", "cpu") or "cpu")
    schema = pol.feature_schema
    if "data.features" in args and _list(args["data.features"]) != schema.columns:
        raise DataSchemaError([f"data.features={_list(args['data.features'])} does not match the policy's feature "
                               f"schema {schema.columns}: the policy was trained on different features"], str(source))
    if "data.categorical" in args and sorted(_list(args["data.categorical"])) != sorted(schema.categorical):
        raise DataSchemaError([f"data.categorical={_list(args['data.categorical'])} does not match the policy's "
                               f"categorical columns {sorted(schema.categorical)}"], str(source))
    if "data.treatment" in args and _list(args["data.treatment"]) != pol.treatment_names:
        raise DataSchemaError([f"data.treatment={_list(args['data.treatment'])} does not match the policy's "
                               f"treatment columns {pol.treatment_names}"], str(source))
    id_col: Optional[str] = args.get("data.id") or None
    if id_col is None and pol.id_column and pol.id_column in header:
        id_col = pol.id_column
    wanted = list(schema.columns) + ([id_col] if id_col else [])
    dups = duplicate_columns(header)
    if any(c in dups for c in wanted):
        raise DataSchemaError([f"column name '{c}' occurs {len(dups[c])} times in the header (columns {dups[c]}): "
                               "it is ambiguous which to use; rename or drop the duplicates"
                               for c in wanted if c in dups], str(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    far = RowTally()
    writer = _Writer(out)
    try:
        for table in iter_assignments(pol, iter_table(source, wanted, chunk), id_col, str(source), far):
            writer.write(table)
        if writer.rows == 0:
            raise DataSchemaError([f"file '{source}' has no data rows"], str(source))
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    for msg in far.messages():
        print(f"coarse-gpu-assign: warning: feature_out_of_range: {msg}", file=sys.stderr, flush=True)
    print(f"coarse-gpu-assign: {writer.rows} customers -> {out} ({pol.method}, K={pol.k}, treatments "
          f"{pol.treatment_names})", flush=True)
    return out


def _error_lines(err: Exception) -> str:
    """One line per problem: a data error with one problem is one line, with several a header and one
    line each."""
    from coarse_gpu.data.file import DataSchemaError  # here: loads torch (see run_assign)

    if isinstance(err, DataSchemaError):
        if len(err.problems) == 1:
            return f"data check failed for {err.source}: {err.problems[0]}"
    return str(err)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("COARSE_GPU_DEBUG", "") not in ("", "0")
    try:
        args = parse_args(argv)  # before the heavy imports: --help and typos answer at once
    except HelpRequested:
        print(__doc__)
        return 0
    except UsageError as err:
        print(f"coarse-gpu-assign: error: {err}", file=sys.stderr)
        return 2
    # here, after parse_args: these load torch, and --help and a typo answer before them
    from coarse_gpu.data.file import DataSchemaError
    from coarse_gpu.policy.io import PolicyFileError

    try:
        run_assign(args)
    except (UsageError, DataSchemaError, PolicyFileError) as err:
        if debug:
            raise
        print(f"coarse-gpu-assign: error: {_error_lines(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, permissions, ...: the previous output is untouched
        if debug:
            raise
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"coarse-gpu-assign: error: {err.strerror or err}{where}; nothing was written", file=sys.stderr)
        return 1
    except Exception as err:  # a bug: still one line, the traceback on request
        if debug:
            raise
        print(f"coarse-gpu-assign: error: internal error {type(err).__name__}: {err} (set COARSE_GPU_DEBUG=1 for "
              "the traceback); nothing was written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
