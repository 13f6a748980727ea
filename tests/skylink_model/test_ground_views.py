"""SkyLink on ground-level queries (issue 20): prompts that name the views, an image budget that keeps a 2:1
panorama's shape, and the listwise prompt baseline (and its parser) on street views."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from skylink_model.backbones import apply_image_budget, fit_image, squashes_to_square
from skylink_model.config import DEFAULT_PROMPT, resolve_prompt, view_phrase, view_prompt
from skylink_model.prompt_baseline import build_listwise_inputs, build_listwise_prompt, parse_listwise_scores
from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank

PANORAMA_PROMPT = (
    "Does the given street-view panorama query image match the following satellite-view reference image?"
)


def test_prompts_name_the_views():
    assert view_prompt("ground", "satellite", panorama=True) == PANORAMA_PROMPT
    assert view_phrase("ground") == "street-view" and view_phrase("drone", panorama=True) == "drone-view"
    # the paper's prompt stays for drone/satellite data (Table 1); street-view queries get the views named
    assert resolve_prompt(DEFAULT_PROMPT, "drone", "satellite") == DEFAULT_PROMPT
    assert resolve_prompt(DEFAULT_PROMPT, "ground", "satellite", panorama=True) == PANORAMA_PROMPT
    assert resolve_prompt(DEFAULT_PROMPT, "ground", "satellite") == (
        "Does the given street-view query image match the following satellite-view reference image?"
    )  # University-1652's street photos are not panoramas
    assert resolve_prompt("views", "drone", "satellite") == (
        "Does the given drone-view query image match the following satellite-view reference image?"
    )
    assert resolve_prompt("Same place?", "ground", "satellite", panorama=True) == "Same place?"  # the user's text
    with pytest.raises(ValueError, match="views"):
        resolve_prompt("views", None, None)
    with pytest.raises(ValueError, match="view must be"):
        view_phrase("street")


def test_listwise_prompt_names_street_views_and_the_parser_still_reads_replies():
    text = build_listwise_prompt(3, views=("street-view panorama", "satellite-view"))
    assert text.startswith("The first image is a street-view panorama query. The 3 images after it are "
                           "satellite-view candidates")  # fmt: skip
    assert build_listwise_prompt(2) == build_listwise_prompt(2, views=("drone-view", "satellite-view"))
    reply = "Candidate 1: 2\nCandidate 2: 9.5\n**Candidate 3**: 10/10 (the road bends the same way)"
    assert parse_listwise_scores(reply, 3) == ([2.0, 9.5, 10.0], 0)


def _pano(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_qwen_budget_keeps_a_panorama_2_to_1(tiny_qwen2_vl_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen2_vl_dir)
    apply_image_budget(processor, 4 * 28 * 28, 256 * 28 * 28)  # the qwen2_vl family default
    assert not squashes_to_square(processor)
    pano = _pano(2048, 1024)
    assert fit_image(pano, processor) is pano
    # By hand (Qwen's smart_resize): 2048 x 1024 is over 256 x 28^2 pixels, so it is scaled by
    # sqrt(2048 * 1024 / 200704) = 3.23 and floored to multiples of 28: 616 x 308, i.e. 44 x 22 patches of 14 px,
    # 44 x 22 / 4 = 242 merged tokens: the panorama's shape at about a square image's token count.
    grid = processor.image_processor(images=[pano], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert grid == [1, 22, 44]
    inputs = build_listwise_inputs(processor, pano, [_pano(64, 64, 1), _pano(64, 64, 2)],
                                   views=("street-view panorama", "satellite-view"))  # fmt: skip
    assert inputs["image_grid_thw"][0].tolist() == [1, 22, 44]
    decoded = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "street-view panorama query" in decoded


def test_a_fixed_square_processor_gets_a_letterboxed_panorama():
    llava_like = SimpleNamespace(image_processor=SimpleNamespace(size={"height": 384, "width": 384},
                                                                 image_mean=[0.5, 0.5, 0.5]))  # fmt: skip
    assert squashes_to_square(llava_like)
    pano = Image.new("RGB", (40, 20), (200, 10, 10))
    boxed = fit_image(pano, llava_like)
    assert boxed.size == (40, 40)
    assert boxed.getpixel((0, 0)) == (128, 128, 128) and boxed.getpixel((0, 39)) == (128, 128, 128)
    assert boxed.getpixel((20, 20)) == (200, 10, 10) and boxed.getpixel((0, 10)) == (200, 10, 10)  # rows 10-29
    square = Image.new("RGB", (30, 30))
    assert fit_image(square, llava_like) is square


def _make_ground(root):
    """The tiny folder with street-view panoramas (112 x 56) as queries: VIGOR-like views."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = make_tiny_skyrank(root, n_locations=6, m=5)
    for path in sorted((data / "queries-toy").glob("*.parquet")):
        table = pq.read_table(path)
        n = table.num_rows
        jpegs = []
        for i in range(n):
            buf = io.BytesIO()
            _pano(112, 56, seed=i).save(buf, format="JPEG")
            jpegs.append(buf.getvalue())
        image = pa.StructArray.from_arrays(
            [pa.array(jpegs, pa.binary()), pa.array([f"{i}.jpg" for i in range(n)])], names=["bytes", "path"]
        )
        table = table.set_column(table.schema.get_field_index("view"), "view", pa.array(["ground"] * n))
        table = table.set_column(table.schema.get_field_index("image"), "image", image)
        pq.write_table(table, path)
    return data


def test_training_on_street_panoramas_saves_the_view_prompt(tmp_path, tiny_qwen2_vl_dir):
    import torch

    from skylink_model.config import SkyLinkConfig
    from skylink_model.data import load_skyrank_split
    from skylink_model.train import train_skylink

    data = _make_ground(tmp_path / "ds")
    split = load_skyrank_split(data, RETRIEVER_CONFIG, "train")
    assert (split.query_view, split.gallery_view, split.ground_is_panorama()) == ("ground", "satellite", True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = SkyLinkConfig(base_model=str(tiny_qwen2_vl_dir), k=3, batch_size=2, dtype="float32")
        train_skylink(config, data, RETRIEVER_CONFIG, out_dir=tmp_path / "run", max_steps=1, device="cpu",
                      progress=False, report_to=None)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "run" / "skylink_config.json").read_text())
    assert saved["prompt"] == PANORAMA_PROMPT
