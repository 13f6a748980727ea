"""Training and evaluation data for SkyLink, read from a SkyRank dataset (local folder or Hub repo).

* :func:`build_group`: one training group G_z per query (SkyLink Eq. 3) with the relational labels of Eq. 6–7
  and the paper's ablations (:func:`skyrank.format.rules.make_labels`, re-exported here).
* :func:`load_skyrank_split`: a retriever config + its image source, read by the format's one reader
  (:mod:`skyrank.loading`: rows, :class:`~skyrank.loading.ImageResolver` and its cache).
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skyrank.format import rules, schema
from skyrank.format.rules import LABEL_MODES as LABEL_MODES  # re-exported: the label rule lives there
from skyrank.format.rules import make_labels as make_labels
from skyrank.loading import ImageResolver, load_retriever_split, read_columns
from skyrank.loading import MissingImageError as MissingImageError  # re-exported
from skyrank.loading import local_cache_dir as local_cache_dir  # re-exported

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
    #: the views of the queries and of the gallery (``"ground"`` for street-level queries; issue 20)
    query_view: str | None = None
    gallery_view: str | None = None

    def ground_is_panorama(self) -> bool:
        """Whether the ground-level queries are panoramas (VIGOR, CVUSA, CVACT; at least twice as wide as high),
        judged on the first query image; ``False`` for drone/satellite queries and street photos."""
        if self.query_view != "ground" or len(self.rows) == 0:
            return False
        width, height = self.images(str(self.rows[0]["query_id"])).size
        return width >= 2 * height

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
        """The rows left for training and the query ids of the validation locations (:func:`carve_validation`).

        The validation locations' gallery images (their queries' positives) are also dropped from the training
        rows' hard negatives: otherwise SkyLink learns them as "always a negative", and scores its own validation
        positives lowest, which biases the fusion weight chosen on them towards the retriever.
        """
        if fraction == 0.0:
            return self, []
        train_idx, val_idx = carve_validation([str(x) for x in self.rows["label"]], fraction, seed)
        ids = [str(x) for x in self.rows["query_id"]]
        positives = self.rows.select(val_idx)["positive_ids"]
        held = {str(p) for pos in positives for p in pos}
        rows = self.rows.select(train_idx)
        if held:
            rows = rows.map(lambda row: drop_candidates(row, held), keep_in_memory=True)
        return dataclasses.replace(self, rows=rows), [ids[i] for i in val_idx]


def drop_candidates(row: Mapping[str, Any], ids: set[str]) -> dict[str, list[Any]]:
    """A row's hard negatives (``candidate_ids`` with their scores and Eq. 6 similarities, kept in step) without
    ``ids``; the retriever order of the rest is unchanged."""
    keep = [i for i, c in enumerate(row["candidate_ids"]) if str(c) not in ids]
    columns = ("candidate_ids", "candidate_scores", "candidate_gt_similarity")
    return {col: [row[col][i] for i in keep] for col in columns}


def load_skyrank_split(
    data: str | Path,
    config: str,
    split: str,
    *,
    images_root: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> SkyRankSplit:
    """Load a SkyRank retriever config and attach its images, with the one reader of the format
    (:func:`skyrank.loading.load_retriever_split`).

    ``data`` is a local SkyRank folder or a Hub dataset repo id. The images come from the user's benchmark copy
    (``images_root``, through the ``path`` column of the matching ``gallery-<bench>[-<alt>]``/``queries-*`` configs)
    or else from those configs' ``image`` column (a dataset built with ``--with-images``).
    Raises :class:`~skyrank.errors.UnknownNameError` for an unknown config and
    :class:`~skyrank.errors.BenchmarkLayoutError` when the dataset has no images and no ``images_root`` is given.
    """
    parsed = parse_retriever_config(config)
    rows, images, image_configs = load_retriever_split(data, config, split, images_root=images_root,
                                                       cache_dir=cache_dir)
    gallery_size = None
    gallery_view = "drone" if parsed.direction == "s2d" else "satellite"  # d2s: drone or ground queries
    query_view = "satellite" if parsed.direction == "s2d" else "drone"
    if parsed.gallery_config in image_configs:
        views = read_columns(data, parsed.gallery_config, split, ["view"], cache_dir=cache_dir)
        if "view" in views.column_names:
            gallery_size = sum(v == gallery_view for v in views["view"]) or None
    if parsed.queries_config in image_configs and parsed.direction != "s2d":
        views = read_columns(data, parsed.queries_config, split, ["view"], cache_dir=cache_dir)
        if "view" in views.column_names and "ground" in set(views["view"]):
            query_view = "ground"  # VIGOR, CVUSA, CVACT panoramas; University-1652 street views
    return SkyRankSplit(str(data), config, split, rows, images, image_configs, gallery_size, query_view, gallery_view)


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
