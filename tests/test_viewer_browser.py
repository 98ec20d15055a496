"""The case viewer end to end in a real headless Chromium (Debian's, driven by Playwright), against the
app started on a free local port with the shipped checkpoint and index.

VIEWER_SCREENSHOT=reports/figures/viewer.png pytest -m browser tests/test_viewer_browser.py  # the README's picture
"""
import importlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO
from pneumo.explain import SHIPPED_NAME

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
QUIET = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def need_browser():
    missing = None
    if not Path(CHROMIUM).exists():
        missing = "no headless Chromium here (apt-get install -y chromium; scripts/test.sh does it as root)"
    else:
        try:
            importlib.import_module("playwright.sync_api")
        except ImportError:
            missing = "playwright is not installed (pip install -r requirements.txt)"
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true needs the browser test: {missing}")
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module")
def server():
    need_browser()
    if not (REPO / "data" / "pneumoniamnist.npz").exists():
        pytest.skip("dataset not set up in data/")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "viewer/app.py", "--port", str(port), "--device", "cpu"], cwd=REPO,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url, deadline = f"http://127.0.0.1:{port}/", time.time() + 120
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the viewer did not start: {proc.stdout.read()[-2000:]}")
            time.sleep(0.5)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def upload_file(sample_film):
    return sample_film


def test_the_viewer_in_a_real_browser(server, normal_film, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    url, proc = server
    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.on("request", lambda r: None if r.url.startswith((url[:-1], "data:", "blob:")) else outside.append(r.url))
        page.goto(url)
        expect(page.locator("#compare-panel")).to_be_hidden()  # no empty comparison before a case

        # a user's film read as normal: its verdict, the map of its decision (not a red "pneumonia" blob),
        # five neighbours, the report
        analyse(page, normal_film)
        expect(page.locator("#verdict")).to_contain_text("P(pneumonia) =", timeout=60_000)
        assert re.search(r"P\(pneumonia\) = 0\.0\d{2}", page.inner_text("#verdict"))
        expect(page.locator("#verdict")).to_contain_text("normal")
        expect(page.locator("#region")).to_contain_text(f"{SHIPPED_NAME} evidence for normal, the decision")
        expect(page.locator("#region")).not_to_contain_text("pneumonia")
        expect(page.locator("#target input[value='normal']")).to_be_checked()
        expect(page.locator("#gallery img")).to_have_count(5)
        expect(page.locator("#neighbours")).to_contain_text("distance (lower is closer)")
        expect(page.locator("#verdict")).to_contain_text("Research use only, not a diagnosis")
        expect(page.locator("#report")).to_contain_text(f"Chest X-ray report: {normal_film.name}")
        expect(page.locator("#report")).to_contain_text("none called: the decision is normal")
        expect(page.locator("#footer")).to_contain_text("Research use only, not a diagnosis")

        # a similar case beside the case, which stays on screen
        page.locator("#gallery img").first.click()
        expect(page.locator("#compare-panel")).to_be_visible(timeout=30_000)
        expect(page.locator("#compare-note")).to_contain_text("similar case #1", timeout=30_000)
        expect(page.locator("#compare img")).to_have_count(1)
        expect(page.locator("#message")).to_contain_text(f"Showing {normal_film.name}")
        screenshot = Path(os.environ.get("VIEWER_SCREENSHOT") or tmp_path / "viewer.png")
        page.screenshot(path=str(screenshot), full_page=True)

        # the other class's map on request, said plainly not to be the decision
        page.locator("#target label", has_text="pneumonia").click()
        expect(page.locator("#region")).to_contain_text("which is not the decision", timeout=30_000)

        # a dataset case through the Dataset tab
        page.get_by_role("tab", name="Dataset").click()
        page.locator("#index input").fill("0")
        page.click("#open-case")
        expect(page.locator("#message")).to_contain_text("Showing test #0", timeout=60_000)
        expect(page.locator("#verdict")).to_contain_text("truth: pneumonia")
        expect(page.locator("#compare-panel")).to_be_hidden()

        # a file that is not an image: a message in the page, and the server carries on
        bad = tmp_path / "notes.png"
        bad.write_text("this is not an X-ray")
        page.get_by_role("tab", name="Upload").click()
        analyse(page, bad, replacing=True)
        expect(page.locator("#message")).to_contain_text("Could not open this case", timeout=60_000)
        expect(page.locator("#message")).to_contain_text("notes.png is not a readable image")
        # nothing of the previous case (test #0) stays under the message: verdict, neighbours, report all gone
        expect(page.locator("#verdict")).not_to_contain_text("P(pneumonia)")
        expect(page.locator("#gallery img")).to_have_count(0)
        expect(page.locator("#neighbours")).not_to_contain_text("distance")
        expect(page.locator("#report")).not_to_contain_text("Chest X-ray report")
        expect(page.locator("#region")).not_to_contain_text(f"{SHIPPED_NAME} evidence")

        # a colour photo, not a chest film: why it was flagged, and nothing a reader could take as a diagnosis
        photo = tmp_path / "shapes.png"
        colour_photo(photo)
        analyse(page, photo, replacing=True)
        expect(page.locator("#verdict")).to_contain_text("Input flagged: no reading", timeout=60_000)
        expect(page.locator("#verdict")).to_contain_text("out of distribution")
        for element in ("#verdict", "#region", "#neighbours", "#report"):
            for word in ("pneumonia", "normal", "Decision"):
                expect(page.locator(element)).not_to_contain_text(word)
        expect(page.locator("#gallery img")).to_have_count(0)
        expect(page.locator("#report")).to_contain_text("no reading is given")

        # a film saved from the dataset at its own 28 px: read, and said so
        small = tmp_path / "test_0.png"
        dataset_film(small)
        analyse(page, small, replacing=True)
        expect(page.locator("#message")).to_contain_text("PneumoniaMNIST's own size", timeout=60_000)
        expect(page.locator("#verdict")).to_contain_text("P(pneumonia) =")
        expect(page.locator("#verdict")).not_to_contain_text("too small")

        # nothing of a case is kept in the browser: no run history, no storage, nothing after a reload
        stored = page.evaluate("() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
        assert normal_film.name not in stored and "shapes.png" not in stored and "pneumonia" not in stored.lower(), stored[:500]
        page.reload()
        expect(page.locator("#verdict")).not_to_contain_text("P(pneumonia)")
        assert normal_film.name not in page.content() and "shapes.png" not in page.content()
        browser.close()
    assert proc.poll() is None, "the server stopped"
    assert not outside, f"the page called out: {outside[:5]}"
    assert Image.open(screenshot).size[0] == 1400


def dataset_film(path):
    """Test film 0 of the dataset, saved as the 28×28 PNG a user exports."""
    from pneumo.data import load_split
    images, _ = load_split(REPO / "data", "test", 28)
    Image.fromarray(images[0]).save(path)


def analyse(page, path, replacing=False):
    """Upload `path` (clearing the file already there when `replacing`), wait until it is uploaded, press Analyse."""
    from playwright.sync_api import expect
    if replacing:
        page.locator("#upload button[aria-label='Clear']").click()
    page.set_input_files("#upload input[type=file]", str(path))
    expect(page.locator(f"#upload a[href$='{path.name}']")).to_have_count(1, timeout=20_000)
    page.click("#analyse")


def colour_photo(path):
    """The kind of picture the issue found read as pneumonia: colour shapes on noise."""
    import numpy as np
    from PIL import ImageDraw
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(photo)
    for x, colour in ((80, (255, 0, 0)), (200, (0, 200, 0)), (320, (0, 0, 255))):
        draw.ellipse((x - 50, 100, x + 50, 200), fill=colour)
    photo.save(path)


def test_the_server_serves_no_file_outside_its_own(server):
    import urllib.error
    url, _ = server
    for path in ("/etc/passwd", REPO / "models" / "task1_model.pth", REPO / "viewer" / "app.py"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}gradio_api/file={path}", timeout=5)
        assert refused.value.code in (403, 404), path


def test_stopping_the_server_removes_its_temporary_folder(server):
    url, proc = server
    urllib.request.urlopen(url, timeout=5)
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    folder = re.search(r"live in (\S+) until it stops", out).group(1)
    assert not Path(folder).exists()


@pytest.mark.slow
def test_the_viewer_serves_with_the_network_off(upload_file):
    """In a network namespace of its own (only loopback), the viewer starts and answers an upload: it
    needs nothing from outside. Needs root and unshare; skipped elsewhere."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip to take the network away")
    if not (REPO / "data" / "pneumoniamnist.npz").exists():
        pytest.skip("dataset not set up in data/")
    ask = ("from gradio_client import Client, handle_file; "
           "c = Client('http://127.0.0.1:7870/', verbose=False, download_files=False); "
           f"print(c.predict(handle_file({str(upload_file)!r}), 0.6, api_name='/analyse_upload')[1])")
    script = (f"ip link set lo up; curl -s -m 3 https://pypi.org >/dev/null || echo 'network: off'; "
              f"{sys.executable} viewer/app.py --port 7870 --device cpu >/dev/null 2>&1 & pid=$!; "
              f"for i in $(seq 240); do curl -sf http://127.0.0.1:7870/ >/dev/null && break; sleep 0.5; done; "
              f"{sys.executable} -c \"{ask}\"; kill $pid; wait $pid")
    result = subprocess.run(["unshare", "-n", "bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert "network: off" in result.stdout, result.stdout + result.stderr
    assert "P(pneumonia) = " in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
