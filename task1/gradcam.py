"""Grad-CAM explanations of the classifier for dataset images or your own X-ray files.

    python task1/gradcam.py                                   # test images 0, 20 and 70
    python task1/gradcam.py --split val --indices 3 5 8 13 --target pneumonia
    python task1/gradcam.py --images ../shared/samples/*/*.jpeg
    python task1/gradcam.py --faithfulness --split test       # deletion test vs random maps, both layers

Overlays go to <out>/figures/task1_gradcam_<what>.png with label, prediction and probability on each
panel; per-image results (probability, target class, coarse region) to <out>/task1_gradcam_<what>.json.
Maps come from the method picked with --method (default: the one benchmarks/explanations.py chose on val;
pytorch-grad-cam's CAMs on the stage picked with --layer, or Captum's input-resolution methods; see
pneumo/explain.py).
"""
import time
from pathlib import Path

import numpy as np

from pneumo.archive import optional_archive
from pneumo.atomic import check_writable, write_json_atomic
from pneumo.classifier import Classifier
from pneumo.cli import INFERENCE_SIZE, add_shared_flags, check_images_or_indices, make_parser, positive_int
from pneumo.data import CLASS_NAMES, load_split
from pneumo.errors import run_script
from pneumo.explain import DEFAULT_LAYER, DEFAULT_METHOD, DELETION_FRACTIONS, LAYERS, METHODS, coarse_region, deletion_auc, deletion_curves, shipped_words
from pneumo.metrics import mean_with_interval
from pneumo.pictures import load_inputs
from pneumo.plots import grid_columns, plot_deletion, plot_panels
from pneumo.retrieval import DEFAULT_INDEX
from pneumo.runtime import print_run_header, resolve_device, seed_everything
from pneumo.screening import print_flags, region_words, screen_inputs, status


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "size", "checkpoint", "split", "indices", "images", "record_names", "data_root",
                     "out", "seed", "device", "backend", "uri", "collection", size=INFERENCE_SIZE,
                     split=dict(help="dataset split for --indices / --faithfulness (default test)"),
                     seed=dict(help="seed for the random baseline maps and their bootstrap (default 0)"))
    p.add_argument("--index", type=Path, default=Path(DEFAULT_INDEX),
                   help=f"Task 3 index (or a run folder) whose val statistics flag out-of-distribution inputs "
                        f"(default {DEFAULT_INDEX}; skipped with a note when missing or stale)")
    p.add_argument("--target", default="predicted", choices=["predicted", *CLASS_NAMES],
                   help="class whose evidence is mapped (default: the predicted class)")
    p.add_argument("--method", default=DEFAULT_METHOD, choices=METHODS,
                   help=f"explanation method (default {DEFAULT_METHOD}; reports/task1_explanations.md compares them)")
    p.add_argument("--layer", default=DEFAULT_LAYER, choices=LAYERS,
                   help=f"stage of a CAM method (default {DEFAULT_LAYER}: 4x4 maps at 28 px; layer3 gives 7x7)")
    p.add_argument("--faithfulness", action="store_true", help="deletion test of both layers' maps and of random maps over the whole split")
    p.add_argument("--limit", type=positive_int, help="with --faithfulness: only the first N images of the split")
    p.add_argument("--batch_size", type=positive_int, default=64, help="images per Grad-CAM pass (default 64)")
    args = p.parse_args(argv)
    check_images_or_indices(p, args)
    if args.faithfulness and args.images:
        p.error("--faithfulness scores a dataset split; drop --images")
    return args


def main(args):
    check_writable(args.out)
    run = print_run_header("gradcam", args)
    seed_everything(args.seed)
    clf = Classifier.load(args.checkpoint, resolve_device(args.device))
    clf.check_size(args.size)
    if args.faithfulness:
        return faithfulness(args, run, clf)
    images, labels, names, keys = load_inputs(args.images, args.indices, args.data_root, args.split, clf.image_size,
                                           args.record_names)
    tag = "images" if args.images else args.split
    probs = clf.predict_proba(images)
    if args.target == "predicted":  # the decision at the checkpoint's threshold, as printed on each panel
        targets = clf.decide(probs).tolist()
    else:
        targets = [CLASS_NAMES.index(args.target)] * len(images)
    start = time.perf_counter()
    maps, used = clf.gradcam(images, targets, args.layer, args.batch_size, method=args.method)
    seconds = time.perf_counter() - start
    flags = screen_inputs(clf, images, args.images, optional_archive(args, clf))
    records, panels = [], []
    for name, image, label, prob, cam, target, found in zip(names, images, labels, probs, maps, used, flags):
        pred = clf.label(prob)
        record = {"image": name, "label": label, "probability": float(prob), "prediction": pred,
                  "status": status(prob, clf.threshold, found), "target": CLASS_NAMES[target],
                  "region": region_words(coarse_region(cam), found), "flags": found}
        records.append(record)
        wrong = label is not None and label != pred
        panels.append({"image": image, "cam": cam, "color": "darkred" if wrong or found else "black",
                       "title": f"{'FLAGGED: ' + found[0].split(' (')[0] + chr(10) if found else ''}"
                                f"{name}\nlabel {label or 'unknown'}, {verdict_words(record)} (P {prob:.3f})\n"
                                f"{record['target']} evidence: {record['region']}"})
    what = "image files" if args.images else f"{args.split} split"
    figure = plot_panels(panels, args.out / "figures" / f"task1_gradcam_{tag}.png", cols=grid_columns(len(panels)),
                         title=f"{shipped_words(args.method, args.layer)} on {what}; decision threshold {clf.threshold:.3f}; "
                               f"red title = wrong or flagged")
    out = args.out / f"task1_gradcam_{tag}.json"
    write_json_atomic(out, {**run, "checkpoint_sha256": clf.sha256, "method": args.method, "layer": args.layer,
                            "maps_per_second": round(len(images) / seconds, 1), "images": records})
    for r in records:
        print(f"{r['image']:<40} label {str(r['label']):<9} {verdict_words(r):<24} P {r['probability']:.3f}  "
              f"{r['target']} evidence: {r['region']}")
    print_flags(names, flags)
    print(f"wrote {figure} and {out}")
    return records


def verdict_words(record) -> str:
    """'pred pneumonia', or the prediction marked as withheld or borderline (pneumo.screening.status)."""
    if record["status"] == "read":
        return f"pred {record['prediction']}"
    return f"{record['status'].upper()} ({record['prediction']})"


def faithfulness(args, run, clf):
    """Deletion curves of Grad-CAM at both layers and of random maps, for the class the logits favour
    (argmax, i.e. the decision at 0.5)."""
    images, _ = load_split(args.data_root, args.split, clf.image_size)
    if args.limit:
        images = images[:args.limit]
    rng = np.random.default_rng(args.seed)
    results, targets = {}, None
    for name in (*LAYERS, "random"):
        start = time.perf_counter()
        if name == "random":
            maps = rng.random((len(images), *images.shape[1:])).astype(np.float32)
        else:
            maps, targets = clf.gradcam(images, layer=name, batch_size=args.batch_size, desc=f"Grad-CAM {name}")
        map_seconds = time.perf_counter() - start
        curves = deletion_curves(clf.model, images, maps, targets, clf.normalization, clf.device,
                                 desc=f"deletion test, {name} maps")
        mean_auc, interval = mean_with_interval(deletion_auc(curves), seed=args.seed)
        results[name] = {"deletion_auc": mean_auc, "deletion_auc_ci95": interval,
                         "mean_curve": [round(float(v), 4) for v in curves.mean(axis=0)],
                         "maps_per_second": None if name == "random" else round(len(images) / map_seconds, 1)}
        print(f"{name:<7} deletion AUC {results[name]['deletion_auc']:.4f}  "
              f"[{results[name]['deletion_auc_ci95'][0]:.4f}, {results[name]['deletion_auc_ci95'][1]:.4f}]")
    out = args.out / f"task1_gradcam_faithfulness_{args.split}.json"
    write_json_atomic(out, {**run, "checkpoint_sha256": clf.sha256, "split": args.split, "n": len(images),
                            "fractions": list(DELETION_FRACTIONS),
                            "definition": "deletion test: the most relevant pixels first are replaced by a blurred "
                                          "copy of the image (Gaussian, sigma 3 px); area under the predicted-class "
                                          "probability over the removed fraction 0..1 (lower = more faithful)",
                            "maps": results})
    plot_deletion(results, args.out / "figures" / f"task1_gradcam_deletion_{args.split}.png", args.split, len(images))
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    run_script("gradcam", main, parse_args)
