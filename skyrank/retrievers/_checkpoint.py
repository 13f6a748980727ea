"""Safe, strict checkpoint loading shared by every retriever.

Never unpickles arbitrary objects: ``.safetensors`` files are read with safetensors, anything else with
``torch.load(..., weights_only=True, map_location="cpu")``. Loading is strict; a mismatch raises
:class:`~skyrank.errors.CheckpointMismatchError` naming the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from skyrank.errors import CheckpointMismatchError

_SHOW = 8  # keys listed per category in an error message


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``), on CPU.

    A torch file holding ``{"state_dict": ...}`` or ``{"model": {...}}`` (a dict of tensors) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatchError(
            f"checkpoint {path} does not exist", hint="Pass --checkpoint the path of a .pth or .safetensors file."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, non-weights objects
        raise CheckpointMismatchError(
            f"could not read checkpoint {path} with torch.load(weights_only=True): {e}. "
            "SkyRank only loads plain tensor state dicts (or .safetensors); re-save the weights with "
            "torch.save(model.state_dict(), path)."
        ) from e
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"checkpoint {path} does not hold a state dict of tensors")
    return dict(obj)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that starts with it (DataParallel / DDP wrappers)."""
    n = len(prefix)
    return {(k[n:] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _fmt(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that names the offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{source} does not match the model ({type(module).__name__}, {len(own)} keys; "
            f"file has {len(state_dict)})."
        ]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): " + "; ".join(shapes[:_SHOW]))
        raise CheckpointMismatchError(
            "\n".join(parts), hint="Check that --retriever/--arch (and --opts) match the --checkpoint file."
        )
    non_finite = [
        k for k, v in state_dict.items() if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())
    ]
    if non_finite:
        raise CheckpointMismatchError(
            f"{source} holds NaN or infinite values in {len(non_finite)} tensor(s): {_fmt(non_finite)}",
            hint="These weights are corrupt or come from a diverged run: pass another --checkpoint (an earlier "
            "epoch, or re-train with a lower --lr).",
        )
    module.load_state_dict(dict(state_dict), strict=True)
