"""benchmarks/task3_backends.py on a small archive, on FAISS, Milvus Lite and a Milvus server the benchmark
starts itself. Its own module: only one local server can run on a machine, and test_milvus_server.py's is
stopped when that module ends. Slow: the quick run skips it, scripts/test.sh and CI run it."""
import json

import pytest

pytestmark = pytest.mark.slow


def test_the_backend_benchmark_builds_what_it_reports_on_all_three_engines(tmp_path):
    """benchmarks/task3_backends.py on a small archive: every row's index is the one read back from its
    engine with the asked parameters, and exact search is exact on each."""
    from conftest import require_milvus_server, run_script
    require_milvus_server()
    result = run_script("benchmarks/task3_backends.py", "--sizes", "3000", "--hnsw_max", "3000", "--single", "30",
                        "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "benchmark_task3_backends.json").read_text())["rows"]
    assert [(r["backend"], r["index"].split()[0]) for r in rows] == [
        (b, kind) for kind in ("flat", "ivf", "hnsw") for b in ("faiss", "milvus-lite", "milvus-server")]
    expected = {"flat": "FLAT {}", "ivf": 'IVF_FLAT {"nlist": 76}', "hnsw": 'HNSW {"M": 32, "efConstruction": 80}'}
    for row in rows:
        assert row["built"] == expected[row["index"].split()[0]], row
        assert row["recall@10"] == 1.0 or row["index"] != "flat", row
        assert row["recall@10"] >= 0.9, row
