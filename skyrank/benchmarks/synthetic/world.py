"""Region worlds of the synthetic benchmark: procedural satellite scenes drawn with numpy and PIL.

Locations are grouped into regions of :data:`REGION_SLOTS` (6) on a 3x2 grid, 0.7 tile widths apart, sharing one
style: region-mates are the hard negatives. Details: DEVELOPERS.md, "The synthetic benchmark".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from PIL import Image, ImageDraw

#: locations per region world (3 columns x 2 rows)
REGION_SLOTS = 6
_GRID_COLS, _GRID_ROWS = 3, 2
_SPACING = 0.7  # distance between neighbouring locations, in tile widths
#: the far corners of the widest, most oblique drone view lie ~1.51 x altitude/300 tile widths from the target
#: (+0.12 for shifts): the region world keeps that margin around its outer locations
_MARGIN_PER_300M, _MARGIN_EXTRA = 1.55, 0.15
#: seed streams: every region, location, view and the plan draw from their own generator
_SEED_REGION, _SEED_LOCATION, _SEED_VIEW, _SEED_PLAN = 1, 2, 3, 4


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


