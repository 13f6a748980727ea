"""Streaming encoder: order, batch-size invariance, bad images, id-lookup retrievers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skyrank.benchmarks import ImageRecord
from skyrank.errors import BadImageError
from skyrank.retrievers import create
from skyrank.retrievers.encode import EncodeResult, encode_records

SIZE = 32


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ImageRecord]]:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    records = []
    for i in range(7):
        rel = f"test/query_drone/{i:04d}/image-01.jpeg"
        (root / rel).parent.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (40 + i, 48, 3), dtype=np.uint8)).save(root / rel)
        records.append(ImageRecord(rel, f"{i:04d}", "drone"))
    return root, records


@pytest.fixture(scope="module")
def retriever():
    torch.manual_seed(0)
    return create("sample4geo", arch="convnext_atto", image_size=SIZE, random_weights=True)


def test_order_and_values_match_direct_embedding(images, retriever) -> None:
    root, records = images
    res = encode_records(retriever, root, records, "drone", batch_size=3, progress=False)
    assert isinstance(res, EncodeResult) and res.ids == [r.image_id for r in records] and res.bad == []
    assert res.embeddings.dtype == np.float32 and res.embeddings.shape == (7, 320)
    batch = torch.stack([retriever.preprocess(Image.open(root / r.image_id)) for r in records])
    direct = retriever.embed(batch, "drone")
    np.testing.assert_allclose(res.embeddings, direct.numpy(), atol=1e-5)
    assert res.decode_seconds > 0 and res.encode_seconds > 0


def test_batch_size_and_workers_do_not_change_the_result(images, retriever) -> None:
    root, records = images
    a = encode_records(retriever, root, records, "satellite", batch_size=1, progress=False)
    b = encode_records(retriever, root, records, "satellite", batch_size=5, num_workers=1, progress=False)
    assert a.ids == b.ids
    np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)


def test_corrupt_jpeg_raises_naming_every_bad_file_or_is_skipped(images, retriever, tmp_path: Path) -> None:
    src, records = images
    root = tmp_path / "root"
    for r in records:
        (root / r.image_id).parent.mkdir(parents=True)
        (root / r.image_id).write_bytes((src / r.image_id).read_bytes())
    bad = [records[2].image_id, records[5].image_id]
    (root / bad[0]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (root / bad[1]).write_bytes(b"")
    with pytest.raises(BadImageError) as e:
        encode_records(retriever, root, records, "drone", batch_size=4, progress=False)
    assert e.value.paths == bad
    assert all(b in str(e.value) for b in bad) and "--skip-bad-images" in (e.value.hint or "")

    res = encode_records(retriever, root, records, "drone", batch_size=4, skip_bad_images=True, progress=False)
    assert res.bad == bad and res.ids == [r.image_id for r in records if r.image_id not in bad]
    full = encode_records(retriever, src, records, "drone", batch_size=4, progress=False)
    keep = [i for i, r in enumerate(records) if r.image_id not in bad]
    np.testing.assert_allclose(res.embeddings, full.embeddings[keep], atol=1e-5)


def test_id_lookup_retriever_uses_embed_ids(images, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, records = images
    emb = np.random.default_rng(1).normal(size=(len(records), 8)).astype(np.float32)
    table = pa.table({"image_id": [r.image_id for r in records], "embedding": emb.tolist()})
    pq.write_table(table, tmp_path / "e.parquet")
    r = create("precomputed", checkpoint=tmp_path / "e.parquet")
    res = encode_records(r, tmp_path / "no-images-needed", records[::-1], "drone", progress=False)
    assert res.ids == [x.image_id for x in records[::-1]]
    np.testing.assert_allclose(res.embeddings, (emb / np.linalg.norm(emb, axis=1, keepdims=True))[::-1], rtol=1e-5)


def test_empty_records(retriever, tmp_path: Path) -> None:
    res = encode_records(retriever, tmp_path, [], "drone", progress=False)
    assert res.ids == [] and res.embeddings.shape == (0, 320)
