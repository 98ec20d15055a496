"""Grad-CAM explanations of the classifier for dataset images or your own X-ray files.

    python task1/gradcam.py                                   # test images 0, 20 and 70
    python task1/gradcam.py --split val --indices 3 5 8 13 --target pneumonia
    python task1/gradcam.py --images ../shared/samples/*/*.jpeg
    python task1/gradcam.py --faithfulness --split test       # deletion test vs random maps, both layers

Overlays go to <out>/figures/task1_gradcam_<what>.png with label, prediction and probability on each
panel; per-image results (probability, target class, coarse region) to <out>/task1_gradcam_<what>.json.
Maps come from pytorch-grad-cam's GradCAM on the stage picked with --layer (see pneumo/explain.py).
"""
import argparse
import time
from pathlib import Path

import numpy as np

from pneumo.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from pneumo.data import CLASS_NAMES, SPLITS, default_data_root, load_inputs, load_split
from pneumo.explain import (DEFAULT_LAYER, DELETION_FRACTIONS, coarse_region, deletion_auc, deletion_curves,
                            gradcam_maps, plot_panels)
from pneumo.inference import predict_proba
from pneumo.runtime import (exit_on_user_error, print_run_header, resolve_device,
                            seed_everything, write_json_atomic)

LAYERS = ("layer3", "layer4")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help=f"model to explain (default {DEFAULT_CHECKPOINT})")
    p.add_argument("--split", default="test", choices=SPLITS, help="dataset split for --indices / --faithfulness (default test)")
    p.add_argument("--indices", type=int, nargs="+", help="dataset indices (default 0 20 70 when no --images)")
    p.add_argument("--images", type=Path, nargs="+", help="image files (PNG/JPEG, any size and mode)")
    p.add_argument("--target", default="predicted", choices=["predicted", *CLASS_NAMES],
                   help="class whose evidence is mapped (default: the predicted class)")
    p.add_argument("--layer", default=DEFAULT_LAYER, choices=LAYERS, help=f"Grad-CAM layer (default {DEFAULT_LAYER}: 4x4 maps at 28 px; layer3 gives 7x7)")
    p.add_argument("--faithfulness", action="store_true", help="deletion test of both layers' maps and of random maps over the whole split")
    p.add_argument("--limit", type=int, help="with --faithfulness: only the first N images of the split")
    p.add_argument("--data_root", default=default_data_root(), help="folder with pneumoniamnist.npz")
    p.add_argument("--out", type=Path, default=Path("reports"), help="folder for results and figures/ (default reports)")
    p.add_argument("--batch_size", type=int, default=64, help="images per Grad-CAM pass (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random baseline maps and ROAD's noise (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    args = p.parse_args(argv)
    if args.images and args.indices:
        p.error("give --indices (dataset images) or --images (files), not both")
    if args.faithfulness and args.images:
        p.error("--faithfulness scores a dataset split; drop --images")
    return args


def main(args):
    run = print_run_header("gradcam", args)
    seed_everything(args.seed)
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device)
    if args.faithfulness:
        return faithfulness(args, run, model, meta, device)
    images, labels, paths, _ = load_inputs(args.images, args.indices, args.data_root, args.split, meta["image_size"])
    names = [Path(p).name for p in paths] if args.images else paths
    tag = "images" if args.images else args.split
    probs = predict_proba(model, images, meta["normalization"], device)
    if args.target == "predicted":  # the decision at the checkpoint's threshold, as printed on each panel
        targets = (probs > meta["threshold"]).astype(int).tolist()
    else:
        targets = [CLASS_NAMES.index(args.target)] * len(images)
    start = time.perf_counter()
    maps, used = gradcam_maps(model, images, meta["normalization"], device, targets, args.layer, args.batch_size)
    seconds = time.perf_counter() - start
    records, panels = [], []
    for name, image, label, prob, cam, target in zip(names, images, labels, probs, maps, used):
        pred = CLASS_NAMES[int(prob > meta["threshold"])]
        record = {"image": name, "label": label, "probability": float(prob),
                  "prediction": pred, "target": CLASS_NAMES[target], "region": coarse_region(cam)}
        records.append(record)
        wrong = label is not None and label != pred
        panels.append({"image": image, "cam": cam, "color": "darkred" if wrong else "black",
                       "title": f"{name}  label {record['label'] or '?'}\npred {pred}  P(pneu) {prob:.3f}\n"
                                f"map: {record['target']}, {record['region']}"})
    figure = plot_panels(panels, args.out / "figures" / f"task1_gradcam_{tag}.png",
                         title=f"Grad-CAM ({args.layer}), threshold {meta['threshold']:.3f}")
    out = args.out / f"task1_gradcam_{tag}.json"
    write_json_atomic(out, {**run, "checkpoint_sha256": meta["sha256"], "layer": args.layer,
                            "maps_per_second": round(len(images) / seconds, 1), "images": records})
    for r in records:
        print(f"{r['image']:<40} label {str(r['label']):<9} pred {r['prediction']:<9} P {r['probability']:.3f}  "
              f"{r['target']} evidence: {r['region']}")
    print(f"wrote {figure} and {out}")
    return records


def faithfulness(args, run, model, meta, device):
    """Deletion curves of Grad-CAM at both layers and of random maps, for the class the logits favour
    (argmax, i.e. the decision at 0.5)."""
    images, _ = load_split(args.data_root, args.split, meta["image_size"])
    if args.limit:
        images = images[:args.limit]
    rng = np.random.default_rng(args.seed)
    results, targets = {}, None
    for name in (*LAYERS, "random"):
        start = time.perf_counter()
        if name == "random":
            maps = rng.random((len(images), *images.shape[1:])).astype(np.float32)
        else:
            maps, targets = gradcam_maps(model, images, meta["normalization"], device, layer=name,
                                         batch_size=args.batch_size)
        map_seconds = time.perf_counter() - start
        curves = deletion_curves(model, images, maps, targets, meta["normalization"], device)
        auc = deletion_auc(curves)
        results[name] = {"deletion_auc": float(auc.mean()), "deletion_auc_ci95": bootstrap_mean(auc, rng),
                         "mean_curve": [round(float(v), 4) for v in curves.mean(axis=0)],
                         "maps_per_second": None if name == "random" else round(len(images) / map_seconds, 1)}
        print(f"{name:<7} deletion AUC {results[name]['deletion_auc']:.4f}  "
              f"[{results[name]['deletion_auc_ci95'][0]:.4f}, {results[name]['deletion_auc_ci95'][1]:.4f}]")
    out = args.out / f"task1_gradcam_faithfulness_{args.split}.json"
    write_json_atomic(out, {**run, "checkpoint_sha256": meta["sha256"], "split": args.split, "n": len(images),
                            "fractions": list(DELETION_FRACTIONS),
                            "definition": "deletion test: the most relevant pixels first are replaced by a blurred "
                                          "copy of the image (Gaussian, sigma 3 px); area under the predicted-class "
                                          "probability over the removed fraction 0..1 (lower = more faithful)",
                            "maps": results})
    plot_deletion(results, args.out / "figures" / f"task1_gradcam_deletion_{args.split}.png")
    print(f"wrote {out}")
    return results


def plot_deletion(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for name, r in results.items():
        ax.plot(DELETION_FRACTIONS, r["mean_curve"], "o-" if name != "random" else "x--",
                label=f"{name} (AUC {r['deletion_auc']:.3f})")
    ax.set(xlabel="fraction of pixels removed (most relevant first)", ylabel="P(predicted class)",
           title="deletion test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bootstrap_mean(values, rng, n_boot=1000):
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


if __name__ == "__main__":
    with exit_on_user_error():
        main(parse_args())
