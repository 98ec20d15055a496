"""The archive in Milvus (Milvus Lite in-process: a reimplementation of its API over FAISS, not the Milvus engine) behind the same build_index / query:
same neighbours as FAISS, the same refusals, and a build that is all or nothing."""
import json

import numpy as np
import pytest

from conftest import error_line, interrupt_milvus_build, run_cli
from pneumo.archive import ArchiveSource
from pneumo.classifier import Classifier
from pneumo.data import load_split
from pneumo.model import EMBEDDING_DIM
from pneumo.retrieval import IndexSpec, search
from pneumo.runtime import UserError

pytest.importorskip("milvus_lite", reason="no Milvus Lite wheel for this platform (pip install milvus-lite)")
from pneumo import milvus_archive  # noqa: E402
from task3 import build_index, query  # noqa: E402


@pytest.fixture(scope="module")
def archives(trained_checkpoint, synthetic_root, tmp_path_factory):
    """The synthetic archive built twice from the same checkpoint: a FAISS flat file and a Milvus collection."""
    folder = tmp_path_factory.mktemp("archives")
    common = ["--checkpoint", str(trained_checkpoint), "--data_root", str(synthetic_root), "--device", "cpu"]
    build_index.main(build_index.parse_args([*common, "--out", str(folder / "flat.faiss")]))
    build_index.main(build_index.parse_args([*common, "--backend", "milvus", "--uri", str(folder / "lite.db")]))
    return folder


def neighbours(backend, folder, checkpoint, root, k=5, collection="task3_archive"):
    clf = Classifier.load(checkpoint)
    index, meta = ArchiveSource(backend, folder / "flat.faiss", str(folder / "lite.db"), collection).open(clf.sha256, EMBEDDING_DIM)
    return search(index, meta, clf.embed(load_split(root, "test", 28)[0]), k), meta


def agree(a, b, tolerance=1e-3):
    """Same rows at every rank, except where two cases lie at the same distance (a tie) and swap."""
    return all(x["row"] == y["row"] or abs(x["score"] - y["score"]) < tolerance for x, y in zip(a, b))


def test_milvus_exact_search_gives_faiss_flats_neighbours(archives, trained_checkpoint, synthetic_root):
    faiss_hits, faiss_meta = neighbours("faiss", archives, trained_checkpoint, synthetic_root)
    milvus_hits, milvus_meta = neighbours("milvus", archives, trained_checkpoint, synthetic_root)
    assert len(milvus_hits) == 96 and all(len(h) == 5 for h in milvus_hits)
    assert all(agree(a, b) for a, b in zip(faiss_hits, milvus_hits))
    assert np.allclose([h["score"] for q in faiss_hits for h in q], [h["score"] for q in milvus_hits for h in q], atol=1e-3)
    assert milvus_meta.rows == faiss_meta.rows and milvus_meta.checkpoint_sha256 == faiss_meta.checkpoint_sha256
    assert milvus_meta.ood["threshold"] == pytest.approx(faiss_meta.ood["threshold"], abs=1e-3)
    assert milvus_meta.build["backend"] == "milvus" and milvus_meta.build["index_type"] == "flat"


def test_query_script_runs_on_milvus(archives, trained_checkpoint, synthetic_root, tmp_path):
    common = ["--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--out", tmp_path]
    result = run_cli(query, *common, "--backend", "milvus", "--uri", archives / "lite.db", "--evaluate")
    assert result.returncode == 0, error_line(result)
    milvus = json.loads((tmp_path / "task3_retrieval_eval.json").read_text())
    assert run_cli(query, *common, "--index", archives / "flat.faiss", "--evaluate").returncode == 0
    faiss = json.loads((tmp_path / "task3_retrieval_eval.json").read_text())
    assert milvus["index"].startswith("milvus ") and milvus["archive_size"] == faiss["archive_size"] == 352
    assert set(faiss["metrics"]) == {"overall", "normal", "pneumonia"} and faiss["metrics"]["overall"]["n"] > 0
    for group, values in faiss["metrics"].items():  # the same neighbours give the same retrieval metrics
        assert set(values) >= {"precision@5", "map@10", "knn5_accuracy"}
        assert milvus["metrics"][group] == pytest.approx(values, abs=1e-9), group


def test_a_collection_from_another_checkpoint_or_absent_is_refused(archives, synthetic_root, tmp_path):
    other = Classifier.load("models/task1_model.pth")
    with pytest.raises(UserError, match="built from another checkpoint"):
        milvus_archive.load_milvus(str(archives / "lite.db"), "task3_archive", other.sha256, EMBEDDING_DIM)
    with pytest.raises(UserError, match="no collection 'elsewhere'"):
        milvus_archive.load_milvus(str(archives / "lite.db"), "elsewhere", other.sha256, EMBEDDING_DIM)
    result = run_cli(query, "--backend", "milvus", "--uri", archives / "lite.db", "--data_root", synthetic_root,
                     "--out", tmp_path)
    assert result.returncode == 1 and "built from another checkpoint" in error_line(result)
    missing = run_cli(query, "--backend", "milvus", "--uri", tmp_path / "no" / "where.db", "--out", tmp_path)
    assert missing.returncode == 1 and "does not exist" in error_line(missing)


def test_an_interrupted_build_leaves_the_old_collection(archives, trained_checkpoint, synthetic_root, monkeypatch):
    uri = str(archives / "lite.db")
    before = milvus_archive.connect(uri).describe_collection("task3_archive")["properties"]["meta"]
    client, calls = interrupt_milvus_build(monkeypatch, uri, trained_checkpoint, synthetic_root)
    assert calls == [1, 1]
    assert client.list_collections() == ["task3_archive"]  # no half-built collection left behind
    assert client.describe_collection("task3_archive")["properties"]["meta"] == before
    assert client.get_collection_stats("task3_archive")["row_count"] == 352


@pytest.mark.parametrize("index_type", ["hnsw", "ivf", "ivf_sq8"])
def test_approximate_milvus_indexes_find_the_exact_neighbours(index_type, trained_checkpoint, synthetic_root, tmp_path):
    clf = Classifier.load(trained_checkpoint)
    vectors = clf.embed(load_split(synthetic_root, "train", 28)[0])
    rows = [{"split": "train", "index": i, "label": "normal"} for i in range(len(vectors))]
    with milvus_archive.building(str(tmp_path / "a.db"), "approx", vectors, rows, IndexSpec(index_type, nlist=8, nprobe=8),
                                 progress=False) as index:
        _, found = index.search(vectors[:50], 5)
    with milvus_archive.building(str(tmp_path / "a.db"), "exact", vectors, rows, progress=False) as index:
        _, exact = index.search(vectors[:50], 5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, exact)])
    assert recall >= 0.9
    assert milvus_archive.connect(str(tmp_path / "a.db")).list_collections() == []  # never finished: dropped


def test_the_case_viewer_reads_the_archive_from_milvus(archives, trained_checkpoint, synthetic_root):
    from pneumo.viewer import CaseViewer
    from viewer import app
    on_faiss = CaseViewer(trained_checkpoint, ArchiveSource(index=archives / "flat.faiss"), synthetic_root, "cpu")
    on_milvus = CaseViewer(trained_checkpoint, ArchiveSource("milvus", uri=str(archives / "lite.db"), collection="task3_archive"),
                           synthetic_root, "cpu")
    a = on_faiss.analyse(on_faiss.dataset_case("test", 3)).classifier.neighbours
    b = on_milvus.analyse(on_milvus.dataset_case("test", 3)).classifier.neighbours
    assert [h["index"] for h in a] == [h["index"] for h in b]
    assert "milvus index: 352 archived cases" in app.footer(on_milvus) and "built from this checkpoint: yes" in app.footer(on_milvus)


@pytest.mark.parametrize("spec,asked", [(IndexSpec("hnsw", hnsw_m=8), {"M": 8}), (IndexSpec("ivf", nlist=8, nprobe=4), {"nlist": 8}),
                                        (IndexSpec("ivf_sq8", nlist=8, nprobe=4), {"nlist": 8})])
def test_the_index_the_engine_built_is_the_one_asked(spec, asked, trained_checkpoint, synthetic_root, tmp_path):
    """Issue 21: the build parameters reach Milvus Lite (it reads them only nested under "params"), as read
    back from the engine with describe_index, and the archive records what the engine built."""
    clf = Classifier.load(trained_checkpoint)
    vectors = clf.embed(load_split(synthetic_root, "train", 28)[0])
    rows = [{"split": "train", "index": i, "label": "normal"} for i in range(len(vectors))]
    with milvus_archive.building(str(tmp_path / "a.db"), "asked", vectors, rows, spec, progress=False) as index:
        described = index.client.describe_index(index.collection, index_name="vector")
        recorded = index.meta.build["engine_index"]
    assert described["index_type"] == {"hnsw": "HNSW", "ivf": "IVF_FLAT", "ivf_sq8": "IVF_SQ8"}[spec.index_type]
    assert {k: int(v) for k, v in described["params"].items() if k in asked} == asked
    assert recorded["index_type"] == described["index_type"] and all(recorded["params"][k] == v for k, v in asked.items())


def test_an_index_built_with_other_parameters_is_refused(tmp_path):
    """The old way (parameters flattened, as pymilvus 3 sends them) builds Lite's defaults: read back and refused."""
    from pymilvus import DataType
    client = milvus_archive.connect(str(tmp_path / "a.db"), create=True)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=8)
    params = client.prepare_index_params()
    params.add_index(field_name="vector", index_type="HNSW", metric_type="L2", params={"M": 8, "efConstruction": 40})
    client.create_collection("flattened", schema=schema, index_params=params)
    client.insert("flattened", [{"row": i, "vector": np.random.default_rng(i).normal(size=8).tolist()} for i in range(100)])
    client.flush("flattened")
    with pytest.raises(UserError, match="not the HNSW"):
        milvus_archive.built_index(client, "flattened", "HNSW", {"M": 8, "efConstruction": 40}, progress=False)


def test_every_script_that_reads_the_archive_opens_it_in_milvus(archives, trained_checkpoint, synthetic_root, tmp_path):
    """Issue 21: --backend/--uri/--collection on evaluate, gradcam and generate_reports too (one way to open the
    archive, pneumo.archive.ArchiveSource): the Task 2 report's similar cases come from the Milvus collection."""
    from task1 import evaluate, gradcam
    from task2 import generate_reports
    milvus = ["--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--device", "cpu", "--backend", "milvus",
              "--uri", archives / "lite.db"]
    result = run_cli(generate_reports, *milvus, "--indices", "0", "1", "--vlm", "none", "--out", tmp_path / "r")
    assert result.returncode == 0, error_line(result)
    assert "no similar cases" not in result.stdout
    records = [json.loads(line) for line in (tmp_path / "r" / "reports.jsonl").read_text().splitlines()]
    assert all(len(r["classifier"]["neighbours"]) == 5 and r["classifier"]["metric"] == "l2" for r in records)
    film = a_film(synthetic_root, tmp_path)
    for script in (evaluate, gradcam):  # evaluate screens image files only
        result = run_cli(script, *milvus, "--images", film, "--out", tmp_path / script.__name__.split(".")[-1])
        assert result.returncode == 0 and "no similar cases" not in result.stdout, result.stdout[-500:]


def a_film(root, folder):
    """A synthetic test film as a 112-px PNG (a 28-px file would be flagged too small)."""
    from PIL import Image
    path = folder / "film.png"
    Image.fromarray(load_split(root, "test", 28)[0][0]).resize((112, 112)).save(path)
    return path


def test_a_stale_archive_is_a_note_where_it_is_an_extra_and_an_error_where_it_is_the_input(trained_checkpoint,
                                                                                       synthetic_root, tmp_path):
    """The one policy (pneumo.archive.open_optional): the shipped archive was built from another checkpoint than
    the test's; generate_reports, evaluate and gradcam go on without similar cases and the screen, saying why;
    query.py, whose input it is, refuses."""
    from task1 import evaluate, gradcam
    from task2 import generate_reports
    stale = ["--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--device", "cpu",
             "--index", "models/task3_index.faiss"]
    film = a_film(synthetic_root, tmp_path)
    for script, extra in ((generate_reports, ["--vlm", "none", "--indices", "0"]), (evaluate, ["--images", film]),
                          (gradcam, ["--images", film])):
        result = run_cli(script, *stale, *extra, "--out", tmp_path / script.__name__.split(".")[-1])
        assert result.returncode == 0, error_line(result)
        assert "note: no similar cases and no out-of-distribution screen" in result.stdout
        assert "another checkpoint" in result.stdout
    refused = run_cli(query, *stale, "--indices", "0", "--out", tmp_path / "q")
    assert refused.returncode == 1 and "another checkpoint" in error_line(refused)


def test_milvus_ivf_depth_is_chosen_for_the_recall_target_recorded_and_read_back(trained_checkpoint, synthetic_root, tmp_path):
    """Issue 36: build_index.py --backend milvus with an IVF index chooses nprobe for --recall_target on the
    archive's own rows, as the FAISS path does, stores it with the metadata, and query time reads it back.
    (Milvus Lite finds every neighbour of this small archive at nprobe 1; the choice itself is tested on a
    search whose recall grows with depth, tests/test_search_depth.py.)"""
    uri = str(tmp_path / "ivf.db")
    common = ["--checkpoint", str(trained_checkpoint), "--data_root", str(synthetic_root), "--device", "cpu",
              "--backend", "milvus", "--uri", uri, "--index_type", "ivf", "--nlist", "8", "--nprobe", "4"]
    result = run_cli(build_index, *common, "--recall_target", "0.99")
    assert result.returncode == 0, result.stderr
    clf = Classifier.load(trained_checkpoint)
    index, meta = ArchiveSource("milvus", None, uri, "task3_archive").open(clf.sha256, EMBEDDING_DIM)
    chosen = meta.build["search"]
    assert chosen["recall_target"] == 0.99 and chosen["met"] and chosen["recall"] >= 0.99 and chosen["queries"] == 352
    assert meta.build["nprobe"] == chosen["nprobe"] != 4  # the depth the target needs, not the --nprobe asked
    assert milvus_archive.search_params(meta)["params"] == {"nprobe": chosen["nprobe"]}
    assert f"search depth nprobe {chosen['nprobe']}:" in result.stdout
