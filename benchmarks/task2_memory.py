"""What MedGemma-4B's 4-bit load really holds, counted from the model class itself (no weights needed).

    python benchmarks/task2_memory.py --out reports

Builds Gemma 3 4B's architecture (MedGemma-4B's: text hidden 2,560, MLP 10,240, 34 layers, 8 query and
4 key/value heads of 256, vocabulary 262,208; SigLIP tower of 27 layers, hidden 1,152, MLP 4,304, 896 px
in patches of 14, 256 image tokens) on the meta device with the installed transformers, applies the skip
rule that pneumo.vlm.load_weights gives bitsandbytes (pneumo.vlm.skip_module_paths), and counts the bytes of
every parameter: nn.Linear weights outside the skipped paths in NF4 with double quantisation (4 bits, plus
an 8-bit scale per 64 weights whose own float32 scales cover 256 of them: 4.127 bits a weight), everything
else in the compute dtype (float32 on a T4, bf16 on Ampere or newer). Also counted under the old rule (bare
names, which transformers 5 matched at the start of a path only, so the vision tower went to NF4).
Writes <out>/task2_memory.json and .md.
"""
import argparse
from pathlib import Path

import torch

from pneumo.atomic import check_writable, write_json_atomic, write_text_atomic
from pneumo.errors import run_script
from pneumo.runtime import DEFAULT_RUN

NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # weight, 8-bit absmax per block of 64, float32 per 256 absmax


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_RUN, help=f"folder for the results (default {DEFAULT_RUN})")
    return p.parse_args(argv)


def gemma3_4b_config():
    from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig
    text = Gemma3TextConfig(vocab_size=262_208, hidden_size=2560, intermediate_size=10_240, num_hidden_layers=34,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=256)
    vision = SiglipVisionConfig(image_size=896, patch_size=14, hidden_size=1152, intermediate_size=4304,
                                num_hidden_layers=27, num_attention_heads=16, vision_use_head=False)
    return Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=256)


def part_of(name):
    for part in ("vision_tower", "multi_modal_projector", "language_model"):
        if f".{part}." in f".{name}":
            return part
    return "lm_head" if name.startswith("lm_head") else "other"


def count(model, skip):
    """{part: {"params", "nf4_params"}} where NF4 params are Linear weights outside every skipped path,
    matched as transformers 5 matches them: at the start of the module path (so the bare `vision_tower` of the
    old rule matches nothing there, while the real paths match on 5.x and, as substrings, on 4.x too)."""
    linear_weights = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    parts = {}
    for name, param in model.named_parameters():  # tied parameters (embedding = output head) once
        module = name.rsplit(".", 1)[0]
        skipped = any(module == s or module.startswith(s + ".") for s in skip)
        entry = parts.setdefault(part_of(name), {"params": 0, "nf4_params": 0})
        entry["params"] += param.numel()
        if name in linear_weights and not skipped:
            entry["nf4_params"] += param.numel()
    return parts


def gigabytes(parts, compute_bytes):
    nf4 = sum(p["nf4_params"] for p in parts.values())
    dense = sum(p["params"] - p["nf4_params"] for p in parts.values())
    return (nf4 * NF4_BITS / 8 + dense * compute_bytes) / 1e9


def main(args):
    import transformers
    from transformers import AutoModelForImageTextToText

    from pneumo.vlm import NOT_QUANTIZED, skip_module_paths
    check_writable(args.out)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(gemma3_4b_config())
    rules = {"project (real module paths)": skip_module_paths(model), "old (bare names) on transformers 5": list(NOT_QUANTIZED)}
    rows = []
    for rule, skip in rules.items():
        parts = count(model, skip)
        rows.append({"rule": rule, "skip_modules": skip, "parts": parts,
                     "weights_gb_float32_compute": round(gigabytes(parts, 4), 2),
                     "weights_gb_bf16_compute": round(gigabytes(parts, 2), 2)})
    results = {"transformers": transformers.__version__, "nf4_bits_per_weight": NF4_BITS, "rows": rows}
    md = ["# Task 2: what the 4-bit load of MedGemma-4B holds", "",
          f"Written by `python benchmarks/task2_memory.py --out reports` (transformers {transformers.__version__}): "
          "parameters counted on the model class built on the meta device, with the skip rule given to bitsandbytes. "
          f"NF4 with double quantisation costs {NF4_BITS:.3f} bits a weight; the rest is in the compute dtype. "
          "Weights only: the key/value cache and activations come on top.", "",
          "| rule | part | parameters | of them NF4 | rest in compute dtype |", "|---|---|---|---|---|"]
    for row in rows:
        for part, p in sorted(row["parts"].items()):
            md.append(f"| {row['rule']} | {part} | {p['params'] / 1e9:.3f} B | {p['nf4_params'] / 1e9:.3f} B | "
                      f"{(p['params'] - p['nf4_params']) / 1e9:.3f} B |")
    md += ["", "| rule | weights, float32 compute (T4) | weights, bf16 compute (Ampere+) |", "|---|---|---|"]
    md += [f"| {r['rule']} | {r['weights_gb_float32_compute']:.2f} GB | {r['weights_gb_bf16_compute']:.2f} GB |" for r in rows]
    write_json_atomic(args.out / "task2_memory.json", results)
    write_text_atomic(args.out / "task2_memory.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return results


if __name__ == "__main__":
    run_script("task2_memory", main, parse_args)
