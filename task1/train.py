"""Train the ResNet-18 PneumoniaMNIST classifier; keep the epoch with the best val AUC.

    python task1/train.py                                   # the standard run (CPU ok: 12-13 min on 2 AVX2 cores in fp32, ~4 min where bf16 is native)
    python task1/train.py --epochs 15 --batch_size 32 --lr 0.005 --seed 1 --out models/seeds/seed1.pth
    python task1/train.py --resume                          # go on after an interruption
    torchrun --nproc_per_node 2 task1/train.py --device cpu # data-parallel (DDP) over 2 processes

Writes the checkpoint (--out), its history next to it (<out stem>_history.json) and the loss and
metric curves to <reports>/figures/task1_training_curves.png. After the warm-up the weights that are
evaluated, selected and saved are an exponential moving average of the trained ones (--ema_decay),
which smooths the last epochs' step-to-step noise. The decision threshold is chosen on val (Youden's
J) and stored in the checkpoint; the test split is never read here.
"""
import copy
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torchvision.transforms import v2

from pneumo.atomic import check_writable, file_sha256, save_torch_atomic, write_json_atomic
from pneumo.calibration import RULES, calibrate, fit_decision_rule
from pneumo.checkpoint import CHECKPOINT_NAME, DEFAULT_CHECKPOINT, make_checkpoint
from pneumo.cli import add_shared_flags, fraction, make_parser, non_negative_float, positive_int, ranged
from pneumo.corruptions import corrupted_copies
from pneumo.data import NORMALIZATION, XrayDataset, ensure_data_file, load_split, require_both_classes, train_augmentation
from pneumo.errors import run_script
from pneumo.inference import predict_logits, predict_proba
from pneumo.metrics import binary_metrics
from pneumo.model import build_model, unwrap
from pneumo.plots import plot_training_curves
from pneumo.runtime import DEFAULT_RUN, UserError, print_run_header, seed_everything
from pneumo.training import (
    Trainer,
    balanced_class_weights,
    load_resume_state,
    make_ema,
    recompute_bn_statistics,
    resolve_amp,
    save_resume_state,
    setup_distributed,
    train_one_epoch,
    wrap_distributed,
)


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--epochs", type=positive_int, default=5, help="passes over train (default 5: 12-13 min on a 2-core AVX2 CPU in fp32)")
    p.add_argument("--batch_size", type=ranged(int, 2), default=128, help="images per optimiser step, over all processes (default 128)")
    p.add_argument("--lr", type=ranged(float, 0, 10, low_open=True), default=2e-3, help="peak AdamW learning rate of the one-cycle schedule (default 2e-3)")
    p.add_argument("--weight_decay", type=ranged(float, 0, 10), default=0.05, help="AdamW decoupled weight decay (default 0.05)")
    p.add_argument("--warmup_epochs", type=non_negative_float,
                   help="linear warm-up before cosine decay, in epochs (default 1; a fifth of the run when it "
                        "is a single epoch)")
    p.add_argument("--label_smoothing", type=fraction, default=0.0, help="cross-entropy label smoothing (default 0: keeps probabilities calibrated)")
    p.add_argument("--mixup", type=non_negative_float, default=0.0,
                   help="MixUp: train on pairs of images blended with a Beta(a, a) weight, labels blended alike "
                        "(torchvision.transforms.v2.MixUp; default 0: off; 0.2-0.4 is usual)")
    p.add_argument("--class_weight", choices=["balanced", "none"], default="balanced",
                   help="balanced (default): each class weighs half of the loss, so P = 0.5 means even odds "
                        "whatever the training mix (train is 74 %% pneumonia); none: plain cross-entropy")
    p.add_argument("--aug_border", choices=["reflect", "black"], default="reflect",
                   help="what augmentation puts where a shift, turn or zoom-out uncovers the border: the film "
                        "mirrored outwards (default) or black, which no real film shows")
    p.add_argument("--corruption_aug", choices=["none", "medmnistc", "augmix"], default="medmnistc",
                   help="medmnistc (default, chosen on val by experiments/shift_study.py): before the affine and jitter, one "
                        "of MedMNIST-C's PneumoniaMNIST corruptions (or none, one chance in 14) at a random severity per image "
                        "(pneumo.corruptions); augmix: torchvision's AugMix instead; none: neither")
    p.add_argument("--decision_rule", choices=RULES, default="even_odds_shifted",
                   help="how the stored calibration (Platt scaling, classes weighted equally) and threshold are fitted on val: "
                        "youden_clean = on the clean val films, threshold at Youden's J; even_odds_* = threshold 0.5; "
                        "*_shifted = on the val films pooled with their 65 MedMNIST-C copies (default even_odds_shifted, "
                        "chosen on val by experiments/shift_study.py)")
    p.add_argument("--ema_decay", type=fraction, default=0.97,
                   help="per-step decay of the weight average kept after warm-up (default 0.97: about the last "
                        "epoch of 36 steps; 0 turns it off and the raw weights are selected)")
    p.add_argument("--bn_stats", choices=["running", "recompute"], default="running",
                   help="BatchNorm statistics of the evaluated weights: running (default: the averages kept during "
                        "training) or recompute (one pass over the un-augmented train images after each epoch)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "none"], default="auto",
                   help="mixed precision: auto = bf16 where the CPU/GPU runs it natively, fp16 on older GPUs")
    add_shared_flags(p, "seed", "device", "data_root", "size", "out",
                     seed=dict(help="seed for init, shuffling and augmentation (default 0)"),
                     out=dict(default=DEFAULT_RUN / CHECKPOINT_NAME,
                              help=f"checkpoint path (default {DEFAULT_RUN / CHECKPOINT_NAME}; the shipped one, "
                                   f"{DEFAULT_CHECKPOINT}, is replaced only by scripts/publish_run.sh)"))
    p.add_argument("--reports", type=Path, help="folder for figures/ (default: the checkpoint's folder)")
    p.add_argument("--resume", action="store_true", help="continue from <out>.resume.pth, written after every epoch")
    p.add_argument("--num_workers", type=ranged(int, 0, 64), default=0, help="data-loader workers (default 0: tensors in memory are fast enough)")
    args = p.parse_args(argv)
    args.reports = args.reports or args.out.parent
    if args.warmup_epochs is None:
        args.warmup_epochs = 1.0 if args.epochs > 1 else args.epochs / 5
    if not 0 <= args.warmup_epochs < args.epochs:
        p.error(f"--warmup_epochs {args.warmup_epochs:g} must be at least 0 and below --epochs {args.epochs}; "
                f"lower it (e.g. --warmup_epochs {args.epochs / 5:g})")
    return args


def main(args):
    rank, world_size, device = setup_distributed(args.device)
    amp_dtype = resolve_amp(args.amp, device)  # fp16 on a CPU is refused here, before any work
    is_main = rank == 0
    check_writable(args.out, "file")
    check_writable(args.reports, "folder")
    run = print_run_header("train", args) if is_main else None
    resume_path = args.out.with_name(args.out.name.replace(".pth", "") + ".resume.pth")
    if args.resume and not resume_path.exists():
        raise UserError(f"--resume given but {resume_path} does not exist; start without --resume")

    data_path = ensure_data_file(args.data_root, args.size)
    train_images, train_labels = load_split(args.data_root, "train", args.size)
    val_images, val_labels = load_split(args.data_root, "val", args.size)
    for split, labels in (("train", train_labels), ("val", val_labels)):
        require_both_classes(labels, split, data_path)
    if len(train_labels) < args.batch_size:
        raise UserError(f"--batch_size {args.batch_size} exceeds the {len(train_labels)} training images")

    seed_everything(args.seed)
    model = build_model().to(device).to(memory_format=torch.channels_last)
    per_process_batch = max(1, args.batch_size // world_size)
    train_set = XrayDataset(train_images, train_labels, transform=train_augmentation(args.size, args.aug_border, args.corruption_aug))
    sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=world_size, rank=rank,
                                                  shuffle=True, seed=args.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(train_set, batch_size=per_process_batch, sampler=sampler,
                                         drop_last=True, num_workers=args.num_workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * len(loader),
        pct_start=args.warmup_epochs / args.epochs, anneal_strategy="cos")
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    weight = balanced_class_weights(train_labels).to(device) if args.class_weight == "balanced" else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=args.label_smoothing)
    ema = make_ema(model, args.ema_decay)
    ema_start = round(args.warmup_epochs * len(loader))  # optimiser steps before the average starts

    state = {"epoch": 0, "history": [], "best_auc": -1.0, "best_epoch": 0,
             "best_state": copy.deepcopy(model.state_dict())}
    if args.resume:
        state = load_resume_state(resume_path, args, model, optimizer, scheduler, scaler, ema)
        if is_main:
            print(f"resuming after epoch {state['epoch']} from {resume_path}")
    mix = v2.MixUp(alpha=args.mixup, num_classes=2) if args.mixup else None
    trainer = Trainer(wrap_distributed(model, device, world_size), optimizer, scheduler, scaler, criterion, device,
                      amp_dtype, ema, ema_start, mix)
    if is_main:
        run.update(world_size=world_size, steps_per_epoch=len(loader), device=str(device), amp=str(amp_dtype))
        print(f"device {device} x{world_size}  amp {amp_dtype}  train {len(train_labels)}  val {len(val_labels)}  "
              f"steps/epoch {len(loader)}")

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        start = time.perf_counter()
        seed_everything(args.seed + 1000 * epoch + rank)  # resuming at any epoch replays the same draws
        sampler.set_epoch(epoch)
        train_loss = train_one_epoch(trainer, loader, desc=f"epoch {epoch}/{args.epochs}" if is_main else None)
        evaluated = ema.module if ema is not None and ema.n_averaged > 0 else model
        if args.bn_stats == "recompute":
            recompute_bn_statistics(evaluated, train_images, device)
        val_probs = predict_proba(evaluated, val_images, NORMALIZATION, device)
        val = binary_metrics(val_labels, val_probs)
        val["loss"] = float(nn.functional.binary_cross_entropy(
            torch.tensor(val_probs).clamp(1e-7, 1 - 1e-7), torch.tensor(val_labels, dtype=torch.float32)))
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"], "val_auc": val["auc"],
               "val_accuracy": val["accuracy"], "lr": optimizer.param_groups[0]["lr"],
               "weights": "ema" if evaluated is not model else "raw",
               "seconds": round(time.perf_counter() - start, 2)}
        state["history"].append(row)
        if val["auc"] > state["best_auc"]:
            state.update(best_auc=val["auc"], best_epoch=epoch, best_state=copy.deepcopy(evaluated.state_dict()))
        state["epoch"] = epoch
        if is_main:
            save_resume_state(resume_path, args, state, model, optimizer, scheduler, scaler, ema)
            print(f"epoch {epoch:3d}  train_loss {train_loss:.4f}  val_loss {val['loss']:.4f}  "
                  f"val_auc {val['auc']:.4f}  val_acc {val['accuracy']:.4f}  ({row['weights']})  {row['seconds']:.1f}s"
                  f"{'  *best' if state['best_epoch'] == epoch else ''}", flush=True)

    if is_main:
        learned = finish(args, run, state, model, device, amp_dtype, val_images, val_labels, data_path)
        resume_path.unlink(missing_ok=True)
        if not learned:
            raise UserError(f"TRAINING FAILED: the best val AUC is {state['best_auc']:.3f}, below {0.5 + CHANCE_MARGIN:g}: "
                            f"no better than chance (0.5); its checkpoint is at {failed_path(args.out)}, not at {args.out}. "
                            f"Check the data and the flags (--lr, --label_smoothing)")
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


# A best val AUC this close to 0.5 is a run that learned nothing: it ends in an error, and its checkpoint is
# kept aside (failed_path) instead of at --out, where a later command would pick it up.
CHANCE_MARGIN = 0.1


def failed_path(out: Path) -> Path:
    return out.with_name(out.stem + ".failed.pth")


def finish(args, run, state, model, device, amp_dtype, val_images, val_labels, data_path) -> bool:
    """Restore the best-val epoch, choose its threshold on val, write checkpoint, history, curves.
    False (and the checkpoint at failed_path) when the run did not beat chance on val."""
    best = unwrap(model)
    best.load_state_dict(state["best_state"], strict=True)
    val_z = predict_logits(best, val_images, NORMALIZATION, device)
    shifted_z = None
    if args.decision_rule.endswith("_shifted"):
        copies = corrupted_copies(val_images, seed=0)
        # 65 copies of val: in the training precision (bf16 where native: four times faster on a CPU)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            shifted_z = predict_logits(best, copies.reshape(-1, *copies.shape[-2:]), NORMALIZATION, device,
                                       desc="val under MedMNIST-C").reshape(copies.shape[:3])
    calibration, threshold = fit_decision_rule(val_z, val_labels, args.decision_rule, shifted_z)
    val_probs = calibrate(val_z, calibration)
    val_metrics = {"at_0.5": binary_metrics(val_labels, val_probs),
                   "at_threshold": binary_metrics(val_labels, val_probs, threshold)}
    checkpoint = make_checkpoint(best, image_size=args.size, normalization=NORMALIZATION,
                                 threshold=threshold, calibration=calibration, val_metrics=val_metrics,
                                 train_args=run["args"], data_sha256=file_sha256(data_path), epoch=state["best_epoch"])
    checkpoint["git_commit"] = run["git_commit"]
    learned = state["best_auc"] >= 0.5 + CHANCE_MARGIN
    save_torch_atomic(checkpoint, args.out if learned else failed_path(args.out))
    history_path = args.out.with_name(args.out.stem + "_history.json")
    write_json_atomic(history_path, {**run, "best_epoch": state["best_epoch"], "threshold": threshold, "calibration": calibration,
                                     "val_metrics": val_metrics, "epochs": state["history"]})
    figure = plot_training_curves(state["history"], state["best_epoch"], args.reports / "figures" / "task1_training_curves.png")
    print(f"best epoch {state['best_epoch']}  val_auc {val_metrics['at_0.5']['auc']:.4f}  "
          f"threshold {threshold:.3f} ({args.decision_rule} on val, Platt slope {calibration['slope']:.3f} intercept "
          f"{calibration['intercept']:.3f})  val_acc@thr {val_metrics['at_threshold']['accuracy']:.4f}")
    print(f"wrote {args.out if learned else failed_path(args.out)}, {history_path}, {figure}")
    return learned


if __name__ == "__main__":
    run_script("train", main, parse_args)
