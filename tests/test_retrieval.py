import json

import numpy as np
import pytest
import torch

from conftest import error_line, run_cli
from pneumo.atomic import save_torch_atomic
from pneumo.retrieval import ArchiveMeta, IndexSpec, average_precision_at, build_index, load_index, save_index, search
from pneumo.runtime import UserError
from task3 import build_index as build_cli
from task3 import query


def rows_for(n):
    return [{"split": "train", "index": i, "label": "pneumonia" if i % 2 else "normal"} for i in range(n)]


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf", "ivf_sq8"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_each_index_type_finds_the_exact_neighbours_on_clustered_data(index_type, metric):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 32))
    vectors = (centres[rng.integers(0, 20, 2000)] + 0.05 * rng.normal(size=(2000, 32))).astype(np.float32)
    exact = build_index(vectors, IndexSpec("flat", metric))
    approx = build_index(vectors, IndexSpec(index_type, metric, nprobe=8))
    meta = ArchiveMeta(metric, rows_for(2000))
    truth = search(exact, meta, vectors[:50], 10)
    found = search(approx, meta, vectors[:50], 10)
    recall = np.mean([len({h["row"] for h in a} & {h["row"] for h in b}) / 10 for a, b in zip(truth, found)])
    # 8-bit codes reorder neighbours that lie within the codes' step of each other (these clusters are tight)
    assert recall >= (0.85 if index_type == "ivf_sq8" else 0.9)
    assert truth[0][0]["row"] == 0  # a stored vector is its own nearest neighbour
    scores = [h["score"] for h in truth[0]]
    assert scores == sorted(scores, reverse=(metric == "cosine"))


def test_l2_distances_are_euclidean_and_self_is_excluded():
    vectors = np.array([[0, 0], [3, 4], [6, 8]], np.float32)
    meta = ArchiveMeta("l2", rows_for(3))
    hits = search(build_index(vectors), meta, vectors[:1], 2, exclude=[0])[0]
    assert [h["row"] for h in hits] == [1, 2] and hits[0]["score"] == pytest.approx(5.0)
    with pytest.raises(UserError, match="larger than the archive"):
        search(build_index(vectors), meta, vectors[:1], 3, exclude=[0])


def test_saved_index_is_refused_for_another_checkpoint(tmp_path):
    vectors = np.eye(4, dtype=np.float32)
    save_index(build_index(vectors), ArchiveMeta("l2", rows_for(4), checkpoint_sha256="a" * 64, ood={"method": "mahalanobis_ppca"}), tmp_path / "i.faiss")
    index, meta = load_index(tmp_path / "i.faiss", "a" * 64)
    assert index.ntotal == 4 and meta.rows[1]["label"] == "pneumonia"
    with pytest.raises(UserError, match="another checkpoint"):
        load_index(tmp_path / "i.faiss", "b" * 64)
    with pytest.raises(UserError, match="not found"):
        load_index(tmp_path / "none.faiss", "a" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.faiss", "i.json"]


def test_average_precision_definition():
    relevant = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]], bool)
    ap = average_precision_at(relevant, 4)
    assert ap == pytest.approx([(1 + 2 / 3) / 2, 0.0, (1 / 2 + 2 / 3 + 3 / 4) / 3])


@pytest.fixture(scope="module")
def archive(trained_checkpoint, synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("index") / "cases.faiss"
    build_cli.main(build_cli.parse_args(["--checkpoint", str(trained_checkpoint), "--data_root", str(synthetic_root),
                                         "--out", str(out), "--device", "cpu"]))
    return out


def test_query_cli_tables_json_and_gallery(archive, trained_checkpoint, synthetic_root, tmp_path):
    common = ["--checkpoint", trained_checkpoint, "--index", archive, "--data_root", synthetic_root, "--out", tmp_path]
    result = run_cli(query, *common, "--indices", "0", "5", "--k", "3")
    assert result.returncode == 0, result.stderr
    records = json.loads((tmp_path / "task3_query_results.json").read_text())["queries"]
    assert [len(r["neighbours"]) for r in records] == [3, 3]
    assert all(h["split"] in ("train", "val") for r in records for h in r["neighbours"])
    assert "rank" in result.stdout and (tmp_path / "figures" / "task3_visual_results.png").stat().st_size > 10_000


def test_query_of_an_archived_case_excludes_itself(archive, trained_checkpoint, synthetic_root, tmp_path):
    records = query.main(query.parse_args(["--checkpoint", str(trained_checkpoint), "--index", str(archive),
                                           "--data_root", str(synthetic_root), "--out", str(tmp_path),
                                           "--split", "val", "--indices", "3", "--k", "4", "--device", "cpu"]))
    assert ("val", 3) not in {(h["split"], h["index"]) for h in records[0]["neighbours"]}


def test_evaluation_mode_scores_retrieval_well_on_learnable_data(archive, trained_checkpoint, synthetic_root, tmp_path):
    result = query.main(query.parse_args(["--checkpoint", str(trained_checkpoint), "--index", str(archive),
                                          "--data_root", str(synthetic_root), "--out", str(tmp_path),
                                          "--evaluate", "--device", "cpu"]))
    overall = result["metrics"]["overall"]
    assert overall["n"] == 96 and overall["precision@1"] > 0.8 and overall["knn5_accuracy"] > 0.8
    assert (tmp_path / "task3_retrieval_eval.md").read_text().count("|") > 20


def test_query_refuses_bad_requests_in_one_line(archive, trained_checkpoint, synthetic_root, tmp_path):
    common = ["--checkpoint", trained_checkpoint, "--index", archive, "--data_root", synthetic_root, "--out", tmp_path]
    cases = [(["--k", "100000"], "larger than the archive"), (["--indices", "500"], "out of range"),
             (["--images", tmp_path / "missing.png"], "does not exist")]
    for extra, message in cases:
        result = run_cli(query, *common, *extra)
        assert result.returncode == 1 and message in error_line(result)
    other = tmp_path / "other.pth"
    payload = torch.load(trained_checkpoint, weights_only=True)
    payload["threshold"] = 0.123
    save_torch_atomic(payload, other)
    result = run_cli(query, "--checkpoint", other, "--index", archive, "--data_root", synthetic_root, "--out", tmp_path)
    assert result.returncode == 1 and "another checkpoint" in error_line(result)
    assert list(tmp_path.iterdir()) == [other]


def test_archive_metadata_goes_to_json_and_back():
    import json
    meta = ArchiveMeta("cosine", rows_for(2), {"index_type": "flat"}, checkpoint_sha256="c" * 64, ood={"threshold": 0.5},
                       run={"script": "build_index", "git_commit": "abc"})
    data = json.loads(json.dumps(meta.to_json()))  # the sidecar's content: the run's record at the top level
    assert data["script"] == "build_index" and data["metric"] == "cosine" and "run" not in data and "dim" not in data
    assert ArchiveMeta.from_json(data) == meta
