"""Does a metric-learning head on the classifier's embedding retrieve better than the embedding itself?

    python experiments/retrieval_head.py --checkpoints models/seeds/e15_seed{0,1,2}.pth

The head is scikit-learn's NeighborhoodComponentsAnalysis (a linear projection learned to make the nearest
neighbours of each train film share its label), fitted on each checkpoint's train embeddings. Choosing is
done on val: val queries against a train-only archive, P@5 with and without the head. Test is read with
--read_test: test queries against the product's archive (train + val), for both. Exact L2 search (FAISS).
Writes <out>/retrieval_head.json and .md.
"""
import numpy as np
from sklearn.neighbors import NeighborhoodComponentsAnalysis

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.classifier import Classifier
from pneumo.cli import add_shared_flags, make_parser, positive_int, ranged
from pneumo.data import load_split
from pneumo.errors import run_script
from pneumo.metrics import mean_sd
from pneumo.model import EMBEDDING_DIM
from pneumo.retrieval import EXACT, build_index, prepare
from pneumo.runtime import DEFAULT_RUN, print_run_header, resolve_device

K = 5


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--checkpoints", nargs="+", required=True, help="one checkpoint per seed")
    p.add_argument("--components", type=ranged(int, 1, EMBEDDING_DIM), default=64,
                   help=f"dimensions of the head's output, 1 to {EMBEDDING_DIM} (default 64)")
    p.add_argument("--max_iter", type=positive_int, default=100, help="NCA optimiser iterations (default 100)")
    p.add_argument("--read_test", action="store_true", help="also score test queries against the train+val archive")
    add_shared_flags(p, "data_root", "out", "device",
                     out=dict(default=DEFAULT_RUN / "retrieval_head",
                              help=f"folder for retrieval_head.json/.md (default {DEFAULT_RUN / 'retrieval_head'})"))
    return p.parse_args(argv)


def precision_at_k(archive, archive_labels, queries, query_labels, k=K):
    """Share of each query's k nearest archive vectors (the product's exact L2 index) with the query's label:
    overall and per class."""
    _, ids = build_index(archive, EXACT).search(prepare(queries, EXACT.metric), k)
    same = archive_labels[ids] == query_labels[:, None]
    return {"overall": float(same.mean()), "normal": float(same[query_labels == 0].mean()),
            "pneumonia": float(same[query_labels == 1].mean())}


def main(args):
    check_writable(args.out)
    run = print_run_header("retrieval_head", args)
    device = resolve_device(args.device)
    splits = ("train", "val", "test") if args.read_test else ("train", "val")
    runs = []
    for path in args.checkpoints:
        clf = Classifier.load(path, device)
        data = {s: load_split(args.data_root, s, clf.image_size) for s in splits}
        emb = {s: clf.embed(images) for s, (images, _) in data.items()}
        y = {s: labels for s, (_, labels) in data.items()}
        head = NeighborhoodComponentsAnalysis(n_components=args.components, max_iter=args.max_iter, random_state=0)
        head.fit(emb["train"], y["train"])
        views = {"embedding": lambda v: v, "nca": head.transform}
        entry = {"checkpoint": str(path), "sha256": clf.sha256, "seed": clf.meta["train_args"].get("seed"),
                 "nca_iterations": int(head.n_iter_),
                 "val": {n: precision_at_k(f(emb["train"]), y["train"], f(emb["val"]), y["val"]) for n, f in views.items()}}
        if args.read_test:
            archive, labels = np.concatenate([emb["train"], emb["val"]]), np.concatenate([y["train"], y["val"]])
            entry["test"] = {n: precision_at_k(f(archive), labels, f(emb["test"]), y["test"]) for n, f in views.items()}
        runs.append(entry)
        print(f"seed {entry['seed']}: val P@5 embedding {entry['val']['embedding']['overall']:.4f}, nca {entry['val']['nca']['overall']:.4f}")
    result = {**run, "runs": runs, "chosen": chosen(runs),
              "summary": {split: {n: {g: mean_sd([r[split][n][g] for r in runs]) for g in ("overall", "normal", "pneumonia")}
                                  for n in ("embedding", "nca")} for split in ("val", "test") if split in runs[0]}}
    write_json_atomic(args.out / "retrieval_head.json", result)
    write_text_atomic(args.out / "retrieval_head.md", markdown(result))
    print(markdown(result))
    return result


def chosen(runs):
    """The plan: the head is chosen if its mean val P@5 beats the embedding's by more than the larger sd."""
    nca = mean_sd([r["val"]["nca"]["overall"] for r in runs])
    raw = mean_sd([r["val"]["embedding"]["overall"] for r in runs])
    return "nca" if nca["mean"] - raw["mean"] > max(nca["std"], raw["std"]) else "embedding"


def markdown(result):
    a = result["args"]
    lines = ["# Task 3: a metric-learning head (NCA) on the classifier's embedding", "",
             "Written by `python experiments/retrieval_head.py --checkpoints " + " ".join(a["checkpoints"]) +
             (" --read_test" if a["read_test"] else "") + f"` (NCA to {a['components']} dimensions, fitted on train).",
             "Val: val queries against a train-only archive (where the choice is made). Test: test queries against the",
             "train + val archive, as the product searches. P@5, mean ± sd over the checkpoints.", "",
             "| split | vectors | P@5 | normal queries | pneumonia queries |", "|---|---|---|---|---|"]
    for split, by in result["summary"].items():
        for name, s in by.items():
            lines.append(f"| {split} | {name} | {s['overall']['mean']:.4f} ± {s['overall']['std']:.4f} | "
                         f"{s['normal']['mean']:.4f} ± {s['normal']['std']:.4f} | {s['pneumonia']['mean']:.4f} ± {s['pneumonia']['std']:.4f} |")
    lines += ["", f"Chosen on val by the plan (the head only if its mean val P@5 is higher by more than the larger sd): "
              f"**{result['chosen']}**."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("retrieval_head", main, parse_args)
