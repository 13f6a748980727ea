"""``skyrank build``: from benchmark files and a retriever to a validated SkyRank dataset folder.

One function, :func:`build_dataset`, runs the whole data flow of design.md::

    benchmark files → records → retriever embeddings → mined candidates (Eq. 1, 2, 6) → Parquet (+ card) → validation

With no arguments it builds the built-in synthetic benchmark: it generates the benchmark (cached), trains a small
retriever on its train split with Sample4Geo's recipe (cached), and builds the dataset from it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from skyrank.benchmarks import RetrievalSplit, get_benchmark
from skyrank.errors import SkyRankError
from skyrank.format import schema

_RETRIEVER_ARROW = schema.RETRIEVER_FEATURES.arrow_schema

#: The small retriever the synthetic default trains (Sample4Geo's recipe on a timm ConvNeXt-Atto).
SYNTHETIC_RETRIEVER = {"arch": "convnext_atto", "image_size": 64, "epochs": 40, "batch_size": 32}


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
        if self.bad_images:
            lines.append(
                f"skipped {len(self.bad_images)} image(s) that failed to decode: " + ", ".join(self.bad_images[:5])
            )
        if self.skipped_empty_folders:
            lines.append(f"skipped {len(self.skipped_empty_folders)} empty class folder(s)")
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


def _views(direction: str) -> tuple[str, str]:
    """(query view, gallery view) of a direction."""
    return ("drone", "satellite") if direction == "d2s" else ("satellite", "drone")


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


def synthetic_retriever_checkpoint(root: Path, *, device: str = "cpu", progress: bool = True) -> Path:
    """Train (once, cached beside the synthetic benchmark) the small retriever the synthetic default uses."""
    from skyrank.retrievers.train import train_retriever

    key = hashlib.sha256(json.dumps(SYNTHETIC_RETRIEVER, sort_keys=True).encode()).hexdigest()[:12]
    out = Path(str(root) + f".retriever-{key}")
    ckpt = out / "weights_end.pth"
    if ckpt.is_file():
        return ckpt
    return train_retriever(
        "synthetic",
        root,
        out,
        arch=SYNTHETIC_RETRIEVER["arch"],
        image_size=SYNTHETIC_RETRIEVER["image_size"],
        epochs=SYNTHETIC_RETRIEVER["epochs"],
        batch_size=SYNTHETIC_RETRIEVER["batch_size"],
        device=device,
        progress=progress,
        resume=True,
    )


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

    Returns:
        a :class:`BuildReport`; the folder is complete (manifest written) and validated when this returns.
        ``None`` on the processes other than rank 0 of a multi-process run: they only encode their shards.
    """
    call_args = dict(locals())  # first statement: exactly the arguments, to run them again on each process
    from skyrank.card import render_dataset_card
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
    from skyrank.writer import DatasetWriter

    if num_processes > 1 and not is_distributed():
        return launch(build_dataset, {**call_args, "num_processes": 1}, num_processes, device=device)
    dist_ctx = init_distributed(device)  # one process: nothing to do; under a launcher: join, one GPU per rank
    device = dist_ctx.device
    t_start = time.perf_counter()
    timings = {"setup": 0.0, "decode": 0.0, "encode": 0.0, "search": 0.0, "write": 0.0, "validate": 0.0}
    for d in directions:
        if d not in schema.DIRECTIONS:
            raise SkyRankError(f"--direction must be d2s or s2d, got {d!r}")
    for s in splits:
        if s not in schema.SPLITS:
            raise SkyRankError(f"--splits must be among {', '.join(schema.SPLITS)}, got {s!r}")
    if protocol not in schema.PROTOCOLS:
        raise SkyRankError(f"--protocol must be one of {', '.join(schema.PROTOCOLS)}, got {protocol!r}")
    if top_m < 2:
        raise SkyRankError(f"--top-m must be at least 2 (m−1 negatives are stored), got {top_m}")
    if embedding_dtype not in schema.EMBEDDING_DTYPES:
        raise SkyRankError(
            f"--embedding-dtype must be one of {', '.join(schema.EMBEDDING_DTYPES)}, got {embedding_dtype!r}"
        )
    if embeddings is None:
        embeddings = dataset == "synthetic"

    bench = get_benchmark(dataset)
    if bench.altitudes:
        if altitude is None:
            raise SkyRankError(f"{dataset} is evaluated per altitude: pass --altitude {{{','.join(bench.altitudes)}}}")
        altitude = str(altitude).removesuffix("m")
        if altitude not in bench.altitudes:
            raise SkyRankError(
                f"--altitude must be one of {', '.join(bench.altitudes)} for {dataset}, got {altitude!r}"
            )
    elif altitude is not None:
        raise SkyRankError(f"{dataset} has no altitudes; drop --altitude")

    if dataset == "synthetic" and root is None:
        from skyrank.benchmarks.synthetic import ensure_synthetic

        with main_process_first():
            root = ensure_synthetic(progress=progress and dist_ctx.is_main)
    if root is None:
        raise SkyRankError(f"--root is required for {dataset}: the folder of your copy of the benchmark")
    root = Path(root)
    if out is None:
        out = Path(f"skyrank-{dataset}" + (f"-{altitude}" if altitude else ""))
    out = Path(out)
    # Fail fast, before any encoding or training: an existing output, or a benchmark layout that does not read.
    DatasetWriter.check_output(out, overwrite)
    layouts: dict[tuple[str, str], RetrievalSplit] = {
        (split, direction): bench.load_split(root, split, direction=direction, protocol=protocol, altitude=altitude)
        for split in splits
        for direction in directions
    }

    kwargs: dict[str, Any] = {}
    if arch is not None:
        kwargs["arch"] = arch
    if image_size is not None:
        kwargs["image_size"] = image_size
    if opts is not None:
        kwargs["opts"] = opts
    trained_here = False
    if retriever == "sample4geo" and checkpoint is None:
        if dataset != "synthetic":
            raise SkyRankError(
                "sample4geo needs --checkpoint (the official weights_e1_0.9515.pth for University-1652), or train one "
                "with `skyrank retriever train`"
            )
        with main_process_first():
            checkpoint = synthetic_retriever_checkpoint(root, device=device, progress=progress and dist_ctx.is_main)
        kwargs.setdefault("arch", SYNTHETIC_RETRIEVER["arch"])
        kwargs.setdefault("image_size", SYNTHETIC_RETRIEVER["image_size"])
        trained_here = True
    model = create(retriever, checkpoint=checkpoint, device=device, **kwargs)
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
            qview, gview = _views(direction)
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
            )
            index_info[f"{split}/{direction}"] = info
            timings["search"] += time.perf_counter() - t0
            cfg = schema.retriever_config_name(retriever, dataset, direction, altitude)
            gt_in = 100.0 * float(np.mean([r["gt_rank"] <= top_m for r in rows])) if rows else 0.0
            stats.append(SplitStats(cfg, split, len(rows), len(g.ids), gt_in, retrieval_metrics(rows)))
            # Held as Arrow columns until written: a fraction of the memory of the row dicts.
            retriever_tables.append((cfg, split, pa.Table.from_pylist(rows, schema=_RETRIEVER_ARROW)))
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
        "software": _software_versions(),
    }
    tables = []
    with DatasetWriter(out, overwrite=overwrite) as writer, tqdm(
        total=len(image_rows) + len(retriever_tables), disable=not progress, unit="table", desc="write parquet"
    ) as bar:
        for (cfg, split), rows_by_id in sorted(image_rows.items()):
            rows = [rows_by_id[k] for k in sorted(rows_by_id)]
            features = schema.features_for(cfg, with_images=with_images)
            tables.append(writer.add_table(cfg, split, rows, features, images_root=root if with_images else None))
            bar.update()
        for cfg, split, rows in retriever_tables:
            tables.append(writer.add_table(cfg, split, rows, schema.RETRIEVER_FEATURES))
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
                "image_size": model.image_size,
            },
            "default_config": retriever_tables[0][0],
            "stats": [
                {"config": s.config, "split": s.split, "rows": s.queries, "gallery": s.gallery,
                 "gt_in_top_m": s.gt_in_top_m, **s.metrics}
                for s in stats
            ],
        }
        card = render_dataset_card(
            tables,
            pretty_name=card_inputs["pretty_name"],
            benchmark_meta=card_inputs["benchmark_meta"],
            retriever_meta=card_inputs["retriever_meta"],
            build_params=params,
            stats={(s["config"], s["split"]): s for s in card_inputs["stats"]},
            default_config=retriever_tables[0][0],
        )
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
