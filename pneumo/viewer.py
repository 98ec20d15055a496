"""What the case viewer (viewer/app.py) knows about one chest X-ray, without any user interface: the
classifier block, Grad-CAM for either class, the nearest archived cases with their films, the report,
and the browsing of a dataset split with the filters a researcher wants. Every number comes from the
same package code the scripts use (pneumo.cases, pneumo.classifier, pneumo.retrieval)."""
import json
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from .annotate import aligned_overlay, marked_film
from .archive import ArchiveSource, open_optional
from .cases import Case, add_classifier_blocks, markdown_report, narrate, narrative_record, vlm_picture
from .classifier import Classifier
from .data import CLASS_NAMES, SPLITS, data_file, load_split
from .explain import coarse_region
from .pictures import classifier_input, picture_notes, read_picture
from .runtime import UserError
from .screening import region_words
from .vlm import VlmSession

WRITTEN_BY = "viewer/app.py"
DATASET_ZOOM = 10  # a 28-px dataset film is shown at 280 px, each source pixel a visible block
SHOWN_SIDE = 280   # a small uploaded film is enlarged to about this side, as the dataset's are
OUTCOMES = ("all", "correct", "incorrect")
# What a flagged input's downloaded JSON leaves empty: everything a reader could take as a reading of it.
WITHHELD_FIELDS = ("probability", "prediction", "region", "neighbours")


class CaseViewer:
    def __init__(self, checkpoint, source: ArchiveSource, data_root, device="cpu", k=5, vlm: VlmSession | None = None,
                 vlm_note=None):
        self.clf = Classifier.load(checkpoint, device)
        self.data_root, self.k = data_root, k
        self.archive, self.index_note = open_optional(source, self.clf, data_root)  # the verdict and map go on
        self.vlm, self.vlm_note = vlm, vlm_note
        self._splits, self._probs = {}, {}
        # One model, one caller at a time: Grad-CAM hooks the model's layers and runs a backward pass, and two
        # server threads doing so at once crashed the process (a segfault in libtorch, under 8 clients).
        self._model_lock = threading.Lock()

    # ---- where cases come from -------------------------------------------------------------------
    def split(self, name, size=None):
        """(images, labels) of a dataset split at the classifier's size (or `size`), read once."""
        size = size or self.clf.image_size
        if (name, size) not in self._splits:
            self._splits[name, size] = load_split(self.data_root, name, size)
        return self._splits[name, size]

    def probabilities(self, name):
        if name not in self._probs:
            with self._model_lock:
                self._probs[name] = self.clf.predict_proba(self.split(name)[0])
        return self._probs[name]

    def dataset_case(self, split, index):
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        images, labels = self.split(split)
        if index is None or float(index) != int(float(index)):
            raise UserError(f"the index must be a whole number, not {index!r}")
        index = int(float(index))
        if not 0 <= index < len(labels):  # in the page's words, not a command-line flag's
            raise UserError(f"there is no case {index} in the {split} split: its cases are numbered 0 to {len(labels) - 1}")
        return Case(f"{split} #{index}", images[index], CLASS_NAMES[labels[index]], (split, index),
                    display=enlarged(images[index]))

    def file_case(self, path, name=None):
        """A user's file (PNG, JPEG, DICOM, ...), named by its file name alone."""
        picture = read_picture(path)  # decoded once: the classifier's input and the display both come from it
        small = classifier_input(picture, self.clf.image_size)
        if max(picture.size) * 2 <= SHOWN_SIDE:  # a dataset-sized film: enlarged as the dataset's are
            display = enlarged(np.asarray(picture), max(2, SHOWN_SIDE // max(picture.size)))
        else:
            display = picture.copy()
            display.thumbnail((512, 512))
            display = np.asarray(display)
        return Case(name or Path(path).name, small, path=str(path), display=display, notes=picture_notes(path))

    def matching(self, split, truth="all", predicted="all", outcome="all", p_min=0.0, p_max=1.0):
        """Indices of `split` whose true label, decision, correctness and P(pneumonia) pass the filters;
        mistakes come most confident first (as evaluate.py's failure cases), the rest in index order."""
        _, labels = self.split(split)
        probs = self.probabilities(split)
        decided = self.clf.decide(probs)
        keep = (probs >= p_min) & (probs <= p_max)
        if truth != "all":
            keep &= labels == CLASS_NAMES.index(truth)
        if predicted != "all":
            keep &= decided == CLASS_NAMES.index(predicted)
        if outcome != "all":
            keep &= (decided == labels) == (outcome == "correct")
        rows = np.flatnonzero(keep)
        if outcome == "incorrect":
            rows = rows[np.argsort(-np.abs(probs[rows] - self.clf.threshold), kind="stable")]
        return [{"index": int(i), "label": CLASS_NAMES[labels[i]], "probability": float(probs[i]),
                 "prediction": CLASS_NAMES[decided[i]]} for i in rows]

    # ---- what is said about a case ---------------------------------------------------------------
    def analyse(self, case):
        """The case with its classifier block, the pneumonia Grad-CAM map (the other class's is made when it
        is first asked for) and neighbour films."""
        with self._model_lock:
            maps, _ = self.clf.gradcam(case.small[None], target_classes=[1])
            case.maps = {"pneumonia": maps[0]}
            add_classifier_blocks(self.clf, [case], self.archive, self.k, maps=maps)
        # an archive of a vector file may hold cases that are no dataset film: a blank square stands for them
        case.neighbour_films = [self.split(h["split"])[0][h["index"]] if h["split"] in SPLITS
                                else np.zeros((self.clf.image_size,) * 2, np.uint8) for h in case.classifier.neighbours or []]
        case.records = []
        return case

    def film(self, case):
        """The film as the page shows it, with its orientation marks."""
        return marked_film(case.display)

    def cam(self, case, target="pneumonia"):
        """The case's Grad-CAM map for `target`, made on first use."""
        if target not in case.maps:
            with self._model_lock:
                case.maps[target] = self.clf.gradcam(case.small[None], target_classes=[CLASS_NAMES.index(target)])[0][0]
        return case.maps[target]

    def overlay(self, case, target="pneumonia", opacity=0.6):
        """The map over the film as shown (where the classifier looked), with marks and colour scale; a class
        that is not the decision drawn only as strongly as its evidence (evidence_weight), and said so."""
        weight = evidence_weight(case.classifier, target)
        note = None
        if case.classifier.status == "withheld":
            note = "the input is flagged: not a reading"
        elif target != case.classifier.prediction:
            note = f"not the decision: drawn at {weight:.0%} strength"
        return aligned_overlay(case.display, self.cam(case, target), float(opacity), target, weight, note)

    def neighbour(self, case, rank):
        """(the neighbour of that rank (1 = nearest), its film enlarged and marked); a UserError when the
        case has no such neighbour."""
        hits = (case.classifier.neighbours if case.classifier else None) or []
        if not 1 <= rank <= len(hits):
            raise UserError(f"{case.name} has no similar case number {rank}")
        return hits[rank - 1], marked_film(enlarged(case.neighbour_films[rank - 1]))

    def region(self, case, target="pneumonia"):
        return region_words(coarse_region(self.cam(case, target)), case.classifier.flags)

    def narrate(self, case, strategy="context_aware", max_new_tokens=300):
        """The VLM's narrative for the case, on request; a clear error when no VLM is loaded."""
        if self.vlm is None:
            raise UserError(self.vlm_note or "no VLM is loaded (start the viewer with --vlm auto on a GPU)")
        case.vlm_image, case.vlm_source = self.vlm_image(case)
        narrative = narrate(self.vlm.pair, [case], strategy, max_new_tokens)[0]
        record = narrative_record(case, strategy, narrative, self.vlm.pair, self.vlm.model_id, self.vlm.quantization)
        case.records = [r for r in case.records if r["strategy"] != strategy] + [record]
        return record

    def vlm_image(self, case):
        """pneumo.cases.vlm_picture, with MedMNIST+'s 224-px film when it is on disk (a file of another
        release is refused there, as in generate_reports)."""
        large = None
        if not case.path and data_file(self.data_root, 224).exists():
            large = (*self.split(case.key[0], 224), 224)
        return vlm_picture(case, large)

    def report(self, case):
        """(Markdown, JSON text) of the case's report: the same Markdown generate_reports writes."""
        markdown = markdown_report(case, case.records, WRITTEN_BY)
        data = {**case.to_json(), "notes": case.notes, "narratives": case.records, "index": self.index_summary()}
        if case.classifier.status == "withheld":  # as the page and the Markdown: why, and no reading
            data["classifier"] = {**data["classifier"], **dict.fromkeys(WITHHELD_FIELDS)}
        return markdown, json.dumps(data, indent=2, default=str)

    def index_summary(self):
        if self.archive is None:
            return {"index": None, "note": self.index_note}
        meta = self.archive[1]
        return {"cases": len(meta.rows), "metric": meta.metric, "backend": meta.build.get("backend", "faiss"),
                "index_sha256": (meta.index_sha256 or "")[:12] or None,
                "checkpoint_matches": meta.checkpoint_sha256 == self.clf.sha256}


def decided_class(block) -> str | None:
    """The class whose map a case opens on: the decision, or None for a flagged input (no decision)."""
    return None if block.status == "withheld" else block.prediction


def evidence_weight(block, target) -> float:
    """How strongly a class's map is drawn, in [0, 1]: 1 for the class decided on; for the other, its
    probability as a share of what it would need to be decided (P / threshold for pneumonia, (1 - P) /
    (1 - threshold) for normal), so a map of evidence the classifier found weak is drawn as weak, not as
    a red hotspot (Grad-CAM maps are scaled to their own peak, however small)."""
    p, t = block.probability, block.threshold
    share = p / t if target == "pneumonia" else (1 - p) / (1 - t)
    return float(np.clip(share, 0, 1))


def enlarged(picture: np.ndarray, zoom: int = DATASET_ZOOM) -> np.ndarray:
    """A dataset film (or its overlay) at `zoom` times its size, each source pixel a block (nearest
    neighbour: no detail is invented), so a 28-px stamp fills the panel."""
    image = Image.fromarray(picture)
    return np.asarray(image.resize((image.width * zoom, image.height * zoom), Image.Resampling.NEAREST))
