"""The one bounded decoder: high-bit-depth scaling against a reference conversion, unreadable files, the pixel
budget (JPEG reduced on decode, other formats refused before decoding)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skyrank.errors import BadImageError
from skyrank.images import DEFAULT_MAX_PIXELS, open_rgb


def _reference_8bit(a16: np.ndarray) -> np.ndarray:
    """The textbook conversion: round(v / 65535 * 255), in float64."""
    return np.rint(a16.astype(np.float64) / 65535.0 * 255.0).astype(np.uint8)


def sixteen_bit_pair(
    tmp_path: Path, size: tuple[int, int] = (40, 56), seed: int = 0
) -> tuple[Image.Image, Image.Image]:
    """(a 16-bit PNG opened with ``Image.open``, as a caller hands it to SkyRank; its 8-bit reference as RGB).

    The 16-bit values are the 8-bit ones times 257, so the exact conversion gives the reference back bit for bit;
    PIL's own ``convert("RGB")`` of the 16-bit image is white almost everywhere. Every door of issue 21 is tested
    with it: the door's output for the 16-bit image must equal its output for the reference.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    a8 = rng.integers(0, 256, size=(h, w), dtype=np.uint8)
    a8[:, : w // 2] //= 2  # some structure, so a resize or a model sees more than noise
    path = tmp_path / f"sixteen-{seed}.png"
    Image.fromarray(a8.astype(np.uint16) * 257).save(path)
    img16 = Image.open(path)
    img16.load()
    assert img16.mode in ("I;16", "I") and np.asarray(img16.convert("RGB")).mean() > 200  # clipping would whiten
    return img16, Image.fromarray(a8, mode="L").convert("RGB")


def test_the_pair_agrees_through_the_normaliser(tmp_path: Path) -> None:
    from skyrank.images import as_uint8_rgb, to_uint8_rgb

    img16, ref = sixteen_bit_pair(tmp_path)
    np.testing.assert_array_equal(np.asarray(to_uint8_rgb(img16)), np.asarray(ref))
    assert as_uint8_rgb([img16, "not an image"])[1] == "not an image"


def test_load_skyrank_door_embedded_16_bit_images(tmp_path: Path) -> None:
    """Images decoded by ``datasets`` from embedded bytes (``load_skyrank``'s door) are normalised too."""
    import datasets

    from skyrank.loading import ImageResolver

    img16, ref = sixteen_bit_pair(tmp_path)
    png = (tmp_path / "sixteen-0.png").read_bytes()
    table = datasets.Dataset.from_dict(
        {"image_id": ["a/1.png"], "image": [{"bytes": png, "path": "1.png"}]},
        features=datasets.Features({"image_id": datasets.Value("string"), "image": datasets.Image()}),
    )
    out = ImageResolver([table])("a/1.png")
    assert out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 65536, size=(24, 40), dtype=np.uint16)
    a16[0, :4] = [0, 65535, 257, 32768]
    path = tmp_path / "g16.png"
    Image.fromarray(a16).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # PIL's own convert("RGB") of this is all white
    out = np.asarray(open_rgb(path))
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8
    ref = _reference_8bit(a16)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], ref)
    assert out[0, :4, 0].tolist() == [0, 255, 1, 128]
    assert 100 < out.mean() < 155  # not white


def test_32_bit_integer_and_float_images(tmp_path: Path) -> None:
    a = np.arange(0, 65536, 256, dtype=np.int32).reshape(16, 16)
    Image.fromarray(a, mode="I").save(tmp_path / "i32.tif")
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "i32.tif"))[..., 1], _reference_8bit(a))
    Image.fromarray(a * 100, mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(BadImageError, match="white level"):
        open_rgb(tmp_path / "wide.tif")
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(np.asarray(open_rgb(tmp_path / "f.tif"))[..., 0], np.rint(f * 255).astype(np.uint8))


def test_ordinary_modes_match_pil(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgba = Image.fromarray(rng.integers(0, 256, size=(8, 8, 4), dtype=np.uint8), mode="RGBA")
    rgba.save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "a.png")), np.asarray(rgba.convert("RGB")))
    pal = rgba.convert("RGB").convert("P")
    pal.save(tmp_path / "p.png")
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "p.png")), np.asarray(pal.convert("RGB")))


def test_unreadable_files_say_why(tmp_path: Path) -> None:
    with pytest.raises(BadImageError, match="file not found"):
        open_rgb(tmp_path / "missing.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "link.jpg")
    with pytest.raises(BadImageError, match="dangling symbolic link"):
        open_rgb(tmp_path / "link.jpg")
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(BadImageError, match="not an image"):
        open_rgb(tmp_path / "text.jpg")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="(?i)truncated|could not be decoded"):
        open_rgb(tmp_path / "cut.jpg")


def test_pixel_budget_reduces_jpeg_and_refuses_png(tmp_path: Path) -> None:
    big = Image.fromarray(np.random.default_rng(2).integers(0, 256, size=(256, 320, 3), dtype=np.uint8))
    big.save(tmp_path / "big.jpg", quality=90)
    big.save(tmp_path / "big.png")
    assert open_rgb(tmp_path / "big.jpg").size == (320, 256)  # far under the default budget: untouched
    assert DEFAULT_MAX_PIXELS >= 64_000_000
    reduced = open_rgb(tmp_path / "big.jpg", max_pixels=100 * 100)  # JPEG: decoded at 1/4 scale
    assert reduced.size == (80, 64) and reduced.size[0] * reduced.size[1] <= 100 * 100
    with pytest.raises(BadImageError, match=r"320x256 = 0.1 megapixels, over the decode budget.*--max-pixels"):
        open_rgb(tmp_path / "big.png", max_pixels=100 * 100)
    with pytest.raises(BadImageError, match="over the decode budget"):
        open_rgb(tmp_path / "big.jpg", max_pixels=10)  # more than 1/8 needed: refused
    assert open_rgb(tmp_path / "big.jpg", draft_size=100).size == (160, 128)  # training's reduced decode
