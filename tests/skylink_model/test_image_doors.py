"""Issue 21: every SkyLink door that takes a PIL image normalises it with ``skyrank.images.to_uint8_rgb``, so a
16-bit image opened with ``Image.open`` gives exactly what its 8-bit reference gives (PIL's own ``convert("RGB")``
turns it white): the processor (scoring and the pixel cache), the pair inputs, re-ranking, the listwise prompt
baseline, contact sheets and ``skyrank rerank``'s file reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from skylink_model.model import get_skylink_model
from tests.skyrank.test_images import sixteen_bit_pair


@pytest.fixture(scope="module")
def model(tiny_qwen2_vl_dir: Path):
    from skylink_model.config import SkyLinkConfig

    torch.manual_seed(0)
    m = get_skylink_model(SkyLinkConfig(base_model=str(tiny_qwen2_vl_dir), head_init="yes-no", seed=0))
    return m.eval()


def test_skylink_scoring_doors(model, tmp_path: Path) -> None:
    from skylink_model.rerank import rerank_query

    img16, ref = sixteen_bit_pair(tmp_path, size=(56, 56))
    other16, other = sixteen_bit_pair(tmp_path, size=(56, 84), seed=1)
    p16, p8 = model.process_images([img16])[0], model.process_images([ref])[0]
    torch.testing.assert_close(p16.pixel_values, p8.pixel_values, rtol=0, atol=0)
    b16, b8 = model.build_pair_inputs([img16], [other16]), model.build_pair_inputs([ref], [other])
    torch.testing.assert_close(b16["pixel_values"], b8["pixel_values"], rtol=0, atol=0)
    with torch.no_grad():
        for shared_prefix in (True, False):
            s16 = rerank_query(model, img16, [other16, img16], shared_prefix=shared_prefix)
            s8 = rerank_query(model, ref, [other, ref], shared_prefix=shared_prefix)
            torch.testing.assert_close(s16, s8)


def test_prompt_baseline_door(model, tmp_path: Path) -> None:
    from skylink_model.prompt_baseline import build_listwise_inputs

    img16, ref = sixteen_bit_pair(tmp_path, size=(56, 56))
    a = build_listwise_inputs(model.processor, img16, [img16, img16])
    b = build_listwise_inputs(model.processor, ref, [ref, ref])
    torch.testing.assert_close(a["pixel_values"], b["pixel_values"], rtol=0, atol=0)


def test_contact_sheet_door(tmp_path: Path) -> None:
    from skylink_model.report.sheets import contact_sheet

    img16, ref = sixteen_bit_pair(tmp_path)
    record = {"query_id": "q", "gt_id": "p", "positive_ids": ["p"], "positive_ranks": [1],
              "retrieved_ids": ["p", "a"], "retrieved_scores": [0.9, 0.8]}  # fmt: skip
    sheet16 = contact_sheet(record, lambda i: img16, thumb=32)
    sheet8 = contact_sheet(record, lambda i: ref, thumb=32)
    np.testing.assert_array_equal(np.asarray(sheet16), np.asarray(sheet8))


def test_rerank_file_reader_door(tmp_path: Path) -> None:
    from skylink_model.rerank_lists import _open

    _, ref = sixteen_bit_pair(tmp_path)  # writes sixteen-0.png
    np.testing.assert_array_equal(np.asarray(_open(tmp_path, "sixteen-0.png")), np.asarray(ref))
