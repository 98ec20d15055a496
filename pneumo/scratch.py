"""A private temporary folder for files that must not outlive the process that holds them (a viewer's
uploaded films and the reports it writes for download: patient data).

Three things remove it, so that no way of stopping leaves it behind:
- the process itself, at a normal exit (atexit) and on SIGTERM, SIGINT or SIGHUP (`stop_on_signals`);
- a watcher, a small `sh` started with the folder, which ignores those signals, waits for the process's
  end (the pipe it reads closes however the process ends, SIGKILL included) and then removes the folder;
- the next start (`sweep`), for a folder whose process and watcher were both killed: each folder holds a
  lock file that its process keeps locked (flock) while it lives, and the kernel releases it at death, so
  an unlocked folder belongs to a process that has ended (a reused process id cannot fool it).
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOCK = ".owner.lock"
YOUNG_S = 60  # a folder without its lock file this young may be another process's, still being made
_KEEP = []    # the open lock files and watchers of this process's folders (closing one would free it)
WATCHER = 'trap "" HUP INT TERM; cat >/dev/null; rm -rf -- "$1"'


def private_folder(prefix: str) -> Path:
    """A new folder under the system's temporary folder, removed at this process's end however it ends;
    folders of the same prefix left by processes that have ended are removed first (`sweep`)."""
    sweep(prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    lock = open(folder / LOCK, "w")
    try:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # not POSIX: no lock, no sweep of this folder; atexit still removes it
        pass
    _KEEP.append(lock)
    if shutil.which("sh") and shutil.which("cat"):
        watcher = subprocess.Popen(["sh", "-c", WATCHER, "watcher", str(folder)], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _KEEP.append(watcher)
    atexit.register(remove, folder)
    return folder


def remove(folder) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def sweep(prefix: str) -> list:
    """Remove this user's folders of `prefix` in the temporary folder whose owner has ended (their lock
    file can be locked), and older ones without a lock file; returns the folders removed."""
    try:
        import fcntl
    except ImportError:
        return []
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            if not folder.is_dir() or folder.is_symlink() or folder.stat().st_uid != os.getuid():
                continue
            lock_path = folder / LOCK
            if not lock_path.exists():
                if time.time() - folder.stat().st_mtime < YOUNG_S:
                    continue
            else:
                with open(lock_path, "a") as lock:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # its process is alive
            remove(folder)
            removed.append(folder)
        except OSError:
            continue
    return removed


def stop_on_signals(folder, before_exit=None, signals=("SIGTERM", "SIGINT", "SIGHUP")) -> None:
    """On each of `signals`: remove `folder` at once (before anything that could hang), call
    `before_exit` (closing a server, say), remove it again (a request still being served may have written
    into it) and end the process with status 0. What a thread writes after that is the watcher's."""
    def stop(signum, _frame):
        remove(folder)
        try:
            if before_exit is not None:
                before_exit()
        finally:
            remove(folder)
            print(f"stopped ({signal.Signals(signum).name}); removed {folder}", flush=True)
            sys.stdout.flush()
            os._exit(0)
    for name in signals:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
