"""``skyrank synth --layout vigor|cvusa|cvact|denseuav|u1652-street``: rendered trees in the real layouts, read by
the registered readers, ground views consistent with their tiles, deterministic."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skyrank.benchmarks import get_benchmark
from skyrank.benchmarks.synthetic import generate_synthetic
from skyrank.benchmarks.synthetic.ground import CAMERA_HEIGHT, WRITER_OPTIONS, ground_counts, ground_params
from skyrank.benchmarks.synthetic.trees import TREES, placeholder_source
from skyrank.errors import OptionError

SIZE = 24


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ground")
    return {layout: generate_synthetic(base / layout, layout, locations=4, image_size=SIZE, views=1, distractors=1,
                                       progress=False) for layout in TREES}  # fmt: skip


@pytest.mark.parametrize("layout", list(TREES))
def test_every_layout_reads_with_its_counts_and_images_decode(made: dict[str, Path], layout: str) -> None:
    _, _, sub, benches = TREES[layout]
    root = made[layout] / sub
    counts = ground_counts(layout, 4, 1, 1)
    for name in benches:
        bench = get_benchmark(name)
        rs = bench.load_split(root, "test", "d2s")
        assert rs.queries and rs.gallery
        if layout == "cvusa":
            assert len(rs.queries) == len(rs.gallery) == counts["test"]
        if layout == "denseuav":
            assert (len(rs.queries), len(rs.gallery)) == (4 * 3, 8 * 6)
        if layout == "u1652-street":
            assert (len(rs.queries), len(rs.gallery)) == (3 * 4 + 1, 4 + 1)
        for rec in (rs.queries[0], rs.gallery[0]):
            with Image.open(root / rec.image_id) as im:
                w, h = im.size
            if rec.view == "ground" and layout != "u1652-street":
                assert w == 2 * SIZE and abs(w / h - {"cvusa": 1232 / 224}.get(layout, 2.0)) < 0.3  # not squashed
            else:
                assert (w, h) == (SIZE, SIZE)


def _polar_correlation(pano: np.ndarray, tile: np.ndarray) -> float:
    """Correlation of a panorama's ground rows with the tile warped to them (the flat-world polar transform the
    renderer inverts: elevation φ < 0 sees the ground at CAMERA_HEIGHT / tan(-φ) tile widths)."""
    h, w = pano.shape[:2]
    size = tile.shape[0]
    el = math.pi / 2 - (np.arange(h) + 0.5) / h * math.pi
    az = (np.arange(w) + 0.5) / w * 2 * math.pi - math.pi
    rows = np.where(el < -0.15)[0]
    r = CAMERA_HEIGHT / np.tan(-el[rows])
    rows, r = rows[r < 0.45], r[r < 0.45]
    rr, aa = np.meshgrid(r, az, indexing="ij")
    x = np.clip(np.rint(size / 2 + rr * np.sin(aa) * size - 0.5), 0, size - 1).astype(int)
    y = np.clip(np.rint(size / 2 - rr * np.cos(aa) * size - 0.5), 0, size - 1).astype(int)
    obs = pano[rows].reshape(-1, 3) - pano[rows].reshape(-1, 3).mean(0)
    warped = tile[y, x].reshape(-1, 3)
    warped = warped - warped.mean(0)
    return float((obs * warped).sum() / np.sqrt((obs**2).sum() * (warped**2).sum()))


def test_a_panorama_looks_at_its_own_tile(made: dict[str, Path]) -> None:
    """Warped to the panorama's ground rows, the positive tile correlates best for most panoramas (random: 1 in
    16)."""
    root = made["vigor"] / "VIGOR"
    rs = get_benchmark("vigor_same").load_split(root, "test")
    tiles = {g.label: np.asarray(Image.open(root / g.image_id), dtype=np.float32) for g in rs.gallery}
    best = 0
    for q in rs.queries:
        pano = np.asarray(Image.open(root / q.image_id), dtype=np.float32)
        scores = {label: _polar_correlation(pano, tile) for label, tile in tiles.items()}
        best += max(scores, key=scores.__getitem__) == q.label
    assert len(tiles) == 16 and best >= 0.5 * len(rs.queries), (best, len(rs.queries))


def test_deterministic_and_refuses_bad_options(tmp_path: Path) -> None:
    a = generate_synthetic(tmp_path / "a", "cvusa", locations=2, image_size=16, progress=False)
    b = generate_synthetic(tmp_path / "b", "cvusa", locations=2, image_size=16, progress=False)

    def digest(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip

    assert digest(a) == digest(b)
    with pytest.raises(OptionError, match="--locations"):
        generate_synthetic(tmp_path / "c", "vigor", locations=2, progress=False)


@pytest.mark.parametrize("layout", list(TREES))
def test_default_counts_fit_builds_default_top_m(tmp_path: Path, layout: str) -> None:
    """The tree ``skyrank synth --layout <layout>`` writes at its default counts (here with placeholder pixels),
    read back through every reader of the tree, gives every split and direction ``skyrank build`` reads a gallery
    with room for the default ``--top-m`` (the build's own check; explicit positives, CVACT's 5 m rule, leave m−1
    negatives too)."""
    import inspect

    from skyrank.build import _check_top_m, build_dataset

    top_m = inspect.signature(build_dataset).parameters["top_m"].default
    writer, _, sub, benches = TREES[layout]
    p = ground_params(layout)
    root = tmp_path / sub
    counts = ground_counts(layout, p["locations"], p["distractors"], p["views"])
    writer(root, counts, placeholder_source(root), **WRITER_OPTIONS.get(layout, {}))
    for name in benches:
        bench = get_benchmark(name)
        layouts = {(s, d): bench.load_split(root, s, d) for s in ("train", "test") for d in bench.directions}
        _check_top_m(layouts, top_m)
        for rs in layouts.values():
            assert rs.queries and len(rs.gallery) >= top_m
            assert all(len(rs.gallery) - len(q.positives) >= top_m - 1 for q in rs.queries if q.positives)
