"""Load a saved Gemma 3 in 4-bit NF4 on the CPU and print, as JSON, which linear layers came out 4-bit.
Run as a script so that the test can run it under another transformers line (a second environment):

    python tests/quantised_layers.py FOLDER [--skip project|bare]

--skip project: the module paths pneumo.vlm.skip_module_paths reads off the model (what load_vlm uses);
--skip bare: the bare names in pneumo.vlm.NOT_QUANTIZED (the rule before, kept to show why it failed)."""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def quantised_layers(folder, skip="project") -> dict:
    import bitsandbytes as bnb
    import torch
    import transformers
    from transformers import AutoModelForImageTextToText

    from pneumo import vlm
    if skip == "project":
        model = vlm.load_weights(str(folder), "nf4", torch.device("cpu"), torch.float32)
    else:
        model = AutoModelForImageTextToText.from_pretrained(
            str(folder), quantization_config=vlm.quantization_config("nf4", torch.float32, vlm.NOT_QUANTIZED))
    layers = {name: type(module).__name__ for name, module in model.named_modules()
              if isinstance(module, (torch.nn.Linear, bnb.nn.Linear4bit))}
    return {"transformers": transformers.__version__, "layers": layers,
            "skip_modules": list(model.config.quantization_config.llm_int8_skip_modules or [])}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--skip", choices=["project", "bare"], default="project")
    args = parser.parse_args()
    print(json.dumps(quantised_layers(args.folder, args.skip)))
