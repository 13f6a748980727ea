"""SUES-200 reader: drone ↔ satellite per flight altitude (150, 200, 250, 300 m), 120 train / 80 test locations.

Facts, with their source (``Reza-Zhu/SUES-200-Benchmark``, snapshot 0f8616bc12):

- **Raw archive** ``SUES-200-512x512/`` (default ``--path`` of ``script/split_datasets.py``)::

      satellite-view/<ID>/0.png                 (script/rename_satellite.py renames every satellite image to 0.png)
      drone_view_512/<ID>/<altitude>/<k>.jpg    (script/cut_frames.py writes <k>.jpg, k = 0, 1, ...; 50 per altitude)

  ``split_datasets.py`` takes the drone folder to be the top-level folder whose name contains ``drone`` and reads
  ``<drone folder>/<ID>/<altitude>``; IDs are ``0001``–``0200`` (``"{:0>4d}".format(i + 1)`` for 200 IDs).
- **Split.** ``script/indexs.yaml`` (``index : ['0001', ...]``) lists the 120 training IDs; the other 80 IDs are
  test (``settings.yaml``: ``classes : 120``). ``split_datasets.py`` then writes, per altitude,
  ``Training/<alt>/{drone,satellite}/<ID>`` for the 120 train IDs, ``Testing/<alt>/{query_drone,query_satellite}/<ID>``
  for the 80 test IDs and ``Testing/<alt>/{gallery_drone,gallery_satellite}/<ID>`` for **all 200** IDs (the
  README then moves ``Training`` and ``Testing`` into a ``Dataset`` folder). The official test gallery therefore
  holds the 120 train locations as distractors; Sample4Geo-derived code drops them (``query-ids-only``).
- **Lowercase variant** ``train/<alt>/...``, ``test/<alt>/...`` with the same inner names (MCCG README,
  ``mode-str/crossview``).

Three layouts are accepted and detected from the root's folder names (exact, case-sensitive):

1. ``split``: ``Training/<alt>`` / ``Testing/<alt>``;
2. ``lower``: ``train/<alt>`` / ``test/<alt>``;
3. ``raw``: ``satellite-view`` plus a ``*drone*`` folder. The train IDs come from ``<root>/indexs.yaml`` when it
   exists (same format as the official file, parsed as YAML), else from the official list embedded below
   (:data:`OFFICIAL_TRAIN_IDS`, a fact copied from ``script/indexs.yaml``). Test IDs are every other ID on disk;
   the test gallery holds every ID on disk, as in the official split.

When a root holds both the raw archive and the split folders (``split_datasets.py`` writes ``Training``/``Testing``
inside the raw folder), the split folders win; pass ``layout="raw"`` to read the archive instead.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from skyrank.benchmarks._base import Benchmark, RetrievalSplit, register_benchmark
from skyrank.benchmarks.university1652 import (
    DIRECTIONS,
    PROTOCOLS,
    SPLITS,
    ScanResult,
    check_choice,
    check_root,
    layout_error,
    make_split,
    no_images_error,
    scan_view_folder,
)
from skyrank.errors import BenchmarkLayoutError

ALTITUDES: tuple[str, ...] = ("150", "200", "250", "300")
LAYOUTS: tuple[str, ...] = ("auto", "split", "lower", "raw")

#: The 120 training location IDs of the official split (``Reza-Zhu/SUES-200-Benchmark`` ``script/indexs.yaml``).
OFFICIAL_TRAIN_IDS: tuple[str, ...] = tuple(
    f"{i:04d}"
    for i in (
        1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 13, 15, 16, 20, 21, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 36, 37, 39,
        43, 44, 45, 51, 55, 56, 57, 58, 60, 64, 66, 67, 69, 70, 73, 74, 76, 77, 80, 81, 82, 84, 85, 86, 87, 88, 89,
        90, 91, 94, 96, 97, 100, 101, 102, 103, 104, 105, 106, 113, 116, 118, 119, 120, 123, 125, 126, 127, 129,
        132, 134, 137, 139, 141, 142, 145, 146, 147, 148, 149, 151, 152, 155, 156, 157, 158, 159, 160, 163, 166,
        167, 168, 169, 171, 174, 179, 180, 182, 183, 184, 185, 186, 187, 191, 192, 193, 196, 197, 198, 199, 200,
    )
)

#: the authors' BibTeX (Reza-Zhu/SUES-200-Benchmark README, Citation), empty fields dropped, plus arXiv
SUES200_CITATION = """\
@article{zhu2023sues,
  title   = {SUES-200: A Multi-height Multi-scene Cross-view Image Benchmark Across Drone and Satellite},
  author  = {Zhu, Runzhe and Yin, Ling and Yang, Mingze and Wu, Fei and Yang, Yuncheng and Hu, Wenbo},
  journal = {IEEE Transactions on Circuits and Systems for Video Technology},
  year    = {2023},
  doi     = {10.1109/TCSVT.2023.3249204},
  eprint  = {2204.10704},
  archivePrefix = {arXiv}
}"""

#: inner folder names of the split layouts: (split, direction) -> ((query folder, view), (gallery folder, view))
_SPLIT_FOLDERS: dict[tuple[str, str], tuple[tuple[str, str], tuple[str, str]]] = {
    ("test", "d2s"): (("query_drone", "drone"), ("gallery_satellite", "satellite")),
    ("test", "s2d"): (("query_satellite", "satellite"), ("gallery_drone", "drone")),
    ("train", "d2s"): (("drone", "drone"), ("satellite", "satellite")),
    ("train", "s2d"): (("satellite", "satellite"), ("drone", "drone")),
}
_TOP = {"split": {"train": "Training", "test": "Testing"}, "lower": {"train": "train", "test": "test"}}
_SATELLITE_RAW = "satellite-view"
_DRONE_RAW = "drone_view_512"


def normalize_altitude(altitude: str | int | None) -> str:
    """``150``/``"150"``/``"150m"`` -> ``"150"``; raises ``ValueError`` listing the valid altitudes otherwise."""
    valid = ", ".join(ALTITUDES)
    if altitude is None:
        raise ValueError(f"SUES-200 is read one altitude at a time: pass altitude= one of {valid}")
    text = str(altitude).strip().lower().removesuffix("m")
    if text not in ALTITUDES:
        raise ValueError(f"unknown SUES-200 altitude {altitude!r}; choose one of {valid}")
    return text


def read_index_file(path: str | Path) -> list[str]:
    """The training IDs of an ``indexs.yaml`` file (``index : ['0001', ...]``), as 4-digit strings."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BenchmarkLayoutError(f"cannot read the SUES-200 split file {path}: {exc}") from exc
    ids = data.get("index") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not ids:
        raise BenchmarkLayoutError(
            f"{path} is not a SUES-200 split file: expected a non-empty list under the key 'index', "
            "as in Reza-Zhu/SUES-200-Benchmark script/indexs.yaml"
        )
    # unquoted YAML numbers (index : [1, 2]) come back as int; the official file quotes them
    return sorted({f"{i:04d}" if isinstance(i, int) else str(i) for i in ids})


def _dir_names(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_drone_folder(root: Path) -> str | None:
    """The raw archive's drone folder: ``drone_view_512``, else the only top-level folder whose name has ``drone``."""
    names = _dir_names(root)
    if _DRONE_RAW in names:
        return _DRONE_RAW
    candidates = [n for n in names if "drone" in n.lower()]
    return candidates[0] if len(candidates) == 1 else None


@register_benchmark("sues200")
class SUES200(Benchmark):
    """SUES-200 (Zhu et al., arXiv 2204.10704): 200 locations, drone views at four altitudes, one satellite each.

    ``load_split(root, "test", "d2s", altitude=150)`` reads one altitude; see the module docstring for the three
    layouts. ``root`` is the folder holding ``Training``/``Testing`` (or ``train``/``test``), or the raw
    ``SUES-200-512x512`` folder.
    """

    display_name: str = "SUES-200"
    root_example = ".../SUES-200-512x512, or the folder holding its Training/Testing split"
    license = "other"
    license_name = "sues-200-terms"
    license_link = "https://github.com/Reza-Zhu/SUES-200-Benchmark"
    redistributable = False
    citation = SUES200_CITATION
    altitudes = ALTITUDES
    evaluation_protocol = "sues200"

    def detect_layout(self, root: str | Path, split: str = "test") -> str:
        """``"split"``, ``"lower"`` or ``"raw"``: the first whose folders for ``split`` exist under ``root``."""
        path = check_root(root, self.display_name)
        names = set(_dir_names(path))
        for layout in ("split", "lower"):
            if _TOP[layout][split] in names:
                return layout
        if _SATELLITE_RAW in names and find_drone_folder(path) is not None:
            return "raw"
        expected = (
            f"{_TOP['split'][split]}/<altitude>",
            f"{_TOP['lower'][split]}/<altitude>",
            f"{_SATELLITE_RAW} + {_DRONE_RAW}",
        )
        hint = "Any one of these three layouts (split, lowercase, raw archive) will do"
        raise layout_error(path, expected, self.display_name, hint=hint)

    def load_split(
        self,
        root: str | Path,
        split: str,
        direction: str = "d2s",
        protocol: str = "official",
        altitude: str | int | None = None,
        *,
        layout: str = "auto",
    ) -> RetrievalSplit:
        """Queries and gallery of one split, direction and altitude, gallery protocol applied, sorted by ``image_id``.

        Args:
            altitude: required; one of ``SUES200.altitudes`` (``"150"`` … ``"300"``, ints accepted).
            layout: ``"auto"`` (detect), ``"split"``, ``"lower"`` or ``"raw"``.

        Raises:
            BenchmarkLayoutError: the root does not exist, lacks the expected folders, a folder holds no image, or
                the split file lists IDs that are not on disk.
            ValueError: unknown ``split``/``direction``/``protocol``/``layout``, or a missing or unknown altitude.
        """
        check_choice(split, "split", SPLITS)
        check_choice(direction, "direction", DIRECTIONS)
        check_choice(protocol, "protocol", PROTOCOLS)
        check_choice(layout, "layout", LAYOUTS)
        alt = normalize_altitude(altitude)
        path = check_root(root, self.display_name)
        if layout == "auto":
            layout = self.detect_layout(path, split)
        if layout == "raw":
            queries, gallery = self._read_raw(path, split, direction, alt)
        else:
            queries, gallery = self._read_split(path, split, direction, alt, layout)
        return make_split(self.name, split, direction, protocol, path, queries, gallery, altitude=alt)

    # -- the split layouts: Training/<alt>/..., Testing/<alt>/... (or train/, test/) -------------------------------

    def _read_split(
        self, root: Path, split: str, direction: str, alt: str, layout: str
    ) -> tuple[ScanResult, ScanResult]:
        base = f"{_TOP[layout][split]}/{alt}"
        (q_name, q_view), (g_name, g_view) = _SPLIT_FOLDERS[(split, direction)]
        q_rel, g_rel = f"{base}/{q_name}", f"{base}/{g_name}"
        if not all((root / rel).is_dir() for rel in (q_rel, g_rel)):
            raise layout_error(root, (q_rel, g_rel), self.display_name)
        queries = scan_view_folder(root, q_rel, q_view)
        gallery = scan_view_folder(root, g_rel, g_view)
        for rel, scan in ((q_rel, queries), (g_rel, gallery)):
            if not scan.records:
                raise no_images_error(rel, root, scan)
        return queries, gallery

    # -- the raw archive: satellite-view/<ID>/0.png, drone_view_512/<ID>/<alt>/<k>.jpg -----------------------------

    def train_ids(self, root: str | Path) -> tuple[list[str], str]:
        """The raw archive's training IDs and their source: ``<root>/indexs.yaml``, else the official list."""
        index_file = Path(root) / "indexs.yaml"
        if index_file.is_file():
            return read_index_file(index_file), str(index_file)
        return list(OFFICIAL_TRAIN_IDS), "the official list (Reza-Zhu/SUES-200-Benchmark script/indexs.yaml)"

    def _read_raw(self, root: Path, split: str, direction: str, alt: str) -> tuple[ScanResult, ScanResult]:
        drone = find_drone_folder(root)
        if drone is None or not (root / _SATELLITE_RAW).is_dir():
            raise layout_error(root, (_SATELLITE_RAW, _DRONE_RAW), self.display_name)
        on_disk = set(_dir_names(root / _SATELLITE_RAW)) | set(_dir_names(root / drone))
        train, source = self.train_ids(root)
        missing = sorted(set(train) - on_disk)
        if missing:
            shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise BenchmarkLayoutError(
                f"{len(missing)} training IDs from {source} are not under {root / _SATELLITE_RAW} or "
                f"{root / drone}: {shown}. Put an indexs.yaml listing your training IDs in {root}"
            )
        test = on_disk - set(train)
        if split == "train":
            query_ids = gallery_ids = frozenset(train)
        else:
            query_ids, gallery_ids = frozenset(test), frozenset(on_disk)

        def read(view: str, ids: frozenset[str]) -> ScanResult:
            if view == "satellite":
                return scan_view_folder(root, _SATELLITE_RAW, "satellite", ids=ids)
            return scan_view_folder(root, drone, "drone", ids=ids, sub=alt)

        q_view, g_view = ("drone", "satellite") if direction == "d2s" else ("satellite", "drone")
        queries, gallery = read(q_view, query_ids), read(g_view, gallery_ids)
        for view, scan in ((q_view, queries), (g_view, gallery)):
            if not scan.records:
                rel = _SATELLITE_RAW if view == "satellite" else f"{drone}/<ID>/{alt}"
                raise no_images_error(rel, root, scan)
        return queries, gallery
