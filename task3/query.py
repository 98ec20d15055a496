"""Find the archived cases most similar to a query X-ray, or evaluate retrieval over the test split.

    python task3/query.py                                      # test images 0, 20, 70; top 5
    python task3/query.py --split val --indices 12 --k 10
    python task3/query.py --images ../shared/samples/pneumonia/person3_virus_15.jpeg
    python task3/query.py --evaluate                           # precision@1/5/10, mAP@10, kNN accuracy
    python task3/query.py --backend milvus --uri runs/default/task3_milvus.db    # the archive in Milvus Lite

Prints a table per query and writes <out>/task3_query_results.json and the gallery
<out>/figures/task3_visual_results.png; --evaluate writes <out>/task3_retrieval_eval.json and .md.
A query that is itself in the archive is left out of its own results.
"""
from pathlib import Path

import numpy as np

from pneumo.archive import ArchiveSource
from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.checkpoint import DEFAULT_CHECKPOINT
from pneumo.classifier import Classifier
from pneumo.cli import INFERENCE_SIZE, add_shared_flags, check_images_or_indices, make_parser, positive_int
from pneumo.data import CLASS_NAMES, SPLITS, load_split
from pneumo.errors import run_script
from pneumo.model import EMBEDDING_DIM
from pneumo.pictures import load_inputs
from pneumo.plots import plot_panels
from pneumo.retrieval import DEFAULT_INDEX, exclusions, retrieval_scores, score_name, search
from pneumo.runtime import print_run_header, resolve_device
from pneumo.screening import describe_reference, print_flags, screen_inputs

EVAL_KS = (1, 5, 10)
GALLERY_QUERIES, GALLERY_NEIGHBOURS = 12, 10  # the most rows and cases per row the figure draws


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "size", "checkpoint", "split", "indices", "images", "record_names", "k",
                     "data_root", "out", "device", "backend", "uri", "collection", size=INFERENCE_SIZE,
                     checkpoint=dict(help=f"classifier that embeds the query (default {DEFAULT_CHECKPOINT})"),
                     split=dict(help="split of --indices and of --evaluate (default test)"),
                     k=dict(help="neighbours per query; with --evaluate, the kNN vote size (default 5)"))
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX),
                   help=f"index from build_index.py, or a run folder holding one (default {DEFAULT_INDEX}, the shipped one)")
    p.add_argument("--evaluate", action="store_true", help="query every image of --split and score the retrieval")
    p.add_argument("--batch_size", type=positive_int, default=256, help="images per forward pass (default 256)")
    args = p.parse_args(argv)
    check_images_or_indices(p, args)
    if args.evaluate and (args.images or args.indices):
        p.error("--evaluate queries the whole --split; drop --images / --indices")
    return args


def main(args):
    check_writable(args.out)
    run = print_run_header("query", args)
    clf = Classifier.load(args.checkpoint, resolve_device(args.device))
    clf.check_size(args.size)
    source = ArchiveSource.from_args(args)
    index, index_meta = source.open(clf.sha256, EMBEDDING_DIM, args.data_root)
    if args.evaluate:
        return evaluate(args, run, clf, index, index_meta)

    images, labels, names, keys = load_inputs(args.images, args.indices, args.data_root, args.split, clf.image_size,
                                              args.record_names)
    vectors = clf.embed(images, args.batch_size)
    results = search(index, index_meta, vectors, args.k, exclusions(index_meta, keys))
    flags = screen_inputs(clf, images, args.images, (index, index_meta), vectors)
    records = [{"query": name, "label": label, "flags": found, "neighbours": hits}
               for name, label, found, hits in zip(names, labels, flags, results)]
    for record in records:
        print_table(record, index_meta.metric)
    print_flags(names, flags)
    write_json_atomic(args.out / "task3_query_results.json",
                      {**run, "checkpoint_sha256": clf.sha256, "index": ArchiveSource.from_args(args).describe(),
                       "metric": index_meta.metric, "queries": records})
    figure = plot_gallery(args, images, records, index_meta, clf.image_size)
    print(f"wrote {args.out / 'task3_query_results.json'} and {figure}")
    return records


def print_table(record, metric):
    word = score_name(metric)
    print(f"\nquery {record['query']}  (label {record['label'] or 'unknown'})")
    print(f"{'rank':>4}  {word:>10}  {'label':<9}  case")
    for hit in record["neighbours"]:
        print(f"{hit['rank']:>4}  {hit['score']:>10.4f}  {hit['label']:<9}  {hit['split']} #{hit['index']}")


def plot_gallery(args, images, records, index_meta, size):
    """Each query beside its nearest cases; at most GALLERY_QUERIES rows of GALLERY_NEIGHBOURS cases (the
    table and the JSON hold them all), so a large --k or many queries cannot stall on drawing."""
    word = score_name(index_meta.metric)
    shown_k = min(args.k, GALLERY_NEIGHBOURS)
    records = [{**r, "neighbours": r["neighbours"][:shown_k]} for r in records[:GALLERY_QUERIES]]
    archive = {split: load_split(args.data_root, split, size)[0]
               for split in {h["split"] for r in records for h in r["neighbours"]} if split in SPLITS}
    panels = []
    for image, record in zip(images, records):
        flagged = "\nFLAGGED: " + record["flags"][0].split(" (")[0] if record["flags"] else ""
        panels.append({"image": image, "color": "darkred" if flagged else "navy",
                       "title": f"QUERY {Path(record['query']).name}\nlabel {record['label'] or 'unknown'}{flagged}"})
        for hit in record["neighbours"]:
            same = record["label"] is None or hit["label"] == record["label"]
            film = archive[hit["split"]][hit["index"]] if hit["split"] in archive else np.zeros((size, size), np.uint8)
            panels.append({"image": film, "color": "black" if same else "darkred",
                           "title": f"#{hit['rank']} {hit['split']} {hit['index']}\n{hit['label']}  {word[:4]} {hit['score']:.3f}"})
    cut = (f" (the figure shows the first {len(records)} queries and {shown_k} cases each; the table and JSON "
           f"hold all)") if shown_k < args.k or len(records) < len(images) else ""
    return plot_panels(panels, args.out / "figures" / "task3_visual_results.png", cols=shown_k + 1,
                       title=f"each query ({args.split if not args.images else 'image files'}) and its {args.k} most "
                             f"similar archived cases{cut} ({'+'.join(index_meta.build['splits'])}, "
                             f"{index_meta.metric}); red = other label")


def evaluate(args, run, clf, index, index_meta):
    images, labels = load_split(args.data_root, args.split, clf.image_size)
    vectors = clf.embed(images, args.batch_size, desc=f"embed {args.split}")
    keys = [(args.split, i) for i in range(len(labels))]
    hits = search(index, index_meta, vectors, max(max(EVAL_KS), args.k), exclusions(index_meta, keys))
    flagged = [bool(f) for f in screen_inputs(clf, images, None, (index, index_meta), vectors)]
    result = {**run, "checkpoint_sha256": clf.sha256, "index": ArchiveSource.from_args(args).describe(), "metric": index_meta.metric,
              "index_type": index_meta.build["index_type"], "archive": index_meta.build["splits"],
              "archive_size": index.ntotal, "split": args.split,
              "metrics": retrieval_scores(hits, labels, CLASS_NAMES, EVAL_KS, args.k),
              "flagged_share": float(sum(flagged) / len(flagged)), "flagged": int(sum(flagged)),
              "ood_reference": describe_reference(index_meta.ood)}
    write_json_atomic(args.out / "task3_retrieval_eval.json", result)
    write_text_atomic(args.out / "task3_retrieval_eval.md", eval_markdown(result, args.k))
    print(eval_markdown(result, args.k))
    return result


def eval_markdown(result, k):
    cols = [f"precision@{x}" for x in EVAL_KS] + ["map@10", f"knn{k}_accuracy", "n"]
    lines = [f"# Task 3: retrieval of {result['split']} queries against {'+'.join(result['archive'])} "
             f"({result['archive_size']} cases, {result['index_type']} {result['metric']})", "",
             "Written by `python task3/query.py --evaluate`. A neighbour is relevant when its label equals the "
             "query's.", "", "| group | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for group, row in result["metrics"].items():
        lines.append(f"| {group} | " + " | ".join(f"{row[c]:.4f}" if c != "n" else str(row[c]) for c in cols) + " |")
    lines += ["", f"Inputs flagged as out of distribution or near-constant (pneumo/screening.py): {result['flagged']} of "
              f"{result['metrics']['overall']['n']} ({100 * result['flagged_share']:.1f} %)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("query", main, parse_args)
