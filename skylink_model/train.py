"""Training SkyLink with accelerate (arXiv 2603.08063: Eq. 3 groups, Eq. 6–7 labels, Eq. 8 loss).

One *group* G_z (the ground truth plus the retriever's top-(k−1) hard negatives) is one accumulation unit.
``config.batch_size`` is the number of groups per optimizer step in TOTAL (the paper: 4 on 2 GPUs), whatever the
process count: each process runs one group per micro-step and accumulates ``batch_size / num_processes`` of them
(:func:`batch_layout`), so 1 process × 4 accumulation and 2 processes × 2 accumulation see the same 4 groups per
step (the same ones: :func:`epoch_order` strides one seeded permutation over the processes). The k pairs of a
group may be split into micro-batches of ``micro_batch_size`` pairs: the BCE of Eq. 8 is a sum of independent
per-candidate terms, so each chunk's mean loss is weighted by ``len(chunk) / k`` and the accumulated gradient
equals the whole group's. Under DDP only the last chunk of the last group of a
window all-reduces; under DeepSpeed only it is marked as the accumulation boundary.

The same loop runs on one CPU, one GPU or, through ``accelerate launch`` (with
``skylink_model/accelerate_configs/deepspeed_zero2.yaml`` for the 7B model), several GPUs and nodes. bf16 mixed
precision and gradient checkpointing are used on GPU only.

Checkpoints: ``out_dir/checkpoint-<step>/`` holds the model as :meth:`SkyLinkModel.save_pretrained` writes it (a
usable run folder), the trainable parameters (``trainable_params.safetensors``), accelerate's optimizer, scheduler
and RNG state (``accelerator.save_state``; accelerate reloads them with ``torch.load(weights_only=True)``) and
``trainer_state.json``. The frozen backbone is never written. ``resume=True`` continues from the latest one.

:func:`train_skylink` reads as the recipe, in the shape of a trainer with callbacks: setup (:func:`_setup_accelerator`,
:func:`_build_model`), data (:func:`_load_groups`, :func:`_plan_steps`), the step (:func:`_train_group`:
:func:`_backward_group` then :func:`_optimizer_step`), the callbacks around it (:func:`_on_train_begin`,
:func:`_print_plan`, :func:`_on_step_end`, :func:`_on_train_end`) and the checkpoints (:func:`_save_checkpoint`,
:func:`_resume`), sharing one ``_Run`` state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skylink_model.config import LR_SCHEDULERS, SkyLinkConfig, resolve_prompt
from skylink_model.data import Group, load_skyrank_split, split_chunks, write_validation
from skylink_model.losses import make_loss
from skyrank.errors import OutputExistsError, TrainingError

logger = logging.getLogger(__name__)

TRAIN_LOG_NAME = "train_log.jsonl"
TRAINER_STATE_NAME = "trainer_state.json"
TRAINABLE_PARAMS_NAME = "trainable_params.safetensors"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
SCHEDULERS = LR_SCHEDULERS

# Config fields that must not change between a checkpoint and a resumed run.
_RESUME_KEYS = (
    "base_model",
    "k",
    "threshold",
    "labels",
    "lora_r",
    "lora_alpha",
    "lora_targets",
    "lora_vision",
    "prompt",
    "batch_size",
    "epochs",
    "train_fraction",
    "val_fraction",
    "seed",
    "learning_rate",
    "lr_scheduler",
    "loss",
)


@dataclass
class TrainResult:
    """What a :func:`train_skylink` run did.

    Attributes:
        out_dir: the run folder (final model saved there with ``save_pretrained``).
        steps: optimizer steps completed in total (including those before a resume).
        total_steps: optimizer steps the schedule was built for.
        groups_seen: training groups consumed in total (on this process).
        losses: mean loss (Eq. 8) of each optimizer step of this invocation.
        grad_norms: total gradient norm before clipping of each step (``None`` without ``max_grad_norm``).
        checkpoints: checkpoint folders written by this invocation.
        resumed_from: the checkpoint continued from, if any.
        wall_time_s: seconds this invocation took.
    """

    out_dir: Path
    steps: int
    total_steps: int
    groups_seen: int
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float | None] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    resumed_from: Path | None = None
    wall_time_s: float = 0.0

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``transformers.get_scheduler``'s schedule: linear warm-up from 0 over ``warmup_steps`` optimizer steps (the
    factor is ``step / warmup_steps``, so the first step runs at lr 0), then ``linear`` or ``cosine`` decay to 0 at
    ``total_steps``, or ``constant`` (``constant_with_warmup`` when there is a warm-up)."""
    from transformers import get_scheduler

    if schedule not in SCHEDULERS:
        raise ValueError(f"`lr_scheduler` must be one of {', '.join(SCHEDULERS)}, got {schedule!r}")
    name = "constant_with_warmup" if schedule == "constant" and warmup_steps > 0 else schedule
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The ``checkpoint-<step>`` folder with the highest step that holds a ``trainer_state.json``."""
    out = Path(out_dir)
    if not out.is_dir():
        return None
    found = []
    for child in out.iterdir():
        m = CHECKPOINT_RE.match(child.name)
        if m and child.is_dir() and (child / TRAINER_STATE_NAME).is_file():
            found.append((int(m.group(1)), child))
    return max(found)[1] if found else None


def epoch_order(n_groups: int, epoch: int, seed: int, process_index: int = 0, num_processes: int = 1) -> list[int]:
    """This process's group indices for one epoch: a seeded permutation, strided over processes, equal lengths."""
    perm = np.random.default_rng([seed, epoch]).permutation(n_groups)
    per_process = n_groups // num_processes
    return [int(i) for i in perm[process_index::num_processes][:per_process]]


@dataclass(frozen=True)
class BatchLayout:
    """How ``batch_size`` groups per optimizer step are split: per device × accumulation × processes."""

    total: int
    per_device: int
    accumulation: int
    processes: int

    def describe(self) -> str:
        return (
            f"{self.total} groups per optimizer step = {self.per_device} per device x {self.accumulation} "
            f"accumulation x {self.processes} process(es)"
        )

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def batch_layout(batch_size: int, num_processes: int) -> BatchLayout:
    """Split ``batch_size`` groups per optimizer step (in total) over ``num_processes`` processes.

    Raises:
        TrainingError: ``batch_size`` is not a multiple of the process count (the total could not be kept).
    """
    if num_processes < 1:
        raise ValueError(f"`num_processes` must be ≥ 1, got {num_processes}")
    if batch_size % num_processes:
        lower = max(num_processes, batch_size - batch_size % num_processes)
        raise TrainingError(
            f"--batch-size {batch_size} (groups per optimizer step, in total) cannot be split over {num_processes} "
            f"processes: use a multiple of {num_processes} (e.g. {lower} or {lower + num_processes}), or launch "
            f"with a process count that divides {batch_size}."
        )
    return BatchLayout(batch_size, 1, batch_size // num_processes, num_processes)


def check_process_count(num_processes: int, environ: Any, what: str = "") -> None:
    """Refuse a run whose launcher started more processes (``WORLD_SIZE``) than accelerate sees.

    Seen with accelerate 1.15 + DeepSpeed on a machine without GPUs: every rank reports 1 process and index 0, so
    each would train on the same groups (and ``--batch-size`` would be split wrongly) while DeepSpeed averages them.
    """
    world = int(environ.get("WORLD_SIZE", num_processes))
    if world != num_processes:
        raise TrainingError(
            f"the launcher started {world} processes but accelerate reports {num_processes} ({what}); accelerate's "
            "DeepSpeed support on the CPU is single-process: use --num_processes 1, or torchrun / "
            "`accelerate launch --multi_gpu` without DeepSpeed."
        )


def _trackers(report_to: str | Sequence[str] | None) -> list[str] | None:
    if report_to in (None, "none", []):
        return None
    if report_to == "auto":  # local trackers only: never an account prompt
        import importlib.util

        return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else None
    return [report_to] if isinstance(report_to, str) else list(report_to)


def train_skylink(
    config: SkyLinkConfig,
    data: str | Path,
    data_config: str,
    *,
    out_dir: str | Path,
    images_root: str | Path | None = None,
    split: str = "train",
    max_steps: int | None = None,
    micro_batch_size: int | None = None,
    log_every: int = 10,
    save_every: int | None = None,
    resume: bool = False,
    seed: int | None = None,
    device: str | None = None,
    progress: bool = True,
    lr_scheduler: str | None = None,
    report_to: str | Sequence[str] | None = "auto",
    cache_dir: str | Path | None = None,
    shared_prefix: bool = True,
    mixed_precision: str = "auto",
) -> TrainResult:
    """Train a SkyLink re-ranker on one SkyRank retriever config and save it to ``out_dir``.

    Args:
        config: the :class:`SkyLinkConfig` (backbone, LoRA, k, T, label mode, lr, groups per step, epochs, ...).
        data: a SkyRank folder or Hub repo id; ``data_config`` a retriever config (``sample4geo-university1652-d2s``).
        images_root: the user's benchmark copy, when the dataset carries no images.
        max_steps: stop after this many optimizer steps (the schedule is still built for the full run unless the
            run is shorter).
        micro_batch_size: pairs per forward pass (default ``config.micro_batch_size``, else the whole group).
        log_every: optimizer steps between log lines (console + ``train_log.jsonl`` + accelerate trackers).
        save_every: optimizer steps between checkpoints (``None``: only the final model).
        resume: continue from the latest ``out_dir/checkpoint-<step>``; without it a folder that already holds
            checkpoints is refused.
        seed: overrides ``config.seed`` (data order, LoRA init).
        device: ``"cpu"`` forces the CPU; ``None`` lets accelerate choose.
        lr_scheduler: overrides ``config.lr_scheduler`` (``"linear"``, ``"cosine"`` or ``"constant"``, after
            ``config.warmup_ratio`` warmup); the run's ``skylink_config.json`` records the one used.
        shared_prefix: train each group as one prefix forward + its k continuations + one backward
            (:mod:`skylink_model.prefix`; the same loss and gradients as the per-pair path, one call of the wrapped
            module so DDP / DeepSpeed see one forward). ``micro_batch_size`` then chunks the continuations inside that
            call (bounded activation memory with gradient checkpointing). ``False``, or a family without support
            (logged once), scores every pair in full.
        mixed_precision: ``"auto"`` (bf16 on a bf16-capable GPU, else none), ``"no"``, ``"bf16"`` or ``"fp16"``:
            accelerate's autocast, or under DeepSpeed the engine's whole-module cast (the value head computes in
            fp32 either way).
        report_to: accelerate trackers; ``"auto"`` uses TensorBoard when installed, ``None`` none.

    Raises:
        TrainingError: a non-finite loss or gradient norm (naming the step and the query ids of the batch), or a
            checkpoint that does not match the config on resume.
    """
    started = time.perf_counter()
    config, micro = _run_settings(config, seed, lr_scheduler, micro_batch_size, log_every, save_every)
    out = Path(out_dir)
    resume_dir = _resume_dir(out, resume)
    run = _setup_accelerator(config, out, device, report_to, mixed_precision)
    run = _load_groups(run, data, data_config, split, images_root, cache_dir)
    _plan_steps(run, max_steps)
    _build_model(run, shared_prefix, micro)
    _register_checkpoint_hooks(run)
    if resume_dir is not None:
        _resume(run, resume_dir)
    _on_train_begin(run, out, data, data_config, split)
    _print_plan(run, progress)
    result = TrainResult(
        out_dir=out, steps=run.step, total_steps=run.total_steps, groups_seen=run.groups_seen, resumed_from=resume_dir
    )
    bar = _progress_bar(run, progress)
    log = _StepLog(out / TRAIN_LOG_NAME, log_every, bar)
    run.last_log = time.perf_counter()
    while run.step < run.total_steps:
        synced, grad_norm = _train_group(run, _next_group(run))
        if not synced:
            continue
        _on_step_end(run, result, grad_norm, log)
        if save_every is not None and run.step % save_every == 0 and run.step < run.total_steps:
            result.checkpoints.append(_save_checkpoint(run, out))
    if bar is not None:
        bar.close()
    _on_train_end(run, result, out, resume_dir, data, data_config, split)
    result.steps = run.step
    result.groups_seen = run.groups_seen
    result.wall_time_s = time.perf_counter() - started
    return result


# ---------------------------------------------------------------------------------------------- the run's state
@dataclass
class _Run:
    """What the pieces of :func:`train_skylink` share: set up once, then the step counters the loop advances."""

    config: SkyLinkConfig
    accelerator: Any
    layout: BatchLayout
    trackers: list[str] | None
    use_cuda: bool
    groups: list[Group] = field(default_factory=list)
    images: Any = None
    val_ids: list[str] = field(default_factory=list)
    steps_per_epoch: int = 0
    total_steps: int = 0
    warmup_steps: int = 0
    model: Any = None
    unwrapped: Any = None
    params: list[torch.nn.Parameter] = field(default_factory=list)
    optimizer: Any = None
    scheduler: Any = None
    loss_fn: Any = None
    fast: bool = False
    micro: int | None = None
    step: int = 0
    groups_seen: int = 0
    window: list[Group] = field(default_factory=list)
    window_loss: float = 0.0
    last_log: float = 0.0


# ---------------------------------------------------------------------------------------------- setup
def _run_settings(
    config: SkyLinkConfig,
    seed: int | None,
    lr_scheduler: str | None,
    micro_batch_size: int | None,
    log_every: int,
    save_every: int | None,
) -> tuple[SkyLinkConfig, int | None]:
    """The config with the call's overrides, and the pairs per forward; bad values are refused before any work."""
    if seed is not None and seed != config.seed:
        config = dataclasses.replace(config, seed=seed)
    if lr_scheduler is not None and lr_scheduler != config.lr_scheduler:
        config = dataclasses.replace(config, lr_scheduler=lr_scheduler)
    micro = micro_batch_size if micro_batch_size is not None else config.micro_batch_size
    if micro is not None and micro < 1:
        raise ValueError(f"`micro_batch_size` must be ≥ 1, got {micro}")
    if log_every < 1:
        raise ValueError(f"`log_every` must be ≥ 1, got {log_every}")
    if save_every is not None and save_every < 1:
        raise ValueError(f"`save_every` must be ≥ 1 or None, got {save_every}")
    return config, micro


def _resume_dir(out: Path, resume: bool) -> Path | None:
    """The checkpoint to continue from; a folder holding checkpoints is refused without ``resume``."""
    if not resume and latest_checkpoint(out) is not None:
        raise OutputExistsError(f"{out} already holds checkpoints; pass resume=True (--resume) or another --out.")
    return latest_checkpoint(out) if resume else None


def _setup_accelerator(
    config: SkyLinkConfig, out: Path, device: str | None, report_to: Any, mixed_precision: str
) -> _Run:
    """The accelerator (precision, device, trackers), the batch layout over its processes, and the seed."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    use_cuda = device != "cpu" and torch.cuda.is_available()
    bf16 = use_cuda and torch.cuda.is_bf16_supported()
    trackers = _trackers(report_to)
    # Under `accelerate launch` with a DeepSpeed config the engine runs wherever DeepSpeed's accelerator is (its CPU
    # accelerator included): forcing accelerate's cpu mode would silently drop DeepSpeed.
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    force_cpu = not use_cuda and not deepspeed
    if mixed_precision not in ("auto", "no", "bf16", "fp16"):
        raise ValueError(f"`mixed_precision` must be auto, no, bf16 or fp16, got {mixed_precision!r}")
    if mixed_precision == "auto":
        mixed_precision = "bf16" if bf16 else "no"
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        cpu=force_cpu,
        step_scheduler_with_optimizer=False,
        log_with=trackers,
        project_dir=str(out),
    )
    # The process count is known once the accelerator (and DeepSpeed's process group) is up; DeepSpeed's "auto"
    # gradient_accumulation_steps / train_batch_size are filled from this value in accelerator.prepare().
    check_process_count(accelerator.num_processes, os.environ, f"{accelerator.distributed_type}, {accelerator.device}")
    layout = batch_layout(config.batch_size, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = layout.accumulation
    set_seed(config.seed)
    return _Run(config, accelerator, layout, trackers, use_cuda)


# ---------------------------------------------------------------------------------------------- data (Eq. 3, 6-7)
def _load_groups(run: _Run, data: str | Path, data_config: str, split: str, images_root: Any, cache_dir: Any) -> _Run:
    """The training groups G_z (Eq. 3) with their labels (Eq. 6–7), after the validation locations are held out."""
    split_data = load_skyrank_split(data, data_config, split, images_root=images_root, cache_dir=cache_dir)
    # The pair prompt names the views where the paper's does not fit (street-view queries; issue 20).
    panorama = split_data.ground_is_panorama()
    prompt = resolve_prompt(run.config.prompt, split_data.query_view, split_data.gallery_view, panorama=panorama)
    run.config = dataclasses.replace(run.config, prompt=prompt)
    # Validation locations for the fusion weight (skyrank eval --fuse auto) are held out before anything else.
    split_data, run.val_ids = split_data.without_validation(run.config.val_fraction, run.config.seed)
    split_data = split_data.subsample(run.config.train_fraction, run.config.seed)
    run.groups = split_data.groups(k=run.config.k, threshold=run.config.threshold, labels=run.config.labels)
    run.images = split_data.images
    return run


def _plan_steps(run: _Run, max_steps: int | None) -> None:
    """Optimizer steps per epoch and in total (``max_steps`` caps the schedule), and the warm-up steps."""
    config, layout = run.config, run.layout
    n_local = len(run.groups) // run.accelerator.num_processes
    if n_local < layout.accumulation:
        raise TrainingError(
            f"{len(run.groups)} training groups give fewer than one optimizer step of batch_size={config.batch_size} "
            f"({layout.describe()}); lower --batch-size or raise --train-fraction."
        )
    run.steps_per_epoch = n_local // layout.accumulation
    run.total_steps = run.steps_per_epoch * config.epochs
    if max_steps is not None:
        run.total_steps = min(run.total_steps, int(max_steps))
    run.warmup_steps = int(math.ceil(config.warmup_ratio * run.total_steps))


def _next_group(run: _Run) -> Group:
    """The next group of this process: the epoch's seeded order (:func:`epoch_order`) from the step's window."""
    epoch = run.step // run.steps_per_epoch
    accelerator = run.accelerator
    order = epoch_order(len(run.groups), epoch, run.config.seed, accelerator.process_index, accelerator.num_processes)
    start = (run.step % run.steps_per_epoch) * run.layout.accumulation
    return run.groups[order[start + len(run.window)]]


# ---------------------------------------------------------------------------------------------- model, optimizer
def _build_model(run: _Run, shared_prefix: bool, micro: int | None) -> None:
    """The LoRA model (GPU-only options dropped on the CPU), AdamW, the schedule, the loss (one lookup), the path."""
    from skylink_model.model import get_skylink_model

    config = run.config
    model_config = config
    if not run.use_cuda and config.gradient_checkpointing:
        model_config = dataclasses.replace(config, gradient_checkpointing=False)  # GPU only
    if config.dtype == "auto" and not run.use_cuda:
        model_config = dataclasses.replace(model_config, dtype="float32")
    model = get_skylink_model(model_config, device=run.accelerator.device)
    model.train()
    run.params = [p for p in model.parameters() if p.requires_grad]
    if not run.params:
        raise TrainingError("the model has no trainable parameters (LoRA targets matched nothing?)")
    optimizer = torch.optim.AdamW(run.params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = make_lr_scheduler(optimizer, config.lr_scheduler, run.warmup_steps, run.total_steps)
    run.model, run.optimizer, run.scheduler = run.accelerator.prepare(model, optimizer, scheduler)
    run.unwrapped = run.accelerator.unwrap_model(run.model)
    run.loss_fn = make_loss(config.loss)  # Eq. 8 (bce) or a listwise loss (config.loss)
    run.micro = micro
    run.fast = shared_prefix and run.unwrapped.supports_shared_prefix
    if shared_prefix and not run.fast:
        from skylink_model.prefix import warn_fallback_once

        warn_fallback_once(run.unwrapped)


# ---------------------------------------------------------------------------------------------- step (Eq. 8)
def _score(run: _Run, query_image: Any, candidate_images: list) -> torch.Tensor:
    """The value head's scores of one query against candidates: the shared-prefix path, else pair by pair."""
    from accelerate.utils import DistributedType

    unwrapped = run.unwrapped
    if run.fast:  # the whole group in one call of the wrapped module
        query = unwrapped.process_images([query_image])[0]
        candidates = unwrapped.process_images(candidate_images)
        return run.model(**unwrapped.group_inputs(query, candidates, chunk_size=run.micro))
    if run.accelerator.distributed_type != DistributedType.NO:  # through the wrapper, so DDP / DeepSpeed see it
        inputs = unwrapped.build_pair_inputs([query_image] * len(candidate_images), candidate_images)
        return run.model(**inputs)
    return unwrapped.score_group(query_image, candidate_images)


def _fail(run: _Run, message: str) -> TrainingError:
    """The error of a non-finite loss or norm, naming the step and the window's query ids."""
    ids = [g.query_id for g in run.window]
    return TrainingError(
        f"{message} at step {run.step + 1} (epoch {run.step // run.steps_per_epoch}); query ids: {ids}"
    )


def _backward_group(run: _Run, group: Group) -> None:
    """Forward + backward of one group, in chunks whose weighted losses sum to the group's Eq. 8 loss."""
    from skylink_model.prefix import tuned_threads

    accelerator = run.accelerator
    sync = accelerator.sync_gradients
    query_image = run.images(group.query_id)
    labels = torch.tensor(group.labels, dtype=torch.float32, device=accelerator.device)
    whole = run.fast or not run.loss_fn.decomposable  # a listwise loss needs the group's scores together
    chunks = [(0, len(group))] if whole else split_chunks(len(group), run.micro)
    for c, (lo, hi) in enumerate(chunks):
        no_sync = sync and c != len(chunks) - 1  # only the last chunk of a window all-reduces
        ctx = accelerator.no_sync(run.model) if no_sync else contextlib.nullcontext()
        if no_sync:
            accelerator.sync_gradients = False
        # the fast path's forward + backward on its measured thread count (busy machines; prefix.py)
        threads = tuned_threads(run.unwrapped, hi - lo + 1) if run.fast else contextlib.nullcontext()
        with ctx, threads:
            with accelerator.autocast():
                scores = _score(run, query_image, run.images.many(group.candidate_ids[lo:hi]))
            # Eq. 8 on this chunk, weighted so the chunks of a group sum to the group's mean.
            loss = run.loss_fn(scores.float().unsqueeze(0), labels[lo:hi].unsqueeze(0)) * ((hi - lo) / len(group))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise _fail(run, f"non-finite loss ({value})")
            accelerator.backward(loss)
        if no_sync:
            accelerator.sync_gradients = True
        run.window_loss += value


def _train_group(run: _Run, group: Group) -> tuple[bool, Any]:
    """One accumulation micro-step; at the window's end the clipped optimizer step. Returns (stepped, grad norm)."""
    run.window.append(group)
    grad_norm = None
    with run.accelerator.accumulate(run.model):
        sync = run.accelerator.sync_gradients
        _backward_group(run, group)
        if sync:
            grad_norm = _optimizer_step(run)
    run.groups_seen += 1
    return sync, grad_norm


def _optimizer_step(run: _Run) -> Any:
    """Clip (a non-finite norm is refused), step the optimizer and the schedule, clear the gradients."""
    grad_norm = None
    if run.config.max_grad_norm is not None:
        grad_norm = run.accelerator.clip_grad_norm_(run.params, run.config.max_grad_norm)
        if grad_norm is not None and not math.isfinite(float(grad_norm)):
            raise _fail(run, f"non-finite gradient norm ({float(grad_norm)})")
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return grad_norm


# ---------------------------------------------------------------------------------------------- callbacks: logging
@dataclass
class _StepLog:
    """Where a step's record goes: ``train_log.jsonl``, the console (or the progress bar) and the trackers."""

    path: Path
    every: int
    bar: Any = None


def _progress_bar(run: _Run, progress: bool) -> Any:
    if not (progress and run.accelerator.is_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.total_steps, initial=run.step, desc="training SkyLink", unit="step")


def _on_train_begin(run: _Run, out: Path, data: str | Path, data_config: str, split: str) -> None:
    """Before the first step: the run folder's config and validation ids (main process), and the trackers."""
    config, layout = run.config, run.layout
    if run.accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(out)
        logger.info("batch: %s; %d optimizer steps", layout.describe(), run.total_steps)
        if run.val_ids:
            write_validation(
                out,
                {"data": str(data), "data_config": data_config, "split": split, "fraction": config.val_fraction,
                 "seed": config.seed, "carved_by": "location (skylink_model.data.carve_validation)",
                 "num_queries": len(run.val_ids), "query_ids": run.val_ids},
            )  # fmt: skip
    if run.trackers:
        tracked = {k: str(v) for k, v in config.to_dict().items()}
        tracked.update({f"batch_{k}": str(v) for k, v in layout.to_dict().items()})
        run.accelerator.init_trackers("skylink", config=tracked)


def _print_plan(run: _Run, progress: bool) -> None:
    """Before the first step, on the main process: the plan's one line (:func:`skylink_model.plan.train_summary`)
    from the loaded model's config; printed with the progress bar, else logged; nothing for a config it cannot read."""
    if not run.accelerator.is_main_process:
        return
    from skylink_model.plan import PlanInputs, train_summary

    config, accelerator = run.config, run.accelerator
    frozen = next((p for p in run.unwrapped.parameters() if not p.requires_grad), None)
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    inputs = PlanInputs(
        model=config.base_model,
        k=config.k,
        batch_size=config.batch_size,
        num_gpus=accelerator.num_processes,
        zero_stage=int(plugin.zero_stage) if plugin is not None else 0,
        dtype=str(frozen.dtype).removeprefix("torch.") if frozen is not None else "float32",
        device="cuda" if run.use_cuda else "cpu",
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
        gradient_checkpointing=bool(config.gradient_checkpointing and run.use_cuda),
        shared_prefix=run.fast,
        micro_batch_size=run.micro,
        lora_r=config.lora_r,
        lora_targets=tuple(config.lora_targets) if config.lora_targets is not None else None,
        lora_vision=config.lora_vision,
    )
    model_config = run.unwrapped.backbone.get_base_model().config
    with torch.random.fork_rng(devices=[]):  # the meta model must not move the seeded RNG (pinned first losses)
        line = train_summary(model_config, inputs, run.total_steps, str(accelerator.mixed_precision))
    if line is None:
        return
    logger.info(line)
    if progress:
        print(line, flush=True)


def _on_step_end(run: _Run, result: TrainResult, grad_norm: Any, log: _StepLog) -> None:
    """After an optimizer step: the step's mean loss over the processes, the bar, and every ``log.every`` a record."""
    accelerator = run.accelerator
    run.step += 1
    step_loss = run.window_loss / len(run.window)
    step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "mean"))
    result.losses.append(step_loss)
    result.grad_norms.append(float(grad_norm) if grad_norm is not None else None)
    run.window, run.window_loss = [], 0.0
    if log.bar is not None:
        log.bar.update(1)
        log.bar.set_postfix(loss=f"{step_loss:.4f}")
    if run.step % log.every == 0 or run.step == run.total_steps:
        _log_step(run, step_loss, grad_norm, log)


def _log_step(run: _Run, step_loss: float, grad_norm: Any, log: _StepLog) -> None:
    now = time.perf_counter()
    record = {
        "step": run.step,
        "epoch": round(run.step / run.steps_per_epoch, 4),
        "loss": step_loss,
        "lr": run.scheduler.get_last_lr()[0],
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "groups_seen": run.groups_seen * run.accelerator.num_processes,
        "batch": run.layout.describe(),
        "seconds_per_step": round((now - run.last_log) / log.every, 4),
    }
    run.last_log = now
    if run.accelerator.is_main_process:
        with log.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        message = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        logger.info(message)
        if log.bar is not None:
            log.bar.write(message)
    if run.trackers:
        run.accelerator.log({k: v for k, v in record.items() if v is not None}, step=run.step)


def _on_train_end(
    run: _Run, result: TrainResult, out: Path, resume_dir: Path | None, data: str | Path, data_config: str, split: str
) -> None:
    """After the last step: the final model (``save_pretrained``) and ``train_result.json``; the trackers closed."""
    accelerator = run.accelerator
    accelerator.wait_for_everyone()
    head = _master_head(run)
    if accelerator.is_main_process:
        run.unwrapped.save_pretrained(out, head_weight=head)
        (out / "train_result.json").write_text(
            json.dumps(
                {
                    "steps": run.step,
                    "total_steps": run.total_steps,
                    "groups_seen": run.groups_seen * accelerator.num_processes,
                    "final_loss": result.losses[-1] if result.losses else None,
                    "resumed_from": str(resume_dir) if resume_dir else None,
                    "data": str(data),
                    "data_config": data_config,
                    "split": split,
                    "num_groups": len(run.groups),
                    "batch": run.layout.to_dict(),
                    "num_validation_queries": len(run.val_ids),
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    if run.trackers:
        accelerator.end_training()


# ---------------------------------------------------------------------------------------------- checkpoints
def _master_head(run: _Run) -> torch.Tensor | None:
    """DeepSpeed's fp32 master copy of w (the module holds a bf16/fp16 cast); a collective: every rank calls it."""
    from accelerate.utils import DistributedType

    if run.accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    from deepspeed.utils import safe_get_full_fp32_param

    full = safe_get_full_fp32_param(run.unwrapped.value_head.weight)
    return None if full is None else full.detach().float().cpu()


def _register_checkpoint_hooks(run: _Run) -> None:
    """``accelerator.save_state`` writes the trainable parameters and a usable run folder, never the backbone."""
    from accelerate.utils import DistributedType

    accelerator, unwrapped = run.accelerator, run.unwrapped

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        # Replace accelerate's full-model safetensors (the frozen backbone too) with the trainable parameters
        # and a usable run folder.
        weights.clear()
        head = _master_head(run)
        if accelerator.is_main_process:
            from safetensors.torch import save_file

            trainable = {
                n: p.detach().to("cpu").contiguous() for n, p in unwrapped.named_parameters() if p.requires_grad
            }
            save_file(trainable, str(Path(output_dir) / TRAINABLE_PARAMS_NAME))
            unwrapped.save_pretrained(output_dir, head_weight=head)

    def load_hook(models: list, input_dir: str) -> None:
        from safetensors.torch import load_file

        models.clear()
        path = Path(input_dir) / TRAINABLE_PARAMS_NAME
        if not path.is_file():
            if accelerator.distributed_type == DistributedType.DEEPSPEED:
                return  # the DeepSpeed engine restored the module itself
            raise TrainingError(f"{input_dir} has no {TRAINABLE_PARAMS_NAME}: not a SkyLink checkpoint")
        state = load_file(str(path))
        own = {n: p for n, p in unwrapped.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise TrainingError(
                f"checkpoint {input_dir} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        with torch.no_grad():
            for name, param in own.items():
                param.copy_(state[name].to(param.device, param.dtype))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _resume(run: _Run, resume_dir: Path) -> None:
    """Restore a checkpoint's optimizer, schedule, RNG and counters; refused if the run's settings differ."""
    state = json.loads((resume_dir / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    saved = state.get("config", {})
    now, defaults = run.config.to_dict(), SkyLinkConfig().to_dict()  # older checkpoints lack newer keys
    mismatched = [k for k in _RESUME_KEYS if saved.get(k, defaults.get(k)) != now.get(k)]
    if state.get("num_groups") != len(run.groups):
        mismatched.append(f"num_groups ({state.get('num_groups')} vs {len(run.groups)})")
    num_processes = run.accelerator.num_processes
    if state.get("num_processes") != num_processes:
        mismatched.append(f"num_processes ({state.get('num_processes')} vs {num_processes})")
    if mismatched:
        raise TrainingError(f"cannot resume from {resume_dir}: the run's settings differ in {', '.join(mismatched)}")
    run.accelerator.load_state(str(resume_dir))
    run.step = int(state["step"])
    run.groups_seen = int(state["groups_seen"])
    logger.info("resumed from %s at step %d", resume_dir, run.step)


def _save_checkpoint(run: _Run, out: Path) -> Path:
    """``out/checkpoint-<step>/``: accelerate's state (through the hooks) and, written last, ``trainer_state.json``."""
    accelerator, step = run.accelerator, run.step
    folder = out / f"checkpoint-{step}"
    if accelerator.is_main_process and folder.exists():
        shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        state = {
            "step": step,
            "groups_seen": run.groups_seen,
            "num_groups": len(run.groups),
            "num_processes": accelerator.num_processes,
            "batch": run.layout.to_dict(),
            "config": run.config.to_dict(),
        }
        # Written last: a checkpoint without it is incomplete and is ignored by latest_checkpoint().
        (folder / TRAINER_STATE_NAME).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    accelerator.wait_for_everyone()
    return folder


__all__ = [
    "BatchLayout",
    "TrainResult",
    "batch_layout",
    "check_process_count",
    "train_skylink",
    "latest_checkpoint",
    "make_lr_scheduler",
    "epoch_order",
]
