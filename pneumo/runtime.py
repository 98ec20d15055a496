"""Run set-up shared by every script: errors for users, seeding, device, provenance."""
import json
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from .errors import UserError as UserError  # noqa: F401  (its home is pneumo.errors)
from .errors import exit_on_user_error as exit_on_user_error  # noqa: F401
from .pictures import input_names

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where a script writes when no --out is given: an ignored folder, so the committed models/ and
# reports/ (the published results of the shipped checkpoint) change only when a maintainer asks.
DEFAULT_RUN = Path("runs/default")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device that is missing is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but no CUDA GPU is visible; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps asked for, but MPS is not available; use --device cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown --device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name!r} is not supported here; use auto, cpu, cuda, cuda:N or mps")
    return device


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def print_run_header(script: str, args) -> dict:
    """Print seed, commit and sorted args at start-up; return them for the run's records."""
    shown = dict(vars(args))
    if shown.get("images"):  # user files as the outputs record them, never the typed path
        shown["images"] = input_names(shown["images"], shown.get("record_names", "relative"))
    record = {"script": script, "git_commit": git_commit(),
              "args": {k: _plain(v) for k, v in sorted(shown.items())}}
    print(f"[{script}] commit {record['git_commit']}  args {json.dumps(record['args'])}", flush=True)
    return record


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
