"""Find the archived cases most similar to a query X-ray, or evaluate retrieval over the test split.

    python task3/query.py                                      # test images 0, 20, 70; top 5
    python task3/query.py --split val --indices 12 --k 10
    python task3/query.py --images ../shared/samples/pneumonia/person3_virus_15.jpeg
    python task3/query.py --evaluate                           # precision@1/5/10, mAP@10, kNN accuracy

Prints a table per query and writes <out>/task3_query_results.json and the gallery
<out>/figures/task3_visual_results.png; --evaluate writes <out>/task3_retrieval_eval.json and .md.
A query that is itself in the archive is left out of its own results.
"""
import argparse
from pathlib import Path

import numpy as np

from pneumo.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from pneumo.data import CLASS_NAMES, SPLITS, default_data_root, load_inputs, load_split
from pneumo.explain import plot_panels
from pneumo.inference import embed_images
from pneumo.retrieval import DEFAULT_INDEX, exclusions, load_index, search
from pneumo.runtime import exit_on_user_error, print_run_header, resolve_device, write_json_atomic

EVAL_KS = (1, 5, 10)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help=f"classifier that embeds the query (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX), help=f"index from build_index.py (default {DEFAULT_INDEX})")
    p.add_argument("--split", default="test", choices=SPLITS, help="split of --indices and of --evaluate (default test)")
    p.add_argument("--indices", type=int, nargs="+", help="dataset indices to query (default 0 20 70)")
    p.add_argument("--images", type=Path, nargs="+", help="image files to query (PNG/JPEG, any size and mode)")
    p.add_argument("--k", type=int, default=5, help="neighbours per query; with --evaluate, the kNN vote size (default 5)")
    p.add_argument("--evaluate", action="store_true", help="query every image of --split and score the retrieval")
    p.add_argument("--data_root", default=default_data_root(), help="folder with pneumoniamnist.npz")
    p.add_argument("--out", type=Path, default=Path("reports"), help="folder for results and figures/ (default reports)")
    p.add_argument("--batch_size", type=int, default=256, help="images per forward pass (default 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    args = p.parse_args(argv)
    if args.images and args.indices:
        p.error("give --indices (dataset images) or --images (files), not both")
    if args.evaluate and (args.images or args.indices):
        p.error("--evaluate queries the whole --split; drop --images / --indices")
    if args.k < 1:
        p.error("--k must be at least 1")
    return args


def main(args):
    run = print_run_header("query", args)
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device)
    index, index_meta = load_index(args.index, meta["sha256"])
    if args.evaluate:
        return evaluate(args, run, model, meta, index, index_meta, device)

    images, labels, names, keys = load_inputs(args.images, args.indices, args.data_root, args.split, meta["image_size"])
    vectors = embed_images(model, images, meta["normalization"], device, args.batch_size)
    results = search(index, index_meta, vectors, args.k, exclusions(index_meta, keys))
    records = [{"query": name, "label": label, "neighbours": hits}
               for name, label, hits in zip(names, labels, results)]
    for record in records:
        print_table(record, index_meta["metric"])
    write_json_atomic(args.out / "task3_query_results.json",
                      {**run, "checkpoint_sha256": meta["sha256"], "index": str(args.index),
                       "metric": index_meta["metric"], "queries": records})
    figure = plot_gallery(args, images, records, index_meta, meta["image_size"])
    print(f"wrote {args.out / 'task3_query_results.json'} and {figure}")
    return records


def print_table(record, metric):
    key = "similarity" if metric == "cosine" else "distance"
    print(f"\nquery {record['query']}  (label {record['label'] or 'unknown'})")
    print(f"{'rank':>4}  {key:>10}  {'label':<9}  case")
    for hit in record["neighbours"]:
        print(f"{hit['rank']:>4}  {hit[key]:>10.4f}  {hit['label']:<9}  {hit['split']} #{hit['index']}")


def plot_gallery(args, images, records, index_meta, size):
    key = "similarity" if index_meta["metric"] == "cosine" else "distance"
    archive = {split: load_split(args.data_root, split, size)[0]
               for split in {h["split"] for r in records for h in r["neighbours"]}}
    panels = []
    for image, record in zip(images, records):
        panels.append({"image": image, "title": f"QUERY {record['query'][-28:]}\nlabel {record['label'] or '?'}",
                       "color": "navy"})
        for hit in record["neighbours"]:
            same = record["label"] is None or hit["label"] == record["label"]
            panels.append({"image": archive[hit["split"]][hit["index"]], "color": "black" if same else "darkred",
                           "title": f"#{hit['rank']} {hit['split']} {hit['index']}\n{hit['label']}  {key[:4]} {hit[key]:.3f}"})
    return plot_panels(panels, args.out / "figures" / "task3_visual_results.png", cols=args.k + 1,
                       title=f"query and its {args.k} most similar archived cases ({index_meta['metric']})")


def evaluate(args, run, model, meta, index, index_meta, device):
    images, labels = load_split(args.data_root, args.split, meta["image_size"])
    names = [CLASS_NAMES[y] for y in labels]
    vectors = embed_images(model, images, meta["normalization"], device, args.batch_size, desc=f"embed {args.split}")
    depth = max(max(EVAL_KS), args.k)
    hits = search(index, index_meta, vectors, depth, exclusions(index_meta, [(args.split, i) for i in range(len(labels))]))
    relevant = np.array([[h["label"] == name for h in row] for row, name in zip(hits, names)])
    votes = np.array([[h["label"] == CLASS_NAMES[1] for h in row[:args.k]] for row in hits])
    knn_pred = (votes.sum(axis=1) * 2 > args.k).astype(int)  # majority of k; ties (even k) go to normal
    groups = {"overall": np.ones(len(labels), bool), **{c: labels == i for i, c in enumerate(CLASS_NAMES)}}
    table = {g: {**{f"precision@{k}": float(relevant[m, :k].mean()) for k in EVAL_KS},
                 "map@10": float(average_precision_at(relevant[m], 10).mean()),
                 f"knn{args.k}_accuracy": float((knn_pred[m] == labels[m]).mean()), "n": int(m.sum())}
             for g, m in groups.items()}
    result = {**run, "checkpoint_sha256": meta["sha256"], "index": str(args.index), "metric": index_meta["metric"],
              "index_type": index_meta["build"]["index_type"], "archive": index_meta["build"]["splits"],
              "archive_size": index.ntotal, "split": args.split, "metrics": table}
    write_json_atomic(args.out / "task3_retrieval_eval.json", result)
    (args.out / "task3_retrieval_eval.md").write_text(eval_markdown(result, args.k))
    print(eval_markdown(result, args.k))
    return result


def average_precision_at(relevant, k):
    """AP@k per query: the mean of precision@i over the ranks i <= k that hold a relevant case
    (same label as the query), divided by the number of relevant cases in the top k; 0 if none."""
    rel = relevant[:, :k].astype(float)
    precision_at_i = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
    hits = rel.sum(axis=1)
    return np.where(hits > 0, (precision_at_i * rel).sum(axis=1) / np.maximum(hits, 1), 0.0)


def eval_markdown(result, k):
    cols = [f"precision@{x}" for x in EVAL_KS] + ["map@10", f"knn{k}_accuracy", "n"]
    lines = [f"# Task 3: retrieval of {result['split']} queries against {'+'.join(result['archive'])} "
             f"({result['archive_size']} cases, {result['index_type']} {result['metric']})", "",
             "Written by `python task3/query.py --evaluate`. A neighbour is relevant when its label equals the "
             "query's.", "", "| group | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for group, row in result["metrics"].items():
        lines.append(f"| {group} | " + " | ".join(f"{row[c]:.4f}" if c != "n" else str(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with exit_on_user_error():
        main(parse_args())
