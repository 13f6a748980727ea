"""The ``precomputed`` retriever: every accepted file format, normalisation, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import save_file

from skyrank.errors import CheckpointMismatchError
from skyrank.retrievers import create

IDS = [f"test/query_drone/{i:04d}/image-01.jpeg" for i in range(4)] + ["test/gallery_satellite/0000/0000.jpg"]
EMB = np.arange(1, 5 * 6 + 1, dtype=np.float32).reshape(5, 6)


def write_parquet(path: Path, ids: list[str] = IDS, emb: np.ndarray = EMB) -> Path:
    pq.write_table(pa.table({"image_id": ids, "embedding": [list(map(float, e)) for e in emb]}), path)
    return path


def _writers(tmp: Path) -> dict[str, Path]:
    out = {"parquet": write_parquet(tmp / "e.parquet")}
    np.savez(tmp / "e.npz", embeddings=EMB, ids=np.array(IDS))
    out["npz"] = tmp / "e.npz"
    np.save(tmp / "e.npy", EMB)
    (tmp / "e.ids.txt").write_text("\n".join(IDS) + "\n")
    out["npy+ids.txt"] = tmp / "e.npy"
    np.save(tmp / "f.npy", EMB)
    (tmp / "f.json").write_text(json.dumps(IDS))
    out["npy+json"] = tmp / "f.npy"
    save_file({"embeddings": EMB}, str(tmp / "e.safetensors"), metadata={"ids": json.dumps(IDS)})
    out["safetensors"] = tmp / "e.safetensors"
    save_file({"embeddings": EMB}, str(tmp / "g.safetensors"))
    (tmp / "g.ids.txt").write_text("\n".join(IDS))
    out["safetensors+ids.txt"] = tmp / "g.safetensors"
    return out


def test_every_format_gives_the_same_normalised_embeddings(tmp_path: Path) -> None:
    want = EMB / np.linalg.norm(EMB, axis=1, keepdims=True)
    order = [IDS[3], IDS[0], IDS[4]]
    for fmt, path in _writers(tmp_path).items():
        r = create("precomputed", checkpoint=path)
        assert r.needs_images is False and r.embed_dim == 6, fmt
        got = r.embed_ids(order, "drone")
        assert got.dtype == np.float32 and got.shape == (3, 6), fmt
        np.testing.assert_allclose(got, want[[3, 0, 4]], rtol=1e-6, err_msg=fmt)


def test_missing_ids_are_listed(tmp_path: Path) -> None:
    r = create("precomputed", checkpoint=write_parquet(tmp_path / "e.parquet"))
    missing = [f"test/query_drone/9{i:03d}/image-01.jpeg" for i in range(8)]
    with pytest.raises(CheckpointMismatchError, match=r"8 of 9 drone") as e:
        r.embed_ids([IDS[0], *missing], "drone")
    assert missing[0] in str(e.value) and missing[-1] not in str(e.value)  # the first few only


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointMismatchError, match="needs --checkpoint"):
        create("precomputed")
    with pytest.raises(CheckpointMismatchError, match="duplicate"):
        create("precomputed", checkpoint=write_parquet(tmp_path / "d.parquet", [IDS[0], *IDS[:4]]))
    zero = EMB.copy()
    zero[2] = 0
    with pytest.raises(CheckpointMismatchError, match=r"zero or not finite.*0002"):
        create("precomputed", checkpoint=write_parquet(tmp_path / "z.parquet", emb=zero))
    np.save(tmp_path / "noids.npy", EMB)
    with pytest.raises(CheckpointMismatchError, match="noids.ids.txt"):
        create("precomputed", checkpoint=tmp_path / "noids.npy")
    (tmp_path / "x.csv").write_text("a")
    with pytest.raises(CheckpointMismatchError, match="unsupported"):
        create("precomputed", checkpoint=tmp_path / "x.csv")
    np.save(tmp_path / "short.npy", EMB)
    (tmp_path / "short.ids.txt").write_text("\n".join(IDS[:3]))
    with pytest.raises(CheckpointMismatchError, match="5 embeddings but 3 ids"):
        create("precomputed", checkpoint=tmp_path / "short.npy")


def test_embed_on_images_is_not_available(tmp_path: Path) -> None:
    r = create("precomputed", checkpoint=write_parquet(tmp_path / "e.parquet"))
    with pytest.raises(NotImplementedError, match="embed_ids"):
        r.embed(torch.zeros(1, 3, 4, 4), "drone")
