"""FAISS in-process against Milvus Lite (a real Milvus engine, embedded) on the same vectors.

    python benchmarks/task3_backends.py                      # 5,232 / 100k / 1M vectors; --out reports publishes it
    python benchmarks/task3_backends.py --sizes 5232 100000  # quicker

For each archive size and backend: the build (FAISS: index construction; Milvus: batched inserts,
flush, index and load, until searchable), one query at a time (p50 / p95 latency over --single
queries: what a query script or the viewer waits for), and recall@10 against exact search. Vectors are
drawn from a Gaussian with the mean and covariance of the real archive's embeddings (as
benchmarks/task3_scale.py, whose FAISS-only study this one complements). Index types: flat, IVF
(nprobe 16) at every size, HNSW (M 32, ef 64) up to --hnsw_max. Writes <out>/benchmark_task3_backends.json
and .md. The engine runs in this process, on this machine; nothing is sent anywhere else.
"""
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.errors import run_script
from pneumo.milvus_archive import building
from pneumo.retrieval import DEFAULT_INDEX, IndexSpec, archive_sampler, build_index, default_nlist
from pneumo.runtime import DEFAULT_RUN, print_run_header


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5232, 100_000, 1_000_000], help="archive sizes")
    p.add_argument("--hnsw_max", type=int, default=100_000, help="largest size to build HNSW for (default 100k)")
    p.add_argument("--single", type=int, default=200, help="one-at-a-time queries (default 200)")
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX), help=f"real archive to imitate (default {DEFAULT_INDEX})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_RUN, help=f"folder for the results (default {DEFAULT_RUN})")
    return p.parse_args(argv)


def plan(n, args):
    kinds = [("flat", {}), ("ivf", {"nlist": default_nlist(n), "nprobe": 16})]
    if n <= args.hnsw_max:
        kinds.append(("hnsw", {"hnsw_m": 32, "ef_search": 64}))
    return kinds


def latency(search, queries):
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
    rows = []
    for n in args.sizes:
        vectors = sample(n)
        labels = [{"split": "train", "index": i, "label": "normal"} for i in range(n)]
        truth = None
        for kind, params in plan(n, args):
            before, start = rss_mb(), time.perf_counter()
            spec = IndexSpec(kind, "l2", **params)
            index = build_index(vectors, spec)
            build_s, memory = time.perf_counter() - start, rss_mb() - before
            p50, p95, found = latency(lambda q, index=index: index.search(q, 10)[1], queries)
            truth = found if kind == "flat" else truth
            rows.append(report(n, "faiss", kind, params, build_s, memory, p50, p95, recall(found, truth)))
            index = None  # freed before the Milvus build
            folder = tempfile.mkdtemp(prefix="milvus-bench-")
            try:
                before, start = rss_mb(), time.perf_counter()
                with building(os.path.join(folder, "bench.db"), "bench", vectors, labels, spec) as milvus:
                    build_s, memory = time.perf_counter() - start, rss_mb() - before
                    p50, p95, found = latency(lambda q: milvus.search(q, 10)[1], queries)
                rows.append(report(n, "milvus-lite", kind, params, build_s, memory, p50, p95, recall(found, truth)))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        del vectors
    result = {**run, "cores": os.cpu_count(), "rows": rows}
    write_json_atomic(args.out / "benchmark_task3_backends.json", result)
    md = markdown(result)
    write_text_atomic(args.out / "benchmark_task3_backends.md", md)
    print(md)
    return result


def report(n, backend, kind, params, build_s, memory, p50, p95, recall_at_10):
    row = {"n": n, "backend": backend, "index": kind + "".join(f" {k}={v}" for k, v in params.items()),
           "build_s": build_s, "memory_mb": memory, "p50_ms": p50, "p95_ms": p95, "recall@10": recall_at_10}
    print(f"n={n:>9} {backend:<12} {row['index']:<28} build {build_s:8.2f}s  +{memory:6.0f} MB  "
          f"p50 {p50:8.3f} ms  p95 {p95:8.3f} ms  recall@10 {recall_at_10:.3f}", flush=True)
    return row


def markdown(result):
    a = result["args"]
    lines = ["# Task 3: FAISS against Milvus Lite on the same vectors", "",
             f"`python benchmarks/task3_backends.py --sizes {' '.join(map(str, a['sizes']))} --hnsw_max {a['hnsw_max']} "
             f"--out reports` on {result['cores']} CPU cores: 512-d vectors drawn like the real archive's embeddings, L2, "
             f"k=10. Build: FAISS index construction; Milvus Lite batched inserts, flush, index and load until searchable. "
             f"Latency: {a['single']} single queries, one at a time. Recall@10 against FAISS exact search. Memory: growth "
             f"of this process's resident set during the build (Milvus Lite runs inside it).", "",
             "| archive | backend | index | build s | memory MB | p50 ms | p95 ms | recall@10 |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {r['backend']} | {r['index']} | {r['build_s']:.2f} | {r['memory_mb']:.0f} | {r['p50_ms']:.2f} | "
              f"{r['p95_ms']:.2f} | {r['recall@10']:.3f} |" for r in result["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("task3_backends", main, parse_args)
