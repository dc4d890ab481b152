"""Reading a CSV or Parquet table for ``data=file``: whole, or block by block; the raw header.

Part of coarse_gpu.data.file; see that module's docstring.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import pandas as pd
import pyarrow.parquet as pq

from coarse_gpu.data.file_spec import CSV_SUFFIXES, PARQUET_SUFFIXES, DataSchemaError


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataSchemaError(
        [f"file '{path}' has an unsupported extension; use CSV ({', '.join(CSV_SUFFIXES)}) or Parquet "
         f"({', '.join(PARQUET_SUFFIXES)})"], str(path))


def _existing_file(path: Path) -> str:
    """The file's kind ("csv" | "parquet"); DataSchemaError if it is missing, a folder or not a regular file."""
    if path.is_dir():
        raise DataSchemaError([f"file '{path}' is a folder, not a file (data.path)"], str(path))
    if not path.exists():
        raise DataSchemaError([f"file '{path}' does not exist (data.path)"], str(path))
    if not path.is_file():  # a FIFO or a device would block or never end
        raise DataSchemaError([f"file '{path}' is not a regular file (data.path)"], str(path))
    return _kind(path)


def _sep(path: Path) -> str:
    return "\t" if path.name.lower().endswith(".tsv") else ","


def _unreadable(path: Path, kind: str, err: Exception) -> DataSchemaError:
    return DataSchemaError([f"file '{path}' could not be read as {kind}: {type(err).__name__}: {err}"], str(path))


def raw_header(path: str | Path) -> list[str]:
    """The column names exactly as the file's header has them, duplicates included (pandas would
    rename a second ``age`` to ``age.1`` without a word)."""
    path = Path(path)
    kind = _existing_file(path)
    try:
        if kind == "parquet":
            return [str(c) for c in pq.read_schema(path).names]
        head = pd.read_csv(path, sep=_sep(path), header=None, nrows=1, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return []
    except Exception as err:  # pandas/pyarrow parse errors: report them as data problems
        raise _unreadable(path, kind, err) from err
    return [str(v) for v in head.iloc[0]] if len(head) else []


def duplicate_columns(header: Sequence[str]) -> dict[str, list[int]]:
    """{name: [0-based positions]} of the names that occur more than once in ``header``."""
    pos: dict[str, list[int]] = {}
    for i, c in enumerate(header):
        pos.setdefault(str(c), []).append(i)
    return {c: p for c, p in pos.items() if len(p) > 1}


def read_table(path: str | Path, columns: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Read a whole CSV / Parquet file into a DataFrame (only ``columns`` when given and present).

    Raises DataSchemaError (naming the file) when it does not exist, is empty or cannot be parsed.
    ``df.attrs["header"]`` keeps the raw header (duplicates included) for :func:`check_frame`.
    """
    path = Path(path)
    kind = _existing_file(path)
    header = raw_header(path)
    try:
        if kind == "parquet":
            have = pq.read_schema(path).names
            cols = [c for c in columns if c in have] if columns is not None else None
            df = pd.read_parquet(path, columns=cols)
        else:
            cols = set(columns) if columns is not None else None
            df = pd.read_csv(path, sep=_sep(path), usecols=(lambda c: c in cols) if cols is not None else None)
    except DataSchemaError:
        raise
    except Exception as err:  # pandas/pyarrow parse errors: report them as data problems
        raise _unreadable(path, kind, err) from err
    if df.shape[0] == 0:
        raise DataSchemaError([f"file '{path}' has no data rows"], str(path))
    df.attrs["header"] = header
    return df


def iter_table(path: str | Path, columns: Optional[Sequence[str]] = None,
               chunk_rows: int = 1_000_000) -> Iterator[pd.DataFrame]:
    """Yield the file in DataFrames of at most ``chunk_rows`` rows (memory stays O(chunk_rows)).

    Read errors at any point of the file (a corrupt gzip stream, a broken Parquet page) are raised as
    DataSchemaError naming the file."""
    path = Path(path)
    kind = _existing_file(path)
    try:
        if kind == "parquet":
            pf = pq.ParquetFile(path)
            cols = [c for c in columns if c in pf.schema_arrow.names] if columns is not None else None
            for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
                yield batch.to_pandas()
        else:
            cols = set(columns) if columns is not None else None
            yield from pd.read_csv(path, sep=_sep(path), chunksize=chunk_rows,
                                   usecols=(lambda c: c in cols) if cols is not None else None)
    except pd.errors.EmptyDataError as err:
        raise DataSchemaError([f"file '{path}' has no data rows"], str(path)) from err
    except Exception as err:  # pandas/pyarrow/gzip errors anywhere in the file
        raise _unreadable(path, kind, err) from err


# ---------------------------------------------------------------------------------------------
# checks
