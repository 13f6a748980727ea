"""Records and the benchmark interface shared by every benchmark reader.

A benchmark reader turns a folder on disk into plain records. It never decodes an image and never touches
Parquet: decoding happens in the encoder, writing in :mod:`skyrank.writer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skyrank.errors import UnknownNameError

#: File suffixes treated as images; anything else in a class folder is ignored.
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True, order=True)
class ImageRecord:
    """One image of a benchmark.

    Attributes:
        image_id: path relative to the benchmark root, POSIX separators (``test/query_drone/0839/image-01.jpeg``).
        label: the location ID, i.e. the class folder name (``"0839"``). Positives share a label.
        view: ``"drone"``, ``"satellite"`` or ``"ground"`` (street-level: VIGOR/CVUSA/CVACT panoramas,
            University-1652 street views).
        latitude, longitude: WGS84 degrees where the benchmark has them (VIGOR file names, DenseUAV's GPS file),
            else None.
        positives: the gallery ``image_id``s that are this query's positives when they are not "same label"
            (CVACT test: every tile within 5 m); None: the gallery images with this record's label.
        semi_positives: gallery ``image_id``s that are neither positive nor negative (VIGOR's 3 semi-positive
            tiles: they never count for R@K, and the hit rate ignores them).
    """

    image_id: str
    label: str
    view: str
    latitude: float | None = field(default=None, compare=False)
    longitude: float | None = field(default=None, compare=False)
    positives: tuple[str, ...] | None = field(default=None, compare=False)
    semi_positives: tuple[str, ...] = field(default=(), compare=False)


@dataclass
class RetrievalSplit:
    """The queries and the gallery of one (benchmark, split, direction, protocol[, altitude]).

    ``gallery`` already has the gallery protocol applied: with ``query-ids-only`` the gallery images whose label is
    not a query label are removed (Sample4Geo's junk rule); with ``official`` every gallery image counts.
    Both lists are sorted by ``image_id``.
    """

    benchmark: str
    split: str  # "train" | "test"
    direction: str  # "d2s" | "s2d"
    protocol: str  # "official" | "query-ids-only"
    root: Path
    queries: list[ImageRecord]
    gallery: list[ImageRecord]
    altitude: str | None = None
    skipped_empty_folders: list[str] = field(default_factory=list)  # class folders with no image, relative paths
    ignored_files: int = 0  # non-image files found in class folders
    #: listed pairs dropped because a file is missing (CVACT, as Sample4Geo's loader drops them), relative paths
    missing_files: list[str] = field(default_factory=list)

    def path_of(self, record: ImageRecord) -> Path:
        return self.root / record.image_id

    def views(self) -> tuple[str, str]:
        """(query view, gallery view) as the records say (``ground`` for street-level queries); an empty side
        falls back to the direction's drone/satellite."""
        q, g = ("drone", "satellite") if self.direction == "d2s" else ("satellite", "drone")
        return (self.queries[0].view if self.queries else q, self.gallery[0].view if self.gallery else g)

    def mining_extras(self, query_ids: list[str], optional_columns: bool) -> dict[str, list]:
        """The keyword arguments of :func:`skyrank.mining.mine` for these queries (in ``query_ids`` order): explicit
        positives where a record has them (CVACT test), and the semi-positives when the benchmark writes the
        optional columns (``Benchmark.writes_optional_columns``)."""
        by_id = {q.image_id: q for q in self.queries}
        out: dict[str, list] = {}
        if any(q.positives is not None for q in self.queries):
            out["query_positives"] = [by_id[i].positives for i in query_ids]
        if optional_columns:
            out["query_semi_positives"] = [list(by_id[i].semi_positives) for i in query_ids]
        return out


class Benchmark:
    """Interface of a benchmark reader. Subclasses set ``name`` and implement :meth:`load_split`."""

    name: str = ""
    display_name: str = ""  # how people write it ("University-1652"); the registered name when empty
    #: the licence and citation facts the dataset card and the publisher's licence guard read
    license: str = "other"
    license_name: str | None = None
    license_link: str | None = None
    redistributable: bool = False  # may image bytes be published publicly?
    root_example: str = ""  # what --root points at, for error hints (".../University-Release")
    citation: str = ""
    altitudes: tuple[str, ...] = ()  # non-empty for per-altitude benchmarks (SUES-200)
    #: the evaluator whose rules score this benchmark (``skyrank.metrics`` registers one per name); the build
    #: writes it into the manifest as ``evaluation_protocol``
    evaluation_protocol: str = ""
    #: may derived data (the ``embeddings-*`` config: one retriever vector per image, no pixels) be published?
    #: Default of ``skyrank build --embeddings``.
    derived_data: bool = False
    directions: tuple[str, ...] = ("d2s", "s2d")  # the directions load_split reads
    #: write the optional columns (``skyrank.format.schema.OPTIONAL_COLUMNS``: latitude/longitude, null when
    #: unknown; ``semi_positive_ids``, empty where none) into this benchmark's tables (format version 3)
    writes_optional_columns: bool = False
    #: markdown for the dataset card's "Benchmark protocol" section: positives, gallery, what the optional columns
    #: hold (empty: no section)
    card_notes: str = ""

    def load_split(
        self,
        root: str | Path,
        split: str,
        direction: str = "d2s",
        protocol: str = "official",
        altitude: str | int | None = None,
    ) -> RetrievalSplit:
        raise NotImplementedError

    def training_pairs(self, root: str | Path, altitude: str | int | None = None) -> RetrievalSplit:
        """The training split in the d2s direction (drone queries, satellite gallery), for retriever training."""
        return self.load_split(root, "train", direction="d2s", protocol="official", altitude=altitude)


_BENCHMARKS: dict[str, Callable[[], Benchmark]] = {}


def register_benchmark(name: str) -> Callable[[type[Benchmark]], type[Benchmark]]:
    """Class decorator: ``@register_benchmark("university1652")``."""

    def deco(cls: type[Benchmark]) -> type[Benchmark]:
        if name in _BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is already registered")
        cls.name = name
        _BENCHMARKS[name] = cls
        return cls

    return deco


def list_benchmarks() -> list[str]:
    return sorted(_BENCHMARKS)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark reader registered under ``name``."""
    if name not in _BENCHMARKS:
        raise UnknownNameError(f"unknown benchmark {name!r}; choose one of: {', '.join(list_benchmarks())}")
    return _BENCHMARKS[name]()


def benchmark_citation(name: str) -> str | None:
    """The BibTeX a benchmark declares (``Benchmark.citation``), or None for an unknown name or none declared."""
    cls = _BENCHMARKS.get(name)
    if cls is None:
        return None
    return cls.citation.strip() or None


def benchmark_notes(name: str | None) -> str:
    """The card notes a registered benchmark declares (``Benchmark.card_notes``), else ``""``."""
    cls = _BENCHMARKS.get(name or "")
    return cls.card_notes.strip() if cls is not None else ""


def restricted_benchmark(name: str | None) -> str | None:
    """The display name of a registered benchmark whose declared licence forbids publishing its images
    (``redistributable = False``), else None (an unregistered name declares nothing)."""
    cls = _BENCHMARKS.get(name or "")
    if cls is None or cls.redistributable:
        return None
    return cls.display_name or cls.name


def apply_protocol(queries: list[ImageRecord], gallery: list[ImageRecord], protocol: str) -> list[ImageRecord]:
    """The gallery under a gallery protocol (design.md, "Gallery protocol").

    ``official``: every gallery image counts (University-1652 and SUES-200 official evaluators).
    ``query-ids-only``: gallery images whose label is no query's label are dropped, which is what Sample4Geo's
    ``label=-1`` junk rule amounts to.
    """
    if protocol == "official":
        return list(gallery)
    if protocol == "query-ids-only":
        labels = {q.label for q in queries}
        return [g for g in gallery if g.label in labels]
    raise ValueError(f"protocol must be 'official' or 'query-ids-only', got {protocol!r}")
