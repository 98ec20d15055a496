"""Flags for inputs the classifier has no business judging: the rules on made-up inputs, and the shipped
classifier and archive on real X-rays, dataset test images and things that are not radiographs."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import REPO, SHARED_SAMPLES
from pneumo.classifier import Classifier
from pneumo.data import load_split
from pneumo.model import EMBEDDING_DIM
from pneumo.pictures import load_inputs
from pneumo.retrieval import load_index
from pneumo.screening import file_flags, image_flags, ood_flags, screen_inputs

OOD = {"metric": "l2", "threshold": 3.0, "percentile": 99.5, "intensity": {"mean": [90.0, 190.0], "std": [13.0, 65.0]}}


def test_rules_on_made_up_inputs(tmp_path):
    Image.new("L", (16, 40), 100).save(tmp_path / "tiny.png")
    Image.new("L", (64, 900), 100).save(tmp_path / "narrow.png")
    assert "too small to be a radiograph (16x40 px" in file_flags(tmp_path / "tiny.png")[0]
    assert file_flags(tmp_path / "narrow.png") == []  # the rule is the short side, at least 64 px
    assert "near-constant" in image_flags(np.full((28, 28), 77))[0]
    film = np.random.default_rng(0).normal(140, 40, (28, 28)).clip(0, 255)
    assert image_flags(film) == [] and ood_flags(film, 2.9, OOD) == []
    assert "out of distribution" in ood_flags(film, 3.1, OOD)[0]
    page = np.full((28, 28), 235.0) + np.random.default_rng(1).normal(0, 20, (28, 28))  # bright, with contrast
    assert ood_flags(page, 1.0, OOD) == [f"grey levels unlike a radiograph (mean grey level {page.mean():.1f} "
                                         f"outside val's 90.0-190.0)"]
    similarity = {**OOD, "metric": "cosine", "threshold": 0.6}
    assert ood_flags(film, 0.7, similarity) == [] and ood_flags(film, 0.5, similarity)


@pytest.fixture(scope="module")
def shipped():
    clf = Classifier.load(REPO / "models" / "task1_model.pth")
    archive = load_index(REPO / "models" / "task3_index.faiss", clf.sha256, EMBEDDING_DIM)
    return clf, archive


def not_radiographs(folder):
    """A tiny image, a flat one, noise, a photograph-like scene and a page of text."""
    rng = np.random.default_rng(0)
    Image.new("L", (16, 16), 120).save(folder / "tiny.png")
    Image.new("L", (512, 512), 128).save(folder / "flat.png")
    Image.fromarray(rng.integers(0, 255, (300, 300), dtype=np.uint8)).save(folder / "noise.png")
    height, width = 480, 640
    sky = (0.4 + 0.5 * np.linspace(1, 0, height))[:, None, None] * np.array([0.5, 0.7, 1.0])
    scene = np.broadcast_to(sky, (height, width, 3)).copy()
    scene[int(height * 0.6):] = [0.2, 0.5, 0.15]
    photo = Image.fromarray(np.uint8(np.clip(scene * 255 + rng.normal(0, 8, scene.shape), 0, 255)))
    draw = ImageDraw.Draw(photo)
    draw.ellipse((450, 60, 540, 150), fill=(255, 230, 120))
    for x in (80, 200, 330):
        draw.rectangle((x, 230, x + 20, 300), fill=(90, 60, 30))
        draw.ellipse((x - 40, 150, x + 60, 250), fill=(30, 110, 40))
    photo.save(folder / "photo.jpg")
    page = Image.new("L", (600, 400), 255)
    draw = ImageDraw.Draw(page)
    for line in range(12):
        draw.text((20, 20 + 30 * line), f"Patient report {line}: chest film reviewed, nothing to add", fill=0)
    page.save(folder / "text.png")
    return sorted(folder.iterdir())


def test_things_that_are_not_radiographs_are_flagged(shipped, tmp_path):
    clf, archive = shipped
    paths = not_radiographs(tmp_path)
    images, _, names, _ = load_inputs(paths, None, "data", "test", clf.image_size)
    flags = dict(zip(names, screen_inputs(clf, images, paths, archive)))
    assert all(flags.values()), flags
    assert any("too small" in f for f in flags["tiny.png"]) and any("near-constant" in f for f in flags["flat.png"])


@pytest.mark.skipif(not SHARED_SAMPLES.exists(), reason="real sample X-rays not present")
def test_real_xrays_pass(shipped):
    clf, archive = shipped
    paths = sorted(SHARED_SAMPLES.glob("*/*.jpeg"))
    images, _, _, _ = load_inputs(paths, None, "data", "test", clf.image_size)
    assert screen_inputs(clf, images, paths, archive) == [[]] * len(paths)


@pytest.mark.skipif(not (REPO / "data" / "pneumoniamnist.npz").exists(), reason="dataset not set up in data/")
def test_dataset_test_images_pass_but_for_a_few(shipped):
    clf, archive = shipped
    images, _ = load_split(REPO / "data", "test", clf.image_size)
    flagged = np.mean([bool(f) for f in screen_inputs(clf, images, None, archive)])
    assert flagged < 0.05
