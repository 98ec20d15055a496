import json
import os
import subprocess
import sys

import pytest
import torch

from pneumo.checkpoint import load_checkpoint
from pneumo.data import NORMALIZATION, load_split
from pneumo.inference import predict_proba
from pneumo.metrics import binary_metrics
from conftest import FAST_TRAIN, REPO, run_script
from task1 import train


def train_args(root, out, *extra):
    return train.parse_args([*FAST_TRAIN, "--data_root", str(root), "--out", str(out),
                             "--reports", str(out.parent / "reports"), *extra])


@pytest.fixture
def reference_run(trained_checkpoint):
    return trained_checkpoint


def test_short_training_really_learns(reference_run, synthetic_root):
    model, meta = load_checkpoint(reference_run)
    images, labels = load_split(synthetic_root, "test")
    test_auc = binary_metrics(labels, predict_proba(model, images, NORMALIZATION))["auc"]
    assert meta["val_metrics"]["at_0.5"]["auc"] > 0.9 and test_auc > 0.9
    assert 0.0 < meta["threshold"] < 1.0


def test_run_records_history_curves_and_provenance(reference_run):
    history = json.loads(reference_run.with_name("model_history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert [e["weights"] for e in history["epochs"]] == ["raw", "ema", "ema"]  # the average starts after warm-up
    assert history["best_epoch"] == max(history["epochs"], key=lambda e: e["val_auc"])["epoch"]
    assert (reference_run.parent / "reports" / "figures" / "task1_training_curves.png").stat().st_size > 10_000
    _, meta = load_checkpoint(reference_run)
    assert meta["train_args"]["seed"] == 0 and len(meta["data_sha256"]) == 64
    assert not reference_run.with_name("model.resume.pth").exists()


def test_same_seed_gives_the_same_weights(reference_run, synthetic_root, tmp_path):
    train.main(train_args(synthetic_root, tmp_path / "again.pth"))
    a = torch.load(reference_run, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "again.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupted_training_resumes_to_the_same_result(reference_run, synthetic_root, tmp_path, monkeypatch):
    out = tmp_path / "model.pth"
    real_epoch = train.train_one_epoch
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(train, "train_one_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train.main(train_args(synthetic_root, out))
    assert not out.exists() and out.with_name("model.resume.pth").exists()

    monkeypatch.setattr(train, "train_one_epoch", real_epoch)
    train.main(train_args(synthetic_root, out, "--resume"))
    a = torch.load(reference_run, weights_only=True)["state_dict"]
    b = torch.load(out, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads(out.with_name("model_history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]


def test_balanced_class_weights_give_each_class_half_the_loss():
    labels = torch.tensor([0] * 10 + [1] * 30)
    weights = train.balanced_class_weights(labels)
    assert torch.allclose(weights * torch.bincount(labels), torch.tensor([20.0, 20.0]))
    with pytest.raises(train.UserError, match="both classes"):
        train.balanced_class_weights(torch.ones(8, dtype=torch.long))


def test_resume_with_other_settings_is_refused(synthetic_root, tmp_path):
    out = tmp_path / "model.pth"
    out.with_name("model.resume.pth").write_bytes(b"")
    result = run_script("task1/train.py", *FAST_TRAIN, "--data_root", synthetic_root, "--out", out, "--resume")
    assert result.returncode == 1 and result.stderr.strip().startswith("error:")
    missing = run_script("task1/train.py", "--data_root", synthetic_root, "--out", tmp_path / "x.pth", "--resume")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_bad_flags_and_missing_data_fail_in_one_line(tmp_path):
    bad = run_script("task1/train.py", "--epochs", "0")
    assert bad.returncode == 2 and "--epochs must be" in bad.stderr
    corrupt = tmp_path / "pneumoniamnist.npz"
    corrupt.write_bytes(b"garbage")
    result = run_script("task1/train.py", "--data_root", tmp_path, "--out", tmp_path / "m.pth")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "not a readable .npz" in result.stderr and corrupt.read_bytes() == b"garbage"
    assert not (tmp_path / "m.pth").exists()


def test_two_process_data_parallel_run(synthetic_root, tmp_path):
    out = tmp_path / "ddp.pth"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "task1/train.py"), "--epochs", "2", "--batch_size", "32", "--device", "cpu",
           "--data_root", str(synthetic_root), "--out", str(out), "--reports", str(tmp_path)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "x2" in result.stdout
    model, meta = load_checkpoint(out)
    assert meta["epoch"] in (1, 2)
    history = json.loads(out.with_name("ddp_history.json").read_text())
    # 256 images, global batch 32 over 2 processes: 8 steps of 16 per process and epoch
    assert history["world_size"] == 2 and history["steps_per_epoch"] == 8
