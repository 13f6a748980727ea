"""Tiny fake benchmark trees for tests: real (small) JPEG/PNG files in the exact on-disk layouts.

- :func:`make_university1652` writes ``University-Release``'s layout (layumi/University1652-Baseline README):
  drone ``<ID>/image-01.jpeg`` …, satellite ``<ID>/<ID>.jpg``, plus ``train/street`` and an empty ``train/google``
  class folder that readers must ignore.
- :func:`make_sues200` writes SUES-200 in the raw archive layout (``satellite-view/<ID>/0.png``,
  ``drone_view_512/<ID>/<alt>/<k>.jpg``, optional ``indexs.yaml``), the split layout written by
  ``Reza-Zhu/SUES-200-Benchmark`` ``script/split_datasets.py`` (``Training/``/``Testing/``), or its lowercase variant.

Each image is a flat colour derived from (ID, view, index) with a small square, so files differ; the helpers
never depend on the synthetic benchmark generator.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw


def write_image(path: Path, seed: str, size: int = 16) -> Path:
    """Write a ``size``×``size`` RGB image (JPEG or PNG from the suffix) whose colours depend on ``seed``."""
    h = zlib.crc32(seed.encode())
    colour = (h & 255, (h >> 8) & 255, (h >> 16) & 255)
    img = Image.new("RGB", (size, size), colour)
    q = max(size // 4, 1)
    ImageDraw.Draw(img).rectangle([q, q, 2 * q, 2 * q], fill=(255 - colour[0], 255 - colour[1], 255 - colour[2]))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _drone(folder: Path, cls: str, views: int, size: int) -> None:
    for k in range(1, views + 1):
        write_image(folder / cls / f"image-{k:02d}.jpeg", f"{folder.name}/{cls}/drone/{k}", size)


def _satellite(folder: Path, cls: str, size: int) -> None:
    write_image(folder / cls / f"{cls}.jpg", f"{cls}/satellite", size)


def make_university1652(
    root: str | Path,
    train_ids: Iterable[str] = ("0001", "0002"),
    test_ids: Iterable[str] = ("0100", "0101", "0102"),
    distractor_ids: Iterable[str] = ("0900", "0901"),
    views: int = 2,
    size: int = 16,
) -> Path:
    """A tiny ``University-Release`` tree at ``root``; returns ``root``.

    ``train/{drone,satellite}`` hold ``train_ids``; ``test/query_*`` hold ``test_ids``; ``test/gallery_*`` hold
    ``test_ids`` + ``distractor_ids``. Each drone class folder has ``views`` images, each satellite folder one.
    """
    root = Path(root)
    train_ids, test_ids, distractor_ids = list(train_ids), list(test_ids), list(distractor_ids)
    for cls in train_ids:
        _drone(root / "train" / "drone", cls, views, size)
        _satellite(root / "train" / "satellite", cls, size)
    if train_ids:  # views the readers must ignore
        write_image(root / "train" / "street" / train_ids[0] / "street-01.jpg", "street", size)
        (root / "train" / "google" / train_ids[0]).mkdir(parents=True, exist_ok=True)
    for cls in test_ids:
        _drone(root / "test" / "query_drone", cls, views, size)
        _satellite(root / "test" / "query_satellite", cls, size)
    for cls in test_ids + distractor_ids:
        _drone(root / "test" / "gallery_drone", cls, views, size)
        _satellite(root / "test" / "gallery_satellite", cls, size)
    return root


def make_university1652_placeholders(
    root: str | Path, train: int = 701, test: int = 701, distractors: int = 250, views: int = 54
) -> Path:
    """``University-Release``'s layout at its full counts (defaults) with *empty* image files: for what reads only
    the folder listing (``skyrank build --dry-run``); any decode would fail. As the release, ``0000`` (a test ID)
    has one drone view more (``image-55.jpeg``): test D2S 37,855 queries / 951 gallery, S2D 701 / 51,355."""
    root = Path(root)
    test_ids = [f"{i:04d}" for i in range(test)]
    gallery_ids = test_ids + [f"{i:04d}" for i in range(test, test + distractors)]
    train_ids = [f"{i:04d}" for i in range(test + distractors, test + distractors + train)]

    def touch(folder: Path, ids: list[str], drone: bool) -> None:
        for cls in ids:
            (folder / cls).mkdir(parents=True)
            names = [f"image-{k:02d}.jpeg" for k in range(1, views + 1 + (cls == "0000"))] if drone else [f"{cls}.jpg"]
            for name in names:
                (folder / cls / name).touch()

    touch(root / "train" / "drone", train_ids, True)
    touch(root / "train" / "satellite", train_ids, False)
    touch(root / "test" / "query_drone", test_ids, True)
    touch(root / "test" / "query_satellite", test_ids, False)
    touch(root / "test" / "gallery_drone", gallery_ids, True)
    touch(root / "test" / "gallery_satellite", gallery_ids, False)
    return root


def write_index_file(path: str | Path, train_ids: Iterable[str]) -> Path:
    """An ``indexs.yaml`` in the official format: ``index : ['0001', '0002', ...]``."""
    path = Path(path)
    path.write_text("index : [" + ", ".join(f"'{i}'" for i in train_ids) + "]\n", encoding="utf-8")
    return path


def make_sues200(
    root: str | Path,
    layout: str = "raw",
    train_ids: Sequence[str] = ("0001", "0002", "0003"),
    test_ids: Sequence[str] = ("0004", "0005"),
    altitudes: Sequence[str] = ("150", "200"),
    frames: int = 2,
    size: int = 16,
    write_index: bool = True,
) -> Path:
    """A tiny SUES-200 tree at ``root`` in ``layout`` ``"raw"``, ``"split"`` or ``"lower"``; returns ``root``.

    ``raw``: ``satellite-view/<ID>/0.png`` and ``drone_view_512/<ID>/<alt>/<k>.jpg`` (k = 0 … frames-1) for every
    ID, and ``indexs.yaml`` listing ``train_ids`` when ``write_index``.
    ``split``/``lower``: what ``split_datasets.py`` writes from that archive, per altitude:
    ``Training/<alt>/{drone,satellite}/<train ID>``, ``Testing/<alt>/{query_drone,query_satellite}/<test ID>``,
    ``Testing/<alt>/{gallery_drone,gallery_satellite}/<every ID>`` (``train``/``test`` for ``lower``).
    """
    root = Path(root)
    all_ids = sorted({*train_ids, *test_ids})

    def drone(folder: Path, cls: str, alt: str) -> None:
        for k in range(frames):
            write_image(folder / f"{k}.jpg", f"{cls}/{alt}/drone/{k}", size)

    def satellite(folder: Path, cls: str) -> None:
        write_image(folder / "0.png", f"{cls}/satellite", size)

    if layout == "raw":
        for cls in all_ids:
            satellite(root / "satellite-view" / cls, cls)
            for alt in altitudes:
                drone(root / "drone_view_512" / cls / alt, cls, alt)
        if write_index:
            write_index_file(root / "indexs.yaml", train_ids)
        return root
    if layout not in ("split", "lower"):
        raise ValueError(f"layout must be 'raw', 'split' or 'lower', got {layout!r}")
    train_top, test_top = ("Training", "Testing") if layout == "split" else ("train", "test")
    for alt in altitudes:
        for cls in train_ids:
            drone(root / train_top / alt / "drone" / cls, cls, alt)
            satellite(root / train_top / alt / "satellite" / cls, cls)
        for cls in test_ids:
            drone(root / test_top / alt / "query_drone" / cls, cls, alt)
            satellite(root / test_top / alt / "query_satellite" / cls, cls)
        for cls in all_ids:
            drone(root / test_top / alt / "gallery_drone" / cls, cls, alt)
            satellite(root / test_top / alt / "gallery_satellite" / cls, cls)
    return root
