"""Embed the archive of confirmed cases with the classifier and index it with FAISS.

    python task3/build_index.py                                  # train + val, exact L2 (default)
    python task3/build_index.py --split train val test           # include test, as some setups do
    python task3/build_index.py --metric cosine --index_type hnsw --out /tmp/hnsw.faiss
    python task3/build_index.py --backend milvus                # Milvus Lite, runs/default/task3_milvus.db
    python task3/build_index.py --backend milvus --uri http://localhost:19530   # a Milvus server
    python task3/build_index.py --vectors embeddings.npy --rows cases.parquet --out big.faiss   # millions, streamed

Writes <out> (FAISS index) and <out stem>.json (row -> split, index, label; metric; the checkpoint's
SHA-256; build parameters), both atomically; with --backend milvus, the collection --collection at --uri
instead (the same vectors and metadata, built under a temporary name and swapped in when complete). Exact search suits archives up to about a million cases
on one machine; see the README for when to pick HNSW or IVF. With --vectors, a .npy file of vectors
(float16 or float32, rows x dim, read in chunks: it may be larger than memory) is indexed instead, into
an IVF-HNSW-SQ8 index (--factory) with a build record beside it, resumable after a kill (rerun the same
command); the search depth is chosen there for --recall_target on a sample of the archive's own vectors and
recorded. With --rows, a Parquet file of one case row per vector (a label column; split, index, source file or
study id as it has them) is kept beside it (<out stem>.rows.parquet), and query.py answers from that archive as
from the small one. benchmarks/task3_large.py measures such indexes at 1M-10M vectors.
"""
from pathlib import Path

from pneumo.archive import ArchiveSource, build_archive, written_where
from pneumo.atomic import check_writable, file_sha256, write_json_atomic
from pneumo.case_rows import check_rows, rows_path, write_rows
from pneumo.checkpoint import DEFAULT_CHECKPOINT
from pneumo.classifier import Classifier
from pneumo.cli import INFERENCE_SIZE, add_shared_flags, make_parser, positive_int, ranged
from pneumo.data import CLASS_NAMES
from pneumo.errors import run_script
from pneumo.large_archive import file_stamp
from pneumo.milvus_archive import connect
from pneumo.retrieval import DEFAULT_INDEX, INDEX_NAME, INDEX_TYPES, METRICS, IndexSpec, meta_path
from pneumo.runtime import DEFAULT_RUN, print_run_header, resolve_device
from pneumo.search_depth import DEFAULT_MAX_NPROBE, DEFAULT_QUERIES, DEFAULT_TARGET, depth_line, tune_index_file
from pneumo.streamed_index import LARGE_FACTORY, VECTOR_FILE_INDEX, build_streamed, open_vectors, record_path


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "size", "checkpoint", "split", "data_root", "out", "device", "backend", "uri", "collection", "seed",
                     size=INFERENCE_SIZE,
                     checkpoint=dict(help=f"classifier whose embeddings are indexed (default {DEFAULT_CHECKPOINT})"),
                     split=dict(nargs="+", default=["train", "val"],
                                help="splits in the archive (default train val; add test to index it too)"),
                     out=dict(default=DEFAULT_RUN / INDEX_NAME,
                              help=f"index file (default {DEFAULT_RUN / INDEX_NAME}; the shipped one is {DEFAULT_INDEX})"))
    p.add_argument("--index_type", default="flat", choices=INDEX_TYPES,
                   help="flat = exact (default); hnsw / ivf / ivf_sq8 = approximate, for large archives "
                        "(ivf_sq8: 8-bit codes, a quarter of the memory)")
    p.add_argument("--metric", default="l2", choices=METRICS, help="l2 distance (default) or cosine similarity")
    p.add_argument("--hnsw_m", type=ranged(int, 2, 512), default=32, help="HNSW links per node, 2 to 512 (default 32)")
    p.add_argument("--ef_search", type=positive_int, default=64, help="HNSW search breadth (default 64)")
    p.add_argument("--nlist", type=positive_int, help="IVF cells (default about 4*sqrt(N))")
    p.add_argument("--nprobe", type=positive_int, default=16, help="IVF cells visited per query (default 16)")
    p.add_argument("--batch_size", type=positive_int, default=256, help="images per forward pass (default 256)")
    large = p.add_argument_group("a vector file larger than memory (instead of the classifier's embeddings)")
    large.add_argument("--vectors", type=Path, help="a .npy file of vectors (rows x dim, float16 or float32)")
    large.add_argument("--rows", type=Path, help="case rows: a Parquet file with a label column, one row per vector "
                                                 "(without it the index has no cases to show and only the benchmark uses it)")
    large.add_argument("--limit", type=positive_int, help="index only the first LIMIT vectors (default all)")
    large.add_argument("--factory", default=LARGE_FACTORY, help=f"FAISS index factory string (default {LARGE_FACTORY})")
    large.add_argument("--train_size", type=positive_int, default=327_680,
                       help="rows drawn to train the quantizers (default 327,680: 20 per cell of the default)")
    large.add_argument("--recall_target", type=ranged(float, 0.01, 1.0), default=DEFAULT_TARGET,
                       help=f"recall@10 the search depth is chosen for, measured on the archive's own vectors "
                            f"(default {DEFAULT_TARGET})")
    large.add_argument("--tune_queries", type=positive_int, default=DEFAULT_QUERIES,
                       help=f"archive rows held out as queries to choose the depth (default {DEFAULT_QUERIES})")
    large.add_argument("--max_nprobe", type=positive_int, default=DEFAULT_MAX_NPROBE,
                       help=f"deepest search considered, in cells visited (default {DEFAULT_MAX_NPROBE})")
    args = p.parse_args(argv)
    if args.vectors and args.backend != "faiss":
        p.error("--vectors builds a FAISS index; the Milvus mapping of it is IVF_SQ8 (see the README)")
    if len(set(args.split)) != len(args.split):
        p.error("--split lists a split twice")
    return args


def main(args):
    if args.vectors:
        return index_vector_file(args)
    source = ArchiveSource.from_args(args, index=args.out)
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
    meta = build_archive(clf, args.data_root, args.split, IndexSpec.from_args(args), source, run, args.batch_size)
    ood, rows = meta.ood, meta.rows
    print(f"out-of-distribution screen: Mahalanobis distance to the train films' class means, cut at "
          f"{ood['threshold'] ** 0.5:.1f} ({ood['percentile']:g}th percentile over {ood['n_val']} val films); val films "
          f"flagged: {100 * ood['val_flagged_share']:.1f} %")
    counts = {c: sum(r["label"] == c for r in rows) for c in CLASS_NAMES}
    print(f"indexed {len(rows)} cases from {'+'.join(args.split)} ({counts}) in a {args.index_type} {args.metric} index; "
          f"{written_where(source)}")


def index_vector_file(args):
    """--vectors: the streamed, resumable IVF-HNSW-SQ8 build, its search depth, its case rows, and its record
    beside the index. The vectors are taken to be --checkpoint's embeddings: its SHA-256 is recorded, and
    query.py refuses the archive with another classifier."""
    for path in (args.out, record_path(args.out), rows_path(args.out)):
        check_writable(path, "file")
    if args.rows is not None:  # before the build, not after it
        check_rows(args.rows, args.limit or open_vectors(args.vectors).shape[0])
    checkpoint_sha256 = file_sha256(args.checkpoint) if Path(args.checkpoint).is_file() else None
    run = print_run_header("build_index", args)
    record = build_streamed(args.vectors, args.out, rows=args.limit, factory=args.factory, train_size=args.train_size,
                            seed=args.seed)
    search = tune_index_file(args.out, args.vectors, record["rows"], args.recall_target, args.tune_queries,
                             args.max_nprobe, seed=args.seed)
    case_rows = write_rows(args.rows, args.out, record["rows"]) if args.rows is not None else None
    write_json_atomic(record_path(args.out), {"kind": VECTOR_FILE_INDEX, **run, **record, "search": search,
                                              "checkpoint_sha256": checkpoint_sha256, "case_rows": case_rows,
                                              "index_sha256": file_sha256(args.out), "index_stamp": file_stamp(args.out)})
    print(depth_line(search))
    print(f"indexed {record['ntotal']:,} vectors of {args.vectors} in {args.factory} ({record['train_s']:.0f} s training, "
          f"{record['add_s']:.0f} s adding, {search['truth_s'] + search['explore_s']:.0f} s choosing the depth); wrote "
          f"{args.out} and {record_path(args.out)}" + (f" and {rows_path(args.out)}" if case_rows else ""))


if __name__ == "__main__":
    run_script("build_index", main, parse_args)
