"""The package pieces every script shares: the classifier object, the flag vocabulary, the writer."""
import json

import numpy as np
import pytest

from pneumo.atomic import atomic_path, write_json_atomic
from pneumo.classifier import Classifier
from pneumo.data import load_split
from pneumo.runtime import UserError
from task1 import evaluate, gradcam, train
from task2 import generate_reports
from task3 import build_index, query

SCRIPTS = {"train": train, "evaluate": evaluate, "gradcam": gradcam, "generate_reports": generate_reports,
           "build_index": build_index, "query": query}


def test_classifier_decides_strictly_above_its_stored_threshold(trained_checkpoint, synthetic_root):
    clf = Classifier.load(trained_checkpoint)
    t = clf.threshold
    assert clf.decide([t - 1e-6, t, t + 1e-6]).tolist() == [0, 0, 1]  # medmnist's rule: P > threshold
    assert [clf.label(p) for p in (t, t + 1e-6)] == ["normal", "pneumonia"]
    images, _ = load_split(synthetic_root, "val")
    assert clf.image_size == 28 and clf.embed(images[:3]).shape == (3, 512)
    maps, targets = clf.gradcam(images[:3], target_classes=[1, 1, 1])
    assert maps.shape == (3, 28, 28) and targets.tolist() == [1, 1, 1]


@pytest.mark.parametrize("name", ["evaluate", "gradcam", "generate_reports", "query"])
def test_every_script_that_takes_cases_refuses_indices_and_images_together(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        SCRIPTS[name].parse_args(["--indices", "1", "--images", "x.png"])
    assert exit_.value.code == 2 and "not both" in capsys.readouterr().err


def test_shared_flags_mean_the_same_in_every_script(monkeypatch, tmp_path):
    monkeypatch.setenv("PNEUMONIA_DATA_ROOT", str(tmp_path))
    for name, script in SCRIPTS.items():
        args = script.parse_args(["--device", "cpu"])
        assert args.data_root == str(tmp_path), name  # the environment variable counts everywhere
        if hasattr(args, "checkpoint"):
            assert args.checkpoint == "models/task1_model.pth", name
        if hasattr(args, "indices"):
            assert script.parse_args(["--indices", "3", "4"]).indices == [3, 4], name


def test_writer_replaces_whole_files_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out" / "result.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"b": object()})  # fails half-way: the old file must stay whole
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's private 0600
    with atomic_path(target) as first, atomic_path(target) as second:  # two writers of one file
        assert first != second
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1" and [p.name for p in target.parent.iterdir()] == ["result.json"]
    (tmp_path / "a_file").write_text("keep")
    with pytest.raises(UserError, match="is a file, not a folder"):
        write_json_atomic(tmp_path / "a_file" / "x.json", {})
    assert (tmp_path / "a_file").read_text() == "keep"


def test_gradcam_maps_do_not_depend_on_the_batch_size(trained_checkpoint, synthetic_root):
    clf = Classifier.load(trained_checkpoint)
    images, labels = load_split(synthetic_root, "test")
    one, _ = clf.gradcam(images[:12], target_classes=labels[:12], batch_size=12)
    split, _ = clf.gradcam(images[:12], target_classes=labels[:12], batch_size=5)
    assert np.allclose(one, split, atol=1e-5)


def test_a_run_folder_stands_for_its_checkpoint_and_index(trained_checkpoint, synthetic_root, tmp_path):
    import shutil
    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    shutil.copy(trained_checkpoint, run / "task1_model.pth")
    clf = Classifier.load(run)
    assert clf.meta["path"] == str(run / "task1_model.pth")
    result = build_index.main(build_index.parse_args(["--checkpoint", str(run), "--data_root", str(synthetic_root),
                                                      "--out", str(run / "task3_index.faiss"), "--device", "cpu"]))
    assert result is None and (run / "task3_index.json").exists()
    records = query.main(query.parse_args(["--checkpoint", str(run), "--index", str(run), "--data_root",
                                           str(synthetic_root), "--out", str(run), "--indices", "1", "--device", "cpu"]))
    assert len(records[0]["neighbours"]) == 5 and (run / "task3_query_results.json").exists()


def test_outputs_go_to_an_ignored_run_folder_by_default():
    from pathlib import Path
    ignored = (Path(__file__).resolve().parent.parent / ".gitignore").read_text().split()
    assert "runs/" in ignored
    assert str(train.parse_args([]).out).startswith("runs/") and str(train.parse_args([]).reports).startswith("runs/")
    assert str(build_index.parse_args([]).out).startswith("runs/")
    for script in (evaluate, gradcam, query, generate_reports):
        assert str(script.parse_args([]).out).startswith("runs/"), script.__name__
    # while what they read by default is the shipped checkpoint and index
    assert query.parse_args([]).checkpoint == "models/task1_model.pth"
    assert str(query.parse_args([]).index) == "models/task3_index.faiss"


def test_files_in_a_class_named_folder_carry_that_label(tmp_path):
    from PIL import Image

    from pneumo.pictures import load_inputs
    paths = []
    for folder in ("normal", "Pneumonia", "mine"):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "film.png")
        Image.new("L", (40, 30), 100).save(paths[-1])
    _, labels, names, keys = load_inputs(paths, None, tmp_path, "test", 28)
    assert labels == ["normal", "pneumonia", None] and keys == [None] * 3


def test_a_case_and_its_classifier_block_go_to_json_and_back(trained_checkpoint, synthetic_root):
    from pneumo.cases import Case, ClassifierBlock, add_classifier_blocks
    images, _ = load_split(synthetic_root, "test")
    case = Case("test #4", images[4], "pneumonia", ("test", 4))
    add_classifier_blocks(Classifier.load(trained_checkpoint), [case])
    assert isinstance(case.classifier, ClassifierBlock) and case.classifier.neighbours is None
    written = json.loads(json.dumps(case.to_json()))  # what a results file holds
    back = Case.from_json(written, small=case.small)
    assert back.classifier == case.classifier and (back.name, back.label, back.key) == ("test #4", "pneumonia", ("test", 4))
    assert set(written) == {"image", "label", "key", "classifier"} and "small" not in json.dumps(written)


def test_the_index_spec_and_the_archive_source_read_the_scripts_flags(tmp_path):
    from pneumo.archive import ArchiveSource
    from pneumo.retrieval import IndexSpec
    args = build_index.parse_args(["--index_type", "ivf", "--metric", "cosine", "--nlist", "7", "--nprobe", "3",
                                   "--backend", "milvus", "--uri", str(tmp_path / "a.db"), "--collection", "other"])
    assert IndexSpec.from_args(args) == IndexSpec("ivf", "cosine", nlist=7, nprobe=3, recall_target=0.95)  # the default target
    source = ArchiveSource.from_args(args, index=args.out)
    assert (source.backend, source.uri, source.collection) == ("milvus", str(tmp_path / "a.db"), "other")
    assert source.describe() == f"milvus {tmp_path / 'a.db'} (other)"
    with pytest.raises(ValueError, match="unknown index type"):
        IndexSpec("annoy")
