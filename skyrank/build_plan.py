"""The plan of a ``skyrank build``, made before any work: :class:`BuildPlan`, from the options and the layout.

No model is loaded and no image is decoded: :func:`plan_build` checks the options, the folders and the retriever's
declared needs, reads the benchmark's folder listing, and counts what the build will do (images to encode, each
once; rows and bytes of every config; the disk it needs; the encode time at the throughput measured on this machine
when a previous build recorded one). ``skyrank build --dry-run`` prints it; :func:`skyrank.build.build_dataset` runs
its stages from it (``read → encode → mine → write → card → validate``), in the manner of ``datasets``'
``download_and_prepare``, which plans before it prepares.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrank.benchmarks import RetrievalSplit, get_benchmark
from skyrank.errors import (
    BenchmarkLayoutError,
    CheckpointMismatchError,
    OptionError,
    UnknownNameError,
)
from skyrank.format import vocabulary

#: The small retriever the synthetic default trains (Sample4Geo's recipe on a timm ConvNeXt-Atto at 64 px): one
#: DataLoader worker decodes and augments while one intra-op thread trains. 20 epochs x 12 steps reach test R@1 25.5
#: (10 epochs: 10.9; 40 epochs: 35.4, twice the time); no early stop, as the cosine schedule is fixed by the epoch
#: count (BENCHMARKS.md, "The first build").
SYNTHETIC_RETRIEVER = {"arch": "convnext_atto", "image_size": 64, "epochs": 20, "batch_size": 32, "num_workers": 1}
#: About how long :data:`SYNTHETIC_RETRIEVER` trains on 2 free CPU cores (the up-front plan line says so).
SYNTHETIC_TRAIN_SECONDS = 90
#: Builds that encode fewer images record no throughput (start-up dominates their time).
THROUGHPUT_MIN_IMAGES = 256
THROUGHPUT_FILE = "throughput.json"


@dataclass(frozen=True)
class BuildOptions:
    """Exactly the keyword arguments of :func:`skyrank.build.build_dataset` (see its docstring)."""

    dataset: str = "synthetic"
    root: str | Path | None = None
    altitude: str | int | None = None
    directions: Sequence[str] = ("d2s",)
    retriever: str = "sample4geo"
    checkpoint: str | Path | None = None
    arch: str | None = None
    image_size: int | None = None
    opts: str | Path | None = None
    top_m: int = 20
    splits: Sequence[str] = ("train", "test")
    protocol: str = "official"
    index: str = "exact"
    with_images: bool | None = None
    out: str | Path | None = None
    overwrite: bool = False
    device: str | None = "cpu"
    batch_size: int = 32
    num_workers: int = 0
    skip_bad_images: bool = False
    progress: bool = True
    num_processes: int = 1
    embeddings: bool | None = None
    embedding_dtype: str = "float32"
    random_weights: bool = False
    max_pixels: int | None = None


@dataclass
class PairPlan:
    """One (split, direction): its query and gallery counts (gallery protocol applied)."""

    split: str
    direction: str
    query_view: str
    gallery_view: str
    queries: int
    gallery: int
    max_positives: int  # the most positives any query has by label (1 for D2S on University-1652, 54 for S2D)


@dataclass
class EncodePlan:
    """The images of one (split, view) to encode: each image once, whichever directions use it."""

    split: str
    view: str
    images: int


@dataclass
class ConfigPlan:
    """One (config, split) to write: exact rows (before bad images are skipped) and an estimate of its bytes
    (Arrow, uncompressed: an upper bound of the Parquet file)."""

    config: str
    split: str
    rows: int
    bytes: int


@dataclass
class BuildPlan:
    """What ``skyrank build`` will do, made with no model loaded and no image decoded (:func:`plan_build`)."""

    options: BuildOptions
    benchmark: str
    display_name: str
    root: Path | None  # None: the synthetic benchmark is generated first (``pending`` says so)
    altitude: str | None
    out: Path
    with_images: bool
    embeddings: bool
    trains_synthetic: bool  # the synthetic default trains its own small retriever (cached)
    writes_optional_columns: bool  # the benchmark writes latitude/longitude and semi_positive_ids (format 3)
    device: str  # --device, or the default resolved (cuda when available, else cpu)
    retriever: str
    weights: str  # where the retriever's weights come from, in words
    arch: str | None = None
    image_size: int | None = None
    embed_dim: int | None = None
    pairs: list[PairPlan] = field(default_factory=list)
    encode: list[EncodePlan] = field(default_factory=list)
    configs: list[ConfigPlan] = field(default_factory=list)
    throughput: float | None = None  # images/s measured by an earlier build of this retriever on this machine
    throughput_note: str = ""
    bytes_needed: int | None = None
    free_bytes: int | None = None
    checks: list[str] = field(default_factory=list)  # checks passed, in order
    pending: list[str] = field(default_factory=list)  # work before the stages (generation, retriever training)
    layouts: dict[tuple[str, str], RetrievalSplit] = field(default_factory=dict, repr=False, compare=False)

    @property
    def images_to_encode(self) -> int:
        """Images the encode stage embeds: each once, although both directions may use it."""
        return sum(e.images for e in self.encode)

    @property
    def encodes_per_direction(self) -> int:
        """What encoding each direction's queries and gallery separately would cost (the saving's baseline)."""
        return sum(p.queries + p.gallery for p in self.pairs)

    @property
    def encode_seconds(self) -> float | None:
        """Estimated encode time: images to encode / measured throughput (``None`` when none was measured)."""
        if not self.throughput or not self.encode:
            return None
        return self.images_to_encode / self.throughput

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("options", "layouts")}
        d["options"] = dataclasses.asdict(self.options)
        d["pairs"] = [dataclasses.asdict(p) for p in self.pairs]
        d["encode"] = [dataclasses.asdict(e) for e in self.encode]
        d["configs"] = [dataclasses.asdict(c) for c in self.configs]
        d.update(images_to_encode=self.images_to_encode, encodes_per_direction=self.encodes_per_direction,
                 encode_seconds=self.encode_seconds)  # fmt: skip
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def summary(self) -> str:
        """The plan as text (``skyrank build --dry-run``)."""
        o = self.options
        lines = [f"skyrank build plan: {self.display_name} ({self.benchmark})"
                 + (f" at {self.altitude} m" if self.altitude else "") + f" → {self.out}"]  # fmt: skip
        lines.append(f"  root: {self.root if self.root else '(the cached synthetic benchmark, generated first)'}")
        lines.append(f"  splits {', '.join(o.splits)}; directions {', '.join(o.directions)}; protocol {o.protocol}; "
                     f"m = {o.top_m}; index {o.index}")  # fmt: skip
        lines.extend(f"  first: {p}" for p in self.pending)
        if self.pairs:
            lines.append(f"  {'split':<6} {'direction':<9} {'queries':>8} {'gallery':>8} {'positives':>9}")
            lines.extend(f"  {p.split:<6} {p.direction:<9} {p.queries:>8,} {p.gallery:>8,} {p.max_positives:>9,}"
                         for p in self.pairs)  # fmt: skip
            per = "; ".join(f"{e.split} {e.view} {e.images:,}" for e in self.encode)
            saved = self.encodes_per_direction - self.images_to_encode
            lines.append(f"  images to encode: {self.images_to_encode:,}, each once ({per})"
                         + (f"; {saved:,} fewer than encoding each direction apart" if saved else ""))  # fmt: skip
        shape = ", ".join(x for x in (self.arch, f"{self.image_size} px" if self.image_size else "",
                                      f"{self.embed_dim}-d" if self.embed_dim else "") if x)  # fmt: skip
        lines.append(f"  retriever: {self.retriever}" + (f" ({shape})" if shape else "")
                     + f"; weights: {self.weights}")  # fmt: skip
        secs = self.encode_seconds
        note = self.throughput_note
        lines.append(f"  encode time: about {_duration(secs)} at {self.throughput:,.1f} images/s ({note})"
                     if secs is not None else f"  encode time: unknown ({note})")  # fmt: skip
        if self.configs:
            lines.append(f"  {'config':<44} {'split':<6} {'rows':>8} {'size (est.)':>12}")
            lines.extend(f"  {c.config:<44} {c.split:<6} {c.rows:>8,} {_size(c.bytes):>12}" for c in self.configs)
        if self.bytes_needed is not None:
            free = f"; free there: {_size(self.free_bytes)}" if self.free_bytes is not None else ""
            lines.append(f"  disk: about {_size(self.bytes_needed)} needed (Arrow size, an upper bound of the "
                         f"Parquet files){free}")  # fmt: skip
        lines.append("  checks passed: " + "; ".join(self.checks))
        return "\n".join(lines)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------------------------- checks
def check_options(o: BuildOptions) -> None:
    """Every check of the options that needs neither the benchmark nor the model (instant, no heavy import)."""
    for d in o.directions:
        if d not in vocabulary.DIRECTIONS:
            raise OptionError(f"--direction must be d2s or s2d, got {d!r}")
    if not o.splits:
        raise OptionError("--splits is empty; pass e.g. --splits train,test")
    for s in o.splits:
        if s not in vocabulary.SPLITS:
            raise OptionError(f"--splits must be among {', '.join(vocabulary.SPLITS)}, got {s!r}")
    if o.protocol not in vocabulary.PROTOCOLS:
        raise OptionError(f"--protocol must be one of {', '.join(vocabulary.PROTOCOLS)}, got {o.protocol!r}")
    if o.top_m < 2:
        raise OptionError(f"--top-m must be at least 2 (m−1 negatives are stored), got {o.top_m}")
    if o.batch_size < 1:
        raise OptionError(f"--batch-size must be at least 1, got {o.batch_size}")
    if o.num_workers < 0:
        raise OptionError(f"--num-workers must be 0 or more, got {o.num_workers}")
    if o.max_pixels is not None and o.max_pixels < 1:
        raise OptionError(f"--max-pixels must be at least 1, got {o.max_pixels}")
    if o.checkpoint is not None:
        path = Path(o.checkpoint)
        if not path.is_file():
            raise CheckpointMismatchError(
                f"--checkpoint {path} " + ("is a folder, not a file" if path.is_dir() else "does not exist"),
                hint="Pass --checkpoint the path of the weights file (.pth or .safetensors).",
            )
        if o.random_weights:
            raise OptionError("--random-weights and --checkpoint contradict each other; pass one of them")
    if o.embedding_dtype not in vocabulary.EMBEDDING_DTYPES:
        raise OptionError(
            f"--embedding-dtype must be one of {', '.join(vocabulary.EMBEDDING_DTYPES)}, got {o.embedding_dtype!r}"
        )


def check_altitude(o: BuildOptions) -> str | None:
    """The altitude, normalised (``"150m"`` → ``"150"``), checked against the benchmark's."""
    bench = get_benchmark(o.dataset)
    altitude = o.altitude
    if bench.altitudes:
        if altitude is None:
            raise OptionError(
                f"{o.dataset} is evaluated per altitude: pass --altitude {{{','.join(bench.altitudes)}}}"
            )
        altitude = str(altitude).removesuffix("m")
        if altitude not in bench.altitudes:
            raise OptionError(
                f"--altitude must be one of {', '.join(bench.altitudes)} for {o.dataset}, got {altitude!r}"
            )
    elif altitude is not None:
        raise OptionError(f"{o.dataset} has no altitudes; drop --altitude")
    return None if altitude is None else str(altitude)


def check_root(o: BuildOptions) -> None:
    """``--root`` given (except for the cached synthetic benchmark) and a folder."""
    root = o.root
    if root is None and o.dataset != "synthetic":
        raise OptionError(f"--root is required for {o.dataset}: the folder of your copy of the benchmark")
    if root is not None and not Path(root).expanduser().is_dir():
        bench = get_benchmark(o.dataset)
        raise BenchmarkLayoutError(
            f"--root {root} " + ("is a file, not a folder" if Path(root).exists() else "does not exist"),
            hint=f"Point --root at your copy of {o.dataset}: {bench.root_example or 'the benchmark folder'}.",
        )


def check_retriever(o: BuildOptions, *, trains_synthetic: bool) -> None:
    """The retriever's name, weights and ``opts.yaml``, from what it declared when it registered
    (:class:`~skyrank.retrievers.RetrieverInfo`): checked now, not after the work."""
    from skyrank.retrievers import list_retrievers, retriever_info
    from skyrank.retrievers._base import missing_weights_error

    if o.retriever not in list_retrievers():
        raise UnknownNameError(f"--retriever {o.retriever!r} is not one of {', '.join(list_retrievers())}")
    info = retriever_info(o.retriever)
    if o.opts is not None:
        if info.read_opts is None:
            raise OptionError(f"--opts is MCCG's/SDPL's opts.yaml; --retriever {o.retriever} takes none")
        info.read_opts(o.opts)
    if o.checkpoint is None and info.checkpoint_required:
        raise OptionError(f"--retriever {o.retriever} needs --checkpoint: {info.checkpoint_what}")
    if o.checkpoint is None and info.learned_weights and not o.random_weights and not trains_synthetic:
        raise missing_weights_error(o.retriever, o.dataset)


def check_top_m(layouts: Mapping[tuple[str, str], RetrievalSplit], top_m: int) -> None:
    """``top_m`` against every (split, direction): the gallery must hold m images and, for every query, m−1
    negatives (Eq. 2 stores exactly m−1). Raises :class:`OptionError` with the largest m that fits."""
    for (split, direction), rs in layouts.items():
        if not rs.queries or not rs.gallery:
            continue
        n = len(rs.gallery)
        most_positives = _max_positives(rs)
        fits = min(n, n - most_positives + 1)
        if top_m > fits:
            raise OptionError(
                f"--top-m {top_m} is too large for the {split} {direction} gallery of {n} image(s): every query needs "
                f"m−1 = {top_m - 1} negatives, and some query has only {n - most_positives}",
                hint=f"Pass --top-m {max(2, fits)} or less." if fits >= 2 else "This gallery is too small to mine.",
            )


def _max_positives(rs: RetrievalSplit) -> int:
    per_label: dict[str, int] = {}
    for r in rs.gallery:
        per_label[r.label] = per_label.get(r.label, 0) + 1
    return max((per_label.get(q.label, 0) for q in rs.queries), default=0)


def check_free_space_for(plan: BuildPlan) -> None:
    """The one call site of the free-space check before the work: the plan's estimate against the free space where
    the output is staged (:func:`skyrank.atomic.check_free_space` raises :class:`~skyrank.errors.NoSpaceError` with
    what, where and how much)."""
    from skyrank.atomic import check_free_space

    if plan.bytes_needed is None:
        return
    check_free_space(plan.out.expanduser().absolute().parent, plan.bytes_needed,
                     f"the dataset folder --out {plan.out}")  # fmt: skip
    plan.checks.append("free space")


# ----------------------------------------------------------------------------------------------- the plan
def plan_build(options: BuildOptions | None = None, /, **kwargs: Any) -> BuildPlan:
    """Check everything that needs no image and count the work: the :class:`BuildPlan` of a build.

    Takes a :class:`BuildOptions` or :func:`~skyrank.build.build_dataset`'s keyword arguments. In this order:
    options, ``--checkpoint`` exists, altitude, ``--root`` exists, ``--out`` writable (a real probe file), then
    (after the heavy imports) the retriever's name, weights and ``--opts``, the benchmark layout (folder listings
    only), ``--top-m`` against every gallery, and the free space. Raises the first failing check's error.
    """
    o = options if options is not None else BuildOptions(**kwargs)
    if options is not None and kwargs:
        o = dataclasses.replace(o, **kwargs)
    checks: list[str] = []
    check_options(o)
    checks.append("options")
    if o.checkpoint is not None:
        checks.append("--checkpoint exists")
    altitude = check_altitude(o)
    check_root(o)
    if o.root is not None:
        checks.append("--root exists")
    out = Path(o.out) if o.out is not None else Path(f"skyrank-{o.dataset}" + (f"-{altitude}" if altitude else ""))
    from skyrank.writer import DatasetWriter  # imports datasets: after the instant checks

    DatasetWriter.check_output(out, o.overwrite)
    checks.append("--out writable")
    trains_synthetic = (
        o.retriever == "sample4geo" and o.checkpoint is None and o.dataset == "synthetic" and not o.random_weights
    )
    check_retriever(o, trains_synthetic=trains_synthetic)
    checks.append("retriever name, weights and --opts")
    device = o.device or _default_device()
    bench = get_benchmark(o.dataset)
    plan = BuildPlan(
        options=o,
        benchmark=o.dataset,
        display_name=bench.display_name or o.dataset,
        root=Path(o.root) if o.root is not None else None,
        altitude=altitude,
        out=out,
        with_images=bool(bench.redistributable) if o.with_images is None else bool(o.with_images),
        # on by default where the licence allows derived data (the synthetic benchmark)
        embeddings=bool(bench.derived_data) if o.embeddings is None else bool(o.embeddings),
        trains_synthetic=trains_synthetic,
        writes_optional_columns=bool(bench.writes_optional_columns),
        device=device,
        retriever=o.retriever,
        weights=_weights_source(o, trains_synthetic),
        checks=checks,
    )
    plan.arch, plan.image_size = _options_shape(plan)
    if plan.root is None:
        plan.pending.extend(_synthetic_pending(trains_synthetic))
        cached = _cached_synthetic_root()
        if cached is None:
            plan.throughput_note = "counted once the benchmark is generated: run --dry-run again then"
            return plan
        plan.root = cached
    elif trains_synthetic:
        plan.pending.extend(_synthetic_pending(trains_synthetic)[1:])
    return read_layout(plan)


def read_layout(plan: BuildPlan) -> BuildPlan:
    """Read the benchmark's folder listing into ``plan`` (no image opened) and count the work from it."""
    o = plan.options
    assert plan.root is not None
    bench = get_benchmark(o.dataset)
    plan.layouts = {
        (split, direction): bench.load_split(plan.root, split, direction=direction, protocol=o.protocol,
                                             altitude=plan.altitude)
        for split in o.splits
        for direction in o.directions
    }  # fmt: skip
    plan.checks.append("benchmark layout")
    check_top_m(plan.layouts, o.top_m)
    plan.checks.append("--top-m fits every gallery")
    plan.pairs = [
        PairPlan(split, d, *rs.views(), len(rs.queries), len(rs.gallery), _max_positives(rs))
        for (split, d), rs in plan.layouts.items()
    ]
    plan.encode = [EncodePlan(split, view, len(records)) for (split, view), records in images_to_encode(plan).items()]
    _shape_of_retriever(plan)
    _count_configs(plan)
    _lookup_throughput(plan)
    try:
        plan.free_bytes = shutil.disk_usage(_existing_parent(plan.out)).free
    except OSError:
        plan.free_bytes = None
    check_free_space_for(plan)
    return plan


def images_to_encode(plan: BuildPlan) -> dict[tuple[str, str], list[Any]]:
    """(split, view) → the records to embed, sorted and each image once, whichever directions and roles (query or
    gallery) use it: the encode stage's work list. An image keeps its view in every direction."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for (split, _), rs in plan.layouts.items():
        qview, gview = rs.views()  # "ground" for street-level queries
        for records, view in ((rs.gallery, gview), (rs.queries, qview)):
            bucket = out.setdefault((split, view), {})
            for r in records:
                bucket.setdefault(r.image_id, r)
    return {key: [bucket[i] for i in sorted(bucket)] for key, bucket in out.items()}


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _weights_source(o: BuildOptions, trains_synthetic: bool) -> str:
    if o.checkpoint is not None:
        return f"--checkpoint {o.checkpoint}"
    if trains_synthetic:
        return "trained by the build on the synthetic train split (cached)"
    if o.random_weights:
        return "random, untrained (--random-weights)"
    return "none"


def _synthetic_pending(trains: bool) -> list[str]:
    from skyrank.benchmarks.synthetic import default_synthetic_root

    root = default_synthetic_root()
    steps = [] if _cached_synthetic_root() else [f"generate the synthetic benchmark into {root} (~10 s, cached)"]
    if trains:
        if not (synthetic_retriever_dir(root) / "weights_end.pth").is_file():
            r = SYNTHETIC_RETRIEVER
            steps.append(f"train a small retriever ({r['arch']} at {r['image_size']} px, {r['epochs']} epochs, about "
                         f"{SYNTHETIC_TRAIN_SECONDS} s on 2 free CPU cores; cached)")  # fmt: skip
    return steps


def synthetic_retriever_dir(root: Path, recipe: Mapping[str, Any] | None = None) -> Path:
    """The run folder of a synthetic retriever, beside the benchmark, keyed by its recipe (default
    :data:`SYNTHETIC_RETRIEVER`)."""
    recipe = SYNTHETIC_RETRIEVER if recipe is None else recipe
    key = hashlib.sha256(json.dumps(dict(recipe), sort_keys=True).encode()).hexdigest()[:12]
    return Path(str(root) + f".retriever-{key}")


def _cached_synthetic_root() -> Path | None:
    from skyrank.benchmarks.synthetic import default_synthetic_root

    root = default_synthetic_root()
    return root if (root / "synthetic.json").is_file() else None


def _options_shape(plan: BuildPlan) -> tuple[str | None, int | None]:
    """The retriever's architecture and input size as the options give them (the synthetic default's when it
    trains its own retriever); ``None`` for the retriever's defaults."""
    o = plan.options
    if plan.trains_synthetic:
        return o.arch or SYNTHETIC_RETRIEVER["arch"], o.image_size or SYNTHETIC_RETRIEVER["image_size"]
    return o.arch, o.image_size


def _shape_of_retriever(plan: BuildPlan) -> None:
    """Architecture and input size from the options; with an embeddings config (whose bytes depend on it), the
    embedding width too, from the retriever built on torch's meta device (no weights, no memory, no file read except
    ``precomputed``'s, whose file *is* its embeddings)."""
    o = plan.options
    kwargs: dict[str, Any] = {k: v for k, v in (("arch", o.arch), ("image_size", o.image_size), ("opts", o.opts))
                              if v is not None}  # fmt: skip
    kwargs["arch"], kwargs["image_size"] = plan.arch, plan.image_size
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if not plan.embeddings:  # building even an empty model imports timm (seconds): only when the plan needs it
        return
    try:
        import torch

        from skyrank.retrievers import create, retriever_info

        checkpoint = o.checkpoint if retriever_info(o.retriever).checkpoint_required else None
        with torch.device("meta"):  # the shape only: no weights are loaded, so random ones are asked for
            model = create(o.retriever, checkpoint=checkpoint, device="meta", random_weights=checkpoint is None,
                           dataset=get_benchmark(o.dataset).evaluation_protocol or o.dataset, **kwargs)  # fmt: skip
    except Exception:  # the shape is for estimates only; the real load (before decoding) reports any problem
        return
    plan.embed_dim = int(model.embed_dim)


def _count_configs(plan: BuildPlan) -> None:
    """The configs the build writes, their exact rows and estimated bytes, and the disk the build needs."""
    from skyrank.format import schema

    o = plan.options
    configs: list[ConfigPlan] = []
    for kind, name in (("gallery", schema.gallery_config_name(o.dataset, plan.altitude)),
                       ("queries", schema.queries_config_name(o.dataset, plan.altitude))):  # fmt: skip
        for split in o.splits:
            recs = {r.image_id: r for (s, _), rs in plan.layouts.items() if s == split
                    for r in (rs.gallery if kind == "gallery" else rs.queries)}  # fmt: skip
            size = sum(2 * len(i) + len(r.label) + len(r.view) + 16 for i, r in recs.items())
            if plan.with_images:
                size += sum(_file_size(plan.root / i) for i in recs)  # type: ignore[operator]
            configs.append(ConfigPlan(name, split, len(recs), size))
    for (split, direction), rs in plan.layouts.items():
        name = schema.retriever_config_name(o.retriever, o.dataset, direction, plan.altitude)
        id_len = _mean_len(r.image_id for r in rs.gallery)
        per_row = (3 * id_len + 24 + _max_positives(rs) * (id_len + 8)
                   + (o.top_m - 1) * (id_len + 12) + o.top_m * (id_len + 8))  # fmt: skip
        configs.append(ConfigPlan(name, split, len(rs.queries), int(per_row * len(rs.queries))))
    if plan.embeddings:
        name = schema.embeddings_config_name(o.retriever, o.dataset, plan.altitude)
        width = (plan.embed_dim or 0) * (2 if o.embedding_dtype == "float16" else 4)
        for split in o.splits:
            n = sum(e.images for e in plan.encode if e.split == split)
            # float vectors barely compress, and the Parquet file measured 1.5x their raw bytes (320-d, 880 rows)
            configs.append(ConfigPlan(name, split, n, n * (width * 3 // 2 + 64)))
    plan.configs = sorted(configs, key=lambda c: (c.config, c.split))
    plan.bytes_needed = sum(c.bytes for c in configs)


def _mean_len(values: Any) -> float:
    lengths = [len(v) for v in values]
    return sum(lengths) / len(lengths) if lengths else 0.0


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _existing_parent(out: Path) -> Path:
    p = out.expanduser().absolute().parent
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


# ----------------------------------------------------------------------------------------------- throughput
def throughput_key(retriever: str, arch: str | None, image_size: int | None, device: str) -> str:
    """What a measured encode throughput depends on: the retriever, its shape, the device and this machine."""
    return f"{retriever}|{arch or '-'}|{image_size or '-'}px|{device}|{platform.node()}"


def _throughput_path() -> Path:
    env = os.environ.get("SKYRANK_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "skyrank").expanduser() / THROUGHPUT_FILE


def _lookup_throughput(plan: BuildPlan) -> None:
    o = plan.options
    key = throughput_key(o.retriever, plan.arch, plan.image_size, plan.device)
    try:
        record = json.loads(_throughput_path().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        record = None
    if record and record.get("images_per_second"):
        plan.throughput = float(record["images_per_second"])
        plan.throughput_note = (f"measured by a build of {record.get('images'):,} images on this machine, "
                                f"{plan.device}, {record.get('when', '')}")  # fmt: skip
    else:
        plan.throughput_note = (f"no build of {o.retriever} at this shape has run on this machine's "
                                f"{plan.device} yet; each build of {THROUGHPUT_MIN_IMAGES}+ images records it")


def record_throughput(plan: BuildPlan, images: int, seconds: float) -> None:
    """Remember the encode stage's images/s for the next plan (best effort: a cache that cannot be written is
    skipped). Small builds, dominated by start-up, record nothing."""
    if images < THROUGHPUT_MIN_IMAGES or seconds <= 0:
        return
    from skyrank.atomic import write_text_atomic

    o = plan.options
    path = _throughput_path()
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
        table[throughput_key(o.retriever, plan.arch, plan.image_size, plan.device)] = {
            "images_per_second": images / seconds, "images": images, "when": time.strftime("%Y-%m-%d"),
        }  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(table, indent=1, sort_keys=True))
    except (OSError, ValueError):
        pass
