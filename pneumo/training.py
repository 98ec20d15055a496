"""The pieces of a training run that train.py assembles: processes and devices, mixed precision,
class weights, the weight average, one epoch, and the resume file."""
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from tqdm.auto import tqdm

from .atomic import save_torch_atomic
from .checkpoint import read_payload
from .data import normalize, require_both_classes
from .model import unwrap
from .runtime import UserError, resolve_device

# Flags that change the result; a resumed run must use the same ones.
RECIPE_FLAGS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "label_smoothing", "mixup",
                "class_weight", "aug_border", "corruption_aug", "ema_decay", "bn_stats", "seed", "size", "amp")


def recipe_of(train_args: dict) -> dict:
    """The flags that shape the result (seed aside), as a run recorded them; flags older runs lack get
    their value from before the flag existed."""
    before = {"ema_decay": 0.0, "class_weight": "none", "aug_border": "black", "mixup": 0.0, "corruption_aug": "none"}
    return {k: train_args.get(k, before.get(k)) for k in RECIPE_FLAGS if k != "seed"}


def setup_distributed(device_name):
    """Single process, or one of several started by torchrun (RANK/WORLD_SIZE in the environment)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device_name)
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":  # share the cores instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    return rank, world_size, device


def wrap_distributed(model, device, world_size):
    if world_size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def resolve_amp(choice, device):
    """bf16 autocast where the hardware runs bf16 natively (AVX-512 BF16 / AMX CPUs, Ampere+ GPUs),
    fp16 with loss scaling on older GPUs (T4), fp32 otherwise."""
    if choice == "none":
        return None
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16":
        if device.type == "cpu":
            raise UserError("--amp fp16 runs on GPUs only (on a CPU it is emulated, minutes per step); "
                            "use --amp auto, bf16 or none")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def balanced_class_weights(labels):
    """Per-class loss weights n / (2 n_c) (scikit-learn's "balanced"): both classes weigh the same."""
    labels = np.asarray(labels).ravel()
    require_both_classes(labels, "train", "the training labels")
    return torch.tensor(compute_class_weight("balanced", classes=np.arange(2), y=labels), dtype=torch.float32)


def make_ema(model, decay):
    """torch's EMA of parameters and BatchNorm buffers; None when decay is 0."""
    if decay == 0:
        return None
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


@dataclass
class Trainer:
    """What one optimiser step needs: the model (DDP-wrapped or not), optimiser, per-step schedule, loss
    scaler (fp16 only), criterion, device, autocast dtype (None: fp32), the weight average (ema, None
    when off) that starts after ema_start optimiser steps, and a batch mixer (mix: torchvision's
    transforms.v2.MixUp, None when off) that turns each batch and its labels into mixed pairs."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None = None
    ema: object = None
    ema_start: int = 0
    mix: object = None


def train_one_epoch(trainer: Trainer, loader, desc=None):
    """One pass over the loader; the mean training loss. A loss that becomes NaN/inf stops the run."""
    t = trainer
    t.model.train()
    total, count = 0.0, 0
    for step, (images, labels) in enumerate(tqdm(loader, desc=desc, disable=desc is None, leave=False), 1):
        x = normalize(images)
        if t.mix is not None:  # soft labels (N, 2) from here on; the class-weighted loss takes them as they are
            x, labels = t.mix(x, labels)
        x = x.to(t.device, memory_format=torch.channels_last)
        y = labels.to(t.device)
        with torch.autocast(t.device.type, dtype=t.amp_dtype or torch.float32, enabled=t.amp_dtype is not None):
            loss = t.criterion(t.model(x), y)
        value = loss.item()  # the one device sync per step
        if not math.isfinite(value):  # nothing after this step could be trusted; stop here, in one line
            raise UserError(f"training diverged: the loss became {value} at step {step} of {desc or 'an epoch'}; "
                            f"lower --lr or check the data (nothing was written at --out)")
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        t.scaler.step(t.optimizer)
        t.scaler.update()
        t.scheduler.step()
        if t.ema is not None and t.scheduler.last_epoch > t.ema_start:  # last_epoch counts optimiser steps
            t.ema.update_parameters(unwrap(t.model))
        total += value * len(y)
        count += len(y)
    return total / count


def recompute_bn_statistics(model, images, device, batch_size=256):
    """BatchNorm running statistics recomputed as a plain average over one pass of the un-augmented
    images (torch.optim.swa_utils.update_bn), in place. The running averages kept during training lag
    behind weights that are still moving (and the weight average mixes statistics of several weights); on
    small runs that lag shifts every logit at evaluation time, while the ranking stays right."""
    batches = (normalize(torch.from_numpy(images[i:i + batch_size])).to(device, memory_format=torch.channels_last)
               for i in range(0, len(images), batch_size))
    torch.optim.swa_utils.update_bn(batches, model, device)
    model.eval()


def save_resume_state(path, args, state, model, optimizer, scheduler, scaler, ema):
    save_torch_atomic({"recipe": {k: getattr(args, k) for k in RECIPE_FLAGS}, **state,
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None}, path)


def load_resume_state(path, args, model, optimizer, scheduler, scaler, ema):
    saved = read_payload(path)
    recipe = {k: getattr(args, k) for k in RECIPE_FLAGS}
    if saved.get("recipe") != recipe:
        diff = {k: (saved.get("recipe", {}).get(k), v) for k, v in recipe.items() if saved.get("recipe", {}).get(k) != v}
        raise UserError(f"{path} was written with other settings {diff} (saved, now); rerun with the same flags")
    model.load_state_dict(saved["model"], strict=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    scaler.load_state_dict(saved["scaler"])
    if ema is not None:
        ema.load_state_dict(saved["ema"], strict=True)
    return {k: saved[k] for k in ("epoch", "history", "best_auc", "best_epoch", "best_state")}
