"""The case rows of an archive built from a vector file: one row per vector (its label, and where given its
split, index in that split, source file or study id), kept in a Parquet file beside the index and read by row
id without loading the table (a row group, 65,536 rows, is decoded at a time and the last few are kept)."""
import bisect
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from .atomic import atomic_path, file_sha256
from .runtime import UserError

REQUIRED = ("label",)
ROW_GROUP = 65_536


def rows_path(index_path) -> Path:
    """Where an index's case rows live: `<index stem>.rows.parquet` beside it."""
    return Path(index_path).with_suffix(".rows.parquet")


def check_rows(source, n: int):
    """The Parquet file `source`, opened, after the checks a build makes before it starts: readable, a `label`
    column, at least `n` rows; one UserError line otherwise."""
    import pyarrow.parquet as pq
    source = Path(source)
    if not source.is_file():
        raise UserError(f"case rows {source} not found")
    try:
        table = pq.ParquetFile(source)
    except Exception as err:  # pyarrow raises its own errors for a file that is not Parquet
        raise UserError(f"{source} is not a Parquet file ({type(err).__name__}); give the case rows as Parquet, one "
                        f"row per vector, with a label column") from None
    columns = table.schema_arrow.names
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise UserError(f"{source} has no {', '.join(missing)} column (it has {', '.join(columns) or 'none'}); the case "
                        f"rows need a label for each vector")
    if table.metadata.num_rows < n:
        raise UserError(f"{source} holds {table.metadata.num_rows:,} case rows for {n:,} vectors; give one row per vector")
    return table


def write_rows(source, index_path, n: int) -> dict:
    """Copy the first `n` rows of the Parquet file `source` beside the index (row groups of ROW_GROUP rows),
    after check_rows. Returns what the build record keeps of it (file name, rows, columns, SHA-256, size)."""
    import pyarrow.parquet as pq
    table = check_rows(source, n)
    columns = table.schema_arrow.names
    dest = rows_path(index_path)
    written = 0
    with atomic_path(dest) as tmp:
        writer = None
        try:
            for batch in table.iter_batches(batch_size=ROW_GROUP):
                batch = batch.slice(0, n - written)
                if batch.column("label").null_count:
                    raise UserError(f"{source} has a case row without a label near row {written + 1:,}")
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema)
                writer.write_batch(batch, row_group_size=ROW_GROUP)
                written += batch.num_rows
                if written >= n:
                    break
        finally:
            if writer is not None:
                writer.close()
    return {"file": dest.name, "rows": written, "columns": columns, "sha256": file_sha256(dest),
            "bytes": dest.stat().st_size}


class CaseRows(Sequence):
    """The rows of a Parquet file as a read-only sequence of dicts, each with split (default "archive"),
    index (default the row id) and label, and the file's other columns."""

    def __init__(self, path):
        import pyarrow.parquet as pq
        self.path = Path(path)
        self._file = pq.ParquetFile(self.path)
        sizes = [self._file.metadata.row_group(g).num_rows for g in range(self._file.num_row_groups)]
        self._starts = [sum(sizes[:g]) for g in range(len(sizes))]
        self._n = sum(sizes)
        self._group = lru_cache(maxsize=8)(self._read_group)

    def _read_group(self, group: int) -> dict:
        return self._file.read_row_group(group).to_pydict()

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(self._n))]
        if not -self._n <= row < self._n:
            raise IndexError(row)
        row %= self._n
        group = bisect.bisect_right(self._starts, row) - 1
        columns = self._group(group)
        at = row - self._starts[group]
        values = {name: column[at] for name, column in columns.items()}
        return {"split": "archive", "index": row, **values}
