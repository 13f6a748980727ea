"""Train a ``sample4geo``-layout retriever with Sample4Geo's recipe (for benchmarks without released weights).

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
- **Model**: one timm backbone shared by both views (``Sample4GeoModel``: ``model.*`` + ``logit_scale``), so the
  checkpoint loads with ``skyrank.retrievers.create("sample4geo", checkpoint=..., arch=..., image_size=...)``.
  Built with ``pretrained=False`` (nothing is downloaded); pass ``init_checkpoint`` (a Sample4Geo checkpoint or a
  timm backbone state dict you downloaded yourself) to start from pretrained weights.
- **Optimiser**: AdamW (lr 1e-3, weight decay 0.01 = torch's default, which Sample4Geo keeps), gradient-norm clip
  100, linear warm-up over the first 10% of steps then cosine decay to 0 (Sample4Geo: 0.1 warm-up epochs of a
  1-epoch run). fp16 autocast + GradScaler on CUDA (Sample4Geo's mixed precision), float32 on CPU.
- **Augmentation** (light; Sample4Geo's own list in brackets): both views flipped horizontally together with
  p = 0.5 [same]; colour jitter 0.15 (brightness, contrast, saturation, hue) with p = 0.5 [same]; satellite rotated
  by a random multiple of 90 degrees [same]; drone random-resized crop (scale 0.8-1, aspect 0.9-1.1) [ours; Sample4Geo
  resizes only]. Not reproduced: JPEG re-compression, blur/sharpen, grid/coarse dropout.
- **Epochs**: Sample4Geo trains University-1652 for 1 epoch from ImageNet weights. From random init many more are
  needed; the default here (10) suits small benchmarks.

Output folder: ``weights_e{epoch}.pth`` after each epoch and ``weights_end.pth`` at the end (plain state dicts in the
official layout, written to a temporary file and renamed), ``train_state.pth`` (optimizer/scaler state of the last
epoch; tensors and plain numbers only, loadable with ``torch.load(weights_only=True)``) and ``recipe.json`` (every
hyper-parameter, the data, per-epoch loss and time). ``resume=True`` continues after the last finished epoch and
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
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from skyrank.errors import BadImageError, OutputExistsError, TrainingError
from skyrank.retrievers._base import IMAGENET_MEAN, IMAGENET_STD

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
)


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
    retriever: str = "sample4geo"
    loss: str = "symmetric InfoNCE (Sample4Geo), label smoothing, learned logit_scale"
    sampler: str = "one drone/satellite pair per class per batch"


def symmetric_infonce(
    drone: torch.Tensor, satellite: torch.Tensor, logit_scale: torch.Tensor, label_smoothing: float = 0.1
) -> torch.Tensor:
    """Sample4Geo's symmetric InfoNCE over a batch of matching pairs (row i of each input is the same location).

    ``logits = logit_scale * q @ r.T`` with L2-normalised q (drone) and r (satellite); the loss is the mean of the
    cross-entropies (with ``label_smoothing``) of the rows (q → R) and of the columns (r → Q), target = diagonal.
    ``logit_scale`` is ``exp`` of the model's learned ``logit_scale`` parameter (1/tau).
    """
    q = F.normalize(drone.float(), dim=-1)
    r = F.normalize(satellite.float(), dim=-1)
    logits = logit_scale.float() * q @ r.T
    target = torch.arange(len(q), device=q.device)
    return 0.5 * (
        F.cross_entropy(logits, target, label_smoothing=label_smoothing)
        + F.cross_entropy(logits.T, target, label_smoothing=label_smoothing)
    )


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


class PairDataset(Dataset):
    """``(drone, satellite)`` training tensors for pair ``i`` (drone image i with a satellite image of its class)."""

    def __init__(
        self,
        root: Path,
        drone_ids: Sequence[str],
        pair_labels: Sequence[int],
        satellite_ids: Sequence[Sequence[str]],
        image_size: int,
    ) -> None:
        self.root = root
        self.drone_ids = list(drone_ids)
        self.pair_labels = list(pair_labels)
        self.satellite_ids = [list(s) for s in satellite_ids]  # by class index
        self.size = int(image_size)

    def __len__(self) -> int:
        return len(self.drone_ids)

    def _open(self, image_id: str) -> Image.Image:
        path = self.root / image_id
        try:
            img = Image.open(path)
            img.draft("RGB", (self.size * 5 // 4, self.size * 5 // 4))  # JPEG: decode at a reduced scale
            return img.convert("RGB")
        except Exception as e:
            raise BadImageError(f"training image {image_id} (under {self.root}) could not be decoded: {e}") from e

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import transforms as T
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        s = self.size
        sats = self.satellite_ids[self.pair_labels[index]]
        sat_id = sats[int(torch.randint(len(sats), ()).item())] if len(sats) > 1 else sats[0]
        d = TF.pil_to_tensor(self._open(self.drone_ids[index]))
        g = TF.pil_to_tensor(self._open(sat_id))
        bil = InterpolationMode.BILINEAR
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


def _last_epoch(out_dir: Path) -> int:
    done = []
    for p in out_dir.glob("weights_e*.pth"):
        stem = p.stem[len("weights_e") :]
        if stem.isdigit():
            done.append(int(stem))
    return max(done, default=0)


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
    root: str | Path,
    out_dir: str | Path,
    *,
    arch: str = "convnext_atto",
    altitude: str | int | None = None,
    image_size: int = 128,
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
) -> Path:
    """Train a ``sample4geo``-layout retriever on ``benchmark``'s training pairs; returns ``weights_end.pth``.

    Args:
        benchmark: a registered benchmark name; its ``training_pairs(root, altitude)`` gives drone queries and
            satellite gallery images sharing labels.
        root: the benchmark root.
        out_dir: the run folder (checkpoints, ``train_state.pth``, ``recipe.json``).
        arch: timm architecture (``convnext_atto`` for CPU demos, ``convnext_base.fb_in22k_ft_in1k_384`` for
            Sample4Geo's own model).
        altitude: SUES-200 altitude (one model per altitude).
        image_size: square training input; load the result with the same ``image_size``.
        epochs, batch_size, lr, label_smoothing, weight_decay, warmup, clip_grad: see the module docstring;
            ``batch_size`` counts pairs (= distinct classes) and is capped at the number of classes.
        seed: seeds model init, sampling and augmentation (per epoch).
        device: ``"cpu"``, ``"cuda"``, ...
        amp: ``"fp16"`` (default, with GradScaler), ``"bf16"`` or ``"fp32"``; used on CUDA only.
        num_workers: DataLoader workers decoding and augmenting images.
        init_checkpoint: optional starting weights (loaded strictly like ``create("sample4geo", checkpoint=...)``).
        progress: tqdm bar per epoch and one summary line per epoch.
        resume: continue after the last finished epoch in ``out_dir`` (starts fresh when there is none).

    Raises:
        OutputExistsError: ``out_dir`` holds a run and ``resume`` is false.
        TrainingError: non-finite loss, a resume whose recipe differs, too few classes.
    """
    from tqdm.auto import tqdm

    from skyrank.retrievers.sample4geo import Sample4GeoModel, load_checkpoint

    if amp not in ("fp16", "bf16", "fp32"):
        raise ValueError(f"amp must be 'fp16', 'bf16' or 'fp32', got {amp!r}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    root, out_dir, device = Path(root), Path(out_dir), torch.device(device)
    recipe = TrainRecipe(
        benchmark=benchmark,
        root=str(root.resolve()),
        altitude=None if altitude is None else str(altitude),
        arch=arch,
        image_size=int(image_size),
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr),
        label_smoothing=float(label_smoothing),
        weight_decay=float(weight_decay),
        warmup=float(warmup),
        clip_grad=None if clip_grad is None else float(clip_grad),
        seed=int(seed),
        amp=amp,
        init_checkpoint=None if init_checkpoint is None else str(init_checkpoint),
    )
    recipe_path = out_dir / "recipe.json"
    state_path = out_dir / "train_state.pth"
    end_path = out_dir / "weights_end.pth"
    start_epoch = 0
    history: list[dict[str, Any]] = []
    if out_dir.exists() and (recipe_path.exists() or any(out_dir.glob("weights_*.pth"))):
        if not resume:
            raise OutputExistsError(
                f"{out_dir} already holds a training run; pass resume=True (--resume) to continue it, or another --out"
            )
        if recipe_path.exists():
            old = json.loads(recipe_path.read_text(encoding="utf-8"))
            new = asdict(recipe)
            diff = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in _RESUME_KEYS if old.get(k) != new[k]]
            if diff:
                raise TrainingError(f"cannot resume {out_dir}: the recipe differs ({'; '.join(diff)})")
            history = list(old.get("history", []))
            if old.get("finished") and end_path.is_file():
                return end_path
        start_epoch = _last_epoch(out_dir)
        history = [h for h in history if h["epoch"] <= start_epoch]
    out_dir.mkdir(parents=True, exist_ok=True)

    drone_ids, pair_labels, sat_ids, labels, no_sat = _training_data(benchmark, root, altitude)
    eff_batch = min(int(batch_size), len(labels))
    sampler = ClassUniqueBatchSampler(pair_labels, eff_batch, seed=seed)
    steps_per_epoch = len(sampler)
    if steps_per_epoch == 0:
        raise TrainingError(f"no full batch of {eff_batch} distinct classes can be formed")
    total_steps = steps_per_epoch * epochs
    dataset = PairDataset(root, drone_ids, pair_labels, sat_ids, image_size)
    on_cuda = device.type == "cuda"
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=on_cuda, persistent_workers=False
    )

    torch.manual_seed(seed)
    model = Sample4GeoModel(arch, image_size=image_size)
    if init_checkpoint is not None and start_epoch == 0:
        load_checkpoint(model, init_checkpoint)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[amp] if on_cuda else None
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10) if amp_dtype == torch.float16 else None

    meta = {
        **asdict(recipe),
        "effective_batch_size": eff_batch,
        "classes": len(labels),
        "pairs": len(drone_ids),
        "classes_without_satellite": no_sat,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "device": str(device),
        "num_workers": num_workers,
        "versions": {"torch": torch.__version__, "timm": _timm_version(), "python": platform.python_version()},
        "load_with": f'create("sample4geo", checkpoint=..., arch="{arch}", image_size={int(image_size)})',
    }

    if start_epoch > 0:
        ckpt = out_dir / f"weights_e{start_epoch}.pth"
        load_checkpoint(model, ckpt)
        if start_epoch < epochs:
            if not state_path.exists():
                raise TrainingError(f"cannot resume {out_dir}: {state_path.name} is missing")
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if int(state["epoch"]) != start_epoch:
                raise TrainingError(
                    f"cannot resume {out_dir}: {state_path.name} is from epoch {int(state['epoch'])}, "
                    f"the last checkpoint from epoch {start_epoch}"
                )
            optimizer.load_state_dict(state["optimizer"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        if progress:
            tqdm.write(f"resuming {out_dir} after epoch {start_epoch}/{epochs}")

    for epoch in range(start_epoch + 1, epochs + 1):
        torch.manual_seed(seed * 1_000_003 + epoch)  # augmentation (and worker seeds) per (seed, epoch)
        sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        losses: list[float] = []
        bar = tqdm(loader, desc=f"train epoch {epoch}/{epochs}", disable=not progress, leave=False)
        for step_in_epoch, (d, g) in enumerate(bar):
            step = (epoch - 1) * steps_per_epoch + step_in_epoch
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, lr, warmup)
            d = d.to(device, non_blocking=True)
            g = g.to(device, non_blocking=True)
            ctx = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else nullcontext()
            with ctx:
                feats = model(torch.cat([d, g]))  # one shared backbone for both views
            fd, fg = feats.float().chunk(2)
            loss = symmetric_infonce(fd, fg, model.logit_scale.exp(), label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingError(f"non-finite loss at epoch {epoch}, step {step_in_epoch}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                if clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.close()
        seconds = time.perf_counter() - t0
        entry = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "seconds": round(seconds, 3),
            "lr_end": optimizer.param_groups[0]["lr"],
            "logit_scale": float(model.logit_scale.detach().exp()),
            "steps": len(losses),
        }
        history.append(entry)
        _atomic_save(_cpu_state(model), out_dir / f"weights_e{epoch}.pth")
        _atomic_save(
            {
                "epoch": epoch,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
            },
            state_path,
        )
        _atomic_json({**meta, "epochs_done": epoch, "history": history}, recipe_path)
        if progress:
            tqdm.write(
                f"epoch {epoch}/{epochs}: loss {entry['loss']:.4f}, {seconds:.1f} s, "
                f"{len(losses)} steps of {eff_batch} pairs, logit scale {entry['logit_scale']:.1f}"
            )

    _atomic_save(_cpu_state(model), end_path)
    _atomic_json({**meta, "epochs_done": epochs, "history": history, "finished": True}, recipe_path)
    return end_path


def _timm_version() -> str:
    import timm

    return str(timm.__version__)
