"""Issue 35, 1: no uploaded film or written report outlives the viewer (pneumo/scratch.py). The viewer is
started as a user starts it, sent films through its API (gradio_client), and stopped: by SIGTERM or SIGINT
while a request is being served, by SIGKILL (its watcher removes the folder), and by SIGKILL of it and its
watcher together (the next start removes the folder)."""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from pneumo import scratch

PREFIX = "pneumo-viewer-"
needs_data = pytest.mark.skipif(not (REPO / "data" / "pneumoniamnist.npz").exists(), reason="dataset not set up in data/")


def start_viewer():
    """(process, url, its temporary folder) of a viewer started on a free port, once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "viewer/app.py", "--port", str(port), "--device", "cpu"], cwd=REPO,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen, deadline, folder = "", time.time() + 120, None
    while folder is None:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        line = proc.stdout.readline() if ready else ""
        seen += line
        found = re.search(r"live in (\S+) until it stops", line)
        folder = Path(found.group(1)) if found else None
        if folder is None and (proc.poll() is not None or time.time() > deadline):
            proc.kill()
            pytest.fail(f"the viewer did not start: {seen[-2000:]}")
    url = f"http://127.0.0.1:{port}/"
    import urllib.request
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url, folder
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("the viewer did not answer")
            time.sleep(0.3)


def client(url):
    from gradio_client import Client
    return Client(url, verbose=False, download_files=False)


def gone(folder, within=10.0) -> bool:
    deadline = time.time() + within
    while folder.exists() and time.time() < deadline:
        time.sleep(0.1)
    return not folder.exists()


def watcher_pid(folder) -> int:
    """The process id of the folder's watcher (pneumo.scratch.WATCHER), from /proc."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and b"watcher" in cmdline and str(folder).encode() in cmdline:
            return int(proc.name)
    raise AssertionError(f"no watcher for {folder}")


@pytest.fixture(scope="module")
def big_film(tmp_path_factory):
    """A film large enough (81 M pixels) that analysing it takes about a second: a request in flight."""
    path = tmp_path_factory.mktemp("big") / "big_film.png"
    yy, xx = np.mgrid[0:9000, 0:9000]
    Image.fromarray(np.uint8(120 + 60 * np.sin(xx / 250) * np.cos(yy / 310))).save(path)
    return path


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_a_request_leaves_no_film_or_report(big_film, sample_film, signum):
    from gradio_client import handle_file
    from gradio_client.utils import Status
    proc, url, folder = start_viewer()
    try:
        api = client(url)
        api.predict(handle_file(str(sample_film)), 0.6, api_name="/analyse_upload")  # a case served: film and reports
        assert list(folder.rglob(sample_film.name)) and list(folder.rglob("*_report.md"))
        job = api.submit(handle_file(str(big_film)), 0.6, api_name="/analyse_upload")
        deadline = time.time() + 60
        while not (list(folder.rglob(big_film.name)) and job.status().code == Status.PROCESSING):
            assert time.time() < deadline and not job.done(), "the big film's request was never seen being served"
            time.sleep(0.02)
        assert not job.done()
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-2000:]
    assert f"stopped ({signal.Signals(signum).name}); removed {folder}" in out
    assert gone(folder), sorted(str(p) for p in folder.rglob("*"))


@pytest.mark.slow
@needs_data
def test_after_sigkill_the_watcher_or_the_next_start_removes_the_folder(sample_film):
    from gradio_client import handle_file
    # the viewer alone killed: its watcher removes the folder
    proc, url, folder = start_viewer()
    client(url).predict(handle_file(str(sample_film)), 0.6, api_name="/analyse_upload")
    assert list(folder.rglob(sample_film.name))
    proc.kill()
    proc.wait()
    assert gone(folder)
    # the viewer and its watcher both killed (a whole session torn down): the folder stays ...
    proc, url, folder = start_viewer()
    client(url).predict(handle_file(str(sample_film)), 0.6, api_name="/analyse_upload")
    os.kill(watcher_pid(folder), signal.SIGKILL)
    proc.kill()
    proc.wait()
    time.sleep(0.5)
    assert list(folder.rglob(sample_film.name))
    # ... until the next viewer starts
    proc, _, new_folder = start_viewer()
    try:
        assert not folder.exists() and new_folder.exists()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert gone(new_folder)


def test_the_sweep_removes_folders_of_ended_processes_only(tmp_path):
    """A folder whose lock nobody holds is a dead viewer's; one locked by a live process, or one too young
    to have its lock file yet, is left alone; so is a file of that name."""
    dead = Path(tempfile.mkdtemp(prefix=PREFIX))
    (dead / scratch.LOCK).touch()
    (dead / "film.dcm").write_bytes(b"patient data")
    live = Path(tempfile.mkdtemp(prefix=PREFIX))
    young = Path(tempfile.mkdtemp(prefix=PREFIX))
    a_file = Path(tempfile.mkstemp(prefix=PREFIX)[1])
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(120)",
                               str(live / scratch.LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        removed = scratch.sweep(PREFIX)
        assert dead in removed and not dead.exists()
        assert live.exists() and young.exists() and a_file.exists()
        os.utime(young, (time.time() - 2 * scratch.YOUNG_S,) * 2)  # old and still without a lock file: stale
        assert young in scratch.sweep(PREFIX) and live.exists()
    finally:
        holder.kill()
        holder.wait()
        for leftover in (live, young):
            scratch.remove(leftover)
        a_file.unlink()


def test_a_folder_of_this_process_is_its_own_and_outlives_no_exit(tmp_path):
    """private_folder's folder survives this process's own sweep, and is gone once a process that made one
    exits normally."""
    code = ("import sys; from pneumo import scratch; f = scratch.private_folder('pneumo-selftest-'); "
            "(f / 'x').write_text('x'); assert f not in scratch.sweep('pneumo-selftest-') and f.exists(); print(f)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert gone(Path(done.stdout.strip()), within=5)
