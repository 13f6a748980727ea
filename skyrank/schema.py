"""The SkyRank dataset schema, declared once.

The writer casts every table to these ``datasets.Features``, the validator compares loaded tables against them,
and the dataset card's ``dataset_info`` is generated from them. No column name is spelled anywhere else: other
modules import the ``*_COLUMNS`` tuples or the features below.

Configs (design.md, "The published dataset"):

* ``gallery-<bench>[-<alt>]``: one row per reference image.
* ``queries-<bench>[-<alt>]``: one row per query image.
* ``<retriever>-<bench>[-<alt>]-<d2s|s2d>``: one row per query, with the retriever's mined candidates.

Splits are ``train`` and ``test``.
"""

from __future__ import annotations

import re

from datasets import Features, Image, List, Value

SPLITS: tuple[str, ...] = ("train", "test")
DIRECTIONS: tuple[str, ...] = ("d2s", "s2d")
VIEWS: tuple[str, ...] = ("drone", "satellite")
PROTOCOLS: tuple[str, ...] = ("official", "query-ids-only")

#: Columns of the ``gallery-*`` and ``queries-*`` configs (ids-only form).
IMAGE_TABLE_FEATURES = Features(
    {
        "image_id": Value("string"),  # path relative to the benchmark root, POSIX separators
        "label": Value("string"),  # location ID: the class folder name, e.g. "0839"
        "view": Value("string"),  # "drone" or "satellite"
        "path": Value("string"),  # path relative to the benchmark root (equal to image_id for built-in benchmarks)
    }
)

#: The same with the image bytes embedded (``--with-images``). Bytes are copied from the source file.
IMAGE_TABLE_FEATURES_WITH_IMAGES = Features({**IMAGE_TABLE_FEATURES, "image": Image()})

#: Columns of a ``<retriever>-<bench>[-<alt>]-<direction>`` config: one row per query.
RETRIEVER_FEATURES = Features(
    {
        "query_id": Value("string"),
        "label": Value("string"),
        "gt_id": Value("string"),  # the best-ranked positive
        "gt_rank": Value("int32"),  # 1-based rank of gt_id in the full ranking
        "gt_score": Value("float32"),
        "positive_ids": List(Value("string")),  # every positive, in full-ranking order
        "positive_ranks": List(Value("int32")),  # 1-based full rank of each positive (for exact AP)
        "candidate_ids": List(Value("string")),  # m-1 hard negatives after the swap rule (Eq. 2), retriever order
        "candidate_scores": List(Value("float32")),
        "candidate_gt_similarity": List(Value("float32")),  # cos(E_r(candidate), E_r(gt)) (Eq. 6)
        "retrieved_ids": List(Value("string")),  # raw top-m, for inference
        "retrieved_scores": List(Value("float32")),
    }
)

IMAGE_TABLE_COLUMNS: tuple[str, ...] = tuple(IMAGE_TABLE_FEATURES)
RETRIEVER_COLUMNS: tuple[str, ...] = tuple(RETRIEVER_FEATURES)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.]*$")


def _suffix(benchmark: str, altitude: str | int | None) -> str:
    if not _NAME_RE.match(benchmark):
        raise ValueError(f"benchmark name must be lower-case letters, digits, '_' or '.', got {benchmark!r}")
    return benchmark if altitude in (None, "") else f"{benchmark}-{altitude}"


def gallery_config_name(benchmark: str, altitude: str | int | None = None) -> str:
    """``gallery-<bench>[-<alt>]``."""
    return f"gallery-{_suffix(benchmark, altitude)}"


def queries_config_name(benchmark: str, altitude: str | int | None = None) -> str:
    """``queries-<bench>[-<alt>]``."""
    return f"queries-{_suffix(benchmark, altitude)}"


def retriever_config_name(retriever: str, benchmark: str, direction: str, altitude: str | int | None = None) -> str:
    """``<retriever>-<bench>[-<alt>]-<d2s|s2d>``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not _NAME_RE.match(retriever):
        raise ValueError(f"retriever name must be lower-case letters, digits, '_' or '.', got {retriever!r}")
    return f"{retriever}-{_suffix(benchmark, altitude)}-{direction}"


def config_kind(config_name: str) -> str:
    """``"gallery"``, ``"queries"`` or ``"retriever"`` for a config name."""
    if config_name.startswith("gallery-"):
        return "gallery"
    if config_name.startswith("queries-"):
        return "queries"
    return "retriever"


def features_for(config_name: str, with_images: bool = False) -> Features:
    """The declared features of a config."""
    if config_kind(config_name) == "retriever":
        return RETRIEVER_FEATURES
    return IMAGE_TABLE_FEATURES_WITH_IMAGES if with_images else IMAGE_TABLE_FEATURES
