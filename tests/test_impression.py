"""Reading narratives back: the Label line, the parse-based fallback on the labelled sets, and the audit flags."""
import json
from pathlib import Path

import pytest

from pneumo.audit import audit, location_conflict
from pneumo.impression import LABELS, impression_section, label_line, mentions, parse_impression, read_free_text

DATA = Path(__file__).parent / "data"
SETS = ("impressions.jsonl", "impressions_heldout.jsonl")
VLM_STYLE = "impressions_heldout_vlm.jsonl"  # 66 whole outputs, written before the reader was fixed for them
# Issue 33: its six misreadings, and two sets written blind (tests/data/README.md has their first reads)
LATER = ("impressions_issue33.jsonl", "impressions_heldout_parse.jsonl", "impressions_heldout_after.jsonl",
         "impressions_heldout_last.jsonl")
EVERY = (*SETS, VLM_STYLE, *LATER)


def labelled(name):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()]


def test_the_labelled_set_is_large_varied_and_balanced_enough():
    rows = [r for name in SETS for r in labelled(name)]
    assert len(rows) >= 60 and {r["label"] for r in rows} == set(LABELS)
    assert min(sum(r["label"] == label for r in rows) for label in LABELS) >= 15
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts)
    assert sum("**" in t or "###" in t for t in texts) >= 4 and sum("Label" in t for t in texts) >= 5


@pytest.mark.parametrize("name", SETS)
def test_error_rate_on_the_labelled_impressions_is_at_most_3_percent(name):
    rows = labelled(name)
    wrong = [(r["text"], r["label"], parse_impression(r["text"])[0]) for r in rows
             if parse_impression(r["text"])[0] != r["label"]]
    assert len(wrong) <= 0.03 * len(rows), wrong


def test_the_vlm_style_set_is_misread_at_most_5_percent():
    """Measured: 17 of 66 misread by the first NegEx reader, 3 by the fixed one, 2 by the parse-based one."""
    rows = labelled(VLM_STYLE)
    assert len(rows) >= 60
    wrong = [(r["text"], r["label"], parse_impression(r["text"])[0]) for r in rows
             if parse_impression(r["text"])[0] != r["label"]]
    assert len(wrong) <= 0.05 * len(rows), wrong


@pytest.mark.parametrize("name", LATER)
def test_the_sets_written_for_issue_33_are_read_within_2_percent(name):
    """Their first reads (before any change for them) are in tests/data/README.md: 2 of 59, 4 of 51, 4 of 50."""
    rows = labelled(name)
    wrong = [(r["text"], r["label"], parse_impression(r["text"])[0]) for r in rows
             if parse_impression(r["text"])[0] != r["label"]]
    assert len(wrong) <= 0.02 * len(rows), wrong


@pytest.mark.parametrize("name", EVERY)
def test_no_set_has_an_abnormal_film_read_as_normal_or_a_normal_one_as_pneumonia(name):
    """Read without its Label line: an abnormal or unreadable film called normal would hide it; a normal one
    called pneumonia would inflate sensitivity in --evaluate."""
    rows = labelled(name)
    missed = [r["text"] for r in rows if r["label"] != "normal" and read_free_text(r["text"]) == "normal"]
    flipped = [r["text"] for r in rows if r["label"] == "normal" and read_free_text(r["text"]) == "pneumonia"]
    assert not missed and not flipped, (missed, flipped)


@pytest.mark.parametrize("text,expected", [
    # the constructs issue 33 quoted: negation far from its target, a concession before the main clause,
    # questions of whether, a preference, the vocabulary
    ("Although pneumonia was the clinical concern, I do not see any radiographic evidence to support it.", "normal"),
    ("Although the heart is normal and there is no effusion, the left base shows an opacity consistent with "
     "lower lobe pneumonia.", "pneumonia"),
    ("I cannot reliably determine whether pneumonia is present.", "uncertain"),
    ("It is difficult to say whether this is pneumonia.", "uncertain"),
    ("The appearance favors pneumonia over atelectasis.", "pneumonia"),
    ("Atelectasis is favoured over pneumonia.", "uncertain"),
    ("Perihilar opacities suggesting viral pneumonitis.", "pneumonia"),
    ("Patchy bilateral bronchopneumonia.", "pneumonia"),
    ("No evidence of consolidation, effusion or infiltrates.", "normal"),  # a list shares the negation
    ("It is not possible to decide whether there is pneumonia.", "uncertain"),  # a negated hedge
    ("The question of pneumonia raised in the request is not borne out.", "normal"),
    ("There is no consolidation to suggest a bacterial pneumonia.", "normal"),
    ("Minimal opacity that may or may not represent early infection.", "uncertain"),  # a modal and a negation
])
def test_clause_structure_decides_the_reading(text, expected):
    assert read_free_text(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Streaky atelectasis rather than pneumonia.", "normal"),  # preference, a pseudo-negation
    ("Likely atelectasis. Pneumonia is considered less likely.", "uncertain"),  # comparative likelihood
    ("Atelectasis and pneumonia cannot be distinguished.", "uncertain"),
    ("Early infection is not entirely excluded.", "uncertain"),
    ("Impression: Normal.\n\nNote: this is not a diagnosis; pneumonia should be excluded clinically.", "normal"),
    ("Impression: Normal. Note that early pneumonia may not be visible.", "normal"),  # an inline note ends it
    ("Impression: Clear lungs.\n*Disclaimer: pneumonia must be assessed by a clinician.*", "normal"),
    ("Left lower lobe consolidation is no longer evident.", "normal"),
    ("No consolidation or infiltrate.", "normal"),          # a negated list
    ("Pneumonia is not seen.", "normal"),                   # negation after the noun
    ("Pneumonia is unlikely.", "normal"),
    ("Cannot exclude early pneumonia.", "uncertain"),       # hedges
    ("Questionable opacity at the right base.", "uncertain"),
    ("Interval resolution of the previous pneumonia.", "normal"),  # resolution
    ("**Impression**: Right lower lobe pneumonia.", "pneumonia"),  # Markdown heading
    ("No pleural effusion, but there is right lower lobe consolidation.", "pneumonia"),  # scope ends at "but"
    ("", "uncertain"),
])
def test_the_failures_the_old_parser_made_are_read_right(text, expected):
    assert read_free_text(text) == expected


def test_the_label_line_is_read_first_and_its_source_recorded():
    text = "Findings: Right lower lobe consolidation.\nImpression: Pneumonia.\n**Label:** Uncertain"
    assert parse_impression(text) == ("uncertain", "label_line")
    assert parse_impression("Impression: Right lower lobe pneumonia.") == ("pneumonia", "fallback")
    assert label_line("Label: normal\nLabel: pneumonia") == "pneumonia"  # the last one wins
    assert label_line("The label: a normal-looking film") is None  # only a line that starts with Label


def test_the_impression_section_is_the_text_after_the_last_heading():
    text = "**Findings:** Patchy opacity.\n### Impression\nNormal heart.\nRecommendations: none\nLabel: normal"
    assert impression_section(text) == "Normal heart."
    assert impression_section("Lungs clear.") == "Lungs clear."


def test_mentions_carry_negation_and_hedging():
    found = {m["text"].lower(): m for m in mentions("No fracture. Possible pneumonia. Nasogastric tube in place.")}
    assert found["fracture"]["negated"] and not found["fracture"]["hedged"]
    assert found["pneumonia"]["hedged"] and not found["nasogastric tube"]["negated"]


def test_audit_flags_a_contradicted_confident_classifier():
    confident = {"probability": 0.97, "region": "right lung, lower zone"}
    assert "contradicts_classifier" in audit("Impression: Normal.\nLabel: normal", "normal", confident)
    assert "contradicts_classifier" not in audit("Impression: Pneumonia.", "pneumonia", confident)
    unsure = {"probability": 0.6, "region": "right lung, lower zone"}
    assert "contradicts_classifier" not in audit("Impression: Normal.", "normal", unsure)
    assert "contradicts_classifier" in audit("Impression: Pneumonia.", "pneumonia", {"probability": 0.05, "region": ""})


def test_audit_flags_a_side_or_zone_that_grad_cam_puts_elsewhere():
    assert location_conflict(["Left lower lobe pneumonia."], "right lung, lower zone").startswith("narrative places the finding on the left")
    assert location_conflict(["Right upper lobe consolidation."], "right lung, lower zone").startswith("narrative places the finding in the upper")
    assert location_conflict(["Right lower lobe pneumonia."], "right lung, lower zone") is None
    assert location_conflict(["Bilateral infiltrates."], "right lung, lower zone") is None
    assert location_conflict(["Left lower lobe pneumonia."], "both lungs, lower zones") is None
    assert location_conflict(["Left lower lobe pneumonia."], "central (mediastinum / heart), middle zone") is None
    # a negated finding on the other side places nothing
    flags = audit("No left-sided consolidation. Right basal pneumonia.", "pneumonia", {"probability": 0.9, "region": "right lung, lower zone"})
    assert "location_vs_gradcam" not in flags


def test_audit_flags_affirmed_findings_nobody_asked_about():
    clf = {"probability": 0.5, "region": "no localised evidence"}
    flags = audit("Findings: Clear lungs. Compared with the prior study, a nasogastric tube is seen. No fracture.", "normal", clf)
    assert flags["unasked_findings"] == "nasogastric tube, prior study"
    assert audit("Findings: Clear lungs. No fracture or mass.\nImpression: Normal.", "normal", clf) == {}


def test_a_negated_finding_alone_places_nothing():
    """Only affirmed findings are located: a negated one on the other side raises no flag."""
    clf = {"probability": 0.9, "region": "right lung, lower zone"}
    assert "location_vs_gradcam" not in audit("No left-sided consolidation.", "normal", clf)
    assert "location_vs_gradcam" in audit("Left-sided consolidation.", "pneumonia", clf)


def test_audit_places_each_finding_by_its_own_clause_and_checks_hedged_ones():
    clf = {"probability": 0.9, "region": "right lung, lower zone"}
    flags = audit("Left basal pneumonia, no right-sided consolidation.", "pneumonia", clf)  # both sides, one sentence
    assert flags["location_vs_gradcam"].startswith("narrative places the finding on the left")
    flags = audit("No right-sided consolidation; left basal pneumonia.", "pneumonia", clf)
    assert flags["location_vs_gradcam"].startswith("narrative places the finding on the left")
    assert "location_vs_gradcam" in audit("Possible left basal consolidation.", "uncertain", clf)  # hedged
    assert "location_vs_gradcam" not in audit("Possible right basal consolidation.", "uncertain", clf)
    assert "location_vs_gradcam" not in audit("Right lower lobe pneumonia, left lung clear.", "pneumonia", clf)


def test_audit_lists_a_label_line_or_prose_that_disagrees_with_the_forced_choice():
    clf = {"probability": 0.5, "region": "no localised evidence"}
    text = "Impression: Possible right basal pneumonia.\nLabel: normal"
    flags = audit(text, "pneumonia", clf, {"forced_choice": "pneumonia", "label_line": "normal", "free_text": "uncertain"})
    assert flags["label_disagreement"] == ("Label line says normal; prose says uncertain; the model's forced choice "
                                           "is pneumonia")
    agree = {"forced_choice": "uncertain", "label_line": None, "free_text": "uncertain"}
    assert "label_disagreement" not in audit("Impression: Possible pneumonia.", "uncertain", clf, agree)
    assert "label_disagreement" not in audit(text, "normal", clf, {"forced_choice": None, "label_line": "normal",
                                                                   "free_text": "uncertain"})
