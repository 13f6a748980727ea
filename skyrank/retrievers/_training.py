"""Training specs: how ``skyrank retriever train`` builds, saves and loads each retriever architecture.

Each retriever module registers its :class:`TrainingSpec` beside its factory (``register_training_spec``), so
:mod:`skyrank.retrievers.train` (Sample4Geo's recipe: symmetric InfoNCE, one pair per class per batch) never names
an architecture. A spec says: which ``arch`` values it trains and at which input sides, how the model is built, its
checkpoint layout (file prefix, official state dict, strict load, starting weights), whether ``logit_scale`` is
part of the weights, and what the run folder records (``opts.yaml``, how to load the result).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from skyrank.errors import CheckpointMismatchError, UnknownNameError
from skyrank.retrievers._checkpoint import read_state_dict


class TrainingSpec:
    """The training side of one retriever (subclass it in the retriever's module and register an instance).

    Attributes:
        retriever: the registry name that loads the trained weights.
        prefix: checkpoint file prefix (``<prefix>_e<N>.pth``, ``<prefix>_end.pth``).
        interpolation: resize mode of the training images.
        external_scale: ``logit_scale`` is a trainer parameter kept out of the weights (saved in ``train_state.pth``);
            otherwise it is the model's own ``logit_scale`` parameter.
        claims_any_arch: this spec also trains ``arch`` values no spec is registered under (timm model names).
        classifier_heads: the model has heads sized by the number of training classes.
        loss_note: appended to the recipe's loss description.
    """

    retriever: str = ""
    prefix: str = "net"
    interpolation: str = "bicubic"
    external_scale: bool = True
    claims_any_arch: bool = False
    classifier_heads: bool = True  # the model carries class-count-sized heads (recipe.json records nclasses)
    loss_note: str = ""

    def resolve(self, arch: str, image_size: int | None) -> tuple[str, int]:
        """``(arch recorded in recipe.json, input side)``; ``ValueError`` for a side the architecture cannot take."""
        raise NotImplementedError

    def check_block(self, block: int) -> int | None:
        """The part-head count recorded in the recipe (None when the architecture has no such option)."""
        return None

    def build(self, arch: str, image_size: int, nclasses: int, block: int) -> torch.nn.Module:
        raise NotImplementedError

    def state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The weights in the retriever's official layout (CPU copies)."""
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def load(self, model: torch.nn.Module, checkpoint: str | Path) -> None:
        """Strict load of a checkpoint in the official layout (as the retriever loads it)."""
        raise NotImplementedError

    def init_from(self, model: torch.nn.Module, checkpoint: str | Path) -> None:
        """Starting weights: strict, except class-count-shaped tensors that differ."""
        self.load(model, checkpoint)

    def opts(self, common: dict[str, Any], block: int | None) -> dict[str, Any] | None:
        """The ``opts.yaml`` of a run (None: the architecture has none); ``common`` holds the run's settings."""
        return None

    def load_with(self, out_dir: Path, arch: str, image_size: int) -> str:
        """How to load the result, for ``recipe.json``."""
        raise NotImplementedError

    def heads_note(self, nclasses: int | None) -> str | None:
        return None

    def versions(self) -> dict[str, str]:
        """Library versions the checkpoint layout depends on (recorded in ``recipe.json``)."""
        return {}


_SPECS: dict[str, TrainingSpec] = {}


def register_training_spec(spec: TrainingSpec) -> TrainingSpec:
    """Register the training spec of a retriever (under ``spec.retriever``, also its ``arch`` name)."""
    if spec.retriever in _SPECS:
        raise ValueError(f"a training spec for {spec.retriever!r} is already registered")
    if spec.claims_any_arch and any(s.claims_any_arch for s in _SPECS.values()):
        raise ValueError("only one training spec may claim arbitrary (timm) architecture names")
    _SPECS[spec.retriever] = spec
    return spec


def list_trainable() -> list[str]:
    """The ``arch`` names with a registered training spec (plus any timm name, for the spec that claims them)."""
    return sorted(_SPECS)


def training_spec(arch: str) -> TrainingSpec:
    """The spec that trains ``arch``: the one registered under that name, else the one claiming timm names."""
    if arch in _SPECS:
        return _SPECS[arch]
    for spec in _SPECS.values():
        if spec.claims_any_arch:
            return spec
    raise UnknownNameError(f"no retriever trains {arch!r}; choose one of {', '.join(list_trainable())}")


def keep_own_if_reshaped(
    sd: dict[str, torch.Tensor], module: torch.nn.Module, replaceable: Callable[[str], bool]
) -> dict[str, torch.Tensor]:
    """``sd`` with the module's own tensors where ``replaceable(key)`` and the shapes differ (class-count heads)."""
    own = module.state_dict()
    out = dict(sd)
    for k, v in own.items():
        if replaceable(k) and k in out and tuple(out[k].shape) != tuple(v.shape):
            out[k] = v
    return out


def read_init_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A starting state dict: like ``read_state_dict`` but also unwrapping Facebook's ``{"model": {...}}``."""
    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return read_state_dict(path)
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(f"init checkpoint {path} does not hold a state dict of tensors")
    return dict(obj)
