import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_SAMPLES, error_line, run_cli
from pneumo.checkpoint import load_checkpoint
from pneumo.data import load_split
from pneumo.explain import SHIPPED_NAME, coarse_region, deletion_auc, deletion_curves, gradcam_maps
from pneumo.model import build_model
from task1 import gradcam


@pytest.fixture(scope="module")
def model_and_images(trained_checkpoint, synthetic_root):
    model, meta = load_checkpoint(trained_checkpoint)
    images, labels = load_split(synthetic_root, "test")
    return model, meta, images[:32], labels[:32]


def test_maps_are_normalised_per_image_at_input_size(model_and_images):
    model, meta, images, _ = model_and_images
    maps, targets = gradcam_maps(model, images, meta["normalization"], "cpu", batch_size=10)
    assert maps.shape == (32, 28, 28) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert set(targets) <= {0, 1}


def test_model_randomisation_changes_the_maps(model_and_images):
    """Adebayo et al. 2018: maps that survive re-initialising the weights explain nothing."""
    model, meta, images, labels = model_and_images
    trained, _ = gradcam_maps(model, images, meta["normalization"], "cpu", target_classes=labels)
    torch.manual_seed(123)
    random_model = build_model().eval()
    randomised, _ = gradcam_maps(random_model, images, meta["normalization"], "cpu", target_classes=labels)
    correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(trained, randomised)
                    if a.std() > 0 and b.std() > 0]
    # identical maps would give 1; a sign flip also counts as a change, so the mean is signed
    assert np.mean(np.nan_to_num(correlations)) < 0.5


def test_gradcam_is_more_faithful_than_random_maps(model_and_images):
    model, meta, images, labels = model_and_images
    positives = images[labels == 1]
    maps, targets = gradcam_maps(model, positives, meta["normalization"], "cpu")
    noise = np.random.default_rng(0).random(maps.shape).astype(np.float32)
    cam_auc = deletion_auc(deletion_curves(model, positives, maps, targets, meta["normalization"], "cpu")).mean()
    rnd_auc = deletion_auc(deletion_curves(model, positives, noise, targets, meta["normalization"], "cpu")).mean()
    assert cam_auc < rnd_auc


def peak(x, y, size=28, width=0.08):
    """A smooth map peaking at (x, y), fractions of the image's width and height from its top-left."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * width ** 2))


@pytest.mark.parametrize("x,y,words", [
    (0.2, 0.8, "right lung, lower zone"),    # image-left is the patient's right
    (0.8, 0.8, "left lung, lower zone"),
    (0.25, 0.2, "right lung, upper zone"),
    (0.75, 0.5, "left lung, middle zone"),
    (0.5, 0.45, "central (mediastinum / heart), middle zone"),  # a blob on the heart is not "bilateral"
    (0.5, 0.85, "central (mediastinum / heart), lower zone"),
])
def test_coarse_region_names_where_the_peak_is_in_patient_terms(x, y, words):
    assert coarse_region(peak(x, y)) == words


def test_coarse_region_of_two_peaks_a_plateau_and_an_empty_map():
    assert coarse_region(peak(0.2, 0.8) + peak(0.8, 0.8)) == "both lungs, lower zones"
    # a strong peak wins over a weaker one elsewhere, and a broad low plateau does not move it
    assert coarse_region(peak(0.8, 0.2) + 0.6 * peak(0.2, 0.8) + 0.3) == "left lung, upper zone"
    assert coarse_region(np.zeros((28, 28))) == "no localised evidence"
    coarse = np.zeros((4, 4))
    coarse[3, 0] = 1.0  # a 4x4 map, as layer4 gives at 28 px: bottom-left cell
    assert coarse_region(coarse) == "right lung, lower zone"


def test_cli_explains_user_files_and_refuses_bad_ones(trained_checkpoint, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (300, 180, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    files = [tmp_path / "photo.png", *sorted(SHARED_SAMPLES.glob("*/*.jpeg"))[:1]]
    result = run_cli(gradcam, "--checkpoint", trained_checkpoint, "--images", *files,
                     "--out", tmp_path / "out", "--target", "pneumonia")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "out" / "task1_gradcam_images.json").read_text())
    assert len(record["images"]) == len(files) and all(r["target"] == "pneumonia" for r in record["images"])
    assert (tmp_path / "out" / "figures" / "task1_gradcam_images.png").stat().st_size > 20_000
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    bad = run_cli(gradcam, "--checkpoint", trained_checkpoint, "--images", tmp_path / "broken.png",
                  "--out", tmp_path / "out2")
    assert bad.returncode == 1 and "not a readable image" in error_line(bad) and not (tmp_path / "out2").exists()


def lesion_films(root, cx, n=6):
    """Normal synthetic films with the synthetic pneumonia signal (a bright blob, as write_synthetic_npz
    draws it) placed at horizontal position cx of the image, lower-middle height."""
    images, labels = load_split(root, "val")
    yy, xx = np.mgrid[0:28, 0:28] / 28
    blob = 0.6 * 255 * np.exp(-((xx - cx) ** 2 + (yy - 0.65) ** 2) / 0.01)
    return np.clip(images[labels == 0][:n] + blob, 0, 255).astype(np.uint8)


# image left is the patient's right on a frontal film
@pytest.mark.parametrize("cx, side", [(0.3, "right"), (0.7, "left")])
def test_the_pneumonia_map_points_at_the_lesion(trained_checkpoint, synthetic_root, cx, side):
    from pneumo.classifier import Classifier
    clf = Classifier.load(trained_checkpoint)
    films = lesion_films(synthetic_root, cx)
    maps, used = clf.gradcam(films, target_classes=[1] * len(films))
    assert used.tolist() == [1] * len(films)
    image_left_share = maps[:, :, :14].sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    assert ((image_left_share > 0.5) == (cx < 0.5)).all(), image_left_share
    assert all(coarse_region(m).startswith(f"{side} lung") for m in maps)
    predicted, used = clf.gradcam(films)  # by default the predicted class: pneumonia on these films
    assert used.tolist() == [1] * len(films) and np.allclose(predicted, maps)


@pytest.mark.parametrize("cx, side", [(0.3, "right"), (0.7, "left")])
def test_the_scripts_name_the_lesions_side(trained_checkpoint, synthetic_root, tmp_path, cx, side):
    """gradcam.py --target pneumonia and the Task 2 report's '<shipped map> evidence for pneumonia' row."""
    from task2 import generate_reports
    paths = []
    for i, film in enumerate(lesion_films(synthetic_root, cx, n=2)):
        paths.append(tmp_path / f"lesion{i}.png")  # at 112 px: a 28-px file is flagged too small, its region not named
        Image.fromarray(film).resize((112, 112), Image.Resampling.NEAREST).save(paths[-1])
    common = ["--checkpoint", trained_checkpoint, "--images", *paths, "--index", tmp_path / "none.faiss"]
    result = run_cli(gradcam, *common, "--target", "pneumonia", "--out", tmp_path / "g")
    assert result.returncode == 0, result.stderr
    [record_file] = (tmp_path / "g").glob("task1_gradcam_*.json")
    records = json.loads(record_file.read_text())["images"]
    assert [r["target"] for r in records] == ["pneumonia"] * 2
    assert all(r["region"].startswith(f"{side} lung") for r in records), records
    result = run_cli(generate_reports, *common, "--vlm", "none", "--out", tmp_path / "r")
    assert result.returncode == 0, result.stderr
    reports = [json.loads(line) for line in (tmp_path / "r" / "reports.jsonl").read_text().splitlines()]
    assert all(r["classifier"]["region"].startswith(f"{side} lung") for r in reports), reports
    [markdown] = [p for p in (tmp_path / "r").glob("*.md") if "lesion0" in p.name]
    [row] = [line for line in markdown.read_text().splitlines() if line.startswith(f"| {SHIPPED_NAME} evidence for pneumonia |")]
    assert f"{side} lung" in row, row
