"""The case viewer's handlers, without a browser, on the shipped checkpoint and index and the real data."""
import csv
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, files_under
from pneumo.archive import ArchiveSource
from pneumo.classifier import Classifier
from pneumo.pictures import load_image_file
from pneumo.viewer import CaseViewer
from viewer import app

DATA = REPO / "data"
pytestmark = pytest.mark.skipif(not (DATA / "pneumoniamnist.npz").exists(), reason="dataset not set up in data/")
OUTPUTS = ("state", "message", "verdict", "film", "overlay", "region", "gallery", "report", "md_file", "json_file")


@pytest.fixture(scope="module")
def viewer():
    return CaseViewer(REPO / "models" / "task1_model.pth", ArchiveSource(index=REPO / "models" / "task3_index.faiss"), DATA, "cpu")


@pytest.fixture
def film(sample_film):
    return sample_film


def project_files():
    return {folder: files_under(REPO / folder) for folder in ("models", "reports", "runs", "data", "viewer", "pneumo")}


def shown(result):
    return dict(zip(OUTPUTS, result))


def test_an_upload_gets_verdict_map_neighbours_and_report(viewer, film):
    out = shown(app.open_upload(viewer, str(film)))
    clf = Classifier.load(REPO / "models" / "task1_model.pth")
    p = float(clf.predict_proba(load_image_file(film, clf.image_size)[None])[0])
    assert f"P(pneumonia) = {p:.3f}" in out["verdict"] and f"**{clf.label(p)}**" in out["verdict"]
    assert len(out["gallery"]) == 5 and all(img.shape == (28, 28) for img, _ in out["gallery"])
    assert out["overlay"].shape == (224, 224, 3) and "Grad-CAM evidence for **pneumonia**" in out["region"]
    assert f"| P(pneumonia) | {p:.3f} |" in out["report"] and "not a diagnosis" in out["report"]
    assert open(out["md_file"]).read() == out["report"]
    assert str(app.TEMP_ROOT) in out["md_file"] and out["json_file"].endswith(".json")
    assert out["state"].name == film.name  # the file's name alone, never the folder it came from


def test_a_dataset_case_agrees_with_evaluate(viewer):
    out = shown(app.open_dataset(viewer, "test", 1))
    with open(REPO / "reports" / "task1_predictions_test.csv") as fh:
        row = next(r for r in csv.DictReader(fh) if r["index"] == "1")
    assert f"P(pneumonia) = {float(row['probability']):.3f}" in out["verdict"]
    assert "truth: normal" in out["verdict"] and out["state"].key == ("test", 1)


def test_filters_find_the_failure_cases_most_confident_first(viewer):
    wrong = viewer.matching("test", outcome="incorrect")
    probs, labels = viewer.probabilities("test"), viewer.split("test")[1]
    decided = viewer.clf.decide(probs)
    assert len(wrong) == int((decided != labels).sum()) > 0
    margins = [abs(r["probability"] - viewer.clf.threshold) for r in wrong]
    assert margins == sorted(margins, reverse=True)
    missed = viewer.matching("test", truth="pneumonia", predicted="normal")
    assert missed and all(r["label"] == "pneumonia" and r["prediction"] == "normal" for r in missed)
    assert {r["index"] for r in missed} <= {r["index"] for r in wrong}
    band = viewer.matching("test", p_min=0.4, p_max=0.6)
    assert all(0.4 <= r["probability"] <= 0.6 for r in band) and len(band) == int(((probs >= 0.4) & (probs <= 0.6)).sum())
    update, count = app.refilter(viewer, "test", "all", "all", "incorrect", 0, 1)
    assert count.startswith(f"{len(wrong)} cases match") and update["value"] == wrong[0]["index"]


def test_class_choice_and_opacity_redraw_the_overlay(viewer):
    case = shown(app.open_dataset(viewer, "test", 0))["state"]
    strong, region = app.restyle(viewer, case, "pneumonia", 1.0)
    faint, _ = app.restyle(viewer, case, "pneumonia", 0.0)
    other, other_region = app.restyle(viewer, case, "normal", 1.0)
    film = np.asarray(Image.fromarray(case.small).resize((224, 224), Image.Resampling.BICUBIC).convert("RGB"), dtype=float)
    assert np.abs(faint - film).mean() < 3 < np.abs(strong - film).mean()  # opacity 0 is the film itself
    assert not np.array_equal(strong, other) and "**normal**" in other_region and "**pneumonia**" in region


def test_clicking_a_neighbour_opens_it(viewer):
    case = shown(app.open_dataset(viewer, "test", 0))["state"]
    first = case.classifier.neighbours[2]
    opened = shown(app.open_neighbour(viewer, case, "pneumonia", 0.6, SimpleNamespace(index=2)))["state"]
    assert opened.key == (first["split"], first["index"]) and opened.label == first["label"]


@pytest.mark.parametrize("make,expected", [
    (lambda p: p.write_text("not an image"), "not a readable image"),
    (lambda p: p.write_bytes(b""), "not a readable image"),
    (lambda p: p.write_bytes(b"\0" * 128 + b"DICM" + b"junk" * 10), "DICOM file whose pixels cannot be read"),
    (lambda p: Image.new("L", (14000, 14000)).save(p, "PNG"), "more pixels than is safe to open"),  # 196 M pixels
])
def test_bad_files_get_a_message_and_the_server_carries_on(viewer, tmp_path, make, expected):
    path = tmp_path / "upload.png"
    make(path)
    before = project_files()
    out = app.open_upload(viewer, str(path))
    assert expected in out[1] and out[1].startswith("**Could not open this case:**")
    assert str(tmp_path) not in out[1]  # the file's name, not where it lay
    assert project_files() == before and [p.name for p in tmp_path.iterdir()] == ["upload.png"]
    assert "P(pneumonia)" in shown(app.open_dataset(viewer, "test", 0))["verdict"]  # and the next case works


@pytest.mark.parametrize("opener", ["bad_file", "bad_index"])
def test_a_failed_new_input_leaves_nothing_of_the_previous_case(viewer, film, tmp_path, opener):
    """Issue 22, 1: after a good film, a file that cannot be read (or a dataset index that does not exist)
    clears every output; no verdict, map, neighbour, report or download of the old case stays under it."""
    good = shown(app.open_upload(viewer, str(film)))
    assert "P(pneumonia)" in good["verdict"] and good["report"] and good["md_file"]
    if opener == "bad_file":
        (tmp_path / "notes.png").write_text("this is not an X-ray")
        out = shown(app.open_upload(viewer, str(tmp_path / "notes.png")))
        assert "notes.png is not a readable image" in out["message"]
    else:
        out = shown(app.open_dataset(viewer, "test", 10_000))
        assert "there is no case 10000 in the test split" in out["message"] and "--indices" not in out["message"]
    assert out["state"] is None and out["verdict"] == "" and out["region"] == "" and out["report"] == ""
    assert out["film"] is None and out["overlay"] is None and out["gallery"] is None
    assert out["md_file"] is None and out["json_file"] is None
    assert film.name not in "".join(str(v) for v in out.values())


def test_a_narrative_request_keeps_the_line_that_names_the_case(viewer):
    case = shown(app.open_dataset(viewer, "test", 0))["state"]
    assert app.write_narrative(viewer, case)[1].startswith("Showing **test #0**. **No narrative:**")


def test_a_20000_pixel_side_is_read_and_flagged_not_crashed(viewer, tmp_path):
    path = tmp_path / "strip.png"
    Image.new("L", (20000, 40), 90).save(path)
    out = shown(app.open_upload(viewer, str(path)))
    assert "too small to be a radiograph" in out["verdict"]


@pytest.mark.parametrize("split,index,expected", [("test", 624, "numbered 0 to 623"), ("test", -1, "there is no case -1"),
                                                  ("test", 2.5, "whole number"), ("nope", 0, "unknown split")])
def test_bad_dataset_choices_get_a_message(viewer, split, index, expected):
    assert expected in app.open_dataset(viewer, split, index)[1]


def test_without_a_vlm_the_narrative_button_says_why(viewer):
    case = shown(app.open_dataset(viewer, "test", 0))["state"]
    assert "No narrative" in app.write_narrative(viewer, case)[1]
    assert "Open a case first" in app.write_narrative(viewer, None)[1]


def test_with_a_vlm_the_narrative_joins_the_report(tmp_path, film):
    import torch

    from pneumo.vlm import VlmSession, load_vlm
    from tiny_gemma3 import save_tiny_gemma3
    tiny = save_tiny_gemma3(tmp_path / "tiny")
    vlm = load_vlm(str(tiny), "none", torch.device("cpu"))
    with_vlm = CaseViewer(REPO / "models" / "task1_model.pth", ArchiveSource(index=REPO / "models" / "task3_index.faiss"), DATA,
                          "cpu", vlm=VlmSession(vlm, str(tiny), "none"))
    case = shown(app.open_upload(with_vlm, str(film)))["state"]
    record = with_vlm.narrate(case, max_new_tokens=3)
    assert record["vlm_input"]["source"] == "file" and record["label_source"] == "fallback"
    _, message, report, md_file, json_file = app.write_narrative(with_vlm, case)
    assert message == f"Showing **{film.name}**. Narrative written." and "## Narrative: context_aware prompt" in report
    assert open(md_file).read() == report  # the Markdown download carries the narrative too
    assert '"narratives"' in open(json_file).read()


def test_footer_names_checkpoint_index_and_use(viewer):
    text = app.footer(viewer)
    assert viewer.clf.sha256[:12] in text and "built from this checkpoint: yes" in text
    assert "Research use only, not a diagnosis" in text


def test_defaults_bind_locally_without_a_vlm():
    args = app.parse_args([])
    assert args.host == "127.0.0.1" and args.vlm == "none" and not args.share and args.k == 5


def test_controls_that_cannot_work_here_are_not_offered(viewer):
    """No narrative button without a VLM; no "share to Spaces" on any picture of a local viewer."""
    import gradio as gr
    demo = app.build(viewer)
    blocks = list(demo.blocks.values())
    narrative = next(b for b in blocks if getattr(b, "elem_id", None) == "narrative")
    assert narrative.visible is False
    pictures = [b for b in blocks if isinstance(b, (gr.Image, gr.Gallery))]
    assert len(pictures) == 3 and all("share" not in (b.buttons or []) for b in pictures)


def test_the_disclaimer_sits_with_the_verdict_and_the_report_names_each_neighbour(viewer):
    out = shown(app.open_dataset(viewer, "test", 0))
    assert "Research use only, not a diagnosis" in out["verdict"]
    first = out["state"].classifier.neighbours[0]
    assert f"{first['label']} ({first['split']} #{first['index']}, distance {first['score']:.2f})" in out["report"]
    assert "(label, case, distance: lower is closer)" in out["report"]


def test_a_dataset_film_is_shown_enlarged_and_says_its_source_size(viewer):
    out = shown(app.open_dataset(viewer, "test", 0))
    assert out["film"].shape == (280, 280) and out["overlay"].shape[:2] == (224, 224)
    assert "a 28×28 PneumoniaMNIST film, shown enlarged" in out["message"]
    assert (out["film"][::10, ::10] == out["state"].small).all()  # every source pixel a 10x10 block, none invented
