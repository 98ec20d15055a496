"""MedMNIST-C's corruptions as pneumo.corruptions applies them: the same pictures as the paper's library
(where it is installed: scripts/test.sh adds it to the test environment), reproducible, and harder with
severity."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.corruptions import CORRUPTIONS, RandomCorruption, corrupt, corrupt_one


def films(n=6, size=28, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = 60 + 120 * np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * (size / 4) ** 2))
    return np.clip(base + rng.normal(0, 12, (n, size, size)), 0, 255).astype(np.uint8)


def library_table() -> dict:
    """medmnistc's own pneumoniamnist table, {name: (class name, severity parameters)}, read from its
    registry's source: importing the registry would import its blur module, which needs ImageMagick."""
    import ast
    import importlib.util
    spec = importlib.util.find_spec("medmnistc")
    if spec is None:
        pytest.skip("medmnistc is not installed (scripts/test.sh installs it)")
    source = (Path(spec.origin).parent / "corruptions" / "registry.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "pneumoniamnist" and isinstance(value, ast.Dict):
                    return {k.value: (v.func.id, ast.literal_eval(v.keywords[0].value)) for k, v in zip(value.keys, value.values)}
    raise AssertionError("no pneumoniamnist table in medmnistc's registry")


MODULES = {"Pixelate": "compression", "JPEGCompression": "compression", "GaussianNoise": "noise", "SpeckleNoise": "noise",
           "ImpulseNoise": "noise", "ShotNoise": "noise", "Brightness": "enhance", "Contrast": "enhance",
           "GammaCorrection": "enhance", "GaussianBlur": "filter"}


def test_the_same_corruptions_and_severities_as_the_library():
    table = library_table()
    assert sorted(table) == sorted(CORRUPTIONS)
    for name, (_, parameters) in table.items():
        assert tuple(parameters[:5]) == CORRUPTIONS[name][1], name


@pytest.mark.parametrize("name", sorted(n for n in CORRUPTIONS if n != "gaussian_blur"))
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_matches_the_medmnistc_library(name, severity):
    """As the library's dataset builder does it: RGB in, the class's apply at the severity, grayscale out;
    the noise drawn from the same generator state on both sides. (Its blur class is in the module that
    needs ImageMagick; the blur is one torchvision call with the kernel the table above checks.)"""
    import importlib
    class_name, parameters = library_table()[name]
    corruptor = getattr(importlib.import_module(f"medmnistc.corruptions.{MODULES[class_name]}"), class_name)(severity_params=parameters)
    for image in films(3):
        if name == "impulse_noise":
            corruptor.rng = np.random.default_rng(7)
            ours_rng = np.random.default_rng(7)
        else:
            np.random.seed(7)
            ours_rng = np.random.RandomState(7)
        theirs = np.asarray(Image.fromarray(corruptor.apply(Image.fromarray(image).convert("RGB"), severity - 1)).convert("L"))
        ours = corrupt_one(image, name, CORRUPTIONS[name][1][severity - 1], ours_rng)
        np.testing.assert_array_equal(ours, theirs)


def test_every_corruption_changes_films_more_with_severity():
    images = films()
    for name in CORRUPTIONS:
        change = [np.abs(corrupt(images, name, s).astype(float) - images).mean() for s in (1, 5)]
        assert change[1] > change[0] > 0, (name, change)


def test_corrupt_is_reproducible_and_seeded():
    images = films()
    a, b = corrupt(images, "gaussian_noise", 3, seed=1), corrupt(images, "gaussian_noise", 3, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, corrupt(images, "gaussian_noise", 3, seed=2))
    assert a.dtype == np.uint8 and a.shape == images.shape


def test_corrupt_refuses_unknown_names_and_severities():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(films(1), "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(films(1), "pixelate", 6)


def test_random_corruption_keeps_shape_and_sometimes_corrupts():
    import torch
    augment = RandomCorruption()
    image = torch.from_numpy(films(1)[0]).unsqueeze(0)
    np.random.seed(0)
    outs = [augment(image) for _ in range(40)]
    assert all(o.shape == image.shape and o.dtype == torch.uint8 for o in outs)
    changed = sum(not torch.equal(o, image) for o in outs)
    assert 20 <= changed < 40  # one choice in 14 is the film unchanged
