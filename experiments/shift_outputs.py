"""Raw outputs of several checkpoints on clean and MedMNIST-C-corrupted films, for the shift study
(experiments/shift_study.py), which chooses a recipe and a decision rule from the val file alone.

    python experiments/shift_outputs.py --checkpoints models/seeds/e15_seed{0,1,2}.pth --out experiments/results/shift
    python experiments/shift_outputs.py --checkpoints runs/gpu/*.pth --device cuda --out $OUT

Per checkpoint: the log-odds score z = logit(pneumonia) - logit(normal) of every val and test film, clean
and under each of the 13 corruptions at severities 1-5 (pneumo.corruptions, seed 0 for val and 1 for test),
and retrieval precision at 5 (test queries in the train+val archive, exact L2 on the 512-d embedding, as
task3's exact index answers). Val goes to shift_val.npz, test to shift_test.npz (a separate file, read only
once a plan has chosen), retrieval to shift_retrieval.json.
"""
from pathlib import Path

import numpy as np
import torch

from pneumo.atomic import check_writable, file_sha256, write_json_atomic
from pneumo.checkpoint import load_checkpoint
from pneumo.cli import add_shared_flags, make_parser
from pneumo.corruptions import CORRUPTIONS, SEVERITIES, corrupted_copies
from pneumo.data import load_split
from pneumo.errors import run_script
from pneumo.inference import embed_images, predict_logits
from pneumo.runtime import DEFAULT_RUN, print_run_header, resolve_device

SPLIT_SEEDS = {"val": 0, "test": 1}


def parse_args(argv=None):
    p = make_parser(__doc__)
    p.add_argument("--checkpoints", nargs="+", required=True, type=Path, help="checkpoints (names must differ)")
    add_shared_flags(p, "data_root", "out", "device",
                     out=dict(default=DEFAULT_RUN / "shift", help=f"folder for the outputs (default {DEFAULT_RUN / 'shift'})"))
    return p.parse_args(argv)


def precision_at_5(archive, archive_labels, queries, query_labels, device) -> dict:
    """Share of each query's 5 nearest archive cases (exact L2) that carry its label."""
    a = torch.as_tensor(archive, device=device)
    q = torch.as_tensor(queries, device=device)
    nearest = torch.cdist(q, a).topk(5, largest=False).indices.cpu().numpy()
    hits = archive_labels[nearest] == query_labels[:, None]
    per_query = hits.mean(axis=1)
    return {"p_at_5": float(per_query.mean()), "p_at_5_normal": float(per_query[query_labels == 0].mean()),
            "p_at_5_pneumonia": float(per_query[query_labels == 1].mean())}


def main(args):
    check_writable(args.out)
    run = print_run_header("shift_outputs", args)
    device = resolve_device(args.device)
    splits = {name: load_split(args.data_root, name, 28) for name in ("train", "val", "test")}
    shifted = {name: corrupted_copies(splits[name][0], seed) for name, seed in SPLIT_SEEDS.items()}
    outputs = {"val": {"labels": splits["val"][1]}, "test": {"labels": splits["test"][1]}}
    retrieval = {"run": run, "corruptions": list(CORRUPTIONS), "severities": list(SEVERITIES), "checkpoints": {}}
    for path in args.checkpoints:
        model, meta = load_checkpoint(path, device)
        norm, stem = meta["normalization"], path.stem
        for name in ("val", "test"):
            outputs[name][f"{stem}/z"] = predict_logits(model, splits[name][0], norm, device)
            flat = shifted[name].reshape(-1, *shifted[name].shape[-2:])
            outputs[name][f"{stem}/corrupted_z"] = predict_logits(model, flat, norm, device).reshape(shifted[name].shape[:3])
        archive_images = np.concatenate([splits["train"][0], splits["val"][0]])
        archive_labels = np.concatenate([splits["train"][1], splits["val"][1]])
        retrieval["checkpoints"][stem] = {
            "path": str(path), "sha256": file_sha256(path), "train_args": meta.get("train_args", {}),
            "epoch": meta.get("epoch"), "stored_threshold": meta["threshold"],
            **precision_at_5(embed_images(model, archive_images, norm, device), archive_labels,
                             embed_images(model, splits["test"][0], norm, device), splits["test"][1], device)}
        print(f"{stem}: P@5 {retrieval['checkpoints'][stem]['p_at_5']:.4f}", flush=True)
    for name in ("val", "test"):
        np.savez_compressed(args.out / f"shift_{name}.npz", **outputs[name])
    write_json_atomic(args.out / "shift_retrieval.json", retrieval)
    print(f"wrote {args.out}/shift_val.npz, shift_test.npz, shift_retrieval.json")


if __name__ == "__main__":
    run_script("shift_outputs", main, parse_args)
