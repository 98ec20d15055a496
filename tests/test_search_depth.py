"""Issue 36: the search depth of a large index chosen at build time for a recall target, measured on the
archive's own vectors, on a small clustered set where a fixed depth falls short."""
import json

import faiss
import numpy as np
import pytest

from conftest import run_cli
from pneumo import search_depth
from pneumo.search_depth import apply_depth, depth_line, tune_index_file
from pneumo.streamed_index import build_streamed, record_path, set_search
from task3 import build_index as build_cli

SMALL = dict(factory="IVF256_HNSW16,Flat", train_size=12000, shard_rows=10000, chunk=5000, progress=False)
ROWS, FRESH = 20000, 500


def clustered(n, seed=0, d=32, clusters=40):
    """Tight anisotropic clusters (each a random linear map of a Gaussian around its own centre), as repeat
    studies and similar patients make; the same clusters whatever n."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d)) * 3
    maps = rng.normal(size=(clusters, d, d)) * 0.3
    draw = np.random.default_rng([seed, n])
    member = draw.integers(0, clusters, n)
    return (centres[member] + np.einsum("nd,nde->ne", draw.normal(size=(n, d)), maps[member])).astype(np.float16)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """The vector file (the first ROWS of the draw), its index, and FRESH more draws as users' queries."""
    folder = tmp_path_factory.mktemp("clustered")
    x = clustered(ROWS + FRESH)
    np.save(folder / "v.npy", x[:ROWS])
    build_streamed(folder / "v.npy", folder / "a.faiss", **SMALL)
    fresh = x[ROWS:].astype(np.float32)
    truth = faiss.knn(fresh, x[:ROWS].astype(np.float32), 10)[1]
    return folder, fresh, truth


def fresh_recall(index, fresh, truth):
    found = index.search(fresh, 10)[1]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))


def test_the_tuned_depth_meets_the_target_on_fresh_queries_where_a_fixed_one_does_not(archive):
    folder, fresh, truth = archive
    index = faiss.read_index(str(folder / "a.faiss"))
    set_search(index, 4)  # 4 of 256 cells: a larger share than the benchmark's nprobe 32 of 16,384
    fixed = fresh_recall(index, fresh, truth)
    assert fixed < 0.95, fixed
    search = tune_index_file(folder / "a.faiss", folder / "v.npy", ROWS, target=0.95, n_queries=500)
    apply_depth(index, search)
    measured = fresh_recall(index, fresh, truth)
    assert search["met"] and search["recall"] >= 0.95 and measured >= 0.95, (search, measured)
    assert abs(search["recall"] - measured) <= 0.02  # what the build records is what users get
    lo, hi = search["recall_ci95"]
    assert lo <= search["recall"] <= hi and hi - lo < 0.05
    assert search["parameters"] == f"nprobe={search['nprobe']},quantizer_efSearch={search['quantizer_efSearch']}"
    assert all(p["recall"] < 0.95 or p["ms_per_query"] >= search["ms_per_query_one_thread"] for p in search["pareto"])


def test_an_unreachable_target_is_said_in_one_line_with_what_was_reached(archive):
    folder, _, _ = archive
    search = tune_index_file(folder / "a.faiss", folder / "v.npy", ROWS, target=0.999, n_queries=300, max_nprobe=2)
    assert not search["met"] and search["nprobe"] <= 2 and search["recall"] < 0.999
    line = depth_line(search)
    assert line.startswith("warning: recall@10 0.999 cannot be met within nprobe <= 2") and "\n" not in line


def test_the_recall_leaves_each_query_out_of_its_own_results():
    ids = np.array([5, 9])
    found = np.array([[5, 1, 2], [3, 9, 4]])
    truth = np.array([[5, 1, 7], [9, 3, 8]])
    assert search_depth.recall_without_self(found, truth, ids, 2).tolist() == [0.5, 0.5]


def test_build_index_records_the_depth_it_chose(archive, tmp_path):
    folder, _, _ = archive
    out = tmp_path / "big.faiss"
    result = run_cli(build_cli, "--vectors", folder / "v.npy", "--out", out, "--factory", SMALL["factory"],
                     "--train_size", "12000", "--tune_queries", "300")
    assert result.returncode == 0, result.stderr
    record = json.loads(record_path(out).read_text())
    assert record["search"]["recall_target"] == 0.95 and record["search"]["queries"] == 300
    assert f"search depth nprobe {record['search']['nprobe']}" in result.stdout


def test_the_smallest_nprobe_that_meets_the_target_is_chosen_else_the_best_one_is_said():
    """tune_nprobe, for an engine FAISS cannot drive (Milvus): a search whose recall grows with depth."""
    from pneumo.search_depth import tune_nprobe
    ids = np.arange(100)
    truth = np.array([[i, *range(1000 + 10 * i, 1000 + 10 * i + 10)] for i in ids])

    def search_at(nprobe):  # finds min(nprobe, 10) of each query's 10 neighbours
        return np.array([[i, *t[1:1 + min(nprobe, 10)], *[-1] * (10 - min(nprobe, 10))] for i, t in zip(ids, truth)])
    chosen = tune_nprobe(search_at, ids, truth, nlist=64, target=0.75)
    assert chosen["met"] and chosen["nprobe"] == 8 and chosen["recall"] == 0.8
    assert [t["parameters"] for t in chosen["tried"]] == ["nprobe=1", "nprobe=2", "nprobe=3", "nprobe=4", "nprobe=6", "nprobe=8"]
    short = tune_nprobe(search_at, ids, truth, nlist=64, target=0.75, max_nprobe=4)
    assert not short["met"] and short["nprobe"] == 4 and short["recall"] == 0.4
