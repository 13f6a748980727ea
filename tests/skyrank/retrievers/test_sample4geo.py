"""The ``sample4geo`` retriever: official key layout, preprocessing, features."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from skyrank.retrievers import create
from skyrank.retrievers.sample4geo import SAMPLE4GEO_CFG, Sample4GeoModel, checkpoint_filter_fn

ARCH = "convnext_atto"


def test_official_convnext_base_layout_has_343_keys() -> None:
    with torch.device("meta"):  # keys and shapes only, no memory or init time
        sd = Sample4GeoModel("convnext_base.fb_in22k_ft_in1k_384").state_dict()
    assert len(sd) == 343
    assert "logit_scale" in sd and "model.stem.0.weight" in sd and "model.head.norm.weight" in sd
    assert all(k == "logit_scale" or k.startswith("model.") for k in sd)
    assert tuple(sd["model.stem.0.weight"].shape) == (128, 3, 4, 4)
    assert float(Sample4GeoModel(ARCH).logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))


def test_cfg_is_sample4geo_preprocessing() -> None:
    assert SAMPLE4GEO_CFG.image_size == 384 and SAMPLE4GEO_CFG.interpolation == "bilinear"
    assert SAMPLE4GEO_CFG.embed_dim == 1024 and not SAMPLE4GEO_CFG.flip_sum
    assert "Sample4Geo" in SAMPLE4GEO_CFG.citation and SAMPLE4GEO_CFG.origin_url.endswith("Skyy93/Sample4Geo")


def test_image_size_and_embed_dim_follow_arch() -> None:
    r = create("sample4geo", arch=ARCH, image_size=40)
    assert r.image_size == 40 and r.embed_dim == 320 and r.arch == ARCH
    x = r.preprocess(Image.new("RGB", (70, 50), (255, 0, 0)))  # squash, no crop
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32
    assert float(x[0].mean()) == pytest.approx((1 - 0.485) / 0.229, abs=1e-4)  # ImageNet normalisation


def test_shared_backbone_same_features_for_both_views() -> None:
    torch.manual_seed(0)
    r = create("sample4geo", arch=ARCH, image_size=32)
    x = torch.randn(3, 3, 32, 32)
    a, b = r.embed(x, "drone"), r.embed(x, "satellite")
    assert torch.equal(a, b) and a.dtype == torch.float32
    assert torch.allclose(a.norm(dim=1), torch.ones(3), atol=1e-5)
    with pytest.raises(ValueError, match="view"):
        r.embed(x, "street")


def test_filter_passes_official_keys_and_maps_a_bare_timm_backbone() -> None:
    m = Sample4GeoModel(ARCH)
    official = m.state_dict()
    assert checkpoint_filter_fn(official).keys() == official.keys()
    bare = {k[len("model."):]: v for k, v in official.items() if k.startswith("model.")}
    bare["head.fc.weight"] = torch.zeros(1000, 320)  # timm's ImageNet classifier: dropped
    bare["head.fc.bias"] = torch.zeros(1000)
    mapped = checkpoint_filter_fn(bare)
    assert mapped.keys() == official.keys()
    compiled = {f"_orig_mod.{k}": v for k, v in official.items()}
    assert checkpoint_filter_fn(compiled).keys() == official.keys()
