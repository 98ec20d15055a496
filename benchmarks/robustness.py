"""How the shipped decision holds on films unlike val: MedMNIST-C's PneumoniaMNIST corruptions (Di Salvo,
Doerrich and Ledig 2024; pneumo.corruptions) at five severities, class-reweighted test sets, calibration
before and after the checkpoint's Platt scaling, and the EM prior re-estimate for a batch.

    python benchmarks/robustness.py                                  # the shipped checkpoint, test split (~10 min on 2 CPU cores)
    python benchmarks/robustness.py --checkpoint runs/NAME --out runs/NAME --device cuda

Per corruption and severity: AUC, accuracy and balanced error at the checkpoint's stored rule, and ECE;
per corruption, the paper's relative balanced error rBE = (mean BE over severities - clean BE) /
(AlexNet's mean BE - AlexNet's clean BE), with AlexNet's PneumoniaMNIST-C numbers from the paper's library
(medmnistc/utils/baselines.py; they were measured on 224-px films, these on 28-px ones). Writes
<out>/task1_robustness_<split>.json and <out>/figures/task1_robustness_<split>.png and
task1_calibration_shift_<split>.png.
"""
import numpy as np
from scipy.special import expit

from pneumo.atomic import check_writable, write_json_atomic
from pneumo.calibration import adapt_to_prior, calibrate
from pneumo.checkpoint import load_checkpoint
from pneumo.cli import add_shared_flags, make_parser, positive_int
from pneumo.corruptions import CORRUPTIONS, SEVERITIES, corrupted_copies
from pneumo.data import load_split
from pneumo.errors import run_script
from pneumo.inference import predict_logits
from pneumo.metrics import binary_metrics, calibration
from pneumo.runtime import DEFAULT_RUN, print_run_header, resolve_device

# AlexNet's balanced errors on PneumoniaMNIST-C (medmnistc 0.1.0, utils/baselines.py): clean and the mean
# over the five severities of each corruption.
ALEXNET = {"clean": 0.10085470085470083, "corruptions": {
    "pixelate": 0.22102564102564104, "jpeg_compression": 0.2798290598290598, "gaussian_noise": 0.4414529914529915,
    "speckle_noise": 0.3457264957264957, "impulse_noise": 0.4581196581196581, "shot_noise": 0.4106837606837607,
    "gaussian_blur": 0.2730769230769231, "brightness_up": 0.14649572649572645, "brightness_down": 0.2782051282051282,
    "contrast_up": 0.09529914529914527, "contrast_down": 0.23743589743589744, "gamma_corr_up": 0.09606837606837607,
    "gamma_corr_down": 0.16641025641025642}}
TEST_SEED = 1  # the corruption draws of the test split (val's are seed 0: train.py and the shift study)
PRIORS = (0.1, 0.5, 0.9)  # class-reweighted test sets: their pneumonia share


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_shared_flags(p, "checkpoint", "split", "data_root", "out", "device",
                     out=dict(default=DEFAULT_RUN, help=f"folder for the results (default {DEFAULT_RUN}; the published "
                                                        f"ones are in reports/)"))
    p.add_argument("--batch_size", type=positive_int, default=256, help="images per forward pass (default 256)")
    return p.parse_args(argv)


def at_rule(labels, probs, threshold) -> dict:
    m = binary_metrics(labels, probs, threshold)
    return {"auc": m["auc"], "accuracy": m["accuracy"], "balanced_error": 1 - (m["recall"] + m["specificity"]) / 2,
            "ece": calibration(labels, probs)["ece"]}


def relative_balanced_error(name: str, clean_be: float, per_severity_be) -> float:
    """The paper's rBE of one corruption (its library's Evaluator.populate_summary)."""
    return float((np.mean(per_severity_be) - clean_be) / (ALEXNET["corruptions"][name] - ALEXNET["clean"]))


def reweighted(labels, probs, threshold, share, rng, n=2000) -> dict:
    """Metrics on a test set resampled (with replacement) to `share` pneumonia, and after the EM prior
    re-estimate on that batch (decision at 0.5 of the re-weighted P, which maximises accuracy there)."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    k = int(round(share * n))
    pick = np.concatenate([rng.choice(pos, k), rng.choice(neg, n - k)])
    y, p = labels[pick], probs[pick]
    estimate, adapted = adapt_to_prior(p, prior=0.5)
    plain, em = binary_metrics(y, p, threshold), binary_metrics(y, adapted, 0.5)
    return {"share": share, "accuracy": plain["accuracy"], "ece": calibration(y, p)["ece"],
            "em_estimated_share": estimate, "em_accuracy": em["accuracy"], "em_ece": calibration(y, adapted)["ece"]}


def main(args):
    check_writable(args.out)
    run = print_run_header("robustness", args)
    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, device)
    cal, threshold = meta["calibration"], float(meta["threshold"])
    images, labels = load_split(args.data_root, args.split, int(meta["image_size"]))
    labels = labels.astype(int)
    z = predict_logits(model, images, meta["normalization"], device, args.batch_size)
    copies = corrupted_copies(images, seed=TEST_SEED)
    shifted_z = predict_logits(model, copies.reshape(-1, *copies.shape[-2:]), meta["normalization"], device,
                               args.batch_size, desc="corrupted films").reshape(copies.shape[:3])
    clean = at_rule(labels, calibrate(z, cal), threshold)
    clean["ece_uncalibrated"] = calibration(labels, expit(z))["ece"]
    table = {}
    for i, name in enumerate(CORRUPTIONS):
        rows = [at_rule(labels, calibrate(shifted_z[i, j], cal), threshold) for j in range(len(SEVERITIES))]
        for j, row in enumerate(rows):
            row["ece_uncalibrated"] = calibration(labels, expit(shifted_z[i, j]))["ece"]
        table[name] = {"severities": rows, "rbe": relative_balanced_error(name, clean["balanced_error"], [r["balanced_error"] for r in rows])}
    every = [r for entry in table.values() for r in entry["severities"]]
    summary = {k: float(np.mean([r[k] for r in every])) for k in ("auc", "accuracy", "balanced_error", "ece", "ece_uncalibrated")}
    summary["rbe"] = float(np.mean([entry["rbe"] for entry in table.values()]))
    summary["worst_accuracy_severity3"] = min((entry["severities"][2]["accuracy"], name) for name, entry in table.items())
    rng = np.random.default_rng(0)
    probs = calibrate(z, cal)
    share, adapted = adapt_to_prior(probs, prior=0.5)
    result = {"run": run, "checkpoint": str(args.checkpoint), "checkpoint_sha256": meta["sha256"], "split": args.split,
              "threshold": threshold, "calibration": cal, "test_seed": TEST_SEED, "clean": clean, "corruptions": table,
              "mean_over_corruptions": summary,
              "reweighted": [reweighted(labels, probs, threshold, share, rng) for share in PRIORS],
              "em_on_split": {"estimated_share": share, "accuracy_at_0.5": binary_metrics(labels, adapted, 0.5)["accuracy"],
                              "ece": calibration(labels, adapted)["ece"]},
              "true_share": float(labels.mean())}
    figures = args.out / "figures"
    result["figures"] = [str(plot_robustness(table, clean, figures / f"task1_robustness_{args.split}.png", args.split)),
                         str(plot_calibration(labels, z, shifted_z, cal, figures / f"task1_calibration_shift_{args.split}.png", args.split))]
    path = args.out / f"task1_robustness_{args.split}.json"
    write_json_atomic(path, result)
    print(f"clean: AUC {clean['auc']:.4f}  accuracy {clean['accuracy']:.4f}  ECE {clean['ece']:.4f} (uncalibrated "
          f"{clean['ece_uncalibrated']:.4f})  at threshold {threshold:.3f}")
    print(f"MedMNIST-C mean: AUC {summary['auc']:.4f}  accuracy {summary['accuracy']:.4f}  rBE {summary['rbe']:.3f}  "
          f"worst at severity 3: {summary['worst_accuracy_severity3'][1]} {summary['worst_accuracy_severity3'][0]:.3f}")
    print(f"wrote {path}, {', '.join(result['figures'])}")


def plot_robustness(table, clean, path, split):
    """Accuracy at the stored rule per corruption and severity (a heat map), clean accuracy as a reference."""
    from pneumo.plots import _figure, _save
    fig, axes = _figure(1, width=7.5)
    grid = np.array([[r["accuracy"] for r in entry["severities"]] for entry in table.values()])
    im = axes[0].imshow(grid, cmap="RdYlGn", vmin=0.5, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        axes[0].text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    axes[0].set(xticks=range(len(SEVERITIES)), xticklabels=SEVERITIES, yticks=range(len(table)), yticklabels=list(table),
                xlabel="severity", title=f"accuracy at the stored rule, MedMNIST-C, {split} (clean {clean['accuracy']:.3f})")
    fig.colorbar(im, ax=axes[0], fraction=0.04)
    return _save(fig, path)


def plot_calibration(labels, z, shifted_z, cal, path, split):
    """Reliability curves before (the network's own P) and after the checkpoint's calibration, on the clean
    films and on all corrupted ones pooled."""
    from sklearn.calibration import calibration_curve

    from pneumo.plots import _figure, _save
    fig, axes = _figure(2)
    pooled_labels = np.tile(labels, shifted_z.shape[0] * shifted_z.shape[1])
    for ax, (what, y, scores) in zip(axes, (("clean", labels, z), ("MedMNIST-C, all pooled", pooled_labels, shifted_z.ravel()))):
        ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
        for label, probs in (("before: network P", expit(scores)), ("after: calibrated P", calibrate(scores, cal))):
            frac, mean_pred = calibration_curve(y, probs, n_bins=10, strategy="uniform")
            ax.plot(mean_pred, frac, "o-", ms=3, label=f"{label} (ECE {calibration(y, probs)['ece']:.3f})")
        ax.set(xlabel="mean predicted P(pneumonia)", ylabel="observed pneumonia fraction", title=f"reliability, {split}, {what}")
        ax.legend(fontsize=7)
    return _save(fig, path)


if __name__ == "__main__":
    run_script("robustness", main, parse_args)
