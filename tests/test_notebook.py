"""The Colab notebook a Task 2 user meets first: valid, one field to fill, and every command in it
accepted by the script's own argument parser."""
import importlib
import shlex
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "task2_medgemma_colab.ipynb"


@pytest.fixture(scope="module")
def notebook():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)  # nbformat 4.5: every cell carries an id
    return nb


def code(nb):
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_every_cell_has_an_id_and_only_the_repository_is_a_form_field(notebook):
    assert notebook.nbformat == 4 and notebook.nbformat_minor >= 5
    assert len({c.id for c in notebook.cells}) == len(notebook.cells)
    fields = [line for line in code(notebook).splitlines() if "#@param" in line]
    assert fields == ["REPO_URL = ''  #@param {type:\"string\"}"]
    assert "YOUR-ORG" not in code(notebook)  # no placeholder address to clone


def test_gpu_check_first_token_without_echo_and_an_upload_route(notebook):
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert "torch.cuda.is_available()" in cells[0].source and "raise SystemExit(" in cells[0].source
    assert "getpass.getpass(" in code(notebook) and "print(os.environ" not in code(notebook)
    assert "files.upload()" in code(notebook) and "['git', 'clone'" in code(notebook)


def test_every_script_command_parses_with_the_scripts_own_parser(notebook):
    commands = [line.strip().lstrip("!") for line in code(notebook).splitlines() if line.strip().startswith("!python ")]
    assert len(commands) >= 2
    for command in commands:
        words = shlex.split(command)
        module = importlib.import_module(words[1].removesuffix(".py").replace("/", "."))
        args = module.parse_args(words[2:])  # argparse exits 2 on a flag the script does not know
        if words[1] == "viewer/app.py":  # the viewer serves the rest when MedGemma cannot load, and says why
            assert args.vlm == "auto" and args.share, command
        else:
            assert args.vlm == "on", command  # a failed model load must stop the notebook, not pass quietly
    assert commands[-1].startswith("python viewer/app.py")  # the last section starts the viewer


def test_the_install_cell_brings_task_2_alone_and_leaves_colabs_torch(notebook):
    """Colab needs Task 2's group, not the viewer, Milvus or the test tools; and no ceiling on torch
    (pip would replace Colab's CUDA build with an older one)."""
    import tomllib
    installs = [line.strip() for line in code(notebook).splitlines() if line.strip().startswith("!pip")]
    assert installs[0] == '!pip -q install -e ".[vlm]"' and "requirements.txt" not in code(notebook)
    assert installs[1:] == ['!pip -q install -e ".[viewer]"']  # only in the viewer's section, just before it
    project = tomllib.loads((NOTEBOOK.parent.parent / "pyproject.toml").read_text())["project"]
    groups = project["optional-dependencies"]
    vlm = " ".join(groups["vlm"] + project["dependencies"]).lower()
    for name in ("gradio", "playwright", "pymilvus", "milvus-lite", "pytest"):
        assert name not in vlm, name
    for requirement in project["dependencies"] + [r for g in groups.values() for r in g]:
        assert "<" not in requirement and "==" not in requirement, requirement  # floors only


def test_the_instructions_point_at_the_cell_that_holds_the_field(notebook):
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    holder = next(i for i, c in enumerate(cells) if "#@param" in c.source)
    assert holder == 1 and "The repository" in cells[holder].source  # the second code cell
    assert "second code cell" in notebook.cells[0].source
    readme = (NOTEBOOK.parent.parent / "README.md").read_text()
    assert "repository address in its second code cell" in readme
