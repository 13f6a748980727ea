"""``skyrank export-model RUN --format vllm``: a trained SkyLink run as one merged model vLLM serves as a classifier.

vLLM applies LoRA to the language model of a VLM only (vision-tower adapters are ignored), and its classification
adapter (``vllm serve DIR --runner pooling --convert classify``) wraps a ``*ForConditionalGeneration`` with a single
linear layer named ``score`` read at the last token (missing ``score.weight`` fails at load). So the export:

1. reloads the run (:meth:`SkyLinkModel.from_pretrained`), merges every LoRA matrix — language **and** vision
   towers — into the base weights (``peft``'s ``merge_and_unload``),
2. writes the merged ``...ForConditionalGeneration`` with ``score.weight`` = the value head w (shape (1, hidden),
   float32) beside its weights and ``num_labels = 1`` in ``config.json``: vLLM's logit is S = wᵀh_last, the SkyLink
   score (SkyLink arXiv 2603.08063, "Inference"; the score API may report sigmoid(S), which orders the same),
3. saves the processor with the run's image budget, ``skylink_config.json`` (the prompt) and a README with the
   ``vllm serve`` command and requests.

:func:`score_exported` scores pairs from the exported folder with plain ``transformers`` (the reference for what a
server computes): the same chat-template prompt, left padding, last token, ``score``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from skyrank.atomic import swap_in_dir
from skyrank.errors import OutputExistsError, SkyRankError
from skyrank.images import as_uint8_rgb

SCORE_KEY = "score.weight"
FORMATS: tuple[str, ...] = ("vllm",)
_MARKER = "skylink_export.json"

README_TEMPLATE = """# SkyLink re-ranker, merged for serving

Exported by `skyrank export-model {run} --format vllm` from the SkyLink run `{run}` (base model `{base}`). The LoRA
weights of the language and vision towers are merged into the base weights; the value head is the single-output
`score` layer (S = wᵀh_last, read at the last token of the prompt). Higher S = better match.

## Serve

```bash
vllm serve {out} --runner pooling --convert classify --served-model-name skylink
```

## Score one (query, candidate) pair

Each pair is one chat turn: the query image, the prompt, the candidate image, with the generation prompt (vLLM's
chat requests leave it out unless asked). `"use_activation": false` returns the raw score S instead of sigmoid(S):

```bash
curl -s http://localhost:8000/classify -H 'Content-Type: application/json' -d '{{
  "model": "skylink",
  "add_generation_prompt": true,
  "use_activation": false,
  "messages": [{{"role": "user", "content": [
    {{"type": "image_url", "image_url": {{"url": "file:///data/query.jpg"}}}},
    {{"type": "text", "text": "{prompt}"}},
    {{"type": "image_url", "image_url": {{"url": "file:///data/candidate.jpg"}}}}
  ]}}]
}}'
```

`/score`-style, one query against several candidates (vLLM's score API; the query side carries the query image and
the prompt, each document one candidate image; send `--allowed-local-media-path /data` to the server for `file://`
URLs):

```bash
curl -s http://localhost:8000/score -H 'Content-Type: application/json' -d '{{
  "model": "skylink",
  "text_1": {{"content": [{{"type": "image_url", "image_url": {{"url": "file:///data/query.jpg"}}}},
                        {{"type": "text", "text": "{prompt}"}}]}},
  "text_2": {{"content": [{{"type": "image_url", "image_url": {{"url": "file:///data/cand1.jpg"}}}},
                        {{"type": "image_url", "image_url": {{"url": "file:///data/cand2.jpg"}}}}]}}
}}'
```

The `/classify` request renders exactly SkyLink's training prompt (chat template, generation prompt). Check `/score`
against it on a few pairs before relying on it: how the score API joins the two sides depends on the vLLM version.

Offline (Python):

```python
from vllm import LLM
llm = LLM("{out}", runner="pooling", convert="classify")
prompt = {template!r}
out = llm.classify({{"prompt": prompt, "multi_modal_data": {{"image": [query_pil, candidate_pil]}}}})
```

With transformers only: `skylink_model.serving.score_exported("{out}", query_images, candidate_images)`.
"""


def _find_score_weight(folder: Path) -> torch.Tensor:
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            if SCORE_KEY in f.keys():
                return f.get_tensor(SCORE_KEY)
    raise SkyRankError(f"{folder} has no {SCORE_KEY} in its safetensors files: not a `skyrank export-model` folder")


def export_vllm(
    run_dir: str | Path,
    out: str | Path,
    *,
    base_model: str | Path | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Merge a SkyLink run into its base model and write the vLLM classification folder (module docstring).

    ``dtype``: ``float32``, ``bfloat16`` or ``float16`` for the merged weights (default: the base model's); the merge
    itself runs in float32 on the CPU. ``score.weight`` stays float32. Written atomically.
    """
    from skylink_model.model import SkyLinkModel, pair_template_text

    run_dir, out = Path(run_dir), Path(out)
    if out.exists() and (not overwrite or (any(out.iterdir()) and not (out / _MARKER).is_file())):
        raise OutputExistsError(
            f"output folder {out} already exists" + ("" if overwrite else "; pass --overwrite or choose another --out")
            + ("" if not overwrite else f" and is not a SkyLink export ({_MARKER} missing)")
        )
    try:
        model = SkyLinkModel.from_pretrained(run_dir, base_model, device="cpu", dtype="float32")
    except FileNotFoundError as e:
        raise SkyRankError(str(e)) from e
    head = model.value_head.weight.detach().to(torch.float32).cpu().clone()
    template = pair_template_text(model.processor, model.config.prompt)
    merged = model.backbone.merge_and_unload()  # LoRA of every tower (vLLM would ignore the vision adapters)
    remaining = [n for n, _ in merged.named_modules() if "lora_" in n]
    if remaining:  # pragma: no cover - peft merges every LoRA layer it created
        raise SkyRankError(f"LoRA layers left after merging: {remaining[:5]}")
    if dtype is not None:
        merged.to({"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype])
    # vLLM sizes `score` from the *text* config's num_labels (default 2): set it there and at the top level.
    for cfg in {id(c): c for c in (merged.config, merged.config.get_text_config())}.values():
        cfg.num_labels = 1
        cfg.id2label = {0: "match"}
        cfg.label2id = {"match": 0}

    staging = out.parent / f".{out.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        state = dict(merged.state_dict())
        state[SCORE_KEY] = head
        merged.save_pretrained(staging, state_dict=state)
        model.processor.save_pretrained(staging)
        shutil.copy2(run_dir / "skylink_config.json", staging / "skylink_config.json")
        readme = README_TEMPLATE.format(
            run=run_dir.name, base=model.config.base_model, out=out, prompt=model.config.prompt, template=template
        )
        (staging / "README.md").write_text(readme, encoding="utf-8")
        info = {"format": "vllm", "run": str(run_dir), "base_model": str(model.config.base_model),
                "merged_towers": ["language", "vision"] if model.config.lora_vision else ["language"],
                "score": {"key": SCORE_KEY, "shape": list(head.shape), "dtype": "float32"}}
        (staging / _MARKER).write_text(json.dumps(info, indent=2) + "\n")
        _check_score_saved(staging, head)
        swap_in_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _check_score_saved(folder: Path, head: torch.Tensor) -> None:
    saved = _find_score_weight(folder)
    if tuple(saved.shape) != tuple(head.shape) or not torch.equal(saved.float(), head):
        raise SkyRankError(f"{SCORE_KEY} was not written as expected (shape {tuple(saved.shape)})")


@torch.inference_mode()
def score_exported(
    folder: str | Path,
    query_images: Sequence[Any],
    candidate_images: Sequence[Any],
    *,
    batch_size: int = 16,
    device: str | None = None,
) -> torch.Tensor:
    """SkyLink scores of (query, candidate) pairs from an exported folder with plain ``transformers``, shape (N,).

    The prompt is SkyLink's (``skylink_config.json``), rendered with the folder's chat template and left-padded; the
    score is ``score.weight`` applied to the last token's final hidden state (what vLLM's classify runner computes).
    """
    from skylink_model.backbones import load_backbone
    from skylink_model.config import SkyLinkConfig
    from skylink_model.model import pair_template_text

    folder = Path(folder)
    if len(query_images) != len(candidate_images):
        raise ValueError(f"{len(query_images)} query images but {len(candidate_images)} candidate images.")
    config = SkyLinkConfig.from_pretrained(folder)
    weight = _find_score_weight(folder).float()
    model, processor, _spec = load_backbone(
        folder, dtype="float32", device=device, min_pixels=config.min_pixels, max_pixels=config.max_pixels
    )
    template = pair_template_text(processor, config.prompt)
    weight = weight.to(model.device)
    out = []
    for start in range(0, len(query_images), batch_size):
        qs = as_uint8_rgb(query_images[start : start + batch_size])  # 16-bit scaled, as SkyLinkModel does
        cs = as_uint8_rgb(candidate_images[start : start + batch_size])
        inputs = processor(
            text=[template] * len(qs),
            images=[[q, c] for q, c in zip(qs, cs, strict=True)],
            padding=True,
            padding_side="left",
            return_tensors="pt",
        ).to(model.device)
        hidden = model.model(**inputs, use_cache=False, return_dict=True).last_hidden_state[:, -1].float()
        out.append((hidden @ weight.T).squeeze(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0)
