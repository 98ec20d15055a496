"""FAISS in-process against Milvus Lite and a real Milvus server, on the same vectors, with the same index.

    python benchmarks/task3_backends.py                      # 5,232 / 100k / 1M vectors; --out reports publishes it
    python benchmarks/task3_backends.py --sizes 5232 100000  # quicker

For each archive size, index type and backend: the build (FAISS: index construction; Milvus: batched
inserts, flush, the index build waited for until every row is indexed, its type and parameters read back
from the engine and checked, then load), one query at a time after 20 warm-up queries (p50 / p95 latency
over --single queries: what a query script or the viewer waits for), and recall@10 against FAISS exact
search. Backends: FAISS; Milvus Lite (`milvus-lite`, a Python reimplementation of Milvus's API over FAISS,
in this process); the Milvus 2.3 server binary of PyPI's `milvus` package (Milvus's C++ engine, started
here on 127.0.0.1 by `pneumo.milvus_archive.local_server`, searched over gRPC). Vectors are drawn from a
Gaussian with the mean and covariance of the real archive's embeddings (as benchmarks/task3_scale.py).
Index types: flat, IVF (nlist about 4*sqrt(N), nprobe 16) at every size, HNSW (M 32, efConstruction 80,
ef 64) up to --hnsw_max. Writes <out>/benchmark_task3_backends.json and .md.
"""
import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import psutil

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.errors import run_script
from pneumo.milvus_archive import building, local_server
from pneumo.retrieval import DEFAULT_INDEX, IndexSpec, archive_sampler, build_index, default_nlist
from pneumo.runtime import DEFAULT_RUN, print_run_header


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5232, 100_000, 1_000_000], help="archive sizes")
    p.add_argument("--hnsw_max", type=int, default=100_000, help="largest size to build HNSW for (default 100k)")
    p.add_argument("--single", type=int, default=200, help="one-at-a-time queries (default 200)")
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX), help=f"real archive to imitate (default {DEFAULT_INDEX})")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="default: all three")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_RUN, help=f"folder for the results (default {DEFAULT_RUN})")
    return p.parse_args(argv)


BACKENDS = ("faiss", "milvus-lite", "milvus-server")
WARM_UP = 20


def plan(n, args):
    kinds = [("flat", {}), ("ivf", {"nlist": default_nlist(n), "nprobe": 16})]
    if n <= args.hnsw_max:
        kinds.append(("hnsw", {"hnsw_m": 32, "ef_search": 64}))
    return kinds


def latency(search, queries):
    for q in queries[:WARM_UP]:  # the first searches after a load pay for it (Lite: about a second)
        search(q[None])
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q[None])[0])
        times.append(time.perf_counter() - start)
    ms = 1000 * np.asarray(times)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), np.stack(found)


def recall(found, truth):
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


def rss_mb():
    return psutil.Process().memory_info().rss / 2**20


def main(args):
    check_writable(args.out)
    run = print_run_header("benchmark_task3_backends", args)
    sample = archive_sampler(args.index, np.random.default_rng(args.seed))
    queries = sample(args.single)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(local_server()) if "milvus-server" in args.backends else None
        rows = []
        for n in args.sizes:
            vectors = sample(n)
            labels = [{"split": "train", "index": i, "label": "normal"} for i in range(n)]
            truth = faiss.knn(queries, vectors, 10)[1]
            for kind, params in plan(n, args):
                spec = IndexSpec(kind, "l2", **params)
                for backend in args.backends:
                    rows.append(measure(backend, n, spec, params, vectors, labels, queries, truth, server))
            del vectors
    result = {**run, "cores": os.cpu_count(), "rows": rows}
    write_json_atomic(args.out / "benchmark_task3_backends.json", result)
    md = markdown(result)
    write_text_atomic(args.out / "benchmark_task3_backends.md", md)
    print(md)
    return result


def measure(backend, n, spec, params, vectors, labels, queries, truth, server):
    """One build and its searches. Memory: growth of this process's resident set over the build (FAISS,
    Lite), or the server process's whole resident set once the collection is loaded (it frees and grows
    on its own schedule, so a difference says little)."""
    def memory():
        return psutil.Process(server[1].pid if backend == "milvus-server" else None).memory_info().rss / 2**20
    if backend == "faiss":
        before, start = memory(), time.perf_counter()
        index = build_index(vectors, spec)
        build_s, grown = time.perf_counter() - start, memory() - before
        p50, p95, found = latency(lambda q: index.search(q, 10)[1], queries)
        return report(n, backend, spec.index_type, params, faiss_built(index), build_s, grown, p50, p95, recall(found, truth))
    folder = tempfile.mkdtemp(prefix="milvus-bench-")
    uri = server[0] if backend == "milvus-server" else os.path.join(folder, "bench.db")
    try:
        before, start = memory(), time.perf_counter()
        with building(uri, "bench", vectors, labels, spec) as milvus:
            build_s, grown = time.perf_counter() - start, memory() - (0 if backend == "milvus-server" else before)
            p50, p95, found = latency(lambda q: milvus.search(q, 10)[1], queries)
            engine = milvus.meta.build["engine_index"]
        return report(n, backend, spec.index_type, params, f"{engine['index_type']} {json.dumps(engine['params'])}",
                      build_s, grown, p50, p95, recall(found, truth))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def faiss_built(index):
    """What the FAISS index holds, read from the index object itself."""
    if hasattr(index, "hnsw"):
        return f"HNSW {json.dumps({'M': index.hnsw.nb_neighbors(1), 'efConstruction': index.hnsw.efConstruction})}"
    if hasattr(index, "nlist"):
        return f"IVF_FLAT {json.dumps({'nlist': index.nlist})}"
    return "FLAT {}"


def report(n, backend, kind, params, built, build_s, memory, p50, p95, recall_at_10):
    row = {"n": n, "backend": backend, "index": kind + "".join(f" {k}={v}" for k, v in params.items()), "built": built,
           "build_s": build_s, "memory_mb": memory, "p50_ms": p50, "p95_ms": p95, "recall@10": recall_at_10}
    print(f"n={n:>9} {backend:<13} {row['index']:<28} built {built:<40} build {build_s:8.2f}s  +{memory:6.0f} MB  "
          f"p50 {p50:8.3f} ms  p95 {p95:8.3f} ms  recall@10 {recall_at_10:.3f}", flush=True)
    return row


def markdown(result):
    a = result["args"]
    lines = ["# Task 3: FAISS, Milvus Lite and the Milvus server on the same vectors", "",
             f"`python benchmarks/task3_backends.py --sizes {' '.join(map(str, a['sizes']))} --hnsw_max {a['hnsw_max']} "
             f"--out reports` on {result['cores']} CPU cores: 512-d vectors drawn like the real archive's embeddings, L2, "
             f"k=10. Build: FAISS index construction; Milvus batched inserts, flush, the index build waited for until "
             f"every row is indexed, then load. *Built* is what the engine reports it built (Milvus: `describe_index`; "
             f"FAISS: the index object), checked against what was asked. Latency: {a['single']} single queries, one at "
             f"a time, after {WARM_UP} warm-up queries (the server's include a gRPC round trip on 127.0.0.1). Recall@10 "
             f"against FAISS exact search. Memory: growth over the build of the resident set of this process (FAISS, "
             f"Milvus Lite, which runs inside it), or the server process's whole resident set once loaded. The server "
             f"builds an index per sealed segment (512 MB, about 256k of these vectors), each with the nlist asked, and "
             f"visits nprobe cells in each. Milvus Lite is a Python reimplementation "
             f"of Milvus's API over FAISS; the server is Milvus 2.3's C++ engine (PyPI's `milvus` 2.3.5 binary, an "
             f"old line; the client code is the same for a current Milvus).", "",
             "| archive | backend | index asked | built (read back) | build s | memory MB | p50 ms | p95 ms | recall@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {r['backend']} | {r['index']} | {r['built']} | {r['build_s']:.2f} | {r['memory_mb']:.0f} | "
              f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['recall@10']:.3f} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("task3_backends", main, parse_args)
