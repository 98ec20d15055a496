"""Opening an archive built from a vector file (task3/build_index.py --vectors ... --rows ...): the index, its
build record and its case rows, checked and made searchable by pneumo.retrieval.search like the small archive.
The index file's SHA-256 is taken once, at build; opening checks its size and modification time against the
record (hashing 5 GB on every open would take longer than the search), and hashes the case rows, which are
small, in full."""
from pathlib import Path

import faiss

from .atomic import file_sha256
from .case_rows import CaseRows, rows_path
from .runtime import UserError
from .search_depth import apply_depth

REBUILD = "rebuild it with `python task3/build_index.py --vectors FILE.npy --rows FILE.parquet`"


def file_stamp(path) -> dict:
    stat = Path(path).stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def open_vector_archive(path, record: dict, checkpoint_sha256: str, dim: int | None = None):
    """(index at its recorded search depth, ArchiveMeta with lazy rows), or one UserError line saying why not."""
    from .retrieval import ArchiveMeta
    path = Path(path)
    if not record.get("case_rows"):
        raise UserError(f"{path} indexes the vector file {record.get('vectors')} without case rows, so it has no cases to "
                        f"show; {REBUILD} (benchmarks/task3_large.py measures such indexes)")
    if file_stamp(path) != record.get("index_stamp"):
        raise UserError(f"{path} is not the file its build record describes (size or time changed since the build); {REBUILD}")
    rows_file = rows_path(path)
    if not rows_file.is_file() or file_sha256(rows_file) != record["case_rows"]["sha256"]:
        raise UserError(f"the case rows {rows_file.name} beside {path.name} are missing or were changed after the build; "
                        f"{REBUILD}")
    if record.get("checkpoint_sha256") != checkpoint_sha256:
        raise UserError(f"{path} holds vectors of another checkpoint (sha256 {str(record.get('checkpoint_sha256'))[:12]}…, "
                        f"this one {checkpoint_sha256[:12]}…); query it with the checkpoint its vectors came from, or {REBUILD}")
    index = faiss.read_index(str(path))
    if dim is not None and index.d != dim:
        raise UserError(f"{path} holds {index.d}-d vectors but the classifier gives {dim}-d embeddings; {REBUILD}")
    rows = CaseRows(rows_file)
    if len(rows) != index.ntotal:
        raise UserError(f"{path} holds {index.ntotal:,} vectors but its case rows list {len(rows):,}; {REBUILD}")
    if record.get("search"):
        apply_depth(index, record["search"])
    build = {"index_type": record["factory"], "splits": ["archive"], "vector_file": record["vectors"],
             "search": record.get("search")}
    meta = ArchiveMeta("l2", rows, build, checkpoint_sha256=record["checkpoint_sha256"], dim=index.d,
                       ntotal=index.ntotal, run={k: record[k] for k in ("script", "git_commit") if k in record})
    return index, meta
