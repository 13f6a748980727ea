"""``skyrank export DIR --format mteb``: a SkyRank folder in the MTEB/BEIR re-ranking layout.

MTEB reads a retrieval or re-ranking task (``mteb.abstasks.retrieval_dataset_loaders.RetrievalDatasetLoader``) from
one Hub dataset (or local folder) with, for a subset ``<s>``, the configs ``<s>-corpus`` (``id`` + a modality
column), ``<s>-queries`` (``id`` + a modality column), ``<s>-qrels`` (``query-id``, ``corpus-id``, ``score``) and,
for re-ranking, ``<s>-top_ranked`` (``query-id``, ``corpus-ids``: each query's pre-ranked candidates), each split
picked by name (or the only split). ``_load_top_ranked`` casts that config to exactly those two columns, so it holds
nothing else. Every retriever config ``X`` of the folder becomes the subset ``X``, so a folder with several
retriever configs (directions, altitudes, retrievers, re-mined m) exports without a name clash:

* ``X-corpus``: the gallery of the direction (``id``, ``label``, ``path``; ``image`` when the folder embeds images),
* ``X-queries``: the config's queries (same columns),
* ``X-qrels``: one row per (query, positive), ``score`` 1 (every positive, not only the stored ground truth),
* ``X-top_ranked``: ``corpus-ids`` = the retriever's raw top-m (``retrieved_ids``, retriever order, ground truth
  included when retrieved: what a re-ranker receives at inference, SkyLink "Inference").

Splits keep their SkyRank names (``train``, ``test``). The folder gets a README card whose ``configs:`` YAML makes
every config loadable with ``datasets.load_dataset(OUT, "X-qrels", split="test")``. Written atomically (a hidden
staging folder renamed into place).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyrank.atomic import swap_in_dir
from skyrank.errors import OutputExistsError, SkyRankError
from skyrank.format import schema

#: The parts of one MTEB subset, in the order MTEB loads them.
MTEB_PARTS: tuple[str, ...] = ("corpus", "queries", "qrels", "top_ranked")
FORMATS: tuple[str, ...] = ("mteb",)
_MARKER = "skyrank_export.json"


def _read_config(folder: Path, manifest: dict[str, Any], config: str, split: str, columns: list[str] | None = None):
    entry = next((t for t in manifest["tables"] if t["config"] == config and t["split"] == split), None)
    if entry is None:
        raise SkyRankError(f"{folder}: config {config!r} has no split {split!r}")
    names = pq.read_schema(folder / entry["files"][0]).names
    cols = [c for c in columns if c in names] if columns is not None else None
    return pa.concat_tables([pq.read_table(folder / f, columns=cols) for f in entry["files"]])


def _image_part(table: pa.Table, ids: list[str] | None, images_root: Path | None = None) -> pa.Table:
    """``id`` + the image table's columns (``label``, ``path`` and ``image`` when present, or read from
    ``images_root / path`` when given: file bytes copied unchanged), rows in ``ids`` order."""
    if ids is not None:
        index = {v: i for i, v in enumerate(table.column("image_id").to_pylist())}
        missing = [i for i in ids if i not in index]
        if missing:
            raise SkyRankError(f"{len(missing)} image id(s) absent from the image config, e.g. {missing[:3]}")
        table = table.take(pa.array([index[i] for i in ids], pa.int64()))
    columns = {"id": table.column("image_id"), "label": table.column("label"), "path": table.column("path")}
    if images_root is not None:
        cells = []
        for rel in table.column("path").to_pylist():
            try:
                cells.append({"bytes": (images_root / rel).read_bytes(), "path": Path(rel).name})
            except OSError as e:
                raise SkyRankError(f"image {rel!r} not found under --images-root {images_root}: {e}") from e
        columns["image"] = pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    elif "image" in table.column_names:
        columns["image"] = table.column("image")
    out = pa.table(columns)
    if "image" in columns:  # keep the Image() feature so load_dataset decodes it
        from datasets import Features, Image, Value

        feats = Features({"id": Value("string"), "label": Value("string"), "path": Value("string"), "image": Image()})
        out = out.cast(feats.arrow_schema)
    return out


def mteb_tables(
    folder: str | Path, config: str, split: str, images_root: str | Path | None = None
) -> dict[str, pa.Table]:
    """The four MTEB tables (:data:`MTEB_PARTS`) of one retriever config and split of a SkyRank folder
    (``images_root``: embed the images from a local copy of the benchmark into corpus and queries)."""
    from skyrank.writer import read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder)
    direction = schema.config_direction(config)
    gview = "satellite" if direction == "d2s" else "drone"
    suffix = schema.config_suffix(config)
    rows = _read_config(folder, manifest, config, split, ["query_id", "positive_ids", "retrieved_ids"])
    gallery = _read_config(folder, manifest, f"gallery-{suffix}", split)
    queries = _read_config(folder, manifest, f"queries-{suffix}", split)
    views = gallery.column("view").to_pylist()
    g_ids = [i for i, v in zip(gallery.column("image_id").to_pylist(), views, strict=True) if v == gview]
    q_ids = rows.column("query_id").to_pylist()
    qrel_q, qrel_c = [], []
    for qid, positives in zip(q_ids, rows.column("positive_ids").to_pylist(), strict=True):
        qrel_q.extend([qid] * len(positives))
        qrel_c.extend(positives)
    root = Path(images_root) if images_root is not None else None
    return {
        "corpus": _image_part(gallery, g_ids, root),
        "queries": _image_part(queries, q_ids, root),
        "qrels": pa.table(
            {
                "query-id": pa.array(qrel_q, pa.string()),
                "corpus-id": pa.array(qrel_c, pa.string()),
                "score": pa.array([1] * len(qrel_q), pa.int32()),
            }
        ),
        "top_ranked": pa.table(
            {
                "query-id": rows.column("query_id"),
                "corpus-ids": rows.column("retrieved_ids").cast(pa.list_(pa.string())),
            }
        ),
    }


def _card(out_name: str, subsets: list[str], tables: dict[tuple[str, str], pa.Table], manifest: dict[str, Any]) -> str:
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    from skyrank import hub_limits

    card_inputs = manifest.get("card_inputs") or {}
    bench = card_inputs.get("benchmark_meta") or {}
    license_id = bench.get("license") or "other"
    extra = {}
    if license_id == "other":
        extra = {"license_name": bench.get("license_name") or "see-source", "license_link": bench.get("license_link")
                 or "LICENSE"}
    largest = max(t.num_rows for t in tables.values())
    data = DatasetCardData(
        pretty_name=f"{card_inputs.get('pretty_name', 'SkyRank')} (MTEB re-ranking layout)",
        license=license_id,
        **extra,
        task_categories=list(schema.CARD_TASK_CATEGORIES),
        size_categories=[hub_limits.size_category(largest)],
        tags=[*schema.CARD_TAGS, "mteb"],
    )
    configs: dict[str, Any] = {}
    for sub in subsets:
        for part in MTEB_PARTS:
            name = f"{sub}-{part}"
            splits = sorted({s for (c, s) in tables if c == name})
            configs[name] = {"data_files": [{"split": s, "path": f"{name}/{s}-*"} for s in splits]}
    configs[f"{subsets[0]}-qrels"]["default"] = True
    MetadataConfigs(configs).to_dataset_card_data(data)
    rows = "\n".join(
        f"| `{c}` | {s} | {t.num_rows:,} |" for (c, s), t in sorted(tables.items())
    )
    first = subsets[0]
    split = "test" if any(s == "test" for (_c, s) in tables) else sorted({s for (_c, s) in tables})[0]
    images = (
        "embedded in the corpus and queries configs"
        if any("image" in t.column_names for t in tables.values())
        else "not included (`path` is relative to the benchmark root): attach them from your own copy"
    )
    body = f"""
# {data.pretty_name}

Exported by `skyrank export --format mteb` from the SkyRank dataset `{out_name}`. Each SkyRank retriever config is
one MTEB subset with four configs: `<subset>-corpus` (`id`, `label`, `path`[, `image`]: the gallery),
`<subset>-queries` (the queries), `<subset>-qrels` (`query-id`, `corpus-id`, `score`: every positive) and
`<subset>-top_ranked` (`query-id`, `corpus-ids`: the retriever's top-m, in retriever order). Subsets:
{", ".join(f"`{s}`" for s in subsets)}.

```python
from datasets import load_dataset
top = load_dataset("/path/to/this/folder", "{first}-top_ranked", split="{split}")

from mteb.abstasks.retrieval_dataset_loaders import RetrievalDatasetLoader
data = RetrievalDatasetLoader("/path/to/this/folder", revision=None, split="{split}", config="{first}").load()
```

Images are {images}.
`datasets` caches a local folder by its name: after re-exporting into the same path, load with a fresh
`cache_dir`. Scores: R@K in SkyRank's sense (a query counts if any positive is in the top K) is MTEB's
`hit_rate@K`; MTEB's MAP is none of SkyRank's APs.

| config | split | rows |
|---|---|---:|
{rows}
"""
    return str(DatasetCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body))


def export_dataset(
    folder: str | Path, out: str | Path, *, format: str = "mteb", configs: list[str] | None = None,
    overwrite: bool = False,
    images_root: str | Path | None = None,
) -> dict[str, Any]:
    """Export a SkyRank folder's retriever configs (all, or ``configs``) in the MTEB re-ranking layout to ``out``.

    ``images_root``: your copy of the benchmark; its image files are embedded in the corpus and queries configs
    (what MTEB's image tasks read). For University-1652 / SUES-200 keep such an export private: their terms forbid
    redistributing the images.

    Returns ``{"out", "subsets", "tables": {(config, split): rows}}``.
    """
    import json

    from skyrank.writer import read_manifest

    if images_root is not None and not Path(images_root).is_dir():
        raise SkyRankError(f"--images-root {images_root} is not a folder")
    if format not in FORMATS:
        raise SkyRankError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    folder = Path(folder)
    manifest = read_manifest(folder)
    available = sorted({t["config"] for t in manifest.get("tables") or [] if schema.config_kind(t["config"]) ==
                        "retriever"})
    subsets = list(configs) if configs else available
    unknown = [c for c in subsets if c not in available]
    if unknown or not subsets:
        raise SkyRankError(
            f"{folder} has no retriever config {unknown or ''}; it has: {', '.join(available) or 'none'}"
        )
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"output folder {out} already exists; pass --overwrite or choose another --out")
        if any(out.iterdir()) and not (out / _MARKER).is_file():
            raise OutputExistsError(f"{out} is not a SkyRank export ({_MARKER} missing); refusing to replace it")
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        tables: dict[tuple[str, str], pa.Table] = {}
        for sub in subsets:
            for split in sorted({t["split"] for t in manifest["tables"] if t["config"] == sub}):
                for part, table in mteb_tables(folder, sub, split, images_root).items():
                    name = f"{sub}-{part}"
                    (staging / name).mkdir(exist_ok=True)
                    pq.write_table(table, staging / name / f"{split}-00000-of-00001.parquet", write_page_index=True)
                    tables[(name, split)] = table
        (staging / "README.md").write_text(_card(folder.name, subsets, tables, manifest), encoding="utf-8")
        (staging / _MARKER).write_text(
            json.dumps({"format": format, "source": str(folder), "subsets": subsets}, indent=2) + "\n"
        )
        swap_in_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"out": out, "subsets": subsets, "tables": {k: t.num_rows for k, t in tables.items()}}
