import numpy as np
import pytest

from experiments import retrieval_head
from pneumo.classifier import Classifier
from pneumo.data import load_split


def test_precision_at_k_counts_same_label_neighbours_per_class():
    archive = np.array([[0.0], [0.1], [0.2], [1.0], [1.1]])
    labels = np.array([0, 0, 1, 1, 1])
    queries, query_labels = np.array([[0.05], [1.05]]), np.array([0, 1])
    p = retrieval_head.precision_at_k(archive, labels, queries, query_labels, k=3)
    # query 0 (normal): neighbours 0, 1 (normal), 2 (pneumonia) -> 2/3; query 1: 3, 4, 2 all pneumonia -> 1
    assert p["normal"] == pytest.approx(2 / 3) and p["pneumonia"] == 1.0 and p["overall"] == pytest.approx(5 / 6)


def test_plan_chooses_the_head_only_past_the_spread():
    def run(raw, nca):
        return {"val": {"embedding": {"overall": raw}, "nca": {"overall": nca}}}
    assert retrieval_head.chosen([run(0.97, 0.98), run(0.97, 0.98)]) == "nca"
    assert retrieval_head.chosen([run(0.97, 0.99), run(0.97, 0.96)]) == "embedding"  # +0.005 mean, sd 0.021
    assert retrieval_head.chosen([run(0.97, 0.97), run(0.97, 0.97)]) == "embedding"


def test_a_head_wider_than_the_embedding_is_refused_by_the_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        retrieval_head.parse_args(["--checkpoints", "a.pth", "--components", "513"])
    assert exit_.value.code == 2 and "--components" in capsys.readouterr().err


def test_study_scores_the_embedding_as_a_brute_force_search_does(trained_checkpoint, synthetic_root, tmp_path):
    result = retrieval_head.main(retrieval_head.parse_args([
        "--checkpoints", str(trained_checkpoint), "--data_root", str(synthetic_root), "--device", "cpu",
        "--components", "4", "--max_iter", "5", "--read_test", "--out", str(tmp_path)]))
    clf = Classifier.load(trained_checkpoint)
    (train, y_train), (val, y_val) = (load_split(synthetic_root, s) for s in ("train", "val"))
    a, q = clf.embed(train), clf.embed(val)
    nearest = np.argsort(((q[:, None, :] - a[None]) ** 2).sum(-1), axis=1)[:, :5]
    run = result["runs"][0]
    assert run["val"]["embedding"]["overall"] == pytest.approx((y_train[nearest] == y_val[:, None]).mean())
    assert set(run["test"]) == {"embedding", "nca"} and result["chosen"] in ("embedding", "nca")
    assert "| test | nca |" in (tmp_path / "retrieval_head.md").read_text()
