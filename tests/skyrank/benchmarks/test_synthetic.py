"""Tests of the procedural synthetic benchmark generator and its reader (tiny sizes: the file runs in seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from skyrank.benchmarks import get_benchmark
from skyrank.benchmarks import synthetic as syn
from skyrank.benchmarks.sues200 import read_index_file
from skyrank.benchmarks.synthetic import layout as syn_layout
from skyrank.errors import OutputExistsError

TINY = {"locations": 4, "distractors": 2, "views": 3, "image_size": 32}
ALTS = (150, 300)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ids(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def u1652(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return syn.generate_synthetic(tmp_path_factory.mktemp("u") / "bench", progress=False, **TINY)


def test_university1652_layout_and_counts(u1652: Path) -> None:
    info = json.loads((u1652 / "synthetic.json").read_text())
    train, test, dis = set(info["train_ids"]), set(info["test_ids"]), set(info["distractor_ids"])
    assert (len(train), len(test), len(dis)) == (4, 4, 2)
    assert not (train & test) and not (train & dis) and not (test & dis)
    assert all(len(i) == 4 and i.isdigit() for i in train | test | dis)
    assert _ids(u1652 / "train/drone") == _ids(u1652 / "train/satellite") == train
    assert _ids(u1652 / "test/query_drone") == _ids(u1652 / "test/query_satellite") == test
    assert _ids(u1652 / "test/gallery_drone") == _ids(u1652 / "test/gallery_satellite") == test | dis
    assert sorted(p.name for p in (u1652 / "test").iterdir()) == sorted(
        ["query_drone", "query_satellite", "gallery_drone", "gallery_satellite"]
    )
    for i in train:
        assert sorted(p.name for p in (u1652 / "train/drone" / i).iterdir()) == [
            "image-01.jpeg",
            "image-02.jpeg",
            "image-03.jpeg",
        ]
        assert [p.name for p in (u1652 / "train/satellite" / i).iterdir()] == [f"{i}.jpg"]
    for i in test:  # query and gallery copies are the same bytes
        q, g = u1652 / "test/query_drone" / i / "image-02.jpeg", u1652 / "test/gallery_drone" / i / "image-02.jpeg"
        assert q.read_bytes() == g.read_bytes()
    assert info["counts"] == {
        "test/gallery_drone": 18,
        "test/gallery_satellite": 6,
        "test/query_drone": 12,
        "test/query_satellite": 4,
        "train/drone": 12,
        "train/satellite": 4,
    }
    assert info["params"]["layout"] == "university1652" and info["version"] == syn.SYNTHETIC_VERSION


def test_images_decode_with_requested_size(u1652: Path) -> None:
    images = [p for p in u1652.rglob("*") if p.suffix in (".jpg", ".jpeg")]
    assert len(images) == 56
    for p in images:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"


def test_reader_is_registered_and_reads_the_layout(u1652: Path) -> None:
    bench = get_benchmark("synthetic")
    assert bench.license == "cc0-1.0" and bench.redistributable and bench.citation
    d2s = bench.load_split(u1652, "test", "d2s")
    assert len(d2s.queries) == 12 and len(d2s.gallery) == 6
    assert len(bench.load_split(u1652, "test", "d2s", protocol="query-ids-only").gallery) == 4
    s2d = bench.load_split(u1652, "test", "s2d")
    assert len(s2d.queries) == 4 and len(s2d.gallery) == 18
    train = bench.training_pairs(u1652)
    assert len(train.queries) == 12 and len(train.gallery) == 4


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path: Path, u1652: Path) -> None:
    again = syn.generate_synthetic(tmp_path / "again", progress=False, **TINY)
    assert _files(again) == _files(u1652)
    other = _files(syn.generate_synthetic(tmp_path / "other", seed=1, progress=False, **TINY))
    first = _files(u1652)
    assert other.keys() != first.keys() or any(other[k] != first[k] for k in first)


@pytest.mark.parametrize("layout", ["sues200", "sues200-split", "sues200-lower"])
def test_sues200_layouts(tmp_path: Path, layout: str) -> None:
    out = syn.generate_synthetic(
        tmp_path / "s", layout, locations=3, test_locations=2, views=2, image_size=32, altitudes=ALTS, progress=False
    )
    info = json.loads((out / "synthetic.json").read_text())
    train, test = set(info["train_ids"]), set(info["test_ids"])
    assert train | test == {"0001", "0002", "0003", "0004", "0005"} and not train & test
    assert info["distractor_ids"] == []
    reader = get_benchmark("sues200")
    if layout == "sues200":
        root = out / "SUES-200-512x512"
        assert read_index_file(root / "indexs.yaml") == sorted(train)
        text = (root / "indexs.yaml").read_text()
        assert text.startswith("index : ['") and text.endswith("]\n")
        assert _ids(root / "satellite-view") == _ids(root / "drone_view_512") == train | test
        for i in train | test:
            assert [p.name for p in (root / "satellite-view" / i).iterdir()] == ["0.png"]
            assert sorted(p.name for p in (root / "drone_view_512" / i).iterdir()) == ["150", "300"]
            assert sorted(p.name for p in (root / "drone_view_512" / i / "300").iterdir()) == ["0.jpg", "1.jpg"]
        with Image.open(root / "satellite-view" / sorted(train)[0] / "0.png") as im:
            assert im.format == "PNG" and im.size == (32, 32)
    else:
        root = out
        top = ("Training", "Testing") if layout == "sues200-split" else ("train", "test")
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(top)
        for alt in ("150", "300"):
            tr, te = root / top[0] / alt, root / top[1] / alt
            assert _ids(tr / "drone") == _ids(tr / "satellite") == train
            assert _ids(te / "query_drone") == _ids(te / "query_satellite") == test
            assert _ids(te / "gallery_drone") == _ids(te / "gallery_satellite") == train | test
            i = sorted(test)[0]
            assert [p.name for p in (te / "query_satellite" / i).iterdir()] == ["0.png"]
            assert sorted(p.name for p in (te / "gallery_drone" / i).iterdir()) == ["0.jpg", "1.jpg"]
        # the satellite image is the same file for every altitude, as split_datasets.py copies it
        i = sorted(train)[0]
        assert (root / top[0] / "150/satellite" / i / "0.png").read_bytes() == (
            root / top[0] / "300/satellite" / i / "0.png"
        ).read_bytes()
    split = reader.load_split(root, "test", "d2s", altitude=150)
    assert len(split.queries) == 2 * 2 and len(split.gallery) == 5
    assert len(reader.load_split(root, "train", "d2s", altitude=300).queries) == 3 * 2


def test_sues200_refuses_distractors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distractor"):
        syn.generate_synthetic(tmp_path / "s", "sues200", distractors=3, progress=False)
    with pytest.raises(ValueError, match="layout"):
        syn.generate_synthetic(tmp_path / "s", "kitti", progress=False)
    assert not (tmp_path / "s").exists()


def test_interrupted_run_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = syn_layout._drone_view  # the writer calls the camera through its own namespace

    def flaky(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(syn_layout, "_drone_view", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        syn.generate_synthetic(tmp_path / "bench", progress=False, **TINY)
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        syn.generate_synthetic(out, progress=False, locations=1, distractors=0, views=1, image_size=16)
    assert (out / "keep.txt").exists()
    syn.generate_synthetic(out, progress=False, locations=1, distractors=0, views=1, image_size=16, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "synthetic.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]


def test_ensure_synthetic_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"locations": 1, "distractors": 1, "views": 1, "image_size": 16}
    root = syn.ensure_synthetic(cache_dir=tmp_path, progress=False, **params)
    assert root == syn.default_synthetic_root(tmp_path, **params)
    assert root.parent == tmp_path / "synthetic" and (root / "synthetic.json").is_file()
    assert syn.default_synthetic_root(tmp_path, seed=1, **params) != root
    # explicit defaults key the same folder as omitted ones
    assert syn.default_synthetic_root(tmp_path) == syn.default_synthetic_root(tmp_path, **syn.SYNTHETIC_DEFAULTS)
    monkeypatch.setenv("SKYRANK_CACHE", str(tmp_path / "env"))
    assert syn.default_synthetic_root(**params).parent == tmp_path / "env" / "synthetic"

    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("regenerated a complete cached benchmark")

    monkeypatch.setattr(syn_layout, "generate_synthetic", boom)
    assert syn.ensure_synthetic(cache_dir=tmp_path, progress=False, **params) == root
