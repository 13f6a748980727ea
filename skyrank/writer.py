"""Sharded, deterministic, atomic Parquet writing of a SkyRank dataset folder (+ card and manifest).

Layout written (the layout ``Dataset.push_to_hub`` uses, so the folder uploads as is)::

    <out>/
      README.md                                   the dataset card (YAML ``configs:`` + ``dataset_info:``)
      skyrank_manifest.json                       build parameters + sha256/bytes of every Parquet file (written last)
      <config>/<split>-00000-of-0000N.parquet     N shards per (config, split)

How it stays safe and reproducible:

* **Atomic.** Everything is written into a hidden sibling folder ``.<name>.partial`` (a stale one from an interrupted
  run is removed first); each file goes to ``*.tmp`` and is ``os.replace``d; :meth:`DatasetWriter.finalize` writes the
  manifest last, fsyncs, and renames the staging folder into place. A folder without ``skyrank_manifest.json`` is an
  incomplete build by definition, and an incomplete build never sits at the final path.
* **Deterministic.** Rows are sorted (stable) by the table's id column, shard and row-group boundaries depend only
  on the data, and nothing time- or randomness-dependent is written, so the same inputs give byte-identical files.
* **Hub-friendly.** Tables are cast with ``Features.arrow_schema`` (its ``huggingface`` metadata carries
  ``info.features``, which ``datasets`` reads back, so an ``image`` column loads as ``Image()``); Parquet is written
  with content-defined chunking and a page index like ``datasets``' own writer; the image column is stored
  uncompressed, without dictionary, PLAIN-encoded, so identical image bytes stay identical for Xet deduplication.
  Shards are at most 500 MB and row groups at most 100 MB (estimated from bytes).
* **Bounded memory.** Image bytes are read from ``images_root / row["path"]`` one row group at a time, copied
  unchanged (never decoded or re-encoded).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import Features, Image

from skyrank import hub_limits
from skyrank.atomic import check_free_space, fsync_dir, fsync_file, remove_path, swap_in_dir, write_text_atomic
from skyrank.errors import BadImageError, OutputError, OutputExistsError, SkyRankError, ValidationError, storage_error
from skyrank.format import schema
from skyrank.format.manifest import FORMAT_VERSION, Manifest
from skyrank.format.manifest import read_manifest as read_manifest  # re-exported: the manifest lives there

MAX_SHARD_BYTES = 500 * 10**6  # datasets.config.MAX_SHARD_SIZE ("500MB")
MAX_ROW_GROUP_BYTES = 100 * 10**6  # datasets.config.MAX_ROW_GROUP_SIZE ("100MB")
#: Content-defined chunking options (the values ``datasets`` uses: 256 KiB .. 1 MiB, norm level 0).
CDC_OPTIONS = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}
MANIFEST_NAME = schema.MANIFEST_NAME
CARD_NAME = "README.md"
_HASH_CHUNK = 1 << 20


@dataclass
class TableInfo:
    """What :meth:`DatasetWriter.add_table` wrote for one (config, split).

    ``num_bytes`` is the uncompressed Arrow size (``dataset_info.splits[].num_bytes``); ``file_bytes`` the total size
    of the Parquet files (``download_size``); ``files`` are POSIX paths relative to the dataset folder.
    """

    config: str
    split: str
    num_rows: int
    num_bytes: int
    files: list[str]
    features: Features
    file_bytes: int = 0
    num_row_groups: int = 0

    def to_json(self) -> dict[str, Any]:
        """The manifest entry of this table (features as their ``datasets`` dict form)."""
        return {
            "config": self.config,
            "split": self.split,
            "num_rows": self.num_rows,
            "num_bytes": self.num_bytes,
            "file_bytes": self.file_bytes,
            "num_row_groups": self.num_row_groups,
            "files": list(self.files),
            "features": self.features.to_dict(),
        }


@dataclass
class _Plan:
    """Shards of one table: each shard is a list of row groups, each row group a (start, stop) row range."""

    shards: list[list[tuple[int, int]]] = field(default_factory=list)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _image_columns(features: Features) -> list[str]:
    return [name for name, feat in features.items() if isinstance(feat, Image)]


def _leaf_paths(name: str, typ: pa.DataType) -> list[str]:
    """Parquet leaf column paths of an Arrow field (``col``, ``col.a``, ``col.list.element``)."""
    if pa.types.is_struct(typ):
        out: list[str] = []
        for i in range(typ.num_fields):
            child = typ.field(i)
            out.extend(_leaf_paths(f"{name}.{child.name}", child.type))
        return out
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return _leaf_paths(f"{name}.list.element", typ.value_type)
    return [name]


def parquet_column_options(arrow_schema: pa.Schema, media_columns: Sequence[str]) -> dict[str, Any]:
    """Per-leaf ``compression`` / ``use_dictionary`` / ``column_encoding`` for :class:`pyarrow.parquet.ParquetWriter`.

    Media columns (image bytes) are stored uncompressed, without dictionary, PLAIN-encoded; everything else is
    snappy-compressed with dictionary encoding.
    """
    compression: dict[str, str] = {}
    use_dictionary: list[str] = []
    column_encoding: dict[str, str] = {}
    for fld in arrow_schema:
        media = fld.name in media_columns
        for leaf in _leaf_paths(fld.name, fld.type):
            if media:
                compression[leaf] = "NONE"
                column_encoding[leaf] = "PLAIN"
            else:
                compression[leaf] = "SNAPPY"
                use_dictionary.append(leaf)
    return {"compression": compression, "use_dictionary": use_dictionary, "column_encoding": column_encoding or None}


def _partition(sizes: Sequence[int], budget: int, start: int = 0) -> list[tuple[int, int]]:
    """Greedy contiguous groups of ``sizes`` with a total of at most ``budget`` each (at least one row per group)."""
    groups: list[tuple[int, int]] = []
    lo, acc = start, 0
    for i, s in enumerate(sizes, start=start):
        if i > lo and acc + s > budget:
            groups.append((lo, i))
            lo, acc = i, 0
        acc += s
    if lo < start + len(sizes) or not groups:
        groups.append((lo, start + len(sizes)))
    return groups


class DatasetWriter:
    """Writes a SkyRank dataset folder atomically (see the module docstring).

    Use as a context manager::

        with DatasetWriter(out, overwrite=False) as w:
            info = w.add_table("gallery-synthetic", "test", rows, schema.IMAGE_TABLE_FEATURES)
            ...
            final = w.finalize(card_text, build_params)

    Leaving the ``with`` block by an exception (or without :meth:`finalize`) removes the staging folder; the final
    path is never touched.

    Args:
        out: the dataset folder to create.
        overwrite: replace an existing SkyRank dataset folder at ``out`` (only once the new one is complete).
        max_shard_bytes: shard size budget (estimated uncompressed bytes), 500 MB like ``push_to_hub``.
        max_row_group_bytes: row-group size budget, 100 MB like ``datasets``' Parquet writer.
        content_defined_chunking: write Parquet pages at content-defined boundaries (Xet-friendly re-uploads).
    """

    def __init__(
        self,
        out: str | Path,
        *,
        overwrite: bool = False,
        max_shard_bytes: int = MAX_SHARD_BYTES,
        max_row_group_bytes: int = MAX_ROW_GROUP_BYTES,
        content_defined_chunking: bool = True,
    ) -> None:
        if max_shard_bytes <= 0 or max_row_group_bytes <= 0:
            raise ValueError("max_shard_bytes and max_row_group_bytes must be positive")
        self.out = Path(out).absolute()
        self.overwrite = overwrite
        self.max_shard_bytes = int(max_shard_bytes)
        self.max_row_group_bytes = int(max_row_group_bytes)
        self.content_defined_chunking = content_defined_chunking
        self.check_output(self.out, overwrite)
        self.staging = self.out.parent / f".{self.out.name}.partial"
        self.tables: list[TableInfo] = []
        self._done = False
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.staging.exists() or self.staging.is_symlink():
            # A stale staging folder of an interrupted earlier run: start clean.
            remove_path(self.staging)
        self.staging.mkdir()

    # -- context manager -------------------------------------------------------------------------------------------
    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.abort()

    def abort(self) -> None:
        """Remove the staging folder (the final path is left as it was)."""
        if self.staging.exists():
            remove_path(self.staging)
        self._done = True


    @staticmethod
    def check_output(out: Path, overwrite: bool) -> None:
        """Raise :class:`OutputExistsError` unless ``out`` may be written (absent, or a SkyRank folder and
        ``overwrite``). ``build`` calls it before any work, the writer again before it renames into place."""
        DatasetWriter._check_writable(out)
        if not (out.exists() or out.is_symlink()):
            return
        if not overwrite:
            raise OutputExistsError(
                f"output folder {out} already exists and --overwrite was not given",
                hint="Pass --overwrite to replace it (once the new dataset is complete), or choose another --out.",
            )
        if not out.is_dir():
            raise OutputExistsError(
                f"output {out} exists and is not a folder; refusing to replace it even with --overwrite",
                hint="Choose another --out, or move that file away yourself.",
            )
        if any(out.iterdir()) and not (out / MANIFEST_NAME).is_file():
            raise OutputExistsError(
                f"output folder {out} is not empty and is not a SkyRank dataset (no {MANIFEST_NAME}); refusing to "
                "delete it even with --overwrite",
                hint="Choose another --out, or remove that folder yourself if you are sure.",
            )

    @staticmethod
    def _check_writable(out: Path) -> None:
        """Raise :class:`OutputError` unless a file can be created beside ``out`` (where the staging folder goes):
        a real probe, so read-only file systems, permissions and files in the way are all caught before any work."""
        parent = Path(os.path.abspath(out)).parent
        existing = parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise OutputError(
                f"cannot write --out {out}: {existing} is a file, not a folder", hint="Choose another --out."
            )
        try:
            fd, probe = tempfile.mkstemp(prefix=".skyrank-write-probe-", dir=existing)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OutputError(
                f"cannot write --out {out}: {existing} is not writable ({e.strerror or e})",
                hint="Choose an --out in a folder you can write to.",
            ) from e

    # -- tables ----------------------------------------------------------------------------------------------------
    def add_table(
        self,
        config: str,
        split: str,
        rows: list[dict] | pa.Table,
        features: Features,
        *,
        images_root: str | Path | None = None,
    ) -> TableInfo:
        """Write one (config, split) as ``<config>/<split>-0000i-of-0000N.parquet`` shards.

        Rows are sorted by the id column (``image_id`` or ``query_id``) and cast to ``features.arrow_schema``. When
        ``features`` has an ``Image()`` column that ``rows`` lack, it is filled with ``{"bytes": <file bytes>,
        "path": <file name>}`` read from ``images_root / row["path"]``, one row group at a time.
        """
        if self._done:
            raise SkyRankError("this DatasetWriter is finalized or aborted; create a new one")
        if not config or "/" in config or config.startswith(".") or config in (".", ".."):
            raise ValueError(f"invalid config name {config!r}")
        if not hub_limits.SPLIT_NAME_RE.match(split):
            pattern = hub_limits.SPLIT_NAME_RE.pattern
            raise ValueError(f"invalid split name {split!r}: split names must match {pattern} (no '-')")
        if any(t.config == config and t.split == split for t in self.tables):
            raise ValueError(f"table {config}/{split} was already added")

        id_col = schema.id_column(features)
        image_cols = _image_columns(features)
        arrow_schema = features.arrow_schema
        given = set(rows.column_names) if isinstance(rows, pa.Table) else (set(rows[0]) if rows else set(features))
        fill_images = [c for c in image_cols if c not in given]
        if fill_images and images_root is None:
            raise ValueError(
                f"features of {config}/{split} have image column(s) {fill_images} that the rows lack: pass images_root"
            )
        base_cols = [c for c in features if c not in fill_images]
        base_schema = pa.schema([arrow_schema.field(c) for c in base_cols])

        table = self._to_table(rows, base_schema, f"{config}/{split}")
        if table.num_rows:
            table = table.take(pc.sort_indices(table, sort_keys=[(id_col, "ascending")]))

        # Per-row size estimates: the average Arrow row size of the given columns + the image file sizes.
        n = table.num_rows
        base_row = table.nbytes / n if n else 0.0
        sizes = [int(base_row) + 1] * n
        paths: list[str] = []
        if fill_images:
            if "path" not in table.column_names:
                raise ValueError(f"{config}/{split}: filling image columns needs a 'path' column")
            root = Path(images_root)  # type: ignore[arg-type]
            paths = table.column("path").to_pylist()
            missing = []
            for i, p in enumerate(paths):
                try:
                    sizes[i] += (root / p).stat().st_size * len(fill_images)
                except (OSError, TypeError):
                    missing.append(str(p))
            if missing:
                raise BadImageError(
                    f"{len(missing)} image file(s) of {config}/{split} not found under {root}: "
                    + ", ".join(missing[:5])
                    + (" ..." if len(missing) > 5 else ""),
                    paths=missing,
                )

        plan = _Plan()
        for lo, hi in _partition(sizes, self.max_shard_bytes):
            plan.shards.append(_partition(sizes[lo:hi], self.max_row_group_bytes, start=lo))

        what = f"the Parquet shards of {config}/{split} in --out {self.out}"
        check_free_space(self.staging, sum(sizes), what)  # before the work: the estimate is the Arrow size
        try:
            return self._write_shards(config, split, table, features, plan, n, paths, fill_images, images_root)
        except OSError as exc:  # a full disk (the estimate was low, or another writer), a permission changed
            named = storage_error(exc, path=self.staging / config, what=what, needed=sum(sizes))
            if named is None:
                raise
            raise named from exc

    def _write_shards(
        self, config: str, split: str, table: pa.Table, features: Features, plan: _Plan, n: int, paths: list[str],
        fill_images: list[str], images_root: str | Path | None,
    ) -> TableInfo:  # fmt: skip
        arrow_schema = features.arrow_schema
        image_cols = _image_columns(features)
        (self.staging / config).mkdir(exist_ok=True)
        options = parquet_column_options(arrow_schema, image_cols)
        files: list[str] = []
        num_bytes = file_bytes = num_row_groups = 0
        nshards = len(plan.shards)
        for k, groups in enumerate(plan.shards):
            rel = f"{config}/{split}-{k:05d}-of-{nshards:05d}.parquet"
            path = self.staging / rel
            tmp = path.with_name(path.name + ".tmp")
            writer = pq.ParquetWriter(
                tmp,
                arrow_schema,
                write_page_index=True,
                use_content_defined_chunking=dict(CDC_OPTIONS) if self.content_defined_chunking else False,
                **options,
            )
            try:
                for lo, hi in groups:
                    chunk = table.slice(lo, hi - lo)
                    for col in fill_images:
                        chunk = chunk.append_column(
                            arrow_schema.field(col), self._read_images(Path(images_root), paths[lo:hi])  # type: ignore[arg-type]
                        )
                    chunk = chunk.select(list(features)).cast(arrow_schema)
                    writer.write_table(chunk, row_group_size=max(1, chunk.num_rows))
                    num_bytes += chunk.nbytes
                    num_row_groups += 1
                if self.content_defined_chunking:
                    cdc = json.dumps(CDC_OPTIONS, sort_keys=True)
                    writer.add_key_value_metadata({"content_defined_chunking": cdc})
            finally:
                writer.close()
            fsync_file(tmp)
            os.replace(tmp, path)
            file_bytes += path.stat().st_size
            files.append(rel)
        fsync_dir(self.staging / config)

        info = TableInfo(config, split, n, num_bytes, files, features, file_bytes, num_row_groups)
        self.tables.append(info)
        return info

    @staticmethod
    def _to_table(rows: list[dict] | pa.Table, base_schema: pa.Schema, what: str) -> pa.Table:
        names = base_schema.names
        if isinstance(rows, pa.Table):
            missing = [c for c in names if c not in rows.column_names]
            if missing:
                raise ValueError(f"{what}: table lacks column(s) {missing}")
            try:
                return rows.select(names).cast(base_schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                raise ValueError(f"{what}: cannot cast the table to the declared schema: {e}") from e
        want = set(names)
        for i, row in enumerate(rows):
            if not want.issubset(row):
                raise ValueError(f"{what}: row {i} lacks column(s) {sorted(want - set(row))}")
        columns = []
        for fld in base_schema:
            values = [_plain(row[fld.name]) for row in rows]
            try:
                columns.append(pa.array(values, type=fld.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
                raise ValueError(f"{what}: column {fld.name!r} does not fit {fld.type}: {e}") from e
        return pa.Table.from_arrays(columns, schema=base_schema)

    @staticmethod
    def _read_images(root: Path, paths: Sequence[str]) -> pa.Array:
        data = []
        for p in paths:
            with open(root / p, "rb") as f:
                data.append(f.read())
        names = [Path(p).name for p in paths]
        return pa.StructArray.from_arrays(
            [pa.array(data, type=pa.binary()), pa.array(names, type=pa.string())], names=["bytes", "path"]
        )

    # -- finalize --------------------------------------------------------------------------------------------------
    def finalize(self, card_text: str, manifest: dict[str, Any]) -> Path:
        """Write README.md and the manifest, then rename the staging folder into place; returns the final path.

        The manifest (:class:`skyrank.format.manifest.Manifest`, current format version) is ``manifest`` (the
        build parameters, m under ``m``; a version-1 ``top_m`` is read as m) plus ``files: {relpath: {sha256,
        bytes}}`` for every Parquet file and ``tables: [...]`` (one :meth:`TableInfo.to_json` per table). It is
        written last.
        """
        if self._done:
            raise SkyRankError("this DatasetWriter is already finalized or aborted")
        if not self.tables:
            raise SkyRankError("no table was added: nothing to finalize")
        write_text_atomic(self.staging / CARD_NAME, card_text, fsync=True)
        files = {}
        for t in self.tables:
            for rel in t.files:
                p = self.staging / rel
                files[rel] = {"sha256": sha256_of(p), "bytes": p.stat().st_size}
        doc = Manifest.from_dict({k: v for k, v in manifest.items() if k != "format_version"})
        doc.files = files
        doc.tables = [t.to_json() for t in self.tables]
        doc.format_version = FORMAT_VERSION
        write_text_atomic(self.staging / MANIFEST_NAME, doc.to_json(), fsync=True)
        fsync_dir(self.staging)

        if self.out.exists() or self.out.is_symlink():
            # Re-check: the output may have appeared while we were writing.
            self.check_output(self.out, self.overwrite)
        swap_in_dir(self.staging, self.out)
        self._done = True
        return self.out


def _plain(value: Any) -> Any:
    """Numpy arrays/scalars → Python values pyarrow converts unambiguously."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def verify_checksums(folder: str | Path) -> list[str]:
    """Problems with the Parquet files of a dataset folder: missing, changed (size/sha256) or not in the manifest."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except ValidationError as e:
        return list(e.problems)
    problems: list[str] = []
    listed = manifest.get("files") or {}
    for rel, entry in sorted(listed.items()):
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel}: listed in {MANIFEST_NAME} but missing")
            continue
        size = p.stat().st_size
        if size != entry.get("bytes"):
            problems.append(f"{rel}: {size} bytes, manifest says {entry.get('bytes')}")
        elif sha256_of(p) != entry.get("sha256"):
            problems.append(f"{rel}: sha256 does not match the manifest (file changed or corrupt)")
    for p in sorted(folder.rglob("*.parquet")):
        rel = p.relative_to(folder).as_posix()
        if rel not in listed and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            problems.append(f"{rel}: Parquet file not listed in {MANIFEST_NAME}")
    return problems
