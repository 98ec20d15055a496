"""The case viewer's handlers, without a browser, on the shipped checkpoint and index and the real data."""
import csv

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, files_under
from pneumo.archive import ArchiveSource
from pneumo.classifier import Classifier
from pneumo.explain import SHIPPED_NAME
from pneumo.pictures import load_image_file, read_square
from pneumo.viewer import CaseViewer
from viewer import app

DATA = REPO / "data"
pytestmark = pytest.mark.skipif(not (DATA / "pneumoniamnist.npz").exists(), reason="dataset not set up in data/")


@pytest.fixture(scope="module")
def viewer():
    return CaseViewer(REPO / "models" / "task1_model.pth", ArchiveSource(index=REPO / "models" / "task3_index.faiss"), DATA, "cpu")


@pytest.fixture
def film(sample_film):
    return sample_film


def project_files():
    return {folder: files_under(REPO / folder) for folder in ("models", "reports", "runs", "data", "viewer", "pneumo")}


def shown(result):
    assert len(result) == len(app.OUTPUTS)
    return dict(zip(app.OUTPUTS, result))


def test_an_upload_gets_verdict_map_neighbours_and_report(viewer, film):
    out = shown(app.open_upload(viewer, str(film)))
    clf = Classifier.load(REPO / "models" / "task1_model.pth")
    p = float(clf.predict_proba(load_image_file(film, clf.image_size)[None])[0])
    assert f"P(pneumonia) = {p:.3f}" in out["verdict"] and f"**{clf.label(p)}" in out["verdict"]
    assert len(out["gallery"]) == 5 and all(img.shape == (28, 28) for img, _ in out["gallery"])
    assert out["overlay"].shape[1] == out["film"].shape[1] and f"{SHIPPED_NAME} evidence for **pneumonia**" in out["region"]
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
    film = viewer.film(case).astype(float)
    # opacity 0: the film as shown; opacity 1: the map's hot pixels coloured (a sparse input-resolution map
    # colours few of them, so the share changed is what is asked, not the mean change)
    changed = np.abs(strong[:280] - film).max(axis=2) > 20
    assert np.array_equal(faint[:280], film) and changed.mean() > 0.01, changed.mean()
    assert not np.array_equal(strong, other) and "**normal**" in other_region and "**pneumonia**" in region


def test_clicking_a_neighbour_shows_it_beside_the_case_which_stays(viewer):
    """Issue 22, 3: a similar case is compared side by side; the case stays the case until the similar one
    is opened on purpose."""
    case = shown(app.open_dataset(viewer, "test", 0))["state"]
    third = case.classifier.neighbours[2]
    kept, panel, picture, note = app.compare(viewer, case, 3)
    assert panel["visible"] is True and kept is case and case.key == ("test", 0) and picture.shape == (280, 280 + 8 + 280, 3)
    assert np.array_equal(picture[:, :280], viewer.film(case))  # the case on the left, as shown above
    assert f"similar case #3, **{third['split']} #{third['index']}**, label {third['label']}" in note
    assert "lower is closer" in note
    assert app.compare(viewer, case, 9)[2] is None and "no similar case number 9" in app.compare(viewer, case, 9)[3]
    opened = shown(app.open_compared(viewer, case, 0.6))
    assert opened["state"].key == (third["split"], third["index"]) and opened["state"].label == third["label"]
    assert opened["compare"] is None and opened["compare_panel"]["visible"] is False  # a new case starts without one


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
    assert out["film"] is None and out["overlay"] is None and out["gallery"] is None and out["neighbours"] == ""
    assert out["compare"] is None and out["compare_note"] == ""
    assert out["md_file"] is None and out["json_file"] is None
    assert film.name not in "".join(str(v) for v in out.values())


def test_a_narrative_request_keeps_the_line_that_names_the_case(viewer):
    case = shown(app.open_dataset(viewer, "test", 0))["state"]
    assert app.write_narrative(viewer, case)[1].startswith("Showing **test #0**. **No narrative:**")


def test_a_20000_pixel_side_is_read_and_flagged_not_crashed(viewer, tmp_path):
    path = tmp_path / "strip.png"
    Image.new("L", (20000, 40), 90).save(path)
    out = shown(app.open_upload(viewer, str(path)))
    assert "too small to be a radiograph" in out["verdict"] and "Input flagged: no reading" in out["verdict"]


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
    assert record["vlm_input"]["source"] == "file" and record["label_source"] == "forced_choice"
    _, message, report, md_file, json_file = app.write_narrative(with_vlm, case)
    assert message == f"Showing **{film.name}**. Narrative written." and "## Narrative: context_aware prompt" in report
    record = case.records[-1]  # the button's own run (its longer narrative is scored anew)
    chosen = record["forced_choice"]["label"]  # the model's own scores of the three labels, shown beside the prose
    assert f"| {chosen} (forced_choice) | " in report and f"{chosen} {record['forced_choice']['probabilities'][chosen]:.2f}" in report
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
    assert len(pictures) == 4 and all("share" not in (b.buttons or []) for b in pictures)


def test_the_disclaimer_sits_with_the_verdict_and_the_report_names_each_neighbour(viewer):
    out = shown(app.open_dataset(viewer, "test", 0))
    assert "Research use only, not a diagnosis" in out["verdict"]
    first = out["state"].classifier.neighbours[0]
    assert f"{first['label']} ({first['split']} #{first['index']}, distance {first['score']:.2f})" in out["report"]
    assert "(label, case, distance: lower is closer)" in out["report"]


def test_a_dataset_film_is_shown_enlarged_and_says_its_source_size(viewer):
    out = shown(app.open_dataset(viewer, "test", 0))
    assert out["film"].shape == (280, 280, 3) and out["overlay"].shape[1] == 280
    assert "a 28×28 PneumoniaMNIST film, shown enlarged" in out["message"]
    above_marks = out["film"][:220:10, ::10, 0]  # every source pixel a 10x10 block, none invented
    assert (above_marks == out["state"].small[:22]).all()


def test_a_flagged_input_shows_its_flags_first_and_no_verdict(viewer, tmp_path):
    """Issue 22, 2 and issue 35, 3: the colour photo of shapes on noise the issue found read as pneumonia is
    flagged, and the page, the report and the JSON say why and nothing a reader could take as a diagnosis:
    no probability, no class word, no map, no labelled similar case."""
    from PIL import ImageDraw
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(photo)
    for x, colour in ((60, (255, 0, 0)), (180, (0, 200, 0)), (290, (0, 0, 255))):
        draw.ellipse((x - 50, 120, x + 50, 220), fill=colour)
    photo.save(tmp_path / "shapes.png")
    out = shown(app.open_upload(viewer, str(tmp_path / "shapes.png")))
    verdict = out["verdict"]
    assert verdict.startswith("### Input flagged: no reading\n\n- out of distribution") and "Research use only" in verdict
    json_text = open(out["json_file"]).read()
    said = " ".join([verdict, out["region"], out["neighbours"], out["report"], json_text]).lower()
    for word in ("pneumonia", "normal", "p(pneumonia)", "decision"):
        assert word not in said, word
    assert out["gallery"] is None and out["overlay"] is None and out["target"] is None
    assert "not shown for a flagged input" in out["neighbours"] and "No map shown: the input is flagged" in out["region"]
    assert '"status": "withheld"' in json_text and '"probability": null' in json_text
    assert out["report"].index("Input flagged: no reading is given") < out["report"].index("Analysed:")
    # a reader who asks for a class's map anyway is told it is not a reading
    picture, words = app.restyle(viewer, out["state"], "pneumonia", 0.6)
    assert picture is not None and "on a flagged input: not a reading" in words


def test_a_normal_film_shows_the_evidence_for_its_decision_not_a_lesion(viewer, normal_film):
    """Issue 35, 2: a film read as normal opens on the map of 'normal', the decision; the pneumonia map is
    one click away, said plainly not to be the decision and drawn as weakly as the evidence is (P 0.008:
    about 2 % of the strength), and the report does not give its peak as a finding."""
    out = shown(app.open_upload(viewer, str(normal_film), opacity=1.0))
    c = out["state"].classifier
    assert c.prediction == "normal" and c.status == "read" and c.probability < 0.05
    assert out["target"] == "normal" and out["region"].startswith(f"{SHIPPED_NAME} evidence for **normal**, the decision:")
    assert "pneumonia" not in out["region"]
    other, words = app.restyle(viewer, out["state"], "pneumonia", 1.0)
    assert "which is **not** the decision" in words and "that is not a finding" in words
    film = viewer.film(out["state"]).astype(float)
    height = film.shape[0]
    # drawn faintly, not a red hotspot: the share of pixels visibly coloured (changed by more than 20 levels)
    decided_change = (np.abs(out["overlay"][:height] - film).max(axis=2) > 20).mean()
    other_change = (np.abs(other[:height] - film).max(axis=2) > 20).mean()
    assert other_change < 0.1 * decided_change, (other_change, decided_change)
    [row] = [line for line in out["report"].splitlines() if line.startswith(f"| {SHIPPED_NAME} evidence for pneumonia |")]
    assert "none called: the decision is normal" in row and "not a finding" in row


def test_a_dataset_film_saved_as_a_28_pixel_png_is_read_like_the_dataset_case(viewer, tmp_path):
    """Issue 35, 4: the same film by index and as the 28×28 PNG a user exports gives the same reading."""
    probs = viewer.probabilities("test")
    index = int(np.argmax(probs))  # a film confidently called pneumonia: a verdict, not a borderline one
    Image.fromarray(viewer.split("test")[0][index]).save(tmp_path / "exported.png")
    by_index = shown(app.open_dataset(viewer, "test", index))
    by_file = shown(app.open_upload(viewer, str(tmp_path / "exported.png")))
    assert by_file["state"].classifier.status == by_index["state"].classifier.status == "read"
    assert by_file["state"].classifier.probability == by_index["state"].classifier.probability
    assert "PneumoniaMNIST's own size: read as a dataset film" in by_file["message"]
    assert by_file["film"].shape[:2] == (280, 280)  # enlarged as the dataset's films are, not a 28-px stamp
    assert "too small" not in by_file["verdict"] and "PneumoniaMNIST's own size" in by_file["report"]


def test_the_pictures_labels_sit_above_them_and_the_empty_comparison_is_hidden(viewer):
    """Issue 35, 6: no label badge over the film's own side marker; no empty side-by-side panel before a
    similar case is clicked."""
    import gradio as gr
    demo = app.build(viewer)
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    assert blocks["film"].show_label is False and blocks["overlay"].show_label is False
    assert isinstance(blocks["compare-panel"], gr.Accordion) and blocks["compare-panel"].visible is False
    assert blocks["target"].value is None  # set by each case to its decision


def test_the_overlay_fades_out_at_the_edge_of_the_square_read(viewer):
    """Issue 35, 6: on a film wider than the square the classifier reads, a map strong to its edge fades
    out there instead of stopping at a hard box edge; a square film is coloured to its border."""
    from pneumo.annotate import aligned_overlay
    wide = np.full((200, 320), 128, np.uint8)
    heat = aligned_overlay(wide, np.ones((28, 28)), strength=1.0)[:200].astype(float)
    left = (320 - 200) // 2
    change = np.abs(heat - 128).mean(axis=(0, 2))
    assert change[left + 2] < 0.2 * change[160] and change[left + 20] > 0.9 * change[160]
    assert np.all(np.diff(change[left + 1:left + 15]) >= -1)  # rising smoothly into the square
    square = aligned_overlay(np.full((200, 200), 128, np.uint8), np.ones((28, 28)), strength=1.0)[:150].astype(float)
    assert np.abs(square[:, 1] - 128).mean() > 0.9 * np.abs(square[:, 100] - 128).mean()


def test_a_probability_near_the_threshold_is_marked_borderline(viewer):
    probs = viewer.probabilities("test")
    index = int(np.argmin(np.abs(probs - viewer.clf.threshold)))
    out = shown(app.open_dataset(viewer, "test", index))
    if out["state"].classifier.flags:
        pytest.skip("the nearest case to the threshold is flagged")
    assert "· borderline" in out["verdict"] and "borderline (P within" in out["verdict"]
    far = int(np.argmax(np.abs(probs - viewer.clf.threshold)))
    assert "borderline" not in shown(app.open_dataset(viewer, "test", far))["verdict"]


def test_the_overlay_lies_on_the_film_as_shown_with_marks_and_scale(viewer, film):
    """Issue 22, 3: an upload's map covers the centre square the classifier read, on the film as shown (not
    a smaller crop), the film outside it untouched; orientation marks at the bottom corners; a colour scale
    under it, blue on the left and red on the right."""
    out = shown(app.open_upload(viewer, str(film), opacity=1.0))
    shown_film, heat = out["film"], out["overlay"]
    height, width = shown_film.shape[:2]
    assert width != height  # the samples are wider than tall: the map covers the middle only
    left, top, side = read_square(shown_film.shape)
    assert heat.shape[1] == width and heat.shape[0] > height
    outside = np.ones((height, width), bool)
    outside[top:top + side, left:left + side] = False
    outside[-height // 6:] = False  # the marks
    assert np.array_equal(heat[:height][outside], shown_film[outside])
    assert np.abs(heat[top:top + side, left + 1:left + side - 1].astype(float) - shown_film[top:top + side, left + 1:left + side - 1]).mean() > 5
    raw = np.asarray(Image.fromarray(out["state"].display).convert("RGB"))
    changed = np.argwhere((shown_film != raw).any(axis=2))
    assert len(changed) and changed[:, 0].min() > height - height // 6  # marks only, at the bottom
    assert changed[:, 1].min() < width // 8 and changed[:, 1].max() > width - width // 8  # at both corners
    bar = heat[height + 4].astype(int)
    assert bar[2, 2] > bar[2, 0] and bar[-3, 0] > bar[-3, 2]  # blue at the left end, red at the right


def test_the_neighbours_are_listed_in_full_and_the_report_is_dated(viewer):
    out = shown(app.open_dataset(viewer, "test", 0))
    assert "| # | label | distance (lower is closer) | split | index |" in out["neighbours"]
    for h in out["state"].classifier.neighbours:
        assert f"| {h['rank']} | {h['label']} | {h['score']:.3f} | {h['split']} | {h['index']} |" in out["neighbours"]
    assert f"Analysed: {out['state'].classifier.analysed}." in out["report"]
    assert out["state"].classifier.analysed.startswith("20")
