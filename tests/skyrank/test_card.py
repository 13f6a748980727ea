"""Tests of skyrank.card: Hub YAML metadata (configs, dataset_info, licence, size categories) and the body."""

from __future__ import annotations

import pytest
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from skyrank import hub_limits
from skyrank.card import SKYLINK_CITATION, render_dataset_card
from skyrank.format import schema
from skyrank.writer import TableInfo

RETR = "fakeret-toy-d2s"
GALLERY = "gallery-toy"
QUERIES = "queries-toy"


def _tables(retr_rows=(120, 40), gallery_rows=(300, 200), with_images=False) -> list[TableInfo]:
    out = []
    for cfg, rows in ((RETR, retr_rows), (GALLERY, gallery_rows), (QUERIES, retr_rows)):
        feats = schema.features_for(cfg, with_images=with_images)
        for split, n in zip(("train", "test"), rows, strict=True):
            out.append(TableInfo(cfg, split, n, 100 * n, [f"{cfg}/{split}-00000-of-00001.parquet"], feats, 50 * n))
    return out


def _render(tables=None, *, license="other", bad=(), redistributable=False, default=RETR, image_size=384, **params):
    build = {"m": 20, "protocol": "official", "splits": ["train", "test"], "with_images": False,
             "skipped_bad_images": list(bad), "software": {"datasets": "5.2.0"}, **params}  # fmt: skip
    return render_dataset_card(
        tables if tables is not None else _tables(),
        pretty_name="SkyRank: fakeret on toy",
        benchmark_meta={
            "name": "University-1652",
            "license": license,
            "license_name": "university-1652-terms" if license == "other" else None,
            "license_link": "https://example.org/request" if license == "other" else None,
            "citation": "@inproceedings{zheng2020university, title = {University-1652}}",
            "redistributable": redistributable,
        },
        retriever_meta={
            "name": "fakeret",
            "citation": "@inproceedings{deuser2023sample4geo, title = {Sample4Geo}}",
            "paper": "https://arxiv.org/abs/2303.11851",
            "checkpoint": "weights.pth",
            "checkpoint_sha256": "ab" * 32,
            "arch": "convnext_base",
            "image_size": image_size,
        },
        build_params=build,
        stats={(RETR, "test"): {"rows": 40, "gt_in_top_m": 99.5, "R@1": 92.1, "R@5": 97.0, "R@10": 98.0, "AP": 93.4}},
        default_config=default,
    )


def test_yaml_round_trips_with_exact_counts_and_one_default():
    text = _render()
    card = DatasetCard(text)  # parses the YAML front matter (no network)
    meta = card.data.to_dict()
    assert meta["license"] == "other"
    assert meta["license_name"] == "university-1652-terms" and meta["license_link"].startswith("https://")
    assert meta["task_categories"] == ["image-feature-extraction"]
    assert set(schema.CARD_TAGS) <= set(meta["tags"])
    assert meta["pretty_name"] == "SkyRank: fakeret on toy"
    assert hub_limits.check_card_metadata(meta) == []

    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert list(configs)[0] == RETR
    assert [c for c, v in configs.items() if v.get("default")] == [RETR]
    assert configs.get_default_config_name() == RETR
    assert configs[GALLERY]["data_files"] == [
        {"split": "train", "path": f"{GALLERY}/train-*"},
        {"split": "test", "path": f"{GALLERY}/test-*"},
    ]
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert infos[RETR].splits["train"].num_examples == 120 and infos[RETR].splits["test"].num_examples == 40
    assert infos[GALLERY].splits["train"].num_examples == 300
    assert infos[RETR].features == schema.RETRIEVER_FEATURES
    assert infos[GALLERY].features == schema.IMAGE_TABLE_FEATURES
    assert infos[GALLERY].download_size == 50 * 500


def test_image_feature_in_yaml_when_images_are_embedded():
    card = DatasetCard(_render(_tables(with_images=True), license="cc0-1.0", redistributable=True, with_images=True))
    infos = DatasetInfosDict.from_dataset_card_data(card.data)
    assert infos[GALLERY].features == schema.IMAGE_TABLE_FEATURES_WITH_IMAGES
    assert card.data.to_dict()["license"] == "cc0-1.0" and "license_name" not in card.data.to_dict()
    assert "may be redistributed" in card.text


@pytest.mark.parametrize(
    ("rows", "category"),
    [((500, 499), "n<1K"), ((600, 400), "1K<n<10K"), ((9_999, 0), "1K<n<10K"), ((70_000, 40_000), "100K<n<1M")],
)
def test_size_category_from_the_largest_config(rows, category):
    card = DatasetCard(_render(_tables(retr_rows=(10, 10), gallery_rows=rows)))
    assert card.data.to_dict()["size_categories"] == [category]


def test_body_schema_params_stats_licence_citations():
    text = _render(bad=["test/drone/0001/broken.jpeg"])
    body = text.split("\n---\n", 1)[1]
    for column in (*schema.RETRIEVER_COLUMNS, *schema.IMAGE_TABLE_FEATURES_WITH_IMAGES):
        assert f"| `{column}` |" in body
    assert "| m (top-m mined per query) | 20 |" in body
    assert "| gallery protocol | official |" in body
    assert "ab" * 32 in body and "| datasets version | 5.2.0 |" in body
    assert f"| `{RETR}` | test | 40 | 99.50 | 92.10 | 97.00 | 98.00 | 93.40 |" in body
    assert "may **not** be redistributed" in body and "university-1652-terms" in body
    assert "`test/drone/0001/broken.jpeg`" in body
    assert SKYLINK_CITATION in body and "2603.08063" in body
    assert "zheng2020university" in body and "deuser2023sample4geo" in body
    assert f'load_dataset("<user>/<repo> or /path/to/this/folder", "{RETR}", split="test")' in body
    assert f'"{GALLERY}"' in body and "skyrank.load_skyrank(" in body and "images_root=" in body


def test_deterministic_and_order_independent():
    tables = _tables()
    assert _render(tables) == _render(list(reversed(tables)))


def test_bad_metadata_is_refused():
    with pytest.raises(ValueError, match="Hub licence id"):
        _render(license="made-up-licence")
    with pytest.raises(ValueError, match="default config"):
        _render(default="nope")
    with pytest.raises(ValueError, match="license_name"):
        render_dataset_card(
            _tables(),
            pretty_name="x",
            benchmark_meta={"name": "b", "license": "other"},
            retriever_meta={"name": "r"},
            build_params={"m": 20},
            stats={},
            default_config=RETR,
        )


def test_image_size_row_names_each_views_input_size_where_they_differ():
    """A ground build's card gives Sample4Geo's per-view input sizes (the panorama keeps its shape); a square-only
    build keeps the plain side (the University-1652/SUES-200/synthetic cards stay as pinned)."""
    from skyrank.card import input_size_text
    from skyrank.retrievers import create

    s4g = create("sample4geo", arch="convnext_atto", dataset="cvusa", random_weights=True)
    sizes = {view: s4g.input_size(view) for view in ("ground", "satellite")}
    assert input_size_text(s4g.image_size, sizes) == "ground 140×768, satellite 384×384"
    assert input_size_text(384, {"drone": (384, 384), "satellite": (384, 384)}) == 384
    card = _render(image_size="ground 140×768, satellite 384×384")
    assert "| retriever image size | ground 140×768, satellite 384×384 |" in card
