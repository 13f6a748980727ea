"""Training and evaluation data for SkyLink, read from a SkyRank dataset (local folder or Hub repo).

* :func:`build_group`: one training group G_z per query (SkyLink Eq. 3) with the relational labels of Eq. 6–7
  and the paper's ablations (:func:`skyrank.format.rules.make_labels`, re-exported here).
* :class:`ImageResolver`: image id → PIL image, from the dataset's own ``gallery-*``/``queries-*`` configs when
  they carry an ``image`` column, else from the user's benchmark copy (``images_root``).
* :func:`load_skyrank_split`: a retriever config + its image source, via ``datasets.load_dataset``.
* :func:`subsample_rows`: the ``train_fraction`` subset of the data-efficiency study.
* :func:`carve_validation`: the validation queries held out of training (whole locations, seeded), on which
  ``skyrank eval --fuse auto`` chooses the fusion weight; :func:`write_validation` / :func:`read_validation`.
* :func:`iter_training_pairs`: (query image, candidate images, labels) per group, optionally split into
  micro-batches of candidates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skyrank.errors import BadImageError, BenchmarkLayoutError, UnknownNameError
from skyrank.format import rules, schema
from skyrank.format.rules import LABEL_MODES as LABEL_MODES  # re-exported: the label rule lives there
from skyrank.format.rules import make_labels as make_labels
from skyrank.loading import MissingImageError

# --------------------------------------------------------------------------------------------------------------
# Labels and groups (Eq. 3, 6, 7); the label rule itself is skyrank.format.rules.make_labels
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    """One training group G_z (Eq. 3): the ground truth first, then the top-(k−1) hard negatives."""

    query_id: str
    candidate_ids: list[str]
    labels: list[float]

    @property
    def gt_id(self) -> str:
        return self.candidate_ids[0]

    def __len__(self) -> int:
        return len(self.candidate_ids)


def build_group(row: Mapping[str, Any], k: int = 13, threshold: float = 0.9, labels: str = "soft") -> Group:
    """Build G_z for one SkyRank retriever row (SkyLink Eq. 3 with the labels of Eq. 6–7).

    The candidates are ``gt_id`` followed by the first k−1 of ``candidate_ids`` (the m−1 hard negatives left by
    the swap rule, Eq. 2, in retriever order); the ground truth's label is 1, the negatives' labels come from
    :func:`make_labels` on ``candidate_gt_similarity``. A row with fewer than k−1 negatives gives a shorter group
    (the loss masks it).
    """
    if k < 2:
        raise ValueError(f"`k` must be ≥ 2, got {k}")
    negatives = list(row["candidate_ids"])[: k - 1]
    sims = list(row["candidate_gt_similarity"])[: k - 1]
    if len(sims) != len(negatives):
        raise ValueError(
            f"query {row['query_id']!r}: candidate_ids and candidate_gt_similarity differ in length "
            f"({len(row['candidate_ids'])} vs {len(row['candidate_gt_similarity'])})"
        )
    if not negatives:
        raise ValueError(f"query {row['query_id']!r} has no hard negatives (candidate_ids is empty)")
    gt = str(row["gt_id"])
    if gt in negatives:
        raise ValueError(f"query {row['query_id']!r}: the ground truth {gt!r} is among its negatives (Eq. 2 broken)")
    return Group(
        query_id=str(row["query_id"]),
        candidate_ids=[gt, *map(str, negatives)],
        labels=[1.0, *rules.make_labels(sims, threshold, labels)],
    )


def subsample_rows(n_rows: int, fraction: float, seed: int = 0) -> list[int]:
    """Row indices of a deterministic ``fraction`` subset (data-efficiency study); sorted, at least one row.

    The same (n_rows, fraction, seed) always gives the same subset, and a smaller fraction's subset is contained
    in a larger one's (one permutation, then a prefix of it).
    """
    if not (0.0 < fraction <= 1.0):
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return list(range(n_rows))
    n = max(1, int(math.floor(fraction * n_rows + 0.5)))
    perm = np.random.default_rng(seed).permutation(n_rows)
    return sorted(int(i) for i in perm[:n])


VALIDATION_NAME = "validation.json"


def carve_validation(labels: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split row indices into (train, validation) by whole locations: no location is on both sides.

    Locations are ordered by ``sha256(f"{seed}:{label}")`` and taken in that order until the validation side
    holds at least ``round(fraction * n_rows)`` rows (at least one location; never all of them). The result depends
    only on the labels, the fraction and the seed, not on row order. ``fraction=0`` gives no validation rows.
    """
    if not (0.0 <= fraction < 1.0):
        raise ValueError(f"`val_fraction` must be in [0, 1), got {fraction}")
    labels = [str(x) for x in labels]
    if fraction == 0.0 or not labels:
        return list(range(len(labels))), []
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    if len(by_label) < 2:
        raise ValueError("carving a validation split needs at least two locations")
    order = sorted(by_label, key=lambda lab: hashlib.sha256(f"{seed}:{lab}".encode()).hexdigest())
    target = max(1, int(math.floor(fraction * len(labels) + 0.5)))
    val: list[int] = []
    for label in order[:-1]:  # never every location
        if len(val) >= target:
            break
        val.extend(by_label[label])
    held = set(val)
    return [i for i in range(len(labels)) if i not in held], sorted(val)


def write_validation(out_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write a run's validation record (``validation.json``: data, data_config, split, fraction, seed, query_ids)."""
    path = Path(out_dir) / VALIDATION_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{VALIDATION_NAME}.tmp")
    tmp.write_text(json.dumps(dict(record), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_validation(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's validation record, or ``None`` when the run holds no validation queries."""
    path = Path(run_dir) / VALIDATION_NAME
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return record if record.get("query_ids") else None


# --------------------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------------------


class ImageResolver:
    """Image id → RGB ``PIL.Image``.

    Sources, in order:

    1. ``tables``: the dataset's ``gallery-*``/``queries-*`` tables (``datasets.Dataset``). An id → row index is
       built from their ``image_id`` column; if a table has an ``image`` column the row's image is decoded on
       demand, otherwise its ``path`` column locates the file under ``images_root``.
    2. ``images_root / image_id`` (image ids are paths relative to the benchmark root).

    A small LRU cache keeps recently decoded images (gallery images recur across queries). A missing image raises
    :class:`~skyrank.loading.MissingImageError` (a ``FileNotFoundError``) naming the id and every place looked at;
    an undecodable file raises :class:`~skyrank.errors.BadImageError`.
    """

    def __init__(
        self,
        tables: Iterable[Any] = (),
        images_root: str | Path | None = None,
        *,
        cache_size: int = 512,
    ) -> None:
        self.images_root = Path(images_root) if images_root is not None else None
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, Image.Image] = OrderedDict()
        self._with_images: list[Any] = []
        self._index: dict[str, tuple[int, int]] = {}  # id -> (table with images, row)
        self._paths: dict[str, str] = {}  # id -> path relative to images_root
        for table in tables:
            columns = set(table.column_names)
            ids = [str(x) for x in table.select_columns(["image_id"])["image_id"]]
            if "image" in columns:
                t = len(self._with_images)
                self._with_images.append(table)
                for row, image_id in enumerate(ids):
                    self._index.setdefault(image_id, (t, row))
            elif "path" in columns:
                paths = [str(x) for x in table.select_columns(["path"])["path"]]
                for image_id, path in zip(ids, paths, strict=True):
                    self._paths.setdefault(image_id, path)

    @property
    def has_embedded_images(self) -> bool:
        return bool(self._with_images)

    def _load(self, image_id: str) -> Image.Image:
        looked: list[str] = []
        if image_id in self._index:
            t, row = self._index[image_id]
            image = self._with_images[t][row]["image"]
            if image is not None:
                return image.convert("RGB")
            looked.append(f"the dataset's image column (row {row}, empty)")
        else:
            if self._with_images:
                looked.append("the dataset's image columns")
        if self.images_root is not None:
            rel = self._paths.get(image_id, image_id)
            path = self.images_root / rel
            looked.append(str(path))
            if path.is_file():
                try:
                    with Image.open(path) as img:
                        return img.convert("RGB")
                except OSError as err:
                    message = f"Image {image_id!r} at {path} could not be decoded: {err}"
                    raise BadImageError(message, [str(path)]) from err
        else:
            looked.append("no images_root given")
        raise MissingImageError(
            f"Image {image_id!r} not found; looked in: {'; '.join(looked)}. Pass --images-root pointing at your "
            "benchmark copy, or use a dataset built with --with-images."
        )

    def __call__(self, image_id: str) -> Image.Image:
        image_id = str(image_id)
        if image_id in self._cache:
            self._cache.move_to_end(image_id)
            return self._cache[image_id]
        image = self._load(image_id)
        if self.cache_size > 0:
            self._cache[image_id] = image
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return image

    def many(self, image_ids: Iterable[str]) -> list[Image.Image]:
        return [self(i) for i in image_ids]


# --------------------------------------------------------------------------------------------------------------
# Loading a SkyRank split
# --------------------------------------------------------------------------------------------------------------


#: The parts of ``<retriever>-<bench>[-<alt>]-<d2s|s2d>`` (the format's one config-name type).
RetrieverConfigName = schema.ConfigName


def parse_retriever_config(config: str) -> schema.ConfigName:
    """Split a retriever config name into retriever, benchmark, altitude and direction (checked by round trip)."""
    expected = f"{config!r} is not a retriever config name (<retriever>-<bench>[-<alt>]-<d2s|s2d>[-m<m>], e.g. " \
        "sample4geo-university1652-d2s)"
    try:
        parsed = schema.ConfigName.parse(config)
    except ValueError as err:
        raise ValueError(f"{expected}: {err}") from None
    if parsed.kind != "retriever":
        raise ValueError(expected)
    return parsed


def local_cache_dir(folder: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A datasets cache folder keyed by the content of a local SkyRank folder.

    ``datasets`` 5.2 keys the Arrow cache of a local folder with ``configs:`` YAML by the folder's *name* and the
    config, not by its files: a folder rebuilt in place, or another folder with the same name, silently loads the
    old rows. Keying the cache by (relative path, size, mtime) of every file avoids that.
    """
    import hashlib

    import datasets

    root = Path(folder).resolve()
    digest = hashlib.sha256(str(root).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    base = Path(cache_dir) if cache_dir is not None else Path(datasets.config.HF_DATASETS_CACHE)
    return base / "skyrank-local" / digest.hexdigest()[:16]


@dataclass
class SkyRankSplit:
    """One split of one retriever config with its images."""

    data: str
    config: str
    split: str
    rows: Any  # datasets.Dataset with schema.RETRIEVER_FEATURES
    images: ImageResolver
    image_configs: list[str] = field(default_factory=list)
    #: gallery images of this config's direction (its ``gallery-*`` rows of the gallery view); None if unknown
    gallery_size: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def groups(self, k: int = 13, threshold: float = 0.9, labels: str = "soft") -> list[Group]:
        """One training group per row (Eq. 3)."""
        return [build_group(row, k=k, threshold=threshold, labels=labels) for row in self.rows]

    def subsample(self, fraction: float, seed: int = 0) -> SkyRankSplit:
        """The deterministic ``fraction`` subset of the rows (:func:`subsample_rows`)."""
        if fraction == 1.0:
            return self
        idx = subsample_rows(len(self.rows), fraction, seed)
        return dataclasses.replace(self, rows=self.rows.select(idx))

    def without_validation(self, fraction: float, seed: int = 0) -> tuple[SkyRankSplit, list[str]]:
        """The rows left for training and the query ids of the validation locations (:func:`carve_validation`)."""
        if fraction == 0.0:
            return self, []
        train_idx, val_idx = carve_validation([str(x) for x in self.rows["label"]], fraction, seed)
        ids = [str(x) for x in self.rows["query_id"]]
        return dataclasses.replace(self, rows=self.rows.select(train_idx)), [ids[i] for i in val_idx]


def load_skyrank_split(
    data: str | Path,
    config: str,
    split: str,
    *,
    images_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> SkyRankSplit:
    """Load a SkyRank retriever config with ``datasets.load_dataset`` and attach its images.

    ``data`` is a local SkyRank folder or a Hub dataset repo id. The matching ``gallery-<bench>[-<alt>]`` and
    ``queries-<bench>[-<alt>]`` configs (same split) are loaded too when they exist: their ``image`` column (a
    dataset built with ``--with-images``) or their ``path`` column under ``images_root`` resolves every id.
    Raises :class:`~skyrank.errors.UnknownNameError` for an unknown config and
    :class:`~skyrank.errors.BenchmarkLayoutError` when the dataset has no images and no ``images_root`` is given.
    """
    import datasets

    data = str(data)
    parsed = parse_retriever_config(config)
    available = datasets.get_dataset_config_names(data)
    if config not in available:
        raise UnknownNameError(f"{data} has no config {config!r}; available: {', '.join(sorted(available))}")
    if Path(data).is_dir():
        cache_dir = local_cache_dir(data, cache_dir)
    kwargs: dict[str, Any] = {"cache_dir": str(cache_dir)} if cache_dir is not None else {}
    rows = datasets.load_dataset(data, config, split=split, **kwargs)
    missing = [c for c in schema.RETRIEVER_COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"{data}:{config}/{split} lacks the SkyRank columns {missing}")
    tables = []
    image_configs = []
    gallery_size = None
    gallery_view = "satellite" if parsed.direction == "d2s" else "drone"
    for name in (parsed.gallery_config, parsed.queries_config):
        if name in available:
            tables.append(datasets.load_dataset(data, name, split=split, **kwargs))
            image_configs.append(name)
            if name == parsed.gallery_config and "view" in tables[-1].column_names:
                gallery_size = sum(v == gallery_view for v in tables[-1].select_columns(["view"])["view"]) or None
    resolver = ImageResolver(tables, images_root)
    if not resolver.has_embedded_images and images_root is None:
        raise BenchmarkLayoutError(
            f"{data} carries no images for {config} (configs {parsed.gallery_config}/{parsed.queries_config} "
            f"{'have no image column' if image_configs else 'are absent'}); pass --images-root pointing at your copy "
            f"of the benchmark ({parsed.benchmark})."
        )
    if images_root is not None and not Path(images_root).is_dir():
        raise BenchmarkLayoutError(f"--images-root {images_root} is not a folder")
    return SkyRankSplit(data, config, split, rows, resolver, image_configs, gallery_size)


# --------------------------------------------------------------------------------------------------------------
# Training pairs
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PairBatch:
    """A micro-batch of one group's (query, candidate) pairs.

    ``group_size`` is the whole group's number of candidates: a chunk's mean loss weighted by
    ``len(candidate_ids) / group_size`` sums to the group's loss (Eq. 8) over its chunks.
    """

    query_id: str
    query_image: Image.Image
    candidate_ids: list[str]
    candidate_images: list[Image.Image]
    labels: list[float]
    group_size: int
    chunk_index: int = 0
    num_chunks: int = 1

    @property
    def weight(self) -> float:
        return len(self.candidate_ids) / self.group_size


def split_chunks(n: int, micro_batch_size: int | None) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``micro_batch_size`` items covering ``range(n)``."""
    size = n if micro_batch_size is None or micro_batch_size >= n else int(micro_batch_size)
    if size < 1:
        raise ValueError(f"`micro_batch_size` must be ≥ 1, got {micro_batch_size}")
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def iter_training_pairs(
    groups: Iterable[Group],
    images: ImageResolver,
    *,
    micro_batch_size: int | None = None,
) -> Iterator[PairBatch]:
    """Yield each group's pairs as one or more :class:`PairBatch` (micro-batches of ``micro_batch_size`` pairs).

    Pointwise BCE (Eq. 8) is a sum of independent per-candidate terms, so splitting a group and accumulating the
    chunks' gradients (each weighted by :attr:`PairBatch.weight`) gives the same gradient as the whole group.
    """
    for group in groups:
        query_image = images(group.query_id)
        chunks = split_chunks(len(group), micro_batch_size)
        for c, (start, stop) in enumerate(chunks):
            ids = group.candidate_ids[start:stop]
            yield PairBatch(
                query_id=group.query_id,
                query_image=query_image,
                candidate_ids=list(ids),
                candidate_images=images.many(ids),
                labels=list(group.labels[start:stop]),
                group_size=len(group),
                chunk_index=c,
                num_chunks=len(chunks),
            )
