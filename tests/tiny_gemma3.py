"""A tiny, randomly initialised Gemma 3 (MedGemma's architecture) and its processor, saved to a folder
so the code that loads MedGemma can load it offline."""
from pathlib import Path

WORDS = ("findings impression normal pneumonia uncertain lungs are clear no consolidation right left lower upper lobe "
         "opacity heart size the of and with a is in x-ray chest radiograph describe this report read "
         "short : . , - ' ( ) = 0 1 2 3 4 5 6 7 8 9 you expert pediatric radiologist helpful medical assistant "
         "system user model").split()
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_image>", "<end_of_image>", "<image_soft_token>",
           "<start_of_turn>", "<end_of_turn>"]
# Gemma 3's prompt format as Google documents it (ai.google.dev/gemma/docs/formatting), written here
# as a Jinja template: <bos>; turns "<start_of_turn>user|model\n ... <end_of_turn>\n"; no system role:
# the system text opens the first user turn, followed by a blank line; the generation prompt is
# "<start_of_turn>model\n"; an image item becomes <start_of_image>, which the processor expands.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set system = messages[0] if messages and messages[0]['role'] == 'system' else none %}"
    "{% for message in (messages[1:] if system else messages) %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if loop.first and system %}{{ system['content'][0]['text'] if system['content'] is not string "
    "else system['content'] }}\n\n{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] | trim }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<start_of_image>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def save_tiny_gemma3(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        PreTrainedTokenizerFast,
        SiglipVisionConfig,
    )

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=SPECIAL[4:],
        extra_special_tokens={"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
                              "eoi_token": "<end_of_image>"})
    tokenizer.add_tokens(SPECIAL[4:], special_tokens=True)  # the turn markers too, split out of the text as in Gemma's
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessor(size={"height": 16, "width": 16},
                                                                     do_pan_and_scan=False),
                                tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, image_seq_length=4)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in
           (("pad", "<pad>"), ("eos", "<eos>"), ("bos", "<bos>"), ("boi", "<start_of_image>"),
            ("eoi", "<end_of_image>"), ("image", "<image_soft_token>"))}
    text = Gemma3TextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                            sliding_window=64, pad_token_id=ids["pad"], eos_token_id=ids["eos"], bos_token_id=ids["bos"])
    vision = SiglipVisionConfig(image_size=16, patch_size=4, hidden_size=32, intermediate_size=64,
                                num_hidden_layers=1, num_attention_heads=2, vision_use_head=False)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=ids["boi"],
                          eoi_token_index=ids["eoi"], image_token_index=ids["image"], pad_token_id=ids["pad"],
                          eos_token_id=ids["eos"], bos_token_id=ids["bos"])
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    model.generation_config.pad_token_id = ids["pad"]
    model.generation_config.eos_token_id = ids["eos"]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
