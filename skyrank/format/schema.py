"""The SkyRank dataset schema, declared once.

The writer casts every table to these ``datasets.Features``, the validator compares loaded tables against them,
and the dataset card's ``dataset_info`` is generated from them. No column name is spelled anywhere else: other
modules import the ``*_COLUMNS`` tuples or the features below.

Configs (design.md, "The published dataset"):

* ``gallery-<bench>[-<alt>]``: one row per reference image.
* ``queries-<bench>[-<alt>]``: one row per query image.
* ``<retriever>-<bench>[-<alt>]-<d2s|s2d>[-m<m>]``: one row per query, with the retriever's mined candidates
  (the ``-m<m>`` suffix names a config re-mined by ``skyrank remine`` with an m other than the build's).
* ``embeddings-<retriever>-<bench>[-<alt>]``: one row per image, its L2-normalised retriever embedding (derived
  data, no pixels), from which ``skyrank remine`` rebuilds retriever configs without running the retriever.

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

#: Storage dtypes of the ``embeddings-*`` configs (recorded in the card and the manifest).
EMBEDDING_DTYPES: tuple[str, ...] = ("float32", "float16")


def embeddings_features(dim: int, dtype: str = "float32") -> Features:
    """Columns of an ``embeddings-<retriever>-<bench>[-<alt>]`` config: one row per image, the retriever's
    L2-normalised embedding (E_q for drone views, E_r for satellite views; Eq. 1) as a fixed-size list."""
    if dtype not in EMBEDDING_DTYPES:
        raise ValueError(f"embedding dtype must be one of {EMBEDDING_DTYPES}, got {dtype!r}")
    if int(dim) != dim or dim < 1:
        raise ValueError(f"embedding dimension must be a positive integer, got {dim!r}")
    return Features(
        {
            "image_id": Value("string"),
            "view": Value("string"),
            "split": Value("string"),
            "embedding": List(Value(dtype), length=int(dim)),
        }
    )


EMBEDDINGS_COLUMNS: tuple[str, ...] = ("image_id", "view", "split", "embedding")
IMAGE_TABLE_COLUMNS: tuple[str, ...] = tuple(IMAGE_TABLE_FEATURES)
RETRIEVER_COLUMNS: tuple[str, ...] = tuple(RETRIEVER_FEATURES)

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.]*$")
_M_SUFFIX_RE = re.compile(r"-m([0-9]+)$")


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


def retriever_config_name(
    retriever: str, benchmark: str, direction: str, altitude: str | int | None = None, m: int | None = None
) -> str:
    """``<retriever>-<bench>[-<alt>]-<d2s|s2d>``, with ``-m<m>`` appended for a re-mined config of another m."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if not _NAME_RE.match(retriever):
        raise ValueError(f"retriever name must be lower-case letters, digits, '_' or '.', got {retriever!r}")
    if m is not None and (int(m) != m or m < 2):
        raise ValueError(f"m must be an integer >= 2, got {m!r}")
    return f"{retriever}-{_suffix(benchmark, altitude)}-{direction}" + (f"-m{int(m)}" if m is not None else "")


def embeddings_config_name(retriever: str, benchmark: str, altitude: str | int | None = None) -> str:
    """``embeddings-<retriever>-<bench>[-<alt>]``."""
    if not _NAME_RE.match(retriever):
        raise ValueError(f"retriever name must be lower-case letters, digits, '_' or '.', got {retriever!r}")
    return f"embeddings-{retriever}-{_suffix(benchmark, altitude)}"


def config_kind(config_name: str) -> str:
    """``"gallery"``, ``"queries"``, ``"embeddings"`` or ``"retriever"`` for a config name."""
    if config_name.startswith("gallery-"):
        return "gallery"
    if config_name.startswith("queries-"):
        return "queries"
    if config_name.startswith("embeddings-"):
        return "embeddings"
    return "retriever"


def config_top_m(config_name: str) -> int | None:
    """The m a retriever config names with its ``-m<m>`` suffix (``None``: the build's m, from the manifest)."""
    if config_kind(config_name) != "retriever":
        return None
    match = _M_SUFFIX_RE.search(config_name)
    return int(match.group(1)) if match else None


def with_top_m(config_name: str, m: int | None) -> str:
    """A retriever config name with its ``-m<m>`` suffix replaced (``None``: removed, the build's m)."""
    if config_kind(config_name) != "retriever":
        raise ValueError(f"{config_name!r} is not a retriever config name")
    base = _M_SUFFIX_RE.sub("", config_name)
    if m is not None and (int(m) != m or m < 2):
        raise ValueError(f"m must be an integer >= 2, got {m!r}")
    return base + (f"-m{int(m)}" if m is not None else "")


def config_direction(config_name: str) -> str:
    """``d2s`` or ``s2d`` of a retriever config name (with or without its ``-m<m>`` suffix)."""
    direction = _M_SUFFIX_RE.sub("", config_name).rsplit("-", 1)[-1]
    if config_kind(config_name) != "retriever" or direction not in DIRECTIONS:
        raise ValueError(f"{config_name!r} is not a retriever config name (<retriever>-<bench>[-<alt>]-<d2s|s2d>)")
    return direction


def features_for(
    config_name: str,
    with_images: bool = False,
    *,
    embedding_dim: int | None = None,
    embedding_dtype: str | None = None,
) -> Features:
    """The declared features of a config (an ``embeddings-*`` config needs its dimension and dtype)."""
    kind = config_kind(config_name)
    if kind == "retriever":
        return RETRIEVER_FEATURES
    if kind == "embeddings":
        if embedding_dim is None:
            raise ValueError(f"the features of {config_name!r} need embedding_dim (and embedding_dtype)")
        return embeddings_features(embedding_dim, embedding_dtype or "float32")
    return IMAGE_TABLE_FEATURES_WITH_IMAGES if with_images else IMAGE_TABLE_FEATURES


# --- Dataset card tables (added for skyrank.card / skyrank.validate) ---------------------------------------------

#: What each column means, for the schema table of the dataset card. Keys are the column names declared above.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "image_id": "image id: its path relative to the benchmark root (POSIX separators)",
    "label": "location id (the class folder name, e.g. `0839`); images of one location are positives of each other",
    "view": "`drone` or `satellite`",
    "path": "path of the image file relative to the benchmark root (equal to `image_id` for built-in benchmarks)",
    "image": "the image file's bytes, copied unchanged from the source file (`--with-images` builds only)",
    "query_id": "id of the query image (an `image_id` of the `queries-*` config)",
    "gt_id": "the ground truth: the best-ranked positive (an `image_id` of the `gallery-*` config)",
    "gt_rank": "1-based rank of `gt_id` in the retriever's full ranking of the gallery",
    "gt_score": "retriever cosine similarity between the query and `gt_id`",
    "positive_ids": "every positive of the query, in full-ranking order",
    "positive_ranks": "1-based full-ranking rank of each positive (for exact AP after re-ranking)",
    "candidate_ids": "the m-1 hard negatives after the ground-truth swap rule (Eq. 2), in retriever order",
    "candidate_scores": "retriever cosine similarity between the query and each candidate",
    "candidate_gt_similarity": "cosine similarity between each candidate and `gt_id` in the retriever's reference "
    "space (Eq. 6; soft labels L_j = sim_j if sim_j > T else 0)",
    "retrieved_ids": "the retriever's raw top-m (ground truth included when retrieved), for inference",
    "retrieved_scores": "retriever cosine similarity of each of `retrieved_ids`",
    "split": "the split the image belongs to (`train` or `test`; equal to the config split it is stored in)",
    "embedding": "the retriever's L2-normalised embedding of the image (Eq. 1: E_q for queries, E_r for references)",
}

#: Hub metadata of every SkyRank dataset card.
CARD_TASK_CATEGORIES: tuple[str, ...] = ("image-feature-extraction",)
CARD_TAGS: tuple[str, ...] = (
    "geo-localization",
    "cross-view",
    "uav",
    "drone",
    "satellite",
    "reranking",
    "hard-negatives",
)

#: The name of the manifest a complete SkyRank folder holds (written last: a folder without it is incomplete).
MANIFEST_NAME = "skyrank_manifest.json"


def id_column(features: Features) -> str:
    """The first id column of a table (``image_id`` or ``query_id``), the key rows are sorted by."""
    for name in features:
        if name in ("image_id", "query_id"):
            return name
    raise ValueError(f"features have no id column (image_id or query_id): {list(features)}")


def config_suffix(config_name: str) -> str:
    """``<bench>[-<alt>]`` of any config name (``sample4geo-u1652-d2s`` → ``u1652``, ``gallery-sues200-150`` →
    ``sues200-150``, ``embeddings-sample4geo-u1652`` → ``u1652``, ``sample4geo-u1652-d2s-m30`` → ``u1652``)."""
    kind = config_kind(config_name)
    if kind in ("gallery", "queries"):
        return config_name.split("-", 1)[1]
    if kind == "embeddings":
        return config_name.split("-", 2)[2]
    config_name = _M_SUFFIX_RE.sub("", config_name)
    body = config_name.split("-", 1)[1] if "-" in config_name else config_name
    return body.rsplit("-", 1)[0] if body.endswith(tuple(f"-{d}" for d in DIRECTIONS)) else body
