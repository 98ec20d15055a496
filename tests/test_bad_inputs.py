"""The battery: every bad input a careless or unlucky user can give, through every script that accepts
it, in this process. Each must end in exit 1 (our one-line error) or 2 (argparse's usage), and write
nothing: no output folder, no changed file in the repository's published results."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, error_line, files_under, run_cli
from pneumo.atomic import save_torch_atomic
from pneumo.retrieval import ArchiveMeta, IndexSpec, build_index, save_index
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


def last_line(result) -> str:
    """What a user reads last on stderr, progress bars (which end in a carriage return) left out."""
    return result.stderr.replace("\r", "\n").strip().splitlines()[-1]


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
    ("empty.png", "not a readable image"), ("text.png", "not a readable image"), ("a_folder.png", "cannot be opened: a folder"),
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
    (["--hnsw_m", "0"], ["build_index"], 2, "must be in [2, 512]"),
    (["--hnsw_m", "1"], ["build_index"], 2, "must be in [2, 512]"),  # FAISS segfaults on M = 1
    (["--index_type", "ivf", "--nlist", "1000"], ["build_index"], 1, "too many cells"),
    (["--lr", "nan"], ["train"], 2, "finite"), (["--lr", "inf"], ["train"], 2, "finite"),
    (["--lr", "1e6"], ["train"], 2, "must be in (0, 10]"),
    (["--weight_decay", "-1"], ["train"], 2, "must be in [0, 10]"), (["--weight_decay", "nan"], ["train"], 2, "finite"),
    (["--label_smoothing", "2"], ["train"], 2, "must be in [0, 1)"),
    (["--label_smoothing", "-1"], ["train"], 2, "must be in [0, 1)"), (["--label_smoothing", "nan"], ["train"], 2, "finite"),
    (["--ema_decay", "1"], ["train"], 2, "must be in [0, 1)"),
    (["--num_workers", "-1"], ["train"], 2, "must be in [0, 64]"),
    (["--seed", "-5"], ["train", "gradcam", "evaluate", "generate_reports"], 2, "must be in [0, 4294967295]"),
    (["--amp", "fp16"], ["train"], 1, "GPUs only"),
    (["--n_bootstrap", "5"], ["evaluate"], 2, "must be in [10, 100000]"),
    (["--collection", ""], ["build_index", "query", "evaluate", "gradcam", "generate_reports"], 2, "is not a Milvus collection name"),
    (["--collection", "c" * 300], ["build_index", "query", "evaluate", "gradcam", "generate_reports"], 2, "is not a Milvus collection name"),
    (["--collection", "my-archive"], ["build_index", "query", "evaluate", "gradcam", "generate_reports"], 2, "is not a Milvus collection name"),
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
    save_index(build_index(np.eye(16, dtype=np.float32)), ArchiveMeta.from_json({**meta, "rows": meta["rows"][:16]}),
               broken["other_dimension"] / "task3_index.faiss")
    broken["half_replaced"] = tmp_path / "half"
    shutil.copytree(good.parent, broken["half_replaced"])
    save_index(build_index(np.ones((len(meta["rows"]), 512), np.float32), IndexSpec(metric="cosine")), ArchiveMeta.from_json(meta),
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


# ---- checkpoints that are intact files with wrong metadata --------------------------------------------
METADATA_CASES = [
    ("image_size", 0, "'image_size' is 0"), ("image_size", 5000, "'image_size' is 5000"),
    ("image_size", "28", "'image_size' is '28'"), ("in_channels", 3, "'in_channels' is 3"),
    ("normalization", {"mean": 0.5}, "'normalization'"), ("normalization", {"mean": 0.5, "std": 0.0}, "'normalization'"),
    ("threshold", "0.5", "'threshold' is '0.5'"), ("threshold", float("nan"), "'threshold' is nan"),
    ("class_names", ["pneumonia", "normal"], "'class_names'"), ("val_metrics", [0.9], "'val_metrics' is a list"),
    ("epoch", "3", "'epoch' is a str"), ("state_dict", [1, 2], "'state_dict' is a list"),
]


@pytest.mark.parametrize("field,value,message", METADATA_CASES)
def test_checkpoint_metadata_is_checked_against_one_schema(field, value, message, trained_checkpoint, synthetic_root,
                                                           bad, tmp_path):
    payload = torch.load(trained_checkpoint, weights_only=True)
    payload[field] = value
    save_torch_atomic(payload, tmp_path / "crafted.pth")
    for name in CHECKPOINT_READERS:
        out = tmp_path / f"out_{name}"
        args = [a if a != trained_checkpoint else tmp_path / "crafted.pth"
                for a in common(name, trained_checkpoint, synthetic_root, bad, out)]
        refused(CHECKPOINT_READERS[name], args, 1, message, out)


# ---- dataset files of the wrong shape ------------------------------------------------------------------
def rewrite_data(source_root, target_root, change):
    """A copy of the synthetic data file with change(arrays) applied."""
    with np.load(source_root / "pneumoniamnist.npz") as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    target_root.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(target_root / "pneumoniamnist.npz", **arrays)
    return target_root


def test_a_split_with_no_images_is_one_line(trained_checkpoint, synthetic_root, bad, tmp_path):
    def empty_test(arrays):
        arrays["test_images"], arrays["test_labels"] = arrays["test_images"][:0], arrays["test_labels"][:0]
    root = rewrite_data(synthetic_root, tmp_path / "empty", empty_test)
    for name in ("evaluate", "gradcam", "query", "generate_reports"):
        out = tmp_path / f"out_{name}"
        args = common(name, trained_checkpoint, root, bad, out)
        if name in ("query", "generate_reports"):  # the archive was built from the other file
            args += ["--index", bad / "index_of_empty"]
            build_cli.main(build_cli.parse_args(["--checkpoint", str(trained_checkpoint), "--data_root", str(root),
                                                 "--out", str(bad / "index_of_empty" / "task3_index.faiss"),
                                                 "--device", "cpu"]))
        refused(CHECKPOINT_READERS[name], args, 1, "the test split holds no images", out)


def test_training_on_one_class_is_one_line(synthetic_root, tmp_path):
    def normal_only(arrays):
        keep = arrays["train_labels"].ravel() == 0
        arrays["train_images"], arrays["train_labels"] = arrays["train_images"][keep], arrays["train_labels"][keep]
    root = rewrite_data(synthetic_root, tmp_path / "one_class", normal_only)
    out = tmp_path / "m" / "model.pth"
    for flags in ([], ["--class_weight", "none"]):
        refused(train, ["--data_root", root, "--device", "cpu", "--out", out, *flags], 1,
                "both classes are needed", out)


def test_an_archive_built_from_another_data_file_is_refused(trained_checkpoint, synthetic_root, bad, tmp_path):
    """The table would be right and every neighbour picture another case: the index records its data file."""
    def shuffled_train(arrays):
        order = np.random.default_rng(0).permutation(len(arrays["train_labels"]))
        arrays["train_images"], arrays["train_labels"] = arrays["train_images"][order], arrays["train_labels"][order]
    root = rewrite_data(synthetic_root, tmp_path / "shuffled", shuffled_train)
    out = tmp_path / "out_query"
    refused(query, common("query", trained_checkpoint, root, bad, out), 1, "was built from another data file", out)
    # where the archive is an extra (pneumo.archive.open_optional), the reports go on without its neighbours
    out = tmp_path / "out_generate_reports"
    result = run_cli(generate_reports, *common("generate_reports", trained_checkpoint, root, bad, out), "--vlm", "none")
    assert result.returncode == 0 and "was built from another data file" in result.stdout, result.stderr[-500:]
    records = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    assert records and all(r["classifier"]["neighbours"] is None for r in records)


def test_a_single_image_is_evaluated_without_an_interval(trained_checkpoint, synthetic_root, tmp_path):
    """Found by the random sweep: scipy's bootstrap needs two images; one image has no interval."""
    import json
    result = run_cli(evaluate, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--device", "cpu",
                     "--indices", 3, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "task1_metrics_test_subset.json").read_text())
    assert written["n"] == 1 and all(v == [None, None] for v in written["at_threshold"]["ci95"].values())  # NaN is written as null


def test_a_one_class_subset_is_evaluated_with_a_note(trained_checkpoint, synthetic_root, tmp_path):
    import json
    result = run_cli(evaluate, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--device", "cpu",
                     "--indices", 5, 5, 5, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "task1_metrics_test_subset.json").read_text())
    assert "need both classes" in written["note"] and "note:" in result.stdout
    assert [Path(f).name for f in written["figures"]] == ["task1_confusion_matrix_test_subset.png",  # need no AUC
                                                           "task1_risk_coverage_test_subset.png"]


# ---- DICOM headers real files carry ----------------------------------------------------------------------
def test_a_dicom_window_below_one_falls_back_to_the_pixel_range(trained_checkpoint, synthetic_root, bad, tmp_path):
    from test_dicom import write_dicom
    film = np.uint16(np.clip(2000 + 1500 * np.sin(np.mgrid[0:96, 0:96][1] / 9.0), 0, 4095))
    windowless = write_dicom(tmp_path / "plain.dcm", film)
    narrow = write_dicom(tmp_path / "narrow.dcm", film, window=(2000, 0))
    from pneumo.dicom import read_dicom
    assert (read_dicom(windowless) == read_dicom(narrow)).all()
    for name in IMAGE_READERS:
        out = tmp_path / f"out_{name}"
        result = run_cli(IMAGE_READERS[name], *common(name, trained_checkpoint, synthetic_root, bad, out),
                         "--images", narrow)
        assert result.returncode == 0, (name, result.stderr)
        assert "display window cannot be applied" in result.stderr and "Traceback" not in result.stderr


# ---- the archive's metadata is covered by its digest ----------------------------------------------------
def edited_archive(bad, tmp_path, edit, redigest=False):
    import json

    from pneumo.retrieval import meta_digest
    folder = tmp_path / "edited"
    shutil.copytree(bad / "index", folder)
    meta = json.loads((folder / "task3_index.json").read_text())
    edit(meta)
    if redigest:  # as if written so by a build: only the content is wrong
        meta["meta_sha256"] = meta_digest(meta)
    (folder / "task3_index.json").write_text(json.dumps(meta))
    return folder


def swap_first_labels(meta):
    for row in meta["rows"][:20]:
        row["label"] = "normal" if row["label"] == "pneumonia" else "pneumonia"


@pytest.mark.parametrize("edit,redigest,message", [
    (swap_first_labels, False, "changed after the build"),
    (lambda meta: meta["rows"].insert(0, meta["rows"].pop()), False, "changed after the build"),
    (lambda meta: meta.pop("ood"), False, "changed after the build"),
    (lambda meta: meta.pop("ood"), True, "no out-of-distribution reference"),
    (lambda meta: meta.update(ood={"metric": "l2", "threshold": 3.0, "percentile": 99.5}), True, "of an older kind"),
    (lambda meta: meta.pop("meta_sha256"), False, "records no digest of its metadata"),
])
def test_an_edited_archive_sidecar_is_refused(edit, redigest, message, trained_checkpoint, synthetic_root, bad, tmp_path):
    folder = edited_archive(bad, tmp_path, edit, redigest)
    out = tmp_path / "out"
    refused(query, ["--checkpoint", trained_checkpoint, "--index", folder, "--data_root", synthetic_root,
                    "--device", "cpu", "--out", out], 1, message, out)


# ---- Milvus files that are not Milvus Lite databases -----------------------------------------------------
def test_a_random_bytes_milvus_file_is_one_line_without_the_engines_traceback(trained_checkpoint, synthetic_root, bad,
                                                                            tmp_path):
    """In a fresh process: the engine logs its traceback through `logging`, which pytest would capture in-process."""
    from conftest import run_script
    (tmp_path / "random.db").write_bytes(np.random.default_rng(0).bytes(65536))
    out = tmp_path / "out"
    result = run_script("task3/query.py", "--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--device",
                        "cpu", "--backend", "milvus", "--uri", tmp_path / "random.db", "--out", out)
    assert result.returncode == 1 and "cannot open Milvus" in error_line(result), result.stderr
    assert "Traceback" not in result.stdout + result.stderr and not out.exists()


# ---- training that cannot have worked -----------------------------------------------------------------------
def test_a_loss_that_goes_non_finite_stops_training_in_one_line(synthetic_root):
    from pneumo.data import XrayDataset, load_split
    from pneumo.model import build_model
    from pneumo.runtime import UserError
    from pneumo.training import Trainer, train_one_epoch
    images, labels = load_split(synthetic_root, "train")
    model = build_model()
    with torch.no_grad():
        model.fc.weight.fill_(float("inf"))
    loader = torch.utils.data.DataLoader(XrayDataset(images[:32], labels[:32]), batch_size=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(UserError, match="training diverged: the loss became nan at step 1"):
        train_one_epoch(Trainer(model, optimizer, scheduler, scaler, torch.nn.CrossEntropyLoss(), torch.device("cpu")), loader)


def test_a_run_no_better_than_chance_exits_non_zero_and_keeps_its_checkpoint_aside(synthetic_root, tmp_path):
    """Every val film the same picture: the val AUC is 0.5 whatever the weights, so the run cannot pass."""
    def identical_val(arrays):
        arrays["val_images"][:] = arrays["val_images"][0]
    root = rewrite_data(synthetic_root, tmp_path / "blind_val", identical_val)
    out = tmp_path / "m" / "model.pth"
    result = run_cli(train, "--data_root", root, "--device", "cpu", "--out", out, "--epochs", "1", "--batch_size", "32",
                     "--amp", "none")
    assert result.returncode == 1 and "\nerror: TRAINING FAILED: the best val AUC is 0.500" in "\n" + last_line(result), result.stderr
    assert not out.exists() and (out.parent / "model.failed.pth").is_file()


# ---- bounded work ------------------------------------------------------------------------------------------
def test_a_large_k_draws_a_bounded_figure(trained_checkpoint, synthetic_root, bad, tmp_path):
    import json
    result = run_cli(query, "--checkpoint", trained_checkpoint, "--index", bad / "index", "--data_root", synthetic_root,
                     "--device", "cpu", "--out", tmp_path, "--k", 300, "--indices", *range(20))
    assert result.returncode == 0, result.stderr
    assert all(len(q["neighbours"]) == 300 for q in json.loads((tmp_path / "task3_query_results.json").read_text())["queries"])
    with Image.open(tmp_path / "figures" / "task3_visual_results.png") as figure:
        assert figure.width < 11 * 3.2 * 110 + 50 and figure.height < 12 * 5 * 110, figure.size


# ---- the guard for what no check foresaw ---------------------------------------------------------------------
def test_an_unexpected_exception_is_one_line_with_a_log(trained_checkpoint, synthetic_root, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug planted by the test")
    monkeypatch.setattr(evaluate, "calibration", broken)
    result = run_cli(evaluate, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--device", "cpu",
                     "--out", tmp_path / "run")
    line = last_line(result)
    assert result.returncode == 1 and line.startswith("internal error in evaluate (ZeroDivisionError)"), line
    assert "Traceback" not in result.stderr + result.stdout
    logs = list((tmp_path / "run").glob("internal_error_evaluate_*.log"))
    assert len(logs) == 1 and str(logs[0]) in line
    text = logs[0].read_text()
    assert "Traceback" in text and "a bug planted by the test" in text and "in broken" in text


@pytest.mark.slow
def test_a_random_sweep_of_bad_inputs_ends_in_no_traceback(tmp_path):
    """benchmarks/bad_input_sweep.py, shortened: random flag values and random-byte files through every script."""
    import json

    from conftest import run_script
    # A fixed number of runs, each stopped after 20 s (training's MedMNIST-C pass on val alone takes ~50 s on
    # a 2-core box): how many runs fit in a time budget is a timing, and it failed CI on a loaded machine.
    result = run_script("benchmarks/bad_input_sweep.py", "--runs", "30", "--seconds", "3600", "--run_seconds", "20",
                        "--seed", "1", "--out", tmp_path, timeout=1500)
    summary = json.loads((tmp_path / "bad_input_sweep.json").read_text())
    assert result.returncode == 0 and summary["failed"] == 0, summary["failures"]
    assert summary["runs"] == 30 and "Traceback" not in result.stdout + result.stderr


def test_a_milvus_file_held_by_another_process_is_one_line(trained_checkpoint, synthetic_root, tmp_path):
    from pymilvus import MilvusClient

    from conftest import run_script
    db = tmp_path / "archive.db"
    built = run_cli(build_cli, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--device", "cpu",
                    "--backend", "milvus", "--uri", db)
    assert built.returncode == 0, built.stderr
    holder = MilvusClient(uri=str(db))  # this process holds the database open
    try:
        out = tmp_path / "out"
        result = run_script("task3/query.py", "--checkpoint", trained_checkpoint, "--data_root", synthetic_root,
                            "--device", "cpu", "--backend", "milvus", "--uri", db, "--out", out)
        assert result.returncode == 1 and "no other process holds open" in error_line(result), result.stderr
        assert "Traceback" not in result.stdout + result.stderr and not out.exists()
    finally:
        holder.close()
