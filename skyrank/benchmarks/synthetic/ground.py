"""Ground-level cameras of the synthetic benchmark and its VIGOR, CVUSA, CVACT, DenseUAV and University-1652 street
layouts (``skyrank synth --layout vigor|cvusa|cvact|denseuav|u1652-street``).

**Ground views** look across the same region world the satellite tile is cut from (:mod:`.world`), so a panorama and
its tile show one scene: a camera stands near the location's centre, ``CAMERA_HEIGHT`` tile widths above the flat
world, and each output pixel's ray is cast onto the ground plane (``t = h / -d_z``); rays that miss the ground
within ``MAX_RANGE`` tile widths, or point up, see a sky gradient with haze toward the horizon. A **panorama** is
equirectangular (azimuth 0-360° across the width, north at the centre, elevation +90° to -90° down the height; 2:1
for VIGOR and CVACT, CVUSA's horizon band at 1232:224); a **street photo** (University-1652 ``street``) is a
90° pinhole view at a random heading, pitched slightly down. Each view is rendered at 2x and box-downsampled, with
colour jitter and sensor noise, so it costs O(output pixels). The tall objects of the world are flat paint: the views
need not be pretty, only consistent with the tile.

The file names, split files, ``ACT_data.mat`` and GPS files come from :mod:`.trees` (the real layouts); this module
renders their pixels. Generated data, CC0-1.0.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skyrank.atomic import swap_in_dir
from skyrank.benchmarks.synthetic import trees
from skyrank.benchmarks.synthetic.camera import _drone_view, _encode, _satellite
from skyrank.benchmarks.synthetic.world import _SEED_VIEW, REGION_SLOTS, _make_region, _margin, _Region
from skyrank.errors import OptionError, OutputExistsError

#: the layouts this module writes (``generate_synthetic(layout=...)``)
GROUND_LAYOUTS: tuple[str, ...] = tuple(trees.TREES)
#: camera height and the farthest ground seen, in tile widths
CAMERA_HEIGHT = 0.06
MAX_RANGE = 0.9
#: panorama width : height per layout (CVUSA's panoramas are cropped to the horizon band, 1232 x 224)
PANO_ASPECT: dict[str, float] = {"vigor": 2.0, "cvact": 2.0, "cvusa": 1232 / 224}
_SKY_TOP, _SKY_HORIZON = np.array([96, 140, 206], np.float32), np.array([206, 214, 224], np.float32)
_REGIONS_CACHED = 4
#: defaults: image side, University-1652 street distractor IDs and street photos per train ID
GROUND_DEFAULTS: dict[str, int] = {"image_size": 64, "distractors": 4, "views": 2}
#: default locations per split (VIGOR: tiles per city): the fewest that give every split's gallery of every
#: benchmark read from the tree room for ``skyrank build``'s default ``--top-m 20`` (m images, m−1 negatives per
#: query), with a margin: VIGOR-cross 2 × 12 tiles, CVUSA 24 tiles, CVACT val 48 // 2 = 24, DenseUAV 12 × 6 tiles,
#: University-1652 street 24 train tiles (test: 24 + 4 distractors)
GROUND_LOCATIONS: dict[str, int] = {"vigor": 12, "cvusa": 24, "cvact": 48, "denseuav": 12, "u1652-street": 24}
#: the writers' options: every 5th CVACT test id 3 m from the previous one (two positives under the 5 m rule)
WRITER_OPTIONS: dict[str, dict[str, Any]] = {"cvact": {"near_every": 5}}


def _cast(region: _Region, cam: tuple[float, float], dirs: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Colours seen along unit-free ray directions ``dirs`` (H, W, 3: east, south, up in tile widths) from a camera
    at ``cam`` (world px), ``CAMERA_HEIGHT`` above the ground: ground texture where a ray hits within range, sky
    elsewhere, hazed toward the horizon."""
    world = np.asarray(region.image)
    s = region.scale
    dz = dirs[..., 2]
    t = np.where(dz < -1e-6, CAMERA_HEIGHT / np.maximum(-dz, 1e-6), np.inf)
    horiz = np.hypot(dirs[..., 0], dirs[..., 1])
    hit = t * horiz <= MAX_RANGE
    t = np.where(hit, t, 0.0)
    gx = np.clip(np.rint(cam[0] + t * dirs[..., 0] * s), 0, world.shape[1] - 1).astype(np.int64)
    gy = np.clip(np.rint(cam[1] + t * dirs[..., 1] * s), 0, world.shape[0] - 1).astype(np.int64)
    ground = world[gy, gx].astype(np.float32)
    dist = np.clip(t * horiz / MAX_RANGE, 0.0, 1.0)[..., None]
    elev = np.clip(dz / np.maximum(np.hypot(horiz, dz), 1e-6), -1.0, 1.0)[..., None]
    sky = _SKY_HORIZON + (_SKY_TOP - _SKY_HORIZON) * np.clip(elev, 0.0, 1.0) ** 0.6
    ground = ground * (1 - 0.5 * dist**2) + _SKY_HORIZON * 0.5 * dist**2
    out = np.where(hit[..., None], ground, sky)
    img = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img.resize(size, Image.BOX)


def _finish(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Colour jitter (white balance, brightness) and sensor noise."""
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.92, 1.08, 3).astype(np.float32) * rng.uniform(0.85, 1.15)
    arr = arr + rng.normal(0.0, rng.uniform(1.0, 3.0), arr.shape[:2])[..., None]
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def _camera(region: _Region, slot: tuple[float, float], rng: np.random.Generator) -> tuple[float, float]:
    s = region.scale
    return slot[0] * s + rng.uniform(-0.05, 0.05) * s, slot[1] * s + rng.uniform(-0.05, 0.05) * s


def panorama(region: _Region, slot: tuple[float, float], width: int, height: int,
             rng: np.random.Generator) -> Image.Image:  # fmt: skip
    """An equirectangular panorama at the location (north at the centre column). With ``width / height > 2`` the
    rows are the horizon band of a 2:1 panorama (CVUSA's crop: elevation ±90° · height / (width / 2))."""
    cam = _camera(region, slot, rng)
    w2, h2 = 2 * width, 2 * height
    az = (np.arange(w2, dtype=np.float64) + 0.5) / w2 * 2 * math.pi - math.pi  # 0 = north at the centre
    span = math.pi * min(1.0, 2 * height / width)  # elevation span covered by the rows
    el = span / 2 - (np.arange(h2, dtype=np.float64) + 0.5) / h2 * span - math.radians(rng.uniform(0, 3))
    az, el = np.meshgrid(az, el)
    dirs = np.stack([np.cos(el) * np.sin(az), -np.cos(el) * np.cos(az), np.sin(el)], axis=-1)
    return _finish(_cast(region, cam, dirs, (width, height)), rng)


def street_view(region: _Region, slot: tuple[float, float], size: int, rng: np.random.Generator) -> Image.Image:
    """A 90° pinhole photo from near the location at a random heading, pitched 5-20° down."""
    cam = _camera(region, slot, rng)
    heading, pitch = rng.uniform(0, 2 * math.pi), -math.radians(rng.uniform(5, 20))
    n = 2 * size
    x = ((np.arange(n) + 0.5) / n * 2 - 1)[None, :].repeat(n, 0)
    y = ((np.arange(n) + 0.5) / n * 2 - 1)[:, None].repeat(n, 1)
    fwd = np.array([math.sin(heading) * math.cos(pitch), -math.cos(heading) * math.cos(pitch), math.sin(pitch)])
    right = np.array([math.cos(heading), math.sin(heading), 0.0])
    up = np.cross(fwd, right)  # (east, south, up) is left-handed: this is the camera's up
    dirs = fwd + x[..., None] * right - y[..., None] * up
    return _finish(_cast(region, cam, dirs, (size, size)), rng)


class _Renderer:
    """The ``put`` of :mod:`.trees` that renders: location ``i`` is slot ``i mod 6`` of region ``i // 6``."""

    def __init__(self, root: Path, layout: str, image_size: int, seed: int) -> None:
        self.root, self.layout, self.size, self.seed = root, layout, image_size, seed
        self.regions: OrderedDict[int, _Region] = OrderedDict()
        self.counts: dict[str, int] = {}

    def region(self, index: int) -> _Region:
        if index not in self.regions:
            self.regions[index] = _make_region(self.seed, 2, index, 2 * self.size, _margin(300))
            while len(self.regions) > _REGIONS_CACHED:
                self.regions.popitem(last=False)
        self.regions.move_to_end(index)
        return self.regions[index]

    def __call__(self, rel: str, role: str, location: int, variant: int) -> None:
        region = self.region(location // REGION_SLOTS)
        slot = region.slots[location % REGION_SLOTS]
        rng = np.random.default_rng([self.seed, _SEED_VIEW, 7, location, variant, len(rel)])
        size = self.size
        if role == "tile":
            img = _satellite(region, slot, size, rng)
        elif role == "pano":
            aspect = PANO_ASPECT[self.layout]
            img = panorama(region, slot, 2 * size, max(8, int(round(2 * size / aspect))), rng)
        elif role == "street":
            img = street_view(region, slot, size, rng)
        elif role == "drone":  # DenseUAV: near-nadir views at 80/90/100 m (variant = height index)
            img = _drone_view(region, slot, size, 240.0 + 30.0 * variant, rng.uniform(0, 2 * math.pi), rng)
        else:
            raise ValueError(f"unknown image role {role!r}")
        suffix = rel.rsplit(".", 1)[-1].lower()
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == "tif":
            buf = io.BytesIO()
            img.save(buf, format="TIFF")
            path.write_bytes(buf.getvalue())
        else:
            path.write_bytes(_encode(img, "PNG" if suffix == "png" else "JPEG"))
        self.counts[role] = self.counts.get(role, 0) + 1


def ground_counts(layout: str, locations: int, distractors: int, views: int) -> dict[str, Any]:
    """The counts :mod:`.trees` writes for ``locations`` per split (VIGOR: tiles per city, as many train and test
    panoramas, so each tile is the positive of 2 panoramas as in the "balanced" split files)."""
    if layout == "vigor":
        return {c: (max(4, locations), max(4, locations), max(4, locations)) for c in trees.VIGOR_FULL}
    if layout == "cvusa":
        return {"train": locations, "test": locations}
    if layout == "cvact":
        return {"train": locations, "val": max(1, locations // 2), "test": locations}
    if layout == "denseuav":
        return {"train": locations, "test": locations}
    return {"train": locations, "train_per_id": views, "test": locations, "queries": 3 * locations + 1,
            "distractors": distractors}  # fmt: skip


def ground_params(layout: str, seed: int = 0, **given: int | None) -> dict[str, Any]:
    """The parameters of a tree: the layout's defaults (:data:`GROUND_LOCATIONS`, :data:`GROUND_DEFAULTS`) with
    the ``given`` ones (``locations``, ``distractors``, ``views``, ``image_size``; ``None`` = default) over them."""
    if layout not in GROUND_LAYOUTS:
        raise OptionError(f"--layout must be one of {', '.join(GROUND_LAYOUTS)}, got {layout!r}")
    params = {"layout": layout, "seed": int(seed), "locations": GROUND_LOCATIONS[layout], **GROUND_DEFAULTS}
    params.update({k: int(v) for k, v in given.items() if v is not None})
    if params["locations"] < (4 if layout == "vigor" else 2):
        raise OptionError(f"--locations must be at least {4 if layout == 'vigor' else 2} for --layout {layout}")
    if params["image_size"] < 16 or params["views"] < 1 or params["distractors"] < 0:
        raise OptionError("--image-size must be >= 16, --views >= 1 and --distractors >= 0")
    return params


def generate_ground_synthetic(
    out: str | Path,
    layout: str,
    *,
    locations: int | None = None,
    distractors: int | None = None,
    views: int | None = None,
    image_size: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic benchmark in the VIGOR, CVUSA, CVACT, DenseUAV or University-1652 street layout.

    Returns ``out``; the benchmark root is ``out/<VIGOR|CVUSA|CVACT|DenseUAV|University-Release>``. Written to a
    hidden sibling and renamed into place (atomic), with ``synthetic.json`` (parameters and counts).
    """
    from tqdm.auto import tqdm

    params = ground_params(layout, seed=seed, locations=locations, distractors=distractors, views=views,
                           image_size=image_size)  # fmt: skip
    out = Path(out).expanduser()
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    writer, _, sub, benches = trees.TREES[layout]
    counts = ground_counts(layout, params["locations"], params["distractors"], params["views"])
    try:
        render = _Renderer(tmp / sub, layout, params["image_size"], params["seed"])
        with tqdm(desc=f"synthetic {layout}", unit="image", disable=not progress) as bar:
            def put(rel: str, role: str, location: int, variant: int) -> None:
                render(rel, role, location, variant)
                bar.update(1)

            writer(tmp / sub, counts, put, **WRITER_OPTIONS.get(layout, {}))
        info = {"generator": "skyrank.benchmarks.synthetic.ground", "license": "cc0-1.0", "params": params,
                "root": sub, "benchmarks": list(benches), "counts": render.counts,
                "tree_counts": {k: list(v) if isinstance(v, tuple) else v for k, v in counts.items()}}  # fmt: skip
        (tmp / "synthetic.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        swap_in_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
