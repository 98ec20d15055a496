"""Do the FAISS file and the Milvus collection give the same neighbours? Every query of a split, top k.

    python benchmarks/task3_agreement.py --server --out reports   # a Milvus server started here (published)
    python task3/build_index.py --backend milvus --uri http://host:19530   # or an archive built on your own,
    python benchmarks/task3_agreement.py --uri http://host:19530           # then compared

Counts the queries whose top-k rows are identical, and for the others whether the rows that differ lie
at the same distance (a tie, which either engine may order its own way) or not (a real disagreement).
With --server, the Milvus 2.3 server binary of PyPI's `milvus` package (Milvus's C++ engine) is started
on 127.0.0.1 with a temporary data folder, the archive built there from the FAISS index's checkpoint and
splits (exact, the same metric), compared, and the server stopped and removed. Writes
<out>/task3_backend_agreement.json.
"""
import contextlib
from pathlib import Path

from pneumo.archive import ArchiveSource, build_archive
from pneumo.atomic import check_writable, write_json_atomic
from pneumo.classifier import Classifier
from pneumo.cli import add_shared_flags, make_parser
from pneumo.data import load_split
from pneumo.errors import run_script
from pneumo.milvus_archive import local_server
from pneumo.model import EMBEDDING_DIM
from pneumo.retrieval import DEFAULT_INDEX, IndexSpec, search
from pneumo.runtime import print_run_header, resolve_device

TIE = 1e-3  # distances closer than this are the same distance in float32 arithmetic


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "checkpoint", "data_root", "split", "k", "device", "uri", "collection", "out")
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX), help=f"FAISS index (default {DEFAULT_INDEX})")
    p.add_argument("--server", action="store_true",
                   help="start a local Milvus server and build the archive there first (instead of --uri)")
    return p.parse_args(argv)


def main(args):
    check_writable(args.out)
    run = print_run_header("task3_agreement", args)
    clf = Classifier.load(args.checkpoint, resolve_device(args.device))
    faiss_archive = ArchiveSource("faiss", index=args.index).open(clf.sha256, EMBEDDING_DIM)
    vectors = clf.embed(load_split(args.data_root, args.split, clf.image_size)[0])
    faiss_hits = search(*faiss_archive, vectors, args.k)
    with contextlib.ExitStack() as stack:
        if args.server:
            args.uri = stack.enter_context(local_server())[0]
            build_archive(clf, args.data_root, faiss_archive[1].build["splits"], IndexSpec(metric=faiss_archive[1].metric),
                          ArchiveSource("milvus", uri=args.uri, collection=args.collection), run)
        milvus_archive = ArchiveSource("milvus", uri=args.uri, collection=args.collection).open(clf.sha256, EMBEDDING_DIM)
        milvus_hits = search(*milvus_archive, vectors, args.k)
        engine = milvus_archive[1].build.get("engine_index")
    identical, ties, disagreements = 0, [], []
    for query, (a, b) in enumerate(zip(faiss_hits, milvus_hits)):
        if [h["row"] for h in a] == [h["row"] for h in b]:
            identical += 1
            continue
        differing = [(x, y) for x, y in zip(a, b) if x["row"] != y["row"]]
        case = {"query": query, "faiss": [h["row"] for h in a], "milvus": [h["row"] for h in b],
                "distances": [[round(x["score"], 5), round(y["score"], 5)] for x, y in differing]}
        (ties if all(abs(x["score"] - y["score"]) < TIE for x, y in differing) else disagreements).append(case)
    result = {"split": args.split, "k": args.k, "queries": len(faiss_hits), "identical": identical,
              "differ_by_ties_only": len(ties), "disagree": len(disagreements), "ties": ties,
              "disagreements": disagreements, "faiss": str(args.index),
              "milvus": "a local Milvus 2.3 server (PyPI's milvus package)" if args.server else f"{args.uri} ({args.collection})",
              "milvus_index": engine, "run": run}
    write_json_atomic(args.out / "task3_backend_agreement.json", result)
    print(f"{args.split}: {identical} of {len(faiss_hits)} top-{args.k} lists identical, {len(ties)} differ by ties "
          f"only, {len(disagreements)} disagree")
    for case in ties + disagreements:
        print(f"  query {case['query']}: faiss {case['faiss']} milvus {case['milvus']} distances {case['distances']}")
    return result


if __name__ == "__main__":
    run_script("task3_agreement", main, parse_args)
