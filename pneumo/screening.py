"""Inputs the classifier has no business judging, flagged in every output instead of given a confident
answer: files too small to be a radiograph, near-constant images, and images out of distribution (their
embedding farther from every archived case, or their grey levels further from val's, than almost any
val image's)."""
from pathlib import Path

import numpy as np

from .errors import UserError
from .pictures import picture_size
from .retrieval import exclusions, load_index, score_name, search

# A file whose short side is below this cannot be a chest radiograph: the smallest size MedMNIST+
# publishes is 64 px, and the source films are over 1,000 px.
MIN_SIDE = 64
# Standard deviation, in grey levels of 0-255, of the image at the classifier's input size below
# which it is near-constant: no anatomy to judge (real films here: tens of grey levels).
MIN_STD = 4.0
# The out-of-distribution cuts: this percentile of val images' distance to their nearest archived case
# (themselves left out), and the same tails of their mean grey level and grey-level spread. About 0.5 %
# of val images lie beyond each cut (2.5 % beyond any, measured on the shipped model).
OOD_PERCENTILE = 99.5


def file_flags(path) -> list:
    """'too small' from the file's own size (the header alone is read)."""
    width, height = picture_size(path)
    if min(width, height) < MIN_SIDE:
        return [f"too small to be a radiograph ({width}x{height} px; the rule is a short side of at least {MIN_SIDE} px)"]
    return []


def image_flags(image) -> list:
    std = float(np.asarray(image, dtype=float).std())
    if std < MIN_STD:
        return [f"near-constant image (grey-level spread {std:.1f} < {MIN_STD:g}): no anatomy to judge"]
    return []


def ood_reference(nearest_scores, metric: str, val_images) -> dict:
    """What val images look like, for the out-of-distribution flags: the cut for the nearest-archived-
    case score (99.5th percentile of L2 distances, or 0.5th percentile of cosine similarities), and the
    0.5th-99.5th percentile range of their mean grey level and grey-level spread."""
    scores = np.asarray(nearest_scores, dtype=float)
    q = OOD_PERCENTILE if metric == "l2" else 100 - OOD_PERCENTILE
    flat = np.asarray(val_images, dtype=float).reshape(len(val_images), -1)
    band = (100 - OOD_PERCENTILE, OOD_PERCENTILE)
    return {"split": "val", "percentile": q, "metric": metric, "threshold": float(np.percentile(scores, q)),
            "n": int(len(scores)),
            "intensity": {"mean": np.percentile(flat.mean(axis=1), band).tolist(),
                          "std": np.percentile(flat.std(axis=1), band).tolist()}}


def nearest_score(hits):
    return hits[0]["score"]


def is_out_of_distribution(score, ood: dict) -> bool:
    return score > ood["threshold"] if ood["metric"] == "l2" else score < ood["threshold"]


def ood_flags(image, score, ood: dict) -> list:
    """Out of distribution by the embedding (nearest archived case farther than almost every val
    image's) or by the grey levels (mean or spread outside val's 0.5-99.5 percentile range)."""
    if ood is None:
        return []
    flags = []
    if is_out_of_distribution(score, ood):
        word = score_name(ood["metric"])
        flags.append(f"out of distribution (nearest archived case at {word} {score:.3f}, beyond the "
                     f"{ood['percentile']:g}th percentile of val images, {ood['threshold']:.3f})")
    pixels = np.asarray(image, dtype=float)
    for name, value in (("mean", pixels.mean()), ("std", pixels.std())):
        lo, hi = ood["intensity"][name]
        if not lo <= value <= hi:
            what = "mean grey level" if name == "mean" else "grey-level spread"
            flags.append(f"grey levels unlike a radiograph ({what} {value:.1f} outside val's {lo:.1f}-{hi:.1f})")
    return flags


def screen(images, paths=None, nearest_scores=None, ood=None) -> list:
    """One list of flags per input (empty: nothing found). `paths` for user files (None for dataset
    images); `nearest_scores` and `ood` when an archive was searched."""
    flags = []
    for i, image in enumerate(images):
        found = []
        if paths is not None and paths[i] is not None and Path(paths[i]).is_file():
            found += file_flags(paths[i])
        found += image_flags(image)
        if nearest_scores is not None:
            found += ood_flags(image, nearest_scores[i], ood)
        flags.append(found)
    return flags


def open_archive(path, clf, dim, data_root=None):
    """(index, metadata) for the out-of-distribution flags, or None with a one-line note: a missing or
    stale archive leaves those flags out but does not stop the classifier's own answer."""
    try:
        return load_index(path, clf.sha256, dim, data_root)
    except UserError as err:
        print(f"note: no out-of-distribution check: {err}")
        return None


def screen_inputs(clf, images, paths=None, archive=None, keys=None, vectors=None) -> list:
    """Flags per input for a loaded classifier; with an archive (index, metadata) the embedding and
    grey-level checks too. `keys` ((split, index) or None) leave an archived query out of its own search;
    `vectors` are the images' embeddings when the caller already has them."""
    if archive is None or archive[1].ood is None:
        return screen(images, paths)
    index, meta = archive
    vectors = clf.embed(images) if vectors is None else vectors
    hits = search(index, meta, vectors, 1, exclusions(meta, keys or [None] * len(images)))
    return screen(images, paths, [nearest_score(h) for h in hits], meta.ood)


def print_flags(names, flags) -> None:
    for name, found in zip(names, flags):
        for flag in found:
            print(f"warning: {name}: {flag}")
