from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import skyrank.retrievers.sdpl as sdpl_mod
from skyrank.errors import CheckpointMismatchError
from skyrank.retrievers._base import create
from skyrank.retrievers._parts import normalize_parts
from skyrank.retrievers.sdpl import (
    SDPLModel,
    checkpoint_filter_fn,
    official_state_dict,
    read_opts,
    shifting_dense_parts,
)

SIZE = 256  # the smallest input the shifting-dense partition accepts (16x16 map); 512 is the real size


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared CPU, OpenMP threads waiting on a busy core cost 10-30x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def source_model() -> SDPLModel:
    torch.manual_seed(0)
    model = SDPLModel(nclasses=701)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
        for p in model.model_1.shift_blocks.parameters():  # non-uniform fusion weights
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory, source_model: SDPLModel) -> Path:
    path = tmp_path_factory.mktemp("sdpl") / "net_350.pth"
    torch.save(official_state_dict(source_model), path)
    return path


@pytest.fixture(scope="module")
def retriever(official_file: Path) -> sdpl_mod.SDPLRetriever:
    return create("sdpl", checkpoint=official_file, image_size=SIZE)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_official_key_layout(source_model: SDPLModel) -> None:
    sd = official_state_dict(source_model)
    assert len(sd) == 772
    assert sum(k.startswith("model_2.") for k in sd) == 341
    assert sum(k.startswith("model_1.") for k in sd) == 341
    for key in (
        "model_1.model.conv1.weight",
        "model_1.model.layer4.2.bn3.running_var",
        "model_1.model.fc.weight",
        "model_1.gem0.p",
        "model_1.gem9.p",
        "model_1.bn.running_mean",
        "model_1.shift_blocks.0.weight",
        "model_1.shift_blocks.8.bias",
        "classifier0.add_block.0.weight",
        "classifier9.add_block.1.num_batches_tracked",
        "classifier5.classifier.0.weight",
        "model_2.model.layer1.0.conv1.weight",
    ):
        assert key in sd, key
    assert "model_1.bn.weight" not in sd  # affine=False
    assert {k.split(".")[1] for k in sd if k.startswith("model_1.shift_blocks")} == {"shift_blocks"}
    assert {k.split(".")[2] for k in sd if k.startswith("model_1.shift_blocks")} == {"0", "4", "6", "8"}
    assert tuple(sd["model_1.gem3.p"].shape) == (2048,)
    assert tuple(sd["classifier0.classifier.0.weight"].shape) == (701, 512)
    assert source_model.model_1.model.layer4[0].conv2.stride == (1, 1)


def test_features_shape_norm_views_and_flip_sum(retriever: sdpl_mod.SDPLRetriever, image: torch.Tensor) -> None:
    r = retriever
    assert r.embed_dim == 5120 and r.image_size == SIZE and r.cfg.flip_sum and r.cfg.interpolation == "bicubic"
    with torch.no_grad():
        raw = r.model(image)
        raw_flip = r.model(torch.flip(image, dims=[3]))
    assert raw.shape == (1, 512, 10)
    ff = raw + raw_flip
    manual = (ff / (ff.norm(p=2, dim=1, keepdim=True) * math.sqrt(10))).view(1, -1)
    emb = r.embed(image, "drone")
    assert emb.shape == (1, 5120) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, manual)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1))


def test_both_views_share_model_1(retriever: sdpl_mod.SDPLRetriever, image: torch.Tensor) -> None:
    """Both views run through the same ``model_1`` (the trunk is swapped for a cheap map to keep CPU time low)."""
    r = copy.copy(retriever)
    r.model = copy.deepcopy(retriever.model)
    r.model.model_1.forward_map = lambda x: F.avg_pool2d(x, 16).repeat(1, 683, 1, 1)[:, :2048].relu()  # type: ignore
    drone, satellite = r.embed(image, "drone"), r.embed(image, "satellite")
    assert drone.shape == (1, 5120) and satellite.dtype == torch.float32
    torch.testing.assert_close(drone, satellite)
    torch.testing.assert_close(satellite.norm(dim=1), torch.ones(1))
    with pytest.raises(ValueError):
        r.embed(image, "street")


def test_official_module_prefixed_and_deduplicated_files_load_the_same_weights(
    tmp_path: Path, official_file: Path, retriever: sdpl_mod.SDPLRetriever, source_model: SDPLModel
) -> None:
    sd = torch.load(official_file, weights_only=True)
    wrapped = tmp_path / "net_dp.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, wrapped)  # DataParallel fallback of SDPL's load_network
    plain = tmp_path / "net_nodup.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("model_2.")}, plain)
    model = copy.deepcopy(retriever.model)
    for path in (official_file, wrapped, plain):
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        sdpl_mod.load_checkpoint(model, path)
        for k, v in source_model.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), k


def test_mismatched_checkpoint_names_keys(
    tmp_path: Path, official_file: Path, retriever: sdpl_mod.SDPLRetriever
) -> None:
    sd = torch.load(official_file, weights_only=True)
    del sd["classifier3.add_block.0.bias"]
    sd["model_1.classifier0.add_block.0.bias"] = torch.zeros(512)  # classifiers are top-level, not under model_1
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(CheckpointMismatchError) as e:
        sdpl_mod.load_checkpoint(retriever.model, bad)
    assert "classifier3.add_block.0.bias" in str(e.value)
    assert "model_1.classifier0.add_block.0.bias" in str(e.value)


def test_unshared_model_2_is_refused() -> None:
    sd = {"model_1.model.conv1.weight": torch.zeros(2), "model_2.model.conv1.weight": torch.ones(2)}
    with pytest.raises(CheckpointMismatchError, match="unshared"):
        checkpoint_filter_fn(sd)
    sd["model_2.model.conv1.weight"] = torch.zeros(2)
    assert list(checkpoint_filter_fn(sd)) == ["model_1.model.conv1.weight"]


def test_gem_p_parameters_never_take_effect(source_model: SDPLModel) -> None:
    fmap = torch.rand(1, 2048, 16, 16, generator=torch.Generator().manual_seed(2))
    backbone = copy.deepcopy(source_model.model_1)
    with torch.no_grad():
        expected = backbone.pool(fmap)
        for i in range(10):
            getattr(backbone, f"gem{i}").p.fill_(1.0)
        torch.testing.assert_close(backbone.pool(fmap), expected)
    assert expected.shape == (1, 2048, 10)


def test_shifting_dense_parts_reproduce_the_original_quirks() -> None:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) + 0.1  # p = 2, c = 8
    parts = shifting_dense_parts(x)
    assert len(parts) == 3 and all(len(ps) == 10 for ps in parts)
    sides = [4, 8, 12, 16, 8, 12, 16, 12, 16, 16]
    assert [ps.shape[-1] for ps in parts[0]] == sides
    # first shift (-2, -2) on the untouched map, checked with masks
    s0 = parts[0]
    torch.testing.assert_close(s0[0], x[..., 4:8, 4:8])
    torch.testing.assert_close(s0[4], x[..., 2:10, 2:10])
    torch.testing.assert_close(s0[7], x[..., 0:12, 0:12])
    hollow = x[..., 0:12, 0:12].clone()
    hollow[..., 4:8, 4:8] = 0
    torch.testing.assert_close(s0[5], hollow)
    outer = x.clone()
    outer[..., 0:12, 0:12] = 0
    torch.testing.assert_close(s0[3], outer)
    torch.testing.assert_close(s0[9], outer)
    # part 6: the ring is re-placed at the *unshifted* centre (rows/cols 2..14), on top of the outer remainder
    ring = x[..., 0:12, 0:12].clone()
    ring[..., 2:10, 2:10] = 0
    expected6 = outer.clone()
    expected6[..., 2:14, 2:14] += ring
    torch.testing.assert_close(s0[6], expected6)
    # the working map keeps its zeroed window: the (0, 0) shift's central parts are all zero
    assert torch.count_nonzero(parts[1][0]) == 0 and torch.count_nonzero(parts[1][4]) == 0
    with pytest.raises(ValueError, match="multiple of 8"):
        shifting_dense_parts(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError, match=">= 16"):
        shifting_dense_parts(torch.rand(1, 3, 8, 8))


def test_bf16_autocast_keeps_pooling_and_heads_fp32(retriever: sdpl_mod.SDPLRetriever) -> None:
    """Under autocast the trunk hands a low-precision map to the head; pooling (pow 3) and heads must stay fp32.

    The trunk is swapped for a fixed map (a bf16 ResNet-50 at 256 px takes ~20 s on a CPU without bf16 units);
    the map is what a bf16 trunk would return: bf16 values of realistic post-ReLU magnitude.
    """
    g = torch.Generator().manual_seed(5)
    fmap32 = torch.rand(1, 2048, 16, 16, generator=g) ** 4 * 40  # sparse-ish, large activations
    fmap16 = fmap32.to(torch.bfloat16)
    model = copy.deepcopy(retriever.model)
    with torch.no_grad():
        model.model_1.forward_map = lambda x: fmap32  # type: ignore[method-assign]
        ref = normalize_parts(model(torch.zeros(1)))
        model.model_1.forward_map = lambda x: fmap16  # type: ignore[method-assign]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.zeros(1))
            pooled = model.model_1(torch.zeros(1))
    assert out.dtype == torch.float32 and pooled.dtype == torch.float32
    assert torch.isfinite(out).all()
    cos = (normalize_parts(out) * ref).sum(dim=1)
    assert cos.item() > 0.9999  # only the bf16 rounding of the map itself remains


SDPL_OPTS = """\
DA: false
LPN: false
batchsize: 4
block: 4
dense_LPN: true
droprate: 0.75
h: 256
w: 256
name: pretrained
nclasses: 7
pool: avg
resnet: true
share: true
stride: 1
views: 2
"""


def test_opts_yaml(tmp_path: Path) -> None:
    opts = tmp_path / "opts.yaml"
    opts.write_text(SDPL_OPTS)
    o = read_opts(opts)
    assert (o.h, o.w, o.block, o.nclasses, o.droprate) == (256, 256, 4, 7, 0.75)
    r = create("sdpl", opts=opts, random_weights=True)
    assert r.image_size == 256 and r.model.nclasses == 7
    assert r.model.classifier0.add_block[2].p == 0.75
    for bad, match in (("block: 4", "block: 3"), ("dense_LPN: true", "dense_LPN: false"), ("LPN: false", "LPN: true")):
        opts.write_text(SDPL_OPTS.replace(bad, match))
        with pytest.raises(CheckpointMismatchError):
            read_opts(opts)
    opts.write_text(SDPL_OPTS.replace("w: 256", "w: 512"))
    with pytest.raises(CheckpointMismatchError, match="differ"):
        create("sdpl", opts=opts, random_weights=True)


def test_nclasses_inferred_and_image_size_checked(source_model: SDPLModel) -> None:
    assert sdpl_mod.infer_nclasses(checkpoint_filter_fn(official_state_dict(source_model))) == 701
    with pytest.raises(ValueError, match="256, 384, 512"):
        create("sdpl", image_size=320, random_weights=True)


def test_training_descriptor_is_differentiable(source_model: SDPLModel) -> None:
    heads = copy.deepcopy(source_model).train()
    fmap = torch.rand(2, 2048, 16, 16, generator=torch.Generator().manual_seed(4), requires_grad=True)
    # the trunk is plain torchvision ResNet-50; check the pooling + heads path end to end on a map
    parts = heads.model_1.pool(fmap)
    desc = normalize_parts(torch.stack([heads._heads()[i](parts[:, :, i]) for i in range(10)], dim=2))
    assert desc.shape == (2, 5120)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2))
    desc.sum().backward()
    assert fmap.grad is not None and heads.model_1.shift_blocks[0].weight.grad is not None
    assert callable(heads.forward_descriptor) and callable(heads.forward_logits)
