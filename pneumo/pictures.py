"""Pictures a user brings (PNG, JPEG, DICOM, any size and mode) and what a script was asked to look at:
read as 8-bit grayscale, made the way PneumoniaMNIST was made, and named in outputs without leaking paths."""
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import file_sha256
from .data import CLASS_NAMES, check_indices, load_split
from .dicom import is_dicom, read_dicom, stretch
from .errors import UserError

DATASET_SIDE = 28  # PneumoniaMNIST's own size; MedMNIST+'s larger ones (64-224 px) are large enough anyway
DATASET_NOTE = f"a {DATASET_SIDE}×{DATASET_SIDE} grayscale film, PneumoniaMNIST's own size: read as a dataset film"
ORIENTATION_TAG = 0x0112
ORIENTATIONS = {2: "mirrored", 3: "upside down", 4: "upside down, mirrored", 5: "on its side, mirrored",
                6: "on its side, turned 90° clockwise", 7: "on its side, mirrored", 8: "on its side, turned 90° anticlockwise"}


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
        except (ValueError, OSError, RuntimeError):  # outside the folder, or a path that cannot be resolved (a link loop)
            names.append(path.name)
    return names


def load_inputs(images, indices, data_root, split: str, size: int, record: str = "relative"):
    """What a script was asked to look at: image files, or dataset indices (default test 0, 20, 70:
    pneumonia, normal, pneumonia). uint8 images (N, size, size), class-name labels (for files, the
    name of the folder they sit in when it is a class name, else None), display names (for files, as
    input_names records them) and (split, index) keys (None for files)."""
    if images:
        arrays = np.stack([load_image_file(p, size) for p in images])
        names = input_names(images, record)
        for path, name in zip(images, names):
            for note in picture_notes(path):
                print(f"note: {name}: {note}")
        return arrays, [label_from_folder(p) for p in images], names, [None] * len(arrays)
    all_images, all_labels = load_split(data_root, split, size)
    chosen = check_indices(indices if indices is not None else [0, 20, 70], len(all_labels), split)
    return (all_images[chosen], [CLASS_NAMES[all_labels[i]] for i in chosen],
            [f"{split} #{i}" for i in chosen], [(split, i) for i in chosen])


def label_from_folder(path):
    """'normal' or 'pneumonia' when a file sits in a folder of that name (as in the public Kermany
    layout and ../shared/samples), else None: the label is unknown."""
    folder = Path(path).parent.name.lower()
    return folder if folder in CLASS_NAMES else None


def load_image_file(path, size: int = 28) -> np.ndarray:
    """A user's image made the way PneumoniaMNIST was: grayscale, centre crop to the short side,
    antialiased resize. Any PIL-readable file of any size and mode, or a DICOM file; uint8 (size, size)."""
    return classifier_input(read_picture(path), size)


def read_square(shape) -> tuple:
    """(left, top, side) of the centre square the classifier reads from a picture of this (height, width, ...)
    shape: the crop classifier_input takes before resizing."""
    height, width = shape[:2]
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side


def classifier_input(img: Image.Image, size: int = 28) -> np.ndarray:
    """An 8-bit grayscale picture made the way PneumoniaMNIST was: centre crop to the short side, antialiased
    resize; uint8 (size, size)."""
    left, top, side = read_square((img.height, img.width))
    img = img.crop((left, top, left + side, top + side))
    img = img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
    return np.array(img, dtype=np.uint8)  # writable, unlike np.asarray of a PIL image


def read_picture(path) -> Image.Image:
    """The file as an 8-bit grayscale PIL image at its own size, upright: DICOM through read_dicom, anything
    else through PIL (its EXIF orientation applied, as a phone's photo of a film is stored sideways with a
    tag saying so; the first frame of an animation; 16-bit and float stretched to 8 bits, transparency
    over black)."""
    check_openable(path)
    if is_dicom(path):
        return Image.fromarray(read_dicom(path))
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
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


def check_openable(path) -> None:
    """A UserError naming the file when it cannot be opened at all: missing, a link that loops or points
    nowhere, no permission, a folder."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise UserError(f"image file {path} does not exist") from None
    except OSError as err:  # ELOOP, EACCES, ENAMETOOLONG, ...
        raise UserError(f"image file {path} cannot be opened: {err.strerror or type(err).__name__}") from None
    if not os.path.isfile(path) or not os.access(path, os.R_OK):
        what = "a folder" if os.path.isdir(path) else "not a readable file"
        raise UserError(f"image file {path} cannot be opened: {what}")


def picture_notes(path) -> list:
    """What a reader should know about how a file was read, from its header: turned upright from its EXIF
    orientation, only the first frame of an animation, a film at PneumoniaMNIST's own size read as one."""
    if is_dicom(path):
        return [DATASET_NOTE] if dataset_sized(path) else []
    notes = []
    try:
        with Image.open(path) as img:
            orientation = img.getexif().get(ORIENTATION_TAG, 1)
            frames = getattr(img, "n_frames", 1)
            small = img.size == (DATASET_SIDE, DATASET_SIDE)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return []
    if orientation in ORIENTATIONS:
        notes.append(f"turned upright from the file's EXIF orientation ({ORIENTATIONS[orientation]})")
    if frames > 1:
        notes.append(f"an animated picture of {frames} frames: only the first frame is read")
    if small and dataset_sized(path):  # the header already says whether the size can match
        notes.append(DATASET_NOTE)
    return notes


def dataset_sized(path) -> bool:
    """A grayscale picture of exactly PneumoniaMNIST's own side (DATASET_SIDE): a film saved from the
    dataset, read as one rather than refused as too small."""
    try:
        if picture_size(path) != (DATASET_SIDE, DATASET_SIDE):
            return False
        if is_dicom(path):
            return True  # read_dicom reads grayscale only
        with Image.open(path) as img:
            if img.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
                return True
            if img.mode not in ("RGB", "RGBA"):
                return False
            rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    except Exception:  # noqa: BLE001 (a damaged file is not a dataset film; reading it says why, in one line)
        return False
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def picture_size(path) -> tuple:
    """(width, height) of an image file from its header alone (DICOM: Columns, Rows)."""
    if is_dicom(path):
        import pydicom
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.get("Columns", 0)), int(ds.get("Rows", 0))
    with Image.open(path) as img:
        return img.size
