"""Tiny random LVLM folders, built offline, that load through :func:`skylink_model.backbones.load_backbone`.

They are used by the tests and by ``skyrank demo`` (``skyrank make-tiny-model DIR --family ...``): the folder holds
a ``config.json`` + ``model.safetensors`` + a full processor (tokenizer, image processor, video processor, chat
template), exactly as the family's hub checkpoint does (``Qwen/Qwen2-VL-7B-Instruct``,
``Qwen/Qwen2.5-VL-7B-Instruct``, ``Qwen/Qwen3-VL-8B-Instruct``, ``llava-hf/llava-onevision-qwen2-7b-ov-hf``), so
every code path is the real one. The chat templates keep each family's structure: Qwen renders the images where
they stand in the message; LLaVA-OneVision (like the hub's) renders every image before the text.
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# A short template with the structure of the official Qwen2-VL one (system prompt, one
# <|vision_start|><|image_pad|><|vision_end|> per image, generation prompt).
TINY_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "Does the given query image match the following reference image?",
    "Does the given query image match the following reference image? yes",
    "Does the given query image match the following reference image? no",
    "yes no yes no yes no. Yes. No.",
    "You are a helpful assistant. system user assistant",
    "Candidate 1: 7\nCandidate 2: 3\nCandidate 10: 0\nScore each candidate from 0 to 10.",
    "The drone view and the satellite view show the same location.",
]


# LLaVA-OneVision's template (llava-hf/llava-onevision-qwen2-*-ov-hf): all images first, then the text.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\n' + content['text'] }}"
    "{% endfor %}{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava_onevision")


def _tiny_tokenizer(
    vocab_size: int = 320, extra_special: tuple[str, ...] = (), chat_template: str = TINY_CHAT_TEMPLATE
):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIAL_TOKENS + list(extra_special)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 50, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        additional_special_tokens=specials[1:],
    )
    fast.chat_template = chat_template
    for word in ("yes", "no"):
        ids = fast.encode(word, add_special_tokens=False)
        if len(ids) != 1:  # pragma: no cover - depends on the BPE merges
            fast.add_tokens([word])
    return fast


def make_tiny_qwen2_vl(
    out_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_depth: int = 2,
    vision_embed_dim: int = 32,
    initializer_range: float = 0.02,
) -> Path:
    """Write a tiny random Qwen2-VL (about 0.2M parameters) + processor folder and return its path.

    The folder loads with ``AutoModelForImageTextToText`` / ``AutoProcessor`` offline. Image tokens per image:
    56 px → 4, 112 px → 16, 224 px → 64. The vocabulary holds single tokens ``yes`` and ``no`` (value-head init).
    ``initializer_range`` is the std of every weight (transformers' default 0.02 is sized for layers thousands wide:
    at width 64 each layer adds about 0.16x its input, a near-identity network; ``skyrank demo`` trains from 0.08).
    """
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    if hidden_size % 8:
        raise ValueError(f"`hidden_size` must be a multiple of 8, got {hidden_size}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = 4
    head_dim = hidden_size // heads
    half = head_dim // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tok),
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": heads,
            "num_key_value_heads": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": mrope},
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": False,
            "initializer_range": initializer_range,
        },
        vision_config={
            "initializer_range": initializer_range,
            "depth": vision_depth,
            "embed_dim": vision_embed_dim,
            "hidden_size": hidden_size,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=224 * 224)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=TINY_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _qwen_text_config(tok, hidden_size: int, num_layers: int, **extra) -> dict:
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    heads = 4
    half = hidden_size // heads // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    return {
        "vocab_size": len(tok),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": mrope, **extra},
        "bos_token_id": None,
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }


def make_tiny_qwen2_5_vl(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """A tiny random Qwen2.5-VL (windowed vision attention, SwiGLU vision MLP) + processor folder, offline.

    28 px per image token (patch 14 × merge 2), as Qwen2-VL: 56 px → 4 tokens, 112 px → 16.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(tok, hidden_size, num_layers),
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=224 * 224),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=TINY_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_tiny_qwen3_vl(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2) -> Path:
    """A tiny random Qwen3-VL (DeepStack vision features, interleaved M-RoPE) + processor folder, offline.

    32 px per image token (patch 16 × merge 2): 64 px → 4 tokens, 128 px → 16.
    """
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = _qwen_text_config(tok, hidden_size, num_layers, mrope_interleaved=True)
    text["head_dim"] = hidden_size // text["num_attention_heads"]
    config = Qwen3VLConfig(
        text_config=text,
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2, min_pixels=64 * 64, max_pixels=256 * 256,
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tok,
        video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        chat_template=TINY_CHAT_TEMPLATE,
    )  # fmt: skip
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_tiny_llava_onevision(
    out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2
) -> Path:
    """A tiny random LLaVA-OneVision (SigLIP tower, Qwen2 LM, anyres image grid) + processor folder, offline.

    Base resolution 56 px with 14 px patches: 16 features per image (the 7B's is 384 px → 729), plus one newline
    token per image on the multi-image path. The chat template renders every image before the text, as the hub's.
    """
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tiny_tokenizer(extra_special=("<image>", "<video>"), chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE)
    base = 56
    pinpoints = [[base * i, base * j] for i in (1, 2) for j in (1, 2)]
    text = _qwen_text_config(tok, hidden_size, num_layers)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4}
    text["model_type"] = "qwen2"
    config = LlavaOnevisionConfig(
        text_config=text,
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": base,
            "patch_size": 14,
            "vision_use_head": False,
        },
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9",
        image_seq_length=(base // 14) ** 2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size={"height": base, "width": base}, image_grid_pinpoints=pinpoints,
            image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
        ),
        tokenizer=tok,
        video_processor=LlavaOnevisionVideoProcessor(size={"height": base, "width": base}),
        num_image_tokens=(base // 14) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
    )  # fmt: skip
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def make_tiny_model(out_dir: str | Path, family: str = "qwen2_vl", *, seed: int = 0) -> Path:
    """Write a tiny random model of one backbone family (``model_type``) + its processor; see :data:`FAMILIES`."""
    from skyrank.errors import UnknownNameError

    builders = {
        "qwen2_vl": make_tiny_qwen2_vl,
        "qwen2_5_vl": make_tiny_qwen2_5_vl,
        "qwen3_vl": make_tiny_qwen3_vl,
        "llava_onevision": make_tiny_llava_onevision,
    }
    if family not in builders:
        raise UnknownNameError(f"Unknown family {family!r} for a tiny model; choose one of {', '.join(FAMILIES)}.")
    return builders[family](out_dir, seed=seed)
