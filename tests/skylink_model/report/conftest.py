"""A tiny demo-like run, built once per session: a tiny SkyRank folder, a tiny SkyLink trained for two steps, and
its evaluation JSON with the per-query file (what ``skyrank demo`` leaves, at a size the default run affords)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.skylink_model.test_data import RETRIEVER_CONFIG, make_tiny_skyrank


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_qwen2_vl_dir: Path) -> dict[str, Path]:
    import torch

    from skylink_model.config import SkyLinkConfig
    from skylink_model.evaluation import evaluate
    from skylink_model.model import SkyLinkModel
    from skylink_model.train import train_skylink

    root = tmp_path_factory.mktemp("report-run")
    data = make_tiny_skyrank(root / "dataset", n_locations=6, m=5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = SkyLinkConfig(base_model=str(tiny_qwen2_vl_dir), k=3, batch_size=2, dtype="float32",
                               learning_rate=1e-2, warmup_ratio=0.0)  # fmt: skip
        train_skylink(config, data, RETRIEVER_CONFIG, out_dir=root / "run", max_steps=2, device="cpu",
                      progress=False, report_to=None)  # fmt: skip
        model = SkyLinkModel.from_pretrained(root / "run", device="cpu")
        evaluate(model, data, RETRIEVER_CONFIG, "test", top_k=4, batch_size=4, progress=False, fuse=1.0,
                 json_path=root / "eval.json", per_query_path=root / "eval.per_query.jsonl")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return {"data": data, "run": root / "run", "eval_json": root / "eval.json",
            "per_query": root / "eval.per_query.jsonl", "root": root}  # fmt: skip
