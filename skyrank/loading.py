"""Load a SkyRank config (from a local folder or a Hub repo) with its images attached lazily.

``load_skyrank(path_or_repo, "sample4geo-university1652-d2s", split="test", images_root=...)`` returns the candidate
table as a ``datasets.Dataset`` whose rows also carry ``query_image``, ``gt_image`` and ``candidate_images`` (PIL
images, in ``candidate_ids`` order) and optionally ``retrieved_images``. Images are resolved only when a row is read
(``Dataset.with_transform``), from the ``gallery-*``/``queries-*`` configs of the same dataset when they carry
images (an id → row index built over their ``image_id`` column, the Tevatron pattern), or else from files under
``images_root`` (the user's own copy of the benchmark: University-1652 and SUES-200 images may not be
redistributed, so the public dataset holds ids only). A missing image raises :class:`MissingImageError` naming its
id and the place looked in.

This is the format's one reader: SkyLink's training and evaluation data (:mod:`skylink_model.data`) read rows and
images through :func:`load_retriever_split` and :class:`ImageResolver` (with its LRU cache) too. The helpers that
read the README YAML (``configs:`` / ``dataset_info:``) the way ``load_dataset`` does live here as well;
:mod:`skyrank.publish` and :mod:`skyrank.validate` use them.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from skyrank.errors import (
    BadImageError,
    BenchmarkLayoutError,
    CorruptShardError,
    OptionError,
    SkyRankError,
    UnknownNameError,
    storage_error,
)
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
            self.cache_dir = local_cache_dir(local, cache_dir)  # keyed by content, not by the folder's name
        else:
            if not _REPO_ID_RE.match(self.name):
                raise OptionError(
                    f"{self.name!r} is neither a folder nor a Hub dataset repo id (owner/name)",
                    hint="Pass --data the folder `skyrank build` wrote, or a Hub dataset repo id.",
                )
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
            from skyrank.hub import download_error

            named = download_error(
                err, repo_id=self.repo_id, repo_type="dataset", revision=self.revision, endpoint=self.endpoint,
                token=self.token or os.environ.get("HF_TOKEN") or None,
            )  # fmt: skip
            if named is not None:
                raise named from err
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
            available = ", ".join(sorted(self.configs))
            raise UnknownNameError(
                f"{self.name} has no config {config!r}; available: {available}",
                hint="Pass --config with one of the configs listed above.",
            )
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
        try:
            ds = datasets.load_dataset(
                "parquet",
                data_files={split: files},
                split=split,
                features=features,
                cache_dir=str(self.cache_dir) if self.cache_dir else None,
            )
        except Exception as err:  # a truncated or corrupt shard is named (datasets only logs it), not a bug
            self._raise_for_corrupt_shards(config, split, files, err)
            link: BaseException | None = err
            for _ in range(16):  # the Arrow cache on a full or read-only disk, somewhere in the chain
                if link is None:
                    break
                named = storage_error(link, path=self.cache_dir, what=f"the Arrow cache of {config}/{split}")
                if named is not None:
                    raise named from err
                link = link.__cause__ or link.__context__
            raise
        if columns is not None:
            ds = ds.select_columns([c for c in columns if c in ds.column_names])
        return ds

    def _raise_for_corrupt_shards(self, config: str, split: str, files: list[str], err: BaseException) -> None:
        """Raise :class:`CorruptShardError` naming every shard of ``files`` pyarrow cannot read (footer, schema
        or any row group); return when all read (``err`` is then something else)."""
        import pyarrow.parquet as pq

        bad: list[tuple[str, str]] = []
        for f in files:
            try:
                pf = pq.ParquetFile(f)
                for i in range(pf.num_row_groups):
                    pf.read_row_group(i)
            except Exception as e:  # noqa: BLE001 - any failure to read is the shard's
                bad.append((f, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
        if not bad:
            return
        names = [Path(f).relative_to(self.root).as_posix() if Path(f).is_relative_to(self.root) else f for f, _ in bad]
        lines = "; ".join(f"{n} ({why})" for n, (_, why) in zip(names, bad, strict=True))
        if self.repo_id is None:
            fix = (f"Run `skyrank validate {self.root}`, then rebuild the folder with `skyrank build` (or re-download "
                   f"it) to replace {', '.join(names)}.")
        else:
            fix = (f"Run `skyrank validate` on a download of {self.repo_id}; to re-download, delete "
                   f"{', '.join(f for f, _ in bad)} from the Hub cache and re-run.")
        raise CorruptShardError(
            f"{self.name}: {len(bad)} Parquet shard(s) of {config}/{split} are truncated or corrupt: {lines}",
            [f for f, _ in bad],
            hint=fix,
        ) from err

    def config_columns(self, config: str) -> list[str]:
        info = self.infos.get(config)
        if info and info.get("features"):
            return [f["name"] for f in info["features"] if isinstance(f, dict) and "name" in f]
        import pyarrow.parquet as pq

        split = next(iter(config_split_patterns(self.configs[config])))
        return list(pq.read_schema(self.files_for(config, split)[0]).names)


# --------------------------------------------------------------------------------------------------- resolvers
class ImageResolver:
    """Image id → RGB ``PIL.Image``.

    Sources, in order:

    1. ``tables``: the dataset's ``gallery-*``/``queries-*`` tables (``datasets.Dataset``). An id → row index is
       built from their ``image_id`` column; if a table has an ``image`` column the row's image is decoded on
       demand, otherwise its ``path`` column locates the file under ``images_root``.
    2. ``images_root / image_id`` (image ids are paths relative to the benchmark root).

    A small LRU cache keeps recently decoded images (gallery images recur across queries). A missing image raises
    :class:`MissingImageError` (a ``FileNotFoundError``) naming the id and every place looked at;
    an undecodable file raises :class:`~skyrank.errors.BadImageError`.
    """

    def __init__(
        self,
        tables: Iterable[Any] | Callable[[], Iterable[Any]] = (),
        images_root: str | Path | None = None,
        *,
        cache_size: int = 512,
    ) -> None:
        self.images_root = Path(images_root) if images_root is not None else None
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._with_images: list[Any] = []
        self._index: dict[str, tuple[int, int]] = {}  # id -> (table with images, row)
        self._paths: dict[str, str] = {}  # id -> path relative to images_root
        # A callable is called on the first lookup (a Hub repo's image configs download only when a row is read).
        self._pending: Callable[[], Iterable[Any]] | None = tables if callable(tables) else None
        if self._pending is None:
            self._add_tables(tables)  # type: ignore[arg-type]

    def _add_tables(self, tables: Iterable[Any]) -> None:
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

    def _ensure_tables(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._add_tables(pending())

    @property
    def has_embedded_images(self) -> bool:
        self._ensure_tables()
        return bool(self._with_images)

    def _load(self, image_id: str) -> Any:
        from skyrank.images import open_rgb, to_uint8_rgb  # the one decoder: high bit depths scaled, not clipped

        self._ensure_tables()
        looked: list[str] = []
        if image_id in self._index:
            t, row = self._index[image_id]
            image = self._with_images[t][row]["image"]
            if image is not None:
                return to_uint8_rgb(image)
            looked.append(f"the dataset's image column (row {row}, empty)")
        else:
            if self._with_images:
                looked.append("the dataset's image columns")
        if self.images_root is not None:
            rel = self._paths.get(image_id, image_id)
            path = self.images_root / rel
            looked.append(str(path))
            if path.is_file():
                try:  # a pixel budget, 16-bit images scaled
                    return open_rgb(path)
                except BadImageError as err:
                    message = f"Image {image_id!r} at {path} could not be decoded: {err}"
                    raise BadImageError(message, [str(path)]) from err
        else:
            looked.append("no images_root given")
        raise MissingImageError(
            f"Image {image_id!r} not found; looked in: {'; '.join(looked)}. Pass --images-root pointing at your "
            "benchmark copy, or use a dataset built with --with-images."
        )

    def __call__(self, image_id: str) -> Any:
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

    def many(self, image_ids: Iterable[str]) -> list[Any]:
        return [self(i) for i in image_ids]




def _image_resolver(
    source: _Source, config: str, split: str, images_root: str | os.PathLike[str] | None, *, cache_size: int = 512
) -> tuple[ImageResolver, list[str]]:
    """The one image source of a retriever config (``load_skyrank``, ``load_triples`` and SkyLink's data): files
    under ``images_root`` (the ``path`` column of the image configs, else the id), or else the image configs'
    embedded bytes, loaded on the first lookup (current split first). Returns it and the image configs present."""
    queries_cfg, gallery_cfg = image_configs_for(config)
    present = [c for c in (gallery_cfg, queries_cfg) if source.has_config(c)]
    if images_root is not None:
        root = Path(images_root).expanduser()
        if not root.is_dir():
            raise BenchmarkLayoutError(f"images_root (--images-root) {root} is not a folder")
        tables = [
            source.load(cfg, s, columns=["image_id", "path"])
            for cfg in present
            if "path" in source.config_columns(cfg)
            for s in config_split_patterns(source.configs[cfg])
        ]
        return ImageResolver(tables, root, cache_size=cache_size), present
    embedded = [c for c in present if "image" in source.config_columns(c)]
    if not embedded:
        raise BenchmarkLayoutError(
            f"{source.name}: {queries_cfg}/{gallery_cfg} {'carry no images (ids only)' if present else 'are absent'};"
            f" pass images_root=<your copy of the {config_benchmark(config)} benchmark> (--images-root) to read "
            "the images from files, or use a dataset built with --with-images"
        )

    def tables() -> list[Any]:
        out = []
        for cfg in embedded:
            splits = list(config_split_patterns(source.configs[cfg]))
            for s in [split] + [x for x in splits if x != split] if split in splits else splits:
                out.append(source.load(cfg, s))
        return out

    return ImageResolver(tables, None, cache_size=cache_size), present


def build_params(
    path_or_repo: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """The build parameters a SkyRank dataset's manifest records (``protocol``, ``m``, ``retriever``, ...), for a
    local folder or a Hub repo; ``{}`` when the dataset has no readable manifest (nothing is refused here)."""
    import json

    from skyrank.format.manifest import Manifest

    try:
        local = Path(path_or_repo).expanduser()
        if local.is_dir():
            path = local / MANIFEST  # a local folder: no card to parse
        else:
            source = _Source(path_or_repo, revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint)
            path = source._snapshot([MANIFEST]) / MANIFEST
        if not path.is_file():
            return {}
        manifest = Manifest.from_dict(json.loads(path.read_text()), source=str(path))
        return {**manifest.params, "m": manifest.m}
    except (SkyRankError, OSError, ValueError):
        return {}


def load_retriever_split(
    path_or_repo: str | os.PathLike[str],
    config: str,
    split: str,
    *,
    images_root: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_size: int = 512,
) -> tuple[Any, ImageResolver, list[str]]:
    """``(rows, images, image_configs)`` of one retriever config split: the rows as a ``datasets.Dataset`` with
    the schema's columns, the :class:`ImageResolver` of its images and the image configs the dataset holds.

    Raises :class:`~skyrank.errors.UnknownNameError` for an unknown config and
    :class:`~skyrank.errors.BenchmarkLayoutError` when the dataset carries no images and no ``images_root`` is given.
    """
    source = _Source(path_or_repo, revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint)
    rows = source.load(config, split)
    missing = [c for c in schema.RETRIEVER_COLUMNS if c not in rows.column_names]
    if missing:
        raise SkyRankError(f"{source.name}:{config}/{split} lacks the SkyRank columns {missing}")
    images, present = _image_resolver(source, config, split, images_root, cache_size=cache_size)
    return rows, images, present


def read_columns(
    path_or_repo: str | os.PathLike[str],
    config: str,
    split: str,
    columns: list[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Any:
    """Some columns of one (config, split) as a ``datasets.Dataset`` (the columns the config has)."""
    source = _Source(path_or_repo, revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint)
    return source.load(config, split, columns=columns)


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
    images, _ = _image_resolver(source, config, split, images_root)
    resolve_query = resolve_gallery = images

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
    images, _ = _image_resolver(source, config, split, images_root)
    resolve_query = resolve_gallery = images

    def transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {
            name: [(resolve_query if name == "query" else resolve_gallery)(v) for v in values]
            for name, values in batch.items()
        }

    return ids.with_transform(transform)
