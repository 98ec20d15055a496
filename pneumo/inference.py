"""Batched forward passes of a loaded classifier over uint8 images: probabilities and embeddings."""
import numpy as np
import torch
from tqdm.auto import tqdm

from .data import normalize


@torch.inference_mode()
def run_batches(model, images, normalization, device, fn, batch_size=256, desc=None):
    """Apply fn(model, x) batch by batch to uint8 images (N, H, W); concatenated numpy result."""
    model.eval()
    images = torch.as_tensor(np.asarray(images))
    outputs = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        x = normalize(images[start:start + batch_size], normalization).to(device)
        outputs.append(fn(model, x).float().cpu())
    return torch.cat(outputs).numpy()


def predict_proba(model, images, normalization, device="cpu", batch_size=256, desc=None):
    """P(pneumonia) per image."""
    return run_batches(model, images, normalization, device,
                       lambda m, x: torch.softmax(m(x), dim=1)[:, 1], batch_size, desc)


def predict_logits(model, images, normalization, device="cpu", batch_size=256, desc=None):
    """The log-odds score z = logit(pneumonia) - logit(normal) per image: P(pneumonia) = sigmoid(z) before
    any calibration (pneumo.calibration)."""
    return run_batches(model, images, normalization, device,
                       lambda m, x: (lambda out: out[:, 1] - out[:, 0])(m(x)), batch_size, desc)


def embed_and_logits(model, images, normalization, device="cpu", batch_size=256, desc=None):
    """(512-d embeddings, log-odds scores as predict_logits gives them) per image from one forward pass (the
    classifier's head reads the embedding), for callers that need both."""
    def both(m, x):
        vectors = m.embed(x)
        out = m.fc(vectors)
        return torch.cat([vectors, out[:, 1:] - out[:, :1]], dim=1)
    out = run_batches(model, images, normalization, device, both, batch_size, desc)
    return out[:, :-1], out[:, -1]


def embed_images(model, images, normalization, device="cpu", batch_size=256, desc=None):
    """512-d pooled embeddings per image."""
    return run_batches(model, images, normalization, device, lambda m, x: m.embed(x), batch_size, desc)
