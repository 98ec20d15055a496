"""The vision-language model of Task 2: loading (4-bit NF4 on CUDA), prompts, batched generation, and the
forced choice of a label scored by the model itself. Reading the narrative's prose is pneumo.impression's work."""
import gc
import os
import time
from dataclasses import dataclass

import torch

from .explain import SHIPPED_NAME
from .impression import LABEL_LINE, LABELS
from .runtime import UserError

DEFAULT_VLM = "google/medgemma-4b-it"
STRATEGIES = ("zero_shot", "clinical_role", "context_aware")

# Every prompt ends with this, so the last line can be read by a machine (pneumo.impression.label_line)
REPORT_FORMAT = ("Write a short report exactly in this form:\n"
                 "Findings: <what you see in the lungs, heart and pleura>\n"
                 "Impression: <one line, with a few words of support>\n"
                 "Label: <one word: normal, pneumonia or uncertain>")
CLINICAL_ROLE = ("You are an expert pediatric radiologist reading frontal chest X-rays of children "
                 "aged 1 to 5. You are careful, concise and state uncertainty plainly.")


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 only where the GPU runs it natively (compute capability 8.0+). A T4 (7.5) reports
    torch.cuda.is_bf16_supported() == True but emulates it; Gemma 3 in float16 overflows to
    empty or NaN output, so everything else computes in float32."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.bfloat16
    return torch.float32


# Kept in the compute dtype, as is usual for vision-language models in 4-bit (QLoRA-style) loading: the
# vision tower and the projector are small, and their errors would reach every image token. The output
# head is listed because a given list replaces transformers' default one, which keeps the head unquantised.
NOT_QUANTIZED = ("vision_tower", "multi_modal_projector", "lm_head")


def skip_module_paths(model_or_config) -> list:
    """The full module paths (e.g. `model.vision_tower`, `lm_head`) of the parts in NOT_QUANTIZED, read
    off the model class itself. transformers 4.x matches skip names anywhere in a module path, 5.x only
    at its start, so a bare `vision_tower` keeps the tower out of 4-bit on 4.x and quantises it on 5.x;
    the real paths work on both. Given a config, the model is built on the meta device (no memory)."""
    model = model_or_config
    if not isinstance(model, torch.nn.Module):
        from transformers import AutoModelForImageTextToText
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(model_or_config)
    paths = [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in NOT_QUANTIZED]
    found = {path.rsplit(".", 1)[-1] for path in paths}
    if "vision_tower" not in found:
        raise UserError(f"{type(model).__name__} has no vision_tower module; this loader is for Gemma 3 "
                        f"vision-language models such as MedGemma")
    # the outermost module of each kind: a projector nested in another projector is already covered
    return sorted(p for p in paths if not any(p != q and p.startswith(q + ".") for q in paths))


def quantization_config(kind: str, dtype: torch.dtype, skip_modules):
    """NF4 4-bit weights with double quantisation (bitsandbytes), or None for full precision.
    `skip_modules` are the module paths kept in `dtype`: pass skip_module_paths(config). There is no default,
    because the bare names in NOT_QUANTIZED quantise the vision tower on transformers 5."""
    if kind == "none":
        return None
    from transformers import BitsAndBytesConfig
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=list(skip_modules))


def load_weights(model_id: str, quantization: str, device: torch.device, dtype: torch.dtype, token=None):
    """The model itself through AutoModelForImageTextToText, in 4-bit NF4 or full precision. NF4 keeps
    the vision tower, projector and output head out of 4-bit by their real module paths. bitsandbytes
    loads 4-bit on a CPU too, which is how the tests check layer by layer what is quantised."""
    from transformers import AutoConfig, AutoModelForImageTextToText
    quantization_cfg = None
    if quantization == "nf4":
        config = AutoConfig.from_pretrained(model_id, token=token)
        quantization_cfg = quantization_config(quantization, dtype, skip_module_paths(config))
    return AutoModelForImageTextToText.from_pretrained(
        model_id, token=token, dtype=dtype, quantization_config=quantization_cfg,
        device_map={"": device.index or 0} if device.type == "cuda" else None)


@dataclass(frozen=True)
class VlmSession:
    """A loaded VLM and what its records name: `pair` is load_vlm's (model, processor)."""
    pair: tuple
    model_id: str
    quantization: str


def load_vlm(model_id: str, quantization: str, device: torch.device):
    """(model, processor) through AutoModelForImageTextToText + AutoProcessor. Every failure to get a
    usable model becomes one UserError line that says why and what to do."""
    from transformers import AutoProcessor
    if quantization == "nf4" and device.type != "cuda":
        raise UserError("4-bit NF4 (bitsandbytes) needs a CUDA GPU and none is in use; run on a GPU "
                        "(Colab T4), pass --quantization none (full precision, slow), or --vlm none")
    dtype = compute_dtype(device)
    token = os.environ.get("HF_TOKEN") or None
    try:
        processor = AutoProcessor.from_pretrained(model_id, token=token)
        model = load_weights(model_id, quantization, device, dtype, token)
    except UserError:
        raise
    except Exception as err:  # hub, auth, cache and format errors all end here; see explain_load_error
        raise UserError(explain_load_error(model_id, err)) from None
    check_chat_format(processor, model_id)
    if device.type != "cuda":
        model = model.to(device)
    processor.tokenizer.padding_side = "left"  # batched generation continues every row at its end
    return model.eval(), processor


def check_chat_format(processor, model_id: str = "the model"):
    """Render a probe conversation with the processor's own chat template and refuse one that would
    drop the system text, lose or repeat the image, or add no generation prompt: the prompts here rely
    on all three. Gemma 3's template folds the system text into the first user turn; that passes."""
    probe = [{"role": "system", "content": [{"type": "text", "text": "SYSTEM-PROBE"}]},
             {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "USER-PROBE"}]}]
    try:
        bare = processor.apply_chat_template(probe, add_generation_prompt=False, tokenize=False)
        text = processor.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
    except Exception as err:  # no template, or one that rejects a system turn
        raise UserError(f"the chat template of {model_id} cannot render a system + image + text conversation "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    marker = getattr(processor, "boi_token", None) or getattr(processor, "image_token", None)
    problems = []
    if "SYSTEM-PROBE" not in text or text.find("SYSTEM-PROBE") > text.find("USER-PROBE"):
        problems.append("drops the system text or puts it after the question")
    if marker and text.count(marker) != 1:
        problems.append(f"places {text.count(marker)} image markers for one image")
    if not (text.startswith(bare) and len(text) > len(bare)):
        problems.append("adds no generation prompt")
    if problems:
        raise UserError(f"the chat template of {model_id} {' and '.join(problems)}; reports would be unreliable")


def explain_load_error(model_id: str, err: Exception) -> str:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    name = type(err).__name__
    licence = f"https://huggingface.co/{model_id}" if "/" in model_id and not os.path.isdir(model_id) else None
    gated_hint = (f"accept the model's licence at {licence} and export HF_TOKEN=<a read token>"
                  if licence else "check the folder holds a saved model and processor")
    text = str(err).lower()
    if isinstance(err, TypeError) and "unexpected keyword" in text:
        import transformers
        return (f"could not load {model_id}: transformers {transformers.__version__} is too old for this code "
                f"({str(err).splitlines()[0][:120]}); pip install -U 'transformers>=4.56'")
    if isinstance(err, GatedRepoError) or "gated" in text or "401" in text or "403" in text:
        return f"{model_id} is gated and this request was not authorised ({name}): {gated_hint}"
    if isinstance(err, RepositoryNotFoundError):
        return f"{model_id} was not found on the hub ({name}); check --model, or {gated_hint}"
    if "offline" in text or "connect" in text or "couldn't" in text or "cannot find" in text or "not found" in text:
        return (f"{model_id} is not in the local cache and the hub cannot be reached ({name}); on a machine with "
                f"network, {gated_hint}, then run again (it is cached after the first download)")
    return f"could not load {model_id} ({name}: {str(err).splitlines()[0][:200]}); {gated_hint}"


def build_messages(strategy: str, image, context: dict | None = None):
    """One conversation in the official chat format: system text, then the instruction and the image, in the
    order of Google's MedGemma quick start (text first, then the image)."""
    if strategy == "zero_shot":
        system = "You are a helpful medical assistant."
        instruction = f"Describe this chest X-ray.\n{REPORT_FORMAT}"
    elif strategy == "clinical_role":
        system = CLINICAL_ROLE
        instruction = f"Read this frontal chest radiograph as you would for a referring pediatrician.\n{REPORT_FORMAT}"
    elif strategy == "context_aware":
        if not context:
            raise ValueError("context_aware needs the classifier context")
        system = CLINICAL_ROLE
        instruction = ("Read this frontal chest radiograph. Context from other tools, which can be wrong:\n"
                       f"{context_lines(context)}\nUse the image first; say where you agree or disagree with "
                       f"the tools.\n{REPORT_FORMAT}")
    else:
        raise ValueError(f"unknown prompt strategy {strategy!r}; choose from {STRATEGIES}")
    return [{"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "text", "text": instruction}, {"type": "image", "image": image}]}]


def context_lines(context: dict) -> str:
    lines = [f"- A ResNet-18 classifier gives P(pneumonia) = {context['probability']:.2f} "
             f"(decision at {context['threshold']:.2f}: {context['prediction']})."]
    if context.get("region"):
        lines.append(f"- Its {SHIPPED_NAME} evidence lies in the {context['region']}.")
    if context.get("neighbours"):
        labels = [n["label"] for n in context["neighbours"]]
        lines.append(f"- Of the {len(labels)} most similar confirmed archive cases, "
                     f"{labels.count('pneumonia')} had pneumonia and {labels.count('normal')} were normal.")
    return "\n".join(lines)


class NonFiniteWatch:
    """A logits processor that only records which rows ever had a NaN or +inf score: the memory of
    one boolean per row, where output_scores would keep float32 scores over the whole vocabulary (262k
    tokens for Gemma 3) at every step, about 2 GiB at batch 8 and 300 new tokens."""

    def __init__(self, rows: int):
        self.rows = torch.zeros(rows, dtype=torch.bool)

    def __call__(self, input_ids, scores):
        # -inf is how other processors mask tokens out; NaN and +inf only come from broken arithmetic
        self.rows |= (torch.isnan(scores) | torch.isposinf(scores)).any(dim=-1).cpu()
        return scores


def chat_inputs(processor, conversations):
    """The batch as the processor builds it from the chat template. Padding goes where the processor
    takes it: `processor_kwargs` in newer transformers (5.x warns about loose keywords on every batch),
    a plain keyword in older ones."""
    import inspect
    options = {"padding": True}
    if "processor_kwargs" in inspect.signature(processor.apply_chat_template).parameters:
        options = {"processor_kwargs": options}
    return processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                         return_dict=True, return_tensors="pt", **options)


@torch.inference_mode()
def generate(model, processor, conversations, max_new_tokens=300):
    """Greedy generation for a batch of conversations. Returns one dict per conversation: text,
    new_tokens, degenerate (empty or NaN: marked, never passed on as a report), and batch timing."""
    from transformers import LogitsProcessorList
    inputs = chat_inputs(processor, conversations).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype if model.dtype != torch.float16 else torch.float32)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    watch = NonFiniteWatch(len(conversations))
    start = time.perf_counter()
    sequences = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                               logits_processor=LogitsProcessorList([watch]))
    seconds = time.perf_counter() - start
    prompt_len = inputs["input_ids"].shape[1]
    new_tokens = sequences[:, prompt_len:]
    pad_id = processor.tokenizer.pad_token_id
    results = []
    for row, tokens in enumerate(new_tokens):
        text = processor.decode(tokens, skip_special_tokens=True).strip()
        count = int((tokens != pad_id).sum())
        reason = "nan" if watch.rows[row] else ("empty" if not text else None)
        results.append({"text": text, "new_tokens": count, "degenerate": reason})
    total = sum(r["new_tokens"] for r in results)
    batch = {"seconds": round(seconds, 3), "tokens_per_second": round(total / seconds, 2) if seconds else None,
             "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if torch.cuda.is_available() else None}
    return [{**r, **batch} for r in results]


def release_gpu_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def report_body(text: str) -> str:
    """The report up to its last `Label:` line (the model's own label and anything after it dropped)."""
    found = list(LABEL_LINE.finditer(text or ""))
    return ((text or "")[:found[-1].start()] if found else (text or "")).rstrip()


@torch.inference_mode()
def forced_choice(model, processor, conversations, reports, labels=LABELS):
    """The label the model itself gives each report: for every (conversation, report), the log-probability
    of each label word as the continuation of the prompt, the report (up to its own Label line) and
    "Label:", summed over the word's tokens and normalised over the candidates alone. One forward pass a
    report, its candidates as the rows of one batch, no sampling. Returns one dict a report: label,
    probabilities and log_probabilities per candidate, or label None with the reason when a score is not
    finite."""
    tokenizer = processor.tokenizer
    candidates = [tokenizer(" " + label, add_special_tokens=False)["input_ids"] for label in labels]
    keep = max(len(c) for c in candidates) + 1
    results = []
    for conversation, report in zip(conversations, reports):
        prompt = chat_inputs(processor, [conversation])
        tail = tokenizer(report_body(report) + "\nLabel:", add_special_tokens=False)["input_ids"]
        stem = prompt["input_ids"][0].tolist() + tail
        rows = [stem + c for c in candidates]
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        inputs = {"input_ids": ids, "attention_mask": mask,
                  "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}  # left padding: each row counts from 0
        if "token_type_ids" in prompt:
            types = prompt["token_type_ids"][0].tolist() + [0] * (len(tail) + keep)
            inputs["token_type_ids"] = torch.tensor([[0] * (width - len(r)) + types[:len(r)] for r in rows])
        if "pixel_values" in prompt:
            pixels = prompt["pixel_values"].to(model.dtype if model.dtype != torch.float16 else torch.float32)
            inputs["pixel_values"] = pixels.repeat_interleave(len(rows), dim=0)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        logits = model(**inputs, logits_to_keep=keep).logits.float()  # the last `keep` positions of every row
        log_probs = torch.log_softmax(logits, dim=-1)
        # the row's candidate is its last len(c) tokens; position -1-len(c)+m predicts token m of it
        scores = [sum(float(log_probs[row, keep - len(c) - 1 + m, token]) for m, token in enumerate(c))
                  for row, c in enumerate(candidates)]
        results.append(choice(labels, scores))
    return results


def choice(labels, scores) -> dict:
    """The forced choice from one log-probability a label: the candidates' own softmax, and the best one."""
    if not all(torch.isfinite(torch.tensor(scores))):
        return {"label": None, "probabilities": None, "log_probabilities": None, "reason": "non-finite score"}
    probs = torch.softmax(torch.tensor(scores, dtype=torch.float64), dim=0).tolist()
    return {"label": labels[int(torch.tensor(scores).argmax())],
            "probabilities": {label: round(p, 4) for label, p in zip(labels, probs)},
            "log_probabilities": {label: round(v, 4) for label, v in zip(labels, scores)}}
