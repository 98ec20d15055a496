"""One case, as every part of the project describes it: the classifier block (probability, decision at
the stored threshold, Grad-CAM region, similar archived cases, input flags), the VLM's narrative with
its reading and audit, and the Markdown report. task2/generate_reports.py and viewer/app.py both build
their reports here.

A case is a `Case`; what the classifier says about it, a `ClassifierBlock`; both go to the results files
through `to_json` and come back through `from_json`.
"""
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone

import numpy as np
from PIL import Image

from .audit import audit
from .data import CLASS_NAMES
from .explain import SHIPPED_NAME, coarse_region
from .impression import label_line, read_free_text
from .pictures import read_picture
from .retrieval import exclusions, score_name, search
from .runtime import UserError
from .screening import BORDERLINE, region_words, screen_inputs, status
from .vlm import build_messages, forced_choice, generate

NEIGHBOUR_FIELDS = ("rank", "split", "index", "label", "score")
CLOSER = {"l2": ": lower is closer", "cosine": ": higher is closer"}  # what a neighbour's score means


@dataclass
class ClassifierBlock:
    """What the classifier says about a case: P(pneumonia), the decision at the checkpoint's stored
    threshold, the Grad-CAM region of the pneumonia map, the input flags, the status of that decision
    (pneumo.screening.status: withheld when flagged, borderline, or read), and the similar archived cases
    (None without an archive) with the metric their scores are in."""
    checkpoint_sha256: str
    probability: float
    threshold: float
    prediction: str
    region: str
    flags: list = field(default_factory=list)
    neighbours: list | None = None
    metric: str | None = None
    status: str = "read"
    analysed: str | None = None  # when, in UTC (ISO 8601, to the second)

    @property
    def verdict(self) -> str:
        """The decision as a reader should take it: the prediction, marked borderline, or withheld."""
        if self.status == "withheld":
            return f"withheld (input flagged; the classifier's unreliable output: {self.prediction})"
        if self.status == "borderline":
            return f"{self.prediction}, borderline (P within {BORDERLINE} of the threshold)"
        return self.prediction

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ClassifierBlock":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class Case:
    """One chest X-ray: a dataset case (key = (split, index), label its truth) or a user's file (path,
    label None). `small` is the classifier's input (uint8 at its size); `display` what a page shows; the
    VLM's picture and its source; the classifier's block once analysed; and, in the viewer, Grad-CAM maps
    of both classes, the neighbours' films and the narratives asked for."""
    name: str
    small: np.ndarray
    label: str | None = None
    key: tuple | None = None
    path: str | None = None
    slug: str | None = None
    display: np.ndarray | None = None
    vlm_image: object = None
    vlm_source: str | None = None
    classifier: ClassifierBlock | None = None
    maps: dict | None = None
    neighbour_films: list = field(default_factory=list)
    records: list = field(default_factory=list)
    compared: int | None = None  # viewer: the rank of the similar case shown beside it
    notes: list = field(default_factory=list)  # how a user's file was read (pneumo.pictures.picture_notes)

    def to_json(self) -> dict:
        """What the results files keep of a case (no pixels)."""
        return {"image": self.name, "label": self.label, "key": list(self.key) if self.key else None,
                "classifier": self.classifier.to_json() if self.classifier else None}

    @classmethod
    def from_json(cls, data: dict, small=None) -> "Case":
        """The case a results record describes; pixels only when given."""
        block = data.get("classifier")
        return cls(name=data["image"], small=small, label=data.get("label"),
                   key=tuple(data["key"]) if data.get("key") else None,
                   classifier=ClassifierBlock.from_json(block) if block else None)


def vlm_picture(case, large=None):
    """(PIL picture, source) the VLM reads for a case; the one rule for every script and the viewer.
    A user's file: the file itself at full size ("file"). A dataset case: the same film at MedMNIST+'s
    larger size when `large` = (images, labels, size) of its split is given ("medmnist_<size>px"); a label
    that disagrees with the case's means a file of another release and is refused, never replaced. Without
    `large`: the classifier's own image ("medmnist_<its size>px"); callers say so."""
    if case.path:
        return read_picture(case.path).convert("RGB"), "file"
    split, index = case.key
    if large is None:
        return Image.fromarray(case.small).convert("RGB"), f"medmnist_{len(case.small)}px"
    images, labels, size = large
    if CLASS_NAMES[int(labels[index])] != case.label:
        raise UserError(f"the {size}-px file disagrees with the classifier's on the label of {split} #{index}; "
                        f"both must be PneumoniaMNIST files of the same release")
    return Image.fromarray(images[index]).convert("RGB"), f"medmnist_{size}px"


def add_classifier_blocks(clf, cases, archive=None, k=5, maps=None):
    """Set case.classifier on every case; returns the input flags per case. `archive` is (index,
    metadata) or None (no neighbours, no out-of-distribution check); `maps` are the pneumonia-class
    Grad-CAM maps when the caller already has them."""
    small = np.stack([c.small for c in cases])
    keys = [c.key for c in cases]
    neighbours, vectors = [None] * len(cases), None
    if archive is not None:
        vectors, probs = clf.embed_and_predict(small)
    else:
        probs = clf.predict_proba(small)
    if maps is None:
        maps, _ = clf.gradcam(small, target_classes=[1] * len(cases))
    if archive is not None:
        if k:
            neighbours = search(*archive, vectors, k, exclusions(archive[1], keys))
    flags = screen_inputs(clf, small, [c.path for c in cases], archive, vectors)
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for case, prob, cam, hits, found in zip(cases, probs, maps, neighbours, flags):
        case.classifier = ClassifierBlock(
            checkpoint_sha256=clf.sha256, probability=round(float(prob), 4), threshold=round(clf.threshold, 4),
            prediction=clf.label(prob), region=region_words(coarse_region(cam), found), flags=found, status=status(prob, clf.threshold, found), analysed=when,
            neighbours=[{f: h[f] for f in NEIGHBOUR_FIELDS} for h in hits] if hits else None,
            metric=archive[1].metric if archive is not None else None)
    return flags


def narrate(vlm, batch, strategy, max_new_tokens):
    """The VLM's outputs for a batch of cases (pneumo.vlm.generate), prompted with their classifier blocks,
    each with the label the model then scores for its own report (pneumo.vlm.forced_choice)."""
    model, processor = vlm
    conversations = [build_messages(strategy, case.vlm_image, context(case)) for case in batch]
    narratives = generate(model, processor, conversations, max_new_tokens)
    choices = forced_choice(model, processor, conversations, [n["text"] for n in narratives])
    return [{**n, "forced_choice": c} for n, c in zip(narratives, choices)]


def context(case):
    c = case.classifier
    return {"probability": c.probability, "threshold": c.threshold, "prediction": c.prediction,
            "region": c.region, "neighbours": c.neighbours}


def narrative_record(case, strategy, narrative, vlm, model_id, quantization):
    """What a report keeps of one narrative: model, input, prompt, text, its reading and its audit."""
    processor = vlm[1]
    size = getattr(processor.image_processor, "size", None)
    w, h = case.vlm_image.size
    prompt = build_messages(strategy, "<image>", context(case))
    usable = narrative["degenerate"] is None
    labels = label_sources(narrative["text"], narrative.get("forced_choice")) if usable else {}
    impression, source = chosen_label(labels)
    return {"strategy": strategy, "model": model_id, "quantization": quantization,
            "vlm_input": {"source": case.vlm_source, "width": w, "height": h, "mode": case.vlm_image.mode,
                          "processor_size": dict(size) if size is not None else None},
            "prompt": [{"role": m["role"], "text": " ".join(c["text"] for c in m["content"] if c["type"] == "text")}
                       for m in prompt],
            "narrative": narrative["text"] if usable else None, "raw_text": narrative["text"],
            "degenerate": narrative["degenerate"],
            "impression": impression, "label_source": source, "labels": labels,
            "forced_choice": narrative.get("forced_choice"),
            "audit": audit(narrative["text"], impression, case.classifier.to_json(), labels) if usable else {},
            "new_tokens": narrative["new_tokens"], "batch_seconds": narrative["seconds"],
            "tokens_per_second": narrative["tokens_per_second"], "peak_gpu_memory_gb": narrative["peak_gpu_memory_gb"]}


def label_sources(text, choice) -> dict:
    """The three readings of one report: the model's forced choice (None when its scores were not finite),
    the report's own Label line (None when it has none) and the free-text reading of its prose."""
    return {"forced_choice": (choice or {}).get("label"), "label_line": label_line(text), "free_text": read_free_text(text)}


def chosen_label(labels) -> tuple:
    """(label, source) the comparisons use: the forced choice, which every usable report has; else the Label
    line, else the prose (a record made without the forced choice). A degenerate output is uncertain."""
    for source in ("forced_choice", "label_line", "free_text"):
        if labels.get(source):
            return labels[source], source
    return "uncertain", None


def markdown_report(case, records, written_by):
    """The case's report: classifier block, flags, then each narrative with its reading and audit flags.
    A flagged input's report gives why it was flagged and nothing a reader could take as a diagnosis: no
    probability, decision, map region or labelled similar case."""
    c = case.classifier
    lines = [f"# Chest X-ray report: {case.name}", ""]
    if c.status == "withheld":
        lines += ["**Input flagged: no reading is given.** " + "; ".join(c.flags) + ".", "",
                  "The classifier's output on an input like this is not a reading, so neither it nor the similar "
                  "archived cases are reported. Check that the file is a frontal chest X-ray.", ""]
    lines += [f"Analysed: {c.analysed or 'unknown'}. Ground truth: {case.label or 'unknown (user image)'}.", ""]
    if case.notes:
        lines += ["How the file was read: " + "; ".join(case.notes) + ".", ""]
    if c.status != "withheld":
        lines += classifier_rows(c)
    for r in records:
        if r["narrative"] is None and r.get("note"):
            lines += ["## Narrative", "", f"No narrative: {r['note'].split(': ', 1)[-1]}.", ""]
            continue
        lines += [f"## Narrative: {r['strategy']} prompt ({r['model']}, {r['quantization']})", ""]
        if r["degenerate"]:
            lines += [f"**The model's output was {r['degenerate']} and is not shown as a report.**", ""]
            continue
        said = "withheld (input flagged)" if c.status == "withheld" else f"{c.prediction} (P = {c.probability:.3f})"
        labels = r.get("labels") or {}
        probabilities = (r.get("forced_choice") or {}).get("probabilities")
        scored = (", ".join(f"{k} {v:.2f}" for k, v in probabilities.items())) if probabilities else "not scored"
        lines += [r["narrative"], "", "| Classifier | VLM label (from) | model's forced choice | Label line | prose read as |",
                  "|---|---|---|---|---|",
                  f"| {said} | {r['impression']} ({r['label_source']}) | {scored} | "
                  f"{labels.get('label_line') or 'none'} | {labels.get('free_text') or '-'} |", ""]
        if r["audit"]:
            lines += ["**Audit flags:** " + "; ".join(f"{k}: {v}" for k, v in r["audit"].items()) + ".", ""]
    lines.append(f"_Research output, not a diagnosis. Generated by {written_by}._")
    return "\n".join(lines) + "\n"


def classifier_rows(c) -> list:
    """The classifier's table for a case that is read: P, the decision, where its map puts the evidence
    for pneumonia (for a film called normal said to be weak evidence, not a finding) and the similar cases."""
    hits = c.neighbours or []
    word = score_name(c.metric) if c.metric else "score"
    similar = ", ".join(f"{h['label']} ({h['split']} #{h['index']}, {word} {h['score']:.2f})" for h in hits) or "no index"
    if c.prediction == "pneumonia":
        evidence = c.region
    else:
        evidence = (f"none called: the decision is normal (P(pneumonia) = {c.probability:.3f}); where the map "
                    f"peaks relative to this film, not a finding: {c.region}")
    return ["| Classifier (ResNet-18 checkpoint) | |", "|---|---|",
            f"| P(pneumonia) | {c.probability:.3f} |",
            f"| Decision at val threshold {c.threshold:.3f} | **{c.verdict}** |",
            f"| {SHIPPED_NAME} evidence for pneumonia | {evidence} |",
            f"| Most similar archived cases (label, case, {word}{CLOSER.get(c.metric, '')}) | {similar} |", ""]
