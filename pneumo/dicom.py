"""DICOM radiographs through the one image loader: Part 10 detection and pixels as a reader sees them
(modality LUT, VOI LUT or window, MONOCHROME1 inverted), stretched to 8 bits."""
import sys
import warnings

import numpy as np
from PIL import Image

from .errors import UserError


def stretch(values: np.ndarray) -> np.ndarray:
    """Any range of numbers onto 0..255, lowest to 0 and highest to 255."""
    lo, hi = float(values.min()), float(values.max())
    return np.uint8(np.round(255 * (values - lo) / max(hi - lo, 1e-12)))


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
    values = apply_modality_lut(values, ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = apply_voi_lut(values, ds)
    except Exception as err:  # a window width below 1, a VOI LUT that does not fit: a header real files carry
        print(f"warning: {path}: its display window cannot be applied ({str(err).splitlines()[0][:100] if str(err) else type(err).__name__}); "
              f"showing the full pixel range", file=sys.stderr)
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise UserError(f"{path}: the DICOM's rescale gives non-finite pixel values (RescaleSlope/Intercept)")
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return stretch(values)
