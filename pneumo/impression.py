"""Reading a narrative back as normal / pneumonia / uncertain.

The prompts ask for a last line `Label: normal | pneumonia | uncertain`, which is read first. When
it is missing, the impression section is read with NegEx (negspacy on a blank spaCy pipeline):
findings are matched by a small lexicon, then NegEx decides from trigger phrases and their scope in
the sentence whether each is negated ("no consolidation or infiltrate", "pneumonia is not seen") and,
with a second trigger set as in ConText, whether it is hedged ("cannot exclude early pneumonia").
`benchmarks/impression_parser.py` measures the error rate on the labelled set in tests/data/.
"""
import re
from functools import lru_cache

LABELS = ("normal", "pneumonia", "uncertain")
SOURCES = ("label_line", "fallback")

# The last `Label: x` line, tolerant of Markdown emphasis and bullets: "**Label:** Normal", "- Label: **pneumonia**"
LABEL_LINE = re.compile(r"^[\s*_#>\-]*label[\s*_]*[:\-][\s*_]*(normal|pneumonia|uncertain)\b", re.I | re.M)
# A heading such as "Impression:", "**Impression**:", "### Impression", "IMPRESSION -"
_HEADING = r"^[\s*_#>\-]*{name}[\s*_]*(?::|-|\n)"
_NEXT_HEADING = re.compile(r"^[\s*_#>\-]*(?:findings|label|recommendations?|comparison|technique)[\s*_]*(?::|\n)", re.I | re.M)

# Findings that make an impression pneumonia when affirmed (lemmas of the lexicon, matched case-blind)
FINDINGS = ("pneumonia", "bronchopneumonia", "consolidation", "consolidations", "infiltrate", "infiltrates",
            "airspace disease", "airspace opacity", "airspace opacities", "airspace shadowing", "opacity",
            "opacities", "opacification", "shadowing", "infection", "pneumonic change", "pneumonic changes")
# Phrases that say the film is normal; negated findings alone also make it normal
NORMAL_CUES = ("normal", "clear", "unremarkable", "no acute", "no active", "nad", "within normal limits",
               "no evidence", "no radiographic evidence")

# NegEx trigger sets: negspacy's clinical English set, with the triggers of resolution and of
# absence stated after the noun that radiology reports use, and without the hedges it files as
# negation ("cannot", "rule out", "versus", "evaluate for"), which are read as uncertainty below.
_HEDGES_IN_NEGEX = {"cannot", "can't", "cant", "rule out", "rules out", "r/o", "ro", "versus", "evaluate for", "doubt"}
_EXTRA_PRECEDING = ["resolution of", "resolved", "no new", "no radiographic evidence of", "no residual", "no focal",
                    "rather than"]  # preference, a pseudo-negation: "atelectasis rather than pneumonia"
_EXTRA_FOLLOWING = ["is not seen", "are not seen", "not seen", "is not identified", "are not identified",
                    "not identified", "not demonstrated", "is absent", "are absent", "has resolved",
                    "have resolved", "has cleared", "have cleared", "resolved", "is unlikely", "no longer seen",
                    "is no longer seen", "not present", "is not present", "are not present", "excluded",
                    "is excluded", "not suspected", "is not suspected", "no longer evident", "is no longer evident",
                    "no longer visible"]
UNCERTAINTY = {
    "pseudo_negations": ["no change", "not certain whether"],
    "preceding_negations": ["possible", "possibly", "questionable", "question of", "cannot exclude", "can not exclude",
                            "cannot rule out", "can not rule out", "rule out", "may represent", "could represent",
                            "might represent", "may reflect", "could reflect", "might reflect",
                            "could be", "may be", "might be", "?", "equivocal", "suspicious for",
                            "versus", "vs", "vs.", "differential includes", "developing", "early possible",
                            # comparative likelihood: "atelectasis favoured over pneumonia"
                            "favoured over", "favored over", "more likely than"],
    "following_negations": ["cannot be excluded", "can not be excluded", "cannot be ruled out", "not excluded",
                            "is not excluded", "not ruled out", "is questioned", "versus", "vs", "?",
                            "less likely", "is less likely", "considered less likely", "is considered less likely",
                            "cannot be distinguished", "can not be distinguished", "not entirely excluded",
                            "is not entirely excluded", "cannot be entirely excluded", "is a possibility"],
    "termination": ["but", "however", "although", "though", "which", "except", "aside from", "apart from"],
}
# Findings and topics outside the question the prompts ask (lungs, heart, pleura, one film): devices,
# bones, masses, other examinations. Affirmed mentions of these are flagged by pneumo.audit.
UNASKED = ("endotracheal tube", "nasogastric tube", "chest tube", "central line", "picc", "catheter", "pacemaker",
           "sternotomy wires", "surgical clips", "fracture", "fractures", "rib fracture", "scoliosis", "lytic lesion",
           "mass", "nodule", "nodules", "tumour", "tumor", "malignancy", "lymphadenopathy", "pneumoperitoneum",
           "free air", "prior study", "previous study", "prior examination", "previous examination", "prior film",
           "previous film", "prior radiograph", "previous radiograph", "ct", "year-old", "year old")

# Where the impression ends though no heading says so: notes, disclaimers, AI-use statements and advice that
# mention pneumonia without reading this film ("This is not a diagnosis; pneumonia should be excluded clinically")
_NOT_IMPRESSION = re.compile(r"(?:^|(?<=[.;!?\n]))[\s*_>\-]*(?:notes?\b|disclaimer|ai[- ]use\b|this is not a diagnosis|"
                             r"this (?:report|text) (?:was|is) (?:produced|generated|drafted)|please correlate|"
                             r"clinical correlation|if symptoms persist|recommendations?\b)", re.I)

# Words that leave the whole impression uncertain whatever the findings
_UNREADABLE = re.compile(r"\b(?:uncertain|indeterminate|non-?diagnostic|too low to assess|cannot be assessed|"
                         r"not assessable|limited study|unable to assess)\b", re.I)


def label_line(text: str):
    """The label of the last `Label:` line, or None."""
    found = LABEL_LINE.findall(text or "")
    return found[-1].lower() if found else None


def impression_section(text: str) -> str:
    """The text after the last 'Impression' heading (up to the next heading, note or disclaimer), else
    the whole narrative up to its notes; Markdown emphasis and the Label line are dropped."""
    text = text or ""
    heads = list(re.finditer(_HEADING.format(name="impressions?"), text, re.I | re.M))
    if heads:
        text = text[heads[-1].end():]
        nxt = _NEXT_HEADING.search(text)
        text = text[:nxt.start()] if nxt else text
    text = LABEL_LINE.sub(" ", text)
    end = _NOT_IMPRESSION.search(text)
    text = text[:end.start()] if end else text
    return re.sub(r"[*_#`]+", " ", text).strip()


@lru_cache(maxsize=1)
def _pipeline():
    import importlib

    import spacy
    from negspacy.termsets import termset
    importlib.import_module("negspacy.negation")  # registers spaCy's "negex" factory
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer", config={"punct_chars": [".", "!", ";", "\n"]})  # "?" hedges in reports
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns([{"label": "FINDING", "pattern": p} for p in FINDINGS]
                       + [{"label": "NORMAL", "pattern": p} for p in NORMAL_CUES]
                       + [{"label": "UNASKED", "pattern": p} for p in UNASKED])
    negation = termset("en_clinical")
    negation.remove_patterns({"preceding_negations": sorted(_HEDGES_IN_NEGEX & set(negation.get_patterns()["preceding_negations"]))})
    negation.add_patterns({"preceding_negations": _EXTRA_PRECEDING, "following_negations": _EXTRA_FOLLOWING})
    nlp.add_pipe("negex", name="negation", config={"neg_termset": negation.get_patterns(), "ent_types": ["FINDING", "UNASKED"]})
    nlp.add_pipe("negex", name="uncertainty", config={"neg_termset": UNCERTAINTY, "ent_types": ["FINDING", "UNASKED"],
                                                       "extension_name": "hedged"})
    return nlp


# What separates the clauses of one sentence: "left basal pneumonia, no right-sided consolidation"
_CLAUSE_BREAK = re.compile(r"[,;:]|\b(?:but|however|whereas|while)\b", re.I)


def mentions(text: str) -> list:
    """Each lexicon match in a text: kind (FINDING, NORMAL, UNASKED), its words, negated, hedged, the
    sentence it stands in and its clause (the stretch of that sentence between commas, semicolons or a
    "but" around it), Markdown emphasis removed."""
    doc = _pipeline()(re.sub(r"[*_#`]+", " ", text or ""))
    return [{"kind": e.label_, "text": e.text, "negated": bool(e._.negex), "hedged": bool(e._.hedged),
             "sentence": e.sent.text.strip(), "clause": _clause(e)} for e in doc.ents]


def _clause(entity) -> str:
    sentence, start = entity.sent.text, entity.start_char - entity.sent.start_char
    end = start + len(entity.text)
    before = [m.end() for m in _CLAUSE_BREAK.finditer(sentence, 0, start)]
    after = _CLAUSE_BREAK.search(sentence, end)
    return sentence[(before[-1] if before else 0):(after.start() if after else len(sentence))].strip()


def read_free_text(text: str) -> str:
    """normal / pneumonia / uncertain from an impression without a Label line. A hedged finding makes it
    uncertain, an affirmed one pneumonia; negated findings alone, or a normal cue, make it normal."""
    section = impression_section(text)
    if not section or _UNREADABLE.search(section):
        return "uncertain"
    doc = _pipeline()(section)
    findings = [e for e in doc.ents if e.label_ == "FINDING"]
    if any(e._.hedged for e in findings):
        return "uncertain"
    if any(not e._.negex for e in findings):
        return "pneumonia"
    if findings or any(e.label_ == "NORMAL" for e in doc.ents):
        return "normal"
    return "uncertain"


def parse_impression(text: str):
    """(label, source): the Label line when there is one, else the NegEx reading of the impression."""
    found = label_line(text)
    if found:
        return found, "label_line"
    return read_free_text(text), "fallback"
