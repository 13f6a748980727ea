"""DenseUAV reader (drone ↔ satellite, UAV self-positioning; Dai et al., IEEE TIP 2023).

Layout (``Dmmm1997/DenseUAV`` README, ``tool/dataset_preprocess/*.py``, ``test.py``), rooted at ``DenseUAV``::

    DenseUAV/
      Dense_GPS_ALL.txt               <path>/satellite/<id>/H80.tif E<lon> N<lat> <height>   (longitude first)
      train/drone/<id>/{H80,H90,H100}.JPG
      train/satellite/<id>/{H80,H90,H100}{,_old}.tif
      test/query_drone/<id>/H*.JPG, test/gallery_satellite/<id>/*.tif
      test/query_satellite/<id>/*.tif, test/gallery_drone/<id>/H*.JPG     (the reverse direction)

Class folders are 6-digit ids (train 000000-002255, test from 002256). The test gallery is deliberately the union
of train and test locations (3,033 x 6 = 18,198 tiles; ``3-generate_format_testset.py``), so each drone query (one
per height: 2,331 = 777 x 3) has 6 positives: the 3 height crops x {current, ``_old``} of its folder. Labels are the
folder names; every record carries its folder's GPS (the evaluator keys positions by folder) for SDM@K and MA@m.
"""

from __future__ import annotations

from pathlib import Path

from skyrank.benchmarks._base import Benchmark, ImageRecord, RetrievalSplit, register_benchmark
from skyrank.benchmarks._files import require_paths
from skyrank.benchmarks.university1652 import (
    ScanResult,
    check_split_options,
    layout_error,
    make_split,
    no_images_error,
    scan_view_folder,
)
from skyrank.errors import BenchmarkLayoutError

GPS_FILE = "Dense_GPS_ALL.txt"

DENSEUAV_CITATION = """\
@article{dai2023vision,
  title   = {Vision-Based UAV Self-Positioning in Low-Altitude Urban Environments},
  author  = {Dai, Ming and Zheng, Enhui and Feng, Zhenhua and Qi, Lei and Zhuang, Jiedong and Yang, Wankou},
  journal = {IEEE Transactions on Image Processing},
  volume  = {33},
  pages   = {493--508},
  year    = {2023},
  eprint  = {2201.09201},
  archivePrefix = {arXiv}
}"""

EXPECTED_LAYOUT = (
    "Dense_GPS_ALL.txt with train/{drone,satellite}/<id>/ and test/{query_drone,gallery_satellite,query_satellite,"
    "gallery_drone}/<id>/"
)


def read_gps(path: Path) -> dict[str, tuple[float, float]]:
    """Folder id → (lat, lon) from a DenseUAV GPS file: ``<path> E<lon> N<lat> <height>`` per line (column 2 is
    the longitude, column 3 the latitude, as ``evaluateDistance.py`` reads them); keyed by the path's folder."""
    out: dict[str, tuple[float, float]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        try:
            folder = cols[0].replace("\\", "/").split("/")[-2]
            lon = float(cols[1].removeprefix("E"))
            lat = float(cols[2].removeprefix("N"))
        except (IndexError, ValueError):
            raise BenchmarkLayoutError(
                f"{path}:{lineno} is not a DenseUAV GPS line (<path>/satellite/<id>/H80.tif E<lon> N<lat> <height>): "
                f"{line!r}"
            ) from None
        out[folder] = (lat, lon)
    return out


@register_benchmark("denseuav")
class DenseUAV(Benchmark):
    """DenseUAV; ``root`` is the ``DenseUAV`` folder."""

    display_name = "DenseUAV"
    root_example = ".../DenseUAV (holding Dense_GPS_ALL.txt, train/, test/)"
    license = "other"
    license_name = "denseuav-terms"
    license_link = "https://github.com/Dmmm1997/DenseUAV"
    redistributable = False  # academic use; no redistribution licence
    derived_data = False
    writes_optional_columns = True
    citation = DENSEUAV_CITATION
    evaluation_protocol = "denseuav"
    directions = ("d2s", "s2d")
    directions = ("d2s", "s2d")
    card_notes = (
        "DenseUAV, drone → satellite (`d2s`; `s2d` reads `query_satellite` against `gallery_drone`). The test "
        "gallery is every location, train and test (3,033 × 6 = 18,198 tiles), so each drone query (one per height: "
        "H80, H90, H100) has **6 positives**: the 3 height crops × {current, `_old`} of its folder. "
        "`latitude`/`longitude` are the folder's position from `Dense_GPS_ALL.txt` (`E<lon> N<lat>`: longitude "
        "first), which SDM@K and MA@m need. `semi_positive_ids` is empty."
    )

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
        """Queries and gallery of one split and direction, with each folder's GPS, sorted by ``image_id``."""
        path = check_split_options(self.display_name, root, split, direction, protocol, altitude,
                                   directions=self.directions, protocols=("official", "query-ids-only"),
                                   altitude_note=" (its heights are separate queries)")  # fmt: skip
        (q_rel, q_view), (g_rel, g_view) = self.folders[(split, direction)]
        if not all((path / rel).is_dir() for rel in (q_rel, g_rel)):
            raise layout_error(path, (q_rel, g_rel), self.display_name, f"Expected layout: {EXPECTED_LAYOUT}")
        require_paths(path, [GPS_FILE], self.display_name, EXPECTED_LAYOUT)
        gps = read_gps(path / GPS_FILE)
        scans = []
        for rel, view in ((q_rel, q_view), (g_rel, g_view)):
            scan = scan_view_folder(path, rel, view)
            if not scan.records:
                raise no_images_error(rel, path, scan)
            unknown = sorted({r.label for r in scan.records} - set(gps))
            if unknown:
                raise BenchmarkLayoutError(
                    f"{path / GPS_FILE} has no position for {len(unknown)} folder(s) of {rel}, e.g. {unknown[0]}"
                )
            scans.append(ScanResult(
                [ImageRecord(r.image_id, r.label, r.view, *gps[r.label]) for r in scan.records],
                scan.skipped_empty_folders, scan.ignored_files,
            ))  # fmt: skip
        return make_split(self.name, split, direction, protocol, path, scans[0], scans[1])
