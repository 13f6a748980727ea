"""The published architectures of SkyLink's backbone families, offline: configs, processors, random-weight folders.

Each entry of :data:`PUBLISHED_CONFIGS` is the architecture part of the ``config.json`` of the Hub model it names
(widths, depths, heads, vocabulary, special token ids, rotary settings, tying), written in transformers' current form
(``rope_parameters``). They let ``skyrank train --plan`` size a run without a network, and let
``benchmarks/real_shapes.py`` / ``benchmarks/gpu_suite.py`` build random-weight models of the real shapes.

:func:`make_random_model` writes a folder that loads through :func:`skylink_model.backbones.load_backbone` exactly
as the Hub checkpoint does: ``config.json``, random weights (no init pass: ``no_init_weights`` then one uniform fill,
seconds not minutes) and a processor whose tokenizer has the family's vocabulary layout (the special tokens at their
published ids; the ordinary vocabulary is a small BPE padded with unused entries, so text tokenises shorter than
with Qwen's real 151k merges) and whose image processor is the published one (patch, merge, mean/std, 384 px SigLIP).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from skyrank.errors import UnknownNameError

_QWEN2_VL_TOKENS = {"bos_token_id": 151643, "eos_token_id": 151645}
_QWEN_VL_IDS = {"image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
                "vision_end_token_id": 151653}  # fmt: skip

#: model id -> its config.json (architecture fields), transformers' current layout.
PUBLISHED_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2-VL-2B-Instruct": {
        "model_type": "qwen2_vl",
        "text_config": {
            "model_type": "qwen2_vl_text", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
            "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "hidden_act": "silu",
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            **_QWEN2_VL_TOKENS,
        },
        "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "hidden_act": "quick_gelu",
                          "mlp_ratio": 4, "num_heads": 16, "in_channels": 3, "patch_size": 14,
                          "spatial_merge_size": 2, "temporal_patch_size": 2},
        "tie_word_embeddings": True,
        **_QWEN_VL_IDS,
    },
    "Qwen/Qwen2-VL-7B-Instruct": {
        "model_type": "qwen2_vl",
        "text_config": {
            "model_type": "qwen2_vl_text", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
            "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_act": "silu",
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            **_QWEN2_VL_TOKENS,
        },
        "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 3584, "hidden_act": "quick_gelu",
                          "mlp_ratio": 4, "num_heads": 16, "in_channels": 3, "patch_size": 14,
                          "spatial_merge_size": 2, "temporal_patch_size": 2},
        "tie_word_embeddings": False,
        **_QWEN_VL_IDS,
    },
    "Qwen/Qwen2.5-VL-3B-Instruct": {
        "model_type": "qwen2_5_vl",
        "text_config": {
            "model_type": "qwen2_5_vl_text", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
            "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2, "hidden_act": "silu",
            "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            **_QWEN2_VL_TOKENS,
        },
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "hidden_act": "silu",
                          "num_heads": 16, "in_channels": 3, "out_hidden_size": 2048, "patch_size": 14,
                          "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                          "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2},
        "tie_word_embeddings": True,
        **_QWEN_VL_IDS,
    },
    "Qwen/Qwen3-VL-2B-Instruct": {
        "model_type": "qwen3_vl",
        "text_config": {
            "model_type": "qwen3_vl_text", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
            "hidden_act": "silu", "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": True, "attention_bias": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                "mrope_interleaved": True},
            **_QWEN2_VL_TOKENS,
        },
        "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096,
                          "hidden_act": "gelu_pytorch_tanh", "num_heads": 16, "in_channels": 3,
                          "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2,
                          "temporal_patch_size": 2, "num_position_embeddings": 2304,
                          "deepstack_visual_indexes": [5, 11, 17]},
        "tie_word_embeddings": True,
        **_QWEN_VL_IDS,
    },
    # SigLIP-so400m-patch14-384 tower without its last layer (26 of 27) and head; Qwen2-0.5B language model.
    "llava-hf/llava-onevision-qwen2-0.5b-ov-hf": {
        "model_type": "llava_onevision",
        "text_config": {
            "model_type": "qwen2", "vocab_size": 152000, "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_act": "silu",
            "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            "bos_token_id": 151643, "eos_token_id": 151645,
        },
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                          "num_hidden_layers": 26, "num_attention_heads": 16, "image_size": 384, "patch_size": 14,
                          "vision_use_head": False},
        "image_token_index": 151646,
        "video_token_index": 151647,
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": "full",
        "vision_feature_layer": -1,
        "vision_aspect_ratio": "anyres_max_9",
        "tie_word_embeddings": True,
    },
}  # fmt: skip

#: Each family's smallest published size (``benchmarks/real_shapes.py``), keyed by ``model_type``.
SMALLEST: dict[str, str] = {
    "qwen2_vl": "Qwen/Qwen2-VL-2B-Instruct",
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen3_vl": "Qwen/Qwen3-VL-2B-Instruct",
    "llava_onevision": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
}

# Special tokens in id order from 151643 (Qwen2 tokenizer); LLaVA-OneVision's adds <image>, <video> at 151646/7.
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]  # fmt: skip
_LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
_FIRST_SPECIAL_ID = 151643


def published_model_ids() -> list[str]:
    return sorted(PUBLISHED_CONFIGS)


def published_config_dict(model_id: str) -> dict[str, Any]:
    """A deep copy of the built-in config of ``model_id`` (:class:`UnknownNameError` listing the known ids)."""
    try:
        return copy.deepcopy(PUBLISHED_CONFIGS[model_id])
    except KeyError:
        raise UnknownNameError(
            f"No built-in config for {model_id!r}; built in: {', '.join(published_model_ids())}. Pass a local "
            "model folder (with config.json) or a Hub id while online."
        ) from None


def published_config(model_id: str) -> Any:
    """The ``transformers`` config object of ``model_id`` from :data:`PUBLISHED_CONFIGS`."""
    from transformers import AutoConfig

    raw = published_config_dict(model_id)
    model_type = raw.pop("model_type")
    return AutoConfig.for_model(model_type, **raw)


def _tokenizer(specials: list[str], chat_template: str) -> Any:
    """A byte-level BPE whose special tokens sit at their published ids (151643, ...), the rest unused filler."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from skylink_model.testing import _CORPUS

    small = Tokenizer(models.BPE())
    small.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    small.train_from_iterator(_CORPUS * 50, trainer=trainer)
    model = json.loads(small.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    for word in ("yes", "no"):  # single tokens for the value head's yes/no init
        if word not in vocab:
            vocab[word] = len(vocab)
    for i in range(len(vocab), _FIRST_SPECIAL_ID):  # never produced by the merges
        vocab[f"<|unused_{i}|>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="left", additional_special_tokens=specials[1:])  # fmt: skip
    fast.chat_template = chat_template
    for offset, token in enumerate(specials):
        if fast.convert_tokens_to_ids(token) != _FIRST_SPECIAL_ID + offset:  # pragma: no cover - tokenizers' layout
            raise RuntimeError(f"{token} got id {fast.convert_tokens_to_ids(token)}, not {_FIRST_SPECIAL_ID + offset}")
    return fast


def published_processor(model_id: str) -> Any:
    """The processor of ``model_id`` built offline: published image processor, tokenizer with the published ids."""
    from skylink_model.testing import LLAVA_ONEVISION_CHAT_TEMPLATE, TINY_CHAT_TEMPLATE

    family = PUBLISHED_CONFIGS[model_id]["model_type"] if model_id in PUBLISHED_CONFIGS else None
    if family in ("qwen2_vl", "qwen2_5_vl"):
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

        cls = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
        return cls(image_processor=Qwen2VLImageProcessor(), tokenizer=_tokenizer(_QWEN_SPECIALS, TINY_CHAT_TEMPLATE),
                   video_processor=Qwen2VLVideoProcessor(), chat_template=TINY_CHAT_TEMPLATE)  # fmt: skip
    if family == "qwen3_vl":
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

        image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2,
                                      image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])  # fmt: skip
        return Qwen3VLProcessor(image_processor=image, tokenizer=_tokenizer(_QWEN_SPECIALS, TINY_CHAT_TEMPLATE),
                                video_processor=Qwen3VLVideoProcessor(patch_size=16, merge_size=2,
                                                                      temporal_patch_size=2),
                                chat_template=TINY_CHAT_TEMPLATE)  # fmt: skip
    if family == "llava_onevision":
        from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

        image = LlavaOnevisionImageProcessor(size={"height": 384, "width": 384},
                                             image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])  # fmt: skip
        return LlavaOnevisionProcessor(
            image_processor=image, tokenizer=_tokenizer(_LLAVA_SPECIALS, LLAVA_ONEVISION_CHAT_TEMPLATE),
            video_processor=LlavaOnevisionVideoProcessor(size={"height": 384, "width": 384}),
            num_image_tokens=729, vision_feature_select_strategy="full", chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE,
        )  # fmt: skip
    published_config_dict(model_id)  # raises for an unknown id
    raise UnknownNameError(f"No offline processor for {model_id!r} (family {family}).")  # pragma: no cover


@torch.no_grad()
def fill_random_(model: torch.nn.Module, *, seed: int = 0, std: float = 0.02) -> None:
    """Random weights in one pass: matrices uniform with standard deviation ``std``, biases 0, norm scales 1."""
    gen = torch.Generator().manual_seed(seed)
    bound = std * 3**0.5
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            p.zero_()
        elif p.ndim == 1 and "newline" not in name:  # RMSNorm / LayerNorm scales
            p.fill_(1.0)
        else:
            p.uniform_(-bound, bound, generator=gen)


def shrink_config(config: Any, layers: int) -> Any:
    """The same config with at most ``layers`` blocks per tower (a quick check of a script; not a published shape).

    Layer-index lists (Qwen2.5-VL's full-attention blocks, Qwen3-VL's deepstack taps) keep their entries below it.
    """
    text, vision = config.get_text_config(), config.vision_config
    text.num_hidden_layers = min(text.num_hidden_layers, layers)
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[: text.num_hidden_layers]
    for name in ("depth", "num_hidden_layers"):
        if hasattr(vision, name):
            setattr(vision, name, min(getattr(vision, name), layers))
    depth = getattr(vision, "depth", getattr(vision, "num_hidden_layers", layers))
    for name in ("fullatt_block_indexes", "deepstack_visual_indexes"):
        if getattr(vision, name, None):
            setattr(vision, name, [i for i in getattr(vision, name) if i < depth] or [depth - 1])
    return config


def make_random_model(
    model_id: str,
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    layers: int | None = None,
) -> Path:
    """Write ``model_id``'s architecture with random weights + its offline processor to ``out_dir``; return it.

    Weights are stored in ``dtype`` (bf16 by default: every value is then exact in fp32 too, so the folder loads
    in either precision with the same numbers). ``layers`` truncates the towers (:func:`shrink_config`).
    """
    from transformers import AutoModelForImageTextToText
    from transformers.initialization import no_init_weights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = published_config(model_id)
    if layers is not None:
        shrink_config(config, layers)
    model_cls = AutoModelForImageTextToText._model_mapping[type(config)]
    with no_init_weights():
        model = model_cls._from_config(config, dtype=dtype)
    fill_random_(model, seed=seed)
    model.tie_weights()
    model.save_pretrained(out)
    del model
    published_processor(model_id).save_pretrained(out)
    return out
