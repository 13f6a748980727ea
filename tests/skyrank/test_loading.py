"""``skyrank.load_skyrank``: lazily resolved images from the gallery/queries configs or from ``images_root``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from skyrank.errors import SkyRankError
from skyrank.loading import MissingImageError, load_skyrank
from tests.skyrank.fake_hub import FakeHub, make_dataset_folder, make_images

CFG = "tiny-synthetic-d2s"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("loading")
    images = make_images(base / "images")
    return {
        "images": images,
        "with_images": make_dataset_folder(base / "wi", images, with_images=True),
        "ids_only": make_dataset_folder(base / "ids", images),
    }


def _same(img: Image.Image, path: Path) -> bool:
    with Image.open(path) as ref:
        return img.size == ref.size and img.convert("RGB").tobytes() == ref.convert("RGB").tobytes()


def test_images_from_the_gallery_and_queries_configs(data: dict[str, Path], tmp_path: Path) -> None:
    ds = load_skyrank(data["with_images"], CFG, split="test", cache_dir=tmp_path)
    assert len(ds) == 8
    row = ds[0]
    assert isinstance(row["query_image"], Image.Image)
    assert _same(row["query_image"], data["images"] / row["query_id"])
    assert _same(row["gt_image"], data["images"] / row["gt_id"])
    assert len(row["candidate_images"]) == len(row["candidate_ids"]) == 3
    for cid, img in zip(row["candidate_ids"], row["candidate_images"], strict=True):
        assert _same(img, data["images"] / cid)
    assert "retrieved_images" not in row


def test_images_from_images_root(data: dict[str, Path], tmp_path: Path) -> None:
    ds = load_skyrank(
        data["ids_only"], CFG, images_root=data["images"], cache_dir=tmp_path, with_retrieved_images=True
    )
    rows = ds[:2]
    assert len(rows["query_image"]) == 2
    assert _same(rows["gt_image"][1], data["images"] / rows["gt_id"][1])
    assert len(rows["retrieved_images"][0]) == 4


def test_missing_image_names_its_id_and_the_place(data: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(data["images"], root)
    (root / "satellite" / "0002" / "0002.png").unlink()
    ds = load_skyrank(data["ids_only"], CFG, images_root=root, cache_dir=tmp_path / "c")
    with pytest.raises(MissingImageError) as err:
        [ds[i] for i in range(len(ds))]
    assert "satellite/0002/0002.png" in str(err.value) and str(root) in str(err.value)


def test_no_image_source_and_bad_config(data: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SkyRankError, match="images_root"):
        load_skyrank(data["ids_only"], CFG, cache_dir=tmp_path)
    with pytest.raises(SkyRankError, match="not a retriever config"):
        load_skyrank(data["ids_only"], "gallery-synthetic", cache_dir=tmp_path)
    with pytest.raises(SkyRankError, match="no config"):
        load_skyrank(data["ids_only"], "nope-synthetic-d2s", images_root=data["images"], cache_dir=tmp_path)


def test_load_skyrank_from_a_hub_repo(data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    from skyrank.publish import publish_dataset

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub() as hub:
        publish_dataset(data["with_images"], "alice/skyrank", token="t", endpoint=hub.endpoint, progress=False)
        ds = load_skyrank("alice/skyrank", CFG, endpoint=hub.endpoint, token="t", cache_dir=tmp_path)
        row = ds[3]
        assert _same(row["gt_image"], data["images"] / row["gt_id"])
        assert _same(row["query_image"], data["images"] / row["query_id"])
        with pytest.raises(SkyRankError, match="not found .* \\(404\\)"):
            load_skyrank("alice/missing", CFG, endpoint=hub.endpoint, cache_dir=tmp_path)


def test_rows_iterate_as_query_positives_negatives_triples(data: dict[str, Path], tmp_path: Path) -> None:
    import skyrank

    ds = load_skyrank(data["with_images"], CFG, split="test", cache_dir=tmp_path, with_positive_images=True)
    triples = list(skyrank.iter_triples(ds, max_negatives=2))
    assert len(triples) == len(ds)
    for (query, positives, negatives), row in zip(triples, ds, strict=True):
        assert _same(query, data["images"] / row["query_id"])
        assert len(positives) == len(row["positive_ids"]) and _same(positives[0], data["images"] / row["gt_id"])
        assert len(negatives) == 2 and _same(negatives[1], data["images"] / row["candidate_ids"][1])
    plain = load_skyrank(data["with_images"], CFG, split="test", cache_dir=tmp_path)
    _q, positives, negatives = next(iter(skyrank.iter_triples(plain)))
    assert len(positives) == 1 and len(negatives) == 3  # the ground truth; all m-1 negatives


def test_load_triples_is_the_sentence_transformers_hard_negative_layout(data: dict[str, Path], tmp_path: Path) -> None:
    import skyrank

    ds = skyrank.load_triples(data["ids_only"], CFG, split="test", images_root=data["images"], cache_dir=tmp_path,
                              max_negatives=2)
    assert ds.column_names == ["query", "positive", "negative_1", "negative_2"]
    rows = load_skyrank(data["ids_only"], CFG, split="test", images_root=data["images"], cache_dir=tmp_path)
    first, ids = ds[0], rows.select_columns(["query_id", "gt_id", "candidate_ids"])[0]
    assert _same(first["query"], data["images"] / ids["query_id"])
    assert _same(first["positive"], data["images"] / ids["gt_id"])
    assert _same(first["negative_2"], data["images"] / ids["candidate_ids"][1])


def test_any_reranker_evaluates_on_a_skyrank_config(data: dict[str, Path], tmp_path: Path) -> None:
    """The README's example: score each query's top-k with any function of (query image, candidate image)."""
    from skylink_model.evaluation import evaluate_reranking

    rows = load_skyrank(data["with_images"], CFG, split="test", cache_dir=tmp_path, with_retrieved_images=True)
    scores = {}
    for row in rows:
        top = row["retrieved_ids"][:3]
        # a toy re-ranker: prefer candidates whose pixels are closest to the query's
        q = row["query_image"].convert("L").resize((8, 8)).tobytes()
        s = [-sum(abs(a - b) for a, b in zip(q, c.convert("L").resize((8, 8)).tobytes(), strict=True))
             for c in row["retrieved_images"][:3]]
        scores[row["query_id"]] = dict(zip(top, s, strict=True))
    report = evaluate_reranking(rows, scores, top_k=3)
    assert set(report.rows) == {"retriever", "skylink", "improvement"}
    base = evaluate_reranking(rows, {q: {c: -i for i, c in enumerate(s)} for q, s in scores.items()}, top_k=3)
    assert base.rows["skylink"] == base.rows["retriever"]  # scores in retriever order change nothing


def test_one_reader_for_load_skyrank_and_skylink_data(data: dict[str, Path], tmp_path: Path) -> None:
    """load_skyrank and SkyLink's training data read rows and images through the same reader (issue 11)."""
    from skylink_model.data import load_skyrank_split
    from skyrank.loading import ImageResolver, load_retriever_split

    rows, images, image_configs = load_retriever_split(data["with_images"], CFG, "test", cache_dir=tmp_path)
    assert isinstance(images, ImageResolver) and image_configs == ["gallery-synthetic", "queries-synthetic"]
    split = load_skyrank_split(data["with_images"], CFG, "test", cache_dir=tmp_path)
    assert isinstance(split.images, ImageResolver) and split.rows[:] == rows[:]
    row = load_skyrank(data["with_images"], CFG, split="test", cache_dir=tmp_path)[0]
    assert _same(split.images(row["gt_id"]), data["images"] / row["gt_id"])
    assert split.images(row["gt_id"]) is split.images(row["gt_id"])  # the LRU cache


def test_image_resolver_loads_lazy_tables_on_first_lookup(tmp_path: Path) -> None:
    from skyrank.loading import ImageResolver

    calls: list[int] = []
    resolver = ImageResolver(lambda: calls.append(1) or [], tmp_path)
    assert calls == []
    with pytest.raises(MissingImageError, match="nope.png"):
        resolver("nope.png")
    assert calls == [1]


def test_build_params_from_a_folder_and_a_hub_repo(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from skyrank.loading import build_params
    from skyrank.publish import publish_dataset

    local = build_params(data["with_images"])
    assert local["m"] == 4 and local["retriever"] == "tiny"
    assert build_params(tmp_path / "no-such-folder") == {}  # neither a folder nor a repo id: no parameters, no error
    empty = tmp_path / "bare"
    empty.mkdir()
    (empty / "README.md").write_text("---\nconfigs: []\n---\n")
    assert build_params(empty) == {}  # a dataset without a manifest
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    with FakeHub() as hub:
        publish_dataset(data["with_images"], "alice/params", token="t", endpoint=hub.endpoint, progress=False)
        assert build_params("alice/params", endpoint=hub.endpoint, token="t", cache_dir=tmp_path) == local
