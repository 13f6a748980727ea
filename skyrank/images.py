"""The one bounded image decoder every retriever, the retriever trainer and the loaders use.

:func:`open_rgb` opens a file with PIL, checks its size against a pixel budget *before* decoding, reduces JPEGs on
decode (``draft``) when they are over the budget or larger than needed, converts any mode to 8-bit RGB (16-bit and
other high-bit-depth images are scaled, not clipped) and raises :class:`~skyrank.errors.BadImageError` with one
plain reason for anything it cannot read (missing file, dangling symbolic link, not an image, truncated, over the
budget). It never resizes: each retriever's ``preprocess`` resizes the way its original code does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from skyrank.errors import BadImageError

#: Default pixel budget (width x height) of one decoded image: 64 megapixels, 240x a 512x512 benchmark image and
#: far above any benchmark's images (University-1652 and SUES-200 are at most 1024x1024 per image).
DEFAULT_MAX_PIXELS = 64_000_000

_MAX_PIXELS = DEFAULT_MAX_PIXELS


def set_max_pixels(max_pixels: int | None) -> int:
    """Set the process-wide default budget of :func:`open_rgb` (``None``: the default); returns the previous one.

    ``skyrank build --max-pixels`` sets it once; DataLoader workers inherit it (fork) or receive it with the
    dataset (the datasets pass their own ``max_pixels``).
    """
    global _MAX_PIXELS
    previous = _MAX_PIXELS
    if max_pixels is not None and int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
    _MAX_PIXELS = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    return previous


def get_max_pixels() -> int:
    """The current process-wide pixel budget of :func:`open_rgb`."""
    return _MAX_PIXELS


def _why_missing(path: Path) -> str:
    if os.path.islink(path):
        return f"dangling symbolic link (points to {os.readlink(path)}, which does not exist)"
    return "file not found"


def to_uint8_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB, scaling high-bit-depth modes to 0-255 (PIL's own ``convert`` clips ``I;16`` / ``I``
    at 255, which turns a 16-bit image white).

    - ``I;16*`` (16-bit): ``round(v * 255 / 65535)``.
    - ``I`` (32-bit integer; PIL's mode for 16-bit PNGs in older versions): 16-bit when every value is in
      0..65535, scaled as above; other ranges are refused (their white level is unknown).
    - ``F`` (float): values in [0, 1] scaled by 255; other ranges are refused.
    - everything else (``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``CMYK``, ``YCbCr``, ``LA``, ...): PIL's ``convert``.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.int64)
        if mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise BadImageError(
                f"32-bit integer image with values {int(a.min())}..{int(a.max())}: its white level is unknown; "
                "convert it to 8 or 16 bits"
            )
        gray = ((a * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
            raise BadImageError(
                "floating-point image outside [0, 1]: its white level is unknown; convert it to 8 bits"
            )
        return Image.fromarray(np.rint(a * 255.0).astype(np.uint8), mode="L").convert("RGB")
    if mode == "RGB":
        return img
    return img.convert("RGB")


def as_uint8_rgb(images: Sequence[Any]) -> list[Any]:
    """Every PIL image of ``images`` through :func:`to_uint8_rgb`; anything else (arrays, tensors, processed
    inputs) as it is. For the doors that take a list of images (SkyLink scoring, exporting)."""
    return [to_uint8_rgb(i) if isinstance(i, Image.Image) else i for i in images]


def open_rgb(path: str | Path, *, draft_size: int | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode ``path`` as an 8-bit RGB PIL image, bounded by a pixel budget.

    Args:
        path: the image file.
        draft_size: the smallest side the caller needs; a JPEG is decoded at the largest reduction (1/2, 1/4, 1/8)
            that keeps both sides at least this large (``None``: full size unless over the budget).
        max_pixels: the budget (``None``: :func:`get_max_pixels`). An image over it is decoded reduced when it is a
            JPEG and a reduction of at most 1/8 brings it under; otherwise it is refused.

    Raises:
        BadImageError: the file is missing (or a dangling symbolic link), is not an image PIL can read, is truncated,
            is over the budget, or has a mode whose white level is unknown. The message is the reason alone; callers
            add the file name.
    """
    path = Path(path)
    budget = get_max_pixels() if max_pixels is None else int(max_pixels)
    if not path.exists():
        raise BadImageError(_why_missing(path))
    if path.is_dir():
        raise BadImageError("is a folder, not an image file")
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as e:
        raise BadImageError(f"over PIL's decompression-bomb limit ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"not an image PIL can read ({type(e).__name__}: {e})") from e
    with img:
        w, h = img.size
        if img.format == "JPEG" and (draft_size is not None or w * h > budget):
            want_w, want_h = w, h
            if draft_size is not None:
                want_w, want_h = min(w, int(draft_size)), min(h, int(draft_size))
            scale = 1
            while w * h / (scale * scale) > budget and scale < 8:
                scale *= 2
            want_w, want_h = min(want_w, -(-w // scale)), min(want_h, -(-h // scale))
            img.draft("RGB", (want_w, want_h))
            w, h = img.size
        if w * h > budget:
            raise BadImageError(
                f"{w}x{h} = {w * h / 1e6:.1f} megapixels, over the decode budget of {budget / 1e6:.1f} megapixels "
                "(--max-pixels); downscale the file or raise --max-pixels"
            )
        try:
            img.load()
            return to_uint8_rgb(img)
        except BadImageError:
            raise
        except Exception as e:  # truncated data, unsupported codec options, ...
            raise BadImageError(f"could not be decoded ({type(e).__name__}: {e})") from e
