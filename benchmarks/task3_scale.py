"""Task 3 at scale: exact vs HNSW vs IVF FAISS indexes on synthetic 512-d embeddings.

    python benchmarks/task3_scale.py                               # 5,232 / 100k / 1M vectors, ~10 min on 2 cores
    python benchmarks/task3_scale.py --sizes 5232 100000 --hnsw_max 100000

For each archive size: build time, resident memory the index added, single-query latency p50/p99,
batched throughput and recall@10 against exact search. Vectors are a Gaussian mixture (like class- and
patient-clustered embeddings); uniform noise would have no neighbours worth finding. Writes
reports/benchmark_task3.json and reports/benchmark_task3.md.
"""
import argparse
import time
from pathlib import Path

import faiss
import numpy as np
import psutil

from pneumo.retrieval import build_index
from pneumo.runtime import print_run_header, write_json_atomic

DIM = 512


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5232, 100_000, 1_000_000], help="archive sizes")
    p.add_argument("--hnsw_max", type=int, default=100_000, help="largest size to build HNSW for (default 100k: at 1M its build takes most of an hour on 2 cores)")
    p.add_argument("--queries", type=int, default=1000, help="queries for recall and batched throughput (default 1000)")
    p.add_argument("--single", type=int, default=300, help="one-at-a-time queries for latency percentiles (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("reports"))
    return p.parse_args(argv)


def clustered(n, rng, centres):
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        out[start:start + m] = centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, DIM), np.float32)
    return out


def rss():
    return psutil.Process().memory_info().rss


def measure(index, queries, truth, single):
    """Single queries on one thread (as a serving worker runs them: OpenMP start-up costs more than a
    small scan), then one batch on all threads."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    latencies = []
    for q in queries[:single]:
        start = time.perf_counter()
        index.search(q[None], 10)
        latencies.append((time.perf_counter() - start) * 1000)
    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    _, found = index.search(queries, 10)
    qps = len(queries) / (time.perf_counter() - start)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]) if truth is not None else 1.0
    return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "batched_qps": float(qps), "recall@10": float(recall)}


def main(args):
    run = print_run_header("benchmark_task3", args)
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    rows = []
    for n in args.sizes:
        vectors = clustered(n, rng, centres)
        queries = clustered(args.queries, rng, centres)
        nlist = int(np.sqrt(n))  # k-means on 2 cores stays under a minute at 1M
        configs = [("flat", {}), ("ivf", {"nlist": nlist, "nprobe": 8}), ("ivf", {"nlist": nlist, "nprobe": 32})]
        if n <= args.hnsw_max:
            configs.insert(1, ("hnsw", {"hnsw_m": 32, "ef_search": 64}))
        truth, exact_qps = None, None
        for kind, params in configs:
            before = rss()
            start = time.perf_counter()
            index = build_index(vectors, kind, "l2", **params)
            build_s = time.perf_counter() - start
            mem_mb = (rss() - before) / 2**20
            if kind == "flat":
                _, truth = index.search(queries, 10)
            m = measure(index, queries, truth, args.single)
            exact_qps = exact_qps or m["batched_qps"]
            label = kind + "".join(f" {k}={v}" for k, v in params.items())
            rows.append({"n": n, "index": label, "build_s": build_s, "memory_mb": mem_mb, **m,
                         "speedup_vs_exact": m["batched_qps"] / exact_qps})
            print(f"n={n:>9} {label:<26} build {build_s:7.2f}s  mem {mem_mb:7.0f} MB  p50 {m['p50_ms']:.3f} ms  "
                  f"p99 {m['p99_ms']:.3f} ms  {m['batched_qps']:9.0f} q/s  recall@10 {m['recall@10']:.3f}", flush=True)
            del index
        del vectors
    result = {**run, "threads": faiss.omp_get_max_threads(), "dim": DIM, "rows": rows}
    write_json_atomic(args.out / "benchmark_task3.json", result)
    (args.out / "benchmark_task3.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result):
    lines = ["# Task 3 scale benchmark", "",
             f"`python benchmarks/task3_scale.py --sizes {' '.join(map(str, result['args']['sizes']))} --hnsw_max "
             f"{result['args']['hnsw_max']}`, {result['threads']} threads, {result['dim']}-d Gaussian-mixture vectors, "
             f"L2, k=10. Memory is the growth of the process's resident set while building. Latency: one query at a "
             f"time on one thread; throughput: one batch of {result['args']['queries']} queries on all threads.", "",
             "| archive | index | build s | memory MB | p50 ms (1 query) | p99 ms | batched queries/s | x exact | recall@10 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['n']:,} | {r['index']} | {r['build_s']:.2f} | {r['memory_mb']:.0f} | {r['p50_ms']:.3f} | "
                     f"{r['p99_ms']:.3f} | {r['batched_qps']:.0f} | {r['speedup_vs_exact']:.1f} | {r['recall@10']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(parse_args())
