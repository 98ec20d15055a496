"""Embed the archive of confirmed cases with the classifier and index it with FAISS.

    python task3/build_index.py                                  # train + val, exact L2 (default)
    python task3/build_index.py --split train val test           # include test, as some setups do
    python task3/build_index.py --metric cosine --index_type hnsw --out /tmp/hnsw.faiss
    python task3/build_index.py --backend milvus                # Milvus Lite, runs/default/task3_milvus.db
    python task3/build_index.py --backend milvus --uri http://localhost:19530   # a Milvus server

Writes <out> (FAISS index) and <out stem>.json (row -> split, index, label; metric; the checkpoint's
SHA-256; build parameters), both atomically; with --backend milvus, the collection --collection at --uri
instead (the same vectors and metadata, built under a temporary name and swapped in when complete). Exact search suits archives up to about a million cases
on one machine; see the README for when to pick HNSW or IVF.
"""
import time

import numpy as np

from pneumo.atomic import check_writable, file_sha256
from pneumo.checkpoint import DEFAULT_CHECKPOINT
from pneumo.classifier import Classifier
from pneumo.cli import INFERENCE_SIZE, add_shared_flags, make_parser, positive_int, ranged
from pneumo.data import CLASS_NAMES, data_file, load_split
from pneumo.errors import run_script
from pneumo.milvus_archive import building, connect
from pneumo.retrieval import DEFAULT_INDEX, INDEX_NAME, INDEX_TYPES, METRICS, build_index, meta_path, save_index, search
from pneumo.runtime import DEFAULT_RUN, UserError, print_run_header, resolve_device
from pneumo.screening import nearest_score, ood_reference, screen


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "size", "checkpoint", "split", "data_root", "out", "device", "backend", "uri", "collection",
                     size=INFERENCE_SIZE,
                     checkpoint=dict(help=f"classifier whose embeddings are indexed (default {DEFAULT_CHECKPOINT})"),
                     split=dict(nargs="+", default=["train", "val"],
                                help="splits in the archive (default train val; add test to index it too)"),
                     out=dict(default=DEFAULT_RUN / INDEX_NAME,
                              help=f"index file (default {DEFAULT_RUN / INDEX_NAME}; the shipped one is {DEFAULT_INDEX})"))
    p.add_argument("--index_type", default="flat", choices=INDEX_TYPES, help="flat = exact (default); hnsw / ivf = approximate, for large archives")
    p.add_argument("--metric", default="l2", choices=METRICS, help="l2 distance (default) or cosine similarity")
    p.add_argument("--hnsw_m", type=ranged(int, 2, 512), default=32, help="HNSW links per node, 2 to 512 (default 32)")
    p.add_argument("--ef_search", type=positive_int, default=64, help="HNSW search breadth (default 64)")
    p.add_argument("--nlist", type=positive_int, help="IVF cells (default about 4*sqrt(N))")
    p.add_argument("--nprobe", type=positive_int, default=16, help="IVF cells visited per query (default 16)")
    p.add_argument("--batch_size", type=positive_int, default=256, help="images per forward pass (default 256)")
    args = p.parse_args(argv)
    if len(set(args.split)) != len(args.split):
        p.error("--split lists a split twice")
    return args


def main(args):
    if args.backend == "faiss":
        check_writable(args.out, "file")
        check_writable(meta_path(args.out), "file")
    else:
        # a wrong address fails here, before any embedding; the connection is closed at once and opened
        # again for the insert, since an idle gRPC channel held through a long embedding can be dropped
        # by the server ("too_many_pings")
        connect(args.uri, create=True).close()
    run = print_run_header("build_index", args)
    clf = Classifier.load(args.checkpoint, resolve_device(args.device))
    clf.check_size(args.size)
    splits = {split: load_split(args.data_root, split, clf.image_size) for split in args.split}
    n = sum(len(labels) for _, labels in splits.values())
    if args.index_type == "ivf" and args.nlist is not None and args.nlist > n // 39:
        raise UserError(f"--nlist {args.nlist} is too many cells for {n} cases: k-means needs at least 39 per cell, "
                        f"so at most {max(1, n // 39)}; lower it or leave it out (default about 4*sqrt(N))")
    vectors, rows = [], []
    start = time.perf_counter()
    for split, (images, labels) in splits.items():
        if split == "val":
            val_images = images
        vectors.append(clf.embed(images, args.batch_size, desc=f"embed {split}"))
        rows += [{"split": split, "index": i, "label": CLASS_NAMES[y]} for i, y in enumerate(labels.tolist())]
    vectors = np.concatenate(vectors)
    embed_seconds = time.perf_counter() - start
    start = time.perf_counter()
    build = {"index_type": args.index_type, "splits": args.split, "dim": int(vectors.shape[1]),
             "embed_seconds": round(embed_seconds, 2)}
    if args.index_type == "hnsw":
        build.update(hnsw_m=args.hnsw_m, ef_search=args.ef_search)
    meta = {**run, "checkpoint": clf.meta["path"], "checkpoint_sha256": clf.sha256, "metric": args.metric,
            "image_size": clf.image_size, "data_sha256": file_sha256(data_file(args.data_root, clf.image_size)),
            "build": build, "rows": rows}
    if args.backend == "faiss":
        index = build_index(vectors, args.index_type, args.metric, hnsw_m=args.hnsw_m, ef_search=args.ef_search,
                            nlist=args.nlist, nprobe=args.nprobe)
        if args.index_type == "ivf":
            build.update(nlist=int(index.nlist), nprobe=int(index.nprobe))
        build["build_seconds"] = round(time.perf_counter() - start, 3)
        meta["ood"] = val_reference(args, clf, index, meta, vectors, val_images if "val" in args.split else None)
        save_index(index, meta, args.out)
        where = f"wrote {args.out} and {meta_path(args.out)}"
    else:
        with building(args.uri, args.collection, vectors, rows, args.index_type, args.metric, hnsw_m=args.hnsw_m,
                      nlist=args.nlist, ef_search=args.ef_search, nprobe=args.nprobe) as index:
            build.update({k: v for k, v in index.meta["build"].items() if k != "index_type"}, backend="milvus")
            build["build_seconds"] = round(time.perf_counter() - start, 3)
            meta["ood"] = val_reference(args, clf, index, meta, vectors, val_images if "val" in args.split else None)
            index.finish({**meta, "ntotal": len(rows), "dim": int(vectors.shape[1])})
        where = f"wrote collection {args.collection!r} at {args.uri}"
    print(f"out-of-distribution cut: nearest-case {args.metric} score {meta['ood']['threshold']:.3f} "
          f"({meta['ood']['percentile']:g}th percentile over {meta['ood']['n']} val images); val images flagged: "
          f"{100 * meta['ood']['val_flagged_share']:.1f} %")
    counts = {c: sum(r["label"] == c for r in rows) for c in CLASS_NAMES}
    print(f"indexed {len(rows)} cases from {'+'.join(args.split)} ({counts}) in a {args.index_type} {args.metric} index; "
          f"{where}")


def val_reference(args, clf, index, meta, vectors, val_images=None):
    """What val images look like to the out-of-distribution flags: their nearest archived case (themselves
    left out when val is archived) and their grey levels."""
    if val_images is not None:
        rows = [i for i, r in enumerate(meta["rows"]) if r["split"] == "val"]
        queries, exclude = vectors[rows], rows
    else:
        val_images = load_split(args.data_root, "val", clf.image_size)[0]
        queries, exclude = clf.embed(val_images, args.batch_size), None
    hits = search(index, meta, queries, 1, exclude)
    scores = [nearest_score(h) for h in hits]
    reference = ood_reference(scores, args.metric, val_images)
    reference["val_flagged_share"] = float(np.mean([bool(f) for f in screen(val_images, None, scores, reference)]))
    return reference


if __name__ == "__main__":
    run_script("build_index", main, parse_args)
