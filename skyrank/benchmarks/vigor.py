"""VIGOR reader (ground panorama → satellite), same-area and cross-area (Zhu, Yang, Chen, CVPR 2021).

Two registered benchmarks, ``vigor_same`` and ``vigor_cross``, read one folder in either layout:

- Sample4Geo's (``sample4geo/dataset/vigor.py``): ``ground/<City>/<pano>`` and ``satellite/<City>/<tile>``;
- the original release (``Jeff-Zilence/VIGOR: data/DATASET.md``): ``<City>/panorama/<pano>`` and
  ``<City>/satellite/<tile>``;

with ``splits/<City>/`` beside them in both. Cities: Chicago, NewYork, SanFrancisco, Seattle.

- Panorama names are ``<panoid>,<lat>,<lon>,.jpg`` (fields 1 and 2 give the GPS); tiles are
  ``satellite_<lat>_<lon>.png``.
- ``splits/<City>/satellite_list.txt``: one tile name per line. A label line (``same_area_balanced_{train,test}.txt``,
  ``pano_label_balanced.txt``) has 13 whitespace-separated tokens: the panorama, then 4 × (tile, Δ1, Δ2); the first
  tile is the **positive**, the other three the **semi-positives** (``DATASET.md``); the Δ columns are ignored.
- Same-area: train and test panoramas of all four cities (``same_area_balanced_*.txt``) against the tiles of all four
  cities (90,618; test 52,605 queries). Cross-area: the whole ``pano_label_balanced.txt`` of NewYork and Seattle
  (train, 51,520) or Chicago and SanFrancisco (test, 53,694) against those cities' tiles (44,055 / 46,563). The
  gallery is never per city (Sample4Geo and VIGOR concatenate every city's ``satellite_list.txt``).

Records: a tile's label is ``<City>/<tile stem>`` (one label per tile); a panorama's label is its positive tile's
label, so R@K counts the positive only, as both evaluators do; the three semi-positive tiles are stored on the
query record (``semi_positives``) for the hit rate. Both carry their GPS from the file names. Only ``d2s`` (ground
query → satellite gallery) is read: it is the direction every VIGOR result reports.
"""

from __future__ import annotations

from pathlib import Path

from skyrank.benchmarks._base import Benchmark, ImageRecord, RetrievalSplit, register_benchmark
from skyrank.benchmarks._files import missing_error, missing_listed, require_paths
from skyrank.benchmarks.university1652 import check_split_options
from skyrank.errors import BenchmarkLayoutError

CITIES: tuple[str, ...] = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
#: area → split → cities whose panoramas are the queries and whose tiles are the gallery
AREA_CITIES: dict[str, dict[str, tuple[str, ...]]] = {
    "same": {"train": CITIES, "test": CITIES},
    "cross": {"train": ("NewYork", "Seattle"), "test": ("Chicago", "SanFrancisco")},
}
LABEL_TOKENS = 13

VIGOR_CITATION = """\
@inproceedings{zhu2021vigor,
  title     = {VIGOR: Cross-View Image Geo-localization beyond One-to-one Retrieval},
  author    = {Zhu, Sijie and Yang, Taojiannan and Chen, Chen},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {3640--3649},
  year      = {2021},
  eprint    = {2011.12172},
  archivePrefix = {arXiv}
}"""

EXPECTED_LAYOUT = (
    "splits/<City>/{satellite_list.txt, same_area_balanced_train.txt, same_area_balanced_test.txt, "
    "pano_label_balanced.txt} with ground/<City>/ and satellite/<City>/ (Sample4Geo) or <City>/panorama/ and "
    "<City>/satellite/ (original VIGOR), for City in " + ", ".join(CITIES)
)


def _label_file(area: str, split: str) -> str:
    return f"same_area_balanced_{split}.txt" if area == "same" else "pano_label_balanced.txt"


def pano_gps(name: str) -> tuple[float | None, float | None]:
    """(lat, lon) of a panorama name ``<panoid>,<lat>,<lon>,.jpg`` (fields 1 and 2), None where not a number."""
    parts = name.split(",")
    try:
        return float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        return None, None


def tile_gps(name: str) -> tuple[float | None, float | None]:
    """(lat, lon) of a tile name ``satellite_<lat>_<lon>.png``, None where not a number."""
    parts = name.rsplit(".", 1)[0].split("_")
    try:
        return float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        return None, None


class _Vigor(Benchmark):
    """VIGOR; ``root`` is the ``VIGOR`` folder (``splits/`` plus either image layout)."""

    area: str = "same"
    display_name = "VIGOR"
    root_example = ".../VIGOR (holding splits/<City>/ and ground/<City>/ + satellite/<City>/, or <City>/panorama/)"
    license = "other"
    license_name = "vigor-terms"
    license_link = "https://github.com/Jeff-Zilence/VIGOR"
    redistributable = False  # released on request for research use; no redistribution licence
    derived_data = False
    writes_optional_columns = True
    citation = VIGOR_CITATION
    evaluation_protocol = "vigor"
    directions = ("d2s",)
    card_notes = (
        "VIGOR, ground panorama → satellite tile (`d2s`). The gallery is every tile of the split's cities together, "
        "never per city (same-area: all four cities, 90,618 tiles; cross-area test: Chicago + SanFrancisco, 46,563). "
        "Each panorama has **one positive**, the first tile of its label line: `positive_ids` and R@K count it alone, "
        "as VIGOR's and Sample4Geo's evaluators do. `semi_positive_ids` holds the other three tiles of the line "
        "(semi-positives: they overlap the panorama's location). They are never positives: for SkyLink's training "
        "they stay ordinary candidates (negatives for the swap rule, Eq. 2) whose soft label is Eq. 7's, their "
        "retriever similarity to the positive tile when above T (overlapping the positive by half, they usually keep "
        "a partial label); the hit rate ignores them (no reference but a semi-positive may score above the "
        "positive). `latitude`/`longitude` come from the file names."
    )

    def image_folders(self, root: Path, city: str) -> tuple[str, str]:
        """(panorama folder, tile folder) of one city, relative to ``root``, in whichever layout ``root`` has."""
        if (root / "ground" / city).is_dir() and (root / "satellite" / city).is_dir():
            return f"ground/{city}", f"satellite/{city}"
        if (root / city / "panorama").is_dir() and (root / city / "satellite").is_dir():
            return f"{city}/panorama", f"{city}/satellite"
        raise BenchmarkLayoutError(
            f"not a {self.display_name} layout: neither ground/{city}/ + satellite/{city}/ (Sample4Geo) nor "
            f"{city}/panorama/ + {city}/satellite/ (original) under {root}. Expected layout: {EXPECTED_LAYOUT}"
        )

    def load_split(
        self,
        root: str | Path,
        split: str,
        direction: str = "d2s",
        protocol: str = "official",
        altitude: str | int | None = None,
    ) -> RetrievalSplit:
        """Queries (panoramas) and the gallery (every tile of the split's cities), sorted by ``image_id``."""
        path = check_split_options(self.display_name, root, split, direction, protocol, altitude,
                                   directions=self.directions)  # fmt: skip
        cities = AREA_CITIES[self.area][split]
        label_name = _label_file(self.area, split)
        require_paths(
            path, [f"splits/{c}/{n}" for c in cities for n in ("satellite_list.txt", label_name)],
            self.display_name, EXPECTED_LAYOUT,
        )
        gallery: list[ImageRecord] = []
        tile_ids: dict[str, str] = {}  # tile name -> image_id (tile names are unique: they carry the GPS)
        tile_labels: dict[str, str] = {}
        queries: list[ImageRecord] = []
        for city in cities:
            pano_rel, sat_rel = self.image_folders(path, city)
            for name in (path / "splits" / city / "satellite_list.txt").read_text().split():
                lat, lon = tile_gps(name)
                rec = ImageRecord(f"{sat_rel}/{name}", f"{city}/{name.rsplit('.', 1)[0]}", "satellite", lat, lon)
                gallery.append(rec)
                tile_ids[name] = rec.image_id
                tile_labels[name] = rec.label
            source = path / "splits" / city / label_name
            for lineno, line in enumerate(source.read_text().splitlines(), 1):
                tokens = line.split()
                if not tokens:
                    continue
                if len(tokens) != LABEL_TOKENS:
                    raise BenchmarkLayoutError(
                        f"{source}:{lineno} has {len(tokens)} tokens; a VIGOR label line has {LABEL_TOKENS} "
                        "(panorama, then 4 x (tile, delta, delta))"
                    )
                tiles = tokens[1::3]
                unknown = [t for t in tiles if t not in tile_ids]
                if unknown:
                    raise BenchmarkLayoutError(
                        f"{source}:{lineno} names tile {unknown[0]!r}, which no satellite_list.txt of "
                        f"{', '.join(cities)} lists"
                    )
                lat, lon = pano_gps(tokens[0])
                queries.append(ImageRecord(
                    f"{pano_rel}/{tokens[0]}", tile_labels[tiles[0]], "ground", lat, lon,
                    semi_positives=tuple(tile_ids[t] for t in tiles[1:]),
                ))  # fmt: skip
        missing = missing_listed(path, [r.image_id for r in (*gallery, *queries)])
        if missing:
            raise missing_error(path, missing, self.display_name, f"splits/<City>/ ({label_name}, satellite_list.txt)")
        queries.sort()
        gallery.sort()
        return RetrievalSplit(self.name, split, direction, protocol, path, queries, gallery)


@register_benchmark("vigor_same")
class VigorSameArea(_Vigor):
    """VIGOR same-area: train and test panoramas of all four cities against all 90,618 tiles."""

    area = "same"
    display_name = "VIGOR (same-area)"


@register_benchmark("vigor_cross")
class VigorCrossArea(_Vigor):
    """VIGOR cross-area: NewYork + Seattle for training, Chicago + SanFrancisco for testing."""

    area = "cross"
    display_name = "VIGOR (cross-area)"
