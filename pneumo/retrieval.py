"""FAISS case index over the classifier's embeddings: build, save atomically, load with checks, search."""
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import faiss
import numpy as np

from .atomic import atomic_path, file_sha256
from .data import data_file
from .runtime import UserError
from .screening import METHOD as OOD_METHOD
from .streamed_index import VECTOR_FILE_INDEX

INDEX_TYPES = ("flat", "hnsw", "ivf", "ivf_sq8")
IVF_TYPES = ("ivf", "ivf_sq8")  # k-means cells; ivf_sq8 keeps each vector as 8-bit codes (a quarter of float32)
INDEX_FAMILY = {"flat": "flat", "hnsw": "hnsw", "ivf": "ivf", "ivf_sq8": "ivf"}  # which build/search parameters apply
METRICS = ("l2", "cosine")
DEFAULT_INDEX = "models/task3_index.faiss"
INDEX_NAME = "task3_index.faiss"  # the index inside a run folder


# A hit carries one `score`; the archive's metadata (and every results file) names the metric that says
# what it is: an L2 distance (lower is closer) or a cosine similarity (higher is closer). This is the one
# place that puts it in words.
SCORE_NAMES = {"l2": "distance", "cosine": "similarity"}


def score_name(metric: str) -> str:
    return SCORE_NAMES[metric]


def prepare(vectors, metric):
    """float32, C-contiguous; unit length for cosine (inner product of unit vectors)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        vectors = vectors.copy()
        faiss.normalize_L2(vectors)
    return vectors


@dataclass(frozen=True)
class IndexSpec:
    """How an archive is indexed, in the same words for FAISS and Milvus: the index type, the metric,
    and the parameters of the approximate types (HNSW: hnsw_m, ef_construction, ef_search; IVF and IVF-SQ8:
    nlist, nprobe; nlist None = about 4*sqrt(N))."""
    index_type: str = "flat"
    metric: str = "l2"
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64
    nlist: int | None = None
    nprobe: int = 16
    recall_target: float | None = None  # Milvus IVF: nprobe chosen for it at build time (pneumo.search_depth)

    def __post_init__(self):
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"unknown index type {self.index_type!r}; choose from {INDEX_TYPES}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose from {METRICS}")

    @classmethod
    def from_args(cls, args):
        """From build_index.py's flags (which name the same fields)."""
        return cls(**{name: getattr(args, name) for name in asdict(cls()) if hasattr(args, name)})


EXACT = IndexSpec()  # flat, L2: the default archive


@dataclass
class ArchiveMeta:
    """What an archive says about itself, beside its vectors: the metric its scores are in, one row per
    vector ({split, index, label} of the case), how it was built, the checkpoint and data file it was built
    from, the out-of-distribution reference of val, and (written with it) the index file's digest, size and
    its own digest. `run` is the build's record (script, commit, flags). One JSON object on disk: the FAISS
    sidecar or the Milvus collection's properties (rows in the entities there)."""
    metric: str
    rows: list
    build: dict = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    image_size: int | None = None
    data_sha256: str | None = None
    ood: dict | None = None
    index_sha256: str | None = None
    dim: int | None = None
    ntotal: int | None = None
    meta_sha256: str | None = None
    run: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = {**self.run, **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "run"}}
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> "ArchiveMeta":
        names = {f.name for f in fields(cls)} - {"run"}
        return cls(**{k: v for k, v in data.items() if k in names}, run={k: v for k, v in data.items() if k not in names})


def build_index(vectors, spec: IndexSpec = EXACT):
    """An exact (flat) or approximate (HNSW, IVF-flat, IVF-SQ8) index holding `vectors` in row order, made by
    faiss.index_factory ("Flat", "HNSW<m>", "IVF<nlist>,Flat", "IVF<nlist>,SQ8")."""
    vectors = prepare(vectors, spec.metric)
    nlist = spec.nlist or default_nlist(len(vectors))
    factory = {"flat": "Flat", "hnsw": f"HNSW{spec.hnsw_m}", "ivf": f"IVF{nlist},Flat", "ivf_sq8": f"IVF{nlist},SQ8"}[spec.index_type]
    index = faiss.index_factory(vectors.shape[1], factory,
                                faiss.METRIC_INNER_PRODUCT if spec.metric == "cosine" else faiss.METRIC_L2)
    if spec.index_type == "hnsw":
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    elif spec.index_type in IVF_TYPES:
        # k-means on a 64-per-cell sample: minutes, not an hour, at 1M
        faiss.extract_index_ivf(index).cp.max_points_per_centroid = 64
        index.train(vectors)
        index.nprobe = min(spec.nprobe, nlist)
    index.add(vectors)
    return index


def default_nlist(n: int) -> int:
    """IVF cells for n vectors: about 4*sqrt(n), with at least 39 vectors per cell for k-means."""
    return max(1, min(int(4 * np.sqrt(n)), n // 39))


def meta_digest(meta: dict) -> str:
    """SHA-256 of the metadata itself (every field but this digest, keys sorted): rows, labels, the
    out-of-distribution reference and the build record cannot be edited without the archive refusing."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_meta(meta: dict, where: str, rebuild: str) -> None:
    """The checks every archive's metadata (as read, JSON) passes, wherever it lives: its own digest, and
    the out-of-distribution reference the flags need (absent, they would silently flag nothing)."""
    if "meta_sha256" not in meta:
        raise UserError(f"{where} records no digest of its metadata (written by an older build); {rebuild}")
    if meta_digest(meta) != meta["meta_sha256"]:
        raise UserError(f"{where}: its metadata was changed after the build (rows, labels or reference no longer "
                        f"match their digest); {rebuild}")
    if not isinstance(meta.get("ood"), dict):
        raise UserError(f"{where} carries no out-of-distribution reference, so nothing could be flagged; {rebuild}")
    if meta["ood"].get("method") != OOD_METHOD:
        raise UserError(f"{where} carries an out-of-distribution reference of an older kind "
                        f"({meta['ood'].get('method', 'nearest-case distance')}, not {OOD_METHOD}); {rebuild}")


def check_data(meta: "ArchiveMeta", data_root, where: str, rebuild: str) -> None:
    """The archive's rows name cases of one data file (its SHA-256 is recorded at build time): a
    --data_root holding another file would show other pictures beside the right table. Refused when the
    file there differs; not checked when it is absent (nothing of it is shown)."""
    if data_root is None:
        return
    path = data_file(data_root, meta.image_size or 28)
    if path.is_file() and file_sha256(path) != meta.data_sha256:
        raise UserError(f"{where} was built from another data file than {path} (sha256 "
                        f"{str(meta.data_sha256)[:12]}…, this one {file_sha256(path)[:12]}…); point --data_root "
                        f"at the file it was built from, or {rebuild}")


def save_index(index, meta: ArchiveMeta, path) -> None:
    """The .faiss file and its .json metadata, each written to a temp file and renamed. The metadata
    records the index file's SHA-256, dimension and size, and its own digest, so a pair that does not
    belong together (a build killed between the two renames, one file replaced, an edited sidecar) is
    refused when loaded."""
    data = faiss.serialize_index(index).tobytes()
    meta = {**meta.to_json(), "index_sha256": hashlib.sha256(data).hexdigest(), "dim": int(index.d), "ntotal": int(index.ntotal)}
    meta["meta_sha256"] = meta_digest(meta)
    with atomic_path(path) as tmp_index, atomic_path(meta_path(path)) as tmp_meta:
        tmp_index.write_bytes(data)
        tmp_meta.write_text(json.dumps(meta) + "\n")


def meta_path(path) -> Path:
    return Path(path).with_suffix(".json")


def load_index(path, checkpoint_sha256: str, dim: int | None = None, data_root=None):
    """(index, metadata); refuses a missing or unreadable pair, a pair whose files do not belong together,
    edited metadata, an index of another dimension than the classifier's embeddings, one built from another
    checkpoint, and (given `data_root`) one built from another data file than the one there."""
    path = Path(path)
    if path.is_dir():  # a run folder: its own index
        path = path / INDEX_NAME
    rebuild = "rebuild it with `python task3/build_index.py`"
    if path.is_file() and path.suffix in (".pth", ".pt"):
        raise UserError(f"{path} is a classifier checkpoint (Task 1), not a Task 3 index: give it as --checkpoint, "
                        f"and as --index a .faiss file (default {DEFAULT_INDEX}) or a run folder")
    if path.is_file() and not meta_path(path).is_file():
        raise UserError(f"{path} is not a Task 3 index: an index is a .faiss file with its {meta_path(path).name} "
                        f"beside it (default {DEFAULT_INDEX}); build one with `python task3/build_index.py`")
    if not path.is_file() or not meta_path(path).is_file():
        raise UserError(f"index {path} (with {meta_path(path).name}) not found; build it with "
                        f"`python task3/build_index.py`")
    try:
        meta = json.loads(meta_path(path).read_text())
        data = None if isinstance(meta, dict) and meta.get("kind") == VECTOR_FILE_INDEX else path.read_bytes()
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
        raise UserError(f"{path} or its metadata is unreadable ({type(err).__name__}); {rebuild}") from None
    if isinstance(meta, dict) and meta.get("kind") == VECTOR_FILE_INDEX:  # an archive of a vector file, opened lazily
        from .large_archive import open_vector_archive
        return open_vector_archive(path, meta, checkpoint_sha256, dim)
    if not isinstance(meta, dict) or "index_sha256" not in meta:
        raise UserError(f"{meta_path(path)} records no digest of {path.name} (written by an older build); {rebuild}")
    if hashlib.sha256(data).hexdigest() != meta["index_sha256"]:
        raise UserError(f"{path} does not match its metadata {meta_path(path).name} (one of the pair was replaced "
                        f"or a build was interrupted); {rebuild}")
    check_meta(meta, str(path), rebuild)
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:
        raise UserError(f"{path} is not a readable FAISS index; {rebuild}") from None
    if meta.get("checkpoint_sha256") != checkpoint_sha256:
        raise UserError(f"{path} was built from another checkpoint (sha256 {str(meta.get('checkpoint_sha256'))[:12]}…, "
                        f"this one {checkpoint_sha256[:12]}…); {rebuild}")
    if dim is not None and index.d != dim:
        raise UserError(f"{path} holds {index.d}-d vectors but the classifier gives {dim}-d embeddings; {rebuild}")
    inner_product = index.metric_type == faiss.METRIC_INNER_PRODUCT
    if meta.get("metric") not in METRICS or inner_product != (meta["metric"] == "cosine"):
        raise UserError(f"{path}: its metadata says metric {meta.get('metric')!r} but the index measures "
                        f"{'inner product' if inner_product else 'L2'}; {rebuild}")
    if not isinstance(meta.get("rows"), list) or index.ntotal != len(meta["rows"]):
        raise UserError(f"{path} holds {index.ntotal} vectors but its metadata lists {len(meta.get('rows') or [])}; {rebuild}")
    meta = ArchiveMeta.from_json(meta)
    check_data(meta, data_root, str(path), rebuild)
    if "ef_search" in meta.build and hasattr(index, "hnsw"):
        index.hnsw.efSearch = meta.build["ef_search"]
    return index, meta


def search(index, meta, queries, k, exclude=None):
    """Top-k rows per query as lists of {rank, row, score, split, index, label}; the score is what
    meta.metric measures (score_name).
    `exclude[i]` is an archive row to drop from query i's results (the query itself)."""
    if k > index.ntotal - (1 if exclude is not None else 0):
        raise UserError(f"k={k} is larger than the archive ({index.ntotal} cases"
                        f"{', less the query itself' if exclude is not None else ''})")
    queries = prepare(queries, meta.metric)
    scores, rows = index.search(queries, k + (1 if exclude is not None else 0))
    results = []
    for i, (row_scores, row_ids) in enumerate(zip(scores, rows)):
        hits = [(s, r) for s, r in zip(row_scores, row_ids) if r >= 0 and (exclude is None or r != exclude[i])][:k]
        results.append([{"rank": rank + 1, "row": int(r), "score": _score(s, meta.metric), **meta.rows[r]}
                        for rank, (s, r) in enumerate(hits)])
    return results


def _score(value, metric):
    # faiss L2 indexes return squared distances; report the Euclidean distance itself
    return float(np.sqrt(max(value, 0.0))) if metric == "l2" else float(value)


def exclusions(index_meta, keys):
    """Archive row of each query that is itself archived (else -1), or None when none is. An archive of a
    vector file (rows read lazily, not dataset films) holds no dataset film as such: None."""
    if not isinstance(index_meta.rows, list):
        return None
    row_of = {(r["split"], r["index"]): row for row, r in enumerate(index_meta.rows)}
    rows = [row_of.get(key, -1) if key else -1 for key in keys]
    return rows if any(r >= 0 for r in rows) else None


def average_precision_at(relevant, k):
    """AP@k per query: the mean of precision@i over the ranks i <= k that hold a relevant case
    (same label as the query), divided by the number of relevant cases in the top k; 0 if none."""
    rel = np.asarray(relevant)[:, :k].astype(float)
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    hits = rel.sum(axis=1)
    return np.where(hits > 0, (precision_at_i * rel).sum(axis=1) / np.maximum(hits, 1), 0.0)


def retrieval_scores(hits, query_labels, class_names, ks=(1, 5, 10), vote_k=5) -> dict:
    """Per group (overall and each true class): precision@k, mAP@10 and the accuracy of a majority
    vote of the vote_k nearest labels (ties, with an even vote_k, go to the first class).
    `hits` are search() results; a neighbour is relevant when its label equals the query's."""
    query_labels = np.asarray(query_labels)
    names = [class_names[y] for y in query_labels]
    relevant = np.array([[h["label"] == name for h in row] for row, name in zip(hits, names)])
    votes = np.array([[h["label"] == class_names[1] for h in row[:vote_k]] for row in hits])
    vote_pred = (votes.sum(axis=1) * 2 > vote_k).astype(int)
    groups = {"overall": np.ones(len(query_labels), bool), **{c: query_labels == i for i, c in enumerate(class_names)}}
    return {g: {**{f"precision@{k}": float(relevant[m, :k].mean()) for k in ks},
                "map@10": float(average_precision_at(relevant[m], 10).mean()),
                f"knn{vote_k}_accuracy": float((vote_pred[m] == query_labels[m]).mean()), "n": int(m.sum())}
            for g, m in groups.items()}


# ---- synthetic archives for the benchmarks ----------------------------------------------------------
def archive_sampler(index_path, rng, dim=512):
    """sample(n): n synthetic embeddings drawn from N(mean, covariance) of a real archive's (a FAISS file),
    100k rows at a time: archives of any size with the spread and spectrum of the classifier's features."""
    if not Path(index_path).is_file():
        raise UserError(f"{index_path} not found: build the real archive with `python task3/build_index.py`, "
                        f"or use --data mixture")
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError:
        raise UserError(f"{index_path} is not a readable FAISS index; rebuild it with `python task3/build_index.py`") from None
    real = index.reconstruct_n(0, index.ntotal).astype(np.float64)
    if real.shape[1] != dim:
        raise UserError(f"{index_path} holds {real.shape[1]}-d vectors; this benchmark is for {dim}-d embeddings")
    mean = real.mean(0)
    eigvals, eigvecs = np.linalg.eigh(np.cov(real, rowvar=False))
    root = eigvecs * np.sqrt(np.clip(eigvals, 0, None))  # covariance = root @ root.T
    return in_chunks(lambda m: mean + rng.standard_normal((m, dim)) @ root.T, dim=dim)


def clustered_sampler(index_path, rng, spread=0.15, dim=512):
    """sample(n): n synthetic embeddings in tight clusters, as repeat studies and similar patients make: a real
    archived case drawn at random plus anisotropic noise (the archive's own covariance scaled by spread**2)."""
    index = faiss.read_index(str(index_path)) if Path(index_path).is_file() else None
    if index is None or index.d != dim:
        raise UserError(f"{index_path} is not a {dim}-d archive: build the real archive with `python task3/build_index.py`")
    real = index.reconstruct_n(0, index.ntotal).astype(np.float64)
    eigvals, eigvecs = np.linalg.eigh(np.cov(real, rowvar=False))
    root = eigvecs * np.sqrt(np.clip(eigvals, 0, None)) * spread
    return in_chunks(lambda m: real[rng.integers(0, len(real), m)] + rng.standard_normal((m, dim)) @ root.T, dim=dim)


def in_chunks(draw, chunk=100_000, dim=512):
    """sample(n): n float32 rows from draw(m), m <= chunk rows at a time to bound temporary memory."""
    def sample(n):
        out = np.empty((n, dim), np.float32)
        for start in range(0, n, chunk):
            out[start:start + min(chunk, n - start)] = draw(min(chunk, n - start))
        return out
    return sample
