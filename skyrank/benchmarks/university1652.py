"""University-1652 reader (drone ↔ satellite; street and Google views are not used).

Layout of the released archive, rooted at ``University-Release`` (``layumi/University1652-Baseline``, README
"Dataset & Preparation"; the root name also appears in downstream configs, e.g. Sample4Geo issue #41)::

    University-Release/
      train/{drone,satellite,street,google}/<ID>/...
      test/{query_drone,gallery_drone,query_satellite,gallery_satellite,query_street,gallery_street,4K_drone}/<ID>/...

- IDs are 4-digit folder names ``0000``–``1651``; the label of an image is its folder name (``test.py:get_id``
  uses ``int(folder)``, never ``ImageFolder``'s class index). Positives share the label.
- Drone files are ``image-01.jpeg`` … ``image-54.jpeg`` (``0000`` has ``image-55.jpeg`` too); satellite files are
  ``<ID>/<ID>.jpg`` (``gallery_name.txt`` / ``query_name.txt`` in the baseline repo are real file listings).
- Test D2S: 37,855 drone queries (``test/query_drone``, 701 IDs) against 951 satellite images
  (``test/gallery_satellite``: the 701 query IDs plus 250 distractor IDs), one positive each.
  Test S2D: 701 satellite queries (``test/query_satellite``) against 51,355 drone images (``test/gallery_drone``,
  951 IDs), 54 positives each (55 for ``0000``).
- Train: ``train/drone`` (37,854 = 701×54) and ``train/satellite`` (701), the same 701 IDs; D2S queries the drone
  folder against the satellite folder, S2D the reverse.
- ``train/google`` has empty class folders for some buildings (README news, 2021-12-01): empty class folders are
  skipped and reported, never an error.

The gallery protocol (``official`` keeps the 250 distractors, ``query-ids-only`` drops them, as Sample4Geo's
``label=-1`` junk rule does) is applied with :func:`skyrank.benchmarks._base.apply_protocol`.

The folder scanner below (:func:`scan_view_folder`) is shared with the SUES-200 reader. It lists folders with
``os.scandir`` (no ``stat`` per file on Linux), never opens an image, ignores non-image and hidden files (counting
them), and sorts the records by ``image_id``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from skyrank.benchmarks._base import (
    IMAGE_SUFFIXES,
    Benchmark,
    ImageRecord,
    RetrievalSplit,
    apply_protocol,
    register_benchmark,
)
from skyrank.errors import BenchmarkLayoutError, OptionError

SPLITS: tuple[str, ...] = ("train", "test")
DIRECTIONS: tuple[str, ...] = ("d2s", "s2d")
PROTOCOLS: tuple[str, ...] = ("official", "query-ids-only")

#: the authors' BibTeX (layumi/University1652-Baseline README, Citation) plus the arXiv id
UNIVERSITY1652_CITATION = """\
@article{zheng2020university,
  title   = {University-1652: A Multi-view Multi-source Benchmark for Drone-based Geo-localization},
  author  = {Zheng, Zhedong and Wei, Yunchao and Yang, Yi},
  journal = {ACM Multimedia},
  year    = {2020},
  eprint  = {2002.12186},
  archivePrefix = {arXiv}
}"""


# ----------------------------------------------------------------------------------------------------------------
# shared helpers (also used by skyrank.benchmarks.sues200)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    """Images found under one view folder: records (sorted), skipped empty class folders, ignored file count."""

    records: list[ImageRecord] = field(default_factory=list)
    skipped_empty_folders: list[str] = field(default_factory=list)
    ignored_files: int = 0

    def extend(self, other: ScanResult) -> None:
        self.records.extend(other.records)
        self.skipped_empty_folders.extend(other.skipped_empty_folders)
        self.ignored_files += other.ignored_files


def make_split(
    benchmark: str,
    split: str,
    direction: str,
    protocol: str,
    root: Path,
    queries: ScanResult,
    gallery: ScanResult,
    altitude: str | None = None,
) -> RetrievalSplit:
    """The :class:`RetrievalSplit` of two scans: gallery protocol applied, skips and ignored files merged."""
    return RetrievalSplit(
        benchmark=benchmark,
        split=split,
        direction=direction,
        protocol=protocol,
        root=root,
        queries=queries.records,
        gallery=apply_protocol(queries.records, gallery.records, protocol),
        altitude=altitude,
        skipped_empty_folders=sorted(set(queries.skipped_empty_folders) | set(gallery.skipped_empty_folders)),
        ignored_files=queries.ignored_files + gallery.ignored_files,
    )


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _sorted_entries(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda e: e.name)


def scan_view_folder(
    root: Path,
    rel: str,
    view: str,
    *,
    ids: set[str] | frozenset[str] | None = None,
    sub: str = "",
) -> ScanResult:
    """Read the class folders of one view: ``<root>/<rel>/<ID>[/<sub>]/<image>``.

    Args:
        root: the benchmark root; every ``image_id`` is relative to it (POSIX).
        rel: the view folder, relative to ``root`` (``"test/query_drone"``).
        view: ``"drone"`` or ``"satellite"``, stored on every record.
        ids: keep only these class folders (``None``: all of them). IDs not on disk are not reported here.
        sub: a sub-folder inside each class folder that holds the images (SUES-200's raw ``<ID>/<altitude>``).

    Class folders with no image (or a missing ``sub``) are listed in ``skipped_empty_folders`` (relative paths).
    Files that are not images (suffix not in ``IMAGE_SUFFIXES``, or hidden like ``.DS_Store``), stray files next to
    the class folders and nested folders are counted in ``ignored_files``. Hidden folders are ignored silently.
    """
    out = ScanResult()
    for cls in _sorted_entries(root / rel):
        if cls.name.startswith("."):
            if not cls.is_dir():
                out.ignored_files += 1
            continue
        if not cls.is_dir():
            out.ignored_files += 1
            continue
        if ids is not None and cls.name not in ids:
            continue
        cls_rel = f"{rel}/{cls.name}/{sub}" if sub else f"{rel}/{cls.name}"
        folder = root / cls_rel
        if sub and not folder.is_dir():
            out.skipped_empty_folders.append(cls_rel)
            continue
        found = 0
        with os.scandir(folder) as it:
            for entry in it:
                # A dangling symbolic link with an image name is kept: decoding then reports it by name (or
                # --skip-bad-images lists it) instead of it vanishing from the benchmark without a word.
                if _is_image_name(entry.name) and (entry.is_file() or entry.is_symlink()):
                    out.records.append(ImageRecord(image_id=f"{cls_rel}/{entry.name}", label=cls.name, view=view))
                    found += 1
                else:
                    out.ignored_files += 1
        if not found:
            out.skipped_empty_folders.append(cls_rel)
    out.records.sort()
    out.skipped_empty_folders.sort()
    return out


def check_root(root: str | Path, display_name: str) -> Path:
    """``root`` as a ``Path``; raises :class:`BenchmarkLayoutError` when it does not exist or is not a folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise BenchmarkLayoutError(f"{display_name} root {path} does not exist")
    if not path.is_dir():
        raise BenchmarkLayoutError(f"{display_name} root {path} is not a folder")
    return path


def list_found(root: Path, expected: tuple[str, ...]) -> list[str]:
    """What is under ``root``: top-level names, expanded one level where an expected folder's parent exists."""
    parents = {e.split("/")[0] for e in expected if "/" in e}
    found: list[str] = []
    try:
        top = [e for e in _sorted_entries(root) if not e.name.startswith(".")]
    except OSError:
        return found
    for entry in top:
        if entry.name in parents and entry.is_dir():
            children = [c.name for c in _sorted_entries(root / entry.name) if not c.name.startswith(".")]
            found.extend(f"{entry.name}/{c}" for c in children)
            if not children:
                found.append(f"{entry.name}/ (empty folder)")
        else:
            found.append(entry.name)
    return found


def layout_error(root: Path, expected: tuple[str, ...], display_name: str, hint: str = "") -> BenchmarkLayoutError:
    """The error for a root without the ``expected`` folders: names what was expected and what was found."""
    found = list_found(root, expected)
    shown = ", ".join(found[:40]) + (f", ... ({len(found) - 40} more)" if len(found) > 40 else "")
    message = (
        f"not a {display_name} layout: expected {', '.join(expected)} under {root}; found: {shown or 'nothing'}"
    )
    nested = [
        child.name
        for child in _sorted_entries(root)
        if child.is_dir()
        and not child.name.startswith(".")
        and all((root / child.name / e).is_dir() for e in expected)
    ]
    if nested:
        message += f". Did you mean {root / nested[0]}?"
    if hint:
        message += f". {hint}"
    return BenchmarkLayoutError(message)


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else :class:`OptionError` (a ``ValueError``) naming them."""
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_split_options(
    display_name: str,
    root: str | Path,
    split: str,
    direction: str,
    protocol: str,
    altitude: str | int | None,
    *,
    directions: tuple[str, ...],
    splits: tuple[str, ...] = ("train", "test"),
    protocols: tuple[str, ...] = ("official",),
    altitude_note: str = "",
) -> Path:
    """The checks every load_split of a benchmark without altitudes starts with; the root as a ``Path``."""
    check_choice(split, "split", splits)
    check_choice(direction, "direction", directions)
    check_choice(protocol, "protocol", protocols)
    if altitude is not None:
        raise ValueError(f"{display_name} has no altitudes{altitude_note}; got altitude={altitude!r}")
    return check_root(root, display_name)


def no_images_error(rel: str, root: Path, scan: ScanResult) -> BenchmarkLayoutError:
    extra = f" ({len(scan.skipped_empty_folders)} empty class folders, {scan.ignored_files} non-image files)"
    return BenchmarkLayoutError(f"no images found under {root / rel}{extra}")


# ----------------------------------------------------------------------------------------------------------------
# the reader
# ----------------------------------------------------------------------------------------------------------------


@register_benchmark("university1652")
class University1652(Benchmark):
    """University-1652 (Zheng, Wei, Yang, ACM MM 2020): 1,652 buildings of 72 universities, drone and satellite views.

    ``root`` is the ``University-Release`` folder. ``load_split(root, "test", "d2s")`` reads
    ``test/query_drone`` (queries) and ``test/gallery_satellite`` (gallery); see the module docstring for every
    (split, direction). Subclasses that reuse the layout (the synthetic benchmark) override ``display_name`` and
    the licence/citation attributes.
    """

    display_name: str = "University-1652"
    root_example = ".../University-Release"
    license = "other"
    license_name = "university-1652-terms"
    license_link = "https://github.com/layumi/University1652-Baseline/blob/master/Request.md"
    redistributable = False
    citation = UNIVERSITY1652_CITATION
    altitudes = ()
    evaluation_protocol = "university1652"

    #: (split, direction) -> ((query folder, query view), (gallery folder, gallery view)), relative to the root
    folders: dict[tuple[str, str], tuple[tuple[str, str], tuple[str, str]]] = {
        ("test", "d2s"): (("test/query_drone", "drone"), ("test/gallery_satellite", "satellite")),
        ("test", "s2d"): (("test/query_satellite", "satellite"), ("test/gallery_drone", "drone")),
        ("train", "d2s"): (("train/drone", "drone"), ("train/satellite", "satellite")),
        ("train", "s2d"): (("train/satellite", "satellite"), ("train/drone", "drone")),
    }

    def load_split(
        self,
        root: str | Path,
        split: str,
        direction: str = "d2s",
        protocol: str = "official",
        altitude: str | int | None = None,
    ) -> RetrievalSplit:
        """Queries and gallery of one split and direction, gallery protocol applied, both sorted by ``image_id``.

        Raises:
            BenchmarkLayoutError: the root does not exist, lacks the two folders, or a folder holds no image.
            ValueError: unknown ``split``/``direction``/``protocol``, or an ``altitude`` (this benchmark has none).
        """
        path = check_split_options(self.display_name, root, split, direction, protocol, altitude,
                                   directions=self.directions, splits=SPLITS, protocols=PROTOCOLS)  # fmt: skip
        (q_rel, q_view), (g_rel, g_view) = self.folders[(split, direction)]
        expected = (q_rel, g_rel)
        if not all((path / rel).is_dir() for rel in expected):
            raise layout_error(path, expected, self.display_name)

        queries = scan_view_folder(path, q_rel, q_view)
        gallery = scan_view_folder(path, g_rel, g_view)
        for rel, scan in ((q_rel, queries), (g_rel, gallery)):
            if not scan.records:
                raise no_images_error(rel, path, scan)
        return make_split(self.name, split, direction, protocol, path, queries, gallery)
