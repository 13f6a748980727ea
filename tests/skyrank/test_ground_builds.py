"""``skyrank build`` end to end on each new benchmark (VIGOR same/cross, CVUSA, CVACT val/test, DenseUAV,
University-1652 street): a tiny tree in the real layout, precomputed embeddings (the images are placeholders, never
decoded), build + validate (``load_dataset`` of every config), the optional columns, re-mining, the MTEB export
and a publish dry run."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest

from skyrank.benchmarks import get_benchmark
from skyrank.benchmarks.synthetic import trees
from skyrank.build import build_dataset
from skyrank.embeddings import remine
from skyrank.errors import PublishError
from skyrank.export import export_dataset
from skyrank.format import schema
from skyrank.publish import publish_dataset

SMALL: dict[str, tuple[str, dict, dict]] = {
    "vigor_same": ("vigor", {"Chicago": (6, 3, 4), "NewYork": (5, 2, 3), "SanFrancisco": (4, 2, 2),
                             "Seattle": (5, 3, 2)}, {}),
    "vigor_cross": ("vigor", {"Chicago": (6, 3, 4), "NewYork": (5, 2, 3), "SanFrancisco": (4, 2, 2),
                              "Seattle": (5, 3, 2)}, {"layout": "original"}),
    "cvusa": ("cvusa", {"train": 5, "test": 4}, {}),
    "cvact": ("cvact", {"train": 5, "val": 4, "test": 7}, {}),
    "cvact_test": ("cvact", {"train": 5, "val": 4, "test": 7}, {"near_every": 3}),
    "denseuav": ("denseuav", {"train": 3, "test": 2}, {}),
    "university1652_street": ("u1652-street", {"train": 3, "train_per_id": 2, "test": 3, "queries": 7,
                                               "distractors": 2}, {}),
}  # fmt: skip


def _vector(key: str, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(key.encode())).standard_normal(dim).astype(np.float32)


def _tree_and_embeddings(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """The tree and an ``.npz`` of embeddings: one direction per label plus a little noise per image."""
    tree, counts, kw = SMALL[name]
    writer, _, sub, _ = trees.TREES[tree]
    root = tmp_path / "tree" / sub
    writer(root, counts, trees.placeholder_source(root), **kw)
    bench = get_benchmark(name)
    vecs: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        for direction in bench.directions:
            rs = bench.load_split(root, split, direction)
            for r in (*rs.queries, *rs.gallery):
                vecs[r.image_id] = _vector(r.label) + 0.4 * _vector(r.image_id)
    ids = sorted(vecs)
    npz = tmp_path / "emb.npz"
    np.savez(npz, embeddings=np.stack([vecs[i] for i in ids]), ids=np.array(ids))
    return root, npz


@pytest.mark.parametrize("name", list(SMALL))
def test_build_validate_load_remine_export_publish(tmp_path: Path, name: str) -> None:
    root, npz = _tree_and_embeddings(tmp_path, name)
    bench = get_benchmark(name)
    report = build_dataset(dataset=name, root=root, retriever="precomputed", checkpoint=npz, top_m=3,
                           directions=bench.directions, out=tmp_path / "out", progress=False,
                           embeddings=True)  # fmt: skip
    out = report.out
    card = (out / "README.md").read_text()
    assert "| retriever | precomputed |" in card and "retriever image size" not in card  # it never sees an image
    manifest = json.loads((out / schema.MANIFEST_NAME).read_text())
    assert manifest["evaluation_protocol"] == bench.evaluation_protocol and manifest["format_version"] == 3
    assert manifest["explicit_positives"] == (name == "cvact_test")
    cfg = schema.retriever_config_name("precomputed", name, "d2s")
    rows = datasets.load_dataset(str(out), cfg, split="test")
    assert set(schema.OPTIONAL_RETRIEVER_FEATURES) <= set(rows.column_names)
    gallery = datasets.load_dataset(str(out), schema.gallery_config_name(name), split="test")
    queries = datasets.load_dataset(str(out), schema.queries_config_name(name), split="test")
    assert {"latitude", "longitude"} <= set(gallery.column_names) and gallery.features["latitude"].dtype == "float64"
    rs = bench.load_split(root, "test", "d2s")
    by_id = {q.image_id: q for q in rs.queries}
    assert sorted(rows["query_id"]) == sorted(by_id) and rs.queries[0].view in set(queries["view"])
    for row in rows:
        rec = by_id[row["query_id"]]
        assert row["semi_positive_ids"] == list(rec.semi_positives)
        if rec.positives is not None:
            assert sorted(row["positive_ids"]) == sorted(rec.positives)
        if row["semi_positive_ids"]:  # semi-positives are never positives; they stay candidates if retrieved
            assert not set(row["semi_positive_ids"]) & set(row["positive_ids"])
    if name.startswith("vigor"):
        assert all(len(s) == 3 for s in rows["semi_positive_ids"]) and rs.queries[0].view == "ground"
        assert None not in gallery["latitude"]
    if name == "denseuav":
        assert {len(p) for p in rows["positive_ids"]} == {6} and None not in queries["longitude"]
    if name == "cvact_test":
        assert sorted(len(p) for p in rows["positive_ids"]) == [1, 1, 1, 2, 2, 2, 2]  # pairs (0, 1), (3, 4)
    if name == "cvusa":
        assert set(gallery["latitude"]) == {None}

    # Re-mining from the embeddings config keeps the semi-positives and the explicit positives.
    remined = remine(out, cfg, top_m=2, out=tmp_path / "remined", progress=False)
    again = datasets.load_dataset(str(remined["out"]), schema.retriever_config_name("precomputed", name, "d2s", m=2),
                                  split="test")  # fmt: skip
    first = {r["query_id"]: r for r in rows}
    for row in again:
        assert row["semi_positive_ids"] == first[row["query_id"]]["semi_positive_ids"]
        assert row["positive_ids"] == first[row["query_id"]]["positive_ids"]

    exported = export_dataset(out, tmp_path / "mteb")
    assert exported["tables"]
    publish_dataset(out, "me/skyrank-test", dry_run=True, endpoint="http://127.0.0.1:9", progress=False)


def test_existing_benchmarks_write_no_optional_column(tmp_path: Path) -> None:
    """University-1652 / SUES-200 / synthetic tables keep their version-2 columns (the pinned sha256 stay)."""
    from tests.skyrank.benchmarks.layouts import make_university1652

    root = make_university1652(tmp_path / "University-Release")
    ids = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*.jp*g"))]
    npz = tmp_path / "emb.npz"
    np.savez(npz, embeddings=np.stack([_vector(i.split("/")[-2]) + 0.4 * _vector(i) for i in ids]), ids=np.array(ids))
    out = build_dataset(dataset="university1652", root=root, retriever="precomputed", checkpoint=npz, top_m=2,
                        out=tmp_path / "out", progress=False).out  # fmt: skip
    rows = datasets.load_dataset(str(out), "precomputed-university1652-d2s", split="test")
    gallery = datasets.load_dataset(str(out), "gallery-university1652", split="test")
    assert list(rows.features) == list(schema.RETRIEVER_FEATURES)
    assert list(gallery.features) == list(schema.IMAGE_TABLE_FEATURES)
    assert json.loads((out / schema.MANIFEST_NAME).read_text())["evaluation_protocol"] == "university1652"


def test_publishing_images_of_a_restricted_benchmark_is_refused(tmp_path: Path) -> None:
    root, npz = _tree_and_embeddings(tmp_path, "cvusa")
    out = build_dataset(dataset="cvusa", root=root, retriever="precomputed", checkpoint=npz, top_m=2,
                        out=tmp_path / "out", progress=False, with_images=True).out  # fmt: skip
    with pytest.raises(PublishError, match="refusing to publish CVUSA image bytes"):
        publish_dataset(out, "me/skyrank-test", dry_run=True, endpoint="http://127.0.0.1:9", progress=False)
    card = (out / "README.md").read_text()
    assert "cvusa-terms" in card and "## Benchmark protocol" in card and "val-19zl.csv" in card


def test_train_and_eval_skylink_on_a_rendered_ground_tree(tmp_path: Path) -> None:
    """A rendered CVUSA tree (panoramas 2:1 squeezed to CVUSA's band) → build → ``skyrank train`` 2 steps on the
    images → ``skyrank eval``: SkyLink reads the ground views through ``--images-root``."""
    import torch
    from click.testing import CliRunner

    import cli
    from skylink_model.testing import make_tiny_qwen2_vl
    from skyrank.benchmarks.synthetic import generate_synthetic

    torch.set_num_threads(1)
    root = generate_synthetic(tmp_path / "syn", "cvusa", locations=4, image_size=24, progress=False) / "CVUSA"
    bench = get_benchmark("cvusa")
    recs = [r for s in ("train", "test") for rs in [bench.load_split(root, s)] for r in (*rs.queries, *rs.gallery)]
    np.savez(tmp_path / "emb.npz", embeddings=np.stack([_vector(r.label) + 0.8 * _vector(r.image_id) for r in recs]),
             ids=np.array([r.image_id for r in recs]))  # fmt: skip
    out = build_dataset(dataset="cvusa", root=root, retriever="precomputed", checkpoint=tmp_path / "emb.npz",
                        top_m=3, out=tmp_path / "out", progress=False).out  # fmt: skip
    model = make_tiny_qwen2_vl(tmp_path / "tiny")
    cfg = "precomputed-cvusa-d2s"
    runner = CliRunner()
    result = runner.invoke(cli.main, [
        "train", "--data", str(out), "--config", cfg, "--model", str(model), "--images-root", str(root),
        "--out", str(tmp_path / "run"), "--k", "3", "--batch-size", "2", "--max-steps", "2", "--device", "cpu",
        "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli.main, [
        "eval", "--data", str(out), "--config", cfg, "--adapter", str(tmp_path / "run"), "--images-root", str(root),
        "--top-k", "3", "--json", str(tmp_path / "eval.json"), "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["num_queries"] == 4 and report["top_k"] == 3  # every rendered test panorama was re-ranked
    assert {"R@1", "R@5", "R@10"} <= set(report["rows"]["skylink"])
