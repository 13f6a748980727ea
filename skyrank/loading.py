"""Load a SkyRank config (from a local folder or a Hub repo) with its images attached lazily.

``load_skyrank(path_or_repo, "sample4geo-university1652-d2s", split="test", images_root=...)`` returns the candidate
table as a ``datasets.Dataset`` whose rows also carry ``query_image``, ``gt_image`` and ``candidate_images`` (PIL
images, in ``candidate_ids`` order) and optionally ``retrieved_images``. Images are resolved only when a row is read
(``Dataset.with_transform``), from the ``gallery-*``/``queries-*`` configs of the same dataset when they carry
images (an id → row index built over their ``image_id`` column, the Tevatron pattern), or else from files under
``images_root`` (the user's own copy of the benchmark: University-1652 and SUES-200 images may not be
redistributed, so the public dataset holds ids only). A missing image raises :class:`MissingImageError` naming its
id and the place looked in.

The helpers that read the README YAML (``configs:`` / ``dataset_info:``) the way ``load_dataset`` does live here
too; :mod:`skyrank.publish` uses them.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from skyrank.errors import SkyRankError
from skyrank.format import schema

README = "README.md"
MANIFEST = schema.MANIFEST_NAME if hasattr(schema, "MANIFEST_NAME") else "skyrank_manifest.json"
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[A-Za-z0-9][\w.\-]*$")


class MissingImageError(SkyRankError, FileNotFoundError):
    """An image referenced by a row could not be found. The message names the id and where it was looked for."""


# --------------------------------------------------------------------------------------------------- card helpers
def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(metadata, body)`` of a card; ``({}, text)`` when it has no YAML front matter."""
    if not text.startswith("---"):
        return {}, text
    lines = text.split("\n")
    for i in range(1, len(lines)):
        if lines[i].strip() == "---":
            meta = yaml.safe_load("\n".join(lines[1:i])) or {}
            if not isinstance(meta, dict):
                raise ValueError("README.md YAML front matter is not a mapping")
            return meta, "\n".join(lines[i + 1 :])
    raise ValueError("README.md YAML front matter is not closed by a '---' line")


def join_front_matter(meta: dict[str, Any], body: str) -> str:
    """A card from metadata and body (inverse of :func:`split_front_matter`)."""
    dumped = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{dumped}---\n{body}"


def config_split_patterns(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """``{split: [path patterns]}`` of one ``configs:`` entry (a bare string or list means split ``train``)."""
    data_files = cfg.get("data_files")
    out: dict[str, list[str]] = {}
    if data_files is None:
        return out
    if isinstance(data_files, str):
        return {"train": [data_files]}
    if isinstance(data_files, dict):  # {split: path(s)}
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in data_files.items()}
    for item in data_files:
        if isinstance(item, dict):
            paths = item.get("path") or []
            out.setdefault(str(item.get("split", "train")), []).extend([paths] if isinstance(paths, str) else paths)
        else:
            out.setdefault("train", []).append(str(item))
    return out


def match_patterns(patterns: list[str], files: list[str]) -> list[str]:
    """Repo-relative POSIX paths in ``files`` matched by any pattern (``*`` does not cross ``/``)."""
    matched = []
    for path in files:
        for pattern in patterns:
            pattern = pattern[2:] if pattern.startswith("./") else pattern
            if path.count("/") == pattern.count("/") and fnmatch.fnmatchcase(path, pattern):
                matched.append(path)
                break
    return sorted(matched)


def configs_by_name(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``configs:`` entries keyed by ``config_name``."""
    configs = meta.get("configs") or []
    return {str(c["config_name"]): c for c in configs if isinstance(c, dict) and "config_name" in c}


def dataset_infos_by_name(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``dataset_info:`` entries keyed by ``config_name`` (a single mapping is accepted too)."""
    infos = meta.get("dataset_info") or []
    if isinstance(infos, dict):
        infos = [infos]
    return {str(i.get("config_name", "default")): i for i in infos if isinstance(i, dict)}


def list_folder_files(folder: Path) -> list[str]:
    """Every regular file under ``folder`` as a POSIX path; hidden files and folders are left out."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out.append(rel.as_posix())
    return out


def config_benchmark(config_name: str) -> str | None:
    """The benchmark a config name refers to (``gallery-sues200-150`` → ``sues200``), or ``None``.

    Read with :meth:`skyrank.format.schema.ConfigName.parse`; a name that does not parse still gives its second
    part, so the publisher's licence guard never lets a malformed name slip through."""
    try:
        return schema.ConfigName.parse(config_name).benchmark
    except ValueError:
        parts = config_name.split("-")
        return parts[1] if len(parts) >= 2 else None


def image_configs_for(config_name: str) -> tuple[str, str]:
    """``(queries config, gallery config)`` belonging to a retriever config ``<retriever>-<bench>[-<alt>]-<dir>``."""
    try:
        parsed = schema.ConfigName.parse(config_name)
    except ValueError as err:
        raise SkyRankError(str(err)) from None
    if parsed.kind != "retriever":
        raise SkyRankError(
            f"{config_name!r} is not a retriever config (<retriever>-<benchmark>[-<altitude>]-<d2s|s2d>)"
        )
    return parsed.queries_config, parsed.gallery_config


# --------------------------------------------------------------------------------------------------- sources
class _Source:
    """A dataset folder, local or a snapshot of (part of) a Hub repo, and its README metadata."""

    def __init__(
        self,
        path_or_repo: str | os.PathLike[str],
        *,
        revision: str | None,
        cache_dir: str | os.PathLike[str] | None,
        token: str | None,
        endpoint: str | None,
    ) -> None:
        self.name = str(path_or_repo)
        local = Path(path_or_repo).expanduser()
        self.repo_id: str | None = None
        self._fetched: set[str] = set()
        self.revision, self.cache_dir, self.token, self.endpoint = revision, cache_dir, token, endpoint
        if local.is_dir():
            self.root = local
        else:
            if not _REPO_ID_RE.match(self.name):
                raise SkyRankError(f"{self.name!r} is neither a folder nor a Hub dataset repo id (owner/name)")
            self.repo_id = self.name
            self.root = self._snapshot([README])
        readme = self.root / README
        if not readme.is_file():
            raise SkyRankError(f"{self.name}: no README.md, so this is not a SkyRank dataset (configs unknown)")
        self.meta, _ = split_front_matter(readme.read_text(encoding="utf-8"))
        self.configs = configs_by_name(self.meta)
        self.infos = dataset_infos_by_name(self.meta)

    def _snapshot(self, patterns: list[str]) -> Path:
        from huggingface_hub import snapshot_download

        try:
            path = snapshot_download(
                self.repo_id,
                repo_type="dataset",
                revision=self.revision,
                cache_dir=str(self.cache_dir) if self.cache_dir else None,
                token=self.token or os.environ.get("HF_TOKEN") or None,
                endpoint=self.endpoint,
                allow_patterns=patterns,
            )
        except Exception as err:  # noqa: BLE001 - re-raised with the repo and a fix
            raise SkyRankError(
                f"could not download {patterns} from the Hub dataset {self.repo_id!r}"
                f"{' at ' + self.revision if self.revision else ''}: {type(err).__name__}: {err}"
            ) from err
        return Path(path)

    def has_config(self, config: str) -> bool:
        return config in self.configs

    def files_for(self, config: str, split: str) -> list[Path]:
        """Local paths of a (config, split)'s Parquet files, downloading them first for a Hub repo."""
        if config not in self.configs:
            raise SkyRankError(f"{self.name}: no config {config!r}; configs: {', '.join(sorted(self.configs))}")
        patterns = config_split_patterns(self.configs[config])
        if split not in patterns:
            raise SkyRankError(f"{self.name}: config {config!r} has no split {split!r}; splits: {sorted(patterns)}")
        if self.repo_id is not None and config not in self._fetched:
            all_patterns = [p for ps in patterns.values() for p in ps]
            self.root = self._snapshot([README, *all_patterns])
            self._fetched.add(config)
        files = match_patterns(patterns[split], list_folder_files(self.root))
        if not files:
            raise SkyRankError(f"{self.name}: no file matches {patterns[split]} for {config}/{split}")
        return [self.root / f for f in files]

    def load(self, config: str, split: str, columns: list[str] | None = None) -> Any:
        """A ``datasets.Dataset`` of one (config, split), with the card's features (images decode as PIL)."""
        import datasets

        files = [str(p) for p in self.files_for(config, split)]
        features = None
        info = self.infos.get(config)
        if info and info.get("features"):
            features = datasets.Features._from_yaml_list(info["features"])
        ds = datasets.load_dataset(
            "parquet",
            data_files={split: files},
            split=split,
            features=features,
            cache_dir=str(self.cache_dir) if self.cache_dir else None,
        )
        if columns is not None:
            ds = ds.select_columns([c for c in columns if c in ds.column_names])
        return ds

    def config_columns(self, config: str) -> list[str]:
        info = self.infos.get(config)
        if info and info.get("features"):
            return [f["name"] for f in info["features"] if isinstance(f, dict) and "name" in f]
        import pyarrow.parquet as pq

        split = next(iter(config_split_patterns(self.configs[config])))
        return list(pq.read_schema(self.files_for(config, split)[0]).names)


# --------------------------------------------------------------------------------------------------- resolvers
class _TableImages:
    """id → image from ``gallery-*``/``queries-*`` configs that carry an ``image`` column (lazy per split)."""

    def __init__(self, source: _Source, configs: list[str], split: str) -> None:
        self.source = source
        self.configs = [c for c in configs if source.has_config(c)]
        self.split = split
        self._tables: list[tuple[str, str, Any, dict[str, int]]] | None = None

    def _index(self) -> list[tuple[str, str, Any, dict[str, int]]]:
        if self._tables is None:
            tables = []
            for config in self.configs:
                splits = list(config_split_patterns(self.source.configs[config]))
                ordered = [self.split] + [s for s in splits if s != self.split] if self.split in splits else splits
                for split in ordered:
                    ds = self.source.load(config, split)
                    ids = ds.select_columns(["image_id"])["image_id"]
                    tables.append((config, split, ds, {image_id: i for i, image_id in enumerate(ids)}))
            self._tables = tables
        return self._tables

    def where(self) -> str:
        return f"the configs {', '.join(self.configs)} of {self.source.name}"

    def get(self, image_id: str) -> Any:
        for _config, _split, ds, index in self._index():
            row = index.get(image_id)
            if row is not None:
                image = ds[row]["image"]
                if image is None:
                    break
                return image
        raise MissingImageError(f"image {image_id!r} not found in {self.where()}")


class _FileImages:
    """id → image read from ``images_root / path`` (the ``path`` column of the image tables, else the id)."""

    def __init__(self, root: Path, paths: dict[str, str] | None = None) -> None:
        self.root = root
        self.paths = paths or {}

    def get(self, image_id: str) -> Any:
        from PIL import Image

        rel = self.paths.get(image_id, image_id)
        path = self.root / rel
        if not path.is_file():
            raise MissingImageError(f"image {image_id!r} not found: looked for {path} (under images_root={self.root})")
        with Image.open(path) as im:
            im.load()
        return im


def _resolvers(
    source: _Source, config: str, split: str, images_root: str | os.PathLike[str] | None
) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    """(query id → image, gallery id → image) for a retriever config: files under ``images_root`` or the image
    configs' embedded bytes."""
    queries_cfg, gallery_cfg = image_configs_for(config)
    if images_root is not None:
        root = Path(images_root).expanduser()
        if not root.is_dir():
            raise MissingImageError(f"images_root {root} is not a folder")
        paths: dict[str, str] = {}
        for cfg in (queries_cfg, gallery_cfg):
            if source.has_config(cfg) and "path" in source.config_columns(cfg):
                for s in config_split_patterns(source.configs[cfg]):
                    table = source.load(cfg, s, columns=["image_id", "path"])
                    paths.update(zip(table["image_id"], table["path"], strict=True))
        files = _FileImages(root, paths)
        return files.get, files.get
    with_images = [c for c in (queries_cfg, gallery_cfg) if source.has_config(c)]
    with_images = [c for c in with_images if "image" in source.config_columns(c)]
    if not with_images:
        raise SkyRankError(
            f"{source.name}: {queries_cfg}/{gallery_cfg} carry no images (ids only); pass images_root=<your copy "
            f"of the {config_benchmark(config)} benchmark> to read the images from files"
        )
    queries = _TableImages(source, [queries_cfg, gallery_cfg], split)
    gallery = _TableImages(source, [gallery_cfg, queries_cfg], split)
    return queries.get, gallery.get


def load_skyrank(
    path_or_repo: str | os.PathLike[str],
    config: str,
    split: str = "test",
    *,
    images_root: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    with_retrieved_images: bool = False,
    with_positive_images: bool = False,
) -> Any:
    """A retriever config's rows with lazily resolved PIL images.

    Args:
        path_or_repo: a SkyRank dataset folder or a Hub dataset repo id (``alice/skyrank``).
        config: a retriever config, e.g. ``sample4geo-university1652-d2s``.
        split: ``train`` or ``test``.
        images_root: the benchmark root (e.g. ``/data/University-Release``); images are read from
            ``images_root / path``. When ``None``, images come from the dataset's ``gallery-*``/``queries-*``
            configs, which must then carry an ``image`` column.
        revision: Hub branch, tag or commit.
        cache_dir: where downloads and the Arrow cache go.
        token: Hub token (default: ``HF_TOKEN``); never printed.
        endpoint: Hub endpoint (default: ``huggingface_hub``'s).
        with_retrieved_images: also add ``retrieved_images`` (the raw top-m).
        with_positive_images: also add ``positive_images`` (every positive, ground truth first; satellite→drone
            has 54 per query).

    Returns:
        a ``datasets.Dataset`` with the config's columns plus ``query_image``, ``gt_image``, ``candidate_images``
        (and ``retrieved_images``, ``positive_images``); the images are decoded only when rows are read.
        :func:`iter_triples` iterates its rows as (query, positives, negatives) triples.

    Raises:
        MissingImageError: when a row is read and one of its images is missing (names the id and the place).
        SkyRankError: unknown config/split, a config that is not a retriever config, or no image source.
    """
    source = _Source(path_or_repo, revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint)
    ds = source.load(config, split)
    resolve_query, resolve_gallery = _resolvers(source, config, split, images_root)

    def transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out = dict(batch)
        out["query_image"] = [resolve_query(q) for q in batch["query_id"]]
        out["gt_image"] = [resolve_gallery(g) for g in batch["gt_id"]]
        out["candidate_images"] = [[resolve_gallery(c) for c in ids] for ids in batch["candidate_ids"]]
        if with_retrieved_images:
            out["retrieved_images"] = [[resolve_gallery(c) for c in ids] for ids in batch["retrieved_ids"]]
        if with_positive_images:
            out["positive_images"] = [[resolve_gallery(c) for c in ids] for ids in batch["positive_ids"]]
        return out

    return ds.with_transform(transform)


def iter_triples(rows: Any, *, max_negatives: int | None = None) -> Iterator[tuple[Any, list[Any], list[Any]]]:
    """Iterate :func:`load_skyrank` rows as sentence-transformers-style ``(query, positives, negatives)`` triples.

    ``positives``: every positive's image when the rows carry ``positive_images``, else ``[gt_image]``;
    ``negatives``: the m−1 hard negatives after the swap rule (Eq. 2), in retriever order, the first
    ``max_negatives`` of them when given (SkyLink's group G_z takes the top-(k−1), Eq. 3).
    """
    if max_negatives is not None and max_negatives < 0:
        raise ValueError(f"max_negatives must be >= 0, got {max_negatives}")
    for row in rows:
        positives = list(row["positive_images"]) if "positive_images" in row else [row["gt_image"]]
        negatives = list(row["candidate_images"])[:max_negatives]
        yield row["query_image"], positives, negatives


def load_triples(
    path_or_repo: str | os.PathLike[str],
    config: str,
    split: str = "train",
    *,
    max_negatives: int | None = None,
    images_root: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Any:
    """A retriever config as a sentence-transformers hard-negatives dataset: columns ``query``, ``positive`` (the
    ground truth) and ``negative_1`` … ``negative_n`` (the swap rule's negatives in retriever order; n = m−1, or
    ``max_negatives``), images resolved lazily as in :func:`load_skyrank`. The ``(anchor, positive, negative_1…)``
    layout is what sentence-transformers' ``MultipleNegativesRankingLoss`` (bi- and cross-encoders) trains on; ids
    stay in ``query_id``/``positive_id``/``negative_ids`` of :func:`load_skyrank`'s rows, not here.
    """
    import datasets

    source = _Source(path_or_repo, revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint)
    ds = source.load(config, split, columns=["query_id", "gt_id", "candidate_ids"])
    candidates = ds["candidate_ids"]
    n = min((len(c) for c in candidates), default=0)
    if max_negatives is not None:
        if max_negatives < 1:
            raise SkyRankError(f"max_negatives must be at least 1, got {max_negatives}")
        n = min(n, max_negatives)
    columns: dict[str, list[str]] = {"query": list(ds["query_id"]), "positive": list(ds["gt_id"])}
    for j in range(n):
        columns[f"negative_{j + 1}"] = [c[j] for c in candidates]
    ids = datasets.Dataset.from_dict(columns)
    resolve_query, resolve_gallery = _resolvers(source, config, split, images_root)

    def transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {
            name: [(resolve_query if name == "query" else resolve_gallery)(v) for v in values]
            for name, values in batch.items()
        }

    return ids.with_transform(transform)
