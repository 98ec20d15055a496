"""Task 3 past memory: 1 M / 2 M / 10 M archived 512-d vectors in one FAISS IVF-HNSW-SQ8 index on one machine.

    python benchmarks/task3_large.py --out reports            # 1M, 2M, 10M: hours on 2 cores, resumable
    python benchmarks/task3_large.py --sizes 10000000 --shape clustered --out reports   # real cases + noise
    python benchmarks/task3_large.py --sizes 200000 --work /tmp/large --out /tmp/large   # a quick look

Goal (issue 21): 10 M vectors, recall@10 >= 0.95 against exact search, p50 <= 5 ms per query, <= 8 GB
resident. Steps, each resumable after a kill (rerun the same command):
1. a float16 vector file of the largest size in --work/<shape>, drawn like the real archive's embeddings
   (--shape gaussian: a Gaussian with their mean and covariance; clustered: a real case plus anisotropic
   noise, so cases come in tight clusters), 1 M rows at a time, each from its own seed;
2. exact top-10 of --queries fresh draws at every size, in one pass over the file;
3. per size, `pneumo.streamed_index.build_streamed` (what `task3/build_index.py --vectors` runs), its
   shards shared between sizes, the search depth chosen for --recall_target on the archive's own vectors
   (`pneumo.search_depth`, as the build does), then in a fresh process: the index loaded (resident memory before and
   after), one query at a time on one thread (p50/p95 over --single), one batch on all threads, recall@10,
   at each --nprobe and at the chosen depth. Results are written after every size to <work>/results.json and <out>/benchmark_task3_large.*.
4. with --server_rows N (one of --sizes): the first N rows on a Milvus 2.3 server started here (PyPI's
   `milvus` binary, Milvus's C++ engine), as IVF_SQ8, the Milvus index closest to the FAISS one: Milvus
   indexes each sealed segment (512 MB, about 256k such vectors) on its own, so its nlist is per segment
   (--server_nlist) and nprobe cells are visited in each; the graph quantizer has no Milvus counterpart.
"""
import argparse
import concurrent.futures
import json
import multiprocessing
import os
import time
from pathlib import Path

import faiss
import numpy as np
import psutil
from tqdm import tqdm

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.cli import positive_int
from pneumo.errors import run_script
from pneumo.milvus_archive import building, local_server
from pneumo.retrieval import DEFAULT_INDEX, IndexSpec, archive_sampler, clustered_sampler
from pneumo.runtime import DEFAULT_RUN, print_run_header
from pneumo.search_depth import DEFAULT_MAX_NPROBE, DEFAULT_QUERIES, DEFAULT_TARGET, apply_depth, tune_index_file
from pneumo.streamed_index import LARGE_FACTORY, build_streamed, open_vectors, read_rows, set_search

BLOCK = 1_000_000  # rows drawn (and ground truth merged) at a time
SHAPES = {"gaussian": archive_sampler, "clustered": clustered_sampler}  # how the synthetic archive is drawn
GOAL = {"n": 10_000_000, "recall@10": 0.95, "p50_ms": 5.0, "resident_gb": 8.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=positive_int, nargs="+", default=[1_000_000, 2_000_000, 10_000_000])
    p.add_argument("--factory", default=LARGE_FACTORY, help=f"FAISS index (default {LARGE_FACTORY})")
    p.add_argument("--train_size", type=positive_int, default=327_680, help="rows the quantizers are trained on (20 per cell)")
    p.add_argument("--nprobe", type=positive_int, nargs="+", default=[16, 32, 64])
    p.add_argument("--shape", default="gaussian", choices=sorted(SHAPES),
                   help="gaussian: the real archive's mean and covariance; clustered: real cases plus anisotropic "
                        "noise, in tight clusters (default gaussian)")
    p.add_argument("--recall_target", type=float, default=DEFAULT_TARGET, help=f"for the tuned depth (default {DEFAULT_TARGET})")
    p.add_argument("--tune_queries", type=positive_int, default=DEFAULT_QUERIES,
                   help=f"archive rows the build tunes on (default {DEFAULT_QUERIES})")
    p.add_argument("--max_nprobe", type=positive_int, default=DEFAULT_MAX_NPROBE, help=f"depth bound (default {DEFAULT_MAX_NPROBE})")
    p.add_argument("--queries", type=positive_int, default=1000, help="queries for recall and the batch (default 1000)")
    p.add_argument("--single", type=positive_int, default=300, help="one-at-a-time queries for latency (default 300)")
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX), help=f"real archive to imitate (default {DEFAULT_INDEX})")
    p.add_argument("--work", type=Path, default=DEFAULT_RUN / "task3_large",
                   help="folder for the vector file, shards and index (about 2.1 KB per vector of the largest size)")
    p.add_argument("--server_rows", type=int, default=0, help="rows to measure on a local Milvus server (default 0: none)")
    p.add_argument("--server_nlist", type=positive_int, default=2048, help="IVF_SQ8 cells per Milvus segment (default 2048)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_RUN, help=f"folder for the results (default {DEFAULT_RUN})")
    args = p.parse_args(argv)
    args.sizes = sorted(set(args.sizes))
    if args.single > args.queries:
        p.error("--single must be <= --queries")
    if args.server_rows and args.server_rows not in args.sizes:
        p.error("--server_rows must be one of --sizes (its exact neighbours are computed for those)")
    return args


def main(args):
    check_writable(args.out)
    check_writable(args.work)
    run = print_run_header("benchmark_task3_large", args)
    work = args.work / args.shape
    work.mkdir(parents=True, exist_ok=True)
    sampler = SHAPES[args.shape]
    vectors_path = work / "vectors.npy"
    write_vectors(vectors_path, args.sizes[-1], args.index, args.seed, sampler)
    queries = sampler(args.index, np.random.default_rng([args.seed, 10**9]))(args.queries)
    np.save(work / "queries.npy", queries)
    truth = exact_truth(vectors_path, queries, args.sizes, work / "truth.npz")
    results_file = work / "results.json"
    done = json.loads(results_file.read_text()) if results_file.is_file() else {}
    rows = [{"engine": "faiss", **r} for r in done.get("rows", []) if r["n"] in args.sizes and done.get("args") == key_args(args)]
    for n in args.sizes:
        if any(r["n"] == n and r["engine"] == "faiss" for r in rows):
            continue
        print(f"--- {n:,} vectors: build", flush=True)
        record = build_streamed(vectors_path, work / "archive.faiss", rows=n, factory=args.factory,
                                train_size=args.train_size, seed=args.seed, keep_partial=True)
        print(f"--- {n:,} vectors: search depth for recall@10 {args.recall_target} on the archive's own vectors", flush=True)
        search = tune_index_file(work / "archive.faiss", vectors_path, n, args.recall_target, args.tune_queries,
                                 args.max_nprobe, seed=args.seed)
        print(f"--- {n:,} vectors: search (fresh process)", flush=True)
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            measured = pool.submit(measure, str(work / "archive.faiss"), str(work / "queries.npy"),
                                   truth[str(n)], args.nprobe, args.single, search).result()
        tuning = {"tune_s": search["truth_s"] + search["explore_s"], "recorded_recall": search["recall"],
                  "recorded_ci95": search["recall_ci95"], "tuned": search["parameters"], "target_met": search["met"]}
        rows += [{"n": n, "engine": "faiss", "shape": args.shape, **build_summary(record), **tuning, **m} for m in measured]
        write_json_atomic(results_file, {"args": key_args(args), "rows": rows})
        publish(args, run, rows)
    if args.server_rows and not any(r["n"] == args.server_rows and r["engine"] == "milvus-server" for r in rows):
        rows += on_server(args, vectors_path, queries, truth[str(args.server_rows)])
        write_json_atomic(results_file, {"args": key_args(args), "rows": rows})
    return publish(args, run, rows)


def on_server(args, vectors_path, queries, truth):
    """The first --server_rows rows as IVF_SQ8 on a local Milvus server: build (inserts, flush, the index
    waited for and read back), then per nprobe the same measurements as FAISS's, through the project's client."""
    n = args.server_rows
    print(f"--- {n:,} vectors on a local Milvus server: build", flush=True)
    vectors = read_rows(open_vectors(vectors_path), 0, n)
    labels = [{"split": "archive", "index": i, "label": "unknown"} for i in range(n)]
    spec = IndexSpec("ivf_sq8", nlist=args.server_nlist)
    out = []
    with local_server() as (uri, process):
        start = time.perf_counter()
        with building(uri, "large", vectors, labels, spec) as milvus:
            build_s = time.perf_counter() - start
            del vectors
            engine = milvus.meta.build["engine_index"]
            for nprobe in args.nprobe:
                milvus.meta.build["nprobe"] = nprobe
                for q in queries[:20]:  # warm-up
                    milvus.search(q[None], 10)
                times = []
                for q in queries[:args.single]:
                    begin = time.perf_counter()
                    milvus.search(q[None], 10)
                    times.append(1000 * (time.perf_counter() - begin))
                begin = time.perf_counter()
                found = milvus.search(queries, 10)[1]
                qps = len(queries) / (time.perf_counter() - begin)
                recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
                out.append({"n": n, "engine": "milvus-server", "shape": args.shape, "index": f"{engine['index_type']} {json.dumps(engine['params'])}",
                            "nprobe": nprobe, "p50_ms": float(np.percentile(times, 50)),
                            "p95_ms": float(np.percentile(times, 95)), "batched_qps": qps, "recall@10": recall,
                            "process_resident_gb": psutil.Process(process.pid).memory_info().rss / 1e9, "build_s": build_s})
                print(f"server nprobe {nprobe:>3}: p50 {out[-1]['p50_ms']:.2f} ms  recall@10 {recall:.3f}  "
                      f"server resident {out[-1]['process_resident_gb']:.2f} GB", flush=True)
    return out


def key_args(args):
    """What makes two runs' rows comparable (a rerun with other settings measures again)."""
    return {k: v for k, v in vars(args).items()
            if k in ("factory", "train_size", "nprobe", "queries", "single", "seed", "shape", "recall_target",
                     "tune_queries", "max_nprobe")}


def write_vectors(path, n, index, seed, sampler=archive_sampler):
    """The float16 vector file, 1 M rows at a time; <path>.rows records the rows already written."""
    marker = path.with_suffix(".rows")
    if path.is_file() and marker.is_file() and open_vectors(path).shape[0] == n:
        written = int(marker.read_text())
    else:
        np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, 512)).flush()
        written = 0
    file = np.load(path, mmap_mode="r+")
    with tqdm(total=n, initial=written, desc="vector file", unit="row", unit_scale=True) as bar:
        for start in range(written, n, BLOCK):
            stop = min(start + BLOCK, n)
            file[start:stop] = sampler(index, np.random.default_rng([seed, start // BLOCK]))(stop - start)
            file.flush()
            marker.write_text(str(stop))
            bar.update(stop - start)
    del file


def exact_truth(vectors_path, queries, sizes, cache):
    """{str(n): top-10 row ids of each query among the first n rows}, exact (float32 of the stored values)."""
    if cache.is_file():
        stored = dict(np.load(cache))
        if all(str(n) in stored for n in sizes):
            return stored
    vectors = open_vectors(vectors_path)
    best_d = np.full((len(queries), 10), np.inf, np.float32)
    best_i = np.full((len(queries), 10), -1, np.int64)
    truth = {}
    for start in tqdm(range(0, sizes[-1], BLOCK), desc="exact search", unit="M rows"):
        stop = min(start + BLOCK, sizes[-1])
        for n in sizes:  # a size inside this block: its part first
            if start < n < stop:
                d, i = faiss.knn(queries, read_rows(vectors, start, n), 10)
                truth[str(n)] = merge(best_d, best_i, d, i + start)[1]
        d, i = faiss.knn(queries, read_rows(vectors, start, stop), 10)
        best_d, best_i = merge(best_d, best_i, d, i + start)
        if stop in sizes:
            truth[str(stop)] = best_i.copy()
    np.savez(cache, **truth)
    return truth


def merge(d1, i1, d2, i2):
    d, i = np.hstack([d1, d2]), np.hstack([i1, i2])
    order = np.argsort(d, axis=1, kind="stable")[:, :10]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def build_summary(record):
    return {"train_s": record["train_s"], "add_s": record["add_s"], "merge_write_s": record["merge_write_s"],
            "build_s": record["train_s"] + record["add_s"] + record["merge_write_s"]}


def measure(index_path, queries_path, truth, nprobes, single, search=None):
    """In a fresh process: resident memory with the index loaded, then per depth (each nprobe, and the
    depth the build chose, `search`) single-query latency on one thread, batched throughput on all, recall@10."""
    before = psutil.Process().memory_info().rss
    index = faiss.read_index(index_path)
    loaded = psutil.Process().memory_info().rss
    queries = np.load(queries_path)
    threads = faiss.omp_get_max_threads()
    out = []
    depths = [(nprobe, None) for nprobe in nprobes] + ([(search["nprobe"], search)] if search else [])
    for nprobe, tuned in depths:
        if tuned:
            apply_depth(index, tuned)
        else:
            set_search(index, nprobe)
        faiss.omp_set_num_threads(1)
        index.search(queries[:20], 10)  # warm-up
        times = []
        for q in queries[:single]:
            start = time.perf_counter()
            index.search(q[None], 10)
            times.append(1000 * (time.perf_counter() - start))
        faiss.omp_set_num_threads(threads)
        start = time.perf_counter()
        _, found = index.search(queries, 10)
        qps = len(queries) / (time.perf_counter() - start)
        recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
        out.append({"nprobe": nprobe, "depth": "tuned" if tuned else "fixed", "parameters": index_parameters(index),
                    "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
                    "batched_qps": qps, "recall@10": recall, "index_file_gb": os.path.getsize(index_path) / 1e9,
                    "index_resident_gb": (loaded - before) / 1e9,
                    "process_resident_gb": psutil.Process().memory_info().rss / 1e9,
                    "bytes_per_vector": os.path.getsize(index_path) / index.ntotal})
        print(f"nprobe {nprobe:>3}: p50 {out[-1]['p50_ms']:.2f} ms  p95 {out[-1]['p95_ms']:.2f} ms  "
              f"{qps:.0f} q/s batched  recall@10 {recall:.3f}  resident {out[-1]['process_resident_gb']:.2f} GB", flush=True)
    return out


def index_parameters(index) -> str:
    """The depth an IVF-HNSW index searches at, as nprobe=..,quantizer_efSearch=.."""
    ivf = faiss.extract_index_ivf(index)
    quantizer = faiss.downcast_index(ivf.quantizer)
    breadth = f",quantizer_efSearch={quantizer.hnsw.efSearch}" if isinstance(quantizer, faiss.IndexHNSW) else ""
    return f"nprobe={ivf.nprobe}{breadth}"


def goal_met_by(rows):
    return [f"{r.get('shape', 'gaussian')} {r.get('depth', 'fixed')} nprobe {r['nprobe']}" for r in rows
            if r["engine"] == "faiss" and r["n"] >= GOAL["n"] and r["recall@10"] >= GOAL["recall@10"]
            and r["p50_ms"] <= GOAL["p50_ms"] and r["process_resident_gb"] <= GOAL["resident_gb"]]


def publish(args, run, rows):
    """The results file and its Markdown, keeping the rows of the other shape from an earlier run."""
    earlier = args.out / "benchmark_task3_large.json"
    kept = []
    if earlier.is_file():
        server_run = any(r["engine"] != "faiss" for r in rows)
        kept = [r for r in json.loads(earlier.read_text()).get("rows", [])
                if r.get("shape", "gaussian") != args.shape or (r["engine"] != "faiss" and not server_run)]
    rows = kept + rows
    result = {**run, "cores": os.cpu_count(), "threads": faiss.omp_get_max_threads(), "goal": GOAL,
              "goal_met_at": goal_met_by(rows), "rows": rows}
    write_json_atomic(args.out / "benchmark_task3_large.json", result)
    md = markdown(result)
    write_text_atomic(args.out / "benchmark_task3_large.md", md)
    print(md)
    return result


def markdown(result):
    a, g = result["args"], result["goal"]
    lines = ["# Task 3 past memory: one FAISS IVF-HNSW-SQ8 index, streamed from a vector file", "",
             f"`python benchmarks/task3_large.py --sizes {' '.join(map(str, a['sizes']))} --shape SHAPE --out reports` "
             f"(once per shape) on "
             f"{result['cores']} CPU cores: `{a['factory']}` (an IVF index whose {a['factory'].split('_')[0][3:]} cells are "
             f"found by an HNSW graph, each vector kept as 8-bit codes), quantizers trained on {a['train_size']:,} rows, "
             f"vectors added 100k at a time from a float16 .npy file (`pneumo.streamed_index`, what "
             f"`task3/build_index.py --vectors` runs). Vectors: 512-d, of the two shapes below. Recall@10 against exact search over the same stored values, "
             f"{a['queries']} fresh queries; latency one query at a time on one thread ({a['single']} queries); memory: "
             f"resident set of a fresh process holding the loaded index. Build: training + adding + merging the shards "
             f"and writing the file (shards of 1 M rows are shared between sizes, so a larger size's add time counts its "
             f"own shards and those reused).", "",
             "Shapes: `gaussian`, drawn from N(mean, covariance) of the real archive's embeddings; `clustered`, a real "
             "archived case drawn at random plus anisotropic noise (the archive's covariance scaled by 0.15²), so cases "
             "come in tight clusters. Depth `tuned`: chosen by the build for the recall target on the archive's own "
             "vectors (`pneumo.search_depth`); its recall as the build recorded it is shown beside the one measured "
             "here on fresh queries.", "",
             "| shape | archive | depth | nprobe | recall@10 (recorded) | p50 ms | p95 ms | batched q/s | resident GB "
             "| file GB | bytes/vector | build s (train + add + merge/write) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [r for r in result["rows"] if r["engine"] == "faiss"]:
        recorded = f" ({r['recorded_recall']:.3f})" if r.get("depth") == "tuned" else ""
        depth = f"tuned: {r['parameters']}" if r.get("depth") == "tuned" else "fixed"
        lines.append(f"| {r.get('shape', 'gaussian')} | {r['n']:,} | {depth} | {r['nprobe']} | {r['recall@10']:.3f}{recorded} | "
                     f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                     f"{r['batched_qps']:.0f} | {r['process_resident_gb']:.2f} | {r['index_file_gb']:.2f} | "
                     f"{r['bytes_per_vector']:.0f} | {r['build_s']:.0f} ({r['train_s']:.0f} + {r['add_s']:.0f} + "
                     f"{r['merge_write_s']:.0f}) |")
    server = [r for r in result["rows"] if r["engine"] == "milvus-server"]
    if server:
        lines += ["", f"The same vectors on a Milvus 2.3 server started here (PyPI's `milvus` binary, Milvus's C++ engine; "
                  f"`--server_rows {a['server_rows']} --server_nlist {a['server_nlist']}`): the first {server[0]['n']:,} "
                  f"rows inserted through the project's client, IVF_SQ8 built per segment and read back as "
                  f"`{server[0]['index']}`, searched over gRPC on 127.0.0.1 (same queries, same exact neighbours). "
                  f"Build {server[0]['build_s']:.0f} s (inserts, flush, index, load). Memory: the server process's "
                  f"resident set.", "",
                  "| archive | nprobe (per segment) | recall@10 | p50 ms | p95 ms | batched q/s | server resident GB |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['n']:,} | {r['nprobe']} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
                  f"{r['batched_qps']:.0f} | {r['process_resident_gb']:.2f} |" for r in server]
    met = result["goal_met_at"]
    largest = max([r["n"] for r in result["rows"]], default=0)
    lines += ["", f"Goal at {g['n']:,} vectors: recall@10 >= {g['recall@10']}, p50 <= {g['p50_ms']:g} ms, resident <= "
              f"{g['resident_gb']:g} GB: " + (f"**met** at {', '.join(met)}." if met else
                                             "**not met** in this run" + (f" (largest size run: {largest:,})." if largest < g["n"] else "."))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("task3_large", main, parse_args)
