from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from skyrank.benchmarks import ImageRecord, get_benchmark, list_benchmarks
from skyrank.benchmarks.university1652 import University1652
from skyrank.errors import BenchmarkLayoutError
from tests.skyrank.benchmarks.layouts import make_university1652, write_image

TRAIN = ["0001", "0002"]
TEST = ["0100", "0101", "0102"]
DISTRACTORS = ["0900", "0901"]


@pytest.fixture(scope="module")
def u1652(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("u1652") / "University-Release"
    return make_university1652(root, TRAIN, TEST, DISTRACTORS, views=2)


def load(root: Path, split: str = "test", direction: str = "d2s", protocol: str = "official"):
    return get_benchmark("university1652").load_split(root, split, direction, protocol)


def test_registered_with_card_facts() -> None:
    assert "university1652" in list_benchmarks()
    bench = get_benchmark("university1652")
    assert isinstance(bench, University1652) and bench.name == "university1652"
    assert bench.license == "other" and bench.license_name and bench.license_link
    assert bench.redistributable is False
    assert "2002.12186" in bench.citation and "Zheng" in bench.citation
    assert bench.altitudes == ()


def test_test_d2s_official_keeps_distractors(u1652: Path) -> None:
    split = load(u1652)
    assert (split.benchmark, split.split, split.direction) == ("university1652", "test", "d2s")
    assert split.protocol == "official"
    assert split.root == u1652 and split.altitude is None
    assert len(split.queries) == len(TEST) * 2
    assert {q.view for q in split.queries} == {"drone"} and {g.view for g in split.gallery} == {"satellite"}
    assert split.queries[0] == ImageRecord("test/query_drone/0100/image-01.jpeg", "0100", "drone")
    assert [g.label for g in split.gallery] == TEST + DISTRACTORS  # one satellite per ID
    assert len(split.gallery) == len(TEST) + len(DISTRACTORS)
    assert split.gallery[-1].image_id == "test/gallery_satellite/0901/0901.jpg"
    assert split.queries == sorted(split.queries) and split.gallery == sorted(split.gallery)
    assert all(split.path_of(r).is_file() for r in split.queries + split.gallery)
    assert split.skipped_empty_folders == [] and split.ignored_files == 0


def test_test_d2s_query_ids_only_drops_distractors(u1652: Path) -> None:
    split = load(u1652, protocol="query-ids-only")
    assert split.protocol == "query-ids-only"
    assert len(split.gallery) == len(TEST)
    assert {g.label for g in split.gallery} == set(TEST)


def test_test_s2d(u1652: Path) -> None:
    split = load(u1652, direction="s2d")
    assert [q.image_id for q in split.queries] == [f"test/query_satellite/{i}/{i}.jpg" for i in TEST]
    assert {q.view for q in split.queries} == {"satellite"} and {g.view for g in split.gallery} == {"drone"}
    assert Counter(g.label for g in split.gallery) == {i: 2 for i in TEST + DISTRACTORS}
    narrowed = load(u1652, direction="s2d", protocol="query-ids-only")
    assert len(narrowed.gallery) == len(TEST) * 2


@pytest.mark.parametrize("direction", ["d2s", "s2d"])
def test_train_reads_drone_and_satellite_only(u1652: Path, direction: str) -> None:
    split = load(u1652, split="train", direction=direction)
    drone = [r for r in split.queries + split.gallery if r.view == "drone"]
    satellite = [r for r in split.queries + split.gallery if r.view == "satellite"]
    assert all(r.image_id.startswith("train/drone/") for r in drone) and len(drone) == len(TRAIN) * 2
    assert all(r.image_id.startswith("train/satellite/") for r in satellite) and len(satellite) == len(TRAIN)
    assert (split.queries[0].view == "drone") == (direction == "d2s")
    # street and the empty google folder are never read
    assert split.skipped_empty_folders == [] and split.ignored_files == 0
    assert get_benchmark("university1652").training_pairs(u1652).queries == load(u1652, "train").queries


def test_empty_class_folders_skipped_and_non_images_ignored(tmp_path: Path) -> None:
    root = make_university1652(tmp_path / "University-Release", TRAIN, TEST, DISTRACTORS, views=1)
    (root / "test/query_drone/0103").mkdir()  # empty class folder
    (root / "test/gallery_satellite/0902").mkdir()
    (root / "test/gallery_satellite/0903").mkdir()
    (root / "test/gallery_satellite/0903/notes.txt").write_text("not an image")
    (root / "test/query_drone/0100/.DS_Store").write_bytes(b"\0")
    (root / "test/query_drone/0100/Thumbs.db").write_bytes(b"\0")
    (root / "test/query_drone/.DS_Store").write_bytes(b"\0")  # stray file beside the class folders
    write_image(root / "test/query_drone/0101/image-02.JPG", "upper-case suffix")

    split = load(root)
    assert split.skipped_empty_folders == [
        "test/gallery_satellite/0902",
        "test/gallery_satellite/0903",
        "test/query_drone/0103",
    ]
    assert split.ignored_files == 4
    assert "test/query_drone/0101/image-02.JPG" in {q.image_id for q in split.queries}
    assert len(split.queries) == len(TEST) + 1
    assert {g.label for g in split.gallery} == set(TEST + DISTRACTORS)


def test_images_are_listed_not_decoded(tmp_path: Path) -> None:
    for rel in ("test/query_drone/0001/image-01.jpeg", "test/gallery_satellite/0001/0001.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(b"not a jpeg")  # decode errors are the encoder's job
    split = load(tmp_path)
    assert [q.image_id for q in split.queries] == ["test/query_drone/0001/image-01.jpeg"]
    assert [g.label for g in split.gallery] == ["0001"]


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkLayoutError, match="does not exist") as err:
        load(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


def test_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file.zip").write_bytes(b"")
    with pytest.raises(BenchmarkLayoutError, match="not a folder"):
        load(tmp_path / "file.zip")


def test_wrong_layout_names_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "foo").mkdir()
    (tmp_path / "bar").mkdir()
    with pytest.raises(BenchmarkLayoutError) as err:
        load(tmp_path)
    assert f"expected test/query_drone, test/gallery_satellite under {tmp_path}; found: bar, foo" in str(err.value)


def test_wrong_layout_lists_inside_the_split_folder(tmp_path: Path) -> None:
    (tmp_path / "test/query_drone").mkdir(parents=True)
    (tmp_path / "test/gallery_drone").mkdir()
    with pytest.raises(BenchmarkLayoutError, match="found: test/gallery_drone, test/query_drone"):
        load(tmp_path)


def test_parent_of_the_root_gets_a_hint(u1652: Path) -> None:
    with pytest.raises(BenchmarkLayoutError, match="Did you mean .*University-Release"):
        load(u1652.parent)


def test_folder_without_images(tmp_path: Path) -> None:
    root = make_university1652(tmp_path / "r", TRAIN, TEST, DISTRACTORS, views=1)
    for cls in TEST:
        for f in (root / "test/query_drone" / cls).iterdir():
            f.unlink()
    with pytest.raises(BenchmarkLayoutError, match="no images found under .*query_drone"):
        load(root)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "val"}, "split must be one of"),
        ({"direction": "d2d"}, "direction must be one of"),
        ({"protocol": "junk"}, "protocol must be one of"),
        ({"altitude": 150}, "no altitudes"),
    ],
)
def test_bad_arguments(u1652: Path, kwargs: dict, message: str) -> None:
    args = {"split": "test", **kwargs}
    with pytest.raises(ValueError, match=message):
        get_benchmark("university1652").load_split(u1652, **args)


def test_full_size_listing(tmp_path: Path) -> None:
    """51,355 (empty) gallery files, the size of University-1652's test drone gallery (speed: benchmarks/build.py)."""
    for i in range(951):
        cls = tmp_path / "test/gallery_drone" / f"{i:04d}"
        cls.mkdir(parents=True)
        for k in range(1, 56 if i == 0 else 55):
            (cls / f"image-{k:02d}.jpeg").touch()
        if i < 701:
            (tmp_path / "test/query_satellite" / f"{i:04d}").mkdir(parents=True)
            (tmp_path / "test/query_satellite" / f"{i:04d}" / f"{i:04d}.jpg").touch()
    split = load(tmp_path, direction="s2d")
    assert len(split.gallery) == 51_355 and len(split.queries) == 701
