"""Out-of-fold case records: the schema of ``leaderboard/cases.parquet``, appending, reading, rebuilding.

One record per (fold trial, validation image, class), written by the trial at its best epoch: the
case keys, the true area, the confusion counts at the spec's threshold, the boundary and object
counts there, and two histograms of the predicted probability (over true-foreground and over
true-background pixels) from which the counts at every grid threshold follow. The statistics of
:mod:`sweeper.evidence` are computed from these records.

On disk ``cases.parquet`` is a Parquet *dataset*: a folder holding one file per fold trial,
``<config_id>.fold<k>.parquet`` (``<config_id>.fold<k>.repeat<r>.parquet`` for the further seeded runs of
a fold under ``training.repeats``), which ``pyarrow.parquet.read_table`` and ``pandas.read_parquet``
open as one table. A fold trial's records are written once, to a temporary name then moved into
place with ``os.replace`` (atomic on one file system), and never again: a resumed sweep that reports
the same fold trial again appends nothing. One file per fold trial keeps an append O(fold) where
rewriting a single file would rewrite every earlier record after every trial (50 configurations x
5 folds x up to 250 MB); the file of a fold trial is also exactly what the trial logs to MLflow
(``cases/cases.parquet``), so a lost folder is rebuilt by :func:`rebuild_cases` from those files.

Encoding (measured by ``benchmarks/statistics_simulation.py`` on synthetic records of the full UW-Madison
set): zstd; strings dictionary-encoded; counts, boundary metrics and histogram bins stored with
Parquet's BYTE_STREAM_SPLIT encoding (the bytes of each value split into streams: the high bytes of
mostly small or zero counts are long runs zstd compresses well), which took the per-configuration
size from 4.0 MB (default encodings) to 3.1 MB at 20 bins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "BOUNDARY_COLUMNS",
    "CASES_FILE",
    "CASE_COLUMNS",
    "COUNT_COLUMNS",
    "DEFAULT_BINS",
    "HISTOGRAM_COLUMNS",
    "KEY_COLUMNS",
    "OBJECT_COLUMNS",
    "append_cases",
    "as_cases_table",
    "case_runs_present",
    "cases_present",
    "cases_schema",
    "part_file",
    "read_cases",
    "rebuild_cases",
]

#: name of the folder under ``leaderboard/`` (and of the fold trial's MLflow artifact file)
CASES_FILE = "cases.parquet"
#: one fold trial (``repeat``: which of the fold's ``training.repeats`` seeded runs): its records are
#: appended together, once
KEY_COLUMNS = ("config_id", "fold", "repeat")
#: one record: the fold trial, the image and the class
CASE_COLUMNS = ("config_id", "fold", "repeat", "patient", "scan", "slice", "class")
#: what records written without a ``repeat`` column (before repeats existed, or by a trial) hold in it
DEFAULT_REPEAT = 0
COUNT_COLUMNS = ("area", "tp", "fp", "fn", "tn")
BOUNDARY_COLUMNS = ("nsd", "hd95", "boundary_f1")
OBJECT_COLUMNS = ("objects_true", "objects_found", "objects_pred", "objects_correct")
#: fixed-size lists of n_bins counts
HISTOGRAM_COLUMNS = ("hist_fg", "hist_bg")
#: optional float32: the sum of the predicted probability over the pixels of bin 0 (p < 1/n_bins),
#: both truths together. Most pixels of a segmentation sit there, far below the bin's midpoint, so
#: this one number per record makes the expected calibration error exact where it matters; the other
#: bins use their midpoints (their per-bin sums would double the file for little: measured)
OPTIONAL_COLUMNS = ("prob_sum_low",)
DEFAULT_BINS = 20
MIN_BINS, MAX_BINS = 2, 1000

_STRING = pa.dictionary(pa.int32(), pa.string())
_PART = re.compile(r"^(?P<config>.+)\.fold(?P<fold>-?\d+)(?:\.repeat(?P<repeat>\d+))?\.parquet$")


def cases_schema(n_bins: int = DEFAULT_BINS, *, prob_sum_low: bool = False) -> pa.Schema:
    """Return the Arrow schema of the case records with ``n_bins`` histogram bins.

    Columns (CASES_SCHEMA of the evidence issue): ``config_id, patient, scan, class`` dictionary
    strings; ``fold`` int16; ``repeat`` int16 (which seeded run of the fold, 0 for the first);
    ``slice`` int32; ``area, tp, fp, fn, tn`` int32 (counts at the spec's
    threshold); ``nsd, hd95, boundary_f1`` float32 (NaN when the sweep skips boundary metrics);
    ``objects_true, objects_found, objects_pred, objects_correct`` int16 (null when not counted:
    zeros would read as "no object", which scores 1); ``hist_fg, hist_bg``
    fixed-size lists of ``n_bins`` int32: bin b counts the pixels whose predicted probability is in
    [b/n, (b+1)/n) (the last bin includes 1), over true-foreground resp. true-background pixels;
    with ``prob_sum_low``, that float32 column: the sum of the probability over bin 0's pixels.
    """
    if not MIN_BINS <= n_bins <= MAX_BINS:
        raise ValueError(f"n_bins must be in [{MIN_BINS}, {MAX_BINS}] but got {n_bins}")
    fields = [
        pa.field("config_id", _STRING, nullable=False),
        pa.field("fold", pa.int16(), nullable=False),
        pa.field("repeat", pa.int16(), nullable=False),
        pa.field("patient", _STRING, nullable=False),
        pa.field("scan", _STRING, nullable=False),
        pa.field("slice", pa.int32(), nullable=False),
        pa.field("class", _STRING, nullable=False),
        *(pa.field(c, pa.int32(), nullable=False) for c in COUNT_COLUMNS),
        *(pa.field(c, pa.float32()) for c in BOUNDARY_COLUMNS),
        *(pa.field(c, pa.int16()) for c in OBJECT_COLUMNS),  # null: not counted
        *(pa.field(c, pa.list_(pa.int32(), n_bins), nullable=False) for c in HISTOGRAM_COLUMNS),
    ]
    if prob_sum_low:
        fields.append(pa.field("prob_sum_low", pa.float32()))
    return pa.schema(fields)


def _histogram_bins(column: pa.ChunkedArray | pa.Array, name: str) -> int:
    """The common length of the lists of a histogram column (error if they differ)."""
    if pa.types.is_fixed_size_list(column.type):
        return column.type.list_size
    lengths = pc.list_value_length(column)
    low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
    if low != high:
        raise ValueError(f"{name}: every record needs the same number of bins, got lengths {low} to {high}")
    return int(low)


def _histogram_matrix(column: pa.ChunkedArray | pa.Array, n_bins: int) -> np.ndarray:
    """(rows, n_bins) numpy view of a list column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, n_bins)


def as_cases_table(records: pd.DataFrame | pa.Table, config_id: str | None = None, *, check: bool = True) -> pa.Table:
    """Return ``records`` as an Arrow table of :func:`cases_schema`, sorted by the case columns.

    Args:
        records: a DataFrame (histograms as lists or arrays per row) or an Arrow table.
        config_id: fills or overrides the ``config_id`` column (a trial's own file may lack it).
        check: verify the records (below); off only for data this module wrote itself.

    Raises:
        ValueError: a column missing; a histogram of another length; a negative count;
            ``tp + fn != area``; a histogram that does not hold every pixel
            (``sum hist_fg != area`` or ``sum hist_fg + sum hist_bg != tp + fp + fn + tn``); a case
            (config_id, fold, patient, scan, slice, class) twice.
    """
    table = records if isinstance(records, pa.Table) else pa.Table.from_pandas(records, preserve_index=False)
    if config_id is not None:
        values = pa.array([config_id] * table.num_rows, pa.string())
        table = (
            table.set_column(table.schema.get_field_index("config_id"), "config_id", values)
            if "config_id" in table.column_names
            else table.append_column("config_id", values)
        )
    if "repeat" not in table.column_names:
        table = table.append_column("repeat", pa.array([DEFAULT_REPEAT] * table.num_rows, pa.int16()))
    required = (*CASE_COLUMNS, *COUNT_COLUMNS, *BOUNDARY_COLUMNS, *OBJECT_COLUMNS, *HISTOGRAM_COLUMNS)
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValueError(f"case records lack column(s) {missing}; see sweeper.cases.cases_schema")
    n_bins = _histogram_bins(table.column("hist_fg"), "hist_fg")
    schema = cases_schema(n_bins, prob_sum_low="prob_sum_low" in table.column_names)
    columns = []
    for field in schema:
        column = table.column(field.name)
        if field.name in HISTOGRAM_COLUMNS:
            bins = _histogram_bins(column, field.name)
            if bins != n_bins:
                raise ValueError(f"{field.name} has {bins} bins but hist_fg has {n_bins}")
            flat = _histogram_matrix(column, n_bins).ravel()
            column = pa.FixedSizeListArray.from_arrays(pa.array(flat, field.type.value_type), n_bins)
        elif pa.types.is_dictionary(field.type):
            column = column.cast(pa.string()).combine_chunks().dictionary_encode()
            column = column.cast(field.type)
        else:
            column = column.cast(field.type)
        columns.append(column)
    table = pa.Table.from_arrays(columns, schema=schema)
    if check:
        _check(table, n_bins)
    return table.take(pa.array(_case_order(table)))


def _case_order(table: pa.Table) -> np.ndarray:
    """Row order sorting by the case columns (strings by value, not by dictionary code)."""
    keys = []
    for name in CASE_COLUMNS:
        column = table.column(name).combine_chunks()
        if pa.types.is_dictionary(column.type):
            rank = np.argsort(np.argsort(column.dictionary.to_numpy(zero_copy_only=False), kind="stable"))
            keys.append(rank[column.indices.to_numpy()])
        else:
            keys.append(column.to_numpy())
    return np.lexsort(keys[::-1])


def _check(table: pa.Table, n_bins: int) -> None:
    """Raise ValueError naming the first row that breaks the records' invariants."""
    counts = {c: table.column(c).to_numpy() for c in COUNT_COLUMNS}
    fg = _histogram_matrix(table.column("hist_fg"), n_bins)
    bg = _histogram_matrix(table.column("hist_bg"), n_bins)
    objects = {c: table.column(c).to_numpy() for c in OBJECT_COLUMNS}
    problems = [
        (
            "a negative count",
            np.any([v < 0 for v in counts.values()], axis=0)
            | np.any([v < 0 for v in objects.values()], axis=0)
            | (fg < 0).any(1)
            | (bg < 0).any(1),
        ),
        ("tp + fn != area", counts["tp"] + counts["fn"] != counts["area"]),
        ("sum(hist_fg) != area", fg.sum(1) != counts["area"]),
        (
            "sum(hist_fg) + sum(hist_bg) != tp + fp + fn + tn",
            fg.sum(1) + bg.sum(1) != sum(counts[c].astype(np.int64) for c in ("tp", "fp", "fn", "tn")),
        ),
        ("objects_found > objects_true", objects["objects_found"] > objects["objects_true"]),
        ("objects_correct > objects_pred", objects["objects_correct"] > objects["objects_pred"]),
    ]
    for what, bad in problems:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            keys = {c: table.column(c)[row].as_py() for c in CASE_COLUMNS}
            raise ValueError(f"case records: {what} in {int(bad.sum())} record(s), first {keys}")
    keys = table.select(list(CASE_COLUMNS)).to_pandas()
    duplicated = keys.duplicated()
    if duplicated.any():
        raise ValueError(
            f"case records: {int(duplicated.sum())} duplicate case(s), first {keys[duplicated].iloc[0].to_dict()}"
        )


def _part_name(config_id: str, fold: int, repeat: int = DEFAULT_REPEAT) -> str:
    """``<config_id>.fold<k>.parquet``, with ``.repeat<r>`` before the suffix for every repeat but the first."""
    suffix = f".repeat{int(repeat)}" if int(repeat) != DEFAULT_REPEAT else ""
    return f"{quote(config_id, safe='')}.fold{int(fold)}{suffix}.parquet"


def part_file(path: str | Path, config_id: str, fold: int, repeat: int = DEFAULT_REPEAT) -> Path:
    """Return the file of fold trial (``config_id``, ``fold``, ``repeat``) inside the dataset folder ``path``."""
    return Path(path) / _part_name(config_id, fold, repeat)


def _parts(path: Path) -> dict[tuple[str, int, int], Path]:
    """(config_id, fold, repeat) -> file of every fold trial in the dataset folder (temporary files left out)."""
    if not path.exists():
        return {}
    if not path.is_dir():
        raise ValueError(f"{path} is a file; case records are a folder of one Parquet file per fold trial")
    found = {}
    for item in path.iterdir():
        match = _PART.match(item.name)
        if match and not item.name.startswith((".", "_")):
            found[(unquote(match["config"]), int(match["fold"]), int(match["repeat"] or DEFAULT_REPEAT))] = item
    return found


def cases_present(path: str | Path) -> set[tuple[str, int]]:
    """Return the (config_id, fold) pairs whose records ``path`` already holds (of any repeat)."""
    return {(config, fold) for config, fold, _ in _parts(Path(path))}


def case_runs_present(path: str | Path) -> set[tuple[str, int, int]]:
    """Return the (config_id, fold, repeat) fold trials whose records ``path`` already holds."""
    return set(_parts(Path(path)))


def _write_part(table: pa.Table, target: Path) -> None:
    """Write ``table`` to ``target`` through a temporary file in the same folder and ``os.replace``."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    numeric = [
        *COUNT_COLUMNS,
        *BOUNDARY_COLUMNS,
        *(f"{c}.list.element" for c in HISTOGRAM_COLUMNS),
        *(c for c in OPTIONAL_COLUMNS if c in table.column_names),
    ]
    try:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            use_dictionary=[
                c
                for c in table.column_names
                if c not in (*COUNT_COLUMNS, *BOUNDARY_COLUMNS, *HISTOGRAM_COLUMNS, *OPTIONAL_COLUMNS)
            ],
            column_encoding=dict.fromkeys(numeric, "BYTE_STREAM_SPLIT"),
        )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def append_cases(path: str | Path, records: pd.DataFrame | pa.Table, config_id: str | None = None) -> int:
    """Add the records of fold trials ``path`` does not hold yet; return the number of records added.

    ``records`` may hold several fold trials (``config_id``, ``fold``); each is written to its own
    file, atomically. A fold trial already present is left as it is and its new records are
    dropped (a resumed sweep reporting a trial twice adds nothing). The folder is created when
    missing. ``config_id`` fills the column when the records lack it (a trial's own file).

    Raises:
        ValueError: as :func:`as_cases_table`, or when the histograms have another number of bins
            than the records already present (one sweep, one grid).
    """
    path = Path(path)
    table = as_cases_table(records, config_id)
    present = _parts(path)
    n_bins = table.schema.field("hist_fg").type.list_size
    if present:
        existing = pq.read_schema(next(iter(present.values()))).field("hist_fg").type.list_size
        if existing != n_bins:
            raise ValueError(f"records have {n_bins} histogram bins but {path} holds records with {existing}")
    path.mkdir(parents=True, exist_ok=True)
    keys = table.select(list(KEY_COLUMNS)).to_pandas()
    added = 0
    for (config, fold, repeat), rows in keys.groupby(list(KEY_COLUMNS), sort=True, observed=True).indices.items():
        if (str(config), int(fold), int(repeat)) in present:
            continue
        part = table.take(pa.array(rows))
        _write_part(part, path / _part_name(str(config), int(fold), int(repeat)))
        added += part.num_rows
    return added


def read_cases(
    path: str | Path, config_ids: Iterable[str] | None = None, columns: Iterable[str] | None = None
) -> pa.Table:
    """Return the records of ``path`` (every fold trial, or those of ``config_ids``) as one Arrow table.

    An Arrow table rather than a DataFrame: the histograms stay (rows, bins) integer blocks, where
    pandas would hold one Python list per record. ``.to_pandas()`` gives the DataFrame. A missing
    folder gives an empty table.
    """
    parts = _parts(Path(path))
    if config_ids is not None:
        wanted = set(config_ids)
        parts = {k: v for k, v in parts.items() if k[0] in wanted}
    columns = None if columns is None else list(columns)
    if not parts:
        schema = cases_schema()
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    tables = [_with_repeat(pq.read_table(parts[key], columns=columns), key[2], columns) for key in sorted(parts)]
    return pa.concat_tables(tables, promote_options="permissive").unify_dictionaries()


def _with_repeat(table: pa.Table, repeat: int, columns: list[str] | None) -> pa.Table:
    """A part written before repeats existed lacks the ``repeat`` column: its file name's repeat fills it."""
    if "repeat" in table.column_names or (columns is not None and "repeat" not in columns):
        return table
    return table.append_column(
        pa.field("repeat", pa.int16(), nullable=False), pa.array([repeat] * table.num_rows, pa.int16())
    )


def rebuild_cases(path: str | Path, record_files: Iterable[str | Path | tuple[str, str | Path]]) -> int:
    """Rebuild ``path`` from per-trial record files (e.g. the fold runs' ``cases/cases.parquet``
    artifacts downloaded from MLflow); return the number of records added.

    Each item is a file path, or ``(config_id, path)`` for a file whose records lack the
    ``config_id`` column. Fold trials already present are kept as they are (never duplicated), so
    rebuilding a partly lost folder adds only what is missing.
    """
    added = 0
    for item in record_files:
        config_id, file = item if isinstance(item, tuple) else (None, item)
        added += append_cases(path, pq.read_table(file), config_id)
    return added
