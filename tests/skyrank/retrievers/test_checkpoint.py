"""Safe, strict checkpoint loading (``_checkpoint.py`` through the ``sample4geo`` retriever)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from skyrank.errors import CheckpointMismatchError
from skyrank.retrievers import create
from skyrank.retrievers._checkpoint import read_state_dict, sha256_file, strip_prefix
from skyrank.retrievers.sample4geo import Sample4GeoModel

ARCH = "convnext_atto"
SIZE = 32


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random model saved exactly as Sample4Geo does: ``torch.save(model.state_dict(), path)``."""
    torch.manual_seed(1)
    model = Sample4GeoModel(ARCH)
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    path = tmp_path_factory.mktemp("ckpt") / "weights_e1_0.1234.pth"
    torch.save(model.state_dict(), path)
    return path, model.state_dict()


def _features(checkpoint: Path) -> torch.Tensor:
    torch.manual_seed(123)  # a different init: only the checkpoint can make features agree
    r = create("sample4geo", checkpoint=checkpoint, arch=ARCH, image_size=SIZE)
    return r.embed(torch.linspace(-2, 2, 2 * 3 * SIZE * SIZE).reshape(2, 3, SIZE, SIZE), "drone")


def _reference(sd: dict[str, torch.Tensor]) -> torch.Tensor:
    model = Sample4GeoModel(ARCH)
    model.load_state_dict(sd, strict=True)
    x = torch.linspace(-2, 2, 2 * 3 * SIZE * SIZE).reshape(2, 3, SIZE, SIZE)
    with torch.no_grad():
        return torch.nn.functional.normalize(model.eval()(x), dim=-1)


def test_official_layout_loads_strictly_and_gives_identical_features(saved) -> None:
    path, sd = saved
    r = create("sample4geo", checkpoint=path, arch=ARCH, image_size=SIZE)
    assert r.checkpoint == path
    got = r.model.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    assert torch.allclose(_features(path), _reference(sd), atol=1e-6)


def test_module_prefix_is_stripped(saved, tmp_path: Path) -> None:
    path, sd = saved
    p = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, p)
    assert torch.allclose(_features(p), _features(path))


def test_safetensors_file_loads(saved, tmp_path: Path) -> None:
    path, sd = saved
    p = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(p))
    assert torch.allclose(_features(p), _features(path))


def test_wrapped_state_dict_is_unwrapped(saved, tmp_path: Path) -> None:
    path, sd = saved
    p = tmp_path / "wrapped.pth"
    torch.save({"state_dict": sd}, p)
    assert read_state_dict(p).keys() == sd.keys()


def test_missing_key_is_named(saved, tmp_path: Path) -> None:
    _, sd = saved
    bad = dict(sd)
    del bad["model.stem.0.weight"]
    p = tmp_path / "missing.pth"
    torch.save(bad, p)
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \(1\): model\.stem\.0\.weight"):
        create("sample4geo", checkpoint=p, arch=ARCH)


def test_unexpected_key_is_named(saved, tmp_path: Path) -> None:
    _, sd = saved
    p = tmp_path / "extra.pth"
    torch.save({**sd, "model.head.fc.weight": torch.zeros(3, 320)}, p)
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys \(1\): model\.head\.fc\.weight"):
        create("sample4geo", checkpoint=p, arch=ARCH)


def test_wrong_arch_fails_with_key_and_shape_names(saved) -> None:
    path, _ = saved  # convnext_atto weights into a convnext_femto model
    with pytest.raises(CheckpointMismatchError) as e:
        create("sample4geo", checkpoint=path, arch="convnext_femto")
    msg = str(e.value)
    assert "shape mismatches" in msg and "model.stem.0.weight" in msg and "arch=convnext_femto" in msg


class Payload:
    """An arbitrary pickled object: ``weights_only`` must refuse to build it."""


def test_non_tensor_pickle_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "evil.pth"
    torch.save({"model.stem.0.weight": torch.zeros(1), "obj": Payload()}, p)
    with pytest.raises(CheckpointMismatchError, match="weights_only=True"):
        create("sample4geo", checkpoint=p, arch=ARCH)


def test_missing_file_and_non_dict(tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    p = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], p)
    with pytest.raises(CheckpointMismatchError, match="state dict of tensors"):
        read_state_dict(p)


def test_helpers(tmp_path: Path) -> None:
    assert strip_prefix({"module.a": 1, "b": 2}) == {"a": 1, "b": 2}
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
