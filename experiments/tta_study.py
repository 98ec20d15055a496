"""Does test-time augmentation help? Val and test metrics of each checkpoint, one view against the
mean P(pneumonia) over shifted, turned and zoomed views (the kinds train.py augments with).

    python experiments/tta_study.py --checkpoints models/task1_model.pth models/seeds/seed1.pth models/seeds/seed2.pth

Writes <out>/tta.json and <out>/tta.md. An experiment, not part of the pipeline: the scripts
predict from one view.
"""
import numpy as np
import torch
from sklearn.metrics import log_loss
from torchvision.transforms.v2 import functional as F

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.classifier import Classifier
from pneumo.cli import add_shared_flags, make_parser
from pneumo.data import load_split
from pneumo.errors import run_script
from pneumo.metrics import binary_metrics
from pneumo.runtime import DEFAULT_RUN, print_run_header, resolve_device

# (angle in degrees, shift in pixels (x, y), scale); the first is the plain image.
VIEWS = {"plain": (0, (0, 0), 1.0), "right 2 px": (0, (2, 0), 1.0), "left 2 px": (0, (-2, 0), 1.0),
         "down 2 px": (0, (0, 2), 1.0), "up 2 px": (0, (0, -2), 1.0), "turned +6°": (6, (0, 0), 1.0),
         "turned -6°": (-6, (0, 0), 1.0), "zoom 0.93": (0, (0, 0), 0.93), "zoom 1.07": (0, (0, 0), 1.07)}
SETS = {"one view": ["plain"], "5 views (shifts)": list(VIEWS)[:5], "9 views": list(VIEWS)}


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--checkpoints", nargs="+", required=True, help="checkpoints to compare")
    add_shared_flags(p, "data_root", "out", "device",
                     out=dict(default=DEFAULT_RUN / "tta", help=f"folder for tta.json/.md (default {DEFAULT_RUN / 'tta'}; "
                              f"the published study is experiments/results/tta)"))
    return p.parse_args(argv)


def view(images, angle, shift, scale):
    x = torch.from_numpy(images).unsqueeze(1)
    return F.affine(x, angle=angle, translate=list(shift), scale=scale, shear=[0.0, 0.0]).squeeze(1).numpy()


def scores(labels, probs):
    m = binary_metrics(labels, probs)
    nll = log_loss(labels, np.clip(probs, 1e-7, 1 - 1e-7), labels=[0, 1])
    return {"auc": m["auc"], "accuracy": m["accuracy"], "nll": float(nll)}


def main(args):
    check_writable(args.out)
    run = print_run_header("tta_study", args)
    device = resolve_device(args.device)
    rows = []
    for path in args.checkpoints:
        clf = Classifier.load(path, device)
        for split in ("val", "test"):
            images, labels = load_split(args.data_root, split, clf.image_size)
            probs = {name: clf.predict_proba(view(images, *spec)) for name, spec in VIEWS.items()}
            for set_name, names in SETS.items():
                rows.append({"checkpoint": str(path), "seed": clf.meta["train_args"].get("seed"), "split": split,
                             "views": set_name, **scores(labels, np.mean([probs[n] for n in names], axis=0))})
    write_json_atomic(args.out / "tta.json", {**run, "views": VIEWS, "rows": rows})
    text = markdown(rows, args.checkpoints)
    write_text_atomic(args.out / "tta.md", text)
    print(text)


def markdown(rows, checkpoints):
    lines = ["# Test-time augmentation: one view against the mean over several", "",
             "Written by `python experiments/tta_study.py --checkpoints " + " ".join(map(str, checkpoints)) + "`.",
             "NLL: mean negative log-likelihood of the true label; accuracy at P = 0.5.", "",
             "## mean ± sd over the checkpoints", "", "| split | views | AUC | accuracy | NLL |", "|---|---|---|---|---|"]
    for split in ("val", "test"):
        for set_name in SETS:
            group = [r for r in rows if r["split"] == split and r["views"] == set_name]
            cells = [f"{np.mean([r[m] for r in group]):.4f} ± {np.std([r[m] for r in group], ddof=1) if len(group) > 1 else 0:.4f}"
                     for m in ("auc", "accuracy", "nll")]
            lines.append(f"| {split} | {set_name} | " + " | ".join(cells) + " |")
    lines += ["", "## each checkpoint", "", "| seed | split | views | AUC | accuracy | NLL |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['split']} | {r['views']} | {r['auc']:.4f} | {r['accuracy']:.4f} | {r['nll']:.4f} |"
              for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_script("tta_study", main, parse_args)
