"""Task 1 speed on this machine: training and inference images/s of the shipped recipe against a plain
fp32 baseline of the same network, measured side by side (interleaved rounds) in one run; Grad-CAM maps/s.

    python benchmarks/task1_speed.py                 # ~3 min on 2 CPU cores
    python benchmarks/task1_speed.py --rounds 1      # quicker, noisier

Writes <out>/benchmark_task1.json and <out>/benchmark_task1.md (published with --out reports). Synthetic images of the real size:
speed does not depend on pixel values.
"""
import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from pneumo.atomic import write_json_atomic, write_text_atomic
from pneumo.data import XrayDataset, normalize, train_augmentation
from pneumo.explain import gradcam_maps
from pneumo.inference import predict_proba
from pneumo.model import build_model
from pneumo.runtime import DEFAULT_RUN, print_run_header
from pneumo.training import cpu_has_native_bf16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="timed optimiser steps per configuration and round (default 6)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported (default 2)")
    p.add_argument("--out", type=Path, default=DEFAULT_RUN,
                   help=f"folder for benchmark_task1.* (default {DEFAULT_RUN}; the published one is reports/)")
    return p.parse_args(argv)


class PilDataset(torch.utils.data.Dataset):
    """The common tutorial pipeline: a PIL image per item, converted and augmented per item."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.transform = v2.Compose([v2.PILToTensor(), train_augmentation(28)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, idx):
        return self.transform(Image.fromarray(self.images[idx])), int(self.labels[idx])


def train_rate(images, labels, batch_size, channels_last, bf16, pil, steps):
    """Images/s over `steps` optimiser steps after one warm-up step, data loading included."""
    torch.manual_seed(0)
    model = build_model()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dataset = PilDataset(images, labels) if pil else XrayDataset(images, labels, train_augmentation(28))
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True))
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        x, y = next(loader)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(normalize(x).contiguous(memory_format=fmt)), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def infer_rate(model, images, batch_size):
    predict_proba(model, images[:batch_size], {"mean": 0.5, "std": 0.5}, "cpu", batch_size)  # warm-up
    start = time.perf_counter()
    predict_proba(model, images, {"mean": 0.5, "std": 0.5}, "cpu", batch_size)
    return len(images) / (time.perf_counter() - start)


def main(args):
    run = print_run_header("benchmark_task1", args)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2048, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 2, 2048)
    configs = {
        "baseline: fp32, NCHW, batch 32, PIL per item": dict(batch_size=32, channels_last=False, bf16=False, pil=True),
        "shipped: fp32, channels-last, batch 128, uint8 tensors": dict(batch_size=128, channels_last=True, bf16=False, pil=False),
    }
    # Emulated bf16 runs at a few images/s: one short measurement at batch 32, first round only.
    native = cpu_has_native_bf16()
    configs["shipped + bf16 autocast" + ("" if native else " (emulated: batch 32, 1 round)")] = dict(
        batch_size=128 if native else 32, channels_last=True, bf16=True, pil=False)
    rates = {name: [] for name in configs}
    for round_ in range(args.rounds):
        for name, cfg in configs.items():
            if cfg["bf16"] and not native and round_ > 0:
                continue
            steps = 2 if cfg["bf16"] and not native else args.steps
            rates[name].append(train_rate(images, labels, steps=steps, **cfg))
            print(f"round {round_ + 1}  {name}: {rates[name][-1]:.1f} img/s", flush=True)
    train = {name: float(np.median(v)) for name, v in rates.items()}

    model = build_model().eval()
    infer = {"batch 256 (evaluate.py)": infer_rate(model, images[:1024], 256),
             "batch 1 (one user image)": infer_rate(model, images[:64], 1)}
    start = time.perf_counter()
    gradcam_maps(model, images[:256], {"mean": 0.5, "std": 0.5}, "cpu", batch_size=64)
    cam_rate = 256 / (time.perf_counter() - start)

    baseline = train[next(iter(configs))]
    result = {**run, "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                                 "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__},
              "train_images_per_second": train, "train_speedup_vs_baseline": {k: v / baseline for k, v in train.items()},
              "inference_images_per_second": infer, "gradcam_maps_per_second": cam_rate,
              "epoch_minutes_at_shipped_rate": 4708 / train[list(configs)[1]] / 60}
    write_json_atomic(args.out / "benchmark_task1.json", result)
    write_text_atomic(args.out / "benchmark_task1.md", markdown(result))
    print(markdown(result))


def markdown(r):
    m = r["machine"]
    lines = ["# Task 1 speed benchmark", "",
             f"`python benchmarks/task1_speed.py` on {m['cpu']}, {m['threads']} threads, torch {m['torch']}, "
             f"native bf16: {m['native_bf16']}. Median of interleaved rounds; machines are shared and noisy, "
             "so compare the ratios.", "", "| training configuration | images/s | vs baseline |", "|---|---|---|"]
    for name, rate in r["train_images_per_second"].items():
        lines.append(f"| {name} | {rate:.1f} | {r['train_speedup_vs_baseline'][name]:.2f}x |")
    lines += ["", f"One epoch of the 4,708 training images at the shipped rate: {r['epoch_minutes_at_shipped_rate']:.1f} min.",
              "", "| inference | images/s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["inference_images_per_second"].items()]
    lines += [f"| Grad-CAM maps (batch 64) | {r['gradcam_maps_per_second']:.1f} |", ""]
    if not m["native_bf16"]:
        lines.append("This CPU has no native bf16 (AVX-512 BF16 / AMX), so `--amp auto` trains in fp32 here; "
                     "bf16 autocast is emulated and far slower, as the table shows.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(parse_args())
