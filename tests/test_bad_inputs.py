"""The battery: every bad input a careless or unlucky user can give, through every script that accepts
it, in this process. Each must end in exit 1 (our one-line error) or 2 (argparse's usage), and write
nothing: no output folder, no changed file in the repository's published results."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, error_line, files_under, run_cli
from pneumo.atomic import save_torch_atomic
from pneumo.retrieval import build_index, save_index
from task1 import evaluate, gradcam, train
from task2 import generate_reports
from task3 import build_index as build_cli
from task3 import query

CHECKPOINT_READERS = {"evaluate": evaluate, "gradcam": gradcam, "build_index": build_cli, "query": query,
                      "generate_reports": generate_reports}
IMAGE_READERS = {"evaluate": evaluate, "gradcam": gradcam, "query": query, "generate_reports": generate_reports}
PUBLISHED = [REPO / "models", REPO / "reports", REPO / "experiments" / "results"]


@pytest.fixture(scope="module")
def published_before():
    before = [files_under(folder) for folder in PUBLISHED]
    yield
    assert [files_under(folder) for folder in PUBLISHED] == before, "a bad input changed the published results"


@pytest.fixture(scope="module")
def bad(trained_checkpoint, synthetic_root, tmp_path_factory, published_before):
    """Bad files of every kind, and a good archive for the scripts that need one."""
    folder = tmp_path_factory.mktemp("bad")
    blob = trained_checkpoint.read_bytes()
    damaged = bytearray(blob)
    damaged[len(blob) // 2: len(blob) // 2 + 4096] = os.urandom(4096)
    (folder / "damaged.pth").write_bytes(bytes(damaged))
    payload = torch.load(trained_checkpoint, weights_only=True)
    payload["state_dict"]["fc.weight"][0, 0] = float("nan")
    save_torch_atomic(payload, folder / "nan.pth")
    (folder / "notes.pth").write_text("this is a text file, not a checkpoint\n")
    (folder / "random.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    Image.new("L", (120, 120), 90).save(folder / "big.png")  # a "bomb" once the pixel limit is lowered
    (folder / "a_folder.png").mkdir()
    (folder / "a_file").write_text("keep me")
    index = folder / "index" / "task3_index.faiss"
    build_cli.main(build_cli.parse_args(["--checkpoint", str(trained_checkpoint), "--data_root", str(synthetic_root),
                                         "--out", str(index), "--device", "cpu"]))
    return folder


def common(name, trained_checkpoint, synthetic_root, bad, out):
    args = ["--data_root", synthetic_root, "--device", "cpu"]
    if name != "train":
        args += ["--checkpoint", trained_checkpoint]
    if name in ("query", "generate_reports"):
        args += ["--index", bad / "index"]
    if name == "build_index":
        return args + ["--out", out / "index.faiss"]
    return args + ["--out", out]


def refused(module, args, code, message, out):
    result = run_cli(module, *args)
    assert result.returncode == code, (module.__name__, args, result.stderr[-500:])
    if code == 1:
        assert message in error_line(result), (module.__name__, result.stderr)
    else:
        assert message in result.stderr, (module.__name__, result.stderr)
    assert not out.exists(), f"{module.__name__} wrote {out} although it refused the input"


@pytest.mark.parametrize("kind,message", [
    ("damaged.pth", "is damaged: record"), ("nan.pth", "non-finite weights"),
    ("notes.pth", "not a readable checkpoint"), ("random.pth", "not a readable checkpoint"),
    ("absent.pth", "not found")])
@pytest.mark.parametrize("name", list(CHECKPOINT_READERS))
def test_bad_checkpoints(name, kind, message, trained_checkpoint, synthetic_root, bad, tmp_path):
    out = tmp_path / "out"
    args = [a if a != trained_checkpoint else bad / kind
            for a in common(name, trained_checkpoint, synthetic_root, bad, out)]
    refused(CHECKPOINT_READERS[name], args, 1, message, out)


@pytest.mark.parametrize("kind,message", [
    ("empty.png", "not a readable image"), ("text.png", "not a readable image"), ("a_folder.png", "not a readable image"),
    ("absent.png", "does not exist"), ("big.png", "more pixels than is safe")])
@pytest.mark.parametrize("name", list(IMAGE_READERS))
def test_bad_image_files(name, kind, message, trained_checkpoint, synthetic_root, bad, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 120 x 120 > 2 x 1000: PIL's decompression-bomb error
    out = tmp_path / "out"
    args = common(name, trained_checkpoint, synthetic_root, bad, out) + ["--images", bad / kind]
    refused(IMAGE_READERS[name], args, 1, message, out)


FLAG_CASES = [
    (["--batch_size", "0"], ["evaluate", "gradcam", "build_index", "query", "generate_reports"], 2, "must be at least 1"),
    (["--device", "bogus"], ["evaluate", "gradcam", "build_index", "query", "generate_reports", "train"], 2, "bogus"),
    (["--indices", "0", "500"], ["evaluate", "gradcam", "query", "generate_reports"], 1, "out of range"),
    (["--size", "64"], ["evaluate", "gradcam", "build_index", "query", "generate_reports"], 1, "reads 28 px images"),
    (["--hnsw_m", "0"], ["build_index"], 2, "must be at least 1"),
    (["--limit", "0", "--faithfulness"], ["gradcam"], 2, "must be at least 1"),
    (["--k", "100000"], ["query"], 1, "larger than the archive"),
    (["--warmup_epochs", "3", "--epochs", "2"], ["train"], 2, "lower it"),
]


@pytest.mark.parametrize("flags,names,code,message", FLAG_CASES)
def test_bad_flags(flags, names, code, message, trained_checkpoint, synthetic_root, bad, tmp_path):
    scripts = {**CHECKPOINT_READERS, "train": train}
    for name in names:
        out = tmp_path / name
        refused(scripts[name], common(name, trained_checkpoint, synthetic_root, bad, out) + flags, code, message, out)


def test_a_one_epoch_run_is_not_refused():
    args = train.parse_args(["--epochs", "1"])
    assert args.warmup_epochs == pytest.approx(0.2)


@pytest.mark.parametrize("name", ["evaluate", "gradcam", "query", "generate_reports", "build_index", "train"])
def test_output_locations_that_cannot_be_written_are_refused_before_work(name, trained_checkpoint, synthetic_root,
                                                                          bad, tmp_path):
    module = {**CHECKPOINT_READERS, "train": train}[name]
    if name in ("build_index", "train"):  # they write one file at --out
        targets = {bad / "a_folder.png": "is a folder", bad / "a_file" / "m.pth": "is a file, not a folder",
                   Path("/proc/pneumo_out/m.pth"): "does not accept new files"}
    else:  # they write into the folder --out
        targets = {bad / "a_file": "is a file, not a folder", bad / "a_file" / "below": "is a file, not a folder",
                   Path("/proc/pneumo_out"): "does not accept new files"}
    for target, message in targets.items():
        args = common(name, trained_checkpoint, synthetic_root, bad, tmp_path)
        args[args.index("--out") + 1] = target
        result = run_cli(module, *args)
        assert result.returncode == 1 and message in error_line(result), (name, target, result.stderr)
    assert (bad / "a_file").read_text() == "keep me" and not list(tmp_path.iterdir())


def test_an_index_pair_that_does_not_belong_together_is_refused(trained_checkpoint, synthetic_root, bad, tmp_path):
    import json
    good = bad / "index" / "task3_index.faiss"
    meta = json.loads(good.with_suffix(".json").read_text())
    broken = {}
    broken["other_dimension"] = tmp_path / "dim"
    save_index(build_index(np.eye(16, dtype=np.float32)), {**meta, "rows": meta["rows"][:16]},
               broken["other_dimension"] / "task3_index.faiss")
    broken["half_replaced"] = tmp_path / "half"
    shutil.copytree(good.parent, broken["half_replaced"])
    save_index(build_index(np.ones((len(meta["rows"]), 512), np.float32), metric="cosine"), meta,
               tmp_path / "cosine" / "task3_index.faiss")
    shutil.copy(tmp_path / "cosine" / "task3_index.faiss", broken["half_replaced"] / "task3_index.faiss")
    broken["no_digest"] = tmp_path / "old"
    shutil.copytree(good.parent, broken["no_digest"])
    old = {k: v for k, v in meta.items() if k != "index_sha256"}
    (broken["no_digest"] / "task3_index.json").write_text(json.dumps(old))
    messages = {"other_dimension": "16-d vectors", "half_replaced": "does not match its metadata",
                "no_digest": "records no digest"}
    for kind, folder in broken.items():
        out = tmp_path / f"out_{kind}"
        result = run_cli(query, "--checkpoint", trained_checkpoint, "--index", folder, "--data_root", synthetic_root,
                         "--out", out, "--device", "cpu")
        assert result.returncode == 1 and messages[kind] in error_line(result), (kind, result.stderr)
        assert not out.exists()


def test_a_killed_writers_temp_file_is_cleaned_and_a_live_ones_kept(tmp_path):
    from pneumo.atomic import write_json_atomic
    dead = tmp_path / ".result.json.999999999.abc.tmp"  # no process has this id
    live = tmp_path / f".result.json.{os.getpid()}.xyz.tmp"
    dead.write_text("half")
    live.write_text("in progress")
    write_json_atomic(tmp_path / "result.json", {"ok": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "result.json"])


def test_user_file_paths_are_not_recorded_as_typed(trained_checkpoint, synthetic_root, bad, tmp_path):
    import json
    patient = tmp_path / "Jane Doe 1984-02-03"
    patient.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 90), dtype=np.uint8)).save(patient / "film.png")
    for record, expected in (("relative", "film.png"), ("digest", "sha256:")):
        out = tmp_path / record
        result = run_cli(query, "--checkpoint", trained_checkpoint, "--index", bad / "index", "--data_root",
                         synthetic_root, "--images", patient / "film.png", "--record_names", record, "--out", out,
                         "--device", "cpu", "--k", "3")
        assert result.returncode == 0, result.stderr
        written = (out / "task3_query_results.json").read_text()
        assert "Jane Doe" not in written and "Jane Doe" not in result.stdout
        assert json.loads(written)["queries"][0]["query"].startswith(expected)
