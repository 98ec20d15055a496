"""The command-line vocabulary every script shares: one definition per flag, so users learn them once.
A script builds its parser here, names the shared flags it takes (with its own default or help where
it differs), and adds its own flags in plain sight."""
import argparse
import math
import re
from pathlib import Path

from .checkpoint import DEFAULT_CHECKPOINT
from .data import SIZES, SPLITS, default_data_root
from .runtime import DEFAULT_RUN, UserError, resolve_device


def ranged(kind, low=None, high=None, *, low_open=False, high_open=False):
    """An argparse type for a finite number of `kind` (int or float) inside a range, which its error states:
    ranged(float, 0, 1, high_open=True) takes 0 <= x < 1; NaN and infinities are refused."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, not {text}")
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {describe_range(low, high, low_open, high_open)}, not {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def describe_range(low, high, low_open, high_open) -> str:
    def show(value):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if high is None:
        return f"{'above' if low_open else 'at least'} {show(low)}"
    if low is None:
        return f"{'below' if high_open else 'at most'} {show(high)}"
    return f"in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"


def milvus_name(text: str) -> str:
    """A Milvus collection name as Milvus accepts one (a letter or underscore first, then letters, digits and
    underscores), at most 200 characters so the temporary names of a rebuild stay under Milvus's 255."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,199}", text):
        raise argparse.ArgumentTypeError(f"{text[:40]!r}{'…' if len(text) > 40 else ''} is not a Milvus collection "
                                         f"name: a letter or _ first, then letters, digits or _, at most 200")
    return text


# The ranges the flags use, named once.
positive_int = ranged(int, 1)                       # counts and sizes: batch sizes, k, limits, epochs
non_negative_int = ranged(int, 0)                   # worker counts, k where 0 means none
seed_int = ranged(int, 0, 2**32 - 1)                # what every seeded library accepts
positive_float = ranged(float, 0, low_open=True)    # learning rates
non_negative_float = ranged(float, 0)               # weight decay, warm-up epochs
fraction = ranged(float, 0, 1, high_open=True)      # label smoothing, decays: 0 <= x < 1


def device_name(text: str) -> str:
    """An argparse type that refuses a device torch cannot name, before any work starts."""
    if text != "auto":
        try:
            resolve_device(text)
        except UserError as err:
            raise argparse.ArgumentTypeError(str(err).replace(f"--device {text!r} ", "")) from None
    return text


SHARED_FLAGS = {
    "checkpoint": dict(default=DEFAULT_CHECKPOINT,
                       help=f"classifier checkpoint written by task1/train.py, or a run folder holding one "
                            f"(default {DEFAULT_CHECKPOINT}, the shipped one)"),
    "data_root": dict(default=None, help="folder with pneumoniamnist*.npz (default $PNEUMONIA_DATA_ROOT or ./data; "
                                         "downloaded by medmnist when missing)"),
    "size": dict(type=int, default=28, choices=SIZES, help="image side in pixels (default 28)"),
    "split": dict(default="test", choices=SPLITS, help="dataset split (default test)"),
    "indices": dict(type=int, nargs="+", help="dataset indices of --split (default 0 20 70)"),
    "images": dict(type=Path, nargs="+", help="image files (PNG/JPEG, any size and mode)"),
    "record_names": dict(choices=["relative", "digest"], default="relative",
                         help="how outputs name --images files: relative to the folder you run from (default; a "
                              "file outside it by its name alone) or digest (sha256 of the content: no name at all)"),
    "k": dict(type=positive_int, default=5, help="similar archived cases per query (default 5)"),
    "out": dict(type=Path, default=DEFAULT_RUN,
                help=f"run folder for results and figures/ (default {DEFAULT_RUN}, ignored by git)"),
    "device": dict(type=device_name, default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps"),
    "seed": dict(type=seed_int, default=0, help="random seed (default 0)"),
    "backend": dict(default="faiss", choices=["faiss", "milvus"],
                    help="where the case archive lives: faiss (default, the --index file) or milvus (--uri, --collection)"),
    "uri": dict(default=str(DEFAULT_RUN / "task3_milvus.db"),
                help=f"Milvus: a local file runs Milvus Lite embedded, http://host:19530 a Milvus server "
                     f"(default {DEFAULT_RUN / 'task3_milvus.db'})"),
    "collection": dict(type=milvus_name, default="task3_archive", help="Milvus collection of the archive (default task3_archive)"),
}


def make_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose --help shows the script's docstring, examples included."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_shared_flags(parser, *names, **changes):
    """Add the named shared flags; `changes` maps a flag name to the keywords it sets otherwise,
    e.g. out=dict(default=Path("reports/task2"), help="...")."""
    for name in names:
        spec = {**SHARED_FLAGS[name], **changes.get(name, {})}
        if name == "data_root" and spec["default"] is None:
            spec["default"] = default_data_root()  # read at parse time, so the environment counts
        parser.add_argument(f"--{name}", **spec)
    unknown = set(changes) - set(names)
    if unknown:
        raise ValueError(f"changes for flags not added: {sorted(unknown)}")
    return parser


# --size on scripts that read a checkpoint: the checkpoint decides; the flag states or checks it.
INFERENCE_SIZE = dict(default=None, help="image side in pixels the classifier reads (default: the checkpoint's own; "
                                         "another value is refused)")


def check_images_or_indices(parser, args):
    """Dataset indices or image files, not both: the one rule every script that looks at cases keeps."""
    if getattr(args, "images", None) and getattr(args, "indices", None):
        parser.error("give --indices (dataset images) or --images (files), not both")
