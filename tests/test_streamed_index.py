"""Archives larger than memory (issue 21 part 3): the IVF-HNSW-SQ8 index built from a vector file in
chunks, resumable after a kill, refused by the scripts that need case rows."""
import json

import faiss
import numpy as np
import pytest

from conftest import error_line, run_cli
from pneumo import streamed_index
from pneumo.retrieval import load_index
from pneumo.runtime import UserError
from pneumo.streamed_index import build_streamed, record_path, set_search
from task3 import build_index as build_cli

SMALL = dict(factory="IVF64_HNSW16,SQ8", train_size=3000, shard_rows=2000, chunk=700, progress=False)


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory):
    """5,000 correlated 32-d vectors in float16, the stored values being what is indexed."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 32)) @ rng.standard_normal((32, 32))).astype(np.float16)
    path = tmp_path_factory.mktemp("vectors") / "vectors.npy"
    np.save(path, x)
    return path


def exact(vectors, queries, k=10):
    return faiss.knn(queries, np.asarray(vectors, np.float32), k)[1]


def test_streamed_build_finds_the_exact_neighbours_with_row_ids(vector_file, tmp_path):
    record = build_streamed(vector_file, tmp_path / "a.faiss", rows=4500, **SMALL)
    index = faiss.read_index(str(tmp_path / "a.faiss"))
    assert index.ntotal == record["ntotal"] == 4500 and record["nlist"] == 64
    assert not (tmp_path / "a.faiss.partial").exists()  # the work folder goes once the index is written
    stored = np.load(vector_file)[:4500]
    queries = stored[::50].astype(np.float32) + 0.01
    set_search(index, 16)
    found = index.search(queries, 10)[1]
    truth = exact(stored, queries)
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.9, recall
    assert (found[:, 0] == np.arange(0, 4500, 50)).mean() >= 0.95  # ids are rows of the file
    assert found.max() < 4500  # the rows past `rows` of the last shard are not in it


def test_a_killed_build_resumes_where_it_stopped(vector_file, tmp_path, monkeypatch):
    built = []
    real_write = faiss.write_index

    def write_then_die(index, path):
        real_write(index, path)
        built.append(path)
        if len(built) == 3:  # trained index, first shard, then Ctrl+C while the second is written
            raise KeyboardInterrupt
    monkeypatch.setattr(streamed_index.faiss, "write_index", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_streamed(vector_file, tmp_path / "b.faiss", **SMALL)
    monkeypatch.setattr(streamed_index.faiss, "write_index", real_write)
    work = tmp_path / "b.faiss.partial"
    assert sorted(p.name for p in work.glob("*.faiss")) == ["shard_00000.faiss", "trained.faiss"]
    first_shard = (work / "shard_00000.faiss").stat().st_mtime_ns
    trained_calls = []
    monkeypatch.setattr(streamed_index, "train_empty", lambda *a: trained_calls.append(a))
    record = build_streamed(vector_file, tmp_path / "b.faiss", keep_partial=True, **SMALL)
    assert trained_calls == [] and (work / "shard_00000.faiss").stat().st_mtime_ns == first_shard
    assert record["ntotal"] == 5000
    monkeypatch.undo()
    build_streamed(vector_file, tmp_path / "c.faiss", **SMALL)  # uninterrupted, for comparison
    a, b = (faiss.read_index(str(tmp_path / f"{n}.faiss")) for n in "bc")
    queries = np.load(vector_file)[:40].astype(np.float32)
    for index in (a, b):
        set_search(index, 8)
    assert np.array_equal(a.search(queries, 10)[1], b.search(queries, 10)[1])


def test_a_partial_build_of_other_settings_is_refused(vector_file, tmp_path):
    build_streamed(vector_file, tmp_path / "d.faiss", rows=2000, keep_partial=True, **SMALL)
    with pytest.raises(UserError, match="partial build of other settings"):
        build_streamed(vector_file, tmp_path / "d.faiss", **{**SMALL, "train_size": 2500})


def test_build_index_cli_indexes_a_vector_file_and_the_scripts_refuse_it(vector_file, tmp_path):
    out = tmp_path / "big.faiss"
    flags = ["--factory", SMALL["factory"], "--train_size", "3000"]
    result = run_cli(build_cli, "--vectors", vector_file, "--out", out, *flags)
    assert result.returncode == 0, result.stderr
    record = json.loads(record_path(out).read_text())
    assert record["kind"] == "vector file index" and record["ntotal"] == 5000 and record["script"] == "build_index"
    assert faiss.read_index(str(out)).ntotal == 5000
    with pytest.raises(UserError, match="indexes the vector file .* no cases to show"):
        load_index(out, "0" * 64)


@pytest.mark.parametrize("content, message", [
    ("text", "is not a .npy array file"),
    (np.zeros(10, np.float32), "a vector file is rows × dim"),
    (np.zeros((10, 4), np.int64), "a vector file is float16 or float32"),
    ("nan", "non-finite value in row 7"),
])
def test_a_bad_vector_file_is_one_line_and_writes_nothing(tmp_path, content, message):
    path = tmp_path / "v.npy"
    if isinstance(content, str) and content == "text":
        path.write_text("not an array")
    elif isinstance(content, str):
        x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
        x[7, 3] = np.nan
        np.save(path, x)
    else:
        np.save(path, content)
    result = run_cli(build_cli, "--vectors", path, "--out", tmp_path / "x.faiss", "--factory", "IVF4_HNSW8,SQ8",
                     "--train_size", "300")
    assert result.returncode == 1 and message in error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.npy"]  # no index, record or partial build
