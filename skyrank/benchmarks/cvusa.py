"""CVUSA reader (ground panorama → aerial tile), the CVM-Net / SAFA "19zl" subset (Workman, Souvenir, Jacobs,
ICCV 2015; subset of Zhai et al., CVPR 2017).

Layout (Sample4Geo ``dataset/cvusa.py``, SAFA ``script/input_data_cvusa.py``), rooted at ``CVUSA``::

    CVUSA/
      splits/train-19zl.csv, splits/val-19zl.csv
      bingmap/19/<7-digit>.jpg            aerial tiles, 750x750
      streetview/panos/<7-digit>.jpg      ground panoramas, cropped to 1232x224 (W x H)
      streetview/annotations/<7-digit>.png  (segmentation; not read)

Each CSV line (no header) holds three dataset-relative paths: aerial, ground, segmentation. The id (and label) is
the aerial file's stem, as in Sample4Geo. Train: 35,532 pairs; test: ``val-19zl.csv``, 8,884 pairs, which every
paper reports as the test set. One-to-one: the tile with the same id is the only positive, and the gallery is every
tile of the split. Only ``d2s`` (ground query → aerial gallery) is read.
"""

from __future__ import annotations

from pathlib import Path

from skyrank.benchmarks._base import Benchmark, ImageRecord, RetrievalSplit, register_benchmark
from skyrank.benchmarks._files import missing_error, missing_listed, require_paths
from skyrank.benchmarks.university1652 import check_split_options
from skyrank.errors import BenchmarkLayoutError

SPLIT_FILES: dict[str, str] = {"train": "splits/train-19zl.csv", "test": "splits/val-19zl.csv"}

CVUSA_CITATION = """\
@inproceedings{workman2015cvusa,
  title     = {Wide-Area Image Geolocalization with Aerial Reference Imagery},
  author    = {Workman, Scott and Souvenir, Richard and Jacobs, Nathan},
  booktitle = {Proceedings of the IEEE International Conference on Computer Vision (ICCV)},
  pages     = {3961--3969},
  year      = {2015},
  eprint    = {1510.03743},
  archivePrefix = {arXiv}
}"""

EXPECTED_LAYOUT = (
    "splits/train-19zl.csv and splits/val-19zl.csv (lines: bingmap/19/<id>.jpg,streetview/panos/<id>.jpg,"
    "streetview/annotations/<id>.png) with the bingmap/ and streetview/panos/ images they name"
)


def read_split_csv(path: Path) -> list[tuple[str, str]]:
    """(aerial path, ground path) of each line of a ``*-19zl.csv`` (no header; the third column is not read)."""
    pairs = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) < 2 or not cols[0] or not cols[1]:
            raise BenchmarkLayoutError(
                f"{path}:{lineno} is not a CVUSA split line (aerial path,ground path,segmentation path): {line!r}"
            )
        pairs.append((cols[0], cols[1]))
    return pairs


@register_benchmark("cvusa")
class CVUSA(Benchmark):
    """CVUSA (19zl subset); ``root`` is the ``CVUSA`` folder."""

    display_name = "CVUSA"
    root_example = ".../CVUSA (holding splits/train-19zl.csv, bingmap/19/, streetview/panos/)"
    license = "other"
    license_name = "cvusa-terms"
    license_link = "https://mvrl.cse.wustl.edu/datasets/cvusa/"
    redistributable = False  # released on request for research use; no redistribution licence
    derived_data = False
    writes_optional_columns = True
    citation = CVUSA_CITATION
    evaluation_protocol = "cvusa"
    directions = ("d2s",)
    card_notes = (
        "CVUSA (19zl subset), ground panorama → aerial tile (`d2s`). Test is `splits/val-19zl.csv` (8,884 pairs), "
        "train `splits/train-19zl.csv` (35,532). One-to-one: the tile with the panorama's id is its only positive; "
        "the gallery is every tile of the split. `semi_positive_ids` is empty and `latitude`/`longitude` are null "
        "(the 19zl split files carry no position)."
    )

    def load_split(
        self,
        root: str | Path,
        split: str,
        direction: str = "d2s",
        protocol: str = "official",
        altitude: str | int | None = None,
    ) -> RetrievalSplit:
        """The split file's ground panoramas (queries) and aerial tiles (gallery), sorted by ``image_id``."""
        path = check_split_options(self.display_name, root, split, direction, protocol, altitude,
                                   directions=self.directions)  # fmt: skip
        require_paths(path, [SPLIT_FILES[split]], self.display_name, EXPECTED_LAYOUT)
        pairs = read_split_csv(path / SPLIT_FILES[split])
        queries, gallery = [], []
        for aerial, ground in pairs:
            label = Path(aerial).stem
            gallery.append(ImageRecord(aerial, label, "satellite"))
            queries.append(ImageRecord(ground, label, "ground"))
        missing = missing_listed(path, [r.image_id for r in (*gallery, *queries)])
        if missing:
            raise missing_error(path, missing, self.display_name, SPLIT_FILES[split])
        if len({g.image_id for g in gallery}) != len(gallery):
            raise BenchmarkLayoutError(f"{path / SPLIT_FILES[split]} lists an aerial tile twice")
        queries.sort()
        gallery.sort()
        return RetrievalSplit(self.name, split, direction, protocol, path, queries, gallery)
