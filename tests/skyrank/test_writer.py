"""Tests of skyrank.writer: layout, determinism, sharding, atomicity, and load_dataset in a separate process.

``make_tables`` / ``write_dataset`` build a small, fully consistent SkyRank folder (hand-made embeddings → rows that
obey every invariant, tiny generated JPEGs); test_card.py and test_validate.py reuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard
from PIL import Image

from skyrank.card import render_dataset_card
from skyrank.errors import OutputExistsError
from skyrank.format import schema
from skyrank.writer import MANIFEST_NAME, DatasetWriter, read_manifest, verify_checksums

M = 4
BENCH = "toy"
GALLERY = schema.gallery_config_name(BENCH)
QUERIES = schema.queries_config_name(BENCH)
RETR = schema.retriever_config_name("fakeret", BENCH, "d2s")


def _jpeg(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path, format="JPEG", quality=90)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_tables(root: Path, *, seed: int = 0) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """A toy benchmark under ``root`` (JPEG files) and the rows of every SkyRank table built from it.

    Gallery per split: 6 locations (location 0001 has two satellite images, so its queries have 2 positives) plus 2
    distractors; queries: 2 drone images per location of 0001..0004. Rows follow Eq. 1-2 and 6 exactly.
    """
    rng = np.random.default_rng(seed)
    tables: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for split in ("train", "test"):
        gallery = []
        for loc in ("0001", "0002", "0003", "0004", "0005", "0006", "0900", "0901"):
            n = 2 if loc == "0001" else 1
            for k in range(n):
                image_id = f"{split}/satellite/{loc}/{loc}_{k}.jpg"
                gallery.append({"image_id": image_id, "label": loc, "view": "satellite"})
        queries = []
        for loc in ("0001", "0002", "0003", "0004"):
            for k in range(2):
                queries.append({"image_id": f"{split}/drone/{loc}/image-{k:02d}.jpeg", "label": loc, "view": "drone"})
        for i, row in enumerate(gallery + queries):
            row["path"] = row["image_id"]
            _jpeg(root / row["path"], seed * 1000 + i + (0 if split == "train" else 500))
        centers = {loc: rng.normal(size=8) for loc in {r["label"] for r in gallery}}
        g_emb = _unit(np.stack([centers[r["label"]] + 0.9 * rng.normal(size=8) for r in gallery]))
        q_emb = _unit(np.stack([centers[r["label"]] + 1.2 * rng.normal(size=8) for r in queries]))
        g_ids = [r["image_id"] for r in gallery]
        g_lab = [r["label"] for r in gallery]
        rows = []
        for q, qe in zip(queries, q_emb, strict=True):
            sims = g_emb @ qe
            order = sorted(range(len(g_ids)), key=lambda j: (-float(sims[j]), g_ids[j]))
            pos = [j for j in order if g_lab[j] == q["label"]]
            rank_of = {j: r + 1 for r, j in enumerate(order)}
            gt = pos[0]
            negs = [j for j in order if g_lab[j] != q["label"]][: M - 1]
            rows.append(
                {
                    "query_id": q["image_id"],
                    "label": q["label"],
                    "gt_id": g_ids[gt],
                    "gt_rank": rank_of[gt],
                    "gt_score": float(sims[gt]),
                    "positive_ids": [g_ids[j] for j in pos],
                    "positive_ranks": [rank_of[j] for j in pos],
                    "candidate_ids": [g_ids[j] for j in negs],
                    "candidate_scores": [float(sims[j]) for j in negs],
                    "candidate_gt_similarity": [float(g_emb[j] @ g_emb[gt]) for j in negs],
                    "retrieved_ids": [g_ids[j] for j in order[:M]],
                    "retrieved_scores": [float(sims[j]) for j in order[:M]],
                }
            )
        tables[(GALLERY, split)] = gallery
        tables[(QUERIES, split)] = queries
        tables[(RETR, split)] = rows
    return tables


def build_params(with_images: bool, **extra: Any) -> dict[str, Any]:
    params = {
        "m": M,
        "protocol": "official",
        "directions": ["d2s"],
        "splits": ["train", "test"],
        "with_images": with_images,
        "skipped_bad_images": [],
        "software": {"datasets": "5.2.0", "pyarrow": "26.0.1"},
        "retriever": "fakeret",
    }
    params.update(extra)
    return params


def write_dataset(
    out: Path,
    tables: dict[tuple[str, str], list[dict[str, Any]]],
    *,
    images_root: Path | None = None,
    overwrite: bool = False,
    license: str = "cc0-1.0",
    params: dict[str, Any] | None = None,
    **writer_kwargs: Any,
) -> Path:
    """Write ``tables`` (+ card + manifest) with the real writer and card; images embedded when ``images_root``."""
    with_images = images_root is not None
    infos = []
    with DatasetWriter(out, overwrite=overwrite, **writer_kwargs) as w:
        for (cfg, split), rows in sorted(tables.items()):
            feats = schema.features_for(cfg, with_images=with_images)
            infos.append(w.add_table(cfg, split, rows, feats, images_root=images_root))
        meta = {
            "name": BENCH,
            "license": license,
            "license_name": "toy-terms" if license == "other" else None,
            "license_link": "https://example.org/terms" if license == "other" else None,
            "citation": "@misc{toy, title = {Toy}}",
            "redistributable": license != "other",
        }
        stats = {(RETR, s): {"rows": 8, "gt_in_top_m": 50.0, "R@1": 25.0, "R@5": 75.0, "R@10": 100.0, "AP": 40.0}
                 for s in ("train", "test")}  # fmt: skip
        p = params if params is not None else build_params(with_images)
        card = render_dataset_card(
            infos,
            pretty_name="SkyRank toy",
            benchmark_meta=meta,
            retriever_meta={"name": "fakeret", "arch": "none", "image_size": 16, "citation": ""},
            build_params=p,
            stats=stats,
            default_config=RETR,
        )
        return w.finalize(card, p)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench")
    return root, make_tables(root)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_layout_manifest_and_checksums(toy, tmp_path):
    root, tables = toy
    out = write_dataset(tmp_path / "ds", tables, images_root=root)
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "README.md" in names and MANIFEST_NAME in names
    assert f"{RETR}/test-00000-of-00001.parquet" in names
    assert f"{GALLERY}/train-00000-of-00001.parquet" in names
    assert not [n for n in names if n.endswith(".tmp")]
    assert not list(tmp_path.glob(".*"))  # no staging folder left
    man = read_manifest(out)
    assert man["m"] == M and set(man["files"]) == {n for n in names if n.endswith(".parquet")}
    for rel, entry in man["files"].items():
        assert entry["sha256"] == hashlib.sha256((out / rel).read_bytes()).hexdigest()
    assert {(t["config"], t["split"]) for t in man["tables"]} == set(tables)
    assert verify_checksums(out) == []
    card = DatasetCard.load(out / "README.md")  # the written card parses (no network)
    assert card.data.to_dict()["configs"][0] == {
        "config_name": RETR,
        "data_files": [{"split": "train", "path": f"{RETR}/train-*"}, {"split": "test", "path": f"{RETR}/test-*"}],
        "default": True,
    }

    # sorted by the id column, cast to the declared schema (with the huggingface features metadata)
    t = pq.read_table(out / f"{RETR}/test-00000-of-00001.parquet")
    assert t.column("query_id").to_pylist() == sorted(r["query_id"] for r in tables[(RETR, "test")])
    assert t.schema.equals(schema.RETRIEVER_FEATURES.arrow_schema, check_metadata=False)
    assert b"huggingface" in t.schema.metadata and b'"info"' in t.schema.metadata[b"huggingface"]

    # image bytes copied verbatim; the image column is uncompressed + PLAIN, the others snappy
    g = pq.ParquetFile(out / f"{GALLERY}/test-00000-of-00001.parquet")
    cells = g.read().column("image").to_pylist()
    ids = g.read().column("image_id").to_pylist()
    for image_id, cell in zip(ids, cells, strict=True):
        assert cell["bytes"] == (root / image_id).read_bytes()
        assert cell["path"] == Path(image_id).name
    cols = {g.metadata.row_group(0).column(j).path_in_schema: g.metadata.row_group(0).column(j) for j in range(6)}
    assert cols["image.bytes"].compression == "UNCOMPRESSED" and "RLE_DICTIONARY" not in cols["image.bytes"].encodings
    assert cols["image_id"].compression == "SNAPPY"
    assert b"content_defined_chunking" in g.metadata.metadata

    # a changed file is reported
    victim = out / f"{RETR}/train-00000-of-00001.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert any("sha256" in p for p in verify_checksums(out))


def test_byte_identical_for_identical_inputs(toy, tmp_path):
    root, tables = toy
    a = write_dataset(tmp_path / "a", tables, images_root=root)
    shuffled = {k: list(reversed(v)) for k, v in tables.items()}  # input order must not matter
    b = write_dataset(tmp_path / "b", shuffled, images_root=root)
    assert _tree(a) == _tree(b)


def test_multiple_shards_and_row_groups(toy, tmp_path):
    root, tables = toy
    out = write_dataset(tmp_path / "ds", tables, images_root=root, max_shard_bytes=2_000, max_row_group_bytes=900)
    shards = sorted((out / GALLERY).glob("test-*.parquet"))
    assert len(shards) > 1
    n = len(shards)
    assert [p.name for p in shards] == [f"test-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert any(pq.ParquetFile(p).metadata.num_row_groups > 1 for p in shards)
    ids = [i for p in shards for i in pq.read_table(p).column("image_id").to_pylist()]
    assert ids == sorted(r["image_id"] for r in tables[(GALLERY, "test")])
    man = read_manifest(out)
    info = next(t for t in man["tables"] if t["config"] == GALLERY and t["split"] == "test")
    assert info["files"] == [f"{GALLERY}/{p.name}" for p in shards] and info["num_rows"] == len(ids)


def test_rows_as_arrow_table_and_numpy_values(toy, tmp_path):
    _, tables = toy
    rows = tables[(RETR, "test")]
    np_rows = [
        {k: (np.asarray(v, dtype=np.float64) if "scores" in k or "similarity" in k else v) for k, v in r.items()}
        for r in rows
    ]
    with DatasetWriter(tmp_path / "a") as w:
        w.add_table(RETR, "test", np_rows, schema.RETRIEVER_FEATURES)
        w.finalize("---\n---\n", {"m": M})
    with DatasetWriter(tmp_path / "b") as w:
        w.add_table(RETR, "test", pa.Table.from_pylist(rows), schema.RETRIEVER_FEATURES)
        w.finalize("---\n---\n", {"m": M})
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


def test_exception_leaves_no_final_folder_and_rerun_succeeds(toy, tmp_path):
    root, tables = toy
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(out) as w:
            w.add_table(GALLERY, "test", tables[(GALLERY, "test")], schema.IMAGE_TABLE_FEATURES)
            raise RuntimeError("boom")
    assert not out.exists()
    assert not (tmp_path / ".ds.partial").exists()

    # an interrupted run (process killed) leaves a stale staging folder: the next run starts clean
    stale = tmp_path / ".ds.partial"
    (stale / "junk").mkdir(parents=True)
    (stale / "junk" / "train-00000-of-00001.parquet").write_bytes(b"junk")
    final = write_dataset(out, tables)
    assert final == out.absolute() and not stale.exists()
    assert not (out / "junk").exists() and verify_checksums(out) == []


def test_missing_images_root_or_file_is_an_error(toy, tmp_path):
    root, tables = toy
    with DatasetWriter(tmp_path / "ds") as w:
        with pytest.raises(ValueError, match="images_root"):
            w.add_table(GALLERY, "test", tables[(GALLERY, "test")], schema.IMAGE_TABLE_FEATURES_WITH_IMAGES)
        rows = [*tables[(GALLERY, "test")], {"image_id": "x.jpg", "label": "1", "view": "drone", "path": "x.jpg"}]
        from skyrank.errors import BadImageError

        with pytest.raises(BadImageError) as err:
            w.add_table(GALLERY, "test", rows, schema.IMAGE_TABLE_FEATURES_WITH_IMAGES, images_root=root)
        assert err.value.paths == ["x.jpg"]
        with pytest.raises(ValueError, match="split name"):
            w.add_table(GALLERY, "test-x", tables[(GALLERY, "test")], schema.IMAGE_TABLE_FEATURES)
    assert not (tmp_path / "ds").exists()


def test_overwrite_refusal_and_replacement(toy, tmp_path):
    _, tables = toy
    out = write_dataset(tmp_path / "ds", tables)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        DatasetWriter(out)
    before = read_manifest(out)
    again = write_dataset(out, tables, overwrite=True, params=build_params(False, note="second"))
    assert read_manifest(again)["note"] == "second" and "note" not in before
    assert not list(tmp_path.glob(".ds.*"))
    # a non-empty folder that is not a SkyRank dataset is never deleted, even with overwrite
    other = tmp_path / "home"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not a SkyRank dataset"):
        DatasetWriter(other, overwrite=True)
    assert (other / "precious.txt").read_text() == "keep me"


_LOADER = textwrap.dedent(
    """
    import hashlib, json, sys
    import datasets
    folder, cache = sys.argv[1], sys.argv[2]
    out = {}
    for config in datasets.get_dataset_config_names(folder):
        for split in ("train", "test"):
            ds = datasets.load_dataset(folder, config, split=split, cache_dir=cache)
            rows = []
            for row in ds:
                if "image" in row:
                    im = row.pop("image")
                    row["image_mode_size"] = [im.mode, list(im.size), type(im).__module__]
                rows.append(row)
            if "image" in ds.features:
                raw = ds.cast_column("image", datasets.Image(decode=False))
                for r, cell in zip(rows, raw["image"]):
                    r["image_sha256"] = hashlib.sha256(cell["bytes"]).hexdigest()
            out[f"{config}/{split}"] = {"features": sorted(ds.features), "rows": rows}
    print(json.dumps(out))
    """
)


def test_load_dataset_in_a_separate_process(toy, tmp_path):
    root, tables = toy
    out = write_dataset(tmp_path / "ds", tables, images_root=root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_UPDATE_DOWNLOAD_COUNTS": "0"}
    res = subprocess.run(
        [sys.executable, "-c", _LOADER, str(out), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(loaded) == {f"{c}/{s}" for c, s in tables}
    for (cfg, split), rows in tables.items():
        got = loaded[f"{cfg}/{split}"]["rows"]
        id_col = "query_id" if cfg == RETR else "image_id"
        want = sorted(rows, key=lambda r: r[id_col])
        assert [r[id_col] for r in got] == [r[id_col] for r in want]
        for g, w in zip(got, want, strict=True):
            for key, value in w.items():
                if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
                    assert np.allclose(g[key], value, atol=1e-6)
                else:
                    assert g[key] == value
            if cfg != RETR:
                assert g["image_mode_size"] == ["RGB", [16, 16], "PIL.JpegImagePlugin"]
                assert g["image_sha256"] == hashlib.sha256((root / w["path"]).read_bytes()).hexdigest()
