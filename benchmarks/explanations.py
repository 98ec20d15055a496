"""Explanation methods compared by the field's faithfulness metrics, the shipped one chosen on val.

    python benchmarks/explanations.py                       # val then test, 200 films each, ~30 min on 2 cores
    python benchmarks/explanations.py --n 32 --methods gradcam@layer4 occlusion --out /tmp/x   # a quick look

Per method (pytorch-grad-cam's CAMs at stages 3 and 4, Captum's Integrated Gradients and Occlusion) and
per split, on the same seeded draw of films, each map explaining the checkpoint's decided class:
deletion and insertion AUC (pneumo.explain), ROAD most- and least-relevant first (pytorch-grad-cam),
each against random maps on the same films with a paired bootstrap interval; the model-randomisation
check (mean Spearman correlation with the maps of a re-initialised model); how often the pneumonia map
peaks inside a lesion planted on normal films (left or right lower-middle lung); the share of map mass
in the outer 2 pixels, for pneumonia and normal films. The method is chosen on val by
pneumo.faithfulness.selection_score before test is read; test is reported for every method.

Writes <out>/task1_explanations.json and .md and <out>/figures/task1_explanations.png (the methods side
by side on the same test films). Resumable: finished (split, method) results are kept in
<out>/task1_explanations_partial.json and not recomputed for the same checkpoint and draw.
"""
import time
from pathlib import Path

import numpy as np

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.classifier import Classifier
from pneumo.cli import add_shared_flags, make_parser, positive_int
from pneumo.data import CLASS_NAMES, load_split
from pneumo.errors import run_script
from pneumo.explain import CAM_METHODS, DEFAULT_LAYER, DEFAULT_METHOD, DELETION_FRACTIONS, INPUT_METHODS, LAYERS, deletion_auc, deletion_curves
from pneumo.faithfulness import (
    BORDER_PX,
    GOAL_GAP,
    GOAL_LESION,
    RANDOMISATION_MAX_RHO,
    ROAD_FRACTIONS,
    border_share,
    paired_gap,
    peak_inside,
    plant_lesion,
    randomised_copy,
    rank_correlations,
    road_curves,
    selection_score,
    verdict,
)
from pneumo.metrics import mean_with_interval
from pneumo.runtime import DEFAULT_RUN, print_run_header, resolve_device, seed_everything

ALL = tuple([f"{m}@{layer}" for m in CAM_METHODS for layer in LAYERS] + list(INPUT_METHODS))
LESION_CENTRES = ((0.3, 0.6), (0.7, 0.6))  # image left / right of the lower-middle lung field
RANDOMISATION_FILMS = 48
LESION_FILMS = 60
# Test is read for the method chosen on val and for the one shipped before this comparison (Grad-CAM, stage 4).
PREVIOUS_DEFAULT = "gradcam@layer4"


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "checkpoint", "data_root", "device", "seed", "out",
                     seed=dict(help="seed of the draw, the random maps and the bootstrap (default 0)"),
                     out=dict(help=f"folder for the results (default {DEFAULT_RUN}; --out reports publishes)"))
    p.add_argument("--n", type=positive_int, default=200, help="films drawn per split (default 200)")
    p.add_argument("--methods", nargs="+", default=list(ALL), choices=ALL, metavar="METHOD",
                   help=f"method@layer for CAMs, or integrated_gradients / occlusion (default: all of {', '.join(ALL)})")
    p.add_argument("--splits", nargs="+", default=["val", "test"], choices=["val", "test"], help="default val test")
    return p.parse_args(argv)


def split_method(entry):
    method, _, layer = entry.partition("@")
    return method, layer or None


def draw(clf, data_root, split, n, seed):
    images, labels = load_split(data_root, split, clf.image_size)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    return keep, images[keep], labels[keep]


def explain(clf, images, targets, entry, model=None):
    method, layer = split_method(entry)
    from pneumo.explain import gradcam_maps
    return gradcam_maps(model or clf.model, images, clf.normalization, clf.device, targets, layer=layer or "layer4",
                        method=method, batch_size=32)[0]


def random_maps(shape, seed):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def score(clf, images, labels, targets, maps, baseline, seed) -> dict:
    """The faithfulness numbers of one set of maps (and of `baseline`, the random maps' own, when given)."""
    model, norm, dev = clf.model, clf.normalization, clf.device
    out = {"deletion_auc": deletion_auc(deletion_curves(model, images, maps, targets, norm, dev)),
           "insertion_auc": deletion_auc(deletion_curves(model, images, maps, targets, norm, dev, insert=True)),
           "road_morf": road_curves(model, images, maps, targets, norm, dev, True, seed=seed),
           "road_lerf": road_curves(model, images, maps, targets, norm, dev, False, seed=seed)}
    out["road_lerf_minus_morf"] = out["road_lerf"].mean(axis=1) - out["road_morf"].mean(axis=1)
    border = border_share(maps)
    summary = {"deletion_auc": interval(out["deletion_auc"], seed), "insertion_auc": interval(out["insertion_auc"], seed),
               "road_morf_curve": rounded(out["road_morf"].mean(axis=0)), "road_lerf_curve": rounded(out["road_lerf"].mean(axis=0)),
               "road_lerf_minus_morf": interval(out["road_lerf_minus_morf"], seed),
               "border_share": {name: round(float(np.nanmean(border[labels == i])), 4) for i, name in enumerate(CLASS_NAMES)}}
    if baseline is not None:
        summary["deletion_gap_to_random"] = paired_gap(out["deletion_auc"], baseline["deletion_auc"], seed)
        summary["insertion_gap_to_random"] = paired_gap(out["insertion_auc"], baseline["insertion_auc"], seed)
    return summary, out


def interval(values, seed):
    mean, ci = mean_with_interval(values, seed=seed)
    return {"mean": round(mean, 4), "ci95": [round(v, 4) for v in ci]}


def rounded(values):
    return [round(float(v), 4) for v in values]


# The localisation check needs a model whose pneumonia evidence is known: one trained by task1/train.py on
# pneumo.synthetic's films, where the class signal is a bright blob in a lower-middle lung zone (the recipe of
# the test suite's fixture model, ~20 s on 2 cores). The shipped model never learned that a planted blob means
# pneumonia, so its maps cannot be scored against one.
SYNTHETIC_COUNTS = {"train": 256, "val": 96, "test": 96}
SYNTHETIC_TRAIN = ["--epochs", "3", "--batch_size", "16", "--lr", "2e-3", "--ema_decay", "0.8", "--bn_stats", "recompute",
                   "--amp", "none", "--device", "cpu", "--decision_rule", "even_odds_clean", "--seed", "0"]


def synthetic_lesion_setup(folder):
    """(classifier trained on synthetic films, normal synthetic test films with a planted lesion, lesion masks)."""
    import subprocess
    import sys

    from pneumo.synthetic import write_synthetic_npz
    write_synthetic_npz(folder / "pneumoniamnist.npz", counts=SYNTHETIC_COUNTS, seed=0)
    checkpoint = folder / "synthetic_model.pth"
    if not checkpoint.exists():
        subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "task1" / "train.py"), *SYNTHETIC_TRAIN,
                        "--data_root", str(folder), "--out", str(checkpoint), "--reports", str(folder / "reports")],
                       check=True, capture_output=True)
    clf = Classifier.load(checkpoint, "cpu")
    images, labels = load_split(folder, "test", clf.image_size)
    normal = images[labels == 0][:LESION_FILMS]
    films, masks = plant_lesion(normal, [LESION_CENTRES[i % 2] for i in range(len(normal))])
    return clf, films, masks


def lesion_rate(lesion, entry, seed):
    """Share of planted lesions inside which the synthetic model's pneumonia map peaks."""
    clf, films, masks = lesion
    maps = random_maps(films.shape, seed) if entry == "random" else explain(clf, films, [1] * len(films), entry)
    return round(float(peak_inside(maps, masks).mean()), 4)


def run_split(clf, args, split, methods, partial, key, lesion):
    keep, images, labels = draw(clf, args.data_root, split, args.n, args.seed)
    targets = clf.decide(clf.predict_proba(images))
    results = partial.setdefault(key, {}).setdefault(split, {})
    base_summary, baseline = score(clf, images, labels, targets, random_maps(images.shape, args.seed), None, args.seed)
    base_summary["lesion_hit_rate"] = lesion_rate(lesion, "random", args.seed)
    results["random"] = base_summary
    for entry in methods:
        if entry in results:
            continue
        start = time.perf_counter()
        maps = explain(clf, images, targets, entry)
        seconds = time.perf_counter() - start
        summary, _ = score(clf, images, labels, targets, maps, baseline, args.seed)
        few = slice(0, RANDOMISATION_FILMS)
        randomised = explain(clf, images[few], targets[few], entry, model=randomised_copy(clf.model, args.seed))
        summary["randomisation_rho"] = interval(rank_correlations(maps[few], randomised), args.seed)
        summary["lesion_hit_rate"] = lesion_rate(lesion, entry, args.seed)
        summary["maps_per_second"] = round(len(images) / seconds, 1)
        summary["checks"] = verdict(summary)
        results[entry] = summary
        write_json_atomic(args.out / "task1_explanations_partial.json", partial)
        print(f"{split:<4} {entry:<22} deletion {summary['deletion_auc']['mean']:.3f} (gap {summary['deletion_gap_to_random']['mean']:+.3f})"
              f"  insertion {summary['insertion_auc']['mean']:.3f} (gap {summary['insertion_gap_to_random']['mean']:+.3f})"
              f"  ROAD LeRF-MoRF {summary['road_lerf_minus_morf']['mean']:+.3f}  rand rho {summary['randomisation_rho']['mean']:.2f}"
              f"  lesion {summary['lesion_hit_rate']:.2f}  border {summary['border_share']}  {seconds:.0f} s", flush=True)
    return keep, results


def main(args):
    check_writable(args.out)
    run = print_run_header("explanations", args)
    seed_everything(args.seed)
    clf = Classifier.load(args.checkpoint, resolve_device(args.device))
    partial_path = args.out / "task1_explanations_partial.json"
    partial = {}
    if partial_path.exists():
        import json
        partial = json.loads(partial_path.read_text())
    key = f"{clf.sha256[:16]} n{args.n} seed{args.seed}"
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        lesion = synthetic_lesion_setup(Path(folder))
        splits, chosen = {}, None
        if "val" in args.splits:
            splits["val"] = run_split(clf, args, "val", args.methods, partial, key, lesion)[1]
            scores = {entry: selection_score(r) for entry, r in splits["val"].items() if entry in args.methods}
            chosen = max(scores, key=scores.get)
        if "test" in args.splits:
            methods = args.methods if chosen is None else list(dict.fromkeys([chosen, PREVIOUS_DEFAULT]))
            splits["test"] = run_split(clf, args, "test", [m for m in methods if m in args.methods or m == chosen],
                                       partial, key, lesion)[1]
    record = {**run, "checkpoint_sha256": clf.sha256, "n": args.n, "seed": args.seed, "splits": splits, "chosen_on_val": chosen,
              "shipped": shipped_entry(), "deletion_fractions": list(DELETION_FRACTIONS), "road_fractions": list(ROAD_FRACTIONS),
              "goal": {"gap": GOAL_GAP, "lesion": GOAL_LESION, "randomisation_max_rho": RANDOMISATION_MAX_RHO,
                       "border_px": BORDER_PX}}
    write_json_atomic(args.out / "task1_explanations.json", record)
    write_text_atomic(args.out / "task1_explanations.md", markdown(record))
    if "test" in splits:
        figure_of_methods(clf, args, args.out / "figures" / "task1_explanations.png")
    print(f"chosen on val: {chosen}; wrote {args.out / 'task1_explanations.md'}")
    return record


def shipped_entry():
    """The default of gradcam.py, the viewer and Task 2, as this benchmark names it."""
    return DEFAULT_METHOD if DEFAULT_METHOD in INPUT_METHODS else f"{DEFAULT_METHOD}@{DEFAULT_LAYER}"


def markdown(record) -> str:
    lines = [f"# Explanation methods: faithfulness on {record['n']} films a split", "",
             f"Written by `python benchmarks/explanations.py` (seed {record['seed']}). Chosen on val by the committed rule "
             f"(largest deletion + insertion gap to random maps among methods passing the randomisation check): "
             f"**{record['chosen_on_val']}**; shipped: **{record['shipped']}**.", ""]
    for split, results in record["splits"].items():
        lines += [f"## {split}", "",
                  "| method | deletion AUC (↓) | gap to random | insertion AUC (↑) | gap to random | ROAD LeRF − MoRF | "
                  "randomisation ρ (↓) | lesion peak inside | border share pneumonia / normal | maps/s | goal checks passed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [table_row(entry, r) for entry, r in results.items()]
        lines.append("")
    test = record["splits"].get("test", {}).get(record["chosen_on_val"])
    if test:
        failed = [name for name, ok in test["checks"].items() if not ok]
        lines += [f"**Goal on test** (deletion gap's interval below −{record['goal']['gap']}, insertion gap's above "
                  f"+{record['goal']['gap']}, ROAD's LeRF − MoRF interval above 0, randomisation ρ < "
                  f"{record['goal']['randomisation_max_rho']}, lesion ≥ {record['goal']['lesion']}): "
                  + ("all met." if not failed else f"not met: {', '.join(failed)}."), ""]
    random_insertion = record["splits"].get("val", {}).get("random", {}).get("insertion_auc", {}).get("mean")
    if random_insertion is not None:
        lines += [f"Insertion starts from the blurred film, which the model already reads as the decided class: random "
                  f"maps reach {random_insertion:.3f} on val, so no map can beat them by more than "
                  f"{1 - random_insertion:.3f}.", ""]
    lines += ["Lesion: normal films of a model trained on pneumo.synthetic's films (whose pneumonia signal is a bright "
              "blob), each with a blob planted left or right of the lower-middle lung; the share whose pneumonia map "
              "peaks inside the blob. Border share: map mass in the outer "
              f"{record['goal']['border_px']} pixels (a uniform map: 0.265).", ""]
    return "\n".join(lines) + "\n"


def table_row(entry, r) -> str:
    def gap(key):
        g = r.get(key)
        return "" if g is None else f"{g['mean']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"
    checks = r.get("checks", {})
    cells = [entry, f"{r['deletion_auc']['mean']:.3f}", gap("deletion_gap_to_random"), f"{r['insertion_auc']['mean']:.3f}",
             gap("insertion_gap_to_random"), gap("road_lerf_minus_morf"),
             f"{r['randomisation_rho']['mean']:.2f}" if "randomisation_rho" in r else "", f"{r['lesion_hit_rate']:.2f}",
             f"{r['border_share']['pneumonia']:.3f} / {r['border_share']['normal']:.3f}", str(r.get("maps_per_second", "")),
             f"{sum(checks.values())}/{len(checks)}" if checks else ""]
    return "| " + " | ".join(cells) + " |"


def figure_of_methods(clf, args, path):
    """The methods side by side on four test films (two of each label), each map of the decided class."""
    from pneumo.plots import plot_method_grid
    images, labels = load_split(args.data_root, "test", clf.image_size)
    rows = [int(np.flatnonzero(labels == c)[i]) for c in (1, 0) for i in (0, 1)]
    films = images[rows]
    probs = clf.predict_proba(films)
    targets = clf.decide(probs)
    maps = {entry: explain(clf, films, targets, entry) for entry in args.methods}
    titles = [f"test {i}: label {CLASS_NAMES[labels[i]]}\ndecided {CLASS_NAMES[t]} (P {p:.3f})" for i, t, p in zip(rows, targets, probs)]
    plot_method_grid(films, maps, titles, path)


if __name__ == "__main__":
    run_script("explanations", main, parse_args)
