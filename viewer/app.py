"""A case viewer in the browser: one chest X-ray in; verdict, Grad-CAM, similar cases and report out.

    python viewer/app.py                                  # http://127.0.0.1:7860, shipped checkpoint and index
    python viewer/app.py --port 8000 --device cpu
    python viewer/app.py --vlm auto --share               # on Colab: MedGemma narratives, a public link
    python viewer/app.py --backend milvus --uri runs/default/task3_milvus.db   # the archive in Milvus

Pick a case by uploading a file (PNG, JPEG, DICOM) or by browsing a dataset split with filters (true
label, decision, correct or not, probability range; mistakes most confident first). The page shows
P(pneumonia) with the stored threshold and the decision, the film beside its Grad-CAM overlay (class
and opacity), the region in the patient's terms, the nearest archived cases (click one to open it), and
the report, downloadable as Markdown and JSON; with a VLM loaded, its narrative on request. Research use
only, not a diagnosis. Every computation is pneumo's (pneumo/viewer.py); this file is the page.
"""
import os
import tempfile
from pathlib import Path

from pneumo.annotate import side_by_side
from pneumo.archive import ArchiveSource
from pneumo.cases import CLOSER
from pneumo.cli import add_shared_flags, make_parser, ranged
from pneumo.data import CLASS_NAMES, SPLITS
from pneumo.errors import run_script
from pneumo.explain import SHIPPED_NAME
from pneumo.retrieval import DEFAULT_INDEX, score_name
from pneumo.runtime import UserError, resolve_device
from pneumo.scratch import private_folder, stop_on_signals
from pneumo.viewer import OUTCOMES, CaseViewer, decided_class, evidence_weight
from pneumo.vlm import DEFAULT_VLM, VlmSession, load_vlm

# Before gradio is imported (only inside the functions below): no analytics or version check, and
# every upload and download in one temporary folder of our own, removed however the viewer stops
# (pneumo.scratch: at exit, on a signal, by a watcher after SIGKILL, or by the next start).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
TEMP_PREFIX = "pneumo-viewer-"
TEMP_ROOT = private_folder(TEMP_PREFIX)
os.environ["GRADIO_TEMP_DIR"] = str(TEMP_ROOT)

UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".dcm", ".dicom"]


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "checkpoint", "data_root", "k", "device", "backend", "uri", "collection")
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX), help=f"Task 3 index or a run folder (default {DEFAULT_INDEX})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=ranged(int, 1, 65535), default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="a temporary public link through Gradio's tunnel (Colab)")
    p.add_argument("--vlm", default="none", choices=["none", "auto"], help="auto: load --model for narratives (default none)")
    p.add_argument("--model", default=DEFAULT_VLM, help=f"image-text-to-text model for --vlm auto (default {DEFAULT_VLM})")
    p.add_argument("--quantization", default="nf4", choices=["nf4", "none"], help="nf4 = 4-bit on CUDA (default)")
    return p.parse_args(argv)


def make_viewer(args):
    device = resolve_device(args.device)
    vlm, note = None, "no VLM loaded (start the viewer with --vlm auto on a GPU for narratives)"
    if args.vlm == "auto":
        try:
            vlm, note = VlmSession(load_vlm(args.model, args.quantization, device), args.model, args.quantization), None
        except UserError as err:
            note = f"no VLM: {err}"
            print(f"note: {note}")
    return CaseViewer(args.checkpoint, ArchiveSource.from_args(args), args.data_root, device, args.k, vlm, note)


# ---- handlers: plain functions of the viewer and the page's values, tested without a browser ------
OUTPUTS = ("state", "message", "verdict", "film", "overlay", "target", "region", "gallery", "neighbours",
           "compare_panel", "compare", "compare_note", "report", "md_file", "json_file")


def verdict_text(case):
    """The verdict as a reader should take it: a flagged input's flags and no reading at all (no probability,
    no class), a borderline probability marked, and the disclaimer beside it."""
    c = case.classifier
    truth = f" · truth: {case.label}" if case.label else ""
    if c.status == "withheld":
        lines = ["### Input flagged: no reading", *[f"- {flag}" for flag in c.flags],
                 f"The classifier's output on an input like this is not a reading, so it is not shown{truth}. "
                 "Check that the file is a frontal chest X-ray."]
    else:
        mark = " · borderline" if c.status == "borderline" else ""
        lines = [f"### P(pneumonia) = {c.probability:.3f}{mark}",
                 f"Decision at the stored threshold {c.threshold:.3f} (chosen on val): **{c.verdict}**{truth}"]
    lines.append(f"*Research use only, not a diagnosis.* Analysed {c.analysed}.")
    return "\n\n".join(lines)


def neighbours_table(case):
    """Each similar case in full: rank, label, distance (and what it means), split and index; none for a
    flagged input (labelled look-alikes of a photograph would read as a diagnosis)."""
    c = case.classifier
    if c.status == "withheld":
        return "Similar archived cases are not shown for a flagged input."
    if not c.neighbours:
        return ""
    word = score_name(c.metric)
    rows = [f"| {h['rank']} | {h['label']} | {h['score']:.3f} | {h['split']} | {h['index']} |" for h in c.neighbours]
    return "\n".join([f"| # | label | {word} ({CLOSER[c.metric].lstrip(': ')}) | split | index |",
                      "|---|---|---|---|---|", *rows])


def source_note(case):
    """What the message line says of where the film came from and how it was read."""
    if case.key:
        return f" (a {len(case.small)}×{len(case.small)} PneumoniaMNIST film, shown enlarged)"
    return f" ({'; '.join(case.notes)})" if case.notes else ""


def show(viewer, case, opacity=0.6):
    """Everything the page shows for an analysed case, in the order of OUTPUTS. The map opens on the class
    decided (none for a flagged input); the other class's map is one click away, drawn as weak as it is."""
    c = case.classifier
    target = decided_class(c)
    withheld = c.status == "withheld"
    gallery = None if withheld else [(film, f"#{h['rank']} {h['label']}") for film, h in zip(case.neighbour_films, c.neighbours or [])]
    overlay = viewer.overlay(case, target, opacity) if target else None
    return (case, f"Showing **{case.name}**{source_note(case)}.", verdict_text(case), viewer.film(case), overlay,
            target, region_text(viewer, case, target), gallery or None, neighbours_table(case), hidden(), None, "",
            *report_files(viewer, case))


def hidden(visible=False):
    import gradio as gr
    return gr.update(visible=visible)


def report_files(viewer, case):
    """The case's report as Markdown text, and the paths of its Markdown and JSON downloads (in the
    server's temporary folder)."""
    markdown, data = viewer.report(case)
    folder = Path(tempfile.mkdtemp(dir=TEMP_ROOT))
    stem = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in case.name)[:60]
    (folder / f"{stem}_report.md").write_text(markdown)
    (folder / f"{stem}_report.json").write_text(data)
    return markdown, str(folder / f"{stem}_report.md"), str(folder / f"{stem}_report.json")


def region_text(viewer, case, target):
    """The words under the map: where the evidence for the class shown lies, said as the decision's, or
    plainly as not the decision and how weak; nothing named for a flagged input."""
    c = case.classifier
    if c.status == "withheld":
        if not target:
            return "No map shown: the input is flagged. (A class chosen above shows the classifier's map, which is not a reading.)"
        return f"{SHIPPED_NAME} map for **{target}** on a flagged input: not a reading, no region named."
    if target == c.prediction:
        return f"{SHIPPED_NAME} evidence for **{target}**, the decision: {viewer.region(case, target)}."
    weight = evidence_weight(c, target)
    return (f"{SHIPPED_NAME} evidence for **{target}**, which is **not** the decision (P(pneumonia) = {c.probability:.3f}): "
            f"weak evidence, drawn at {weight:.0%} strength. Its colours are relative to this film, so it has a peak "
            f"however weak it is ({viewer.region(case, target)}); that is not a finding.")


def failed(message):
    """A new input that could not be opened: the message, and every other output cleared, so that no
    verdict, map, neighbour or report of the previous case stays on screen under it."""
    return (None, f"**Could not open this case:** {message}", "", None, None, None, "", None, "", hidden(), None, "",
            "", None, None)


def open_upload(viewer, path, opacity=0.6):
    if not path:
        return failed("choose a file first")
    try:
        return show(viewer, viewer.analyse(viewer.file_case(path)), opacity)
    except UserError as err:
        return failed(str(err).replace(str(path), Path(path).name))
    except Exception as err:  # anything a hostile file can raise: one message, the server keeps serving
        return failed(f"{Path(path).name} could not be read ({type(err).__name__})")


def open_dataset(viewer, split, index, opacity=0.6):
    try:
        return show(viewer, viewer.analyse(viewer.dataset_case(split, index)), opacity)
    except UserError as err:
        return failed(str(err))


def compare(viewer, case, rank):
    """(case, the side-by-side panel shown, its picture, its words) for the similar case of that rank beside
    the case, which stays the case on screen; the rank is kept on the case for 'Open it as the case'."""
    if case is None:
        return None, hidden(), None, "Open a case first."
    try:
        hit, film = viewer.neighbour(case, rank)
    except UserError as err:
        return case, hidden(), None, str(err)
    case.compared = rank
    word = score_name(case.classifier.metric)
    return case, hidden(visible=True), side_by_side(viewer.film(case), film), (
        f"Left: **{case.name}** (the case). Right: similar case #{rank}, **{hit['split']} #{hit['index']}**, "
        f"label {hit['label']}, {word} {hit['score']:.3f} ({CLOSER[case.classifier.metric].lstrip(': ')}).")


def open_compared(viewer, case, opacity):
    """The compared similar case opened as the case."""
    if case is None or not case.compared:
        named = f"Showing **{case.name}**. " if case is not None else ""
        return (gr_skip(), f"{named}Click a similar case first, then open it.", *[gr_skip()] * (len(OUTPUTS) - 2))
    hit = case.classifier.neighbours[case.compared - 1]
    return open_dataset(viewer, hit["split"], hit["index"], opacity)


def gr_skip():
    import gradio as gr
    return gr.skip()


def restyle(viewer, case, target, opacity):
    import gradio as gr
    if not case or not target:
        return gr.skip(), gr.skip()
    return viewer.overlay(case, target, opacity), region_text(viewer, case, target)


def refilter(viewer, split, truth, predicted, outcome, p_min, p_max):
    import gradio as gr
    try:
        rows = viewer.matching(split, truth, predicted, outcome, min(p_min, p_max), max(p_min, p_max))
    except UserError as err:
        return gr.update(choices=[], value=None), f"**Could not browse:** {err}"
    choices = [(f"#{r['index']} · truth {r['label']} · P = {r['probability']:.3f} · {r['prediction']}", r["index"])
               for r in rows[:500]]
    more = " (first 500 shown)" if len(rows) > 500 else ""
    return gr.update(choices=choices, value=choices[0][1] if choices else None), f"{len(rows)} cases match{more}."


def write_narrative(viewer, case):
    import gradio as gr
    if not case:
        return gr.skip(), "**Open a case first.**", gr.skip(), gr.skip(), gr.skip()
    try:
        viewer.narrate(case)
    except UserError as err:  # the line still names the case on screen
        return gr.skip(), f"Showing **{case.name}**. **No narrative:** {err}", gr.skip(), gr.skip(), gr.skip()
    return (case, f"Showing **{case.name}**. Narrative written.", *report_files(viewer, case))


def footer(viewer):
    clf = viewer.clf
    index = viewer.index_summary()
    if index.get("cases"):
        digest = f", sha256 {index['index_sha256']}…" if index["index_sha256"] else ""
        archive = (f"{index['backend']} index: {index['cases']} archived cases ({index['metric']}{digest}), "
                   f"built from this checkpoint: {'yes' if index['checkpoint_matches'] else 'NO'}")
    else:
        archive = index["note"]
    vlm = viewer.vlm_note or (f"VLM: {viewer.vlm.model_id}" if viewer.vlm else "no VLM loaded")
    return (f"Checkpoint `{Path(clf.meta['path']).name}` sha256 {clf.sha256[:12]}… · {archive} · "
            f"{vlm}  \n**Research use only, not a diagnosis.**")


# Image toolbars without Gradio's "share" (to Hugging Face Spaces, which a local viewer of patient films
# must not offer, and which answers "Must be on Spaces" here).
LOCAL_BUTTONS = ["download", "fullscreen"]
# How the page's pictures travel: JPEG (Pillow's quality 75) encodes a 512-px picture in under a millisecond,
# where Gradio's default WebP (quality 80, as lossy) takes about 16 ms, paid for each picture of every upload.
PICTURE_FORMAT = "jpeg"

# ---- the page ------------------------------------------------------------------------------------
def build(viewer):
    import gradio as gr
    with gr.Blocks(title="PneumoniaMNIST case viewer") as demo:
        gr.Markdown("# Chest X-ray case viewer\nOne film in: the classifier's verdict, its " + SHIPPED_NAME + " evidence, "
                    "the most similar archived cases and the report.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                with gr.Tab("Upload"):
                    upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", file_types=UPLOAD_TYPES,
                                     type="filepath", elem_id="upload")
                    analyse = gr.Button("Analyse", variant="primary", elem_id="analyse")
                with gr.Tab("Dataset", elem_id="dataset-tab"):
                    split = gr.Radio(list(SPLITS), value="test", label="Split")
                    with gr.Row():
                        truth = gr.Dropdown(["all", *CLASS_NAMES], value="all", label="True label")
                        predicted = gr.Dropdown(["all", *CLASS_NAMES], value="all", label="Decision")
                        outcome = gr.Dropdown(list(OUTCOMES), value="all", label="Outcome")
                    with gr.Row():
                        p_min = gr.Slider(0, 1, value=0, step=0.01, label="P(pneumonia) from")
                        p_max = gr.Slider(0, 1, value=1, step=0.01, label="to")
                    count = gr.Markdown()
                    matches = gr.Dropdown([], label="Matching cases", elem_id="matches")
                    index = gr.Number(value=0, precision=0, label="Index", elem_id="index")
                    open_case = gr.Button("Open case", variant="primary", elem_id="open-case")
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="message")
                verdict = gr.Markdown(elem_id="verdict")
                # the pictures' names above them, not on them: a label badge would cover the film's own
                # burned-in side marker in its top corner
                with gr.Row():
                    with gr.Column(min_width=200):
                        gr.Markdown("**Film**")
                        film = gr.Image(show_label=False, interactive=False, height=300, buttons=LOCAL_BUTTONS,
                                        format=PICTURE_FORMAT, elem_id="film")
                    with gr.Column(min_width=200):
                        gr.Markdown(f"**{SHIPPED_NAME} overlay**")
                        heat = gr.Image(show_label=False, interactive=False, height=300, buttons=LOCAL_BUTTONS,
                                        format=PICTURE_FORMAT, elem_id="overlay")
                with gr.Row():
                    target = gr.Radio(list(CLASS_NAMES), value=None, label="Evidence for (opens on the decision)",
                                      elem_id="target")
                    opacity = gr.Slider(0, 1, value=0.6, step=0.05, label="Overlay opacity")
                region = gr.Markdown(elem_id="region")
                gallery = gr.Gallery(label="Most similar archived cases (click one to compare)", columns=5, height=200,
                                     allow_preview=False, elem_id="gallery", buttons=LOCAL_BUTTONS)
                neighbours = gr.Markdown(elem_id="neighbours")
                # shown once a similar case is clicked: no empty panel before that
                with gr.Accordion("Side by side", open=True, visible=False, elem_id="compare-panel") as compare_panel:
                    compare_picture = gr.Image(label="The case (left) beside the similar case clicked (right)",
                                               interactive=False, height=300, buttons=LOCAL_BUTTONS, elem_id="compare",
                                               format=PICTURE_FORMAT)
                    compare_note = gr.Markdown(elem_id="compare-note")
                    open_other = gr.Button("Open the similar case as the case", elem_id="open-compared")
                with gr.Accordion("Report", open=True):
                    # offered only where it can work: a VLM loaded at start-up (--vlm auto on a GPU)
                    narrative = gr.Button("Write the VLM narrative", elem_id="narrative", visible=viewer.vlm is not None)
                    report = gr.Markdown(elem_id="report")
                    with gr.Row():
                        md_file = gr.DownloadButton("Download Markdown", elem_id="download-md")
                        json_file = gr.DownloadButton("Download JSON", elem_id="download-json")
        gr.Markdown(footer(viewer), elem_id="footer")

        outputs = [state, message, verdict, film, heat, target, region, gallery, neighbours, compare_panel,
                   compare_picture, compare_note, report, md_file, json_file]
        analyse.click(lambda p, o: open_upload(viewer, p, o), [upload, opacity], outputs, api_name="analyse_upload")
        open_case.click(lambda s, i, o: open_dataset(viewer, s, i, o), [split, index, opacity], outputs,
                        api_name="open_dataset")
        filters = [split, truth, predicted, outcome, p_min, p_max]
        for control in filters:
            control.change(lambda *v: refilter(viewer, *v), filters, [matches, count], api_name=False)
        matches.change(lambda i: i if i is not None else gr.skip(), matches, index, api_name=False)

        def on_select(case, evt: gr.SelectData):
            return compare(viewer, case, evt.index + 1)
        gallery.select(on_select, state, [state, compare_panel, compare_picture, compare_note], api_name=False)
        open_other.click(lambda c, o: open_compared(viewer, c, o), [state, opacity], outputs, api_name=False)
        for control in (target, opacity):  # a reader's change only: a new case sets the class itself
            control.input(lambda c, t, o: restyle(viewer, c, t, o), [state, target, opacity], [heat, region], api_name=False)
        narrative.click(lambda c: write_narrative(viewer, c), state, [state, message, report, md_file, json_file],
                        api_name=False)
        demo.load(lambda *v: refilter(viewer, *v), filters, [matches, count], api_name=False)
    return demo


def main(args):
    viewer = make_viewer(args)
    demo = build(viewer)
    # SIGTERM, SIGINT (Ctrl+C) or SIGHUP: the uploads and reports go first, then the server, then the process
    # at once, without waiting on a request still being served (its late writes are the watcher's to remove)
    stop_on_signals(TEMP_ROOT, before_exit=lambda: demo.close(verbose=False))
    print(f"serving the case viewer on http://{args.host}:{args.port} (Ctrl+C stops it); uploads and downloads "
          f"live in {TEMP_ROOT} until it stops", flush=True)
    # quiet without --share: the line above says where it serves, and Gradio's own banner would advise
    # `share=True` in `launch()`, where this script's flag is --share; with --share it prints the public link
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share,
                                                  show_error=False, quiet=not args.share, run_history=False,
                                                  footer_links=["api"])


if __name__ == "__main__":
    run_script("app", main, parse_args)
