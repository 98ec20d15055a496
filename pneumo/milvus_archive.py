"""The case archive in Milvus: the same vectors, metadata and checks as the FAISS file, in a vector
database. A local path as --uri runs Milvus Lite in-process (a Python reimplementation of Milvus's API over
FAISS, not the Milvus engine); an http://host:19530 address talks to a Milvus standalone or cluster with the
same code. Build parameters travel nested under "params", and the built index is read back and checked.

Each entity holds its archive row (primary key), the 512-d vector, split, index and label; the
collection's properties hold the metadata the FAISS sidecar holds (checkpoint SHA-256, metric, build
parameters, the out-of-distribution reference). `MilvusIndex` answers `search(queries, k)` as a FAISS
index does, so pneumo.retrieval.search, the screening and every script use it unchanged.

Index types: flat -> FLAT (exact), hnsw -> HNSW (M, efConstruction; search ef), ivf -> IVF_FLAT and
ivf_sq8 -> IVF_SQ8 (nlist; search nprobe). Metrics: l2 -> L2 (squared, as FAISS), cosine -> IP on unit vectors.
"""
import json
import logging
import os
import time
from contextlib import contextmanager

import numpy as np

from .retrieval import EXACT, INDEX_FAMILY, METRICS, ArchiveMeta, IndexSpec, check_data, check_meta, default_nlist, meta_digest, prepare
from .runtime import UserError

DEFAULT_COLLECTION = "task3_archive"
INSERT_BATCH = 5_000
SEARCH_BATCH = 1_000
BUILD_TIMEOUT = 3_600  # s: the longest wait for an index build before it is called failed
ETCD_PEER_PORT = 2380  # fixed in the PyPI server's embedded etcd; one local server per machine
_MILVUS_METRIC = {"l2": "L2", "cosine": "IP"}
_MILVUS_INDEX = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT", "ivf_sq8": "IVF_SQ8"}


@contextmanager
def local_server():
    """A Milvus 2.3 server (the standalone binary PyPI's `milvus` package ships: Milvus's C++ engine) on
    127.0.0.1 with a temporary data folder, stopped and removed after. Yields (uri, server process). For
    the tests and benchmarks; a deployment runs Milvus Standalone or Distributed and the same client code."""
    import shutil
    import socket
    import tempfile
    try:
        from milvus import MilvusServer
    except ImportError:
        raise UserError("a local Milvus server needs PyPI's milvus package (Linux x86-64): pip install milvus") from None
    with socket.socket() as s:
        try:  # the one port this build cannot move: a second server would hang for minutes, then fail
            s.bind(("127.0.0.1", ETCD_PEER_PORT))
        except OSError:
            raise UserError(f"a local Milvus server is already running here (its embedded etcd holds 127.0.0.1:"
                            f"{ETCD_PEER_PORT}, a port this Milvus build cannot move): use it, or stop it first") from None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = tempfile.mkdtemp(prefix="pneumo-milvus-")
    server = MilvusServer()
    server.show_startup_banner = False
    server.set_base_dir(base)
    server.listen_port = port
    try:
        server.start()
        yield f"http://127.0.0.1:{port}", server.server_proc
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def quiet_engine_logs():
    """Milvus Lite and pymilvus log their own tracebacks (a file that is not a database, a locked one)
    before raising; the project's one line says what happened, so their console logging is off."""
    for name in ("milvus_lite", "pymilvus"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def connect(uri, create=False):
    """A MilvusClient for a local file (Milvus Lite; with `create`, its folder is made) or a server
    address; one clear line when neither works."""
    quiet_engine_logs()
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise UserError("the milvus backend needs pymilvus and milvus-lite: pip install -r requirements.txt") from None
    uri = str(uri)
    if not uri.startswith(("http://", "https://", "tcp://", "grpc://")):
        folder = os.path.dirname(os.path.abspath(uri))
        if create:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as err:
                raise UserError(f"--uri {uri}: cannot create folder {folder} ({err.strerror})") from None
        if not os.path.isdir(folder):
            raise UserError(f"--uri {uri}: folder {folder} does not exist")
    try:
        return MilvusClient(uri=uri)
    except Exception as err:  # no server there, a file that is not a Milvus Lite database, no Lite wheel
        local = "" if uri.startswith(("http://", "https://", "tcp://", "grpc://")) else (
            "; a local file must be a Milvus Lite database that no other process holds open")
        raise UserError(f"cannot open Milvus at {uri} ({type(err).__name__}: {str(err).splitlines()[0][:160]}){local}") from None


def index_params(client, spec: IndexSpec, n):
    """(pymilvus index parameters, the build parameters asked). The build parameters travel nested under
    "params" (one JSON value on the wire): the form Milvus Lite reads (it drops them when pymilvus 3 sends
    each as its own key, and builds its defaults) and the Milvus server accepts."""
    params = {"hnsw": {"M": spec.hnsw_m, "efConstruction": spec.ef_construction},
              "ivf": {"nlist": spec.nlist or default_nlist(n)}}.get(INDEX_FAMILY[spec.index_type], {})
    milvus_spec = client.prepare_index_params()
    milvus_spec.add_index(field_name="vector", index_type=_MILVUS_INDEX[spec.index_type],
                          metric_type=_MILVUS_METRIC[spec.metric], params={"params": params} if params else {})
    return milvus_spec, params


def built_index(client, collection, index_type: str, params: dict, timeout=BUILD_TIMEOUT, progress=True) -> dict:
    """What the engine built, read back (describe_index) once every row is indexed: {"index_type", "params"}.
    Waits for the build (an engine answers by brute force until it is done, so nothing is timed or used
    before); refuses, in one line, an index of another type or other parameters than asked."""
    from tqdm import tqdm
    deadline = time.monotonic() + timeout
    with tqdm(desc=f"index build in Milvus {collection}", unit="row", disable=not progress) as bar:
        while True:
            info = client.describe_index(collection, index_name="vector")
            bar.total = int(info.get("total_rows", 0) or 0)
            bar.n = int(info.get("indexed_rows", 0) or 0)
            bar.refresh()
            if str(info.get("state", "")).lower() == "failed":
                raise UserError(f"Milvus could not build the {index_type} index of {collection!r}: "
                                f"{info.get('index_state_fail_reason') or 'no reason given'}")
            if int(info.get("pending_index_rows", 0) or 0) == 0 and str(info.get("state", "Finished")) == "Finished":
                break
            if time.monotonic() > deadline:
                raise UserError(f"Milvus had not finished the {index_type} index of {collection!r} after {timeout} s")
            time.sleep(0.5)
    read = info.get("params") or {k: v for k, v in info.items() if k in params}
    if isinstance(read, str):  # some servers return the JSON text
        read = json.loads(read)
    built = {"index_type": info.get("index_type"), "params": {k: _number(v) for k, v in read.items()}}
    if built["index_type"] != index_type or any(built["params"].get(k) != v for k, v in params.items()):
        raise UserError(f"Milvus built {built['index_type']} {built['params']} for {collection!r}, not the "
                        f"{index_type} {params} asked; nothing was swapped in")
    return built


def _number(value):
    """A parameter as read back: an int when it reads as one (the wire carries strings)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


def search_params(meta: ArchiveMeta):
    build = meta.build
    params = {"hnsw": {"ef": build.get("ef_search", 64)}, "ivf": {"nprobe": build.get("nprobe", 16)}}
    return {"metric_type": _MILVUS_METRIC[meta.metric], "params": params.get(INDEX_FAMILY[build["index_type"]], {})}


def tuned_nprobe(index, vectors, target, n_queries=1000, max_nprobe=512, seed=0) -> dict:
    """Milvus's IVF search depth for a recall target, chosen as the FAISS path chooses it
    (pneumo.search_depth): held-out rows of the archive's own vectors as queries, their exact neighbours by a
    brute-force pass, the smallest nprobe that meets the target. Sets it on `index` and returns the record."""
    import faiss

    from .search_depth import tune_nprobe
    rng = np.random.default_rng([seed, 36])
    ids = np.sort(rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False))
    queries = np.ascontiguousarray(vectors[ids], dtype=np.float32)
    truth = faiss.knn(queries, np.ascontiguousarray(vectors, dtype=np.float32), 11,
                      faiss.METRIC_INNER_PRODUCT if index.meta.metric == "cosine" else faiss.METRIC_L2)[1]

    def search_at(nprobe):
        index.meta.build["nprobe"] = nprobe
        return index.search(queries, 11)[1]
    search = tune_nprobe(search_at, ids, truth, index.meta.build["nlist"], target=target, max_nprobe=max_nprobe, seed=seed)
    index.meta.build["nprobe"] = search["nprobe"]
    return search


@contextmanager
def building(uri, collection, vectors, rows, spec: IndexSpec = EXACT, progress=True):
    """Build the archive under a temporary name and yield a MilvusIndex over it; `finish(meta)` on the
    yielded index stores the metadata and swaps it in under `collection`. An error or interruption
    before that drops the temporary collection: queries see the old archive or none, never half of one."""
    from pymilvus import DataType
    from tqdm import tqdm
    client = connect(uri, create=True)
    vectors = prepare(vectors, spec.metric)
    temporary = f"{collection}__building_{os.getpid()}"
    if client.has_collection(temporary):
        client.drop_collection(temporary)
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(vectors.shape[1]))
    schema.add_field("split", DataType.VARCHAR, max_length=16)
    schema.add_field("index", DataType.INT64)
    schema.add_field("label", DataType.VARCHAR, max_length=32)
    milvus_spec, params = index_params(client, spec, len(vectors))
    client.create_collection(temporary, schema=schema, index_params=milvus_spec)
    finished = False
    try:
        for start in tqdm(range(0, len(vectors), INSERT_BATCH), desc=f"insert into Milvus {collection}",
                          unit="batch", disable=not progress):
            stop = min(start + INSERT_BATCH, len(vectors))
            client.insert(temporary, [{"row": i, "vector": vectors[i], **rows[i]} for i in range(start, stop)])
        client.flush(temporary)
        engine = built_index(client, temporary, _MILVUS_INDEX[spec.index_type], params, progress=progress)
        client.load_collection(temporary)
        searching = {"hnsw": {"ef_search": spec.ef_search}, "ivf": {"nprobe": spec.nprobe}}.get(INDEX_FAMILY[spec.index_type], {})
        index = MilvusIndex(client, temporary,
                            ArchiveMeta(spec.metric, rows, {"index_type": spec.index_type, **params, **searching,
                                                            "engine_index": engine}),
                            int(vectors.shape[1]), len(vectors))

        def finish(archive_meta: ArchiveMeta):
            nonlocal finished
            meta = archive_meta.to_json()
            meta["meta_sha256"] = meta_digest(meta)  # over the rows too, which live in the entities
            client.alter_collection_properties(temporary, {"meta": json.dumps({k: v for k, v in meta.items() if k != "rows"})})
            old = f"{collection}__old_{os.getpid()}"
            if client.has_collection(collection):
                client.rename_collection(collection, old)
            client.rename_collection(temporary, collection)
            if client.has_collection(old):
                client.drop_collection(old)
            index.collection, finished = collection, True
        index.finish = finish
        yield index
    finally:
        if not finished and client.has_collection(temporary):
            client.drop_collection(temporary)


def load_milvus(uri, collection, checkpoint_sha256, dim=None, data_root=None):
    """(MilvusIndex, metadata) with the checks load_index makes on a FAISS pair: present, metadata
    readable, built from this checkpoint, of the classifier's dimension, every row there."""
    client = connect(uri)
    rebuild = f"rebuild it with `python task3/build_index.py --backend milvus --uri {uri}`"
    if not client.has_collection(collection):
        raise UserError(f"no collection {collection!r} at {uri}; {rebuild}")
    info = client.describe_collection(collection)
    try:
        meta = json.loads(info.get("properties", {})["meta"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise UserError(f"collection {collection!r} at {uri} carries no archive metadata (not built by this project); {rebuild}") from None
    if meta.get("checkpoint_sha256") != checkpoint_sha256:
        raise UserError(f"collection {collection!r} at {uri} was built from another checkpoint (sha256 "
                        f"{str(meta.get('checkpoint_sha256'))[:12]}…, this one {checkpoint_sha256[:12]}…); {rebuild}")
    field = next(f for f in info["fields"] if f["name"] == "vector")
    collection_dim = int(field["params"]["dim"])
    if dim is not None and collection_dim != dim:
        raise UserError(f"collection {collection!r} holds {collection_dim}-d vectors but the classifier gives {dim}-d "
                        f"embeddings; {rebuild}")
    if meta.get("metric") not in METRICS:
        raise UserError(f"collection {collection!r}: unknown metric {meta.get('metric')!r}; {rebuild}")
    client.load_collection(collection)
    rows = fetch_rows(client, collection)
    if len(rows) != meta.get("ntotal", len(rows)):
        raise UserError(f"collection {collection!r} holds {len(rows)} cases but was built with {meta['ntotal']}; {rebuild}")
    meta["rows"] = rows
    where = f"collection {collection!r} at {uri}"
    check_meta(meta, where, rebuild)
    meta = ArchiveMeta.from_json(meta)
    check_data(meta, data_root, where, rebuild)
    return MilvusIndex(client, collection, meta, collection_dim, len(rows)), meta


def fetch_rows(client, collection, batch=16_384):
    """[{split, index, label}] in row order: what the FAISS sidecar lists."""
    found, start = {}, 0
    while True:
        part = client.query(collection, filter=f"row >= {start} and row < {start + batch}",
                            output_fields=["row", "split", "index", "label"])
        if not part and start >= len(found):
            break
        found.update({r["row"]: {"split": r["split"], "index": int(r["index"]), "label": r["label"]} for r in part})
        start += batch
    if sorted(found) != list(range(len(found))):
        raise UserError(f"collection {collection!r} has gaps in its rows (an interrupted build?); rebuild it")
    return [found[i] for i in range(len(found))]


class MilvusIndex:
    """Searches a Milvus collection the way a FAISS index is searched: (scores, rows) arrays, -1 where
    fewer than k are found. Scores are squared L2 or inner product, as FAISS gives them."""

    def __init__(self, client, collection, meta, dim, ntotal):
        self.client, self.collection, self.meta, self.d, self.ntotal = client, collection, meta, dim, ntotal

    def search(self, queries, k):
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores = np.full((len(queries), k), np.nan, dtype=np.float32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        params = search_params(self.meta)
        for start in range(0, len(queries), SEARCH_BATCH):
            batch = queries[start:start + SEARCH_BATCH]
            hits = self.client.search(self.collection, data=list(batch), limit=k, output_fields=["row"],
                                      search_params=params)
            for i, found in enumerate(hits, start):
                for j, hit in enumerate(found[:k]):
                    rows[i, j], scores[i, j] = hit["row"], hit["distance"]  # the primary key, under its field name
        return scores, rows
