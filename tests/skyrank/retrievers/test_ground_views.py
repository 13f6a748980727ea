"""Ground views (issue 20): Sample4Geo's per-benchmark panorama sizes, precomputed embeddings for every view, and
MCCG/SDPL refusing the benchmarks they were not made for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from skyrank.benchmarks import ImageRecord
from skyrank.errors import OptionError
from skyrank.retrievers import create
from skyrank.retrievers._base import check_dataset, retriever_info
from skyrank.retrievers.encode import encode_records
from skyrank.retrievers.sample4geo import RELEASED_WEIGHTS, ground_size, sample4geo_preprocess

ARCH = "convnext_atto"


def test_ground_sizes_are_sample4geos():
    assert ground_size("vigor") == (384, 768)  # int(1024 / 2048 * 768)
    assert ground_size("cvusa") == (140, 768) == ground_size("cvact")  # round(224 / 1232 * 768) = round(139.6)
    assert ground_size("cvusa", 256) == (93, 512)  # round(93.09)
    assert ground_size("cvusa", 64) == (32, 128)  # round(23.3), raised to the ConvNeXt's total stride
    assert ground_size("university1652-street") is None and ground_size(None) is None  # street photos: square
    assert set(RELEASED_WEIGHTS) == {"university1652", "vigor_same", "vigor_cross", "cvusa", "cvact"}
    assert RELEASED_WEIGHTS["cvact"][0].endswith("weights_e36_90.8149.pth")


def test_panorama_preprocessing_is_one_exact_opencv_squeeze():
    import cv2

    rng = np.random.default_rng(0)
    pano = rng.integers(0, 256, size=(120, 660, 3), dtype=np.uint8)  # 5.5:1, like CVUSA's 1232 x 224
    x = sample4geo_preprocess(pano, (14, 77))
    assert x.shape == (3, 14, 77)
    ref = cv2.resize(pano, (77, 14), interpolation=cv2.INTER_LINEAR_EXACT).astype(np.float32)
    ref = (ref - np.float32([0.485, 0.456, 0.406]) * 255) / (np.float32([0.229, 0.224, 0.225]) * 255)
    assert np.abs(x.numpy().transpose(1, 2, 0) - ref).max() < 1e-5


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_sample4geo_encodes_a_vigor_panorama_at_2_to_1(tmp_path, one_thread):
    torch.manual_seed(0)
    r = create("sample4geo", arch=ARCH, image_size=32, dataset="vigor", random_weights=True)
    assert r.dataset == "vigor" and r.input_size("ground") == (32, 64) and r.input_size("satellite") == (32, 32)
    cvusa = create("sample4geo", arch=ARCH, image_size=32, dataset="cvusa", random_weights=True)
    assert cvusa.input_size("ground") == (32, 64)
    unsaid = create("sample4geo", arch=ARCH, image_size=32, random_weights=True)
    assert unsaid.input_size("ground") == (32, 32)  # no benchmark said
    pano = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 80, 3), dtype=np.uint8))
    assert r.preprocess_view(pano, "ground").shape == (3, 32, 64)
    pano.save(tmp_path / "p.png")
    Image.new("RGB", (50, 50), (9, 9, 9)).save(tmp_path / "bad.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")  # a bad image gets a 32 x 64 blank row, then is reported
    records = [ImageRecord("p.png", "a", "ground"), ImageRecord("bad.jpg", "b", "ground")]
    res = encode_records(r, tmp_path, records, "ground", batch_size=2, progress=False, skip_bad_images=True)
    assert res.embeddings.shape == (1, r.embed_dim) and res.bad == ["bad.jpg"]
    direct = r.embed(r.preprocess_view(pano, "ground")[None], "ground").numpy()
    assert np.allclose(res.embeddings, direct, atol=1e-5)


def test_precomputed_embeds_ground_views(tmp_path):
    emb = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    np.savez(tmp_path / "e.npz", embeddings=emb, ids=np.asarray(["ground/Chicago/x.jpg", "satellite/Chicago/t.png"]))
    r = create("precomputed", checkpoint=tmp_path / "e.npz", dataset="vigor")
    out = r.embed_ids(["ground/Chicago/x.jpg"], "ground")
    assert np.allclose(out[0], emb[0] / np.linalg.norm(emb[0]), atol=1e-6)


@pytest.mark.parametrize("name", ["mccg", "sdpl"])
@pytest.mark.parametrize("dataset", ["vigor", "cvusa", "cvact", "university1652-street"])
def test_part_retrievers_refuse_ground_view_benchmarks(name, dataset):
    with pytest.raises(OptionError, match=f"made for university1652, sues200.*not {dataset}: .*street-level") as e:
        create(name, dataset=dataset)  # refused before any model is built
    assert "sample4geo" in e.value.hint and "precomputed" in e.value.hint


def test_which_retriever_takes_which_benchmark():
    for dataset in ("university1652", "sues200", "denseuav", "synthetic"):
        check_dataset("mccg", dataset)
        check_dataset("sdpl", dataset)
    for dataset in ("vigor", "cvusa", "cvact", "denseuav", "university1652-street"):
        check_dataset("sample4geo", dataset)
        check_dataset("precomputed", dataset)
    assert retriever_info("sample4geo").datasets is None
    assert "weights_e40_0.7786.pth" in retriever_info("sample4geo").weights_hint
