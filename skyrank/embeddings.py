"""Retriever embeddings as a config, and re-mining retriever configs from them (``skyrank remine``).

``skyrank build --embeddings`` writes ``embeddings-<retriever>-<bench>[-<alt>]``: one row per image (``image_id``,
``view``, ``split``, ``embedding``, a fixed-size list of float32 or float16, the dtype recorded in the manifest and the
card). Embeddings are derived data, not pixels, so they may be published beside the ids-only configs of a licensed
benchmark. The build mines from exactly these vectors (one per image, shared by both directions), so
:func:`remine` — which reads them back and calls the same :func:`skyrank.mining.mine` (Eq. 1, 2, 6) — reproduces the
build's rows bit for bit when they are stored as float32 and both use exact search. Stored as float16, each
component is rounded to 11 significant bits (relative error <= 2^-11), so a score <q, r> moves by at most
``(2 * 2^-11 + 2^-22) |q| |r|`` plus float32 accumulation, under 1e-3 for unit vectors (:data:`FLOAT16_SCORE_TOL`,
also the bound on the Eq. 6 similarities): the rows agree except where two scores were closer than that.

With another m, :func:`remine` writes a new retriever config named ``<retriever>-<bench>[-<alt>]-<dir>-m<m>``, so a
user without a GPU or a copy of the benchmark can study m, and then T and |G_z| at training time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features

from skyrank.errors import SkyRankError
from skyrank.format import schema

#: Bound on the change of a retriever score when both embeddings are stored as float16 (unit vectors: 2^-10 for
#: the rounding of both, plus slack for the second-order term and float32 accumulation).
FLOAT16_SCORE_TOL = 1e-3


def embeddings_table(
    split: str, image_ids: Sequence[str], views: Sequence[str], vectors: np.ndarray, features: Features
) -> pa.Table:
    """The Arrow table of one split of an embeddings config (vectors cast to the features' dtype)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    emb_feature = features["embedding"]
    dim, dtype = int(emb_feature.length), str(emb_feature.feature.dtype)
    if vectors.ndim != 2 or vectors.shape != (len(image_ids), dim):
        raise ValueError(f"expected {len(image_ids)} x {dim} embeddings, got {vectors.shape}")
    flat = pa.array(vectors.astype(np.dtype(dtype)).reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.table(
        {
            "image_id": pa.array(list(image_ids), pa.string()),
            "view": pa.array(list(views), pa.string()),
            "split": pa.array([split] * len(image_ids), pa.string()),
            "embedding": column,
        }
    ).cast(features.arrow_schema)


def _manifest_table(manifest: dict[str, Any], config: str, split: str) -> dict[str, Any] | None:
    return next(
        (t for t in manifest.get("tables") or [] if t.get("config") == config and t.get("split") == split), None
    )


def _read(folder: Path, entry: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(folder / f, columns=columns) for f in entry["files"]])


def read_embeddings(folder: str | Path, split: str) -> tuple[list[str], list[str], np.ndarray]:
    """``(image_ids, views, float32 (N, D) matrix)`` of one split of a folder's embeddings config."""
    from skyrank.writer import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    emb = manifest.get("embeddings")
    if not emb:
        raise SkyRankError(
            f"{folder} has no embeddings config: rebuild it with `skyrank build --embeddings` to re-mine without a "
            "retriever"
        )
    entry = _manifest_table(manifest, emb["config"], split)
    if entry is None:
        raise SkyRankError(f"{folder}: {emb['config']} has no split {split!r}")
    table = _read(folder, entry)
    flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(table.num_rows, int(emb["dim"]))
    return table.column("image_id").to_pylist(), table.column("view").to_pylist(), vectors


def remined_config_name(retriever_config: str, build_m: int, top_m: int) -> str:
    """The name a re-mined config gets: the base name for the build's m, ``...-m<m>`` for another m."""
    try:
        return schema.with_top_m(retriever_config, None if top_m == build_m else top_m)
    except ValueError as e:
        raise SkyRankError(str(e)) from e


def remine(
    folder: str | Path,
    retriever_config: str,
    top_m: int | None = None,
    *,
    out: str | Path | None = None,
    overwrite: bool = False,
    index: str = "exact",
    progress: bool = False,
) -> dict[str, Any]:
    """Rebuild a retriever config from the folder's embeddings config, without running a retriever.

    The query set of each split is the one of ``retriever_config`` (queries dropped by the build stay dropped), the
    gallery the ``gallery-*`` rows of the reference view; both are scored with the stored embeddings and mined with
    :func:`skyrank.mining.mine` at ``top_m`` (default: the config's m). The result is written as
    :func:`remined_config_name` — replacing the config itself for the build's m, a new ``-m<m>`` config otherwise —
    into ``out`` (default: ``folder`` itself, replaced atomically), with every other table copied, the card
    re-rendered and the folder validated.

    Returns ``{"out", "config", "m", "rows": {split: n}, "stats": [...]}``.
    """
    from skyrank.card import render_card_from_inputs
    from skyrank.metrics import retrieval_metrics
    from skyrank.mining import mine
    from skyrank.validate import validate_dataset
    from skyrank.writer import DatasetWriter, read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    build_m = int(manifest.m)
    tables = [t for t in manifest.get("tables") or [] if isinstance(t, dict)]
    retriever_cfgs = sorted({t["config"] for t in tables if schema.config_kind(t["config"]) == "retriever"})
    if retriever_config not in retriever_cfgs:
        raise SkyRankError(
            f"{folder} has no retriever config {retriever_config!r}; it has: {', '.join(retriever_cfgs) or 'none'}"
        )
    emb = manifest.get("embeddings")
    if not emb:
        raise SkyRankError(
            f"{folder} has no embeddings config: rebuild it with `skyrank build --embeddings` to re-mine without a "
            "retriever"
        )
    m = int(top_m if top_m is not None else (schema.config_top_m(retriever_config) or build_m))
    if m < 2:
        raise SkyRankError(f"--top-m must be at least 2 (m−1 negatives are stored), got {m}")
    new_cfg = remined_config_name(retriever_config, build_m, m)
    direction = schema.config_direction(new_cfg)
    gview = "satellite" if direction == "d2s" else "drone"
    gallery_cfg = f"gallery-{schema.config_suffix(retriever_config)}"

    t0 = time.perf_counter()
    new_tables: dict[str, pa.Table] = {}
    for entry in sorted((t for t in tables if t["config"] == retriever_config), key=lambda t: t["split"]):
        split = entry["split"]
        queries = _read(folder, entry)
        # What the build stored per query beyond its label: explicit positives (CVACT test's 5 m rule) and the
        # optional semi-positives column (VIGOR) are carried into the re-mined rows.
        extras = {}
        if manifest.get("explicit_positives"):
            extras["query_positives"] = queries.column("positive_ids").to_pylist()
        if "semi_positive_ids" in queries.column_names:
            extras["query_semi_positives"] = queries.column("semi_positive_ids").to_pylist()
        g_entry = _manifest_table(manifest, gallery_cfg, split)
        if g_entry is None:
            raise SkyRankError(f"{folder}: {gallery_cfg} has no split {split!r}")
        gallery = _read(folder, g_entry, ["image_id", "label", "view"])
        ids, _views, vectors = read_embeddings(folder, split)
        row_of = {image_id: i for i, image_id in enumerate(ids)}
        g_ids = [i for i, v in zip(gallery.column("image_id").to_pylist(), gallery.column("view").to_pylist(),
                                   strict=True) if v == gview]
        g_labels = dict(zip(gallery.column("image_id").to_pylist(), gallery.column("label").to_pylist(), strict=True))
        q_ids = queries.column("query_id").to_pylist()
        missing = [i for i in (*q_ids, *g_ids) if i not in row_of]
        if missing:
            raise SkyRankError(
                f"{emb['config']}/{split} lacks the embeddings of {len(missing)} image(s), e.g. {missing[:3]}"
            )
        try:
            rows = mine(
                q_ids,
                queries.column("label").to_pylist(),
                vectors[[row_of[i] for i in q_ids]],
                g_ids,
                [g_labels[i] for i in g_ids],
                vectors[[row_of[i] for i in g_ids]],
                m=m,
                index=index,
                progress=progress,
                **extras,
            )
        except ValueError as e:
            raise SkyRankError(f"cannot re-mine {retriever_config}/{split} at m={m}: {e}") from e
        new_tables[split] = (rows, len(g_ids))
    search_seconds = time.perf_counter() - t0

    card_inputs = manifest.get("card_inputs")
    if not card_inputs:
        raise SkyRankError(f"{folder} was built by an older skyrank (no card inputs in its manifest): rebuild it")
    params = {k: v for k, v in manifest.items() if k not in ("files", "tables", "card_inputs")}
    params["remined"] = sorted(
        [r for r in params.get("remined") or [] if r.get("config") != new_cfg]
        + [{"config": new_cfg, "from": emb["config"], "m": m, "index": index, "dtype": emb["dtype"]}],
        key=lambda r: r["config"],
    )
    stats = [s for s in card_inputs.get("stats") or [] if s.get("config") != new_cfg]
    for split, (rows, n_gallery) in new_tables.items():
        gt_in = 100.0 * float(np.mean([r["gt_rank"] <= m for r in rows])) if rows else 0.0
        stats.append({"config": new_cfg, "split": split, "rows": len(rows), "gallery": n_gallery,
                      "gt_in_top_m": gt_in, **retrieval_metrics(rows)})
    card_inputs = {**card_inputs, "stats": stats}

    target = Path(out) if out is not None else folder
    in_place = target.resolve() == folder.resolve()
    written = []
    with DatasetWriter(target, overwrite=overwrite or in_place) as writer:
        for entry in tables:
            if entry["config"] == new_cfg:
                continue  # replaced below
            table = _read(folder, entry)  # its own features (the manifest's JSON sorts their keys)
            written.append(writer.add_table(entry["config"], entry["split"], table,
                                            Features.from_arrow_schema(table.schema)))
        for split, (rows, _n) in new_tables.items():
            written.append(writer.add_table(new_cfg, split, rows,
                                            schema.features_for(new_cfg, optional=rows[0] if rows else ())))
        default = card_inputs.get("default_config") or retriever_cfgs[0]
        card = render_card_from_inputs(written, {**card_inputs, "stats": stats}, params, default)
        final = writer.finalize(card, {**params, "card_inputs": card_inputs})
    validate_dataset(final)
    return {
        "out": final,
        "config": new_cfg,
        "m": m,
        "rows": {split: len(rows) for split, (rows, _n) in new_tables.items()},
        "stats": [s for s in stats if s["config"] == new_cfg],
        "search_seconds": search_seconds,
    }
