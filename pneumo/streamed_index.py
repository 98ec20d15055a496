"""Archives larger than memory: a FAISS IVF index with an HNSW coarse quantizer and 8-bit scalar codes
(`IVF<nlist>_HNSW32,SQ8`, about 520 bytes per 512-d vector instead of 2,048), built from a .npy vector
file read in chunks and resumable after a kill.

The build keeps its work in `<out>.partial/`: the trained empty index (coarse centroids from two-level
k-means on a sample, then the SQ8 ranges), and one shard per `shard_rows` rows of the file (the trained
index with those rows added), each written atomically when complete. A rerun with the same file and
settings skips what is there, so a kill loses at most one shard; shards are by row range, so a larger
`rows` later reuses those of a smaller build. The shards are merged into the index at the end."""
import contextlib
import io
import json
import shutil
import time
from pathlib import Path

import faiss
import numpy as np

from .atomic import atomic_path, write_json_atomic
from .runtime import UserError

LARGE_FACTORY = "IVF16384_HNSW32,SQ8"
VECTOR_FILE_INDEX = "vector file index"  # the `kind` in such an index's record (its .json)
VECTOR_DTYPES = ("float16", "float32")


def record_path(out) -> Path:
    """The build record beside an index of a vector file: where an archive keeps its metadata."""
    return Path(out).with_suffix(".json")


def open_vectors(path) -> np.ndarray:
    """The vector file as a read-only memory map (rows × dim, float16 or float32); one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"vector file {path} not found")
    try:
        vectors = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a .npy array file ({err})") from None
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.shape[0] < 1:
        raise UserError(f"{path} holds an array of shape {getattr(vectors, 'shape', '?')}; a vector file is rows × dim")
    if vectors.dtype.name not in VECTOR_DTYPES:
        raise UserError(f"{path} holds {vectors.dtype} values; a vector file is float16 or float32")
    return vectors


def read_rows(vectors, start, stop) -> np.ndarray:
    """Rows [start, stop) as float32, refused in one line when any value is not finite."""
    chunk = np.ascontiguousarray(vectors[start:stop], dtype=np.float32)
    if not np.isfinite(chunk).all():
        bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
        raise UserError(f"the vector file has a non-finite value in row {bad}; nothing was indexed from it")
    return chunk


def settings_of(vectors_path, vectors, factory, train_size, shard_rows, seed) -> dict:
    stat = Path(vectors_path).stat()
    return {"vectors": str(Path(vectors_path).resolve()), "shape": list(vectors.shape), "dtype": vectors.dtype.name,
            "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "factory": factory,
            "train_size": train_size, "shard_rows": shard_rows, "seed": seed}


def train_empty(vectors, factory, train_size, seed):
    """The empty index, trained on `train_size` rows drawn at random: coarse centroids by two-level
    k-means (faiss.contrib.clustering; flat k-means over 16k centroids takes most of an hour on 2 cores),
    then the scalar quantizer's ranges."""
    from faiss.contrib.clustering import train_ivf_index_with_2level
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(len(vectors), size=min(train_size, len(vectors)), replace=False))
    sample = read_rows(vectors[picks], 0, len(picks))
    index = faiss.index_factory(vectors.shape[1], factory)
    ivf = faiss.extract_index_ivf(index)
    if len(sample) < ivf.nlist:
        raise UserError(f"{len(sample)} training rows for {ivf.nlist} cells; give at least one row per cell "
                        f"(--train_size, and a larger vector file)")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its arguments
        train_ivf_index_with_2level(index, sample, seed=seed, verbose=False)
    return index


def build_streamed(vectors_path, out, rows=None, factory=LARGE_FACTORY, train_size=327_680, shard_rows=1_000_000,
                   chunk=100_000, seed=0, progress=True, keep_partial=False) -> dict:
    """Index the first `rows` rows (all by default) of the vector file into `out` (a FAISS file, written
    atomically). Returns the build record: settings, seconds spent training, per shard, merging+writing."""
    vectors = open_vectors(vectors_path)
    rows = len(vectors) if rows is None else rows
    if not 1 <= rows <= len(vectors):
        raise UserError(f"asked for {rows:,} rows of a vector file of {len(vectors):,}")
    work = Path(f"{out}.partial")
    settings = settings_of(vectors_path, vectors, factory, train_size, shard_rows, seed)
    state_file = work / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"settings": settings, "seconds": {}}
    if state["settings"] != settings:
        raise UserError(f"{work} holds a partial build of other settings or another vector file; remove that "
                        f"folder to start again, or rerun with the flags it was started with")
    fresh = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state_file, state)
    try:
        return _build(vectors, vectors_path, out, rows, work, state, settings, train_size, shard_rows, chunk,
                      progress, keep_partial)
    except UserError:  # bad data: a folder this call made goes with it
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
        raise


def _build(vectors, vectors_path, out, rows, work, state, settings, train_size, shard_rows, chunk, progress,
           keep_partial):
    from tqdm import tqdm
    factory, seed, state_file = settings["factory"], settings["seed"], work / "state.json"
    trained_file = work / "trained.faiss"
    if not trained_file.is_file():
        start = time.perf_counter()
        trained = train_empty(vectors, factory, train_size, seed)
        with atomic_path(trained_file) as tmp:
            faiss.write_index(trained, str(tmp))
        state["seconds"]["train"] = time.perf_counter() - start
        write_json_atomic(state_file, state)
    shards = range(0, rows, shard_rows)
    with tqdm(total=rows, desc=f"index {Path(vectors_path).name}", unit="row", unit_scale=True,
              disable=not progress) as bar:
        for first in shards:
            last = min(first + shard_rows, len(vectors))
            shard_file = work / f"shard_{first // shard_rows:05d}.faiss"
            if shard_file.is_file():
                bar.update(min(last, rows) - first)
                continue
            start = time.perf_counter()
            shard = faiss.read_index(str(trained_file))
            for begin in range(first, last, chunk):
                shard.add(read_rows(vectors, begin, min(begin + chunk, last)))
                bar.update(max(0, min(begin + chunk, last, rows) - begin))
            with atomic_path(shard_file) as tmp:
                faiss.write_index(shard, str(tmp))
            state["seconds"][shard_file.name] = time.perf_counter() - start
            write_json_atomic(state_file, state)
    start = time.perf_counter()
    index = merged(trained_file, [work / f"shard_{first // shard_rows:05d}.faiss" for first in shards], rows)
    with atomic_path(out) as tmp:
        faiss.write_index(index, str(tmp))
    seconds = state["seconds"]
    record = {**settings, "rows": rows, "nlist": faiss.extract_index_ivf(index).nlist, "ntotal": int(index.ntotal),
              "train_s": seconds.get("train"), "merge_write_s": time.perf_counter() - start,
              "add_s": sum(v for k, v in seconds.items() if k.startswith("shard_") and k in
                           {f"shard_{first // shard_rows:05d}.faiss" for first in shards})}
    if not keep_partial:
        shutil.rmtree(work)
    return record


def merged(trained_file, shard_files, rows):
    """The trained index holding the shards' rows in file order, ids 0..rows-1 (the last shard cut at `rows`)."""
    index = faiss.read_index(str(trained_file))
    ivf = faiss.extract_index_ivf(index)
    for shard_file in shard_files:
        shard = faiss.read_index(str(shard_file))
        keep = rows - index.ntotal
        if shard.ntotal > keep:  # a shard built for a larger archive: drop the rows past this one
            shard.remove_ids(faiss.IDSelectorRange(keep, shard.ntotal))
        ivf.merge_from(faiss.extract_index_ivf(shard), index.ntotal)
        index.ntotal = ivf.ntotal
    return index


def set_search(index, nprobe, quantizer_ef=None):
    """Cells visited per query, and the breadth of the HNSW search that picks them (at least nprobe)."""
    space = faiss.ParameterSpace()
    space.set_index_parameter(index, "nprobe", nprobe)
    space.set_index_parameter(index, "quantizer_efSearch", quantizer_ef or max(2 * nprobe, 64))
