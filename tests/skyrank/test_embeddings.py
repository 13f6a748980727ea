"""``skyrank build --embeddings`` and ``skyrank remine``: the embeddings config validates like every other config,
and re-mining from it reproduces the build's rows (float32: exactly; float16: within the stated tolerance)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from skyrank.benchmarks.synthetic import generate_synthetic
from skyrank.build import build_dataset
from skyrank.embeddings import FLOAT16_SCORE_TOL, read_embeddings, remine
from skyrank.errors import SkyRankError, ValidationError
from skyrank.format import schema
from skyrank.retrievers import create
from skyrank.validate import validate_dataset

SIZE = 32
CFG = schema.retriever_config_name("sample4geo", "synthetic", "d2s")
EMB = schema.embeddings_config_name("sample4geo", "synthetic")


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("emb")
    root = generate_synthetic(work / "bench", locations=8, distractors=4, views=2, image_size=SIZE, progress=False)
    torch.manual_seed(0)
    retriever = create("sample4geo", arch="convnext_atto", image_size=SIZE, random_weights=True)
    ckpt = work / "atto.pth"
    torch.save(retriever.model.state_dict(), ckpt)
    return root, ckpt


def _build(bench: tuple[Path, Path], out: Path, **kw: object):
    root, ckpt = bench
    params = dict(dataset="synthetic", root=root, checkpoint=ckpt, arch="convnext_atto", image_size=SIZE, out=out,
                  top_m=5, progress=False, with_images=False)
    params.update(kw)
    return build_dataset(**params)


@pytest.fixture(scope="module")
def built(bench, tmp_path_factory) -> Path:
    return _build(bench, tmp_path_factory.mktemp("emb-ds") / "ds", directions=("d2s", "s2d")).out


def _rows(folder: Path, config: str, split: str) -> list[dict]:
    return pq.read_table(sorted((folder / config).glob(f"{split}-*.parquet"))).to_pylist()


def test_build_writes_one_embedding_per_image_and_the_card_says_so(built):
    manifest = json.loads((built / schema.MANIFEST_NAME).read_text())
    assert manifest["embeddings"] == {"config": EMB, "dim": 320, "dtype": "float32"}
    ids, views, vectors = read_embeddings(built, "test")
    gallery = {r["image_id"] for r in _rows(built, "gallery-synthetic", "test")}
    queries = {r["image_id"] for r in _rows(built, "queries-synthetic", "test")}
    assert set(ids) == gallery | queries and len(ids) == len(set(ids))  # drones are gallery (s2d) and queries (d2s)
    assert set(views) == {"drone", "satellite"}
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    table = pq.read_table(sorted((built / EMB).glob("test-*.parquet")))
    emb_type = table.schema.field("embedding").type
    assert emb_type.list_size == 320 and str(emb_type.value_type) == "float"
    card = (built / "README.md").read_text()
    assert EMB in card and "float32" in card and "skyrank remine" in card and "--format mteb" in card


def test_remine_same_m_reproduces_the_build_exactly(built, tmp_path):
    for cfg in (CFG, schema.retriever_config_name("sample4geo", "synthetic", "s2d")):
        result = remine(built, cfg, out=tmp_path / cfg)
        assert result["config"] == cfg and result["m"] == 5
        for split in ("train", "test"):
            assert _rows(result["out"], cfg, split) == _rows(built, cfg, split)


def test_remine_another_m_adds_a_named_config_that_validates(bench, built, tmp_path):
    out = tmp_path / "m7"
    result = remine(built, CFG, top_m=7, out=out)
    assert result["config"] == f"{CFG}-m7"
    rows = _rows(out, f"{CFG}-m7", "test")
    old = {r["query_id"]: r for r in _rows(built, CFG, "test")}
    for r in rows:
        assert len(r["retrieved_ids"]) == 7 and len(r["candidate_ids"]) == 6
        assert r["retrieved_ids"][:5] == old[r["query_id"]]["retrieved_ids"]  # a longer prefix of the same ranking
        assert r["positive_ranks"] == old[r["query_id"]]["positive_ranks"]
    report = validate_dataset(out)
    assert f"{CFG}-m7" in report.configs and CFG in report.configs
    from skyrank.loading import load_skyrank  # a re-mined config loads like any other

    first = load_skyrank(out, f"{CFG}-m7", split="test", images_root=bench[0], cache_dir=tmp_path / "cache")[0]
    assert len(first["candidate_images"]) == 6
    assert f"{CFG}-m7" in (out / "README.md").read_text()
    # the folder itself, updated in place (atomically), also validates and keeps the build's config unchanged
    remine(built, CFG, top_m=6)
    assert f"{CFG}-m6" in validate_dataset(built).configs


def test_float16_embeddings_remine_within_the_stated_tolerance(bench, tmp_path):
    folder = _build(bench, tmp_path / "f16", embedding_dtype="float16").out
    assert json.loads((folder / schema.MANIFEST_NAME).read_text())["embeddings"]["dtype"] == "float16"
    result = remine(folder, CFG, out=tmp_path / "f16-re")
    diffs = []
    for split in ("train", "test"):
        built_rows = {r["query_id"]: r for r in _rows(folder, CFG, split)}
        for r in _rows(result["out"], CFG, split):
            b = built_rows[r["query_id"]]
            assert abs(r["gt_score"] - b["gt_score"]) <= FLOAT16_SCORE_TOL
            diffs.append(abs(r["gt_score"] - b["gt_score"]))
            np.testing.assert_allclose(r["candidate_gt_similarity"], b["candidate_gt_similarity"],
                                       atol=FLOAT16_SCORE_TOL)
            if r["retrieved_ids"] != b["retrieved_ids"]:  # only a near-tie may swap
                scores = dict(zip(b["retrieved_ids"], b["retrieved_scores"], strict=True))
                swapped = [i for i, j in zip(r["retrieved_ids"], b["retrieved_ids"], strict=True) if i != j]
                assert all(i in scores for i in swapped)
                assert max(scores[i] for i in swapped) - min(scores[i] for i in swapped) <= 2 * FLOAT16_SCORE_TOL
    assert max(diffs) > 0  # the rounding is real (the build mined float32, remine reads float16 back)


def test_embeddings_are_opt_in_for_licensed_benchmarks_and_remine_says_why(bench, tmp_path):
    folder = _build(bench, tmp_path / "noemb", embeddings=False).out
    assert not (folder / EMB).exists()
    with pytest.raises(SkyRankError, match="--embeddings"):
        remine(folder, CFG)
    with pytest.raises(SkyRankError, match="no retriever config"):
        remine(folder, "mccg-synthetic-d2s")


def test_validator_catches_a_broken_embeddings_table(built, tmp_path):
    import shutil

    import pyarrow as pa

    from skyrank import writer

    folder = tmp_path / "broken"
    shutil.copytree(built, folder)
    path = sorted((folder / EMB).glob("test-*.parquet"))[0]
    table = pq.read_table(path)
    flat = table.column("embedding").combine_chunks().flatten()
    emb = np.array(flat, dtype=np.float32).reshape(table.num_rows, -1)
    emb[0] *= 2.0  # no longer unit-norm
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), emb.shape[1])
    table = table.set_column(3, table.schema.field("embedding"), column)
    pq.write_table(table, path)
    manifest = json.loads((folder / schema.MANIFEST_NAME).read_text())
    rel = path.relative_to(folder).as_posix()
    manifest["files"][rel] = {"sha256": writer.sha256_of(path), "bytes": path.stat().st_size}
    (folder / schema.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValidationError) as err:
        validate_dataset(folder, load=False)
    assert any("not L2-normalised" in p for p in err.value.problems), err.value.problems


def test_remine_command_line(built, tmp_path):
    from click.testing import CliRunner

    import cli

    out = tmp_path / "cli"
    result = CliRunner().invoke(
        cli.main, ["remine", str(built), "--retriever-config", CFG, "--top-m", "8", "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert f"{CFG}-m8 (m = 8)" in result.output and "R@1" in result.output
    bad = CliRunner().invoke(cli.main, ["remine", str(built), "--retriever-config", "nope-synthetic-d2s"])
    assert bad.exit_code != 0 and "no retriever config" in bad.output
