"""Cameras of the synthetic benchmark: north-up satellite tiles and oblique drone views of a region world.

A drone view casts the image corners onto the ground and applies the exact plane homography, then haze, colour
jitter, an occluder, blur and noise. Details: DEVELOPERS.md, "The synthetic benchmark".
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from skyrank.benchmarks.synthetic.world import _Region

_JPEG_QUALITY = 90
_FOV_TAN = math.tan(math.radians(30.0))  # half field of view of the drone camera: 60° square


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
    """One oblique drone rendering of the region around ``slot`` (DEVELOPERS.md, "The synthetic benchmark")."""
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


