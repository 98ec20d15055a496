import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pneumo.data import write_synthetic_npz  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_SAMPLES = REPO.parent / "shared" / "samples"
# Small enough for 2 CPU cores, large enough that BatchNorm's running statistics settle.
SYNTHETIC_COUNTS = {"train": 256, "val": 96, "test": 96}
FAST_TRAIN = ["--epochs", "3", "--batch_size", "16", "--lr", "2e-3", "--device", "cpu"]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_synthetic_npz(root / "pneumoniamnist.npz", counts=SYNTHETIC_COUNTS, seed=0)
    return root


@pytest.fixture(scope="session")
def trained_checkpoint(synthetic_root, tmp_path_factory):
    """A checkpoint trained by task1/train.py on the synthetic data (about 30 s on 2 cores)."""
    from task1 import train
    out = tmp_path_factory.mktemp("trained") / "model.pth"
    train.main(train.parse_args([*FAST_TRAIN, "--data_root", str(synthetic_root), "--out", str(out),
                                 "--reports", str(out.parent / "reports")]))
    return out


def run_script(script, *args, env=None, timeout=600):
    """Run a project script as a user would; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, str(REPO / script), *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
