"""The search depth of an IVF index, chosen at build time for a recall target on the archive's own vectors.

A sample of the archive's rows is held out as queries; their exact neighbours come from a brute-force pass
over the vector file in chunks (faiss.contrib.exhaustive_search.knn_ground_truth). FAISS's own autotuning
(faiss.ParameterSpace.explore with an IntersectionCriterion, one thread, so its times rank single-query
latency) finds the operating points that trade speed for recall over the cells visited (nprobe) and the
breadth of the HNSW search that picks them (quantizer_efSearch), within a depth bound. Each query is itself in
the archive, so the autotuner scores the top k+1 with the query's own row; each Pareto-optimal point is then
measured exactly as users see it, the query's own row left out (recall@k over the other rows, per query),
and the fastest point that meets the target is chosen, with a bootstrap interval on its recall. Where no
point within the bound meets it, the most accurate one is kept and the record says so."""
import time

import faiss
import numpy as np

DEFAULT_TARGET = 0.95
DEFAULT_QUERIES = 1000
DEFAULT_MAX_NPROBE = 512


def own_queries(vectors, rows: int, n: int, seed: int):
    """(row ids, float32 vectors) of `n` rows drawn at random from the first `rows` of the vector file."""
    from .streamed_index import read_rows
    ids = np.sort(np.random.default_rng([seed, 36]).choice(rows, size=min(n, rows), replace=False))
    return ids, read_rows(vectors[ids], 0, len(ids))


def exact_neighbours(vectors, rows: int, queries, k: int, chunk: int = 200_000):
    """Ids of the exact k nearest of the first `rows` rows (float32 of the stored values), by a chunked pass."""
    from faiss.contrib.exhaustive_search import knn_ground_truth

    from .streamed_index import read_rows
    blocks = (read_rows(vectors, start, min(start + chunk, rows)) for start in range(0, rows, chunk))
    return knn_ground_truth(queries, blocks, k)[1]


def recall_without_self(found, truth, ids, k: int) -> np.ndarray:
    """Per query: the share of its k exact neighbours (its own row left out) among the k found (likewise)."""
    out = np.empty(len(ids))
    for q, (f, t, own) in enumerate(zip(found, truth, ids)):
        f = [r for r in f if r != own and r >= 0][:k]
        t = [r for r in t if r != own][:k]
        out[q] = len(set(f) & set(t)) / k
    return out


def bounded_space(index, max_nprobe: int):
    """The autotuner's parameter space, within the depth bound: nprobe in steps of about 1.5x up to
    min(max_nprobe, cells), and the HNSW quantizer's breadth from 16 to 4 * max_nprobe (an index without an
    HNSW quantizer has no such parameter)."""
    space = faiss.ParameterSpace()
    space.verbose = 0
    nlist = faiss.extract_index_ivf(index).nlist
    steps = sorted({int(round(v)) for e in range(0, 20) for v in (2 ** e, 1.5 * 2 ** e) if v <= min(max_nprobe, nlist)})
    nprobe = space.add_range("nprobe")
    for v in steps:
        nprobe.values.push_back(float(v))
    if isinstance(faiss.downcast_index(faiss.extract_index_ivf(index).quantizer), faiss.IndexHNSW):
        breadth = space.add_range("quantizer_efSearch")
        for v in [v for v in (16, 32, 64, 128, 256, 512, 1024, 2048) if v <= max(16, 4 * max_nprobe)]:
            breadth.values.push_back(float(v))
    return space


def parameters_of(key: str) -> dict:
    """"nprobe=32,quantizer_efSearch=64" as {"nprobe": 32, "quantizer_efSearch": 64}."""
    return {name: int(float(value)) for name, value in (part.split("=") for part in key.split(",") if part)}


def apply_depth(index, search: dict) -> None:
    """Set the recorded depth on a loaded index (what query time uses)."""
    faiss.ParameterSpace().set_index_parameters(index, search["parameters"])


def operating_points(space, index, queries, criterion) -> list:
    """(parameters, seconds for the batch) of each Pareto-optimal point FAISS's explore finds (the fastest and
    slowest settings first, then the others in random order, each skipped when the points measured so far show
    it cannot be Pareto-optimal); a space of one or two combinations, which explore does not take, is timed
    point by point."""
    if space.n_combinations() > 2:
        points = space.explore(index, queries, criterion)  # kept alive: its vectors live in this object
        found = points.optimal_pts
        return [(found.at(i).key, found.at(i).t) for i in range(found.size()) if found.at(i).key]
    out = []
    for combination in range(space.n_combinations()):
        key = space.combination_name(combination)
        space.set_index_parameters(index, key)
        start = time.perf_counter()
        index.search(queries, criterion.nnn)
        out.append((key, time.perf_counter() - start))
    return out


def tune_depth(index, queries, ids, truth, k: int = 10, target: float = DEFAULT_TARGET,
               max_nprobe: int = DEFAULT_MAX_NPROBE, seed: int = 0) -> dict:
    """Choose and set the depth; returns what the build records. `truth` holds the exact k+1 nearest rows
    of each query (its own row among them), `ids` the queries' own rows."""
    space = bounded_space(index, max_nprobe)
    criterion = faiss.IntersectionCriterion(len(queries), k + 1)
    criterion.set_groundtruth(None, np.ascontiguousarray(truth[:, :k + 1], dtype=np.int64))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        start = time.perf_counter()
        points = operating_points(space, index, queries, criterion)
        explore_s = time.perf_counter() - start
        measured = []
        for key, seconds in points:
            space.set_index_parameters(index, key)
            found = index.search(queries, k + 1)[1]
            per_query = recall_without_self(found, truth, ids, k)
            measured.append({"parameters": key, "recall": float(per_query.mean()),
                             "ms_per_query": 1000 * seconds / len(queries), "per_query": per_query})
    finally:
        faiss.omp_set_num_threads(threads)
    meeting = [p for p in measured if p["recall"] >= target]
    chosen = min(meeting, key=lambda p: p["ms_per_query"]) if meeting else max(measured, key=lambda p: p["recall"])
    space.set_index_parameters(index, chosen["parameters"])
    rng = np.random.default_rng(seed)
    boot = [chosen["per_query"][rng.integers(0, len(ids), len(ids))].mean() for _ in range(1000)]
    return {"parameters": chosen["parameters"], **parameters_of(chosen["parameters"]), "k": k,
            "recall_target": target, "met": bool(meeting), "recall": round(chosen["recall"], 4),
            "recall_ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
            "queries": len(ids), "max_nprobe": max_nprobe, "ms_per_query_one_thread": round(chosen["ms_per_query"], 3),
            "explore_s": round(explore_s, 1),
            "pareto": [{"parameters": p["parameters"], "recall": round(p["recall"], 4),
                        "ms_per_query": round(p["ms_per_query"], 3)} for p in measured]}


def depth_line(search: dict) -> str:
    """One line for the build's output."""
    where = f"nprobe {search['nprobe']}" + (f", quantizer_efSearch {search['quantizer_efSearch']}"
                                           if "quantizer_efSearch" in search else "")
    lo, hi = search["recall_ci95"]
    if search["met"]:
        return (f"search depth {where}: recall@{search['k']} {search['recall']:.3f} [{lo:.3f}, {hi:.3f}] on "
                f"{search['queries']} of the archive's own vectors, target {search['recall_target']}")
    return (f"warning: recall@{search['k']} {search['recall_target']} cannot be met within nprobe <= "
            f"{search['max_nprobe']}: the best reached is {search['recall']:.3f} [{lo:.3f}, {hi:.3f}] at {where}; "
            f"raise --max_nprobe, or build with more cells or finer codes (--factory)")


def tune_index_file(index_path, vectors_path, rows: int, target: float = DEFAULT_TARGET, n_queries: int = DEFAULT_QUERIES,
                    max_nprobe: int = DEFAULT_MAX_NPROBE, k: int = 10, seed: int = 0) -> dict:
    """tune_depth for an index built from a vector file (pneumo.streamed_index): the queries and their exact
    neighbours from that file. Returns the record's `search` entry, with the seconds each step took."""
    from .streamed_index import open_vectors
    start = time.perf_counter()
    index = faiss.read_index(str(index_path))
    vectors = open_vectors(vectors_path)
    ids, queries = own_queries(vectors, rows, n_queries, seed)
    truth = exact_neighbours(vectors, rows, queries, k + 1)
    truth_s = time.perf_counter() - start
    search = tune_depth(index, queries, ids, truth, k, target, max_nprobe, seed)
    return {**search, "truth_s": round(truth_s, 1)}


def tune_nprobe(search_at, ids, truth, nlist: int, k: int = 10, target: float = DEFAULT_TARGET,
                max_nprobe: int = DEFAULT_MAX_NPROBE, seed: int = 0) -> dict:
    """The same choice for an engine FAISS's autotuner cannot drive (a Milvus collection): the smallest nprobe,
    in the autotuner's steps up to the bound, whose recall@k on the held-out rows (their own rows left out)
    meets the target; `search_at(nprobe)` returns the top k+1 row ids of the queries. Returns the record."""
    steps = sorted({int(round(v)) for e in range(20) for v in (2 ** e, 1.5 * 2 ** e) if v <= min(max_nprobe, nlist)})
    measured = []
    for nprobe in steps:
        start = time.perf_counter()
        per_query = recall_without_self(search_at(nprobe), truth, ids, k)
        measured.append({"parameters": f"nprobe={nprobe}", "recall": float(per_query.mean()), "per_query": per_query,
                         "ms_per_query": 1000 * (time.perf_counter() - start) / len(ids)})
        if measured[-1]["recall"] >= target:
            break
    chosen = measured[-1] if measured[-1]["recall"] >= target else max(measured, key=lambda p: p["recall"])
    rng = np.random.default_rng(seed)
    boot = [chosen["per_query"][rng.integers(0, len(ids), len(ids))].mean() for _ in range(1000)]
    return {"parameters": chosen["parameters"], **parameters_of(chosen["parameters"]), "k": k, "recall_target": target,
            "met": chosen["recall"] >= target, "recall": round(chosen["recall"], 4),
            "recall_ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
            "queries": len(ids), "max_nprobe": max_nprobe, "ms_per_query_batched": round(chosen["ms_per_query"], 3),
            "tried": [{"parameters": p["parameters"], "recall": round(p["recall"], 4)} for p in measured]}
