"""One object for a loaded classifier: its weights and its checkpoint's metadata, and every question
the scripts ask of it (probabilities, decisions, embeddings, Grad-CAM maps) at the checkpoint's own
input size, normalisation and val-chosen threshold."""
import numpy as np

from .calibration import calibrate
from .checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from .data import CLASS_NAMES, load_split
from .explain import DEFAULT_LAYER, DEFAULT_METHOD, gradcam_maps
from .inference import embed_and_logits, embed_images, predict_logits
from .metrics import decide
from .runtime import UserError


class Classifier:
    def __init__(self, model, meta: dict, device):
        self.model, self.meta, self.device = model, meta, device

    @classmethod
    def load(cls, path=DEFAULT_CHECKPOINT, device="cpu") -> "Classifier":
        """Through pneumo.checkpoint.load_checkpoint, the only loader: bad files end in one UserError line."""
        model, meta = load_checkpoint(path, device)
        return cls(model, meta, device)

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def calibration(self) -> dict:
        """How the network's log-odds become the P(pneumonia) shown (pneumo.calibration; identity for format 1)."""
        return self.meta["calibration"]

    @property
    def normalization(self) -> dict:
        return self.meta["normalization"]

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    def check_size(self, size) -> None:
        """--size on an inference script: the checkpoint decides the input size; a different ask is an error."""
        if size is not None and size != self.image_size:
            raise UserError(f"{self.meta['path']} reads {self.image_size} px images; --size {size} needs a "
                            f"checkpoint trained at that size (python task1/train.py --size {size})")

    def _calibrated(self, z) -> np.ndarray:
        """The checkpoint's P(pneumonia) of log-odds scores; NaN throughout when any score is not finite (the
        callers refuse it)."""
        return calibrate(z, self.calibration) if np.isfinite(z).all() else np.full(len(z), np.nan)

    def predict_proba(self, images, batch_size=256, desc=None) -> np.ndarray:
        """Calibrated P(pneumonia) of uint8 images (N, size, size); a non-finite probability is refused, never
        turned into a label."""
        probs = self._calibrated(predict_logits(self.model, images, self.normalization, self.device, batch_size, desc))
        bad = int((~np.isfinite(probs)).sum())
        if bad:
            raise UserError(f"the classifier {self.meta['path']} gave a non-finite probability for {bad} of "
                            f"{len(probs)} images; no label is given. Check the checkpoint and --device")
        return probs

    def predict_split(self, data_root, split: str):
        """(labels, P(pneumonia)) of a whole dataset split, read at the checkpoint's input size."""
        images, labels = load_split(data_root, split, self.image_size)
        return labels, self.predict_proba(images)

    def decide(self, probs) -> np.ndarray:
        """Class index per probability: pneumonia strictly above the stored threshold (medmnist's rule)."""
        return decide(probs, self.threshold)

    def label(self, prob: float) -> str:
        return CLASS_NAMES[int(self.decide([prob])[0])]

    def embed(self, images, batch_size=256, desc=None) -> np.ndarray:
        """The 512-d pooled features that Task 3 indexes; non-finite ones are refused."""
        vectors = embed_images(self.model, images, self.normalization, self.device, batch_size, desc)
        if not np.isfinite(vectors).all():
            raise UserError(f"the classifier {self.meta['path']} gave non-finite embeddings; nothing is searched")
        return vectors

    def embed_and_predict(self, images, batch_size=256, desc=None):
        """(embeddings, P(pneumonia)) from one forward pass, with the checks of embed and predict_proba."""
        vectors, z = embed_and_logits(self.model, images, self.normalization, self.device, batch_size, desc)
        probs = self._calibrated(z)
        if not (np.isfinite(vectors).all() and np.isfinite(probs).all()):
            raise UserError(f"the classifier {self.meta['path']} gave non-finite outputs; no label is given and "
                            f"nothing is searched. Check the checkpoint and --device")
        return vectors, probs

    def gradcam(self, images, target_classes=None, layer=DEFAULT_LAYER, batch_size=64, desc=None, method=DEFAULT_METHOD):
        """Explanation maps (N, size, size) in [0, 1] by `method` (the shipped one unless given; a CAM
        method at stage `layer`) and the class each explains (argmax when not given)."""
        return gradcam_maps(self.model, images, self.normalization, self.device, target_classes, layer, batch_size, desc,
                            method)
