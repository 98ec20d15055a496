"""One object for a loaded classifier: its weights and its checkpoint's metadata, and every question
the scripts ask of it (probabilities, decisions, embeddings, Grad-CAM maps) at the checkpoint's own
input size, normalisation and val-chosen threshold."""
import numpy as np

from .checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from .data import CLASS_NAMES
from .explain import DEFAULT_LAYER, gradcam_maps
from .inference import embed_images, predict_proba


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
    def normalization(self) -> dict:
        return self.meta["normalization"]

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    def predict_proba(self, images, batch_size=256, desc=None) -> np.ndarray:
        """P(pneumonia) of uint8 images (N, size, size)."""
        return predict_proba(self.model, images, self.normalization, self.device, batch_size, desc)

    def decide(self, probs) -> np.ndarray:
        """Class index per probability: pneumonia strictly above the stored threshold (medmnist's rule)."""
        return (np.asarray(probs) > self.threshold).astype(int)

    def label(self, prob: float) -> str:
        return CLASS_NAMES[int(self.decide([prob])[0])]

    def embed(self, images, batch_size=256, desc=None) -> np.ndarray:
        """The 512-d pooled features that Task 3 indexes."""
        return embed_images(self.model, images, self.normalization, self.device, batch_size, desc)

    def gradcam(self, images, target_classes=None, layer=DEFAULT_LAYER, batch_size=64):
        """Grad-CAM maps (N, size, size) in [0, 1] and the class each explains (argmax when not given)."""
        return gradcam_maps(self.model, images, self.normalization, self.device, target_classes, layer, batch_size)
