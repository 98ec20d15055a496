"""The forced choice on a saved tiny Gemma 3, checked against a plain unbatched computation, printed as JSON.
Run as a script so that the test can run it under another transformers line (a second environment):

    python tests/forced_choice_probe.py FOLDER [--build]

--build saves the tiny Gemma 3 into FOLDER first, under the transformers that runs this (a tokenizer saved by
transformers 5 does not load on 4.x).

Reports, for each of two reports: what pneumo.vlm.forced_choice gives (the three labels, and a set of
candidates of one to three tokens), and the reference: the summed log-probability of each candidate's
tokens from one forward pass over the whole unpadded sequence, with no logits_to_keep."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPORTS = ("Findings: lungs are clear\nImpression: normal\nLabel: pneumonia",
           "Findings: right lower lobe opacity\nImpression: pneumonia")
LONGER = ("normal", "right lower lobe", "no consolidation")  # candidates of 1, 3 and 2 tokens


def reference(model, processor, conversation, report, labels):
    import torch

    from pneumo.vlm import chat_inputs, report_body
    tokenizer = processor.tokenizer
    prompt = chat_inputs(processor, [conversation])
    tail = tokenizer(report_body(report) + "\nLabel:", add_special_tokens=False)["input_ids"]
    scores = []
    for label in labels:
        candidate = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt["input_ids"][0].tolist() + tail + candidate])
        extra = {"pixel_values": prompt["pixel_values"]}
        if "token_type_ids" in prompt:
            extra["token_type_ids"] = torch.tensor([prompt["token_type_ids"][0].tolist() + [0] * (len(tail) + len(candidate))])
        with torch.inference_mode():
            log_probs = torch.log_softmax(model(input_ids=ids, **extra).logits[0].float(), dim=-1)
        start = ids.shape[1] - len(candidate)
        scores.append(sum(float(log_probs[start - 1 + m, t]) for m, t in enumerate(candidate)))
    return scores


def probe(folder) -> dict:
    import torch
    import transformers
    from PIL import Image

    from pneumo.impression import LABELS
    from pneumo.vlm import build_messages, forced_choice, load_vlm
    model, processor = load_vlm(str(folder), "none", torch.device("cpu"))
    dark, light = Image.new("RGB", (28, 28), 30), Image.new("RGB", (28, 28), 220)
    conversations = [build_messages("zero_shot", dark), build_messages("clinical_role", light)]
    batch = forced_choice(model, processor, conversations, REPORTS)
    alone = [forced_choice(model, processor, [c], [r])[0] for c, r in zip(conversations, REPORTS)]
    longer = forced_choice(model, processor, conversations, REPORTS, labels=LONGER)
    return {"transformers": transformers.__version__, "batch": batch, "alone": alone, "longer": longer,
            "reference": [reference(model, processor, c, r, LABELS) for c, r in zip(conversations, REPORTS)],
            "reference_longer": [reference(model, processor, c, r, LONGER) for c, r in zip(conversations, REPORTS)]}


if __name__ == "__main__":
    folder = Path(sys.argv[1])
    if "--build" in sys.argv[2:]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from tiny_gemma3 import save_tiny_gemma3
        save_tiny_gemma3(folder)
    print(json.dumps(probe(folder)))
