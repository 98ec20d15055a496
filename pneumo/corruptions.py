"""MedMNIST-C's PneumoniaMNIST corruptions (Di Salvo, Doerrich and Ledig, "MedMNIST-C: Comprehensive
benchmark and improved classifier robustness by simulating realistic image corruptions", 2024), five
severities each, for the robustness benchmark and as training-time augmentation.

The definitions and severity tables are those of the paper's library (`medmnistc` 0.1.0,
corruptions/registry.py and the classes it names), which cannot be a dependency here: it pins
scikit-image 0.23.2 (no wheel for Python 3.13, the Colab line) and medmnist 3.0.1, and importing its
blur module needs ImageMagick's C library for corruptions PneumoniaMNIST does not use.
tests/test_corruptions.py compares these with the library's own classes where it is installed.

As in the library, a grayscale film is corrupted as an RGB picture and converted back to grayscale
(so the three channels' independent noise is averaged by the luma weights). The library applies them
to 224-px films; here they act on the film at the model's input size (28 px), where the blur and
pixelation are relatively stronger.
"""
from io import BytesIO

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageEnhance
from skimage.util import random_noise

SEVERITIES = (1, 2, 3, 4, 5)


def _brightness(img, factor, rng):
    return ImageEnhance.Brightness(img).enhance(factor)


def _contrast(img, factor, rng):
    return ImageEnhance.Contrast(img).enhance(factor)


def _gamma(img, gamma, rng):
    return TF.adjust_gamma(img, gamma, gain=1)


def _gaussian_blur(img, kernel, rng):
    return TF.gaussian_blur(img, kernel_size=int(kernel))


def _pixelate(img, factor, rng):
    width, height = img.size
    small = img.resize((int(width * factor), int(height * factor)), Image.BOX)
    return small.resize((width, height), Image.BOX)


def _jpeg(img, quality, rng):
    buffer = BytesIO()
    img.save(buffer, "JPEG", quality=int(quality))
    return Image.open(buffer)


def _unit(img):
    return np.asarray(img) / 255.0


def _gaussian_noise(img, scale, rng):
    x = _unit(img)
    return np.clip(x + rng.normal(size=x.shape, scale=scale), 0, 1)


def _speckle_noise(img, scale, rng):
    x = _unit(img)
    return np.clip(x + x * rng.normal(size=x.shape, scale=scale), 0, 1)


def _shot_noise(img, photons, rng):
    return np.clip(rng.poisson(_unit(img) * photons) / photons, 0, 1)


def _impulse_noise(img, amount, rng):
    return np.clip(random_noise(_unit(img), mode="s&p", amount=amount, rng=rng), 0, 1)


# name: (function, the parameter at severities 1-5), as medmnistc's registry gives them for pneumoniamnist.
CORRUPTIONS = {
    "pixelate": (_pixelate, (0.8, 0.7, 0.6, 0.5, 0.40)),
    "jpeg_compression": (_jpeg, (50, 30, 15, 10, 7)),
    "gaussian_noise": (_gaussian_noise, (0.04, 0.05, 0.06, 0.07, 0.08)),
    "speckle_noise": (_speckle_noise, (0.05, 0.07, 0.10, 0.15, 0.20)),
    "impulse_noise": (_impulse_noise, (0.005, 0.01, 0.013, 0.017, 0.02)),
    "shot_noise": (_shot_noise, (300, 200, 150, 100, 80)),
    "gaussian_blur": (_gaussian_blur, (3, 5, 7, 9, 11)),
    "brightness_up": (_brightness, (1.1, 1.2, 1.3, 1.4, 1.5)),
    "brightness_down": (_brightness, (0.9, 0.8, 0.7, 0.6, 0.5)),
    "contrast_up": (_contrast, (1.1, 1.2, 1.3, 1.4, 1.6)),
    "contrast_down": (_contrast, (0.9, 0.8, 0.7, 0.6, 0.4)),
    "gamma_corr_up": (_gamma, (1.1, 1.2, 1.3, 1.4, 1.6)),
    "gamma_corr_down": (_gamma, (0.9, 0.8, 0.7, 0.6, 0.4)),
}


def _to_gray_uint8(out) -> np.ndarray:
    if isinstance(out, Image.Image):
        out = np.asarray(out)
    elif out.dtype != np.uint8:  # the noise corruptions return floats in [0, 1]; the library truncates
        out = (out * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(np.ascontiguousarray(out)).convert("L"))


def corrupt_one(image: np.ndarray, name: str, parameter, rng) -> np.ndarray:
    """One uint8 (H, W) film corrupted by `name` with the given parameter; rng (a numpy Generator or
    RandomState) draws the noise."""
    function, _ = CORRUPTIONS[name]
    return _to_gray_uint8(function(Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB"), parameter, rng))


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """uint8 films (N, H, W) under one corruption at severity 1-5, reproducible from `seed`."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, not {severity!r}")
    parameter = CORRUPTIONS[name][1][severity - 1]
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), severity])
    return np.stack([corrupt_one(image, name, parameter, rng) for image in np.asarray(images)])


def corrupted_copies(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Every corruption at every severity: uint8 (13 corruptions, 5 severities, N, H, W) in CORRUPTIONS order."""
    return np.stack([np.stack([corrupt(images, name, s, seed=seed) for s in SEVERITIES]) for name in CORRUPTIONS])


class RandomCorruption:
    """Training-time augmentation as in MedMNIST-C's AugMedMNISTC: each call picks one corruption, or
    none, uniformly, with its parameter drawn uniformly between severity 1's and severity 5's (for the
    blur, kernels 3-11; the library's table reaches 13, beyond its five severities). Works on
    a uint8 (1, H, W) tensor (XrayDataset's items); the draws come from numpy's global generator, which
    train.py seeds per epoch and DataLoader seeds per worker."""

    def __init__(self, names=tuple(CORRUPTIONS)):
        self.names = list(names) + [None]

    def __call__(self, image):
        import torch
        name = self.names[np.random.randint(len(self.names))]
        if name is None:
            return image
        low, high = CORRUPTIONS[name][1][0], CORRUPTIONS[name][1][-1]
        parameter = np.random.uniform(min(low, high), max(low, high))
        if name == "gaussian_blur":  # an odd kernel, as the library draws it
            parameter = int(parameter) - (int(parameter) % 2 == 0)
        elif name == "jpeg_compression":
            parameter = int(parameter)
        rng = np.random.default_rng(np.random.randint(2**31))  # noise drawn from the seeded global state
        out = corrupt_one(image[0].numpy(), name, parameter, rng)
        return torch.from_numpy(out.copy()).unsqueeze(0)
