"""Task 3 at scale: exact vs HNSW vs IVF FAISS indexes on synthetic 512-d embeddings.

    python benchmarks/task3_scale.py                                  # 5,232 / 100k / 1M vectors, ~20 min on 2 cores
    python benchmarks/task3_scale.py --sizes 5232 100000 --hnsw_max 100000
    python benchmarks/task3_scale.py --data mixture --sizes 100000    # the clustered stress case

For each archive size: build time, resident memory the index added, single-query latency p50/p99,
batched throughput, both as multiples of exact search, and recall@10 against exact search. Each index
is built once and searched at several settings (HNSW efSearch, IVF nprobe).

Vectors (--data): `archive` (default) draws from a Gaussian with the mean and covariance of the real
archive's embeddings (--index, built by task3/build_index.py), so the synthetic archive has the spread
and spectrum of the classifier's features; `mixture` is a 2,000-component Gaussian mixture, a clustered
case in which k-means cells fill unevenly. Writes <out>/benchmark_task3.json and .md (published with --out reports).
"""
import argparse
import time
from pathlib import Path

import faiss
import numpy as np
import psutil

from pneumo.atomic import write_json_atomic, write_text_atomic
from pneumo.errors import run_script
from pneumo.retrieval import DEFAULT_INDEX, IndexSpec, archive_sampler, build_index, default_nlist, in_chunks
from pneumo.runtime import DEFAULT_RUN, print_run_header

DIM = 512
TARGET = {"recall@10": 0.95, "speedup": 20.0, "n": 1_000_000}  # the issue's target at 1M vectors


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[5232, 100_000, 1_000_000], help="archive sizes")
    p.add_argument("--data", choices=["archive", "mixture"], default="archive",
                   help="vector distribution (default archive: Gaussian fitted to the real archive's embeddings)")
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX), help=f"real archive for --data archive (default {DEFAULT_INDEX})")
    p.add_argument("--hnsw_max", type=int, default=1_000_000, help="largest size to build HNSW for (default 1M: ~8 min at 1M on 2 cores)")
    p.add_argument("--ef_search", type=int, nargs="+", default=[32, 64, 128], help="HNSW efSearch values (default 32 64 128)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32], help="IVF cells probed (default 8 16 32)")
    p.add_argument("--queries", type=int, default=1000, help="queries for recall and batched throughput (default 1000)")
    p.add_argument("--single", type=int, default=300, help="one-at-a-time queries for latency percentiles (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_RUN,
                   help=f"folder for benchmark_task3.* (default {DEFAULT_RUN}; the published one is reports/)")
    args = p.parse_args(argv)
    if min(args.sizes) < 100 or args.queries < 1 or not 1 <= args.single <= args.queries:
        p.error("--sizes must be >= 100 and 1 <= --single <= --queries")
    if min(args.ef_search) < 1 or min(args.nprobe) < 1:
        p.error("--ef_search and --nprobe values must be >= 1")
    return args


def main(args):
    run = print_run_header("benchmark_task3", args)
    rng = np.random.default_rng(args.seed)
    sample = archive_sampler(args.index, rng, DIM) if args.data == "archive" else mixture_sampler(rng)
    queries = sample(args.queries)
    rows = []
    for n in args.sizes:
        vectors = sample(n)
        exact, truth = None, None
        for kind, build, settings in index_plan(n, args):
            before = rss()
            start = time.perf_counter()
            index = build_index(vectors, IndexSpec(kind, "l2", **build))
            build_s = time.perf_counter() - start
            mem_mb = (rss() - before) / 2**20
            if kind == "flat":
                _, truth = index.search(queries, 10)
            balance = cell_balance(index)
            for setting in settings:
                apply_setting(index, setting)
                m = measure(index, queries, truth, args.single)
                exact = exact or m
                label = kind + "".join(f" {k}={v}" for k, v in {**build, **setting}.items())
                row = {"n": n, "index": label, "build_s": build_s, "memory_mb": mem_mb, **m,
                       "speedup_batched": m["batched_qps"] / exact["batched_qps"],
                       "speedup_single": exact["p50_ms"] / m["p50_ms"], **balance}
                rows.append(row)
                print(f"n={n:>9} {label:<34} build {build_s:7.2f}s  mem {mem_mb:6.0f} MB  p50 {m['p50_ms']:8.3f} ms  "
                      f"p99 {m['p99_ms']:8.3f} ms  {m['batched_qps']:7.0f} q/s ({row['speedup_batched']:5.1f}x)  "
                      f"recall@10 {m['recall@10']:.3f}", flush=True)
            del index
        del vectors
    result = {**run, "threads": faiss.omp_get_max_threads(), "dim": DIM, "data": args.data,
              "target": TARGET, "target_met_by": target_met_by(rows), "rows": rows}
    write_json_atomic(args.out / "benchmark_task3.json", result)
    write_text_atomic(args.out / "benchmark_task3.md", markdown(result))
    print(markdown(result))


def mixture_sampler(rng):
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    return in_chunks(lambda m: centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, DIM), np.float32))


def index_plan(n, args):
    """(kind, build parameters, search settings) per index; IVF with build_index's default cell count."""
    plan = [("flat", {}, [{}])]
    if n <= args.hnsw_max:
        plan.append(("hnsw", {"hnsw_m": 32}, [{"ef_search": ef} for ef in args.ef_search]))
    nlist = default_nlist(n)
    plan.append(("ivf", {"nlist": nlist}, [{"nprobe": p} for p in args.nprobe if p <= nlist]))
    return plan


def apply_setting(index, setting):
    if "ef_search" in setting:
        index.hnsw.efSearch = setting["ef_search"]
    if "nprobe" in setting:
        index.nprobe = setting["nprobe"]


def cell_balance(index):
    """IVF list sizes (min / median / max): uneven cells are what makes a probe expensive."""
    if not hasattr(index, "invlists"):
        return {}
    sizes = np.array([index.invlists.list_size(i) for i in range(index.nlist)])
    return {"list_min": int(sizes.min()), "list_median": float(np.median(sizes)), "list_max": int(sizes.max())}


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
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "batched_qps": float(qps), "recall@10": float(recall)}


def target_met_by(rows):
    """Approximate rows at >= 1M vectors with recall and both speed-ups over the target."""
    return [r["index"] for r in rows if r["n"] >= TARGET["n"] and r["index"] != "flat"
            and r["recall@10"] >= TARGET["recall@10"]
            and min(r["speedup_batched"], r["speedup_single"]) >= TARGET["speedup"]]


def markdown(result):
    a = result["args"]
    data = ("drawn from a Gaussian with the mean and covariance of the real archive's embeddings "
            f"(`{a['index']}`)" if result["data"] == "archive" else "from a 2,000-component Gaussian mixture")
    lines = ["# Task 3 scale benchmark", "",
             f"`python benchmarks/task3_scale.py --data {result['data']} --sizes {' '.join(map(str, a['sizes']))} "
             f"--hnsw_max {a['hnsw_max']}`: {result['threads']} threads, {result['dim']}-d vectors {data}, L2, k=10, "
             f"{a['queries']} queries. Memory is the growth of the process's resident set while building. Latency: one "
             f"query at a time on one thread ({a['single']} queries); throughput: one batch of {a['queries']} queries on "
             f"all threads. x exact = throughput (batched) or p50 latency (single) as a multiple of exact search's at "
             f"the same size. IVF cells: list sizes min / median / max.", "",
             "| archive | index | build s | memory MB | p50 ms (1 query) | p99 ms | x exact (single) | batched queries/s "
             "| x exact (batched) | recall@10 | IVF cells |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cells = f"{r['list_min']} / {r['list_median']:.0f} / {r['list_max']}" if "list_min" in r else ""
        lines.append(f"| {r['n']:,} | {r['index']} | {r['build_s']:.2f} | {r['memory_mb']:.0f} | {r['p50_ms']:.3f} | "
                     f"{r['p99_ms']:.3f} | {r['speedup_single']:.1f} | {r['batched_qps']:.0f} | "
                     f"{r['speedup_batched']:.1f} | {r['recall@10']:.3f} | {cells} |")
    t = result["target"]
    met = result["target_met_by"]
    lines += ["", f"Target at {t['n']:,} vectors (recall@10 >= {t['recall@10']} at >= {t['speedup']:.0f}x exact search, "
              f"single and batched): " + (f"met by {', '.join(met)}." if met else
                                          "not met by any index in this run" +
                                          ("." if max(a["sizes"]) >= t["n"] else f" (largest size run: {max(a['sizes']):,}).")), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    run_script("task3_scale", main, parse_args)
