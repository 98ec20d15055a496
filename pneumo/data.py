"""PneumoniaMNIST through `medmnist`: locate, validate, load; image files users bring; synthetic files for tests."""
import hashlib
import math
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
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
    return images, labels.astype(np.int64)


def check_indices(indices, n: int, split: str) -> list:
    """The indices themselves, or one clear error naming those outside 0..n-1."""
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise UserError(f"--indices {bad} out of range: the {split} split has indices 0..{n - 1}")
    return list(indices)


def input_names(paths, record: str = "relative") -> list:
    """What outputs record for a user's files, so that a path holding a patient's name does not land in
    reports: the path relative to the folder the user ran from (a file outside it: its name alone), or
    with record="digest" only 'sha256:' and the first 16 hex digits of the file's content."""
    if record not in ("relative", "digest"):
        raise ValueError(f"record must be 'relative' or 'digest', not {record!r}")
    names = []
    for path in map(Path, paths):
        if record == "digest":
            names.append(f"sha256:{file_sha256(path)[:16]}" if path.is_file() else "sha256:missing")
            continue
        try:
            names.append(str(path.resolve().relative_to(Path.cwd().resolve())))
        except ValueError:
            names.append(path.name)
    return names


def load_inputs(images, indices, data_root, split: str, size: int, record: str = "relative"):
    """What a script was asked to look at: image files, or dataset indices (default test 0, 20, 70:
    pneumonia, normal, pneumonia). uint8 images (N, size, size), class-name labels (for files, the
    name of the folder they sit in when it is a class name, else None), display names (for files, as
    input_names records them) and (split, index) keys (None for files)."""
    if images:
        arrays = np.stack([load_image_file(p, size) for p in images])
        return arrays, [label_from_folder(p) for p in images], input_names(images, record), [None] * len(arrays)
    all_images, all_labels = load_split(data_root, split, size)
    chosen = check_indices(indices if indices is not None else [0, 20, 70], len(all_labels), split)
    return (all_images[chosen], [CLASS_NAMES[all_labels[i]] for i in chosen],
            [f"{split} #{i}" for i in chosen], [(split, i) for i in chosen])


def label_from_folder(path):
    """'normal' or 'pneumonia' when a file sits in a folder of that name (as in the public Kermany
    layout and ../shared/samples), else None: the label is unknown."""
    folder = Path(path).parent.name.lower()
    return folder if folder in CLASS_NAMES else None


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_image_file(path, size: int = 28) -> np.ndarray:
    """A user's image made the way PneumoniaMNIST was: grayscale, centre crop to the short side,
    antialiased resize. Any PIL-readable file of any size and mode, or a DICOM file; uint8 (size, size)."""
    img = read_picture(path)
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    img = img.crop((left, top, left + side, top + side))
    img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
    return np.array(img, dtype=np.uint8)  # writable, unlike np.asarray of a PIL image


def read_picture(path) -> Image.Image:
    """The file as an 8-bit grayscale PIL image at its own size: DICOM through read_dicom, anything
    else through PIL (16-bit and float stretched to 8 bits, transparency over black)."""
    if is_dicom(path):
        return Image.fromarray(read_dicom(path))
    try:
        with Image.open(path) as img:
            img.load()
    except FileNotFoundError:
        raise UserError(f"image file {path} does not exist") from None
    except Image.DecompressionBombError:
        raise UserError(f"{path} has more pixels than is safe to open (over {2 * Image.MAX_IMAGE_PIXELS:,}); "
                        f"downscale it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserError(f"{path} is not a readable image ({type(err).__name__})") from None
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float: stretch to 8 bits
        img = Image.fromarray(stretch(np.asarray(img, dtype=np.float64)))
    elif img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L")


def stretch(values: np.ndarray) -> np.ndarray:
    """Any range of numbers onto 0..255, lowest to 0 and highest to 255."""
    lo, hi = float(values.min()), float(values.max())
    return np.uint8(np.round(255 * (values - lo) / max(hi - lo, 1e-12)))


def picture_size(path) -> tuple:
    """(width, height) of an image file from its header alone (DICOM: Columns, Rows)."""
    if is_dicom(path):
        import pydicom
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
    with Image.open(path) as img:
        return img.size


def is_dicom(path) -> bool:
    """A DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom(path) -> np.ndarray:
    """uint8 pixels of a DICOM radiograph as a reader sees them: stored values through the modality
    LUT (rescale slope and intercept), then the VOI LUT or window the file names (none: the full range),
    MONOCHROME1 inverted (there low values are bright), stretched to 8 bits."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    try:
        with warnings.catch_warnings():  # pydicom warns about each oddity of a broken file; one error line says it
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            too_big = int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) > 2 * Image.MAX_IMAGE_PIXELS
            values = None if too_big else ds.pixel_array
    except Exception as err:  # a broken header, no pixel data, or a transfer syntax without its decoder
        raise UserError(f"{path} is a DICOM file whose pixels cannot be read ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:120] if str(err) else 'no detail'})") from None
    if values is None:
        raise UserError(f"{path} has more pixels than is safe to open (over {2 * Image.MAX_IMAGE_PIXELS:,}); "
                        f"downscale it first")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or values.ndim != 2:
        raise UserError(f"{path}: a {photometric} DICOM with {values.ndim}-d pixels; a single-frame grayscale "
                        f"radiograph (MONOCHROME1 or MONOCHROME2) is expected")
    values = apply_voi_lut(apply_modality_lut(values, ds), ds).astype(np.float64)
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return stretch(values)


def normalize(images_uint8: torch.Tensor, normalization=NORMALIZATION) -> torch.Tensor:
    """uint8 (N, H, W) or (N, 1, H, W) -> normalised float (N, 1, H, W)."""
    x = images_uint8.float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return (x - normalization["mean"]) / normalization["std"]


def train_augmentation(size: int, border: str = "reflect") -> v2.Compose:
    """Small affine and intensity changes a chest X-ray can plausibly show; no flips: the heart
    sits on the left, so a mirrored film is not a realistic sample.

    border="reflect" (default) mirrors the film outwards first (a margin of a fifth of the side),
    transforms, and crops the centre back, so the result has no empty border. border="black" fills
    what the shift, rotation or zoom-out uncovers with zeros: a fifth of the edge pixels of augmented
    images are then black, against 0.4 % in real films. Shifts are the same in pixels either way."""
    if border not in ("black", "reflect"):
        raise ValueError(f"border must be 'black' or 'reflect', not {border!r}")
    margin = math.ceil(size / 5) if border == "reflect" else 0
    padded = size + 2 * margin
    affine = v2.RandomAffine(degrees=10, translate=(0.06 * size / padded,) * 2, scale=(0.9, 1.1))
    jitter = v2.ColorJitter(brightness=0.2, contrast=0.2)
    if border == "black":
        return v2.Compose([affine, jitter])
    return v2.Compose([v2.Pad(margin, padding_mode="reflect"), affine, v2.CenterCrop(size), jitter])


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


def write_synthetic_npz(path, size: int = 28, counts=None, seed: int = 0, signal: float = 0.6) -> Path:
    """A file in PneumoniaMNIST's format with a learnable signal: pneumonia images carry a brighter,
    blurred patch in a lower lung zone over textured noise. For tests and benchmarks."""
    counts = counts or {"train": 200, "val": 80, "test": 80}
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    arrays = {}
    for split, n in counts.items():
        labels = (rng.random(n) < 0.6).astype(np.uint8)
        base = 0.35 + 0.1 * rng.standard_normal((n, size, size))
        lungs = np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.05) + np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) / 0.05)
        images = base - 0.15 * lungs
        for i in np.flatnonzero(labels):
            cx, cy = rng.choice([0.3, 0.7]), rng.uniform(0.55, 0.75)
            images[i] += signal * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.01)
        arrays[f"{split}_images"] = np.clip(images * 255, 0, 255).astype(np.uint8)
        arrays[f"{split}_labels"] = labels.reshape(-1, 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
