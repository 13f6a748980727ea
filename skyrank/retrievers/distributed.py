"""Multi-process encoding: each process embeds a contiguous slice of the records, the shards are merged in order.

Two ways in, one code path:

- ``accelerate launch cli.py build ...`` (or ``torchrun``): every process runs the whole build; the process group is
  initialised through accelerate's :class:`~accelerate.PartialState` (gloo on CPU, nccl on GPU, one GPU per
  process) by :func:`init_distributed`.
- ``skyrank build --num-processes N`` / :func:`launch`: starts ``N`` local processes with torch's own launcher
  (``elastic_launch``, as ``torchrun --standalone``) and runs the same function in each as under ``accelerate
  launch``. The function and its arguments are pickled, never a model: each process builds its retriever itself
  (:class:`RetrieverSpec`).

:func:`encode_records_distributed` is :func:`~skyrank.retrievers.encode.encode_records` on one process. With
``W > 1`` processes, rank ``r`` embeds the ``r``-th of ``W`` contiguous, *batch-aligned* slices (slice boundaries
fall on multiples of ``batch_size``, so every forward pass sees exactly the batch one process would have seen and
the embeddings are bitwise those of one process on the same device), writes it atomically as a shard
(``rankNNNNN.npy`` + ``rankNNNNN.json`` with its ids) into a per-call folder that rank 0 creates, and every rank's
bad images are all-gathered. Then every rank raises the same
:class:`~skyrank.errors.BadImageError` (listing all bad images, in record order, as one process would), or, with
``skip_bad_images``, rank 0 merges the shards in record order and returns the :class:`EncodeResult`; the other
ranks return ``None``: only rank 0 mines, writes and validates (Eq. 1 of SkyLink, arXiv 2603.08063, ranks these
embeddings by inner product).

Shards go to ``shard_dir`` (default: ``$SKYRANK_SHARD_DIR``, else the system temporary folder); across several
machines it must be a folder every machine shares, which is checked. Collectives wait up to
``$SKYRANK_DIST_TIMEOUT`` seconds (default 4 h) because ranks other than 0 wait while rank 0 mines a split.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from skyrank.benchmarks._base import ImageRecord
from skyrank.errors import SkyRankError
from skyrank.retrievers._base import Retriever
from skyrank.retrievers.encode import EncodeResult, _bad_image_error, _encode_collect, encode_records

#: Environment variable: folder under which per-call shard folders are created (must be shared across machines).
SHARD_DIR_ENV = "SKYRANK_SHARD_DIR"
#: Environment variable: seconds a collective may wait (rank 0 may be mining or training meanwhile).
TIMEOUT_ENV = "SKYRANK_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 4 * 3600


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` and the torch ``device`` it should use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that merges, mines, writes and validates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default


def _timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "") or DEFAULT_TIMEOUT_S))


def is_distributed() -> bool:
    """True inside a multi-process run: ``torch.distributed`` initialised with ``W > 1``, or launched with
    ``WORLD_SIZE > 1`` in the environment (``accelerate launch``, ``torchrun``, :func:`launch`)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    return _env_int("WORLD_SIZE", 1) > 1


def _rank_device(device: str | torch.device, local_rank: int) -> str:
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return str(dev)


def init_distributed(device: str | torch.device = "cpu") -> DistContext:
    """Join the process group of a multi-process launch (a no-op on one process) and say where this process stands.

    Initialises ``torch.distributed`` through accelerate's :class:`~accelerate.PartialState` when the launcher
    has not already: gloo when ``device`` is the CPU, nccl on CUDA. On CUDA every process gets its own GPU
    (``cuda:<local_rank>``), whatever index ``device`` names; build the retriever on :attr:`DistContext.device`.
    """
    if not is_distributed():
        return DistContext(device=str(torch.device(device)))
    cpu = torch.device(device).type != "cuda" or not torch.cuda.is_available()
    from accelerate import PartialState

    if dist.is_initialized():
        PartialState(cpu=cpu)  # adopts the existing group (accelerate's Accelerator will find it ready)
    else:
        PartialState(cpu=cpu, timeout=_timeout())
    local_rank = _env_int("LOCAL_RANK", dist.get_rank())
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=_rank_device(device, local_rank),
        backend=str(dist.get_backend()),
    )


def current_context() -> DistContext:
    """This process's :class:`DistContext` without initialising anything (one process unless a group is up)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return DistContext()
    local_rank = _env_int("LOCAL_RANK", dist.get_rank())
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, str(dist.get_backend()))


def _barrier(ctx: DistContext) -> None:
    if ctx.backend == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (generate a benchmark, train a cached retriever), then the others (which find
    its cached output). A no-op on one process. If rank 0 raises, the launcher stops the others."""
    ctx = current_context()
    if not ctx.distributed:
        yield
        return
    if not ctx.is_main:
        _barrier(ctx)
    yield
    if ctx.is_main:
        _barrier(ctx)


def batch_aligned_slices(n: int, batch_size: int, world_size: int) -> list[tuple[int, int]]:
    """``world_size`` contiguous ``[start, stop)`` slices of ``range(n)`` covering it in order, cut on multiples of
    ``batch_size`` and as even as whole batches allow, so the batches are those of one process."""
    if batch_size < 1 or world_size < 1:
        raise ValueError(f"batch_size and world_size must be positive, got {batch_size} and {world_size}")
    n_batches = -(-n // batch_size)
    cuts = [min(n, (r * n_batches // world_size) * batch_size) for r in range(world_size + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def _ids_digest(ids: Sequence[str], view: str) -> str:
    h = hashlib.sha256(view.encode())
    for i in ids:
        h.update(b"\0" + i.encode())
    return h.hexdigest()


def _call_folder(ctx: DistContext, shard_dir: str | Path | None) -> Path:
    """A fresh folder for this call's shards, created by rank 0 and broadcast to every rank."""
    name = [""]
    if ctx.is_main:
        base = Path(shard_dir or os.environ.get(SHARD_DIR_ENV) or tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        name[0] = tempfile.mkdtemp(prefix=".skyrank-shards-", dir=base)
    dist.broadcast_object_list(name, src=0)
    return Path(name[0])


def _write_atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_shard(folder: Path, rank: int, part: EncodeResult) -> None:
    stem = f"rank{rank:05d}"
    _write_atomic(folder / f"{stem}.npy", lambda f: np.save(f, part.embeddings, allow_pickle=False), "wb")
    _write_atomic(folder / f"{stem}.json", lambda f: f.write(json.dumps({"ids": part.ids})), "w")


def _merge_shards(
    folder: Path, metas: list[dict[str, Any]], expected: list[list[str]], dim: int
) -> tuple[list[str], np.ndarray]:
    """Concatenate the shards in rank order, checking each one holds exactly the ids its rank was given."""
    total = sum(m["rows"] for m in metas)
    emb = np.empty((total, dim), dtype=np.float32)
    ids: list[str] = []
    at = 0
    for m, want in zip(metas, expected, strict=True):
        stem = folder / f"rank{m['rank']:05d}"
        try:
            got = json.loads(stem.with_suffix(".json").read_text())["ids"]
            part = np.load(stem.with_suffix(".npy"), mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as e:
            raise SkyRankError(
                f"embedding shard of rank {m['rank']} is missing from {folder}: the shard folder must be on a "
                f"filesystem every process shares (set {SHARD_DIR_ENV})"
            ) from e
        if got != want or part.shape != (len(want), dim):
            raise SkyRankError(
                f"embedding shard {stem} does not hold the {len(want)} rows rank {m['rank']} encoded "
                f"(found {len(got)} ids, array {part.shape}); was the shard folder shared with another run?"
            )
        emb[at : at + len(want)] = part
        ids.extend(got)
        at += len(want)
    return ids, emb


def encode_records_distributed(
    retriever: Retriever,
    root: str | Path,
    records: Sequence[ImageRecord],
    view: str,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    skip_bad_images: bool = False,
    max_pixels: int | None = None,
    progress: bool = True,
    desc: str | None = None,
    amp: str = "fp16",
    shard_dir: str | Path | None = None,
) -> EncodeResult | None:
    """:func:`~skyrank.retrievers.encode.encode_records`, spread over the processes of a multi-process launch.

    On one process this *is* ``encode_records``. With ``W > 1`` processes (``accelerate launch``, ``torchrun`` or
    :func:`launch`; the group is joined with :func:`init_distributed` if needed) every rank must call it with the
    same ``records``; each embeds its batch-aligned slice and writes it as a shard under ``shard_dir``.

    Returns:
        on rank 0 the merged :class:`EncodeResult`, equal to one process's (rows in record order; ``bad`` lists
        every rank's bad images; ``decode_seconds``/``encode_seconds`` are the slowest rank's); ``None`` on the
        other ranks.

    Raises:
        BadImageError: on every rank, listing every rank's bad images, unless ``skip_bad_images``.
        SkyRankError: the ranks were given different records, or the shard folder is not shared.
    """
    if not is_distributed():
        return encode_records(
            retriever,
            root,
            records,
            view,
            batch_size=batch_size,
            num_workers=num_workers,
            skip_bad_images=skip_bad_images,
            max_pixels=max_pixels,
            progress=progress,
            desc=desc,
            amp=amp,
        )
    ctx = current_context() if dist.is_initialized() else init_distributed(retriever.device)
    root = Path(root)
    records = list(records)
    ids = [r.image_id for r in records]
    slices = batch_aligned_slices(len(records), batch_size, ctx.world_size)
    lo, hi = slices[ctx.rank]
    folder = _call_folder(ctx, shard_dir)
    seen = folder.is_dir()  # False on a machine that does not share rank 0's folder
    folder.mkdir(parents=True, exist_ok=True)
    collected = _encode_collect(
        retriever,
        root,
        records[lo:hi],
        view,
        batch_size=batch_size,
        num_workers=num_workers,
        max_pixels=max_pixels,
        progress=progress and ctx.is_main,
        desc=(desc or f"encode {view}") + f" [rank 0 of {ctx.world_size}]",
        amp=amp,
    )
    part = collected.apply_policy(root, skip_bad_images=True)  # drop bad rows; the policy is applied below
    _write_shard(folder, ctx.rank, part)
    meta = {
        "rank": ctx.rank,
        "digest": _ids_digest(ids, view),
        "bad": collected.bad,
        "rows": len(part.ids),
        "dim": int(part.embeddings.shape[1]),
        "seen": seen,
        "decode": collected.decode_seconds,
        "encode": collected.encode_seconds,
    }
    metas: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(metas, meta)  # also the barrier: every shard is on disk once this returns
    try:
        if len({m["digest"] for m in metas}) > 1:
            raise SkyRankError(
                f"the {ctx.world_size} processes were given different {view} records to encode; every rank must "
                "load the same split"
            )
        if not all(m["seen"] for m in metas):
            ranks = [m["rank"] for m in metas if not m["seen"]]
            raise SkyRankError(
                f"rank(s) {ranks} cannot see rank 0's shard folder {folder}: across machines the shard folder must "
                f"be on a shared filesystem (set {SHARD_DIR_ENV})"
            )
        bad = [tuple(b) for m in metas for b in m["bad"]]
        if bad and not skip_bad_images:
            raise _bad_image_error(bad, root)
        if not ctx.is_main:
            return None
        bad_ids = {b[0] for b in bad}
        expected = [[i for i in ids[a:b] if i not in bad_ids] for a, b in slices]
        dims = {m["dim"] for m in metas if m["rows"]}
        dim = dims.pop() if len(dims) == 1 else int(part.embeddings.shape[1])
        merged_ids, emb = _merge_shards(folder, metas, expected, dim)
        return EncodeResult(
            ids=merged_ids,
            embeddings=emb,
            bad=[b[0] for b in bad],
            decode_seconds=max(m["decode"] for m in metas),
            encode_seconds=max(m["encode"] for m in metas),
        )
    finally:
        if ctx.is_main or not seen:
            shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------- local launcher
def _visible_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _json_safe(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _dump_exception(path: Path, rank: int, exc: BaseException) -> None:
    """Write ``exc`` for the parent as JSON: its type's module and name, its args and attributes (when plain values),
    and the child's traceback. :func:`_load_exception` rebuilds it; nothing is pickled."""
    record = {
        "rank": rank,
        "module": type(exc).__module__,
        "type": type(exc).__qualname__,
        "message": str(exc),
        "args": list(exc.args) if _json_safe(list(exc.args)) else [str(exc)],
        "attrs": {k: v for k, v in vars(exc).items() if not k.startswith("_") and _json_safe(v)},
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
    _write_atomic(path / f"error-rank{rank:05d}.json", lambda f: f.write(json.dumps(record)), "w")


def _load_exception(record: Mapping[str, Any]) -> BaseException:
    """The exception :func:`_dump_exception` wrote, with its original type when that is a builtin exception or one
    of SkyRank's own (so the CLI maps it to its exit code and hint); any other type becomes a :class:`SkyRankError`
    naming it. Only those modules are looked up: a record never makes the parent import or run anything else."""
    import builtins
    import importlib

    module, name = str(record.get("module", "")), str(record.get("type", ""))
    cls: Any = None
    if module == "builtins":
        cls = getattr(builtins, name, None)
    elif module == "skyrank" or module.startswith("skyrank."):
        try:
            cls = importlib.import_module(module)
            for part in name.split("."):
                cls = getattr(cls, part)
        except (ImportError, AttributeError):
            cls = None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        exc = cls.__new__(cls, *record.get("args", []))
        BaseException.__init__(exc, *record.get("args", []))
        exc.__dict__.update(record.get("attrs", {}))
        return exc
    return SkyRankError(f"rank {record.get('rank')} failed: {module}.{name}: {record.get('message', '')}")


def _launch_worker(fn: Callable[..., Any], kwargs: Mapping[str, Any], device_type: str, tmp: str) -> Any:
    """One process of :func:`launch` (torch's elastic agent set ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR/PORT``): join
    the group with :func:`init_distributed`, run ``fn``, return its result; an exception is also written to ``tmp``
    so the parent re-raises it with its original type."""
    index, world_size = _env_int("LOCAL_RANK", 0), _env_int("WORLD_SIZE", 1)
    try:
        if device_type == "cuda":
            torch.cuda.set_device(index)
        elif not os.environ.get("OMP_NUM_THREADS"):
            threads = max(1, _visible_cpus() // world_size)
            os.environ["OMP_NUM_THREADS"] = str(threads)
            torch.set_num_threads(threads)
        init_distributed(device_type)
        return fn(**kwargs)
    except BaseException as e:
        _dump_exception(Path(tmp), index, e)
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _first_error(folder: Path) -> BaseException | None:
    files = sorted(folder.glob("error-rank*.json"))
    if not files:
        return None
    record = json.loads(files[0].read_text())
    exc = _load_exception(record)
    if hasattr(exc, "add_note"):
        exc.add_note(f"raised in {files[0].stem.removeprefix('error-')}:\n{record.get('traceback', '')}")
    return exc


def launch(
    fn: Callable[..., Any],
    kwargs: Mapping[str, Any] | None = None,
    num_processes: int = 2,
    *,
    device: str | torch.device = "cpu",
) -> Any:
    """Run ``fn(**kwargs)`` on ``num_processes`` local processes in one process group; return rank 0's result.

    The processes are started by torch's own launcher (``torch.distributed.launcher.api.elastic_launch``, what
    ``torchrun --standalone`` runs: a c10d rendezvous on a free local port, no restarts). ``fn`` must be importable
    (a module-level function) and ``kwargs`` picklable; no model is pickled, ``fn`` builds what it needs (call
    :func:`init_distributed` for the device). gloo on the CPU; nccl with one GPU per process when ``device`` is
    CUDA. An exception in any process is re-raised here with its original type (the lowest rank's), with the
    child's traceback as a note.
    """
    kwargs = dict(kwargs or {})
    if num_processes < 1:
        raise SkyRankError(f"--num-processes must be at least 1, got {num_processes}")
    if num_processes == 1:
        return fn(**kwargs)
    if is_distributed():
        raise SkyRankError(
            "already in a multi-process launch (accelerate launch / torchrun): drop --num-processes, the launcher "
            "decides the number of processes"
        )
    device_type = torch.device(device).type
    if device_type == "cuda" and torch.cuda.device_count() < num_processes:
        raise SkyRankError(
            f"--num-processes {num_processes} on CUDA needs one GPU per process; {torch.cuda.device_count()} visible"
        )
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=num_processes,
        run_id=f"skyrank-{uuid.uuid4().hex}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        rdzv_configs={"timeout": int(_timeout().total_seconds())},
        max_restarts=0,
        start_method="spawn",
        local_addr="127.0.0.1",
    )
    with tempfile.TemporaryDirectory(prefix="skyrank-launch-") as tmp:
        failure: str | None = None
        try:
            results = elastic_launch(config, _launch_worker)(fn, kwargs, device_type, tmp)
        except ChildFailedError as e:
            # Keep the text only. The exception's traceback holds the launcher's frames and, through them, the
            # rendezvous TCPStore, whose server runs on a thread of this process. Chained to the error raised
            # below, it outlived the launch; collected later in a forked DataLoader worker, the store's destructor
            # joined a thread the worker lacks, and the worker aborted (std::system_error: Invalid argument).
            failure = str(e)
        if failure is not None:
            err = _first_error(Path(tmp))
            if err is None:
                raise SkyRankError(f"a worker process of the {num_processes}-process launch failed: {failure}")
            raise err
        return results[0]


# ------------------------------------------------------------------------------ retrievers built in each process
@dataclass(frozen=True)
class RetrieverSpec:
    """How to build a retriever in another process: ``create(name, checkpoint, device, **kwargs)``."""

    name: str
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def create(self, device: str | torch.device = "cpu") -> Retriever:
        """Build the retriever (strict checkpoint load) on ``device``, in eval mode."""
        from skyrank.retrievers import create

        return create(self.name, checkpoint=self.checkpoint, device=device, **self.kwargs).eval()


def _encode_spec_job(
    spec: RetrieverSpec, root: str, records: list[ImageRecord], view: str, device: str, encode_kwargs: dict[str, Any]
) -> EncodeResult | None:
    ctx = init_distributed(device)
    return encode_records_distributed(spec.create(ctx.device), root, records, view, **encode_kwargs)


def encode_spec(
    spec: RetrieverSpec,
    root: str | Path,
    records: Sequence[ImageRecord],
    view: str,
    *,
    num_processes: int = 1,
    device: str | torch.device = "cpu",
    **encode_kwargs: Any,
) -> EncodeResult:
    """Encode ``records`` with the retriever ``spec`` builds, over ``num_processes`` local processes (each builds its
    own copy); the result equals :func:`~skyrank.retrievers.encode.encode_records` on one process.

    ``encode_kwargs`` are those of :func:`encode_records_distributed` (``batch_size``, ``skip_bad_images``, ...).
    """
    kwargs = {
        "spec": spec,
        "root": str(root),
        "records": list(records),
        "view": view,
        "device": str(device),
        "encode_kwargs": encode_kwargs,
    }
    return launch(_encode_spec_job, kwargs, num_processes, device=device)
