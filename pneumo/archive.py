"""The case archive as every script meets it: where it lives (`ArchiveSource`: a FAISS index file with its
metadata, pneumo.retrieval, or a Milvus collection, pneumo.milvus_archive), how it is opened, and how it
is built (embed the splits, index them, the out-of-distribution reference, the metadata)."""
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import file_sha256
from .data import CLASS_NAMES, data_file, load_split
from .errors import UserError
from .milvus_archive import building, load_milvus, tuned_nprobe
from .model import EMBEDDING_DIM
from .retrieval import IVF_TYPES, ArchiveMeta, IndexSpec, build_index, load_index, meta_path, save_index
from .screening import fit_reference
from .search_depth import depth_line

MIN_PER_CELL = 39  # k-means needs about this many vectors per IVF cell


@dataclass(frozen=True)
class ArchiveSource:
    """Where the archive lives: the FAISS pair at `index` (backend "faiss"), or the Milvus collection
    `collection` at `uri` (backend "milvus"; a local file runs Milvus Lite)."""
    backend: str = "faiss"
    index: Path | None = None
    uri: str | None = None
    collection: str | None = None

    @classmethod
    def from_args(cls, args, index=None):
        """From the shared --backend/--uri/--collection flags and the script's --index (or `index`)."""
        return cls(args.backend, index if index is not None else getattr(args, "index", None), args.uri, args.collection)

    def open(self, checkpoint_sha256: str, dim: int | None = None, data_root=None):
        """(index, metadata), searchable by pneumo.retrieval.search whatever the backend, after the checks
        of load_index / load_milvus. With `data_root`, an archive built from another data file than the one
        there is refused (its rows would show other pictures)."""
        if self.backend == "milvus":
            return load_milvus(self.uri, self.collection, checkpoint_sha256, dim, data_root)
        return load_index(self.index, checkpoint_sha256, dim, data_root)

    def describe(self) -> str:
        """Where it lives, in words for the outputs."""
        return f"milvus {self.uri} ({self.collection})" if self.backend == "milvus" else str(self.index)


def open_optional(source: ArchiveSource, clf, data_root=None):
    """(archive or None, note or None): the one policy for scripts to which the archive adds similar cases and
    the out-of-distribution screen (evaluate, gradcam, generate_reports, the viewer). An archive that is
    missing or cannot be used with this classifier (another checkpoint, edited, another data file) is left out
    with a note saying why, and the classifier's own answer goes on. The scripts that exist to search it
    (query.py, the retrieval benchmarks) refuse instead: for them it is the input."""
    try:
        return source.open(clf.sha256, EMBEDDING_DIM, data_root), None
    except UserError as err:
        return None, f"no similar cases and no out-of-distribution screen: {err}"


def optional_archive(args, clf, consequence=""):
    """open_optional for a script's parsed flags (--index or --backend/--uri/--collection, --data_root): the
    archive, or None after printing the note (and `consequence`, what the script does without it)."""
    archive, note = open_optional(ArchiveSource.from_args(args), clf, args.data_root)
    if note:
        print(f"note: {note}{consequence}")
    return archive


def build_archive(clf, data_root, splits, spec: IndexSpec, source: ArchiveSource, record: dict, batch_size=256) -> ArchiveMeta:
    """Embed `splits` of the data file with the classifier, index them as `spec` says where `source` says,
    with the out-of-distribution reference (fitted on train, cut on val) and the metadata (`record`: the run's own, from
    print_run_header). Returns the metadata written."""
    loaded = {split: load_split(data_root, split, clf.image_size) for split in splits}
    n = sum(len(labels) for _, labels in loaded.values())
    if spec.index_type in IVF_TYPES and spec.nlist is not None and spec.nlist > n // MIN_PER_CELL:
        raise UserError(f"--nlist {spec.nlist} is too many cells for {n} cases: k-means needs at least {MIN_PER_CELL} "
                        f"per cell, so at most {max(1, n // MIN_PER_CELL)}; lower it or leave it out (default about 4*sqrt(N))")
    start = time.perf_counter()
    vectors = np.concatenate([clf.embed(images, batch_size, desc=f"embed {split}") for split, (images, _) in loaded.items()])
    rows = [{"split": split, "index": i, "label": CLASS_NAMES[y]}
            for split, (_, labels) in loaded.items() for i, y in enumerate(labels.tolist())]
    build = {"index_type": spec.index_type, "splits": list(splits), "dim": int(vectors.shape[1]),
             "embed_seconds": round(time.perf_counter() - start, 2)}
    if spec.index_type == "hnsw":
        build.update(hnsw_m=spec.hnsw_m, ef_search=spec.ef_search)
    meta = ArchiveMeta(spec.metric, rows, build, checkpoint=clf.meta["path"], checkpoint_sha256=clf.sha256,
                       image_size=clf.image_size, data_sha256=file_sha256(data_file(data_root, clf.image_size)), run=record)
    meta.ood = screen_reference(clf, data_root, loaded, vectors, batch_size)
    start = time.perf_counter()
    if source.backend == "faiss":
        index = build_index(vectors, spec)
        if spec.index_type in IVF_TYPES:
            build.update(nlist=int(index.nlist), nprobe=int(index.nprobe))
        build["build_seconds"] = round(time.perf_counter() - start, 3)
        save_index(index, meta, source.index)
        return meta
    with building(source.uri, source.collection, vectors, rows, spec) as index:
        if spec.index_type in IVF_TYPES and spec.recall_target:  # the depth for the target, on the archive's own rows
            search = tuned_nprobe(index, vectors, spec.recall_target)
            build["search"] = search
            print(depth_line(search))
        build.update({k: v for k, v in index.meta.build.items() if k != "index_type"}, backend="milvus")
        build["build_seconds"] = round(time.perf_counter() - start, 3)
        meta.ntotal, meta.dim = len(rows), int(vectors.shape[1])
        index.finish(meta)
    return meta


def screen_reference(clf, data_root, loaded, vectors, batch_size=256) -> dict:
    """The out-of-distribution reference (pneumo.screening.fit_reference) from the train and val films'
    features: taken from the archived vectors when those splits are archived, else embedded here."""
    parts, start = {}, 0
    for split, (_, labels) in loaded.items():
        parts[split] = (vectors[start:start + len(labels)], labels)
        start += len(labels)
    for split in ("train", "val"):
        if split not in parts:
            images, labels = load_split(data_root, split, clf.image_size)
            parts[split] = (clf.embed(images, batch_size, desc=f"embed {split} (out-of-distribution reference)"), labels)
    return fit_reference(parts["train"][0], parts["train"][1], parts["val"][0])


def written_where(source: ArchiveSource) -> str:
    if source.backend == "faiss":
        return f"wrote {source.index} and {meta_path(source.index)}"
    return f"wrote collection {source.collection!r} at {source.uri}"
