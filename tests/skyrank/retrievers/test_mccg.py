from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import skyrank.retrievers.mccg as mccg_mod
from skyrank.errors import CheckpointMismatchError
from skyrank.retrievers._base import create
from skyrank.retrievers._parts import normalize_parts
from skyrank.retrievers.mccg import MCCGModel, checkpoint_filter_fn, official_state_dict, read_opts

SIZE = 32  # ConvNeXt works at any multiple of 32 (a 1x1 last map here); small for CPU speed


def _randomise(model: MCCGModel, seed: int = 0) -> MCCGModel:
    """Random weights that make every part matter (layer scale 1e-6 and fresh BN stats would hide most of it)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                elif name.endswith("gamma"):
                    t.copy_(torch.rand(t.shape, generator=g) * 0.5)
                else:
                    t.add_(torch.randn(t.shape, generator=g) * 0.02)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared CPU, OpenMP threads waiting on a busy core cost 10-30x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def source_model() -> MCCGModel:
    torch.manual_seed(0)
    return _randomise(MCCGModel(nclasses=701, block=2))


@pytest.fixture(scope="module")
def official_file(tmp_path_factory: pytest.TempPathFactory, source_model: MCCGModel) -> Path:
    path = tmp_path_factory.mktemp("mccg") / "net_199.pth"
    torch.save(official_state_dict(source_model), path)
    return path


@pytest.fixture(scope="module")
def retriever(official_file: Path) -> mccg_mod.MCCGRetriever:
    return create("mccg", checkpoint=official_file, image_size=SIZE)


def test_official_key_layout(source_model: MCCGModel) -> None:
    sd = official_state_dict(source_model)
    assert len(sd) == 221
    assert all(k.startswith("model_1.") for k in sd)
    for key in (
        "model_1.convnext.downsample_layers.0.0.weight",
        "model_1.convnext.downsample_layers.3.1.weight",
        "model_1.convnext.stages.2.8.dwconv.weight",
        "model_1.convnext.stages.3.2.pwconv2.bias",
        "model_1.convnext.stages.0.0.gamma",
        "model_1.convnext.norm.weight",
        "model_1.convnext.head.weight",
        "model_1.classifier1.add_block.0.weight",
        "model_1.classifier1.add_block.1.running_var",
        "model_1.tri_layer.cw.conv.conv.weight",
        "model_1.tri_layer.hc.conv.bn.num_batches_tracked",
        "model_1.classifier_mcb1.classifier.0.bias",
        "model_1.classifier_mcb2.add_block.0.weight",
    ):
        assert key in sd, key
    assert tuple(sd["model_1.classifier1.classifier.0.weight"].shape) == (701, 512)
    assert not any(k.startswith("model_1.classifier_mcb3") for k in sd)


def test_shape_dtype_norm_both_views(retriever: mccg_mod.MCCGRetriever, batch: torch.Tensor) -> None:
    r = retriever
    assert r.embed_dim == 1536 and r.image_size == SIZE and r.cfg.flip_sum
    for view in ("drone", "satellite"):
        emb = r.embed(batch, view)
        assert emb.shape == (2, 1536) and emb.dtype == torch.float32
        torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    # one shared model_1: both views give the same feature for the same image
    torch.testing.assert_close(r.embed(batch, "drone"), r.embed(batch, "satellite"))
    with pytest.raises(ValueError):
        r.embed(batch, "street")


def test_official_and_module_prefixed_files_load_to_the_same_features(
    tmp_path: Path,
    official_file: Path,
    retriever: mccg_mod.MCCGRetriever,
    source_model: MCCGModel,
    batch: torch.Tensor,
) -> None:
    with torch.no_grad():
        torch.testing.assert_close(retriever.model(batch), source_model(batch))
    wrapped = tmp_path / "net_dp.pth"
    torch.save({f"module.{k}": v for k, v in torch.load(official_file, weights_only=True).items()}, wrapped)
    model = MCCGModel(nclasses=701)
    mccg_mod.load_checkpoint(model, wrapped)
    for k, v in source_model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_mismatched_checkpoint_names_keys(tmp_path: Path, official_file: Path) -> None:
    """Through ``create``: the error names the missing and the unexpected keys."""
    sd = torch.load(official_file, weights_only=True)
    del sd["model_1.tri_layer.cw.conv.conv.weight"]
    sd["model_1.classifier_mcb3.add_block.0.weight"] = torch.zeros(512, 768)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(CheckpointMismatchError) as e:
        create("mccg", checkpoint=bad, block=2)
    assert "tri_layer.cw.conv.conv.weight" in str(e.value)
    assert "classifier_mcb3.add_block.0.weight" in str(e.value)


def test_timm_layout_is_refused(tmp_path: Path, retriever: mccg_mod.MCCGRetriever) -> None:
    """A timm-layout ConvNeXt (``stem``/``mlp.fc1``) must not load into the Facebook layout (Sample4Geo issue #2)."""
    bad = tmp_path / "timm.pth"
    torch.save({"model_1.convnext.stem.0.weight": torch.zeros(96, 3, 4, 4)}, bad)
    with pytest.raises(CheckpointMismatchError, match="stem.0.weight"):
        mccg_mod.load_checkpoint(retriever.model, bad)


def test_flip_sum_then_per_block_l2_over_sqrt3(retriever: mccg_mod.MCCGRetriever, batch: torch.Tensor) -> None:
    r = retriever
    with torch.no_grad():
        ff = r.model(batch) + r.model(torch.flip(batch, dims=[3]))
    assert ff.shape == (2, 512, 3)
    manual = (ff / (ff.norm(p=2, dim=1, keepdim=True) * math.sqrt(3))).view(2, -1)
    torch.testing.assert_close(r.embed(batch, "drone"), manual)
    # view order: channel-major, blocks interleaved (index c * 3 + k); the global feature is block 2
    torch.testing.assert_close(manual[:, 2::3] * math.sqrt(3), ff[:, :, 2] / ff[:, :, 2].norm(dim=1, keepdim=True))
    # normalising after the flip-sum is not the same as summing normalised features
    separately = normalize_parts(r.model(batch).detach()) + normalize_parts(
        r.model(batch.flip(3)).detach()
    )
    assert not torch.allclose(r.embed(batch, "drone"), separately / separately.norm(dim=1, keepdim=True))


def test_eval_output_order_is_mcb1_mcb2_global(source_model: MCCGModel, batch: torch.Tensor) -> None:
    with torch.no_grad():
        out = source_model(batch)
        g, fmap = source_model.convnext(batch)
        a, b = source_model.tri_layer(fmap)
        torch.testing.assert_close(out[:, :, 0], source_model.classifier_mcb1(a.mean((-2, -1))))
        torch.testing.assert_close(out[:, :, 1], source_model.classifier_mcb2(b.mean((-2, -1))))
        torch.testing.assert_close(out[:, :, 2], source_model.classifier1(g))


OPTS = """\
DA: true
batchsize: 8
block: 2
droprate: 0.5
h: 96
w: 96
model: convnext_small_22k_224
name: convnext_tri
nclasses: 5
resnet: false
share: true
steps:
- 80
- 120
views: 2
"""


def _with_nclasses(sd: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    for k in [k for k in sd if ".classifier.0." in k]:
        sd[k] = torch.zeros((n, 512) if k.endswith("weight") else (n,))
    return sd


def test_opts_yaml_sets_size_block_nclasses_and_ignores_model_field(tmp_path: Path, source_model: MCCGModel) -> None:
    opts = tmp_path / "opts.yaml"
    opts.write_text(OPTS)
    o = read_opts(opts)
    assert (o.h, o.w, o.block, o.nclasses) == (96, 96, 2, 5)
    ckpt = tmp_path / "net_199.pth"
    sd5 = _with_nclasses(official_state_dict(source_model), 5)
    torch.save(sd5, ckpt)
    r = create("mccg", checkpoint=ckpt, opts=opts)
    assert r.image_size == 96
    # always ConvNeXt-*Tiny* (stage 3 has 9 blocks; the "small" of the model field would have 27)
    assert len(r.model.convnext.stages[2]) == 9
    assert r.model.classifier1.classifier[0].out_features == 5
    # without opts, nclasses and block come from the checkpoint's shapes and keys
    assert mccg_mod.infer_from_state_dict(checkpoint_filter_fn(sd5)) == (5, 2)


def test_opts_refuses_resnet_and_non_square(tmp_path: Path) -> None:
    opts = tmp_path / "opts.yaml"
    opts.write_text(OPTS.replace("resnet: false", "resnet: true"))
    with pytest.raises(CheckpointMismatchError, match="resnet"):
        create("mccg", opts=opts, random_weights=True)
    opts.write_text(OPTS.replace("w: 96", "w: 128"))
    with pytest.raises(CheckpointMismatchError, match="differ"):
        create("mccg", opts=opts, random_weights=True)


def test_block_one_gives_1024_d(tmp_path: Path, source_model: MCCGModel, batch: torch.Tensor) -> None:
    ckpt = tmp_path / "net.pth"
    sd = {k: v for k, v in official_state_dict(source_model).items() if "classifier_mcb2" not in k}
    torch.save(sd, ckpt)
    r = create("mccg", checkpoint=ckpt, image_size=SIZE)  # block inferred from the keys
    emb = r.embed(batch, "drone")
    assert emb.shape == (2, 1024)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))


def test_preprocess_matches_torchvision_pil_pipeline(retriever: mccg_mod.MCCGRetriever) -> None:
    from torchvision import transforms

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (100, 130, 3), dtype=np.uint8))
    r = retriever
    reference = transforms.Compose(
        [
            transforms.Resize((SIZE, SIZE), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )(img)
    torch.testing.assert_close(r.preprocess(img), reference)


def test_training_descriptor_is_differentiable(source_model: MCCGModel, batch: torch.Tensor) -> None:
    model = copy.deepcopy(source_model).train()
    desc = model.forward_descriptor(batch)
    assert desc.shape == (2, 1536)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2))
    desc.sum().backward()
    assert model.convnext.stages[0][0].dwconv.weight.grad is not None
    logits = model.forward_logits(batch)
    assert [tuple(t.shape) for t in logits] == [(2, 701)] * 3


def test_filter_keeps_only_model_1() -> None:
    sd = {"model_1.a": torch.zeros(1), "model_2.a": torch.ones(1), "module.model_1.b": torch.zeros(1)}
    assert sorted(checkpoint_filter_fn(sd)) == ["a", "b"]
