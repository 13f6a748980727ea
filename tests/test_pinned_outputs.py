"""Outputs a refactor must not change (issue 11): a small deterministic build's Parquet files, an eval JSON and the
first training losses of SkyLink, pinned before the format/rules refactor.

The build uses the ``precomputed`` retriever on a tiny University-1652 tree (``tests/skyrank/benchmarks/layouts.py``),
not the synthetic benchmark whose generator other work changes. A pin may change only when another issue changes the
output on purpose: say so in the commit that updates it.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.skyrank.benchmarks.layouts import make_university1652

TRAIN_IDS = ("0001", "0002", "0003", "0004", "0005", "0006")
TEST_IDS = ("0100", "0101", "0102", "0103")
DISTRACTORS = ("0900", "0901")
M = 4

#: sha256 of every Parquet file of the build, relative path → digest.
PARQUET_SHA256: dict[str, str] = {
    "gallery-university1652/test-00000-of-00001.parquet":
        "0ac723b1841f231f7041f181f1cd0f88f36cadfd9faaa83f9fd35bec8ed71537",
    "gallery-university1652/train-00000-of-00001.parquet":
        "78d1a4823bef7045e28431d372e3e943dcab166a918ae46822cb6fbd0eccf52b",
    "precomputed-university1652-d2s/test-00000-of-00001.parquet":
        "2e1ee5b52e333d066556e74ccdca387438d6dee198d6e8efa471eacd9f62c1dc",
    "precomputed-university1652-d2s/train-00000-of-00001.parquet":
        "1d888569a982476b2b04a6797532f88fd49c47099f2e2ea07b092bcd3a6b85aa",
    "precomputed-university1652-s2d/test-00000-of-00001.parquet":
        "014529520a22c08391f9e3be1617c28538bf0b71437394a4fa05ef9dc406c439",
    "precomputed-university1652-s2d/train-00000-of-00001.parquet":
        "f0722400cb9439d6f594260ceabfa925c4881639d91b233c86b29c3768b3f9c7",
    "queries-university1652/test-00000-of-00001.parquet":
        "a6ccd0725af409d4e23b4abd9f8dadd8f02de55e59f189bd33e058cedacdbcec",
    # University-1652's train split: both directions use every train image, so both tables hold the same rows.
    "queries-university1652/train-00000-of-00001.parquet":
        "78d1a4823bef7045e28431d372e3e943dcab166a918ae46822cb6fbd0eccf52b",
}
#: The eval JSON's Table 1 (test split, top-3, scores from a fixed hash of the ids), metrics in percent.
EVAL_ROWS: dict[str, dict[str, float]] = {  # issue 14: AP_topk_market1501 is schema 1's AP_conservative
    "retriever": {"R@1": 50.0, "R@5": 75.0, "R@10": 100.0, "AP": 58.33333333333333, "AP_topk_market1501": 56.25,
                  "AP_precision": 66.66666666666667, "AP_conservative": 62.5},
    "skylink": {"R@1": 37.5, "R@5": 75.0, "R@10": 100.0, "AP": 46.87499999999999,
                "AP_topk_market1501": 44.791666666666664, "AP_precision": 56.25,
                "AP_conservative": 52.083333333333336},
    "improvement": {"R@1": -12.5, "R@5": 0.0, "R@10": 0.0, "AP": -11.458333333333336,
                    "AP_topk_market1501": -11.458333333333336, "AP_precision": -10.416666666666671,
                    "AP_conservative": -10.416666666666664},
}
#: mean loss (Eq. 8) of the first optimizer steps of a tiny SkyLink run on the build's train split.
FIRST_LOSSES: list[float] = [0.7273117303848267, 0.6497567892074585]


def _vector(image_id: str, label: str, dim: int = 8) -> np.ndarray:
    """A deterministic embedding: a per-location direction plus per-image noise (so rankings are non-trivial)."""
    base = np.random.default_rng(zlib.crc32(label.encode())).normal(size=dim)
    noise = np.random.default_rng(zlib.crc32(image_id.encode())).normal(size=dim)
    return (base + 0.9 * noise).astype(np.float32)


def _embeddings(root: Path, out: Path) -> Path:
    ids = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".jpg", ".jpeg"))
    emb = np.stack([_vector(i, Path(i).parent.name) for i in ids])
    np.savez(out, embeddings=emb, ids=np.asarray(ids))
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    from skyrank.build import build_dataset

    tmp = tmp_path_factory.mktemp("pins")
    root = make_university1652(tmp / "University-Release", TRAIN_IDS, TEST_IDS, DISTRACTORS, views=2, size=56)
    emb = _embeddings(root, tmp / "emb.npz")
    out = tmp / "ds"
    build_dataset(dataset="university1652", root=root, retriever="precomputed", checkpoint=emb, top_m=M,
                  directions=("d2s", "s2d"), out=out, progress=False)
    return {"root": root, "out": out, "tmp": tmp}


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.parquet"))}


def _score(query_id: str, candidate_id: str) -> float:
    return (zlib.crc32(f"{query_id}|{candidate_id}".encode()) % 1000) / 1000.0


def test_build_parquet_files_are_unchanged(build):
    assert _digests(build["out"]) == PARQUET_SHA256


def test_eval_json_is_unchanged(build):
    import datasets

    from skylink_model.evaluation import evaluate_reranking

    rows = list(datasets.load_dataset("parquet", data_files=sorted(
        str(p) for p in (build["out"] / "precomputed-university1652-d2s").glob("test-*.parquet")), split="train"))
    scores = {r["query_id"]: {c: _score(r["query_id"], c) for c in r["retrieved_ids"]} for r in rows}
    report = evaluate_reranking(rows, scores, top_k=3, config="precomputed-university1652-d2s", split="test")
    written = json.loads(report.to_json())
    assert (written["num_queries"], written["top_k"]) == (8, 3)
    assert written["rows"] == EVAL_ROWS


def test_first_training_losses_are_unchanged(build):
    import torch

    from skylink_model.config import SkyLinkConfig
    from skylink_model.testing import make_tiny_qwen2_vl
    from skylink_model.train import train_skylink

    torch.set_num_threads(1)
    config = SkyLinkConfig(base_model=str(make_tiny_qwen2_vl(build["tmp"] / "tiny")), k=3, batch_size=2,
                           learning_rate=5e-3, warmup_ratio=0.0, lora_dropout=0.0, seed=0)
    result = train_skylink(config, build["out"], "precomputed-university1652-d2s", out_dir=build["tmp"] / "run",
                           images_root=build["root"], max_steps=2, device="cpu", progress=False, report_to=None,
                           lr_scheduler="constant", cache_dir=build["tmp"] / "cache")
    assert result.losses == pytest.approx(FIRST_LOSSES, rel=1e-4, abs=1e-6)
