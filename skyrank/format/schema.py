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

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from datasets import Features, Image, List, Value

SPLITS: tuple[str, ...] = ("train", "test")
DIRECTIONS: tuple[str, ...] = ("d2s", "s2d")
VIEWS: tuple[str, ...] = ("drone", "satellite", "ground")  # ground: street-level panoramas and photos
PROTOCOLS: tuple[str, ...] = ("official", "query-ids-only")

#: Columns of the ``gallery-*`` and ``queries-*`` configs (ids-only form).
IMAGE_TABLE_FEATURES = Features(
    {
        "image_id": Value("string"),  # path relative to the benchmark root, POSIX separators
        "label": Value("string"),  # location ID: the class folder name, e.g. "0839"
        "view": Value("string"),  # "drone", "satellite" or "ground"
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

#: Optional columns (format version 3), written by the benchmarks that declare them
#: (``Benchmark.optional_columns``: VIGOR, CVUSA, CVACT, DenseUAV, University-1652 street write all of them) and
#: absent from the others' tables (University-1652, SUES-200 and synthetic builds are byte-identical to version 2).
#: A reader treats an absent column as null / an empty list. They follow the declared columns, before ``image``.
OPTIONAL_IMAGE_FEATURES = Features(
    {
        "latitude": Value("float64"),  # WGS84 degrees (VIGOR file names, DenseUAV's GPS file per folder); null unknown
        "longitude": Value("float64"),
    }
)
OPTIONAL_RETRIEVER_FEATURES = Features(
    {
        "semi_positive_ids": List(Value("string")),  # VIGOR's 3 semi-positive tiles: neither positive nor negative
    }
)
OPTIONAL_COLUMNS: tuple[str, ...] = (*OPTIONAL_IMAGE_FEATURES, *OPTIONAL_RETRIEVER_FEATURES)

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
_M_PART_RE = re.compile(r"^m([0-9]+)$")


# --- Config names: one parser, one formatter --------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigKind:
    """One kind of config: how its name is spelled and the features of its tables.

    ``prefix`` is the name's literal first part (``gallery``) or ``None`` when the first part is the retriever's name
    (the mined ``<retriever>-<bench>[-<alt>]-<direction>[-m<m>]`` configs). ``features_factory(dim, dtype)`` builds
    the features of a kind whose columns depend on the data (the ``embeddings-*`` configs). Another kind is added
    with :func:`register_config_kind`; :class:`ConfigName` then reads and spells it.
    """

    name: str
    prefix: str | None
    has_retriever: bool
    has_direction: bool
    features: Features | None = None
    features_with_images: Features | None = None
    features_factory: Callable[[int, str], Features] | None = None
    has_m: bool = False  # names may end with -m<m> (a config re-mined with another m)
    optional_features: Features | None = None  # columns a table of this kind may add (format version 3)


#: Registered kinds, by name; :func:`register_config_kind` adds one.
CONFIG_KINDS: dict[str, ConfigKind] = {}


def register_config_kind(kind: ConfigKind) -> ConfigKind:
    """Register a config kind (its prefix must be new; only the retriever kind goes without a prefix)."""
    if kind.name in CONFIG_KINDS:
        raise ValueError(f"config kind {kind.name!r} is already registered")
    if kind.prefix is None and any(k.prefix is None for k in CONFIG_KINDS.values()):
        raise ValueError("only one config kind may go without a prefix (the retriever kind)")
    if kind.prefix is not None and any(k.prefix == kind.prefix for k in CONFIG_KINDS.values()):
        raise ValueError(f"config prefix {kind.prefix!r} is already registered")
    CONFIG_KINDS[kind.name] = kind
    return kind


def _kind_of(config_name: str) -> ConfigKind:
    first = config_name.split("-", 1)[0]
    for kind in CONFIG_KINDS.values():
        if kind.prefix is not None and kind.prefix == first and "-" in config_name:
            return kind
    return next(k for k in CONFIG_KINDS.values() if k.prefix is None)


@dataclass(frozen=True)
class ConfigName:
    """A config name's parts; ``str(name)`` spells it and :meth:`parse` reads it back (checked by round trip).

    ``ConfigName("retriever", "sues200", "150", retriever="sample4geo", direction="d2s")`` is
    ``sample4geo-sues200-150-d2s`` (``m=30`` appends ``-m30``); ``ConfigName("gallery", "university1652")`` is
    ``gallery-university1652``; ``ConfigName("embeddings", "sues200", "150", retriever="sample4geo")`` is
    ``embeddings-sample4geo-sues200-150``.
    """

    kind: str
    benchmark: str
    altitude: str | None = None
    retriever: str | None = None
    direction: str | None = None
    m: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in CONFIG_KINDS:
            raise ValueError(f"unknown config kind {self.kind!r}; known: {', '.join(CONFIG_KINDS)}")
        spec = CONFIG_KINDS[self.kind]
        if spec.has_direction and self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not spec.has_direction and self.direction is not None:
            raise ValueError(f"a {self.kind} config has no direction, got {self.direction!r}")
        if spec.has_retriever and not _NAME_RE.match(self.retriever or ""):
            raise ValueError(f"retriever name must be lower-case letters, digits, '_' or '.', got {self.retriever!r}")
        if spec.prefix is None and any(k.prefix == self.retriever for k in CONFIG_KINDS.values()):
            raise ValueError(f"retriever name {self.retriever!r} is reserved (a config kind's prefix)")
        if not spec.has_retriever and self.retriever is not None:
            raise ValueError(f"a {self.kind} config has no retriever, got {self.retriever!r}")
        if not _NAME_RE.match(self.benchmark):
            raise ValueError(f"benchmark name must be lower-case letters, digits, '_' or '.', got {self.benchmark!r}")
        if self.m is not None and (not spec.has_m or int(self.m) != self.m or self.m < 2):
            raise ValueError(f"m must be an integer >= 2 (retriever configs only), got {self.m!r}")
        object.__setattr__(self, "altitude", None if self.altitude in (None, "") else str(self.altitude))
        object.__setattr__(self, "m", None if self.m is None else int(self.m))

    @classmethod
    def parse(cls, config_name: str) -> ConfigName:
        """Read a config name; ``ValueError`` naming the accepted forms when it is none of them."""
        config_name = str(config_name)
        parts = config_name.split("-")
        spec = _kind_of(config_name)
        rest = parts[1:] if spec.prefix is not None else parts
        fields: dict[str, Any] = {}
        try:
            if spec.has_retriever:
                fields["retriever"] = rest.pop(0)
            if spec.has_m and len(rest) > 2 and _M_PART_RE.match(rest[-1]) and rest[-2] in DIRECTIONS:
                fields["m"] = int(rest.pop()[1:])
            if spec.has_direction:
                fields["direction"] = rest.pop() if rest else None
            if len(rest) not in (1, 2):
                raise ValueError(f"{len(rest)} benchmark/altitude parts")
            parsed = cls(spec.name, rest[0], rest[1] if len(rest) == 2 else None, **fields)
        except (ValueError, IndexError) as err:
            raise ValueError(f"{config_name!r} is not a SkyRank config name ({err}); expected one of "
                             f"{', '.join(_forms())}") from None
        if str(parsed) != config_name:
            raise ValueError(f"{config_name!r} does not round-trip through ConfigName ({str(parsed)!r})")
        return parsed

    @property
    def suffix(self) -> str:
        """``<bench>[-<alt>]``."""
        return self.benchmark if self.altitude is None else f"{self.benchmark}-{self.altitude}"

    @property
    def name(self) -> str:
        spec = CONFIG_KINDS[self.kind]
        parts = [spec.prefix, self.retriever, self.suffix, self.direction, None if self.m is None else f"m{self.m}"]
        return "-".join(p for p in parts if p is not None)

    def __str__(self) -> str:
        return self.name

    @property
    def gallery_config(self) -> str:
        """The ``gallery-<bench>[-<alt>]`` config this config's ids refer to."""
        return str(ConfigName("gallery", self.benchmark, self.altitude))

    @property
    def queries_config(self) -> str:
        """The ``queries-<bench>[-<alt>]`` config this config's query ids refer to."""
        return str(ConfigName("queries", self.benchmark, self.altitude))


def _forms() -> list[str]:
    out = []
    for spec in CONFIG_KINDS.values():
        parts = [spec.prefix, "<retriever>" if spec.has_retriever else None, "<bench>[-<alt>]",
                 "<d2s|s2d>" if spec.has_direction else None, "[m<m>]" if spec.has_m else None]
        out.append("-".join(p for p in parts if p is not None).replace("-[m<m>]", "[-m<m>]"))
    return out


for _image_kind in ("gallery", "queries"):
    register_config_kind(ConfigKind(_image_kind, _image_kind, has_retriever=False, has_direction=False,
                                    features=IMAGE_TABLE_FEATURES,
                                    features_with_images=IMAGE_TABLE_FEATURES_WITH_IMAGES,
                                    optional_features=OPTIONAL_IMAGE_FEATURES))
register_config_kind(ConfigKind("embeddings", "embeddings", has_retriever=True, has_direction=False,
                                features_factory=embeddings_features))
register_config_kind(ConfigKind("retriever", None, has_retriever=True, has_direction=True,
                                features=RETRIEVER_FEATURES, has_m=True,
                                optional_features=OPTIONAL_RETRIEVER_FEATURES))


def gallery_config_name(benchmark: str, altitude: str | int | None = None) -> str:
    """``gallery-<bench>[-<alt>]``."""
    return str(ConfigName("gallery", benchmark, altitude))


def queries_config_name(benchmark: str, altitude: str | int | None = None) -> str:
    """``queries-<bench>[-<alt>]``."""
    return str(ConfigName("queries", benchmark, altitude))


def retriever_config_name(
    retriever: str, benchmark: str, direction: str, altitude: str | int | None = None, m: int | None = None
) -> str:
    """``<retriever>-<bench>[-<alt>]-<d2s|s2d>``, with ``-m<m>`` appended for a re-mined config of another m."""
    return str(ConfigName("retriever", benchmark, altitude, retriever=retriever, direction=direction, m=m))


def embeddings_config_name(retriever: str, benchmark: str, altitude: str | int | None = None) -> str:
    """``embeddings-<retriever>-<bench>[-<alt>]``."""
    return str(ConfigName("embeddings", benchmark, altitude, retriever=retriever))


def config_kind(config_name: str) -> str:
    """The kind of a config name from its first part (``"gallery"``, ``"queries"``, ``"embeddings"`` or
    ``"retriever"``); lenient: a name that does not parse is still given a kind (:meth:`ConfigName.parse` checks)."""
    return _kind_of(config_name).name


def config_top_m(config_name: str) -> int | None:
    """The m a retriever config names with its ``-m<m>`` suffix (``None``: the build's m, from the manifest; also
    for a name that does not parse)."""
    try:
        return ConfigName.parse(config_name).m
    except ValueError:
        return None


def _retriever_name(config_name: str) -> ConfigName:
    parsed = ConfigName.parse(config_name)
    if parsed.kind != "retriever":
        raise ValueError(f"{config_name!r} is not a retriever config name (<retriever>-<bench>[-<alt>]-<d2s|s2d>)")
    return parsed


def with_top_m(config_name: str, m: int | None) -> str:
    """A retriever config name with its ``-m<m>`` suffix replaced (``None``: removed, the build's m)."""
    return str(dataclasses.replace(_retriever_name(config_name), m=m))


def config_direction(config_name: str) -> str:
    """``d2s`` or ``s2d`` of a retriever config name (with or without its ``-m<m>`` suffix)."""
    return str(_retriever_name(config_name).direction)


def features_for(
    config_name: str,
    with_images: bool = False,
    *,
    embedding_dim: int | None = None,
    embedding_dtype: str | None = None,
    optional: Iterable[str] = (),
) -> Features:
    """The declared features of a config (an ``embeddings-*`` config needs its dimension and dtype).

    ``optional``: column names; those among the kind's optional columns (:data:`OPTIONAL_COLUMNS`) are added after
    the declared ones (before ``image``), in declared order. Pass a table's column names to get its features."""
    spec = _kind_of(config_name)
    if spec.features_factory is not None:
        if embedding_dim is None:
            raise ValueError(f"the features of {config_name!r} need embedding_dim (and embedding_dtype)")
        return spec.features_factory(embedding_dim, embedding_dtype or "float32")
    assert spec.features is not None
    base = spec.features_with_images if with_images and spec.features_with_images is not None else spec.features
    wanted = set(optional)
    extra = {k: v for k, v in (spec.optional_features or {}).items() if k in wanted}
    if not extra:
        return base
    head = {k: v for k, v in base.items() if k != "image"}
    return Features({**head, **extra, **({"image": base["image"]} if "image" in base else {})})


# --- Dataset card tables (added for skyrank.card / skyrank.validate) ---------------------------------------------

#: What each column means, for the schema table of the dataset card. Keys are the column names declared above.
COLUMN_DESCRIPTIONS: dict[str, str] = {
    "image_id": "image id: its path relative to the benchmark root (POSIX separators)",
    "label": "location id (the class folder name, e.g. `0839`); images of one location are positives of each other",
    "view": "`drone`, `satellite` or `ground` (street-level)",
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
    "latitude": "WGS84 latitude of the image's location in degrees, null when the benchmark has none (optional "
    "column)",
    "longitude": "WGS84 longitude of the image's location in degrees, null when the benchmark has none (optional "
    "column)",
    "semi_positive_ids": "gallery images that are neither positive nor negative (VIGOR's 3 semi-positive tiles; empty "
    "elsewhere): never counted for R@K, ignored by the hit rate (optional column)",
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
    ``sues200-150``, ``embeddings-sample4geo-u1652`` → ``u1652``, ``sample4geo-u1652-d2s-m30`` → ``u1652``).
    Lenient: a name that does not parse gives its parts between the kind's prefix/retriever and its direction."""
    try:
        return ConfigName.parse(config_name).suffix
    except ValueError:
        spec = _kind_of(config_name)
        parts = config_name.split("-")[(spec.prefix is not None) + spec.has_retriever :]
        if spec.has_m and parts and _M_PART_RE.match(parts[-1]):
            parts = parts[:-1]
        if spec.has_direction and parts and parts[-1] in DIRECTIONS:
            parts = parts[:-1]
        return "-".join(parts) or config_name
