"""Validation of a SkyRank dataset folder: completeness, card metadata, schema, ``load_dataset`` round trip and
invariants.

:func:`validate_dataset` collects **every** problem it finds and raises one :class:`~skyrank.errors.ValidationError`
listing them (capped at :data:`MAX_PROBLEMS` lines); it returns a :class:`ValidationReport` only for a valid folder.

Checks, in order:

1. the folder is a complete build (``skyrank_manifest.json`` present; see :mod:`skyrank.writer`) and every Parquet
   file matches its manifest sha256/size, with no unlisted file;
2. README.md YAML parses, passes :func:`skyrank.hub_limits.check_card_metadata` (licence, categories, split names,
   exactly one default config), every YAML config has files, and YAML configs, ``dataset_info`` and manifest tables
   agree (features equal :func:`skyrank.format.schema.features_for`, ``num_examples`` equal to the rows on disk);
3. every (config, split) loads with ``datasets.load_dataset(folder, config, split=...)`` offline, into a temporary
   cache, with the declared features and row count;
4. invariants, read with pyarrow: for retriever configs ``len(candidate_ids) == m - 1``, ``len(retrieved_ids) == m``,
   the swap rule (Eq. 2: candidates are the retrieved ids minus every positive, then the next negatives), the ground
   truth and positives never among the candidates, scores non-increasing and in [-1, 1], ``gt_rank ==
   min(positive_ranks)``, ``gt_rank <= m`` iff the ground truth is retrieved, ranks consistent with scores, ids drawn
   from the gallery config (labels matching); for image configs unique ids, legal views, and images that decode.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features

from skyrank import hub_limits
from skyrank.errors import ValidationError
from skyrank.format import rules, schema
from skyrank.loading import split_front_matter
from skyrank.writer import CARD_NAME, MANIFEST_NAME, read_manifest, verify_checksums

#: At most this many problem lines are listed in the raised error (the rest are counted).
MAX_PROBLEMS = 100
#: How many example ids a grouped invariant problem names.
MAX_EXAMPLES = 5
#: Tolerance on cosine similarities (float32 rounding of L2-normalised dot products).
SIM_TOL = 1e-4
#: two rows holding the same (ground truth, candidate) pair agree on its Eq. 6 similarity within this (float32 dots)
SOFT_LABEL_TOL = 1e-5


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found in a valid folder."""

    folder: Path
    configs: list[str]  # in README order, default first
    splits: dict[str, list[str]]  # config → splits
    rows: dict[tuple[str, str], int]  # (config, split) → rows
    default_config: str | None = None
    problems: list[str] = field(default_factory=list)  # always empty on return (problems raise)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not (or only indirectly) checked, said plainly


class _Problems:
    """Problems, with invariant violations grouped per (table, check) and a few example ids each."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.grouped: dict[tuple[str, str], list[str]] = {}

    def add(self, line: str) -> None:
        self.lines.append(line)

    def row(self, table: str, check: str, row_id: Any) -> None:
        self.grouped.setdefault((table, check), []).append(str(row_id))

    def all(self) -> list[str]:
        out = list(self.lines)
        for (table, check), ids in self.grouped.items():
            examples = ", ".join(ids[:MAX_EXAMPLES]) + (", ..." if len(ids) > MAX_EXAMPLES else "")
            out.append(f"{table}: {len(ids)} row(s) {check} (e.g. {examples})")
        return out


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Make ``datasets``/``huggingface_hub`` offline for the duration (their env flags are read at import)."""
    import datasets.config as dconfig
    import huggingface_hub.constants as hconst
    from datasets.utils import logging as dlogging

    saved = (dconfig.HF_HUB_OFFLINE, dconfig.HF_UPDATE_DOWNLOAD_COUNTS, hconst.HF_HUB_OFFLINE)
    bars = dlogging.is_progress_bar_enabled()
    dconfig.HF_HUB_OFFLINE = True
    dconfig.HF_UPDATE_DOWNLOAD_COUNTS = False
    hconst.HF_HUB_OFFLINE = True
    dlogging.disable_progress_bar()
    try:
        yield
    finally:
        dconfig.HF_HUB_OFFLINE, dconfig.HF_UPDATE_DOWNLOAD_COUNTS, hconst.HF_HUB_OFFLINE = saved
        if bars:
            dlogging.enable_progress_bar()


def _read_card_metadata(folder: Path, problems: _Problems) -> dict[str, Any] | None:
    """The card's YAML, read with the one reader every module uses (:func:`skyrank.loading.split_front_matter`)."""
    readme = folder / CARD_NAME
    if not readme.is_file():
        problems.add(f"{CARD_NAME} is missing")
        return None
    try:
        text = readme.read_text(encoding="utf-8")
        if not text.startswith("---"):
            problems.add(f"{CARD_NAME} has no YAML front matter")
            return None
        meta, _ = split_front_matter(text)
    except Exception as e:  # noqa: BLE001 - any YAML/parse error is a problem to report
        problems.add(f"{CARD_NAME}: YAML front matter does not parse: {e}")
        return None
    return meta


def _yaml_tables(meta: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """config → split → path patterns, from the YAML ``configs:`` list."""
    out: dict[str, dict[str, list[str]]] = {}
    for cfg in meta.get("configs") or []:
        if not isinstance(cfg, dict) or not cfg.get("config_name"):
            continue
        splits: dict[str, list[str]] = {}
        data_files = cfg.get("data_files")
        items = data_files if isinstance(data_files, list) else [data_files] if data_files else []
        for item in items:
            if isinstance(item, dict):
                paths = item.get("path")
                splits.setdefault(str(item.get("split")), []).extend(paths if isinstance(paths, list) else [paths])
            else:
                splits.setdefault("train", []).append(str(item))
        out[str(cfg["config_name"])] = splits
    return out


def _dataset_infos(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    infos = meta.get("dataset_info")
    if isinstance(infos, dict):
        infos = [infos]
    return {str(i.get("config_name", "default")): i for i in infos or [] if isinstance(i, dict)}


def _files_for(folder: Path, patterns: list[str]) -> list[Path]:
    files: set[Path] = set()
    for pattern in patterns:
        files.update(p for p in folder.glob(str(pattern)) if p.is_file() and p.suffix == ".parquet")
    return sorted(files)


def _sorted_nonincreasing(values: list[float]) -> bool:
    return all(a >= b for a, b in pairwise(values))


def _check_image_table(table_name: str, table: pa.Table, problems: _Problems) -> dict[str, str]:
    """Invariants of a gallery/queries table; returns image_id → label."""
    ids = table.column("image_id").to_pylist()
    labels = table.column("label").to_pylist()
    views = table.column("view").to_pylist()
    paths = table.column("path").to_pylist()
    seen: set[str] = set()
    for i, image_id in enumerate(ids):
        if image_id is None or image_id == "":
            problems.row(table_name, "have an empty image_id", i)
            continue
        if image_id in seen:
            problems.row(table_name, "repeat an image_id (image_ids must be unique)", image_id)
        seen.add(image_id)
        if not labels[i]:
            problems.row(table_name, "have an empty label", image_id)
        if views[i] not in schema.VIEWS:
            problems.row(table_name, f"have a view outside {list(schema.VIEWS)}", image_id)
        if not paths[i]:
            problems.row(table_name, "have an empty path", image_id)
    return dict(zip(ids, labels, strict=True))


def _check_images(table_name: str, paths: list[Path], problems: _Problems, batch_size: int = 64) -> int:
    """Decode every embedded image, a batch at a time (bounded memory); returns how many decoded."""
    from PIL import Image as PILImage

    decoded = 0
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=["image_id", "image"]):
            for image_id, cell in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                data = cell.get("bytes") if isinstance(cell, dict) else None
                if not data:
                    problems.row(table_name, "have no image bytes", image_id)
                    continue
                try:
                    with PILImage.open(io.BytesIO(data)) as im:
                        if im.format == "JPEG":
                            im.draft("RGB", (64, 64))  # DCT-scaled decode: reads every byte, much faster
                        im.load()
                    decoded += 1
                except Exception:  # noqa: BLE001 - any decoder error means a bad image
                    problems.row(table_name, "have image bytes that do not decode", image_id)
    return decoded


def _check_embeddings_table(
    table_name: str, split: str, table: pa.Table, dtype: str, problems: _Problems
) -> set[str]:
    """Invariants of one split of an ``embeddings-*`` config; returns its image ids.

    Unique ids, legal views, ``split`` equal to the stored split, finite values and unit L2 norms (within the
    storage dtype's rounding: 1e-4 for float32, 2e-3 for float16)."""
    import numpy as np

    ids = table.column("image_id").to_pylist()
    views = table.column("view").to_pylist()
    splits = table.column("split").to_pylist()
    seen: set[str] = set()
    for image_id, view, row_split in zip(ids, views, splits, strict=True):
        if not image_id:
            problems.row(table_name, "have an empty image_id", image_id)
        elif image_id in seen:
            problems.row(table_name, "repeat an image_id (one embedding per image)", image_id)
        seen.add(image_id)
        if view not in schema.VIEWS:
            problems.row(table_name, f"have a view outside {list(schema.VIEWS)}", image_id)
        if row_split != split:
            problems.row(table_name, f"have a split column different from the config split {split!r}", image_id)
    if table.num_rows:
        column = table.column("embedding").combine_chunks()
        values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        vectors = values.reshape(table.num_rows, -1)
        tol = 2e-3 if dtype == "float16" else 1e-4
        finite = np.isfinite(vectors).all(axis=1)
        norms = np.linalg.norm(np.where(np.isfinite(vectors), vectors, 0.0), axis=1)
        for i in np.flatnonzero(~finite):
            problems.row(table_name, "have NaN or infinite embedding values", ids[i])
        for i in np.flatnonzero(finite & (np.abs(norms - 1.0) > tol)):
            problems.row(table_name, f"have embeddings that are not L2-normalised (|norm - 1| > {tol})", ids[i])
    return seen


def _iter_rows(table: pa.Table, columns: Sequence[str], slice_rows: int = 4096) -> Iterator[tuple[int, dict]]:
    """``(row number, {column: value})`` for every row, converting ``slice_rows`` rows at a time (bounded memory)."""
    for start in range(0, table.num_rows, slice_rows):
        part = table.slice(start, slice_rows)
        cols = {name: part.column(name).to_pylist() for name in columns}
        for j in range(part.num_rows):
            yield start + j, {name: cols[name][j] for name in columns}


def _check_retriever_table(
    table_name: str,
    table: pa.Table,
    m: int | None,
    gallery: dict[str, str] | None,
    queries: dict[str, str] | None,
    problems: _Problems,
    inconsistent: list[str] | None = None,
    explicit_positives: bool = False,
) -> int:
    """Invariants of a retriever table (one row per query), read as Python values a slice of rows at a time.

    ``explicit_positives`` (the manifest's ``explicit_positives``: positives chosen per query, e.g. CVACT test's
    5 m rule): the positives need not share the query's label; one of them must.

    The soft labels cannot be recomputed without the embeddings, but Eq. 6 gives one value per (ground truth,
    candidate) pair: a pair that recurs (queries sharing a ground truth, or the pair reversed) with another
    ``candidate_gt_similarity`` is appended to ``inconsistent`` (a warning: hand-made test folders need not be
    consistent; with embeddings :func:`_recompute_with_embeddings` makes it a problem). Returns how many pair
    occurrences were compared.
    """
    seen: set[str] = set()
    pair_sim: dict[tuple[str, str], tuple[float, str]] = {}
    repeats = 0
    for i, r in _iter_rows(table, schema.RETRIEVER_COLUMNS):
        qid = r["query_id"] if r["query_id"] else f"row {i}"
        nulls = [k for k, v in r.items() if v is None or (isinstance(v, list) and any(x is None for x in v))]
        if nulls:
            problems.row(table_name, f"have null values in {nulls}", qid)
            continue
        if qid in seen:
            problems.row(table_name, "repeat a query_id", qid)
        seen.add(qid)
        cand, cscore, csim = r["candidate_ids"], r["candidate_scores"], r["candidate_gt_similarity"]
        ret, rscore = r["retrieved_ids"], r["retrieved_scores"]
        pos, pranks = r["positive_ids"], r["positive_ranks"]
        gt, grank, gscore = r["gt_id"], r["gt_rank"], r["gt_score"]
        posset = set(pos)
        if m is not None:
            if len(cand) != m - 1:
                problems.row(table_name, f"have len(candidate_ids) != m-1 = {m - 1}", qid)
            if len(ret) != m:
                problems.row(table_name, f"have len(retrieved_ids) != m = {m}", qid)
        if not (len(cscore) == len(csim) == len(cand)):
            problems.row(table_name, "have candidate_scores/_gt_similarity not aligned with candidate_ids", qid)
        else:  # Eq. 6 gives one similarity per (ground truth, candidate) pair, whatever row it appears in
            for c, sim in zip(cand, csim, strict=True):
                key = (gt, c) if gt < c else (c, gt)
                if key in pair_sim:
                    repeats += 1
                    first, where = pair_sim[key]
                    if abs(first - sim) > SOFT_LABEL_TOL and inconsistent is not None:
                        inconsistent.append(
                            f"{table_name}: candidate_gt_similarity of {key[0]} / {key[1]} is {sim:.6f} in {qid} but "
                            f"{first:.6f} in {where} (Eq. 6 gives one value per pair)"
                        )
                else:
                    pair_sim[key] = (sim, qid)
        if len(rscore) != len(ret):
            problems.row(table_name, "have retrieved_scores not aligned with retrieved_ids", qid)
        if len(pranks) != len(pos) or not pos:
            problems.row(table_name, "have positive_ranks not aligned with positive_ids (or no positive)", qid)
            continue
        if len(set(cand)) != len(cand):
            problems.row(table_name, "repeat a candidate id", qid)
        if len(set(ret)) != len(ret):
            problems.row(table_name, "repeat a retrieved id", qid)
        if gt in cand:
            problems.row(table_name, "have the ground truth among the candidates", qid)
        if posset.intersection(cand):
            problems.row(table_name, "have a positive among the candidates", qid)
        if gt not in posset or pos[0] != gt:
            problems.row(table_name, "have gt_id that is not the best-ranked positive (positive_ids[0])", qid)
        if any(a >= b for a, b in pairwise(pranks)) or min(pranks) < 1:
            problems.row(table_name, "have positive_ranks not strictly increasing 1-based ranks", qid)
        if grank != min(pranks):
            problems.row(table_name, "have gt_rank != min(positive_ranks)", qid)
        if not _sorted_nonincreasing(cscore):
            problems.row(table_name, "have candidate_scores that increase", qid)
        if not _sorted_nonincreasing(rscore):
            problems.row(table_name, "have retrieved_scores that increase", qid)
        values = [gscore, *cscore, *csim, *rscore]
        if any(not math.isfinite(v) or abs(v) > 1 + SIM_TOL for v in values):
            problems.row(table_name, "have scores/similarities outside [-1, 1]", qid)
        if sum(1 for s in rscore if s > gscore) >= grank:
            problems.row(table_name, "have gt_rank inconsistent with the scores (too many scores > gt_score)", qid)
        if grank == 1 and cscore and max(cscore) > gscore:
            problems.row(table_name, "have gt_rank 1 but a candidate scored above the ground truth", qid)
        if m is not None:
            if (grank <= m) != (gt in ret):
                problems.row(table_name, "have gt_rank <= m not matching whether gt_id is in retrieved_ids", qid)
            elif grank <= m and len(ret) >= grank and (ret[grank - 1] != gt or abs(rscore[grank - 1] - gscore) > 1e-6):
                problems.row(table_name, "have retrieved_ids[gt_rank-1] != gt_id (or its score != gt_score)", qid)
            for p, rank in zip(pos, pranks, strict=True):
                if rank <= len(ret) and ret[rank - 1] != p:
                    problems.row(table_name, "have a positive rank that does not match retrieved_ids", qid)
                    break
            # Swap rule (Eq. 2): the negatives of the top-m, in order, start the candidate list.
            negs = rules.swap_rule_positions([x in posset for x in ret], m).tolist()
            if len(rscore) == len(ret) and (
                [ret[j] for j in negs] != cand[: len(negs)]
                or any(abs(rscore[j] - c) > 1e-6 for j, c in zip(negs, cscore[: len(negs)], strict=True))
            ):
                problems.row(table_name, "break the swap rule (candidates != retrieved ids minus positives)", qid)
        if gallery is not None:
            unknown = [x for x in (gt, *pos, *cand, *ret) if x not in gallery]
            if unknown:
                problems.row(table_name, "reference ids absent from the gallery config", qid)
            else:
                if (not any(gallery[p] == r["label"] for p in pos)) if explicit_positives else (
                    any(gallery[p] != r["label"] for p in pos)
                ):
                    problems.row(table_name, "have a positive whose gallery label differs from the query label", qid)
                if any(gallery[c] == r["label"] for c in cand):
                    problems.row(table_name, "have a candidate with the query's label (a missed positive)", qid)
        if queries is not None:
            if qid not in queries:
                problems.row(table_name, "have a query_id absent from the queries config", qid)
            elif queries[qid] != r["label"]:
                problems.row(table_name, "have a label different from the queries config", qid)
    return repeats


def _recompute_with_embeddings(
    table_name: str, table: pa.Table, emb_table: pa.Table, dtype: str, problems: _Problems
) -> int:
    """Recompute a retriever table's scores (Eq. 1) and soft labels (Eq. 6) from the folder's embeddings config,
    with :func:`skyrank.format.rules.soft_label_similarity` (the function mining uses); returns the rows compared."""
    import numpy as np

    from skyrank.format import rules

    ids = emb_table.column("image_id").to_pylist()
    flat = emb_table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(len(ids), -1)
    index = {x: i for i, x in enumerate(ids)}
    tol = 2.0**-10 if dtype == "float16" else SOFT_LABEL_TOL  # float16 unit vectors: a dot moves <= 2 x 2^-11
    rows = 0
    for i, r in _iter_rows(table, ["query_id", "gt_id", "gt_score", "candidate_ids", "candidate_scores",
                                   "candidate_gt_similarity"]):  # fmt: skip
        qid = r["query_id"] or f"row {i}"
        needed = [r["query_id"], r["gt_id"], *r["candidate_ids"]]
        if any(x not in index for x in needed):
            problems.row(table_name, "have ids without an embedding", qid)
            continue
        cand = np.array([index[c] for c in r["candidate_ids"]], dtype=np.int64)
        sims = rules.soft_label_similarity(cand, np.int64(index[r["gt_id"]]), vectors)
        if np.abs(sims - np.asarray(r["candidate_gt_similarity"], dtype=np.float32)).max(initial=0.0) > tol:
            problems.row(table_name, "have candidate_gt_similarity that differs from the embeddings (Eq. 6)", qid)
        q = vectors[index[r["query_id"]]]
        scores = vectors[cand] @ q
        if abs(float(vectors[index[r["gt_id"]]] @ q) - r["gt_score"]) > tol or (
            np.abs(scores - np.asarray(r["candidate_scores"], dtype=np.float32)).max(initial=0.0) > tol
        ):
            problems.row(table_name, "have scores that differ from the embeddings (Eq. 1)", qid)
        rows += 1
    return rows


def _load_round_trip(
    folder: Path, config: str, split: str, expected: Features, rows: int, cache_dir: str, problems: _Problems
) -> None:
    import datasets

    try:
        ds = datasets.load_dataset(
            str(folder),
            config,
            split=split,
            cache_dir=cache_dir,
            verification_mode="basic_checks",
        )
    except Exception as e:  # noqa: BLE001 - every load failure is reported with its message
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        problems.add(f"{config}/{split}: load_dataset failed: {type(e).__name__}: {msg}")
        return
    if ds.features != expected:
        problems.add(f"{config}/{split}: load_dataset features {ds.features} differ from the schema {expected}")
    if ds.num_rows != rows:
        problems.add(f"{config}/{split}: load_dataset returned {ds.num_rows} rows, expected {rows}")
    if "image" in ds.features and ds.num_rows:
        try:
            ds[0]["image"].load()
        except Exception as e:  # noqa: BLE001
            problems.add(f"{config}/{split}: the first image does not decode through datasets: {e}")
    del ds


def validate_dataset(folder: str | Path, *, check_images: bool = True, load: bool = True) -> ValidationReport:
    """Validate a SkyRank dataset folder; raise :class:`ValidationError` listing every problem.

    Args:
        folder: the dataset folder (as written by :class:`skyrank.writer.DatasetWriter`).
        check_images: decode every embedded image.
        load: also load every (config, split) with ``datasets.load_dataset`` (offline, temporary cache).

    Returns:
        the :class:`ValidationReport` of a valid folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValidationError(f"{folder} is not a folder", [f"{folder} does not exist or is not a folder"])
    manifest = read_manifest(folder)  # raises "incomplete build"
    problems = _Problems()
    for p in verify_checksums(folder):
        problems.add(p)

    m = manifest.m  # one key in format 2; a format-1 manifest's top_m is read as m
    if not isinstance(m, int) or m < 2:
        problems.add(f"{MANIFEST_NAME}: 'm' must be an integer >= 2, got {m!r}")
        m = None
    manifest_tables = {(t["config"], t["split"]): t for t in manifest.get("tables") or [] if isinstance(t, dict)}
    if not manifest_tables:
        problems.add(f"{MANIFEST_NAME} lists no tables")

    meta = _read_card_metadata(folder, problems)
    yaml_tables: dict[str, dict[str, list[str]]] = {}
    infos: dict[str, dict[str, Any]] = {}
    default_config = None
    if meta is not None:
        for p in hub_limits.check_card_metadata(meta):
            problems.add(p)
        yaml_tables = _yaml_tables(meta)
        infos = _dataset_infos(meta)
        cfg_list = [c for c in meta.get("configs") or [] if isinstance(c, dict)]
        defaults = [c.get("config_name") for c in cfg_list if c.get("default")]
        if len(defaults) != 1 and not any("default: true" in line for line in problems.lines):
            problems.add(f"{CARD_NAME}: exactly one config must be 'default: true', found {len(defaults)}")
        if len(defaults) == 1:
            default_config = defaults[0]

    # YAML configs ↔ manifest tables ↔ files on disk.
    files: dict[tuple[str, str], list[Path]] = {}
    for cfg, splits in yaml_tables.items():
        if not splits:
            problems.add(f"{CARD_NAME}: config {cfg!r} has no data_files")
        for split, patterns in splits.items():
            if not hub_limits.SPLIT_NAME_RE.match(split):
                continue  # reported by check_card_metadata
            found = _files_for(folder, patterns)
            if not found:
                problems.add(f"{cfg}/{split}: no Parquet file matches {patterns}")
            files[(cfg, split)] = found
            if (cfg, split) not in manifest_tables:
                problems.add(f"{cfg}/{split}: declared in {CARD_NAME} but not in {MANIFEST_NAME}")
            else:
                listed = sorted(folder / f for f in manifest_tables[(cfg, split)].get("files", []))
                if found and listed != found:
                    problems.add(f"{cfg}/{split}: files on disk {[p.name for p in found]} != manifest {listed}")
    for cfg, split in manifest_tables:
        if meta is not None and split not in yaml_tables.get(cfg, {}):
            problems.add(f"{cfg}/{split}: in {MANIFEST_NAME} but not declared in {CARD_NAME} configs")

    with_images_flag = manifest.get("with_images")
    emb_info = manifest.get("embeddings") if isinstance(manifest.get("embeddings"), dict) else None

    # Read every table with pyarrow: schema, row counts, invariants.
    tables: dict[tuple[str, str], pa.Table] = {}
    expected: dict[tuple[str, str], Features] = {}
    for (cfg, split), paths in sorted(files.items()):
        if not paths:
            continue
        try:
            file_schemas = [pq.read_schema(p) for p in paths]
            got_all = [Features.from_arrow_schema(fs) for fs in file_schemas]
        except Exception as e:  # noqa: BLE001
            problems.add(f"{cfg}/{split}: Parquet unreadable or without features: {e}")
            continue
        with_images = bool(with_images_flag) if with_images_flag is not None else "image" in file_schemas[0].names
        if schema.config_kind(cfg) == "embeddings":
            if emb_info is None or emb_info.get("config") != cfg:
                problems.add(f"{cfg}/{split}: an embeddings config that {MANIFEST_NAME} does not describe")
                continue
            try:
                want = schema.features_for(
                    cfg, embedding_dim=emb_info.get("dim"), embedding_dtype=emb_info.get("dtype")
                )
            except (TypeError, ValueError) as e:
                problems.add(f"{MANIFEST_NAME}: bad 'embeddings' entry {emb_info}: {e}")
                continue
        else:
            want = schema.features_for(cfg, with_images=with_images, optional=file_schemas[0].names)
        expected[(cfg, split)] = want
        bad = next((g for g in got_all if g != want), None)
        if bad is not None:
            problems.add(f"{cfg}/{split}: Parquet features {bad} differ from the schema {want}")
            continue
        # Image bytes are not held in memory: they are decoded row group by row group (_check_images).
        columns = [c for c in want if c != "image"]
        try:
            table = pa.concat_tables([pq.read_table(p, columns=columns) for p in paths])
        except Exception as e:  # noqa: BLE001
            problems.add(f"{cfg}/{split}: Parquet unreadable: {e}")
            continue
        tables[(cfg, split)] = table
        if check_images and "image" in want:
            try:
                _check_images(f"{cfg}/{split}", paths, problems)
            except Exception as e:  # noqa: BLE001
                problems.add(f"{cfg}/{split}: cannot read the image column: {type(e).__name__}: {e}")
        mt = manifest_tables.get((cfg, split))
        if mt is not None and mt.get("num_rows") != table.num_rows:
            problems.add(f"{cfg}/{split}: {table.num_rows} rows on disk, manifest says {mt.get('num_rows')}")
        info = infos.get(cfg)
        if info is None:
            if meta is not None:
                problems.add(f"{CARD_NAME}: dataset_info has no entry for config {cfg!r}")
            continue
        try:
            yaml_features = Features._from_yaml_list(info.get("features") or [])
        except Exception as e:  # noqa: BLE001
            problems.add(f"{CARD_NAME}: dataset_info features of {cfg!r} do not parse: {e}")
            yaml_features = None
        if yaml_features is not None and yaml_features != want:
            problems.add(f"{CARD_NAME}: dataset_info features of {cfg!r} differ from the schema")
        split_infos = [s for s in info.get("splits") or [] if isinstance(s, dict)]
        split_info = next((s for s in split_infos if s.get("name") == split), None)
        if split_info is None:
            problems.add(f"{CARD_NAME}: dataset_info of {cfg!r} has no split {split!r}")
        elif split_info.get("num_examples") != table.num_rows:
            problems.add(
                f"{cfg}/{split}: dataset_info num_examples {split_info.get('num_examples')} rows != "
                f"{table.num_rows} rows in the files"
            )

    id_labels: dict[tuple[str, str], dict[str, str]] = {}
    soft_label_repeats = 0
    inconsistent: list[str] = []
    for (cfg, split), table in sorted(tables.items()):
        if schema.config_kind(cfg) in ("gallery", "queries"):
            try:
                id_labels[(cfg, split)] = _check_image_table(f"{cfg}/{split}", table, problems)
            except Exception as e:  # noqa: BLE001 - corrupt data (bad UTF-8, ...) is a problem, not a crash
                problems.add(f"{cfg}/{split}: cannot check the rows: {type(e).__name__}: {e}")
    for (cfg, split), table in sorted(tables.items()):
        if schema.config_kind(cfg) == "embeddings":
            try:
                embedded = _check_embeddings_table(f"{cfg}/{split}", split, table, str(emb_info["dtype"]), problems)
            except Exception as e:  # noqa: BLE001
                problems.add(f"{cfg}/{split}: cannot check the rows: {type(e).__name__}: {e}")
                continue
            suffix = schema.config_suffix(cfg)
            for kind in ("gallery", "queries"):
                ids = id_labels.get((f"{kind}-{suffix}", split)) or {}
                absent = sorted(set(ids) - embedded)
                if absent:
                    problems.add(f"{cfg}/{split}: no embedding for {len(absent)} {kind} image(s), e.g. {absent[:3]}")
        elif schema.config_kind(cfg) == "retriever":
            suffix = schema.config_suffix(cfg)
            gallery = id_labels.get((f"gallery-{suffix}", split))
            queries = id_labels.get((f"queries-{suffix}", split))
            cfg_m = schema.config_top_m(cfg) or m  # a re-mined config names its own m (-m<m>)
            try:
                soft_label_repeats += _check_retriever_table(
                    f"{cfg}/{split}", table, cfg_m, gallery, queries, problems, inconsistent,
                    explicit_positives=bool(manifest.get("explicit_positives")),
                )
            except Exception as e:  # noqa: BLE001
                problems.add(f"{cfg}/{split}: cannot check the rows: {type(e).__name__}: {e}")

    recomputed = 0
    if emb_info is not None:
        for (cfg, split), table in sorted(tables.items()):
            if schema.config_kind(cfg) == "retriever" and (emb_info.get("config"), split) in tables:
                try:
                    recomputed += _recompute_with_embeddings(
                        f"{cfg}/{split}", table, tables[(emb_info["config"], split)], str(emb_info.get("dtype")),
                        problems,
                    )  # fmt: skip
                except Exception as e:  # noqa: BLE001
                    problems.add(f"{cfg}/{split}: cannot recompute from the embeddings: {type(e).__name__}: {e}")

    if load:
        with tempfile.TemporaryDirectory(prefix="skyrank-validate-") as cache_dir, _offline():
            for (cfg, split), table in sorted(tables.items()):
                _load_round_trip(folder, cfg, split, expected[(cfg, split)], table.num_rows, cache_dir, problems)

    found = problems.all()
    if found:
        shown = found[:MAX_PROBLEMS]
        if len(found) > MAX_PROBLEMS:
            shown.append(f"... and {len(found) - MAX_PROBLEMS} more problem(s)")
        raise ValidationError(f"{folder} is not a valid SkyRank dataset ({len(found)} problem(s)):", shown)

    configs = list(yaml_tables)
    return ValidationReport(
        folder=folder,
        configs=configs,
        splits={cfg: list(splits) for cfg, splits in yaml_tables.items()},
        rows={key: t.num_rows for key, t in sorted(tables.items())},
        default_config=default_config,
        warnings=(
            [f"{len(inconsistent)} recurring (ground truth, candidate) pair(s) carry different soft labels, e.g. "
             + "; ".join(inconsistent[:3])] if inconsistent else []
        ),
        notes=(
            [f"recomputed from the published embeddings: gt_score, candidate_scores (Eq. 1) and "
             f"candidate_gt_similarity (Eq. 6) of {recomputed} row(s) match"]
            if recomputed else
            ["not recomputed: retriever scores and candidate_gt_similarity (Eq. 6) need the retriever's embeddings, "
             "which this folder does not hold (`skyrank build --embeddings` publishes them)"]
        ) + [
            f"checked without embeddings: whether every (ground truth, candidate) pair that recurs carries one "
            f"similarity ({soft_label_repeats} recurring occurrence(s) compared; differences are warnings), scores "
            "and similarities in [-1, 1], the "
            "swap rule (Eq. 2), ranks consistent with scores",
            "not checkable from the folder: that the embeddings are the retriever's (re-encode the benchmark with "
            "`skyrank build` and compare)",
        ],
    )  # fmt: skip

