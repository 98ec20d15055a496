import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, error_line, run_cli
from pneumo.data import SIZES, data_file
from pneumo.impression import LABELS
from pneumo.runtime import UserError
from pneumo.vlm import build_messages, check_chat_format, compute_dtype, generate, load_vlm, quantization_config
from task2 import generate_reports
from tiny_gemma3 import save_tiny_gemma3


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    return save_tiny_gemma3(tmp_path_factory.mktemp("tiny_gemma3"))


def test_quantisation_config_is_nf4_with_double_quantisation():
    config = quantization_config("nf4", torch.float32, ["model.vision_tower"])
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.float32
    assert quantization_config("none", torch.float32, []) is None
    assert compute_dtype(torch.device("cpu")) == torch.float32


def test_nf4_without_cuda_says_why(tiny_vlm):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="needs a CUDA GPU"):
        load_vlm(str(tiny_vlm), "nf4", torch.device("cpu"))


def test_gated_model_without_network_points_at_licence_and_token(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(UserError) as err:
        load_vlm("example-org/medgemma-that-does-not-exist", "none", torch.device("cpu"))
    message = str(err.value)
    assert "https://huggingface.co/example-org/medgemma-that-does-not-exist" in message and "HF_TOKEN" in message
    assert "\n" not in message


def test_a_too_old_transformers_is_named_not_mistaken_for_a_licence_problem():
    from pneumo.vlm import explain_load_error
    err = TypeError("Gemma3ForConditionalGeneration.__init__() got an unexpected keyword argument 'dtype'")
    message = explain_load_error("google/medgemma-4b-it", err)
    assert "is too old for this code" in message and "transformers>=4.56" in message and "licence" not in message


def test_each_prompt_strategy_carries_what_it_should():
    context = {"probability": 0.91, "threshold": 0.62, "prediction": "pneumonia", "region": "right lung, lower zone",
               "neighbours": [{"label": "pneumonia"}] * 4 + [{"label": "normal"}]}
    zero = build_messages("zero_shot", "IMG")
    role = build_messages("clinical_role", "IMG")
    aware = build_messages("context_aware", "IMG", context)
    for messages in (zero, role, aware):
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[1]["content"][1] == {"type": "image", "image": "IMG"}  # the quick start's order: text, image
        assert messages[1]["content"][0]["text"].endswith("Label: <one word: normal, pneumonia or uncertain>")
    assert "radiologist" not in zero[0]["content"][0]["text"] and "radiologist" in role[0]["content"][0]["text"]
    text = aware[1]["content"][0]["text"]
    assert "0.91" in text and "right lung, lower zone" in text and "4 had pneumonia and 1 were normal" in text
    assert "0.91" not in role[1]["content"][0]["text"]


def test_tiny_gemma3_loads_through_the_medgemma_path_and_generates_in_batches(tiny_vlm):
    """Batched generation must give each conversation the text it gets alone (left padding, attention
    mask and image placement right), with the prompt sliced off and no special token in the text."""
    from tiny_gemma3 import SPECIAL, WORDS
    model, processor = load_vlm(str(tiny_vlm), "none", torch.device("cpu"))
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    # no end-of-text or padding token can be drawn, so every row runs to max_new_tokens
    model.generation_config.suppress_tokens = processor.tokenizer.convert_tokens_to_ids(SPECIAL)
    images = [Image.new("RGB", (28, 28), 128), Image.new("RGB", (300, 200), 30)]
    conversations = [build_messages("zero_shot", images[0]),  # a short and a long prompt: one row is padded
                     build_messages("context_aware", images[1], {"probability": 0.9, "threshold": 0.5,
                                                                 "prediction": "pneumonia", "region": None})]
    together = generate(model, processor, conversations, max_new_tokens=5)
    alone = [generate(model, processor, [c], max_new_tokens=5)[0] for c in conversations]
    assert [o["text"] for o in together] == [o["text"] for o in alone]
    for o in together:
        assert o["new_tokens"] == 5 and o["degenerate"] is None
        assert len(o["text"].split()) == 5 and set(o["text"].split()) <= set(WORDS)


def test_empty_or_nan_generations_are_marked(tiny_vlm, monkeypatch):
    model, processor = load_vlm(str(tiny_vlm), "none", torch.device("cpu"))
    conversations = [build_messages("zero_shot", Image.new("RGB", (28, 28)))]
    assert generate(model, processor, conversations, max_new_tokens=3)[0]["degenerate"] in (None, "empty")
    hook = model.lm_head.register_forward_hook(lambda module, args, out: torch.full_like(out, float("nan")))
    assert generate(model, processor, conversations, max_new_tokens=3)[0]["degenerate"] == "nan"
    hook.remove()
    real_generate = model.generate

    def pad_only(**kwargs):
        sequences = real_generate(**kwargs)
        sequences[:, kwargs["input_ids"].shape[1]:] = processor.tokenizer.pad_token_id
        return sequences
    monkeypatch.setattr(model, "generate", pad_only)
    assert generate(model, processor, conversations, max_new_tokens=3)[0]["degenerate"] == "empty"


def test_generation_keeps_no_per_step_scores_and_no_processor_warning(tiny_vlm, monkeypatch, caplog):
    """output_scores would hold float32 scores over the vocabulary at every step (~2 GiB at batch 8 on
    MedGemma); the NaN check must come from a flag, and the padding option must go where the processor
    expects it (transformers 5 warns on every batch otherwise)."""
    model, processor = load_vlm(str(tiny_vlm), "none", torch.device("cpu"))
    seen = {}
    real_generate = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return real_generate(**kwargs)
    monkeypatch.setattr(model, "generate", spy)
    with caplog.at_level("WARNING"):
        generate(model, processor, [build_messages("zero_shot", Image.new("RGB", (28, 28)))] * 2, max_new_tokens=2)
    assert not seen.get("output_scores") and not seen.get("return_dict_in_generate")
    assert not [r for r in caplog.records if "processor_kwargs" in r.getMessage()]


TRANSFORMERS4 = REPO / ".venv" / "transformers4"  # transformers 4.56 beside .venv's 5.x, made by scripts/test.sh


def assert_only_the_language_model_is_4bit(found):
    layers = found["layers"]
    language = [n for n in layers if ".language_model." in n]
    vision = [n for n in layers if ".vision_tower." in n or ".multi_modal_projector." in n]
    assert language and vision
    assert {layers[n] for n in language} == {"Linear4bit"}, found["transformers"]
    assert {layers[n] for n in vision} == {"Linear"}, (found["transformers"], [n for n in vision if layers[n] != "Linear"])
    assert layers["lm_head"] == "Linear"


def test_nf4_on_the_installed_transformers_quantises_the_language_model_alone(tiny_vlm):
    """A real 4-bit load (bitsandbytes runs NF4 on the CPU), read back layer by layer."""
    from quantised_layers import quantised_layers
    assert_only_the_language_model_is_4bit(quantised_layers(tiny_vlm, "project"))


def test_nf4_on_transformers_4_56_quantises_the_language_model_alone(tiny_vlm):
    """The oldest transformers the requirements admit, in a second environment (an overlay of
    transformers 4.56 and its hub/tokenizers on .venv, made by scripts/test.sh), in a subprocess."""
    if not TRANSFORMERS4.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{TRANSFORMERS4} is missing: scripts/test.sh makes it")
        pytest.skip(f"{TRANSFORMERS4} is missing: bash scripts/test.sh makes it")
    done = subprocess.run([sys.executable, str(REPO / "tests" / "quantised_layers.py"), str(tiny_vlm)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(TRANSFORMERS4), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["transformers"].startswith("4.56.")
    assert_only_the_language_model_is_4bit(found)


def test_bare_module_names_are_not_enough_on_transformers_5(tiny_vlm):
    """Why the skip list holds real module paths: transformers 5 matches it against the start of a
    path, so the bare `vision_tower` (the rule before) let the tower be quantised. This also shows that
    the layer check above can fail."""
    import transformers

    from quantised_layers import quantised_layers
    if int(transformers.__version__.split(".")[0]) < 5:
        pytest.skip("transformers 4 matches bare names anywhere in a path")
    layers = quantised_layers(tiny_vlm, "bare")["layers"]
    assert {layers[n] for n in layers if ".vision_tower." in n} == {"Linear4bit"}


def test_skip_paths_are_read_off_the_model_and_refuse_a_model_without_a_vision_tower(tiny_vlm):
    from transformers import AutoConfig

    from pneumo.vlm import skip_module_paths
    assert skip_module_paths(AutoConfig.from_pretrained(tiny_vlm)) == ["lm_head", "model.multi_modal_projector",
                                                                     "model.vision_tower"]
    with pytest.raises(UserError, match="no vision_tower"):
        skip_module_paths(torch.nn.Linear(2, 2))


def test_reports_with_the_tiny_vlm_for_every_strategy(tiny_vlm, trained_checkpoint, synthetic_root, tmp_path):
    out = tmp_path / "task2"
    records = generate_reports.main(generate_reports.parse_args([
        "--checkpoint", str(trained_checkpoint), "--data_root", str(synthetic_root), "--indices", "0", "1", "2",
        "--model", str(tiny_vlm), "--quantization", "none", "--prompt", "all", "--batch_size", "2",
        "--max_new_tokens", "4", "--out", str(out), "--device", "cpu", "--index", str(tmp_path / "none.faiss"),
        "--vlm_size", "28"]))
    assert len(records) == 9 and {r["strategy"] for r in records} == {"zero_shot", "clinical_role", "context_aware"}
    lines = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    assert lines == records
    for r in lines:
        assert r["model"] == str(tiny_vlm) and r["impression"] in LABELS and r["label_source"] == "forced_choice"
        assert r["impression"] == r["forced_choice"]["label"] == r["labels"]["forced_choice"]
        assert list(r["forced_choice"]["probabilities"]) == list(LABELS)
        assert abs(sum(r["forced_choice"]["probabilities"].values()) - 1) < 1e-3
        assert r["labels"]["free_text"] in LABELS and r["labels"]["label_line"] in (None, *LABELS)
        assert isinstance(r["audit"], dict)
        assert 0 <= r["classifier"]["probability"] <= 1 and r["classifier"]["prediction"] in ("normal", "pneumonia")
        assert r["vlm_input"] == {"source": "medmnist_28px", "width": 28, "height": 28, "mode": "RGB", "processor_size": {"height": 16, "width": 16}}
        assert r["tokens_per_second"] is not None
    aware = next(r for r in lines if r["strategy"] == "context_aware")
    assert f"{aware['classifier']['probability']:.2f}" in aware["prompt"][1]["text"]
    report = (out / "test_0.md").read_text()
    assert "P(pneumonia)" in report and report.count("## Narrative") == 3


def assert_forced_choice_is_the_candidates_own_softmax(found):
    """What forced_choice gives equals a plain unbatched forward pass: each candidate's summed token
    log-probabilities, normalised over the candidates alone; batched or alone, the same."""
    import math

    def close(a, b, tol=2e-3):
        return len(a) == len(b) and all(abs(x - y) < tol for x, y in zip(a, b))
    for got, alone, ref in zip(found["batch"], found["alone"], found["reference"]):
        assert list(got["probabilities"]) == list(LABELS) and abs(sum(got["probabilities"].values()) - 1) < 1e-3
        assert close(list(got["log_probabilities"].values()), ref), (got, ref)
        assert close(list(got["probabilities"].values()), list(alone["probabilities"].values()))
        total = math.log(sum(math.exp(v) for v in ref))
        assert close(list(got["probabilities"].values()), [math.exp(v - total) for v in ref])
        assert got["label"] == LABELS[ref.index(max(ref))]
    for got, ref in zip(found["longer"], found["reference_longer"]):  # candidates of 1, 3 and 2 tokens
        assert close(list(got["log_probabilities"].values()), ref), (got, ref)
    # the report's text is part of what is scored: two reports, two sets of scores
    assert not close(list(found["batch"][0]["log_probabilities"].values()),
                     list(found["batch"][1]["log_probabilities"].values()), 1e-4)


def test_forced_choice_is_the_models_own_score_of_the_three_labels(tiny_vlm):
    from forced_choice_probe import probe
    assert_forced_choice_is_the_candidates_own_softmax(probe(tiny_vlm))


def test_forced_choice_on_transformers_4_56(tmp_path):
    """The same checks in the second environment, on a tiny Gemma 3 saved there (5.x's tokenizer files do
    not load on 4.56)."""
    if not TRANSFORMERS4.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{TRANSFORMERS4} is missing: scripts/test.sh makes it")
        pytest.skip(f"{TRANSFORMERS4} is missing: bash scripts/test.sh makes it")
    done = subprocess.run([sys.executable, str(REPO / "tests" / "forced_choice_probe.py"), str(tmp_path / "tiny"), "--build"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(TRANSFORMERS4), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert found["transformers"].startswith("4.56.")
    assert_forced_choice_is_the_candidates_own_softmax(found)


def test_forced_choice_is_normalised_over_the_candidates_alone(tiny_vlm):
    """A word that is no candidate, made far likelier, moves every candidate's log-probability and leaves
    their probabilities as they were; the report's text moves them."""
    from pneumo.vlm import forced_choice
    model, processor = load_vlm(str(tiny_vlm), "none", torch.device("cpu"))
    conversation = [build_messages("zero_shot", Image.new("RGB", (28, 28), 90))]
    report = ["Findings: lungs are clear"]
    before = forced_choice(model, processor, conversation, report)[0]
    other = processor.tokenizer.convert_tokens_to_ids("heart")
    hook = model.lm_head.register_forward_hook(lambda module, args, out: out.index_add(
        -1, torch.tensor([other]), torch.full((*out.shape[:-1], 1), 8.0)))
    try:
        boosted = forced_choice(model, processor, conversation, report)[0]
    finally:
        hook.remove()
    assert all(boosted["log_probabilities"][k] < before["log_probabilities"][k] - 1 for k in LABELS)
    assert all(abs(boosted["probabilities"][k] - before["probabilities"][k]) < 2e-3 for k in LABELS)
    changed = forced_choice(model, processor, conversation, ["Findings: right lower lobe consolidation"])[0]
    assert changed["probabilities"] != before["probabilities"]


def test_evaluate_puts_the_three_label_sources_side_by_side(tiny_vlm, trained_checkpoint, synthetic_root, tmp_path):
    """--evaluate with the tiny Gemma 3: the comparison uses the forced choice, and each source's presence,
    accuracy and agreement in evaluation.json are what the records say; the Markdown is rendered from it."""
    out = tmp_path / "e"
    generate_reports.main(generate_reports.parse_args([
        "--checkpoint", str(trained_checkpoint), "--data_root", str(synthetic_root), "--evaluate", "--n", "4",
        "--model", str(tiny_vlm), "--quantization", "none", "--prompt", "all", "--batch_size", "2",
        "--max_new_tokens", "4", "--out", str(out), "--device", "cpu", "--index", str(tmp_path / "none.faiss"),
        "--vlm_size", "28"]))
    records = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    result = json.loads((out / "evaluation.json").read_text())
    for row in result["rows"][:3]:
        mine = [r for r in records if r["strategy"] == row["strategy"]]
        assert row["accuracy"] == np.mean([r["forced_choice"]["label"] == r["label"] for r in mine])
        assert row["forced_choice_present"] == 1.0
        assert row["free_text_agrees"] == np.mean([r["labels"]["free_text"] == r["forced_choice"]["label"] for r in mine])
        disagreeing = [r["image"] for r in mine if r["labels"]["free_text"] != r["forced_choice"]["label"]]
        assert sorted(d["image"] for d in result["disagreements"] if d["strategy"] == row["strategy"]) == sorted(disagreeing)
    md = (out / "evaluation.md").read_text()
    assert md == generate_reports.render_evaluation(result)
    assert "## Three label sources, side by side" in md and "forced choice" in md


def test_no_vlm_path_writes_structured_reports_and_says_so(trained_checkpoint, synthetic_root, tmp_path):
    result = run_cli(generate_reports, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root,
                     "--vlm", "none", "--indices", "4", "--out", tmp_path / "r", "--index", tmp_path / "none.faiss")
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "r" / "reports.jsonl").read_text())
    assert record["narrative"] is None and "no narrative was generated" in record["note"]
    assert "No narrative" in (tmp_path / "r" / "test_4.md").read_text()


def test_without_a_gpu_the_default_run_writes_the_rest_and_says_why_in_one_line(trained_checkpoint, synthetic_root,
                                                                                 tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = run_cli(generate_reports, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root,
                     "--indices", "4", "--out", tmp_path / "r", "--index", tmp_path / "none.faiss")
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: no narrative")]
    assert len(notes) == 1 and "needs a CUDA GPU" in notes[0]
    record = json.loads((tmp_path / "r" / "reports.jsonl").read_text())
    assert record["narrative"] is None and record["classifier"]["prediction"] in ("normal", "pneumonia")


def test_auto_falls_back_with_the_reason_and_on_refuses(trained_checkpoint, synthetic_root, tmp_path):
    common = ["--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--indices", "4",
              "--model", "example-org/not-here", "--quantization", "none", "--index", tmp_path / "none.faiss"]
    auto = run_cli(generate_reports, *common, "--vlm", "auto", "--out", tmp_path / "a")
    assert auto.returncode == 0 and "note: no narrative" in auto.stdout
    on = run_cli(generate_reports, *common, "--vlm", "on", "--out", tmp_path / "b")
    assert on.returncode == 1 and "HF_TOKEN" in error_line(on)
    assert not (tmp_path / "b").exists()


def test_evaluate_without_a_vlm_stops_in_one_line_and_writes_nothing(trained_checkpoint, synthetic_root, tmp_path):
    result = run_cli(generate_reports, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--evaluate",
                     "--n", "4", "--model", "example-org/not-here", "--quantization", "none", "--out", tmp_path / "e",
                     "--index", tmp_path / "none.faiss")
    assert result.returncode == 1 and "--evaluate scores the VLM's narratives" in error_line(result)
    assert not (tmp_path / "e").exists()


def test_no_bare_nan_in_any_json_the_project_writes(tmp_path):
    import numpy as np

    from pneumo.atomic import write_json_atomic, write_jsonl_atomic
    write_json_atomic(tmp_path / "a.json", {"specificity": float("nan"), "n": np.int64(3), "x": [np.float32(0.5)]})
    write_jsonl_atomic(tmp_path / "b.jsonl", [{"auc": float("inf")}])
    assert json.loads((tmp_path / "a.json").read_text()) == {"specificity": None, "n": 3, "x": [0.5]}
    assert (tmp_path / "b.jsonl").read_text() == '{"auc": null}\n'


def test_user_image_files_become_cases_named_after_the_file(tmp_path):
    photo = tmp_path / "my film.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(photo)
    cases = generate_reports.gather_cases(generate_reports.parse_args(["--images", str(photo)]), 28)
    assert len(cases) == 1 and cases[0].label is None and cases[0].key is None
    assert cases[0].small.shape == (28, 28) and cases[0].vlm_image.size == (200, 300)
    assert cases[0].slug == "my_film" and cases[0].name == "my film.png"  # the name alone: the folder is outside the working one


def test_evaluate_sample_is_seeded_distinct_and_labelled(synthetic_root):
    def sample(seed):
        args = generate_reports.parse_args(["--evaluate", "--n", "5", "--seed", str(seed), "--data_root", str(synthetic_root)])
        return [(c.key, c.label) for c in generate_reports.gather_cases(args, 28)]
    first = sample(0)
    assert first == sample(0) and first != sample(1)
    assert len(set(first)) == 5 and all(key[0] == "test" and label in ("normal", "pneumonia") for key, label in first)


def test_prompts_render_in_gemma_3s_documented_format(tiny_vlm):
    """Google's documented Gemma format: <bos>, no system turn (the system text opens the first user
    turn, then a blank line), the image where the user put it, turns closed by <end_of_turn>, and the
    generation prompt <start_of_turn>model. MedGemma's own template is checked at load time."""
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    messages = build_messages("clinical_role", "IMG")
    system, instruction = messages[0]["content"][0]["text"], messages[1]["content"][0]["text"]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == (f"<bos><start_of_turn>user\n{system}\n\n{instruction}<start_of_image><end_of_turn>\n"
                        f"<start_of_turn>model\n")
    ids = processor.apply_chat_template([build_messages("zero_shot", Image.new("RGB", (28, 28)))],
                                        add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"][0]
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    assert tokens.count("<image_soft_token>") == 4 and tokens.count("<start_of_image>") == 1  # image_seq_length
    assert tokens[-2:] == ["<start_of_turn>", "model"]


def test_a_chat_template_that_drops_the_system_text_or_the_image_is_refused(tiny_vlm, tmp_path):
    from transformers import AutoProcessor
    processor = AutoProcessor.from_pretrained(tiny_vlm)
    check_chat_format(processor)  # the documented format passes
    processor.chat_template = ("{% for m in messages if m['role'] == 'user' %}<start_of_turn>user\n"
                               "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}"
                               "<end_of_turn>\n{% endfor %}")
    with pytest.raises(UserError, match="drops the system text.*image markers.*no generation prompt"):
        check_chat_format(processor)
    import shutil  # and load_vlm runs the check before any image is read
    broken = shutil.copytree(tiny_vlm, tmp_path / "broken")
    processor.save_pretrained(broken)
    with pytest.raises(UserError, match=f"the chat template of {broken} drops the system text"):
        load_vlm(str(broken), "none", torch.device("cpu"))


def write_multisize(root, n=12, seed=0):
    """The same synthetic films at every MedMNIST+ size: drawn at 224 px, downsampled as MedMNIST+ was."""
    rng = np.random.default_rng(seed)
    films = {split: (rng.integers(0, 255, (n, 8, 8)).astype(np.uint8), rng.integers(0, 2, n)) for split in ("train", "val", "test")}
    for size in SIZES:
        arrays = {}
        for split, (coarse, labels) in films.items():
            big = [Image.fromarray(c).resize((224, 224), Image.Resampling.BICUBIC) for c in coarse]
            arrays[f"{split}_images"] = np.stack([np.asarray(b.resize((size, size), Image.Resampling.BICUBIC)) for b in big])
            arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
        np.savez_compressed(data_file(root, size), **arrays)
    return root


def test_the_vlm_gets_the_same_case_at_every_medmnist_size(tmp_path):
    root = write_multisize(tmp_path)
    small = {}
    for size in SIZES:
        args = generate_reports.parse_args(["--data_root", str(root), "--indices", "3", "7", "--vlm_size", str(size)])
        cases = generate_reports.gather_cases(args, 28)
        small[size] = [c.small for c in cases]
        generate_reports.attach_vlm_images(args, cases)
        for case in cases:
            assert case.vlm_image.size == (size, size) and case.vlm_source == f"medmnist_{size}px"
            seen = np.asarray(case.vlm_image.convert("L").resize((28, 28), Image.Resampling.BICUBIC), dtype=float)
            errors = [np.abs(seen - other).mean() for other in np.load(data_file(root, 28))["test_images"]]
            assert int(np.argmin(errors)) == case.key[1]  # the nearest 28-px film is the one asked for
    assert all(np.array_equal(a, b) for a, b in zip(small[28], small[224]))  # the classifier keeps its own size


def test_without_the_large_file_the_vlm_falls_back_with_one_warning(synthetic_root, monkeypatch, capsys):
    import pneumo.data
    from pneumo.runtime import UserError as Missing

    def offline(root, size=28):  # what a machine without the network meets, without touching it
        if not data_file(root, size).exists():
            raise Missing(f"{data_file(root, size)} is missing and the download failed (ConnectionError); put it there")
        return data_file(root, size)
    monkeypatch.setattr(pneumo.data, "ensure_data_file", offline)
    args = generate_reports.parse_args(["--data_root", str(synthetic_root), "--indices", "1"])
    assert args.vlm_size == 224
    cases = generate_reports.gather_cases(args, 28)
    generate_reports.attach_vlm_images(args, cases)
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "28-px" in warnings[0] and "pneumoniamnist_224.npz is missing" in warnings[0]
    assert cases[0].vlm_source == "medmnist_28px" and cases[0].vlm_image.size == (28, 28)


def test_a_large_file_of_another_release_is_refused(tmp_path):
    root = write_multisize(tmp_path)
    with np.load(data_file(root, 64)) as f:
        arrays = dict(f)
    arrays["test_labels"] = 1 - arrays["test_labels"]
    np.savez_compressed(data_file(root, 64), **arrays)
    args = generate_reports.parse_args(["--data_root", str(root), "--indices", "3", "--vlm_size", "64"])
    cases = generate_reports.gather_cases(args, 28)
    with pytest.raises(UserError, match="disagrees with the classifier's on the label of test #3"):
        generate_reports.attach_vlm_images(args, cases)


def test_evaluate_reports_flag_rates_and_lists_the_flagged_outputs(tmp_path):
    args = generate_reports.parse_args(["--evaluate", "--n", "4", "--prompt", "all", "--out", str(tmp_path)])
    clf = {"probability": 0.95, "prediction": "pneumonia", "region": "right lung, lower zone"}

    def rec(image, label, strategy, impression, flags, source="label_line"):
        labels = {"forced_choice": impression, "label_line": impression if source == "label_line" else None,
                  "free_text": impression}
        return {"image": image, "label": label, "strategy": strategy, "impression": impression, "classifier": clf,
                "label_source": "forced_choice", "labels": labels, "forced_choice": {"label": impression},
                "audit": flags, "degenerate": None}
    records = [rec("test #1", "pneumonia", "zero_shot", "normal", {"contradicts_classifier": "x"}, "fallback"),
               rec("test #2", "pneumonia", "zero_shot", "pneumonia", {}),
               rec("test #1", "pneumonia", "clinical_role", "pneumonia", {"unasked_findings": "nasogastric tube"}),
               rec("test #2", "pneumonia", "clinical_role", "uncertain", {})]
    rows = {r["strategy"]: r for r in generate_reports.evaluate(args, records, ["zero_shot", "clinical_role"])}
    assert rows["zero_shot"]["contradicts_classifier_rate"] == 0.5 and rows["zero_shot"]["label_line_present"] == 0.5
    assert rows["clinical_role"]["unasked_findings_rate"] == 0.5 and rows["clinical_role"]["uncertain_rate"] == 0.5
    assert rows["classifier (reference)"]["accuracy"] == 1.0 and rows["classifier (reference)"]["label_line_present"] is None
    md = (tmp_path / "evaluation.md").read_text()
    assert "## Flagged outputs (2 of 4)" in md and "| test #1 | pneumonia | clinical_role | pneumonia | unasked_findings: nasogastric tube |" in md
    assert "NaN" not in (tmp_path / "evaluation.json").read_text()


def test_evaluate_runs_end_to_end_with_the_tiny_vlm(tiny_vlm, trained_checkpoint, synthetic_root, tmp_path):
    result = run_cli(generate_reports, "--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--evaluate",
                     "--n", "3", "--model", tiny_vlm, "--quantization", "none", "--max_new_tokens", "3", "--vlm_size", "28",
                     "--device", "cpu", "--out", tmp_path / "e", "--index", tmp_path / "none.faiss")
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "e" / "evaluation.json").read_text())["rows"][0]
    assert table["n"] == 3 and table["label_line_present"] == 0.0  # the random model writes no Label line
    assert table["forced_choice_present"] == 1.0  # the forced choice exists all the same
    assert {f"{flag}_rate" for flag in ("contradicts_classifier", "location_vs_gradcam", "unasked_findings")} <= set(table)


def test_the_viewer_and_generate_reports_give_the_vlm_the_same_film_by_one_rule(tmp_path):
    """pneumo.cases.vlm_picture decides for both: the 224-px film when it agrees, a refusal when the
    large file is of another release (the viewer used to fall back silently), the thumbnail without it."""
    from pneumo.cases import vlm_picture
    root = write_multisize(tmp_path)
    args = generate_reports.parse_args(["--data_root", str(root), "--indices", "3"])
    [case] = generate_reports.gather_cases(args, 28)
    with np.load(data_file(root, 224)) as f:
        images, labels = f["test_images"], f["test_labels"].ravel()
    picture, source = vlm_picture(case, (images, labels, 224))
    assert source == "medmnist_224px" and np.array_equal(np.asarray(picture)[..., 0], images[3])
    assert vlm_picture(case)[1] == "medmnist_28px" and vlm_picture(case)[0].size == (28, 28)
    with pytest.raises(UserError, match="another release|same release"):
        vlm_picture(case, (images, 1 - labels, 224))
