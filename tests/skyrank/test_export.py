"""``skyrank export --format mteb``: every config loads with ``datasets``, MTEB's own loader reads the export the way
its re-ranking tasks do (``_load_top_ranked`` included), and MTEB's cross-encoder re-ranking search + retrieval
metrics, with a re-ranker that keeps the retriever's order, give ``skyrank eval``'s retriever row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from skyrank.benchmarks.synthetic import generate_synthetic
from skyrank.build import build_dataset
from skyrank.embeddings import read_embeddings
from skyrank.errors import OutputExistsError, SkyRankError
from skyrank.export import MTEB_PARTS, export_dataset
from skyrank.format import schema
from skyrank.retrievers import create

SIZE = 32
D2S = schema.retriever_config_name("sample4geo", "synthetic", "d2s")
S2D = schema.retriever_config_name("sample4geo", "synthetic", "s2d")


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("export-bench")
    return generate_synthetic(work / "bench", locations=8, distractors=4, views=2, image_size=SIZE, progress=False)


@pytest.fixture(scope="module")
def built(bench_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    retriever = create("sample4geo", arch="convnext_atto", image_size=SIZE, random_weights=True)
    ckpt = work / "atto.pth"
    torch.save(retriever.model.state_dict(), ckpt)
    return build_dataset(
        dataset="synthetic", root=bench_root, checkpoint=ckpt, arch="convnext_atto", image_size=SIZE,
        out=work / "ds", top_m=10, splits=("test",), directions=("d2s", "s2d"), progress=False, with_images=False,
    ).out  # fmt: skip


@pytest.fixture(scope="module")
def exported(built, tmp_path_factory) -> Path:
    return export_dataset(built, tmp_path_factory.mktemp("mteb") / "out")["out"]


def _rows(folder: Path, config: str, split: str = "test") -> list[dict]:
    return pq.read_table(sorted((folder / config).glob(f"{split}-*.parquet"))).to_pylist()


def test_every_config_loads_with_datasets_and_names_stay_unambiguous(built, exported, tmp_path):
    from datasets import get_dataset_config_names, load_dataset

    names = set(get_dataset_config_names(str(exported)))
    assert names == {f"{c}-{p}" for c in (D2S, S2D) for p in MTEB_PARTS}
    rows = {r["query_id"]: r for r in _rows(built, D2S)}
    top = load_dataset(str(exported), f"{D2S}-top_ranked", split="test", cache_dir=str(tmp_path))
    assert top.column_names == ["query-id", "corpus-ids"]
    assert {r["query-id"]: r["corpus-ids"] for r in top} == {q: r["retrieved_ids"] for q, r in rows.items()}
    qrels = load_dataset(str(exported), f"{S2D}-qrels", split="test", cache_dir=str(tmp_path))
    s2d = _rows(built, S2D)
    assert len(qrels) == sum(len(r["positive_ids"]) for r in s2d) and len(qrels) > len(s2d)  # every positive
    corpus = load_dataset(str(exported), f"{D2S}-corpus", split="test", cache_dir=str(tmp_path))
    assert set(corpus["id"]) == {r["image_id"] for r in _rows(built, "gallery-synthetic") if r["view"] == "satellite"}
    assert corpus.column_names == ["id", "label", "path"]  # an ids-only build exports ids and paths
    assert "MTEB" in (exported / "README.md").read_text()


def test_export_refuses_to_clobber_and_names_unknown_configs(built, exported):
    with pytest.raises(OutputExistsError):
        export_dataset(built, exported)
    export_dataset(built, exported, configs=[D2S], overwrite=True)  # a SkyRank export may be replaced
    with pytest.raises(SkyRankError, match="no retriever config"):
        export_dataset(built, exported.parent / "x", configs=["mccg-synthetic-d2s"])


def test_mteb_loads_the_export_and_its_metrics_match_skyrank_eval(built, bench_root, tmp_path, monkeypatch):
    pytest.importorskip("mteb")
    import datasets
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalDatasetLoader
    from mteb.models.search_wrappers import SearchCrossEncoderWrapper
    from mteb.tasks.retrieval.eng.forb_i2i_retrieval import FORBI2I

    from skylink_model.evaluation import evaluate_reranking

    # MTEB calls load_dataset without cache_dir, and datasets keys a local folder's cache by its name: use a fresh
    # cache, or an earlier export at a path with the same name would be read back.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    out = export_dataset(built, tmp_path / "mteb", images_root=bench_root)["out"]
    ids, _views, vectors = read_embeddings(built, "test")
    emb = dict(zip(ids, vectors, strict=True))

    class RetrieverAsCrossEncoder:
        """An MTEB cross-encoder that scores each (query, candidate) pair with the retriever's stored embeddings, so
        it keeps the retriever's order: MTEB's metrics must then equal skyrank eval's retriever row."""

        mteb_model_meta = None

        def predict(self, inputs1, inputs2, **kwargs):
            q_ids = [i for batch in inputs1 for i in batch["id"]]
            c_ids = [i for batch in inputs2 for i in batch["id"]]
            assert all(hasattr(im, "size") for b in inputs2 for im in b["image"])  # MTEB decoded the images
            return np.array([float(np.dot(emb[q], emb[c])) for q, c in zip(q_ids, c_ids, strict=True)])

    meta = FORBI2I.metadata  # a real image-to-image MTEB task's metadata (modalities: image); nothing downloads
    for config in (D2S, S2D):
        data = RetrievalDatasetLoader(str(out), revision=None, split="test", config=config).load()
        rows = _rows(built, config)
        assert data["top_ranked"] == {r["query_id"]: r["retrieved_ids"] for r in rows}
        assert set(data["queries"]["id"]) == {r["query_id"] for r in rows}
        assert data["relevant_docs"] == {r["query_id"]: dict.fromkeys(r["positive_ids"], 1) for r in rows}
        # MTEB's re-ranking search: only each query's top_ranked candidates are scored by the cross-encoder.
        search = SearchCrossEncoderWrapper(RetrieverAsCrossEncoder())
        kw = dict(task_metadata=meta, hf_split="test", hf_subset=config, encode_kwargs={"batch_size": 4})
        search.index(data["corpus"], **kw)
        results = search.search(data["queries"], top_k=10, top_ranked=data["top_ranked"], **kw)
        assert {q: list(r) for q, r in results.items()} == data["top_ranked"]
        scores = calculate_retrieval_scores(results, data["relevant_docs"], [1, 5, 10])
        ours = evaluate_reranking(rows, None, top_k=10).rows["retriever"]
        for k in (1, 5, 10):
            assert 100 * scores.hit_rate[f"HitRate@{k}"] == pytest.approx(ours[f"R@{k}"], abs=1e-3)
        if config == D2S:  # one positive per query: MTEB's recall is R@K too
            assert 100 * scores.recall["Recall@1"] == pytest.approx(ours["R@1"], abs=1e-3)


def test_export_command_line(built, tmp_path):
    from click.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.main, ["export", str(built), "--format", "mteb", "--config", S2D,
                                           "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert f"{S2D}-top_ranked" in result.output and (tmp_path / "cli" / f"{S2D}-qrels").is_dir()


def test_images_root_embeds_the_image_files(built, bench_root, tmp_path):
    from datasets import load_dataset

    out = export_dataset(built, tmp_path / "img", configs=[S2D], images_root=bench_root)["out"]
    queries = load_dataset(str(out), f"{S2D}-queries", split="test", cache_dir=str(tmp_path / "c"))
    assert queries[0]["image"].size == (SIZE, SIZE)
    table = pq.read_table(out / f"{S2D}-queries" / "test-00000-of-00001.parquet")
    first = table.slice(0, 1).to_pylist()[0]
    assert first["image"]["bytes"] == (bench_root / first["path"]).read_bytes()  # copied unchanged
    with pytest.raises(SkyRankError, match="not a folder"):
        export_dataset(built, tmp_path / "x", images_root=tmp_path / "nope")
