"""Issue 36: an archive built from a vector file with its case rows, queried by query.py as the small one is."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import error_line, run_cli
from pneumo import large_archive
from pneumo.case_rows import CaseRows, rows_path
from pneumo.classifier import Classifier
from pneumo.data import CLASS_NAMES, load_split
from pneumo.retrieval import load_index
from pneumo.runtime import UserError
from pneumo.streamed_index import record_path
from task3 import build_index as build_cli
from task3 import query as query_cli

FLAGS = ["--factory", "IVF8_HNSW8,Flat", "--train_size", "352", "--tune_queries", "100"]


@pytest.fixture(scope="module")
def vector_archive(trained_checkpoint, synthetic_root, tmp_path_factory):
    """The classifier's embeddings of train + val as a vector file, their case rows as Parquet, and both built
    into an archive by build_index.py --vectors --rows."""
    folder = tmp_path_factory.mktemp("vector_archive")
    clf = Classifier.load(trained_checkpoint)
    vectors, rows = [], {"split": [], "index": [], "label": [], "study_id": []}
    for split in ("train", "val"):
        images, labels = load_split(synthetic_root, split)
        vectors.append(clf.embed(images))
        rows["split"] += [split] * len(labels)
        rows["index"] += list(range(len(labels)))
        rows["label"] += [CLASS_NAMES[y] for y in labels.tolist()]
        rows["study_id"] += [f"{split}-{i:04d}" for i in range(len(labels))]
    np.save(folder / "vectors.npy", np.concatenate(vectors).astype(np.float32))
    pq.write_table(pa.table(rows), folder / "rows.parquet")
    out = folder / "big.faiss"
    result = run_cli(build_cli, "--vectors", folder / "vectors.npy", "--rows", folder / "rows.parquet", "--checkpoint",
                     trained_checkpoint, "--out", out, *FLAGS)
    assert result.returncode == 0, result.stderr
    return folder, out


def test_query_answers_from_the_vector_archive_like_the_small_one(vector_archive, trained_checkpoint, synthetic_root, tmp_path):
    folder, out = vector_archive
    small = tmp_path / "small.faiss"
    assert run_cli(build_cli, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--out", small).returncode == 0
    answers = {}
    for name, index in (("big", out), ("small", small)):
        result = run_cli(query_cli, "--index", index, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root,
                         "--indices", "0", "1", "2", "--k", "5", "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
        answers[name] = json.loads((tmp_path / name / "task3_query_results.json").read_text())["queries"]
    for big, small in zip(answers["big"], answers["small"]):
        assert [(h["split"], h["index"], h["label"]) for h in big["neighbours"]] == \
               [(h["split"], h["index"], h["label"]) for h in small["neighbours"]]
        assert np.allclose([h["score"] for h in big["neighbours"]], [h["score"] for h in small["neighbours"]], atol=1e-3)
        assert all(h["study_id"].startswith(h["split"]) for h in big["neighbours"])  # the table's other columns come along


def test_the_record_holds_the_depth_the_rows_and_the_index_digest(vector_archive):
    folder, out = vector_archive
    record = json.loads(record_path(out).read_text())
    assert record["case_rows"]["rows"] == 352 and record["case_rows"]["file"] == rows_path(out).name
    assert record["search"]["recall_target"] == 0.95 and record["search"]["nprobe"] >= 1
    assert record["index_stamp"]["bytes"] == out.stat().st_size and len(record["index_sha256"]) == 64
    rows = CaseRows(rows_path(out))
    assert len(rows) == 352 and rows[300]["split"] == "val" and rows[300]["index"] == 300 - 256 and rows[-1] == rows[351]


def test_opening_hashes_the_rows_not_the_index(vector_archive, trained_checkpoint, monkeypatch):
    folder, out = vector_archive
    hashed = []
    real = large_archive.file_sha256
    monkeypatch.setattr(large_archive, "file_sha256", lambda path: hashed.append(path) or real(path))
    index, meta = load_index(out, Classifier.load(trained_checkpoint).sha256)
    assert hashed == [rows_path(out)] and index.nprobe == json.loads(record_path(out).read_text())["search"]["nprobe"]


def test_a_changed_index_or_rows_or_another_checkpoint_is_refused(vector_archive, trained_checkpoint, tmp_path):
    folder, out = vector_archive
    sha = Classifier.load(trained_checkpoint).sha256
    with pytest.raises(UserError, match="vectors of another checkpoint"):
        load_index(out, "0" * 64)
    stat = out.stat()
    os.utime(out, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched after the build
    try:
        with pytest.raises(UserError, match="not the file its build record describes"):
            load_index(out, sha)
    finally:
        os.utime(out, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    rows = rows_path(out)
    kept = rows.read_bytes()
    table = pq.read_table(rows).to_pydict()
    table["label"][0] = "pneumonia" if table["label"][0] == "normal" else "normal"
    pq.write_table(pa.table(table), rows)
    try:
        with pytest.raises(UserError, match="were changed after the build"):
            load_index(out, sha)
    finally:
        rows.write_bytes(kept)
    load_index(out, sha)  # as built, it opens


@pytest.mark.parametrize("table, message", [
    ({"split": ["train"] * 352}, "has no label column"),
    ({"label": ["normal"] * 100}, "holds 100 case rows for 352 vectors"),
    (None, "is not a Parquet file"),
])
def test_bad_case_rows_are_one_line_before_the_build_and_write_nothing(vector_archive, tmp_path, table, message):
    folder, _ = vector_archive
    rows = tmp_path / "rows.parquet"
    if table is None:
        rows.write_text("not parquet")
    else:
        pq.write_table(pa.table(table), rows)
    out = tmp_path / "x.faiss"
    result = run_cli(build_cli, "--vectors", folder / "vectors.npy", "--rows", rows, "--out", out, *FLAGS)
    assert result.returncode == 1 and message in error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.parquet"]
