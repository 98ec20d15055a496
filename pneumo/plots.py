"""The project's figures: panel galleries of X-rays (with Grad-CAM overlays), evaluation plots,
training curves and deletion curves. Each writes one PNG atomically and returns its path."""
import textwrap
from pathlib import Path

import numpy as np

from .atomic import save_figure_atomic
from .data import CLASS_NAMES
from .explain import DELETION_FRACTIONS, overlay
from .metrics import decide


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


def grid_columns(n: int, most: int = 5) -> int:
    """Columns for n panels with no empty cell when a divisor of n up to `most` allows (10 -> 5, 9 -> 3),
    else the fewest empty cells."""
    if n <= most:
        return max(1, n)
    return min(range(most, 1, -1), key=lambda c: ((-n) % c, -c))


def wrap_title(text: str, width: int = 42) -> str:
    """Each line of a panel title wrapped to `width` characters, long file names broken, not cut."""
    import textwrap
    return "\n".join(part for line in text.split("\n")
                     for part in (textwrap.wrap(line, width, break_long_words=True, break_on_hyphens=False) or [""]))


def plot_panels(panels, path, title=None, cols=4):
    """A grid of panels; each is None (an empty cell, to align rows) or a dict with `image` (uint8 HxW),
    optional `cam`, `title` and `color`. Titles are wrapped, never cut."""
    titles = [wrap_title(p.get("title", "")) if p else "" for p in panels]
    lines = max([t.count("\n") + 1 for t in titles] + [1])
    rows = max(1, int(np.ceil(len(panels) / cols)))
    cols = min(cols, max(1, len(panels)))
    panel_height = 3.3 + 0.25 * lines
    if title:  # wrapped to the figure's width (about 10 characters an inch at this size), never cut
        title = textwrap.fill(title, width=max(28, int(3.2 * cols * 10)))
    title_height = 0.3 + 0.22 * title.count("\n") + 0.2 if title else 0
    height = panel_height * rows + title_height
    fig, axes = _pyplot().subplots(rows, cols, figsize=(3.2 * cols, height), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, panel, text in zip(axes.ravel(), panels, titles):
        if panel is None:
            continue
        if panel.get("cam") is not None:
            ax.imshow(overlay(panel["image"], panel["cam"]))
        else:
            ax.imshow(panel["image"], cmap="gray", vmin=0, vmax=255, interpolation="bicubic")
        ax.set_title(text, fontsize=8.5, color=panel.get("color", "black"))
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(h_pad=1.5, rect=(0, 0, 1, 1 - title_height / height) if title else None)
    return _save(fig, path, dpi=110, tight=False)


def plot_confusion(labels, probs, threshold, path, split="test"):
    from sklearn.metrics import ConfusionMatrixDisplay
    fig, axes = _figure(2)
    for ax, thr, name in ((axes[0], 0.5, "threshold 0.5"), (axes[1], threshold, f"val-chosen threshold {threshold:.3f}")):
        ConfusionMatrixDisplay.from_predictions(labels, decide(probs, thr), labels=[0, 1],
                                                display_labels=CLASS_NAMES, cmap="Blues", colorbar=False, ax=ax)
        ax.set_title(name)
    fig.suptitle(f"confusion matrices, {split} split (n = {len(labels)})")
    return _save(fig, path)


def plot_roc_pr(labels, probs, results, path, split="test"):
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
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC, {split} split")
    precision, recall, _ = precision_recall_curve(labels, probs)
    axes[1].plot(recall, precision, label=f"PR AUC {m['pr_auc']:.3f}")
    axes[1].axhline(np.mean(labels), ls=":", color="grey", label=f"prevalence {np.mean(labels):.3f}")
    axes[1].set(xlabel="recall", ylabel="precision", title=f"precision-recall, {split} split")
    for ax in axes:
        ax.legend(fontsize=8, loc="lower right" if ax is axes[0] else "lower left")
    return _save(fig, path)


def plot_reliability(labels, probs, calib, path, split="test"):
    from sklearn.calibration import calibration_curve
    fig, axes = _figure(1)
    frac, mean_pred = calibration_curve(labels, probs, n_bins=calib["ece_bins"], strategy="uniform")
    axes[0].plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    axes[0].plot(mean_pred, frac, "o-", label=f"model (ECE {calib['ece']:.3f}, Brier {calib['brier']:.3f})")
    axes[0].set(xlabel="mean predicted P(pneumonia)", ylabel="observed pneumonia fraction", title=f"reliability, {split} split")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_risk_coverage(labels, probs, threshold, rc, path, split="test"):
    """Error rate over the cases decided against the share decided, the least certain left out first;
    the operating points of `rc` (pneumo.metrics.risk_coverage) marked with their 95 % intervals."""
    from .metrics import selective_accuracy_curve
    fig, axes = _figure(1, width=5.2)
    coverage, accuracy = selective_accuracy_curve(labels, probs, threshold)
    axes[0].plot(100 * coverage, 100 * (1 - accuracy), color="tab:blue",
                 label=f"ranked by |P - {threshold:.3f}| (AURC {rc['aurc']:.3f})")
    for p in rc["points"]:
        err = 100 * (1 - p["accuracy"])
        lo, hi = 100 * (1 - p["accuracy_ci95"][1]), 100 * (1 - p["accuracy_ci95"][0])
        marker = "s" if p["operating_point"].startswith("abstains") else "o"
        axes[0].errorbar(100 * p["coverage"], err, yerr=[[err - lo], [hi - err]], fmt=marker, capsize=3,
                         label=f"{p['operating_point']}: error {err:.1f} %")
    axes[0].set(xlabel="cases decided (%)", ylabel="error rate over the cases decided (%)",
                title=f"risk-coverage, {split} split", xlim=(0, 101), ylim=(0, None))
    axes[0].legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_training_curves(history, best_epoch, path):
    """Loss, val metrics and learning rate per epoch. Val points of epochs evaluated with the raw
    weights are hollow, those of the weight average (EMA) filled; legends sit below the plots."""
    epochs = [h["epoch"] for h in history]
    ema = [h.get("weights") == "ema" for h in history]
    fig, axes = _pyplot().subplots(1, 3, figsize=(13, 4.4))

    def val_line(ax, key, label, color):
        ax.plot(epochs, [h[key] for h in history], "-", color=color, label=label)
        for e, h, averaged in zip(epochs, history, ema):
            ax.plot(e, h[key], "o", color=color, markerfacecolor=color if averaged else "white")

    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", color="C0",
                 label="train (raw weights, augmented, class-weighted)")
    val_line(axes[0], "val_loss", "val (evaluated weights)", "C1")
    axes[0].set(title="loss", xlabel="epoch", ylabel="cross-entropy per image")
    val_line(axes[1], "val_auc", "val AUC", "C0")
    val_line(axes[1], "val_accuracy", "val accuracy at P = 0.5", "C1")
    axes[1].set(title="val metrics", xlabel="epoch", ylabel="AUC / accuracy")
    axes[2].plot(epochs, [h["lr"] for h in history], "o-", color="C2")
    axes[2].set(title="learning rate", xlabel="epoch", ylabel="learning rate at the end of the epoch")
    for ax in axes[:2]:
        ax.axvline(best_epoch, color="grey", ls=":", label=f"selected: epoch {best_epoch}")
    for ax in axes:
        ax.set_xticks(epochs)
    if any(ema):
        axes[1].plot([], [], "o", color="grey", markerfacecolor="white", label="hollow: raw weights evaluated")
        axes[1].plot([], [], "o", color="grey", label="filled: weight average (EMA) evaluated")
    for ax in axes[:2]:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    fig.tight_layout()
    return _save(fig, path, tight=False)


def plot_deletion(results, path, split, n):
    fig, ax = _pyplot().subplots(figsize=(5, 3.8))
    for name, r in results.items():
        ax.plot(DELETION_FRACTIONS, r["mean_curve"], "o-" if name != "random" else "x--",
                label=f"{name} (AUC {r['deletion_auc']:.3f})")
    ax.set(xlabel="fraction of pixels removed (most relevant first)", ylabel="P(predicted class)",
           title=f"deletion test, {split} split (n = {n})")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_method_grid(films, maps_by_method, titles, path):
    """Rows: films; columns: the film, then each method's overlay (benchmarks/explanations.py)."""
    from .explain import overlay
    plt = _pyplot()
    names = list(maps_by_method)
    fig, axes = plt.subplots(len(films), len(names) + 1, figsize=(1.9 * (len(names) + 1), 2.1 * len(films)), squeeze=False)
    for row, film in enumerate(films):
        axes[row, 0].imshow(film, cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(titles[row], fontsize=7)
        for col, name in enumerate(names, start=1):
            axes[row, col].imshow(overlay(film, maps_by_method[name][row], size=112))
            if row == 0:
                axes[row, col].set_title(name, fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    return _save(fig, path)
