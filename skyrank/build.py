"""``skyrank build``: from benchmark files and a retriever to a validated SkyRank dataset folder.

:func:`build_dataset` first makes the :class:`~skyrank.build_plan.BuildPlan` (options, layout and counts; no model
loaded, no image decoded; ``skyrank build --dry-run`` prints it), then runs the data flow of design.md as stages, each
a function taking the plan and the previous stage's output::

    read_benchmark → encode_images → mine_candidates → write_tables → write_card → validate_output
    (records)        (one vector     (Eq. 1 top-m,     (Parquet)      (card +       (load_dataset +
                      per image)      Eq. 2 swap,                      manifest)     invariants)
                                      Eq. 6 similarity)

With no arguments it builds the built-in synthetic benchmark: it generates the benchmark (cached), trains a small
retriever on its train split with Sample4Geo's recipe (cached), and builds the dataset from it
(:func:`prepare_retriever`, before the stages).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from skyrank.atomic import exclusive_lock
from skyrank.benchmarks import ImageRecord, RetrievalSplit
from skyrank.build_plan import (
    SYNTHETIC_RETRIEVER,
    SYNTHETIC_TRAIN_SECONDS,
    BuildOptions,
    BuildPlan,
    check_top_m,
    images_to_encode,
    plan_build,
    read_layout,
    record_throughput,
    synthetic_retriever_dir,
)

if TYPE_CHECKING:  # heavy imports (datasets, torch) are made inside the stages: `import skyrank.build` stays light
    import pyarrow as pa

    from skyrank.retrievers import Retriever
    from skyrank.validate import ValidationReport
    from skyrank.writer import DatasetWriter, TableInfo

_check_top_m = check_top_m  # its name before the plan (skyrank.build_plan.check_top_m); callers still import it

__all__ = [
    "SYNTHETIC_RETRIEVER", "SYNTHETIC_TRAIN_SECONDS", "BuildOptions", "BuildPlan", "BuildReport", "build_dataset",
    "plan_build", "report_to_json",
]  # fmt: skip


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


# ------------------------------------------------------------------------------------------------ stage outputs
@dataclass
class LoadedRetriever:
    """The retriever the stages encode with: the model (weights loaded strictly, checked finite), the checkpoint it
    came from, whether the build trained it, and the keyword arguments it was created with."""

    model: Retriever
    checkpoint: str | Path | None
    trained_here: bool
    kwargs: dict[str, Any]


@dataclass
class BenchmarkImages:
    """The ``read`` stage: the benchmark's records per (split, direction), and the images to encode per (split,
    view), each once."""

    root: Path
    layouts: dict[tuple[str, str], RetrievalSplit]
    to_encode: dict[tuple[str, str], list[ImageRecord]]
    skipped_empty_folders: list[str]


@dataclass
class EncodedImages:
    """The ``encode`` stage: one float32 vector per (split, image_id), with its view; shared by both directions and
    the embeddings config, so mining reads exactly what ``skyrank remine`` reads back."""

    vectors: dict[tuple[str, str], tuple[str, np.ndarray]]
    bad_images: list[str]
    decode_seconds: float = 0.0
    encode_seconds: float = 0.0


@dataclass
class MinedTables:
    """The ``mine`` stage: the retriever tables (Arrow, in memory until written), the image tables' rows, the
    per-(config, split) statistics and the search index's info."""

    retriever_tables: list[tuple[str, str, pa.Table]]
    image_rows: dict[tuple[str, str], dict[str, dict[str, str]]]  # (config, split) → image_id → row
    stats: list[SplitStats]
    index_info: dict[str, dict[str, Any]]
    dropped_queries: list[str]  # queries whose every positive was a skipped bad image
    search_seconds: float = 0.0


# ------------------------------------------------------------------------------------------------ the stages
def prepare_retriever(plan: BuildPlan, is_main: bool = True) -> tuple[BuildPlan, LoadedRetriever]:
    """What the plan left pending (the cached synthetic benchmark generated, its small retriever trained), then the
    retriever created with its weights loaded strictly and checked finite: before any image is decoded."""
    from skyrank.benchmarks import get_benchmark
    from skyrank.retrievers import create
    from skyrank.retrievers.distributed import main_process_first

    o = plan.options
    progress = o.progress and is_main
    if o.root is None:  # the cached synthetic benchmark: (re)generated unless complete for this generator version
        from skyrank.benchmarks.synthetic import ensure_synthetic

        if progress:
            tqdm.write(first_build_plan(plan.trains_synthetic))
        with main_process_first():
            root = ensure_synthetic(progress=progress)
        if root != plan.root or not plan.layouts:
            plan.root = root
            plan = read_layout(plan)
    kwargs: dict[str, Any] = {k: v for k, v in (("arch", o.arch), ("image_size", o.image_size), ("opts", o.opts))
                              if v is not None}  # fmt: skip
    # The benchmark's evaluator names its dataset family: Sample4Geo's ground sizes, MCCG/SDPL's refusals.
    kwargs = {"dataset": get_benchmark(o.dataset).evaluation_protocol or o.dataset, **kwargs}
    checkpoint = o.checkpoint
    if plan.trains_synthetic:
        with main_process_first():
            checkpoint = synthetic_retriever_checkpoint(plan.root, device=plan.device, progress=progress)
        kwargs.setdefault("arch", SYNTHETIC_RETRIEVER["arch"])
        kwargs.setdefault("image_size", SYNTHETIC_RETRIEVER["image_size"])
    # strict, finite load: before decoding
    model = create(o.retriever, checkpoint=checkpoint, device=plan.device, random_weights=o.random_weights, **kwargs)
    model.eval()
    return plan, LoadedRetriever(model, checkpoint, plan.trains_synthetic, kwargs)


def read_benchmark(plan: BuildPlan) -> BenchmarkImages:
    """``read``: the records of every (split, direction) (the plan's folder listing; nothing is decoded) and the
    images to encode, each once per split whichever directions use it."""
    assert plan.root is not None
    check_top_m(plan.layouts, plan.options.top_m)
    skipped: list[str] = []
    for rs in plan.layouts.values():
        skipped.extend(x for x in rs.skipped_empty_folders if x not in skipped)
    return BenchmarkImages(plan.root, plan.layouts, images_to_encode(plan), skipped)


def encode_images(plan: BuildPlan, retriever: LoadedRetriever, images: BenchmarkImages) -> EncodedImages | None:
    """``encode``: each (split, view)'s images through the retriever's encoder of that view (Eq. 1's E_q for drone
    views, E_r for satellite views), each image once. The one stage that knows about processes: under a
    multi-process launch every rank embeds its slice and rank 0 merges them; the other ranks get ``None``."""
    from skyrank.retrievers.distributed import current_context, encode_records_distributed

    o = plan.options
    out = EncodedImages(vectors={}, bad_images=[])
    t0 = time.perf_counter()
    for (split, view), records in images.to_encode.items():
        res = encode_records_distributed(
            retriever.model, images.root, records, view, batch_size=o.batch_size, num_workers=o.num_workers,
            skip_bad_images=o.skip_bad_images, max_pixels=o.max_pixels, progress=o.progress,
            desc=f"encode {split} {view}",
        )  # fmt: skip
        if res is None:  # not rank 0: this process only encoded its shard
            continue
        out.decode_seconds += getattr(res, "decode_seconds", 0.0)
        out.encode_seconds += getattr(res, "encode_seconds", 0.0)
        out.bad_images.extend(b for b in res.bad if b not in out.bad_images)
        for image_id, vec in zip(res.ids, res.embeddings, strict=True):
            out.vectors[(split, image_id)] = (view, vec)
    if not current_context().is_main:
        return None
    if retriever.model.needs_images:
        record_throughput(plan, len(out.vectors), time.perf_counter() - t0)
    return out


def mine_candidates(plan: BuildPlan, images: BenchmarkImages, encoded: EncodedImages) -> MinedTables:
    """``mine``: for every (split, direction), the retriever's top-m per query (Eq. 1), the swap rule (Eq. 2) and
    the candidates' similarity to the ground truth (Eq. 6), through :func:`skyrank.mining.mine`; and the rows of the
    gallery and queries configs."""
    from skyrank.format import schema

    o = plan.options
    mined = MinedTables([], {}, [], {}, [])
    for (split, direction), rs in images.layouts.items():
        rows, info, query_ids, gallery_ids = mine_direction(plan, rs, encoded, mined)
        mined.index_info[f"{split}/{direction}"] = info
        cfg = schema.retriever_config_name(o.retriever, o.dataset, direction, plan.altitude)
        mined.retriever_tables.append((cfg, split, rows))
        by_id = {r.image_id: r for r in (*rs.gallery, *rs.queries)}
        for table_cfg, ids in ((schema.gallery_config_name(o.dataset, plan.altitude), gallery_ids),
                               (schema.queries_config_name(o.dataset, plan.altitude), query_ids)):  # fmt: skip
            table = mined.image_rows.setdefault((table_cfg, split), {})
            for image_id in ids:
                rec = by_id[image_id]
                table[image_id] = {"image_id": image_id, "label": rec.label, "view": rec.view, "path": image_id}
                if plan.writes_optional_columns:  # schema.OPTIONAL_IMAGE_FEATURES
                    table[image_id].update(latitude=rec.latitude, longitude=rec.longitude)
    return mined


def mine_direction(
    plan: BuildPlan, rs: RetrievalSplit, encoded: EncodedImages, mined: MinedTables
) -> tuple[pa.Table, dict[str, Any], list[str], list[str]]:
    """One (split, direction) of :func:`mine_candidates`: its rows as an Arrow table (a fraction of the memory of
    row dicts), the index info, and the query and gallery ids that were mined. A query whose every positive was
    dropped as a bad image cannot be mined: it is dropped too, and listed."""
    import pyarrow as pa

    from skyrank.format import schema
    from skyrank.metrics import retrieval_metrics
    from skyrank.mining import mine

    o = plan.options
    vectors = encoded.vectors
    gallery = [r for r in rs.gallery if (rs.split, r.image_id) in vectors]
    queries = [r for r in rs.queries if (rs.split, r.image_id) in vectors]
    present = {r.label for r in gallery}
    dropped = [q.image_id for q in queries if q.label not in present]
    mined.dropped_queries.extend(dropped)
    queries = [q for q in queries if q.label in present]
    stack = lambda recs: np.stack([vectors[(rs.split, r.image_id)][1] for r in recs])  # noqa: E731
    t0 = time.perf_counter()
    rows, info = mine(
        [q.image_id for q in queries], [q.label for q in queries], stack(queries),
        [g.image_id for g in gallery], [g.label for g in gallery], stack(gallery),
        m=o.top_m, index=o.index, return_info=True, progress=o.progress,
        **rs.mining_extras([q.image_id for q in queries], plan.writes_optional_columns),
    )  # fmt: skip
    mined.search_seconds += time.perf_counter() - t0
    cfg = schema.retriever_config_name(o.retriever, o.dataset, rs.direction, plan.altitude)
    gt_in = 100.0 * float(np.mean([r["gt_rank"] <= o.top_m for r in rows])) if rows else 0.0
    mined.stats.append(SplitStats(cfg, rs.split, len(rows), len(gallery), gt_in, retrieval_metrics(rows)))
    arrow = schema.features_for(cfg, optional=rows[0] if rows else ()).arrow_schema
    table = pa.Table.from_pylist(rows, schema=arrow)
    return table, info, [q.image_id for q in queries], [g.image_id for g in gallery]


def write_tables(
    plan: BuildPlan, writer: DatasetWriter, images: BenchmarkImages, encoded: EncodedImages, mined: MinedTables
) -> list[TableInfo]:
    """``write``: every table into the writer's staging folder, rows sorted by id: the gallery and queries configs
    (with image bytes copied from the source files when ``with_images``), the retriever configs, and the embeddings
    config (one row per image) when asked for."""
    from skyrank.format import schema

    o = plan.options
    tables = []
    with tqdm(total=len(mined.image_rows) + len(mined.retriever_tables), disable=not o.progress, unit="table",
              desc="write parquet") as bar:  # fmt: skip
        for (cfg, split), rows_by_id in sorted(mined.image_rows.items()):
            rows = [rows_by_id[k] for k in sorted(rows_by_id)]
            features = schema.features_for(cfg, with_images=plan.with_images, optional=rows[0] if rows else ())
            tables.append(writer.add_table(cfg, split, rows, features,
                                           images_root=images.root if plan.with_images else None))  # fmt: skip
            bar.update()
        for cfg, split, table in mined.retriever_tables:
            tables.append(writer.add_table(cfg, split, table, schema.features_for(cfg, optional=table.column_names)))
            bar.update()
    if plan.embeddings:
        from skyrank.embeddings import embeddings_table

        name = schema.embeddings_config_name(o.retriever, o.dataset, plan.altitude)
        dim = int(next(iter(encoded.vectors.values()))[1].shape[0])
        features = schema.embeddings_features(dim, o.embedding_dtype)
        for split in o.splits:
            items = sorted((k[1], v) for k, v in encoded.vectors.items() if k[0] == split)
            table = embeddings_table(split, [i for i, _ in items], [v for _, (v, _) in items],
                                     np.stack([e for _, (_, e) in items]), features)  # fmt: skip
            tables.append(writer.add_table(name, split, table, features))
    return tables


def write_card(
    plan: BuildPlan, retriever: LoadedRetriever, writer: DatasetWriter, tables: list[TableInfo],
    params: dict[str, Any], mined: MinedTables,
) -> Path:  # fmt: skip
    """``card``: the dataset card (licence, citations, build parameters, the retriever's metrics per split)
    rendered from the written tables, then the folder finalized: manifest written, staging renamed into place.
    The card's inputs ride in the manifest, so ``skyrank remine`` re-renders the card of a changed folder."""
    from skyrank.benchmarks import get_benchmark
    from skyrank.card import input_size_text, render_card_from_inputs

    bench = get_benchmark(plan.benchmark)
    model = retriever.model
    default_config = mined.retriever_tables[0][0]
    card_inputs = {
        "pretty_name": f"SkyRank: {plan.retriever} on {plan.benchmark}"
        + (f" ({plan.altitude} m)" if plan.altitude else ""),
        "benchmark_meta": {
            "name": plan.benchmark, "license": bench.license, "license_name": bench.license_name,
            "license_link": bench.license_link, "citation": bench.citation, "redistributable": bench.redistributable,
        },
        "retriever_meta": {
            "name": plan.retriever, "citation": model.cfg.citation, "paper": model.cfg.paper,
            "checkpoint": params["checkpoint"], "checkpoint_sha256": params["checkpoint_sha256"],
            "arch": params["arch"],
            "image_size": input_size_text(  # none for a retriever that never sees an image (precomputed)
                model.image_size, {v: model.input_size(v) for rs in plan.layouts.values() for v in rs.views()},
            ) if model.needs_images else None,
        },
        "default_config": default_config,
        "stats": [
            {"config": s.config, "split": s.split, "rows": s.queries, "gallery": s.gallery,
             "gt_in_top_m": s.gt_in_top_m, **s.metrics}
            for s in mined.stats
        ],
    }  # fmt: skip
    card = render_card_from_inputs(tables, card_inputs, params, default_config)
    return writer.finalize(card, {**params, "card_inputs": card_inputs})


def validate_output(plan: BuildPlan, folder: Path) -> ValidationReport:
    """``validate``: every config and split through ``load_dataset``, then the format's checks
    (:func:`skyrank.validate.validate_dataset`); raises :class:`~skyrank.errors.ValidationError` listing problems."""
    from skyrank.validate import validate_dataset

    if plan.options.progress:
        tqdm.write(f"validating {folder}: every config and split through load_dataset, then the invariants")
    return validate_dataset(folder)


def build_params(
    plan: BuildPlan, retriever: LoadedRetriever, images: BenchmarkImages, encoded: EncodedImages, mined: MinedTables
) -> dict[str, Any]:
    """The build parameters the manifest and the card record (retriever, checkpoint hash, m, protocol, ...)."""
    from skyrank.benchmarks import get_benchmark
    from skyrank.format import schema
    from skyrank.images import DEFAULT_MAX_PIXELS
    from skyrank.retrievers._checkpoint import sha256_file

    o, model, checkpoint = plan.options, retriever.model, retriever.checkpoint
    bad = encoded.bad_images + [f"{d} (query without positive after skipping bad images)"
                                for d in mined.dropped_queries]  # fmt: skip
    return {
        "dataset": o.dataset, "benchmark": o.dataset, "altitude": plan.altitude, "directions": list(o.directions),
        "retriever": o.retriever, "arch": getattr(model, "arch", retriever.kwargs.get("arch")),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
        "retriever_trained_by_build": retriever.trained_here, "retriever_recipe": _recipe_summary(checkpoint),
        "m": o.top_m, "protocol": o.protocol,
        "evaluation_protocol": get_benchmark(o.dataset).evaluation_protocol or o.dataset,
        "explicit_positives": any(q.positives is not None for rs in images.layouts.values() for q in rs.queries),
        "index": o.index, "search_index": _worst_index_info(mined.index_info),
        "image_size": model.image_size, "embed_dim": model.embed_dim, "splits": list(o.splits),
        "with_images": plan.with_images,
        "embeddings": (
            {"config": schema.embeddings_config_name(o.retriever, o.dataset, plan.altitude),
             "dim": int(model.embed_dim), "dtype": o.embedding_dtype}
            if plan.embeddings else None
        ),
        "skipped_bad_images": bad, "skipped_empty_folders": images.skipped_empty_folders,
        "random_weights": checkpoint is None and o.retriever != "precomputed",
        "max_pixels": o.max_pixels or DEFAULT_MAX_PIXELS, "software": _software_versions(),
    }  # fmt: skip


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
    device: str | None = "cpu",
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

        device: a torch device; ``None``: cuda when available, else cpu.

    Every check that does not need the images runs before any image is decoded: the plan's
    (:func:`~skyrank.build_plan.plan_build`: options, the checkpoint's existence, ``opts`` parsing, the output
    folder, the benchmark layout, ``top_m`` against the gallery, free space), then the strict, finite load of the
    weights (:func:`prepare_retriever`). Then the stages, each taking the plan and the previous stage's output.

    Returns:
        a :class:`BuildReport`; the folder is complete (manifest written) and validated when this returns.
        ``None`` on the processes other than rank 0 of a multi-process run: they only encode their shards.
    """
    call_args = dict(locals())  # first statement: exactly the arguments, to run them again on each process
    plan = plan_build(BuildOptions(**call_args))  # no model loaded, no image decoded
    from skyrank.retrievers.distributed import init_distributed, is_distributed, launch

    if num_processes > 1 and not is_distributed():
        return launch(build_dataset, {**call_args, "num_processes": 1}, num_processes, device=plan.device)
    dist_ctx = init_distributed(plan.device)  # one process: nothing to do; under a launcher: join, one GPU per rank
    plan.device = dist_ctx.device
    t_start = time.perf_counter()
    plan, retriever = prepare_retriever(plan, is_main=dist_ctx.is_main)
    timings = {"setup": time.perf_counter() - t_start}
    images = read_benchmark(plan)
    encoded = encode_images(plan, retriever, images)
    if encoded is None:  # not rank 0: it only encoded its shards
        return None
    timings.update(decode=encoded.decode_seconds, encode=encoded.encode_seconds)
    mined = mine_candidates(plan, images, encoded)
    timings["search"] = mined.search_seconds
    t0 = time.perf_counter()
    params = build_params(plan, retriever, images, encoded, mined)
    from skyrank.writer import DatasetWriter

    with DatasetWriter(plan.out, overwrite=plan.options.overwrite) as writer:
        tables = write_tables(plan, writer, images, encoded, mined)
        final = write_card(plan, retriever, writer, tables, params, mined)
    timings["write"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    validate_output(plan, final)
    timings["validate"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    configs: dict[str, dict[str, int]] = {}
    for t in tables:
        configs.setdefault(t.config, {})[t.split] = t.num_rows
    return BuildReport(
        out=final, configs=configs, stats=mined.stats, timings=timings, bad_images=params["skipped_bad_images"],
        params=params, skipped_empty_folders=images.skipped_empty_folders,
    )  # fmt: skip


def report_to_json(report: BuildReport) -> str:
    d = asdict(report)
    d["out"] = str(report.out)
    return json.dumps(d, indent=2, default=str)
