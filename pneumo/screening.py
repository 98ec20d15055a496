"""Inputs the classifier has no business judging, flagged in every output instead of given a confident
answer: files too small to be a radiograph, near-constant images, and images out of distribution. The
last is the Mahalanobis screen of Lee et al. (2018) on the classifier's own 512-d features: the distance
to the nearer class mean of the train films under their shared covariance (a probabilistic-PCA model of
it, fitted with scikit-learn: COMPONENTS principal directions plus an isotropic rest, which keeps the
reference small enough for an archive's metadata), cut at the OOD_PERCENTILE-th percentile of val films.

Every script and the viewer screen through `screen_inputs`; the reference is fitted when an archive is
built (pneumo.archive.build_archive) and travels in its metadata. A verdict is then one of three `STATUS` words:
withheld (the input is flagged), borderline (P within BORDERLINE of the threshold) or read."""
from pathlib import Path

import numpy as np

from .errors import UserError
from .pictures import DATASET_SIDE, dataset_sized, picture_size

METHOD = "mahalanobis_ppca"
# A file whose short side is below this cannot be a chest radiograph: the smallest size MedMNIST+
# publishes is 64 px, and the source films are over 1,000 px.
MIN_SIDE = 64
# Standard deviation, in grey levels of 0-255, of the image at the classifier's input size below
# which it is near-constant: no anatomy to judge (real films here: tens of grey levels).
MIN_STD = 4.0
# Principal directions of the train features kept exactly; the other 480 share their mean variance.
COMPONENTS = 32
# The cut: about 1 % of val films lie beyond it by construction (benchmarks/ood_screen.py measures the rest).
OOD_PERCENTILE = 99.0
# A probability this close to the threshold is marked borderline: a small shift of the film would flip it.
BORDERLINE = 0.05
STATUS = {"withheld": "withheld: the input is flagged", "borderline": "borderline: too close to the threshold to call",
          "read": "read"}


def file_flags(path) -> list:
    """'too small' from the file's own size (the header alone is read), except a grayscale film at
    PneumoniaMNIST's own size (pneumo.pictures.dataset_sized), which is what this project's films are."""
    width, height = picture_size(path)
    if min(width, height) < MIN_SIDE and not dataset_sized(path):
        return [f"too small to be a radiograph ({width}x{height} px; the rule is a short side of at least {MIN_SIDE} px, "
                f"or a grayscale film of the dataset's own {DATASET_SIDE}x{DATASET_SIDE})"]
    return []


def image_flags(image) -> list:
    std = float(np.asarray(image, dtype=float).std())
    if std < MIN_STD:
        return [f"near-constant image (grey-level spread {std:.1f} < {MIN_STD:g}): no anatomy to judge"]
    return []


def fit_reference(train_vectors, train_labels, val_vectors) -> dict:
    """The out-of-distribution reference: class means of the train features, their shared covariance as a
    probabilistic PCA (scikit-learn), and the cut at val's OOD_PERCENTILE-th percentile of the distance."""
    from sklearn.decomposition import PCA
    x, y = np.asarray(train_vectors, dtype=np.float64), np.asarray(train_labels)
    classes = np.unique(y)
    if len(classes) < 2 or len(x) <= COMPONENTS:
        raise UserError(f"the out-of-distribution reference needs train films of both classes and more than "
                        f"{COMPONENTS} of them (got {len(x)})")
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    pca = PCA(n_components=COMPONENTS, svd_solver="full").fit(x - means[np.searchsorted(classes, y)])
    reference = {"method": METHOD, "features": "the classifier's 512-d embedding", "fitted_on": "train",
                 "n_fit": int(len(x)), "means": means.tolist(), "components": pca.components_.tolist(),
                 "variances": pca.explained_variance_.tolist(), "noise_variance": float(pca.noise_variance_),
                 "cut_split": "val", "percentile": OOD_PERCENTILE, "n_val": int(len(val_vectors))}
    scores = ood_scores(val_vectors, reference)
    reference["threshold"] = float(np.percentile(scores, OOD_PERCENTILE))
    reference["val_flagged_share"] = float(np.mean(scores > reference["threshold"]))
    return reference


def describe_reference(reference: dict) -> dict:
    """The reference without its arrays, for results files and reports."""
    return {k: v for k, v in reference.items() if k not in ("means", "components", "variances")}


def ood_scores(vectors, reference: dict) -> np.ndarray:
    """Squared Mahalanobis distance of each feature vector to the nearer class mean, under the reference's
    covariance V diag(variances) V^T + noise_variance (I - V V^T)."""
    x = np.asarray(vectors, dtype=np.float64)
    components = np.asarray(reference["components"])
    variances, noise = np.asarray(reference["variances"]), float(reference["noise_variance"])
    distances = []
    for mean in np.asarray(reference["means"]):
        d = x - mean
        projected = d @ components.T
        rest = np.einsum("ij,ij->i", d, d) - np.einsum("ij,ij->i", projected, projected)
        distances.append((projected ** 2 / variances).sum(axis=1) + rest / noise)
    return np.min(distances, axis=0)


def ood_flags(score: float, reference: dict) -> list:
    if score > reference["threshold"]:
        return [f"out of distribution: unlike the films the classifier learned from (Mahalanobis distance "
                f"{np.sqrt(score):.1f}, beyond {np.sqrt(reference['threshold']):.1f}, the "
                f"{reference['percentile']:g}th percentile of val films)"]
    return []


def screen(images, paths=None, scores=None, reference=None) -> list:
    """One list of flags per input (empty: nothing found). `paths` for user files (None for dataset
    images); `scores` (ood_scores) and their `reference` when there is one."""
    flags = []
    for i, image in enumerate(images):
        found = []
        if paths is not None and paths[i] is not None and Path(paths[i]).is_file():
            found += file_flags(paths[i])
        found += image_flags(image)
        if scores is not None:
            found += ood_flags(scores[i], reference)
        flags.append(found)
    return flags


def screen_inputs(clf, images, paths=None, archive=None, vectors=None) -> list:
    """Flags per input for a loaded classifier; with an archive (index, metadata) the out-of-distribution
    screen too. `vectors` are the images' embeddings when the caller already has them."""
    if archive is None or not archive[1].ood:
        return screen(images, paths)
    vectors = clf.embed(images) if vectors is None else vectors
    return screen(images, paths, ood_scores(vectors, archive[1].ood), archive[1].ood)


def status(probability: float, threshold: float, flags) -> str:
    """One of STATUS: withheld when flagged, borderline within BORDERLINE of the threshold, else read."""
    if flags:
        return "withheld"
    return "borderline" if abs(probability - threshold) < BORDERLINE else "read"


def region_words(region: str, flags) -> str:
    """Where a map puts its evidence, in the patient's terms; not named for a flagged input (a photograph
    has no right lung)."""
    return "not named: the input is flagged" if flags else region


def print_flags(names, flags) -> None:
    for name, found in zip(names, flags):
        for flag in found:
            print(f"warning: {name}: {flag}")
