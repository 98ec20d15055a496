"""PneumoniaMNIST through `medmnist`: locate, validate, load; image files users bring; synthetic files for tests."""
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from .errors import UserError

CLASS_NAMES = ("normal", "pneumonia")
SIZES = (28, 64, 128, 224)
SPLITS = ("train", "val", "test")
DATA_ROOT_ENV = "PNEUMONIA_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"
# MedMNIST's customary normalisation of [0, 1] pixels; stored in the checkpoint.
NORMALIZATION = {"mean": 0.5, "std": 0.5}


def default_data_root() -> str:
    return os.environ.get(DATA_ROOT_ENV, DEFAULT_DATA_ROOT)


def data_file(root, size: int) -> Path:
    """The file name medmnist uses: pneumoniamnist.npz at 28, pneumoniamnist_<size>.npz above."""
    suffix = "" if size == 28 else f"_{size}"
    return Path(root) / f"pneumoniamnist{suffix}.npz"


def ensure_data_file(root, size: int = 28) -> Path:
    """Return the local .npz, downloading it through medmnist only when it is missing."""
    path = data_file(root, size)
    if path.exists():
        return path
    import medmnist
    Path(root).mkdir(parents=True, exist_ok=True)
    try:
        medmnist.PneumoniaMNIST(split="test", root=str(root), size=size, download=True)
    except Exception as err:  # any network or server failure ends in the same advice
        raise UserError(
            f"{path} is missing and the download failed ({type(err).__name__}); put pneumoniamnist"
            f"{'' if size == 28 else f'_{size}'}.npz from MedMNIST (zenodo.org/records/10519652) at {path}"
            f" or point --data_root / ${DATA_ROOT_ENV} at the folder holding it") from None
    return path


def load_split(root, split: str, size: int = 28):
    """Images (N, size, size) uint8 and labels (N,) int64 of one split, validated."""
    import medmnist
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = ensure_data_file(root, size)
    fix = f"replace {path} with the MedMNIST file (delete it to download again)"
    try:
        ds = medmnist.PneumoniaMNIST(split=split, root=str(path.parent), size=size, download=False)
        images, labels = np.asarray(ds.imgs), np.asarray(ds.labels)
    except KeyError as err:
        raise UserError(f"{path} lacks the array {err}; {fix}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise UserError(f"{path} is not a readable .npz ({type(err).__name__}: {err}); {fix}") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (size, size):
        raise UserError(f"{path}: {split}_images has shape {images.shape} and dtype {images.dtype}, "
                        f"expected (N, {size}, {size}) uint8; {fix}")
    labels = labels.reshape(-1)
    if labels.shape[0] != images.shape[0] or not np.isin(labels, (0, 1)).all():
        raise UserError(f"{path}: {split}_labels must hold one 0/1 label per image; {fix}")
    if len(labels) == 0:
        raise UserError(f"{path}: the {split} split holds no images; {fix}")
    return images, labels.astype(np.int64)


def require_both_classes(labels, split: str, path) -> None:
    """Training and threshold choice need both classes in a split; one line when one is absent."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=2)
    if (counts == 0).any():
        raise UserError(f"{path}: the {split} split holds {counts[0]} normal and {counts[1]} pneumonia images; "
                        f"both classes are needed to train and to choose a threshold")


def check_indices(indices, n: int, split: str) -> list:
    """The indices themselves, or one clear error naming those outside 0..n-1."""
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise UserError(f"--indices {bad} out of range: the {split} split has indices 0..{n - 1}")
    return list(indices)


def normalize(images_uint8: torch.Tensor, normalization=NORMALIZATION) -> torch.Tensor:
    """uint8 (N, H, W) or (N, 1, H, W) -> normalised float (N, 1, H, W)."""
    x = images_uint8.float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return (x - normalization["mean"]) / normalization["std"]


def train_augmentation(size: int, border: str = "reflect", corruptions: str = "none") -> v2.Compose:
    """Small affine and intensity changes a chest X-ray can plausibly show; no flips: the heart
    sits on the left, so a mirrored film is not a realistic sample.

    border="reflect" (default) mirrors the film outwards first (a margin of a fifth of the side),
    transforms, and crops the centre back, so the result has no empty border. border="black" fills
    what the shift, rotation or zoom-out uncovers with zeros: a fifth of the edge pixels of augmented
    images are then black, against 0.4 % in real films. Shifts are the same in pixels either way.

    corruptions="medmnistc" first applies one of MedMNIST-C's corruptions (or none) at a random severity
    (pneumo.corruptions.RandomCorruption), as the paper's training-time augmentation does; "augmix" applies
    torchvision's AugMix (Hendrycks et al. 2020) instead."""
    if border not in ("black", "reflect"):
        raise ValueError(f"border must be 'black' or 'reflect', not {border!r}")
    margin = math.ceil(size / 5) if border == "reflect" else 0
    padded = size + 2 * margin
    affine = v2.RandomAffine(degrees=10, translate=(0.06 * size / padded,) * 2, scale=(0.9, 1.1))
    jitter = v2.ColorJitter(brightness=0.2, contrast=0.2)
    if corruptions not in ("none", "medmnistc", "augmix"):
        raise ValueError(f"corruptions must be 'none', 'medmnistc' or 'augmix', not {corruptions!r}")
    first = []
    if corruptions == "medmnistc":
        from .corruptions import RandomCorruption
        first = [RandomCorruption()]
    elif corruptions == "augmix":
        first = [v2.AugMix()]
    if border == "black":
        return v2.Compose([*first, affine, jitter])
    return v2.Compose([*first, v2.Pad(margin, padding_mode="reflect"), affine, v2.CenterCrop(size), jitter])


class XrayDataset(torch.utils.data.Dataset):
    """uint8 images held as one tensor; items come out as (1, H, W) uint8 plus the label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
        self.labels = torch.from_numpy(labels)
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        image = self.images[idx]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[idx]
