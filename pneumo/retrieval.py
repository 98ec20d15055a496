"""FAISS case index over the classifier's embeddings: build, save atomically, load with checks, search."""
import json
import os
from pathlib import Path

import faiss
import numpy as np

from .runtime import UserError

INDEX_TYPES = ("flat", "hnsw", "ivf")
METRICS = ("l2", "cosine")
DEFAULT_INDEX = "models/task3_index.faiss"


def prepare(vectors, metric):
    """float32, C-contiguous; unit length for cosine (inner product of unit vectors)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        vectors = vectors.copy()
        faiss.normalize_L2(vectors)
    return vectors


def build_index(vectors, index_type="flat", metric="l2", hnsw_m=32, ef_construction=80, ef_search=64,
                nlist=None, nprobe=16):
    """An exact (flat) or approximate (HNSW, IVF-flat) index holding `vectors` in row order."""
    dim = vectors.shape[1]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    vectors = prepare(vectors, metric)
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss_metric)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
    elif index_type == "ivf":
        nlist = nlist or default_nlist(len(vectors))
        quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        index.cp.max_points_per_centroid = 64  # k-means on a 64-per-cell sample: minutes, not an hour, at 1M
        index.train(vectors)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(f"unknown index type {index_type!r}; choose from {INDEX_TYPES}")
    index.add(vectors)
    return index


def default_nlist(n: int) -> int:
    """IVF cells for n vectors: about 4*sqrt(n), with at least 39 vectors per cell for k-means."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39))


def save_index(index, meta: dict, path) -> None:
    """The .faiss file and its .json metadata, each written to a temp file and renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_index = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_meta = meta_path(path).with_name(f".{meta_path(path).name}.{os.getpid()}.tmp")
    try:
        faiss.write_index(index, str(tmp_index))
        tmp_meta.write_text(json.dumps(meta) + "\n")
        os.replace(tmp_index, path)
        os.replace(tmp_meta, meta_path(path))
    finally:
        tmp_index.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)


def meta_path(path) -> Path:
    return Path(path).with_suffix(".json")


def load_index(path, checkpoint_sha256: str):
    """(index, metadata); refuses a missing or unreadable pair and one built from another checkpoint."""
    path = Path(path)
    if not path.is_file() or not meta_path(path).is_file():
        raise UserError(f"index {path} (with {meta_path(path).name}) not found; build it with "
                        f"`python task3/build_index.py`")
    try:
        meta = json.loads(meta_path(path).read_text())
        index = faiss.read_index(str(path))
    except (json.JSONDecodeError, RuntimeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} or its metadata is unreadable ({type(err).__name__}); rebuild it with "
                        f"`python task3/build_index.py`") from None
    if meta.get("checkpoint_sha256") != checkpoint_sha256:
        raise UserError(f"{path} was built from another checkpoint (sha256 {str(meta.get('checkpoint_sha256'))[:12]}…, "
                        f"this one {checkpoint_sha256[:12]}…); rebuild it with `python task3/build_index.py`")
    if index.ntotal != len(meta.get("rows", [])):
        raise UserError(f"{path} holds {index.ntotal} vectors but its metadata lists {len(meta.get('rows', []))}; rebuild it")
    if "ef_search" in meta.get("build", {}) and hasattr(index, "hnsw"):
        index.hnsw.efSearch = meta["build"]["ef_search"]
    return index, meta


def search(index, meta, queries, k, exclude=None):
    """Top-k rows per query as lists of {rank, row, distance|similarity, split, index, label}.
    `exclude[i]` is an archive row to drop from query i's results (the query itself)."""
    if k > index.ntotal - (1 if exclude is not None else 0):
        raise UserError(f"k={k} is larger than the archive ({index.ntotal} cases"
                        f"{', less the query itself' if exclude is not None else ''})")
    queries = prepare(queries, meta["metric"])
    scores, rows = index.search(queries, k + (1 if exclude is not None else 0))
    key = "similarity" if meta["metric"] == "cosine" else "distance"
    results = []
    for i, (row_scores, row_ids) in enumerate(zip(scores, rows)):
        hits = [(s, r) for s, r in zip(row_scores, row_ids) if r >= 0 and (exclude is None or r != exclude[i])][:k]
        results.append([{"rank": rank + 1, "row": int(r), key: _score(s, meta["metric"]), **meta["rows"][r]}
                        for rank, (s, r) in enumerate(hits)])
    return results


def _score(value, metric):
    # faiss L2 indexes return squared distances; report the Euclidean distance itself
    return float(np.sqrt(max(value, 0.0))) if metric == "l2" else float(value)


def exclusions(index_meta, keys):
    """Archive row of each query that is itself archived (else -1), or None when none is."""
    row_of = {(r["split"], r["index"]): row for row, r in enumerate(index_meta["rows"])}
    rows = [row_of.get(key, -1) if key else -1 for key in keys]
    return rows if any(r >= 0 for r in rows) else None
