"""Real X-ray files come as DICOM: the one loader reads them as a reader would see them."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import error_line, run_cli
from pneumo.dicom import read_dicom, stretch
from pneumo.pictures import load_image_file
from pneumo.runtime import UserError

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "shared" / "samples").glob("*/*.jpeg"))


@pytest.fixture(scope="module")
def source():
    """8-bit pixels of a real sample X-ray (a synthetic film where ../shared is absent), 256 px wide."""
    if SAMPLES:
        with Image.open(SAMPLES[0]) as img:
            img = img.convert("L")
            return np.asarray(img.resize((256, round(256 * img.height / img.width))))
    yy, xx = np.mgrid[0:200, 0:256]
    return np.uint8(np.clip(128 + 80 * np.sin(xx / 17) * np.cos(yy / 23), 0, 255))


def write_dicom(path, stored, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None, bits=12):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    cr = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = cr, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = cr, meta.MediaStorageSOPInstanceUID, "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def close(a, b, tolerance=1):
    return np.abs(a.astype(int) - b.astype(int)).max() <= tolerance


def test_monochrome2_12_bit_comes_back_as_the_source(tmp_path, source):
    stored = source.astype(np.uint16) * 16  # 0..4080 in 12 bits
    assert close(read_dicom(write_dicom(tmp_path / "a.dcm", stored)), stretch(source.astype(float)))


def test_rescale_slope_and_intercept_are_applied(tmp_path, source):
    # stored values are half the real ones, offset: the modality LUT must undo both before the stretch
    stored = source.astype(np.uint16) * 8
    path = write_dicom(tmp_path / "b.dcm", stored, slope=2.0, intercept=-1024.0)
    assert close(read_dicom(path), stretch(source.astype(float)))
    path = write_dicom(tmp_path / "c.dcm", stored, slope=-2.0, intercept=4096.0)  # a negative slope flips it
    assert close(read_dicom(path), 255 - stretch(source.astype(float)))


def test_monochrome1_is_inverted(tmp_path, source):
    stored = 4095 - source.astype(np.uint16) * 16  # in MONOCHROME1 low values are bright
    assert close(read_dicom(write_dicom(tmp_path / "d.dcm", stored, "MONOCHROME1")), stretch(source.astype(float)))


def test_the_window_the_file_names_is_applied(tmp_path, source):
    stored = source.astype(np.uint16) * 16
    center, width = 2048.0, 1024.0  # source levels 96..160 fill the output; the rest saturate
    got = read_dicom(write_dicom(tmp_path / "e.dcm", stored, window=(center, width)))
    linear = np.clip((stored - (center - 0.5)) / (width - 1) + 0.5, 0, 1)  # DICOM's linear VOI function
    assert close(got, stretch(linear), tolerance=2)
    assert (got[source < 90] == 0).all() and (got[source > 166] == 255).all()
    assert not close(got, read_dicom(write_dicom(tmp_path / "f.dcm", stored)), tolerance=10)  # the window matters


def test_dicom_and_png_of_the_same_film_give_the_same_model_input(tmp_path, source):
    Image.fromarray(stretch(source.astype(float))).save(tmp_path / "film.png")
    write_dicom(tmp_path / "film.dcm", source.astype(np.uint16) * 16)
    assert close(load_image_file(tmp_path / "film.dcm", 28), load_image_file(tmp_path / "film.png", 28))


def test_a_corrupt_or_colour_dicom_is_one_clear_error(tmp_path, source):
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 5)
    with pytest.raises(UserError, match="DICOM file whose pixels cannot be read"):
        load_image_file(broken)
    no_pixels = write_dicom(tmp_path / "np.dcm", source.astype(np.uint16))
    import pydicom
    ds = pydicom.dcmread(no_pixels)
    del ds.PixelData
    ds.save_as(no_pixels)
    with pytest.raises(UserError, match="cannot be read"):
        load_image_file(no_pixels)
    bomb = pydicom.dcmread(write_dicom(tmp_path / "bomb.dcm", source.astype(np.uint16)))
    bomb.Rows = bomb.Columns = 20000  # a header that promises 400 M pixels is refused before decoding
    bomb.save_as(tmp_path / "bomb.dcm")
    with pytest.raises(UserError, match="more pixels than is safe to open"):
        load_image_file(tmp_path / "bomb.dcm")
    frames = pydicom.dcmread(write_dicom(tmp_path / "frames.dcm", np.concatenate([source, source]).astype(np.uint16)))
    frames.Rows, frames.NumberOfFrames = source.shape[0], 2
    frames.save_as(tmp_path / "frames.dcm")
    with pytest.raises(UserError, match="single-frame grayscale radiograph"):
        load_image_file(tmp_path / "frames.dcm")


def test_scripts_take_dicom_files(tmp_path, source, trained_checkpoint):
    from task1 import gradcam
    path = write_dicom(tmp_path / "film.dcm", source.astype(np.uint16) * 16)
    result = run_cli(gradcam, "--checkpoint", trained_checkpoint, "--images", path, "--out", tmp_path / "g",
                     "--index", tmp_path / "none.faiss")
    assert result.returncode == 0, error_line(result)


def bundled_dicoms():
    """pydicom's own test files (shipped in its wheel): every transfer syntax they cover."""
    import pydicom
    return sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


def test_compressed_radiographs_decode(tmp_path):
    """JPEG-LS and 12-bit JPEG Extended, the usual PACS syntaxes, decode through pylibjpeg (issue 22, 4)."""
    folder = bundled_dicoms()[0].parent
    for name, shape in (("MR_small_jpeg_ls_lossless.dcm", (64, 64)), ("JPGExtended.dcm", (1024, 256))):
        pixels = read_dicom(folder / name)
        assert pixels.shape == shape and pixels.dtype == np.uint8 and pixels.std() > 10, name


def test_every_bundled_dicom_decodes_or_ends_in_one_clear_line():
    """Each of pydicom's test files (compressed, big-endian, deflated, colour, multi-frame, broken) is read as a
    single-frame grayscale film or refused with one line naming the file; nothing else escapes."""
    files = bundled_dicoms()
    assert len(files) > 50
    decoded = 0
    for path in files:
        try:
            pixels = read_dicom(path)
        except UserError as err:
            assert str(err).startswith(str(path)) and "\n" not in str(err), path
            continue
        assert pixels.ndim == 2 and pixels.dtype == np.uint8, path
        decoded += 1
    assert decoded >= 20
