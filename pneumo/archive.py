"""The one way every script opens the case archive, wherever it lives: a FAISS index file with its
metadata (pneumo.retrieval) or a Milvus collection (pneumo.milvus_archive)."""
from .milvus_archive import load_milvus
from .retrieval import load_index


def open_index(backend, index_path, uri, collection, checkpoint_sha256: str, dim: int | None = None, data_root=None):
    """(index, metadata) of the archive wherever it lives: the FAISS pair at index_path, or the Milvus
    collection at uri (pneumo.milvus_archive); both come back searchable by `search`. With `data_root`, an archive built from another data file than the
one there is refused (its rows would show other pictures)."""
    if backend == "milvus":
        return load_milvus(uri, collection, checkpoint_sha256, dim, data_root)
    return load_index(index_path, checkpoint_sha256, dim, data_root)
