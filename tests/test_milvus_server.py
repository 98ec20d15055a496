"""The archive on a real Milvus server (issue 21): the server binary PyPI's `milvus` package ships (Milvus 2.3,
its C++ engine), started by this module on 127.0.0.1 with a temporary data folder and stopped and removed
after. The same client code as for Milvus Lite and for a current Milvus Standalone: same neighbours as FAISS
flat, the index read back is the one asked for, a stale checkpoint refused, an interrupted build leaves the
old collection answering. Slow (a server start is about 10 s): the quick run skips it, scripts/test.sh and
CI run it."""

import numpy as np
import pytest

from conftest import error_line, interrupt_milvus_build, require_milvus_server, run_cli
from pneumo.archive import ArchiveSource
from pneumo.classifier import Classifier
from pneumo.data import load_split
from pneumo.milvus_archive import local_server
from pneumo.model import EMBEDDING_DIM
from pneumo.retrieval import IndexSpec, search
from pneumo.runtime import UserError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    require_milvus_server()
    with local_server() as (uri, _):
        yield uri


@pytest.fixture(scope="module")
def archives(server, trained_checkpoint, synthetic_root, tmp_path_factory):
    """The synthetic archive built from one checkpoint as a FAISS flat file and on the server: exact, and HNSW
    with M = 8 (not the engine's default 16)."""
    from task3 import build_index
    folder = tmp_path_factory.mktemp("server")
    common = ["--checkpoint", str(trained_checkpoint), "--data_root", str(synthetic_root), "--device", "cpu"]
    build_index.main(build_index.parse_args([*common, "--out", str(folder / "flat.faiss")]))
    build_index.main(build_index.parse_args([*common, "--backend", "milvus", "--uri", server]))
    build_index.main(build_index.parse_args([*common, "--backend", "milvus", "--uri", server, "--collection", "graph",
                                             "--index_type", "hnsw", "--hnsw_m", "8"]))
    return folder


def hits(source, checkpoint, root, k=5):
    clf = Classifier.load(checkpoint)
    index, meta = source.open(clf.sha256, EMBEDDING_DIM, root)
    return search(index, meta, clf.embed(load_split(root, "test", 28)[0]), k), meta


def test_the_server_gives_faiss_flats_neighbours(server, archives, trained_checkpoint, synthetic_root):
    faiss_hits, faiss_meta = hits(ArchiveSource(index=archives / "flat.faiss"), trained_checkpoint, synthetic_root)
    server_hits, server_meta = hits(ArchiveSource("milvus", uri=server, collection="task3_archive"), trained_checkpoint,
                                    synthetic_root)
    assert len(server_hits) == 96
    same = [all(a["row"] == b["row"] or abs(a["score"] - b["score"]) < 1e-3 for a, b in zip(x, y))
            for x, y in zip(faiss_hits, server_hits)]
    assert all(same)
    assert np.allclose([h["score"] for q in faiss_hits for h in q], [h["score"] for q in server_hits for h in q], atol=1e-3)
    assert server_meta.rows == faiss_meta.rows and server_meta.build["engine_index"]["index_type"] == "FLAT"


def test_the_server_built_the_index_asked(server, archives, trained_checkpoint, synthetic_root):
    from pneumo import milvus_archive
    described = milvus_archive.connect(server).describe_index("graph", index_name="vector")
    asked = {"M": 8, "efConstruction": IndexSpec().ef_construction}  # the flag given, and the project's default
    read = described.get("params") or {k: described[k] for k in asked}
    assert described["index_type"] == "HNSW" and {k: int(v) for k, v in read.items() if k in asked} == asked
    graph_hits, meta = hits(ArchiveSource("milvus", uri=server, collection="graph"), trained_checkpoint, synthetic_root)
    assert meta.build["engine_index"] == {"index_type": "HNSW", "params": asked}
    exact, _ = hits(ArchiveSource(index=archives / "flat.faiss"), trained_checkpoint, synthetic_root)
    recall = np.mean([len({h["row"] for h in a} & {h["row"] for h in b}) / 5 for a, b in zip(graph_hits, exact)])
    assert recall >= 0.9


def test_a_stale_checkpoint_is_refused_by_the_server_archive(server, archives, synthetic_root, tmp_path):
    from pneumo import milvus_archive
    from task3 import query
    other = Classifier.load("models/task1_model.pth")
    with pytest.raises(UserError, match="built from another checkpoint"):
        milvus_archive.load_milvus(server, "task3_archive", other.sha256, EMBEDDING_DIM)
    result = run_cli(query, "--backend", "milvus", "--uri", server, "--data_root", synthetic_root, "--out", tmp_path)
    assert result.returncode == 1 and "built from another checkpoint" in error_line(result)


def test_an_interrupted_build_leaves_the_old_collection_answering(server, archives, trained_checkpoint, synthetic_root,
                                                                  monkeypatch):
    from pneumo import milvus_archive
    before = milvus_archive.connect(server).describe_collection("task3_archive")["properties"]["meta"]
    client, calls = interrupt_milvus_build(monkeypatch, server, trained_checkpoint, synthetic_root)
    assert calls == [1, 1]
    assert sorted(client.list_collections()) == ["graph", "task3_archive"]  # no half-built collection left behind
    assert client.describe_collection("task3_archive")["properties"]["meta"] == before
    server_hits, _ = hits(ArchiveSource("milvus", uri=server, collection="task3_archive"), trained_checkpoint, synthetic_root)
    assert len(server_hits) == 96 and all(len(h) == 5 for h in server_hits)


def test_a_second_local_server_is_refused_in_one_line_while_one_runs(server):
    """The PyPI build's embedded etcd always takes 127.0.0.1:2380: a second server would hang for three
    minutes and die; it is refused at once instead."""
    import time
    start = time.monotonic()
    with pytest.raises(UserError, match="already running"):
        with local_server():
            pass
    assert time.monotonic() - start < 5
