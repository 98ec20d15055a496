import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import FAST_TRAIN, REPO, error_line, files_under, run_cli
from pneumo.classifier import Classifier
from pneumo.data import load_split
from pneumo.metrics import binary_metrics
from pneumo.runtime import UserError
from pneumo.training import balanced_class_weights
from task1 import train


def train_args(root, out, *extra):
    return [*FAST_TRAIN, "--data_root", root, "--out", out, "--reports", out.parent / "reports", *extra]


def test_short_training_really_learns(trained_checkpoint, synthetic_root):
    """AUC alone is blind to a model that calls everything pneumonia: the decisions must beat the
    majority class, at the stored threshold and at 0.5, and the probabilities must spread."""
    clf = Classifier.load(trained_checkpoint)
    for split in ("val", "test"):
        images, labels = load_split(synthetic_root, split)
        probs = clf.predict_proba(images)
        majority = max(labels.mean(), 1 - labels.mean())
        assert binary_metrics(labels, probs)["auc"] > 0.95, split
        for threshold in (clf.threshold, 0.5):
            assert binary_metrics(labels, probs, threshold)["accuracy"] > majority + 0.25, (split, threshold)
        assert probs[labels == 0].mean() < 0.4 and probs[labels == 1].mean() > 0.6, split
    assert 0.05 < clf.threshold < 0.95


def test_run_records_history_curves_and_provenance(trained_checkpoint):
    history = json.loads(trained_checkpoint.with_name("model_history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert [e["weights"] for e in history["epochs"]] == ["raw", "ema", "ema"]  # the average starts after warm-up
    assert history["best_epoch"] == max(history["epochs"], key=lambda e: e["val_auc"])["epoch"]
    assert (trained_checkpoint.parent / "reports" / "figures" / "task1_training_curves.png").stat().st_size > 10_000
    clf = Classifier.load(trained_checkpoint)
    assert clf.meta["train_args"]["seed"] == 0 and clf.meta["train_args"]["ema_decay"] == 0.8
    assert clf.meta["threshold"] == history["threshold"] and len(clf.meta["data_sha256"]) == 64
    assert not trained_checkpoint.with_name("model.resume.pth").exists()


@pytest.fixture(scope="module")
def interrupted_once(synthetic_root, tmp_path_factory):
    """A run killed during its second epoch: only the resume file written after epoch 1 is left.
    Trained once per module; each test gets its own copy (interrupted_run)."""
    out = tmp_path_factory.mktemp("interrupted") / "model.pth"
    real_epoch, calls = train.train_one_epoch, []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "train_one_epoch", crash_in_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            train.main(train.parse_args(list(map(str, train_args(synthetic_root, out)))))
    assert not out.exists() and out.with_name("model.resume.pth").exists()
    return out


@pytest.fixture
def interrupted_run(interrupted_once, tmp_path):
    folder = tmp_path / "interrupted"
    shutil.copytree(interrupted_once.parent, folder)
    return folder / interrupted_once.name


def test_interrupted_training_resumes_to_the_same_result(interrupted_run, trained_checkpoint, synthetic_root):
    """Same seed, same flags: resuming after epoch 1 gives the uninterrupted run's weights exactly."""
    result = run_cli(train, *train_args(synthetic_root, interrupted_run), "--resume")
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 1" in result.stdout
    a = torch.load(trained_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(interrupted_run, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads(interrupted_run.with_name("model_history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]
    assert not interrupted_run.with_name("model.resume.pth").exists()


def test_resume_with_other_settings_is_refused(interrupted_run, synthetic_root):
    before = files_under(interrupted_run.parent)
    result = run_cli(train, *train_args(synthetic_root, interrupted_run), "--lr", "0.01", "--resume")
    assert result.returncode == 1
    line = error_line(result)
    assert "written with other settings" in line and "'lr': (0.002, 0.01)" in line
    assert files_under(interrupted_run.parent) == before  # the resume file is kept for a correct retry


def test_resume_without_a_resume_file_or_with_a_damaged_one(synthetic_root, tmp_path):
    missing = run_cli(train, *train_args(synthetic_root, tmp_path / "x.pth"), "--resume")
    assert missing.returncode == 1 and "does not exist" in error_line(missing)
    (tmp_path / "y.resume.pth").write_bytes(b"")
    empty = run_cli(train, *train_args(synthetic_root, tmp_path / "y.pth"), "--resume")
    assert empty.returncode == 1 and "not a readable checkpoint" in error_line(empty)


def test_balanced_class_weights_give_each_class_half_the_loss():
    labels = torch.tensor([0] * 10 + [1] * 30)
    weights = balanced_class_weights(labels)
    assert torch.allclose(weights * torch.bincount(labels), torch.tensor([20.0, 20.0]))
    with pytest.raises(UserError, match="both classes"):
        balanced_class_weights(torch.ones(8, dtype=torch.long))


def test_mixup_trains_on_blended_pairs_with_the_class_weighted_loss():
    """--mixup hands the loss blended images and soft labels (torchvision's MixUp); without it, hard labels."""
    from torch import nn
    from torchvision.transforms import v2

    from pneumo.training import Trainer, train_one_epoch
    torch.manual_seed(0)
    images = torch.cat([torch.zeros(16, 1, 28, 28), torch.ones(16, 1, 28, 28)])
    labels = torch.tensor([0] * 16 + [1] * 16)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=32, shuffle=True)
    seen = []

    class Recorder(nn.CrossEntropyLoss):
        def forward(self, logits, target):
            seen.append(target.detach().clone())
            return super().forward(logits, target)

    for mix in (None, v2.MixUp(alpha=0.4, num_classes=2)):
        model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        trainer = Trainer(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                          torch.amp.GradScaler("cpu", enabled=False), Recorder(weight=torch.tensor([2.0, 0.67])),
                          torch.device("cpu"), mix=mix)
        assert np.isfinite(train_one_epoch(trainer, loader))
    plain, mixed = seen
    assert plain.dtype == torch.long and mixed.shape == (32, 2) and mixed.dtype.is_floating_point
    assert torch.allclose(mixed.sum(1), torch.ones(32)) and ((mixed > 0.001) & (mixed < 0.999)).any()


def test_a_mixup_run_records_its_setting(synthetic_root, tmp_path):
    done = run_cli(train, *train_args(synthetic_root, tmp_path / "m.pth"), "--mixup", "0.3")
    assert done.returncode == 0, done.stderr
    assert Classifier.load(tmp_path / "m.pth").meta["train_args"]["mixup"] == 0.3


def test_bad_flags_and_missing_data_fail_in_one_line(tmp_path):
    bad = run_cli(train, "--epochs", "0")
    assert bad.returncode == 2 and "argument --epochs: must be at least 1" in bad.stderr
    corrupt = tmp_path / "pneumoniamnist.npz"
    corrupt.write_bytes(b"garbage")
    result = run_cli(train, "--data_root", tmp_path, "--out", tmp_path / "m.pth")
    assert result.returncode == 1 and "not a readable .npz" in error_line(result)
    assert corrupt.read_bytes() == b"garbage" and not (tmp_path / "m.pth").exists()


def test_script_runs_as_a_user_runs_it(tmp_path):
    """The `__main__` block itself, in a fresh process: a one-line error and exit 1 on bad data."""
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"garbage")
    done = subprocess.run([sys.executable, str(REPO / "task1/train.py"), "--data_root", str(tmp_path),
                           "--out", str(tmp_path / "m.pth")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.strip().startswith("error:") and "not a readable .npz" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_process_data_parallel_run(synthetic_root, tmp_path):
    out = tmp_path / "ddp.pth"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "task1/train.py"), "--epochs", "2", "--batch_size", "32", "--device", "cpu",
           "--data_root", str(synthetic_root), "--out", str(out), "--reports", str(tmp_path)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "x2" in result.stdout
    clf = Classifier.load(out)
    assert clf.meta["epoch"] in (1, 2)
    history = json.loads(out.with_name("ddp_history.json").read_text())
    # 256 images, global batch 32 over 2 processes: 8 steps of 16 per process and epoch
    assert history["world_size"] == 2 and history["steps_per_epoch"] == 8
    images, labels = load_split(synthetic_root, "val")
    assert np.isfinite(clf.predict_proba(images)).all()


@pytest.mark.slow
def test_stored_calibration_is_the_default_rule_refitted_on_val_and_its_corrupted_copies(tmp_path):
    """train.py's default rule (even_odds_shifted, chosen on val by experiments/shift_study.py): Platt scaling on
    the val films pooled with their 65 MedMNIST-C copies, threshold 0.5. Refitted here from the checkpoint's own
    outputs it gives the stored calibration, and the clean-only fit does not."""
    from pneumo.calibration import fit_decision_rule
    from pneumo.corruptions import corrupted_copies
    from pneumo.inference import predict_logits
    from pneumo.synthetic import write_synthetic_npz
    write_synthetic_npz(tmp_path / "data" / "pneumoniamnist.npz", counts={"train": 64, "val": 32, "test": 8}, seed=3)
    out = tmp_path / "m.pth"
    flags = [f for f in FAST_TRAIN if f not in ("--decision_rule", "even_odds_clean")]
    assert run_cli(train, *flags, "--epochs", "1", "--data_root", tmp_path / "data", "--out", out).returncode in (0, 1)
    out = out if out.exists() else train.failed_path(out)  # one epoch may not beat chance: its checkpoint is kept aside
    clf = Classifier.load(out)
    assert clf.meta["train_args"]["decision_rule"] == "even_odds_shifted" and clf.threshold == 0.5
    images, labels = load_split(tmp_path / "data", "val")
    z = predict_logits(clf.model, images, clf.normalization)
    copies = corrupted_copies(images, seed=0)
    shifted = predict_logits(clf.model, copies.reshape(-1, 28, 28), clf.normalization).reshape(copies.shape[:3])
    refit, threshold = fit_decision_rule(z, labels, "even_odds_shifted", shifted)
    assert threshold == clf.threshold
    assert refit["slope"] == pytest.approx(clf.calibration["slope"], rel=1e-4)
    assert refit["intercept"] == pytest.approx(clf.calibration["intercept"], rel=1e-4, abs=1e-4)
    clean, _ = fit_decision_rule(z, labels, "even_odds_clean")
    assert abs(clean["intercept"] - clf.calibration["intercept"]) > 1e-3 or abs(clean["slope"] - clf.calibration["slope"]) > 1e-3
