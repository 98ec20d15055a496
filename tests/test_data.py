import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_SAMPLES, SYNTHETIC_COUNTS
from pneumo import data, pictures, synthetic
from pneumo.runtime import UserError


def test_loads_each_split_with_shapes_and_binary_labels(synthetic_root):
    for split, n in SYNTHETIC_COUNTS.items():
        images, labels = data.load_split(synthetic_root, split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and set(np.unique(labels)) <= {0, 1}


@pytest.mark.parametrize("size", [64, 128, 224])
def test_medmnist_plus_sizes_use_their_own_file(tmp_path, size):
    synthetic.write_synthetic_npz(tmp_path / f"pneumoniamnist_{size}.npz", size=size,
                             counts={"train": 4, "val": 4, "test": 4})
    images, _ = data.load_split(tmp_path, "val", size)
    assert images.shape == (4, size, size)


def test_existing_file_is_used_without_download(synthetic_root, monkeypatch):
    import medmnist
    monkeypatch.setattr(medmnist.PneumoniaMNIST, "download", lambda self: pytest.fail("downloaded"))
    assert data.ensure_data_file(synthetic_root) == synthetic_root / "pneumoniamnist.npz"


def test_failed_download_names_the_file_and_the_fix(tmp_path, monkeypatch):
    import medmnist

    def offline(self):
        raise ConnectionError("no route to host")
    monkeypatch.setattr(medmnist.PneumoniaMNIST, "download", offline)
    with pytest.raises(UserError) as err:
        data.load_split(tmp_path / "nowhere", "train")
    message = str(err.value)
    assert "download failed" in message and str(tmp_path / "nowhere" / "pneumoniamnist.npz") in message
    assert "\n" not in message


def test_corrupt_file_is_refused(tmp_path):
    (tmp_path / "pneumoniamnist.npz").write_bytes(b"not a zip archive at all")
    with pytest.raises(UserError, match="not a readable .npz"):
        data.load_split(tmp_path, "train")


def test_missing_keys_are_refused(tmp_path):
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(UserError, match="lacks the array"):
        data.load_split(tmp_path, "train")


def test_wrong_shape_is_refused(tmp_path):
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=np.zeros((2, 32, 32), np.uint8),
             train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(UserError, match=r"expected \(N, 28, 28\) uint8"):
        data.load_split(tmp_path, "train")


def test_labels_outside_0_1_are_refused(tmp_path):
    np.savez(tmp_path / "pneumoniamnist.npz", train_images=np.zeros((2, 28, 28), np.uint8),
             train_labels=np.array([[0], [3]], np.uint8))
    with pytest.raises(UserError, match="0/1 label"):
        data.load_split(tmp_path, "train")


def test_synthetic_classes_differ_so_training_can_learn(synthetic_root):
    images, labels = data.load_split(synthetic_root, "train")
    lower_zone = images[:, 15:22].reshape(len(images), -1).mean(axis=1)
    assert lower_zone[labels == 1].mean() > lower_zone[labels == 0].mean() + 10


@pytest.mark.parametrize("mode,shape", [("RGB", (300, 200)), ("L", (90, 400)), ("RGBA", (64, 64)),
                                         ("I;16", (120, 80)), ("P", (50, 70))])
def test_any_image_mode_and_size_becomes_model_input(tmp_path, mode, shape):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 4096, shape[::-1], dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (*shape[::-1], 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / "x.png"
    img.save(path)
    out = pictures.load_image_file(path, 28)
    assert out.shape == (28, 28) and out.dtype == np.uint8 and out.std() > 0


def test_centre_crop_keeps_the_middle_square(tmp_path):
    wide = np.zeros((100, 300), np.uint8)
    wide[:, 100:200] = 255  # only the centre square is white
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert pictures.load_image_file(tmp_path / "wide.png", 28).min() > 240


def test_unreadable_and_missing_images_are_refused(tmp_path):
    (tmp_path / "notes.png").write_text("this is text, not an image")
    with pytest.raises(UserError, match="not a readable image"):
        pictures.load_image_file(tmp_path / "notes.png")
    with pytest.raises(UserError, match="does not exist"):
        pictures.load_image_file(tmp_path / "absent.jpeg")


@pytest.mark.skipif(not SHARED_SAMPLES.exists(), reason="real sample X-rays not present")
def test_real_full_size_xray_converts():
    sample = next(SHARED_SAMPLES.glob("*/*.jpeg"))
    out = pictures.load_image_file(sample, 28)
    assert out.shape == (28, 28) and 20 < out.mean() < 235


def test_reflect_augmentation_leaves_no_black_border():
    import torch

    from pneumo.data import train_augmentation
    torch.manual_seed(0)
    films = torch.full((64, 1, 28, 28), 128, dtype=torch.uint8)  # a film with no dark pixel anywhere
    for border, expect_black in (("reflect", False), ("black", True)):
        out = torch.stack([train_augmentation(28, border)(f) for f in films])
        assert out.shape == films.shape and out.dtype == torch.uint8
        assert bool((out == 0).any()) == expect_black, border
    with pytest.raises(ValueError, match="border"):
        train_augmentation(28, "zeros")
