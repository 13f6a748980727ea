"""Train any SkyRank retriever architecture with Sample4Geo's recipe (for benchmarks without released weights).

Each architecture is described by the :class:`~skyrank.retrievers._training.TrainingSpec` its retriever module
registers; this module never names one.

Architectures (``arch``), each saved in the layout its retriever loads strictly, like an official release:

- ``"sample4geo"`` (Sample4Geo's ConvNeXt-B, ``convnext_base.fb_in22k_ft_in1k_384``, 384 px) or any timm name
  (``"convnext_atto"`` for CPU demos; 128 px unless ``image_size`` says otherwise): ``Sample4GeoModel``
  (``model.*`` + ``logit_scale``) → ``weights_e{N}.pth`` / ``weights_end.pth``; load with
  ``create("sample4geo", checkpoint=..., arch=<timm name>, image_size=...)``.
- ``"mccg"``: :class:`~skyrank.retrievers.mccg.MCCGModel` (ConvNeXt-Tiny in Facebook's layout, triplet attention,
  ``block`` 2), 256 px by default (any multiple of 32) → ``net_e{N}.pth`` / ``net_end.pth`` in MCCG's
  ``two_view_net`` layout (``model_1.*``; MCCG itself names its files ``net_XXX.pth``) and ``opts.yaml``; load with
  ``create("mccg", checkpoint=".../net_end.pth", opts=".../opts.yaml")``.
- ``"sdpl"``: :class:`~skyrank.retrievers.sdpl.SDPLModel` (ResNet-50 stride 1, shifting-dense partition, ten
  ClassBlocks), 512 px by default (256, 384, 512, ...) → ``net_e{N}.pth`` / ``net_end.pth`` in SDPL's layout
  (with the duplicated ``model_2.*`` keys) and ``opts.yaml``; load with ``create("sdpl", checkpoint=..., opts=...)``.

For MCCG and SDPL the InfoNCE below is applied to the model's own retrieval descriptor
(``forward_descriptor``: the per-part L2 / √P normalised, flattened ClassBlock bottlenecks, without flip, in train
mode, so the heads' dropout is active as in the original training); the learned ``logit_scale`` lives in the trainer
(saved in ``train_state.pth``, never in the weights, which stay exactly the official layout). ``nclasses`` = the
number of training classes; the ClassBlock *classifiers* (the last Linear of each head) are kept so that the file has
the official layout but receive no gradient under InfoNCE: they stay at their initialisation, and ``recipe.json``
says so (``heads``). The original cross-entropy recipes (``forward_logits``) are not what this module trains.

Recipe (Deuser et al., "Sample4Geo: Hard Negative Sampling For Cross-View Geo-Localisation", ICCV 2023; facts from
https://github.com/Skyy93/Sample4Geo ``train_university.py``, ``sample4geo/loss.py`` and
``sample4geo/dataset/university.py``; no code copied):

- **Loss**: the symmetric InfoNCE of the paper, for a batch of B (drone, satellite) pairs of B *different* locations
  with L2-normalised embeddings q_i (drone) and r_i (satellite)::

      L_InfoNCE(q, R) = -log( exp(q . r_+ / tau) / sum_{i=1..B} exp(q . r_i / tau) )

  applied in both directions (drone→satellite rows and satellite→drone columns of the B x B logit matrix) and
  averaged; ``1/tau = logit_scale.exp()`` is learned (initialised to ``1/0.07``), and, as in Sample4Geo's code, the
  cross-entropy uses label smoothing 0.1. Every other pair of the batch is a negative.
- **Batches**: one drone/satellite pair per class per batch (Sample4Geo's "custom sampling"), so no batch holds a
  false negative. Each epoch uses every drone image once: per class the drone images are shuffled, and batches draw
  B distinct classes, weighted by how many images each class still has; the few pairs that cannot fill a batch of
  distinct classes are dropped.
- **Model**: one network shared by both views (as in Sample4Geo, MCCG's and SDPL's ``share_weight``). Built with
  random weights (nothing is downloaded); pass ``init_checkpoint`` to start from weights you downloaded yourself:
  a Sample4Geo checkpoint (sample4geo/timm); an official-layout MCCG/SDPL checkpoint, or the bare backbone the
  originals start from (Facebook's ConvNeXt-Tiny state dict, optionally under ``"model"``, for MCCG; torchvision's
  ResNet-50 for SDPL). Loading is strict except that tensors whose shape depends on the class count (the ClassBlock
  classifiers, the backbone's unused ImageNet head/fc) keep the new model's own initialisation when they differ.
- **Optimiser**: AdamW (lr 1e-3, weight decay 0.01 = torch's default, which Sample4Geo keeps), gradient-norm clip
  100, linear warm-up over the first 10% of steps then cosine decay to 0 (Sample4Geo: 0.1 warm-up epochs of a
  1-epoch run). fp16 autocast + GradScaler on CUDA (Sample4Geo's mixed precision; accelerate's ``Accelerator`` with
  ``clip_grad_norm_``, as SkyLink's trainer), float32 on CPU.
- **Augmentation** (light; Sample4Geo's own list in brackets): both views flipped horizontally together with
  p = 0.5 [same]; colour jitter 0.15 (brightness, contrast, saturation, hue) with p = 0.5 [same]; satellite rotated
  by a random multiple of 90 degrees [same]; drone random-resized crop (scale 0.8-1, aspect 0.9-1.1) [ours; Sample4Geo
  resizes only]; resampling bilinear, bicubic for MCCG/SDPL (their test-time resize). Not reproduced: JPEG
  re-compression, blur/sharpen, grid/coarse dropout.
- **Epochs**: Sample4Geo trains University-1652 for 1 epoch from ImageNet weights. From random init many more are
  needed; the default here (10) suits small benchmarks.

Output folder: ``weights_e{epoch}.pth`` (MCCG/SDPL: ``net_e{epoch}.pth``) after each epoch and ``weights_end.pth``
(``net_end.pth``) at the end (plain state dicts in the official layout, written to a temporary file and renamed),
``opts.yaml`` for MCCG/SDPL (``h``, ``w``, ``block``, ``nclasses``, ``droprate``, ... in the format their
``read_opts`` reads), ``train_state.pth`` (optimizer/scaler state and, for MCCG/SDPL, ``logit_scale`` of the last
epoch; tensors and plain numbers only, loadable with ``torch.load(weights_only=True)``) and ``recipe.json`` (every
hyper-parameter, the data, per-epoch loss and time; ``retriever`` is the registry name to load the weights with,
``load_with`` the call). ``resume=True`` continues after the last finished epoch and
gives the same weights as an uninterrupted run (each epoch's sampling and augmentation are seeded by
``(seed, epoch)``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from skyrank.errors import BadImageError, OptionError, OutputExistsError, TrainingError
from skyrank.images import open_rgb
from skyrank.losses import symmetric_infonce
from skyrank.retrievers._base import IMAGENET_MEAN, IMAGENET_STD
from skyrank.retrievers._training import training_spec
from skyrank.workers import worker_init

#: Keys of recipe.json that must match for ``resume``.
_RESUME_KEYS = (
    "benchmark",
    "altitude",
    "arch",
    "image_size",
    "epochs",
    "batch_size",
    "lr",
    "label_smoothing",
    "weight_decay",
    "warmup",
    "clip_grad",
    "seed",
    "amp",
    "init_checkpoint",
    "retriever",
    "block",
)

#: What a recipe.json written before a key existed meant by it (runs of the sample4geo-only trainer).
_LEGACY_VALUES: dict[str, Any] = {"retriever": "sample4geo", "block": None}

#: Decoded training images are kept in memory (per DataLoader worker) when they take at most this much.
_DECODED_CACHE_BYTES = 256 * 2**20

_INFONCE = "symmetric InfoNCE (Sample4Geo), label smoothing, learned logit_scale"


@dataclass
class TrainRecipe:
    """Every hyper-parameter of a run (written to ``recipe.json``)."""

    benchmark: str
    root: str
    altitude: str | None
    arch: str
    image_size: int
    epochs: int
    batch_size: int  # classes (= pairs) per batch, as requested
    lr: float
    label_smoothing: float
    weight_decay: float
    warmup: float  # fraction of all steps
    clip_grad: float | None
    seed: int
    amp: str
    init_checkpoint: str | None
    retriever: str = "sample4geo"  # the registry name to load the weights with
    block: int | None = None  # MCCG's block (None for the other architectures)
    loss: str = _INFONCE
    sampler: str = "one drone/satellite pair per class per batch"


class ClassUniqueBatchSampler(Sampler[list[int]]):
    """Batches of pair indices whose classes are all distinct (one pair per class per batch).

    Per epoch, each class's pairs are shuffled; every batch draws ``batch_size`` distinct classes without
    replacement, with probability proportional to the pairs each class has left, and takes the next pair of each.
    Stops when fewer than ``batch_size`` classes have pairs left (those pairs are dropped). Deterministic in
    ``(seed, epoch)``; call :meth:`set_epoch` before iterating.
    """

    def __init__(self, pair_labels: Sequence[int], batch_size: int, seed: int = 0) -> None:
        self.pair_labels = np.asarray(pair_labels, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.n_classes = int(len(np.unique(self.pair_labels)))
        if self.batch_size > self.n_classes:
            raise ValueError(f"batch_size {batch_size} > {self.n_classes} classes")
        self._epoch = 0
        self._batches = self._make(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self._epoch:
            self._epoch = epoch
            self._batches = self._make(epoch)

    def _make(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        by_class: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(self.pair_labels.tolist()):
            by_class[c].append(i)
        classes = np.array(sorted(by_class), dtype=np.int64)
        queues = [list(rng.permutation(by_class[c])) for c in classes.tolist()]
        left = np.array([len(q) for q in queues], dtype=np.float64)
        batches: list[list[int]] = []
        while (left > 0).sum() >= self.batch_size:
            chosen = rng.choice(len(classes), size=self.batch_size, replace=False, p=left / left.sum())
            batches.append([int(queues[c].pop()) for c in chosen.tolist()])
            left[chosen] -= 1
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self._batches))

    def __len__(self) -> int:
        return len(self._batches)


class EpochKeyedBatches(Sampler[list[tuple[int, int]]]):
    """A :class:`ClassUniqueBatchSampler`'s batches with each index keyed by the epoch: ``[(epoch, i), ...]``."""

    def __init__(self, sampler: ClassUniqueBatchSampler) -> None:
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler._epoch
        return iter([[(epoch, i) for i in batch] for batch in self.sampler])

    def __len__(self) -> int:
        return len(self.sampler)


def cpu_threads(num_workers: int = 0) -> int:
    """Intra-op threads for CPU training on a possibly shared machine: the cores this process may run on, less one
    per DataLoader worker, at least 1 (and no more than torch's default).

    On a shared 2-core machine, two OpenMP threads that wait on each other at every barrier while another process
    holds one of the cores run many times slower than one thread (BENCHMARKS.md, "The first build"). The count does
    not follow the load average, so that a run's weights do not depend on what else was running.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(torch.get_num_threads(), cores - num_workers))


class PairDataset(Dataset):
    """``(drone, satellite)`` training tensors for pair ``i`` (drone image i with a satellite image of its class)."""

    def __init__(
        self,
        root: Path,
        drone_ids: Sequence[str],
        pair_labels: Sequence[int],
        satellite_ids: Sequence[Sequence[str]],
        image_size: int,
        interpolation: str = "bilinear",
        seed: int = 0,
        cache_decoded: bool = False,
    ) -> None:
        self.root = root
        self.drone_ids = list(drone_ids)
        self.pair_labels = list(pair_labels)
        self.satellite_ids = [list(s) for s in satellite_ids]  # by class index
        self.size = int(image_size)
        self.interpolation = interpolation  # the retriever's test-time resampling (bicubic for MCCG/SDPL)
        self.seed = int(seed)
        #: decoded uint8 images kept across epochs (small benchmarks only: the caller decides); each DataLoader
        #: worker holds its own copy, so it pays with persistent workers
        self.cache: dict[str, torch.Tensor] | None = {} if cache_decoded else None

    def __len__(self) -> int:
        return len(self.drone_ids)

    def _open(self, image_id: str) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        if self.cache is not None and image_id in self.cache:
            return self.cache[image_id]
        try:
            img = open_rgb(self.root / image_id, draft_size=self.size * 5 // 4)  # JPEG: decode at a reduced scale
        except BadImageError as e:
            raise BadImageError(f"training image {image_id} (under {self.root}): {e}", paths=[image_id]) from e
        t = TF.pil_to_tensor(img)
        if self.cache is not None:
            self.cache[image_id] = t
        return t

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``key``: an index, or ``(epoch, index)`` whose augmentation is seeded by ``(seed, epoch, index)``
        alone, so that results do not depend on the number of DataLoader workers (or on a resume)."""
        if isinstance(key, tuple):
            epoch, index = key
            item_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed)
                return self._augmented(index)
        return self._augmented(key)

    def _augmented(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import transforms as T
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        s = self.size
        sats = self.satellite_ids[self.pair_labels[index]]
        sat_id = sats[int(torch.randint(len(sats), ()).item())] if len(sats) > 1 else sats[0]
        d = self._open(self.drone_ids[index])
        g = self._open(sat_id)
        bil = InterpolationMode(self.interpolation)
        i, j, h, w = T.RandomResizedCrop.get_params(d, scale=(0.8, 1.0), ratio=(0.9, 1.1))
        d = TF.resized_crop(d, i, j, h, w, [s, s], interpolation=bil, antialias=True)
        g = TF.resize(g, [s, s], interpolation=bil, antialias=True)
        if torch.rand(()) < 0.5:  # flip both views together (Sample4Geo prob_flip)
            d, g = TF.hflip(d), TF.hflip(g)
        jitter = T.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.15, hue=0.15)
        if torch.rand(()) < 0.5:
            d = jitter(d)
        if torch.rand(()) < 0.5:
            g = jitter(g)
        g = torch.rot90(g, int(torch.randint(4, ()).item()), dims=(1, 2))
        d = TF.normalize(d.float().div_(255.0), IMAGENET_MEAN, IMAGENET_STD)
        g = TF.normalize(g.float().div_(255.0), IMAGENET_MEAN, IMAGENET_STD)
        return d, g


def lr_at(step: int, total: int, base_lr: float, warmup: float) -> float:
    """Linear warm-up over ``warmup * total`` steps, then cosine decay to 0 (``step`` counts from 0)."""
    n_warm = int(round(warmup * total))
    if step < n_warm:
        return base_lr * (step + 1) / n_warm
    progress = min(1.0, (step - n_warm) / max(1, total - n_warm))
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_accelerator(amp: str, *, cpu: bool) -> Any:
    """accelerate's ``Accelerator`` for one training run: fp16 autocast with a GradScaler (initial scale 2^10),
    bf16 autocast, or float32 (``amp="fp32"``); no model or device placement (the trainer places its tensors).

    accelerate keeps one precision state per process and refuses another once set, so the run starts from a clean
    precision state and :func:`release_accelerator` clears it afterwards: a SkyLink run in another precision can
    precede or follow it in the same process. The process group (accelerate's ``PartialState``) is kept.
    """
    from accelerate import Accelerator
    from accelerate.utils import GradScalerKwargs

    release_accelerator()
    return Accelerator(
        mixed_precision={"fp16": "fp16", "bf16": "bf16", "fp32": "no"}[amp], cpu=cpu, device_placement=False,
        kwargs_handlers=[GradScalerKwargs(init_scale=2.0**10)],
    )  # fmt: skip


def release_accelerator() -> None:
    """Forget accelerate's per-process precision state (not the process group)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_json(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _last_epoch(out_dir: Path, prefix: str = "weights") -> int:
    done = []
    for p in out_dir.glob(f"{prefix}_e*.pth"):
        stem = p.stem[len(prefix) + 2 :]
        if stem.isdigit():
            done.append(int(stem))
    return max(done, default=0)


# --------------------------------------------------------------------------------------------------- architectures
def resolve_arch(arch: str, image_size: int | None) -> tuple[str, str, int]:
    """``(retriever, arch, image_size)`` for a training ``arch``: the registry name that loads the result, the
    architecture recorded in ``recipe.json`` and the input side (``image_size`` or the architecture's default,
    checked against what it accepts), from the retriever's registered :class:`TrainingSpec`.

    Raises:
        ValueError: an input side the architecture cannot take (MCCG: a multiple of 32; SDPL: 256, 384, 512, ...).
    """
    spec = training_spec(arch)
    recorded, size = spec.resolve(arch, image_size)
    return spec.retriever, recorded, size


class _Target:
    """The trainable module of one architecture, its ``logit_scale`` and how its checkpoints are written and read,
    all from the retriever's :class:`~skyrank.retrievers._training.TrainingSpec`.

    ``logit_scale`` is the model's own parameter when it is part of the retriever's layout (Sample4Geo); otherwise
    (``spec.external_scale``: MCCG, SDPL) a trainer parameter, kept out of the state dict, saved in
    ``train_state.pth``.
    """

    def __init__(self, retriever: str, arch: str, image_size: int, nclasses: int, block: int) -> None:
        self.spec = training_spec(retriever)
        self.retriever, self.arch, self.image_size = retriever, arch, image_size
        self.block: int | None = self.spec.check_block(block)
        self.nclasses: int | None = nclasses if self.spec.classifier_heads else None
        self.model: torch.nn.Module = self.spec.build(arch, image_size, nclasses, block)
        if self.spec.external_scale:
            self.logit_scale: torch.nn.Parameter = torch.nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))
        else:
            self.logit_scale = self.model.logit_scale  # type: ignore[assignment]
        self.prefix, self.interpolation = self.spec.prefix, self.spec.interpolation

    @property
    def external_scale(self) -> bool:
        """Whether ``logit_scale`` is a trainer parameter rather than part of the weights."""
        return self.spec.external_scale

    def to(self, device: torch.device) -> _Target:
        self.model.to(device)
        if self.external_scale:
            self.logit_scale.data = self.logit_scale.data.to(device)
        return self

    def parameters(self) -> list[torch.nn.Parameter]:
        """Everything the optimiser updates (the model, then the trainer's ``logit_scale`` where it is separate)."""
        return list(self.model.parameters()) + ([self.logit_scale] if self.external_scale else [])

    def descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable retrieval descriptor of a batch (one forward pass for both views)."""
        fwd = getattr(self.model, "forward_descriptor", None)
        return fwd(x) if fwd is not None else self.model(x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in the retriever's official layout (CPU copies)."""
        return self.spec.state_dict(self.model)

    def load(self, checkpoint: str | Path) -> None:
        """Strict load of a checkpoint in the official layout (as the retriever loads it)."""
        self.spec.load(self.model, checkpoint)

    def init_from(self, checkpoint: str | Path) -> None:
        """Starting weights (see the module docstring): strict, except class-count-shaped tensors that differ."""
        self.spec.init_from(self.model, checkpoint)

    def opts(self, recipe: TrainRecipe) -> dict[str, Any] | None:
        """The ``opts.yaml`` of a run whose retriever reads one (the fields its ``read_opts`` reads, plus the run's
        settings); None otherwise."""
        common = {
            "name": Path(recipe.root).name,
            "data_dir": recipe.root,
            "h": self.image_size,
            "w": self.image_size,
            "nclasses": self.nclasses,
            "views": 2,
            "share": True,
            "batchsize": recipe.batch_size,
            "lr": recipe.lr,
            "num_epochs": recipe.epochs,
            "seed": recipe.seed,
            "trained_by": "skyrank retriever train (Sample4Geo's symmetric InfoNCE; classifiers unused)",
        }
        return self.spec.opts(common, self.block)

    def load_with(self, out_dir: Path) -> str:
        return self.spec.load_with(out_dir, self.arch, self.image_size)

    def heads_note(self) -> str | None:
        return self.spec.heads_note(self.nclasses)


def _atomic_yaml(obj: Any, path: Path) -> None:
    import yaml

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def _training_data(benchmark: str, root: Path, altitude: str | int | None):
    from skyrank.benchmarks import get_benchmark

    split = get_benchmark(benchmark).training_pairs(root, altitude)
    sats: dict[str, list[str]] = defaultdict(list)
    for rec in split.gallery:
        sats[rec.label].append(rec.image_id)
    labels = sorted({r.label for r in split.queries} & set(sats))
    if len(labels) < 2:
        raise TrainingError(
            f"{benchmark} at {root}: {len(labels)} location(s) have both drone and satellite training images; "
            "contrastive training needs at least 2"
        )
    index = {lab: i for i, lab in enumerate(labels)}
    drone = [r for r in split.queries if r.label in index]
    no_sat = sorted({r.label for r in split.queries} - set(sats))
    return (
        [r.image_id for r in drone],
        [index[r.label] for r in drone],
        [sorted(sats[lab]) for lab in labels],
        labels,
        no_sat,
    )


def train_retriever(
    benchmark: str,
    root: str | Path | None,
    out_dir: str | Path,
    *,
    arch: str = "convnext_atto",
    altitude: str | int | None = None,
    image_size: int | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    label_smoothing: float = 0.1,
    weight_decay: float = 0.01,
    warmup: float = 0.1,
    clip_grad: float | None = 100.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    amp: str = "fp16",
    num_workers: int = 0,
    init_checkpoint: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
    block: int = 2,
) -> Path:
    """Train a retriever with Sample4Geo's recipe on ``benchmark``'s training pairs; returns the final checkpoint.

    The result is ``out_dir/weights_end.pth`` (sample4geo/timm) or ``out_dir/net_end.pth`` with ``opts.yaml``
    beside it (mccg, sdpl), in the layout the retriever named by ``recipe.json``'s ``retriever`` loads strictly.

    Args:
        benchmark: a registered benchmark name; its ``training_pairs(root, altitude)`` gives drone queries and
            satellite gallery images sharing labels.
        root: the benchmark root; ``None`` for ``synthetic``: the cached built-in benchmark (generated on first use).
        out_dir: the run folder (checkpoints, ``train_state.pth``, ``recipe.json``, ``opts.yaml``).
        arch: ``"mccg"``, ``"sdpl"``, ``"sample4geo"`` (= ``convnext_base.fb_in22k_ft_in1k_384``) or a timm
            architecture (``convnext_atto`` for CPU demos) in the ``sample4geo`` layout.
        altitude: SUES-200 altitude (one model per altitude).
        image_size: square training input; default: 384 for ``"sample4geo"``, 256 for MCCG (a multiple of 32),
            512 for SDPL (256, 384, 512, ...), 128 for other timm names. Load the result at the same size (MCCG/SDPL:
            ``opts.yaml`` records it).
        epochs, batch_size, lr, label_smoothing, weight_decay, warmup, clip_grad: see the module docstring;
            ``batch_size`` counts pairs (= distinct classes) and is capped at the number of classes.
        seed: seeds model init, sampling and augmentation (per epoch).
        device: ``"cpu"``, ``"cuda"``, ...
        amp: ``"fp16"`` (default, with GradScaler), ``"bf16"`` or ``"fp32"``; used on CUDA only.
        num_workers: DataLoader workers decoding and augmenting images.
        init_checkpoint: optional starting weights (see the module docstring).
        progress: tqdm bar per epoch and one summary line per epoch.
        resume: continue after the last finished epoch in ``out_dir`` (starts fresh when there is none).
        block: MCCG's number of triplet-attention part heads (1 or 2; ignored by the other architectures).

    Raises:
        OutputExistsError: ``out_dir`` holds a run and ``resume`` is false.
        TrainingError: non-finite loss, a resume whose recipe differs, too few classes.
        ValueError: an unknown ``amp``, ``epochs`` < 1, an ``image_size`` the architecture cannot take.
    """
    if amp not in ("fp16", "bf16", "fp32"):
        raise ValueError(f"amp must be 'fp16', 'bf16' or 'fp32', got {amp!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if root is None and benchmark != "synthetic":
        raise OptionError(f"--root is required for {benchmark}: the folder of your copy of the benchmark")
    if root is None:
        from skyrank.benchmarks.synthetic import ensure_synthetic

        root = ensure_synthetic(progress=progress)
    retriever, arch, image_size = resolve_arch(arch, image_size)
    spec = training_spec(retriever)
    recorded_block = spec.check_block(block)
    root, out_dir = Path(root), Path(out_dir)
    recipe = TrainRecipe(
        benchmark=benchmark, root=str(root.resolve()), altitude=None if altitude is None else str(altitude),
        arch=arch, image_size=int(image_size), epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
        label_smoothing=float(label_smoothing), weight_decay=float(weight_decay), warmup=float(warmup),
        clip_grad=None if clip_grad is None else float(clip_grad), seed=int(seed), amp=amp,
        init_checkpoint=None if init_checkpoint is None else str(init_checkpoint), retriever=retriever,
        block=recorded_block, loss=_INFONCE + spec.loss_note,
    )  # fmt: skip
    start_epoch, history = resume_point(out_dir, recipe, spec.prefix, resume)
    if start_epoch < 0:  # a finished run: its final checkpoint
        return out_dir / f"{spec.prefix}_end.pth"
    out_dir.mkdir(parents=True, exist_ok=True)
    run = setup_training(recipe, root, out_dir, device=torch.device(device), num_workers=num_workers,
                         block=int(block), start_epoch=start_epoch, history=history, progress=progress)  # fmt: skip
    return fit(run)


def load_with(checkpoint: str | Path) -> str:
    """How to load a checkpoint ``train_retriever`` wrote (``recipe.json``'s ``load_with``; empty when unknown)."""
    recipe = Path(checkpoint).parent / "recipe.json"
    try:
        return str(json.loads(recipe.read_text(encoding="utf-8")).get("load_with", ""))
    except (OSError, ValueError, AttributeError):
        return ""


@dataclass
class TrainingRun:
    """Everything one retriever training holds between its pieces (:func:`setup_training` makes it)."""

    recipe: TrainRecipe
    out_dir: Path
    prefix: str
    device: torch.device
    target: Any  # _Target: the model, its heads and its checkpoint layout
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    sampler: ClassUniqueBatchSampler
    loader: DataLoader
    meta: dict[str, Any]
    steps_per_epoch: int
    start_epoch: int
    history: list[dict[str, Any]]
    progress: bool
    num_workers: int
    scaler_state: dict[str, Any]

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.recipe.epochs

    @property
    def state_path(self) -> Path:
        return self.out_dir / "train_state.pth"


def resume_point(out_dir: Path, recipe: TrainRecipe, prefix: str, resume: bool) -> tuple[int, list[dict[str, Any]]]:
    """Checkpoint piece, before any work: ``(0, [])`` for a fresh run; ``(last finished epoch, its history)`` when
    resuming; ``(-1, history)`` when the run in ``out_dir`` already finished. Refuses a run folder without
    ``resume`` and a resume whose recipe differs."""
    recipe_path = out_dir / "recipe.json"
    history: list[dict[str, Any]] = []
    has_run = any(out_dir.glob("weights_*.pth")) or any(out_dir.glob("net_*.pth"))
    if not (out_dir.exists() and (recipe_path.exists() or has_run)):
        return 0, history
    if not resume:
        raise OutputExistsError(
            f"{out_dir} already holds a training run; pass resume=True (--resume) to continue it, or another --out"
        )
    if recipe_path.exists():
        old = json.loads(recipe_path.read_text(encoding="utf-8"))
        new = asdict(recipe)
        diff = [
            f"{k}: {old.get(k, _LEGACY_VALUES.get(k))!r} -> {new[k]!r}"
            for k in _RESUME_KEYS
            if old.get(k, _LEGACY_VALUES.get(k)) != new[k]
        ]
        if diff:
            raise TrainingError(f"cannot resume {out_dir}: the recipe differs ({'; '.join(diff)})")
        history = list(old.get("history", []))
        if old.get("finished") and (out_dir / f"{prefix}_end.pth").is_file():
            return -1, history
    start_epoch = _last_epoch(out_dir, prefix)
    return start_epoch, [h for h in history if h["epoch"] <= start_epoch]


def setup_training(
    recipe: TrainRecipe, root: Path, out_dir: Path, *, device: torch.device, num_workers: int, block: int,
    start_epoch: int, history: list[dict[str, Any]], progress: bool,
) -> TrainingRun:  # fmt: skip
    """Setup and data pieces: the training pairs, the class-unique batch sampler and its DataLoader, the model
    (from ``init_checkpoint`` or a resumed epoch), AdamW, the run's metadata and ``opts.yaml``."""
    spec = training_spec(recipe.retriever)
    drone_ids, pair_labels, sat_ids, labels, no_sat = _training_data(recipe.benchmark, root, recipe.altitude)
    eff_batch = min(recipe.batch_size, len(labels))
    sampler = ClassUniqueBatchSampler(pair_labels, eff_batch, seed=recipe.seed)
    steps_per_epoch = len(sampler)
    if steps_per_epoch == 0:
        raise TrainingError(f"no full batch of {eff_batch} distinct classes can be formed")
    torch.manual_seed(recipe.seed)
    target = _Target(recipe.retriever, recipe.arch, recipe.image_size, nclasses=len(labels), block=block)
    if recipe.init_checkpoint is not None and start_epoch == 0:
        target.init_from(recipe.init_checkpoint)
    target.to(device)
    n_images = len(drone_ids) + sum(len(s) for s in sat_ids)
    dataset = PairDataset(
        root, drone_ids, pair_labels, sat_ids, recipe.image_size, interpolation=target.interpolation,
        seed=recipe.seed, cache_decoded=n_images * (recipe.image_size * 5 // 4) ** 2 * 3 <= _DECODED_CACHE_BYTES,
    )  # fmt: skip
    loader = DataLoader(
        dataset, batch_sampler=EpochKeyedBatches(sampler), num_workers=num_workers,
        pin_memory=device.type == "cuda", persistent_workers=num_workers > 0, worker_init_fn=worker_init,
    )  # fmt: skip
    params = target.parameters()
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    meta = {
        **asdict(recipe), "effective_batch_size": eff_batch, "classes": len(labels), "nclasses": target.nclasses,
        "heads": target.heads_note(), "pairs": len(drone_ids), "classes_without_satellite": no_sat,
        "steps_per_epoch": steps_per_epoch, "total_steps": steps_per_epoch * recipe.epochs,
        "checkpoint": f"{spec.prefix}_end.pth", "device": str(device), "num_workers": num_workers,
        "versions": {"torch": torch.__version__, "python": platform.python_version(), **spec.versions()},
        "load_with": target.load_with(out_dir),
    }  # fmt: skip
    opts = target.opts(recipe)
    if opts is not None:
        _atomic_yaml(opts, out_dir / "opts.yaml")
    run = TrainingRun(recipe, out_dir, spec.prefix, device, target, params, optimizer, sampler, loader, meta,
                      steps_per_epoch, start_epoch, history, progress, num_workers, {})  # fmt: skip
    if start_epoch > 0:
        restore_checkpoint(run)
    return run


def restore_checkpoint(run: TrainingRun) -> None:
    """Checkpoint piece: the weights of the last finished epoch, and the optimizer, scaler and ``logit_scale``
    state after it (``train_state.pth``, loaded with ``weights_only=True``)."""
    from tqdm.auto import tqdm

    epoch, epochs, target = run.start_epoch, run.recipe.epochs, run.target
    target.load(run.out_dir / f"{run.prefix}_e{epoch}.pth")
    if epoch < epochs:
        if not run.state_path.exists():
            raise TrainingError(f"cannot resume {run.out_dir}: {run.state_path.name} is missing")
        state = torch.load(run.state_path, map_location="cpu", weights_only=True)
        if int(state["epoch"]) != epoch:
            raise TrainingError(
                f"cannot resume {run.out_dir}: {run.state_path.name} is from epoch {int(state['epoch'])}, "
                f"the last checkpoint from epoch {epoch}"
            )
        run.optimizer.load_state_dict(state["optimizer"])
        run.scaler_state = state.get("scaler") or {}
        if target.external_scale:
            with torch.no_grad():
                target.logit_scale.copy_(state["logit_scale"])
    if run.progress:
        tqdm.write(f"resuming {run.out_dir} after epoch {epoch}/{epochs}")


def fit(run: TrainingRun) -> Path:
    """The loop: every remaining epoch (:func:`train_epoch`), a checkpoint after each (:func:`save_checkpoint`), and
    the final weights; precision and clipping through accelerate. Returns the final checkpoint."""
    from tqdm.auto import tqdm

    r, device = run.recipe, run.device
    on_cuda = device.type == "cuda"
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(run.num_workers))
    bar = tqdm(
        total=run.total_steps, initial=run.start_epoch * run.steps_per_epoch, desc=f"train {r.arch} ({r.epochs} "
        "epochs)", unit="step", disable=not run.progress, dynamic_ncols=True,
    )  # fmt: skip
    accelerator = make_accelerator(r.amp if on_cuda else "fp32", cpu=not on_cuda)
    try:
        run.optimizer = accelerator.prepare_optimizer(run.optimizer)
        scaler = accelerator.scaler  # fp16 only: the GradScaler accelerate steps with the optimizer
        if scaler is not None and run.scaler_state:
            scaler.load_state_dict(run.scaler_state)
        for epoch in range(run.start_epoch + 1, r.epochs + 1):
            entry = train_epoch(run, accelerator, epoch, bar)
            run.history.append(entry)
            save_checkpoint(run, epoch, scaler)
            if run.progress:
                bar.write(
                    f"epoch {epoch}/{r.epochs}: loss {entry['loss']:.4f}, {entry['seconds']:.1f} s, "
                    f"{entry['steps']} steps of {run.meta['effective_batch_size']} pairs, logit scale "
                    f"{entry['logit_scale']:.1f}"
                )
    finally:
        release_accelerator()
        bar.close()
        torch.set_num_threads(threads_before)
    end_path = run.out_dir / f"{run.prefix}_end.pth"
    _atomic_save(run.target.state_dict(), end_path)
    _atomic_json({**run.meta, "epochs_done": r.epochs, "history": run.history, "finished": True},
                 run.out_dir / "recipe.json")  # fmt: skip
    return end_path


def train_epoch(run: TrainingRun, accelerator: Any, epoch: int, bar: Any) -> dict[str, Any]:
    """One epoch of :func:`train_step` over the class-unique batches; returns its history entry."""
    r = run.recipe
    torch.manual_seed(r.seed * 1_000_003 + epoch)  # dropout per (seed, epoch); augmentation is keyed per item
    run.sampler.set_epoch(epoch)
    run.target.model.train()
    t0 = time.perf_counter()
    losses: list[float] = []
    for step_in_epoch, (d, g) in enumerate(run.loader):
        step = (epoch - 1) * run.steps_per_epoch + step_in_epoch
        losses.append(train_step(run, accelerator, d, g, step, epoch, step_in_epoch))
        bar.set_postfix_str(f"epoch {epoch}/{r.epochs}, loss {losses[-1]:.3f}", refresh=False)
        bar.update()
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch,
        "loss": float(np.mean(losses)),
        "seconds": round(seconds, 3),
        "lr_end": run.optimizer.param_groups[0]["lr"],
        "logit_scale": float(run.target.logit_scale.detach().exp()),
        "steps": len(losses),
    }


def train_step(
    run: TrainingRun, accelerator: Any, d: torch.Tensor, g: torch.Tensor, step: int, epoch: int, step_in_epoch: int
) -> float:
    """One optimizer step: both views through the one shared network, Sample4Geo's symmetric InfoNCE, backward,
    clipping, AdamW at the warm-up + cosine learning rate of ``step``. Returns the loss."""
    r, target, optimizer = run.recipe, run.target, run.optimizer
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, run.total_steps, r.lr, r.warmup)
    d = d.to(run.device, non_blocking=True)
    g = g.to(run.device, non_blocking=True)
    with accelerator.autocast():
        feats = target.descriptor(torch.cat([d, g]))  # one shared network for both views
    fd, fg = feats.float().chunk(2)
    loss = symmetric_infonce(fd, fg, target.logit_scale.exp(), r.label_smoothing)
    if not torch.isfinite(loss):
        raise TrainingError(f"non-finite loss at epoch {epoch}, step {step_in_epoch}; lower --lr")
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)  # scaled under fp16
    if r.clip_grad is not None:
        accelerator.clip_grad_norm_(run.params, r.clip_grad)  # unscales first under fp16
    optimizer.step()  # the scaler's step and update under fp16
    return float(loss.detach())


def save_checkpoint(run: TrainingRun, epoch: int, scaler: Any) -> None:
    """Checkpoint piece, after each epoch: the weights (official layout), the optimizer/scaler/``logit_scale``
    state for ``resume``, and ``recipe.json`` with the history so far; each written atomically."""
    target = run.target
    _atomic_save(target.state_dict(), run.out_dir / f"{run.prefix}_e{epoch}.pth")
    state = {
        "epoch": epoch,
        "optimizer": run.optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
    }
    if target.external_scale:
        state["logit_scale"] = target.logit_scale.detach().cpu().clone()
    _atomic_save(state, run.state_path)
    _atomic_json({**run.meta, "epochs_done": epoch, "history": run.history}, run.out_dir / "recipe.json")
