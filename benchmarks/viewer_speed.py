"""The case viewer's speed: start-up, one uploaded film to verdict + evidence map + neighbours, and many clients.

    python benchmarks/viewer_speed.py                      # ~2 min on 2 cores; --out reports publishes it

Starts `python viewer/app.py` (shipped checkpoint and index, no VLM) on a free local port and measures:
start-up to the first page served; --requests sequential uploads of one film through Gradio's HTTP API
(gradio_client: upload, queue, handler, response: what a browser waits for) and, for comparison, the
same work in-process without the server; then --clients concurrent clients x --per_client uploads
each. Targets from the issue: p50 <= 300 ms without the VLM, start-up <= 15 s. Writes
<out>/benchmark_viewer.json and .md. Traffic goes to 127.0.0.1 only, and every loop is bounded.
"""
import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from pneumo.archive import ArchiveSource
from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.errors import run_script
from pneumo.runtime import DEFAULT_RUN, UserError

REPO = Path(__file__).resolve().parent.parent
SAMPLES = sorted((REPO.parent / "shared" / "samples").glob("pneumonia/*.jpeg"))
TARGETS = {"p50_ms": 300, "startup_s": 15}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=50, help="sequential uploads (default 50)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--per_client", type=int, default=25, help="uploads per concurrent client (default 25)")
    p.add_argument("--out", type=Path, default=DEFAULT_RUN, help=f"folder for the results (default {DEFAULT_RUN})")
    return p.parse_args(argv)


def cpu_name():
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def film_path(folder):
    if SAMPLES:
        return SAMPLES[0]
    path = Path(folder) / "film.png"
    yy, xx = np.mgrid[0:1024, 0:1024]
    Image.fromarray(np.uint8(120 + 60 * np.sin(xx / 25) * np.cos(yy / 31))).save(path)
    return path


def percentiles(seconds):
    ms = 1000 * np.asarray(seconds)
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def start_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(REPO / "viewer" / "app.py"), "--port", str(port), "--device", "cpu"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - start < 120:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url, time.perf_counter() - start
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    proc.kill()
    raise UserError("the viewer did not start within 120 s (run python viewer/app.py to see why)")


def upload(client, film):
    from gradio_client import handle_file
    start = time.perf_counter()
    out = client.predict(handle_file(str(film)), 0.6, api_name="/analyse_upload")
    if "P(pneumonia) =" not in out[1]:
        raise RuntimeError(f"unexpected answer: {out[0][:120]}")
    return time.perf_counter() - start


def in_process(film, n):
    from pneumo.viewer import CaseViewer
    viewer = CaseViewer(REPO / "models" / "task1_model.pth", ArchiveSource(index=REPO / "models" / "task3_index.faiss"),
                        REPO / "data", "cpu")
    viewer.analyse(viewer.file_case(film))  # warm-up
    times = []
    for _ in range(n):
        start = time.perf_counter()
        viewer.analyse(viewer.file_case(film))
        times.append(time.perf_counter() - start)
    return percentiles(times)


def concurrent(url, film, clients, per_client):
    from gradio_client import Client
    times, errors, lock = [], [], threading.Lock()

    def work():
        client = Client(url, verbose=False, download_files=False)
        for _ in range(per_client):
            try:
                took = upload(client, film)
                with lock:
                    times.append(took)
            except Exception as err:  # counted, not raised: the result is how many failed
                with lock:
                    errors.append(f"{type(err).__name__}: {err}"[:200])
    threads = [threading.Thread(target=work) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - start
    return {**percentiles(times), "clients": clients, "per_client": per_client, "errors": len(errors),
            "error_examples": errors[:3], "wall_s": wall, "requests_per_s": len(times) / wall}


def main(args):
    from gradio_client import Client
    check_writable(args.out)
    with tempfile.TemporaryDirectory() as folder:
        film = film_path(folder)
        proc, url, startup = start_server()
        try:
            client = Client(url, verbose=False, download_files=False)
            for _ in range(3):
                upload(client, film)  # warm-up: first requests load the dataset splits of the neighbours
            sequential = percentiles([upload(client, film) for _ in range(args.requests)])
            crowd = concurrent(url, film, args.clients, args.per_client)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        engine = in_process(film, args.requests)
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                          "python": platform.python_version()},
              "film": film.name, "startup_s": startup, "sequential_http": sequential, "in_process": engine,
              "concurrent_http": crowd, "targets": TARGETS}
    write_json_atomic(args.out / "benchmark_viewer.json", result)
    md = markdown(result, args)
    write_text_atomic(args.out / "benchmark_viewer.md", md)
    print(md)
    return result


def markdown(r, args):
    s, e, c = r["sequential_http"], r["in_process"], r["concurrent_http"]
    ok = lambda good: "met" if good else "NOT met"  # noqa: E731
    return "\n".join([
        "# Case viewer speed", "",
        f"Written by `python benchmarks/viewer_speed.py --out reports` on {r['machine']['cores']} CPU cores "
        f"({r['machine']['cpu']}), no GPU, no VLM; one film ({r['film']}) uploaded each time.", "",
        "| measure | p50 | p95 | target |", "|---|---|---|---|",
        f"| start-up to first page served | {r['startup_s']:.1f} s | | ≤ {TARGETS['startup_s']} s: {ok(r['startup_s'] <= TARGETS['startup_s'])} |",
        f"| upload → verdict + evidence map + neighbours, over HTTP ({s['n']} sequential) | {s['p50_ms']:.0f} ms | "
        f"{s['p95_ms']:.0f} ms | p50 ≤ {TARGETS['p50_ms']} ms: {ok(s['p50_ms'] <= TARGETS['p50_ms'])} |",
        f"| the same work in-process, no server ({e['n']}) | {e['p50_ms']:.0f} ms | {e['p95_ms']:.0f} ms | |",
        f"| {c['clients']} concurrent clients × {c['per_client']} uploads | {c['p50_ms']:.0f} ms | {c['p95_ms']:.0f} ms | "
        f"no error: {ok(c['errors'] == 0)} ({c['errors']} errors) |", "",
        f"Concurrent run: {c['n']} answers in {c['wall_s']:.1f} s ({c['requests_per_s']:.1f} per second); the server "
        f"runs two handlers at a time (`default_concurrency_limit=2`, one per core) and queues the rest, so a "
        f"client's wait grows with the crowd while throughput stays that of the cores.", ""])


if __name__ == "__main__":
    run_script("viewer_speed", main, parse_args)
