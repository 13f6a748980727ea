"""Writers of the ground-level and DenseUAV on-disk layouts (VIGOR, CVUSA, CVACT, DenseUAV, University-1652
street), from counts and an image source.

One writer per layout lays out the names, split files, ``ACT_data.mat`` and GPS file exactly as the real benchmark
has them (``../shared/notes/benchmarks-more.md``); the pixels come from ``put(rel_path, role, location, variant)``:

- ``skyrank synth --layout vigor|cvusa|cvact|denseuav|u1652-street`` passes a renderer of the procedural world
  (:mod:`skyrank.benchmarks.synthetic.ground`), so tiles and ground views of one location show one scene;
- ``benchmarks/full_count_trees.py`` passes :func:`placeholder_source` (every file a hard link to one tiny image)
  with the full counts below, to check that each reader gives exactly the published counts.

``role`` is ``"tile"``, ``"pano"`` (a 2:1 ground panorama), ``"street"`` (a perspective ground photo) or
``"drone"``; ``location`` is a global location index (one scene), ``variant`` the image's index within it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

#: ``put(rel_path, role, location, variant)`` writes one image file under the tree's root
Put = Callable[[str, str, int, int], None]

#: VIGOR per city: (tiles in satellite_list.txt, same-area train panoramas, same-area test panoramas). Tiles and
#: test counts from the note (SliceMatch's split files); train = pano_label_balanced − test.
VIGOR_FULL: dict[str, tuple[int, int, int]] = {
    "Chicago": (22_308, 12_740, 12_739),
    "NewYork": (23_279, 13_885, 13_884),
    "SanFrancisco": (24_255, 14_108, 14_107),
    "Seattle": (20_776, 11_876, 11_875),
}
CVUSA_FULL: dict[str, int] = {"train": 35_532, "test": 8_884}
#: CVACT: trainSet, valSet (ANU_data_small), valSetAll (ANU_data_test; it contains the val ids)
CVACT_FULL: dict[str, int] = {"train": 35_532, "val": 8_884, "test": 92_802}
#: DenseUAV: training and test locations (ids 000000-002255 and 002256-003032)
DENSEUAV_FULL: dict[str, int] = {"train": 2_256, "test": 777}
#: University-1652 street: test IDs with street queries, query images, gallery-only (distractor) IDs. The note gives
#: no train/street count; the tree writes ``train_per_id`` photos for each of ``train`` IDs.
U1652_STREET_FULL: dict[str, int] = {
    "train": 701, "train_per_id": 16, "test": 701, "queries": 2_579, "distractors": 250,
}

#: the semi-positives' offsets in 640-px tile pixels (half a tile: VIGOR's tiles overlap by half)
_SEMI_DELTAS: tuple[str, ...] = ("320.0000 0.0000", "0.0000 320.0000", "320.0000 320.0000")
DENSEUAV_HEIGHTS: tuple[str, ...] = ("H100", "H80", "H90")
_CITY_ORIGIN: dict[str, tuple[float, float]] = {
    "Chicago": (41.85, -87.65), "NewYork": (40.70, -74.00), "SanFrancisco": (37.75, -122.45),
    "Seattle": (47.60, -122.33),
}


_MAX_LINKS = 60_000


def placeholder_source(root: Path) -> Put:
    """A ``put`` that hard-links every file to one tiny image per suffix (no pixels decoded by any reader; a full
    VIGOR tree then costs inodes, not blocks)."""
    from PIL import Image

    templates: dict[str, Path] = {}
    links: dict[str, int] = {}
    made: set[Path] = set()
    root.parent.mkdir(parents=True, exist_ok=True)

    def put(rel: str, role: str, location: int, variant: int) -> None:
        suffix = os.path.splitext(rel)[1].lower()
        links[suffix] = links.get(suffix, 0) + 1
        if links[suffix] % _MAX_LINKS == 1:  # a new template before the file system's link limit (ext4: 65,000)
            tmpl = root.parent / f".{root.name}.template.{links[suffix] // _MAX_LINKS}{suffix}"
            fmt = {".png": "PNG", ".tif": "TIFF"}.get(suffix, "JPEG")
            Image.new("RGB", (8, 8), (90, 120, 60)).save(tmpl, format=fmt)
            templates[suffix] = tmpl
        path = root / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        os.link(templates[suffix], path)

    return put


def remove_templates(root: Path) -> None:
    """Remove the template files :func:`placeholder_source` wrote beside ``root``."""
    for p in root.parent.glob(f".{root.name}.template.*"):
        p.unlink()


# --------------------------------------------------------------------------------------------------- VIGOR


def vigor_tile_name(city: str, t: int) -> str:
    """``satellite_<lat>_<lon>.png`` of tile ``t`` of a city: a 100-column grid of tiles about 36 m apart."""
    lat0, lon0 = _CITY_ORIGIN.get(city, (40.0, -80.0))
    return f"satellite_{lat0 + (t // 100) * 3.3e-4:.8f}_{lon0 + (t % 100) * 4.4e-4:.8f}.png"


def write_vigor(root: Path, counts: Mapping[str, tuple[int, int, int]], put: Put, layout: str = "sample4geo") -> None:
    """VIGOR: ``splits/<City>/{satellite_list.txt, same_area_balanced_{train,test}.txt, pano_label_balanced.txt}``
    and the images in Sample4Geo's (``ground/<City>``, ``satellite/<City>``) or the original
    (``<City>/panorama``, ``<City>/satellite``) layout.

    Panorama ``p`` of a city (train first, then test) has the positive tile ``p mod tiles`` (so each tile is the
    positive of at most 2 panoramas when panoramas ≤ 2 × tiles, as in the "balanced" files) and the next three
    tiles of the grid as semi-positives; its name carries a GPS a few metres from the positive tile's.
    """
    if layout not in ("sample4geo", "original"):
        raise ValueError(f"VIGOR layout must be 'sample4geo' or 'original', got {layout!r}")
    first = 0  # the global location index of the city's tile 0
    for ci, (city, (n_tiles, n_train, n_test)) in enumerate(counts.items()):
        if n_tiles < 4:
            raise ValueError(f"VIGOR needs at least 4 tiles per city (1 positive + 3 semi-positives), got {n_tiles}")
        pano_dir, sat_dir = (f"ground/{city}", f"satellite/{city}") if layout == "sample4geo" else (
            f"{city}/panorama", f"{city}/satellite")
        tiles = [vigor_tile_name(city, t) for t in range(n_tiles)]
        splits = root / "splits" / city
        splits.mkdir(parents=True, exist_ok=True)
        (splits / "satellite_list.txt").write_text("".join(f"{t}\n" for t in tiles))
        lines: dict[str, list[str]] = {"train": [], "test": []}
        for p in range(n_train + n_test):
            t = p % n_tiles
            lat, lon = (float(x) for x in tiles[t][len("satellite_"):-4].split("_"))
            d = ((p * 7) % 11 - 5) * 2e-5
            pano = f"{ci}pano{p:09d}x,{lat + d:.8f},{lon - d:.8f},.jpg"
            group = [tiles[(t + k) % n_tiles] for k in range(4)]
            deltas = [f"{(p % 9) - 4:.4f} {(p % 5) - 2:.4f}", *_SEMI_DELTAS]
            lines["train" if p < n_train else "test"].append(
                " ".join([pano] + [f"{g} {dl}" for g, dl in zip(group, deltas, strict=True)]))
            put(f"{pano_dir}/{pano}", "pano", first + t, p)
        for s in ("train", "test"):
            (splits / f"same_area_balanced_{s}.txt").write_text("".join(f"{x}\n" for x in lines[s]))
        (splits / "pano_label_balanced.txt").write_text("".join(f"{x}\n" for x in lines["train"] + lines["test"]))
        for t, name in enumerate(tiles):
            put(f"{sat_dir}/{name}", "tile", first + t, 0)
        first += n_tiles


# --------------------------------------------------------------------------------------------------- CVUSA


def write_cvusa(root: Path, counts: Mapping[str, int], put: Put) -> None:
    """CVUSA: ``splits/{train,val}-19zl.csv`` (aerial, ground, segmentation paths; no header), ``bingmap/19/<id>.jpg``
    and ``streetview/panos/<id>.jpg`` (7-digit ids; the annotations the CSV names are not written: no reader opens
    them)."""
    (root / "splits").mkdir(parents=True, exist_ok=True)
    i = 0
    for split, csv in (("train", "train-19zl.csv"), ("test", "val-19zl.csv")):
        rows = []
        for _ in range(counts[split]):
            i += 1
            name = f"{i:07d}"
            rows.append(f"bingmap/19/{name}.jpg,streetview/panos/{name}.jpg,streetview/annotations/{name}.png\n")
            put(f"bingmap/19/{name}.jpg", "tile", i, 0)
            put(f"streetview/panos/{name}.jpg", "pano", i, 0)
        (root / "splits" / csv).write_text("".join(rows))


# --------------------------------------------------------------------------------------------------- CVACT


def write_cvact(root: Path, counts: Mapping[str, int], put: Put, near_every: int = 0) -> None:
    """CVACT: ``ACT_data.mat`` (``panoIds`` cell array, ``utm`` N×2, ``trainSet.trainInd``, ``valSet.valInd``,
    ``valSetAll.valInd``; 1-based indices) and ``ANU_data_small`` (train, val) / ``ANU_data_test`` (test = the val
    ids + ``test - val`` more) images.

    Positions lie on a 20 m grid; with ``near_every = k`` every k-th test id after the first is placed 3 m from the
    previous one, so the 5 m rule gives it two positives.
    """
    from scipy.io import savemat

    n_train, n_val, n_test = counts["train"], counts["val"], counts["test"]
    if n_test < n_val:
        raise ValueError("CVACT test (valSetAll) contains the val ids: test >= val")
    n = n_train + n_test
    ids = [f"pano{i:07d}_{'AbCd'[i % 4]}" for i in range(n)]
    utm = np.stack([600_000 + (np.arange(n) % 300) * 20.0, 6_090_000 + (np.arange(n) // 300) * 20.0], axis=1)
    test_idx = np.arange(n_train, n)
    if near_every:
        for j in range(1, n_test, near_every):
            utm[test_idx[j]] = utm[test_idx[j - 1]] + [3.0, 0.0]
    train_idx = np.arange(n_train)
    val_idx = np.arange(n_train, n_train + n_val)
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "ACT_data.mat", {
        "panoIds": np.array(ids, dtype=object).reshape(-1, 1),
        "utm": utm,
        "trainSet": {"trainInd": (train_idx + 1).reshape(-1, 1).astype(np.float64)},
        "valSet": {"valInd": (val_idx + 1).reshape(-1, 1).astype(np.float64)},
        "valSetAll": {"valInd": (test_idx + 1).reshape(-1, 1).astype(np.float64)},
    })  # fmt: skip
    for folder, idx in (("ANU_data_small", np.concatenate([train_idx, val_idx])), ("ANU_data_test", test_idx)):
        for i in idx.tolist():
            put(f"{folder}/streetview/{ids[i]}_grdView.jpg", "pano", i, 0)
            put(f"{folder}/satview_polish/{ids[i]}_satView_polish.jpg", "tile", i, 0)


# --------------------------------------------------------------------------------------------------- DenseUAV


def denseuav_gps(index: int) -> tuple[float, float]:
    """(lat, lon) of DenseUAV location ``index``: a 50-column grid about 20 m apart."""
    return 30.32 + (index // 50) * 1.8e-4, 120.35 + (index % 50) * 2.1e-4


def write_denseuav(root: Path, counts: Mapping[str, int], put: Put) -> None:
    """DenseUAV: ``Dense_GPS_{ALL,train,test}.txt`` (``<path> E<lon> N<lat> <height>``), ``train/{drone,satellite}``,
    ``test/{query_drone,query_satellite}`` (test ids) and ``test/{gallery_satellite,gallery_drone}`` (every id)."""
    n_train, n_test = counts["train"], counts["test"]
    gps_lines: dict[str, list[str]] = {"train": [], "test": []}
    for i in range(n_train + n_test):
        cls = f"{i:06d}"
        split = "train" if i < n_train else "test"
        lat, lon = denseuav_gps(i)
        gps_lines[split].append(f"/data/DenseUAV/{split}/satellite/{cls}/H80.tif E{lon:.8f} N{lat:.8f} 80.0\n")
        drone = [f"{h}.JPG" for h in DENSEUAV_HEIGHTS]
        sat = [f"{h}{old}.tif" for h in DENSEUAV_HEIGHTS for old in ("", "_old")]
        folders = [("train/drone", drone, "drone"), ("train/satellite", sat, "tile")] if split == "train" else [
            ("test/query_drone", drone, "drone"), ("test/query_satellite", sat, "tile")]
        folders += [("test/gallery_drone", drone, "drone"), ("test/gallery_satellite", sat, "tile")]
        for rel, names, role in folders:
            for k, name in enumerate(names):
                put(f"{rel}/{cls}/{name}", role, i, k)
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dense_GPS_train.txt").write_text("".join(gps_lines["train"]))
    (root / "Dense_GPS_test.txt").write_text("".join(gps_lines["test"]))
    (root / "Dense_GPS_ALL.txt").write_text("".join(gps_lines["train"] + gps_lines["test"]))


# --------------------------------------------------------------------------------------------------- U1652 street


def write_u1652_street(root: Path, counts: Mapping[str, int], put: Put) -> None:
    """University-1652's street views: ``train/{street,satellite}/<ID>``, ``test/query_street/<ID>/<k>.jpg`` (the
    ``queries`` spread over the ``test`` IDs, 3 or 4 each at the full counts), ``test/query_satellite/<ID>`` and
    ``test/gallery_satellite/<ID>/<ID>.jpg`` (test + distractor IDs)."""
    n_train, n_test, n_q, n_d = counts["train"], counts["test"], counts["queries"], counts["distractors"]
    per, extra = divmod(n_q, n_test)
    for i in range(n_train):
        cls = f"{i:04d}"
        put(f"train/satellite/{cls}/{cls}.jpg", "tile", i, 0)
        for k in range(counts["train_per_id"]):
            put(f"train/street/{cls}/{k}.jpg", "street", i, k)
    for j in range(n_test + n_d):
        i = n_train + j
        cls = f"{i:04d}"
        put(f"test/gallery_satellite/{cls}/{cls}.jpg", "tile", i, 0)
        if j < n_test:
            put(f"test/query_satellite/{cls}/{cls}.jpg", "tile", i, 0)
            for k in range(per + (j < extra)):
                put(f"test/query_street/{cls}/{k}.jpg", "street", i, k)


#: layout name → (writer, full counts, the benchmark root relative to the tree, registered benchmarks that read it)
TREES: dict[str, tuple[Callable[..., None], Mapping[str, object], str, tuple[str, ...]]] = {
    "vigor": (write_vigor, VIGOR_FULL, "VIGOR", ("vigor_same", "vigor_cross")),
    "cvusa": (write_cvusa, CVUSA_FULL, "CVUSA", ("cvusa",)),
    "cvact": (write_cvact, CVACT_FULL, "CVACT", ("cvact", "cvact_test", "cvact_test_1to1")),
    "denseuav": (write_denseuav, DENSEUAV_FULL, "DenseUAV", ("denseuav",)),
    "u1652-street": (write_u1652_street, U1652_STREET_FULL, "University-Release", ("university1652_street",)),
}
