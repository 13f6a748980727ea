"""``skyrank build``: from benchmark files and a retriever to a validated SkyRank dataset folder.

One function, :func:`build_dataset`, runs the whole data flow of design.md::

    benchmark files → records → retriever embeddings → mined candidates (Eq. 1, 2, 6) → Parquet (+ card) → validation

With no arguments it builds the built-in synthetic benchmark: it generates the benchmark (cached), trains a small
retriever on its train split with Sample4Geo's recipe (cached), and builds the dataset from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from skyrank.atomic import exclusive_lock
from skyrank.benchmarks import RetrievalSplit, get_benchmark
from skyrank.errors import (
    BenchmarkLayoutError,
    CheckpointMismatchError,
    OptionError,
    UnknownNameError,
)
from skyrank.format import schema
from skyrank.images import DEFAULT_MAX_PIXELS

#: The small retriever the synthetic default trains (Sample4Geo's recipe on a timm ConvNeXt-Atto at 64 px): one
#: DataLoader worker decodes and augments while one intra-op thread trains. 20 epochs x 12 steps reach test R@1 25.5
#: (10 epochs: 10.9; 40 epochs: 35.4, twice the time); no early stop, as the cosine schedule is fixed by the epoch
#: count (BENCHMARKS.md, "The first build").
SYNTHETIC_RETRIEVER = {"arch": "convnext_atto", "image_size": 64, "epochs": 20, "batch_size": 32, "num_workers": 1}
#: About how long :data:`SYNTHETIC_RETRIEVER` trains on 2 free CPU cores (the up-front plan line says so).
SYNTHETIC_TRAIN_SECONDS = 90


#: skipped files listed by name in the summary (all of them are in the card)
_SUMMARY_LIST = 50


@dataclass
class SplitStats:
    """What the summary table and the dataset card report for one (config, split)."""

    config: str
    split: str
    queries: int
    gallery: int
    gt_in_top_m: float  # percent of queries whose ground truth is in the retriever's top-m
    metrics: dict[str, float]  # retriever R@1/R@5/R@10/AP in percent (official full-ranking AP)


@dataclass
class BuildReport:
    """The result of :func:`build_dataset`."""

    out: Path
    configs: dict[str, dict[str, int]]  # config → split → rows
    stats: list[SplitStats]
    timings: dict[str, float]  # seconds: decode, encode, search, write, validate, total (+ setup)
    bad_images: list[str]
    params: dict[str, Any]
    skipped_empty_folders: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A plain-text summary table."""
        lines = [f"SkyRank dataset written to {self.out}", ""]
        lines.append(f"{'config':<44} {'split':<6} {'rows':>7}")
        for cfg, splits in sorted(self.configs.items()):
            for split, n in sorted(splits.items()):
                lines.append(f"{cfg:<44} {split:<6} {n:>7}")
        lines.append("")
        lines.append(
            f"{'retriever config':<36} {'split':<6} {'queries':>7} {'gallery':>7} {'GT@m':>6} "
            f"{'R@1':>6} {'R@5':>6} {'R@10':>6} {'AP':>6}"
        )
        for s in self.stats:
            m = s.metrics
            lines.append(
                f"{s.config:<36} {s.split:<6} {s.queries:>7} {s.gallery:>7} {s.gt_in_top_m:>6.2f} "
                f"{m['R@1']:>6.2f} {m['R@5']:>6.2f} {m['R@10']:>6.2f} {m['AP']:>6.2f}"
            )
        lines.append(
            f"(protocol: {self.params['protocol']}; m = {self.params['m']}; GT@m = ground truth in top-m, %; "
            "AP = Market-1501 AP over the full ranking)"
        )
        idx = self.params.get("search_index") or {}
        if idx.get("kind") not in (None, "exact"):
            shown = ", ".join(f"{k} {idx[k]}" for k in ("nlist", "nprobe", "M", "ef_search") if k in idx)
            recall = idx.get("recall_at_m")
            measured = (f"recall@{idx.get('recall_k')} against exact search {recall:.4f} on "
                        f"{idx.get('recall_queries')} queries (the lowest of the splits)" if recall is not None
                        else "recall not measured")
            lines.append(f"search index: {idx['kind']} ({shown}); {measured}")
            if recall is not None and recall < 0.99:
                lines.append(
                    "warning: that recall is below 0.99, so some rows differ from exact search; "
                    + ("--index ivf usually does better on large galleries, " if idx["kind"] == "hnsw" else "")
                    + "--index exact is the paper's setting"
                )
        for what, items in (
            ("image(s) that failed to decode (--skip-bad-images)", self.bad_images),
            ("empty class folder(s)", self.skipped_empty_folders),
        ):
            if items:
                lines.append(f"skipped {len(items)} {what}:")
                lines.extend(f"  {x}" for x in items[:_SUMMARY_LIST])
                if len(items) > _SUMMARY_LIST:
                    lines.append(f"  ... and {len(items) - _SUMMARY_LIST} more (all listed in the dataset card)")
        if self.params.get("random_weights"):
            lines.append("WARNING: built with random, untrained retriever weights (--random-weights): for tests only")
        t = self.timings
        lines.append(
            "time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total") + f"; total {t['total']:.1f}s"
        )
        return "\n".join(lines)


def _software_versions() -> dict[str, str]:
    import datasets
    import pyarrow
    import torch

    import skyrank

    versions = {
        "skyrank": skyrank.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "datasets": datasets.__version__,
        "pyarrow": pyarrow.__version__,
        "numpy": np.__version__,
    }
    try:
        import timm

        versions["timm"] = timm.__version__
    except ImportError:  # pragma: no cover - timm is a dependency
        pass
    try:
        import faiss

        versions["faiss"] = getattr(faiss, "__version__", "unknown")
    except ImportError:  # pragma: no cover - faiss is a dependency
        pass
    return versions


def _worst_index_info(infos: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The search-index info of the (split, direction) with the lowest measured recall, for the card."""
    if not infos:
        return None
    key = min(infos, key=lambda k: 1.0 if infos[k].get("recall_at_m") is None else infos[k]["recall_at_m"])
    return {k: v for k, v in infos[key].items() if isinstance(v, (str, int, float, bool, type(None)))}


def _recipe_summary(checkpoint: str | Path | None) -> str | None:
    """One line on how a checkpoint was trained, from the ``recipe.json`` that ``skyrank retriever train`` writes
    beside it (``None`` for weights from elsewhere, e.g. the official releases)."""
    if not checkpoint:
        return None
    path = Path(checkpoint).parent / "recipe.json"
    if not path.is_file():
        return None
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return (
        f"`skyrank retriever train`: {r.get('loss', 'symmetric InfoNCE')}; {r.get('sampler', '')}; "
        f"{r.get('arch')} at {r.get('image_size')} px on {r.get('benchmark')}"
        + (f" ({r['altitude']} m)" if r.get("altitude") else "")
        + f" train split, {r.get('epochs_done', r.get('epochs'))} epochs x {r.get('steps_per_epoch')} steps, "
        f"batch {r.get('batch_size')}, AdamW lr {r.get('lr')}, seed {r.get('seed')}"
    )


def synthetic_retriever_dir(root: Path, recipe: Mapping[str, Any] | None = None) -> Path:
    """The run folder of a synthetic retriever, beside the benchmark, keyed by its recipe (default
    :data:`SYNTHETIC_RETRIEVER`)."""
    recipe = SYNTHETIC_RETRIEVER if recipe is None else recipe
    key = hashlib.sha256(json.dumps(dict(recipe), sort_keys=True).encode()).hexdigest()[:12]
    return Path(str(root) + f".retriever-{key}")


def synthetic_retriever_checkpoint(
    root: Path, *, recipe: Mapping[str, Any] | None = None, device: str = "cpu", progress: bool = True
) -> Path:
    """Train (once, cached beside the synthetic benchmark) the small retriever the synthetic default uses.

    ``recipe`` overrides :data:`SYNTHETIC_RETRIEVER`'s keys (``skyrank demo`` trains 10 epochs on its larger
    benchmark); each recipe has its own cache folder.
    """
    from skyrank.retrievers.train import train_retriever

    r = {**SYNTHETIC_RETRIEVER, **(recipe or {})}
    unknown = set(r) - set(SYNTHETIC_RETRIEVER)
    if unknown:
        raise ValueError(f"unknown synthetic retriever recipe key(s) {sorted(unknown)}; known: {sorted(r)}")
    out = synthetic_retriever_dir(root, r)
    ckpt = out / "weights_end.pth"
    if ckpt.is_file():
        return ckpt

    def waiting() -> None:
        if progress:
            tqdm.write(f"another process is training the cached synthetic retriever {out}; waiting for it")

    # Two builds/demos on one cache would train into the same folder at once: the second waits for the first.
    with exclusive_lock(Path(str(out) + ".lock"), on_wait=waiting):
        if ckpt.is_file():
            return ckpt
        return train_retriever(
            "synthetic",
            root,
            out,
            arch=r["arch"],
            image_size=r["image_size"],
            epochs=r["epochs"],
            batch_size=r["batch_size"],
            num_workers=r["num_workers"] if (os.cpu_count() or 1) > 1 else 0,
            device=device,
            progress=progress,
            resume=True,
        )


def _check_options(
    *, directions: Sequence[str], splits: Sequence[str], protocol: str, top_m: int, batch_size: int,
    num_workers: int, checkpoint: str | Path | None, max_pixels: int | None, random_weights: bool,
) -> None:  # fmt: skip
    """Every check of :func:`build_dataset`'s options that needs neither the benchmark nor the model (instant)."""
    for d in directions:
        if d not in schema.DIRECTIONS:
            raise OptionError(f"--direction must be d2s or s2d, got {d!r}")
    if not splits:
        raise OptionError("--splits is empty; pass e.g. --splits train,test")
    for s in splits:
        if s not in schema.SPLITS:
            raise OptionError(f"--splits must be among {', '.join(schema.SPLITS)}, got {s!r}")
    if protocol not in schema.PROTOCOLS:
        raise OptionError(f"--protocol must be one of {', '.join(schema.PROTOCOLS)}, got {protocol!r}")
    if top_m < 2:
        raise OptionError(f"--top-m must be at least 2 (m−1 negatives are stored), got {top_m}")
    if batch_size < 1:
        raise OptionError(f"--batch-size must be at least 1, got {batch_size}")
    if num_workers < 0:
        raise OptionError(f"--num-workers must be 0 or more, got {num_workers}")
    if max_pixels is not None and max_pixels < 1:
        raise OptionError(f"--max-pixels must be at least 1, got {max_pixels}")
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointMismatchError(
                f"--checkpoint {path} " + ("is a folder, not a file" if path.is_dir() else "does not exist"),
                hint="Pass --checkpoint the path of the weights file (.pth or .safetensors).",
            )
        if random_weights:
            raise OptionError("--random-weights and --checkpoint contradict each other; pass one of them")


def _check_retriever(
    retriever: str, opts: str | Path | None, *, checkpoint: str | Path | None, random_weights: bool,
    trains_synthetic: bool, dataset: str,
) -> None:  # fmt: skip
    """The retriever's name, weights and ``opts.yaml``, from what it declared when it registered
    (:class:`~skyrank.retrievers.RetrieverInfo`): checked now, not after the work."""
    from skyrank.retrievers import list_retrievers, retriever_info
    from skyrank.retrievers._base import missing_weights_error

    if retriever not in list_retrievers():
        raise UnknownNameError(f"--retriever {retriever!r} is not one of {', '.join(list_retrievers())}")
    info = retriever_info(retriever)
    if opts is not None:
        if info.read_opts is None:
            raise OptionError(f"--opts is MCCG's/SDPL's opts.yaml; --retriever {retriever} takes none")
        info.read_opts(opts)
    if checkpoint is None and info.checkpoint_required:
        raise OptionError(f"--retriever {retriever} needs --checkpoint: {info.checkpoint_what}")
    if checkpoint is None and info.learned_weights and not random_weights and not trains_synthetic:
        raise missing_weights_error(retriever, dataset)


def _check_top_m(layouts: dict[tuple[str, str], RetrievalSplit], top_m: int) -> None:
    """``top_m`` against every (split, direction): the gallery must hold m images and, for every query, m−1
    negatives (Eq. 2 stores exactly m−1). Raises :class:`OptionError` with the largest m that fits."""
    for (split, direction), rs in layouts.items():
        if not rs.queries or not rs.gallery:
            continue
        per_label: dict[str, int] = {}
        for r in rs.gallery:
            per_label[r.label] = per_label.get(r.label, 0) + 1
        n = len(rs.gallery)
        most_positives = max(per_label.get(q.label, 0) for q in rs.queries)
        fits = min(n, n - most_positives + 1)
        if top_m > fits:
            raise OptionError(
                f"--top-m {top_m} is too large for the {split} {direction} gallery of {n} image(s): every query needs "
                f"m−1 = {top_m - 1} negatives, and some query has only {n - most_positives}",
                hint=f"Pass --top-m {max(2, fits)} or less." if fits >= 2 else "This gallery is too small to mine.",
            )


def first_build_plan(trains: bool) -> str:
    """The line ``skyrank build`` prints up front on the synthetic benchmark: what will happen and how long."""
    from skyrank.benchmarks.synthetic import default_synthetic_root

    root = default_synthetic_root()
    parts = ["generate the synthetic benchmark (~10 s)" if not root.is_dir() else f"use the cached benchmark {root}"]
    if trains:
        cached = (synthetic_retriever_dir(root) / "weights_end.pth").is_file()
        r = SYNTHETIC_RETRIEVER
        parts.append(
            f"use the cached retriever {synthetic_retriever_dir(root)}" if cached else
            f"train a small retriever ({r['arch']} at {r['image_size']} px, {r['epochs']} epochs, about "
            f"{SYNTHETIC_TRAIN_SECONDS} s on 2 free CPU cores, longer on a busy machine; cached)"
        )  # fmt: skip
    parts.append("encode, mine, write and validate the dataset (~20 s)")
    return "skyrank build: " + "; ".join(parts)


def build_dataset(
    *,
    dataset: str = "synthetic",
    root: str | Path | None = None,
    altitude: str | int | None = None,
    directions: Sequence[str] = ("d2s",),
    retriever: str = "sample4geo",
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    image_size: int | None = None,
    opts: str | Path | None = None,
    top_m: int = 20,
    splits: Sequence[str] = ("train", "test"),
    protocol: str = "official",
    index: str = "exact",
    with_images: bool | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
    num_workers: int = 0,
    skip_bad_images: bool = False,
    progress: bool = True,
    num_processes: int = 1,
    embeddings: bool | None = None,
    embedding_dtype: str = "float32",
    random_weights: bool = False,
    max_pixels: int | None = None,
) -> BuildReport | None:
    """Build a SkyRank dataset folder and validate it.

    Args:
        dataset: a registered benchmark (``university1652``, ``sues200``, ``synthetic``).
        root: the benchmark root (``University-Release``, ``SUES-200-512x512`` or a split SUES-200 folder). For
            ``synthetic`` it defaults to the cached built-in benchmark, generated on first use.
        altitude: SUES-200 altitude (150, 200, 250 or 300).
        directions: ``d2s`` (drone query → satellite gallery) and/or ``s2d``.
        retriever: a registered retriever (``sample4geo``, ``precomputed``, ...).
        checkpoint: the retriever's weights (or the embeddings file for ``precomputed``). For ``synthetic`` with
            ``sample4geo`` and no checkpoint, a small retriever is trained on the train split (cached).
        arch: the timm architecture for ``sample4geo`` (default ``convnext_base.fb_in22k_ft_in1k_384``).
        image_size: input size override.
        opts: MCCG/SDPL ``opts.yaml`` (input size, blocks, classes) from their training run.
        top_m: m of Eq. 1–2 (candidates mined per query; m−1 negatives are stored).
        splits: which splits to build.
        protocol: gallery protocol, ``official`` or ``query-ids-only``.
        index: ``exact`` (numpy/BLAS inner products, the paper's setting), ``ivf`` or ``hnsw`` (approximate, for
            galleries of millions of tiles; their recall@m against exact search is measured and written to the card).
        with_images: embed image bytes in the gallery/queries configs; default: only when the benchmark's licence
            allows redistribution (the synthetic benchmark).
        out: output folder (default ``skyrank-<dataset>``); never overwritten without ``overwrite``.
        embeddings: also write ``embeddings-<retriever>-<bench>[-<alt>]`` (one row per image: its retriever
            embedding), from which ``skyrank remine`` rebuilds the retriever configs without a retriever; default:
            on for the synthetic benchmark, off for the licensed ones (embeddings are derived data, no pixels).
        embedding_dtype: ``float32`` (re-mining reproduces the rows exactly) or ``float16`` (half the size).
        num_processes: encode with this many local processes (gloo on the CPU, one GPU each on CUDA); under
            ``accelerate launch`` the launcher's processes are used instead. Results equal one process's.
        random_weights: allow a retriever without ``checkpoint`` (random, untrained weights); the card then says so
            in bold. Without it such a build is refused (:class:`MissingWeightsError`).
        max_pixels: the decode budget of :func:`skyrank.images.open_rgb` (default 64 megapixels).

    Every check that does not need the images runs before any image is decoded (see :func:`_preflight`): options,
    the checkpoint's existence, ``opts`` parsing, the output folder, the benchmark layout, ``top_m`` against the
    gallery, and the strict, finite load of the weights.

    Returns:
        a :class:`BuildReport`; the folder is complete (manifest written) and validated when this returns.
        ``None`` on the processes other than rank 0 of a multi-process run: they only encode their shards.
    """
    call_args = dict(locals())  # first statement: exactly the arguments, to run them again on each process
    # Checks that need no model and no image, before the heavy imports (torch, timm): a few seconds at most.
    _check_options(
        directions=directions, splits=splits, protocol=protocol, top_m=top_m, batch_size=batch_size,
        num_workers=num_workers, checkpoint=checkpoint, max_pixels=max_pixels, random_weights=random_weights,
    )  # fmt: skip
    if embedding_dtype not in schema.EMBEDDING_DTYPES:
        raise OptionError(
            f"--embedding-dtype must be one of {', '.join(schema.EMBEDDING_DTYPES)}, got {embedding_dtype!r}"
        )
    bench = get_benchmark(dataset)
    if bench.altitudes:
        if altitude is None:
            raise OptionError(
                f"{dataset} is evaluated per altitude: pass --altitude {{{','.join(bench.altitudes)}}}"
            )
        altitude = str(altitude).removesuffix("m")
        if altitude not in bench.altitudes:
            raise OptionError(
                f"--altitude must be one of {', '.join(bench.altitudes)} for {dataset}, got {altitude!r}"
            )
    elif altitude is not None:
        raise OptionError(f"{dataset} has no altitudes; drop --altitude")
    if root is None and dataset != "synthetic":
        raise OptionError(f"--root is required for {dataset}: the folder of your copy of the benchmark")
    if out is None:
        out = Path(f"skyrank-{dataset}" + (f"-{altitude}" if altitude else ""))
    out = Path(out)
    if root is not None and not Path(root).expanduser().is_dir():
        raise BenchmarkLayoutError(
            f"--root {root} " + ("is a file, not a folder" if Path(root).exists() else "does not exist"),
            hint=f"Point --root at your copy of {dataset}: {bench.root_example or 'the benchmark folder'}.",
        )
    # Fail fast, before heavy imports, generation, training or encoding: an output that cannot be written.
    from skyrank.writer import DatasetWriter

    DatasetWriter.check_output(out, overwrite)

    from skyrank.card import input_size_text, render_card_from_inputs
    from skyrank.metrics import retrieval_metrics
    from skyrank.mining import mine
    from skyrank.retrievers import create
    from skyrank.retrievers._checkpoint import sha256_file
    from skyrank.retrievers.distributed import (
        encode_records_distributed,
        init_distributed,
        is_distributed,
        launch,
        main_process_first,
    )
    from skyrank.validate import validate_dataset

    # The synthetic default trains its own small retriever (cached) when given no weights.
    trains_synthetic = (
        retriever == "sample4geo" and checkpoint is None and dataset == "synthetic" and not random_weights
    )
    _check_retriever(
        retriever, opts, checkpoint=checkpoint, random_weights=random_weights, trains_synthetic=trains_synthetic,
        dataset=dataset,
    )
    if num_processes > 1 and not is_distributed():
        return launch(build_dataset, {**call_args, "num_processes": 1}, num_processes, device=device)
    dist_ctx = init_distributed(device)  # one process: nothing to do; under a launcher: join, one GPU per rank
    device = dist_ctx.device
    t_start = time.perf_counter()
    timings = {"setup": 0.0, "decode": 0.0, "encode": 0.0, "search": 0.0, "write": 0.0, "validate": 0.0}
    if embeddings is None:
        embeddings = bool(bench.derived_data)  # on where the licence allows derived data (the synthetic benchmark)


    if dataset == "synthetic" and root is None:
        from skyrank.benchmarks.synthetic import ensure_synthetic

        if progress and dist_ctx.is_main:
            tqdm.write(first_build_plan(trains_synthetic))
        with main_process_first():
            root = ensure_synthetic(progress=progress and dist_ctx.is_main)
    root = Path(root)
    layouts: dict[tuple[str, str], RetrievalSplit] = {
        (split, direction): bench.load_split(root, split, direction=direction, protocol=protocol, altitude=altitude)
        for split in splits
        for direction in directions
    }
    _check_top_m(layouts, top_m)

    kwargs: dict[str, Any] = {}
    # The benchmark's evaluator names its dataset family: Sample4Geo's ground sizes, MCCG/SDPL's refusals.
    kwargs["dataset"] = getattr(bench, "evaluation_protocol", "") or dataset
    if arch is not None:
        kwargs["arch"] = arch
    if image_size is not None:
        kwargs["image_size"] = image_size
    if opts is not None:
        kwargs["opts"] = opts
    trained_here = False
    if trains_synthetic:
        with main_process_first():
            checkpoint = synthetic_retriever_checkpoint(root, device=device, progress=progress and dist_ctx.is_main)
        kwargs.setdefault("arch", SYNTHETIC_RETRIEVER["arch"])
        kwargs.setdefault("image_size", SYNTHETIC_RETRIEVER["image_size"])
        trained_here = True
    # strict, finite load: before decoding
    model = create(retriever, checkpoint=checkpoint, device=device, random_weights=random_weights, **kwargs)
    model.eval()
    if with_images is None:
        with_images = bool(bench.redistributable)
    timings["setup"] = time.perf_counter() - t_start

    gallery_cfg = schema.gallery_config_name(dataset, altitude)
    queries_cfg = schema.queries_config_name(dataset, altitude)
    image_rows: dict[tuple[str, str], dict[str, dict[str, str]]] = {}  # (config, split) → image_id → row
    retriever_tables: list[tuple[str, str, list[dict]]] = []
    stats: list[SplitStats] = []
    bad_images: list[str] = []
    skipped_empty: list[str] = []
    index_info: dict[str, dict[str, Any]] = {}
    # (split, image_id) → (view, float32 embedding): one vector per image, shared by both directions and the
    # embeddings config, so mining reads exactly what `skyrank remine` reads back.
    vectors: dict[tuple[str, str], tuple[str, np.ndarray]] = {}

    for split in splits:
        for direction in directions:
            rs = layouts[(split, direction)]
            skipped_empty.extend(x for x in rs.skipped_empty_folders if x not in skipped_empty)
            qview, gview = rs.views()  # "ground" for street-level queries
            encoded = {}
            for name, records, view in (("gallery", rs.gallery, gview), ("queries", rs.queries, qview)):
                res = encode_records_distributed(
                    model,
                    root,
                    records,
                    view,
                    batch_size=batch_size,
                    num_workers=num_workers,
                    skip_bad_images=skip_bad_images,
                    max_pixels=max_pixels,
                    progress=progress,
                    desc=f"encode {split} {direction} {name}",
                )
                if res is None:  # not rank 0: this process only encoded its shard
                    continue
                timings["decode"] += getattr(res, "decode_seconds", 0.0)
                timings["encode"] += getattr(res, "encode_seconds", 0.0)
                bad_images.extend(b for b in res.bad if b not in bad_images)
                encoded[name] = res
            if not dist_ctx.is_main:
                continue
            by_id = {r.image_id: r for r in (*rs.gallery, *rs.queries)}
            g, q = encoded["gallery"], encoded["queries"]
            shared = []
            for res in (g, q):
                # An image met before (the other direction) keeps its first vector; new ones are stored as views.
                seen = any((split, i) in vectors for i in res.ids)
                for image_id, vec in zip(res.ids, res.embeddings, strict=True):
                    vectors.setdefault((split, image_id), (by_id[image_id].view, vec))
                shared.append(np.stack([vectors[(split, i)][1] for i in res.ids]) if seen else res.embeddings)
            g_emb, q_emb = shared
            g_labels = [by_id[i].label for i in g.ids]
            q_labels = [by_id[i].label for i in q.ids]
            # A query whose every positive was dropped as a bad image cannot be mined: drop it too, and say so.
            present = set(g_labels)
            keep = [i for i, lab in enumerate(q_labels) if lab in present]
            if len(keep) < len(q_labels):
                dropped = [q.ids[i] for i in range(len(q.ids)) if q_labels[i] not in present]
                bad_images.extend(f"{d} (query without positive after skipping bad images)" for d in dropped)
            t0 = time.perf_counter()
            rows, info = mine(
                [q.ids[i] for i in keep],
                [q_labels[i] for i in keep],
                q_emb[keep],
                list(g.ids),
                g_labels,
                g_emb,
                m=top_m,
                index=index,
                return_info=True,
                progress=progress,
                **rs.mining_extras([q.ids[i] for i in keep], bench.writes_optional_columns),
            )
            index_info[f"{split}/{direction}"] = info
            timings["search"] += time.perf_counter() - t0
            cfg = schema.retriever_config_name(retriever, dataset, direction, altitude)
            gt_in = 100.0 * float(np.mean([r["gt_rank"] <= top_m for r in rows])) if rows else 0.0
            stats.append(SplitStats(cfg, split, len(rows), len(g.ids), gt_in, retrieval_metrics(rows)))
            # Held as Arrow columns until written: a fraction of the memory of the row dicts.
            arrow = schema.features_for(cfg, optional=rows[0] if rows else ()).arrow_schema
            retriever_tables.append((cfg, split, pa.Table.from_pylist(rows, schema=arrow)))
            del rows
            for table_cfg, ids in ((gallery_cfg, g.ids), (queries_cfg, [q.ids[i] for i in keep])):
                table = image_rows.setdefault((table_cfg, split), {})
                for image_id in ids:
                    rec = by_id[image_id]
                    table[image_id] = {
                        "image_id": rec.image_id,
                        "label": rec.label,
                        "view": rec.view,
                        "path": rec.image_id,
                    }
                    if bench.writes_optional_columns:  # schema.OPTIONAL_IMAGE_FEATURES
                        table[image_id].update(latitude=rec.latitude, longitude=rec.longitude)

    if not dist_ctx.is_main:
        return None
    t0 = time.perf_counter()
    params: dict[str, Any] = {
        "dataset": dataset,
        "benchmark": dataset,
        "altitude": altitude,
        "directions": list(directions),
        "retriever": retriever,
        "arch": getattr(model, "arch", kwargs.get("arch")),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
        "retriever_trained_by_build": trained_here,
        "retriever_recipe": _recipe_summary(checkpoint),
        "m": top_m,
        "protocol": protocol,
        "evaluation_protocol": bench.evaluation_protocol or dataset,
        "explicit_positives": any(q.positives is not None for rs in layouts.values() for q in rs.queries),
        "index": index,
        "search_index": _worst_index_info(index_info),
        "image_size": model.image_size,
        "embed_dim": model.embed_dim,
        "splits": list(splits),
        "with_images": with_images,
        "embeddings": (
            {
                "config": schema.embeddings_config_name(retriever, dataset, altitude),
                "dim": int(model.embed_dim),
                "dtype": embedding_dtype,
            }
            if embeddings
            else None
        ),
        "skipped_bad_images": bad_images,
        "skipped_empty_folders": skipped_empty,
        "random_weights": checkpoint is None and retriever != "precomputed",
        "max_pixels": max_pixels or DEFAULT_MAX_PIXELS,
        "software": _software_versions(),
    }
    tables = []
    with DatasetWriter(out, overwrite=overwrite) as writer, tqdm(
        total=len(image_rows) + len(retriever_tables), disable=not progress, unit="table", desc="write parquet"
    ) as bar:
        for (cfg, split), rows_by_id in sorted(image_rows.items()):
            rows = [rows_by_id[k] for k in sorted(rows_by_id)]
            features = schema.features_for(cfg, with_images=with_images, optional=rows[0] if rows else ())
            tables.append(writer.add_table(cfg, split, rows, features, images_root=root if with_images else None))
            bar.update()
        for cfg, split, rows in retriever_tables:
            tables.append(writer.add_table(cfg, split, rows, schema.features_for(cfg, optional=rows.column_names)))
            bar.update()
        if embeddings:
            from skyrank.embeddings import embeddings_table

            emb = params["embeddings"]
            features = schema.embeddings_features(emb["dim"], emb["dtype"])
            for split in splits:
                items = sorted((k[1], v) for k, v in vectors.items() if k[0] == split)
                table = embeddings_table(split, [i for i, _ in items], [v for _, (v, _) in items],
                                         np.stack([e for _, (_, e) in items]), features)
                tables.append(writer.add_table(emb["config"], split, table, features))
        card_inputs = {
            "pretty_name": f"SkyRank: {retriever} on {dataset}" + (f" ({altitude} m)" if altitude else ""),
            "benchmark_meta": {
                "name": dataset,
                "license": bench.license,
                "license_name": bench.license_name,
                "license_link": bench.license_link,
                "citation": bench.citation,
                "redistributable": bench.redistributable,
            },
            "retriever_meta": {
                "name": retriever,
                "citation": model.cfg.citation,
                "paper": model.cfg.paper,
                "checkpoint": params["checkpoint"],
                "checkpoint_sha256": params["checkpoint_sha256"],
                "arch": params["arch"],
                "image_size": input_size_text(
                    model.image_size, {v: model.input_size(v) for rs in layouts.values() for v in rs.views()}),
            },
            "default_config": retriever_tables[0][0],
            "stats": [
                {"config": s.config, "split": s.split, "rows": s.queries, "gallery": s.gallery,
                 "gt_in_top_m": s.gt_in_top_m, **s.metrics}
                for s in stats
            ],
        }
        card = render_card_from_inputs(tables, card_inputs, params, retriever_tables[0][0])
        timings["write"] = time.perf_counter() - t0
        # The card's inputs ride in the manifest, so `skyrank remine` re-renders the card of a changed folder.
        final = writer.finalize(card, {**params, "card_inputs": card_inputs})
    t0 = time.perf_counter()
    if progress:
        tqdm.write(f"validating {final}: every config and split through load_dataset, then the invariants")
    validate_dataset(final)
    timings["validate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    configs: dict[str, dict[str, int]] = {}
    for t in tables:
        configs.setdefault(t.config, {})[t.split] = t.num_rows
    return BuildReport(
        out=final,
        configs=configs,
        stats=stats,
        timings=timings,
        bad_images=bad_images,
        params=params,
        skipped_empty_folders=skipped_empty,
    )


def report_to_json(report: BuildReport) -> str:
    d = asdict(report)
    d["out"] = str(report.out)
    return json.dumps(d, indent=2, default=str)
