"""Radiology reports: a vision-language model's narrative beside the classifier's verdict.

    python task2/generate_reports.py --indices 0 20 70                    # MedGemma-4B, 4-bit NF4 (CUDA)
    python task2/generate_reports.py --images ../shared/samples/*/*.jpeg --prompt clinical_role
    python task2/generate_reports.py --evaluate --n 100 --prompt all      # VLM vs truth, per prompt strategy
    python task2/generate_reports.py --vlm none                           # classifier, Grad-CAM, retrieval only

For each image: P(pneumonia) from the checkpoint and its decision at the val-chosen threshold, the
Grad-CAM region, the labels and distances of the most similar archived cases (when the Task 3 index
exists), and the VLM's Findings / Impression for each prompt strategy. Writes <out>/reports.jsonl
(one record per image and strategy) and <out>/<image>.md; --evaluate adds <out>/evaluation.csv/.md.
MedGemma is gated: accept its licence on the hub and export HF_TOKEN (never printed or saved).
"""
import os
import re
from pathlib import Path

os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # before CUDA starts

import numpy as np

from pneumo.archive import optional_archive
from pneumo.atomic import check_writable, write_csv_atomic, write_json_atomic, write_jsonl_atomic, write_text_atomic
from pneumo.audit import FLAGS
from pneumo.cases import Case, add_classifier_blocks, markdown_report, narrate, narrative_record, vlm_picture
from pneumo.checkpoint import DEFAULT_CHECKPOINT
from pneumo.classifier import Classifier
from pneumo.cli import (
    INFERENCE_SIZE,
    add_shared_flags,
    check_images_or_indices,
    make_parser,
    non_negative_int,
    positive_int,
)
from pneumo.data import SIZES, load_split
from pneumo.errors import run_script
from pneumo.pictures import load_inputs
from pneumo.retrieval import DEFAULT_INDEX
from pneumo.runtime import DEFAULT_RUN, UserError, print_run_header, resolve_device, seed_everything
from pneumo.screening import print_flags
from pneumo.vlm import DEFAULT_VLM, STRATEGIES, load_vlm, release_gpu_memory


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "size", "checkpoint", "split", "indices", "images", "record_names", "k",
                     "data_root", "out", "seed", "device", "backend", "uri", "collection", size=INFERENCE_SIZE,
                     checkpoint=dict(help=f"classifier (default {DEFAULT_CHECKPOINT})"),
                     split=dict(help="split of --indices / --evaluate (default test)"),
                     images=dict(help="image files (PNG/JPEG, any size); the VLM sees the full file"),
                     k=dict(type=non_negative_int, help="similar archived cases in the context (default 5; 0 = none)"),
                     out=dict(default=DEFAULT_RUN / "task2", help=f"folder for records and reports (default {DEFAULT_RUN / 'task2'})"),
                     seed=dict(help="seed of the --evaluate sample (default 0)"))
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX),
                   help=f"Task 3 index or a run folder holding one, used when it exists (default {DEFAULT_INDEX})")
    p.add_argument("--model", default=DEFAULT_VLM, help=f"hub id or local folder of an image-text-to-text model (default {DEFAULT_VLM})")
    p.add_argument("--vlm", default="auto", choices=["on", "auto", "none"],
                   help="auto (default): the narrative when the VLM loads, else the rest of the report and one line "
                        "saying why; on: a VLM is required (exit 1 without one); none: skip the VLM")
    p.add_argument("--vlm_size", type=int, default=224, choices=SIZES,
                   help="MedMNIST+ size the VLM sees for dataset cases (default 224, downloaded when missing; "
                        "falls back to the classifier's size with a warning). User files go at full size")
    p.add_argument("--quantization", default="nf4", choices=["nf4", "none"], help="nf4 = 4-bit bitsandbytes on CUDA (default)")
    p.add_argument("--prompt", default="context_aware", choices=[*STRATEGIES, "all"], help="prompt strategy (default context_aware)")
    p.add_argument("--evaluate", action="store_true", help="score the VLM's impressions on --n images of --split")
    p.add_argument("--n", type=positive_int, default=100, help="images drawn (seeded) for --evaluate (default 100)")
    p.add_argument("--batch_size", type=positive_int, default=4, help="conversations per generate call (default 4; 8 fits a T4)")
    p.add_argument("--max_new_tokens", type=positive_int, default=300, help="longest narrative in tokens (default 300)")
    args = p.parse_args(argv)
    check_images_or_indices(p, args)
    if args.evaluate and (args.images or args.indices):
        p.error("--evaluate draws its own --n images of --split; drop --images / --indices")
    if args.evaluate and args.vlm == "none":
        p.error("--evaluate scores the VLM's narratives; it cannot run with --vlm none")
    return args


def main(args):
    check_writable(args.out)
    run = print_run_header("generate_reports", args)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    clf = Classifier.load(args.checkpoint, device)
    clf.check_size(args.size)
    cases = gather_cases(args, clf.image_size)
    classifier_blocks(args, cases, clf)
    del clf
    release_gpu_memory()  # the classifier's GPU memory goes back before the VLM loads

    strategies = list(STRATEGIES) if args.prompt == "all" else [args.prompt]
    vlm, why_none = load_or_explain(args, device)
    if args.evaluate and vlm is None:  # a table of the classifier against nothing would read as results
        raise UserError(f"--evaluate scores the VLM's narratives and {why_none.split(': ', 1)[-1]}")
    if vlm is not None:
        attach_vlm_images(args, cases)
    records = []
    for strategy in strategies:
        for start in range(0, len(cases), args.batch_size):
            batch = cases[start:start + args.batch_size]
            narratives = narrate(vlm, batch, strategy, args.max_new_tokens) if vlm else [None] * len(batch)
            records += [record(args, run, case, strategy, narrative, why_none, vlm)
                        for case, narrative in zip(batch, narratives)]
        if vlm is None:
            break  # without a VLM the strategies do not differ
    write_jsonl_atomic(args.out / "reports.jsonl", records)
    for case in cases:
        write_text_atomic(args.out / f"{case.slug}.md",
                          markdown_report(case, [r for r in records if r["image"] == case.name],
                                          "task2/generate_reports.py"))
    print(f"wrote {len(records)} records to {args.out / 'reports.jsonl'} and {len(cases)} Markdown reports to {args.out}")
    if args.evaluate:
        return evaluate(args, records, strategies)
    return records


def gather_cases(args, size):
    """Each case: name, slug, image at the classifier's size, label (None for files); a user's file is
    also kept at full size for the VLM (dataset cases get theirs from attach_vlm_images)."""
    indices = args.indices
    if args.evaluate:  # a seeded random sample of the split (parse_args refuses --images with it)
        n_split = len(load_split(args.data_root, args.split, size)[1])
        indices = sorted(np.random.default_rng(args.seed).choice(n_split, size=min(args.n, n_split), replace=False).tolist())
    small, labels, names, keys = load_inputs(args.images, indices, args.data_root, args.split, size, args.record_names)
    cases = []
    for position, (image, label, name, key) in enumerate(zip(small, labels, names, keys)):
        case = Case(name, image, label, key, path=args.images[position] if key is None else None,
                    slug=slug(Path(name).stem) if key is None else f"{key[0]}_{key[1]}")
        if key is None:  # a user's file: the VLM sees it at full size (DICOM too, as a reader sees it)
            case.vlm_image, case.vlm_source = vlm_picture(case)
        cases.append(case)
    return cases


def attach_vlm_images(args, cases):
    """Dataset cases go to the VLM at --vlm_size, the largest MedMNIST+ size by default (the same
    films, downsampled from the same sources, in the same order): a 28-px thumbnail blown up to
    896 px shows the VLM nothing of the lung texture. When that file cannot be had, the classifier's
    own images, with one warning; but --evaluate, which scores the VLM against the truth, stops unless
    --vlm_size 28 asked for those thumbnails."""
    keyed = [c for c in cases if c.key is not None]
    if not keyed:
        return
    size = args.vlm_size
    try:
        images, labels = load_split(args.data_root, args.split, size)
    except UserError as err:
        size = len(keyed[0].small)
        reason = str(err).split(";")[0]
        if args.evaluate:
            raise UserError(f"--evaluate would score the VLM on {size}-px thumbnails: {reason}; put "
                            f"pneumoniamnist_{args.vlm_size}.npz in the data root, or pass --vlm_size {size} "
                            f"to score the thumbnails knowingly") from None
        print(f"warning: the VLM sees {size}-px images: {reason}")
        images, labels = None, None
    for case in keyed:
        case.vlm_image, case.vlm_source = vlm_picture(case, None if images is None else (images, labels, size))


def classifier_blocks(args, cases, clf):
    """The classifier block of every case; the index when it exists (neighbours and the out-of-distribution check)."""
    archive = optional_archive(args, clf, "; reports go without them")
    print_flags([c.name for c in cases], add_classifier_blocks(clf, cases, archive, args.k))


def record(args, run, case, strategy, narrative, why_none, vlm):
    base = {"image": case.name, "label": case.label, "classifier": case.classifier.to_json(), "git_commit": run["git_commit"]}
    if narrative is None:
        return {**base, "strategy": None, "model": None, "narrative": None, "impression": None, "note": why_none}
    return {**base, **narrative_record(case, strategy, narrative, vlm, args.model, args.quantization)}


def load_or_explain(args, device):
    """(model, processor) or None, and why there is no narrative when there is none."""
    if args.vlm == "none":
        return None, "--vlm none: no narrative was generated"
    try:
        return load_vlm(args.model, args.quantization, device), None
    except UserError as err:
        if args.vlm == "on":
            raise
        print(f"note: no narrative: {err}")
        return None, f"no VLM could be loaded: {err}"


def slug(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80]


def evaluate(args, records, strategies):
    """Per strategy, with the model's forced choice as the label: accuracy, sensitivity, specificity against
    the truth, agreement with the classifier, uncertain rate (uncertain counts as wrong in accuracy), and the
    rate of each audit flag. Beside it, the three label sources: how often each exists, how often it is right
    and how often it agrees with the forced choice. The Markdown lists where they disagree, and the flagged
    outputs. Writes <out>/evaluation.csv, .json and .md (render_evaluation makes the Markdown from the json)."""
    rows = [score(strategy, [r for r in records if r["strategy"] == strategy]) for strategy in strategies]
    reference = [{**r, "impression": r["classifier"]["prediction"], "labels": {}, "audit": {}, "degenerate": None}
                 for r in records if r["strategy"] == strategies[0]]
    rows.append({**score("classifier (reference)", reference), **{f"{flag}_rate": None for flag in FLAGS},
                 **{key: None for key in SOURCE_COLUMNS}})
    write_csv_atomic(args.out / "evaluation.csv", list(rows[0]), [list(r.values()) for r in rows])
    result = {"model": args.model, "quantization": args.quantization, "split": args.split, "seed": args.seed,
              "n": args.n, "prompt": args.prompt, "rows": rows,
              "disagreements": [{k: r.get(k) for k in ("image", "label", "strategy", "labels", "forced_choice")}
                                for r in records if "label_disagreement" in r.get("audit", {})],
              "flagged": [{k: r.get(k) for k in ("image", "label", "strategy", "impression", "audit")}
                          for r in records if r.get("audit")], "records": len(records)}
    write_json_atomic(args.out / "evaluation.json", result)
    md = render_evaluation(result)
    write_text_atomic(args.out / "evaluation.md", md)
    print(md)
    return rows


SOURCES = ("forced_choice", "label_line", "free_text")
SOURCE_COLUMNS = [f"{source}_{what}" for source in SOURCES for what in ("present", "accuracy", "agrees")]


def score(strategy, rs):
    truth = np.array([r["label"] for r in rs])
    said = np.array([r["impression"] for r in rs])
    clf = np.array([r["classifier"]["prediction"] for r in rs])
    pos, neg = truth == "pneumonia", truth == "normal"
    return {"strategy": strategy, "n": len(rs), "accuracy": float((said == truth).mean()),
            "sensitivity": float((said[pos] == "pneumonia").mean()) if pos.any() else None,
            "specificity": float((said[neg] == "normal").mean()) if neg.any() else None,
            "agreement_with_classifier": float((said == clf).mean()),
            "uncertain_rate": float((said == "uncertain").mean()),
            "degenerate": int(sum(r["degenerate"] is not None for r in rs)),
            **{f"{flag}_rate": float(np.mean([flag in r["audit"] for r in rs])) for flag in FLAGS},
            **source_columns(rs)}


def source_columns(rs) -> dict:
    """For each label source: the share of records that have it, its accuracy where it exists, and its
    agreement with the forced choice where both exist."""
    out = {}
    for source in SOURCES:
        have = [r for r in rs if (r.get("labels") or {}).get(source)]
        both = [r for r in have if r["labels"].get("forced_choice")]
        out[f"{source}_present"] = len(have) / len(rs) if rs else None
        out[f"{source}_accuracy"] = float(np.mean([r["labels"][source] == r["label"] for r in have])) if have else None
        out[f"{source}_agrees"] = (float(np.mean([r["labels"][source] == r["labels"]["forced_choice"] for r in both]))
                                   if both else None)
    return out


def render_evaluation(result) -> str:
    """The Markdown of evaluation.json: the strategies by the forced choice, the three label sources side by
    side, where the Label line or the prose disagreed with the forced choice, and the flagged outputs."""
    rows = result["rows"]
    main = [c for c in rows[0] if c != "strategy" and c not in SOURCE_COLUMNS]
    md = [f"# VLM impressions against the truth: {result['model']} ({result['quantization']}), {rows[0]['n']} "
          f"{result['split']} images", "",
          f"Written by `python task2/generate_reports.py --evaluate --n {result['n']} --prompt {result['prompt']}` "
          f"(seed {result['seed']}).", "",
          "The label compared is the model's **forced choice**: after each report, the model scores the words "
          "normal, pneumonia and uncertain as the continuation of its report plus `Label:`, and the most probable "
          "one is taken. It exists for every report whatever its prose looks like; the Label line the prompt asks "
          "for and the reading of the prose are kept beside it as an audit.", "",
          "| strategy | " + " | ".join(main) + " |", "|---" * (len(main) + 1) + "|"]
    md += [f"| {r['strategy']} | " + " | ".join(cell(r[c]) for c in main) + " |" for r in rows]
    md += ["", "## Three label sources, side by side", "",
           "Present: share of reports with that label; accuracy: against the truth where present; agrees: with the "
           "forced choice where both exist.", "",
           "| strategy | forced choice: present | accuracy | Label line: present | accuracy | agrees | "
           "prose: present | accuracy | agrees |", "|---" * 10 + "|"]
    md += [f"| {r['strategy']} | " + " | ".join(cell(r[c]) for c in SOURCE_COLUMNS if c != "forced_choice_agrees") + " |"
           for r in rows if r.get("forced_choice_present") is not None]
    for strategy in [r["strategy"] for r in rows if r.get("forced_choice_present") is not None]:
        found = [d for d in result["disagreements"] if d["strategy"] == strategy]
        md += ["", f"### Disagreements with the forced choice: {strategy} ({len(found)})", ""]
        md += ["| image | truth | forced choice (P) | Label line | prose |", "|---|---|---|---|---|"] if found else ["None."]
        md += [f"| {d['image']} | {d['label']} | {d['labels'].get('forced_choice')} "
               f"({cell((d['forced_choice'] or {}).get('probabilities', {}).get(d['labels'].get('forced_choice')))}) | "
               f"{d['labels'].get('label_line') or 'none'} | {d['labels'].get('free_text')} |" for d in found]
    flagged = result["flagged"]
    md += ["", f"## Flagged outputs ({len(flagged)} of {result['records']})", ""]
    md += ["| image | truth | strategy | impression | flags |", "|---|---|---|---|---|"] if flagged else ["None."]
    md += [f"| {r['image']} | {r['label']} | {r['strategy']} | {r['impression']} | "
           + "; ".join(f"{k}: {v}" for k, v in r["audit"].items()).replace("|", "/") + " |" for r in flagged]
    return "\n".join(md) + "\n"


def cell(value):
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


if __name__ == "__main__":
    run_script("generate_reports", main, parse_args)
