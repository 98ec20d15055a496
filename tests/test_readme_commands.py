"""The README's two commands, exactly as the README writes them, run from the repository root as a new
user would: small synthetic data (PNEUMONIA_DATA_ROOT, which every script reads) and a short recipe
(TRAIN_FLAGS, which run_all.sh passes to train.py) keep it to a few minutes."""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import FAST_TRAIN, REPO


def readme_commands() -> list:
    """The command lines of the code block under '## The two commands', comments stripped."""
    text = (REPO / "README.md").read_text()
    section = text.split("## The two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout


def test_the_readme_names_the_two_commands():
    assert readme_commands() == ["bash scripts/run_all.sh", "bash scripts/test.sh"]


@pytest.mark.slow
def test_the_main_command_as_written_runs_end_to_end(synthetic_root):
    before = git_status()
    env = {**os.environ, "PNEUMONIA_DATA_ROOT": str(synthetic_root),
           "TRAIN_FLAGS": " ".join(flag for flag in FAST_TRAIN if flag not in ("--device", "cpu"))}
    done = subprocess.run(readme_commands()[0], shell=True, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1500)
    found = re.search(r"^== run folder: (\S+)$", done.stdout, re.M)
    run = REPO / found.group(1) if found else None
    try:
        assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
        assert run is not None and run.parent == REPO / "runs", done.stdout[:2000]
        assert f"done: everything is in {found.group(1)}" in done.stdout
        for name in ("task1_model.pth", "task1_metrics_test.json", "task3_index.faiss", "task3_retrieval_eval.json",
                     "task2/reports.jsonl", "task1_classification_report.md", "task3_retrieval.md"):
            assert (run / name).stat().st_size > 0, name
        history = json.loads((run / "task1_model_history.json").read_text())
        assert history["args"]["bn_stats"] == "recompute" and history["args"]["epochs"] == 3  # TRAIN_FLAGS reached train.py
    finally:
        if run is not None and run.is_dir():
            shutil.rmtree(run)
    assert git_status() == before


@pytest.mark.slow
def test_the_test_command_as_written_runs_and_passes():
    """scripts/test.sh itself (set-up included), limited to one quick file through PYTEST_ADDOPTS, which
    pytest reads, so that it does not run this test again."""
    before = git_status()
    env = {**os.environ, "PYTEST_ADDOPTS": "tests/test_metrics.py -p no:cacheprovider"}
    done = subprocess.run(readme_commands()[1], shell=True, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert re.search(r"\d+ passed", done.stdout) and "failed" not in done.stdout
    assert git_status() == before
