"""The checkpoint contract: one self-describing file, written atomically, read by one function."""
import math
import pickle
import platform
import zipfile
from pathlib import Path

import numpy as np
import torch

from .atomic import file_sha256
from .calibration import IDENTITY
from .data import CLASS_NAMES, SIZES
from .model import ARCH, build_model, unwrap
from .runtime import UserError

DEFAULT_CHECKPOINT = "models/task1_model.pth"
CHECKPOINT_NAME = "task1_model.pth"  # the checkpoint inside a run folder
REQUIRED_KEYS = ("format_version", "arch", "in_channels", "image_size", "class_names",
                 "normalization", "threshold", "state_dict")
FORMAT_VERSION = 2  # 2 added "calibration"; a format-1 checkpoint still loads, its P uncalibrated
READABLE_VERSIONS = (1, 2)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# The metadata a checkpoint must carry, each field with its test and what it should be: checked at load,
# before the numbers reach a model, a resize or a decision (an image size of 5000 would exhaust memory).
SCHEMA = {
    "in_channels": (lambda v: type(v) is int and v == 1, "1 (grayscale)"),
    "image_size": (lambda v: type(v) is int and v in SIZES, f"one of {', '.join(map(str, SIZES))}"),
    "class_names": (lambda v: isinstance(v, (list, tuple)) and list(v) == list(CLASS_NAMES), list(CLASS_NAMES)),
    "normalization": (lambda v: isinstance(v, dict) and _number(v.get("mean")) and _number(v.get("std"))
                      and v["std"] > 0, "{'mean': a number, 'std': a number above 0}"),
    "threshold": (lambda v: _number(v) and 0.0 <= v <= 1.0, "a probability in [0, 1]"),
}
CALIBRATION_CHECK = (lambda v: isinstance(v, dict) and v.get("method") in ("none", "platt") and _number(v.get("slope"))
                     and v["slope"] > 0 and _number(v.get("intercept")),
                     "{'method': 'platt', 'slope': a number above 0, 'intercept': a number}")
# Fields a checkpoint of this project carries for the record; when present, they must have this type.
RECORD_TYPES = {"val_metrics": dict, "train_args": dict, "epoch": int, "data_sha256": str, "versions": dict,
                "git_commit": str}


def check_metadata(payload: dict, path) -> None:
    """One line naming the first field that is not what task1/train.py writes."""
    for name, (ok, expected) in SCHEMA.items():
        if not ok(payload[name]):
            raise UserError(f"{path}: checkpoint field {name!r} is {str(repr(payload[name]))[:60]}, expected "
                            f"{expected}; refused (use a checkpoint written by task1/train.py)")
    if payload["format_version"] >= 2 and not CALIBRATION_CHECK[0](payload.get("calibration")):
        raise UserError(f"{path}: checkpoint field 'calibration' is {str(repr(payload.get('calibration')))[:60]}, expected "
                        f"{CALIBRATION_CHECK[1]}; refused (use a checkpoint written by task1/train.py)")
    for name, kind in RECORD_TYPES.items():
        if name in payload and not (isinstance(payload[name], kind) and not isinstance(payload[name], bool)):
            raise UserError(f"{path}: checkpoint field {name!r} is a {type(payload[name]).__name__}, expected a "
                            f"{kind.__name__}; refused (use a checkpoint written by task1/train.py)")
    if not isinstance(payload["state_dict"], dict):
        raise UserError(f"{path}: checkpoint field 'state_dict' is a {type(payload['state_dict']).__name__}, not "
                        f"the weights; refused")


def library_versions() -> dict:
    import medmnist
    import torchvision
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "numpy": str(np.__version__),
            "medmnist": str(getattr(medmnist, "__version__", "unknown"))}


def make_checkpoint(model, *, image_size: int, normalization: dict, threshold: float, calibration: dict,
                    val_metrics: dict, train_args: dict, data_sha256: str, epoch: int) -> dict:
    """`threshold` is on the P(pneumonia) scale that `calibration` (pneumo.calibration) gives."""
    model = unwrap(model)
    return {
        "format_version": FORMAT_VERSION, "arch": ARCH,
        "in_channels": model.conv1.in_channels, "image_size": image_size,
        "class_names": list(CLASS_NAMES), "normalization": dict(normalization),
        "threshold": float(threshold), "calibration": dict(calibration),
        "val_metrics": dict(val_metrics), "epoch": int(epoch),
        "train_args": dict(train_args), "data_sha256": data_sha256, "versions": library_versions(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }


def read_payload(path) -> dict:
    """torch.load with weights_only=True, every failure turned into one line that names the file.
    Before loading, every record's CRC-32 (which torch.save stores in its zip archive) is checked
    against the bytes on disk: a damaged file is refused instead of silently giving other weights."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found; train one with `python task1/train.py` "
                        f"or pass --checkpoint")
    unreadable = (f"{path} is not a readable checkpoint (truncated, corrupt, or not a file torch.save "
                  f"wrote); use one written by task1/train.py")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        raise UserError(unreadable) from None
    if damaged is not None:
        raise UserError(f"{path} is damaged: record {damaged.rsplit('/', 1)[-1]} does not match its stored "
                        f"checksum; restore the file (e.g. `git checkout -- {path}`) or retrain") from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{path} holds pickled objects that are not plain weights; refused "
                        f"(it could run code). Use a checkpoint written by task1/train.py") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError):
        raise UserError(unreadable) from None
    if not isinstance(payload, dict):
        raise UserError(f"{path} is not a checkpoint of this project (no metadata dict)")
    return payload


def load_checkpoint(path=DEFAULT_CHECKPOINT, device="cpu"):
    """(model in eval mode on `device`, metadata dict without the weights). The only loader."""
    path = Path(path)
    if path.is_dir():  # a run folder: its own checkpoint
        path = path / CHECKPOINT_NAME
    payload = read_payload(path)
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise UserError(f"{path} is not a checkpoint of this project (missing {', '.join(missing)})")
    if payload["format_version"] not in READABLE_VERSIONS:
        raise UserError(f"{path} is in checkpoint format {payload['format_version']!r}; this code reads formats "
                        f"{', '.join(map(str, READABLE_VERSIONS))}: retrain with this code's task1/train.py")
    if payload["arch"] != ARCH:
        raise UserError(f"{path} holds architecture {payload['arch']!r}; this code runs {ARCH!r}")
    check_metadata(payload, path)
    model = build_model(payload["arch"], payload["in_channels"], len(payload["class_names"]))
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, TypeError, AttributeError, ValueError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"{path}: weights do not fit {ARCH} ({first})") from None
    broken = [k for k, v in payload["state_dict"].items()
              if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise UserError(f"{path} holds non-finite weights (NaN or inf in {', '.join(broken[:3])}); refused")
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta.setdefault("calibration", dict(IDENTITY))  # format 1: P as the network gives it
    meta["sha256"] = file_sha256(path)
    meta["path"] = str(path)
    return model.to(device).eval(), meta
