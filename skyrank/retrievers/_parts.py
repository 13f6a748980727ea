"""What the part-based retrievers (MCCG, SDPL) share: PIL bicubic preprocessing, and test-time features as the
sum over the image and its horizontal flip, normalised per part and divided by √P (their ``test.py`` files)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from skyrank.errors import OptionError
from skyrank.images import to_uint8_rgb
from skyrank.retrievers._base import Retriever, RetrieverCfg
from skyrank.retrievers._training import TrainingSpec

#: ``amp`` option → autocast dtype (``None``: float32, no autocast)
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


class OptsFile:
    """A parsed MCCG/SDPL ``opts.yaml``: every problem (missing, unreadable, malformed YAML, not a mapping, a field
    of the wrong type) is an :class:`~skyrank.errors.OptionError` naming the file, the field and the fix."""

    def __init__(self, path: str | Path) -> None:
        import yaml

        self.path = Path(path)
        hint = "Pass --opts the opts.yaml saved by the training run of these weights."
        if not self.path.is_file():
            raise OptionError(f"--opts {self.path} does not exist", hint=hint)
        try:
            cfg = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as e:
            raise OptionError(f"--opts {self.path} could not be read: {e}", hint=hint) from e
        except yaml.YAMLError as e:
            raise OptionError(f"--opts {self.path} is not valid YAML: {' '.join(str(e).split())}", hint=hint) from e
        if not isinstance(cfg, Mapping):
            raise OptionError(f"--opts {self.path} is not a YAML mapping (key: value lines)", hint=hint)
        self.cfg = cfg

    def get(self, key: str, default: Any = None) -> Any:
        return self.cfg.get(key, default)

    def number(self, key: str, default: Any, kind: type = int) -> Any:
        """Field ``key`` as ``kind`` (``int`` or ``float``); ``default`` when absent or null."""
        value = self.cfg.get(key)
        if value is None:
            return default
        try:
            if kind is int and (isinstance(value, bool) or float(value) != int(float(value))):
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            raise OptionError(
                f"--opts {self.path}: field {key!r} must be {'an integer' if kind is int else 'a number'}, "
                f"got {value!r}",
                hint=f"Fix {key}: in {self.path}.",
            ) from None


def check_amp(amp: str) -> str:
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
    return amp


def normalize_parts(feats: torch.Tensor) -> torch.Tensor:
    """``(B, 512, P)`` → ``(B, 512·P)``: each column divided by its L2 norm times √P, then ``view(B, -1)``.

    The flattening order is MCCG's/SDPL's (channel-major, parts interleaved: index ``c * P + k``).
    """
    feats = feats.float()
    norm = feats.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12) * math.sqrt(feats.shape[-1])
    return (feats / norm).reshape(feats.shape[0], -1)


def pil_bicubic_preprocess(image: Image.Image, size: int, cfg: RetrieverCfg) -> torch.Tensor:
    """torchvision ``Resize((size, size), BICUBIC)`` on a PIL image (= PIL's resize), ``ToTensor``, ``Normalize``."""
    image = to_uint8_rgb(image).resize((size, size), Image.Resampling.BICUBIC)  # 16-bit scaled, not clipped
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    return (x - mean) / std


class PartRetriever(Retriever):
    """A retriever whose ``model(x)`` returns ``(B, 512, P)`` part features; one model for both views.

    Subclasses set ``self.model`` and ``self.amp`` in ``__init__``.
    """

    amp: str = "fp32"

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL bicubic resize to ``image_size`` (exactly the originals' ``transforms.Resize`` on PIL), ImageNet
        normalisation."""
        return pil_bicubic_preprocess(image, self.cfg.image_size, self.cfg)

    def embed(self, batch: torch.Tensor, view: str) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B, 512·P)`` float32: flip-sum, per-part L2 / √P, flattened."""
        if view not in ("drone", "satellite"):
            raise ValueError(f"view must be 'drone' or 'satellite', got {view!r}")
        batch = batch.to(self.device, non_blocking=True)
        dtype = AMP_DTYPES[self.amp]
        ctx: Any = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        with torch.inference_mode(), ctx:
            feats = self.model(batch).float() + self.model(batch.flip(3)).float()
        return normalize_parts(feats)


#: The benchmarks (evaluation protocols) MCCG and SDPL were made for: drone/satellite ones (their papers report
#: University-1652 and SUES-200; DenseUAV and the synthetic benchmark have the same two views). ``create(...,
#: dataset=)`` refuses the ground-view benchmarks with :data:`PART_REFUSAL`.
PART_DATASETS: tuple[str, ...] = ("university1652", "sues200", "denseuav", "synthetic")
PART_REFUSAL = (
    "its two drone/satellite branches take square bicubic inputs and were never trained on street-level views "
    "(a panorama would be squashed to a square), and no weights exist for VIGOR, CVUSA, CVACT or street views"
)


class PartTrainingSpec(TrainingSpec):
    """What the MCCG and SDPL training specs share: the official layout (``net_*.pth`` + ``opts.yaml``), loaded by
    the registered retriever of the same name, and the part classifiers InfoNCE leaves untouched."""

    def load_with(self, out_dir: Path, arch: str, image_size: int) -> str:
        end = out_dir / f"{self.prefix}_end.pth"
        return f'create("{self.retriever}", checkpoint="{end}", opts="{out_dir / "opts.yaml"}")'

    def heads_note(self, nclasses: int | None) -> str | None:
        return (
            f"ClassBlock classifiers (Linear 512->{nclasses}) kept for the official layout; InfoNCE does not "
            "use them, so they stay at their initialisation"
        )
