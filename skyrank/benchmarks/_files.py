"""File helpers shared by the readers of benchmarks described by split files (VIGOR, CVUSA, CVACT) and by GPS
files (DenseUAV): required paths with one clear error, folder listings (one ``scandir`` per folder, never a
``stat`` per image) and the check that every listed image exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from skyrank.benchmarks.university1652 import check_root
from skyrank.errors import BenchmarkLayoutError

__all__ = ["check_root", "list_names", "missing_listed", "require_paths"]


def require_paths(root: Path, rels: Iterable[str], display_name: str, expected_layout: str) -> None:
    """Raise :class:`BenchmarkLayoutError` naming the first missing file or folder of ``rels`` (relative to
    ``root``; a trailing ``/`` means a folder) and the layout the reader expects."""
    for rel in rels:
        path = root / rel.rstrip("/")
        ok = path.is_dir() if rel.endswith("/") else path.is_file()
        if not ok:
            what = "folder" if rel.endswith("/") else "file"
            names = os.listdir(root) if root.is_dir() else []
            found = sorted(n for n in names if not n.startswith("."))[:20]
            raise BenchmarkLayoutError(
                f"not a {display_name} layout: the {what} {path} is missing (found under {root}: "
                f"{', '.join(found) or 'nothing'}). Expected layout: {expected_layout}"
            )


def list_names(folder: Path) -> set[str]:
    """The names of the entries of ``folder`` (files and links), one ``scandir``; empty when it does not exist."""
    try:
        with os.scandir(folder) as it:
            return {e.name for e in it if not e.is_dir()}
    except (FileNotFoundError, NotADirectoryError):
        return set()


def missing_listed(root: Path, rels: Iterable[str]) -> list[str]:
    """The relative paths of ``rels`` that are not on disk; every parent folder is listed once."""
    listings: dict[str, set[str]] = {}
    missing = []
    for rel in rels:
        parent, _, name = rel.rpartition("/")
        if parent not in listings:
            listings[parent] = list_names(root / parent)
        if name not in listings[parent]:
            missing.append(rel)
    return missing


def missing_error(root: Path, missing: list[str], display_name: str, source: str) -> BenchmarkLayoutError:
    """The error for images a split file lists that are not on disk."""
    shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
    return BenchmarkLayoutError(
        f"{len(missing)} image(s) listed in {source} are missing under {root} ({display_name}): {shown}"
    )
