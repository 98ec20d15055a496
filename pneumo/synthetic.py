"""Small files in PneumoniaMNIST's format with a learnable class signal, for tests and benchmarks."""
from pathlib import Path

import numpy as np


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
