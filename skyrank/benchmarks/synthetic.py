"""The procedural synthetic cross-view benchmark: a generator and its reader (``get_benchmark("synthetic")``).

:func:`generate_synthetic` draws procedural satellite scenes with numpy and PIL only (no download, no licensed
image) and writes them, with drone renderings of them, as real image files in the on-disk layout of
University-1652 or SUES-200, so that every benchmark reader, retriever and the whole SkyRank pipeline run on it.

**Worlds.** Locations are grouped into *regions* of :data:`REGION_SLOTS` (6) locations laid out on a 3×2 grid in one
region world, 0.7 tile widths apart, so neighbouring satellite tiles overlap by about 30% and region-mates share
one style (ground, road and roof palettes, block density, road grid angle): they are the hard negatives. A region
world is a road grid (main and side roads, optional diagonal road and river) whose blocks hold rows of buildings
(varied footprints, gable or flat roofs with parapets, shadows from one sun direction), large halls with
courtyards, fields with crop stripes, parks and forests, parking lots with cars, sports pitches and running tracks,
and ponds. Each location has a landmark at its centre (a building with a distinctive footprint on a plaza, some
annexes and trees), as each University-1652 location is one building. Train regions and test regions are
disjoint (University-1652 uses disjoint universities); distractor locations share the test regions.

**Satellite tiles** are north-up crops of one tile width centred on the location, box-downsampled 2×, with a
mild satellite colour grade.

**Drone views** are pinhole renderings of the region world: a camera at a height set by the altitude
(footprint at the target = ``altitude / 300`` tile widths, ±8%), looking at the location (shifted up to 6% of a
tile) with an off-nadir tilt of 10–35° and any heading. The four image corners are cast onto the ground and the
exact plane homography is applied with ``Image.transform(..., PERSPECTIVE)`` at 2× and box-downsampled (so each
view costs O(output pixels), never O(world)). Then: atmospheric haze growing toward the far edge, brightness,
contrast, saturation and white-balance jitter, one occluder (an ellipse of foliage or a dark drone part) in half
of the views, Gaussian blur (≤ 0.9 px at 96 px) and sensor noise. University-1652 views follow that dataset's
flight: a descending spiral, heading advancing by 360°/``views`` per view, altitude from ``max(altitudes)`` down
to ``min(altitudes)``. SUES-200 views fly half a circle at each fixed altitude.

**Sizes.** ``locations`` is the number of training locations and also of test (query) locations, as in
University-1652's 701/701 (``test_locations`` overrides the second, e.g. SUES-200's 120/80). ``distractors`` are
extra test-region locations that appear only in the galleries (University-1652 layout; SUES-200's layouts have
none: their training locations are the gallery distractors, as in the official split). The full University-1652
counts are ``generate_synthetic(out, locations=701, distractors=250, views=54, image_size=64)``.

**Determinism.** Every region and every location draws from its own ``numpy`` generator seeded by
``(seed, kind, index)``, so the same parameters give byte-identical files whatever the generation order
(JPEG quality 90, fixed encoder settings; PNG for SUES-200 satellites).

Layouts written under ``out/`` (``<ID>`` is 4-digit; query and gallery copies of an image are the same bytes):

- ``university1652``: ``train/drone/<ID>/image-NN.jpeg`` (NN = 01..views), ``train/satellite/<ID>/<ID>.jpg``,
  ``test/query_drone/<ID>/image-NN.jpeg``, ``test/query_satellite/<ID>/<ID>.jpg``, ``test/gallery_drone`` and
  ``test/gallery_satellite`` (test IDs plus distractor IDs). IDs are a seeded shuffle of ``0000``..
- ``sues200`` (raw archive): ``SUES-200-512x512/satellite-view/<ID>/0.png``,
  ``SUES-200-512x512/drone_view_512/<ID>/<alt>/<k>.jpg`` (k = 0..views-1) and
  ``SUES-200-512x512/indexs.yaml`` listing the training IDs in the official ``script/indexs.yaml`` format. IDs are
  ``0001``..; the training IDs are a seeded subset. The benchmark root is ``out/SUES-200-512x512``.
- ``sues200-split``: ``Training/<alt>/{drone,satellite}/<ID>`` (train IDs), ``Testing/<alt>/{query_drone,
  query_satellite}/<ID>`` (test IDs), ``Testing/<alt>/{gallery_drone,gallery_satellite}/<ID>`` (all IDs), file
  names as in the raw archive (``split_datasets.py`` copies the class folders).
- ``sues200-lower``: the same with ``train/<alt>`` and ``test/<alt>``.

Every output folder also holds ``synthetic.json`` (generator version, parameters, counts, ID lists). Writing is
atomic: files go to a hidden sibling folder that is renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from skyrank.benchmarks._base import register_benchmark
from skyrank.benchmarks.university1652 import University1652
from skyrank.errors import OutputExistsError

#: bump when the generated images change for the same parameters (it keys the cache folder)
SYNTHETIC_VERSION = 1

LAYOUTS: tuple[str, ...] = ("university1652", "sues200", "sues200-split", "sues200-lower")

#: The default parameters: small, so that the CI build (generate, train a tiny retriever, mine) takes seconds.
#: ``distractors`` applies to the University-1652 layout (SUES-200 layouts use 0).
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "layout": "university1652",
    "locations": 48,
    "test_locations": None,  # None: same as locations
    "distractors": 16,
    "views": 8,
    "image_size": 96,
    "seed": 0,
    "altitudes": (150, 200, 250, 300),
}

#: locations per region world (3 columns × 2 rows)
REGION_SLOTS = 6
_GRID_COLS, _GRID_ROWS = 3, 2
_SPACING = 0.7  # distance between neighbouring locations, in tile widths
#: the far corners of the widest, most oblique drone view lie ~1.51 × altitude/300 tile widths from the target
#: (+0.12 for shifts): the region world keeps that margin around its outer locations
_MARGIN_PER_300M, _MARGIN_EXTRA = 1.55, 0.15
_JPEG_QUALITY = 90
_FOV_TAN = math.tan(math.radians(30.0))  # half field of view of the drone camera: 60° square

SYNTHETIC_CITATION = """\
@misc{skyrank_synthetic,
  title  = {SkyRank synthetic cross-view benchmark: procedural drone and satellite scenes},
  author = {{SkyRank contributors}},
  note   = {Generated by skyrank.benchmarks.synthetic (numpy + PIL); CC0-1.0},
  year   = {2026}
}"""

_SEED_REGION, _SEED_LOCATION, _SEED_VIEW, _SEED_PLAN = 1, 2, 3, 4


# ----------------------------------------------------------------------------------------------------------------
# parameters, cache folder
# ----------------------------------------------------------------------------------------------------------------


def _resolve_params(
    layout: str,
    locations: int | None,
    test_locations: int | None,
    distractors: int | None,
    views: int | None,
    image_size: int | None,
    seed: int,
    altitudes: Iterable[int] | None,
) -> dict[str, Any]:
    """Defaults filled in and every value checked; the result keys the cache folder and goes to synthetic.json."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    sues = layout != "university1652"
    locations = int(SYNTHETIC_DEFAULTS["locations"] if locations is None else locations)
    test_locations = int(locations if test_locations is None else test_locations)
    if distractors is None:
        distractors = 0 if sues else int(SYNTHETIC_DEFAULTS["distractors"])
    distractors = int(distractors)
    views = int(SYNTHETIC_DEFAULTS["views"] if views is None else views)
    image_size = int(SYNTHETIC_DEFAULTS["image_size"] if image_size is None else image_size)
    alts = tuple(int(a) for a in (SYNTHETIC_DEFAULTS["altitudes"] if altitudes is None else altitudes))
    if locations < 1 or test_locations < 1:
        raise ValueError(f"locations and test_locations must be >= 1, got {locations} and {test_locations}")
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    if sues and distractors:
        raise ValueError(
            f"the SUES-200 layouts have no distractor locations (their training locations are the gallery "
            f"distractors, as in the official split); got distractors={distractors}, pass 0"
        )
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if not alts or any(a <= 0 for a in alts) or len(set(alts)) != len(alts):
        raise ValueError(f"altitudes must be distinct positive integers, got {alts}")
    total = locations + test_locations + distractors
    if total > (9999 if sues else 10000):
        raise ValueError(f"at most 10,000 locations fit 4-digit IDs, got {total}")
    return {
        "layout": layout,
        "locations": locations,
        "test_locations": test_locations,
        "distractors": distractors,
        "views": views,
        "image_size": image_size,
        "seed": int(seed),
        "altitudes": list(alts),
    }


def _params_key(params: dict[str, Any]) -> str:
    blob = json.dumps({"version": SYNTHETIC_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_synthetic_root(cache_dir: str | Path | None = None, **params: Any) -> Path:
    """The cache folder of a synthetic benchmark: ``<cache>/synthetic/<hash of the parameters>``.

    ``<cache>`` is ``cache_dir`` when given, else ``$SKYRANK_CACHE``, else ``~/.cache/skyrank``. ``params`` are
    :func:`generate_synthetic`'s (``layout``, ``locations``, ...); missing ones take :data:`SYNTHETIC_DEFAULTS`,
    so equal benchmarks share one folder.
    """
    resolved = _resolve_params(
        params.pop("layout", SYNTHETIC_DEFAULTS["layout"]),
        params.pop("locations", None),
        params.pop("test_locations", None),
        params.pop("distractors", None),
        params.pop("views", None),
        params.pop("image_size", None),
        params.pop("seed", SYNTHETIC_DEFAULTS["seed"]),
        params.pop("altitudes", None),
    )
    if params:
        raise TypeError(f"unknown synthetic benchmark parameters: {', '.join(sorted(params))}")
    if cache_dir is None:
        env = os.environ.get("SKYRANK_CACHE")
        cache_dir = Path(env) if env else Path.home() / ".cache" / "skyrank"
    return Path(cache_dir).expanduser() / "synthetic" / _params_key(resolved)


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    try:
        info = json.loads((root / "synthetic.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("version") == SYNTHETIC_VERSION and info.get("params") == params


def ensure_synthetic(cache_dir: str | Path | None = None, progress: bool = True, **params: Any) -> Path:
    """The synthetic benchmark for ``params``, generated into :func:`default_synthetic_root` on first use.

    A complete folder (its ``synthetic.json`` matches the parameters and the generator version) is returned at
    once; otherwise it is (re)generated. Returns the folder (for ``layout="sues200"`` the benchmark root is its
    ``SUES-200-512x512`` sub-folder).
    """
    root = default_synthetic_root(cache_dir, **params)
    resolved = _resolve_params(
        params.get("layout", SYNTHETIC_DEFAULTS["layout"]),
        params.get("locations"),
        params.get("test_locations"),
        params.get("distractors"),
        params.get("views"),
        params.get("image_size"),
        params.get("seed", SYNTHETIC_DEFAULTS["seed"]),
        params.get("altitudes"),
    )
    if _is_complete(root, resolved):
        return root
    try:
        return generate_synthetic(root, overwrite=root.exists(), progress=progress, **params)
    except OutputExistsError:
        # another process finished the same benchmark first
        if _is_complete(root, resolved):
            return root
        raise


# ----------------------------------------------------------------------------------------------------------------
# region worlds
# ----------------------------------------------------------------------------------------------------------------

_GROUNDS = [(88, 112, 62), (112, 122, 74), (150, 140, 102), (138, 134, 124), (184, 166, 128), (100, 104, 84)]
_ROADS = [(72, 72, 76), (92, 90, 92), (160, 158, 150), (150, 128, 100)]
_ROOFS = [
    (172, 82, 62), (122, 122, 128), (222, 220, 214), (62, 62, 68), (92, 106, 124), (82, 112, 92),
    (124, 90, 70), (202, 186, 150), (150, 60, 50), (180, 180, 170), (70, 90, 130), (200, 120, 70),
]
_CROPS = [(150, 160, 80), (110, 140, 60), (190, 170, 100), (130, 110, 70), (90, 120, 50), (170, 150, 90)]
_PAVING = [(176, 170, 160), (196, 188, 170), (150, 146, 140), (168, 150, 130)]


def _jitter(rng: np.random.Generator, color: tuple[int, ...], amount: float) -> tuple[int, int, int]:
    """``color`` scaled by 1 ± ``amount`` and shifted by ±10 per channel (one generator call: trees draw many)."""
    u = rng.uniform(-1.0, 1.0, 4).tolist()
    f = 1.0 + amount * u[0]
    r, g, b = (int(min(255.0, max(0.0, c * f + 10.0 * d))) for c, d in zip(color, u[1:], strict=True))
    return (r, g, b)


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    r, g, b = (int(min(255, max(0, v * factor))) for v in color)
    return (r, g, b)


@dataclass
class _Style:
    ground: tuple[int, int, int]
    road: tuple[int, int, int]
    roofs: list[tuple[int, int, int]]
    tree: tuple[int, int, int]
    water: tuple[int, int, int]
    crops: list[tuple[int, int, int]]
    paving: tuple[int, int, int]
    block_weights: np.ndarray  # over _BLOCK_KINDS
    road_spacing: tuple[float, float]
    grid_angle: float
    sun: tuple[float, float]  # shadow direction (unit), world px coordinates


_BLOCK_KINDS = ("houses", "hall", "field", "park", "forest", "parking", "sports", "pond")


def _make_style(rng: np.random.Generator) -> _Style:
    roofs = [_jitter(rng, _ROOFS[i], 0.08) for i in rng.choice(len(_ROOFS), size=3, replace=False)]
    urban = rng.uniform(0.0, 1.0)
    weights = np.array(
        [
            1.0 + 3.0 * urban,  # houses
            0.4 + 1.2 * urban,  # hall
            2.5 * (1.0 - urban),  # field
            0.8,  # park
            1.2 * (1.0 - urban),  # forest
            0.3 + 0.8 * urban,  # parking
            0.4,  # sports
            0.3,  # pond
        ]
    )
    sun_angle = rng.uniform(0, 2 * math.pi)
    lo = rng.uniform(0.28, 0.4)
    return _Style(
        ground=_jitter(rng, _GROUNDS[rng.integers(len(_GROUNDS))], 0.06),
        road=_jitter(rng, _ROADS[rng.integers(len(_ROADS))], 0.05),
        roofs=roofs,
        tree=_jitter(rng, (46, 76, 40), 0.15),
        water=_jitter(rng, (52, 84, 104), 0.12),
        crops=[_jitter(rng, _CROPS[i], 0.06) for i in rng.choice(len(_CROPS), size=2, replace=False)],
        paving=_jitter(rng, _PAVING[rng.integers(len(_PAVING))], 0.05),
        block_weights=weights / weights.sum(),
        road_spacing=(lo, lo + rng.uniform(0.1, 0.25)),
        grid_angle=rng.uniform(-math.pi / 4, math.pi / 4),
        sun=(math.cos(sun_angle), math.sin(sun_angle)),
    )


class _Canvas:
    """Draws in region units (1.0 = one tile width) and in an optionally rotated local frame."""

    def __init__(self, image: Image.Image, scale: float) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.scale = scale

    def px(self, pts: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        s = self.scale
        return [(x * s, y * s) for x, y in pts]

    def poly(self, pts: list[tuple[float, float]], fill: tuple[int, int, int]) -> None:
        self.draw.polygon(self.px(pts), fill=fill)

    def disc(self, cx: float, cy: float, r: float, fill: tuple[int, int, int]) -> None:
        s = self.scale
        rr = max(r * s, 0.6)
        self.draw.ellipse((cx * s - rr, cy * s - rr, cx * s + rr, cy * s + rr), fill=fill)

    def line(self, pts: list[tuple[float, float]], width: float, fill: tuple[int, int, int]) -> None:
        self.draw.line(self.px(pts), fill=fill, width=max(1, int(round(width * self.scale))), joint="curve")


@dataclass
class _Frame:
    """A rotated local frame: local (a, b) -> region (x, y)."""

    ox: float
    oy: float
    angle: float

    def __call__(self, pts: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return [(self.ox + a * c - b * s, self.oy + a * s + b * c) for a, b in pts]


def _rect(a0: float, b0: float, a1: float, b1: float) -> list[tuple[float, float]]:
    return [(a0, b0), (a1, b0), (a1, b1), (a0, b1)]


_FOOTPRINTS: dict[str, list[tuple[float, float]]] = {
    "L": [(-1, -1), (1, -1), (1, -0.1), (0.0, -0.1), (0.0, 1), (-1, 1)],
    "U": [(-1, -1), (1, -1), (1, 1), (0.4, 1), (0.4, -0.3), (-0.4, -0.3), (-0.4, 1), (-1, 1)],
    "T": [(-1, -1), (1, -1), (1, -0.3), (0.35, -0.3), (0.35, 1), (-0.35, 1), (-0.35, -0.3), (-1, -0.3)],
    "H": [(-1, -1), (-0.4, -1), (-0.4, -0.25), (0.4, -0.25), (0.4, -1), (1, -1), (1, 1), (0.4, 1), (0.4, 0.25),
          (-0.4, 0.25), (-0.4, 1), (-1, 1)],
    "plus": [(-0.35, -1), (0.35, -1), (0.35, -0.35), (1, -0.35), (1, 0.35), (0.35, 0.35), (0.35, 1),
             (-0.35, 1), (-0.35, 0.35), (-1, 0.35), (-1, -0.35), (-0.35, -0.35)],
    "octagon": [(math.cos(k * math.pi / 4 + math.pi / 8), math.sin(k * math.pi / 4 + math.pi / 8)) for k in range(8)],
    "circle": [(math.cos(k * math.pi / 12), math.sin(k * math.pi / 12)) for k in range(24)],
    "Z": [(-1, -1), (0.3, -1), (0.3, -0.2), (1, -0.2), (1, 1), (-0.3, 1), (-0.3, 0.2), (-1, 0.2)],
}
_LANDMARK_SHAPES = ("rect", "courtyard", "L", "U", "T", "H", "plus", "octagon", "circle", "Z", "twin")


def _building(
    cv: _Canvas,
    frame: _Frame,
    local: list[tuple[float, float]],
    roof: tuple[int, int, int],
    style: _Style,
    height: float,
    rng: np.random.Generator,
    *,
    gable: bool = False,
    hole: list[tuple[float, float]] | None = None,
) -> None:
    """One building: shadow (cast along the sun direction), roof, and a gable ridge or a parapet and roof units."""
    pts = frame(local)
    sx, sy = style.sun[0] * height, style.sun[1] * height
    cv.poly([(x + sx, y + sy) for x, y in pts], _shade(style.ground, 0.5))
    cv.poly(pts, roof)
    a0, a1 = min(p[0] for p in local), max(p[0] for p in local)
    b0, b1 = min(p[1] for p in local), max(p[1] for p in local)
    if gable and len(local) == 4:
        if (a1 - a0) >= (b1 - b0):
            half = _rect(a0, (b0 + b1) / 2, a1, b1)
        else:
            half = _rect((a0 + a1) / 2, b0, a1, b1)
        cv.poly(frame(half), _shade(roof, 0.78))
    else:
        inset = min(a1 - a0, b1 - b0) * 0.12
        if len(local) == 4 and inset > 0.004:
            cv.poly(frame(_rect(a0 + inset, b0 + inset, a1 - inset, b1 - inset)), _shade(roof, 0.9))
        for _ in range(int(rng.integers(0, 3))):
            ua, ub = rng.uniform(a0 + 0.25 * (a1 - a0), a1 - 0.3 * (a1 - a0)), rng.uniform(b0, b1 - 0.2 * (b1 - b0))
            w = 0.12 * (a1 - a0)
            cv.poly(frame(_rect(ua, ub, ua + w, ub + w * 0.7)), _shade(roof, 1.15))
    if hole is not None:
        cv.poly(frame(hole), _shade(style.ground, 0.85))


def _tree(cv: _Canvas, x: float, y: float, r: float, style: _Style, rng: np.random.Generator) -> None:
    color = _jitter(rng, style.tree, 0.12)
    cv.disc(x + style.sun[0] * r * 0.7, y + style.sun[1] * r * 0.7, r, _shade(style.ground, 0.55))
    cv.disc(x, y, r, color)
    cv.disc(x - style.sun[0] * r * 0.3, y - style.sun[1] * r * 0.3, r * 0.45, _shade(color, 1.2))


def _fill_block(
    cv: _Canvas, frame: _Frame, a0: float, b0: float, a1: float, b1: float, style: _Style, rng: np.random.Generator
) -> None:
    """Fill one street block (local rectangle) with one kind of content."""
    w, h = a1 - a0, b1 - b0
    if w < 0.04 or h < 0.04:
        return
    kind = _BLOCK_KINDS[int(rng.choice(len(_BLOCK_KINDS), p=style.block_weights))]
    if kind == "houses":
        depth = min(h / 2, rng.uniform(0.06, 0.12))
        for row_b0, row_b1 in ((b0, b0 + depth), (b1 - depth, b1)):
            a = a0 + rng.uniform(0.0, 0.02)
            while a < a1 - 0.04:
                lot = rng.uniform(0.05, 0.13)
                lot = min(lot, a1 - a)
                if rng.uniform() < 0.85:
                    sa, sb = lot * rng.uniform(0.1, 0.2), depth * rng.uniform(0.1, 0.3)
                    roof = style.roofs[int(rng.integers(len(style.roofs)))]
                    roof = _jitter(rng, roof, 0.05)
                    rect = _rect(a + sa, row_b0 + sb, a + lot - sa, row_b1 - sb)
                    if rng.uniform() < 0.25:  # an L-shaped house
                        cut_a, cut_b = a + lot * 0.55, (row_b0 + row_b1) / 2
                        rect = [rect[0], rect[1], (rect[1][0], cut_b), (cut_a, cut_b), (cut_a, rect[2][1]), rect[3]]
                    _building(cv, frame, rect, roof, style, 0.012, rng, gable=rng.uniform() < 0.6)
                elif rng.uniform() < 0.6:
                    _tree(cv, *frame([(a + lot / 2, (row_b0 + row_b1) / 2)])[0], 0.02, style, rng)
                a += lot
        inner = (b0 + depth + 0.01, b1 - depth - 0.01)
        if inner[1] - inner[0] > 0.03:
            for _ in range(int(rng.integers(0, 6))):
                _tree(cv, *frame([(rng.uniform(a0, a1), rng.uniform(*inner))])[0], rng.uniform(0.01, 0.02), style, rng)
    elif kind == "hall":
        ma, mb = w * rng.uniform(0.06, 0.2), h * rng.uniform(0.06, 0.2)
        roof = _jitter(rng, style.roofs[int(rng.integers(len(style.roofs)))], 0.05)
        outer = _rect(a0 + ma, b0 + mb, a1 - ma, b1 - mb)
        hole = None
        if rng.uniform() < 0.4 and min(w, h) > 0.15:
            ca, cb = (a1 - a0 - 2 * ma) * 0.3, (b1 - b0 - 2 * mb) * 0.3
            hole = _rect(a0 + ma + ca, b0 + mb + cb, a1 - ma - ca, b1 - mb - cb)
        _building(cv, frame, outer, roof, style, 0.02, rng, hole=hole)
    elif kind == "field":
        base, alt = style.crops[0], style.crops[1]
        if rng.uniform() < 0.5:
            base, alt = alt, base
        cv.poly(frame(_rect(a0, b0, a1, b1)), base)
        stripe = rng.uniform(0.01, 0.025)
        along_a = rng.uniform() < 0.5
        t, end = (a0, a1) if along_a else (b0, b1)
        while t < end:
            s1 = min(t + stripe / 2, end)
            cv.poly(frame(_rect(t, b0, s1, b1) if along_a else _rect(a0, t, a1, s1)), alt)
            t += stripe
    elif kind in ("park", "forest"):
        if kind == "park":
            cv.poly(frame(_rect(a0, b0, a1, b1)), _shade(style.ground, 1.08))
            cv.line(frame([(a0, b0 + h * rng.uniform(0.2, 0.8)), (a1, b0 + h * rng.uniform(0.2, 0.8))]), 0.008,
                    style.paving)
        n = int(w * h * (300 if kind == "park" else 1400))
        for _ in range(min(n, 400)):
            r = rng.uniform(0.01, 0.022) if kind == "park" else rng.uniform(0.012, 0.026)
            _tree(cv, *frame([(rng.uniform(a0, a1), rng.uniform(b0, b1))])[0], r, style, rng)
    elif kind == "parking":
        cv.poly(frame(_rect(a0, b0, a1, b1)), _shade(style.road, 1.25))
        stall = 0.018
        rows = max(1, int(h / 0.06))
        for i in range(rows):
            rb = b0 + (i + 0.5) * h / rows
            a = a0 + 0.01
            while a < a1 - stall:
                cv.line(frame([(a, rb - 0.02), (a, rb + 0.02)]), 0.002, (225, 225, 220))
                if rng.uniform() < 0.55:
                    car = _jitter(rng, _ROOFS[int(rng.integers(len(_ROOFS)))], 0.2)
                    cv.poly(frame(_rect(a + 0.003, rb - 0.016, a + stall - 0.003, rb + 0.016)), car)
                a += stall
    elif kind == "sports":
        ma, mb = w * 0.1, h * 0.1
        if rng.uniform() < 0.5:  # running track around a pitch
            track = _jitter(rng, (160, 72, 58), 0.1)
            cv.poly(frame(_rect(a0 + ma, b0 + mb, a1 - ma, b1 - mb)), track)
            inset = min(w, h) * 0.12
            cv.poly(frame(_rect(a0 + ma + inset, b0 + mb + inset, a1 - ma - inset, b1 - mb - inset)), (70, 130, 60))
        else:  # a pitch with white lines
            cv.poly(frame(_rect(a0 + ma, b0 + mb, a1 - ma, b1 - mb)), (76, 136, 66))
            am = (a0 + a1) / 2
            cv.line(frame([(am, b0 + mb), (am, b1 - mb)]), 0.003, (230, 230, 230))
            for e in (_rect(a0 + ma, b0 + mb, a1 - ma, b1 - mb),):
                cv.line(frame(e + [e[0]]), 0.003, (230, 230, 230))
    elif kind == "pond":
        cx, cy, ra, rb = (a0 + a1) / 2, (b0 + b1) / 2, w * rng.uniform(0.3, 0.45), h * rng.uniform(0.3, 0.45)
        k = 18
        radii = rng.uniform(0.8, 1.1, k)
        angles = [2 * math.pi * i / k for i in range(k)]
        ring = [(cx + ra * r * math.cos(t), cy + rb * r * math.sin(t)) for r, t in zip(radii, angles, strict=True)]
        cv.poly(frame([(cx + (x - cx) * 1.12, cy + (y - cy) * 1.12) for x, y in ring]), (170, 160, 120))
        cv.poly(frame(ring), style.water)


def _landmark(cv: _Canvas, x: float, y: float, style: _Style, rng: np.random.Generator) -> None:
    """The location's own building on a plaza, with annexes and trees: what a drone view centres on."""
    angle = style.grid_angle + (0.0 if rng.uniform() < 0.6 else rng.uniform(-math.pi / 2, math.pi / 2))
    frame = _Frame(x, y, angle)
    size = rng.uniform(0.07, 0.12)
    plaza = size * rng.uniform(1.5, 1.9)
    cv.poly(frame(_rect(-plaza, -plaza * 0.85, plaza, plaza * 0.85)), _jitter(rng, style.paving, 0.05))
    if rng.uniform() < 0.5:
        roof = _jitter(rng, style.roofs[int(rng.integers(len(style.roofs)))], 0.05)
    else:
        roof = _jitter(rng, _ROOFS[int(rng.integers(len(_ROOFS)))], 0.1)
    # trees and annexes first, so the main building stays on top
    for _ in range(int(rng.integers(2, 8))):
        t = rng.uniform(0, 2 * math.pi)
        d = plaza * rng.uniform(0.85, 1.2)
        _tree(cv, *frame([(d * math.cos(t), d * 0.85 * math.sin(t))])[0], rng.uniform(0.012, 0.022), style, rng)
    for _ in range(int(rng.integers(0, 3))):
        t = rng.uniform(0, 2 * math.pi)
        d = size * rng.uniform(1.3, 1.7)
        ax, ay = d * math.cos(t), d * math.sin(t)
        aw, ah = size * rng.uniform(0.2, 0.45), size * rng.uniform(0.2, 0.45)
        annex = _jitter(rng, style.roofs[int(rng.integers(len(style.roofs)))], 0.05)
        _building(cv, frame, _rect(ax - aw, ay - ah, ax + aw, ay + ah), annex, style, 0.012, rng)
    shape = _LANDMARK_SHAPES[int(rng.integers(len(_LANDMARK_SHAPES)))]
    sa, sb = size, size * rng.uniform(0.55, 1.0)
    height = rng.uniform(0.02, 0.04)
    if shape == "rect":
        _building(cv, frame, _rect(-sa, -sb, sa, sb), roof, style, height, rng, gable=rng.uniform() < 0.5)
    elif shape == "courtyard":
        _building(cv, frame, _rect(-sa, -sb, sa, sb), roof, style, height, rng,
                  hole=_rect(-sa * 0.5, -sb * 0.45, sa * 0.5, sb * 0.45))
    elif shape == "twin":
        _building(cv, frame, _rect(-sa, -sb, -sa * 0.15, sb), roof, style, height, rng, gable=True)
        _building(cv, frame, _rect(sa * 0.15, -sb, sa, sb * 0.6), roof, style, height, rng, gable=True)
    else:
        pts = [(px * sa, py * sb) for px, py in _FOOTPRINTS[shape]]
        _building(cv, frame, pts, roof, style, height, rng)
        if shape == "circle":
            cv.disc(x, y, min(sa, sb) * 0.55, _shade(roof, 1.18))
            cv.disc(x, y, min(sa, sb) * 0.2, _shade(roof, 1.35))


@dataclass
class _Region:
    image: Image.Image
    scale: float  # world pixels per tile width
    slots: list[tuple[float, float]]  # location centres, region units
    ground: tuple[int, int, int]  # fill colour outside the world (never reached with the margin kept)


def _margin(max_altitude: int) -> float:
    return _MARGIN_PER_300M * max(1.0, max_altitude / 300.0) + _MARGIN_EXTRA


def _make_region(seed: int, kind: int, index: int, scale: int, margin: float) -> _Region:
    """One region world (its style, roads, blocks and the landmarks of its 6 location slots)."""
    rng = np.random.default_rng([seed, _SEED_REGION, kind, index])
    style = _make_style(rng)
    width = 2 * margin + (_GRID_COLS - 1) * _SPACING
    height = 2 * margin + (_GRID_ROWS - 1) * _SPACING
    wpx, hpx = int(round(width * scale)), int(round(height * scale))

    # ground: base colour with low-frequency variation
    coarse = rng.uniform(0.86, 1.12, size=(max(2, hpx // 24), max(2, wpx // 24))).astype(np.float32)
    coarse_img = Image.fromarray((coarse * 100).astype(np.uint8)).resize((wpx, hpx), Image.BICUBIC)
    base = np.asarray(coarse_img, dtype=np.float32)[..., None] / 100.0 * np.asarray(style.ground, np.float32)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    cv = _Canvas(image, scale)

    cx, cy = width / 2, height / 2
    grid = _Frame(cx, cy, style.grid_angle)
    reach = math.hypot(width, height) / 2 + 0.1

    def road_positions() -> list[tuple[float, float]]:
        out, t = [], -reach + rng.uniform(0, style.road_spacing[1])
        while t < reach:
            out.append((t, 0.03 if rng.uniform() < 0.3 else 0.018))
            t += rng.uniform(*style.road_spacing)
        return out

    roads_a, roads_b = road_positions(), road_positions()
    # blocks between the roads
    for (a_lo, wa_lo), (a_hi, wa_hi) in pairwise(roads_a):
        for (b_lo, wb_lo), (b_hi, wb_hi) in pairwise(roads_b):
            mx, my = grid([((a_lo + a_hi) / 2, (b_lo + b_hi) / 2)])[0]
            if not (-0.4 < mx < width + 0.4 and -0.4 < my < height + 0.4):
                continue
            side = 0.008
            _fill_block(
                cv, grid, a_lo + wa_lo / 2 + side, b_lo + wb_lo / 2 + side, a_hi - wa_hi / 2 - side,
                b_hi - wb_hi / 2 - side, style, rng,
            )
    # river
    if rng.uniform() < 0.3:
        t0 = rng.uniform(0, 2 * math.pi)
        pts = []
        for i in range(9):
            s = -reach + 2 * reach * i / 8
            pts.append((s, 0.4 * math.sin(t0 + s * 1.7) + rng.uniform(-0.05, 0.05)))
        river = _Frame(cx, cy, style.grid_angle + rng.uniform(0.3, 1.2))
        cv.line(river(pts), rng.uniform(0.09, 0.14), (166, 156, 118))
        cv.line(river(pts), rng.uniform(0.06, 0.08), style.water)
    # roads on top, with a centre line on main roads
    for positions, along_a in ((roads_a, True), (roads_b, False)):
        for t, w in positions:
            seg = [(t, -reach), (t, reach)] if along_a else [(-reach, t), (reach, t)]
            cv.line(grid(seg), w, style.road)
            if w > 0.025:
                cv.line(grid(seg), 0.002, (200, 196, 170))
    if rng.uniform() < 0.4:
        d = rng.uniform(-0.5, 0.5)
        diag = _Frame(cx, cy, style.grid_angle + rng.uniform(0.5, 1.0))
        cv.line(diag([(-reach, d), (reach, d)]), 0.03, style.road)
    # the location slots and their landmarks (one generator per slot)
    slots = []
    for j in range(_GRID_ROWS):
        for i in range(_GRID_COLS):
            srng = np.random.default_rng([seed, _SEED_REGION, kind, index, 1 + j * _GRID_COLS + i])
            sx = margin + i * _SPACING + srng.uniform(-0.06, 0.06)
            sy = margin + j * _SPACING + srng.uniform(-0.06, 0.06)
            _landmark(cv, sx, sy, style, srng)
            slots.append((sx, sy))

    # sensor-independent fine texture
    arr = np.asarray(image, dtype=np.int16)
    arr = arr + rng.integers(-5, 6, size=arr.shape[:2], dtype=np.int16)[..., None]
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return _Region(image=image, scale=float(scale), slots=slots, ground=style.ground)


# ----------------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        image.save(buf, format="PNG", compress_level=6)
    else:
        image.save(buf, format="JPEG", quality=_JPEG_QUALITY, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue()


def _satellite(region: _Region, slot: tuple[float, float], size: int, rng: np.random.Generator) -> Image.Image:
    """The north-up satellite tile of one location: one tile width, box-downsampled, mild colour grade."""
    s = region.scale
    x0, y0 = int(round(slot[0] * s - s / 2)), int(round(slot[1] * s - s / 2))
    tile = region.image.crop((x0, y0, x0 + int(s), y0 + int(s))).resize((size, size), Image.BOX)
    arr = np.asarray(tile, dtype=np.float32)
    gray = arr.mean(axis=2, keepdims=True)
    arr = gray + 0.85 * (arr - gray)
    arr = arr * rng.uniform(0.95, 1.05) * np.array([0.97, 0.99, 1.04], np.float32)
    arr = arr + rng.normal(0.0, 1.5, arr.shape[:2])[..., None]
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def _homography(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> tuple[float, ...]:
    """The 8 PERSPECTIVE coefficients mapping output pixels ``src`` to input pixels ``dst``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -x * u, -y * u])
        rows.append([0, 0, 0, x, y, 1, -x * v, -y * v])
        rhs.extend([u, v])
    coeffs = np.linalg.solve(np.asarray(rows, np.float64), np.asarray(rhs, np.float64))
    return tuple(float(c) for c in coeffs)


def _drone_view(
    region: _Region,
    slot: tuple[float, float],
    size: int,
    altitude: float,
    heading: float,
    rng: np.random.Generator,
) -> Image.Image:
    """One oblique drone rendering of the region around ``slot`` (see the module docstring)."""
    s = region.scale
    footprint = altitude / 300.0 * rng.uniform(0.92, 1.08) * s  # ground width at the target, world px
    tilt = math.radians(rng.uniform(10.0, 35.0))
    tx = slot[0] * s + rng.uniform(-0.06, 0.06) * s
    ty = slot[1] * s + rng.uniform(-0.06, 0.06) * s
    fx, fy = math.cos(heading), math.sin(heading)  # forward (image up), world px coordinates (y down)
    rx, ry = -fy, fx  # right
    h = footprint * math.cos(tilt) / (2 * _FOV_TAN)
    camx, camy = tx - fx * h * math.tan(tilt), ty - fy * h * math.tan(tilt)
    t, ct, st = _FOV_TAN, math.cos(tilt), math.sin(tilt)
    out = 2 * size
    src, dst = [], []
    for xn, yn in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        d_f, d_r, d_z = -yn * t * ct + st, xn * t, -yn * t * st - ct
        k = h / -d_z
        src.append(((xn + 1) / 2 * out, (yn + 1) / 2 * out))
        dst.append((camx + k * (d_f * fx + d_r * rx), camy + k * (d_f * fy + d_r * ry)))
    coeffs = _homography(src, dst)
    view = region.image.transform((out, out), Image.PERSPECTIVE, coeffs, Image.BILINEAR, fillcolor=region.ground)
    view = view.reduce(2)

    arr = np.asarray(view, dtype=np.float32)
    # haze toward the far (top) edge, stronger for oblique views
    haze = rng.uniform(0.0, 0.4) * (tilt / math.radians(35.0))
    ramp = (1.0 - np.linspace(0.0, 1.0, size, dtype=np.float32)) ** 1.5 * haze
    arr = arr * (1 - ramp[:, None, None]) + np.array([204, 208, 216], np.float32) * ramp[:, None, None]
    # colour: white balance, saturation, contrast, brightness
    arr = arr * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    gray = arr.mean(axis=2, keepdims=True)
    arr = gray + rng.uniform(0.65, 1.35) * (arr - gray)
    mean = arr.mean()
    arr = mean + rng.uniform(0.75, 1.25) * (arr - mean)
    arr = arr * rng.uniform(0.8, 1.2)
    view = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    # one occluder in half of the views: foliage near an edge, or a dark part of the drone
    if rng.uniform() < 0.5:
        draw = ImageDraw.Draw(view)
        edge = int(rng.integers(4))
        along = rng.uniform(0.1, 0.9) * size
        cx, cy = [(along, 0), (size, along), (along, size), (0, along)][edge]
        rx_, ry_ = rng.uniform(0.12, 0.28) * size, rng.uniform(0.08, 0.2) * size
        if rng.uniform() < 0.6:
            color = (int(rng.integers(25, 60)), int(rng.integers(45, 85)), int(rng.integers(20, 45)))
        else:
            color = (int(rng.integers(20, 50)),) * 3
        draw.ellipse((cx - rx_, cy - ry_, cx + rx_, cy + ry_), fill=color)
    radius = rng.uniform(0.0, 0.9) * size / 96
    if radius > 0.05:
        view = view.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(view, dtype=np.float32) + rng.normal(0.0, rng.uniform(1.0, 4.0), (size, size, 1))
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------------------------------------------
# the plan: which ID sits in which region slot, and where its files go
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Location:
    id: str
    role: str  # "train" | "test" | "distractor"
    kind: int  # 0: train regions, 1: test regions
    region: int
    slot: int


def _plan(params: dict[str, Any]) -> list[_Location]:
    """Every location: its ID, role and region slot, from the seed alone."""
    rng = np.random.default_rng([params["seed"], _SEED_PLAN])
    n_train, n_test, n_dis = params["locations"], params["test_locations"], params["distractors"]
    total = n_train + n_test + n_dis
    if params["layout"] == "university1652":
        numbers = rng.permutation(total)  # IDs 0000.. shuffled over train, test and distractors
        train_nums, test_nums = numbers[:n_train], numbers[n_train : n_train + n_test]
        dis_nums = numbers[n_train + n_test :]
    else:
        train_set = np.sort(rng.choice(total, size=n_train, replace=False)) + 1  # IDs 0001.., like SUES-200
        rest = np.setdiff1d(np.arange(1, total + 1), train_set)
        train_nums, test_nums, dis_nums = rng.permutation(train_set), rng.permutation(rest), np.array([], int)
    out = [
        _Location(f"{int(n):04d}", "train", 0, i // REGION_SLOTS, i % REGION_SLOTS) for i, n in enumerate(train_nums)
    ]
    test_side = [(int(n), "test") for n in test_nums] + [(int(n), "distractor") for n in dis_nums]
    order = rng.permutation(len(test_side))  # distractors mixed into the test regions
    for i, k in enumerate(order):
        n, role = test_side[int(k)]
        out.append(_Location(f"{n:04d}", role, 1, i // REGION_SLOTS, i % REGION_SLOTS))
    return out


def _targets(layout: str, loc: _Location, altitudes: list[int]) -> tuple[list[str], list[str]]:
    """(satellite folders, drone folders) of one location; SUES-200 folders hold an ``{alt}`` placeholder."""
    i = loc.id
    if layout == "university1652":
        if loc.role == "train":
            return [f"train/satellite/{i}"], [f"train/drone/{i}"]
        if loc.role == "test":
            return [f"test/query_satellite/{i}", f"test/gallery_satellite/{i}"], [
                f"test/query_drone/{i}",
                f"test/gallery_drone/{i}",
            ]
        return [f"test/gallery_satellite/{i}"], [f"test/gallery_drone/{i}"]
    if layout == "sues200":
        return ["SUES-200-512x512/satellite-view/" + i], [f"SUES-200-512x512/drone_view_512/{i}/{{alt}}"]
    top = {"sues200-split": ("Training", "Testing"), "sues200-lower": ("train", "test")}[layout]
    sats, drones = [], []
    if loc.role == "train":
        sats.append(f"{top[0]}/{{alt}}/satellite/{i}")
        drones.append(f"{top[0]}/{{alt}}/drone/{i}")
    else:
        sats.append(f"{top[1]}/{{alt}}/query_satellite/{i}")
        drones.append(f"{top[1]}/{{alt}}/query_drone/{i}")
    sats.append(f"{top[1]}/{{alt}}/gallery_satellite/{i}")
    drones.append(f"{top[1]}/{{alt}}/gallery_drone/{i}")
    return sats, drones


def _write(root: Path, folders: Iterable[str], name: str, data: bytes, loc_id: str, counts: dict[str, int]) -> None:
    """Write the same bytes into every folder; count files per view folder (the folder without the ID)."""
    for rel in folders:
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        key = "/".join(part for part in rel.split("/") if part != loc_id)
        counts[key] = counts.get(key, 0) + 1


def _generate_location(
    root: Path, params: dict[str, Any], loc: _Location, region: _Region, counts: dict[str, int]
) -> None:
    """Render and write every file of one location (its own generators: order-independent)."""
    layout, size, views, seed = params["layout"], params["image_size"], params["views"], params["seed"]
    number = int(loc.id)
    slot = region.slots[loc.slot]
    sats, drones = _targets(layout, loc, params["altitudes"])
    sat_rng = np.random.default_rng([seed, _SEED_LOCATION, number])
    sat = _satellite(region, slot, size, sat_rng)
    heading0 = sat_rng.uniform(0, 2 * math.pi)
    if layout == "university1652":
        _write(root, sats, f"{loc.id}.jpg", _encode(sat, "JPEG"), loc.id, counts)
        hi, lo = max(params["altitudes"]), min(params["altitudes"])
        for v in range(views):
            rng = np.random.default_rng([seed, _SEED_VIEW, number, v])
            altitude = (hi - (hi - lo) * v / max(views - 1, 1)) * rng.uniform(0.95, 1.05)
            heading = heading0 + 2 * math.pi * v / views + rng.normal(0.0, 0.15)
            data = _encode(_drone_view(region, slot, size, altitude, heading, rng), "JPEG")
            _write(root, drones, f"image-{v + 1:02d}.jpeg", data, loc.id, counts)
        return
    sat_png = _encode(sat, "PNG")
    alts = params["altitudes"]
    if layout == "sues200":
        _write(root, sats, "0.png", sat_png, loc.id, counts)
    else:
        _write(root, [f.format(alt=a) for a in alts for f in sats], "0.png", sat_png, loc.id, counts)
    for a in alts:
        for v in range(views):
            rng = np.random.default_rng([seed, _SEED_VIEW, number, a, v])
            heading = heading0 + math.pi * v / views + rng.normal(0.0, 0.15)
            altitude = a * rng.uniform(0.97, 1.03)
            data = _encode(_drone_view(region, slot, size, altitude, heading, rng), "JPEG")
            _write(root, [f.format(alt=a) for f in drones], f"{v}.jpg", data, loc.id, counts)


def generate_synthetic(
    out: str | Path,
    layout: str = "university1652",
    *,
    locations: int | None = None,
    test_locations: int | None = None,
    distractors: int | None = None,
    views: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    altitudes: tuple[int, ...] = (150, 200, 250, 300),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write the procedural cross-view benchmark into ``out`` in a real benchmark layout.

    Args:
        out: the folder to create (for ``layout="sues200"`` the benchmark root is ``out/SUES-200-512x512``).
        layout: ``university1652``, ``sues200`` (raw archive + ``indexs.yaml``), ``sues200-split``
            (``Training``/``Testing``) or ``sues200-lower`` (``train``/``test``); see the module docstring.
        locations: training locations, and test (query) locations unless ``test_locations`` is given
            (default :data:`SYNTHETIC_DEFAULTS`: 48).
        test_locations: test locations, when different from ``locations`` (SUES-200: 120 train / 80 test).
        distractors: gallery-only test-region locations (University-1652 layout only; default 16, SUES-200 0).
        views: drone views per location (per altitude for SUES-200); default 8.
        image_size: side of every image in pixels; default 96.
        seed: the same seed and parameters give byte-identical files.
        altitudes: drone altitudes in metres: the SUES-200 altitude folders, or the University-1652 spiral's range.
        overwrite: replace an existing non-empty ``out``; without it an existing folder raises.
        progress: show a tqdm progress bar.

    Returns:
        ``out``, complete: a ``synthetic.json`` with the parameters, counts and IDs is written last and the folder
        appears by an atomic rename, so an interrupted run never leaves a folder that looks complete.

    Raises:
        OutputExistsError: ``out`` exists, is not empty and ``overwrite`` is false.
        ValueError: a parameter is out of range.
    """
    from tqdm.auto import tqdm

    params = _resolve_params(layout, locations, test_locations, distractors, views, image_size, seed, altitudes)
    out = Path(out).expanduser()
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        plan = _plan(params)
        counts: dict[str, int] = {}
        scale = 2 * params["image_size"]
        regions = sorted({(loc.kind, loc.region) for loc in plan})
        by_region: dict[tuple[int, int], list[_Location]] = {}
        for loc in plan:
            by_region.setdefault((loc.kind, loc.region), []).append(loc)
        with tqdm(total=len(plan), desc="synthetic benchmark", unit="location", disable=not progress) as bar:
            for key in regions:
                region = _make_region(params["seed"], key[0], key[1], scale, _margin(max(params["altitudes"])))
                for loc in by_region[key]:
                    _generate_location(tmp, params, loc, region, counts)
                    bar.update(1)
        ids = {role: sorted(loc.id for loc in plan if loc.role == role) for role in ("train", "test", "distractor")}
        if params["layout"] == "sues200":
            quoted = ", ".join(f"'{i}'" for i in ids["train"])
            (tmp / "SUES-200-512x512" / "indexs.yaml").write_text(f"index : [{quoted}]\n", encoding="utf-8")
        info = {
            "generator": "skyrank.benchmarks.synthetic",
            "version": SYNTHETIC_VERSION,
            "license": "cc0-1.0",
            "params": params,
            "counts": dict(sorted(counts.items())),
            "train_ids": ids["train"],
            "test_ids": ids["test"],
            "distractor_ids": ids["distractor"],
        }
        (tmp / "synthetic.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
            out.rename(old)
            tmp.rename(out)
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            try:
                tmp.rename(out)
            except OSError as exc:  # someone else created it meanwhile
                raise OutputExistsError(f"{out} appeared while generating; not replaced") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ----------------------------------------------------------------------------------------------------------------
# the reader
# ----------------------------------------------------------------------------------------------------------------


@register_benchmark("synthetic")
class SyntheticBenchmark(University1652):
    """The synthetic benchmark, read in the University-1652 layout (``root`` = a :func:`generate_synthetic` folder).

    Generated data, dedicated to the public domain (CC0-1.0): image bytes may be published.
    """

    display_name: str = "SkyRank synthetic"
    license = "cc0-1.0"
    license_name = None
    license_link = "https://creativecommons.org/publicdomain/zero/1.0/"
    redistributable = True
    citation = SYNTHETIC_CITATION
    altitudes = ()
