"""The project's figures: panel galleries of X-rays (with Grad-CAM overlays), evaluation plots,
training curves and deletion curves. Each writes one PNG atomically and returns its path."""
from pathlib import Path

import numpy as np

from .atomic import save_figure_atomic
from .data import CLASS_NAMES
from .explain import DELETION_FRACTIONS, overlay


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path, dpi=120, tight=True):
    if tight:
        fig.tight_layout()
    save_figure_atomic(fig, path, dpi=dpi)
    _pyplot().close(fig)
    return Path(path)


def _figure(ncols=1, width=4.6):
    fig, axes = _pyplot().subplots(1, ncols, figsize=(width * ncols, 4.2), squeeze=False)
    return fig, axes[0]


def plot_panels(panels, path, title=None, cols=4):
    """A grid of panels; each is None (empty cell) or a dict with `image` (uint8 HxW), optional `cam`,
    `title` and `color`."""
    rows = max(1, int(np.ceil(len(panels) / cols)))
    cols = min(cols, max(1, len(panels)))
    height = 3.6 * rows + (0.5 if title else 0)  # room for two-line titles above each panel
    fig, axes = _pyplot().subplots(rows, cols, figsize=(3.0 * cols, height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels):
        if panel is None:  # an empty cell keeps rows aligned
            continue
        if panel.get("cam") is not None:
            ax.imshow(overlay(panel["image"], panel["cam"]))
        else:
            ax.imshow(panel["image"], cmap="gray", vmin=0, vmax=255, interpolation="bicubic")
        ax.set_title(panel.get("title", ""), fontsize=9, color=panel.get("color", "black"))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height) if title else None)
    return _save(fig, path, dpi=110, tight=False)


def plot_confusion(labels, probs, threshold, path):
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, axes = _figure(2)
    for ax, thr, name in ((axes[0], 0.5, "threshold 0.5"), (axes[1], threshold, f"val threshold {threshold:.3f}")):
        ConfusionMatrixDisplay.from_predictions(labels, (np.asarray(probs) > thr).astype(int),
                                                display_labels=CLASS_NAMES, cmap="Blues", colorbar=False, ax=ax)
        ax.set_title(name)
    return _save(fig, path)


def plot_roc_pr(labels, probs, results, path):
    """ROC with both operating points, and the precision-recall curve; `results` holds
    with_bootstrap's metrics under at_0.5 and at_threshold."""
    from sklearn.metrics import precision_recall_curve, roc_curve
    fig, axes = _figure(2)
    fpr, tpr, _ = roc_curve(labels, probs)
    m = results["at_0.5"]
    axes[0].plot(fpr, tpr, label=f"AUC {m['auc']:.3f} [{m['ci95']['auc'][0]:.3f}, {m['ci95']['auc'][1]:.3f}]")
    axes[0].plot([0, 1], [0, 1], ls=":", color="grey")
    for key, marker in (("at_0.5", "o"), ("at_threshold", "s")):
        r = results[key]
        axes[0].plot(1 - r["specificity"], r["recall"], marker, label=f"threshold {r['threshold']:.3f}")
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    precision, recall, _ = precision_recall_curve(labels, probs)
    axes[1].plot(recall, precision, label=f"PR AUC {m['pr_auc']:.3f}")
    axes[1].axhline(np.mean(labels), ls=":", color="grey", label=f"prevalence {np.mean(labels):.3f}")
    axes[1].set(xlabel="recall", ylabel="precision", title="precision-recall")
    for ax in axes:
        ax.legend(fontsize=8, loc="lower right" if ax is axes[0] else "lower left")
    return _save(fig, path)


def plot_reliability(labels, probs, calib, path):
    from sklearn.calibration import calibration_curve
    fig, axes = _figure(1)
    frac, mean_pred = calibration_curve(labels, probs, n_bins=calib["ece_bins"], strategy="uniform")
    axes[0].plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    axes[0].plot(mean_pred, frac, "o-", label=f"model (ECE {calib['ece']:.3f}, Brier {calib['brier']:.3f})")
    axes[0].set(xlabel="mean predicted P(pneumonia)", ylabel="observed pneumonia fraction", title="reliability")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_training_curves(history, best_epoch, path):
    epochs = [h["epoch"] for h in history]
    fig, axes = _pyplot().subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], label="val")
    axes[0].set(title="cross-entropy loss", xlabel="epoch")
    axes[1].plot(epochs, [h["val_auc"] for h in history], label="val AUC")
    axes[1].plot(epochs, [h["val_accuracy"] for h in history], label="val accuracy @0.5")
    axes[1].set(title="val metrics", xlabel="epoch")
    axes[2].plot(epochs, [h["lr"] for h in history])
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in axes[:2]:
        ax.axvline(best_epoch, color="grey", ls=":", label=f"selected (epoch {best_epoch})")
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_deletion(results, path):
    fig, ax = _pyplot().subplots(figsize=(5, 3.8))
    for name, r in results.items():
        ax.plot(DELETION_FRACTIONS, r["mean_curve"], "o-" if name != "random" else "x--",
                label=f"{name} (AUC {r['deletion_auc']:.3f})")
    ax.set(xlabel="fraction of pixels removed (most relevant first)", ylabel="P(predicted class)",
           title="deletion test")
    ax.legend(fontsize=8)
    return _save(fig, path)
