"""``skyrank rerank``: candidate lists from another tool (Parquet or CSV of image paths) re-ranked with a SkyLink
run through the same path as ``skyrank eval``; scores equal the naive per-pair scores."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from skylink_model.model import get_skylink_model
from skylink_model.rerank_lists import read_candidate_lists, rerank_file
from skyrank.errors import SkyRankError

from .conftest import make_image


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def model(tiny_config):
    m = get_skylink_model(tiny_config)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.lora_parameters().values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return m.eval()


@pytest.fixture
def folder(tmp_path):
    for i in range(6):
        make_image(56 if i % 2 else 84, seed=i).save(tmp_path / f"img{i}.png")
    return tmp_path


def test_csv_lists_are_scored_and_reordered(model, folder):
    rows = [("img0.png", f"img{c}.png", s) for c, s in ((1, 0.9), (2, 0.5), (3, 0.7))]
    rows += [("img4.png", f"img{c}.png", s) for c, s in ((5, 0.2), (1, 0.8))]
    pd.DataFrame(rows, columns=["query", "candidate", "score"]).to_csv(folder / "cands.csv", index=False)
    result = rerank_file(model, folder / "cands.csv", folder / "out.csv")
    assert (result.queries, result.pairs, result.scored) == (2, 5, 5)
    out = pd.read_csv(result.out)
    assert list(out.columns) == ["query", "candidate", "retriever_rank", "skylink_score", "rank"]
    q0 = out[out["query"] == "img0.png"].set_index("candidate")
    assert q0.loc["img1.png", "retriever_rank"] == 1 and q0.loc["img3.png", "retriever_rank"] == 2  # by score
    images = {f"img{i}.png": make_image(56 if i % 2 else 84, seed=i) for i in range(6)}
    for q, group in out.groupby("query"):
        naive = model.score_pairs([images[q]] * len(group), [images[c] for c in group["candidate"]])
        torch.testing.assert_close(torch.tensor(group["skylink_score"].tolist(), dtype=torch.float32), naive,
                                   atol=1e-4, rtol=1e-4)
        assert group["rank"].tolist() == sorted(group["rank"]) and group["skylink_score"].is_monotonic_decreasing


def test_wide_parquet_with_top_k_keeps_the_tail_in_retriever_order(model, folder):
    pd.DataFrame({"query": ["img0.png"], "candidates": [["img1.png", "img2.png", "img3.png", "img5.png"]]}).to_parquet(
        folder / "wide.parquet"
    )
    result = rerank_file(model, folder / "wide.parquet", top_k=2)
    assert result.out.name == "wide.reranked.parquet" and result.scored == 2
    out = pd.read_parquet(result.out).set_index("candidate")
    assert sorted(out.loc[["img1.png", "img2.png"], "rank"]) == [1, 2]
    assert out.loc["img3.png", "rank"] == 3 and out.loc["img5.png", "rank"] == 4
    assert math.isnan(out.loc["img5.png", "skylink_score"])


def test_bad_inputs_say_what_is_wrong(model, folder):
    pd.DataFrame({"q": ["a"], "c": ["b"]}).to_csv(folder / "bad.csv", index=False)
    with pytest.raises(SkyRankError, match="no query column"):
        read_candidate_lists(folder / "bad.csv")
    pd.DataFrame({"query": ["img0.png"], "candidate": ["missing.png"]}).to_csv(folder / "miss.csv", index=False)
    with pytest.raises(SkyRankError, match="missing.png"):
        rerank_file(model, folder / "miss.csv")
    pd.DataFrame({"query": ["a", "a"], "candidate": ["b", "b"]}).to_csv(folder / "dup.csv", index=False)
    with pytest.raises(SkyRankError, match="twice"):
        read_candidate_lists(folder / "dup.csv")


def test_rerank_command_line(model, folder, tmp_path):
    from click.testing import CliRunner

    import cli

    run = model.save_pretrained(tmp_path / "run")
    pd.DataFrame({"query": ["img0.png"] * 2, "candidate": ["img1.png", "img2.png"]}).to_csv(folder / "c.csv",
                                                                                            index=False)
    result = CliRunner().invoke(cli.main, ["rerank", "--adapter", str(run), "--candidates", str(folder / "c.csv"),
                                           "--out", str(folder / "r.parquet"), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 queries, 2 pairs scored" in result.output
    assert pd.read_parquet(folder / "r.parquet")["rank"].tolist() == [1, 2]
