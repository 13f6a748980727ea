"""Shared fixtures of the SkyLink tests: one tiny Qwen2-VL folder per session, small generated images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skylink_model.config import SkyLinkConfig
from skylink_model.testing import make_tiny_qwen2_vl


@pytest.fixture(scope="session")
def tiny_qwen2_vl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2-VL + processor folder (about 0.2M parameters), built once offline."""
    return make_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"), seed=0)


@pytest.fixture
def tiny_config(tiny_qwen2_vl_dir: Path) -> SkyLinkConfig:
    return SkyLinkConfig(base_model=str(tiny_qwen2_vl_dir), head_init="yes-no", seed=0)


def make_image(size: int | tuple[int, int], seed: int) -> Image.Image:
    """A random RGB image of ``size`` pixels (56-112 px keeps the tiny model fast)."""
    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture
def images() -> list[Image.Image]:
    """Eight images with mixed sizes (different numbers of image tokens, so rows need padding)."""
    sizes = [112, 56, 84, (112, 56), 56, 112, 84, 56]
    return [make_image(s, seed=i) for i, s in enumerate(sizes)]
