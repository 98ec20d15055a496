"""A contradiction audit of one VLM narrative: measurable flags instead of a "hallucination" verdict.

- contradicts_classifier: the impression says the opposite of a classifier that is confident
  (P(pneumonia) >= 0.9 read as normal, or <= 0.1 read as pneumonia).
- location_vs_gradcam: a finding, affirmed or hedged (not negated), placed on one side only (or in the
  upper zone only, or the lower zone only) while the Grad-CAM peak lies on the other side (or at the other
  end of the lung). Each finding is placed by its own clause, so a negated clause beside it ("left basal
  pneumonia, no right-sided consolidation") places nothing. Middle zones, both lungs and central
  maps contradict nothing: the map is 4x4 cells upsampled.
- unasked_findings: affirmed mentions of what the prompt never asked about (devices, bones, masses,
  other examinations, the patient's age): this is one film, read for lungs, heart and pleura.
- label_disagreement: the report's own Label line, or the reading of its prose, says something other than
  the label the model scores for the report (the forced choice, pneumo.vlm.forced_choice).
"""
import re

from .explain import SHIPPED_NAME
from .impression import mentions

HIGH_CONFIDENCE = 0.9
FLAGS = ("contradicts_classifier", "location_vs_gradcam", "unasked_findings", "label_disagreement")
_SIDES = {"right": re.compile(r"\bright\b", re.I), "left": re.compile(r"\bleft\b", re.I),
          "both": re.compile(r"\b(?:bilateral(?:ly)?|both)\b", re.I)}
_ZONES = {"upper": re.compile(r"\b(?:upper|apical|apex|apices)\b", re.I),
          "lower": re.compile(r"\b(?:lower|basal|bases?|basilar)\b", re.I)}


def audit(narrative: str, impression: str, classifier: dict, labels: dict | None = None) -> dict:
    """{flag: reason} for each flag raised on this narrative (empty when none). `labels` holds the three
    readings of it (pneumo.cases.label_sources)."""
    flags = {}
    p = classifier["probability"]
    if (p >= HIGH_CONFIDENCE and impression == "normal") or (p <= 1 - HIGH_CONFIDENCE and impression == "pneumonia"):
        flags["contradicts_classifier"] = f"impression {impression} against the classifier's P(pneumonia) = {p:.3f}"
    found = mentions(narrative)
    placed = [m for m in found if m["kind"] == "FINDING" and not m["negated"] and not m["context"]]
    where = location_conflict([m["clause"] for m in placed], classifier.get("region") or "")
    if where:
        flags["location_vs_gradcam"] = where
    unasked = sorted({m["text"].lower() for m in found if m["kind"] == "UNASKED" and not m["negated"] and not m["context"]})
    if unasked:
        flags["unasked_findings"] = ", ".join(unasked)
    disagreement = label_disagreement(labels or {})
    if disagreement:
        flags["label_disagreement"] = disagreement
    return flags


def label_disagreement(labels: dict):
    """Which of the Label line and the prose's reading differ from the forced choice, or None."""
    chosen = labels.get("forced_choice")
    if not chosen:
        return None
    differ = [f"{name} says {labels[source]}" for source, name in (("label_line", "Label line"), ("free_text", "prose"))
              if labels.get(source) and labels[source] != chosen]
    return f"{'; '.join(differ)}; the model's forced choice is {chosen}" if differ else None


def location_conflict(sentences, region: str):
    """Why the places named in `sentences` contradict a coarse_region answer, or None."""
    text = " ".join(sentences)
    sides = {s for s, rx in _SIDES.items() if rx.search(text)}
    zones = {z for z, rx in _ZONES.items() if rx.search(text)}
    cam_side = region.split(" ")[0] if region.startswith(("right lung", "left lung")) else None
    cam_zone = next((z for z in ("upper", "lower") if f"{z} zone" in region), None)
    if cam_side and len(sides) == 1 and sides != {"both"} and cam_side not in sides:
        return f"narrative places the finding on the {sides.pop()}, {SHIPPED_NAME} in the {region}"
    if cam_zone and len(zones) == 1 and cam_zone not in zones:
        return f"narrative places the finding in the {zones.pop()} zone, {SHIPPED_NAME} in the {region}"
    return None
