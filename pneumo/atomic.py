"""File helpers: the SHA-256 of a file, and the one way the project writes a file: into a uniquely named temp file beside the target, then an
atomic rename. Readers never see half a file, two writers never share a temp file, and a failed or
interrupted write leaves the old file (or none) and no temp file behind."""
import contextlib
import csv
import glob
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import UserError


def check_writable(path, kind: str = "folder") -> Path:
    """Fail in one line, before any work, when an output `path` (kind "folder" or "file") cannot be
    written: a file where a folder is needed or the reverse, or a location that refuses new files."""
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise UserError(f"{path} is a folder; give a file path for this output")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"{path} is a file, not a folder; choose another output folder")
    ancestor = path if kind == "folder" else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"cannot write {path}: {ancestor} is a file, not a folder; choose another output location")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as err:
        raise UserError(f"cannot write {path}: {ancestor} does not accept new files ({err.strerror}); "
                        f"choose another output location") from None
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path in the target's folder; on success it replaces `path`, else it is removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot write {path}: {path.parent} is a file, not a folder; "
                        f"choose another output folder") from None
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; outputs get the permissions of any new file
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def json_safe(value):
    """Plain JSON: NaN and infinities (which json.dumps would write as bare NaN/Infinity, not JSON) become
    null; numpy scalars and arrays become numbers and lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path, payload, indent=2) -> Path:
    return write_text_atomic(path, json.dumps(json_safe(payload), indent=indent, allow_nan=False) + "\n")


def write_jsonl_atomic(path, records) -> Path:
    return write_text_atomic(path, "".join(json.dumps(json_safe(r), allow_nan=False) + "\n" for r in records))


def write_csv_atomic(path, header, rows) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    return Path(path)


def save_torch_atomic(payload, path) -> Path:
    import torch
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def save_figure_atomic(fig, path, dpi=120) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temps(path: Path) -> None:
    """Temp files of this target left by writers that were killed (their process is gone)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_sha256(path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
