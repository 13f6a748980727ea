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
    r = create("sample4geo", arch=ARCH, image_size=40, random_weights=True)
    assert r.image_size == 40 and r.embed_dim == 320 and r.arch == ARCH
    x = r.preprocess(Image.new("RGB", (70, 50), (255, 0, 0)))  # squash, no crop
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32
    assert float(x[0].mean()) == pytest.approx((1 - 0.485) / 0.229, abs=1e-4)  # ImageNet normalisation


def test_shared_backbone_same_features_for_both_views() -> None:
    torch.manual_seed(0)
    r = create("sample4geo", arch=ARCH, image_size=32, random_weights=True)
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
    bare = {k[len("model.") :]: v for k, v in official.items() if k.startswith("model.")}
    bare["head.fc.weight"] = torch.zeros(1000, 320)  # timm's ImageNet classifier: dropped
    bare["head.fc.bias"] = torch.zeros(1000)
    mapped = checkpoint_filter_fn(bare)
    assert mapped.keys() == official.keys()
    compiled = {f"_orig_mod.{k}": v for k, v in official.items()}
    assert checkpoint_filter_fn(compiled).keys() == official.keys()


def _original_pipeline(path, size: int) -> torch.Tensor:
    """Sample4Geo's eval transform written directly with OpenCV: imread, BGR->RGB, INTER_LINEAR_EXACT, Normalize."""
    import cv2
    import numpy as np

    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR_EXACT)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
    inv = np.reciprocal(np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0)
    return torch.from_numpy(((img.astype(np.float32) - mean) * inv).transpose(2, 0, 1).copy())


@pytest.mark.parametrize(
    ("fmt", "height", "width", "kwargs"),
    [
        ("JPEG", 512, 448, {"quality": 90, "subsampling": 2}),  # larger than 384: shrunk, no antialiasing
        ("JPEG", 200, 260, {"quality": 95, "subsampling": 0}),  # smaller: enlarged
        ("PNG", 500, 500, {}),
        ("PNG", 120, 96, {}),
    ],
)
def test_preprocess_matches_the_original_opencv_pipeline(tmp_path, fmt, height, width, kwargs) -> None:
    import numpy as np

    rng = np.random.default_rng(height)
    yy, xx = np.mgrid[0:height, 0:width]
    texture = 60 * np.sin(xx * 1.7 + yy * 0.9)[..., None] + rng.integers(0, 120, (height, width, 3))
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(np.clip(texture + 60, 0, 255).astype(np.uint8)).save(path, fmt, **kwargs)
    r = create("sample4geo", arch=ARCH, random_weights=True)  # 384 px
    with Image.open(path) as img:
        ours = r.preprocess(img)
    reference = _original_pipeline(path, 384)
    assert ours.shape == (3, 384, 384) and ours.dtype == torch.float32
    assert float((ours - reference).abs().max()) <= 1e-6
    if height > 384:  # torchvision's antialiased resize (SkyRank's earlier preprocessing) is measurably different
        from torchvision.transforms import functional as TF

        with Image.open(path) as img:
            old = TF.resize(TF.pil_to_tensor(img.convert("RGB")), [384, 384], antialias=True).float() / 255
        old = TF.normalize(old, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        assert float((old - reference).abs().max()) > 0.05


def test_preprocess_applies_exif_orientation_like_cv2_imread(tmp_path) -> None:
    import numpy as np

    arr = np.zeros((60, 100, 3), dtype=np.uint8)
    arr[:, :50] = (250, 10, 10)  # red left half: after a 90-degree EXIF rotation it is a top or bottom half
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW on display
    Image.fromarray(arr).save(tmp_path / "o.jpg", quality=95, exif=exif)
    r = create("sample4geo", arch=ARCH, image_size=48, random_weights=True)
    with Image.open(tmp_path / "o.jpg") as img:
        ours = r.preprocess(img)
    assert float((ours - _original_pipeline(tmp_path / "o.jpg", 48)).abs().max()) <= 1e-6
