from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from skyrank.benchmarks import get_benchmark, list_benchmarks
from skyrank.benchmarks.sues200 import OFFICIAL_TRAIN_IDS, SUES200, read_index_file
from skyrank.errors import BenchmarkLayoutError
from tests.skyrank.benchmarks.layouts import make_sues200, write_image, write_index_file

TRAIN = ["0001", "0002", "0003"]
TEST = ["0004", "0005"]
ALL = TRAIN + TEST
FRAMES = 2
LAYOUTS = ["raw", "split", "lower"]


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sues")
    return {
        layout: make_sues200(base / layout, layout, TRAIN, TEST, altitudes=("150", "200"), frames=FRAMES)
        for layout in LAYOUTS
    }


def sues() -> SUES200:
    bench = get_benchmark("sues200")
    assert isinstance(bench, SUES200)
    return bench


def test_registered_with_card_facts() -> None:
    assert "sues200" in list_benchmarks()
    bench = sues()
    assert bench.altitudes == ("150", "200", "250", "300")
    assert bench.license == "other" and bench.license_name and bench.license_link
    assert bench.redistributable is False
    assert "2204.10704" in bench.citation and "Zhu" in bench.citation


def test_official_train_ids_match_the_published_split() -> None:
    assert len(OFFICIAL_TRAIN_IDS) == 120 == len(set(OFFICIAL_TRAIN_IDS))
    assert list(OFFICIAL_TRAIN_IDS) == sorted(OFFICIAL_TRAIN_IDS)
    assert OFFICIAL_TRAIN_IDS[:8] == ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0009")
    assert OFFICIAL_TRAIN_IDS[-1] == "0200" and "0008" not in OFFICIAL_TRAIN_IDS


@pytest.mark.parametrize("layout", LAYOUTS)
def test_detect_layout(trees: dict[str, Path], layout: str) -> None:
    assert sues().detect_layout(trees[layout]) == layout


@pytest.mark.parametrize("layout", LAYOUTS)
def test_test_d2s(trees: dict[str, Path], layout: str) -> None:
    split = sues().load_split(trees[layout], "test", "d2s", altitude="150")
    assert (split.benchmark, split.altitude, split.protocol) == ("sues200", "150", "official")
    assert Counter(q.label for q in split.queries) == {i: FRAMES for i in TEST}
    assert [g.label for g in split.gallery] == ALL  # official gallery: train locations are distractors
    assert {q.view for q in split.queries} == {"drone"} and {g.view for g in split.gallery} == {"satellite"}
    assert all("/150/" in q.image_id or q.image_id.startswith("drone_view_512/") for q in split.queries)
    assert all(q.image_id.endswith(".jpg") for q in split.queries)
    assert all(g.image_id.endswith("/0.png") for g in split.gallery)
    assert split.queries == sorted(split.queries) and split.gallery == sorted(split.gallery)
    assert all(split.path_of(r).is_file() for r in split.queries + split.gallery)
    assert split.skipped_empty_folders == [] and split.ignored_files == 0

    narrowed = sues().load_split(trees[layout], "test", "d2s", "query-ids-only", altitude="150")
    assert [g.label for g in narrowed.gallery] == TEST


def test_image_ids_per_layout(trees: dict[str, Path]) -> None:
    first = {
        layout: sues().load_split(trees[layout], "test", "d2s", altitude=200).queries[0].image_id
        for layout in LAYOUTS
    }
    assert first == {
        "raw": "drone_view_512/0004/200/0.jpg",
        "split": "Testing/200/query_drone/0004/0.jpg",
        "lower": "test/200/query_drone/0004/0.jpg",
    }


@pytest.mark.parametrize("layout", LAYOUTS)
def test_test_s2d(trees: dict[str, Path], layout: str) -> None:
    split = sues().load_split(trees[layout], "test", "s2d", altitude=200)
    assert [q.label for q in split.queries] == TEST
    assert Counter(g.label for g in split.gallery) == {i: FRAMES for i in ALL}
    assert all("/200/" in g.image_id for g in split.gallery)
    narrowed = sues().load_split(trees[layout], "test", "s2d", "query-ids-only", altitude=200)
    assert len(narrowed.gallery) == len(TEST) * FRAMES


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("direction", ["d2s", "s2d"])
def test_train(trees: dict[str, Path], layout: str, direction: str) -> None:
    split = sues().load_split(trees[layout], "train", direction, altitude="150")
    drone = [r for r in split.queries + split.gallery if r.view == "drone"]
    satellite = [r for r in split.queries + split.gallery if r.view == "satellite"]
    assert Counter(r.label for r in drone) == {i: FRAMES for i in TRAIN}
    assert [r.label for r in satellite] == TRAIN
    assert (split.queries[0].view == "drone") == (direction == "d2s")


def test_layouts_agree(trees: dict[str, Path]) -> None:
    def summary(layout: str, split: str, direction: str) -> tuple:
        s = sues().load_split(trees[layout], split, direction, altitude="200")
        return (sorted((r.label, r.view) for r in s.queries), sorted((r.label, r.view) for r in s.gallery))

    for split, direction in [("test", "d2s"), ("test", "s2d"), ("train", "d2s")]:
        assert summary("raw", split, direction) == summary("split", split, direction) == summary(
            "lower", split, direction
        )


@pytest.mark.parametrize("altitude", [150, "150", "150m", " 150 "])
def test_altitude_spellings(trees: dict[str, Path], altitude: str | int) -> None:
    assert sues().load_split(trees["split"], "test", altitude=altitude).altitude == "150"


def test_altitude_required(trees: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="150, 200, 250, 300"):
        sues().load_split(trees["split"], "test")
    with pytest.raises(ValueError, match="unknown SUES-200 altitude 175.*150, 200, 250, 300"):
        sues().load_split(trees["split"], "test", altitude=175)


def test_altitude_not_on_disk(trees: dict[str, Path]) -> None:
    with pytest.raises(BenchmarkLayoutError, match="expected Testing/300/query_drone, Testing/300/gallery_satellite"):
        sues().load_split(trees["split"], "test", altitude=300)


def test_raw_without_index_file_uses_the_official_split(tmp_path: Path) -> None:
    test_ids = [f"{i:04d}" for i in range(1, 201) if f"{i:04d}" not in OFFICIAL_TRAIN_IDS]
    root = make_sues200(
        tmp_path / "SUES-200-512x512", "raw", OFFICIAL_TRAIN_IDS, test_ids, ("250",), frames=1, size=8,
        write_index=False,
    )
    assert sues().train_ids(root)[0] == list(OFFICIAL_TRAIN_IDS)
    test = sues().load_split(root, "test", "d2s", altitude=250)
    assert len(test.queries) == 80 and [q.label for q in test.queries] == test_ids
    assert len(test.gallery) == 200
    assert len(sues().load_split(root, "test", "d2s", "query-ids-only", altitude=250).gallery) == 80
    train = sues().load_split(root, "train", "s2d", altitude=250)
    assert [q.label for q in train.queries] == list(OFFICIAL_TRAIN_IDS) and len(train.gallery) == 120


def test_raw_official_split_needs_every_listed_id(tmp_path: Path) -> None:
    root = make_sues200(tmp_path, "raw", TRAIN, TEST, ("150",), frames=1, write_index=False)
    with pytest.raises(BenchmarkLayoutError, match="training IDs from the official list .* are not under") as err:
        sues().load_split(root, "test", altitude=150)
    assert "indexs.yaml" in str(err.value)


def test_user_index_file_with_unknown_ids(tmp_path: Path) -> None:
    root = make_sues200(tmp_path, "raw", TRAIN, TEST, ("150",), frames=1)
    write_index_file(root / "indexs.yaml", [*TRAIN, "0199"])
    with pytest.raises(BenchmarkLayoutError, match="1 training IDs from .*indexs.yaml.*: 0199"):
        sues().load_split(root, "train", altitude=150)


def test_read_index_file(tmp_path: Path) -> None:
    assert read_index_file(write_index_file(tmp_path / "a.yaml", ["0002", "0001"])) == ["0001", "0002"]
    (tmp_path / "b.yaml").write_text("index: [1, 20, '0003']\n")
    assert read_index_file(tmp_path / "b.yaml") == ["0001", "0003", "0020"]
    (tmp_path / "c.yaml").write_text("ids: ['0001']\n")
    with pytest.raises(BenchmarkLayoutError, match="key 'index'"):
        read_index_file(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("index: [unclosed\n")
    with pytest.raises(BenchmarkLayoutError, match="cannot read"):
        read_index_file(tmp_path / "d.yaml")


def test_raw_drone_folder_found_by_name(tmp_path: Path) -> None:
    root = make_sues200(tmp_path, "raw", TRAIN, TEST, ("150",), frames=1)
    (root / "drone_view_512").rename(root / "drone-view")
    split = sues().load_split(root, "test", "s2d", altitude=150)
    assert split.gallery[0].image_id == "drone-view/0001/150/0.jpg"


def test_raw_missing_altitude_folder_is_skipped(tmp_path: Path) -> None:
    root = make_sues200(tmp_path, "raw", TRAIN, TEST, ("150",), frames=1)
    shutil.rmtree(root / "drone_view_512/0005/150")
    split = sues().load_split(root, "test", "d2s", altitude=150)
    assert split.skipped_empty_folders == ["drone_view_512/0005/150"]
    assert [q.label for q in split.queries] == ["0004"]


def test_split_layout_wins_over_raw_unless_asked(tmp_path: Path) -> None:
    root = make_sues200(tmp_path, "raw", TRAIN, TEST, ("150",), frames=1)
    make_sues200(root, "split", TRAIN, TEST, ("150",), frames=1)  # split_datasets.py writes inside the archive
    assert sues().load_split(root, "test", altitude=150).queries[0].image_id.startswith("Testing/150/")
    raw = sues().load_split(root, "test", altitude=150, layout="raw")
    assert raw.queries[0].image_id.startswith("drone_view_512/")
    with pytest.raises(ValueError, match="layout must be one of"):
        sues().load_split(root, "test", altitude=150, layout="flat")


def test_empty_folders_and_non_images_in_split_layout(tmp_path: Path) -> None:
    root = make_sues200(tmp_path, "lower", TRAIN, TEST, ("150",), frames=1)
    (root / "test/150/gallery_satellite/0006").mkdir()
    (root / "test/150/gallery_satellite/0001/.DS_Store").write_bytes(b"\0")
    (root / "test/150/query_drone/0004/frames.txt").write_text("x")
    write_image(root / "test/150/query_drone/0004/1.jpeg", "extra")
    split = sues().load_split(root, "test", altitude=150)
    assert split.skipped_empty_folders == ["test/150/gallery_satellite/0006"]
    assert split.ignored_files == 2
    assert len(split.queries) == len(TEST) + 1


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkLayoutError, match="does not exist"):
        sues().load_split(tmp_path / "nowhere", "test", altitude=150)


def test_wrong_layout_names_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "foo").mkdir()
    (tmp_path / "bar.txt").write_text("")
    with pytest.raises(BenchmarkLayoutError) as err:
        sues().load_split(tmp_path, "test", altitude=150)
    message = str(err.value)
    assert "Testing/<altitude>" in message and "test/<altitude>" in message and "satellite-view" in message
    assert "found: bar.txt, foo" in message


def test_parent_of_the_roots_lists_them(trees: dict[str, Path]) -> None:
    with pytest.raises(BenchmarkLayoutError, match="found: lower, raw, split"):
        sues().load_split(trees["raw"].parent, "test", altitude=150)
