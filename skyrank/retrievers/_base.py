"""The retriever interface (design.md, "Retrievers") and its registry.

A retriever is created by name, like timm's ``create_model``::

    r = skyrank.retrievers.create("sample4geo", checkpoint="weights_e1_0.9515.pth", device="cuda")
    x = torch.stack([r.preprocess(img) for img in images])
    emb = r.embed(x, view="drone")  # (B, D) float32, L2-normalised

Each retriever module documents its paper, where the original code and weights live, their licence, its
preprocessing as a :class:`RetrieverCfg`, and its checkpoint filter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from skyrank.errors import MissingWeightsError, OptionError, UnknownNameError
from skyrank.images import to_uint8_rgb

#: Every view a retriever may be asked to embed: ``ground`` is street level (VIGOR/CVUSA/CVACT panoramas and
#: University-1652 street photos; issue 20).
VIEWS: tuple[str, ...] = ("drone", "satellite", "ground")


def check_view(view: str, allowed: Sequence[str] = VIEWS) -> str:
    """``view`` when it is one of ``allowed``, else ``ValueError`` naming them."""
    if view not in allowed:
        raise ValueError(f"view must be one of {', '.join(repr(v) for v in allowed)}, got {view!r}")
    return view


IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class RetrieverCfg:
    """Preprocessing and provenance of a retriever, as data (like timm's ``PretrainedCfg``)."""

    name: str
    image_size: int  # square input side, pixels
    interpolation: str  # "bilinear" | "bicubic"
    embed_dim: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flip_sum: bool = False  # test-time: sum of the features of the image and its horizontal flip
    paper: str = ""
    citation: str = ""  # BibTeX
    origin_url: str = ""  # original code
    weights_url: str = ""  # where the official weights live
    weights_license: str = ""


class Retriever:
    """Base class. Subclasses hold a torch ``model`` and implement :meth:`embed`.

    Attributes:
        name: registry name.
        cfg: the :class:`RetrieverCfg`.
        device: torch device the model runs on.
        checkpoint: path of the loaded checkpoint, or ``None`` for random weights.
        needs_images: ``False`` for retrievers that look embeddings up by id (``precomputed``).
    """

    name: str = ""
    needs_images: bool = True
    #: the evaluation protocol of the benchmark being encoded (``create(..., dataset=)``; e.g. ``"vigor"``), for
    #: retrievers whose preprocessing depends on it (Sample4Geo's ground-view sizes); ``None``: not said
    dataset: str | None = None

    def __init__(self, cfg: RetrieverCfg, device: str | torch.device = "cpu", checkpoint: str | Path | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.checkpoint = Path(checkpoint) if checkpoint else None

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image → normalised ``(3, S, S)`` float tensor (squash resize, no crop)."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[self.cfg.interpolation]
        image = to_uint8_rgb(image)  # the one normaliser: 16-bit scaled, not clipped white by convert("RGB")
        s = self.cfg.image_size
        x = TF.pil_to_tensor(image)
        x = TF.resize(x, [s, s], interpolation=interp, antialias=True)
        x = x.float().div_(255.0)
        return TF.normalize(x, self.cfg.mean, self.cfg.std)

    def input_size(self, view: str) -> tuple[int, int]:
        """``(H, W)`` of :meth:`preprocess_view`'s output for ``view``: the square ``image_size`` unless the
        retriever resizes a view to another shape (Sample4Geo's panoramas)."""
        return (self.cfg.image_size, self.cfg.image_size)

    def preprocess_view(self, image: Image.Image, view: str) -> torch.Tensor:
        """The preprocessing of one ``view`` (what encoding calls): :meth:`preprocess` unless overridden."""
        return self.preprocess(image)

    def embed(self, batch: torch.Tensor, view: str) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, D)`` float32, L2-normalised. ``view`` is ``"drone"``, ``"satellite"`` or
        ``"ground"`` (those the retriever supports)."""
        raise NotImplementedError

    def embed_ids(self, image_ids: Sequence[str], view: str) -> np.ndarray:
        """For retrievers with ``needs_images = False``: embeddings looked up by ``image_id``."""
        raise NotImplementedError(f"{self.name} embeds images, not ids")

    def train(self, mode: bool = True) -> Retriever:
        model = getattr(self, "model", None)
        if model is not None:
            model.train(mode)
        return self

    def eval(self) -> Retriever:
        return self.train(False)


_RETRIEVERS: dict[str, Callable[..., Retriever]] = {}


@dataclass(frozen=True)
class RetrieverInfo:
    """What a retriever declares when it registers, so ``skyrank build`` can check its options before any work.

    Attributes:
        name: the registered name.
        learned_weights: it ranks with trained weights, so a build without ``--checkpoint`` would rank with random
            ones (refused unless ``--random-weights``).
        checkpoint_required: ``--checkpoint`` is mandatory (``precomputed``: it *is* the embeddings file).
        checkpoint_what: what ``--checkpoint`` holds, for messages (e.g. "the embeddings file").
        weights_hint: where official weights come from, for the message that asks for them.
        read_opts: parses the retriever's ``--opts`` file (MCCG/SDPL's ``opts.yaml``); ``None``: it takes none.
        datasets: the evaluation protocols (benchmarks) the retriever was made for; ``None``: any. ``create(...,
            dataset=)`` refuses the others with :class:`~skyrank.errors.OptionError`.
        refusal: why the others are refused and what to use instead, for that message.
    """

    name: str
    learned_weights: bool = True
    checkpoint_required: bool = False
    checkpoint_what: str = "the weights file (.pth or .safetensors)"
    weights_hint: str = ""
    read_opts: Callable[[str | Path], Any] | None = None
    datasets: tuple[str, ...] | None = None
    refusal: str = ""


_INFO: dict[str, RetrieverInfo] = {}


def register_retriever(
    name: str,
    *,
    learned_weights: bool = True,
    checkpoint_required: bool = False,
    checkpoint_what: str = "the weights file (.pth or .safetensors)",
    weights_hint: str = "",
    read_opts: Callable[[str | Path], Any] | None = None,
    datasets: Sequence[str] | None = None,
    refusal: str = "",
) -> Callable[[Callable[..., Retriever]], Callable[..., Retriever]]:
    """Decorator for a factory ``fn(checkpoint=None, device="cpu", **kwargs) -> Retriever``; the keywords declare
    the :class:`RetrieverInfo` the build checks (a new retriever is one module: nothing else names it)."""

    def deco(fn: Callable[..., Retriever]) -> Callable[..., Retriever]:
        if name in _RETRIEVERS:
            raise ValueError(f"retriever {name!r} is already registered")
        _RETRIEVERS[name] = fn
        _INFO[name] = RetrieverInfo(name, learned_weights, checkpoint_required, checkpoint_what, weights_hint,
                                    read_opts, tuple(datasets) if datasets is not None else None,
                                    refusal)  # fmt: skip
        return fn

    return deco


def retriever_info(name: str) -> RetrieverInfo:
    """The :class:`RetrieverInfo` declared by the retriever registered as ``name``."""
    if name not in _INFO:
        raise UnknownNameError(f"unknown retriever {name!r}; choose one of: {', '.join(list_retrievers())}")
    return _INFO[name]


def list_retrievers() -> list[str]:
    return sorted(_RETRIEVERS)


def missing_weights_error(name: str, ranks: str = "images") -> MissingWeightsError:
    """The one refusal of a retriever with learned weights and no checkpoint (``skyrank build`` and :func:`create`
    alike): it would rank ``ranks`` with random, untrained weights."""
    info = retriever_info(name)
    return MissingWeightsError(
        f"--retriever {name} was given no --checkpoint (checkpoint=): it would rank {ranks} with random, untrained "
        "weights and write a valid-looking but meaningless dataset"
        + (f" ({info.weights_hint})" if info.weights_hint else ""),
    )


def check_dataset(name: str, dataset: str | None) -> None:
    """Refuse, with :class:`~skyrank.errors.OptionError`, a benchmark (its evaluation protocol) the retriever
    ``name`` was not made for (:attr:`RetrieverInfo.datasets`)."""
    info = retriever_info(name)
    if dataset is None or info.datasets is None or dataset in info.datasets:
        return
    raise OptionError(
        f"the {name} retriever was made for {', '.join(info.datasets)}, not {dataset}"
        + (f": {info.refusal}" if info.refusal else ""),
        hint="Use --retriever sample4geo (Sample4Geo's released weights cover VIGOR, CVUSA, CVACT and "
        "University-1652) or --retriever precomputed with your own embeddings.",
    )


def create(
    name: str,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    *,
    dataset: str | None = None,
    random_weights: bool = False,
    **kwargs: Any,
) -> Retriever:
    """Build the retriever registered as ``name`` and load ``checkpoint`` strictly.

    A retriever with learned weights (``sample4geo``, ``mccg``, ``sdpl``) and no ``checkpoint`` is refused with
    :class:`MissingWeightsError` (as ``skyrank build`` refuses it) unless ``random_weights=True`` asks for random,
    untrained weights on purpose (tests, timing, the start of training).

    ``dataset``: the evaluation protocol of the benchmark it will encode (``"vigor"``, ``"cvusa"``, ...; the build
    passes it): refused by a retriever not made for it (:func:`check_dataset`) before any weight is read, and kept
    as :attr:`Retriever.dataset` for preprocessing that depends on it.
    """
    if name not in _RETRIEVERS:
        raise UnknownNameError(f"unknown retriever {name!r}; choose one of: {', '.join(list_retrievers())}")
    check_dataset(name, dataset)
    if checkpoint is None and not random_weights and retriever_info(name).learned_weights:
        raise missing_weights_error(name)
    retriever = _RETRIEVERS[name](checkpoint=checkpoint, device=device, **kwargs)
    retriever.name = name
    retriever.dataset = dataset
    return retriever
