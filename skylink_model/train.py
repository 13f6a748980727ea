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

from skylink_model.config import LR_SCHEDULERS, SkyLinkConfig
from skylink_model.data import Group, load_skyrank_split, split_chunks, write_validation
from skylink_model.losses import RelationalSoftLabelLoss
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
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed

    from skylink_model.model import get_skylink_model

    started = time.perf_counter()
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
    out = Path(out_dir)
    resume_dir = latest_checkpoint(out) if resume else None
    if not resume and latest_checkpoint(out) is not None:
        raise OutputExistsError(f"{out} already holds checkpoints; pass resume=True (--resume) or another --out.")

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
    accum = layout.accumulation
    accelerator.gradient_accumulation_steps = accum
    is_main = accelerator.is_main_process
    set_seed(config.seed)

    # ---------------------------------------------------------------- data (Eq. 3, 6-7)
    split_data = load_skyrank_split(data, data_config, split, images_root=images_root, cache_dir=cache_dir)
    # Validation locations for the fusion weight (skyrank eval --fuse auto) are held out before anything else.
    split_data, val_ids = split_data.without_validation(config.val_fraction, config.seed)
    split_data = split_data.subsample(config.train_fraction, config.seed)
    groups = split_data.groups(k=config.k, threshold=config.threshold, labels=config.labels)
    images = split_data.images
    n_local = len(groups) // accelerator.num_processes
    if n_local < accum:
        raise TrainingError(
            f"{len(groups)} training groups give fewer than one optimizer step of batch_size={config.batch_size} "
            f"({layout.describe()}); lower --batch-size or raise --train-fraction."
        )
    steps_per_epoch = n_local // accum
    total_steps = steps_per_epoch * config.epochs
    if max_steps is not None:
        total_steps = min(total_steps, int(max_steps))
    warmup_steps = int(math.ceil(config.warmup_ratio * total_steps))

    # ---------------------------------------------------------------- model, optimizer, schedule
    model_config = config
    if not use_cuda and config.gradient_checkpointing:
        model_config = dataclasses.replace(config, gradient_checkpointing=False)  # GPU only
    if config.dtype == "auto" and not use_cuda:
        model_config = dataclasses.replace(model_config, dtype="float32")
    model = get_skylink_model(model_config, device=accelerator.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters (LoRA targets matched nothing?)")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = make_lr_scheduler(optimizer, config.lr_scheduler, warmup_steps, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    loss_fn = RelationalSoftLabelLoss()
    distributed = accelerator.distributed_type != DistributedType.NO

    def master_head() -> torch.Tensor | None:
        """DeepSpeed's fp32 master copy of w (the module holds a bf16/fp16 cast); a collective: every rank calls it."""
        if accelerator.distributed_type != DistributedType.DEEPSPEED:
            return None
        from deepspeed.utils import safe_get_full_fp32_param

        full = safe_get_full_fp32_param(unwrapped.value_head.weight)
        return None if full is None else full.detach().float().cpu()

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        # Replace accelerate's full-model safetensors (the frozen backbone too) with the trainable parameters
        # and a usable run folder.
        weights.clear()
        head = master_head()
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

    # ---------------------------------------------------------------- resume
    step = 0
    groups_seen = 0
    if resume_dir is not None:
        state = json.loads((resume_dir / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
        saved = state.get("config", {})
        now, defaults = config.to_dict(), SkyLinkConfig().to_dict()  # older checkpoints lack newer keys
        mismatched = [k for k in _RESUME_KEYS if saved.get(k, defaults.get(k)) != now.get(k)]
        if state.get("num_groups") != len(groups):
            mismatched.append(f"num_groups ({state.get('num_groups')} vs {len(groups)})")
        if state.get("num_processes") != accelerator.num_processes:
            mismatched.append(f"num_processes ({state.get('num_processes')} vs {accelerator.num_processes})")
        if mismatched:
            raise TrainingError(
                f"cannot resume from {resume_dir}: the run's settings differ in {', '.join(mismatched)}"
            )
        accelerator.load_state(str(resume_dir))
        step = int(state["step"])
        groups_seen = int(state["groups_seen"])
        logger.info("resumed from %s at step %d", resume_dir, step)

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(out)
        logger.info("batch: %s; %d optimizer steps", layout.describe(), total_steps)
        if val_ids:
            write_validation(
                out,
                {"data": str(data), "data_config": data_config, "split": split, "fraction": config.val_fraction,
                 "seed": config.seed, "carved_by": "location (skylink_model.data.carve_validation)",
                 "num_queries": len(val_ids), "query_ids": val_ids},
            )  # fmt: skip
    if trackers:
        tracked = {k: str(v) for k, v in config.to_dict().items()}
        tracked.update({f"batch_{k}": str(v) for k, v in layout.to_dict().items()})
        accelerator.init_trackers("skylink", config=tracked)

    log_path = out / TRAIN_LOG_NAME
    result = TrainResult(
        out_dir=out, steps=step, total_steps=total_steps, groups_seen=groups_seen, resumed_from=resume_dir
    )
    bar = None
    if progress and is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="training SkyLink", unit="step")

    fast = shared_prefix and unwrapped.supports_shared_prefix
    if shared_prefix and not fast:
        from skylink_model.prefix import warn_fallback_once

        warn_fallback_once(unwrapped)
    from skylink_model.prefix import tuned_threads

    def score(query_image: Any, candidate_images: list) -> torch.Tensor:
        if fast:  # the whole group in one call of the wrapped module
            query = unwrapped.process_images([query_image])[0]
            candidates = unwrapped.process_images(candidate_images)
            return model(**unwrapped.group_inputs(query, candidates, chunk_size=micro))
        if distributed:  # through the wrapper's forward, so DDP / DeepSpeed see the pass
            inputs = unwrapped.build_pair_inputs([query_image] * len(candidate_images), candidate_images)
            return model(**inputs)
        return unwrapped.score_group(query_image, candidate_images)

    def fail(message: str, window: list[Group]) -> TrainingError:
        ids = [g.query_id for g in window]
        return TrainingError(f"{message} at step {step + 1} (epoch {step // steps_per_epoch}); query ids: {ids}")

    window: list[Group] = []
    window_loss = 0.0
    last_log = time.perf_counter()
    while step < total_steps:
        epoch = step // steps_per_epoch
        order = epoch_order(len(groups), epoch, config.seed, accelerator.process_index, accelerator.num_processes)
        start = (step % steps_per_epoch) * accum
        group = groups[order[start + len(window)]]
        window.append(group)
        with accelerator.accumulate(model):
            sync = accelerator.sync_gradients
            query_image = images(group.query_id)
            labels = torch.tensor(group.labels, dtype=torch.float32, device=accelerator.device)
            chunks = [(0, len(group))] if fast else split_chunks(len(group), micro)
            for c, (lo, hi) in enumerate(chunks):
                final_chunk = c == len(chunks) - 1
                no_sync = sync and not final_chunk
                ctx = accelerator.no_sync(model) if no_sync else contextlib.nullcontext()
                if no_sync:
                    accelerator.sync_gradients = False
                # the fast path's forward + backward on its measured thread count (busy machines; prefix.py)
                threads = tuned_threads(unwrapped, hi - lo + 1) if fast else contextlib.nullcontext()
                with ctx, threads:
                    with accelerator.autocast():
                        scores = score(query_image, images.many(group.candidate_ids[lo:hi]))
                    # Eq. 8 on this chunk, weighted so the chunks of a group sum to the group's mean.
                    loss = loss_fn(scores.float().unsqueeze(0), labels[lo:hi].unsqueeze(0)) * ((hi - lo) / len(group))
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        raise fail(f"non-finite loss ({value})", window)
                    accelerator.backward(loss)
                if no_sync:
                    accelerator.sync_gradients = True
                window_loss += value
            if sync:
                grad_norm = None
                if config.max_grad_norm is not None:
                    grad_norm = accelerator.clip_grad_norm_(params, config.max_grad_norm)
                    if grad_norm is not None and not math.isfinite(float(grad_norm)):
                        raise fail(f"non-finite gradient norm ({float(grad_norm)})", window)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        groups_seen += 1
        if not sync:
            continue

        # ------------------------------------------------------------ one optimizer step done
        step += 1
        step_loss = window_loss / len(window)
        step_loss = float(accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "mean"))
        result.losses.append(step_loss)
        result.grad_norms.append(float(grad_norm) if grad_norm is not None else None)
        window, window_loss = [], 0.0
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
        if step % log_every == 0 or step == total_steps:
            now = time.perf_counter()
            record = {
                "step": step,
                "epoch": round(step / steps_per_epoch, 4),
                "loss": step_loss,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm) if grad_norm is not None else None,
                "groups_seen": groups_seen * accelerator.num_processes,
                "batch": layout.describe(),
                "seconds_per_step": round((now - last_log) / log_every, 4),
            }
            last_log = now
            if is_main:
                with log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                message = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
                logger.info(message)
                if bar is not None:
                    bar.write(message)
            if trackers:
                accelerator.log({k: v for k, v in record.items() if v is not None}, step=step)
        if save_every is not None and step % save_every == 0 and step < total_steps:
            result.checkpoints.append(
                _save_checkpoint(accelerator, out, step, groups_seen, len(groups), config, layout)
            )

    if bar is not None:
        bar.close()
    accelerator.wait_for_everyone()
    head = master_head()
    if is_main:
        unwrapped.save_pretrained(out, head_weight=head)
        (out / "train_result.json").write_text(
            json.dumps(
                {
                    "steps": step,
                    "total_steps": total_steps,
                    "groups_seen": groups_seen * accelerator.num_processes,
                    "final_loss": result.losses[-1] if result.losses else None,
                    "resumed_from": str(resume_dir) if resume_dir else None,
                    "data": str(data),
                    "data_config": data_config,
                    "split": split,
                    "num_groups": len(groups),
                    "batch": layout.to_dict(),
                    "num_validation_queries": len(val_ids),
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    if trackers:
        accelerator.end_training()
    result.steps = step
    result.groups_seen = groups_seen
    result.wall_time_s = time.perf_counter() - started
    return result


def _save_checkpoint(
    accelerator: Any,
    out: Path,
    step: int,
    groups_seen: int,
    num_groups: int,
    config: SkyLinkConfig,
    layout: BatchLayout,
) -> Path:
    folder = out / f"checkpoint-{step}"
    if accelerator.is_main_process and folder.exists():
        shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        state = {
            "step": step,
            "groups_seen": groups_seen,
            "num_groups": num_groups,
            "num_processes": accelerator.num_processes,
            "batch": layout.to_dict(),
            "config": config.to_dict(),
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
