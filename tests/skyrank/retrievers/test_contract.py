"""The retriever interface contract, run on every registered retriever (like timm's ``list_models`` tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skyrank.errors import MissingWeightsError, UnknownNameError
from skyrank.retrievers import Retriever, create, list_retrievers, retriever_info

IDS = ["train/drone/0001/image-01.jpeg", "train/drone/0002/image-01.jpeg", "train/satellite/0001/0001.jpg"]

#: tiny constructor arguments per retriever (random weights; no downloads)
TINY: dict[str, dict] = {
    "sample4geo": {"arch": "convnext_atto", "image_size": 32},
    "mccg": {"image_size": 32},
    "sdpl": {"image_size": 256},  # the smallest input the shifting-dense partition accepts
}


def _create(name: str, tmp_path: Path) -> Retriever:
    torch.manual_seed(0)
    if name == "precomputed":
        import pyarrow as pa
        import pyarrow.parquet as pq

        emb = np.random.default_rng(0).normal(size=(len(IDS), 12)).tolist()
        pq.write_table(pa.table({"image_id": IDS, "embedding": emb}), tmp_path / "e.parquet")
        return create(name, checkpoint=tmp_path / "e.parquet")
    return create(name, random_weights=True, **TINY.get(name, {}))


def test_registry_has_the_built_ins_and_rejects_unknown_names() -> None:
    assert {"sample4geo", "precomputed"} <= set(list_retrievers())
    with pytest.raises(UnknownNameError, match="sample4geo"):
        create("no-such-retriever")


@pytest.mark.parametrize("name", [n for n in list_retrievers() if retriever_info(n).learned_weights])
def test_create_without_a_checkpoint_refuses_as_the_cli_does(name: str, tmp_path: Path) -> None:
    """Issue 21: ``create("mccg")`` quietly gave random weights while ``skyrank build`` refused them."""
    from click.testing import CliRunner

    import cli

    with pytest.raises(MissingWeightsError) as err:
        create(name, **TINY.get(name, {}))
    assert f"--retriever {name} was given no --checkpoint (checkpoint=)" in str(err.value)
    args = ["build", "--dataset", "university1652", "--retriever", name, "--root", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 5 and str(err.value).replace("rank images", "rank university1652") in result.output
    assert "--random-weights" in result.output
    assert create(name, random_weights=True, **TINY.get(name, {})).model is not None


@pytest.mark.parametrize("name", [n for n in list_retrievers() if n != "precomputed"])
def test_preprocess_of_a_16_bit_image_equals_its_8_bit_reference(name: str, tmp_path: Path) -> None:
    """Issue 21: ``preprocess(Image.open(16-bit PNG))`` was all white (max |Δ| 4.4 against the 8-bit image)."""
    from tests.skyrank.test_images import sixteen_bit_pair

    r = _create(name, tmp_path)
    img16, ref = sixteen_bit_pair(tmp_path)
    torch.testing.assert_close(r.preprocess(img16), r.preprocess(ref), rtol=0, atol=0)


@pytest.mark.parametrize("name", list_retrievers())
def test_contract(name: str, tmp_path: Path) -> None:
    r = _create(name, tmp_path)
    assert isinstance(r, Retriever) and r.name == name and r.cfg.name
    assert isinstance(r.image_size, int) and isinstance(r.embed_dim, int) and r.embed_dim > 0
    for view in ("drone", "satellite"):
        if r.needs_images:
            assert r.image_size > 0
            img = Image.new("RGB", (50, 30), (10, 200, 30))
            x = torch.stack([r.preprocess(img), r.preprocess(img.rotate(90, expand=True))])
            assert x.shape == (2, 3, r.image_size, r.image_size)
            out = r.embed(x, view)
            assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, r.embed_dim)
            norms = out.norm(dim=1).numpy()
        else:
            out = r.embed_ids(IDS, view)
            assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, r.embed_dim)
            norms = np.linalg.norm(out, axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)
