"""The manifest of a SkyRank folder (``skyrank_manifest.json``): one dataclass, one key for m, a format version.

The writer writes it last (a folder without it is an incomplete build); it holds the build parameters, ``m``
(candidates mined per query, Eq. 1-2 of SkyLink, arXiv 2603.08063), ``files`` (sha256 and size of every Parquet
file) and ``tables`` (one entry per config/split). A config re-mined with another m names it (``-m<m>``,
:meth:`Manifest.m_for`).

Format versions: **1**, written before issue 11, has no ``format_version`` and stores m twice (``top_m`` and
``m``); **2** stores ``m`` once; **3** (issue 20) adds ``evaluation_protocol`` (the evaluator whose rules score
the benchmark; absent in older folders: the benchmark's name) and ``explicit_positives``, and its tables may hold
the optional columns of :data:`skyrank.format.schema.OPTIONAL_COLUMNS` and the view ``ground``. Every version
reads (absent optional columns mean null / empty); a newer version than this code knows is refused with a clear
error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyrank.errors import ValidationError
from skyrank.format import schema

MANIFEST_NAME = schema.MANIFEST_NAME
#: The version this code writes.
FORMAT_VERSION = 3
#: Keys that are fields of :class:`Manifest`, not build parameters (``top_m``: version 1's second key for m).
_OWN_KEYS = ("format_version", "m", "top_m", "files", "tables")


@dataclass
class Manifest(Mapping[str, Any]):
    """A SkyRank manifest. Read-only mapping access (``manifest["tables"]``, ``manifest.get("benchmark")``) sees
    the version-2 document, so code written against the JSON keeps working on version-1 folders."""

    m: Any = None  # an int >= 2 in a valid folder (validate reports anything else)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # the build's other parameters (dataset, retriever, ...)
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str = MANIFEST_NAME) -> Manifest:
        """Read a manifest document of any known version (version 1: m from ``m``, else ``top_m``)."""
        version = doc.get("format_version", 1)
        if not isinstance(version, int) or version < 1:
            raise ValidationError(f"{source}: bad format_version {version!r}", [f"bad format_version {version!r}"])
        if version > FORMAT_VERSION:
            raise ValidationError(
                f"{source} has format version {version}; this SkyRank reads up to {FORMAT_VERSION}",
                [f"format version {version} is newer than this SkyRank ({FORMAT_VERSION}): upgrade skyrank"],
            )
        m = doc.get("m", doc.get("top_m"))
        files = doc.get("files") if isinstance(doc.get("files"), dict) else {}
        tables = [t for t in doc.get("tables") or [] if isinstance(t, dict)]
        params = {k: v for k, v in doc.items() if k not in _OWN_KEYS}
        return cls(m=m, files=dict(files), tables=tables, params=params, format_version=version)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (version-2 keys: one ``m``)."""
        return {**self.params, "format_version": self.format_version, "m": self.m, "files": self.files,
                "tables": self.tables}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"

    def m_for(self, config: str) -> Any:
        """The m of one config: its ``-m<m>`` suffix (a re-mined config) or the build's m."""
        return schema.config_top_m(config) or self.m

    @property
    def evaluation_protocol(self) -> str | None:
        """The evaluator whose rules score this folder (``skyrank.metrics``); older folders: the benchmark name."""
        return self.params.get("evaluation_protocol") or self.params.get("benchmark")

    def table(self, config: str, split: str) -> dict[str, Any] | None:
        """The ``tables`` entry of (config, split), or None."""
        return next((t for t in self.tables if t.get("config") == config and t.get("split") == split), None)

    # Mapping interface over to_dict().
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of a dataset folder; raises :class:`ValidationError` when it is missing or unreadable."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        if not (Path(folder) / "README.md").is_file() and not any(Path(folder).glob("*/*.parquet")):
            looks = (
                "it looks like a benchmark folder (images, no Parquet), "
                if any(Path(folder).rglob("*.jp*g")) or any(Path(folder).rglob("*.png"))
                else ""
            )
            raise ValidationError(
                f"{folder} is not a SkyRank dataset: {looks}there is no {MANIFEST_NAME}, README.md or Parquet file",
                hint="Pass the --out folder that `skyrank build` wrote (it holds skyrank_manifest.json).",
            )
        raise ValidationError(
            f"{folder} is an incomplete build: it has no {MANIFEST_NAME}",
            [f"incomplete build: {MANIFEST_NAME} is missing (re-run the build, with --overwrite if needed)"],
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValidationError(f"cannot read {path}", [f"{MANIFEST_NAME} is unreadable: {e}"]) from e
    if not isinstance(doc, dict):
        raise ValidationError(f"cannot read {path}", [f"{MANIFEST_NAME} is not a JSON object"])
    return Manifest.from_dict(doc, source=str(path))
