"""Tests of skylink_model.data: labels (Eq. 7 and ablations), groups (Eq. 3), images, loading a SkyRank folder.

``make_tiny_skyrank`` (also used by test_train.py and test_evaluation.py) writes a hand-built SkyRank folder: a
README.md with ``configs:`` YAML and ``<config>/<split>-00000-of-00001.parquet`` files, as on the Hub.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skylink_model.data import (
    Group,
    ImageResolver,
    build_group,
    iter_training_pairs,
    load_skyrank_split,
    make_labels,
    parse_retriever_config,
    split_chunks,
    subsample_rows,
)
from skyrank.errors import BadImageError, BenchmarkLayoutError, UnknownNameError
from skyrank.format import schema
from skyrank.loading import MissingImageError

RETRIEVER_CONFIG = "toyret-toy-d2s"


def _jpeg(color: tuple[int, int, int], size: int = 56, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(color, dtype=np.float32) + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    arr[size // 4 : size // 2, size // 4 : size // 2] = 255 - np.array(color, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _color(label: int) -> tuple[int, int, int]:
    return ((53 * label + 40) % 256, (97 * label + 90) % 256, (151 * label + 20) % 256)


def make_tiny_skyrank(
    root: Path,
    *,
    n_locations: int = 8,
    m: int = 6,
    with_images: bool = True,
    image_files: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny SkyRank folder (bench ``toy``, retriever ``toyret``, D2S, one drone query per location).

    Gallery ``satellite/<lab>/<lab>.jpg`` (one positive per query), queries ``drone/<lab>/d.jpg``. The fake
    retriever ranks the gallery at random (seeded) so the ground truth's rank varies; ``retrieved_ids`` is the
    top-m, ``candidate_ids`` the first m−1 negatives (swap rule, Eq. 2). With ``image_files`` the JPEGs are also
    written under ``root/images`` (the benchmark copy for ``images_root``).
    """
    import datasets

    root = Path(root)
    rng = np.random.default_rng(seed)
    labels = [f"{i:04d}" for i in range(n_locations)]
    gallery_ids = [f"satellite/{lab}/{lab}.jpg" for lab in labels]
    query_ids = [f"drone/{lab}/d.jpg" for lab in labels]
    images = {}
    for i in range(n_locations):
        images[gallery_ids[i]] = _jpeg(_color(i), seed=i)
        images[query_ids[i]] = _jpeg(tuple(max(0, c - 20) for c in _color(i)), seed=100 + i)
    if image_files:
        for image_id, data in images.items():
            path = root / "images" / image_id
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def image_rows(ids: list[str], view: str) -> list[dict]:
        out = []
        for image_id in ids:
            row = {"image_id": image_id, "label": image_id.split("/")[1], "view": view, "path": image_id}
            if with_images:
                row["image"] = {"bytes": images[image_id], "path": image_id.rsplit("/", 1)[-1]}
            out.append(row)
        return out

    def retriever_rows(split_seed: int) -> list[dict]:
        split_rng = np.random.default_rng(split_seed)
        rows = []
        for i, lab in enumerate(labels):
            order = [int(j) for j in split_rng.permutation(n_locations)]
            scores = np.sort(split_rng.uniform(0.2, 0.9, n_locations))[::-1].astype(np.float32)
            ranked = [gallery_ids[j] for j in order]
            gt = gallery_ids[i]
            gt_rank = ranked.index(gt) + 1
            negatives = [g for g in ranked if g != gt]
            sims = [float(np.float32(split_rng.uniform(0.5, 1.0))) for _ in negatives]
            rows.append(
                {
                    "query_id": query_ids[i],
                    "label": lab,
                    "gt_id": gt,
                    "gt_rank": gt_rank,
                    "gt_score": float(scores[gt_rank - 1]),
                    "positive_ids": [gt],
                    "positive_ranks": [gt_rank],
                    "candidate_ids": negatives[: m - 1],
                    "candidate_scores": [float(scores[ranked.index(g)]) for g in negatives[: m - 1]],
                    "candidate_gt_similarity": sims[: m - 1],
                    "retrieved_ids": ranked[:m],
                    "retrieved_scores": [float(s) for s in scores[:m]],
                }
            )
        return rows

    image_features = schema.IMAGE_TABLE_FEATURES_WITH_IMAGES if with_images else schema.IMAGE_TABLE_FEATURES
    tables = {
        schema.gallery_config_name("toy"): (lambda split: image_rows(gallery_ids, "satellite"), image_features),
        schema.queries_config_name("toy"): (lambda split: image_rows(query_ids, "drone"), image_features),
        RETRIEVER_CONFIG: (lambda split: retriever_rows(seed + (0 if split == "train" else 1)), None),
    }
    yaml = ["---", "configs:"]
    for config, (make_rows, features) in tables.items():
        yaml += [f"- config_name: {config}", "  data_files:"]
        for split in schema.SPLITS:
            folder = root / config
            folder.mkdir(parents=True, exist_ok=True)
            ds = datasets.Dataset.from_list(make_rows(split), features=features or schema.RETRIEVER_FEATURES)
            ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
            yaml += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    yaml += ["---", "", "# tiny SkyRank test folder", ""]
    (root / "README.md").write_text("\n".join(yaml), encoding="utf-8")
    del rng
    return root


# ------------------------------------------------------------------------------------------------ labels


def test_make_labels_soft_hard_gt_only():
    sims = [0.95, 0.9, 0.5, 0.91, 1.0000001]
    soft = make_labels(sims, 0.9, "soft")
    assert soft == pytest.approx([0.95, 0.0, 0.0, 0.91, 1.0], abs=1e-6)  # Eq. 7: strict '>', clipped to 1
    assert make_labels(sims, 0.9, "hard") == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert make_labels(sims, 0.9, "gt-only") == [0.0] * 5
    assert make_labels([0.95], 1.0, "soft") == [0.0]  # T = 1: nothing above the threshold
    with pytest.raises(ValueError, match="mode"):
        make_labels(sims, 0.9, "fuzzy")


def _row() -> dict:
    return {
        "query_id": "drone/0001/a.jpg",
        "label": "0001",
        "gt_id": "satellite/0001/0001.jpg",
        "gt_rank": 3,
        "gt_score": 0.8,
        "positive_ids": ["satellite/0001/0001.jpg"],
        "positive_ranks": [3],
        "candidate_ids": [f"satellite/{i:04d}/{i:04d}.jpg" for i in (7, 4, 9, 2, 5)],
        "candidate_scores": [0.9, 0.85, 0.7, 0.6, 0.5],
        "candidate_gt_similarity": [0.97, 0.5, 0.92, 0.3, 0.99],
        "retrieved_ids": [],
        "retrieved_scores": [],
    }


def test_build_group_gt_first_then_top_negatives_in_retriever_order():
    group = build_group(_row(), k=4, threshold=0.9, labels="soft")
    assert isinstance(group, Group)
    assert group.query_id == "drone/0001/a.jpg"
    assert group.candidate_ids == [
        "satellite/0001/0001.jpg",
        "satellite/0007/0007.jpg",
        "satellite/0004/0004.jpg",
        "satellite/0009/0009.jpg",
    ]
    assert group.labels == pytest.approx([1.0, 0.97, 0.0, 0.92], abs=1e-6)
    assert group.gt_id == "satellite/0001/0001.jpg" and len(group) == 4
    assert build_group(_row(), k=4, labels="hard").labels == [1.0, 1.0, 0.0, 1.0]
    assert build_group(_row(), k=4, labels="gt-only").labels == [1.0, 0.0, 0.0, 0.0]


def test_build_group_short_row_and_errors():
    group = build_group(_row(), k=13)  # only 5 negatives: a group of 6
    assert len(group) == 6 and len(group.labels) == 6
    bad = _row()
    bad["candidate_ids"] = [bad["gt_id"], *bad["candidate_ids"][1:]]
    with pytest.raises(ValueError, match="among its negatives"):
        build_group(bad, k=4)
    with pytest.raises(ValueError, match="k"):
        build_group(_row(), k=1)


def test_subsample_rows_deterministic_and_nested():
    a = subsample_rows(100, 0.25, seed=3)
    assert a == subsample_rows(100, 0.25, seed=3)
    assert len(a) == 25 and a == sorted(a)
    assert set(subsample_rows(100, 0.1, seed=3)) <= set(a)
    assert subsample_rows(100, 0.25, seed=4) != a
    assert subsample_rows(10, 1.0) == list(range(10))
    assert len(subsample_rows(3, 0.01)) == 1
    with pytest.raises(ValueError):
        subsample_rows(10, 0.0)


def test_split_chunks():
    assert split_chunks(5, None) == [(0, 5)]
    assert split_chunks(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert split_chunks(5, 9) == [(0, 5)]


def test_parse_retriever_config():
    p = parse_retriever_config("sample4geo-sues200-150-d2s")
    assert (p.retriever, p.benchmark, p.altitude, p.direction) == ("sample4geo", "sues200", "150", "d2s")
    assert p.gallery_config == "gallery-sues200-150" and p.queries_config == "queries-sues200-150"
    p = parse_retriever_config("mccg-university1652-s2d")
    assert p.altitude is None and p.gallery_config == "gallery-university1652"
    for bad in ("gallery-university1652", "x-y", "a-b-c-d-e-d2s", "sample4geo-university1652-x2y"):
        with pytest.raises(ValueError):
            parse_retriever_config(bad)


# ------------------------------------------------------------------------------------------------ images + loading


def test_image_resolver_from_root_and_missing(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a" / "x.png")
    resolver = ImageResolver((), tmp_path)
    img = resolver("a/x.png")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 0, 0)
    assert resolver("a/x.png") is img  # cached
    with pytest.raises(MissingImageError, match=r"a/missing\.png.*" + str(tmp_path).replace("\\", "/")):
        resolver("a/missing.png")
    with pytest.raises(MissingImageError, match="no images_root"):
        ImageResolver(())("a/x.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(BadImageError, match="broken.jpg"):
        resolver("a/broken.jpg")


def test_load_skyrank_split_with_embedded_images(tmp_path):
    root = make_tiny_skyrank(tmp_path / "ds", n_locations=5, m=4)
    split = load_skyrank_split(root, RETRIEVER_CONFIG, "train", cache_dir=tmp_path / "cache")
    assert len(split) == 5 and split.image_configs == ["gallery-toy", "queries-toy"]
    assert split.images.has_embedded_images
    row = split.rows[0]
    img = split.images(row["query_id"])
    assert img.size == (56, 56) and img.mode == "RGB"
    groups = split.groups(k=3, threshold=0.9, labels="soft")
    assert [len(g) for g in groups] == [3] * 5
    assert groups[0].candidate_ids[0] == row["gt_id"]
    sub = split.subsample(0.4, seed=1)
    assert len(sub) == 2 and sub.rows["query_id"] == split.subsample(0.4, seed=1).rows["query_id"]
    assert split.gallery_size == 5  # the gallery-toy rows of the gallery view (satellite, D2S)
    rest, val_ids = split.without_validation(0.4, seed=0)
    assert len(rest) + len(val_ids) == 5 and len(val_ids) == 2
    assert not set(rest.rows["query_id"]) & set(val_ids) and rest.gallery_size == 5
    held = {p for r in split.rows if r["query_id"] in set(val_ids) for p in r["positive_ids"]}
    assert held and all(not held & set(r["candidate_ids"]) for r in rest.rows)  # never a training negative
    by_id = {r["query_id"]: r for r in split.rows}
    for r in rest.rows:  # the rest keep their order, scores and similarities in step
        full = by_id[r["query_id"]]
        kept = [i for i, c in enumerate(full["candidate_ids"]) if c not in held]
        assert r["candidate_ids"] == [full["candidate_ids"][i] for i in kept]
        assert r["candidate_gt_similarity"] == pytest.approx([full["candidate_gt_similarity"][i] for i in kept])
        assert r["candidate_scores"] == pytest.approx([full["candidate_scores"][i] for i in kept])
    assert any(len(r["candidate_ids"]) < len(by_id[r["query_id"]]["candidate_ids"]) for r in rest.rows)
    assert split.without_validation(0.0) == (split, [])
    with pytest.raises(MissingImageError, match="nowhere/else.jpg"):
        split.images("nowhere/else.jpg")
    with pytest.raises(UnknownNameError, match="available"):
        load_skyrank_split(root, "toyret-toy-s2d", "train", cache_dir=tmp_path / "cache")


def test_load_skyrank_split_ids_only_needs_images_root(tmp_path):
    root = make_tiny_skyrank(tmp_path / "ds", n_locations=4, m=3, with_images=False, image_files=True)
    with pytest.raises(BenchmarkLayoutError, match="images-root"):
        load_skyrank_split(root, RETRIEVER_CONFIG, "test", cache_dir=tmp_path / "cache")
    split = load_skyrank_split(root, RETRIEVER_CONFIG, "test", images_root=root / "images", cache_dir=tmp_path / "c")
    assert not split.images.has_embedded_images
    assert split.images(split.rows[1]["gt_id"]).size == (56, 56)


def test_iter_training_pairs_micro_batches(tmp_path):
    root = make_tiny_skyrank(tmp_path / "ds", n_locations=6, m=5)
    split = load_skyrank_split(root, RETRIEVER_CONFIG, "train", cache_dir=tmp_path / "cache")
    groups = split.groups(k=5)
    batches = list(iter_training_pairs(groups[:2], split.images, micro_batch_size=2))
    assert [(b.query_id, b.chunk_index, b.num_chunks, len(b.candidate_ids)) for b in batches] == [
        (groups[0].query_id, 0, 3, 2),
        (groups[0].query_id, 1, 3, 2),
        (groups[0].query_id, 2, 3, 1),
        (groups[1].query_id, 0, 3, 2),
        (groups[1].query_id, 1, 3, 2),
        (groups[1].query_id, 2, 3, 1),
    ]
    assert sum(b.weight for b in batches[:3]) == pytest.approx(1.0)
    assert [lab for b in batches[:3] for lab in b.labels] == groups[0].labels
    assert all(len(b.candidate_images) == len(b.candidate_ids) for b in batches)
    whole = list(iter_training_pairs(groups[:1], split.images))
    assert len(whole) == 1 and whole[0].candidate_ids == groups[0].candidate_ids


def test_rebuilt_local_folder_is_not_served_from_a_stale_cache(tmp_path):
    # datasets 5.2 keys a local folder's Arrow cache by its name and config only; load_skyrank_split must not.
    cache = tmp_path / "cache"
    a = make_tiny_skyrank(tmp_path / "one" / "ds", n_locations=3, m=3)
    assert len(load_skyrank_split(a, RETRIEVER_CONFIG, "train", cache_dir=cache)) == 3
    b = make_tiny_skyrank(tmp_path / "two" / "ds", n_locations=5, m=3)
    assert len(load_skyrank_split(b, RETRIEVER_CONFIG, "train", cache_dir=cache)) == 5
    a = make_tiny_skyrank(tmp_path / "one" / "ds", n_locations=4, m=3)  # rebuilt in place
    assert len(load_skyrank_split(a, RETRIEVER_CONFIG, "train", cache_dir=cache)) == 4


def test_carve_validation_holds_out_whole_locations_deterministically():
    from skylink_model.data import carve_validation

    labels = ["a"] * 3 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2
    train, val = carve_validation(labels, 0.3, seed=0)
    assert sorted(train + val) == list(range(10)) and not set(train) & set(val)
    val_labels = {labels[i] for i in val}
    assert not val_labels & {labels[i] for i in train}  # no location on both sides
    assert len(val) >= 3  # at least round(0.3 * 10) rows
    reordered = labels[::-1]  # the carve depends on the labels, not on row order
    assert {reordered[i] for i in carve_validation(reordered, 0.3, seed=0)[1]} == val_labels
    assert carve_validation(labels, 0.0) == (list(range(10)), [])
    assert len(carve_validation(["a", "b"], 0.9)[1]) == 1  # never every location
    for seed in range(1, 20):  # another seed can hold out other locations
        if {labels[i] for i in carve_validation(labels, 0.3, seed=seed)[1]} != val_labels:
            break
    else:
        raise AssertionError("the seed does not change the carve")
    with pytest.raises(ValueError, match="val_fraction"):
        carve_validation(labels, 1.0)
    with pytest.raises(ValueError, match="two locations"):
        carve_validation(["a", "a"], 0.5)


def test_validation_record_round_trip(tmp_path):
    from skylink_model.data import read_validation, write_validation

    assert read_validation(tmp_path) is None
    write_validation(tmp_path, {"data": "d", "data_config": "c", "split": "train", "query_ids": ["q1"]})
    assert read_validation(tmp_path)["query_ids"] == ["q1"]
    write_validation(tmp_path, {"query_ids": []})
    assert read_validation(tmp_path) is None
